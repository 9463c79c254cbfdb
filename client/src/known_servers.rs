//! The keys this user has seen, pinned on first contact like SSH's known
//! hosts. Servers': one line per server address in `known_servers` in the
//! per-user data folder, `<address> <64 hex: the server's public key>`.
//! Peers': one file per user of this machine, `known_keys/<own name>`, one
//! line per peer, `<name> <64 hex>` (the last line for a name counts).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pigeon_shared::{PublicKey, UserName};

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
    append_line(path, &format!("{server} {key}"))
}

/// The peers' keys file of `own` in the per-user data folder.
pub fn default_peers_path(own: &UserName) -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("pigeon").join("known_keys").join(own.as_str()))
}

/// Most bytes of a peers' keys file read (a line is under 110 bytes).
const MAX_PEERS_FILE: u64 = 16 << 20;

/// The peers' keys pinned in the file at `path` (none if it is missing;
/// lines that do not read are skipped; for a name pinned twice, the last).
/// A file grown to more than twice the lines it needs (keys trusted again
/// add a line each) is written again with one line a name.
pub fn load_peers(path: &Path) -> io::Result<BTreeMap<UserName, PublicKey>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    let read = io::Read::take(file, MAX_PEERS_FILE).read_to_string(&mut text)?;
    let pins: BTreeMap<UserName, PublicKey> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = UserName::parse(words.next()?).ok()?;
            let key = PublicKey::parse(words.next()?)?;
            Some((name, key))
        })
        .collect();
    // Only a file read whole is written again (the lines past the limit
    // would be lost).
    let whole = u64::try_from(read).is_ok_and(|read| read < MAX_PEERS_FILE);
    if whole && text.lines().count() > 2 * pins.len() + 64 {
        let lines: Vec<String> = pins
            .iter()
            .map(|(name, key)| format!("{name} {key}"))
            .collect();
        let fresh = path.with_extension("new");
        let _ = fs::remove_file(&fresh);
        append_lines(&fresh, &lines)?;
        fs::rename(&fresh, path)?;
    }
    Ok(pins)
}

/// Pins each key for its peer: a line each, added to the file at `path`
/// (made, with its folder, private, if missing); a later line for a name
/// replaces an earlier one.
pub fn pin_peers(path: &Path, pins: &[(UserName, PublicKey)]) -> io::Result<()> {
    let lines: Vec<String> = pins
        .iter()
        .map(|(name, key)| format!("{name} {key}"))
        .collect();
    append_lines(path, &lines)
}

fn append_line(path: &Path, line: &str) -> io::Result<()> {
    append_lines(path, &[line])
}

/// Appends `lines` in one write, and waits until they are on disk.
fn append_lines(path: &Path, lines: &[impl AsRef<str>]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        pigeon_shared::identity::create_private_dir(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let mut text = String::new();
    for line in lines {
        text.push_str(line.as_ref());
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
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

    #[test]
    fn the_last_key_pinned_for_a_peer_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_keys").join("alice");
        assert!(load_peers(&path).unwrap().is_empty());
        let bob = UserName::parse("bob").unwrap();
        let carol = UserName::parse("carol").unwrap();
        pin_peers(
            &path,
            &[
                (bob.clone(), PublicKey([1; 32])),
                (carol.clone(), PublicKey([2; 32])),
            ],
        )
        .unwrap();
        pin_peers(&path, &[(bob.clone(), PublicKey([3; 32]))]).unwrap();
        let pins = load_peers(&path).unwrap();
        assert_eq!(pins.get(&bob), Some(&PublicKey([3; 32])));
        assert_eq!(pins.get(&carol), Some(&PublicKey([2; 32])));
    }

    #[test]
    fn a_file_of_keys_trusted_again_and_again_is_written_again_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_keys").join("alice");
        let bob = UserName::parse("bob").unwrap();
        let carol = UserName::parse("carol").unwrap();
        pin_peers(&path, &[(carol.clone(), PublicKey([2; 32]))]).unwrap();
        for i in 0..200u8 {
            pin_peers(&path, &[(bob.clone(), PublicKey([i; 32]))]).unwrap();
        }
        let pins = load_peers(&path).unwrap();
        assert_eq!(pins.get(&bob), Some(&PublicKey([199; 32])));
        assert_eq!(pins.get(&carol), Some(&PublicKey([2; 32])));
        // Two lines now, the same keys read back, still private.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
        assert_eq!(load_peers(&path).unwrap(), pins);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
