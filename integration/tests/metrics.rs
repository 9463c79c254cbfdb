//! `pigeon-server --metrics`: what an operator's Prometheus reads, after
//! real traffic, refusals and junk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use integration::harness::{eventually, local_server_config, TestClient};
use integration::process::{Proc, CONFIG_HOME_VARIABLE};
use pigeon_server::ServerHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The answer to `request` sent to `addr`: status line, and body.
async fn http(addr: SocketAddr, request: &str) -> anyhow::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no head in {answer:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// The samples of a scrape: `name{labels}` → value.
async fn scrape(addr: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: pigeon\r\n\r\n").await?;
    anyhow::ensure!(status == "HTTP/1.1 200 OK", "{status}");
    anyhow::ensure!(body.ends_with("# EOF\n"), "{body}");
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn wide(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[actix_rt::test]
async fn the_metrics_count_what_happened() -> anyhow::Result<()> {
    let mut config = local_server_config();
    config.metrics = Some("127.0.0.1:0".parse()?);
    let server = ServerHandle::start(config).await?;
    let addr = server.udp_addr();
    let metrics = server
        .metrics_addr()
        .ok_or_else(|| anyhow::anyhow!("no metrics"))?;

    let start = scrape(metrics).await?;
    assert_eq!(start.get("pigeon_users_online"), Some(&0.0));
    assert_eq!(
        start.get("pigeon_logins_total{result=\"joined\"}"),
        Some(&0.0)
    );

    let mut alice = TestClient::online("alice", addr).await?;
    let _bob = TestClient::online("bob", addr).await?;
    alice.sees_online("bob").await?;
    // A second alice (another key: alice's name is registered to hers) is
    // refused; junk and an unpadded Pigeon login too.
    let mut impostor = TestClient::start("alice", addr)?;
    let _ = impostor.ready().await;
    let junk = UdpSocket::bind("127.0.0.1:0").await?;
    for i in 0..5 {
        junk.send_to(&wide(&format!("hello {i}")), addr).await?;
    }
    let me = junk.local_addr()?;
    junk.send_to(
        &wide(&format!("login,x,{me},pigeon1;iid=0000000000000001")),
        addr,
    )
    .await?;
    eventually("the junk counted", || {
        server
            .stats()
            .undecodable
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
            >= 5
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let m = scrape(metrics).await?;
    let get = |key: &str| m.get(key).copied().unwrap_or(-1.0);
    assert_eq!(get("pigeon_users_online"), 2.0);
    assert_eq!(get("pigeon_logins_total{result=\"joined\"}"), 2.0);
    assert_eq!(
        get("pigeon_logins_refused_total{reason=\"name-registered\"}"),
        1.0
    );
    assert_eq!(
        get("pigeon_logins_refused_total{reason=\"short-login\"}"),
        1.0
    );
    assert_eq!(
        get("pigeon_datagrams_undecodable_total{error=\"unknown-verb\"}"),
        5.0
    );
    assert!(get("pigeon_datagrams_received_total") >= 9.0, "{m:?}");
    assert!(get("pigeon_datagrams_sent_total") >= 3.0, "{m:?}");
    assert_eq!(get("pigeon_tcp_rosters_served_total"), 2.0);
    // One client logs out: counted, and gone from the online count.
    alice.handle.logout();
    eventually("alice gone", || server.online_count() == 1).await?;
    let m = scrape(metrics).await?;
    assert_eq!(
        m.get("pigeon_users_left_total{reason=\"logged-out\"}"),
        Some(&1.0)
    );
    assert_eq!(m.get("pigeon_users_online"), Some(&1.0));

    // Anything else is answered plainly and closed.
    let (status, _) = http(metrics, "GET / HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(metrics, "POST /metrics HTTP/1.1\r\n\r\n").await?;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, _) = http(metrics, "\u{1}\u{2} nonsense\r\n\r\n").await?;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    Ok(())
}

#[test]
fn the_metrics_address_is_announced_and_a_taken_port_is_a_clear_error() -> anyhow::Result<()> {
    let mut server = Proc::spawn(
        "server",
        "pigeon-server",
        &["--udp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        "info",
    )?;
    let line = server.expect_prefix("listening ", Duration::from_secs(15))?;
    let metrics = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("metrics="))
        .ok_or_else(|| anyhow::anyhow!("no metrics= in {line:?}"))?;
    // The port is in use now: a second server cannot take it.
    let mut command = std::process::Command::new(integration::process::binary("pigeon-server")?);
    command
        .args(["--udp", "127.0.0.1:0", "--metrics", metrics])
        .env(CONFIG_HOME_VARIABLE, integration::process::no_config_home());
    let output = command.output()?;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains(&format!("cannot listen on TCP {metrics}")) && error.contains("in use"),
        "{error}"
    );
    Ok(())
}
