//! Peers behind NATs, in a small internet of network namespaces
//! ([`integration::internet`]): the server on a public segment, each
//! client behind a router that masquerades its private network. Two home
//! routers (unsolicited inbound traffic dropped): the first message goes
//! at once through the relay, probes punch through both NATs, and the
//! chat moves to the direct path, after which no chat passes through the
//! server. A symmetric NAT cannot be punched: chat stays on the relay,
//! both ways, every message once and in order.
//!
//! Needs root, iproute2 and nftables (`scripts/test` installs nftables);
//! set `PIGEON_SKIP_NETNS=1` to skip them where they cannot run.

use std::time::{Duration, Instant};

use integration::internet::{Internet, Nat, SERVER_IP};
use integration::netns::{Namespace, SKIP_VAR};
use integration::process::{binary, Proc, DATA_HOME_VARIABLE};

const WAIT: Duration = Duration::from_secs(20);

/// The server on the public segment, and a client behind each of two
/// routers of kinds `a` and `b` (`None`: bob behind alice's router).
struct Setup {
    net: Internet,
    /// The clients' data folder (their keys, the server's key pinned).
    _data: tempfile::TempDir,
    server: Proc,
    alice: Proc,
    bob: Proc,
}

fn setup(a: Nat, b: Nat) -> anyhow::Result<Setup> {
    setup_with(a, Some(b), &[])
}

/// [`setup`], the server started with `server_args` too.
fn setup_with(a: Nat, b: Option<Nat>, server_args: &[&str]) -> anyhow::Result<Setup> {
    let mut net = Internet::new()?;
    let ra = net.router(a)?;
    let rb = match b {
        Some(b) => net.router(b)?,
        None => ra,
    };
    let (ha, _) = net.host(ra)?;
    let (hb, _) = net.host(rb)?;
    let server_addr = format!("{SERVER_IP}:7788");
    let mut command = net.public.command(&binary("pigeon-server")?);
    command.args(["--udp", &server_addr, "--ephemeral"]);
    command.args(server_args);
    let mut server = Proc::start("server", command, "info")?;
    server.expect_prefix("listening ", WAIT)?;
    // A new server key each time: a folder of their own, where no other
    // test pinned the key of a server at this address.
    let data = tempfile::tempdir()?;
    let client = |host: usize, name: &str| -> anyhow::Result<Proc> {
        let mut command = net.hosts[host].command(&binary("pigeon")?);
        command.env(DATA_HOME_VARIABLE, data.path());
        command.args(["--name", name, "--server", &server_addr, "--verbose"]);
        let mut client = Proc::start(name, command, "info")?;
        client.expect_prefix("ready ", WAIT)?;
        Ok(client)
    };
    let mut alice = client(ha, "alice")?;
    let mut bob = client(hb, "bob")?;
    alice.expect_prefix("online bob ", WAIT)?;
    bob.expect_prefix("online alice ", WAIT)?;
    Ok(Setup {
        net,
        _data: data,
        server,
        alice,
        bob,
    })
}

/// `from` sends `text` to `to`, which shows it; how long that took.
fn say(from: &mut Proc, to: &mut Proc, text: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let to_name = to.label.clone();
    from.send(&format!("/msg {to_name} {text}"))?;
    let wanted = format!(" {text}");
    to.expect("the message", WAIT, |l| {
        l.starts_with("msg ") && l.ends_with(&wanted)
    })?;
    Ok(started.elapsed())
}

fn skipped() -> bool {
    if Namespace::skipped() {
        eprintln!("SKIPPED: {SKIP_VAR} is set");
        return true;
    }
    false
}

fn with_logs(
    setup: &mut Setup,
    test: impl FnOnce(&mut Setup) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let result = test(setup);
    if result.is_err() {
        eprintln!("server log: {:#?}", setup.server.stderr_lines());
        eprintln!("alice log: {:#?}", setup.alice.stderr_lines());
        eprintln!("bob log: {:#?}", setup.bob.stderr_lines());
    }
    result
}

#[test]
fn two_clients_behind_home_routers_punch_through_and_chat_directly() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let mut setup = setup(Nat::Home, Nat::Home)?;
    with_logs(&mut setup, |s| {
        let first = say(&mut s.alice, &mut s.bob, "hello across two NATs")?;
        eprintln!("home routers: first message shown after {first:?}");
        // Both find the direct path: each other's router.
        let bob_router = s.net.routers[1].wan_ip.clone();
        let alice_router = s.net.routers[0].wan_ip.clone();
        has_said(&mut s.alice, &format!("path bob direct {bob_router}:"))?;
        say(&mut s.bob, &mut s.alice, "and back")?;
        has_said(&mut s.bob, &format!("path alice direct {alice_router}:"))?;
        // From now on nothing of the chat goes through the server.
        let relayed = s.net.relay_requests()?;
        for i in 0..5 {
            say(&mut s.alice, &mut s.bob, &format!("direct {i} from alice"))?;
            say(&mut s.bob, &mut s.alice, &format!("direct {i} from bob"))?;
        }
        anyhow::ensure!(
            s.net.relay_requests()? == relayed,
            "chat went through the relay after the direct path was found"
        );
        Ok(())
    })
}

#[test]
fn two_clients_behind_the_same_router_chat_over_their_local_addresses() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let mut setup = setup_with(Nat::Home, None, &[])?;
    with_logs(&mut setup, |s| {
        let first = say(&mut s.alice, &mut s.bob, "hello on our own network")?;
        eprintln!("same router: first message shown after {first:?}");
        // The router does not hairpin: each finds the other at the address
        // it has on the shared network, which the server told them.
        has_said(&mut s.alice, "path bob direct 10.1.0.11:")?;
        say(&mut s.bob, &mut s.alice, "and back")?;
        has_said(&mut s.bob, "path alice direct 10.1.0.10:")?;
        let relayed = s.net.relay_requests()?;
        for i in 0..5 {
            say(&mut s.alice, &mut s.bob, &format!("local {i} from alice"))?;
            say(&mut s.bob, &mut s.alice, &format!("local {i} from bob"))?;
        }
        anyhow::ensure!(
            s.net.relay_requests()? == relayed,
            "chat went through the relay after the local path was found"
        );
        Ok(())
    })
}

#[test]
fn behind_a_symmetric_nat_chat_goes_through_the_relay_once_and_in_order() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let mut setup = setup(Nat::Home, Nat::Symmetric)?;
    with_logs(&mut setup, |s| {
        let first = say(&mut s.alice, &mut s.bob, "hello through the relay")?;
        eprintln!("symmetric NAT: first message shown after {first:?}");
        has_said(&mut s.alice, "path bob relayed")?;
        for i in 0..10 {
            s.alice.send(&format!("/msg bob relayed {i} from alice"))?;
            s.bob.send(&format!("/msg alice relayed {i} from bob"))?;
        }
        for (who, from) in [(&mut s.bob, "alice"), (&mut s.alice, "bob")] {
            for i in 0..10 {
                let wanted = format!(" relayed {i} from {from}");
                let line = who.expect("the next message", WAIT, |l| l.starts_with("msg "))?;
                anyhow::ensure!(line.ends_with(&wanted), "{line:?}: expected {wanted:?}");
            }
        }
        anyhow::ensure!(
            !s.alice
                .seen
                .iter()
                .any(|l| l.starts_with("path bob direct")),
            "a symmetric NAT was punched?"
        );
        anyhow::ensure!(s.net.relay_requests()? > 20, "not relayed");
        Ok(())
    })
}

/// A line of `who`'s starting with `prefix`: one already read past (while
/// waiting for something else), or the next.
fn has_said(who: &mut Proc, prefix: &str) -> anyhow::Result<String> {
    if let Some(line) = who.seen.iter().rev().find(|l| l.starts_with(prefix)) {
        return Ok(line.clone());
    }
    who.expect_prefix(prefix, WAIT)
}

/// Both sides on the direct path.
fn go_direct(s: &mut Setup) -> anyhow::Result<()> {
    say(&mut s.alice, &mut s.bob, "hello")?;
    say(&mut s.bob, &mut s.alice, "hello back")?;
    has_said(&mut s.alice, "path bob direct ")?;
    has_said(&mut s.bob, "path alice direct ")?;
    Ok(())
}

#[test]
fn a_direct_path_that_stops_falls_back_to_the_relay_and_back_when_it_works() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let mut setup = setup(Nat::Home, Nat::Home)?;
    with_logs(&mut setup, |s| {
        go_direct(s)?;
        s.net.block(0, 1, true)?;
        let took = say(&mut s.alice, &mut s.bob, "while the direct path is cut")?;
        eprintln!("direct path cut: message shown after {took:?}");
        // After the direct path was found (the last path line so far).
        let relayed = s
            .alice
            .seen
            .iter()
            .rposition(|l| l.starts_with("path bob direct "));
        if !s.alice.seen[relayed.unwrap_or(0)..]
            .iter()
            .any(|l| l == "path bob relayed")
        {
            s.alice.expect_prefix("path bob relayed", WAIT)?;
        }
        s.net.block(0, 1, false)?;
        // Chat goes on; probes find the direct path again.
        let deadline = Instant::now() + WAIT;
        let mut i = 0;
        loop {
            say(&mut s.alice, &mut s.bob, &format!("after the cut {i}"))?;
            i += 1;
            let back = s
                .alice
                .expect("the direct path again", Duration::from_millis(500), |l| {
                    l.starts_with("path bob direct ")
                });
            if back.is_ok() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "never back on the direct path");
        }
        Ok(())
    })
}

#[test]
fn after_the_pinholes_expire_the_next_message_still_arrives_within_a_second() -> anyhow::Result<()>
{
    if skipped() {
        return Ok(());
    }
    let mut setup = setup(Nat::Home, Nat::Home)?;
    with_logs(&mut setup, |s| {
        for router in &s.net.routers {
            router.ns.exec(&[
                "sysctl",
                "-qw",
                "net.netfilter.nf_conntrack_udp_timeout=3",
                "net.netfilter.nf_conntrack_udp_timeout_stream=3",
            ])?;
        }
        go_direct(s)?;
        // Idle for longer than the routers remember a mapping.
        std::thread::sleep(Duration::from_secs(5));
        let took = say(&mut s.alice, &mut s.bob, "after a quiet spell")?;
        eprintln!("pinholes expired: message shown after {took:?}");
        anyhow::ensure!(took < Duration::from_secs(1), "took {took:?}");
        Ok(())
    })
}

#[test]
fn a_relay_over_its_rate_limit_loses_nothing_end_to_end() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let mut setup = setup_with(Nat::Home, Some(Nat::Symmetric), &["--relay-rate", "5"])?;
    with_logs(&mut setup, |s| {
        let started = Instant::now();
        for i in 0..30 {
            s.alice.send(&format!("/msg bob burst {i}"))?;
        }
        for i in 0..30 {
            let wanted = format!(" burst {i}");
            let line = s
                .bob
                .expect("the next message", WAIT, |l| l.starts_with("msg "))?;
            anyhow::ensure!(line.ends_with(&wanted), "{line:?}: expected {wanted:?}");
        }
        eprintln!(
            "30 messages through a relay of 5 a second: all shown after {:?}",
            started.elapsed()
        );
        s.server
            .expect_stderr("over-session-rate", WAIT)
            .map_err(|e| anyhow::anyhow!("the relay's limit was never reached: {e}"))?;
        Ok(())
    })
}
