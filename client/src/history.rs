//! `History`: each user's conversations on disk, in SQLite, with full-text
//! search. Blocking calls; [`crate::history_actor::HistoryActor`] runs them
//! on a thread of their own.
//!
//! One file may hold several local users' histories (`owner`); each sees
//! only its own. Search uses FTS5's trigram tokenizer, which finds any
//! substring of three characters or more in any script (Chinese has no
//! spaces between words); shorter words are matched with `LIKE`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// The history file's name inside the data directory.
pub const HISTORY_FILE: &str = "history.sqlite3";

/// How long a write waits for another process holding the file.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Most rows a search returns.
pub const MAX_SEARCH_RESULTS: usize = 200;

/// Who wrote a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the peer.
    Incoming,
    /// From this user.
    Outgoing,
}

/// What became of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDelivery {
    /// A message from the peer.
    Received,
    /// On its way, not yet confirmed (or the program ended first).
    Sending,
    /// Sent to a seed-era peer, which never confirms.
    Sent,
    /// Confirmed by the peer.
    Delivered,
    /// Given up.
    Failed,
}

impl StoredDelivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "received" => Self::Received,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Sending,
        }
    }
}

/// One message, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The other user in the conversation.
    pub peer: String,
    pub direction: Direction,
    /// When it was sent or received, on this machine's clock (Unix ms).
    pub at_ms: i64,
    /// The writer's time of day, as it travelled.
    pub talk_time: String,
    pub text: String,
    pub delivery: StoredDelivery,
}

/// Why the history cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot open the history file {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the history folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the history file {path} is not usable (damaged, or not a history file): {source}")]
    Unusable {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the history file is busy (another program holds it): {0}")]
    Busy(rusqlite::Error),
    #[error("history: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Where the history lives unless told otherwise: the per-user data
/// folder (`$XDG_DATA_HOME/pigeon` or `~/.local/share/pigeon` on Linux).
pub fn default_path() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("pigeon").join(HISTORY_FILE))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    peer TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    talk_time TEXT NOT NULL,
    body TEXT NOT NULL,
    delivery TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (owner, peer, id);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts
    USING fts5(body, content='messages', content_rowid='id', tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER IF NOT EXISTS messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
CREATE TABLE IF NOT EXISTS settings (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
";

/// One user's history. See the module documentation.
pub struct History {
    conn: Connection,
    owner: String,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl History {
    /// Opens (creating if needed) the history at `path` for `owner`.
    pub fn open(path: &Path, owner: &str) -> Result<Self, HistoryError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| HistoryError::Folder {
                path: folder.to_owned(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| HistoryError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::prepare(conn, owner).map_err(|e| match e {
            HistoryError::Sql(source) if is_busy(&source) => HistoryError::Busy(source),
            HistoryError::Sql(source) => HistoryError::Unusable {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// A history kept in memory only (for tests).
    pub fn in_memory(owner: &str) -> Result<Self, HistoryError> {
        Self::prepare(Connection::open_in_memory()?, owner)
    }

    fn prepare(conn: Connection, owner: &str) -> Result<Self, HistoryError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Reading the schema is the first thing that fails on a damaged
        // file or one that is not SQLite at all.
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn,
            owner: owner.to_owned(),
        })
    }

    /// Stores a message; returns its row, for [`History::set_delivery`].
    pub fn record(&self, message: &StoredMessage) -> Result<i64, HistoryError> {
        self.conn
            .prepare_cached(
                "INSERT INTO messages (owner, peer, outgoing, at_ms, talk_time, body, delivery)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                self.owner,
                message.peer,
                message.direction == Direction::Outgoing,
                message.at_ms,
                message.talk_time,
                message.text,
                message.delivery.as_str(),
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records what became of the message in `row`.
    pub fn set_delivery(&self, row: i64, delivery: StoredDelivery) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached("UPDATE messages SET delivery = ?1 WHERE id = ?2 AND owner = ?3")?
            .execute(params![delivery.as_str(), row, self.owner])?;
        Ok(())
    }

    /// The last `limit` messages with `peer`, oldest first.
    pub fn recent(&self, peer: &str, limit: usize) -> Result<Vec<StoredMessage>, HistoryError> {
        let mut rows = self.select(
            "SELECT peer, outgoing, at_ms, talk_time, body, delivery FROM messages
             WHERE owner = ?1 AND peer = ?2 ORDER BY id DESC LIMIT ?3",
            params![self.owner, peer, sql_limit(limit)],
        )?;
        rows.reverse();
        Ok(rows)
    }

    /// Messages in any conversation containing every word of `text`
    /// (case ignored), newest first, at most `limit`.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<StoredMessage>, HistoryError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        // Words of three characters or more go to the full-text index (as
        // quoted phrases, so that no word is read as query syntax); shorter
        // ones, which trigrams cannot find, are matched with LIKE.
        let (long, short): (Vec<&str>, Vec<&str>) =
            words.into_iter().partition(|w| w.chars().count() >= 3);
        let limit = sql_limit(limit.min(MAX_SEARCH_RESULTS));
        let mut sql = String::from(
            "SELECT m.peer, m.outgoing, m.at_ms, m.talk_time, m.body, m.delivery FROM messages m",
        );
        let mut values: Vec<String> = vec![self.owner.clone()];
        if long.is_empty() {
            sql.push_str(" WHERE m.owner = ?1");
        } else {
            let query = long
                .iter()
                .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" AND ");
            values.push(query);
            sql.push_str(
                " JOIN messages_fts f ON f.rowid = m.id WHERE m.owner = ?1 AND messages_fts MATCH ?2",
            );
        }
        for word in short {
            values.push(format!("%{}%", escape_like(word)));
            sql.push_str(&format!(" AND m.body LIKE ?{} ESCAPE '\\'", values.len()));
        }
        sql.push_str(&format!(" ORDER BY m.id DESC LIMIT {limit}"));
        self.select(&sql, rusqlite::params_from_iter(values.iter()))
    }

    fn select(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<StoredMessage>, HistoryError> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(params, |row| {
            Ok(StoredMessage {
                peer: row.get(0)?,
                direction: if row.get::<_, bool>(1)? {
                    Direction::Outgoing
                } else {
                    Direction::Incoming
                },
                at_ms: row.get(2)?,
                talk_time: row.get(3)?,
                text: row.get(4)?,
                delivery: StoredDelivery::parse(&row.get::<_, String>(5)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// A remembered setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>, HistoryError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM settings WHERE owner = ?1 AND key = ?2")?
            .query_row(params![self.owner, key], |row| row.get(0))
            .optional()?)
    }

    /// Remembers a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached(
                "INSERT INTO settings (owner, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![self.owner, key, value])?;
        Ok(())
    }
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn escape_like(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `e` means another connection holds the file.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(peer: &str, direction: Direction, text: &str) -> StoredMessage {
        StoredMessage {
            peer: peer.into(),
            direction,
            at_ms: 1_700_000_000_000,
            talk_time: "9:05:07".into(),
            text: text.into(),
            delivery: match direction {
                Direction::Incoming => StoredDelivery::Received,
                Direction::Outgoing => StoredDelivery::Sending,
            },
        }
    }

    fn texts(rows: &[StoredMessage]) -> Vec<&str> {
        rows.iter().map(|m| m.text.as_str()).collect()
    }

    #[test]
    fn recent_returns_the_last_messages_of_one_conversation_oldest_first() {
        let h = History::in_memory("alice").unwrap();
        for i in 0..10 {
            h.record(&message("bob", Direction::Incoming, &format!("b{i}")))
                .unwrap();
            h.record(&message("carol", Direction::Outgoing, &format!("c{i}")))
                .unwrap();
        }
        assert_eq!(texts(&h.recent("bob", 3).unwrap()), ["b7", "b8", "b9"]);
        let carol = h.recent("carol", 100).unwrap();
        assert_eq!(carol.len(), 10);
        assert!(carol.iter().all(|m| m.direction == Direction::Outgoing));
        assert!(h.recent("dave", 5).unwrap().is_empty());
    }

    #[test]
    fn delivery_is_updated_in_place() {
        let h = History::in_memory("alice").unwrap();
        let row = h
            .record(&message("bob", Direction::Outgoing, "hello"))
            .unwrap();
        h.set_delivery(row, StoredDelivery::Delivered).unwrap();
        assert_eq!(
            h.recent("bob", 1).unwrap()[0].delivery,
            StoredDelivery::Delivered
        );
    }

    #[test]
    fn search_finds_substrings_in_any_script_across_conversations() {
        let h = History::in_memory("alice").unwrap();
        h.record(&message("bob", Direction::Incoming, "Lunch at noon?"))
            .unwrap();
        h.record(&message("剑痴", Direction::Incoming, "今天中午一起吃饭吗"))
            .unwrap();
        h.record(&message(
            "carol",
            Direction::Outgoing,
            "no LUNCH for me, 吃饭 later",
        ))
        .unwrap();
        h.record(&message("bob", Direction::Incoming, "100% sure_thing"))
            .unwrap();
        assert_eq!(
            texts(&h.search("lunch", 10).unwrap()),
            ["no LUNCH for me, 吃饭 later", "Lunch at noon?"],
            "case is ignored, newest first"
        );
        assert_eq!(
            texts(&h.search("中午一起", 10).unwrap()),
            ["今天中午一起吃饭吗"]
        );
        // Two-character words are matched without the index.
        assert_eq!(
            texts(&h.search("吃饭", 10).unwrap()),
            ["no LUNCH for me, 吃饭 later", "今天中午一起吃饭吗"]
        );
        assert_eq!(
            texts(&h.search("lunch me", 10).unwrap()),
            ["no LUNCH for me, 吃饭 later"],
            "every word must be there"
        );
        // Query syntax and LIKE wildcards are taken literally.
        assert_eq!(texts(&h.search("0%", 10).unwrap()), ["100% sure_thing"]);
        assert_eq!(texts(&h.search("_", 10).unwrap()), ["100% sure_thing"]);
        assert_eq!(texts(&h.search("e_t", 10).unwrap()), ["100% sure_thing"]);
        assert!(h.search("r_t", 10).unwrap().is_empty());
        assert!(h.search("\"AND OR NEAR(", 10).unwrap().is_empty());
        assert_eq!(h.search("lunch", 1).unwrap().len(), 1);
        assert!(h.search("   ", 10).unwrap().is_empty());
    }

    #[test]
    fn owners_do_not_see_each_others_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite3");
        let alice = History::open(&path, "alice").unwrap();
        alice
            .record(&message("bob", Direction::Incoming, "for alice"))
            .unwrap();
        alice.set_setting("bell", "off").unwrap();
        let carol = History::open(&path, "carol").unwrap();
        assert!(carol.recent("bob", 10).unwrap().is_empty());
        assert!(carol.search("alice", 10).unwrap().is_empty());
        assert_eq!(carol.setting("bell").unwrap(), None);
        // And it is all still there when opened again.
        drop(alice);
        let alice = History::open(&path, "alice").unwrap();
        assert_eq!(texts(&alice.recent("bob", 10).unwrap()), ["for alice"]);
        assert_eq!(alice.setting("bell").unwrap().as_deref(), Some("off"));
        alice.set_setting("bell", "on").unwrap();
        assert_eq!(alice.setting("bell").unwrap().as_deref(), Some("on"));
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite3");
        std::fs::write(
            &path,
            b"this is not a database, just some text ".repeat(200),
        )
        .unwrap();
        let err = History::open(&path, "alice").unwrap_err();
        assert!(matches!(err, HistoryError::Unusable { .. }), "{err:?}");
        assert!(err.to_string().contains("not usable"), "{err}");
    }

    #[test]
    fn a_file_locked_by_another_program_is_reported_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite3");
        History::open(&path, "alice").unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = History::open(&path, "alice").unwrap_err();
        assert!(matches!(err, HistoryError::Busy(_)), "{err:?}");
        other.execute_batch("ROLLBACK").unwrap();
        History::open(&path, "alice").unwrap();
    }
}
