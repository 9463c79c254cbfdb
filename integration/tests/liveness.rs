//! Liveness: a client killed with SIGKILL disappears from every roster
//! within the liveness timeout; clients come back by themselves when their
//! server restarts, announced or not; chat between peers goes on while the
//! server is away.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration::harness::{init_tracing, local_server_config, TestClient};
use integration::process::{pigeon, udp_of, Proc};
use pigeon_client::ClientEvent;
use pigeon_server::{ServerConfig, ServerHandle};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn a_client_killed_with_sigkill_leaves_every_roster_within_the_timeout() -> anyhow::Result<()> {
    let timeout = Duration::from_secs(2);
    let mut server = Proc::spawn(
        "server",
        "pigeon-server",
        &["--udp", "127.0.0.1:0", "--liveness-timeout", "2"],
        "info",
    )?;
    let udp = udp_of(&server.expect_prefix("listening ", WAIT)?)?;
    let mut alice = pigeon("alice", &udp)?;
    alice.expect_prefix("ready ", WAIT)?;
    let mut bob = pigeon("bob", &udp)?;
    bob.expect_prefix("ready ", WAIT)?;
    let mut carol = pigeon("carol", &udp)?;
    carol.expect_prefix("ready ", WAIT)?;
    alice.expect_prefix("online carol ", WAIT)?;
    bob.expect_prefix("online carol ", WAIT)?;

    carol.signal(libc::SIGKILL)?;
    let killed = Instant::now();
    alice.expect("carol offline", WAIT, |l| l == "offline carol")?;
    let seen_by_alice = killed.elapsed();
    bob.expect("carol offline", WAIT, |l| l == "offline carol")?;
    let seen_by_bob = killed.elapsed();
    println!(
        "liveness timeout {timeout:?}: carol gone for alice after {seen_by_alice:?}, for bob after {seen_by_bob:?}"
    );
    // The last keepalive came at most a quarter of the timeout before the
    // kill; the sweep runs every twentieth. Allow the process and pipe
    // latency on top.
    assert!(
        seen_by_alice < timeout + Duration::from_millis(500),
        "{seen_by_alice:?}"
    );
    assert!(
        seen_by_bob < timeout + Duration::from_millis(500),
        "{seen_by_bob:?}"
    );
    server.expect_stderr("user evicted", WAIT)?;

    // The survivors still talk.
    alice.send("/msg bob still here")?;
    bob.expect("message", WAIT, |l| {
        l.starts_with("msg alice ") && l.ends_with(" still here")
    })?;
    Ok(())
}

/// A free UDP port on 127.0.0.1 (bound and released).
fn free_udp_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

#[test]
fn clients_come_back_by_themselves_when_the_server_process_restarts() -> anyhow::Result<()> {
    let addr = free_udp_addr()?.to_string();
    let args = ["--udp", addr.as_str(), "--liveness-timeout", "2"];
    let mut server = Proc::spawn("server", "pigeon-server", &args, "info")?;
    server.expect_prefix("listening ", WAIT)?;
    let mut alice = pigeon("alice", &addr)?;
    alice.expect_prefix("ready ", WAIT)?;
    let mut bob = pigeon("bob", &addr)?;
    bob.expect_prefix("ready ", WAIT)?;
    alice.expect_prefix("online bob ", WAIT)?;

    // SIGTERM: the server says it is going, and stops.
    server.signal(libc::SIGTERM)?;
    assert_eq!(server.wait_exit(WAIT)?.code(), Some(0));
    alice.expect_stderr("shutting down", WAIT)?;
    bob.expect_stderr("shutting down", WAIT)?;

    // While it is away, peers still talk directly.
    alice.send("/msg bob the server is down, but we are not")?;
    bob.expect("message", WAIT, |l| {
        l.ends_with(" the server is down, but we are not")
    })?;

    // A new server on the same port: both log in again by themselves.
    let mut server = Proc::spawn("server2", "pigeon-server", &args, "info")?;
    server.expect_prefix("listening ", WAIT)?;
    alice.expect_stderr("logged in again", WAIT)?;
    bob.expect_stderr("logged in again", WAIT)?;
    // Whoever is back first sees the other leave and come back (the new
    // server's roster is the truth): ask until both are listed.
    let deadline = Instant::now() + WAIT;
    loop {
        let from = bob.drain().len();
        bob.send("/list")?;
        bob.expect("bob listed", WAIT, |l| l.starts_with("user bob "))?;
        if bob.seen[from..]
            .iter()
            .any(|l| l.starts_with("user alice "))
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "alice never came back: {:?}",
            bob.seen
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    alice.send("/msg bob welcome back")?;
    bob.expect("message", WAIT, |l| l.ends_with(" welcome back"))?;
    alice.send("/quit")?;
    assert_eq!(alice.wait_exit(WAIT)?.code(), Some(0));
    bob.expect("alice offline", WAIT, |l| l == "offline alice")?;
    Ok(())
}

async fn restart_test(announce: bool) -> anyhow::Result<()> {
    init_tracing();
    let mut config = local_server_config();
    config.liveness_timeout = Duration::from_secs(2);
    let first = ServerHandle::start(config.clone()).await?;
    let addr = first.udp_addr();
    let mut alice = TestClient::online("alice", addr).await?;
    let mut bob = TestClient::online("bob", addr).await?;
    alice.sees_online("bob").await?;

    if announce {
        first.shutdown().await;
    } else {
        first.vanish().await;
    }
    let lost_at = Instant::now();
    alice
        .wait_for("server lost", |e| {
            matches!(e, ClientEvent::ServerLost { .. })
        })
        .await?;
    let noticed = lost_at.elapsed();
    // Chat goes on meanwhile.
    alice.say("bob", "while the server is away").await?;
    assert_eq!(bob.message_from("alice").await?, "while the server is away");

    let second = ServerHandle::start(ServerConfig {
        udp: addr,
        ..config
    })
    .await?;
    for client in [&mut alice, &mut bob] {
        client
            .wait_for("reconnected", |e| {
                matches!(e, ClientEvent::Reconnected { .. })
            })
            .await?;
    }
    let back = lost_at.elapsed();
    integration::harness::eventually("both in the new roster", || second.online_count() == 2)
        .await?;
    for client in [&alice, &bob] {
        client.roster_becomes(&["alice", "bob"]).await?;
    }
    println!("announced {announce}: loss noticed after {noticed:?}, both back after {back:?}");
    bob.say("alice", "back again").await?;
    assert_eq!(alice.message_from("bob").await?, "back again");
    Ok(())
}

#[actix_rt::test]
async fn clients_log_in_again_after_an_announced_restart() -> anyhow::Result<()> {
    restart_test(true).await
}

#[actix_rt::test]
async fn clients_log_in_again_after_their_server_vanishes() -> anyhow::Result<()> {
    restart_test(false).await
}
