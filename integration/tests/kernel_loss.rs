//! The real binaries over real loss: a server and three clients in a
//! network namespace whose kernel drops a fifth of all UDP datagrams
//! (nftables `numgen random`). Login, roster, chat and logout all work,
//! every message is shown exactly once and in order, and none fails.
//!
//! Needs root, iproute2 and nftables (`scripts/test` installs nftables);
//! set `PIGEON_SKIP_NETNS=1` to skip it where it cannot run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use integration::netns::{Namespace, SKIP_VAR};
use integration::process::{binary, Proc};

const WAIT: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const MESSAGES_EACH_WAY: usize = 8;

fn text(from: &str, to: &str, i: usize) -> String {
    format!("{from} to {to} #{i}: 你好, over a lossy kernel")
}

#[test]
fn real_processes_chat_through_a_kernel_that_drops_a_fifth_of_all_udp() -> anyhow::Result<()> {
    if Namespace::skipped() {
        eprintln!("SKIPPED: {SKIP_VAR} is set");
        return Ok(());
    }
    let started = Instant::now();
    let ns = Namespace::lossy(20)?;
    let mut command = ns.command(&binary("pigeon-server")?);
    command.args(["--udp", "127.0.0.1:7788", "--liveness-timeout", "6"]);
    let mut server = Proc::start("server", command, "info")?;
    server.expect_prefix("listening udp=127.0.0.1:7788 ", WAIT)?;
    let mut clients: Vec<Proc> = Vec::new();
    let result = chat(&ns, started, &mut server, &mut clients);
    if result.is_err() {
        // What each process logged, to tell a flaky network from a bug.
        eprintln!("server log: {:#?}", server.stderr_lines());
        for client in &mut clients {
            let label = client.label.clone();
            eprintln!("{label} log: {:#?}", client.stderr_lines());
        }
    }
    result
}

fn chat(
    ns: &Namespace,
    started: Instant,
    server: &mut Proc,
    clients: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    for name in NAMES {
        let mut command = ns.command(&binary("pigeon")?);
        command.args(["--name", name, "--server", "127.0.0.1:7788", "--verbose"]);
        let mut client = Proc::start(name, command, "info")?;
        client.expect_prefix("ready 127.0.0.1:", WAIT)?;
        clients.push(client);
    }
    // Every roster converges: each client is told of both others.
    for client in clients.iter_mut() {
        for other in NAMES {
            if other != client.label {
                client.expect_prefix(&format!("online {other} "), WAIT)?;
            }
        }
    }
    let converged = started.elapsed();

    for i in 0..MESSAGES_EACH_WAY {
        for client in clients.iter_mut() {
            let from = client.label.clone();
            for to in NAMES.into_iter().filter(|to| *to != from) {
                client.send(&format!("/msg {to} {}", text(&from, to, i)))?;
            }
        }
    }
    let expected = MESSAGES_EACH_WAY * (NAMES.len() - 1);
    for client in clients.iter_mut() {
        let me = client.label.clone();
        let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut delivered = 0;
        while received.values().map(Vec::len).sum::<usize>() < expected || delivered < expected {
            let line = client.expect("message or confirmation", WAIT, |l| {
                l.starts_with("msg ") || l.starts_with("delivered ") || l.starts_with("failed ")
            })?;
            anyhow::ensure!(!line.starts_with("failed "), "{me}: {line}");
            if line.starts_with("delivered ") {
                delivered += 1;
                continue;
            }
            // msg <from> <time> <text>
            let mut fields = line.splitn(4, ' ');
            let (Some(_), Some(from), Some(_), Some(body)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                anyhow::bail!("{me}: malformed {line:?}");
            };
            received
                .entry(from.to_owned())
                .or_default()
                .push(body.to_owned());
        }
        for from in NAMES.into_iter().filter(|n| *n != me) {
            let want: Vec<String> = (0..MESSAGES_EACH_WAY).map(|i| text(from, &me, i)).collect();
            assert_eq!(received.get(from), Some(&want), "{me} from {from}");
        }
    }
    let chatted = started.elapsed();

    // Logout: each leaves in turn, and those left are told.
    for i in 0..clients.len() {
        let leaving = clients[i].label.clone();
        clients[i].send("/quit")?;
        assert_eq!(
            clients[i].wait_exit(WAIT)?.code(),
            Some(0),
            "{leaving} exit"
        );
        for other in clients.iter_mut().skip(i + 1) {
            other.expect(&format!("{leaving} offline"), WAIT, |l| {
                l == format!("offline {leaving}")
            })?;
        }
    }
    let (total, dropped) = ns.udp_counts()?;
    let rate = dropped as f64 / total.max(1) as f64;
    println!(
        "kernel dropped {dropped} of {total} UDP datagrams ({:.1}%); rosters converged after \
         {converged:?}, {} messages delivered exactly once by {chatted:?}, all logged out by {:?}",
        rate * 100.0,
        expected * NAMES.len(),
        started.elapsed()
    );
    assert!(
        dropped > 0 && (0.1..0.3).contains(&rate),
        "loss rate {rate}"
    );
    server.signal(libc::SIGTERM)?;
    assert_eq!(server.wait_exit(WAIT)?.code(), Some(0));
    Ok(())
}
