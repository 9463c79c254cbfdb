//! `StoreActor`: the server's durable state (registered names, the
//! mailboxes) in its [`Store`], on a thread of its own, so that the roster
//! and the TCP service never wait for the disk. In a cluster the mailboxes
//! are the ones all its servers share ([`SharedMail`]).

use actix::prelude::*;
use pigeon_shared::mailbox::{Mail, MailAnswer, MailRequest, Receipt, MAX_FETCH_ITEMS};
use pigeon_shared::{LogLimit, PublicKey, UserName};
use tracing::{info, warn};

use crate::shared_mail::SharedMail;
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
    /// The cluster's mailboxes, which take the place of the store's.
    shared: Option<SharedMail>,
    limits: MailLimits,
    error_log: LogLimit,
}

/// Where mailboxes are kept: this server's store, or the cluster's.
trait Mailboxes {
    fn key_of(&mut self, name: &str) -> Result<Option<PublicKey>, String>;
    fn deposit(
        &mut self,
        letter: &Letter<'_>,
        limits: &MailLimits,
        now: u64,
    ) -> Result<Deposited, String>;
    fn fetch(
        &mut self,
        name: &UserName,
        max: usize,
    ) -> Result<(Vec<Mail>, Vec<Receipt>, bool), String>;
    fn acknowledge(
        &mut self,
        name: &UserName,
        mail: &[u64],
        receipts: &[u64],
        limits: &MailLimits,
        now: u64,
    ) -> Result<Vec<UserName>, String>;
    fn has_mail(&mut self, name: &UserName) -> Result<bool, String>;
}

impl Mailboxes for &Store {
    fn key_of(&mut self, name: &str) -> Result<Option<PublicKey>, String> {
        Store::key_of(self, name).map_err(|e| e.to_string())
    }
    fn deposit(
        &mut self,
        letter: &Letter<'_>,
        limits: &MailLimits,
        now: u64,
    ) -> Result<Deposited, String> {
        Store::deposit(self, letter, limits, now).map_err(|e| e.to_string())
    }
    fn fetch(
        &mut self,
        name: &UserName,
        max: usize,
    ) -> Result<(Vec<Mail>, Vec<Receipt>, bool), String> {
        Store::mailbox(self, name, max).map_err(|e| e.to_string())
    }
    fn acknowledge(
        &mut self,
        name: &UserName,
        mail: &[u64],
        receipts: &[u64],
        limits: &MailLimits,
        now: u64,
    ) -> Result<Vec<UserName>, String> {
        Store::acknowledge(self, name, mail, receipts, limits, now).map_err(|e| e.to_string())
    }
    fn has_mail(&mut self, name: &UserName) -> Result<bool, String> {
        Store::has_mail(self, name).map_err(|e| e.to_string())
    }
}

impl Mailboxes for &mut SharedMail {
    fn key_of(&mut self, name: &str) -> Result<Option<PublicKey>, String> {
        SharedMail::key_of(self, name).map_err(|e| e.to_string())
    }
    fn deposit(
        &mut self,
        letter: &Letter<'_>,
        limits: &MailLimits,
        now: u64,
    ) -> Result<Deposited, String> {
        SharedMail::deposit(self, letter, limits, now).map_err(|e| e.to_string())
    }
    fn fetch(
        &mut self,
        name: &UserName,
        max: usize,
    ) -> Result<(Vec<Mail>, Vec<Receipt>, bool), String> {
        SharedMail::mailbox(self, name, max).map_err(|e| e.to_string())
    }
    fn acknowledge(
        &mut self,
        name: &UserName,
        mail: &[u64],
        receipts: &[u64],
        limits: &MailLimits,
        _now: u64,
    ) -> Result<Vec<UserName>, String> {
        SharedMail::acknowledge(self, name, mail, receipts, limits).map_err(|e| e.to_string())
    }
    fn has_mail(&mut self, name: &UserName) -> Result<bool, String> {
        SharedMail::has_mail(self, name).map_err(|e| e.to_string())
    }
}

/// Whether anything waits for `name` (a user logging in through this
/// server, which may not have heard of it).
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct HasMail {
    pub name: UserName,
}

impl StoreActor {
    pub fn new(store: Option<Store>, limits: MailLimits) -> Self {
        Self {
            store,
            shared: None,
            limits,
            error_log: LogLimit::default(),
        }
    }

    /// The mailboxes are the cluster's, in `shared`.
    pub fn with_shared_mail(mut self, shared: Option<SharedMail>) -> Self {
        self.shared = shared;
        self
    }

    fn mailbox(
        limits: &MailLimits,
        mut store: impl Mailboxes,
        name: &UserName,
        request: MailRequest,
    ) -> Result<MailDone, String> {
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
                match store.deposit(&letter, limits, now)? {
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
                let (mail, receipts, more) = store.fetch(name, MAX_FETCH_ITEMS)?;
                MailAnswer::Box {
                    mail,
                    receipts,
                    more,
                }
            }
            MailRequest::Ack { mail, receipts } => {
                notify = store.acknowledge(name, &mail, &receipts, limits, now)?;
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
        let done = match (&mut self.shared, &self.store) {
            (Some(shared), _) => Self::mailbox(&self.limits, shared, &msg.name, msg.request),
            (None, Some(store)) => Self::mailbox(&self.limits, store, &msg.name, msg.request),
            (None, None) => Ok(MailDone {
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

impl Handler<HasMail> for StoreActor {
    type Result = bool;

    fn handle(&mut self, msg: HasMail, _: &mut SyncContext<Self>) -> bool {
        let found = match (&mut self.shared, &self.store) {
            (Some(shared), _) => shared.has_mail(&msg.name).map_err(|e| e.to_string()),
            (None, Some(store)) => store.has_mail(&msg.name).map_err(|e| e.to_string()),
            (None, None) => Ok(false),
        };
        found.unwrap_or_else(|e| {
            if let Some(held_back) = self.error_log.allow(std::time::Instant::now()) {
                warn!(user = %msg.name, error = %e, held_back, "cannot tell whether mail waits");
            }
            false
        })
    }
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
