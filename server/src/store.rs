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
                 );",
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
}
