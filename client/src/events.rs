//! `ClientEvent`: what a client tells its front end (the console, a test,
//! the load generator). One event per thing a user would want to see; they
//! travel in [`ClientEvents`], a batch per datagram handled, so that a
//! roster of thousands costs one message, not thousands.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Message;
use pigeon_shared::{PeerAddr, PublicKey, RefuseReason, TalkTime, UserName};

use crate::session::{Peer, RosterMap};

/// A message this client sent, numbered from 1 in the order it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Hands out a client's [`MessageId`]s in order, shared by all its
/// conversations. A number is taken only by a message accepted for
/// sending, so a refused one leaves no gap.
#[derive(Debug, Clone, Default)]
pub struct MessageIds(Arc<AtomicU64>);

impl MessageIds {
    /// The next id.
    pub fn next(&self) -> MessageId {
        MessageId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// How a conversation reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to this address (the peer's own, or its router's).
    Direct(SocketAddr),
    /// Through the server's relay (end-to-end encrypted all the same).
    Relayed,
}

/// Something that happened to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The way a conversation reaches its peer was chosen, or changed.
    Path { name: UserName, route: Route },
    /// Logged in and the roster is fetched. `online` counts every user in
    /// the roster, this one included; `roster` is that roster (later
    /// changes come as `Online` and `Offline` events).
    Ready {
        /// This client's name and endpoint.
        name: UserName,
        endpoint: PeerAddr,
        online: usize,
        roster: RosterView,
    },
    /// A user is online (from the fetched roster, or a later login).
    Online { name: UserName, endpoint: PeerAddr },
    /// A user left.
    Offline { name: UserName },
    /// A chat message arrived.
    Message {
        from: UserName,
        time: TalkTime,
        text: String,
    },
    /// A message that waited in this user's mailbox while it was away:
    /// from `from`, sent at `sent_at_ms` (milliseconds since the Unix
    /// epoch, the sender's clock), carrying the time of day `time`.
    OfflineMessage {
        from: UserName,
        time: TalkTime,
        sent_at_ms: u64,
        text: String,
    },
    /// A message to a user who was offline is kept by the server until
    /// they are back.
    Stored { to: UserName, id: MessageId },
    /// A message to a user who was offline could not be kept (`why`: the
    /// mailbox is full, say).
    NotStored {
        to: UserName,
        id: MessageId,
        text: String,
        why: String,
    },
    /// A message this client sent reached its peer (Pigeon peers only:
    /// a seed-era client does not acknowledge).
    Delivered { to: UserName, id: MessageId },
    /// A message could not be delivered before its deadline.
    Failed {
        to: UserName,
        id: MessageId,
        text: String,
    },
    /// No answer yet to the first login (`why`): attempt number `attempt`
    /// (from 2) to `server` is on its way. The first attempt is not
    /// announced.
    Connecting {
        server: SocketAddr,
        attempt: usize,
        why: String,
    },
    /// The server went away (or forgot this session); the client keeps its
    /// roster and its chats, and logs in again by itself.
    ServerLost { reason: String },
    /// Logged in again after [`ClientEvent::ServerLost`]; `online` counts
    /// the users in the fresh roster. Differences from the old roster follow
    /// as `Online` and `Offline` events.
    Reconnected { online: usize },
    /// The server refused the login. The session is over.
    Refused {
        reason: RefuseReason,
        detail: String,
    },
    /// The login could not be completed. The session is over.
    LoginFailed { reason: String },
    /// Logged out at the user's request. The session is over.
    LoggedOut,
    /// The roster shows another key for `name` than the one pinned:
    /// nothing is sent to `name` until the user trusts the new key.
    KeyChanged {
        name: UserName,
        old: PublicKey,
        new: PublicKey,
    },
}

/// The events one step of a client produced, in order. A front end is
/// any actor that handles this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvents(pub Vec<ClientEvent>);

impl Message for ClientEvents {
    type Result = ();
}

/// A client's roster at one moment, shared rather than copied: a roster of
/// thousands reaches the front end as one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterView(pub(crate) Arc<RosterMap>);

impl RosterView {
    /// How many users, this client included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The users, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&UserName, &Peer)> {
        self.0.iter()
    }

    /// What is known about `name`.
    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.0.get(name)
    }
}

impl ClientEvent {
    /// Whether the session has ended with this event.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. } | Self::LoginFailed { .. } | Self::LoggedOut
        )
    }
}
