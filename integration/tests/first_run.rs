//! What a new user meets first, with the real binaries: versions, help
//! that says what really happens, wrong arguments answered in plain words,
//! server addresses written as people write them, and the config file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use integration::process::{binary, no_config_home, start_server, Proc, CONFIG_HOME_VARIABLE};

const WAIT: Duration = Duration::from_secs(15);

/// Runs `name` with `args` to the end, with no config file unless
/// `config_home` names a folder to use.
fn run(name: &str, args: &[&str], config_home: Option<&Path>) -> anyhow::Result<Output> {
    let home = config_home.map_or_else(no_config_home, Path::to_path_buf);
    Ok(Command::new(binary(name)?)
        .args(args)
        .env(CONFIG_HOME_VARIABLE, home)
        .stdin(std::process::Stdio::null())
        .output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `pigeon` in plain mode with `args`, with `config_home` as its config
/// folder.
fn pigeon_with(label: &str, args: &[&str], config_home: &Path) -> anyhow::Result<Proc> {
    let mut command = Command::new(binary("pigeon")?);
    command.args(args).env(CONFIG_HOME_VARIABLE, config_home);
    Proc::start(label, command, "warn")
}

#[test]
fn both_binaries_say_their_version() -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    for name in ["pigeon", "pigeon-server"] {
        let output = run(name, &["--version"], None)?;
        assert!(output.status.success(), "{name}: {output:?}");
        assert_eq!(stdout(&output), format!("{name} {version}\n"));
    }
    Ok(())
}

#[test]
fn help_says_what_really_happens() -> anyhow::Result<()> {
    let server = stdout(&run("pigeon-server", &["--help"], None)?);
    assert!(
        server.contains("every sixth of it"),
        "the keepalive interval: {server}"
    );
    assert!(!server.contains("four times"), "{server}");
    let client = stdout(&run("pigeon", &["--help"], None)?);
    assert!(
        client.contains("shown on the status tab, or on stderr in plain mode"),
        "where --host shows its address: {client}"
    );
    for flag in ["--config", "--write-config", "--bell", "--version"] {
        assert!(client.contains(flag), "{flag} in: {client}");
    }
    Ok(())
}

#[test]
fn wrong_arguments_get_plain_answers() -> anyhow::Result<()> {
    // A name's bad character, counted as a person counts.
    let output = run("pigeon", &["--plain", "--name", "b,ob"], None)?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("a name cannot contain ',' (at position 2)"),
        "{}",
        stderr(&output)
    );

    // A port in use: the cause, once.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.to_string();
    let output = run(
        "pigeon",
        &["--plain", "--name", "bob", "--bind", &port],
        None,
    )?;
    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains(&format!("cannot receive on {port}")),
        "{error}"
    );
    assert_eq!(error.matches("in use").count(), 1, "{error}");

    // No name anywhere: say where one can go.
    let output = run("pigeon", &["--plain"], None)?;
    assert_eq!(output.status.code(), Some(2));
    let error = stderr(&output);
    assert!(
        error.contains("--name NAME") && error.contains("config.toml"),
        "{error}"
    );

    // A server address that is not one.
    let output = run(
        "pigeon",
        &["--plain", "--name", "bob", "--server", "localhost:http"],
        None,
    )?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a port number"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn a_host_name_reaches_the_server() -> anyhow::Result<()> {
    let (_server, udp) = start_server()?;
    let port = udp.rsplit(':').next().unwrap_or_default();
    let mut bob = Proc::spawn(
        "bob",
        "pigeon",
        &["--name", "bob", "--server", &format!("localhost:{port}")],
        "warn",
    )?;
    let ready = bob.expect_prefix("ready ", WAIT)?;
    assert!(ready.ends_with(" 1"), "{ready}");
    bob.send("/quit")?;
    assert_eq!(bob.wait_exit(WAIT)?.code(), Some(0));
    Ok(())
}

#[test]
fn the_config_file_saves_retyping() -> anyhow::Result<()> {
    let (_server, udp) = start_server()?;
    let home = tempfile::tempdir()?;
    let history = home.path().join("h.sqlite3");

    // --write-config keeps the flags given, and exits.
    let output = run(
        "pigeon",
        &[
            "--name",
            "carol",
            "--server",
            &udp,
            "--history",
            history.to_str().unwrap_or_default(),
            "--bell",
            "on",
            "--write-config",
        ],
        Some(home.path()),
    )?;
    assert!(output.status.success(), "{output:?}");
    let path = home.path().join("pigeon").join("config.toml");
    assert_eq!(stdout(&output), format!("wrote {}\n", path.display()));
    let written = std::fs::read_to_string(&path)?;
    assert!(written.contains("name = \"carol\""), "{written}");
    assert!(
        written.contains(&format!("server = \"{udp}\"")),
        "{written}"
    );
    assert!(written.contains("bell = true"), "{written}");

    // Later runs need no flags.
    let mut carol = pigeon_with("carol", &[], home.path())?;
    carol.expect_prefix("ready ", WAIT)?;

    // Flags win over the file; writing again keeps what it does not change.
    let mut dave = pigeon_with("dave", &["--name", "dave"], home.path())?;
    dave.expect_prefix("ready ", WAIT)?;
    dave.expect("carol online", WAIT, |l| l.starts_with("online carol "))?;
    let output = run(
        "pigeon",
        &["--bell", "off", "--write-config"],
        Some(home.path()),
    )?;
    assert!(output.status.success(), "{output:?}");
    let written = std::fs::read_to_string(&path)?;
    assert!(written.contains("name = \"carol\""), "{written}");
    assert!(written.contains("bell = false"), "{written}");

    // A mistake in the file is an error naming its line.
    std::fs::write(&path, "name = \"erin\"\n\nserevr = \"127.0.0.1:7788\"\n")?;
    let output = run("pigeon", &["--plain"], Some(home.path()))?;
    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains(&format!(
            "{}, line 3: unknown field `serevr`",
            path.display()
        )),
        "{error}"
    );
    std::fs::write(&path, "name = \"erin\"\nserver = \"127.0.0.1:99999\"\n")?;
    let error = stderr(&run("pigeon", &["--plain"], Some(home.path()))?);
    assert!(error.contains("line 2: server: "), "{error}");

    // --config names another file, which must exist.
    let other = home.path().join("other.toml");
    let output = run(
        "pigeon",
        &["--plain", "--config", other.to_str().unwrap_or_default()],
        None,
    )?;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn plain_mode_with_no_server_says_so_then_exits_as_documented() -> anyhow::Result<()> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = format!("127.0.0.1:{port}");
    let mut kim = Proc::spawn(
        "kim",
        "pigeon",
        &["--name", "kim", "--server", &server],
        "warn",
    )?;
    kim.expect_stderr(
        &format!("no answer from the server; trying {server} again (is a server running there?"),
        WAIT,
    )?;
    // Eight attempts over 13.5 s, then exit status 1.
    let status = kim.wait_exit(Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(1));
    kim.expect_stderr("gave up after 8 login attempts", WAIT)?;
    Ok(())
}
