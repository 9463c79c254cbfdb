//! Pigeon's client: logs in to a server, keeps the roster current, and
//! talks to other users directly, peer to peer.
//!
//! [`session_actor`] owns the socket and runs the login flow decided by the
//! socket-free [`session`]; each conversation is a [`peer_actor`]; the
//! [`plain_console_actor`] is the line-mode front end. [`client`] starts it
//! all, for the console, the tests and the load generator alike.

pub mod client;
pub mod client_core;
pub mod clock;
pub mod command;
pub mod conversation;
pub mod events;
pub mod front_end;
pub mod history;
pub mod history_actor;
pub mod known_servers;
pub mod mail_seen;
pub mod peer_actor;
pub mod plain;
pub mod plain_console_actor;
pub mod roster_fetch;
pub mod session;
pub mod session_actor;
pub mod settings;
pub mod tui_console_actor;
pub mod ui;

pub use client::{BoundClient, ClientConfig, ClientHandle, StartError, DEFAULT_BIND};
pub use client_core::Sent;
pub use events::{ClientEvent, ClientEvents, MessageId};
pub use session::SendTextError;
