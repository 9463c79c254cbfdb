//! The README's commands, checked against the workspace: the quick start is
//! one command for a chat and one for the tests, the chat command builds
//! every program the README then runs, and commands spell the programs
//! the same way everywhere.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn readme() -> anyhow::Result<String> {
    std::fs::read_to_string(workspace().join("README.md")).context("reading README.md")
}

/// The fenced code blocks of `text` tagged `tag`, each as its lines.
fn blocks<'a>(text: &'a str, tag: &str) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    // Inside a block: `Some(lines)` for one tagged `tag`, `None` for another.
    let mut inside: Option<Option<Vec<&str>>> = None;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut inside, fence) {
            (None, Some(info)) => inside = Some((info.trim() == tag).then(Vec::new)),
            (Some(block), Some(_)) => {
                found.extend(block.take());
                inside = None;
            }
            (Some(Some(lines)), None) => lines.push(line),
            (Some(None), None) | (None, None) => {}
        }
    }
    found
}

/// The binaries `cargo build --release` builds: those of the workspace's
/// default members.
fn built_binaries() -> anyhow::Result<BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(workspace())
        .output()?;
    if !output.status.success() {
        bail!(
            "cargo metadata: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let defaults: BTreeSet<&str> = metadata["workspace_default_members"]
        .as_array()
        .ok_or_else(|| anyhow!("no workspace_default_members"))?
        .iter()
        .filter_map(|id| id.as_str())
        .collect();
    let mut binaries = BTreeSet::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if !package["id"]
            .as_str()
            .is_some_and(|id| defaults.contains(id))
        {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
            if let (true, Some(name)) = (is_bin, target["name"].as_str()) {
                binaries.insert(name.to_owned());
            }
        }
    }
    Ok(binaries)
}

#[test]
fn the_quick_start_is_one_command_to_chat_and_one_to_test() -> anyhow::Result<()> {
    let readme = readme()?;
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .ok_or_else(|| anyhow!("no Quick start section"))?;
    let block = blocks(quick, "sh")
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no sh block in the Quick start"))?;
    let commands: Vec<&str> = block
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands[0].starts_with("cargo build --release && target/release/pigeon "),
        "the chat command builds everything first: {:?}",
        commands[0]
    );
    assert!(commands[0].contains("--host"), "{:?}", commands[0]);
    assert_eq!(commands[1], "scripts/test");
    Ok(())
}

#[test]
fn every_program_the_readme_runs_is_built_by_the_quick_start() -> anyhow::Result<()> {
    let readme = readme()?;
    let built = built_binaries()?;
    for required in ["pigeon", "pigeon-server", "pigeon-load"] {
        assert!(built.contains(required), "{required} in {built:?}");
    }
    let mut named = BTreeSet::new();
    for piece in readme.split("target/release/").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        // An empty name is the folder itself.
        if !name.is_empty() {
            named.insert(name);
        }
    }
    assert!(named.contains("pigeon-server"), "{named:?}");
    for name in &named {
        assert!(
            built.contains(name),
            "the README runs target/release/{name}, which `cargo build --release` does not build ({built:?})"
        );
    }
    // Shell and console examples run the programs from where the build
    // put them, or through cargo; never under another spelling.
    for tag in ["sh", "console"] {
        for block in blocks(&readme, tag) {
            for line in block {
                let command = line.trim().trim_start_matches("$ ");
                let first = command.split_whitespace().next().unwrap_or_default();
                assert!(
                    !built.contains(first),
                    "`{command}` in a {tag} block: run it as target/release/{first}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_config_example_is_a_valid_config() -> anyhow::Result<()> {
    let readme = readme()?;
    let examples = blocks(&readme, "toml");
    assert!(!examples.is_empty(), "no toml example in the README");
    for example in examples {
        let text = example.join("\n");
        let choices = pigeon_client::settings::parse_config(&text)
            .map_err(|(at, why)| anyhow!("{why} at {at:?} in:\n{text}"))?;
        assert!(choices.name.is_some(), "{text}");
        assert!(choices.server.is_some(), "{text}");
    }
    Ok(())
}
