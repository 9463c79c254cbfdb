//! Conversation actors with real sockets: an idle conversation's actor
//! stops and comes back with its state (the numbering goes on, so the peer
//! takes what follows), and what a front end hears arrives in the order it
//! happened, even though conversations run in actors of their own.

use std::sync::atomic::Ordering;
use std::time::Duration;

use integration::harness::{start_server, TestClient};
use pigeon_client::{ClientConfig, ClientEvent};
use pigeon_shared::UserName;

#[actix_rt::test]
async fn an_idle_conversation_stops_its_actor_and_carries_on_later() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut config = ClientConfig::new(UserName::parse("alice")?, addr);
    config.idle_stop = Duration::from_millis(200);
    let mut alice = TestClient::start_with(config)?;
    alice.ready().await?;
    let mut bob = TestClient::online("bob", addr).await?;
    alice.sees_online("bob").await?;

    for round in 0..3 {
        let text = format!("round {round}");
        alice.say("bob", &text).await?;
        assert_eq!(bob.message_from("alice").await?, text);
        alice
            .wait_for("delivered", |e| matches!(e, ClientEvent::Delivered { .. }))
            .await?;
        // Idle long enough for the conversation's actor to stop.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let started = alice
        .handle
        .stats()
        .conversations_started
        .load(Ordering::Relaxed);
    assert_eq!(started, 3, "one actor per round: each stopped when idle");
    // The conversation was kept: all three lines, in order.
    let lines: Vec<String> = alice
        .handle
        .conversation(UserName::parse("bob")?)
        .await
        .into_iter()
        .map(|line| line.text)
        .collect();
    assert_eq!(lines, ["round 0", "round 1", "round 2"]);
    Ok(())
}

#[actix_rt::test]
async fn a_last_message_comes_before_its_sender_leaves() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;
    for round in 0..20 {
        let name = format!("bob{round}");
        let bob = TestClient::online(&name, addr).await?;
        alice.sees_online(&name).await?;
        // bob writes and leaves at once; alice must hear it in that order.
        bob.say("alice", "bye for now").await?;
        bob.handle.logout();
        let mut order = Vec::new();
        alice
            .wait_for("bob leaving", |e| match e {
                ClientEvent::Message { from, .. } if from.as_str() == name => {
                    order.push("message");
                    false
                }
                ClientEvent::Offline { name: n } if n.as_str() == name => {
                    order.push("offline");
                    true
                }
                _ => false,
            })
            .await?;
        assert_eq!(order, ["message", "offline"], "round {round}");
    }
    Ok(())
}
