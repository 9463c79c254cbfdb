//! `Store`: what a server keeps across restarts, in one SQLite file in its
//! data folder: its own key pair and the registered names with their keys.
//! With `--ephemeral` the same store lives in memory and dies with the
//! process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pigeon_shared::identity::create_private_dir;
use pigeon_shared::{Identity, PublicKey, UserName};
use rusqlite::{params, Connection, OptionalExtension};

/// The store's file in a data folder.
pub const STORE_FILE: &str = "server.sqlite3";

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data folder {path}: {cause}")]
    Folder { path: String, cause: std::io::Error },
    #[error("the server's store {path}: {cause}")]
    Sqlite {
        path: String,
        cause: rusqlite::Error,
    },
}

/// The server's durable state.
pub struct Store {
    connection: Connection,
    path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path)
    }
}

impl Store {
    /// The store in folder `dir` (made, private to its owner, if missing).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir).map_err(|cause| StoreError::Folder {
            path: dir.display().to_string(),
            cause,
        })?;
        let path = dir.join(STORE_FILE);
        let shown = path.display().to_string();
        let connection = Connection::open(&path).map_err(|cause| StoreError::Sqlite {
            path: shown.clone(),
            cause,
        })?;
        Self::prepare(connection, shown)
    }

    /// A store in memory only.
    pub fn in_memory() -> Result<Self, StoreError> {
        let connection = Connection::open_in_memory().map_err(|cause| StoreError::Sqlite {
            path: ":memory:".to_owned(),
            cause,
        })?;
        Self::prepare(connection, ":memory:".to_owned())
    }

    fn prepare(connection: Connection, path: String) -> Result<Self, StoreError> {
        let store = Self { connection, path };
        // Several servers may share a folder (`pigeon --host` and
        // `pigeon-server` by default): wait for one another's locks, even
        // while the journal is being switched, which SQLite does not wait
        // for by itself.
        let mut attempts = 0;
        loop {
            match store.create_tables() {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && attempts < 100 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(store.error(e)),
                Ok(()) => return Ok(store),
            }
        }
    }

    fn create_tables(&self) -> rusqlite::Result<()> {
        self.connection.execute_batch(
            "PRAGMA busy_timeout = 5000;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS server_key (
                     id INTEGER PRIMARY KEY CHECK (id = 1),
                     secret BLOB NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS names (
                     name TEXT PRIMARY KEY,
                     key BLOB NOT NULL,
                     registered_at INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS mail (
                     serial INTEGER PRIMARY KEY AUTOINCREMENT,
                     recipient TEXT NOT NULL,
                     sender TEXT NOT NULL,
                     sender_key BLOB NOT NULL,
                     id INTEGER NOT NULL,
                     sealed BLOB NOT NULL,
                     stored_at INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS mail_by_recipient ON mail (recipient, serial);
                 CREATE TABLE IF NOT EXISTS receipts (
                     serial INTEGER PRIMARY KEY AUTOINCREMENT,
                     sender TEXT NOT NULL,
                     recipient TEXT NOT NULL,
                     id INTEGER NOT NULL,
                     at INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS receipts_by_sender ON receipts (sender, serial);",
        )
    }

    fn error(&self, cause: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            cause,
        }
    }

    /// Where the store is (`:memory:` for one in memory).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The server's key pair: the one kept here, or a new one, kept.
    pub fn identity(&self) -> Result<Identity, StoreError> {
        let kept: Option<Vec<u8>> = self
            .connection
            .query_row("SELECT secret FROM server_key WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.error(e))?;
        if let Some(secret) = kept.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
            return Ok(Identity::from_secret(secret));
        }
        // Another server on the same folder may make one at the same
        // moment: the first kept is everyone's.
        let made = Identity::generate();
        self.connection
            .execute(
                "INSERT OR IGNORE INTO server_key (id, secret) VALUES (1, ?1)",
                params![made.secret().as_slice()],
            )
            .map_err(|e| self.error(e))?;
        let kept: Vec<u8> = self
            .connection
            .query_row("SELECT secret FROM server_key WHERE id = 1", [], |row| {
                row.get(0)
            })
            .map_err(|e| self.error(e))?;
        Ok(<[u8; 32]>::try_from(kept).map_or(made, Identity::from_secret))
    }

    /// Every registered name with its key (rows that do not read as a
    /// name and a key are skipped).
    pub fn registry(&self) -> Result<HashMap<UserName, PublicKey>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, key FROM names")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.error(e))?;
        let mut registry = HashMap::new();
        for row in rows {
            let (name, key) = row.map_err(|e| self.error(e))?;
            if let (Ok(name), Some(key)) = (UserName::parse(&name), PublicKey::from_slice(&key)) {
                registry.insert(name, key);
            }
        }
        Ok(registry)
    }

    /// Keeps that `name` is registered to `key` (the first registration
    /// stands).
    pub fn register(&self, name: &UserName, key: &PublicKey) -> Result<(), StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.connection
            .execute(
                "INSERT OR IGNORE INTO names (name, key, registered_at) VALUES (?1, ?2, ?3)",
                params![
                    name.as_str(),
                    key.0.as_slice(),
                    i64::try_from(now).unwrap_or(0)
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Frees `name`: the key it was registered to, if it was.
    pub fn forget(&self, name: &UserName) -> Result<Option<PublicKey>, StoreError> {
        let key: Option<Vec<u8>> = self
            .connection
            .query_row(
                "DELETE FROM names WHERE name = ?1 RETURNING key",
                params![name.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        Ok(key.and_then(|bytes| PublicKey::from_slice(&bytes)))
    }
}

/// Bounds of the mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailLimits {
    /// Messages waiting for one recipient.
    pub max_messages: usize,
    /// Bytes (sealed) waiting for one recipient.
    pub max_bytes: usize,
    /// How long a message (or a receipt) is kept.
    pub keep_ms: u64,
    /// Receipts waiting for one sender (the oldest go first).
    pub max_receipts: usize,
}

impl Default for MailLimits {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_bytes: 1 << 20,
            keep_ms: 7 * 24 * 3600 * 1000,
            max_receipts: 10_000,
        }
    }
}

/// An offline message handed to the server.
#[derive(Debug, Clone, Copy)]
pub struct Letter<'a> {
    pub to: &'a UserName,
    pub from: &'a UserName,
    /// The key `from` is registered to.
    pub from_key: &'a PublicKey,
    /// The sender's number for it, returned in the receipt.
    pub id: u64,
    pub sealed: &'a [u8],
}

/// What became of a deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deposited {
    /// Kept, under this serial.
    Stored(u64),
    /// The recipient's mailbox is full: why.
    Full(String),
    /// Nobody is registered under the name.
    Unregistered,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// The key `name` is registered to.
    pub fn key_of(&self, name: &str) -> Result<Option<PublicKey>, StoreError> {
        let key: Option<Vec<u8>> = self
            .connection
            .query_row(
                "SELECT key FROM names WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        Ok(key.and_then(|bytes| PublicKey::from_slice(&bytes)))
    }

    /// Keeps `letter` within `limits`, at `now_ms`.
    pub fn deposit(
        &self,
        letter: &Letter<'_>,
        limits: &MailLimits,
        now_ms: u64,
    ) -> Result<Deposited, StoreError> {
        let Letter {
            to,
            from,
            from_key,
            id,
            sealed,
        } = *letter;
        self.expire(limits, now_ms)?;
        if self.key_of(to.as_str())?.is_none() {
            return Ok(Deposited::Unregistered);
        }
        let (count, bytes): (i64, i64) = self
            .connection
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(sealed)), 0) FROM mail WHERE recipient = ?1",
                params![to.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| self.error(e))?;
        let (count, bytes) = (from_sql(count) as usize, from_sql(bytes) as usize);
        if count >= limits.max_messages {
            return Ok(Deposited::Full(format!(
                "{to}'s mailbox is full: {count} messages wait, the most kept"
            )));
        }
        if bytes + sealed.len() > limits.max_bytes {
            return Ok(Deposited::Full(format!(
                "{to}'s mailbox is full: {} KiB wait, and this message would pass the {} KiB kept",
                bytes / 1024,
                limits.max_bytes / 1024
            )));
        }
        self.connection
            .execute(
                "INSERT INTO mail (recipient, sender, sender_key, id, sealed, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    to.as_str(),
                    from.as_str(),
                    from_key.0.as_slice(),
                    to_sql(id),
                    sealed,
                    to_sql(now_ms)
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(Deposited::Stored(from_sql(
            self.connection.last_insert_rowid(),
        )))
    }

    /// What waits for `name`: its messages in the order they were kept,
    /// and receipts for the messages it sent; at most `max` of each, and
    /// whether there are more.
    pub fn mailbox(
        &self,
        name: &UserName,
        max: usize,
    ) -> Result<
        (
            Vec<pigeon_shared::mailbox::Mail>,
            Vec<pigeon_shared::mailbox::Receipt>,
            bool,
        ),
        StoreError,
    > {
        let limit = to_sql(max as u64 + 1);
        let mut statement = self
            .connection
            .prepare(
                "SELECT serial, sender, sender_key, stored_at, sealed FROM mail
                 WHERE recipient = ?1 ORDER BY serial LIMIT ?2",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![name.as_str(), limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut mail = Vec::new();
        for row in rows {
            let (serial, from, key, stored_at, sealed) = row.map_err(|e| self.error(e))?;
            if let (Ok(from), Some(from_key)) =
                (UserName::parse(&from), PublicKey::from_slice(&key))
            {
                mail.push(pigeon_shared::mailbox::Mail {
                    serial: from_sql(serial),
                    from,
                    from_key,
                    stored_at_ms: from_sql(stored_at),
                    sealed,
                });
            }
        }
        let mut statement = self
            .connection
            .prepare(
                "SELECT serial, recipient, id FROM receipts
                 WHERE sender = ?1 ORDER BY serial LIMIT ?2",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![name.as_str(), limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut receipts = Vec::new();
        for row in rows {
            let (serial, to, id) = row.map_err(|e| self.error(e))?;
            if let Ok(to) = UserName::parse(&to) {
                receipts.push(pigeon_shared::mailbox::Receipt {
                    serial: from_sql(serial),
                    to,
                    id: from_sql(id),
                });
            }
        }
        let more = mail.len() > max || receipts.len() > max;
        mail.truncate(max);
        receipts.truncate(max);
        Ok((mail, receipts, more))
    }

    /// `name` has messages `mail` and receipts `receipts`: deleted, and a
    /// receipt kept for each message's sender. The senders, to tell.
    pub fn acknowledge(
        &self,
        name: &UserName,
        mail: &[u64],
        receipts: &[u64],
        limits: &MailLimits,
        now_ms: u64,
    ) -> Result<Vec<UserName>, StoreError> {
        let mut senders = Vec::new();
        for serial in mail {
            let taken: Option<(String, i64)> = self
                .connection
                .query_row(
                    "DELETE FROM mail WHERE serial = ?1 AND recipient = ?2 RETURNING sender, id",
                    params![to_sql(*serial), name.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(|e| self.error(e))?;
            let Some((sender, id)) = taken else {
                continue;
            };
            self.connection
                .execute(
                    "INSERT INTO receipts (sender, recipient, id, at) VALUES (?1, ?2, ?3, ?4)",
                    params![sender, name.as_str(), id, to_sql(now_ms)],
                )
                .map_err(|e| self.error(e))?;
            // A sender that never comes back keeps a bounded number.
            self.connection
                .execute(
                    "DELETE FROM receipts WHERE sender = ?1 AND serial NOT IN
                     (SELECT serial FROM receipts WHERE sender = ?1 ORDER BY serial DESC LIMIT ?2)",
                    params![sender, to_sql(limits.max_receipts as u64)],
                )
                .map_err(|e| self.error(e))?;
            if let Ok(sender) = UserName::parse(&sender) {
                if !senders.contains(&sender) {
                    senders.push(sender);
                }
            }
        }
        for serial in receipts {
            self.connection
                .execute(
                    "DELETE FROM receipts WHERE serial = ?1 AND sender = ?2",
                    params![to_sql(*serial), name.as_str()],
                )
                .map_err(|e| self.error(e))?;
        }
        Ok(senders)
    }

    /// Whether anything waits for `name`: messages to it, or receipts for
    /// messages it sent.
    pub fn has_mail(&self, name: &UserName) -> Result<bool, StoreError> {
        self.connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM mail WHERE recipient = ?1)
                     OR EXISTS (SELECT 1 FROM receipts WHERE sender = ?1)",
                params![name.as_str()],
                |row| row.get(0),
            )
            .map_err(|e| self.error(e))
    }

    /// Everyone something waits for (at a server's start).
    pub fn names_with_mail(&self) -> Result<Vec<UserName>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT recipient FROM mail UNION SELECT sender FROM receipts")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.error(e))?;
        let mut names = Vec::new();
        for row in rows {
            if let Ok(name) = UserName::parse(&row.map_err(|e| self.error(e))?) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Forgets what was kept longer than the limits allow.
    pub fn expire(&self, limits: &MailLimits, now_ms: u64) -> Result<usize, StoreError> {
        let before = to_sql(now_ms.saturating_sub(limits.keep_ms));
        let mail = self
            .connection
            .execute("DELETE FROM mail WHERE stored_at < ?1", params![before])
            .map_err(|e| self.error(e))?;
        self.connection
            .execute("DELETE FROM receipts WHERE at < ?1", params![before])
            .map_err(|e| self.error(e))?;
        Ok(mail)
    }
}

/// Where a server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In memory: nothing outlives the process (tests, the load test).
    Ephemeral,
    /// In this data folder.
    Folder(PathBuf),
}

impl StoreChoice {
    /// The per-user data folder's `pigeon-server` folder, if there is a
    /// per-user data folder.
    pub fn default_folder() -> Option<PathBuf> {
        dirs::data_dir().map(|dir| dir.join("pigeon-server"))
    }

    /// Opens the store chosen.
    pub fn open(&self) -> Result<Store, StoreError> {
        match self {
            Self::Ephemeral => Store::in_memory(),
            Self::Folder(dir) => Store::open(dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_and_the_names_outlive_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let alice = UserName::parse("alice").unwrap();
        let key = PublicKey([9; 32]);
        let identity = {
            let store = Store::open(dir.path()).unwrap();
            store.register(&alice, &key).unwrap();
            // The first registration stands.
            store.register(&alice, &PublicKey([1; 32])).unwrap();
            store.identity().unwrap()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.identity().unwrap().public(), identity.public());
        assert_eq!(store.registry().unwrap().get(&alice), Some(&key));
        assert_eq!(store.forget(&alice).unwrap(), Some(key));
        assert_eq!(store.forget(&alice).unwrap(), None);
        assert!(store.registry().unwrap().is_empty());
    }

    #[test]
    fn mail_waits_in_order_is_bounded_and_leaves_a_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (
            UserName::parse("alice").unwrap(),
            UserName::parse("bob").unwrap(),
        );
        let limits = MailLimits {
            max_messages: 3,
            max_bytes: 100,
            keep_ms: 1000,
            max_receipts: 10,
        };
        let key = PublicKey([1; 32]);
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store
                    .deposit(
                        &Letter {
                            to: &bob,
                            from: &alice,
                            from_key: &key,
                            id: 1,
                            sealed: b"x"
                        },
                        &limits,
                        10
                    )
                    .unwrap(),
                Deposited::Unregistered
            );
            store.register(&bob, &PublicKey([2; 32])).unwrap();
            for id in 1..=3 {
                assert!(matches!(
                    store
                        .deposit(
                            &Letter {
                                to: &bob,
                                from: &alice,
                                from_key: &key,
                                id,
                                sealed: &[id as u8; 10]
                            },
                            &limits,
                            10
                        )
                        .unwrap(),
                    Deposited::Stored(_)
                ));
            }
            assert!(matches!(
                store.deposit(&Letter { to: &bob, from: &alice, from_key: &key, id: 4, sealed: b"y" }, &limits, 10).unwrap(),
                Deposited::Full(why) if why.contains("3 messages")
            ));
        }
        // Kept across a restart, in order.
        let store = Store::open(dir.path()).unwrap();
        let (mail, receipts, more) = store.mailbox(&bob, 2).unwrap();
        assert!(more && receipts.is_empty());
        assert_eq!(mail.iter().map(|m| m.sealed[0]).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(mail[0].from, alice);
        // Acknowledged: gone, and alice has receipts (once).
        let senders = store
            .acknowledge(&bob, &[mail[0].serial, mail[1].serial], &[], &limits, 20)
            .unwrap();
        assert_eq!(senders, std::slice::from_ref(&alice));
        let (left, _, _) = store.mailbox(&bob, 10).unwrap();
        assert_eq!(left.len(), 1);
        let (_, receipts, _) = store.mailbox(&alice, 10).unwrap();
        assert_eq!(receipts.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        store
            .acknowledge(&alice, &[], &[receipts[0].serial], &limits, 20)
            .unwrap();
        assert_eq!(store.mailbox(&alice, 10).unwrap().1.len(), 1);
        // Bytes count too; and after the keeping time, all is gone.
        assert!(matches!(
            store.deposit(&Letter { to: &bob, from: &alice, from_key: &key, id: 5, sealed: &[0; 95] }, &limits, 30).unwrap(),
            Deposited::Full(why) if why.contains("KiB")
        ));
        assert!(store.has_mail(&bob).unwrap() && store.has_mail(&alice).unwrap());
        assert_eq!(store.names_with_mail().unwrap().len(), 2);
        assert_eq!(store.expire(&limits, 2000).unwrap(), 1);
        assert!(store.mailbox(&bob, 10).unwrap().0.is_empty());
        assert!(!store.has_mail(&bob).unwrap() && !store.has_mail(&alice).unwrap());
    }
}
