//! Replays every input in `tests/fuzz-regressions/` through the checks
//! the cargo-fuzz targets in `fuzz/` make (`common/fuzz_checks.rs`, which
//! both include): crashers the
//! fuzzer found (and the seed corpus) stay fixed without the fuzzer.
//!
//! A file is named `<target>-<short-name>`, but every file goes through
//! every target: an input that is harmless to one is a cheap test of the
//! others.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

mod common {
    pub mod fuzz_checks;
}
use common::fuzz_checks;

#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} holds no inputs", dir.display());

    let mut failures = Vec::new();
    for path in &paths {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (target, check) in [
            ("decode_datagram", fuzz_checks::decode_datagram as fn(&[u8])),
            ("decode_roster", fuzz_checks::decode_roster),
            ("open_sealed", fuzz_checks::open_sealed),
            ("mailbox_text", fuzz_checks::mailbox_text),
            ("peer_frames", fuzz_checks::peer_frames),
            ("keyed_handshakes", fuzz_checks::keyed_handshakes),
        ] {
            if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(format!("{target} on {}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs panic (messages above):\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}
