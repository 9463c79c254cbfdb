//! The real binaries, driven through the plain console mode the way a
//! script would: a `pigeon-server` process and several `pigeon` processes
//! talking over loopback.

use std::time::Duration;

use integration::process::{pigeon, start_server, Proc};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn binaries_chat_through_the_plain_console() -> anyhow::Result<()> {
    let (mut server, udp) = start_server()?;

    let mut alice = pigeon("alice", &udp)?;
    let ready = alice.expect_prefix("ready ", WAIT)?;
    let fields: Vec<&str> = ready.split(' ').collect();
    assert_eq!(fields.len(), 3, "{ready}");
    assert!(fields[1].starts_with("127.0.0.1:"), "{ready}");
    assert_eq!(fields[2], "1", "{ready}");
    let alice_at = fields[1].to_owned();

    let mut bob = pigeon("bob", &udp)?;
    let ready = bob.expect_prefix("ready ", WAIT)?;
    assert!(ready.ends_with(" 2"), "{ready}");
    bob.expect("alice online", WAIT, |l| {
        l == format!("online alice {alice_at}")
    })?;
    let bob_line = alice.expect_prefix("online bob ", WAIT)?;
    let bob_at = bob_line.trim_start_matches("online bob ").to_owned();

    // Chinese text and commas, in both directions.
    alice.send("/msg bob 你好, bob, 天涯若比邻")?;
    let msg = bob.expect_prefix("msg alice ", WAIT)?;
    let (time, text) = msg
        .trim_start_matches("msg alice ")
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("{msg}"))?;
    assert_eq!(text, "你好, bob, 天涯若比邻");
    let parts: Vec<&str> = time.split(':').collect();
    assert_eq!(parts.len(), 3, "time {time:?}");
    bob.send("/msg alice hi alice, 收到")?;
    let msg = alice.expect_prefix("msg bob ", WAIT)?;
    assert!(msg.ends_with(" hi alice, 收到"), "{msg}");

    // /list shows everyone, this user included.
    bob.send("/list")?;
    bob.expect("alice in /list", WAIT, |l| {
        l == format!("user alice {alice_at}")
    })?;
    bob.expect("bob in /list", WAIT, |l| l == format!("user bob {bob_at}"))?;

    // Mistakes go to stderr; stdout stays clean and the client carries on.
    bob.send("/msg nobody hello")?;
    bob.expect_stderr("nobody called nobody is registered", WAIT)?;
    bob.send("hello?")?;
    bob.expect_stderr("lines start with a command", WAIT)?;

    // A third client taking alice's name is refused and exits with 2.
    let mut impostor = pigeon("alice", &udp)?;
    impostor.expect("refusal", WAIT, |l| l == "refused name-taken")?;
    let status = impostor.wait_exit(WAIT)?;
    assert_eq!(status.code(), Some(2));

    // End of input: alice logs out and exits cleanly; bob is told.
    alice.close_stdin();
    assert_eq!(alice.wait_exit(WAIT)?.code(), Some(0));
    bob.expect("alice offline", WAIT, |l| l == "offline alice")?;

    // /quit: bob leaves too.
    bob.send("/quit")?;
    assert_eq!(bob.wait_exit(WAIT)?.code(), Some(0));
    assert!(
        bob.drain().iter().all(|l| {
            ["ready ", "online ", "offline ", "msg ", "user "]
                .iter()
                .any(|p| l.starts_with(p))
        }),
        "unexpected stdout: {:?}",
        bob.seen
    );

    // The server logged each event and stops on SIGTERM.
    server.expect_stderr("user left", WAIT)?;
    server.signal(libc::SIGTERM)?;
    assert_eq!(server.wait_exit(WAIT)?.code(), Some(0));
    Ok(())
}

#[test]
fn one_command_hosts_a_chat() -> anyhow::Result<()> {
    let mut host = Proc::spawn(
        "host",
        "pigeon",
        &["--host", "--name", "alice", "--server", "127.0.0.1:0"],
        "warn",
    )?;
    let hosting = host.expect_stderr("hosting a server", WAIT)?;
    let udp = hosting
        .split_whitespace()
        .find_map(|f| f.strip_prefix("udp="))
        .ok_or_else(|| anyhow::anyhow!("{hosting}"))?
        .to_owned();
    host.expect_prefix("ready ", WAIT)?;
    let mut bob = pigeon("bob", &udp)?;
    bob.expect_prefix("ready ", WAIT)?;
    bob.expect("alice online", WAIT, |l| l.starts_with("online alice "))?;
    bob.send("/msg alice hello host")?;
    host.expect("message", WAIT, |l| {
        l.starts_with("msg bob ") && l.ends_with(" hello host")
    })?;
    host.signal(libc::SIGINT)?;
    assert_eq!(host.wait_exit(WAIT)?.code(), Some(0));
    Ok(())
}

#[test]
fn a_refused_message_takes_no_number() -> anyhow::Result<()> {
    let (_server, udp) = start_server()?;
    let mut alice = Proc::spawn(
        "alice",
        "pigeon",
        &["--name", "alice", "--server", &udp, "--verbose"],
        "warn",
    )?;
    alice.expect_prefix("ready ", WAIT)?;
    let mut bob = pigeon("bob", &udp)?;
    bob.expect_prefix("ready ", WAIT)?;
    alice.expect_prefix("online bob ", WAIT)?;

    alice.send("/msg bob first")?;
    alice.expect("first sent", WAIT, |l| l == "sent bob 1")?;
    // Too long: refused, in characters a person can count.
    alice.send(&format!("/msg bob {}", "x".repeat(60_000)))?;
    let refusal = alice.expect_stderr("too long", WAIT)?;
    assert!(
        refusal.contains("60000 characters, at most 53760"),
        "{refusal}"
    );
    alice.send("/msg bob second")?;
    let sent = alice.expect("second sent", WAIT, |l| l.starts_with("sent bob "))?;
    assert_eq!(sent, "sent bob 2");
    let msg = bob.expect_prefix("msg alice ", WAIT)?;
    assert!(msg.ends_with(" first"), "{msg}");
    let msg = bob.expect_prefix("msg alice ", WAIT)?;
    assert!(msg.ends_with(" second"), "{msg}");
    Ok(())
}
