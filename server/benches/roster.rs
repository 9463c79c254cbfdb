//! The roster's decisions, without sockets: logins, keepalives, logouts,
//! and the deltas a burst of logins makes.
//!
//! `cargo bench -p pigeon-server --bench roster`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pigeon_server::roster::{Directory, Roster, RosterConfig};
use pigeon_shared::{InstanceId, Login, LoginExt, PeerAddr, UserName};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn login(i: usize) -> (Login, SocketAddr) {
    let endpoint = PeerAddr::new(SocketAddr::from((
        [10, 0, (i / 250) as u8, (i % 250) as u8],
        5000 + (i % 50_000) as u16,
    )));
    let login = Login {
        name: UserName::parse(&format!("user{i}")).unwrap(),
        endpoint,
        pigeon: Some(LoginExt {
            instance: InstanceId(i as u64),
            token: None,
        }),
    };
    (login, endpoint.socket_addr())
}

fn roster(users: usize) -> Roster {
    let mut config = RosterConfig::new(1, 2);
    config.max_users = users + 1;
    config.max_users_per_host = users + 1;
    Roster::new(
        config,
        Arc::new(Directory::default()),
        StdRng::seed_from_u64(1),
    )
}

fn storm(c: &mut Criterion) {
    let logins: Vec<_> = (0..1000).map(login).collect();
    let mut group = c.benchmark_group("roster");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 logins, deltas flushed every 25", |b| {
        b.iter_batched(
            || (roster(1000), logins.clone()),
            |(mut roster, logins)| {
                let now = Instant::now();
                for (i, (login, source)) in logins.into_iter().enumerate() {
                    black_box(roster.login(login, source, now));
                    if i % 25 == 24 {
                        black_box(roster.flush_deltas());
                    }
                }
                roster
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut full = roster(1000);
    let now = Instant::now();
    for (login, source) in logins.iter().cloned() {
        full.login(login, source, now);
    }
    full.flush_deltas();
    let (again, source) = logins[500].clone();
    c.bench_function("roster/refresh of one login among 1000", |b| {
        b.iter(|| full.login(black_box(again.clone()), source, now))
    });
}

criterion_group!(benches, storm);
criterion_main!(benches);
