//! A real server and real clients, in one process, on loopback: login,
//! roster, broadcasts, talk, logout, and the refusals and bad input a
//! server must survive.

use std::net::SocketAddr;
use std::time::Duration;

use integration::harness::{start_server, TestClient};
use pigeon_client::{ClientConfig, ClientEvent};
use pigeon_shared::{Datagram, RefuseReason, UserName};
use tokio::net::UdpSocket;
use tokio::time::timeout;

async fn raw_socket(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

async fn send_text(socket: &UdpSocket, to: SocketAddr, text: &str) {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    socket.send_to(&bytes, to).await.unwrap();
}

/// The next datagram on `socket`, if one comes within `wait`.
async fn receive(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_536];
    let (len, from) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
    buf.truncate(len);
    Some((buf, from))
}

#[actix_rt::test]
async fn three_clients_log_in_see_each_other_talk_and_leave() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();

    let mut alice = TestClient::start("alice", addr)?;
    assert_eq!(alice.ready().await?, 1);

    let mut bob = TestClient::start("bob", addr)?;
    assert_eq!(bob.ready().await?, 2);
    assert_eq!(bob.sees_online("alice").await?, alice.endpoint());
    assert_eq!(alice.sees_online("bob").await?, bob.endpoint());

    // carol receives on another loopback address: another host, as far as
    // the protocol can tell.
    let mut config = ClientConfig::new(UserName::parse("carol")?, addr);
    config.bind = "127.0.0.3:0".parse()?;
    let mut carol = TestClient::start_with(config)?;
    assert_eq!(carol.ready().await?, 3);
    assert_eq!(
        carol.endpoint().to_string().split(':').next(),
        Some("127.0.0.3")
    );
    carol.sees_online("alice").await?;
    carol.sees_online("bob").await?;
    assert_eq!(alice.sees_online("carol").await?, carol.endpoint());
    assert_eq!(bob.sees_online("carol").await?, carol.endpoint());
    assert_eq!(carol.roster_names().await, ["alice", "bob", "carol"]);

    // Talk in every direction, with Chinese text and commas.
    let to_bob = "你好，bob, how are you? 天涯,剑痴";
    alice.say("bob", to_bob).await?;
    assert_eq!(bob.message_from("alice").await?, to_bob);
    bob.say("alice", "fine, thanks, 谢谢").await?;
    assert_eq!(alice.message_from("bob").await?, "fine, thanks, 谢谢");
    carol.say("alice", "a,b,,c").await?;
    assert_eq!(alice.message_from("carol").await?, "a,b,,c");
    alice.say("carol", "to 127.0.0.3").await?;
    assert_eq!(carol.message_from("alice").await?, "to 127.0.0.3");

    // The conversation is kept by the peer actor.
    let lines = alice.handle.conversation(UserName::parse("bob")?).await;
    let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, [to_bob, "fine, thanks, 谢谢"]);

    // bob leaves: the others are told, and the server forgets him.
    bob.handle.logout();
    bob.wait_for("logged out", |e| *e == ClientEvent::LoggedOut)
        .await?;
    alice.sees_offline("bob").await?;
    carol.sees_offline("bob").await?;
    assert_eq!(alice.roster_names().await, ["alice", "carol"]);
    let online: Vec<_> = server
        .online_users()
        .await
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(online, ["alice", "carol"]);

    // A message to someone who left waits for them at the server; to a
    // name nobody registered, it is refused.
    let id = alice.say("bob", "still there?").await?;
    alice
        .wait_for("stored", |e| {
            *e == ClientEvent::Stored {
                to: UserName::parse("bob").unwrap(),
                id,
            }
        })
        .await?;
    assert!(alice.say("nobody", "hello?").await.is_err());
    Ok(())
}

#[actix_rt::test]
async fn second_login_with_same_name_is_refused() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;
    // Another client, with a key of its own: alice's name is registered to
    // alice's key since her first login.
    let mut impostor = TestClient::start("alice", addr)?;
    let event = impostor
        .wait_for("refusal", |e| matches!(e, ClientEvent::Refused { .. }))
        .await?;
    assert!(
        matches!(
            event,
            ClientEvent::Refused {
                reason: RefuseReason::NameRegistered,
                ..
            }
        ),
        "{event:?}"
    );
    // The real alice is untouched.
    let online = server.online_users().await;
    assert_eq!(online.len(), 1);
    assert_eq!(online[0].1, alice.endpoint());
    let mut bob = TestClient::online("bob", addr).await?;
    bob.sees_online("alice").await?;
    bob.say("alice", "still you?").await?;
    assert_eq!(alice.message_from("bob").await?, "still you?");
    Ok(())
}

#[actix_rt::test]
async fn spoofed_logouts_are_ignored() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;
    let mut bob = TestClient::online("bob", addr).await?;
    bob.sees_online("alice").await?;
    alice.sees_online("bob").await?;

    // From another host, with alice's exact name and endpoint.
    let elsewhere = raw_socket("127.0.0.2").await;
    send_text(
        &elsewhere,
        addr,
        &format!("logout,alice,{}", alice.endpoint()),
    )
    .await;
    // From alice's host, but naming an endpoint that is not hers.
    let same_host = raw_socket("127.0.0.1").await;
    let wrong = format!("logout,alice,{}", same_host.local_addr()?);
    send_text(&same_host, addr, &wrong).await;

    // A later login is a marker: everything sent before it was handled.
    let _carol = TestClient::online("carol", addr).await?;
    bob.sees_online("carol").await?;
    assert!(
        !bob.drain()
            .iter()
            .any(|e| matches!(e, ClientEvent::Offline { .. })),
        "bob saw someone leave: {:?}",
        bob.seen
    );
    assert_eq!(server.online_users().await.len(), 3);
    bob.say("alice", "you are still here").await?;
    assert_eq!(alice.message_from("bob").await?, "you are still here");
    Ok(())
}

#[actix_rt::test]
async fn logins_claiming_another_hosts_endpoint_are_refused_to_the_sender_only(
) -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let victim = raw_socket("127.0.0.1").await;
    let attacker = raw_socket("127.0.0.2").await;
    send_text(
        &attacker,
        addr,
        &format!("login,mallory,{}", victim.local_addr()?),
    )
    .await;
    let (bytes, from) = receive(&attacker, Duration::from_secs(5))
        .await
        .expect("no answer to the attacker");
    assert_eq!(from, addr);
    let Ok(Datagram::Refused(refused)) = Datagram::decode(&bytes) else {
        panic!("expected a refusal")
    };
    assert_eq!(refused.reason, RefuseReason::BadEndpoint);
    assert!(
        receive(&victim, Duration::from_millis(300)).await.is_none(),
        "the victim got traffic"
    );
    assert!(server.online_users().await.is_empty());
    Ok(())
}

#[actix_rt::test]
async fn garbage_datagrams_are_dropped_and_counted_and_the_chat_goes_on() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;

    let junk = raw_socket("127.0.0.1").await;
    let alice_at = alice.endpoint().socket_addr();
    let mut datagrams: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x01],
        vec![0x00, 0xD8, 0x61, 0x00], // a lone surrogate
        vec![0x41; 65_000],
    ];
    for text in [
        "hello",
        "login",
        "login,",
        "login,bob",
        "login,bob,not-an-endpoint",
        "login,a;b,127.0.0.1:5",
        "logout,,",
        "Accept,99999",
        "talk,,x,y",
        "talk,9:00:00",
        "refused,???",
        "talk,9:00:00,mallory,hi server",
    ] {
        datagrams.push(text.encode_utf16().flat_map(u16::to_le_bytes).collect());
    }
    // Random bytes from a fixed seed.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..200 {
        let len = (state % 300) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        datagrams.push(bytes);
    }
    let sent = datagrams.len() as u64;
    for bytes in &datagrams {
        junk.send_to(bytes, addr).await?;
        junk.send_to(bytes, alice_at).await?;
    }

    // The server still works: a new user logs in, alice hears of it, and
    // they talk.
    let bob = TestClient::online("bob", addr).await?;
    alice.sees_online("bob").await?;
    bob.say("alice", "after the storm").await?;
    assert_eq!(alice.message_from("bob").await?, "after the storm");

    let stats = server.stats();
    // Every junk datagram was received and dropped (the `talk` to the server
    // is well-formed but not for it; random bytes may rarely decode too, so
    // count everything that was not a login or logout the roster took).
    assert!(stats.dropped() >= sent - 1, "{stats:?}, sent {sent}");
    assert_eq!(server.online_users().await.len(), 2);
    Ok(())
}

#[actix_rt::test]
async fn a_silent_server_fails_the_login_with_a_clear_error() -> anyhow::Result<()> {
    // A bound socket that never answers.
    let silent = raw_socket("127.0.0.1").await;
    let mut config = ClientConfig::new(UserName::parse("alice")?, silent.local_addr()?);
    config.login_timeouts = vec![Duration::from_millis(100); 3];
    let mut alice = TestClient::start_with(config)?;
    let event = alice
        .wait_for("failure", |e| matches!(e, ClientEvent::LoginFailed { .. }))
        .await?;
    let ClientEvent::LoginFailed { reason } = event else {
        unreachable!()
    };
    assert!(reason.contains("3 login attempts"), "{reason}");
    // Each attempt reached the silent server.
    for _ in 0..3 {
        let (bytes, _) = receive(&silent, Duration::from_secs(1))
            .await
            .expect("a login attempt");
        assert!(matches!(Datagram::decode(&bytes), Ok(Datagram::Login(_))));
    }
    Ok(())
}
