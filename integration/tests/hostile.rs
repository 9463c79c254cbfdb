//! Hostile input: while three clients chat, attackers on the same host and
//! on another one send a large, bounded burst of random bytes, truncated
//! and oversized datagrams, invalid UTF-16, spoofed logouts, keepalives,
//! talks, chats and acknowledgements, forged server datagrams, and logins
//! claiming other people's endpoints. Afterwards nothing legitimate was lost
//! or changed, and the server answers as before.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use integration::harness::{eventually, start_server, TestClient};
use pigeon_client::ClientEvent;
use pigeon_shared::PeerAddr;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const MESSAGES_EACH_WAY: usize = 10;

fn wide(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Everything the attackers send, to whom.
fn hostile_datagrams(
    rng: &mut StdRng,
    server: SocketAddr,
    users: &BTreeMap<String, (PeerAddr, String)>,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let (alice_at, alice_iid) = users["alice"].clone();
    let bob_at = users["bob"].0.socket_addr();
    let token = "0123456789abcdef0123456789abcdef";
    // Every truncation of a valid login, odd lengths included.
    let login = wide(&format!("login,alice,{alice_at},pigeon1;iid={alice_iid}"));
    for cut in 0..login.len() {
        out.push((server, login[..cut].to_vec()));
    }
    // The largest datagram there is, and invalid UTF-16.
    out.push((server, vec![0x41; 65_507]));
    out.push((bob_at, vec![0x41; 65_507]));
    out.push((
        server,
        [wide("login,"), vec![0x00, 0xD8], wide(",1.2.3.4:5")].concat(),
    ));
    // Spoofed session datagrams for alice.
    for text in [
        format!("logout,alice,{alice_at}"),
        format!("logout,alice,{alice_at},pigeon1;tok={token}"),
        format!("ping,alice,{token}"),
        format!("login,alice,{alice_at},pigeon1;iid={alice_iid}"),
        format!("login,alice,{alice_at},pigeon1;iid={alice_iid};tok={token}"),
        format!("login,mallory,{alice_at}"),
        format!("login,mallory,{alice_at},pigeon1;iid=00000000000000aa"),
        "login,alice,127.0.0.1:9,pigeon1;iid=00000000000000aa".to_owned(),
        "talk,9:00:00,alice,hello server".to_owned(),
        format!("chat,{alice_iid},1,1,1/1,9:00:00,alice,hello server"),
    ] {
        for _ in 0..20 {
            out.push((server, wide(&text)));
        }
    }
    // Spoofed peer and server datagrams for bob.
    for text in [
        "talk,9:00:00,alice,I am alice (not)".to_owned(),
        format!("chat,{alice_iid},1,1,1/1,9:00:00,alice,I am alice (not)"),
        format!("chat,{alice_iid},999,999,1/1,9:00:00,alice,I am alice (not)"),
        format!("ack,alice,{alice_iid},1"),
        "closing,forged".to_owned(),
        "expired,bob".to_owned(),
        "bye,bob".to_owned(),
        "pong,999999".to_owned(),
        format!("delta,0,1,-alice;{alice_at}"),
        "Accept,1,pigeon1;rx=1;tok=0123456789abcdef0123456789abcdef;ka=1".to_owned(),
        "refused,name-taken,go away".to_owned(),
        format!("logout,alice,{alice_at}"),
    ] {
        for _ in 0..20 {
            out.push((bob_at, wide(&text)));
        }
    }
    // Random bytes, to the server and to a client (last: the spoofs above
    // come first, so that they reach the roster within the senders' rate).
    for _ in 0..1500 {
        let len = rng.random_range(0..1500);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let to = if rng.random_bool(0.5) { server } else { bob_at };
        out.push((to, bytes));
    }
    out
}

#[actix_rt::test]
async fn a_hostile_burst_changes_nothing_and_loses_nothing() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut clients = Vec::new();
    for name in NAMES {
        clients.push(TestClient::online(name, addr).await?);
    }
    for client in &mut clients {
        for other in NAMES {
            if other != client.name.as_str() {
                client.sees_online(other).await?;
            }
        }
    }
    let before = server.online_users().await;

    // What an attacker is assumed to know: every name, endpoint and
    // instance id (as a logged-in user would; the roster is not public).
    let users: BTreeMap<String, (PeerAddr, String)> = server
        .directory()
        .snapshot()
        .1
        .into_iter()
        .map(|(name, entry)| {
            let iid = entry.instance.map(|i| i.to_string()).unwrap_or_default();
            (name.to_string(), (entry.endpoint, iid))
        })
        .collect();

    // The chat starts...
    let text = |from: &str, to: &str, i: usize| format!("{from} to {to}, #{i}, 你好");
    for i in 0..MESSAGES_EACH_WAY / 2 {
        for from in &clients {
            for to in NAMES.into_iter().filter(|to| *to != from.name.as_str()) {
                from.say(to, &text(from.name.as_str(), to, i)).await?;
            }
        }
    }
    // ...the attack comes, from eight sockets on the server's own host and
    // eight on another...
    let mut rng = StdRng::seed_from_u64(66);
    let mut attackers = Vec::new();
    for ip in ["127.0.0.1", "127.0.0.2"] {
        for _ in 0..8 {
            attackers.push(UdpSocket::bind(format!("{ip}:0")).await?);
        }
    }
    let hostile = hostile_datagrams(&mut rng, addr, &users);
    for (i, (to, bytes)) in hostile.iter().enumerate() {
        let socket = &attackers[i % attackers.len()];
        // The kernel may refuse some (a full buffer); what matters is what
        // got through.
        let _ = socket.send_to(bytes, to).await;
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // ...and the chat goes on.
    for i in MESSAGES_EACH_WAY / 2..MESSAGES_EACH_WAY {
        for from in &clients {
            for to in NAMES.into_iter().filter(|to| *to != from.name.as_str()) {
                from.say(to, &text(from.name.as_str(), to, i)).await?;
            }
        }
    }

    // Every message arrived once, in order; nobody lost the server.
    let expected = MESSAGES_EACH_WAY * (NAMES.len() - 1);
    for client in &mut clients {
        let me = client.name.to_string();
        let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut delivered = 0;
        let mut trouble = Vec::new();
        client
            .wait_for("every message and confirmation", |event| {
                match event {
                    ClientEvent::Message { from, text, .. } => received
                        .entry(from.to_string())
                        .or_default()
                        .push(text.clone()),
                    ClientEvent::Delivered { .. } => delivered += 1,
                    ClientEvent::Failed { .. }
                    | ClientEvent::ServerLost { .. }
                    | ClientEvent::Offline { .. } => trouble.push(event.clone()),
                    _ => {}
                }
                let got: usize = received.values().map(Vec::len).sum();
                (got >= expected && delivered >= expected) || !trouble.is_empty()
            })
            .await?;
        assert!(trouble.is_empty(), "{me}: {trouble:?}");
        for from in NAMES.into_iter().filter(|n| *n != me) {
            let want: Vec<String> = (0..MESSAGES_EACH_WAY).map(|i| text(from, &me, i)).collect();
            assert_eq!(received.get(from), Some(&want), "{me} from {from}");
        }
    }

    // Nothing changed: the same users at the same endpoints, everywhere.
    assert_eq!(server.online_users().await, before);
    for client in &clients {
        assert_eq!(
            client.handle.users().await,
            before,
            "{}'s roster",
            client.name
        );
    }
    // The server answers as before.
    let dave = TestClient::online("dave", addr).await?;
    for client in &mut clients {
        client.sees_online("dave").await?;
    }
    dave.say("alice", "hello after the storm").await?;
    assert_eq!(
        clients[0].message_from("dave").await?,
        "hello after the storm"
    );
    eventually("dave in the server's roster", || server.online_count() == 4).await?;

    let stats = server.stats();
    let refused_at_bob = clients[1]
        .handle
        .stats()
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "hostile datagrams sent: {}; server received {}, dropped {} (undecodable {}, not for it {}, \
         over rate {}+{}); bob refused {refused_at_bob} spoofed peer datagrams",
        hostile.len(),
        stats.received,
        stats.dropped(),
        stats.undecodable.iter().map(|(_, n)| n).sum::<u64>(),
        stats.unexpected,
        stats.limited_address,
        stats.limited_host,
    );
    // Most of the burst to the server was garbage: counted, not processed.
    assert!(stats.dropped() >= 500, "{stats:?}");
    assert!(refused_at_bob > 0);
    Ok(())
}

#[actix_rt::test]
async fn a_login_flood_from_one_host_cannot_fill_the_roster_or_shut_others_out(
) -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;

    // 32 sockets on one host, each trying 200 logins under new names.
    let mut flooders = Vec::new();
    for _ in 0..32 {
        flooders.push(UdpSocket::bind("127.0.0.3:0").await?);
    }
    let mut sent = 0u64;
    for round in 0..200 {
        for (i, socket) in flooders.iter().enumerate() {
            let port = 2000 + (round * 32 + i) % 60_000;
            let login = wide(&format!("login,bot{round}x{i},127.0.0.3:{port}"));
            let _ = socket.send_to(&login, addr).await;
            sent += 1;
        }
        if round == 100 {
            // Someone from another host arrives in the middle of the flood.
            let mut bob = TestClient::online("bob", addr).await?;
            bob.sees_online("alice").await?;
            alice.sees_online("bob").await?;
            bob.say("alice", "made it through the flood").await?;
            assert_eq!(
                alice.message_from("bob").await?,
                "made it through the flood"
            );
        }
        tokio::task::yield_now().await;
    }
    // A last marker: everything before it was handled.
    let _carol = TestClient::online("carol", addr).await?;
    let online = server.online_users().await;
    let bots = online
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("bot"))
        .count();
    let stats = server.stats();
    println!(
        "login flood: {sent} logins from one host; {bots} admitted (per-host cap {}), \
         {} held back by rate limits; alice, bob and carol online",
        pigeon_server::roster::DEFAULT_MAX_USERS_PER_HOST,
        stats.limited_address + stats.limited_host
    );
    assert!(bots <= pigeon_server::roster::DEFAULT_MAX_USERS_PER_HOST);
    for name in ["alice", "bob", "carol"] {
        assert!(
            online.iter().any(|(n, _)| n.as_str() == name),
            "{name} missing"
        );
    }
    Ok(())
}
