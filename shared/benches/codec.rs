//! Codec benchmarks: encoding and decoding each datagram, and roster
//! snapshots of 1,000 users in both formats.
//!
//! `cargo bench -p pigeon-shared --bench codec`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pigeon_shared::roster_snapshot::{decode_frame, encode_pigeon_roster, encode_roster};
use pigeon_shared::{
    Accept, AcceptExt, Ack, Bye, Chat, Closing, Datagram, Delta, Expired, InstanceId, Login,
    LoginExt, Logout, LogoutExt, Nonce, PeerAddr, Ping, Pong, PublicKey, RefuseReason, Refused,
    RosterChange, RosterSnapshot, SessionToken, Talk, TalkTime, UserName,
};

fn name(i: usize) -> UserName {
    UserName::parse(&format!("user{i}")).unwrap()
}

fn addr(i: usize) -> PeerAddr {
    PeerAddr::new(SocketAddr::from((
        [10, 0, (i / 250) as u8, (i % 250) as u8],
        5000 + i as u16,
    )))
}

fn datagrams() -> Vec<(&'static str, Datagram)> {
    let time = TalkTime::parse("14:03:27").unwrap();
    vec![
        (
            "login",
            Datagram::Login(Login {
                name: name(1),
                endpoint: addr(1),
                pigeon: None,
            }),
        ),
        (
            "login+pigeon",
            Datagram::Login(Login {
                name: name(1),
                endpoint: addr(1),
                pigeon: Some(LoginExt {
                    instance: InstanceId(0x1234_5678_9abc_def0),
                    token: None,
                    nonce: Some(Nonce(u128::MAX / 5)),
                    hello: None,
                    pad: 0,
                }),
            }),
        ),
        (
            "accept+pigeon",
            Datagram::Accept(Accept {
                tcp_port: 40123,
                pigeon: Some(AcceptExt {
                    roster_port: 40124,
                    token: Some(SessionToken(u128::MAX / 3)),
                    keepalive_ms: 5000,
                    nonce: Some(Nonce(u128::MAX / 5)),
                    reply: None,
                    public: None,
                    relay: None,
                }),
            }),
        ),
        (
            "accept",
            Datagram::Accept(Accept {
                tcp_port: 40123,
                pigeon: None,
            }),
        ),
        (
            "logout",
            Datagram::Logout(Logout {
                name: name(1),
                endpoint: addr(1),
                pigeon: None,
            }),
        ),
        (
            "logout+pigeon",
            Datagram::Logout(Logout {
                name: name(1),
                endpoint: addr(1),
                pigeon: Some(LogoutExt {
                    token: SessionToken(u128::MAX / 3),
                }),
            }),
        ),
        (
            "refused",
            Datagram::Refused(Refused {
                reason: RefuseReason::NameTaken,
                detail: "user1 is online from another endpoint".into(),
                nonce: Some(Nonce(u128::MAX / 5)),
            }),
        ),
        (
            "talk",
            Datagram::Talk(Talk {
                time: time.clone(),
                from: name(1),
                text: "你好, how are you? A message of ordinary length.".into(),
            }),
        ),
        (
            "chat",
            Datagram::Chat(Chat {
                instance: InstanceId(7),
                seq: 1234,
                base: 1200,
                part: 1,
                parts: 1,
                time,
                from: name(1),
                text: "你好, how are you? A message of ordinary length.".into(),
            }),
        ),
        (
            "ack",
            Datagram::Ack(Ack {
                from: name(2),
                instance: InstanceId(7),
                seq: 1234,
            }),
        ),
        (
            "ping",
            Datagram::Ping(Ping {
                name: name(1),
                token: SessionToken(u128::MAX / 3),
                nonce: Some(Nonce(u128::MAX / 5)),
            }),
        ),
        ("pong", Datagram::Pong(Pong { revision: 123_456 })),
        (
            "expired",
            Datagram::Expired(Expired {
                name: name(1),
                nonce: Some(Nonce(u128::MAX / 5)),
            }),
        ),
        ("bye", Datagram::Bye(Bye { name: name(1) })),
        (
            "closing",
            Datagram::Closing(Closing {
                detail: "restarting".into(),
            }),
        ),
        (
            "delta/25",
            Datagram::Delta(Delta::new(
                1000,
                &(0..25)
                    .map(|i| RosterChange::Joined {
                        name: name(i),
                        endpoint: addr(i),
                        instance: Some(InstanceId(i as u64)),
                        key: Some(pigeon_shared::PublicKey([i as u8; 32])),
                    })
                    .collect::<Vec<_>>(),
            )),
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("datagram");
    for (label, datagram) in datagrams() {
        let bytes = datagram.to_bytes();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("encode {label}"), |b| {
            b.iter(|| black_box(&datagram).to_bytes())
        });
        group.bench_function(format!("decode {label}"), |b| {
            b.iter(|| Datagram::decode(black_box(&bytes)))
        });
    }
    group.finish();
}

fn rosters(c: &mut Criterion) {
    let users: Vec<(UserName, PeerAddr, Option<InstanceId>)> = (0..1000)
        .map(|i| (name(i), addr(i), Some(InstanceId(i as u64))))
        .collect();
    let mut group = c.benchmark_group("roster 1000 users");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("encode seed format", |b| {
        b.iter_batched(
            Vec::new,
            |mut buf| {
                encode_roster(users.iter().map(|(n, a, _)| (n, a)), &mut buf);
                buf
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("encode pigeon format", |b| {
        b.iter_batched(
            Vec::new,
            |mut buf| {
                encode_pigeon_roster(7, users.iter().map(|(n, a, i)| (n, a, *i, None)), &mut buf);
                buf
            },
            BatchSize::SmallInput,
        )
    });
    let mut encoded = Vec::new();
    encode_pigeon_roster(
        7,
        users.iter().map(|(n, a, i)| (n, a, *i, None)),
        &mut encoded,
    );
    group.bench_function("decode pigeon format", |b| {
        b.iter(|| {
            let (text, _) = decode_frame(black_box(&encoded), 1 << 24).unwrap().unwrap();
            RosterSnapshot::parse(&text).unwrap()
        })
    });
    let key = |i: usize| PublicKey([i as u8; 32]);
    let mut keyed = Vec::new();
    encode_pigeon_roster(
        7,
        users
            .iter()
            .enumerate()
            .map(|(k, (n, a, i))| (n, a, *i, Some(key(k)))),
        &mut keyed,
    );
    group.bench_function("decode pigeon format with keys", |b| {
        b.iter(|| {
            let (text, _) = decode_frame(black_box(&keyed), 1 << 24).unwrap().unwrap();
            RosterSnapshot::parse(&text).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, codec, rosters);
criterion_main!(benches);
