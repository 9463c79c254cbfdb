//! The TCP roster reader on arbitrary bytes: `decode_frame` and, on the text
//! it yields, `RosterSnapshot::parse` and the server's reading of a Pigeon
//! client's request (`parse_roster_request`) must never panic, and a frame
//! never claims more bytes than it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pigeon_shared::roster_snapshot::{decode_frame, parse_roster_request};
use pigeon_shared::RosterSnapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((text, used))) = decode_frame(data, 1 << 20) {
        assert!(
            used <= data.len(),
            "frame used {used} of {} bytes",
            data.len()
        );
        let _ = RosterSnapshot::parse(&text);
        let _ = parse_roster_request(&text);
    }
});
