//! Pigeon's wire protocol and the types server and client share.
//!
//! The protocol is the seed's (UTF-16LE datagrams, one .NET `BinaryWriter`
//! string for the TCP roster), byte for byte, plus the extensions documented
//! in `PROTOCOL.md`. The protocol modules do no I/O: they turn bytes into
//! typed values and back, and every decoder is total.
//!
//! Two optional modules serve the programs, not the protocol: [`net`]
//! (cargo feature `net`: the UDP socket layer both sides send and receive
//! through; with `faults`, the fault injection tests use) and [`log`]
//! (feature `log`: `tracing` output on stderr).

pub mod datagram;
pub mod endpoint;
pub mod handshake;
pub mod identity;
pub mod ids;
pub mod link;
#[cfg(feature = "log")]
pub mod log;
pub mod log_limit;
pub mod mailbox;
pub mod name;
#[cfg(feature = "net")]
pub mod net;
pub mod noise;
pub mod offline;
pub mod rate_limit;
pub mod relay;
pub mod roster_snapshot;
pub mod seal;
pub mod talk_time;
pub mod utf16;

pub use datagram::{
    Accept, AcceptExt, Ack, Bye, Chat, Closing, Datagram, DecodeError, DecodeErrorKind, Delta,
    Expired, Login, LoginExt, Logout, LogoutExt, Meet, Ping, Pong, Punch, RefuseReason, Refused,
    RosterChange, Sealed, Talk, Verb, MAX_DATAGRAM_LEN, MAX_PAD, MAX_PARTS, MAX_PART_UNITS,
    MAX_SEQ, MEET_BYTES, MIN_PIGEON_LOGIN_BYTES, PIGEON_TAG,
};
pub use endpoint::{same_host, PeerAddr, UnusableEndpoint};
pub use identity::{Fingerprint, Identity, IdentityError, PublicKey};
pub use ids::{InstanceId, Nonce, Revision, Seq, SessionToken};
pub use link::{Link, LinkDrop, LinkEvent, Secure, SecureFrame};
pub use log_limit::LogLimit;
pub use name::{NameError, UserName, MAX_NAME_CHARS};
pub use relay::Relay;
pub use roster_snapshot::{RosterEntry, RosterError, RosterSnapshot};
pub use talk_time::{TalkTime, TimeOfDay};
