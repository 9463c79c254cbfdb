//! `StoreActor`: writes the server's durable state (registered names) to
//! its [`Store`] on a thread of its own, so that the roster never waits
//! for the disk.

use actix::prelude::*;
use pigeon_shared::{LogLimit, PublicKey, UserName};
use tracing::{info, warn};

use crate::store::Store;

/// Keep that `name` is registered to `key`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Register {
    pub name: UserName,
    pub key: PublicKey,
}

/// The store's actor. See the module documentation.
pub struct StoreActor {
    /// `None` only if a second thread were started for the actor: the
    /// store has one connection, and one thread.
    store: Option<Store>,
    error_log: LogLimit,
}

impl StoreActor {
    pub fn new(store: Option<Store>) -> Self {
        Self {
            store,
            error_log: LogLimit::default(),
        }
    }
}

impl Actor for StoreActor {
    type Context = SyncContext<Self>;
}

impl Handler<Register> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut SyncContext<Self>) {
        let Some(store) = &self.store else {
            warn!(user = %msg.name, "name registered in memory only: no store on this thread");
            return;
        };
        match store.register(&msg.name, &msg.key) {
            Ok(()) => info!(user = %msg.name, key = %msg.key.fingerprint(), "name registered"),
            Err(e) => {
                if let Some(held_back) = self.error_log.allow(std::time::Instant::now()) {
                    warn!(user = %msg.name, error = %e, held_back, "name registered in memory only: the store failed");
                }
            }
        }
    }
}
