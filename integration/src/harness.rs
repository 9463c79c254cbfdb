//! In-process servers and clients for end-to-end tests: the real actors on
//! loopback sockets, with each client's events collected for assertions.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use pigeon_client::{ClientConfig, ClientEvent, ClientEvents, ClientHandle, MessageId};
use pigeon_server::{ServerConfig, ServerHandle};
use pigeon_shared::{PeerAddr, UserName};
use tokio::sync::mpsc;

/// How long tests wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// Sends `tracing` output to the test's captured output when `RUST_LOG`
/// is set (`RUST_LOG=info cargo test ... -- --nocapture` shows it).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts a server on 127.0.0.1 with free ports.
pub async fn start_server() -> anyhow::Result<ServerHandle> {
    init_tracing();
    ServerHandle::start(local_server_config()).await
}

/// A server configuration on 127.0.0.1 with free ports.
pub fn local_server_config() -> ServerConfig {
    ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Polls `check` without blocking the actors that share this thread.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("{what}: not within {WAIT:?}")
}

/// A client whose events a test can wait for.
pub struct TestClient {
    pub name: UserName,
    pub handle: ClientHandle,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    /// Every event received so far, in order.
    pub seen: Vec<ClientEvent>,
}

/// Forwards a client's events into a channel.
struct EventSink(mpsc::UnboundedSender<ClientEvent>);

impl Actor for EventSink {
    type Context = Context<Self>;
}

impl Handler<ClientEvents> for EventSink {
    type Result = ();

    fn handle(&mut self, ClientEvents(events): ClientEvents, _: &mut Context<Self>) {
        for event in events {
            let _ = self.0.send(event);
        }
    }
}

impl TestClient {
    /// Starts `name` on 127.0.0.1 against `server`.
    pub fn start(name: &str, server: SocketAddr) -> anyhow::Result<Self> {
        let name = UserName::parse(name)?;
        Self::start_with(ClientConfig::new(name, server))
    }

    /// Starts a client with `config`.
    pub fn start_with(config: ClientConfig) -> anyhow::Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let sink = EventSink(tx).start();
        let name = config.name.clone();
        let handle = ClientHandle::start(config, sink.recipient())?;
        Ok(Self {
            name,
            handle,
            events,
            seen: Vec::new(),
        })
    }

    /// Starts `name` and waits until it is ready.
    pub async fn online(name: &str, server: SocketAddr) -> anyhow::Result<Self> {
        let mut client = Self::start(name, server)?;
        client.ready().await?;
        Ok(client)
    }

    /// The endpoint this client announced.
    pub fn endpoint(&self) -> PeerAddr {
        self.handle.endpoint()
    }

    /// Waits for the first event (from now on) that `pred` accepts; `pred`
    /// sees every event on the way, so it may also collect them.
    pub async fn wait_for(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> anyhow::Result<ClientEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{}: no {what} within {WAIT:?}; saw {:?}",
                        self.name,
                        self.seen
                    )
                })?
                .ok_or_else(|| {
                    anyhow!(
                        "{}: events ended before {what}; saw {:?}",
                        self.name,
                        self.seen
                    )
                })?;
            self.seen.push(event.clone());
            if pred(&event) {
                return Ok(event);
            }
        }
    }

    /// Waits for `ready` and returns the online count it reported.
    pub async fn ready(&mut self) -> anyhow::Result<usize> {
        match self
            .wait_for("ready", |e| {
                matches!(
                    e,
                    ClientEvent::Ready { .. }
                        | ClientEvent::Refused { .. }
                        | ClientEvent::LoginFailed { .. }
                )
            })
            .await?
        {
            ClientEvent::Ready { online, .. } => Ok(online),
            other => bail!("{}: login ended with {other:?}", self.name),
        }
    }

    /// Waits until `name` is reported online.
    pub async fn sees_online(&mut self, name: &str) -> anyhow::Result<PeerAddr> {
        // Events already seen may have said so (the roster of `ready`
        // counts, unless a later event took the user away again).
        if let Some(endpoint) = online_in(&self.seen, name) {
            return Ok(endpoint);
        }
        let event = self
            .wait_for(&format!("online {name}"), |e| match e {
                ClientEvent::Online { name: n, .. } => n.as_str() == name,
                ClientEvent::Ready { roster, .. } => roster.get(name).is_some(),
                _ => false,
            })
            .await?;
        online_in(std::slice::from_ref(&event), name)
            .ok_or_else(|| anyhow!("{}: {name} not online in {event:?}", self.name))
    }

    /// Waits until `name` is reported offline.
    pub async fn sees_offline(&mut self, name: &str) -> anyhow::Result<()> {
        self.wait_for(
            &format!("offline {name}"),
            |e| matches!(e, ClientEvent::Offline { name: n } if n.as_str() == name),
        )
        .await
        .map(|_| ())
    }

    /// Waits for the next message from `from` and returns its text.
    pub async fn message_from(&mut self, from: &str) -> anyhow::Result<String> {
        let event = self
            .wait_for(
                &format!("message from {from}"),
                |e| matches!(e, ClientEvent::Message { from: f, .. } if f.as_str() == from),
            )
            .await?;
        match event {
            ClientEvent::Message { text, .. } => Ok(text),
            _ => unreachable!("filtered above"),
        }
    }

    /// Sends `text` to `to`; returns the message's id.
    pub async fn say(&self, to: &str, text: &str) -> anyhow::Result<MessageId> {
        let to = UserName::parse(to)?;
        self.handle
            .send_text(to, text.to_owned())
            .await
            .with_context(|| format!("{} could not send", self.name))
    }

    /// The names in this client's roster, sorted.
    pub async fn roster_names(&self) -> Vec<String> {
        self.handle
            .users()
            .await
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Waits until this client's roster holds exactly `names` (sorted).
    pub async fn roster_becomes(&self, names: &[&str]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.roster_names().await;
            if now == names {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: roster is {now:?}, not {names:?}, after {WAIT:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Events received so far without waiting, appended to `seen`.
    pub fn drain(&mut self) -> &[ClientEvent] {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        &self.seen
    }
}

/// Where `name` is online according to `events`, read in order: the roster
/// that came with `ready`, then `online` and `offline` events.
fn online_in(events: &[ClientEvent], name: &str) -> Option<PeerAddr> {
    let mut at = None;
    for event in events {
        match event {
            ClientEvent::Ready { roster, .. } => at = roster.get(name).map(|p| p.endpoint),
            ClientEvent::Online { name: n, endpoint } if n.as_str() == name => at = Some(*endpoint),
            ClientEvent::Offline { name: n } if n.as_str() == name => at = None,
            _ => {}
        }
    }
    at
}
