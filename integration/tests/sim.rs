//! The protocol in the deterministic simulator (`integration::sim`): a
//! virtual clock, one roster and many client cores over a seeded faulty
//! network, no sockets and no sleeping. Each scenario runs for many seeds;
//! a seed that fails says how to replay it.
//!
//! `PIGEON_SIM_SEEDS=N` runs N seeds per scenario (default 60: 300 runs in
//! all); `PIGEON_SIM_SEED=S` runs only seed S.

use std::time::Duration;

use integration::sim::{Sim, SimConfig};
use pigeon_client::events::ClientEvent;
use pigeon_client::SendTextError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEEDS: u64 = 60;

/// The longest virtual wait for a network to settle: at a quarter of
/// datagrams lost each way a keepalive round trip fails nearly half the
/// time, and a lost delta is noticed only by the next one that succeeds.
const PATIENCE: Duration = Duration::from_secs(300);

/// Runs `scenario` for every seed; fails naming the first seed that fails.
fn for_seeds(name: &str, scenario: impl Fn(u64) -> Result<(), String>) {
    let seeds: Vec<u64> = match std::env::var("PIGEON_SIM_SEED") {
        Ok(one) => vec![one.parse().unwrap_or(0)],
        Err(_) => {
            let n = std::env::var("PIGEON_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(DEFAULT_SEEDS);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        if let Err(why) = scenario(seed) {
            panic!(
                "{name}, seed {seed}: {why}\n\
                 replay: PIGEON_SIM_SEED={seed} cargo test -p integration --test sim {name}"
            );
        }
    }
}

/// With `PIGEON_SIM_DEBUG` set, what every client was told (but chat),
/// for a replayed seed.
fn dump(sim: &Sim) {
    if std::env::var_os("PIGEON_SIM_DEBUG").is_none() {
        return;
    }
    for (i, client) in sim.clients.iter().enumerate() {
        for event in &client.events {
            match event {
                ClientEvent::Message { .. } | ClientEvent::Delivered { .. } => {}
                ClientEvent::Ready { online, .. } => eprintln!("u{i}: Ready, {online} online"),
                other => eprintln!("u{i}: {other:?}"),
            }
        }
    }
    let online = sim.online();
    for (i, client) in sim.clients.iter().enumerate() {
        if let Some(core) = &client.core {
            let users: std::collections::BTreeSet<_> =
                core.session().users().into_iter().map(|(n, _)| n).collect();
            let missing: Vec<_> = online.difference(&users).collect();
            let extra: Vec<_> = users.difference(&online).collect();
            eprintln!(
                "u{i}: online {}, revision {:?}, missing {missing:?}, extra {extra:?}",
                core.session().is_online(),
                core.session().revision()
            );
        }
    }
    eprintln!("at {:?}; network: {:?}", sim.elapsed(), sim.net);
}

/// Starts every client at a random moment within `spread`; waits for every
/// roster to hold everyone.
fn log_in_all(sim: &mut Sim, spread: Duration) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(sim.config.seed ^ 0x5EED);
    let mut starts: Vec<(Duration, usize)> = (0..sim.clients.len())
        .map(|i| {
            let at = rng.random_range(0..spread.as_micros().max(1) as u64);
            (Duration::from_micros(at), i)
        })
        .collect();
    starts.sort();
    let begin = sim.elapsed();
    for (at, i) in starts {
        let wait = (begin + at).saturating_sub(sim.elapsed());
        sim.run_for(wait);
        sim.start_client(i);
    }
    if sim.run_until(PATIENCE, Sim::converged) {
        Ok(())
    } else {
        Err(format!(
            "rosters did not converge within {PATIENCE:?}: online {:?}, {:?}",
            sim.online(),
            sim.net
        ))
    }
}

/// Waits until every message sent is shown and settled, then checks that
/// each was shown once, in order, and confirmed.
fn deliver_all(sim: &mut Sim) -> Result<(), String> {
    sim.run_until(PATIENCE, |s| s.all_shown() && s.all_settled());
    sim.check_chat()
}

/// `count` messages from random clients to random others, at random
/// moments over `over`. Every one must be accepted.
fn chatter(sim: &mut Sim, rng: &mut StdRng, count: usize, over: Duration) -> Result<(), String> {
    chatter_with(sim, rng, count, over, false)
}

/// As [`chatter`]; with `offline_ok`, a message to someone the sender
/// does not see online (the server is restarting) is refused, as it would
/// be for a person, and not counted.
fn chatter_with(
    sim: &mut Sim,
    rng: &mut StdRng,
    count: usize,
    over: Duration,
    offline_ok: bool,
) -> Result<(), String> {
    let n = sim.clients.len();
    for k in 0..count {
        let from = rng.random_range(0..n);
        let mut to = rng.random_range(0..n - 1);
        if to >= from {
            to += 1;
        }
        sim.run_for(over / count.max(1) as u32);
        let text = format!("message {k} from u{from}, 你好");
        match sim.send(from, to, &text) {
            Ok(()) => {}
            Err(SendTextError::UnknownUser(_) | SendTextError::NotOnline) if offline_ok => {}
            Err(e) => {
                dump(sim);
                return Err(format!("u{from} could not send to u{to}: {e}"));
            }
        }
    }
    Ok(())
}

#[test]
fn login_storms_converge() {
    for_seeds("login_storms_converge", |seed| {
        let mut sim = Sim::new(SimConfig::lossy(seed, 16, 0.1));
        log_in_all(&mut sim, Duration::from_millis(30))
    });
}

#[test]
fn chat_under_loss_arrives_once_in_order() {
    for_seeds("chat_under_loss_arrives_once_in_order", |seed| {
        let mut sim = Sim::new(SimConfig::lossy(seed, 4, 0.2));
        log_in_all(&mut sim, Duration::from_millis(100))?;
        let mut rng = StdRng::seed_from_u64(seed);
        chatter(&mut sim, &mut rng, 40, Duration::from_secs(2))?;
        deliver_all(&mut sim)?;
        // Every client here is reachable directly: conversations started on
        // the relay and the server arranged meetings for them.
        if sim.net.relayed == 0 || sim.net.meetings == 0 {
            return Err(format!("no relay or no meetings: {:?}", sim.net));
        }
        Ok(())
    });
}

#[test]
fn comings_and_goings_under_loss_converge_through_gaps_and_resyncs() {
    for_seeds(
        "comings_and_goings_under_loss_converge_through_gaps_and_resyncs",
        |seed| {
            let mut config = SimConfig::lossy(seed, 10, 0.25);
            config.duplicate = 0.05;
            let mut sim = Sim::new(config);
            log_in_all(&mut sim, Duration::from_millis(50))?;
            // Users leave and come back while deltas are lost: every
            // client must notice its gaps and fetch again.
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..12 {
                let i = rng.random_range(0..sim.clients.len());
                if sim.alive().contains(&sim.clients[i].name) {
                    sim.logout(i);
                } else {
                    sim.start_client(i);
                }
                sim.run_for(Duration::from_millis(rng.random_range(0..200)));
            }
            // Whoever is out comes back.
            sim.run_for(Duration::from_secs(3));
            for i in 0..sim.clients.len() {
                if !sim.alive().contains(&sim.clients[i].name) {
                    sim.start_client(i);
                }
            }
            if sim.run_until(PATIENCE, Sim::converged) {
                Ok(())
            } else {
                dump(&sim);
                Err(format!("no convergence: online {:?}", sim.online()))
            }
        },
    );
}

#[test]
fn a_crashed_client_is_evicted_and_everyone_is_told() {
    for_seeds("a_crashed_client_is_evicted_and_everyone_is_told", |seed| {
        let mut sim = Sim::new(SimConfig::lossy(seed, 5, 0.1));
        log_in_all(&mut sim, Duration::from_millis(50))?;
        let crashed = (seed % 5) as usize;
        let name = sim.clients[crashed].name.clone();
        sim.crash_client(crashed);
        let timeout = sim.config.liveness_timeout;
        let told = |s: &Sim| {
            s.clients.iter().enumerate().all(|(i, c)| {
                i == crashed
                    || c.events
                        .iter()
                        .any(|e| matches!(e, ClientEvent::Offline { name: n } if *n == name))
            })
        };
        // Evicted within the timeout (and a sweep), told within a delta
        // or, where that was lost, a keepalive's answer.
        if !sim.run_until(timeout * 2, told) {
            return Err(format!(
                "{name} not reported offline to all within {:?}",
                timeout * 2
            ));
        }
        if sim.run_until(Duration::from_secs(10), Sim::converged) {
            Ok(())
        } else {
            Err("no convergence after the eviction".into())
        }
    });
}

#[test]
fn chat_carries_on_across_a_server_restart() {
    for_seeds("chat_carries_on_across_a_server_restart", |seed| {
        let mut sim = Sim::new(SimConfig::lossy(seed, 3, 0.1));
        log_in_all(&mut sim, Duration::from_millis(50))?;
        let mut rng = StdRng::seed_from_u64(seed);
        chatter(&mut sim, &mut rng, 6, Duration::from_millis(300))?;
        // The server goes away, told or not, for a while; chat goes on
        // peer to peer, and after it is back.
        let announce = rng.random_bool(0.5);
        let downtime = Duration::from_millis(rng.random_range(0..3000));
        sim.restart_server(announce, downtime);
        chatter_with(
            &mut sim,
            &mut rng,
            6,
            downtime + Duration::from_millis(200),
            true,
        )?;
        if !sim.run_until(PATIENCE, Sim::converged) {
            return Err(format!(
                "no convergence after the restart (announced: {announce}, down {downtime:?}): online {:?}",
                sim.online()
            ));
        }
        // Right after everyone is back: the welcome-back messages.
        chatter(&mut sim, &mut rng, 6, Duration::from_millis(100))?;
        deliver_all(&mut sim).map_err(|e| format!("announced: {announce}, down {downtime:?}: {e}"))
    });
}

#[test]
fn the_simulator_catches_a_broken_protocol() {
    // Sabotage: every acknowledgement is lost. The checks must fail, and
    // say which seed; otherwise they prove nothing.
    let result = std::panic::catch_unwind(|| {
        for_seeds("sabotaged", |seed| {
            let mut config = SimConfig::lossy(seed, 3, 0.0);
            config.eat_acks = true;
            let mut sim = Sim::new(config);
            log_in_all(&mut sim, Duration::from_millis(10))?;
            let mut rng = StdRng::seed_from_u64(seed);
            chatter(&mut sim, &mut rng, 3, Duration::from_millis(30))?;
            deliver_all(&mut sim)
        });
    });
    let message = result
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        message.contains("seed 1") && message.contains("PIGEON_SIM_SEED=1"),
        "{message:?}"
    );
}
