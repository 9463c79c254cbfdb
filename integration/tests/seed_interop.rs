//! Interoperability with programs written from the seed document, in both
//! directions: a seed client on a Pigeon server, chatting with Pigeon
//! clients; and Pigeon clients on a seed server, chatting with a seed
//! client. The seed peers reproduce the seed's code, defects included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use integration::harness::{eventually, start_server, TestClient};
use integration::seed::client::SeedClient;
use integration::seed::server::SeedServer;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn seed_login(name: &str, server: SocketAddr) -> anyhow::Result<SeedClient> {
    Ok(SeedClient::login(
        name,
        SocketAddr::new(LOCALHOST, 0),
        server,
    )?)
}

#[actix_rt::test]
async fn a_seed_client_chats_on_a_pigeon_server() -> anyhow::Result<()> {
    let server = start_server().await?;
    let addr = server.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;

    // The seed client logs in from an ephemeral socket, gets Accept on its
    // receive socket, and reads the roster over TCP.
    let seed = seed_login("seedy", addr)?;
    eventually("seed roster has alice and itself", || {
        let names = seed.user_names();
        names.contains(&"alice".to_owned()) && names.contains(&"seedy".to_owned())
    })
    .await?;
    let seed_endpoint = seed.endpoint().to_string();
    assert!(seed
        .users()
        .contains(&format!("alice,{}", alice.endpoint())));
    assert_eq!(alice.sees_online("seedy").await?.to_string(), seed_endpoint);

    // Seed to Pigeon: the whole text arrives, commas and all.
    seed.talk("alice", "你好, alice, from the seed")?;
    assert_eq!(
        alice.message_from("seedy").await?,
        "你好, alice, from the seed"
    );

    // Pigeon to seed: the seed shows messages in an open chat window and
    // reads only up to the first comma (its defect, not ours).
    seed.open_chat("alice");
    alice.say("seedy", "天涯 hello, seed").await?;
    eventually("the seed shows alice's message", || {
        seed.received()
            .iter()
            .any(|(from, time, text)| from == "alice" && text == "天涯 hello" && !time.is_empty())
    })
    .await?;

    // Broadcasts reach the seed client: a Pigeon user joins, then leaves.
    let mut bob = TestClient::online("bob", addr).await?;
    bob.sees_online("seedy").await?;
    eventually("seed sees bob", || {
        seed.user_names().contains(&"bob".to_owned())
    })
    .await?;
    bob.handle.logout();
    eventually("seed sees bob leave", || {
        !seed.user_names().contains(&"bob".to_owned())
    })
    .await?;

    // The seed client logs out; Pigeon tells alice.
    seed.logout()?;
    alice.sees_offline("seedy").await?;
    eventually("server forgot seedy", || server.online_count() == 1).await?;

    // Nothing Pigeon sent ended the seed client's receive loop.
    assert!(seed.is_receiving(), "seed client log: {:?}", seed.log());
    Ok(())
}

#[actix_rt::test]
async fn pigeon_clients_chat_on_a_seed_server() -> anyhow::Result<()> {
    let seed_server = SeedServer::start(LOCALHOST)?;
    let addr = seed_server.udp_addr();
    let seed = seed_login("seedy", addr)?;
    eventually("seed logged in", || {
        seed.user_names().contains(&"seedy".to_owned())
    })
    .await?;

    // A Pigeon client logs in to the seed server: Accept and broadcasts come
    // from the seed server's throwaway sockets, the roster from its TCP port.
    let mut alice = TestClient::start("alice", addr)?;
    assert_eq!(alice.ready().await?, 2);
    assert_eq!(
        alice.sees_online("seedy").await?.socket_addr(),
        seed.endpoint()
    );
    eventually("seed sees alice", || {
        seed.user_names().contains(&"alice".to_owned())
    })
    .await?;

    let mut bob = TestClient::online("bob", addr).await?;
    alice.sees_online("bob").await?;
    bob.sees_online("alice").await?;

    // Pigeon to Pigeon through a seed server's roster.
    alice.say("bob", "hi bob, via the seed server").await?;
    assert_eq!(
        bob.message_from("alice").await?,
        "hi bob, via the seed server"
    );

    // Seed to Pigeon, Pigeon to seed.
    seed.talk("alice", "seed says, hello")?;
    assert_eq!(alice.message_from("seedy").await?, "seed says, hello");
    seed.open_chat("bob");
    bob.say("seedy", "bob here").await?;
    eventually("seed shows bob's message", || {
        seed.received()
            .iter()
            .any(|(from, _, text)| from == "bob" && text == "bob here")
    })
    .await?;

    // A Pigeon logout goes through the seed server to everyone.
    bob.handle.logout();
    alice.sees_offline("bob").await?;
    eventually("seed sees bob leave", || {
        !seed.user_names().contains(&"bob".to_owned())
    })
    .await?;

    // Pigeon never sent the seed server anything that ends its loop.
    assert!(
        seed_server.is_receiving(),
        "seed server log: {:?}",
        seed_server.log()
    );
    assert!(seed.is_receiving());
    Ok(())
}
