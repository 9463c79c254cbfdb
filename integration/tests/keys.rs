//! Names belong to keys, with the real binaries: a server with its own
//! data folder, `pigeon` clients with their key files. A second key and a
//! seed-style login are refused under a registered name; the operator frees
//! it with `--forget`; a restarted server keeps its key, and a server
//! showing another key at a pinned address is not logged in to.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use integration::process::{binary, udp_of, Proc};
use integration::seed::{decode_unicode, encode_unicode};

const WAIT: Duration = Duration::from_secs(15);

/// `pigeon-server --udp ADDR --data DIR`.
fn start_server_on(data: &str, udp: &str) -> anyhow::Result<(Proc, String)> {
    let mut server = Proc::spawn(
        "server",
        "pigeon-server",
        &["--udp", udp, "--data", data],
        "info",
    )?;
    let line = server.expect_prefix("listening ", WAIT)?;
    Ok((server, udp_of(&line)?))
}

/// `pigeon --name NAME --server SERVER --identity KEY`, in plain mode.
fn pigeon_with_key(name: &str, server: &str, key: &str) -> anyhow::Result<Proc> {
    Proc::spawn(
        name,
        "pigeon",
        &["--name", name, "--server", server, "--identity", key],
        "warn",
    )
}

/// Sends a seed-style login for `name` and returns the server's answer.
fn seed_login(name: &str, server: &str) -> anyhow::Result<String> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(WAIT))?;
    let endpoint = receiver.local_addr()?;
    let server: SocketAddr = server.parse()?;
    receiver.send_to(&encode_unicode(&format!("login,{name},{endpoint}")), server)?;
    let mut buf = [0u8; 2048];
    let (len, _) = receiver.recv_from(&mut buf)?;
    Ok(decode_unicode(buf.get(..len).unwrap_or_default()))
}

fn exits_with(proc: &mut Proc, code: i32) -> anyhow::Result<()> {
    let status = proc.wait_exit(WAIT)?;
    anyhow::ensure!(
        status.code() == Some(code),
        "{} exited {status:?}, not {code}",
        proc.label
    );
    Ok(())
}

#[test]
fn a_name_stays_with_its_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server").display().to_string();
    let first_key = dir.path().join("first.key").display().to_string();
    let second_key = dir.path().join("second.key").display().to_string();

    let (mut server, udp) = start_server_on(&data, "127.0.0.1:0")?;
    let mut owner = pigeon_with_key("dana", &udp, &first_key)?;
    owner.expect_prefix("ready ", WAIT)?;
    let made = owner.expect_stderr("made a key for dana", WAIT)?;
    assert!(made.contains("fingerprint"), "{made}");

    // Online or not, the name is dana's key's: another key is refused,
    // and so is a seed-era client.
    let mut thief = pigeon_with_key("dana", &udp, &second_key)?;
    thief.expect("refusal", WAIT, |l| l == "refused name-registered")?;
    exits_with(&mut thief, 2)?;
    owner.send("/quit")?;
    exits_with(&mut owner, 0)?;
    let mut thief = pigeon_with_key("dana", &udp, &second_key)?;
    thief.expect("refusal", WAIT, |l| l == "refused name-registered")?;
    exits_with(&mut thief, 2)?;
    let answer = seed_login("dana", &udp)?;
    assert!(
        answer.starts_with("refused,name-registered"),
        "a seed-style login under a registered name got {answer:?}"
    );
    // The owner still gets in.
    let mut owner = pigeon_with_key("dana", &udp, &first_key)?;
    owner.expect_prefix("ready ", WAIT)?;
    owner.send("/quit")?;
    exits_with(&mut owner, 0)?;
    server.signal(libc::SIGTERM)?;
    server.wait_exit(WAIT)?;

    // The operator frees the name; the next key to log in takes it.
    let out = Command::new(binary("pigeon-server")?)
        .args(["--data", &data, "--forget", "dana"])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("forgot dana: it was registered to the key "),
        "{said}"
    );

    // Restarted on the same folder and port: the same server key, so the
    // clients that pinned it log in without a word.
    let (mut server, again) = start_server_on(&data, &udp)?;
    assert_eq!(again, udp);
    let mut taker = pigeon_with_key("dana", &udp, &second_key)?;
    taker.expect_prefix("ready ", WAIT)?;
    let mut owner = pigeon_with_key("dana", &udp, &first_key)?;
    owner.expect("refusal", WAIT, |l| l == "refused name-registered")?;
    exits_with(&mut owner, 2)?;
    taker.send("/quit")?;
    exits_with(&mut taker, 0)?;
    server.signal(libc::SIGTERM)?;
    server.wait_exit(WAIT)?;

    // Another server at the same address (a key of its own): refused.
    let mut other = Proc::spawn(
        "other server",
        "pigeon-server",
        &["--udp", &udp, "--ephemeral"],
        "info",
    )?;
    other.expect_prefix("listening ", WAIT)?;
    let mut fooled = pigeon_with_key("dana", &udp, &second_key)?;
    fooled.expect("refusal", WAIT, |l| l == "refused server-key-changed")?;
    exits_with(&mut fooled, 2)?;
    Ok(())
}

#[test]
fn a_changed_key_is_told_and_blocks_sending_until_trusted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("server").display().to_string();
    let first_key = dir.path().join("erin-1.key").display().to_string();
    let second_key = dir.path().join("erin-2.key").display().to_string();
    let frank_first = dir.path().join("frank-1.key").display().to_string();
    let frank_second = dir.path().join("frank-2.key").display().to_string();

    let (mut server, udp) = start_server_on(&data, "127.0.0.1:0")?;
    let mut alice = integration::process::pigeon("alice", &udp)?;
    alice.expect_prefix("ready ", WAIT)?;
    let mut erin = pigeon_with_key("erin", &udp, &first_key)?;
    erin.expect_prefix("ready ", WAIT)?;
    alice.expect_prefix("online erin ", WAIT)?;
    alice.send("/whois erin")?;
    let first = alice.expect_prefix("key erin ", WAIT)?;
    alice.send("/msg erin before")?;
    erin.expect("message", WAIT, |l| {
        l.starts_with("msg alice ") && l.ends_with(" before")
    })?;
    erin.send("/quit")?;
    exits_with(&mut erin, 0)?;
    // frank is only seen online: alice never writes to him.
    let mut frank = pigeon_with_key("frank", &udp, &frank_first)?;
    frank.expect_prefix("ready ", WAIT)?;
    alice.expect_prefix("online frank ", WAIT)?;
    frank.send("/quit")?;
    exits_with(&mut frank, 0)?;

    // erin's and frank's keys are lost; the operator frees the names, and
    // erin comes back with a new key.
    server.signal(libc::SIGTERM)?;
    server.wait_exit(WAIT)?;
    for name in ["erin", "frank"] {
        let out = Command::new(binary("pigeon-server")?)
            .args(["--data", &data, "--forget", name])
            .output()?;
        assert!(out.status.success(), "{out:?}");
    }
    let (_server, _) = start_server_on(&data, &udp)?;
    let mut erin = pigeon_with_key("erin", &udp, &second_key)?;
    erin.expect_prefix("ready ", WAIT)?;

    // alice, back online by herself, is told loudly...
    let line = alice.expect_prefix("key-changed erin ", Duration::from_secs(30))?;
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 4, "{line}");
    assert_eq!(words[2], first.trim_start_matches("key erin "), "{line}");
    assert_ne!(words[2], words[3]);
    alice.send("/whois erin")?;
    alice.expect("new fingerprint", WAIT, |l| {
        l == format!("key erin {}", words[3])
    })?;
    // ...and nothing goes to erin until she trusts the new key.
    alice.send("/msg erin are you really erin?")?;
    alice.expect_stderr("/trust erin", WAIT)?;
    alice.send("/trust erin")?;
    alice.expect_stderr("new key is trusted", WAIT)?;
    alice.send("/msg erin after")?;
    let got = erin.expect_prefix("msg alice ", WAIT)?;
    assert!(
        got.ends_with(" after"),
        "{got}: the blocked message went out"
    );
    // Her own key, with /whois alone.
    alice.send("/whois")?;
    alice.expect_prefix("key alice ", WAIT)?;

    // A key only ever seen is pinned too: someone else under frank's
    // freed name is told, and not written to.
    let mut impostor = pigeon_with_key("frank", &udp, &frank_second)?;
    impostor.expect_prefix("ready ", WAIT)?;
    alice.expect_prefix("key-changed frank ", WAIT)?;
    alice.send("/msg frank hello?")?;
    alice.expect_stderr("/trust frank", WAIT)?;
    Ok(())
}
