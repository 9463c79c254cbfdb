//! The offline mailboxes of a cluster, in the Redis its servers share (so
//! that a message handed to one server is delivered through another), with
//! the same limits and answers as the single server's [`crate::store`].
//! Used from the store's own thread, with a blocking connection made when
//! first needed (and again after an error).
//!
//! ```text
//! <ns>:mail-serial        counter of message serials
//! <ns>:mail:<serial>      hash: to, from, key (hex), id, at (ms), sealed; expires after the keep time
//! <ns>:inbox:<name>       sorted set of the serials waiting for <name>
//! <ns>:inbox-bytes:<name> bytes (sealed) waiting for <name>
//! <ns>:receipt-serial     counter of receipt serials
//! <ns>:receipts:<name>    sorted set of "<serial>;<recipient>;<id>" for what <name> sent, by serial
//! <ns>:names              hash name -> key (the registry, see crate::cluster)
//! ```

use pigeon_shared::mailbox::{Mail, Receipt};
use pigeon_shared::{PublicKey, UserName};
use redis::Connection;

use crate::store::{Deposited, Letter, MailLimits};

/// Keeps a letter within the limits, atomically: `{serial, 0}`, or
/// `{-1, count}` (too many), `{-2, bytes}` (too large).
const DEPOSIT: &str = r"
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then return {-1, n} end
local b = tonumber(redis.call('GET', KEYS[2]) or '0')
if b + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {-2, b} end
local serial = redis.call('INCR', KEYS[3])
local key = ARGV[11] .. ':mail:' .. serial
redis.call('HSET', key, 'to', ARGV[4], 'from', ARGV[5], 'key', ARGV[6], 'id', ARGV[7], 'at', ARGV[8], 'sealed', ARGV[9])
redis.call('PEXPIRE', key, ARGV[10])
redis.call('ZADD', KEYS[1], serial, serial)
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[10])
return {serial, 0}
";

/// A message's hash, as read.
type Fields = std::collections::HashMap<String, Vec<u8>>;

/// A field of a message's hash, as text.
fn text_of(fields: &Fields, field: &str) -> Option<String> {
    fields
        .get(field)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .map(str::to_owned)
}

/// Why the shared mailboxes did not answer.
#[derive(Debug, thiserror::Error)]
#[error("the cluster's mailboxes (Redis): {0}")]
pub struct SharedMailError(#[from] redis::RedisError);

/// The shared mailboxes. See the module documentation.
pub struct SharedMail {
    client: redis::Client,
    namespace: String,
    connection: Option<Connection>,
}

impl SharedMail {
    /// Mailboxes in the Redis `client` reaches, under `namespace`.
    pub fn new(client: redis::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            connection: None,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.namespace)
    }

    /// Runs `work` on the connection (made if need be; dropped after an
    /// error, so that the next call connects again).
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut Connection, &str) -> redis::RedisResult<T>,
    ) -> Result<T, SharedMailError> {
        if self.connection.is_none() {
            let connection = self
                .client
                .get_connection_with_timeout(std::time::Duration::from_secs(2))?;
            connection.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            self.connection = Some(connection);
        }
        let namespace = self.namespace.clone();
        let Some(connection) = self.connection.as_mut() else {
            return Err(SharedMailError(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no connection",
            ))));
        };
        let result = work(connection, &namespace);
        if result.is_err() {
            self.connection = None;
        }
        result.map_err(SharedMailError)
    }

    /// The key `name` is registered to, in the cluster's registry.
    pub fn key_of(&mut self, name: &str) -> Result<Option<PublicKey>, SharedMailError> {
        let names = self.key("names");
        let key: Option<String> =
            self.with(|c, _| redis::cmd("HGET").arg(&names).arg(name).query(c))?;
        Ok(key.as_deref().and_then(PublicKey::parse))
    }

    /// Keeps `letter` within `limits`, at `now_ms`.
    pub fn deposit(
        &mut self,
        letter: &Letter<'_>,
        limits: &MailLimits,
        now_ms: u64,
    ) -> Result<Deposited, SharedMailError> {
        if self.key_of(letter.to.as_str())?.is_none() {
            return Ok(Deposited::Unregistered);
        }
        let inbox = self.key(&format!("inbox:{}", letter.to));
        let bytes = self.key(&format!("inbox-bytes:{}", letter.to));
        let serials = self.key("mail-serial");
        let (code, detail): (i64, u64) = self.with(|c, ns| {
            redis::Script::new(DEPOSIT)
                .key(&inbox)
                .key(&bytes)
                .key(&serials)
                .arg(limits.max_messages)
                .arg(limits.max_bytes)
                .arg(letter.sealed.len())
                .arg(letter.to.as_str())
                .arg(letter.from.as_str())
                .arg(letter.from_key.to_string())
                .arg(letter.id)
                .arg(now_ms)
                .arg(letter.sealed)
                .arg(limits.keep_ms.max(1))
                .arg(ns)
                .invoke(c)
        })?;
        Ok(match code {
            -1 => Deposited::Full(format!(
                "{} has {detail} messages waiting, the most kept",
                letter.to
            )),
            -2 => Deposited::Full(format!(
                "{} has {detail} bytes waiting; this message would pass the {} kept",
                letter.to, limits.max_bytes
            )),
            serial => Deposited::Stored(u64::try_from(serial).unwrap_or(0)),
        })
    }

    /// What waits for `name`: at most `max` messages and receipts each,
    /// oldest first, and whether there are more.
    pub fn mailbox(
        &mut self,
        name: &UserName,
        max: usize,
    ) -> Result<(Vec<Mail>, Vec<Receipt>, bool), SharedMailError> {
        let inbox = self.key(&format!("inbox:{name}"));
        let receipts_key = self.key(&format!("receipts:{name}"));
        let last = isize::try_from(max).unwrap_or(isize::MAX);
        let (serials, receipts): (Vec<u64>, Vec<String>) = self.with(|c, _| {
            let serials = redis::cmd("ZRANGE").arg(&inbox).arg(0).arg(last).query(c)?;
            let receipts = redis::cmd("ZRANGE")
                .arg(&receipts_key)
                .arg(0)
                .arg(last)
                .query(c)?;
            Ok((serials, receipts))
        })?;
        let mut mail = Vec::new();
        for serial in serials {
            let record = self.key(&format!("mail:{serial}"));
            let fields: Fields = self.with(|c, _| redis::cmd("HGETALL").arg(&record).query(c))?;
            let text = |field: &str| text_of(&fields, field);
            let parsed = (
                text("from").and_then(|from| UserName::parse(&from).ok()),
                text("key").as_deref().and_then(PublicKey::parse),
                text("at").and_then(|at| at.parse::<u64>().ok()),
                fields.get("sealed"),
            );
            match parsed {
                (Some(from), Some(from_key), Some(stored_at_ms), Some(sealed)) => {
                    mail.push(Mail {
                        serial,
                        from,
                        from_key,
                        stored_at_ms,
                        sealed: sealed.clone(),
                    });
                }
                // Gone past its keep time: off the inbox too.
                _ => {
                    self.with(|c, _| redis::cmd("ZREM").arg(&inbox).arg(serial).query::<()>(c))?;
                }
            }
        }
        let receipts: Vec<Receipt> = receipts
            .iter()
            .filter_map(|entry| {
                let mut parts = entry.splitn(3, ';');
                Some(Receipt {
                    serial: parts.next()?.parse().ok()?,
                    to: UserName::parse(parts.next()?).ok()?,
                    id: parts.next()?.parse().ok()?,
                })
            })
            .collect();
        let more = mail.len() > max || receipts.len() > max;
        let mut mail = mail;
        let mut receipts = receipts;
        mail.truncate(max);
        receipts.truncate(max);
        Ok((mail, receipts, more))
    }

    /// `name` has messages `mail` and receipts `receipts`: deleted, and a
    /// receipt kept for each message's sender. The senders, to tell.
    pub fn acknowledge(
        &mut self,
        name: &UserName,
        mail: &[u64],
        receipts: &[u64],
        limits: &MailLimits,
    ) -> Result<Vec<UserName>, SharedMailError> {
        let inbox = self.key(&format!("inbox:{name}"));
        let bytes = self.key(&format!("inbox-bytes:{name}"));
        let mut senders = Vec::new();
        for &serial in mail {
            let record = self.key(&format!("mail:{serial}"));
            // Only the first to take it off the inbox goes on.
            let taken: i64 =
                self.with(|c, _| redis::cmd("ZREM").arg(&inbox).arg(serial).query(c))?;
            if taken != 1 {
                continue;
            }
            let fields: Fields = self.with(|c, _| redis::cmd("HGETALL").arg(&record).query(c))?;
            let text = |field: &str| text_of(&fields, field);
            let size = fields.get("sealed").map_or(0, Vec::len);
            let (Some(sender), Some(id)) = (
                text("from").and_then(|from| UserName::parse(&from).ok()),
                text("id").and_then(|id| id.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let receipts_key = self.key(&format!("receipts:{sender}"));
            let receipt_serials = self.key("receipt-serial");
            let keep = limits.keep_ms.max(1);
            let max_receipts = isize::try_from(limits.max_receipts).unwrap_or(isize::MAX);
            self.with(|c, _| {
                redis::cmd("DEL").arg(&record).query::<()>(c)?;
                redis::cmd("DECRBY").arg(&bytes).arg(size).query::<()>(c)?;
                let receipt: u64 = redis::cmd("INCR").arg(&receipt_serials).query(c)?;
                redis::cmd("ZADD")
                    .arg(&receipts_key)
                    .arg(receipt)
                    .arg(format!("{receipt};{name};{id}"))
                    .query::<()>(c)?;
                // A sender that never comes back keeps a bounded number.
                redis::cmd("ZREMRANGEBYRANK")
                    .arg(&receipts_key)
                    .arg(0)
                    .arg(-(max_receipts + 1))
                    .query::<()>(c)?;
                redis::cmd("PEXPIRE")
                    .arg(&receipts_key)
                    .arg(keep)
                    .query::<()>(c)
            })?;
            if !senders.contains(&sender) {
                senders.push(sender);
            }
        }
        let receipts_key = self.key(&format!("receipts:{name}"));
        for &serial in receipts {
            self.with(|c, _| {
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&receipts_key)
                    .arg(serial)
                    .arg(serial)
                    .query::<()>(c)
            })?;
        }
        Ok(senders)
    }

    /// Whether anything waits for `name`.
    pub fn has_mail(&mut self, name: &UserName) -> Result<bool, SharedMailError> {
        let inbox = self.key(&format!("inbox:{name}"));
        let receipts = self.key(&format!("receipts:{name}"));
        let (messages, receipts): (u64, u64) = self.with(|c, _| {
            Ok((
                redis::cmd("ZCARD").arg(&inbox).query(c)?,
                redis::cmd("ZCARD").arg(&receipts).query(c)?,
            ))
        })?;
        Ok(messages + receipts > 0)
    }
}
