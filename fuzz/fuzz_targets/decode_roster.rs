//! The TCP roster reader on arbitrary bytes: see `decode_roster` in the
//! shared checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../shared/tests/common/fuzz_checks.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::decode_roster(data));
