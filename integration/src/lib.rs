//! Test support for Pigeon's end-to-end tests: seed-faithful peers, a
//! harness that starts real servers and clients in-process, and a
//! deterministic simulator of a whole network without sockets.

pub mod capture;
pub mod forge;
pub mod harness;
pub mod internet;
pub mod load;
pub mod netns;
pub mod process;
pub mod pty;
pub mod redis;
pub mod seed;
pub mod sim;
