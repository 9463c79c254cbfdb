//! Offline messages with the real binaries: a message to a registered
//! user who is offline is kept by the server (sealed: the server cannot
//! read it), survives the server's restart and the recipient's, arrives
//! once when the recipient is back, and its sender hears it was delivered;
//! a full mailbox is reported to the sender; a name nobody registered is an
//! error.

use std::time::Duration;

use integration::process::{udp_of, Proc};

const WAIT: Duration = Duration::from_secs(15);

fn server(data: &str, udp: &str, extra: &[&str]) -> anyhow::Result<(Proc, String)> {
    let mut args = vec!["--udp", udp, "--data", data];
    args.extend_from_slice(extra);
    let mut server = Proc::spawn("server", "pigeon-server", &args, "info")?;
    let line = server.expect_prefix("listening ", WAIT)?;
    Ok((server, udp_of(&line)?))
}

fn verbose(name: &str, server: &str) -> anyhow::Result<Proc> {
    Proc::spawn(
        name,
        "pigeon",
        &["--name", name, "--server", server, "--verbose"],
        "warn",
    )
}

/// `name` logs in (registering its key) and leaves.
fn register(name: &str, server: &str) -> anyhow::Result<()> {
    let mut user = verbose(name, server)?;
    user.expect_prefix("ready ", WAIT)?;
    user.send("/quit")?;
    user.wait_exit(WAIT)?;
    Ok(())
}

#[test]
fn an_offline_message_survives_restarts_and_arrives_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server").display().to_string();
    let (mut first, udp) = server(&data, "127.0.0.1:0", &[])?;
    register("bob", &udp)?;
    let mut alice = verbose("alice", &udp)?;
    alice.expect_prefix("ready ", WAIT)?;

    let text = "while you were away: 天涯若比邻, see you";
    alice.send(&format!("/msg bob {text}"))?;
    let sent = alice.expect_prefix("sent bob ", WAIT)?;
    let id = sent.trim_start_matches("sent bob ").to_owned();
    alice.expect("stored", WAIT, |l| l == format!("stored bob {id}"))?;
    // A name nobody registered is an error, and nothing is kept.
    alice.send("/msg nobody hello?")?;
    alice.expect_stderr("nobody called nobody is registered", WAIT)?;

    // What the server keeps holds no text (it is sealed to bob's key).
    for entry in std::fs::read_dir(dir.path().join("server"))? {
        let bytes = std::fs::read(entry?.path())?;
        for needle in ["while you were away", "天涯若比邻"] {
            let utf16: Vec<u8> = needle.encode_utf16().flat_map(u16::to_le_bytes).collect();
            assert!(
                !integration::capture::contains(&bytes, needle.as_bytes())
                    && !integration::capture::contains(&bytes, &utf16),
                "{needle:?} in the server's store"
            );
        }
    }

    // The server restarts: the message is still there.
    first.signal(libc::SIGTERM)?;
    first.wait_exit(WAIT)?;
    let (_second, again) = server(&data, &udp, &[])?;
    assert_eq!(again, udp);

    // bob comes back: the message, once, with the time it was sent; alice
    // (back online by herself) hears it was delivered.
    let mut bob = verbose("bob", &udp)?;
    bob.expect_prefix("ready ", WAIT)?;
    let got = bob.expect_prefix("msg alice ", WAIT)?;
    assert!(got.ends_with(&format!(" {text}")), "{got}");
    let time = sent_time(&got);
    assert_eq!(time.split(':').count(), 3, "{got}");
    alice.expect("delivered", Duration::from_secs(30), |l| {
        l == format!("delivered bob {id}")
    })?;
    bob.send("/quit")?;
    bob.wait_exit(WAIT)?;

    // bob again: nothing is delivered twice.
    let mut bob = verbose("bob", &udp)?;
    bob.expect_prefix("ready ", WAIT)?;
    alice.send("/msg bob are you there?")?;
    let next = bob.expect_prefix("msg alice ", WAIT)?;
    assert!(
        next.ends_with(" are you there?"),
        "the old message came again: {next}"
    );
    Ok(())
}

fn sent_time(line: &str) -> String {
    line.split(' ').nth(2).unwrap_or_default().to_owned()
}

#[test]
fn a_full_mailbox_is_reported_to_the_sender() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server").display().to_string();
    let (_server, udp) = server(&data, "127.0.0.1:0", &["--mailbox-messages", "2"])?;
    register("carol", &udp)?;
    let mut dave = verbose("dave", &udp)?;
    dave.expect_prefix("ready ", WAIT)?;
    for n in 1..=2 {
        dave.send(&format!("/msg carol note {n}"))?;
        dave.expect_prefix("stored carol ", WAIT)?;
    }
    dave.send("/msg carol note 3")?;
    dave.expect("failed", WAIT, |l| l == "failed carol note 3")?;
    dave.expect_stderr("mailbox is full", WAIT)?;

    // carol gets the two that were kept, in order.
    let mut carol = verbose("carol", &udp)?;
    carol.expect_prefix("ready ", WAIT)?;
    let first = carol.expect_prefix("msg dave ", WAIT)?;
    let second = carol.expect_prefix("msg dave ", WAIT)?;
    assert!(
        first.ends_with(" note 1") && second.ends_with(" note 2"),
        "{first} / {second}"
    );
    Ok(())
}

#[test]
fn a_sender_offline_at_delivery_hears_of_it_when_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server").display().to_string();
    let (_server, udp) = server(&data, "127.0.0.1:0", &[])?;
    register("erin", &udp)?;
    let mut frank = verbose("frank", &udp)?;
    frank.expect_prefix("ready ", WAIT)?;
    frank.send("/msg erin read this when you are back")?;
    let sent = frank.expect_prefix("sent erin ", WAIT)?;
    let id = sent.trim_start_matches("sent erin ").to_owned();
    frank.expect("stored", WAIT, |l| l == format!("stored erin {id}"))?;
    frank.send("/quit")?;
    frank.wait_exit(WAIT)?;

    // erin reads it while frank is away...
    let mut erin = verbose("erin", &udp)?;
    erin.expect_prefix("ready ", WAIT)?;
    erin.expect("message", WAIT, |l| {
        l.starts_with("msg frank ") && l.ends_with(" read this when you are back")
    })?;
    // ...and frank, back, is told (with the number it had).
    let mut frank = verbose("frank", &udp)?;
    frank.expect_prefix("ready ", WAIT)?;
    frank.expect("delivered", Duration::from_secs(30), |l| {
        l == format!("delivered erin {id}")
    })?;
    Ok(())
}
