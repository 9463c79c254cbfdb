use pigeon_shared::roster_snapshot::RosterFormat;
use pigeon_shared::{Identity, LoginExt, LogoutExt, Nonce};
use rand::SeedableRng;

use super::*;
use crate::directory::Rendered;

const IID_A: InstanceId = InstanceId(0xA);
const IID_B: InstanceId = InstanceId(0xB);

struct Fixture {
    roster: Roster,
    directory: Arc<Directory>,
    t0: Instant,
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn fixture_with(tune: impl FnOnce(&mut RosterConfig)) -> Fixture {
    let mut config = RosterConfig::new(4242, 4343);
    config.liveness_timeout = Duration::from_secs(8);
    tune(&mut config);
    let directory = Arc::new(Directory::default());
    Fixture {
        roster: Roster::new(config, directory.clone(), StdRng::seed_from_u64(7)),
        directory,
        t0: Instant::now(),
    }
}

fn name(text: &str) -> UserName {
    UserName::parse(text).unwrap()
}

fn addr(text: &str) -> PeerAddr {
    PeerAddr::parse(text).unwrap()
}

fn sock(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn seed_login(n: &str, a: &str) -> Login {
    Login {
        name: name(n),
        endpoint: addr(a),
        pigeon: None,
    }
}

fn pigeon_login(n: &str, a: &str, instance: InstanceId, token: Option<SessionToken>) -> Login {
    let login = Login {
        name: name(n),
        endpoint: addr(a),
        pigeon: Some(LoginExt {
            instance,
            token,
            nonce: Some(Nonce(u128::from(instance.0))),
            hello: None,
            pad: 0,
        }),
    };
    login.padded()
}

fn seed_accept_to(a: &str) -> RosterAction {
    RosterAction::Send {
        to: sock(a),
        datagram: Datagram::Accept(Accept {
            tcp_port: 4242,
            pigeon: None,
        }),
    }
}

fn refusal(decision: &LoginDecision) -> Option<RefuseReason> {
    match decision {
        LoginDecision::Refused { reason, .. } => Some(reason.clone()),
        _ => None,
    }
}

/// The seed-era clients' hosts fetched the roster: their sessions proved
/// they listen (and get broadcasts).
fn confirm_seed_hosts(f: &mut Fixture) {
    for host in ["10.0.0.1", "10.0.0.2", "10.0.0.9"] {
        let revision = f.roster.revision();
        f.roster.seed_fetched(host.parse().unwrap(), revision);
    }
}

/// Logs in a Pigeon client, has it fetch the roster, and returns its
/// token.
fn join_pigeon(f: &mut Fixture, n: &str, a: &str, instance: InstanceId) -> SessionToken {
    let token = join_unsynced(f, n, a, instance);
    let revision = f.roster.revision();
    let (decision, _) = f.roster.synced(&name(n), token, revision, f.t0);
    assert_eq!(decision, SessionDecision::Done);
    token
}

/// Logs in a Pigeon client that has not fetched the roster yet.
fn join_unsynced(f: &mut Fixture, n: &str, a: &str, instance: InstanceId) -> SessionToken {
    let (decision, actions) = f
        .roster
        .login(pigeon_login(n, a, instance, None), sock(a), f.t0);
    assert_eq!(decision, LoginDecision::Joined);
    match &actions[0] {
        RosterAction::Send {
            datagram: Datagram::Accept(Accept {
                pigeon: Some(ext), ..
            }),
            ..
        } => ext
            .token
            .expect("a login without a handshake gets its token in clear"),
        other => panic!("no Pigeon Accept: {other:?}"),
    }
}

#[test]
fn a_seed_login_gets_a_plain_accept_at_its_claimed_endpoint() {
    let mut f = fixture();
    // A seed client logs in from an ephemeral port.
    let (decision, actions) = f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:61000"),
        f.t0,
    );
    assert_eq!(decision, LoginDecision::Joined);
    assert_eq!(
        actions,
        vec![
            seed_accept_to("10.0.0.1:5000"),
            RosterAction::Publish(RosterEvent::Joined {
                name: name("alice"),
                endpoint: addr("10.0.0.1:5000")
            }),
        ]
    );
    assert_eq!(
        f.directory.get("alice"),
        Some(DirectoryEntry {
            endpoint: addr("10.0.0.1:5000"),
            instance: None,
            key: None,
        })
    );
    assert_eq!(f.directory.revision(), 1);
}

#[test]
fn a_pigeon_login_gets_a_token_the_roster_port_and_the_keepalive_interval() {
    let mut f = fixture();
    let (_, actions) = f.roster.login(
        pigeon_login("alice", "10.0.0.1:5000", IID_A, None),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    let RosterAction::Send {
        to,
        datagram:
            Datagram::Accept(Accept {
                tcp_port,
                pigeon: Some(ext),
            }),
    } = &actions[0]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*to, sock("10.0.0.1:5000"));
    assert_eq!(
        (*tcp_port, ext.roster_port, ext.keepalive_ms),
        (4242, 4343, 1333)
    );
    assert_eq!(f.directory.get("alice").unwrap().instance, Some(IID_A));
}

#[test]
fn seed_users_get_one_datagram_per_change_and_pigeon_users_get_deltas() {
    let mut f = fixture();
    f.roster.login(
        seed_login("old", "10.0.0.9:5000"),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    confirm_seed_hosts(&mut f);
    let alice = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    f.roster.flush_deltas();
    let (_, actions) = f.roster.login(
        pigeon_login("bob", "10.0.0.2:5000", IID_B, None),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    // The seed user hears of bob at once, in the seed's form.
    assert!(actions.contains(&RosterAction::Broadcast {
        to: vec![sock("10.0.0.9:5000")],
        datagram: Datagram::Login(seed_login("bob", "10.0.0.2:5000")),
    }));
    // Pigeon users that fetched the roster hear of it in the next delta
    // (bob, who has not fetched yet, gets it in his snapshot).
    let deltas = f.roster.flush_deltas();
    let [RosterAction::BroadcastSealed {
        to,
        datagram: Datagram::Delta(delta),
    }] = deltas.as_slice()
    else {
        panic!("{deltas:?}")
    };
    // Sealed for each with its own key.
    assert_eq!(
        to,
        &vec![(sock("10.0.0.1:5000"), Some(SessionKey::from_token(alice)))]
    );
    assert_eq!((delta.from, delta.to()), (2, 3));
    let changes: Vec<_> = delta.changes().map(|(_, c)| c.unwrap()).collect();
    assert_eq!(
        changes,
        vec![RosterChange::Joined {
            name: name("bob"),
            endpoint: addr("10.0.0.2:5000"),
            instance: Some(IID_B),
            key: None,
        }]
    );
    assert!(f.roster.flush_deltas().is_empty());
}

#[test]
fn deltas_go_only_to_clients_that_fetched_the_roster_and_catch_them_up() {
    let mut f = fixture();
    let alice_token = join_unsynced(&mut f, "alice", "10.0.0.1:5000", IID_A);
    f.roster.login(
        seed_login("old", "10.0.0.9:5000"),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    // alice has not fetched the roster: no deltas for her yet.
    assert!(f.roster.flush_deltas().is_empty());
    f.roster.login(
        seed_login("older", "10.0.0.8:5000"),
        sock("10.0.0.8:5000"),
        f.t0,
    );
    f.roster.flush_deltas();
    // Her snapshot was taken at revision 1 (herself only): the two
    // changes after it come to her at once.
    let (decision, actions) = f.roster.synced(&name("alice"), alice_token, 1, f.t0);
    assert_eq!(decision, SessionDecision::Done);
    let [RosterAction::SendSealed {
        to,
        datagram: Datagram::Delta(delta),
        key,
    }] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*to, sock("10.0.0.1:5000"));
    assert_eq!(*key, Some(SessionKey::from_token(alice_token)));
    assert_eq!((delta.from, delta.to()), (1, 3));
    // From now on she is in every delta.
    f.roster.login(
        seed_login("oldest", "10.0.0.7:5000"),
        sock("10.0.0.7:5000"),
        f.t0,
    );
    assert_eq!(f.roster.flush_deltas().len(), 1);
    // Only her token syncs her.
    let (decision, _) = f.roster.synced(&name("alice"), SessionToken(1), 1, f.t0);
    assert_eq!(decision, SessionDecision::BadToken);
    let (decision, _) = f.roster.synced(&name("nobody"), alice_token, 1, f.t0);
    assert_eq!(decision, SessionDecision::UnknownUser);
}

#[test]
fn bursts_of_changes_share_deltas_with_contiguous_revisions() {
    let mut f = fixture_with(|c| c.max_delta_bytes = 300);
    join_pigeon(&mut f, "watcher", "10.0.0.1:5000", IID_A);
    f.roster.flush_deltas();
    for i in 0..20 {
        let endpoint = format!("10.0.1.{i}:5000");
        f.roster.login(
            seed_login(&format!("user{i}"), &endpoint),
            sock(&endpoint),
            f.t0,
        );
    }
    let deltas = f.roster.flush_deltas();
    assert!(
        deltas.len() > 1,
        "one delta cannot hold 20 changes in 300 bytes"
    );
    let mut next = 1;
    for action in &deltas {
        let RosterAction::BroadcastSealed {
            datagram: datagram @ Datagram::Delta(delta),
            ..
        } = action
        else {
            panic!("{action:?}")
        };
        assert_eq!(delta.from, next);
        // Sealed, it still fits.
        let sealed = datagram.encoded_len() + SEAL_OVERHEAD;
        assert!(sealed <= 300, "{sealed}");
        next = delta.to();
    }
    assert_eq!(next, 21);
    assert_eq!(f.roster.revision(), 21);
}

#[test]
fn a_repeated_login_refreshes_but_only_a_token_proves_liveness() {
    let mut f = fixture();
    let token = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    let later = f.t0 + Duration::from_secs(6);
    // A retry before the first Accept arrived: no token yet.
    let (decision, actions) = f.roster.login(
        pigeon_login("alice", "10.0.0.1:5000", IID_A, None),
        sock("10.0.0.1:5000"),
        later,
    );
    assert_eq!(decision, LoginDecision::Refreshed);
    assert_eq!(actions.len(), 1);
    let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(9));
    assert_eq!(
        evicted,
        vec![name("alice")],
        "a login without token kept alice alive"
    );

    let token2 = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    assert_ne!(token, token2);
    let (decision, _) = f.roster.login(
        pigeon_login("alice", "10.0.0.1:5000", IID_A, Some(token2)),
        sock("10.0.0.1:5000"),
        f.t0 + Duration::from_secs(6),
    );
    assert_eq!(decision, LoginDecision::Refreshed);
    let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(9));
    assert!(evicted.is_empty());
}

#[test]
fn nobody_can_refresh_or_take_over_a_pigeon_session() {
    let mut f = fixture();
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    for (login, source) in [
        (
            pigeon_login("alice", "10.0.0.1:5000", IID_A, Some(SessionToken(1))),
            "10.0.0.1:5000",
        ),
        (
            pigeon_login("alice", "10.0.0.1:5000", IID_B, None),
            "10.0.0.1:5000",
        ),
        (seed_login("alice", "10.0.0.1:5000"), "10.0.0.1:6000"),
        (
            pigeon_login("alice", "10.0.0.1:6000", IID_A, None),
            "10.0.0.1:6000",
        ),
    ] {
        let (decision, _) = f.roster.login(login.clone(), sock(source), f.t0);
        assert_eq!(
            refusal(&decision),
            Some(RefuseReason::NameTaken),
            "{login:?}"
        );
    }
}

#[test]
fn a_pigeon_login_from_behind_a_nat_is_where_it_came_from_and_told_so() {
    let mut f = fixture();
    // It claims its address on its own network; the server sees its
    // router's.
    let (decision, actions) = f.roster.login(
        pigeon_login("alice", "10.0.0.1:5000", IID_A, None),
        sock("198.51.100.7:40000"),
        f.t0,
    );
    assert_eq!(decision, LoginDecision::Joined);
    let accept = actions.iter().find_map(|action| match action {
        RosterAction::Send {
            to,
            datagram: Datagram::Accept(Accept {
                pigeon: Some(ext), ..
            }),
        } => Some((*to, *ext)),
        _ => None,
    });
    let (to, ext) = accept.expect("an Accept");
    assert_eq!(to, sock("198.51.100.7:40000"));
    assert_eq!(ext.public, Some(addr("198.51.100.7:40000")));
    assert_eq!(ext.relay, Some(crate::roster::DEFAULT_RELAY_RATE));
    assert_eq!(
        f.roster.users(),
        vec![(name("alice"), addr("198.51.100.7:40000"))]
    );
    // Nobody else can take that endpoint, nor the name.
    let (decision, _) = f.roster.login(
        pigeon_login("bob", "198.51.100.7:40000", IID_B, None),
        sock("198.51.100.7:40000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::EndpointTaken));
}

#[test]
fn a_seed_login_must_still_be_on_the_senders_host() {
    let mut f = fixture();
    let (decision, _) = f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("198.51.100.7:40000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::BadEndpoint));
}

#[test]
fn second_login_with_same_name_is_refused() {
    let mut f = fixture();
    f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    let (decision, actions) = f.roster.login(
        seed_login("alice", "10.0.0.2:6000"),
        sock("10.0.0.2:6000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::NameTaken));
    let [RosterAction::Send {
        to,
        datagram: Datagram::Refused(refused),
    }] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*to, sock("10.0.0.2:6000"));
    assert_eq!(refused.reason, RefuseReason::NameTaken);
    assert_eq!(f.roster.endpoint_of("alice"), Some(addr("10.0.0.1:5000")));
}

#[test]
fn same_seed_login_from_same_endpoint_is_a_refresh() {
    let mut f = fixture();
    f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    let (decision, actions) = f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:61000"),
        f.t0,
    );
    assert_eq!(decision, LoginDecision::Refreshed);
    assert_eq!(actions, vec![seed_accept_to("10.0.0.1:5000")]);
    assert_eq!(f.roster.revision(), 1);
}

#[test]
fn endpoint_host_and_capacity_refusals() {
    let mut f = fixture_with(|c| {
        c.max_users = 3;
        c.max_users_per_host = 2;
    });
    f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    let cases = [
        (
            seed_login("mallory", "10.0.0.1:5000"),
            "10.0.0.1:7000",
            RefuseReason::EndpointTaken,
        ),
        (
            seed_login("eve", "10.9.9.9:5000"),
            "10.0.0.6:4444",
            RefuseReason::BadEndpoint,
        ),
        (
            seed_login("zero", "10.0.0.1:0"),
            "10.0.0.1:5000",
            RefuseReason::BadEndpoint,
        ),
        (
            seed_login("any", "0.0.0.0:5000"),
            "10.0.0.1:5000",
            RefuseReason::BadEndpoint,
        ),
        (
            seed_login("multi", "224.0.0.1:5000"),
            "10.0.0.1:5000",
            RefuseReason::BadEndpoint,
        ),
    ];
    for (login, source, reason) in cases {
        let (decision, _) = f.roster.login(login.clone(), sock(source), f.t0);
        assert_eq!(refusal(&decision), Some(reason), "{login:?}");
    }
    f.roster.login(
        seed_login("bob", "10.0.0.1:5001"),
        sock("10.0.0.1:5001"),
        f.t0,
    );
    let (decision, _) = f.roster.login(
        seed_login("carol", "10.0.0.1:5002"),
        sock("10.0.0.1:5002"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::HostFull));
    f.roster.login(
        seed_login("dave", "10.0.0.4:5000"),
        sock("10.0.0.4:5000"),
        f.t0,
    );
    let (decision, _) = f.roster.login(
        seed_login("erin", "10.0.0.5:5000"),
        sock("10.0.0.5:5000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::ServerFull));
    assert_eq!(f.roster.len(), 3);
}

#[test]
fn a_login_claiming_another_hosts_endpoint_is_refused_back_to_the_sender() {
    let mut f = fixture();
    let (_, actions) = f.roster.login(
        seed_login("eve", "10.9.9.9:5000"),
        sock("10.0.0.6:4444"),
        f.t0,
    );
    let [RosterAction::Send { to, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(*to, sock("10.0.0.6:4444"));
    assert!(f.roster.is_empty());
}

#[test]
fn ipv4_mapped_sources_match_ipv4_endpoints() {
    let mut f = fixture();
    let (decision, _) = f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("[::ffff:10.0.0.1]:5000"),
        f.t0,
    );
    assert_eq!(decision, LoginDecision::Joined);
}

#[test]
fn seed_logout_needs_the_name_endpoint_and_host() {
    let mut f = fixture();
    f.roster.login(
        seed_login("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    f.roster.login(
        seed_login("bob", "10.0.0.2:5000"),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    confirm_seed_hosts(&mut f);
    let logout = |n: &str, a: &str| Logout {
        name: name(n),
        endpoint: addr(a),
        pigeon: None,
    };
    let (decision, actions) = f.roster.logout(
        logout("alice", "10.0.0.1:5000"),
        sock("10.0.0.66:5000"),
        f.t0,
    );
    assert_eq!(
        decision,
        SessionDecision::WrongSource {
            registered: addr("10.0.0.1:5000")
        }
    );
    assert!(actions.is_empty());
    let (decision, _) = f.roster.logout(
        logout("alice", "10.0.0.1:5001"),
        sock("10.0.0.1:5001"),
        f.t0,
    );
    assert!(matches!(decision, SessionDecision::EndpointMismatch { .. }));
    let (decision, _) = f.roster.logout(
        logout("nobody", "10.0.0.1:5000"),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    assert_eq!(decision, SessionDecision::UnknownUser);

    let (decision, actions) = f.roster.logout(
        logout("alice", "10.0.0.1:5000"),
        sock("10.0.0.1:61000"),
        f.t0,
    );
    assert_eq!(decision, SessionDecision::Done);
    assert_eq!(
        actions,
        vec![
            RosterAction::Broadcast {
                to: vec![sock("10.0.0.2:5000")],
                datagram: Datagram::Logout(logout("alice", "10.0.0.1:5000")),
            },
            RosterAction::Publish(RosterEvent::Left {
                name: name("alice"),
                endpoint: addr("10.0.0.1:5000"),
                reason: LeaveReason::LoggedOut,
            }),
        ]
    );
    assert!(f.directory.get("alice").is_none());
    // The endpoint is free again.
    let (decision, _) = f.roster.login(
        seed_login("carol", "10.0.0.1:5000"),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    assert_eq!(decision, LoginDecision::Joined);
}

#[test]
fn pigeon_logout_needs_the_token_and_is_answered_with_bye() {
    let mut f = fixture();
    let token = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    let logout = |token: Option<SessionToken>| Logout {
        name: name("alice"),
        endpoint: addr("10.0.0.1:5000"),
        pigeon: token.map(|token| LogoutExt { token }),
    };
    // From alice's own host, but without her token.
    let (decision, actions) = f.roster.logout(logout(None), sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, SessionDecision::BadToken);
    assert!(actions.is_empty());
    let (decision, _) =
        f.roster
            .logout(logout(Some(SessionToken(99))), sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, SessionDecision::BadToken);
    assert_eq!(f.roster.len(), 1);

    let (decision, actions) = f
        .roster
        .logout(logout(Some(token)), sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, SessionDecision::Done);
    assert!(actions.contains(&RosterAction::SendSealed {
        to: sock("10.0.0.1:5000"),
        datagram: Datagram::Bye(Bye {
            name: name("alice")
        }),
        key: Some(SessionKey::from_token(token)),
    }));
    // A retry after the bye was lost is answered again.
    let (decision, actions) = f
        .roster
        .logout(logout(Some(token)), sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, SessionDecision::UnknownUser);
    assert_eq!(actions.len(), 1);
}

#[test]
fn pings_keep_a_session_alive_and_others_are_told_to_log_in_again() {
    let mut f = fixture();
    let token = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    let ping = |token| Ping {
        name: name("alice"),
        token,
        nonce: Some(Nonce(0x5EED)),
    };
    let at = f.t0 + Duration::from_secs(5);
    let (decision, actions) = f.roster.ping(ping(token), sock("10.0.0.1:5000"), at);
    assert_eq!(decision, SessionDecision::Done);
    assert_eq!(
        actions,
        vec![RosterAction::SendSealed {
            to: sock("10.0.0.1:5000"),
            datagram: Datagram::Pong(Pong { revision: 1 }),
            key: Some(SessionKey::from_token(token)),
        }]
    );
    // Wrong token, wrong port, or nobody by that name: `expired`, to the
    // sender only, and no credit.
    for (token, source) in [
        (SessionToken(1), "10.0.0.1:5000"),
        (token, "10.0.0.1:5001"),
        (token, "10.0.0.7:5000"),
    ] {
        let (decision, actions) = f.roster.ping(ping(token), sock(source), at);
        assert_ne!(decision, SessionDecision::Done, "{source}");
        assert_eq!(
            actions,
            vec![RosterAction::Send {
                to: sock(source),
                // Unsealed (there may be no session to seal it for),
                // echoing the keepalive's nonce.
                datagram: Datagram::Expired(Expired {
                    name: name("alice"),
                    nonce: Some(Nonce(0x5EED)),
                }),
            }]
        );
    }
    let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(12));
    assert!(evicted.is_empty(), "the ping at 5 s keeps alice until 13 s");
    let (evicted, actions) = f.roster.expire(f.t0 + Duration::from_secs(14));
    assert_eq!(evicted, vec![name("alice")]);
    assert!(actions.contains(&RosterAction::Publish(RosterEvent::Left {
        name: name("alice"),
        endpoint: addr("10.0.0.1:5000"),
        reason: LeaveReason::Evicted,
    })));
    let (decision, _) = f.roster.ping(ping(token), sock("10.0.0.1:5000"), at);
    assert_eq!(decision, SessionDecision::UnknownUser);
}

#[test]
fn seed_users_are_never_evicted() {
    let mut f = fixture();
    f.roster.login(
        seed_login("old", "10.0.0.9:5000"),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    confirm_seed_hosts(&mut f);
    let (evicted, _) = f.roster.expire(f.t0 + Duration::from_secs(3600));
    assert!(evicted.is_empty());
    let (decision, _) = f.roster.ping(
        Ping {
            name: name("old"),
            token: SessionToken(0),
            nonce: None,
        },
        sock("10.0.0.9:5000"),
        f.t0,
    );
    assert_eq!(decision, SessionDecision::BadToken);
}

#[test]
fn closing_goes_to_pigeon_users_only() {
    let mut f = fixture();
    f.roster.login(
        seed_login("old", "10.0.0.9:5000"),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    assert!(f.roster.closing("bye").is_none());
    let alice = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    assert_eq!(
        f.roster.closing("restarting"),
        Some(RosterAction::BroadcastSealed {
            to: vec![(sock("10.0.0.1:5000"), Some(SessionKey::from_token(alice)))],
            datagram: Datagram::Closing(Closing {
                detail: "restarting".into()
            }),
        })
    );
}

#[test]
fn the_directory_encodes_both_roster_formats() {
    use pigeon_shared::roster_snapshot::decode_frame;
    use pigeon_shared::RosterSnapshot;
    let mut f = fixture();
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    f.roster.login(
        seed_login("old", "10.0.0.9:5000"),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    let rendered = f.directory.encode(RosterFormat::Pigeon);
    assert_eq!((rendered.revision, rendered.users), (2, 2));
    let (text, _) = decode_frame(&rendered.bytes, 1 << 20).unwrap().unwrap();
    let snapshot = RosterSnapshot::parse(&text).unwrap();
    assert_eq!(snapshot.revision, Some(2));
    let entries: Vec<_> = snapshot
        .entries
        .iter()
        .map(|e| (e.name.to_string(), e.endpoint.to_string(), e.instance))
        .collect();
    assert_eq!(
        entries,
        vec![
            ("alice".into(), "10.0.0.1:5000".into(), Some(IID_A)),
            ("old".into(), "10.0.0.9:5000".into(), None),
        ]
    );
    let rendered = f.directory.encode(RosterFormat::Seed);
    let (text, _) = decode_frame(&rendered.bytes, 1 << 20).unwrap().unwrap();
    assert!(!text.contains("pigeon1"), "{text}");
    let parts: Vec<_> = text.split(';').collect();
    assert_eq!(parts, ["alice,10.0.0.1:5000", "old,10.0.0.9:5000", "end"]);
}

#[test]
fn deltas_wait_longer_the_more_clients_must_be_told() {
    let base = Duration::from_millis(2);
    let mut f = fixture_with(|c| {
        c.delta_wait_per_recipient = Duration::from_micros(100);
        c.max_delta_delay = Duration::from_millis(7);
    });
    assert_eq!(f.roster.delta_delay(base), base);
    // Seed-era users and Pigeon clients that have not fetched the
    // roster get no deltas, so they do not count.
    for i in 0..40 {
        let host = format!("10.1.0.{i}:5000");
        f.roster
            .login(seed_login(&format!("old{i}"), &host), sock(&host), f.t0);
    }
    join_unsynced(&mut f, "late", "10.9.9.9:5000", IID_B);
    assert_eq!(f.roster.delta_delay(base), base);
    for i in 0..50 {
        let host = format!("10.0.0.{i}:5000");
        join_pigeon(&mut f, &format!("p{i}"), &host, InstanceId(i + 100));
    }
    // 50 recipients at 100 µs each.
    assert_eq!(f.roster.delta_delay(base), Duration::from_millis(5));
    for i in 50..100 {
        let host = format!("10.0.0.{i}:5000");
        join_pigeon(&mut f, &format!("p{i}"), &host, InstanceId(i + 100));
    }
    assert_eq!(f.roster.delta_delay(base), Duration::from_millis(7));
    assert_eq!(
        f.roster.delta_delay(Duration::from_millis(80)),
        Duration::from_millis(80)
    );
}

#[test]
fn directory_snapshots_are_sorted_by_name_and_follow_every_change() {
    use pigeon_shared::roster_snapshot::decode_frame;
    use pigeon_shared::RosterSnapshot;
    let names = |rendered: &Rendered| -> Vec<String> {
        let (text, _) = decode_frame(&rendered.bytes, 1 << 20).unwrap().unwrap();
        RosterSnapshot::parse(&text)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.name.to_string())
            .collect()
    };
    let mut f = fixture();
    for (i, who) in ["mallory", "bob", "zoe", "alice", "carol"]
        .iter()
        .enumerate()
    {
        let host = format!("10.0.0.{}:5000", i + 1);
        f.roster.login(seed_login(who, &host), sock(&host), f.t0);
    }
    let first = f.directory.encode(RosterFormat::Pigeon);
    assert_eq!(names(&first), ["alice", "bob", "carol", "mallory", "zoe"]);
    // Asked again at the same revision: the same bytes, not a copy.
    let again = f.directory.encode(RosterFormat::Pigeon);
    assert!(Arc::ptr_eq(&first.bytes, &again.bytes));
    // Any change makes a new one.
    let bob = Logout {
        name: name("bob"),
        endpoint: addr("10.0.0.2:5000"),
        pigeon: None,
    };
    f.roster.logout(bob, sock("10.0.0.2:5000"), f.t0);
    let after = f.directory.encode(RosterFormat::Pigeon);
    assert_eq!(after.revision, first.revision + 1);
    assert_eq!(names(&after), ["alice", "carol", "mallory", "zoe"]);
}

#[test]
fn the_directory_snapshot_reports_its_revision() {
    let mut f = fixture();
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    f.roster.login(
        seed_login("old", "10.0.0.9:5000"),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    let (revision, mut users) = f.directory.snapshot();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(revision, 2);
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].1.instance, Some(IID_A));
    assert_eq!(users[1].1.instance, None);
}

#[test]
fn the_roster_keeps_its_own_time() {
    let mut f = fixture();
    // Nothing to do: no timer.
    assert_eq!(f.roster.poll_timeout(), None);
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    // A change waits a moment to share a delta; the sweep comes later.
    let due = f.roster.poll_timeout().unwrap();
    assert_eq!(due, f.t0 + DEFAULT_DELTA_DELAY);
    join_pigeon(&mut f, "bob", "10.0.0.2:5000", IID_B);
    assert_eq!(f.roster.poll_timeout(), Some(due), "one wait for both");
    // Early: nothing happens.
    assert!(f
        .roster
        .handle_timeout(due - Duration::from_micros(1))
        .is_empty());
    let actions = f.roster.handle_timeout(due);
    let deltas: Vec<_> = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                RosterAction::BroadcastSealed {
                    datagram: Datagram::Delta(_),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(deltas.len(), 1, "{actions:?}");
    assert!(!f.roster.has_pending_deltas());
    // Then only the sweep: 8 s timeout, a sweep every 250 ms at most.
    let sweep = f.roster.poll_timeout().unwrap();
    assert_eq!(sweep, f.t0 + f.roster.config().sweep_interval());
    // Past the liveness timeout, the sweep evicts both; with no Pigeon
    // client left, it stops.
    let late = f.t0 + Duration::from_secs(9);
    let actions = f.roster.handle_timeout(late);
    let evicted: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            RosterAction::Publish(RosterEvent::Left {
                name,
                reason: LeaveReason::Evicted,
                ..
            }) => Some(name.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, ["alice", "bob"]);
    assert!(f.roster.is_empty());
    // Their leaving is flushed (to nobody) a moment later; then no timer.
    let due = f.roster.poll_timeout().unwrap();
    assert!(f.roster.handle_timeout(due).is_empty());
    assert_eq!(f.roster.poll_timeout(), None);
}

#[test]
fn with_no_delta_delay_each_change_goes_out_at_once() {
    let mut f = fixture_with(|c| c.delta_delay = Duration::ZERO);
    let alice = join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    let (_, actions) = f.roster.login(
        pigeon_login("bob", "10.0.0.2:5000", IID_B, None),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    let to_alice = vec![(sock("10.0.0.1:5000"), Some(SessionKey::from_token(alice)))];
    assert!(
        actions.iter().any(|a| matches!(
            a,
            RosterAction::BroadcastSealed { datagram: Datagram::Delta(_), to } if to == &to_alice
        )),
        "{actions:?}"
    );
    assert!(!f.roster.has_pending_deltas());
}

#[test]
fn forged_seed_logins_get_no_broadcasts_and_expire() {
    let mut f = fixture_with(|c| {
        c.max_seed_users = 3;
        c.liveness_timeout = Duration::from_secs(60);
    });
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    // Forged seed-style logins claiming endpoints on a victim's host.
    for i in 0..3 {
        let (decision, actions) = f.roster.login(
            seed_login(&format!("fake{i}"), &format!("10.0.0.66:{}", 6000 + i)),
            sock(&format!("10.0.0.66:{}", 7000 + i)),
            f.t0,
        );
        assert_eq!(decision, LoginDecision::Joined);
        // What goes to the claimed endpoint is no larger than the login.
        for action in &actions {
            if let RosterAction::Send { datagram, .. } = action {
                assert!(
                    datagram.encoded_len()
                        <= Datagram::Login(seed_login(
                            &format!("fake{i}"),
                            &format!("10.0.0.66:{}", 6000 + i)
                        ))
                        .encoded_len()
                );
            }
        }
    }
    // Seed-era sessions have their own cap: a fourth is refused ...
    let (decision, _) = f.roster.login(
        seed_login("fake3", "10.0.0.67:6000"),
        sock("10.0.0.67:6000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::ServerFull));
    // ... but a Pigeon login is not, and its news reaches no unconfirmed
    // session.
    let (decision, actions) = f.roster.login(
        pigeon_login("bob", "10.0.0.2:5000", IID_B, None),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    assert_eq!(decision, LoginDecision::Joined);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, RosterAction::Broadcast { to, .. }
            if to.iter().any(|t| t.ip().to_string() == "10.0.0.66"))),
        "{actions:?}"
    );
    // Their host never fetches the roster: after the window they are gone,
    // and the seed cap is free again.
    let later = f.t0 + Duration::from_secs(11);
    let (gone, _) = f.roster.expire(later);
    assert_eq!(
        gone.iter().map(UserName::as_str).collect::<Vec<_>>(),
        ["fake0", "fake1", "fake2"]
    );
    let (decision, _) = f.roster.login(
        seed_login("dave", "10.0.0.4:5000"),
        sock("10.0.0.4:5000"),
        later,
    );
    assert_eq!(decision, LoginDecision::Joined);
    // A host that fetches in time keeps its session.
    let revision = f.roster.revision();
    f.roster.seed_fetched("10.0.0.4".parse().unwrap(), revision);
    let (gone, _) = f.roster.expire(later + Duration::from_secs(3600));
    assert!(!gone.iter().any(|n| n.as_str() == "dave"), "{gone:?}");
}

#[test]
fn a_seed_session_confirmed_late_is_sent_what_its_snapshot_missed() {
    let mut f = fixture();
    let now = f.t0;
    f.roster.login(
        seed_login("carol", "10.0.0.4:5000"),
        sock("10.0.0.4:5000"),
        now,
    );
    // carol's snapshot is taken here; dave joins and erin leaves before the
    // roster hears of the fetch, so carol, unconfirmed, is not told.
    let taken_at = f.roster.revision();
    let (_, actions) = f.roster.login(
        seed_login("dave", "10.0.0.5:5000"),
        sock("10.0.0.5:5000"),
        now,
    );
    let to_carol = |actions: &[RosterAction]| {
        actions
            .iter()
            .filter_map(|action| match action {
                RosterAction::Broadcast { to, datagram } if to.contains(&sock("10.0.0.4:5000")) => {
                    Some(datagram.clone())
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(to_carol(&actions).is_empty());
    let (confirmed, actions) = f.roster.seed_fetched("10.0.0.4".parse().unwrap(), taken_at);
    assert_eq!(confirmed, 1);
    assert_eq!(
        to_carol(&actions),
        [Datagram::Login(seed_login("dave", "10.0.0.5:5000"))]
    );
    // Confirmed, carol gets the next change as it happens, and a second
    // fetch replays nothing.
    let (_, actions) = f.roster.login(
        seed_login("erin", "10.0.0.6:5000"),
        sock("10.0.0.6:5000"),
        now,
    );
    assert_eq!(
        to_carol(&actions),
        [Datagram::Login(seed_login("erin", "10.0.0.6:5000"))]
    );
    let (confirmed, actions) = f.roster.seed_fetched("10.0.0.4".parse().unwrap(), taken_at);
    assert_eq!((confirmed, actions.len()), (0, 0));
}

#[test]
fn refusals_are_never_larger_than_the_login_they_answer() {
    let mut f = fixture();
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    // endpoint-taken names the holder: cut to fit.
    let login = seed_login("x", "10.0.0.1:5000");
    let (decision, actions) = f.roster.login(login, sock("10.0.0.1:61000"), f.t0);
    assert_eq!(refusal(&decision), Some(RefuseReason::EndpointTaken));
    // (This one is too short for even the reason to fit: nothing goes back.)
    assert!(actions.is_empty(), "{actions:?}");
    // A Pigeon login is long enough for the reason and some of the words.
    let login = pigeon_login("mallory", "10.0.0.1:5000", IID_B, None);
    let asked = Datagram::Login(login.clone()).encoded_len();
    let (decision, actions) = f.roster.login(login, sock("10.0.0.1:5000"), f.t0);
    assert_eq!(refusal(&decision), Some(RefuseReason::EndpointTaken));
    let [RosterAction::Send { datagram, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(datagram.encoded_len() <= asked, "{datagram:?}");
    // The decision keeps the whole sentence, for the log.
    let LoginDecision::Refused { detail, .. } = decision else {
        unreachable!()
    };
    assert!(detail.contains("alice is already online"), "{detail}");
}

#[test]
fn answers_to_a_login_echo_its_nonce() {
    let mut f = fixture();
    let with_nonce = |n: &str, a: &str, instance, nonce| {
        Login {
            name: name(n),
            endpoint: addr(a),
            pigeon: Some(LoginExt {
                instance,
                token: None,
                nonce: Some(Nonce(nonce)),
                hello: None,
                pad: 0,
            }),
        }
        .padded()
    };
    let (_, actions) = f.roster.login(
        with_nonce("alice", "10.0.0.1:5000", IID_A, 0xA),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    let Some(RosterAction::Send {
        datagram:
            Datagram::Accept(Accept {
                pigeon: Some(accepted),
                ..
            }),
        ..
    }) = actions.first()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(accepted.nonce, Some(Nonce(0xA)));
    // A repeated login (a new round of attempts) gets its own nonce back.
    let (_, actions) = f.roster.login(
        with_nonce("alice", "10.0.0.1:5000", IID_A, 0xB),
        sock("10.0.0.1:5000"),
        f.t0,
    );
    assert!(
        matches!(
            actions.as_slice(),
            [RosterAction::Send {
                datagram: Datagram::Accept(Accept {
                    pigeon: Some(AcceptExt {
                        nonce: Some(Nonce(0xB)),
                        reply: None,
                        ..
                    }),
                    ..
                }),
                ..
            }]
        ),
        "{actions:?}"
    );
    // A refusal too, and it still fits in the login it answers.
    let login = with_nonce("alice", "10.0.0.2:5000", IID_B, 0xC);
    let asked = Datagram::Login(login.clone()).encoded_len();
    let (_, actions) = f.roster.login(login, sock("10.0.0.2:5000"), f.t0);
    let [RosterAction::Send {
        datagram: refused @ Datagram::Refused(Refused { nonce, reason, .. }),
        ..
    }] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        (nonce, reason),
        (&Some(Nonce(0xC)), &RefuseReason::NameTaken)
    );
    assert!(refused.encoded_len() <= asked);
}

#[test]
fn a_pigeon_client_from_before_sealing_is_sent_everything_plain() {
    let mut f = fixture();
    // Its login has no nonce (nor padding: its name is long enough).
    let login = Login {
        name: name("pigeon-from-before-sealing"),
        endpoint: addr("10.0.0.1:5000"),
        pigeon: Some(LoginExt {
            instance: IID_A,
            token: None,
            nonce: None,
            hello: None,
            pad: 0,
        }),
    };
    let (_, actions) = f.roster.login(login, sock("10.0.0.1:5000"), f.t0);
    let Some(RosterAction::Send {
        datagram:
            Datagram::Accept(Accept {
                pigeon: Some(AcceptExt { token, nonce, .. }),
                ..
            }),
        ..
    }) = actions.first()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*nonce, None);
    let token = token.unwrap();
    let (decision, _) = f.roster.synced(
        &name("pigeon-from-before-sealing"),
        token,
        f.roster.revision(),
        f.t0,
    );
    assert_eq!(decision, SessionDecision::Done);
    let current = join_pigeon(&mut f, "current", "10.0.0.2:5000", IID_B);
    let deltas = f.roster.flush_deltas();
    let [RosterAction::BroadcastSealed { to, .. }] = deltas.as_slice() else {
        panic!("{deltas:?}")
    };
    let mut to = to.clone();
    to.sort_by_key(|(addr, _)| *addr);
    assert_eq!(
        to,
        vec![
            (sock("10.0.0.1:5000"), None),
            (sock("10.0.0.2:5000"), Some(SessionKey::from_token(current)))
        ]
    );
}

#[test]
fn a_pigeon_login_smaller_than_its_accept_is_refused_in_fewer_bytes() {
    let mut f = fixture();
    let login = Login {
        name: name("al"),
        endpoint: addr("10.0.0.1:5000"),
        pigeon: Some(LoginExt {
            instance: IID_A,
            token: None,
            nonce: Some(Nonce(7)),
            hello: None,
            pad: 0,
        }),
    };
    let asked = Datagram::Login(login.clone()).encoded_len();
    let (decision, actions) = f.roster.login(login.clone(), sock("10.0.0.1:5000"), f.t0);
    assert_eq!(refusal(&decision), Some(RefuseReason::ShortLogin));
    assert!(f.roster.is_empty());
    let [RosterAction::Send { datagram, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(datagram.encoded_len() <= asked);
    // Padded, the same login is answered, in no more bytes than it took.
    let padded = login.padded();
    let asked = Datagram::Login(padded.clone()).encoded_len();
    let (decision, actions) = f.roster.login(padded, sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, LoginDecision::Joined);
    let Some(RosterAction::Send { datagram, .. }) = actions.first() else {
        panic!("{actions:?}")
    };
    assert!(matches!(datagram, Datagram::Accept(_)));
    assert!(datagram.encoded_len() <= asked);
}

/// A login with a handshake, as `identity`: the login, and the client's
/// side of the handshake.
fn keyed_login(
    identity: &Identity,
    n: &str,
    a: &str,
    instance: InstanceId,
) -> (Login, handshake::LoginHandshake) {
    // Each login a round of its own: a fresh nonce.
    static NONCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7);
    let nonce = Nonce(u128::from(
        NONCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    ));
    let (state, hello) =
        handshake::LoginHandshake::start(identity, &name(n), addr(a), nonce).unwrap();
    let login = Login {
        name: name(n),
        endpoint: addr(a),
        pigeon: Some(LoginExt {
            instance,
            token: None,
            nonce: Some(nonce),
            hello: Some(hello),
            pad: 0,
        }),
    }
    .padded();
    (login, state)
}

/// The handshake reply in the `Accept` among `actions`.
fn reply_in(actions: &[RosterAction]) -> Option<(Option<SessionToken>, Option<Reply>)> {
    actions.iter().find_map(|action| match action {
        RosterAction::Send {
            datagram: Datagram::Accept(Accept {
                pigeon: Some(ext), ..
            }),
            ..
        } => Some((ext.token, ext.reply)),
        _ => None,
    })
}

#[test]
fn a_name_is_registered_to_the_first_key_that_proves_itself() {
    let mut f = fixture();
    let alice = Identity::generate();
    let (login, state) = keyed_login(&alice, "alice", "10.0.0.1:5000", IID_A);
    let (decision, actions) = f.roster.login(login.clone(), sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, LoginDecision::Joined);
    // The token goes only inside the reply, which only alice can read.
    let (clear, reply) = reply_in(&actions).unwrap();
    assert_eq!(clear, None);
    // A lost Accept: the repeated hello gets the very same answer.
    let (decision, again) = f.roster.login(login, sock("10.0.0.1:5000"), f.t0);
    assert_eq!(decision, LoginDecision::Refreshed);
    assert_eq!(reply_in(&again).unwrap().1, reply);
    let outcome = state.finish(&reply.unwrap()).unwrap();
    assert_eq!(outcome.server, f.roster.config().identity.public());
    // Not registered until the token is used (only the key's holder has
    // it): a claimed key proves nothing.
    assert_eq!(f.roster.registered("alice"), None);
    let (decision, actions) =
        f.roster
            .synced(&name("alice"), outcome.token, f.roster.revision(), f.t0);
    assert_eq!(decision, SessionDecision::Done);
    assert!(actions.contains(&RosterAction::Register {
        name: name("alice"),
        key: alice.public(),
    }));
    assert_eq!(f.roster.registered("alice"), Some(alice.public()));

    // alice leaves; another key cannot have her name, nor can a seed-era
    // login or a Pigeon login without a key.
    f.roster.logout(
        Logout {
            name: name("alice"),
            endpoint: addr("10.0.0.1:5000"),
            pigeon: Some(LogoutExt {
                token: outcome.token,
            }),
        },
        sock("10.0.0.1:5000"),
        f.t0,
    );
    assert!(f.roster.is_empty());
    let mallory = Identity::generate();
    let (login, _) = keyed_login(&mallory, "alice", "10.0.0.2:5000", IID_B);
    let (decision, _) = f.roster.login(login, sock("10.0.0.2:5000"), f.t0);
    assert_eq!(refusal(&decision), Some(RefuseReason::NameRegistered));
    let (decision, _) = f.roster.login(
        seed_login("alice", "10.0.0.2:5000"),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::NameRegistered));
    let (decision, _) = f.roster.login(
        pigeon_login("alice", "10.0.0.2:5000", IID_B, None),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::NameRegistered));
    // alice herself comes back from elsewhere.
    let (login, _) = keyed_login(&alice, "alice", "10.0.0.3:5000", IID_B);
    let (decision, _) = f.roster.login(login, sock("10.0.0.3:5000"), f.t0);
    assert_eq!(decision, LoginDecision::Joined);
}

#[test]
fn a_known_registry_is_kept_from_the_start() {
    let alice = Identity::generate();
    let mut config = RosterConfig::new(4242, 4343);
    config.liveness_timeout = Duration::from_secs(8);
    let registry = HashMap::from([(name("alice"), alice.public())]);
    let mut roster = Roster::with_registry(
        config,
        Arc::new(Directory::default()),
        StdRng::seed_from_u64(7),
        registry,
    );
    let (login, _) = keyed_login(&Identity::generate(), "alice", "10.0.0.1:5000", IID_A);
    let (decision, _) = roster.login(login, sock("10.0.0.1:5000"), Instant::now());
    assert_eq!(refusal(&decision), Some(RefuseReason::NameRegistered));
}

#[test]
fn a_forged_hello_does_not_move_a_session_off_its_key() {
    let mut f = fixture();
    let alice = Identity::generate();
    let at = sock("10.0.0.1:5000");
    let (login, state) = keyed_login(&alice, "alice", "10.0.0.1:5000", IID_A);
    let (_, actions) = f.roster.login(login, at, f.t0);
    let first = state
        .finish(&reply_in(&actions).unwrap().1.unwrap())
        .unwrap();
    f.roster
        .synced(&name("alice"), first.token, f.roster.revision(), f.t0);
    let ping = |token| Ping {
        name: name("alice"),
        token,
        nonce: None,
    };
    let sealed_with = |actions: &[RosterAction]| match actions {
        [RosterAction::SendSealed { key, .. }] => *key,
        other => panic!("{other:?}"),
    };

    // Someone who can forge alice's address sends a login claiming her
    // key (it travels in clear) with a handshake of its own.
    let (mut forged, _) = keyed_login(&Identity::generate(), "alice", "10.0.0.1:5000", IID_A);
    if let Some(LoginExt {
        hello: Some(hello), ..
    }) = forged.pigeon.as_mut()
    {
        *hello = alice.public().0;
    }
    let (decision, _) = f.roster.login(forged, at, f.t0);
    assert_eq!(decision, LoginDecision::Refreshed);
    // alice's session keeps its token and key.
    let (decision, actions) = f.roster.ping(ping(first.token), at, f.t0);
    assert_eq!(decision, SessionDecision::Done);
    assert_eq!(sealed_with(&actions), Some(first.key));
    assert!(f.directory.holds("alice", first.token));

    // alice herself starts over: the session moves to the new token and
    // key when she names it, and the old token is void.
    let (again, state) = keyed_login(&alice, "alice", "10.0.0.1:5000", IID_A);
    let (decision, actions) = f.roster.login(again, at, f.t0);
    assert_eq!(decision, LoginDecision::Refreshed);
    let second = state
        .finish(&reply_in(&actions).unwrap().1.unwrap())
        .unwrap();
    assert_ne!(second.token, first.token);
    let (_, actions) = f.roster.ping(ping(first.token), at, f.t0);
    assert_eq!(sealed_with(&actions), Some(first.key), "moved too early");
    assert!(f.directory.holds("alice", second.token));
    let (decision, actions) = f.roster.ping(ping(second.token), at, f.t0);
    assert_eq!(decision, SessionDecision::Done);
    assert_eq!(sealed_with(&actions), Some(second.key));
    let (decision, _) = f.roster.ping(ping(first.token), at, f.t0);
    assert_eq!(decision, SessionDecision::BadToken);
    assert!(!f.directory.holds("alice", first.token));
}

/// Logs in a Pigeon client with a key, claiming `claimed`, from `source`,
/// and has it fetch the roster: its token.
fn join_keyed(f: &mut Fixture, n: &str, claimed: &str, source: &str) -> SessionToken {
    let identity = Identity::generate();
    let (login, state) = keyed_login(&identity, n, claimed, IID_A);
    let (decision, actions) = f.roster.login(login, sock(source), f.t0);
    assert_eq!(decision, LoginDecision::Joined);
    let reply = reply_in(&actions).and_then(|(_, reply)| reply).unwrap();
    let token = state.finish(&reply).unwrap().token;
    let revision = f.roster.revision();
    assert_eq!(
        f.roster.synced(&name(n), token, revision, f.t0).0,
        SessionDecision::Done
    );
    token
}

fn meet(n: &str, token: SessionToken, peer: &str) -> (Meet, usize) {
    let meet = Meet {
        name: name(n),
        token,
        peer: name(peer),
    };
    let len = Datagram::Meet(meet.clone()).encoded_len();
    (meet, len)
}

/// The punches in `actions`: to whom, and what.
fn punches(actions: &[RosterAction]) -> Vec<(SocketAddr, Punch)> {
    actions
        .iter()
        .filter_map(|action| match action {
            RosterAction::SendSealed {
                to,
                datagram: Datagram::Punch(punch),
                key: Some(_),
            } => Some((*to, punch.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_meeting_tells_both_where_to_probe_and_local_addresses_only_behind_one_router() {
    let mut f = fixture();
    let alice = join_keyed(&mut f, "alice", "10.1.0.2:5000", "198.18.0.10:5000");
    // bob behind the same router (another port), carol behind another.
    join_keyed(&mut f, "bob", "10.1.0.3:5000", "198.18.0.10:5001");
    join_keyed(&mut f, "carol", "10.2.0.2:5000", "198.18.0.11:5000");

    let (request, len) = meet("alice", alice, "bob");
    let actions = f
        .roster
        .meet(request, sock("198.18.0.10:5000"), len, f.t0)
        .unwrap();
    assert_eq!(
        punches(&actions),
        vec![
            (
                sock("198.18.0.10:5000"),
                Punch {
                    peer: name("bob"),
                    endpoint: addr("198.18.0.10:5001"),
                    local: Some(addr("10.1.0.3:5000")),
                }
            ),
            (
                sock("198.18.0.10:5001"),
                Punch {
                    peer: name("alice"),
                    endpoint: addr("198.18.0.10:5000"),
                    local: Some(addr("10.1.0.2:5000")),
                }
            ),
        ]
    );
    // Behind different routers: public endpoints only.
    let (request, len) = meet("alice", alice, "carol");
    let actions = f
        .roster
        .meet(request, sock("198.18.0.10:5000"), len, f.t0)
        .unwrap();
    let told = punches(&actions);
    assert_eq!(told.len(), 2);
    assert!(
        told.iter().all(|(_, punch)| punch.local.is_none()),
        "{told:?}"
    );
    // The answer to the sender is never larger than its request.
    for action in &actions {
        if let RosterAction::SendSealed { datagram, .. } = action {
            assert!(datagram.encoded_len() + SEAL_OVERHEAD <= len);
        }
    }
}

#[test]
fn only_a_session_may_ask_for_a_meeting_with_another_and_not_too_often() {
    let mut f = fixture();
    let alice = join_keyed(&mut f, "alice", "10.1.0.2:5000", "198.18.0.10:5000");
    join_keyed(&mut f, "bob", "10.2.0.2:5000", "198.18.0.11:5000");
    let at = sock("198.18.0.10:5000");
    let refused = |f: &mut Fixture, request: (Meet, usize), source: SocketAddr| {
        f.roster
            .meet(request.0, source, request.1, f.t0)
            .unwrap_err()
    };
    // A wrong token, a forged source, a short request, nobody, oneself.
    let wrong = SessionToken(alice.0 ^ 1);
    assert_eq!(
        refused(&mut f, meet("alice", wrong, "bob"), at),
        MeetRefusal::NotASession
    );
    assert_eq!(
        refused(
            &mut f,
            meet("alice", alice, "bob"),
            sock("203.0.113.5:5000")
        ),
        MeetRefusal::NotASession
    );
    let (request, _) = meet("alice", alice, "bob");
    assert_eq!(
        f.roster.meet(request, at, 40, f.t0).unwrap_err(),
        MeetRefusal::Short
    );
    assert_eq!(
        refused(&mut f, meet("alice", alice, "nobody"), at),
        MeetRefusal::NoSuchPeer
    );
    assert_eq!(
        refused(&mut f, meet("alice", alice, "alice"), at),
        MeetRefusal::NoSuchPeer
    );
    // A user without a key (nor synced) cannot be met.
    join_unsynced(&mut f, "dave", "198.18.0.12:5000", IID_B);
    assert_eq!(
        refused(&mut f, meet("alice", alice, "dave"), at),
        MeetRefusal::NoSuchPeer
    );
    // The burst, then the rate.
    let burst = MEET_RATE.burst as usize;
    for _ in 0..burst {
        let (request, len) = meet("alice", alice, "bob");
        assert!(f.roster.meet(request, at, len, f.t0).is_ok());
    }
    assert_eq!(
        refused(&mut f, meet("alice", alice, "bob"), at),
        MeetRefusal::OverRate
    );
    let (request, len) = meet("alice", alice, "bob");
    assert!(f
        .roster
        .meet(request, at, len, f.t0 + Duration::from_secs(1))
        .is_ok());
}

fn remote(endpoint: &str, server: &str) -> RemoteUser {
    RemoteUser {
        endpoint: addr(endpoint),
        instance: Some(IID_B),
        key: Some(PublicKey([5; 32])),
        server: Arc::from(server),
    }
}

#[test]
fn users_of_other_servers_are_listed_and_hold_their_names_until_they_or_their_server_go() {
    let mut f = fixture();
    join_pigeon(&mut f, "alice", "10.0.0.1:5000", IID_A);
    let before = f.roster.revision();
    f.roster
        .remote_joined(name("bob"), remote("10.0.0.2:5000", "b"), f.t0);
    f.roster
        .remote_joined(name("carol"), remote("10.0.0.3:5000", "c"), f.t0);
    // In the roster (snapshots and deltas), one change each.
    assert_eq!(f.roster.revision(), before + 2);
    assert!(f.directory.get("bob").is_some());
    assert_eq!(f.directory.home("bob").as_deref(), Some("b"));
    // Their names and endpoints are taken here too.
    let (decision, _) = f.roster.login(
        pigeon_login("bob", "10.0.0.9:5000", IID_A, None),
        sock("10.0.0.9:5000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::NameTaken));
    let (decision, _) = f.roster.login(
        pigeon_login("dave", "10.0.0.2:5000", IID_A, None),
        sock("10.0.0.2:5000"),
        f.t0,
    );
    assert_eq!(refusal(&decision), Some(RefuseReason::EndpointTaken));
    // A name online here stays with its session.
    f.roster
        .remote_joined(name("alice"), remote("10.0.0.7:5000", "b"), f.t0);
    assert!(f.roster.remote_users().get("alice").is_none());
    // Only bob's own server can say he left; carol goes with hers.
    f.roster.remote_left(&name("bob"), "c", f.t0);
    assert!(f.directory.get("bob").is_some());
    f.roster.remote_left(&name("bob"), "b", f.t0);
    assert!(f.directory.get("bob").is_none());
    let (gone, _) = f.roster.server_gone("c", f.t0);
    assert_eq!(gone, vec![name("carol")]);
    assert!(f.roster.remote_users().is_empty());
    // Read afresh after Redis was away: whoever is not there left.
    f.roster
        .remote_joined(name("erin"), remote("10.0.0.4:5000", "b"), f.t0);
    f.roster
        .remote_joined(name("gus"), remote("10.0.0.5:5000", "b"), f.t0);
    let (gone, _) = f.roster.remote_present(&[name("gus")], f.t0);
    assert_eq!(gone, vec![name("erin")]);
    assert_eq!(f.roster.local_users().len(), 1);
}

#[test]
fn a_meeting_with_a_user_of_another_server_is_passed_on_to_it() {
    let mut f = fixture();
    let alice = join_keyed(&mut f, "alice", "10.1.0.2:5000", "198.18.0.10:5000");
    f.roster
        .remote_joined(name("bob"), remote("198.18.0.11:5000", "b"), f.t0);
    let (request, len) = meet("alice", alice, "bob");
    let actions = f
        .roster
        .meet(request, sock("198.18.0.10:5000"), len, f.t0)
        .unwrap();
    assert_eq!(
        punches(&actions),
        vec![(
            sock("198.18.0.10:5000"),
            Punch {
                peer: name("bob"),
                endpoint: addr("198.18.0.11:5000"),
                local: None,
            }
        )]
    );
    let across = RemotePunch {
        to: name("bob"),
        peer: name("alice"),
        endpoint: addr("198.18.0.10:5000"),
    };
    assert!(actions.contains(&RosterAction::PunchElsewhere {
        server: Arc::from("b"),
        punch: across.clone(),
    }));
    assert_eq!(RemotePunch::decode(&across.encode()), Some(across));
    assert_eq!(RemotePunch::decode("bob alice"), None);
    // On bob's server: bob, a synced session with a key, is told.
    let mut g = fixture();
    join_keyed(&mut g, "bob", "10.2.0.2:5000", "198.18.0.11:5000");
    let told = g.roster.punch_from_elsewhere(RemotePunch {
        to: name("bob"),
        peer: name("alice"),
        endpoint: addr("198.18.0.10:5000"),
    });
    assert_eq!(
        punches(&told.into_iter().collect::<Vec<_>>()),
        vec![(
            sock("198.18.0.11:5000"),
            Punch {
                peer: name("alice"),
                endpoint: addr("198.18.0.10:5000"),
                local: None,
            }
        )]
    );
    assert!(g
        .roster
        .punch_from_elsewhere(RemotePunch {
            to: name("nobody"),
            peer: name("alice"),
            endpoint: addr("198.18.0.10:5000"),
        })
        .is_none());
}

#[test]
fn one_host_registers_a_bounded_number_of_names_and_the_registry_is_bounded() {
    let mut f = fixture_with(|config| {
        config.registrations_per_host = 2;
        config.max_registered = 4;
    });
    // Two names from one host are registered; the third is left free for
    // now (its user is online all the same).
    join_keyed(&mut f, "a1", "10.0.0.1:5001", "10.0.0.1:5001");
    join_keyed(&mut f, "a2", "10.0.0.1:5002", "10.0.0.1:5002");
    let token = join_keyed(&mut f, "a3", "10.0.0.1:5003", "10.0.0.1:5003");
    assert!(f.roster.registered("a1").is_some());
    assert!(f.roster.registered("a2").is_some());
    assert_eq!(f.roster.registered("a3"), None);
    assert!(f.roster.entry_of("a3").is_some());
    // Another host is not held back by the first one's share.
    join_keyed(&mut f, "b1", "10.0.0.2:5001", "10.0.0.2:5001");
    assert!(f.roster.registered("b1").is_some());
    // Half an hour later the first host may register one more: a3's next
    // fetch registers it.
    let later = f.t0 + Duration::from_secs(1800);
    let (_, actions) = f
        .roster
        .synced(&name("a3"), token, f.roster.revision(), later);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, RosterAction::Register { name, .. } if name.as_str() == "a3")),
        "{actions:?}"
    );
    // Four registered: the most kept. A fifth name, from a fresh host,
    // stays free.
    let token = join_keyed(&mut f, "c1", "10.0.0.3:5001", "10.0.0.3:5001");
    assert_eq!(f.roster.registered("c1"), None);
    let (_, actions) = f
        .roster
        .synced(&name("c1"), token, f.roster.revision(), later);
    assert!(
        actions.contains(&RosterAction::NotRegistered {
            name: name("c1"),
            why: NotRegistered::RegistryFull,
        }),
        "{actions:?}"
    );
}
