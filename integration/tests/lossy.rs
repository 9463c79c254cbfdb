//! A multi-client chat over a network that loses, duplicates and reorders
//! a fifth of all datagrams (a seeded fault layer on every socket, server
//! included): every message arrives exactly once and in order, every
//! roster converges, and everyone can leave.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration::harness::{eventually, init_tracing, local_server_config, TestClient};
use pigeon_client::{ClientConfig, ClientEvent};
use pigeon_server::ServerHandle;
use pigeon_shared::net::faults::{FaultConfig, Faults};
use pigeon_shared::UserName;

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
const MESSAGES_EACH_WAY: usize = 15;
const LOSS: f64 = 0.2;

fn text(from: &str, to: &str, i: usize) -> String {
    if i % 5 == 4 {
        // Long enough to travel in several parts.
        format!("{from}→{to} #{i}: {}", "长消息, long message. ".repeat(60))
    } else {
        format!("{from}→{to} #{i}: 你好, {to}, comma, comma")
    }
}

#[actix_rt::test]
async fn a_chat_over_a_lossy_network_delivers_everything_once_and_in_order() -> anyhow::Result<()> {
    init_tracing();
    let started = Instant::now();
    let faults = Faults::new(FaultConfig::lossy(2026, LOSS));
    let mut config = local_server_config();
    config.faults = Some(faults.clone());
    config.liveness_timeout = Duration::from_secs(8);
    let server = ServerHandle::start(config).await?;

    let mut clients = Vec::new();
    for name in NAMES {
        let mut config = ClientConfig::new(UserName::parse(name)?, server.udp_addr());
        config.faults = Some(faults.clone());
        clients.push(TestClient::start_with(config)?);
    }
    for client in &mut clients {
        client.ready().await?;
    }
    // Every roster converges on everyone, lost deltas notwithstanding.
    for client in &clients {
        let handle = client.handle.clone();
        let mut names = Vec::new();
        for _ in 0..2000 {
            names = handle
                .users()
                .await
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect();
            if names == NAMES {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(names, NAMES, "{}'s roster", client.name);
    }

    println!("rosters converged after {:?}", started.elapsed());
    // Everyone writes to everyone.
    println!("sending at {:?}", started.elapsed());
    let mut sent_ids = BTreeMap::new();
    for i in 0..MESSAGES_EACH_WAY {
        for from in &clients {
            for to in NAMES {
                if to != from.name.as_str() {
                    let id = from.say(to, &text(from.name.as_str(), to, i)).await?;
                    sent_ids.insert((from.name.to_string(), id), to);
                }
            }
        }
    }

    println!("sent at {:?}", started.elapsed());
    // Each receiver sees each sender's messages exactly once, in order, and
    // each sender hears that each of its messages was delivered.
    let expected_per_client = MESSAGES_EACH_WAY * (NAMES.len() - 1);
    for client in &mut clients {
        let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut delivered = 0usize;
        let mut failed = Vec::new();
        let me = client.name.to_string();
        client
            .wait_for("every message and confirmation", |event| {
                match event {
                    ClientEvent::Message { from, text, .. } => received
                        .entry(from.to_string())
                        .or_default()
                        .push(text.clone()),
                    ClientEvent::Delivered { .. } => delivered += 1,
                    ClientEvent::Failed { to, text, .. } => failed.push((to.clone(), text.clone())),
                    _ => {}
                }
                let got: usize = received.values().map(Vec::len).sum();
                (got >= expected_per_client && delivered + failed.len() >= expected_per_client)
                    || !failed.is_empty()
            })
            .await?;
        println!("{me} done after {:?}", started.elapsed());
        assert!(failed.is_empty(), "{me}: failed deliveries {failed:?}");
        assert_eq!(delivered, expected_per_client, "{me}: confirmations");
        for from in NAMES.into_iter().filter(|n| *n != me) {
            let expected: Vec<String> =
                (0..MESSAGES_EACH_WAY).map(|i| text(from, &me, i)).collect();
            assert_eq!(received.get(from), Some(&expected), "{me} from {from}");
        }
    }

    println!("all delivered after {:?}", started.elapsed());
    // Everyone leaves: logouts are repeated until acknowledged, and a
    // logout lost every time is made good by eviction.
    for client in &clients {
        client.handle.logout();
    }
    for client in &mut clients {
        client
            .wait_for("logged out", |e| *e == ClientEvent::LoggedOut)
            .await?;
    }
    eventually("the server's roster is empty", || {
        server.online_count() == 0
    })
    .await?;

    let stats = faults.stats();
    println!(
        "loss {LOSS}: {} datagrams sent, {} lost, {} duplicated, {} delayed; {} messages \
         delivered exactly once in {:?}",
        stats.sent,
        stats.lost,
        stats.duplicated,
        stats.delayed,
        sent_ids.len(),
        started.elapsed()
    );
    assert!(stats.lost > 0 && stats.duplicated > 0 && stats.delayed > 0);
    Ok(())
}
