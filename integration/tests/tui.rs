//! The terminal UI, driven the way a person uses it: the real `pigeon`
//! binary in a pseudo-terminal, keys typed, the screen read back. Another
//! client (plain mode) writes to it; the message shows up, is answered,
//! and is still there, searchable, after a restart.

use std::time::Duration;

use integration::process::{binary, pigeon, start_server, Proc};
use integration::pty::PtyProc;

const WAIT: Duration = Duration::from_secs(15);

/// A server, and a folder for history files that lives as long as it.
struct Scene {
    _server: Proc,
    udp: String,
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> anyhow::Result<Self> {
        let (server, udp) = start_server()?;
        Ok(Self {
            _server: server,
            udp,
            dir: tempfile::tempdir()?,
        })
    }

    fn history(&self) -> std::path::PathBuf {
        self.dir.path().join("history.sqlite3")
    }

    /// `name` in the terminal UI, with the scene's history file.
    fn ui(&self, name: &str) -> anyhow::Result<PtyProc> {
        let history = self.history();
        ui(name, &self.udp, history.to_str().unwrap_or_default())
    }

    /// `name` in plain mode, logged in.
    fn plain(&self, name: &str) -> anyhow::Result<Proc> {
        let mut proc = pigeon(name, &self.udp)?;
        proc.expect_prefix("ready ", WAIT)?;
        Ok(proc)
    }
}

fn ui(name: &str, server: &str, history: &str) -> anyhow::Result<PtyProc> {
    PtyProc::spawn(
        name,
        &binary("pigeon")?,
        &["--name", name, "--server", server, "--history", history],
        100,
        30,
    )
}

#[test]
fn a_message_from_another_client_shows_on_the_screen() -> anyhow::Result<()> {
    let scene = Scene::new()?;
    let mut alice = scene.ui("alice")?;
    alice.wait_for("logged in as alice", WAIT)?;
    assert!(alice.alternate_screen(), "the UI takes the whole screen");

    let mut bob = scene.plain("bob")?;
    alice.wait_for("bob is online", WAIT)?;

    // A message for a conversation not in view: a tab with an unread
    // count, and a notice.
    bob.send("/msg alice 你好 alice, from the other terminal")?;
    let screen = alice.wait_for("1:bob(1)", WAIT)?;
    assert!(
        screen.contains("bob: 你好 alice, from the other terminal   (1 unread"),
        "{screen}"
    );

    // Opening it shows the message; a reply goes back and is confirmed.
    alice.type_keys("/open bob\r")?;
    alice.wait_for("bob: 你好 alice, from the other terminal", WAIT)?;
    alice.type_keys("hi bob, 收到\r")?;
    let msg = bob.expect_prefix("msg alice ", WAIT)?;
    assert!(msg.ends_with(" hi bob, 收到"), "{msg}");
    alice.wait_for("alice: hi bob, 收到 ✓", WAIT)?;

    // Ctrl-C logs out and gives the terminal back.
    alice.type_keys("\x03")?;
    assert_eq!(alice.wait_exit(WAIT)?, 0);
    assert!(!alice.alternate_screen(), "the terminal is restored");
    bob.expect("alice leaves", WAIT, |l| l == "offline alice")?;

    // The conversation is still there after a restart, and searchable.
    let mut alice = scene.ui("alice")?;
    alice.wait_for("logged in as alice", WAIT)?;
    alice.type_keys("/open bob\r")?;
    let screen = alice.wait_for("hi bob, 收到", WAIT)?;
    assert!(
        screen.contains("bob: 你好 alice, from the other terminal"),
        "{screen}"
    );
    alice.type_keys("/search 收到\r")?;
    let screen = alice.wait_for("1 message contains \"收到\"", WAIT)?;
    assert!(screen.contains("alice → bob: hi bob, 收到"), "{screen}");
    alice.type_keys("/quit\r")?;
    assert_eq!(alice.wait_exit(WAIT)?, 0);
    Ok(())
}

#[test]
fn a_damaged_history_file_is_a_warning_and_the_chat_works() -> anyhow::Result<()> {
    let scene = Scene::new()?;
    std::fs::write(scene.history(), "not a database ".repeat(300))?;
    let mut carol = scene.ui("carol")?;
    let screen = carol.wait_for("logged in as carol", WAIT)?;
    assert!(screen.contains("history off"), "{screen}");
    let mut dave = scene.plain("dave")?;
    carol.wait_for("dave is online", WAIT)?;
    carol.type_keys("/msg dave still chatting\r")?;
    let msg = dave.expect_prefix("msg carol ", WAIT)?;
    assert!(msg.ends_with(" still chatting"), "{msg}");
    carol.type_keys("\x03")?;
    assert_eq!(carol.wait_exit(WAIT)?, 0);
    Ok(())
}

#[test]
fn a_history_file_locked_by_another_program_is_a_warning() -> anyhow::Result<()> {
    let scene = Scene::new()?;
    let mut erin = scene.ui("erin")?;
    erin.wait_for("logged in as erin", WAIT)?;
    // Another program takes the file while erin chats.
    let other = rusqlite::Connection::open(scene.history())?;
    other.execute_batch("BEGIN EXCLUSIVE")?;
    let mut frank = scene.plain("frank")?;
    frank.send("/msg erin are you there?")?;
    let screen = erin.wait_for("history: a message was not saved", WAIT)?;
    assert!(screen.contains("1:frank(1)"), "{screen}");
    // The chat goes on.
    erin.type_keys("/msg frank yes\r")?;
    let msg = frank.expect_prefix("msg erin ", WAIT)?;
    assert!(msg.ends_with(" yes"), "{msg}");
    other.execute_batch("ROLLBACK")?;
    erin.type_keys("\x03")?;
    assert_eq!(erin.wait_exit(WAIT)?, 0);
    Ok(())
}

#[test]
fn a_port_in_use_is_a_clear_error_on_a_restored_terminal() -> anyhow::Result<()> {
    let scene = Scene::new()?;
    let taken = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.to_string();
    let mut ghost = PtyProc::spawn(
        "ghost",
        &binary("pigeon")?,
        &[
            "--name",
            "ghost",
            "--server",
            &scene.udp,
            "--bind",
            &port,
            "--no-history",
        ],
        100,
        30,
    )?;
    assert_eq!(ghost.wait_exit(WAIT)?, 1);
    assert!(!ghost.alternate_screen(), "the terminal is restored");
    let screen = ghost.wait_for("cannot receive on", WAIT)?;
    assert!(screen.contains(&port), "{screen}");
    Ok(())
}

#[test]
fn a_burst_of_typed_text_is_sent_whole() -> anyhow::Result<()> {
    let scene = Scene::new()?;
    let mut gina = scene.ui("gina")?;
    gina.wait_for("logged in as gina", WAIT)?;
    let mut hank = scene.plain("hank")?;
    gina.wait_for("hank is online", WAIT)?;
    // 4 KB typed at once (no bracketed paste: every character is a key).
    let text: String = (0..4096)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let started = std::time::Instant::now();
    gina.type_keys(&format!("/msg hank {text}\r"))?;
    let msg = hank.expect_prefix("msg gina ", WAIT)?;
    eprintln!("burst sent in {:?}", started.elapsed());
    assert!(msg.ends_with(&format!(" {text}")), "{} chars", msg.len());
    gina.type_keys("\x03")?;
    assert_eq!(gina.wait_exit(WAIT)?, 0);
    Ok(())
}

#[test]
fn a_refused_login_leaves_its_reason_readable_after_exit() -> anyhow::Result<()> {
    let scene = Scene::new()?;
    let mut ivy = scene.ui("ivy")?;
    ivy.wait_for("logged in as ivy", WAIT)?;
    let mut again = scene.ui("ivy")?;
    assert_eq!(again.wait_exit(WAIT)?, 2, "refused: exit status 2");
    again.wait_output_done(WAIT)?;
    assert!(!again.alternate_screen(), "the terminal is restored");
    // The shell's prompt goes below the message, not over it.
    let screen = again.shell_prints("$ ");
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let at = lines
        .iter()
        .position(|l| *l == "pigeon: login refused (name-taken): ivy is already online")
        .ok_or_else(|| anyhow::anyhow!("no whole message on the screen:\n{screen}"))?;
    assert_eq!(lines.get(at + 1), Some(&"$"), "{screen}");
    ivy.type_keys("\x03")?;
    assert_eq!(ivy.wait_exit(WAIT)?, 0);
    Ok(())
}

#[test]
fn with_no_server_it_says_so_and_keeps_trying_until_one_answers() -> anyhow::Result<()> {
    // A port with nobody on it, for now.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    let history = dir.path().join("history.sqlite3");
    let mut jade = ui("jade", &server, history.to_str().unwrap_or_default())?;
    let screen = jade.wait_for(&format!("connecting to {server} as jade"), WAIT)?;
    assert!(
        screen.contains(&format!("connecting to {server}…")),
        "{screen}"
    );
    let screen = jade.wait_for(
        &format!("connecting to {server} (attempt 3) — is a server running? Start one with --host"),
        WAIT,
    )?;
    assert!(screen.contains("yet; still trying"), "{screen}");
    // Past the eight attempts a script gets (13.5 s), it is still trying;
    // a server coming up is found.
    jade.wait_for("(attempt 9)", Duration::from_secs(20))?;
    let mut started =
        integration::process::Proc::spawn("server", "pigeon-server", &["--udp", &server], "info")?;
    started.expect_prefix("listening ", WAIT)?;
    let screen = jade.wait_for("logged in as jade", WAIT)?;
    assert!(!screen.contains("(attempt"), "the notice went: {screen}");
    jade.type_keys("\x03")?;
    assert_eq!(jade.wait_exit(WAIT)?, 0);
    Ok(())
}
