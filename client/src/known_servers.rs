//! The servers' keys this user has seen, pinned on first contact like SSH's
//! known hosts: one line per server address in `known_servers` in the
//! per-user data folder, `<address> <64 hex: the server's public key>`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pigeon_shared::PublicKey;

/// The file's name in the data folder.
pub const KNOWN_SERVERS_FILE: &str = "known_servers";

/// The file in the per-user data folder, if there is one.
pub fn default_path() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("pigeon").join(KNOWN_SERVERS_FILE))
}

/// The key pinned for `server` in the file at `path` (none if the file or
/// the line is missing; lines that do not read are skipped).
pub fn lookup(path: &Path, server: SocketAddr) -> io::Result<Option<PublicKey>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let address: SocketAddr = words.next()?.parse().ok()?;
        let key = PublicKey::parse(words.next()?)?;
        (address == server).then_some(key)
    }))
}

/// Pins `key` for `server`: a line added to the file at `path` (made,
/// with its folder, if missing).
pub fn pin(path: &Path, server: SocketAddr, key: PublicKey) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{server} {key}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_key_is_found_by_its_server_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon").join(KNOWN_SERVERS_FILE);
        let a: SocketAddr = "127.0.0.1:7788".parse().unwrap();
        let b: SocketAddr = "[::1]:7788".parse().unwrap();
        assert_eq!(lookup(&path, a).unwrap(), None);
        pin(&path, a, PublicKey([1; 32])).unwrap();
        pin(&path, b, PublicKey([2; 32])).unwrap();
        fs::write(
            &path,
            format!("{}garbage line\n", fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        assert_eq!(lookup(&path, a).unwrap(), Some(PublicKey([1; 32])));
        assert_eq!(lookup(&path, b).unwrap(), Some(PublicKey([2; 32])));
    }
}
