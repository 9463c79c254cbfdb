//! `ClientEvent`: what a client tells its front end (the console, a test,
//! the load generator). One event per thing a user would want to see.

use actix::Message;
use pigeon_shared::{PeerAddr, RefuseReason, TalkTime, UserName};

/// Something that happened to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Logged in and the roster is fetched. `online` counts every user in
    /// the roster, this one included.
    Ready { endpoint: PeerAddr, online: usize },
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
    /// The server refused the login. The session is over.
    Refused {
        reason: RefuseReason,
        detail: String,
    },
    /// The login could not be completed. The session is over.
    LoginFailed { reason: String },
    /// Logged out at the user's request. The session is over.
    LoggedOut,
}

impl Message for ClientEvent {
    type Result = ();
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
