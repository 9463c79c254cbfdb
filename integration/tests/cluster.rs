//! Several servers over Redis (`pigeon-server --cluster`): the link to
//! Redis works inside an actor, on actix's own runtime; users online
//! through one server are in every server's roster, and chat with each
//! other; a server that dies takes its users with it; a name registered
//! through one server cannot be taken through another.
//!
//! Needs the Redis `scripts/test` starts (`PIGEON_REDIS_URL`); skipped,
//! saying so, without one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use integration::process::{binary, udp_of, Proc, DATA_HOME_VARIABLE};
use integration::redis::{fresh_namespace, redis_url};
use pigeon_server::cluster_actor::{ClusterActor, ClusterConfig, ClusterStats, RoundTrip};

#[test]
fn a_round_trip_to_redis_inside_an_actor() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    actix_rt::System::new().block_on(async move {
        let mut config = ClusterConfig::new(url.clone(), "a");
        config.namespace = fresh_namespace("round-trip");
        config.heartbeat = Duration::from_millis(50);
        let servers = config.servers_key();
        let stats = Arc::new(ClusterStats::default());
        let actor = ClusterActor::connect(config, stats.clone()).await?.start();
        let took = actor.send(RoundTrip).await??;
        eprintln!("Redis round trip (SET, GET) inside an actor: {took:?}");
        anyhow::ensure!(stats.rtt_us.load(Ordering::Relaxed) > 0);
        // The heartbeat is in Redis, where the other servers look.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        anyhow::ensure!(stats.heartbeats.load(Ordering::Relaxed) >= 2);
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let beat: Option<u64> = redis::cmd("HGET")
            .arg(&servers)
            .arg("a")
            .query_async(&mut connection)
            .await?;
        anyhow::ensure!(beat.is_some_and(|ms| ms > 0), "no heartbeat: {beat:?}");
        let _: () = redis::cmd("DEL")
            .arg(&servers)
            .query_async(&mut connection)
            .await?;
        Ok(())
    })
}

#[test]
fn an_unreachable_redis_is_a_clear_error() -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async {
        // Nothing listens on port 1 of loopback.
        let config = ClusterConfig::new("redis://127.0.0.1:1", "a");
        let stats = Arc::new(ClusterStats::default());
        match ClusterActor::connect(config, stats).await {
            Ok(_) => anyhow::bail!("connected to nothing?"),
            Err(e) => {
                let text = e.to_string();
                anyhow::ensure!(text.starts_with("Redis"), "{text}");
                Ok(())
            }
        }
    })
}

const WAIT: Duration = Duration::from_secs(20);

/// A server of the cluster in `namespace`, known as `id`: it and its UDP
/// address.
fn cluster_server(url: &str, namespace: &str, id: &str) -> anyhow::Result<(Proc, String)> {
    cluster_server_with(url, namespace, id, &[])
}

/// [`cluster_server`], with `more` arguments.
fn cluster_server_with(
    url: &str,
    namespace: &str,
    id: &str,
    more: &[&str],
) -> anyhow::Result<(Proc, String)> {
    let mut command = std::process::Command::new(binary("pigeon-server")?);
    command.args(more);
    command.args([
        "--udp",
        "127.0.0.1:0",
        "--ephemeral",
        "--cluster",
        url,
        "--cluster-namespace",
        namespace,
        "--server-id",
        id,
        "--cluster-timeout",
        "2",
    ]);
    let mut server = Proc::start(id, command, "info")?;
    let line = server.expect_prefix("listening ", WAIT)?;
    anyhow::ensure!(line.ends_with(&format!(" server-id={id}")), "{line}");
    server.seen.push(line.clone());
    let udp = udp_of(&line)?;
    Ok((server, udp))
}

/// `name` in plain mode on `server`, logged in, its data in `data`.
fn client(name: &str, server: &str, data: &std::path::Path) -> anyhow::Result<Proc> {
    client_with(name, server, data, &[])
}

/// [`client`], with `more` arguments.
fn client_with(
    name: &str,
    server: &str,
    data: &std::path::Path,
    more: &[&str],
) -> anyhow::Result<Proc> {
    let mut command = std::process::Command::new(binary("pigeon")?);
    command.env(DATA_HOME_VARIABLE, data);
    command.args(["--name", name, "--server", server]);
    command.args(more);
    let mut client = Proc::start(name, command, "warn")?;
    client.expect_prefix("ready ", WAIT)?;
    Ok(client)
}

/// `who` shows (or showed) `line`.
fn shows(who: &mut Proc, line: &str) -> anyhow::Result<()> {
    if who.seen.iter().any(|l| l.starts_with(line)) {
        return Ok(());
    }
    who.expect_prefix(line, WAIT).map(drop)
}

fn say(from: &mut Proc, to: &mut Proc, text: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    from.send(&format!("/msg {} {text}", to.label))?;
    let wanted = format!(" {text}");
    to.expect("the message", WAIT, |l| {
        l.starts_with("msg ") && l.ends_with(&wanted)
    })?;
    Ok(started.elapsed())
}

#[test]
fn three_servers_share_their_users_and_everyone_chats_with_everyone() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    let namespace = fresh_namespace("three");
    let data = tempfile::tempdir()?;
    let (a, at_a) = cluster_server_with(&url, &namespace, "a", &["--metrics", "127.0.0.1:0"])?;
    let (_b, at_b) = cluster_server(&url, &namespace, "b")?;
    let (_c, at_c) = cluster_server(&url, &namespace, "c")?;
    let mut alice = client("alice", &at_a, data.path())?;
    let mut bob = client("bob", &at_b, data.path())?;
    let mut carol = client("carol", &at_c, data.path())?;
    // Each sees the users of the other two servers.
    for (who, others) in [
        (&mut alice, ["bob", "carol"]),
        (&mut bob, ["alice", "carol"]),
        (&mut carol, ["alice", "bob"]),
    ] {
        for other in others {
            shows(who, &format!("online {other} "))?;
        }
    }
    let took = say(&mut alice, &mut bob, "from a to b")?;
    eprintln!("three servers: first message across servers shown after {took:?}");
    say(&mut bob, &mut carol, "from b to c")?;
    say(&mut carol, &mut alice, "from c to a")?;
    say(&mut alice, &mut carol, "from a to c")?;
    // Server a lists the two users of the others, and arranged alice's
    // meeting with bob (passed on to b; carol's with alice came from c).
    // (The count of servers is as of a's last heartbeat, every 0.4 s.)
    let wanted = ["pigeon_cluster_remote_users 2", "pigeon_cluster_servers 3"];
    let started = Instant::now();
    let figures = loop {
        let figures = metrics(&a)?;
        let all = wanted.iter().all(|w| figures.contains(&format!("\n{w}\n")));
        if all || started.elapsed() > WAIT {
            break figures;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for wanted in wanted {
        anyhow::ensure!(figures.contains(&format!("\n{wanted}\n")), "{figures}");
    }
    let meetings = figures
        .lines()
        .find_map(|l| l.strip_prefix("pigeon_meetings_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    anyhow::ensure!(meetings >= 1, "{figures}");
    // Leaving through one server is seen through the others.
    carol.send("/quit")?;
    carol.wait_exit(WAIT)?;
    shows(&mut alice, "offline carol")?;
    shows(&mut bob, "offline carol")?;
    Ok(())
}

#[test]
fn a_server_that_dies_takes_its_users_with_it() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    let namespace = fresh_namespace("dies");
    let data = tempfile::tempdir()?;
    let (_a, at_a) = cluster_server(&url, &namespace, "a")?;
    let (b, at_b) = cluster_server(&url, &namespace, "b")?;
    let mut alice = client("alice", &at_a, data.path())?;
    let mut bob = client("bob", &at_b, data.path())?;
    shows(&mut alice, "online bob ")?;
    shows(&mut bob, "online alice ")?;
    b.signal(libc::SIGKILL)?;
    let killed = Instant::now();
    shows(&mut alice, "offline bob")?;
    let gone = killed.elapsed();
    eprintln!("a server killed: its user left the other's roster after {gone:?}");
    // A cluster timeout of 2 s, checked at each heartbeat (0.4 s).
    anyhow::ensure!(gone < Duration::from_secs(5), "took {gone:?}");
    Ok(())
}

#[test]
fn a_name_registered_through_one_server_cannot_be_taken_through_another() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    let namespace = fresh_namespace("names");
    let (_a, at_a) = cluster_server(&url, &namespace, "a")?;
    let (_b, at_b) = cluster_server(&url, &namespace, "b")?;
    let mine = tempfile::tempdir()?;
    let mut alice = client("alice", &at_a, mine.path())?;
    // Registered once her session proved its key (it fetched the roster).
    let mut watcher = client("watcher", &at_b, mine.path())?;
    shows(&mut watcher, "online alice ")?;
    alice.send("/quit")?;
    alice.wait_exit(WAIT)?;
    shows(&mut watcher, "offline alice")?;
    // Someone else, with a key of their own, through the other server.
    let theirs = tempfile::tempdir()?;
    let mut command = std::process::Command::new(binary("pigeon")?);
    command.env(DATA_HOME_VARIABLE, theirs.path());
    command.args(["--name", "alice", "--server", &at_b]);
    let mut impostor = Proc::start("impostor", command, "warn")?;
    let status = impostor.wait_exit(WAIT)?;
    anyhow::ensure!(status.code() == Some(2), "{status:?}");
    impostor.expect_stderr("name-registered", WAIT)?;
    // The owner still can, through either.
    client("alice", &at_b, mine.path())?;
    Ok(())
}

#[test]
fn servers_carry_on_through_a_redis_restart() -> anyhow::Result<()> {
    let Some(mut redis) = integration::redis::PrivateRedis::start()? else {
        return Ok(());
    };
    let url = redis.url();
    let namespace = fresh_namespace("restart");
    let data = tempfile::tempdir()?;
    let (_a, at_a) = cluster_server(&url, &namespace, "a")?;
    let (_b, at_b) = cluster_server(&url, &namespace, "b")?;
    let mut alice = client("alice", &at_a, data.path())?;
    let mut bob = client("bob", &at_b, data.path())?;
    let mut dave = client("dave", &at_b, data.path())?;
    shows(&mut alice, "online bob ")?;
    shows(&mut alice, "online dave ")?;
    // Redis goes away, and comes back empty; dave leaves meanwhile.
    redis.stop();
    std::thread::sleep(Duration::from_millis(500));
    dave.send("/quit")?;
    dave.wait_exit(WAIT)?;
    redis.restart()?;
    let back = Instant::now();
    // Each server shares its users again, finds that dave left, and the
    // log carries on: a new user through b is seen through a.
    shows(&mut alice, "offline dave")?;
    eprintln!(
        "Redis restarted: a user who left meanwhile was seen gone after {:?}",
        back.elapsed()
    );
    let mut carol = client("carol", &at_b, data.path())?;
    shows(&mut alice, "online carol ")?;
    shows(&mut carol, "online alice ")?;
    anyhow::ensure!(
        !alice.seen.iter().any(|l| l == "offline bob"),
        "bob never left: {:?}",
        alice.seen
    );
    say(&mut alice, &mut carol, "after the restart")?;
    say(&mut bob, &mut alice, "still here")?;
    // A server that joins after the restart finds everyone: the others
    // wrote their users back.
    let (_c, at_c) = cluster_server(&url, &namespace, "c")?;
    let mut erin = client("erin", &at_c, data.path())?;
    for other in ["alice", "bob", "carol"] {
        shows(&mut erin, &format!("online {other} "))?;
    }
    anyhow::ensure!(
        !erin.seen.iter().any(|l| l.starts_with("online dave ")),
        "{:?}",
        erin.seen
    );
    Ok(())
}

#[test]
fn clients_of_a_server_that_dies_log_in_again_through_another_and_chat_on() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    let namespace = fresh_namespace("rehome");
    let data = tempfile::tempdir()?;
    // Keepalives every half second: a client finds its server lost in
    // about two.
    let fast = ["--liveness-timeout", "3"];
    let (a, at_a) = cluster_server_with(&url, &namespace, "a", &fast)?;
    let (_b, at_b) = cluster_server_with(&url, &namespace, "b", &fast)?;
    let mut alice = client("alice", &format!("{at_a},{at_b}"), data.path())?;
    let mut bob = client("bob", &at_b, data.path())?;
    shows(&mut alice, "online bob ")?;
    say(&mut alice, &mut bob, "before")?;
    a.signal(libc::SIGKILL)?;
    let killed = Instant::now();
    // The conversation carries on while alice finds another server: every
    // message once, in order.
    for i in 0..5 {
        bob.send(&format!("/msg alice while a is gone {i}"))?;
        alice.send(&format!("/msg bob back while a is gone {i}"))?;
        std::thread::sleep(Duration::from_millis(300));
    }
    for (who, text) in [
        (&mut alice, "while a is gone"),
        (&mut bob, "back while a is gone"),
    ] {
        for i in 0..5 {
            let line = who.expect("the next message", WAIT, |l| l.starts_with("msg "))?;
            anyhow::ensure!(line.ends_with(&format!(" {text} {i}")), "{line:?}");
        }
    }
    // Through b now: she sees who logs in there, and they see her.
    let mut carol = client("carol", &at_b, data.path())?;
    // Only b can tell alice that carol came: she is served by b.
    shows(&mut alice, "online carol ")?;
    eprintln!(
        "a server killed: its client was served by another after {:?}",
        killed.elapsed()
    );
    shows(&mut carol, "online alice ")?;
    say(&mut alice, &mut carol, "through b")?;
    say(&mut alice, &mut bob, "after")?;
    // Nothing was shown twice.
    for who in [&alice, &bob] {
        let shown: Vec<&String> = who.seen.iter().filter(|l| l.starts_with("msg ")).collect();
        let mut texts: Vec<String> = shown
            .iter()
            .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
            .collect();
        let all = texts.len();
        texts.sort();
        texts.dedup();
        anyhow::ensure!(texts.len() == all, "a message shown twice: {shown:?}");
    }
    Ok(())
}

#[test]
fn a_crowd_spread_over_three_servers_converges_chats_exactly_once_and_moves_when_one_vanishes(
) -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    actix_rt::System::new().block_on(async move {
        let config = integration::load::LoadConfig {
            peers: 45,
            messages: 5,
            servers: 3,
            redis: Some(url),
            ceiling_receivers: 20,
            ceiling_duration: Duration::from_millis(60),
            phase_timeout: Duration::from_secs(60),
            ..integration::load::LoadConfig::default()
        };
        let report =
            integration::load::run(config, &mut integration::load::Quiet, None, None).await?;
        anyhow::ensure!(report.failures.is_empty(), "{:?}", report.failures);
        anyhow::ensure!(report.servers == 3 && report.roster_events == 45 * 44);
        // One server vanished after the chat; its 15 peers moved.
        anyhow::ensure!(
            report.rehomed_peers == 15 && report.rehome_s.is_some(),
            "{} {:?}",
            report.rehomed_peers,
            report.rehome_s
        );
        anyhow::ensure!(
            report.messages_delivered == 225,
            "{}",
            report.messages_delivered
        );
        anyhow::ensure!(
            (
                report.messages_lost,
                report.messages_duplicated,
                report.messages_reordered
            ) == (0, 0, 0)
        );
        Ok(())
    })
}

#[test]
fn an_offline_message_handed_to_one_server_is_delivered_through_another() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    let namespace = fresh_namespace("mail");
    let data = tempfile::tempdir()?;
    let (_a, at_a) = cluster_server(&url, &namespace, "a")?;
    let (_c, at_c) = cluster_server(&url, &namespace, "c")?;
    // bob registers his name through c, and leaves.
    let mut bob = client("bob", &at_c, data.path())?;
    bob.send("/quit")?;
    bob.wait_exit(WAIT)?;
    // alice, through a, writes to him: kept, sealed to his key.
    let mut alice = client_with("alice", &at_a, data.path(), &["--verbose"])?;
    let text = "kept for you across servers";
    let started = Instant::now();
    loop {
        alice.send(&format!("/msg bob {text}"))?;
        // bob's registration reaches the cluster's registry as he logs in;
        // until then he is nobody a message can be sealed to.
        match alice.expect("sent or refused", Duration::from_secs(5), |l| {
            l.starts_with("sent bob ")
        }) {
            Ok(_) => break,
            Err(e) if started.elapsed() > WAIT => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let sent = alice
        .seen
        .iter()
        .rev()
        .find(|l| l.starts_with("sent bob "))
        .cloned()
        .unwrap_or_default();
    let id = sent.trim_start_matches("sent bob ").to_owned();
    alice.expect("stored", WAIT, |l| l == format!("stored bob {id}"))?;
    // bob comes back through c: the message, once; alice hears so.
    let mut bob = client("bob", &at_c, data.path())?;
    let got = bob.expect_prefix("msg alice ", WAIT)?;
    anyhow::ensure!(got.ends_with(&format!(" {text}")), "{got}");
    alice.expect("delivered", WAIT, |l| l == format!("delivered bob {id}"))?;
    Ok(())
}

/// The metrics `server` (started with `--metrics`) serves.
fn metrics(server: &Proc) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let addr = server
        .seen
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("metrics="))
        })
        .ok_or_else(|| anyhow::anyhow!("no metrics= in {:?}", server.seen))?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(WAIT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}
