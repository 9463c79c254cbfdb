//! Replays every input in `tests/fuzz-regressions/` through the wire
//! decoders the way the cargo-fuzz targets in `fuzz/` do: crashers the
//! fuzzer found (and the seed corpus) stay fixed without the fuzzer.
//!
//! A file is named `<target>-<short-name>`, but every file goes through
//! every target: an input that is harmless to one is a cheap test of the
//! others.

use std::fmt::Debug;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use pigeon_shared::roster_snapshot::{decode_frame, parse_roster_request};
use pigeon_shared::seal::{open, seal, SealError, SessionKey};
use pigeon_shared::{Datagram, RosterSnapshot, SessionToken};

mod common {
    pub mod fuzz_checks;
}
use common::fuzz_checks;

/// What `fuzz/fuzz_targets/decode_datagram.rs` checks.
fn decode_datagram(data: &[u8]) {
    if let Ok(datagram) = Datagram::decode(data) {
        if let Datagram::Delta(delta) = &datagram {
            for (_, change) in delta.changes() {
                let _ = change;
            }
        }
        let bytes = datagram.to_bytes();
        match Datagram::decode(&bytes) {
            Ok(again) if again == datagram => {}
            again => panic!(
                "round trip failed: its {}-byte encoding decodes as {}, not as {}",
                bytes.len(),
                excerpt(&again),
                excerpt(&datagram)
            ),
        }
    }
}

/// The start of a value's `Debug` text: a crasher can be 64 KiB.
fn excerpt(value: &impl Debug) -> String {
    const CHARS: usize = 200;
    let text = format!("{value:?}");
    if text.chars().count() <= CHARS {
        text
    } else {
        format!("{}...", text.chars().take(CHARS).collect::<String>())
    }
}

/// What `fuzz/fuzz_targets/decode_roster.rs` checks.
fn decode_roster(data: &[u8]) {
    if let Ok(Some((text, used))) = decode_frame(data, 1 << 20) {
        assert!(
            used <= data.len(),
            "frame used {used} of {} bytes",
            data.len()
        );
        let _ = RosterSnapshot::parse(&text);
        let _ = parse_roster_request(&text);
    }
}

/// What `fuzz/fuzz_targets/open_sealed.rs` checks.
fn open_sealed(data: &[u8]) {
    let key = SessionKey::from_token(SessionToken(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff));
    let other = SessionKey::from_token(SessionToken(1));
    match Datagram::decode(data) {
        Ok(Datagram::Sealed(sealed)) => {
            let _ = open(&key, &sealed);
        }
        Ok(datagram @ (Datagram::Secure(_) | Datagram::Relayed(_))) => {
            assert!(
                seal(&key, &datagram) == datagram,
                "an end-to-end frame is not sealed"
            );
        }
        Ok(datagram) => {
            let Datagram::Sealed(sealed) = seal(&key, &datagram) else {
                panic!("seal gave no sealed datagram");
            };
            assert!(open(&key, &sealed) == Ok(datagram), "does not open");
            assert_eq!(open(&other, &sealed), Err(SealError::BadMac));
        }
        Err(_) => {}
    }
}

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
            ("decode_datagram", decode_datagram as fn(&[u8])),
            ("decode_roster", decode_roster),
            ("open_sealed", open_sealed),
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
