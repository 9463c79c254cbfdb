//! A client's roster work without sockets: installing a snapshot, and
//! following a burst of deltas, as in a login storm.
//!
//! `cargo bench -p pigeon-client --bench session`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pigeon_client::session::{Session, SessionConfig};
use pigeon_shared::{
    Accept, AcceptExt, Datagram, Delta, InstanceId, PeerAddr, RosterChange, RosterEntry,
    RosterSnapshot, SessionToken, UserName,
};

const SERVER: ([u8; 4], u16) = ([127, 0, 0, 1], 7788);

fn addr(i: usize) -> PeerAddr {
    PeerAddr::new(SocketAddr::from((
        [10, 0, (i / 250) as u8, (i % 250) as u8],
        5000,
    )))
}

fn name(i: usize) -> UserName {
    UserName::parse(&format!("user{i}")).unwrap()
}

fn online_session() -> Session {
    let server = SocketAddr::from(SERVER);
    let mut session = Session::new(SessionConfig {
        name: UserName::parse("me").unwrap(),
        server,
        endpoint: PeerAddr::new(SocketAddr::from(([10, 9, 9, 9], 5000))),
        instance: InstanceId(99),
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
        pin_on_sight: true,
        mail_seen: Vec::new(),
        alternates: Vec::new(),
    });
    let now = Instant::now();
    session.start(now);
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
    session.datagram_received(accept, server, now);
    session
}

fn snapshot(n: usize) -> RosterSnapshot {
    RosterSnapshot {
        revision: Some(n as u64),
        entries: (0..n)
            .map(|i| RosterEntry {
                name: name(i),
                endpoint: addr(i),
                instance: Some(InstanceId(i as u64)),
                key: Some(pigeon_shared::PublicKey([i as u8; 32])),
            })
            .collect(),
        skipped: Vec::new(),
    }
}

fn roster_work(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("install a 1000-user snapshot", |b| {
        b.iter_batched(
            || (online_session(), snapshot(1000)),
            |(mut session, snapshot)| {
                black_box(session.roster_fetched(Ok(snapshot), Instant::now()));
                session
            },
            BatchSize::LargeInput,
        )
    });
    // 1000 joins in 40 deltas of 25, as encoded datagrams off the wire.
    let deltas: Vec<_> = (0..40)
        .map(|d| {
            let changes: Vec<_> = (0..25)
                .map(|j| {
                    let i = (d * 25 + j) as usize;
                    RosterChange::Joined {
                        name: name(i),
                        endpoint: addr(i),
                        instance: Some(InstanceId(i as u64)),
                        key: Some(pigeon_shared::PublicKey([i as u8; 32])),
                    }
                })
                .collect();
            Datagram::Delta(Delta::new(d * 25, &changes)).to_bytes()
        })
        .collect();
    group.bench_function("decode and apply 1000 joins in 40 deltas", |b| {
        b.iter_batched(
            || {
                let mut session = online_session();
                session.roster_fetched(Ok(snapshot(0)), Instant::now());
                session
            },
            |mut session| {
                let server = SocketAddr::from(SERVER);
                for bytes in &deltas {
                    let datagram = Datagram::decode(bytes).unwrap();
                    black_box(session.datagram_received(datagram, server, Instant::now()));
                }
                session
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, roster_work);
criterion_main!(benches);
