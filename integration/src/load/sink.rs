//! `SinkActor`: the front end of one simulated peer. It hears the peer's
//! client events, as the console would, and keeps what the load test needs:
//! which users the peer's roster holds, and which messages arrived, in what
//! order, how late.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use pigeon_client::{ClientEvent, ClientEvents};

/// Counters every sink adds to, read by the driver to follow progress.
#[derive(Debug)]
pub struct Progress {
    /// When the run started: message timestamps count from here.
    pub start: Instant,
    /// Peers whose roster holds every peer.
    pub converged: AtomicUsize,
    /// Peers that are ready (logged in, roster fetched).
    pub ready: AtomicUsize,
    /// Messages shown, duplicates included.
    pub received: AtomicU64,
    /// Messages confirmed delivered to their sender.
    pub confirmed: AtomicU64,
    /// Messages reported failed.
    pub failed: AtomicU64,
    /// Peers logged out.
    pub logged_out: AtomicUsize,
    /// Peers whose login failed or was refused.
    pub refused: AtomicUsize,
    /// Peers that lost their server at some point.
    pub server_lost: AtomicUsize,
    /// Peers that logged in again after losing their server.
    pub reconnected: AtomicUsize,
}

impl Progress {
    /// Zeroed counters, starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            converged: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            logged_out: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            server_lost: AtomicUsize::new(0),
            reconnected: AtomicUsize::new(0),
        }
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// The name of peer `index`.
pub fn peer_name(index: usize) -> String {
    format!("p{index}")
}

/// The index in a peer name, if it is one.
pub fn peer_index(name: &str) -> Option<usize> {
    name.strip_prefix('p')?.parse().ok()
}

/// The text of message `seq` from one peer to another, sent at `sent_us`.
pub fn message_text(seq: u32, sent_us: u64) -> String {
    format!("{seq} {sent_us} load-test message, with a comma, 你好")
}

fn parse_message(text: &str) -> Option<(u32, u64)> {
    let mut fields = text.split(' ');
    let seq = fields.next()?.parse().ok()?;
    let sent = fields.next()?.parse().ok()?;
    Some((seq, sent))
}

/// What one peer saw of its incoming messages.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Distinct messages, in order or not.
    pub unique: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Text that was not a load-test message.
    pub garbled: u64,
    /// One-way latencies, microseconds.
    pub latencies_us: Vec<u32>,
}

/// Incoming stream from one sender.
#[derive(Debug, Default)]
struct Stream {
    next: u32,
    seen: Vec<u64>,
}

impl Stream {
    /// Marks `seq` seen; `false` if it was already.
    fn mark(&mut self, seq: u32) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        fresh
    }
}

/// The sink for one peer. See the module documentation.
pub struct SinkActor {
    peers: usize,
    roster: Vec<u64>,
    roster_count: usize,
    converged: bool,
    streams: HashMap<usize, Stream>,
    received: Received,
    progress: Arc<Progress>,
}

/// Hand over what this sink saw.
#[derive(Message)]
#[rtype(result = "Received")]
pub struct TakeReceived;

impl SinkActor {
    /// A sink for one of `peers` peers.
    pub fn new(peers: usize, progress: Arc<Progress>) -> Self {
        Self {
            peers,
            roster: vec![0; peers.div_ceil(64)],
            roster_count: 0,
            converged: false,
            streams: HashMap::new(),
            received: Received::default(),
            progress,
        }
    }

    fn set(&mut self, index: usize, online: bool) {
        let Some(word) = self.roster.get_mut(index / 64) else {
            return;
        };
        let bit = 1u64 << (index % 64);
        let was = *word & bit != 0;
        if online && !was {
            *word |= bit;
            self.roster_count += 1;
        } else if !online && was {
            *word &= !bit;
            self.roster_count -= 1;
        }
        let converged = self.roster_count == self.peers;
        if converged != self.converged {
            self.converged = converged;
            if converged {
                self.progress.converged.fetch_add(1, Ordering::Relaxed);
            } else {
                self.progress.converged.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn message(&mut self, from: usize, text: &str) {
        self.progress.received.fetch_add(1, Ordering::Relaxed);
        let Some((seq, sent_us)) = parse_message(text) else {
            self.received.garbled += 1;
            return;
        };
        let now = self.progress.now_us();
        let stream = self.streams.entry(from).or_default();
        if !stream.mark(seq) {
            self.received.duplicated += 1;
            return;
        }
        self.received.unique += 1;
        if seq != stream.next {
            self.received.reordered += 1;
        }
        stream.next = stream.next.max(seq + 1);
        let latency = now.saturating_sub(sent_us);
        self.received
            .latencies_us
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
    }
}

impl Actor for SinkActor {
    type Context = Context<Self>;
}

impl Handler<ClientEvents> for SinkActor {
    type Result = ();

    fn handle(&mut self, ClientEvents(events): ClientEvents, _: &mut Context<Self>) {
        for event in events {
            self.event(event);
        }
    }
}

impl SinkActor {
    fn event(&mut self, event: ClientEvent) {
        let progress = self.progress.clone();
        match event {
            ClientEvent::Ready { roster, .. } => {
                progress.ready.fetch_add(1, Ordering::Relaxed);
                for (name, _) in roster.iter() {
                    if let Some(index) = peer_index(name.as_str()) {
                        self.set(index, true);
                    }
                }
            }
            ClientEvent::Online { name, .. } => {
                if let Some(index) = peer_index(name.as_str()) {
                    self.set(index, true);
                }
            }
            ClientEvent::Offline { name } => {
                if let Some(index) = peer_index(name.as_str()) {
                    self.set(index, false);
                }
            }
            ClientEvent::Message { from, text, .. } => {
                if let Some(index) = peer_index(from.as_str()) {
                    self.message(index, &text);
                }
            }
            ClientEvent::Delivered { .. } => {
                progress.confirmed.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Failed { .. } => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::LoggedOut => {
                progress.logged_out.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Refused { .. } | ClientEvent::LoginFailed { .. } => {
                progress.refused.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::ServerLost { .. } => {
                progress.server_lost.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::NotStored { .. } => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Reconnected { .. } => {
                progress.reconnected.fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Connecting { .. }
            | ClientEvent::Path { .. }
            | ClientEvent::KeyChanged { .. }
            | ClientEvent::OfflineMessage { .. }
            | ClientEvent::Stored { .. } => {}
        }
    }
}

impl Handler<TakeReceived> for SinkActor {
    type Result = MessageResult<TakeReceived>;

    fn handle(&mut self, _: TakeReceived, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::mem::take(&mut self.received))
    }
}
