//! The `pigeon` binary's command line: argument errors and a server that
//! cannot be reached.

use std::net::UdpSocket;
use std::process::Command;

/// The client binary, its data (keys, pinned server keys) in a folder of
/// this test process's own.
fn pigeon() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pigeon"));
    command.env(
        "XDG_DATA_HOME",
        std::env::temp_dir().join(format!("pigeon-client-tests-{}", std::process::id())),
    );
    command
}

#[test]
fn a_bad_name_is_refused_before_anything_is_sent() {
    let output = pigeon().args(["--name", "a,b"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot contain ','"), "{stderr}");
}

#[test]
fn a_name_is_required() {
    let output = pigeon().output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--name"));
}

#[test]
fn hosting_on_a_port_in_use_is_a_clear_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = pigeon()
        .args(["--host", "--name", "alice", "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on UDP {addr}")),
        "{stderr}"
    );
}
