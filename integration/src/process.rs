//! Driving the real `pigeon` and `pigeon-server` binaries: spawn them with
//! piped stdio, read their output line by line with timeouts, and make sure
//! they are gone when a test ends, passed or failed.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Where cargo put the workspace's binaries for this test run: the test
/// executable lives in `target/<profile>/deps/`, the binaries one level up.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow!("no target directory above {}", exe.display()))?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!(
            "{} is not built; `cargo test --workspace` builds it (or run `cargo build --workspace` first)",
            path.display()
        );
    }
    Ok(path)
}

/// The variable that says where per-user config files are (Linux).
pub const CONFIG_HOME_VARIABLE: &str = "XDG_CONFIG_HOME";

/// A config folder with no Pigeon config in it: the binaries under test
/// get this one unless a test gives its own, so that a config file of the
/// person running the tests changes nothing.
pub fn no_config_home() -> PathBuf {
    std::env::temp_dir().join("pigeon-tests-no-config")
}

/// The variable that says where per-user data is (Linux): keys, pinned
/// server keys, history, a server's store.
pub const DATA_HOME_VARIABLE: &str = "XDG_DATA_HOME";

/// The data folder the binaries under test get unless a test gives its
/// own: one per test process, so that the data of the person running the
/// tests is never touched, and the processes of one test binary share
/// keys (a name has one key), and servers one store (one server key).
pub fn test_data_home() -> PathBuf {
    std::env::temp_dir().join(format!("pigeon-tests-data-{}", std::process::id()))
}

/// Starts a `pigeon-server` on free loopback ports; the server and its UDP
/// address (`IP:PORT`).
pub fn start_server() -> anyhow::Result<(Proc, String)> {
    let mut server = Proc::spawn("server", "pigeon-server", &["--udp", "127.0.0.1:0"], "info")?;
    let line = server.expect_prefix("listening ", Duration::from_secs(15))?;
    if !line.contains(" tcp=127.0.0.1:") {
        bail!("no tcp= in {line:?}");
    }
    Ok((server, udp_of(&line)?))
}

/// The UDP address in the server's `listening udp=IP:PORT tcp=IP:PORT`.
pub fn udp_of(line: &str) -> anyhow::Result<String> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("udp="))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no udp= in {line:?}"))
}

/// `pigeon --name NAME --server SERVER`, in plain mode (its stdio are
/// pipes), logging warnings.
pub fn pigeon(name: &str, server: &str) -> anyhow::Result<Proc> {
    Proc::spawn(
        name,
        "pigeon",
        &["--name", name, "--server", server],
        "warn",
    )
}

/// A running binary with its output collected.
pub struct Proc {
    pub label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    stderr_seen: Vec<String>,
}

impl Proc {
    /// Starts binary `name` with `args`, `RUST_LOG` from `log`.
    pub fn spawn(label: &str, name: &str, args: &[&str], log: &str) -> anyhow::Result<Self> {
        let mut command = Command::new(binary(name)?);
        command.args(args);
        Self::start(label, command, log)
    }

    /// Starts `command` with piped stdio, `RUST_LOG` from `log`.
    pub fn start(label: &str, mut command: Command, log: &str) -> anyhow::Result<Self> {
        if !command
            .get_envs()
            .any(|(key, _)| key == CONFIG_HOME_VARIABLE)
        {
            command.env(CONFIG_HOME_VARIABLE, no_config_home());
        }
        if !command.get_envs().any(|(key, _)| key == DATA_HOME_VARIABLE) {
            command.env(DATA_HOME_VARIABLE, test_data_home());
        }
        let mut child = command
            .env("RUST_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}: {command:?}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        Ok(Self {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout: lines_of(stdout),
            stderr: lines_of(stderr),
            seen: Vec::new(),
            stderr_seen: Vec::new(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next stdout line that `pred` accepts; lines before it
    /// are kept in `seen`.
    pub fn expect(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(e) => {
                    let stderr = self.stderr_lines().to_vec();
                    let why = match e {
                        RecvTimeoutError::Timeout => format!("no {what} within {wait:?}"),
                        RecvTimeoutError::Disconnected => format!("output ended before {what}"),
                    };
                    bail!(
                        "{}: {why}; stdout so far: {:?}; stderr: {:?}",
                        self.label,
                        self.seen,
                        stderr
                    )
                }
            }
        }
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn expect_prefix(&mut self, prefix: &str, wait: Duration) -> anyhow::Result<String> {
        self.expect(&format!("line starting {prefix:?}"), wait, |l| {
            l.starts_with(prefix)
        })
    }

    /// Writes one line to stdin.
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, wait: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{}: still running after {wait:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&mut self) -> &[String] {
        self.stderr_seen.extend(self.stderr.try_iter());
        &self.stderr_seen
    }

    /// Waits for a stderr line containing `needle`.
    pub fn expect_stderr(&mut self, needle: &str, wait: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + wait;
        if let Some(line) = self.stderr_lines().iter().find(|l| l.contains(needle)) {
            return Ok(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "{}: no stderr line with {needle:?} within {wait:?}; stderr: {:?}",
                    self.label,
                    self.stderr_seen
                ),
            }
        }
    }

    /// Lines on stdout not yet read, without waiting.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.stdout.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}
