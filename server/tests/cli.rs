//! The `pigeon-server` binary's command line: the ready line, a port in
//! use, bad arguments.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};

/// The server binary, keeping nothing on disk.
fn server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pigeon-server"));
    command.arg("--ephemeral");
    command
}

#[test]
fn prints_one_listening_line_with_the_real_ports() {
    let mut child = server()
        .args(["--udp", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.trim_end();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "listening", "{line}");
    let udp = fields[1].strip_prefix("udp=127.0.0.1:").unwrap();
    let tcp = fields[2].strip_prefix("tcp=127.0.0.1:").unwrap();
    assert_ne!(udp.parse::<u16>().unwrap(), 0);
    assert_ne!(tcp.parse::<u16>().unwrap(), 0);
    assert_eq!(fields.len(), 3);
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = server().args(["--udp", &addr]).output().unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on UDP {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let output = server().args(["--udp", "not-an-address"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--udp"), "{stderr}");
}
