//! The checks of the fuzz targets, shared by the cargo-fuzz targets in
//! `fuzz/` (each includes this file) and the `fuzz_regressions` test
//! (which replays stored inputs through every one).

#![allow(dead_code)]

use std::fmt::Debug;
use std::time::Instant;

use pigeon_shared::handshake::{answer, LoginHandshake, REPLY_BYTES};
use pigeon_shared::mailbox::{parse_mail_request, MailAnswer};
use pigeon_shared::roster_snapshot::{decode_frame, parse_roster_request};
use pigeon_shared::seal::{open, seal, SealError, SessionKey};
use pigeon_shared::{
    offline, Datagram, Identity, Link, LinkEvent, Nonce, PeerAddr, RosterSnapshot, Secure,
    SessionToken, UserName,
};

/// Every datagram `Datagram::decode` accepts survives a round trip (a
/// delta's changes, read on demand, are read too).
pub fn decode_datagram(data: &[u8]) {
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

/// The TCP roster reader: `decode_frame` never claims more bytes than it
/// was given, and neither the snapshot nor the request reader panics on
/// the text it yields.
pub fn decode_roster(data: &[u8]) {
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

/// Sealed server datagrams: a decoded `sealed` one opens or is refused;
/// any other text datagram, sealed with a session's key, opens back to
/// itself with that key and with no other; an end-to-end frame is left as
/// it is.
pub fn open_sealed(data: &[u8]) {
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

/// The mailbox protocol's text on the Pigeon roster port: whatever
/// `parse_mail_request` (the server's side) or `MailAnswer::parse` (the
/// client's) accepts survives a round trip through `to_text`.
pub fn mailbox_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(signed) = parse_mail_request(&text) {
        let key = SessionKey::from_token(signed.token);
        let again = parse_mail_request(&signed.request.to_text(&signed.name, signed.token, &key));
        assert!(
            again.as_ref().is_some_and(|again| again.name == signed.name
                && again.token == signed.token
                && again.request == signed.request
                && again.verify(&key)),
            "a request does not survive a round trip"
        );
    }
    if let Some(answer) = MailAnswer::parse(&text) {
        let again = MailAnswer::parse(&answer.to_text());
        assert!(
            again == Some(answer),
            "an answer does not survive a round trip"
        );
    }
}

fn name(text: &str) -> UserName {
    UserName::parse(text).expect("a valid name")
}

/// alice's and bob's ends of an established conversation.
fn established(alice: &Identity, bob: &Identity, now: Instant) -> (Link, Link) {
    let mut a = Link::new(name("alice"), name("bob"), bob.public());
    let mut b = Link::new(name("bob"), name("alice"), alice.public());
    let mut to_b = a.seal(alice, b"hello", true, now);
    let mut to_a = Vec::new();
    for _ in 0..4 {
        for frame in to_b.drain(..) {
            for event in b.receive(bob, frame, now).unwrap_or_default() {
                if let LinkEvent::Send(frame) = event {
                    to_a.push(frame);
                }
            }
        }
        for frame in to_a.drain(..) {
            for event in a.receive(alice, frame, now).unwrap_or_default() {
                if let LinkEvent::Send(frame) = event {
                    to_b.push(frame);
                }
            }
        }
    }
    (a, b)
}

/// End-to-end frames from a hostile peer: whatever `Secure::decode`
/// accepts is handed to a link with no session yet and to one with an
/// established session; a fuzzed frame never yields a plaintext (it cannot
/// verify) nor disturbs the established session.
pub fn peer_frames(data: &[u8]) {
    let Ok(Secure { frame, .. }) = Secure::decode(data) else {
        return;
    };
    let alice = Identity::from_secret([1; 32]);
    let bob = Identity::from_secret([2; 32]);
    let now = Instant::now();
    let mut fresh = Link::new(name("bob"), name("alice"), alice.public());
    if let Ok(events) = fresh.receive(&bob, frame.clone(), now) {
        assert!(
            !events.iter().any(|e| matches!(e, LinkEvent::Plain(_))),
            "a fuzzed frame gave a plaintext"
        );
    }
    let (mut a, mut b) = established(&alice, &bob, now);
    if let Ok(events) = b.receive(&bob, frame, now) {
        assert!(
            !events.iter().any(|e| matches!(e, LinkEvent::Plain(_))),
            "a fuzzed frame gave a plaintext"
        );
    }
    // The genuine conversation carries on.
    let genuine = a
        .seal_if_ready(b"still here")
        .expect("the established session sends");
    let events = b
        .receive(&bob, genuine, now)
        .expect("the genuine frame is taken");
    assert!(events.contains(&LinkEvent::Plain(b"still here".to_vec())));
}

/// What keys meet: a sealed offline message (`offline::open`), a login's
/// hello as the server answers it (`handshake::answer`) and the server's
/// reply as the client reads it (`LoginHandshake::finish`), on arbitrary
/// bytes: nothing opens that was not sealed for it.
pub fn keyed_handshakes(data: &[u8]) {
    let recipient = Identity::from_secret([3; 32]);
    let (from, to) = (name("bob"), name("alice"));
    assert!(
        offline::open(&recipient, &from, &to, data).is_err(),
        "arbitrary bytes opened as an offline message"
    );
    let endpoint = PeerAddr::parse("127.0.0.1:5000").expect("a valid endpoint");
    let server = Identity::from_secret([4; 32]);
    if let Some(hello) = data.first_chunk::<32>() {
        let _ = answer(&server, &to, endpoint, Nonce(7), hello, SessionToken(9));
    }
    if let Some(reply) = data.first_chunk::<REPLY_BYTES>() {
        let (state, _) =
            LoginHandshake::start(&recipient, &to, endpoint, Nonce(7)).expect("a handshake starts");
        assert!(
            state.finish(reply).is_err(),
            "arbitrary bytes read as the server's reply"
        );
    }
}
