//! `StoreActor`: the server's durable state (registered names, the
//! mailboxes) in its [`Store`], on a thread of its own, so that the roster
//! and the TCP service never wait for the disk.

use actix::prelude::*;
use pigeon_shared::mailbox::{MailAnswer, MailRequest, MAX_FETCH_ITEMS};
use pigeon_shared::{LogLimit, PublicKey, UserName};
use tracing::{info, warn};

use crate::store::{now_ms, Deposited, Letter, MailLimits, Store};

/// `name` (an online session that proved its key) asks its mailbox.
#[derive(Message, Debug)]
#[rtype(result = "MailDone")]
pub struct Mailbox {
    pub name: UserName,
    pub request: MailRequest,
}

/// The answer to a [`Mailbox`] request, and who should hear that their
/// mailbox has news (the recipient of a deposit, the senders of what was
/// acknowledged).
#[derive(Debug)]
pub struct MailDone {
    pub answer: Option<MailAnswer>,
    pub notify: Vec<UserName>,
    /// Users whose mailbox is empty now.
    pub emptied: Vec<UserName>,
}

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
    limits: MailLimits,
    error_log: LogLimit,
}

impl StoreActor {
    pub fn new(store: Option<Store>, limits: MailLimits) -> Self {
        Self {
            store,
            limits,
            error_log: LogLimit::default(),
        }
    }

    fn mailbox(
        &self,
        store: &Store,
        name: &UserName,
        request: MailRequest,
    ) -> Result<MailDone, crate::store::StoreError> {
        let now = now_ms();
        let mut notify = Vec::new();
        let mut emptied = Vec::new();
        let answer = match request {
            MailRequest::Key { name } => match store.key_of(name.as_str())? {
                Some(key) => MailAnswer::Key { name, key },
                None => MailAnswer::Unregistered { name },
            },
            MailRequest::Deposit { to, id, sealed } => {
                let Some(from_key) = store.key_of(name.as_str())? else {
                    return Ok(MailDone {
                        answer: Some(MailAnswer::Full {
                            detail: format!("{name} has no registered key yet"),
                        }),
                        notify,
                        emptied,
                    });
                };
                let letter = Letter {
                    to: &to,
                    from: name,
                    from_key: &from_key,
                    id,
                    sealed: &sealed,
                };
                match store.deposit(&letter, &self.limits, now)? {
                    Deposited::Stored(serial) => {
                        info!(from = %name, %to, serial, bytes = sealed.len(), "offline message stored");
                        notify.push(to);
                        MailAnswer::Stored { serial }
                    }
                    Deposited::Full(detail) => {
                        info!(from = %name, %to, %detail, "offline message refused: mailbox full");
                        MailAnswer::Full { detail }
                    }
                    Deposited::Unregistered => MailAnswer::Unregistered { name: to },
                }
            }
            MailRequest::Fetch => {
                let (mail, receipts, more) = store.mailbox(name, MAX_FETCH_ITEMS)?;
                MailAnswer::Box {
                    mail,
                    receipts,
                    more,
                }
            }
            MailRequest::Ack { mail, receipts } => {
                notify = store.acknowledge(name, &mail, &receipts, &self.limits, now)?;
                if !mail.is_empty() {
                    info!(user = %name, delivered = mail.len(), "offline messages delivered");
                }
                if !store.has_mail(name)? {
                    emptied.push(name.clone());
                }
                MailAnswer::Done
            }
        };
        Ok(MailDone {
            answer: Some(answer),
            notify,
            emptied,
        })
    }
}

impl Handler<Mailbox> for StoreActor {
    type Result = MessageResult<Mailbox>;

    fn handle(&mut self, msg: Mailbox, _: &mut SyncContext<Self>) -> Self::Result {
        let done = match &self.store {
            Some(store) => self.mailbox(store, &msg.name, msg.request),
            None => Ok(MailDone {
                answer: None,
                notify: Vec::new(),
                emptied: Vec::new(),
            }),
        };
        MessageResult(done.unwrap_or_else(|e| {
            if let Some(held_back) = self.error_log.allow(std::time::Instant::now()) {
                warn!(user = %msg.name, error = %e, held_back, "mailbox request failed: the store failed");
            }
            MailDone {
                answer: None,
                notify: Vec::new(),
                emptied: Vec::new(),
            }
        }))
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
