//! `HandshakeActor`: answers the login handshakes (the server's key
//! agreements, the costly part of a login) on threads of their own, so that
//! the roster's thread never does one and a login storm uses every core.
//! Each login goes on to the roster with its answer ready.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use pigeon_shared::handshake::Hello;
use pigeon_shared::{Identity, Login, Nonce, SessionToken};
use rand::Rng;

use crate::roster::answer_with;
use crate::roster_actor::{LoginReceived, RosterActor};

/// A login from `source` with a hello to answer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AnswerLogin {
    pub login: Login,
    pub source: SocketAddr,
}

/// One handshake thread. See the module documentation.
pub struct HandshakeActor {
    identity: Identity,
    roster: Addr<RosterActor>,
    waiting: Arc<AtomicUsize>,
    /// Hellos (with their nonces) answered lately, by any thread: a login
    /// repeated because its `Accept` was slow or lost is passed on without
    /// another key agreement (the roster repeats its answer).
    answered: Arc<DashMap<(Hello, Option<Nonce>), ()>>,
}

/// Hellos remembered as answered; past it the memory starts again.
const MAX_REMEMBERED: usize = 1 << 16;

impl HandshakeActor {
    /// Answers as `identity`, passing each login on to `roster`; `waiting`
    /// counts the logins handed to the threads and not yet answered.
    pub fn new(
        identity: Identity,
        roster: Addr<RosterActor>,
        waiting: Arc<AtomicUsize>,
        answered: Arc<DashMap<(Hello, Option<Nonce>), ()>>,
    ) -> Self {
        Self {
            identity,
            roster,
            waiting,
            answered,
        }
    }
}

/// Logins waiting for a handshake thread: a login storm's worth; past it
/// the gateway waits, and the kernel's buffer takes the rest.
pub const MAX_WAITING: usize = 4096;

impl Actor for HandshakeActor {
    type Context = SyncContext<Self>;
}

impl Handler<AnswerLogin> for HandshakeActor {
    type Result = ();

    fn handle(&mut self, msg: AnswerLogin, _: &mut SyncContext<Self>) {
        let AnswerLogin { login, source } = msg;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let prepared = login
            .pigeon
            .and_then(|ext| ext.hello.map(|hello| (hello, ext.nonce)))
            .filter(|asked| {
                if self.answered.len() >= MAX_REMEMBERED {
                    self.answered.clear();
                }
                self.answered.insert(*asked, ()).is_none()
            })
            .map(|(hello, nonce): (_, Option<Nonce>)| {
                let token = SessionToken(rand::rng().random());
                answer_with(
                    &self.identity,
                    &login.name,
                    login.endpoint,
                    nonce,
                    &hello,
                    token,
                )
            });
        self.roster.do_send(LoginReceived {
            login,
            source,
            prepared,
        });
    }
}
