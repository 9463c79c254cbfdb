use pigeon_shared::seal::seal;
use pigeon_shared::{Bye, Closing, Expired, Pong, RefuseReason, RosterEntry, TalkTime};

use super::*;

const SERVER: &str = "10.0.0.1:7788";
const ME: InstanceId = InstanceId(0xA11CE);
const BOB: InstanceId = InstanceId(0xB0B);
const TOKEN: SessionToken = SessionToken(0x70CE);
const KEEPALIVE: Duration = Duration::from_secs(2);

fn name(text: &str) -> UserName {
    UserName::parse(text).unwrap()
}

fn addr(text: &str) -> PeerAddr {
    PeerAddr::parse(text).unwrap()
}

fn sock(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Logs out with nothing left to deliver: the conversations are asked to
/// drain, and say at once that they have.
fn logout_now(s: &mut Session, t: Instant) -> Vec<SessionOutput> {
    let out = s.logout(t);
    assert!(
        matches!(out.as_slice(), [SessionOutput::Drain { .. }]),
        "{out:?}"
    );
    s.drained(t)
}

fn to_peer(peer: &str, input: PeerInput) -> SessionOutput {
    SessionOutput::Conversation {
        peer: name(peer),
        input,
    }
}

fn session() -> (Session, Instant) {
    (Session::new(config()), Instant::now())
}

fn config() -> SessionConfig {
    SessionConfig {
        name: name("alice"),
        server: sock(SERVER),
        endpoint: addr("10.0.0.2:5000"),
        instance: ME,
        login_timeouts: vec![Duration::from_millis(500), Duration::from_secs(1)],
        logout_timeouts: vec![Duration::from_millis(200), Duration::from_millis(400)],
        max_reconnect_delay: Duration::from_secs(4),
        drain_timeout: Duration::from_secs(5),
        plain_protocol: false,
        keep_trying: false,
        nonce_seed: 7,
        identity: None,
        server_key: None,
        pinned_peers: Default::default(),
        pin_on_sight: true,
        mail_seen: Vec::new(),
        alternates: Vec::new(),
    }
}

fn entry(n: &str, a: &str, instance: Option<InstanceId>) -> RosterEntry {
    RosterEntry {
        name: name(n),
        endpoint: addr(a),
        instance,
        key: None,
    }
}

fn snapshot(revision: Option<Revision>, entries: Vec<RosterEntry>) -> RosterSnapshot {
    RosterSnapshot {
        revision,
        entries,
        skipped: Vec::new(),
    }
}

/// The login `s` sends in its current round of attempts.
fn my_login(s: &Session, token: Option<SessionToken>) -> Datagram {
    Datagram::Login(
        Login {
            name: name("alice"),
            endpoint: addr("10.0.0.2:5000"),
            pigeon: Some(LoginExt {
                instance: ME,
                token,
                nonce: Some(s.login_nonce()),
                hello: None,
                pad: 0,
            }),
        }
        .padded(),
    )
}

fn seed_accept() -> Datagram {
    Datagram::Accept(Accept {
        tcp_port: 4000,
        pigeon: None,
    })
}

/// A Pigeon server's answer to `s`'s login.
/// A seed server's `Accept` from `source`, taken once no Pigeon answer
/// came in its grace.
fn seed_accepted(s: &mut Session, source: SocketAddr, t: Instant) -> Vec<SessionOutput> {
    let held = s.datagram_received(seed_accept(), source, t);
    assert_eq!(held, vec![], "held while a Pigeon answer may come");
    assert_eq!(s.deadline(), Some(t + SEED_ANSWER_GRACE));
    s.timer_fired(t + SEED_ANSWER_GRACE)
}

fn pigeon_accept(s: &Session) -> Datagram {
    Datagram::Accept(Accept {
        tcp_port: 4000,
        pigeon: Some(AcceptExt {
            roster_port: 4001,
            token: Some(TOKEN),
            keepalive_ms: 2000,
            nonce: Some(s.login_nonce()),
            reply: None,
            public: None,
            relay: None,
        }),
    })
}

/// A Pigeon server's refusal of `s`'s login.
fn refused(s: &Session, reason: RefuseReason, detail: &str) -> Datagram {
    Datagram::Refused(Refused {
        reason,
        detail: detail.into(),
        nonce: Some(s.login_nonce()),
    })
}

/// `datagram` as the Pigeon server sends it to a session whose token is
/// `TOKEN`.
fn sealed(datagram: Datagram) -> Datagram {
    seal(&SessionKey::from_token(TOKEN), &datagram)
}

/// The keepalive among `out`, and its nonce.
fn ping_nonce(out: &[SessionOutput]) -> Nonce {
    let pings: Vec<Nonce> = sends(out)
        .into_iter()
        .filter_map(|d| match d {
            Datagram::Ping(Ping {
                nonce: Some(nonce), ..
            }) => Some(nonce),
            _ => None,
        })
        .collect();
    let [nonce] = pings.as_slice() else {
        panic!("not one keepalive: {out:?}")
    };
    *nonce
}

fn joined(n: &str, a: &str, instance: Option<InstanceId>) -> RosterChange {
    RosterChange::Joined {
        name: name(n),
        endpoint: addr(a),
        instance,
        key: None,
    }
}

fn left(n: &str, a: &str) -> RosterChange {
    RosterChange::Left {
        name: name(n),
        endpoint: addr(a),
    }
}

fn delta(from: Revision, changes: Vec<RosterChange>) -> Datagram {
    sealed(Datagram::Delta(Delta::new(from, &changes)))
}

fn emitted(out: &[SessionOutput]) -> Vec<ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::Emit(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn sends(out: &[SessionOutput]) -> Vec<Datagram> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::Send { datagram, .. } => Some(datagram.clone()),
            _ => None,
        })
        .collect()
}

/// A session online with a Pigeon server at revision 3, bob online.
fn pigeon_online() -> (Session, Instant) {
    let (mut s, t) = session();
    s.start(t);
    s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    s.roster_fetched(
        Ok(snapshot(
            Some(3),
            vec![
                entry("alice", "10.0.0.2:5000", Some(ME)),
                entry("bob", "10.0.0.3:5000", Some(BOB)),
            ],
        )),
        t,
    );
    assert!(s.is_online());
    (s, t)
}

#[test]
fn a_seed_server_login_fetches_the_seed_roster_and_is_ready() {
    let (mut s, t) = session();
    assert_eq!(
        s.start(t),
        vec![SessionOutput::Send {
            to: sock(SERVER),
            datagram: my_login(&s, None)
        }]
    );
    // A seed server answers from a throwaway port.
    let out = seed_accepted(&mut s, sock("10.0.0.1:61000"), t);
    assert_eq!(
        out,
        vec![SessionOutput::FetchRoster {
            from: sock("10.0.0.1:4000"),
            as_user: None,
        }]
    );
    let out = s.roster_fetched(
        Ok(snapshot(
            None,
            vec![
                entry("bob", "10.0.0.3:5000", None),
                entry("alice", "10.0.0.2:5000", None),
            ],
        )),
        t,
    );
    let events = emitted(&out);
    let [ClientEvent::Ready {
        name: me,
        endpoint,
        online: 2,
        roster,
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!((me.as_str(), *endpoint), ("alice", addr("10.0.0.2:5000")));
    let users: Vec<_> = roster
        .iter()
        .map(|(n, p)| (n.to_string(), p.endpoint))
        .collect();
    assert_eq!(
        users,
        [
            ("alice".to_owned(), addr("10.0.0.2:5000")),
            ("bob".to_owned(), addr("10.0.0.3:5000"))
        ]
    );
    // No keepalives for a seed server.
    assert_eq!(s.deadline(), None);
}

#[test]
fn a_pigeon_accept_fetches_the_pigeon_roster_and_starts_keepalives() {
    let (mut s, t) = session();
    s.start(t);
    let out = s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    assert_eq!(
        out,
        vec![SessionOutput::FetchRoster {
            from: sock("10.0.0.1:4001"),
            as_user: Some((name("alice"), TOKEN)),
        }]
    );
    s.roster_fetched(
        Ok(snapshot(
            Some(3),
            vec![entry("alice", "10.0.0.2:5000", Some(ME))],
        )),
        t,
    );
    assert_eq!(s.revision(), Some(3));
    assert_eq!(s.deadline(), Some(t + KEEPALIVE));
    let out = s.timer_fired(t + KEEPALIVE);
    assert_eq!(
        sends(&out),
        vec![Datagram::Ping(Ping {
            name: name("alice"),
            token: TOKEN,
            nonce: Some(ping_nonce(&out)),
        })]
    );
}

#[test]
fn a_lost_login_is_retried_then_fails_with_a_clear_reason() {
    let (mut s, t) = session();
    s.start(t);
    assert!(s.timer_fired(t + Duration::from_millis(499)).is_empty());
    let out = s.timer_fired(t + Duration::from_millis(500));
    assert_eq!(sends(&out), vec![my_login(&s, None)]);
    let out = s.timer_fired(t + Duration::from_millis(1500));
    let events = emitted(&out);
    let [ClientEvent::LoginFailed { reason }] = events.as_slice() else {
        panic!("{out:?}")
    };
    assert!(reason.contains("2 login attempts"), "{reason}");
    assert!(s.is_ended());
}

#[test]
fn a_late_answer_is_announced_from_the_second_attempt() {
    let (mut s, t) = session();
    let out = s.start(t);
    assert!(emitted(&out).is_empty(), "the first attempt is quiet");
    let out = s.timer_fired(t + Duration::from_millis(500));
    assert_eq!(
        emitted(&out),
        vec![ClientEvent::Connecting {
            server: sock(SERVER),
            attempt: 2,
            why: NO_ANSWER.into(),
        }]
    );
}

#[test]
fn a_session_that_keeps_trying_never_gives_up_the_first_login() {
    let (s, t) = session();
    let mut config = s.config.clone();
    config.keep_trying = true;
    let mut s = Session::new(config);
    s.start(t);
    // Past the two configured waits (0.5 s, 1 s), the reconnect backoff
    // (0.5 s doubling to at most 4 s), never below the last of them.
    let mut now = t;
    let mut waits = Vec::new();
    for attempt in 2..=9 {
        let next = s.deadline().unwrap();
        waits.push(next - now);
        now = next;
        let out = s.timer_fired(now);
        assert_eq!(sends(&out), vec![my_login(&s, None)], "attempt {attempt}");
        let events = emitted(&out);
        assert!(
            matches!(events.as_slice(), [ClientEvent::Connecting { attempt: a, .. }] if *a == attempt),
            "{events:?}"
        );
        assert!(!s.is_ended());
        assert!(!s.can_chat(), "not logged in yet");
    }
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [500, 1000, 1000, 1000, 2000, 4000, 4000, 4000]);
    // An answer at last: logged in as usual.
    let out = s.datagram_received(pigeon_accept(&s), sock(SERVER), now);
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::FetchRoster { .. }]
    ));
    let out = s.roster_fetched(Ok(snapshot(Some(3), vec![])), now);
    assert!(emitted(&out)
        .iter()
        .any(|e| matches!(e, ClientEvent::Ready { .. })));
}

#[test]
fn a_session_that_keeps_trying_still_takes_no_for_an_answer() {
    let (s, t) = session();
    let mut config = s.config.clone();
    config.keep_trying = true;
    let mut s = Session::new(config);
    s.start(t);
    for _ in 0..5 {
        let at = s.deadline().unwrap();
        s.timer_fired(at);
    }
    let out = s.datagram_received(
        refused(&s, RefuseReason::NameTaken, "alice is already online"),
        sock(SERVER),
        t,
    );
    assert!(matches!(
        emitted(&out).as_slice(),
        [ClientEvent::Refused { .. }]
    ));
    assert!(s.is_ended());
}

#[test]
fn a_failed_fetch_logs_in_again() {
    let (mut s, t) = session();
    s.start(t);
    seed_accepted(&mut s, sock(SERVER), t);
    let out = s.roster_fetched(Err("connection refused".into()), t);
    assert_eq!(sends(&out), vec![my_login(&s, None)]);
}

#[test]
fn refusal_ends_the_session() {
    let (mut s, t) = session();
    s.start(t);
    let out = s.datagram_received(
        refused(&s, RefuseReason::NameTaken, "alice is already online"),
        sock(SERVER),
        t,
    );
    assert_eq!(
        emitted(&out),
        vec![ClientEvent::Refused {
            reason: RefuseReason::NameTaken,
            detail: "alice is already online".into()
        }]
    );
    assert!(s.is_ended());
}

#[test]
fn server_datagrams_from_other_hosts_are_ignored() {
    let (mut s, t) = session();
    s.start(t);
    assert!(s
        .datagram_received(pigeon_accept(&s), sock("10.6.6.6:7788"), t)
        .is_empty());
    let refusal = refused(&s, RefuseReason::NameTaken, "");
    assert!(s
        .datagram_received(refusal, sock("10.6.6.6:7788"), t)
        .is_empty());
    assert!(!s.is_ended());
}

#[test]
fn pigeon_server_datagrams_must_come_from_the_servers_own_address() {
    let (mut s, t) = session();
    s.start(t);
    // Another process on the server's host cannot pose as the server.
    assert!(s
        .datagram_received(pigeon_accept(&s), sock("10.0.0.1:61000"), t)
        .is_empty());
    s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    s.roster_fetched(Ok(snapshot(Some(3), vec![])), t);
    for forged in [
        sealed(Datagram::Closing(Closing {
            detail: String::new(),
        })),
        Datagram::Expired(Expired {
            name: name("alice"),
            nonce: None,
        }),
        delta(3, vec![joined("mallory", "10.0.0.1:9", None)]),
        Datagram::Login(Login {
            name: name("mallory"),
            endpoint: addr("10.0.0.1:9"),
            pigeon: None,
        }),
    ] {
        assert!(
            s.datagram_received(forged.clone(), sock("10.0.0.1:61000"), t)
                .is_empty(),
            "{forged:?}"
        );
    }
    assert!(s.is_online());
    assert!(s.peer("mallory").is_none());
}

#[test]
fn seed_broadcasts_during_the_fetch_are_replayed_on_the_snapshot() {
    let (mut s, t) = session();
    s.start(t);
    seed_accepted(&mut s, sock(SERVER), t);
    let carol = Datagram::Login(Login {
        name: name("carol"),
        endpoint: addr("10.0.0.4:5000"),
        pigeon: None,
    });
    let bob_leaves = Datagram::Logout(Logout {
        name: name("bob"),
        endpoint: addr("10.0.0.3:5000"),
        pigeon: None,
    });
    s.datagram_received(carol, sock(SERVER), t);
    s.datagram_received(bob_leaves, sock(SERVER), t);
    s.roster_fetched(
        Ok(snapshot(
            None,
            vec![
                entry("alice", "10.0.0.2:5000", None),
                entry("bob", "10.0.0.3:5000", None),
            ],
        )),
        t,
    );
    let names: Vec<_> = s.users().into_iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["alice", "carol"]);
}

#[test]
fn deltas_during_the_fetch_apply_only_past_the_snapshot_revision() {
    let (mut s, t) = session();
    s.start(t);
    s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    // Revisions 3..5: bob joins (3), carol joins (4), bob leaves (5).
    s.datagram_received(
        delta(2, vec![joined("bob", "10.0.0.3:5000", Some(BOB))]),
        sock(SERVER),
        t,
    );
    s.datagram_received(
        delta(
            3,
            vec![
                joined("carol", "10.0.0.4:5000", None),
                left("bob", "10.0.0.3:5000"),
            ],
        ),
        sock(SERVER),
        t,
    );
    // The snapshot was taken at revision 4: bob and carol in it.
    let out = s.roster_fetched(
        Ok(snapshot(
            Some(4),
            vec![
                entry("alice", "10.0.0.2:5000", Some(ME)),
                entry("bob", "10.0.0.3:5000", Some(BOB)),
                entry("carol", "10.0.0.4:5000", None),
            ],
        )),
        t,
    );
    assert_eq!(s.revision(), Some(5));
    let names: Vec<_> = s.users().into_iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["alice", "carol"]);
    let events = emitted(&out);
    let [ClientEvent::Ready {
        online: 2, roster, ..
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    let names: Vec<_> = roster.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["alice", "carol"]);
}

#[test]
fn deltas_online_apply_once_and_a_gap_fetches_a_fresh_snapshot() {
    let (mut s, t) = pigeon_online();
    let carol = delta(3, vec![joined("carol", "10.0.0.4:5000", None)]);
    let out = s.datagram_received(carol.clone(), sock(SERVER), t);
    assert_eq!(
        emitted(&out),
        vec![ClientEvent::Online {
            name: name("carol"),
            endpoint: addr("10.0.0.4:5000")
        }]
    );
    // A duplicate changes nothing.
    assert!(s.datagram_received(carol, sock(SERVER), t).is_empty());
    assert_eq!(s.revision(), Some(4));
    // Revision 5 was lost; 6 shows the gap.
    let out = s.datagram_received(
        delta(5, vec![left("carol", "10.0.0.4:5000")]),
        sock(SERVER),
        t,
    );
    assert_eq!(
        out,
        vec![SessionOutput::FetchRoster {
            from: sock("10.0.0.1:4001"),
            as_user: Some((name("alice"), TOKEN)),
        }]
    );
    let out = s.roster_fetched(
        Ok(snapshot(
            Some(5),
            vec![
                entry("alice", "10.0.0.2:5000", Some(ME)),
                entry("bob", "10.0.0.3:5000", Some(BOB)),
                entry("carol", "10.0.0.4:5000", None),
                entry("dave", "10.0.0.5:5000", None),
            ],
        )),
        t,
    );
    // dave came with the snapshot; carol's leaving (6) was replayed.
    assert_eq!(
        emitted(&out),
        vec![
            ClientEvent::Online {
                name: name("dave"),
                endpoint: addr("10.0.0.5:5000")
            },
            ClientEvent::Offline {
                name: name("carol")
            },
        ]
    );
    assert_eq!(s.revision(), Some(6));
}

#[test]
fn a_delta_with_a_change_that_does_not_parse_fetches_a_fresh_snapshot() {
    let (mut s, t) = pigeon_online();
    let text: Vec<u8> = "delta,3,5,+carol;10.0.0.4:5000;-,+dave;not-an-endpoint;-"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let sealed = pigeon_shared::seal::seal_bytes(&SessionKey::from_token(TOKEN), &text);
    let corrupt = Datagram::decode(&sealed).unwrap();
    let out = s.datagram_received(corrupt, sock(SERVER), t);
    // carol, before the bad change, is taken; then a resync.
    assert!(out.iter().any(|o| matches!(o, SessionOutput::Emit(ClientEvent::Online { name, .. }) if name.as_str() == "carol")));
    assert!(matches!(
        out.last(),
        Some(SessionOutput::FetchRoster { .. })
    ));
    assert_eq!(s.revision(), Some(4));
}

#[test]
fn a_pong_ahead_of_the_roster_means_a_lost_delta() {
    let (mut s, t) = pigeon_online();
    assert!(s
        .datagram_received(
            sealed(Datagram::Pong(Pong { revision: 3 })),
            sock(SERVER),
            t
        )
        .is_empty());
    let out = s.datagram_received(
        sealed(Datagram::Pong(Pong { revision: 4 })),
        sock(SERVER),
        t,
    );
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::FetchRoster { .. }]
    ));
}

#[test]
fn silence_from_the_server_means_reconnecting() {
    let (mut s, t) = pigeon_online();
    // Pings every 2 s go unanswered; after 8 intervals the server counts
    // as lost.
    for at in (2..16).step_by(2) {
        let out = s.timer_fired(t + Duration::from_secs(at));
        assert_eq!(sends(&out).len(), 1, "ping at {at}s");
    }
    let out = s.timer_fired(t + Duration::from_secs(16));
    assert!(matches!(
        emitted(&out).as_slice(),
        [ClientEvent::ServerLost { .. }]
    ));
    assert!(s.can_chat());
    // Without the old token: the server may have restarted and taken an
    // earlier attempt (see
    // a_restarted_server_whose_first_accept_is_lost_takes_the_next_attempt).
    let out = s.timer_fired(t + Duration::from_millis(16_500));
    assert_eq!(sends(&out), vec![my_login(&s, None)]);
    // It keeps trying, further apart each time.
    let out = s.timer_fired(t + Duration::from_millis(17_500));
    assert_eq!(sends(&out), vec![my_login(&s, None)]);
    assert_eq!(s.deadline(), Some(t + Duration::from_millis(18_500)));
}

#[test]
fn a_restarted_server_is_rejoined_and_the_roster_differences_reported() {
    let (mut s, t) = pigeon_online();
    let ping = s.timer_fired(t + KEEPALIVE);
    let out = s.datagram_received(
        Datagram::Expired(Expired {
            name: name("alice"),
            nonce: Some(ping_nonce(&ping)),
        }),
        sock(SERVER),
        t + KEEPALIVE,
    );
    assert!(matches!(
        emitted(&out).as_slice(),
        [ClientEvent::ServerLost { .. }]
    ));
    assert_eq!(sends(&out), vec![my_login(&s, None)]);
    let new_accept = Datagram::Accept(Accept {
        tcp_port: 5000,
        pigeon: Some(AcceptExt {
            roster_port: 5001,
            token: Some(SessionToken(0xBEEF)),
            keepalive_ms: 2000,
            nonce: Some(s.login_nonce()),
            reply: None,
            public: None,
            relay: None,
        }),
    });
    let out = s.datagram_received(new_accept, sock(SERVER), t);
    assert_eq!(
        out,
        vec![SessionOutput::FetchRoster {
            from: sock("10.0.0.1:5001"),
            as_user: Some((name("alice"), SessionToken(0xBEEF))),
        }]
    );
    // bob has not come back yet; carol has.
    let out = s.roster_fetched(
        Ok(snapshot(
            Some(2),
            vec![
                entry("alice", "10.0.0.2:5000", Some(ME)),
                entry("carol", "10.0.0.4:5000", None),
            ],
        )),
        t,
    );
    assert_eq!(
        emitted(&out),
        vec![
            ClientEvent::Reconnected { online: 2 },
            ClientEvent::Online {
                name: name("carol"),
                endpoint: addr("10.0.0.4:5000")
            },
            ClientEvent::Offline { name: name("bob") },
        ]
    );
    assert_eq!(s.revision(), Some(2));
    let out = s.timer_fired(t + KEEPALIVE);
    assert_eq!(
        sends(&out),
        vec![Datagram::Ping(Ping {
            name: name("alice"),
            token: SessionToken(0xBEEF),
            nonce: Some(ping_nonce(&out)),
        })]
    );
}

#[test]
fn closing_waits_a_moment_before_logging_in_again() {
    let (mut s, t) = pigeon_online();
    let out = s.datagram_received(
        sealed(Datagram::Closing(Closing {
            detail: String::new(),
        })),
        sock(SERVER),
        t,
    );
    assert_eq!(
        emitted(&out),
        vec![ClientEvent::ServerLost {
            reason: "the server is shutting down".into()
        }]
    );
    assert!(sends(&out).is_empty());
    assert_eq!(s.deadline(), Some(t + Duration::from_millis(500)));
}

#[test]
fn pigeon_logout_is_repeated_until_bye() {
    let (mut s, t) = pigeon_online();
    let logout = Datagram::Logout(Logout {
        name: name("alice"),
        endpoint: addr("10.0.0.2:5000"),
        pigeon: Some(LogoutExt { token: TOKEN }),
    });
    assert_eq!(sends(&logout_now(&mut s, t)), vec![logout.clone()]);
    let out = s.timer_fired(t + Duration::from_millis(200));
    assert_eq!(sends(&out), vec![logout]);
    let out = s.datagram_received(
        sealed(Datagram::Bye(Bye {
            name: name("alice"),
        })),
        sock(SERVER),
        t,
    );
    assert_eq!(emitted(&out), vec![ClientEvent::LoggedOut]);
    assert!(s.is_ended());
}

#[test]
fn logout_gives_up_waiting_for_bye_after_its_attempts() {
    let (mut s, t) = pigeon_online();
    logout_now(&mut s, t);
    s.timer_fired(t + Duration::from_millis(200));
    let out = s.timer_fired(t + Duration::from_millis(600));
    assert_eq!(emitted(&out), vec![ClientEvent::LoggedOut]);
}

#[test]
fn seed_server_logout_is_one_plain_datagram() {
    let (mut s, t) = session();
    s.start(t);
    seed_accepted(&mut s, sock(SERVER), t);
    s.roster_fetched(Ok(snapshot(None, vec![])), t);
    let out = logout_now(&mut s, t);
    assert_eq!(
        sends(&out),
        vec![Datagram::Logout(Logout {
            name: name("alice"),
            endpoint: addr("10.0.0.2:5000"),
            pigeon: None
        })]
    );
    assert_eq!(emitted(&out), vec![ClientEvent::LoggedOut]);
}

#[test]
fn broadcasts_about_oneself_are_ignored() {
    let (mut s, t) = pigeon_online();
    let out = s.datagram_received(
        delta(3, vec![left("alice", "10.0.0.2:5000")]),
        sock(SERVER),
        t,
    );
    assert!(emitted(&out).is_empty());
    assert_eq!(
        s.peer("alice").map(|p| p.endpoint),
        Some(addr("10.0.0.2:5000"))
    );
}

fn talk(from: &str) -> Talk {
    Talk {
        time: TalkTime::parse("9:05:07").unwrap(),
        from: name(from),
        text: "hi".into(),
    }
}

fn chat(from: &str, instance: InstanceId) -> Chat {
    Chat {
        instance,
        seq: 1,
        base: 1,
        part: 1,
        parts: 1,
        time: TalkTime::parse("9:05:07").unwrap(),
        from: name(from),
        text: "hi".into(),
    }
}

#[test]
fn talks_are_taken_only_from_the_named_users_address() {
    let (mut s, t) = pigeon_online();
    s.datagram_received(
        delta(3, vec![joined("old", "10.0.0.9:5000", None)]),
        sock(SERVER),
        t,
    );
    // A seed client sends from a throwaway port on its host: fine.
    let out = s.datagram_received(Datagram::Talk(talk("old")), sock("10.0.0.9:61234"), t);
    assert_eq!(out, vec![to_peer("old", PeerInput::Talk(talk("old")))]);
    // A Pigeon client sends from its endpoint, so nothing else passes for it.
    let out = s.datagram_received(Datagram::Talk(talk("bob")), sock("10.0.0.3:5000"), t);
    assert_eq!(out, vec![to_peer("bob", PeerInput::Talk(talk("bob")))]);
    assert_eq!(
        s.check_talk(&talk("bob"), sock("10.0.0.3:61234")),
        Err(Refusal::WrongAddress)
    );
    assert_eq!(
        s.check_talk(&talk("bob"), sock("10.0.0.66:5000")),
        Err(Refusal::WrongAddress)
    );
    assert!(matches!(
        s.datagram_received(Datagram::Talk(talk("bob")), sock("10.0.0.66:5000"), t)
            .as_slice(),
        [SessionOutput::Refused {
            refusal: Refusal::WrongAddress,
            ..
        }]
    ));
    assert!(matches!(
        s.datagram_received(Datagram::Talk(talk("nobody")), sock("10.0.0.3:5000"), t)
            .as_slice(),
        [SessionOutput::Refused {
            refusal: Refusal::UnknownSender,
            ..
        }]
    ));
}

#[test]
fn chats_and_acks_must_come_from_the_exact_endpoint_and_instance() {
    let (mut s, t) = pigeon_online();
    let good = chat("bob", BOB);
    assert_eq!(
        s.datagram_received(Datagram::Chat(good.clone()), sock("10.0.0.3:5000"), t),
        vec![to_peer("bob", PeerInput::Chat(good.clone()))]
    );
    assert_eq!(
        s.check_chat(&good, sock("10.0.0.3:5001")),
        Err(Refusal::WrongAddress)
    );
    assert_eq!(
        s.check_chat(&chat("bob", InstanceId(1)), sock("10.0.0.3:5000")),
        Err(Refusal::WrongInstance)
    );
    assert!(matches!(
        s.datagram_received(
            Datagram::Chat(chat("bob", InstanceId(1))),
            sock("10.0.0.3:5000"),
            t
        )
        .as_slice(),
        [SessionOutput::Refused {
            refusal: Refusal::WrongInstance,
            ..
        }]
    ));
    let ack = Ack {
        from: name("bob"),
        instance: ME,
        seq: 1,
    };
    assert_eq!(
        s.datagram_received(Datagram::Ack(ack.clone()), sock("10.0.0.3:5000"), t),
        vec![to_peer("bob", PeerInput::Ack(ack.clone()))]
    );
    assert!(matches!(
        s.datagram_received(Datagram::Ack(ack), sock("10.0.0.9:5000"), t)
            .as_slice(),
        [SessionOutput::Refused { .. }]
    ));
}

#[test]
fn a_chat_from_a_user_of_unknown_kind_teaches_its_instance() {
    let (mut s, t) = session();
    s.start(t);
    seed_accepted(&mut s, sock(SERVER), t);
    s.roster_fetched(
        Ok(snapshot(None, vec![entry("bob", "10.0.0.3:5000", None)])),
        t,
    );
    let out = s.datagram_received(Datagram::Chat(chat("bob", BOB)), sock("10.0.0.3:5000"), t);
    assert_eq!(out.len(), 2);
    assert_eq!(s.peer("bob").and_then(|p| p.instance), Some(BOB));
}

#[test]
fn leaving_waits_for_the_conversations_but_not_forever() {
    let (mut s, t) = pigeon_online();
    let out = s.logout(t);
    assert_eq!(
        out,
        vec![SessionOutput::Drain {
            deadline: t + Duration::from_secs(5)
        }]
    );
    // Meanwhile nothing new goes out, and a second logout changes nothing.
    assert_eq!(s.check_send(&name("bob")), Err(SendTextError::LoggingOut));
    assert!(s.logout(t).is_empty());
    // The session stays alive meanwhile (keepalives go on); a conversation
    // that never answers holds the logout up only a little past the
    // drain's deadline.
    let now = loop {
        let now = s.deadline().unwrap();
        let out = s.timer_fired(now);
        if sends(&out).iter().any(|d| matches!(d, Datagram::Logout(_))) {
            break now;
        }
        assert!(now < t + Duration::from_secs(6), "{out:?}");
    };
    assert!(now > t + Duration::from_secs(5));
}

#[test]
fn a_restarted_server_whose_first_accept_is_lost_takes_the_next_attempt() {
    // Found by the simulator (chat_carries_on_across_a_server_restart,
    // seeds 1 and 7): the first login to the restarted server got a new
    // session, its Accept was lost (seed 7: the login arrived twice), and
    // the next attempt (the copy) carried the old token, which the server
    // refused as `name-taken`: the client quit, and its messages with it.
    let (mut s, t) = pigeon_online();
    let out = s.datagram_received(
        sealed(Datagram::Closing(Closing {
            detail: String::new(),
        })),
        sock(SERVER),
        t,
    );
    assert!(matches!(
        emitted(&out).as_slice(),
        [ClientEvent::ServerLost { .. }]
    ));
    // A repeated `closing` is not news.
    let out = s.datagram_received(
        sealed(Datagram::Closing(Closing {
            detail: String::new(),
        })),
        sock(SERVER),
        t,
    );
    assert!(emitted(&out).is_empty(), "{out:?}");
    let first = s.timer_fired(s.deadline().unwrap());
    assert_eq!(sends(&first), vec![my_login(&s, None)]);
    // Its Accept is lost (or it arrives twice): the next attempt, or the
    // copy, is answered with the same Accept, never refused.
    let second = s.timer_fired(s.deadline().unwrap());
    assert_eq!(sends(&second), vec![my_login(&s, None)]);
}

#[test]
fn a_flooding_source_gets_its_share_and_others_theirs() {
    let (mut s, t) = pigeon_online();
    // bob (Pigeon, 10.0.0.3:5000) floods; every copy is a valid talk.
    let passed = (0..5000)
        .filter(|_| {
            let out = s.datagram_received(Datagram::Talk(talk("bob")), sock("10.0.0.3:5000"), t);
            !matches!(
                out.as_slice(),
                [SessionOutput::Refused {
                    refusal: Refusal::RateLimited,
                    ..
                }]
            )
        })
        .count();
    let burst = PEER_RATE_LIMITS.per_address.burst as usize;
    assert_eq!(passed, burst);
    // Anyone else is unaffected, and so is the server.
    s.datagram_received(
        delta(3, vec![joined("old", "10.0.0.9:5000", None)]),
        sock(SERVER),
        t,
    );
    assert!(s.peer("old").is_some(), "the server's delta was taken");
    let out = s.datagram_received(Datagram::Talk(talk("old")), sock("10.0.0.9:61234"), t);
    assert_eq!(out, vec![to_peer("old", PeerInput::Talk(talk("old")))]);
    // bob gets more as time passes.
    let later = t + Duration::from_millis(100);
    let out = s.datagram_received(Datagram::Talk(talk("bob")), sock("10.0.0.3:5000"), later);
    assert_eq!(out, vec![to_peer("bob", PeerInput::Talk(talk("bob")))]);
}

#[test]
fn forged_answers_to_a_login_are_ignored() {
    let (mut s, t) = session();
    s.start(t);
    // From the server's own address, but not echoing this login's nonce:
    // someone who did not read the login.
    let forged_nonce = Nonce(s.login_nonce().0 ^ 1);
    for forged in [
        Datagram::Accept(Accept {
            tcp_port: 6666,
            pigeon: Some(AcceptExt {
                roster_port: 6667,
                token: Some(SessionToken(0xBAD)),
                keepalive_ms: 2000,
                nonce: Some(forged_nonce),
                reply: None,
                public: None,
                relay: None,
            }),
        }),
        Datagram::Accept(Accept {
            tcp_port: 6666,
            pigeon: Some(AcceptExt {
                roster_port: 6667,
                token: Some(SessionToken(0xBAD)),
                keepalive_ms: 2000,
                nonce: None,
                reply: None,
                public: None,
                relay: None,
            }),
        }),
        Datagram::Refused(Refused {
            reason: RefuseReason::NameTaken,
            detail: String::new(),
            nonce: Some(forged_nonce),
        }),
        Datagram::Refused(Refused {
            reason: RefuseReason::ServerFull,
            detail: String::new(),
            nonce: None,
        }),
        // Sealed with a key nobody has agreed yet.
        sealed(pigeon_accept(&s)),
    ] {
        assert!(
            s.datagram_received(forged.clone(), sock(SERVER), t)
                .is_empty(),
            "{forged:?}"
        );
    }
    assert!(!s.is_ended());
    // The real answer is taken.
    let out = s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::FetchRoster { .. }]
    ));
}

#[test]
fn forged_server_datagrams_from_the_servers_own_address_are_ignored() {
    let (mut s, t) = pigeon_online();
    let ping = s.timer_fired(t + KEEPALIVE);
    let nonce = ping_nonce(&ping);
    let t = t + KEEPALIVE;
    let mallory = vec![joined("mallory", "10.0.0.66:5000", None)];
    let wrong_key = SessionKey::from_token(SessionToken(TOKEN.0 + 1));
    for forged in [
        // Unsealed, what the server sends only sealed.
        Datagram::Delta(Delta::new(3, &mallory)),
        Datagram::Pong(Pong { revision: 9 }),
        Datagram::Closing(Closing {
            detail: String::new(),
        }),
        Datagram::Bye(Bye {
            name: name("alice"),
        }),
        // Sealed with another session's key.
        seal(&wrong_key, &Datagram::Delta(Delta::new(3, &mallory))),
        seal(
            &wrong_key,
            &Datagram::Closing(Closing {
                detail: String::new(),
            }),
        ),
        // Sealed right, but an answer only a login gets.
        sealed(Datagram::Refused(Refused {
            reason: RefuseReason::NameTaken,
            detail: String::new(),
            nonce: None,
        })),
        // `expired` not echoing a keepalive's nonce.
        Datagram::Expired(Expired {
            name: name("alice"),
            nonce: None,
        }),
        Datagram::Expired(Expired {
            name: name("alice"),
            nonce: Some(Nonce(nonce.0 ^ 1)),
        }),
        // The seed's plain broadcasts, from a Pigeon server.
        Datagram::Login(Login {
            name: name("mallory"),
            endpoint: addr("10.0.0.66:5000"),
            pigeon: None,
        }),
        Datagram::Logout(Logout {
            name: name("bob"),
            endpoint: addr("10.0.0.3:5000"),
            pigeon: None,
        }),
        // A refusal or an Accept after the login is done.
        refused(&s, RefuseReason::NameTaken, ""),
        Datagram::Accept(Accept {
            tcp_port: 6666,
            pigeon: None,
        }),
    ] {
        let out = s.datagram_received(forged.clone(), sock(SERVER), t);
        assert!(
            out.iter().all(|o| !matches!(
                o,
                SessionOutput::Emit(_) | SessionOutput::FetchRoster { .. }
            )),
            "{forged:?}: {out:?}"
        );
    }
    assert!(s.is_online() && !s.is_ended());
    assert!(s.peer("mallory").is_none());
    assert!(s.peer("bob").is_some());
    assert_eq!(s.revision(), Some(3));
    // What the server really sends still counts.
    s.datagram_received(delta(3, mallory), sock(SERVER), t);
    assert!(s.peer("mallory").is_some());
}

#[test]
fn a_gap_is_fetched_again_at_most_once_a_second() {
    let (mut s, t) = pigeon_online();
    let pong = |revision| sealed(Datagram::Pong(Pong { revision }));
    let out = s.datagram_received(pong(4), sock(SERVER), t);
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::FetchRoster { .. }]
    ));
    // The fetch brings nothing newer (a pong ahead of every snapshot).
    s.roster_fetched(Ok(snapshot(Some(3), vec![])), t);
    let soon = t + Duration::from_millis(300);
    assert!(s.datagram_received(pong(4), sock(SERVER), soon).is_empty());
    let later = t + Duration::from_secs(1);
    let out = s.datagram_received(pong(4), sock(SERVER), later);
    assert!(matches!(
        out.as_slice(),
        [SessionOutput::FetchRoster { .. }]
    ));
}

#[test]
fn a_forged_plain_accept_does_not_make_a_pigeon_server_a_seed_one() {
    let (mut s, t) = session();
    s.start(t);
    // A forger answers first, as a seed server would (no nonce to check):
    // held, in case the real answer is still on its way.
    let out = s.datagram_received(seed_accept(), sock(SERVER), t);
    assert_eq!(out, vec![]);
    // The Pigeon server's real answer comes within the grace and is taken.
    let t = t + Duration::from_millis(20);
    let out = s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    assert_eq!(
        out,
        vec![SessionOutput::FetchRoster {
            from: sock("10.0.0.1:4001"),
            as_user: Some((name("alice"), TOKEN)),
        }]
    );
    // The forged answer is forgotten.
    assert_eq!(s.timer_fired(t + SEED_ANSWER_GRACE), vec![]);
    s.roster_fetched(Ok(snapshot(Some(3), vec![])), t);
    assert!(s.is_online());
    // The session is the Pigeon server's: its sealed deltas count.
    s.datagram_received(
        delta(3, vec![joined("carol", "10.0.0.4:5000", None)]),
        sock(SERVER),
        t,
    );
    assert!(s.peer("carol").is_some());
}

#[test]
fn a_server_whose_key_is_pinned_is_never_taken_for_a_seed_server() {
    let pinned = Identity::from_secret([9; 32]).public();
    let (mut s, t) = keyed_session(Some(pinned));
    let hello = hello_in(&s.start(t));
    // A seed-style answer, however early, is not believed at all.
    assert_eq!(s.datagram_received(seed_accept(), sock(SERVER), t), vec![]);
    assert_ne!(s.deadline(), Some(t + SEED_ANSWER_GRACE));
    let later = t + SEED_ANSWER_GRACE;
    assert!(
        !s.timer_fired(later)
            .iter()
            .any(|o| matches!(o, SessionOutput::FetchRoster { .. })),
        "no fetch from a seed answer"
    );
    // The pinned server's answer is.
    let server = Identity::from_secret([9; 32]);
    let out = s.datagram_received(keyed_accept(&s, &server, &hello), sock(SERVER), later);
    assert!(
        matches!(out.as_slice(), [SessionOutput::FetchRoster { .. }]),
        "{out:?}"
    );
}

/// A session that logs in with a key, the server's key pinned as given.
fn keyed_session(pinned: Option<PublicKey>) -> (Session, Instant) {
    let (s, t) = session();
    let mut config = s.config.clone();
    config.identity = Some(Arc::new(Identity::from_secret([3; 32])));
    config.server_key = pinned;
    (Session::new(config), t)
}

/// The hello in the login `out` sends.
fn hello_in(out: &[SessionOutput]) -> Hello {
    out.iter()
        .find_map(|o| match o {
            SessionOutput::Send {
                datagram:
                    Datagram::Login(Login {
                        pigeon: Some(LoginExt { hello, .. }),
                        ..
                    }),
                ..
            } => *hello,
            _ => None,
        })
        .expect("a login with a hello")
}

/// Whether `out` is only the end of the session for `server-key-changed`.
fn refused_server_key_changed(out: &[SessionOutput]) -> bool {
    matches!(
        out,
        [SessionOutput::Emit(ClientEvent::Refused { reason: RefuseReason::Other(r), .. })]
            if r == SERVER_KEY_CHANGED
    )
}

/// The server `server` answers `s`'s login whose hello is `hello`.
fn keyed_accept(s: &Session, server: &Identity, hello: &Hello) -> Datagram {
    let answer = pigeon_shared::handshake::answer(
        server,
        &name("alice"),
        addr("10.0.0.2:5000"),
        s.login_nonce(),
        hello,
        TOKEN,
    )
    .unwrap();
    Datagram::Accept(Accept {
        tcp_port: 4000,
        pigeon: Some(AcceptExt {
            roster_port: 4001,
            token: None,
            keepalive_ms: 2000,
            nonce: Some(s.login_nonce()),
            reply: Some(answer.reply),
            public: None,
            relay: None,
        }),
    })
}

#[test]
fn a_keyed_login_pins_the_servers_key_on_first_contact() {
    let (mut s, t) = keyed_session(None);
    let hello = hello_in(&s.start(t));
    let server = Identity::from_secret([9; 32]);
    let out = s.datagram_received(keyed_accept(&s, &server, &hello), sock(SERVER), t);
    assert!(
        out.contains(&SessionOutput::PinServer(server.public())),
        "{out:?}"
    );
    // The token came encrypted; the fetch names it.
    assert!(out.contains(&SessionOutput::FetchRoster {
        from: sock("10.0.0.1:4001"),
        as_user: Some((name("alice"), TOKEN)),
    }));
    assert_eq!(s.server_key(), Some(server.public()));
}

#[test]
fn a_server_showing_another_key_than_the_pinned_one_is_not_logged_in_to() {
    let pinned = Identity::from_secret([9; 32]).public();
    let (mut s, t) = keyed_session(Some(pinned));
    let hello = hello_in(&s.start(t));
    let impostor = Identity::from_secret([10; 32]);
    let out = s.datagram_received(keyed_accept(&s, &impostor, &hello), sock(SERVER), t);
    assert!(refused_server_key_changed(&out), "{out:?}");
    // Nor one that shows no key at all where one was pinned.
    let (mut s, t) = keyed_session(Some(pinned));
    drop(s.start(t));
    let out = s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    assert!(refused_server_key_changed(&out), "{out:?}");
    // The pinned server itself is logged in to, and pinned no more.
    let (mut s, t) = keyed_session(Some(pinned));
    let hello = hello_in(&s.start(t));
    let server = Identity::from_secret([9; 32]);
    let out = s.datagram_received(keyed_accept(&s, &server, &hello), sock(SERVER), t);
    assert!(
        matches!(out.as_slice(), [SessionOutput::FetchRoster { .. }]),
        "{out:?}"
    );
}

fn keyed(n: &str, a: &str, instance: InstanceId, key: u8) -> RosterChange {
    RosterChange::Joined {
        name: name(n),
        endpoint: addr(a),
        instance: Some(instance),
        key: Some(PublicKey([key; 32])),
    }
}

#[test]
fn a_peers_key_is_pinned_and_a_change_blocks_sending_until_trusted() {
    let (mut s, t) = pigeon_online();
    let out = s.datagram_received(
        delta(3, vec![keyed("bob", "10.0.0.3:5000", BOB, 1)]),
        sock(SERVER),
        t,
    );
    // Seen for the first time: pinned at once, before alice ever writes.
    assert!(out.contains(&SessionOutput::PinPeer {
        name: name("bob"),
        key: PublicKey([1; 32]),
    }));
    assert!(s.use_key(&name("bob")).is_empty());
    assert!(s.check_send(&name("bob")).is_ok());

    // bob comes back with another key: told once, and nothing goes to him.
    let out = s.datagram_received(
        delta(4, vec![keyed("bob", "10.0.0.3:5001", InstanceId(9), 2)]),
        sock(SERVER),
        t,
    );
    assert!(emitted(&out).contains(&ClientEvent::KeyChanged {
        name: name("bob"),
        old: PublicKey([1; 32]),
        new: PublicKey([2; 32]),
    }));
    assert!(matches!(
        s.check_send(&name("bob")),
        Err(SendTextError::KeyChanged { .. })
    ));
    let info = s.key_info("bob");
    assert!(info.changed());
    // /trust: pinned, and sending is allowed again; nothing left to trust.
    assert_eq!(
        s.trust(&name("bob")).unwrap(),
        vec![SessionOutput::PinPeer {
            name: name("bob"),
            key: PublicKey([2; 32]),
        }]
    );
    assert!(s.check_send(&name("bob")).is_ok());
    assert!(s.trust(&name("bob")).is_err());
}

#[test]
fn a_key_pinned_in_an_earlier_run_is_checked_against_the_first_roster() {
    let (s, _) = session();
    let mut config = s.config.clone();
    config.pinned_peers = [(name("bob"), PublicKey([1; 32]))].into_iter().collect();
    let mut s = Session::new(config);
    let t = Instant::now();
    s.start(t);
    s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    let mut bob = entry("bob", "10.0.0.3:5000", Some(BOB));
    bob.key = Some(PublicKey([7; 32]));
    let out = s.roster_fetched(
        Ok(snapshot(
            Some(3),
            vec![entry("alice", "10.0.0.2:5000", Some(ME)), bob],
        )),
        t,
    );
    assert!(emitted(&out).contains(&ClientEvent::KeyChanged {
        name: name("bob"),
        old: PublicKey([1; 32]),
        new: PublicKey([7; 32]),
    }));
    assert!(s.check_send(&name("bob")).is_err());
}

/// Where the logins in `out` go.
fn login_targets(out: &[SessionOutput]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::Send {
                to,
                datagram: Datagram::Login(_),
            } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lost_server_is_replaced_by_the_others_of_its_cluster_in_turn() {
    let other = sock("10.0.0.9:7788");
    let mut config = config();
    config.alternates = vec![(other, None)];
    let mut s = Session::new(config);
    let t = Instant::now();
    s.start(t);
    s.datagram_received(pigeon_accept(&s), sock(SERVER), t);
    s.roster_fetched(
        Ok(snapshot(
            Some(3),
            vec![entry("alice", "10.0.0.2:5000", Some(ME))],
        )),
        t,
    );
    assert!(s.is_online());
    let lost = t + Duration::from_secs(16);
    for at in (2..16).step_by(2) {
        s.timer_fired(t + Duration::from_secs(at));
    }
    assert!(matches!(
        emitted(&s.timer_fired(lost)).as_slice(),
        [ClientEvent::ServerLost { .. }]
    ));
    // First the same server again, then the other, then back.
    let first = s.timer_fired(lost + Duration::from_millis(500));
    assert_eq!(login_targets(&first), vec![sock(SERVER)]);
    let second = s.timer_fired(lost + Duration::from_millis(1_500));
    assert_eq!(login_targets(&second), vec![other]);
    // The other still lists alice through the server lost: not an end,
    // and it is asked again.
    let refusal = Datagram::Refused(Refused {
        reason: RefuseReason::NameTaken,
        detail: "alice is already online (through server a)".into(),
        nonce: Some(s.login_nonce()),
    });
    assert!(s
        .datagram_received(refusal, other, lost + Duration::from_millis(1_600))
        .is_empty());
    assert!(!s.is_ended());
    let third = s.timer_fired(lost + Duration::from_millis(3_500));
    assert_eq!(login_targets(&third), vec![other]);
    // Its answer is taken from it, and the session is online there.
    let out = s.datagram_received(
        pigeon_accept(&s),
        other,
        lost + Duration::from_millis(3_600),
    );
    assert!(
        out.iter().any(
            |o| matches!(o, SessionOutput::FetchRoster { from, .. } if from.ip() == other.ip())
        ),
        "{out:?}"
    );
    assert_eq!(s.server(), other);
}

#[test]
fn a_first_login_that_gets_no_answer_tries_the_other_servers_given() {
    let other = sock("10.0.0.9:7788");
    let mut config = config();
    config.alternates = vec![(other, None)];
    let mut s = Session::new(config);
    let t = Instant::now();
    assert_eq!(login_targets(&s.start(t)), vec![sock(SERVER)]);
    let out = s.timer_fired(t + Duration::from_millis(500));
    assert_eq!(login_targets(&out), vec![other]);
    assert!(matches!(
        emitted(&out).as_slice(),
        [ClientEvent::Connecting { server, attempt: 2, .. }] if *server == other
    ));
    // Neither answers: given up, saying so.
    let out = s.timer_fired(t + Duration::from_millis(1_500));
    let events = emitted(&out);
    let [ClientEvent::LoginFailed { reason }] = events.as_slice() else {
        panic!("{out:?}")
    };
    assert!(reason.ends_with(" and 1 other server"), "{reason}");
}

/// Offline mail from bob (key `[8; 32]`) to alice (key `[3; 32]`), kept
/// under `serial`.
fn mail_from_bob(serial: u64, text: &str) -> Mail {
    let bob = Identity::from_secret([8; 32]);
    let alice = Identity::from_secret([3; 32]);
    let message = offline::OfflineMessage {
        sent_at_ms: 1_700_000_000_000,
        time: TalkTime::parse("12:00:00").unwrap(),
        text: text.to_owned(),
    };
    Mail {
        serial,
        from: name("bob"),
        from_key: bob.public(),
        stored_at_ms: 0,
        sealed: offline::seal(&bob, &name("bob"), &name("alice"), alice.public(), &message)
            .unwrap(),
    }
}

fn offline_texts(out: &[SessionOutput]) -> Vec<String> {
    emitted(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::OfflineMessage { text, .. } => Some(text),
            _ => None,
        })
        .collect()
}

#[test]
fn an_offline_message_is_shown_once_even_across_runs_and_servers() {
    let (mut s, _) = keyed_session(None);
    let first = mail_from_bob(1, "while you were out");
    let second = mail_from_bob(2, "and again");
    let out = s.mail_received(vec![first.clone()], Vec::new(), false);
    assert_eq!(offline_texts(&out), ["while you were out"]);
    // Remembered (for the next run) before the acknowledgement goes.
    let digest = offline::digest(&first.sealed);
    let shown = out
        .iter()
        .position(|o| *o == SessionOutput::MailShown(vec![digest]));
    let acked = out.iter().position(
        |o| matches!(o, SessionOutput::Mailbox(MailRequest::Ack { mail, .. }) if *mail == [1]),
    );
    assert!(
        matches!((shown, acked), (Some(a), Some(b)) if a < b),
        "{out:?}"
    );
    // The acknowledgement was lost: the same message comes again with
    // the next one; only the next one is shown, both acknowledged.
    let out = s.mail_received(vec![first.clone(), second.clone()], Vec::new(), false);
    assert_eq!(offline_texts(&out), ["and again"]);
    assert!(out.contains(&SessionOutput::Mailbox(MailRequest::Ack {
        mail: vec![1, 2],
        receipts: vec![],
    })));

    // The client stopped before its acknowledgement reached the server;
    // the next run, remembering what was shown, shows it no more, even
    // under another serial (another server of the cluster, or one that
    // started over).
    let (s2, _) = keyed_session(None);
    let mut config = s2.config.clone();
    config.mail_seen = vec![digest];
    let mut s2 = Session::new(config);
    let again = Mail {
        serial: 77,
        ..first
    };
    let out = s2.mail_received(vec![again, second], Vec::new(), false);
    assert_eq!(offline_texts(&out), ["and again"]);
    assert!(out.contains(&SessionOutput::Mailbox(MailRequest::Ack {
        mail: vec![77, 2],
        receipts: vec![],
    })));
}
