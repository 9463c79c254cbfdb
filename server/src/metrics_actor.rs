//! `MetricsActor`: serves the server's metrics ([`crate::metrics`]) over
//! HTTP, `GET /metrics`, on the address `pigeon-server --metrics` names,
//! and samples the datagram counters once a second for the rates. Each
//! connection gets one answer and is closed, under a deadline, at most
//! [`MAX_CONNECTIONS`] at once: a scraper is expected, not a crowd.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use pigeon_shared::LogLimit;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::metrics::{render, ServerMetrics};

/// Connections answered at once; the rest wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// Time a connection has to send its request and take the answer.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// The largest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How often the datagram counters are sampled for the rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The content type of OpenMetrics text, which Prometheus reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics actor. See the module documentation.
pub struct MetricsActor {
    listener: Option<TcpListener>,
    metrics: ServerMetrics,
}

/// Stop serving and close the listener.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopMetrics;

impl MetricsActor {
    /// Serves `metrics` on `listener`.
    pub fn new(listener: TcpListener, metrics: ServerMetrics) -> Self {
        Self {
            listener: Some(listener),
            metrics,
        }
    }
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.sample(Instant::now());
        ctx.run_interval(SAMPLE_EVERY, |actor, _| {
            actor.metrics.sample(Instant::now())
        });
        if let Some(listener) = self.listener.take() {
            let registry = Arc::new(self.metrics.registry());
            ctx.spawn(accept_loop(listener, registry).into_actor(self));
        }
    }
}

impl Handler<StopMetrics> for MetricsActor {
    type Result = ();

    fn handle(&mut self, _: StopMetrics, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut error_log = LogLimit::default();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let registry = registry.clone();
                actix_rt::spawn(async move {
                    match tokio::time::timeout(DEADLINE, answer(stream, &registry)).await {
                        Ok(Ok(status)) => debug!(%peer, status, "metrics request answered"),
                        Ok(Err(e)) => debug!(%peer, error = %e, "metrics request failed"),
                        Err(_) => debug!(%peer, "metrics request too slow: closed"),
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                if let Some(held_back) = error_log.allow(Instant::now()) {
                    warn!(error = %e, held_back, "metrics: accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    OtherPath,
    OtherMethod,
    Malformed,
}

/// Reads one request head and decides.
fn classify(head: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Asked::Malformed),
    }
    Some(match (request.method, request.path) {
        (Some("GET" | "HEAD"), Some("/metrics")) => Asked::Metrics,
        (Some("GET" | "HEAD"), _) => Asked::OtherPath,
        _ => Asked::OtherMethod,
    })
}

/// Answers one connection; the status sent.
async fn answer(mut stream: TcpStream, registry: &Registry) -> io::Result<u16> {
    let mut head = Vec::with_capacity(512);
    let asked = loop {
        if let Some(asked) = classify(&head) {
            break asked;
        }
        if head.len() >= MAX_REQUEST_BYTES {
            break Asked::Malformed;
        }
        if stream.read_buf(&mut head).await? == 0 {
            return Ok(0);
        }
    };
    let head_only = head.starts_with(b"HEAD ");
    let (status, reason, content_type, body) = match asked {
        Asked::Metrics => (200, "OK", CONTENT_TYPE, render(registry)),
        Asked::OtherPath => (
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
        Asked::OtherMethod => (
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_owned(),
        ),
        Asked::Malformed => (
            400,
            "Bad Request",
            "text/plain; charset=utf-8",
            "not an HTTP request\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await?;
    Ok(status)
}

/// The address the actor serves, for logs.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified() {
        assert_eq!(
            classify(b"GET /metrics HTTP/1.1\r\n"),
            None,
            "not whole yet"
        );
        assert_eq!(
            classify(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics)
        );
        assert_eq!(classify(b"GET / HTTP/1.0\r\n\r\n"), Some(Asked::OtherPath));
        assert_eq!(
            classify(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::OtherMethod)
        );
        assert_eq!(classify(b"\x00\x01junk\r\n\r\n"), Some(Asked::Malformed));
    }
}
