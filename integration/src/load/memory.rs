//! Memory per online user on the server and per roster entry on a client,
//! measured on the real data structures (the server's `Roster` and a
//! client's `Session`, fed as the network would feed them) with the heap
//! counter of the caller's allocator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_client::session::{Session, SessionConfig};
use pigeon_server::directory::Directory;
use pigeon_server::roster::{Roster, RosterConfig};
use pigeon_shared::handshake::LoginHandshake;
use pigeon_shared::{
    Accept, AcceptExt, Datagram, InstanceId, Login, LoginExt, PeerAddr, RosterEntry,
    RosterSnapshot, SessionToken, UserName,
};
use pigeon_shared::{Identity, Nonce};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::sink::peer_name;

fn endpoint(i: usize) -> PeerAddr {
    let port = 10_000 + (i % 50_000) as u16;
    let host = [127, 0, (i / 50_000) as u8, 1];
    PeerAddr::new(SocketAddr::from((host, port)))
}

fn name(i: usize) -> UserName {
    // The names are well-formed by construction.
    UserName::parse(&peer_name(i)).unwrap_or_else(|_| unreachable!("peer names are valid"))
}

/// Bytes per online user (server) and per roster entry (client), for `n`
/// users, reading the live heap size with `heap`.
pub fn measure(n: usize, heap: fn() -> usize) -> (f64, f64) {
    let now = Instant::now();

    let before = heap();
    let directory = Arc::new(Directory::default());
    let mut config = RosterConfig::new(1, 2);
    config.max_users = n + 1;
    config.max_users_per_host = n + 1;
    let mut roster = Roster::new(config, directory, StdRng::seed_from_u64(1));
    // Logins as today's clients send them: with a handshake.
    let identity = Identity::generate();
    for i in 0..n {
        let endpoint = endpoint(i);
        let hello = LoginHandshake::start(&identity, &name(i), endpoint, Nonce(i as u128))
            .ok()
            .map(|(_, hello)| hello);
        let login = Login {
            name: name(i),
            endpoint,
            pigeon: Some(LoginExt {
                instance: InstanceId(i as u64),
                token: None,
                nonce: Some(Nonce(i as u128)),
                hello,
                pad: 0,
            }),
        }
        .padded();
        drop(roster.login(login, endpoint.socket_addr(), now));
        drop(roster.flush_deltas());
    }
    let server = heap().saturating_sub(before) as f64 / n as f64;
    drop(roster);

    let server_addr = SocketAddr::from(([127, 0, 0, 1], 7788));
    let before = heap();
    let mut session = Session::new(SessionConfig {
        name: name(n),
        server: server_addr,
        endpoint: endpoint(n),
        instance: InstanceId(1),
        login_timeouts: vec![Duration::from_secs(1)],
        logout_timeouts: vec![Duration::from_secs(1)],
        max_reconnect_delay: Duration::from_secs(1),
        plain_protocol: false,
        keep_trying: false,
        drain_timeout: Duration::from_secs(5),
        nonce_seed: 1,
        identity: None,
        server_key: None,
        pinned_peers: Default::default(),
        pin_on_sight: false,
        mail_seen: Vec::new(),
        alternates: Vec::new(),
    });
    drop(session.start(now));
    let accept = Datagram::Accept(Accept {
        tcp_port: 1,
        pigeon: Some(AcceptExt {
            roster_port: 2,
            token: Some(SessionToken(1)),
            keepalive_ms: 1000,
            nonce: Some(session.login_nonce()),
            reply: None,
            public: None,
            relay: None,
        }),
    });
    drop(session.datagram_received(accept, server_addr, now));
    let snapshot = RosterSnapshot {
        revision: Some(n as u64),
        entries: (0..n)
            .map(|i| RosterEntry {
                name: name(i),
                endpoint: endpoint(i),
                instance: Some(InstanceId(i as u64)),
                key: Some(pigeon_shared::PublicKey([i as u8; 32])),
            })
            .collect(),
        skipped: Vec::new(),
    };
    drop(session.roster_fetched(Ok(snapshot), now));
    let client = heap().saturating_sub(before) as f64 / n as f64;
    drop(session);
    (server, client)
}
