use super::*;

fn name(text: &str) -> UserName {
    UserName::parse(text).unwrap()
}

struct Pair {
    alice: Identity,
    bob: Identity,
    a: Link,
    b: Link,
    now: Instant,
}

fn pair() -> Pair {
    let alice = Identity::generate();
    let bob = Identity::generate();
    let a = Link::new(name("alice"), name("bob"), bob.public());
    let b = Link::new(name("bob"), name("alice"), alice.public());
    Pair {
        alice,
        bob,
        a,
        b,
        now: Instant::now(),
    }
}

fn sends(events: Vec<LinkEvent>) -> Vec<SecureFrame> {
    events
        .into_iter()
        .filter_map(|e| match e {
            LinkEvent::Send(frame) => Some(frame),
            LinkEvent::Plain(_) => None,
        })
        .collect()
}

fn plains(events: &[LinkEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Plain(bytes) => Some(bytes.clone()),
            LinkEvent::Send(_) => None,
        })
        .collect()
}

impl Pair {
    /// alice says `text`; every frame goes across until nothing is left.
    /// What bob got.
    fn a_says(&mut self, text: &[u8]) -> Vec<Vec<u8>> {
        let frames = self.a.seal(&self.alice, text, true, self.now);
        self.deliver_to_b(frames)
    }

    fn deliver_to_b(&mut self, frames: Vec<SecureFrame>) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut to_b = frames;
        while !to_b.is_empty() {
            let mut to_a = Vec::new();
            for frame in to_b.drain(..) {
                let Ok(events) = self.b.receive(&self.bob, frame, self.now) else {
                    continue;
                };
                got.extend(plains(&events));
                to_a.extend(sends(events));
            }
            for frame in to_a {
                let events = self.a.receive(&self.alice, frame, self.now).unwrap();
                assert!(plains(&events).is_empty());
                to_b.extend(sends(events));
            }
        }
        got
    }
}

#[test]
fn the_first_message_waits_for_the_handshake_and_arrives() {
    let mut p = pair();
    let frames = p.a.seal(&p.alice, b"hello", true, p.now);
    assert!(matches!(frames.as_slice(), [SecureFrame::Init { .. }]));
    assert_eq!(p.deliver_to_b(frames), vec![b"hello".to_vec()]);
    assert!(p.a.is_established() && p.b.is_established());
    // From now on one data frame each way.
    let frames = p.b.seal(&p.bob, b"hi alice", true, p.now);
    assert!(matches!(frames.as_slice(), [SecureFrame::Data { .. }]));
    let events = p.a.receive(&p.alice, frames[0].clone(), p.now).unwrap();
    assert_eq!(plains(&events), vec![b"hi alice".to_vec()]);
    assert_eq!(p.a_says(b"again"), vec![b"again".to_vec()]);
}

#[test]
fn frames_read_back_and_hostile_bytes_do_not() {
    let mut p = pair();
    for frame in p.a.seal(&p.alice, b"x", true, p.now) {
        let secure = Secure {
            from: name("天涯"),
            frame,
        };
        assert_eq!(Secure::decode(&secure.to_bytes()).unwrap(), secure);
    }
    let data = Secure {
        from: name("a"),
        frame: SecureFrame::Data {
            receiver: 7,
            counter: 9,
            ciphertext: vec![1; 40],
        },
    };
    let bytes = data.to_bytes();
    assert_eq!(Secure::decode(&bytes).unwrap(), data);
    for cut in 0..bytes.len() - (40 - TAG_BYTES) {
        assert!(Secure::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    assert!(Secure::decode(&[0, b'X', 1, b'a', 0, 0, 0, 0]).is_err());
    assert!(Secure::decode(&[0, b'I', 0]).is_err());
}

#[test]
fn forged_replayed_and_unknown_frames_are_dropped_and_change_nothing() {
    let mut p = pair();
    assert_eq!(p.a_says(b"one"), vec![b"one".to_vec()]);
    let genuine = p.a.seal(&p.alice, b"two", true, p.now).remove(0);
    let SecureFrame::Data {
        receiver,
        counter,
        ciphertext,
    } = genuine.clone()
    else {
        panic!("{genuine:?}")
    };
    let mut tampered = ciphertext.clone();
    tampered[0] ^= 1;
    let forged = SecureFrame::Data {
        receiver,
        counter,
        ciphertext: tampered,
    };
    assert_eq!(p.b.receive(&p.bob, forged, p.now), Err(LinkDrop::Forged));
    // A far-ahead counter that does not verify moves no window.
    let ahead = SecureFrame::Data {
        receiver,
        counter: u64::MAX - 5,
        ciphertext: ciphertext.clone(),
    };
    assert_eq!(p.b.receive(&p.bob, ahead, p.now), Err(LinkDrop::Forged));
    let stranger = SecureFrame::Data {
        receiver: receiver.wrapping_add(1),
        counter,
        ciphertext,
    };
    assert_eq!(
        p.b.receive(&p.bob, stranger, p.now),
        Err(LinkDrop::UnknownSession)
    );
    let events = p.b.receive(&p.bob, genuine.clone(), p.now).unwrap();
    assert_eq!(plains(&events), vec![b"two".to_vec()]);
    assert_eq!(p.b.receive(&p.bob, genuine, p.now), Err(LinkDrop::Replayed));
    assert_eq!(p.a_says(b"three"), vec![b"three".to_vec()]);
}

#[test]
fn a_replayed_initiation_does_not_move_the_conversation() {
    let mut p = pair();
    let init = p.a.seal(&p.alice, b"one", true, p.now);
    assert_eq!(p.deliver_to_b(init.clone()), vec![b"one".to_vec()]);
    // Replayed again and again: bob answers (rate-limited), and still
    // sends on the keys alice has.
    let mut busy = 0;
    for _ in 0..20 {
        match p.b.receive(&p.bob, init[0].clone(), p.now) {
            Ok(_) => {}
            Err(LinkDrop::Busy) => busy += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(busy >= 20 - MAX_ANSWERS, "{busy}");
    for text in [b"a".as_slice(), b"b", b"c"] {
        let frames = p.b.seal(&p.bob, text, true, p.now);
        assert_eq!(frames.len(), 1, "{frames:?}");
        let events = p.a.receive(&p.alice, frames[0].clone(), p.now).unwrap();
        assert_eq!(plains(&events), vec![text.to_vec()]);
    }
}

#[test]
fn only_the_rosters_key_can_open_a_conversation() {
    let mut p = pair();
    // mallory, who has bob's key from the roster, poses as alice.
    let mallory = Identity::generate();
    let mut m = Link::new(name("alice"), name("bob"), p.bob.public());
    let init = m.seal(&mallory, b"I am alice", true, p.now);
    assert_eq!(
        p.b.receive(&p.bob, init[0].clone(), p.now),
        Err(LinkDrop::WrongKey)
    );
    // An initiation for another name does not verify either (the names are
    // in the prologue).
    let mut c = Link::new(name("carol"), name("bob"), p.bob.public());
    let init = c.seal(&p.alice, b"x", true, p.now);
    assert_eq!(
        p.b.receive(&p.bob, init[0].clone(), p.now),
        Err(LinkDrop::Forged)
    );
    assert_eq!(p.a_says(b"real"), vec![b"real".to_vec()]);
}

#[test]
fn both_starting_at_once_still_converse() {
    let mut p = pair();
    // Both write first: the initiations cross; everything is delivered in
    // the order sent.
    let mut wire: VecDeque<(bool, SecureFrame)> = VecDeque::new();
    wire.extend(
        p.a.seal(&p.alice, b"from alice", true, p.now)
            .into_iter()
            .map(|f| (true, f)),
    );
    wire.extend(
        p.b.seal(&p.bob, b"from bob", true, p.now)
            .into_iter()
            .map(|f| (false, f)),
    );
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    while let Some((to_b, frame)) = wire.pop_front() {
        let events = if to_b {
            p.b.receive(&p.bob, frame, p.now).unwrap()
        } else {
            p.a.receive(&p.alice, frame, p.now).unwrap()
        };
        if to_b {
            at_b.extend(plains(&events));
        } else {
            at_a.extend(plains(&events));
        }
        wire.extend(sends(events).into_iter().map(|f| (!to_b, f)));
    }
    assert_eq!(at_b, vec![b"from alice".to_vec()]);
    assert_eq!(at_a, vec![b"from bob".to_vec()]);
    assert_eq!(p.a_says(b"more"), vec![b"more".to_vec()]);
}

#[test]
fn a_peer_that_lost_its_keys_gets_a_new_handshake() {
    let mut p = pair();
    assert_eq!(p.a_says(b"one"), vec![b"one".to_vec()]);
    // bob starts over (a new link, same key); alice's data frames go
    // nowhere until she notices the silence and starts again.
    p.b = Link::new(name("bob"), name("alice"), p.alice.public());
    let lost = p.a.seal(&p.alice, b"two", true, p.now);
    assert_eq!(
        p.b.receive(&p.bob, lost[0].clone(), p.now),
        Err(LinkDrop::UnknownSession)
    );
    p.now += REKEY_AFTER_SILENCE;
    let frames = p.a.seal(&p.alice, b"two", true, p.now);
    assert!(frames.iter().any(|f| matches!(f, SecureFrame::Init { .. })));
    let got = p.deliver_to_b(frames);
    assert!(got.is_empty(), "{got:?}");
    // Retransmitted, it arrives on the new keys.
    assert_eq!(p.a_says(b"two"), vec![b"two".to_vec()]);
}

#[test]
fn the_replay_window_takes_late_counters_once() {
    let mut w = ReplayWindow::default();
    for c in [5, 3, 4, 0, 1, 2] {
        assert!(w.fresh(c));
        w.mark(c);
        assert!(!w.fresh(c));
    }
    w.mark(5 + REPLAY_WINDOW);
    assert!(!w.fresh(5), "older than the window");
    assert!(w.fresh(4 + REPLAY_WINDOW));
    assert!(w.fresh(6 + REPLAY_WINDOW));
    w.mark(10 * REPLAY_WINDOW);
    assert!(!w.fresh(9 * REPLAY_WINDOW));
    assert!(w.fresh(10 * REPLAY_WINDOW - 1));
}
