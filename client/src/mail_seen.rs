//! The offline messages this user has been shown, kept in the data folder
//! (`mail_seen/<name>`), so that one shown but not yet acknowledged when the
//! client stopped (a crash, a lost connection) is not shown again by the
//! next run. A message is known by a digest of its sealed bytes, which no
//! other message shares (each is sealed with a fresh key), whatever server
//! or serial it comes under.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pigeon_shared::UserName;

/// Digests remembered (the latest): a mailbox holds at most 1,000 messages.
pub const MAX_SEEN: usize = 4096;

/// Bytes a line takes: 16 hex digits and a newline.
const LINE_BYTES: u64 = 17;

/// Where `own`'s shown messages are kept in the per-user data folder.
pub fn default_path(own: &UserName) -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("pigeon").join("mail_seen").join(own.as_str()))
}

/// The digests kept at `path`, oldest first, the latest [`MAX_SEEN`] (none
/// if the file is missing; lines that do not read are skipped).
pub fn load(path: &Path) -> io::Result<Vec<u64>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.take(LINE_BYTES * MAX_SEEN as u64 * 4)
        .read_to_string(&mut text)?;
    let digests: Vec<u64> = text
        .lines()
        .filter_map(|line| u64::from_str_radix(line.trim(), 16).ok())
        .collect();
    let skip = digests.len().saturating_sub(MAX_SEEN);
    Ok(digests.into_iter().skip(skip).collect())
}

/// Adds `digests` to the file at `path` (made, with its folder, private,
/// if missing) and waits until they are on disk. Past twice [`MAX_SEEN`]
/// lines, the file is written again with the latest only.
pub fn record(path: &Path, digests: &[u64]) -> io::Result<()> {
    if digests.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        pigeon_shared::identity::create_private_dir(dir)?;
    }
    let long = fs::metadata(path).is_ok_and(|m| m.len() > LINE_BYTES * 2 * MAX_SEEN as u64);
    if long {
        let mut kept = load(path)?;
        kept.extend_from_slice(digests);
        let skip = kept.len().saturating_sub(MAX_SEEN);
        let fresh = path.with_extension("new");
        write(&fresh, &kept[skip..], false)?;
        return fs::rename(&fresh, path);
    }
    write(path, digests, true)
}

fn write(path: &Path, digests: &[u64], append: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let text: String = digests.iter().map(|d| format!("{d:016x}\n")).collect();
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_messages_are_remembered_across_runs_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon").join("mail_seen").join("alice");
        assert_eq!(load(&path).unwrap(), Vec::<u64>::new());
        record(&path, &[1, u64::MAX]).unwrap();
        record(&path, &[]).unwrap();
        record(&path, &[7]).unwrap();
        assert_eq!(load(&path).unwrap(), vec![1, u64::MAX, 7]);
        // A damaged line is skipped, the rest kept.
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{text}garbage\n")).unwrap();
        assert_eq!(load(&path).unwrap(), vec![1, u64::MAX, 7]);
        // Many more: only the latest are read back, and the file is
        // written again before it grows past twice that.
        for chunk in (100..100 + 3 * MAX_SEEN as u64)
            .collect::<Vec<_>>()
            .chunks(500)
        {
            record(&path, chunk).unwrap();
            let len = fs::metadata(&path).unwrap().len();
            assert!(len <= LINE_BYTES * (2 * MAX_SEEN as u64 + 500), "{len}");
        }
        let kept = load(&path).unwrap();
        assert_eq!(kept.len(), MAX_SEEN);
        assert_eq!(kept.last(), Some(&(100 + 3 * MAX_SEEN as u64 - 1)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
