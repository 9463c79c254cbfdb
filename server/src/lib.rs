//! Pigeon's server: it knows who is online and where each user can be
//! reached, and tells everyone when that changes. Chat text never passes
//! through it.
//!
//! Three actors, each in its own file: [`udp_gateway_actor`] owns the UDP
//! socket, [`roster_actor`] owns who is online (deciding through the
//! socket-free [`roster`]), and [`tcp_roster_actor`] serves roster
//! snapshots from the [`directory`] the roster writes through to; a
//! fourth, [`metrics_actor`], serves their counters ([`metrics`]) when
//! asked to; with `--cluster`, [`cluster_actor`] shares the roster with
//! other servers through Redis ([`cluster`] has the text and keys).
//! [`server`] binds and wires them.

pub mod cluster;
pub mod cluster_actor;
pub mod directory;
pub mod handshake_actor;
pub mod metrics;
pub mod metrics_actor;
pub mod relay;
pub mod roster;
pub mod roster_actor;
pub mod server;
pub mod shared_mail;
pub mod store;
pub mod store_actor;
pub mod tcp_roster_actor;
pub mod udp_gateway_actor;

pub use directory::Directory;
pub use pigeon_shared::rate_limit::{self, RateLimits};
pub use roster::{LeaveReason, Roster, RosterConfig, RosterEvent};
pub use server::{BindError, BoundServer, ServerConfig, ServerHandle, DEFAULT_UDP_ADDR};
