//! Pigeon on an open network: what someone who can forge a source address,
//! or who is simply a logged-in user, can no longer do. Each test is one
//! attack, tried against the in-process server and real clients.

use std::time::Duration;

use integration::forge::Forger;
use integration::harness::{eventually, local_server_config, start_server, TestClient};
use integration::process::{self, Proc};
use integration::seed::client::SeedClient;
use pigeon_client::roster_fetch::fetch_roster;
use pigeon_server::roster::LeaveReason;
use pigeon_server::ServerHandle;
use pigeon_shared::{SessionToken, UserName};
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads what the server writes on `stream` until it closes (or 5 s).
async fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    buf
}

#[actix_rt::test]
async fn the_roster_goes_only_to_a_session_that_just_logged_in() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let _alice = TestClient::online("alice", addr).await?;

    // Nobody's session: the Pigeon roster port closes without a roster.
    let mallory = (UserName::parse("mallory")?, SessionToken(7));
    let fetched = fetch_roster(server.roster_addr(), Duration::from_secs(5), Some(mallory)).await;
    assert!(fetched.is_err(), "{fetched:?}");
    // Alice's name with a guessed token: the same.
    let guessed = (UserName::parse("alice")?, SessionToken(7));
    let fetched = fetch_roster(server.roster_addr(), Duration::from_secs(5), Some(guessed)).await;
    assert!(fetched.is_err(), "{fetched:?}");
    // Saying nothing: closed after the request deadline.
    let silent = TcpStream::connect(server.roster_addr()).await?;
    assert!(read_all(silent).await.is_empty());
    // The seed-format port: no login from this host just now.
    let seed = TcpStream::connect(server.tcp_addr()).await?;
    // (alice logged in from this host, but as a Pigeon client.)
    assert!(read_all(seed).await.is_empty());
    assert!(
        server
            .tcp_stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );

    // A real client still gets its roster, and so does a late one.
    let mut bob = TestClient::online("bob", addr).await?;
    bob.sees_online("alice").await?;
    Ok(())
}

#[actix_rt::test]
async fn silent_connections_from_one_host_do_not_lock_others_out() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    // Thousands of silent connections from one host (127.0.0.3)...
    let mut silent = Vec::new();
    for _ in 0..2000 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.3:0".parse()?)?;
        if let Ok(stream) = socket.connect(server.roster_addr()).await {
            silent.push(stream);
        }
    }
    // ... and a new user logs in and gets its roster at once.
    let mut newcomer = TestClient::start("newcomer", addr)?;
    tokio::time::timeout(Duration::from_secs(5), newcomer.ready()).await??;
    let host_full = server
        .tcp_stats()
        .host_full
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        host_full > 1000,
        "{host_full} connections turned away at once"
    );
    drop(silent);
    Ok(())
}

#[actix_rt::test]
async fn the_forger_sends_from_any_address() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("the_forger_sends_from_any_address") else {
        return Ok(());
    };
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let to = receiver.local_addr()?;
    let from: std::net::SocketAddr = "127.0.0.5:4242".parse()?;
    forger.send(from, to, b"hello")?;
    let mut buf = [0u8; 64];
    let (n, source) =
        tokio::time::timeout(Duration::from_secs(2), receiver.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(source, from);
    Ok(())
}

#[actix_rt::test]
async fn junk_in_a_users_name_does_not_get_it_evicted() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("junk_in_a_users_name_does_not_get_it_evicted") else {
        return Ok(());
    };
    let mut config = local_server_config();
    // Keepalives every 167 ms; two seconds of missed ones evict.
    config.liveness_timeout = Duration::from_secs(1);
    let server = ServerHandle::start(config).await?;
    let addr = server.udp_addr();
    let alice = TestClient::online("alice", addr).await?;
    let mut bob = TestClient::online("bob", addr).await?;
    bob.sees_online("alice").await?;
    // Junk forged from alice's exact endpoint, a thousand datagrams a
    // second for three seconds: her address's share of the rate limit is
    // gone the moment it refills.
    let from = alice.endpoint().socket_addr();
    for i in 0..3000 {
        forger.send(from, addr, format!("junk {i}").as_bytes())?;
        if i % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // alice is still online, and nobody was told otherwise.
    assert!(server
        .online_users()
        .await
        .iter()
        .any(|(n, _)| n.as_str() == "alice"));
    assert!(
        !bob.drain()
            .iter()
            .any(|e| matches!(e, pigeon_client::ClientEvent::Offline { name } if name.as_str() == "alice")),
        "{:?}",
        bob.seen
    );
    // The junk was held back; her keepalives went through on their own.
    let stats = server.stats();
    assert!(stats.limited_address > 100, "{stats:?}");
    assert!(stats.authenticated > 5, "{stats:?}");
    Ok(())
}

#[actix_rt::test]
async fn a_host_cycling_through_its_ports_pushes_nobody_out() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("a_host_cycling_through_its_ports_pushes_nobody_out") else {
        return Ok(());
    };
    let mut config = local_server_config();
    // Keepalives every 500 ms; a user not heard from for 3 s is evicted.
    config.liveness_timeout = Duration::from_secs(3);
    // The users all share 127.0.0.1 here.
    config.max_users_per_host = 400;
    config.tcp.max_per_host = 400;
    let server = ServerHandle::start(config).await?;
    let addr = server.udp_addr();
    // 300 users online (one run of the old limiter evicted 153 of them).
    const USERS: usize = 300;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(TestClient::start(&format!("user{i}"), addr)?);
    }
    for user in &mut users {
        tokio::time::timeout(Duration::from_secs(30), user.ready()).await??;
    }
    eventually("everyone online", || server.online_count() == USERS).await?;
    for user in &mut users {
        user.drain();
    }
    let evicted = || server.roster_stats().left[LeaveReason::Evicted.index()].load(Relaxed);
    let evicted_before = evicted();
    // One host goes through every one of its 65,535 source ports, twice,
    // for about two liveness timeouts.
    let host = std::net::Ipv4Addr::new(127, 0, 0, 7);
    let mut sent = 0u64;
    for _round in 0..2 {
        for port in 1..=u16::MAX {
            forger.send((host, port).into(), addr, b"junk")?;
            sent += 1;
            if port % 250 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // A newcomer logs in meanwhile, and nobody was evicted.
    let mut newcomer = TestClient::start("newcomer", addr)?;
    tokio::time::timeout(Duration::from_secs(10), newcomer.ready()).await??;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = server.stats();
    let evicted = evicted() - evicted_before;
    eprintln!(
        "{sent} junk datagrams from one host's ports: {evicted} users evicted of {USERS}, {} junk datagrams held back, {} keepalives passed",
        stats.limited_address + stats.limited_host,
        stats.authenticated
    );
    assert_eq!(evicted, 0);
    assert_eq!(server.online_count(), USERS + 1);
    assert!(
        stats.limited_address + stats.limited_host > sent / 2,
        "{stats:?}"
    );
    for user in &mut users {
        assert!(
            !user
                .drain()
                .iter()
                .any(|e| matches!(e, pigeon_client::ClientEvent::ServerLost { .. })),
            "{} lost the server: {:?}",
            user.name,
            user.seen
        );
    }
    Ok(())
}

fn wide(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[actix_rt::test]
async fn the_server_is_no_amplifier() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("the_server_is_no_amplifier") else {
        return Ok(());
    };
    let server = start_server().await?;
    let addr = server.udp_addr();
    // The victim: 250 ports on a host of its own, counting what arrives.
    let mut victim = Vec::new();
    for _ in 0..250 {
        victim.push(tokio::net::UdpSocket::bind("127.0.0.9:0").await?);
    }
    // Seed-style logins forged from the victim's host, each claiming one of
    // its endpoints.
    let mut attacker_bytes = 0;
    for (i, socket) in victim.iter().enumerate() {
        let endpoint = socket.local_addr()?;
        let login = wide(&format!("login,victim{i},{endpoint}"));
        attacker_bytes += login.len();
        forger.send("127.0.0.9:40000".parse()?, addr, &login)?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Then life goes on: users come and go.
    for round in 0..10 {
        let client = TestClient::online(&format!("user{round}"), addr).await?;
        client.handle.logout();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut victim_bytes = 0;
    let mut buf = [0u8; 2048];
    for socket in &victim {
        while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
            victim_bytes += n;
        }
    }
    // At most an Accept per forged login, each smaller than the login: the
    // victim got less than the attacker sent (it was 160 times more).
    assert!(
        victim_bytes <= attacker_bytes,
        "{victim_bytes} bytes at the victim for {attacker_bytes} sent"
    );
    eprintln!("amplification: {victim_bytes} bytes at the victim for {attacker_bytes} sent");
    Ok(())
}

#[actix_rt::test]
async fn forged_logins_cannot_keep_a_server_full() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("forged_logins_cannot_keep_a_server_full") else {
        return Ok(());
    };
    let mut config = local_server_config();
    config.max_users = 40;
    config.seed_confirm_window = Duration::from_millis(500);
    let server = ServerHandle::start(config).await?;
    let addr = server.udp_addr();
    // Forged seed-style logins from many addresses, more than the server
    // takes; one of them squats a name.
    for i in 0..100u32 {
        let host = format!("127.0.{}.{}", 10 + i / 200, 1 + i % 200);
        let login = wide(&format!("login,squat{i},{host}:5000"));
        forger.send(format!("{host}:5000").parse()?, addr, &login)?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let squatted = server.online_count();
    assert!(
        squatted <= 20,
        "seed-era sessions have their own cap: {squatted}"
    );
    // A Pigeon user still gets in at once.
    let _alice = TestClient::online("alice", addr).await?;
    // Unconfirmed, the forged sessions are gone after the window, and the
    // squatted name is free.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(server.online_count(), 1);
    let _squatter = TestClient::online("squat0", addr).await?;
    Ok(())
}

#[actix_rt::test]
async fn datagrams_forged_from_the_servers_address_change_nothing() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("datagrams_forged_from_the_servers_address_change_nothing")
    else {
        return Ok(());
    };
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;
    let mut bob = TestClient::online("bob", addr).await?;
    alice.sees_online("bob").await?;
    bob.sees_online("alice").await?;
    let before = alice.drain().len();
    let to = alice.endpoint().socket_addr();
    let bob_at = bob.endpoint();
    // What the server would send, forged from its address by someone who
    // did not read alice's Accept: a delta at every likely revision, the
    // server shutting down, her session expired, the seed's broadcasts, a
    // refusal, a seal with a guessed MAC.
    let mut forged = Vec::new();
    for revision in 0..16 {
        forged.push(format!(
            "delta,{revision},{},+mallory;127.0.0.66:5000;-",
            revision + 1
        ));
        forged.push(format!("delta,{revision},{},-bob;{bob_at}", revision + 1));
        forged.push(format!("pong,{}", revision + 100));
    }
    forged.extend([
        "closing,restarting".to_owned(),
        "expired,alice".to_owned(),
        format!("expired,alice,{:032x}", 0x5EED),
        "refused,name-taken,alice is online elsewhere".to_owned(),
        "login,mallory,127.0.0.66:5000".to_owned(),
        format!("logout,bob,{bob_at}"),
        "bye,alice".to_owned(),
        format!("sealed,{:032x},closing,restarting", 0),
        format!("sealed,{:032x},delta,2,3,+mallory;127.0.0.66:5000;-", 0),
    ]);
    for text in &forged {
        forger.send(addr, to, &wide(text))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // alice noticed nothing: nobody came or went, the server is not lost.
    let events = alice.drain().get(before..).unwrap_or_default().to_vec();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            pigeon_client::ClientEvent::Online { .. }
                | pigeon_client::ClientEvent::Offline { .. }
                | pigeon_client::ClientEvent::ServerLost { .. }
                | pigeon_client::ClientEvent::Refused { .. }
        )),
        "{events:?}"
    );
    alice.roster_becomes(&["alice", "bob"]).await?;
    // And she still chats with bob, and hears of a real newcomer.
    alice.say("bob", "still here?").await?;
    assert_eq!(bob.message_from("alice").await?, "still here?");
    let _carol = TestClient::online("carol", addr).await?;
    alice.sees_online("carol").await?;
    Ok(())
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// The endpoint in a plain-mode `ready <endpoint> <online>` line.
fn ready_endpoint(proc: &mut Proc) -> anyhow::Result<std::net::SocketAddr> {
    let line = proc.expect_prefix("ready ", Duration::from_secs(15))?;
    let endpoint = line.split(' ').nth(1).unwrap_or_default();
    Ok(endpoint.parse()?)
}

#[test]
fn a_logged_in_user_cannot_eat_a_clients_memory() -> anyhow::Result<()> {
    let Some(forger) = Forger::or_skip("a_logged_in_user_cannot_eat_a_clients_memory") else {
        return Ok(());
    };
    let wait = Duration::from_secs(15);
    let (_server, udp) = process::start_server()?;
    let server_addr: std::net::SocketAddr = udp.parse()?;
    let mut victim = process::pigeon("victim", &udp)?;
    let to = ready_endpoint(&mut victim)?;
    // mallory is a user like any other (a seed-era client: her instance
    // id is learnt from her first `chat`); what she sends comes from her
    // own endpoint, written raw, as a hostile client would.
    let mallory = SeedClient::login("mallory", "127.0.0.1:0".parse()?, server_addr)?;
    assert!(mallory.wait_for_user("victim", wait));
    let from = mallory.endpoint();
    victim.expect_prefix("online mallory ", wait)?;
    let before = rss_kib(victim.pid())?;
    let chat = |seq: u64, base: u64, part: u32, parts: u32, text: &str| {
        wide(&format!(
            "chat,00000000000000aa,{seq},{base},{part}/{parts},12:00:00,mallory,{text}"
        ))
    };
    let mut sent = 0usize;
    // Parts k/65535 of 31,000 characters each (3,000 of them once took a
    // client from 5 MB to 286 MB).
    let huge = "x".repeat(31_000);
    for k in 1..=300 {
        let bytes = chat(1, 1, k, 65_535, &huge);
        sent += bytes.len();
        forger.send(from, to, &bytes)?;
        if k % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Within the protocol's limits: parts 1..127 of 128-part messages
    // that never end, as many as the victim will take, paced under its
    // per-source rate limit.
    let full = "y".repeat(420);
    let mut n = 0;
    'flood: for seq_block in 0..64u64 {
        for part in 1..128u32 {
            let seq = seq_block * 128 + u64::from(part) + 1;
            let bytes = chat(seq, 2, part, 128, &full);
            sent += bytes.len();
            forger.send(from, to, &bytes)?;
            n += 1;
            if n % 4 == 0 {
                std::thread::sleep(Duration::from_millis(8));
            }
            if n >= 1500 {
                break 'flood;
            }
        }
    }
    // Sequence numbers at the very top.
    for seq in [u64::MAX, (1 << 62) - 1, 1 << 62] {
        forger.send(from, to, &chat(seq, seq, 1, 1, "top"))?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(victim.pid())?;
    eprintln!(
        "victim's memory: {before} KiB before, {after} KiB after {} MB sent by a logged-in user",
        sent / 1_000_000
    );
    // Bounded: 1 MiB of held text per conversation, plus what the
    // allocator keeps; it was hundreds of megabytes.
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "{before} KiB -> {after} KiB"
    );
    // The victim is alive and still chats.
    let mut bob = process::pigeon("bob", &udp)?;
    ready_endpoint(&mut bob)?;
    victim.expect_prefix("online bob ", wait)?;
    bob.send("/msg victim are you there?")?;
    let line = victim.expect_prefix("msg bob ", wait)?;
    assert!(line.ends_with(" are you there?"), "{line}");
    Ok(())
}

#[actix_rt::test]
async fn a_mailbox_request_needs_the_sessions_key_not_just_its_token() -> anyhow::Result<()> {
    use pigeon_client::roster_fetch::ask_mailbox;
    use pigeon_client::session::MailboxAccess;
    use pigeon_shared::handshake::LoginHandshake;
    use pigeon_shared::mailbox::{MailAnswer, MailRequest};
    use pigeon_shared::seal::SessionKey;
    use pigeon_shared::{
        Accept, AcceptExt, Datagram, Identity, InstanceId, Login, LoginExt, Nonce,
    };

    let server = start_server().await?;
    // alice logs in with her key, as a Pigeon client does.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let endpoint = pigeon_shared::PeerAddr::new(socket.local_addr()?);
    let alice = Identity::generate();
    let name = UserName::parse("alice")?;
    let nonce = Nonce(0x5eed);
    let (handshake, hello) = LoginHandshake::start(&alice, &name, endpoint, nonce)?;
    let login = Login {
        name: name.clone(),
        endpoint,
        pigeon: Some(LoginExt {
            instance: InstanceId(7),
            token: None,
            nonce: Some(nonce),
            hello: Some(hello),
            pad: 0,
        }),
    }
    .padded();
    socket
        .send_to(&Datagram::Login(login).to_bytes(), server.udp_addr())
        .await?;
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await??;
    let Ok(Datagram::Accept(Accept {
        pigeon: Some(AcceptExt {
            reply: Some(reply), ..
        }),
        ..
    })) = Datagram::decode(buf.get(..n).unwrap_or_default())
    else {
        anyhow::bail!("no keyed Accept");
    };
    let outcome = handshake.finish(&reply)?;
    fetch_roster(
        server.roster_addr(),
        Duration::from_secs(5),
        Some((name.clone(), outcome.token)),
    )
    .await?;
    let access = |key| MailboxAccess {
        addr: server.roster_addr(),
        name: name.clone(),
        token: outcome.token,
        key,
    };
    // With the session's key: her (empty) mailbox.
    let answer = ask_mailbox(
        &access(outcome.key),
        Duration::from_secs(5),
        &MailRequest::Fetch,
    )
    .await?;
    assert!(
        matches!(answer, MailAnswer::Box { ref mail, .. } if mail.is_empty()),
        "{answer:?}"
    );
    // Someone who read her token on the path (or guessed a key from it)
    // can no longer acknowledge, that is delete, what waits for her.
    let refused_before = server.tcp_stats().refused.load(Relaxed);
    let forged = MailRequest::Ack {
        mail: vec![1, 2, 3],
        receipts: vec![],
    };
    let answer = ask_mailbox(
        &access(SessionKey::from_token(outcome.token)),
        Duration::from_secs(5),
        &forged,
    )
    .await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(server.tcp_stats().refused.load(Relaxed) > refused_before);
    Ok(())
}
