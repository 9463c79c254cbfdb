//! Driving a terminal program the way a person does: the real binary in a
//! pseudo-terminal, keys typed into it, and its screen read back through a
//! terminal emulator (vt100), as text.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

/// A program running in a pseudo-terminal.
pub struct PtyProc {
    label: String,
    child: Box<dyn Child + Send + Sync>,
    // Kept open: closing the master hangs the program up.
    _master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Set once everything the program wrote has been read.
    closed: Arc<AtomicBool>,
}

impl PtyProc {
    /// Starts `program` with `args` in a `cols` × `rows` terminal.
    pub fn spawn(
        label: &str,
        program: &Path,
        args: &[&str],
        cols: u16,
        rows: u16,
    ) -> anyhow::Result<Self> {
        let (Some(nz_rows), Some(nz_cols)) = (
            std::num::NonZeroU16::new(rows),
            std::num::NonZeroU16::new(cols),
        ) else {
            bail!("{label}: a terminal needs at least one row and one column");
        };
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .context("opening a pseudo-terminal")?;
        let mut command = CommandBuilder::new(program);
        command.args(args);
        command.env("TERM", "xterm-256color");
        command.env(
            crate::process::DATA_HOME_VARIABLE,
            crate::process::test_data_home(),
        );
        command.env(
            crate::process::CONFIG_HOME_VARIABLE,
            crate::process::no_config_home(),
        );
        let child = pair
            .slave
            .spawn_command(command)
            .with_context(|| format!("starting {label}"))?;
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader()?;
        let writer = pair.master.take_writer()?;
        let screen = Arc::new(Mutex::new(vt100::Parser::new(nz_rows, nz_cols, 0)));
        let feed = screen.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let eof = closed.clone();
        std::thread::Builder::new()
            .name(format!("{label}-pty"))
            .spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let (Ok(mut parser), Some(bytes)) = (feed.lock(), buf.get(..n)) {
                        parser.process(bytes);
                    }
                }
                eof.store(true, Ordering::SeqCst);
            })?;
        Ok(Self {
            label: label.to_owned(),
            child,
            _master: pair.master,
            writer,
            screen,
            closed,
        })
    }

    /// The screen now, one line per row.
    pub fn screen(&self) -> String {
        self.screen
            .lock()
            .map(|parser| parser.screen().contents())
            .unwrap_or_default()
    }

    /// Whether the program is showing the alternate screen (full-screen
    /// programs do; the shell's screen comes back when they end).
    pub fn alternate_screen(&self) -> bool {
        self.screen
            .lock()
            .map(|parser| parser.screen().alternate_screen())
            .unwrap_or(false)
    }

    /// Waits until the screen contains `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str, wait: Duration) -> anyhow::Result<String> {
        self.wait_until(needle, wait, |screen| screen.contains(needle))
    }

    /// Waits until `done` holds for the screen; returns the screen.
    pub fn wait_until(
        &self,
        what: &str,
        wait: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + wait;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: no {what:?} on the screen within {wait:?}; the screen:\n{screen}",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys` (text, or escape sequences such as `"\r"` for Enter,
    /// `"\x1b"` for Esc, `"\x03"` for Ctrl-C).
    pub fn type_keys(&mut self, keys: &str) -> anyhow::Result<()> {
        self.writer.write_all(keys.as_bytes())?;
        self.writer.flush()?;
        Ok(())
    }

    /// Waits for the program to end; its exit code.
    pub fn wait_exit(&mut self, wait: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.exit_code());
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {wait:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until everything the program wrote (it has ended) is on the
    /// screen.
    pub fn wait_output_done(&self, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        while !self.closed.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                bail!(
                    "{}: its terminal was not closed within {wait:?}",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Writes `text` where the cursor is, as a shell does with its prompt
    /// when a program ends; the screen after it.
    pub fn shell_prints(&self, text: &str) -> String {
        match self.screen.lock() {
            Ok(mut parser) => {
                parser.process(text.as_bytes());
                parser.screen().contents()
            }
            Err(_) => String::new(),
        }
    }

    /// The program's process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .process_id()
            .ok_or_else(|| anyhow!("{} has no process id", self.label))
    }
}

impl Drop for PtyProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
