//! Keeps PROTOCOL.md honest: every hex example in it must be what the codec
//! writes for the text it is captioned with, and must decode back.

use pigeon_shared::roster_snapshot::{decode_frame, parse_roster_request, put_dotnet_string};
use pigeon_shared::seal::{open, SessionKey};
use pigeon_shared::utf16::put_utf16le;
use pigeon_shared::{Datagram, RosterSnapshot, SessionToken};

/// (caption text, bytes) for each "Example: `...`" followed by a hex block.
fn examples() -> Vec<(String, Vec<u8>)> {
    let doc = include_str!("../PROTOCOL.md");
    let mut examples = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("Example: `") else {
            continue;
        };
        let caption = rest.split('`').next().unwrap().to_owned();
        let mut bytes = Vec::new();
        let mut in_block = false;
        for line in lines.by_ref() {
            if line.starts_with("```") {
                if in_block {
                    break;
                }
                in_block = true;
                continue;
            }
            if in_block {
                let hex = line.split_once("  ").map_or("", |(_, hex)| hex);
                bytes.extend(
                    hex.split_whitespace()
                        .map(|b| u8::from_str_radix(b, 16).unwrap()),
                );
            }
        }
        examples.push((caption, bytes));
    }
    examples
}

#[test]
fn every_example_in_protocol_md_matches_the_codec() {
    let examples = examples();
    assert_eq!(examples.len(), 22, "examples found: {examples:?}");
    for (caption, bytes) in examples {
        if let Some(frame) = caption.strip_prefix("secure ") {
            // A binary end-to-end frame: captioned with its sender and kind.
            let Ok(Datagram::Secure(secure)) = Datagram::decode(&bytes) else {
                panic!("{caption}: not an end-to-end frame")
            };
            assert_eq!(format!("{} {:?}", secure.from, secure.frame), frame);
            assert_eq!(secure.to_bytes().as_ref(), bytes.as_slice(), "{caption}");
        } else if caption.starts_with("pigeon1 ") && !caption.ends_with(";end") {
            let mut expected = Vec::new();
            put_dotnet_string(&mut expected, &caption);
            assert_eq!(bytes, expected, "{caption}");
            let (text, _) = decode_frame(&bytes, 1 << 10).unwrap().unwrap();
            assert!(parse_roster_request(&text).is_some(), "{caption}");
        } else if caption.ends_with(";end") {
            let mut expected = Vec::new();
            put_dotnet_string(&mut expected, &caption);
            assert_eq!(bytes, expected, "{caption}");
            let (text, used) = decode_frame(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            let snapshot = RosterSnapshot::parse(&text).unwrap();
            assert!(snapshot.skipped.is_empty(), "{caption}");
        } else {
            let mut expected = Vec::new();
            put_utf16le(&mut expected, &caption);
            assert_eq!(bytes, expected, "{caption}");
            let datagram = Datagram::decode(&bytes).unwrap_or_else(|e| panic!("{caption}: {e}"));
            assert_eq!(datagram.to_bytes().as_ref(), bytes.as_slice(), "{caption}");
            // A sealed example opens with the token the text names.
            if let Datagram::Sealed(sealed) = &datagram {
                let key =
                    SessionKey::from_token(SessionToken(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff));
                assert!(open(&key, sealed).is_ok(), "{caption}");
            }
        }
    }
}
