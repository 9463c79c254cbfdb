//! The roster's decisions, without sockets: logins, keepalives, logouts,
//! and the deltas a burst of logins makes; and the directory's roster
//! snapshots, as the TCP roster service sends them.
//!
//! `cargo bench -p pigeon-server --bench roster`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pigeon_server::directory::Directory;
use pigeon_server::roster::{Roster, RosterAction, RosterConfig};
use pigeon_server::tcp_roster_actor::RosterFormat;
use pigeon_shared::{
    Datagram, InstanceId, Login, LoginExt, Logout, LogoutExt, Nonce, PeerAddr, Ping, SessionToken,
    UserName,
};
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
            nonce: Some(Nonce(i as u128)),
            // Without a handshake: this measures the roster's own work.
            hello: None,
            pad: 0,
        }),
    }
    .padded();
    (login, endpoint.socket_addr())
}

fn roster(users: usize) -> Roster {
    roster_on(users, Arc::new(Directory::default()))
}

fn roster_on(users: usize, directory: Arc<Directory>) -> Roster {
    let mut config = RosterConfig::new(1, 2);
    config.max_users = users + 1;
    config.max_users_per_host = users + 1;
    Roster::new(config, directory, StdRng::seed_from_u64(1))
}

/// The session token in the `Accept` among `actions`.
fn token(actions: &[RosterAction]) -> SessionToken {
    actions
        .iter()
        .find_map(|action| match action {
            RosterAction::Send {
                datagram: Datagram::Accept(accept),
                ..
            } => accept.pigeon.and_then(|ext| ext.token),
            _ => None,
        })
        .unwrap()
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

fn sessions(c: &mut Criterion) {
    let logins: Vec<_> = (0..1000).map(login).collect();
    let mut full = roster(1000);
    let now = Instant::now();
    let mut tokens = Vec::new();
    for (login, source) in logins.iter().cloned() {
        tokens.push(token(&full.login(login, source, now).1));
    }
    full.flush_deltas();
    let (user, source) = logins[500].clone();
    let ping = Ping {
        name: user.name.clone(),
        token: tokens[500],
        nonce: Some(Nonce(1)),
    };
    c.bench_function("roster/keepalive of one user among 1000", |b| {
        b.iter(|| full.ping(black_box(ping.clone()), source, now))
    });
    c.bench_function("roster/logout and login again, one user among 1000", |b| {
        let mut current = tokens[500];
        b.iter(|| {
            let logout = Logout {
                name: user.name.clone(),
                endpoint: user.endpoint,
                pigeon: Some(LogoutExt { token: current }),
            };
            black_box(full.logout(logout, source, now));
            let (_, actions) = full.login(user.clone(), source, now);
            current = token(&actions);
            black_box(full.flush_deltas());
        })
    });
}

fn snapshots(c: &mut Criterion) {
    let directory = Arc::new(Directory::default());
    let mut full = roster_on(1000, directory.clone());
    let now = Instant::now();
    for (login, source) in (0..1000).map(login) {
        full.login(login, source, now);
    }
    let mut group = c.benchmark_group("directory 1000 users");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("render pigeon snapshot", |b| {
        b.iter(|| directory.render(black_box(1000), RosterFormat::Pigeon))
    });
    group.bench_function("render seed snapshot", |b| {
        b.iter(|| directory.render(black_box(1000), RosterFormat::Seed))
    });
    group.bench_function("snapshot at an unchanged revision (cached)", |b| {
        b.iter(|| directory.encode(black_box(RosterFormat::Pigeon)))
    });
    group.finish();
}

criterion_group!(benches, storm, sessions, snapshots);
criterion_main!(benches);
