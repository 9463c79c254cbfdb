//! Private network stacks for tests: a network namespace whose kernel drops
//! a share of all UDP datagrams (an nftables rule), so that real processes
//! can be run over real loss. Needs root, `ip` (iproute2) and `nft`
//! (nftables); `scripts/test` installs nftables where it can.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Runs `program` with `args` in the root namespace.
pub(crate) fn run_root(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run(program, args)
}

/// A network namespace, deleted (with everything in it) on drop.
pub struct Namespace {
    name: String,
}

/// Set this to skip tests that need a namespace, where they cannot run.
pub const SKIP_VAR: &str = "PIGEON_SKIP_NETNS";

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Namespace {
    /// Whether namespace tests should be skipped (the variable is set).
    pub fn skipped() -> bool {
        std::env::var_os(SKIP_VAR).is_some()
    }

    /// A fresh namespace with loopback up, named uniquely for this run.
    pub fn fresh() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pigeon-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]).context(
            "creating a network namespace (needs root and iproute2; set PIGEON_SKIP_NETNS=1 to skip)",
        )?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A fresh namespace with loopback up whose kernel drops `percent` of
    /// the UDP datagrams it receives, at random, and counts them.
    pub fn lossy(percent: u32) -> anyhow::Result<Self> {
        let ns = Self::fresh()?;
        let drop_rule = format!(
            "add rule inet pigeon input meta l4proto udp numgen random mod 100 < {percent} counter drop"
        );
        let setup = [
            vec!["nft", "add", "table", "inet", "pigeon"],
            vec![
                "nft",
                "add chain inet pigeon input { type filter hook input priority 0; }",
            ],
            vec!["nft", "add rule inet pigeon input meta l4proto udp counter"],
            vec!["nft", &drop_rule],
        ];
        for args in setup {
            ns.exec(&args).context(
                "setting up the loss rule (needs nftables: scripts/test installs it; \
                 set PIGEON_SKIP_NETNS=1 to skip)",
            )?;
        }
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// UDP datagrams the namespace's kernel received and dropped so far.
    pub fn udp_counts(&self) -> anyhow::Result<(u64, u64)> {
        let rules = self.exec(&["nft", "list", "table", "inet", "pigeon"])?;
        let mut counts = rules.lines().filter_map(|line| {
            let (_, rest) = line.split_once("counter packets ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        });
        match (counts.next(), counts.next()) {
            (Some(total), Some(dropped)) => Ok((total, dropped)),
            _ => bail!("no counters in {rules}"),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace removes its interfaces and rules; the
        // processes in it belong to the test, which kills them first.
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
