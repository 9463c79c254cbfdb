use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use pigeon_shared::MAX_SEQ;

const ALICE: InstanceId = InstanceId(0xA);
const BOB: InstanceId = InstanceId(0xB);

fn name(text: &str) -> UserName {
    UserName::parse(text).unwrap()
}

fn time() -> TalkTime {
    TalkTime::parse("9:05:07").unwrap()
}

fn alice_to_bob() -> Conversation {
    Conversation::new(name("bob"), name("alice"), ALICE, DeliveryConfig::default())
}

fn bob_from_alice() -> Conversation {
    Conversation::new(name("alice"), name("bob"), BOB, DeliveryConfig::default())
}

fn transmitted(out: &[ConversationOutput]) -> Vec<Datagram> {
    out.iter()
        .filter_map(|o| match o {
            ConversationOutput::Transmit(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn events(out: &[ConversationOutput]) -> Vec<ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            ConversationOutput::Emit(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn chats(out: &[ConversationOutput]) -> Vec<Chat> {
    transmitted(out)
        .into_iter()
        .filter_map(|d| match d {
            Datagram::Chat(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn messages(out: &[ConversationOutput]) -> Vec<String> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Message { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

fn ack(seq: Seq) -> Ack {
    Ack {
        from: name("bob"),
        instance: ALICE,
        seq,
    }
}

#[test]
fn a_seed_peer_gets_one_plain_talk_and_no_tracking() {
    let mut c = alice_to_bob();
    let out = c
        .send(
            MessageId(1),
            "hi, bob".into(),
            false,
            time(),
            Instant::now(),
        )
        .unwrap();
    assert_eq!(
        transmitted(&out),
        vec![Datagram::Talk(Talk {
            time: time(),
            from: name("alice"),
            text: "hi, bob".into()
        })]
    );
    assert_eq!(c.unconfirmed(), 0);
    assert_eq!(c.lines().next().unwrap().delivery, Delivery::Unconfirmed);
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn a_seed_peer_is_refused_a_message_too_long_for_one_datagram() {
    let c = alice_to_bob();
    let long = "x".repeat(700);
    assert!(matches!(
        c.check(&long, false, &time()),
        Err(SendRefusal::TooLongForSeedPeer { .. })
    ));
    assert!(c.check(&long, true, &time()).is_ok());
}

#[test]
fn a_pigeon_message_is_numbered_acknowledged_and_marked_delivered() {
    let mut c = alice_to_bob();
    let t = Instant::now();
    let out = c
        .send(MessageId(1), "hello".into(), true, time(), t)
        .unwrap();
    let sent = chats(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].seq, sent[0].base, sent[0].part, sent[0].parts),
        (1, 1, 1, 1)
    );
    assert_eq!(c.unconfirmed(), 1);
    let out = c.ack_received(ack(1), t);
    assert_eq!(
        events(&out),
        vec![ClientEvent::Delivered {
            to: name("bob"),
            id: MessageId(1)
        }]
    );
    assert_eq!(c.lines().next().unwrap().delivery, Delivery::Delivered);
    assert_eq!(c.next_deadline(), None);
    // A repeated or stale acknowledgement changes nothing.
    assert!(c.ack_received(ack(1), t).is_empty());
    let stale = Ack {
        instance: InstanceId(0x0DD),
        ..ack(2)
    };
    assert!(c.ack_received(stale, t).is_empty());
}

#[test]
fn unacknowledged_parts_are_sent_again_with_doubling_waits_then_fail() {
    let mut c = alice_to_bob();
    let t = Instant::now();
    c.send(MessageId(7), "anyone?".into(), true, time(), t)
        .unwrap();
    let mut sends = vec![0u64];
    let mut now = t;
    let mut failed = None;
    while failed.is_none() {
        now = c.next_deadline().unwrap();
        let out = c.tick(now);
        if !chats(&out).is_empty() {
            sends.push(now.duration_since(t).as_millis() as u64);
        }
        failed = events(&out)
            .into_iter()
            .find(|e| matches!(e, ClientEvent::Failed { .. }));
    }
    assert_eq!(&sends[..6], &[0, 150, 450, 1050, 2050, 3050]);
    assert_eq!(now.duration_since(t), Duration::from_secs(30));
    assert_eq!(
        failed,
        Some(ClientEvent::Failed {
            to: name("bob"),
            id: MessageId(7),
            text: "anyone?".into()
        })
    );
    assert_eq!(c.lines().next().unwrap().delivery, Delivery::Failed);
    assert_eq!(c.unconfirmed(), 0);
}

#[test]
fn long_messages_are_split_at_character_boundaries_and_reassembled() {
    let mut alice = alice_to_bob();
    let mut bob = bob_from_alice();
    let t = Instant::now();
    // Astral characters take two UTF-16 units: no part may cut one.
    let text: String = "好🐦,".repeat(400);
    let out = alice
        .send(MessageId(1), text.clone(), true, time(), t)
        .unwrap();
    let parts = chats(&out);
    assert!(parts.len() > 2);
    for part in &parts {
        assert!(Datagram::Chat(part.clone()).encoded_len() <= COMFORTABLE_DATAGRAM_BYTES);
    }
    // Delivered out of order, the message still comes out once, whole.
    let mut shown = Vec::new();
    for part in parts.iter().rev() {
        shown.extend(messages(&bob.chat_received(part.clone())));
    }
    assert_eq!(shown, vec![text]);
}

#[test]
fn too_many_parts_are_refused() {
    let c = alice_to_bob();
    let text = "x".repeat(MAX_PARTS * MAX_PART_UNITS + 1);
    let refused = c.check(&text, true, &time()).unwrap_err();
    assert!(matches!(refused, SendRefusal::TooLong { .. }));
    // Said in characters, as a person counts them.
    assert_eq!(
        refused.to_string(),
        "the message is too long: 53761 characters, at most 53760; send it in shorter pieces"
    );
    // An emoji takes two of the limit's units: say so.
    let emoji = "🐦".repeat(30_000);
    let refused = c.check(&emoji, true, &time()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the message is too long: 30000 characters, which count as 60000 because emoji and \
         other rare characters count twice; at most 53760; send it in shorter pieces"
    );
    assert_eq!(c.check("", true, &time()), Err(SendRefusal::Empty));
}

#[test]
fn the_receiver_orders_drops_duplicates_and_acknowledges_every_copy() {
    let mut alice = alice_to_bob();
    let mut bob = bob_from_alice();
    let t = Instant::now();
    let mut sent = Vec::new();
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        let out = alice
            .send(MessageId(i as u64 + 1), text.into(), true, time(), t)
            .unwrap();
        sent.extend(chats(&out));
    }
    let out = bob.chat_received(sent[2].clone());
    assert!(messages(&out).is_empty());
    assert_eq!(transmitted(&out).len(), 1, "acknowledged though held");
    let out = bob.chat_received(sent[0].clone());
    assert_eq!(messages(&out), ["one"]);
    let out = bob.chat_received(sent[0].clone());
    assert!(messages(&out).is_empty());
    assert_eq!(
        transmitted(&out).len(),
        1,
        "a duplicate is acknowledged again"
    );
    let out = bob.chat_received(sent[1].clone());
    assert_eq!(messages(&out), ["two", "three"]);
}

#[test]
fn parts_given_up_by_the_sender_do_not_block_the_ones_after() {
    let mut alice = alice_to_bob();
    let mut bob = bob_from_alice();
    let t = Instant::now();
    let first = chats(
        &alice
            .send(MessageId(1), "lost".into(), true, time(), t)
            .unwrap(),
    );
    let later = t + Duration::from_secs(31);
    let out = alice.tick(later);
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, ClientEvent::Failed { .. })));
    let second = chats(
        &alice
            .send(MessageId(2), "found".into(), true, time(), later)
            .unwrap(),
    );
    assert_eq!(first[0].seq, 1);
    assert_eq!((second[0].seq, second[0].base), (2, 2));
    // bob saw seq 1? No: it was lost. It is not waited for.
    let out = bob.chat_received(second[0].clone());
    assert_eq!(messages(&out), ["found"]);
}

#[test]
fn a_restarted_peer_starts_a_new_stream() {
    let mut bob = bob_from_alice();
    let chat = |instance, seq| Chat {
        instance,
        seq,
        base: seq,
        part: 1,
        parts: 1,
        time: time(),
        from: name("alice"),
        text: format!("{instance:?}/{seq}"),
    };
    assert_eq!(messages(&bob.chat_received(chat(ALICE, 5))).len(), 1);
    assert_eq!(
        messages(&bob.chat_received(chat(InstanceId(0xA2), 1))).len(),
        1
    );
}

#[test]
fn at_most_a_window_of_parts_is_in_flight() {
    let config = DeliveryConfig {
        window: 2,
        ..DeliveryConfig::default()
    };
    let mut c = Conversation::new(name("bob"), name("alice"), ALICE, config);
    let t = Instant::now();
    let mut sent = 0;
    for i in 1..=5 {
        sent += chats(
            &c.send(MessageId(i), format!("m{i}"), true, time(), t)
                .unwrap(),
        )
        .len();
    }
    assert_eq!(sent, 2);
    let out = c.ack_received(ack(1), t);
    let next = chats(&out);
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].seq, next[0].base), (3, 2));
}

/// A virtual network between two conversations: every datagram may be
/// lost, duplicated or delayed, by a seeded generator, on a virtual clock.
#[test]
fn over_a_lossy_reordering_network_every_message_arrives_once_in_order() {
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut alice = alice_to_bob();
        let mut bob = bob_from_alice();
        let t0 = Instant::now();
        let mut now = t0;
        // (arrival time, tie-breaker) -> (to bob?, datagram)
        let mut wire: BTreeMap<(Instant, u64), (bool, Datagram)> = BTreeMap::new();
        let mut tie = 0u64;
        let mut put = |wire: &mut BTreeMap<_, _>,
                       rng: &mut StdRng,
                       now: Instant,
                       to_bob: bool,
                       d: Datagram| {
            if rng.random_bool(0.2) {
                return;
            }
            let copies = if rng.random_bool(0.2) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = Duration::from_micros(rng.random_range(100..60_000));
                tie += 1;
                wire.insert((now + delay, tie), (to_bob, d.clone()));
            }
        };
        let sent: Vec<String> = (0..60)
            .map(|i| {
                if i % 7 == 0 {
                    "長".repeat(900)
                } else {
                    format!("message {i}, with a comma")
                }
            })
            .collect();
        for (i, text) in sent.iter().enumerate() {
            let out = alice
                .send(MessageId(i as u64 + 1), text.clone(), true, time(), now)
                .unwrap();
            for d in transmitted(&out) {
                put(&mut wire, &mut rng, now, true, d);
            }
        }
        let mut shown = Vec::new();
        let mut failed = 0;
        while alice.unconfirmed() > 0 {
            let next_wire = wire.keys().next().map(|k| k.0);
            let next_timer = alice.next_deadline();
            now = match (next_wire, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            let due: Vec<_> = wire.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
            for key in due {
                let Some((to_bob, datagram)) = wire.remove(&key) else {
                    continue;
                };
                match (to_bob, datagram) {
                    (true, Datagram::Chat(chat)) => {
                        let out = bob.chat_received(chat);
                        shown.extend(messages(&out));
                        for d in transmitted(&out) {
                            put(&mut wire, &mut rng, now, false, d);
                        }
                    }
                    (false, Datagram::Ack(ack)) => {
                        let out = alice.ack_received(ack, now);
                        failed += events(&out)
                            .iter()
                            .filter(|e| matches!(e, ClientEvent::Failed { .. }))
                            .count();
                        for d in transmitted(&out) {
                            put(&mut wire, &mut rng, now, true, d);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let out = alice.tick(now);
            failed += events(&out)
                .iter()
                .filter(|e| matches!(e, ClientEvent::Failed { .. }))
                .count();
            for d in transmitted(&out) {
                put(&mut wire, &mut rng, now, true, d);
            }
        }
        assert_eq!(failed, 0, "seed {seed}");
        assert_eq!(shown, sent, "seed {seed}: delivered exactly once, in order");
        assert!(
            now.duration_since(t0) < Duration::from_secs(30),
            "seed {seed}"
        );
    }
}

#[test]
fn split_never_cuts_a_character() {
    assert_eq!(split("abcdef", 4), ["abcd", "ef"]);
    assert_eq!(split("a🐦b", 2), ["a", "🐦", "b"]);
    assert_eq!(split("", 4), [""]);
}

fn hostile_part(seq: Seq, base: Seq, part: u16, parts: u16, text: &str) -> Chat {
    Chat {
        instance: ALICE,
        seq,
        base,
        part,
        parts,
        time: time(),
        from: name("alice"),
        text: text.into(),
    }
}

#[test]
fn a_peer_cannot_make_a_conversation_hold_more_than_its_share() {
    // Parts held ahead of a gap, each as long as a part may be: past the
    // conversation's share they are not taken (nor acknowledged).
    let mut bob = bob_from_alice();
    let big = "话".repeat(MAX_PART_UNITS);
    bob.chat_received(hostile_part(1, 1, 1, 128, &big));
    let mut taken = 0;
    for seq in 3..1000 {
        let out = bob.chat_received(hostile_part(seq, 1, 2, 128, &big));
        if !transmitted(&out).is_empty() {
            taken += 1;
        }
    }
    let limit = DeliveryConfig::default().max_held_bytes;
    assert!(bob.held_bytes() <= limit, "{} held", bob.held_bytes());
    assert!(taken < 997, "some parts were refused: {taken} taken");
    assert!(
        bob.held_bytes() + big.len() > limit,
        "the share is used, not more"
    );
}

#[test]
fn conversations_share_a_clients_budget() {
    let config = DeliveryConfig {
        budget: ReceiveBudget::new(10_000),
        ..DeliveryConfig::default()
    };
    let mut from_alice = Conversation::new(name("alice"), name("bob"), BOB, config.clone());
    let mut from_carol = Conversation::new(name("carol"), name("bob"), BOB, config.clone());
    let text = "x".repeat(400);
    // Alice fills the budget with parts held ahead of a gap.
    for seq in 2..100 {
        from_alice.chat_received(hostile_part(seq, 1, 2, 128, &text));
    }
    assert!(config.budget.used() <= 10_000);
    assert!(config.budget.used() > 9_000);
    // Carol cannot get a part held now...
    let mut carol = hostile_part(2, 1, 2, 128, &text);
    carol.from = name("carol");
    assert!(transmitted(&from_carol.chat_received(carol.clone())).is_empty());
    // ... but a whole message still goes through: shown at once, it is
    // held only for a moment.
    let mut whole = hostile_part(1, 1, 1, 1, "hello bob");
    whole.from = name("carol");
    let out = from_carol.chat_received(whole);
    assert!(transmitted(&out).is_empty() || !messages(&out).is_empty());
    // When alice's stream starts over (a new instance), her share is freed.
    let mut fresh = hostile_part(1, 1, 1, 1, "restarted");
    fresh.instance = InstanceId(0xA2);
    assert_eq!(messages(&from_alice.chat_received(fresh)), ["restarted"]);
    assert_eq!(config.budget.used(), 0);
    assert_eq!(messages(&from_carol.chat_received(carol)).len(), 0);
    assert!(config.budget.used() > 0, "carol's part is held now");
}

#[test]
fn sequence_numbers_at_the_limit_and_bases_out_of_reach_change_nothing() {
    let mut bob = bob_from_alice();
    assert_eq!(
        messages(&bob.chat_received(hostile_part(5, 5, 1, 1, "first"))),
        ["first"]
    );
    // A base far beyond what a sender can have given up: ignored, not
    // acknowledged, and the stream stays where it was.
    let out = bob.chat_received(hostile_part(MAX_SEQ, MAX_SEQ, 1, 1, "from nowhere"));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        messages(&bob.chat_received(hostile_part(6, 6, 1, 1, "second"))),
        ["second"]
    );
    // A stream that starts at the very top does not overflow.
    let mut carol = bob_from_alice();
    assert_eq!(
        messages(&carol.chat_received(hostile_part(MAX_SEQ, MAX_SEQ, 1, 1, "top"))),
        ["top"]
    );
    let again = carol.chat_received(hostile_part(MAX_SEQ, MAX_SEQ, 1, 1, "top"));
    assert!(messages(&again).is_empty(), "a repeat is not shown again");
    // A base within reach moves the stream on, as a sender that gave up
    // on some parts does.
    let out = bob.chat_received(hostile_part(100, 100, 1, 1, "after a gap"));
    assert_eq!(messages(&out), ["after a gap"]);
    assert_eq!(bob.held_bytes(), 0);
}
