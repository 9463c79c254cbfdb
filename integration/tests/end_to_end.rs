//! End-to-end encryption between Pigeon clients, seen from the wire: an
//! observer who captures every datagram reads no message text, and one who
//! forges datagrams from a peer's exact endpoint (its instance id too), or
//! replays genuine ones, gets nothing shown and disturbs nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use integration::capture::{contains, Capture, Captured};
use integration::forge::Forger;
use integration::harness::{start_server, TestClient};
use pigeon_client::ClientConfig;
use pigeon_client::ClientEvent;
use pigeon_server::ServerHandle;
use pigeon_shared::{InstanceId, UserName};

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

async fn client(name: &str, server: std::net::SocketAddr, iid: u64) -> anyhow::Result<TestClient> {
    let mut config = ClientConfig::new(UserName::parse(name)?, server);
    config.instance = Some(InstanceId(iid));
    let mut client = TestClient::start_with(config)?;
    client.ready().await?;
    Ok(client)
}

/// A server, and alice and bob logged in, each seeing the other.
async fn alice_and_bob() -> anyhow::Result<(ServerHandle, TestClient, TestClient)> {
    let server = start_server().await?;
    let mut alice = client("alice", server.udp_addr(), 0xa11ce).await?;
    let mut bob = client("bob", server.udp_addr(), 0xb0b).await?;
    bob.sees_online("alice").await?;
    alice.sees_online("bob").await?;
    Ok((server, alice, bob))
}

/// The datagrams captured from `from` to `to`.
fn between(
    captured: &[Captured],
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
) -> Vec<Vec<u8>> {
    captured
        .iter()
        .filter(|c| c.from == from && c.to == to)
        .map(|c| c.payload.clone())
        .collect()
}

#[actix_rt::test]
async fn a_capture_of_the_wire_holds_no_message_text() -> anyhow::Result<()> {
    let Some(capture) = Capture::or_skip("a_capture_of_the_wire_holds_no_message_text") else {
        return Ok(());
    };
    let (_server, mut alice, mut bob) = alice_and_bob().await?;

    let secrets = [
        "the eagle lands at dawn, 天涯若比邻 417",
        "roger that; 收到 8812 over",
    ];
    alice.say("bob", secrets[0]).await?;
    assert_eq!(bob.message_from("alice").await?, secrets[0]);
    bob.say("alice", secrets[1]).await?;
    assert_eq!(alice.message_from("bob").await?, secrets[1]);
    // A long one, in several parts.
    let long = "天涯若比邻, far and near. ".repeat(60);
    alice.say("bob", &long).await?;
    assert_eq!(bob.message_from("alice").await?, long);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let captured = capture.stop();
    let (a, b) = (alice.endpoint().socket_addr(), bob.endpoint().socket_addr());
    let a_to_b = between(&captured, a, b);
    let b_to_a = between(&captured, b, a);
    // The capture saw the conversation (handshake, chats, acks both ways).
    assert!(a_to_b.len() >= 4, "{} datagrams alice -> bob", a_to_b.len());
    assert!(b_to_a.len() >= 4, "{} datagrams bob -> alice", b_to_a.len());
    for payload in a_to_b.iter().chain(&b_to_a) {
        assert_eq!(
            payload.first(),
            Some(&0),
            "a peer datagram not end-to-end encrypted"
        );
    }
    for text in secrets
        .iter()
        .copied()
        .chain(["天涯若比邻", "eagle", "roger", "收到"])
    {
        for c in &captured {
            for needle in [text.as_bytes().to_vec(), utf16(text)] {
                assert!(
                    !contains(&c.payload, &needle),
                    "{text:?} on the wire from {} to {}",
                    c.from,
                    c.to
                );
            }
        }
    }
    Ok(())
}

#[actix_rt::test]
async fn forged_and_replayed_chats_are_dropped_and_the_conversation_carries_on(
) -> anyhow::Result<()> {
    let test = "forged_and_replayed_chats_are_dropped_and_the_conversation_carries_on";
    let Some(forger) = Forger::or_skip(test) else {
        return Ok(());
    };
    let Some(capture) = Capture::or_skip(test) else {
        return Ok(());
    };
    let (_server, mut alice, mut bob) = alice_and_bob().await?;
    let (a, b) = (alice.endpoint().socket_addr(), bob.endpoint().socket_addr());

    alice.say("bob", "first").await?;
    assert_eq!(bob.message_from("alice").await?, "first");
    alice.say("bob", "second").await?;
    assert_eq!(bob.message_from("alice").await?, "second");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let genuine = between(&capture.stop(), a, b);
    assert!(!genuine.is_empty());
    let refused_before = bob.handle.stats().refused.load(Ordering::Relaxed);

    // In clear, from alice's exact endpoint with her instance id, a far
    // sequence base (before encryption, this hid her later messages).
    let clear = utf16("chat,00000000000a11ce,5000,5000,1/1,9:00:00,alice,forged in clear");
    forger.send(a, b, &clear)?;
    // An end-to-end frame that does not verify.
    let mut frame = vec![0, b'D', 5];
    frame.extend_from_slice(b"alice");
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&7u64.to_le_bytes());
    frame.extend_from_slice(&[0x55; 48]);
    forger.send(a, b, &frame)?;
    // Every genuine datagram again: handshake and chats.
    for payload in &genuine {
        forger.send(a, b, payload)?;
    }
    let dropped = 2 + genuine.len() as u64;
    integration::harness::eventually("bob counts what he dropped", || {
        bob.handle.stats().refused.load(Ordering::Relaxed) >= refused_before + dropped / 2
    })
    .await?;

    // The conversation carries on, each message shown once, in order.
    alice.say("bob", "third").await?;
    assert_eq!(bob.message_from("alice").await?, "third");
    bob.say("alice", "all good").await?;
    assert_eq!(alice.message_from("bob").await?, "all good");
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.drain();
    let shown: Vec<String> = bob
        .seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message { from, text, .. } if from.as_str() == "alice" => {
                Some(text.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(shown, ["first", "second", "third"]);
    Ok(())
}
