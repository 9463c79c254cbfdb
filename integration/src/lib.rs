//! Test support for Pigeon's end-to-end tests: seed-faithful peers and
//! helpers that start servers and clients.

pub mod seed;
