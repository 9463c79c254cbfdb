//! The relay's decisions: which end-to-end frames the server passes on
//! between Pigeon users who cannot reach each other directly, and how many.
//! Only a logged-in Pigeon user with a key, proving its session with its
//! token from its session's endpoint, may relay, and only to another such
//! user; each session has its own rate and all of them share a cap. No
//! sockets: the gateway asks, and sends what it is told to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pigeon_shared::rate_limit::{Bucket, Rate};
use pigeon_shared::{Relay as RelayRequest, SessionToken, UserName};

use crate::directory::{Directory, DirectoryEntry};

/// Default for [`RelayConfig::global_rate`]: frames a second, all sessions
/// together.
pub const DEFAULT_RELAY_GLOBAL_RATE: u32 = 20_000;

/// How often buckets that have refilled are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The relay's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayConfig {
    /// Frames a second one session may have relayed.
    pub per_session: u32,
    /// Frames a second for all sessions together.
    pub global_rate: u32,
}

/// Why a frame was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayDrop {
    /// The sender is not a session here, or the token or source is wrong.
    NotASession,
    /// The sender has no key (only end-to-end frames are relayed).
    SenderWithoutKey,
    /// No such user online, or one without a key.
    NoSuchPeer,
    /// The frame does not name the sender, or is addressed to the sender.
    Inconsistent,
    /// Over the session's rate.
    OverSessionRate,
    /// Over the rate of all sessions together.
    OverGlobalRate,
}

impl RelayDrop {
    /// Every reason, in a fixed order (for counters indexed by reason).
    pub const ALL: [Self; 6] = [
        Self::NotASession,
        Self::SenderWithoutKey,
        Self::NoSuchPeer,
        Self::Inconsistent,
        Self::OverSessionRate,
        Self::OverGlobalRate,
    ];

    /// This reason's place in [`RelayDrop::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason as the logs and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotASession => "not-a-session",
            Self::SenderWithoutKey => "sender-without-key",
            Self::NoSuchPeer => "no-such-peer",
            Self::Inconsistent => "inconsistent",
            Self::OverSessionRate => "over-session-rate",
            Self::OverGlobalRate => "over-global-rate",
        }
    }
}

/// Who the server can ask about sessions: the directory, or a table in
/// tests.
pub trait Sessions {
    /// Whether `token` is `name`'s session token.
    fn holds(&self, name: &str, token: SessionToken) -> bool;
    /// `name`'s entry, if online.
    fn entry(&self, name: &str) -> Option<DirectoryEntry>;
    /// Whether `name`'s session proved it receives (it fetched the roster
    /// with its token): nothing is relayed to it, nor from it, before.
    fn receives(&self, name: &str) -> bool;
    /// The server of the cluster `name` is online through, if another.
    fn home(&self, name: &str) -> Option<Arc<str>>;
}

/// Where a relayed frame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Straight to the peer, online here.
    Local(SocketAddr),
    /// To the server of the cluster the peer is online through, which
    /// passes it on.
    Remote(Arc<str>),
}

impl Sessions for Directory {
    fn holds(&self, name: &str, token: SessionToken) -> bool {
        Directory::holds(self, name, token)
    }

    fn entry(&self, name: &str) -> Option<DirectoryEntry> {
        self.get(name)
    }

    fn receives(&self, name: &str) -> bool {
        Directory::receives(self, name)
    }

    fn home(&self, name: &str) -> Option<Arc<str>> {
        Directory::home(self, name)
    }
}

/// The relay's state: a bucket per sending session, one for everyone.
#[derive(Debug)]
pub struct Relay {
    per_session: Rate,
    global_rate: Rate,
    sessions: HashMap<UserName, Bucket>,
    global: Bucket,
    next_sweep: Instant,
}

impl Relay {
    /// A relay with `config`'s limits.
    pub fn new(config: RelayConfig, now: Instant) -> Self {
        let global_rate = Rate::per_second(config.global_rate);
        Self {
            per_session: Rate::per_second(config.per_session),
            global: Bucket::full(global_rate, now),
            global_rate,
            sessions: HashMap::new(),
            next_sweep: now + SWEEP_EVERY,
        }
    }

    /// Where to send `request`'s frame (from `source` at `now`), or why
    /// not.
    pub fn forward(
        &mut self,
        request: &RelayRequest,
        source: SocketAddr,
        now: Instant,
        sessions: &impl Sessions,
    ) -> Result<Hop, RelayDrop> {
        let from = &request.secure.from;
        let sender = sessions
            .entry(from.as_str())
            .filter(|entry| same_address(entry.endpoint.socket_addr(), source))
            .filter(|_| sessions.holds(from.as_str(), request.token))
            .filter(|_| sessions.receives(from.as_str()))
            .ok_or(RelayDrop::NotASession)?;
        if sender.key.is_none() {
            return Err(RelayDrop::SenderWithoutKey);
        }
        if request.to == *from {
            return Err(RelayDrop::Inconsistent);
        }
        // A peer online here must have proved it receives; one online
        // through another server is checked there.
        let home = sessions.home(request.to.as_str());
        let peer = sessions
            .entry(request.to.as_str())
            .filter(|entry| entry.key.is_some())
            .filter(|_| home.is_some() || sessions.receives(request.to.as_str()))
            .ok_or(RelayDrop::NoSuchPeer)?;
        if now >= self.next_sweep {
            let rate = self.per_session;
            self.sessions.retain(|_, bucket| !bucket.is_full(rate, now));
            self.next_sweep = now + SWEEP_EVERY;
        }
        let rate = self.per_session;
        let bucket = self
            .sessions
            .entry(from.clone())
            .or_insert_with(|| Bucket::full(rate, now));
        // A frame over either limit takes from neither.
        if !bucket.has(rate, now) {
            return Err(RelayDrop::OverSessionRate);
        }
        if !self.global.take(self.global_rate, now) {
            return Err(RelayDrop::OverGlobalRate);
        }
        bucket.take(rate, now);
        Ok(match home {
            Some(server) => Hop::Remote(server),
            None => Hop::Local(peer.endpoint.socket_addr()),
        })
    }

    /// Sessions with a bucket being refilled.
    pub fn tracked(&self) -> usize {
        self.sessions.len()
    }
}

/// Whether `a` and `b` are one address (an IPv4-mapped IPv6 address and
/// its IPv4 form are).
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_shared::{InstanceId, PeerAddr, PublicKey, Secure, SecureFrame};

    struct Table(Vec<(&'static str, &'static str, Option<PublicKey>, u128)>);

    impl Sessions for Table {
        fn holds(&self, name: &str, token: SessionToken) -> bool {
            self.0
                .iter()
                .any(|(n, _, _, t)| *n == name && *t == token.0)
        }

        fn entry(&self, name: &str) -> Option<DirectoryEntry> {
            self.0
                .iter()
                .find(|(n, ..)| *n == name)
                .map(|(_, addr, key, _)| DirectoryEntry {
                    endpoint: PeerAddr::parse(addr).unwrap(),
                    instance: Some(InstanceId(1)),
                    key: *key,
                })
        }

        /// Everyone but frank has fetched the roster.
        fn receives(&self, name: &str) -> bool {
            name != "frank"
        }

        /// gina is online through server "b".
        fn home(&self, name: &str) -> Option<Arc<str>> {
            (name == "gina").then(|| Arc::from("b"))
        }
    }

    fn table() -> Table {
        Table(vec![
            ("alice", "198.51.100.1:4000", Some(PublicKey([1; 32])), 11),
            ("bob", "203.0.113.9:5000", Some(PublicKey([2; 32])), 22),
            ("carol", "203.0.113.10:5000", None, 33),
            ("frank", "203.0.113.11:5000", Some(PublicKey([6; 32])), 66),
            ("gina", "203.0.113.12:5000", Some(PublicKey([7; 32])), 0),
        ])
    }

    fn request(from: &str, to: &str, token: u128) -> RelayRequest {
        RelayRequest {
            token: SessionToken(token),
            to: UserName::parse(to).unwrap(),
            secure: Secure {
                from: UserName::parse(from).unwrap(),
                frame: SecureFrame::Data {
                    receiver: 1,
                    counter: 0,
                    ciphertext: vec![0; 16],
                },
            },
        }
    }

    fn relay(per_session: u32, global_rate: u32) -> (Relay, Instant) {
        let now = Instant::now();
        let config = RelayConfig {
            per_session,
            global_rate,
        };
        (Relay::new(config, now), now)
    }

    #[test]
    fn a_proven_session_with_a_key_is_relayed_to_a_peer_with_one() {
        let (mut relay, now) = relay(20, 1000);
        let alice: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        assert_eq!(
            relay.forward(&request("alice", "bob", 11), alice, now, &table()),
            Ok(Hop::Local("203.0.113.9:5000".parse().unwrap()))
        );
        // A peer online through another server: to that server.
        assert_eq!(
            relay.forward(&request("alice", "gina", 11), alice, now, &table()),
            Ok(Hop::Remote(Arc::from("b")))
        );
    }

    #[test]
    fn wrong_tokens_sources_peers_and_names_are_refused() {
        let (mut relay, now) = relay(20, 1000);
        let alice: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let elsewhere: SocketAddr = "198.51.100.1:4001".parse().unwrap();
        let carol: SocketAddr = "203.0.113.10:5000".parse().unwrap();
        let cases = [
            (request("alice", "bob", 12), alice, RelayDrop::NotASession),
            (
                request("alice", "bob", 11),
                elsewhere,
                RelayDrop::NotASession,
            ),
            (request("dave", "bob", 11), alice, RelayDrop::NotASession),
            (
                request("carol", "bob", 33),
                carol,
                RelayDrop::SenderWithoutKey,
            ),
            (request("alice", "carol", 11), alice, RelayDrop::NoSuchPeer),
            (request("alice", "erin", 11), alice, RelayDrop::NoSuchPeer),
            // Logged in, but not yet proved it receives: not relayed to,
            // and cannot relay.
            (request("alice", "frank", 11), alice, RelayDrop::NoSuchPeer),
            (
                request("frank", "alice", 66),
                "203.0.113.11:5000".parse().unwrap(),
                RelayDrop::NotASession,
            ),
            (
                request("alice", "alice", 11),
                alice,
                RelayDrop::Inconsistent,
            ),
        ];
        for (request, source, why) in cases {
            assert_eq!(
                relay.forward(&request, source, now, &table()),
                Err(why),
                "{request:?}"
            );
        }
    }

    #[test]
    fn each_session_has_its_rate_and_all_share_the_cap() {
        let (mut relay, now) = relay(5, 8);
        let alice: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let bob: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        // Burst: twice the rate.
        let sent = (0..20)
            .filter(|_| {
                relay
                    .forward(&request("alice", "bob", 11), alice, now, &table())
                    .is_ok()
            })
            .count();
        assert_eq!(sent, 10);
        assert_eq!(
            relay.forward(&request("alice", "bob", 11), alice, now, &table()),
            Err(RelayDrop::OverSessionRate)
        );
        // Bob has his own bucket, but only 6 of the cap's 16 are left.
        let bob_sent = (0..20)
            .filter(|_| {
                relay
                    .forward(&request("bob", "alice", 22), bob, now, &table())
                    .is_ok()
            })
            .count();
        assert_eq!(bob_sent, 6);
        assert_eq!(
            relay.forward(&request("bob", "alice", 22), bob, now, &table()),
            Err(RelayDrop::OverGlobalRate)
        );
        let later = now + Duration::from_secs(1);
        assert!(relay
            .forward(&request("alice", "bob", 11), alice, later, &table())
            .is_ok());
    }
}
