//! Test support for Pigeon's end-to-end tests: seed-faithful peers, and a
//! harness that starts real servers and clients in-process.

pub mod harness;
pub mod load;
pub mod netns;
pub mod process;
pub mod pty;
pub mod seed;
