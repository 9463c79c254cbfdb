//! `Datagram::decode` on arbitrary bytes: it must never panic, and whatever
//! it accepts must survive an encode/decode round trip unchanged. A delta's
//! changes, parsed on demand, are read too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pigeon_shared::Datagram;

fuzz_target!(|data: &[u8]| {
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
                "round trip failed: its {}-byte encoding decodes as {again:?}, not as {datagram:?}",
                bytes.len()
            ),
        }
    }
});
