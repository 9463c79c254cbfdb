//! Who a Pigeon user or server is: a long-term X25519 key pair (the static
//! key of the Noise handshakes in [`crate::handshake`]), the text of its
//! key file, and the fingerprint people compare.
//!
//! ```text
//! key file:     # comment lines ...
//!               pigeon-identity-v1 <64 hex: the private key>
//! fingerprint:  first 16 bytes of BLAKE3 derive_key("pigeon1 fingerprint", public key),
//!               as 8 groups of 4 hex digits joined by `-`
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

/// Bytes of an X25519 key.
pub const KEY_BYTES: usize = 32;

/// The first word of a key file's key line.
const FILE_TAG: &str = "pigeon-identity-v1";

/// A user's or a server's public key. Shown as 64 lowercase hex digits on
/// the wire; people compare its [`Fingerprint`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_BYTES]);

impl PublicKey {
    /// Reads exactly 64 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        crate::datagram::parse_hex_array(text).map(Self)
    }

    /// Reads 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_BYTES]>::try_from(bytes).ok().map(Self)
    }

    /// What people compare to know they have the same key.
    pub fn fingerprint(&self) -> Fingerprint {
        let hash = blake3::derive_key("pigeon1 fingerprint", &self.0);
        let mut short = [0u8; 16];
        short.copy_from_slice(&hash[..16]);
        Fingerprint(short)
    }
}

impl fmt::Display for PublicKey {
    /// 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// 128 bits of a public key's hash: `1a2b-3c4d-5e6f-7081-92a3-b4c5-d6e7-f809`,
/// one word (no spaces) so that scripts can read it from a line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for byte in pair {
                write!(f, "{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A key pair: who this user or server is.
#[derive(Clone)]
pub struct Identity {
    secret: Zeroizing<[u8; KEY_BYTES]>,
    public: PublicKey,
}

impl fmt::Debug for Identity {
    /// The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the key file {path}: {cause}")]
    Read { path: String, cause: io::Error },
    #[error("cannot write the key file {path}: {cause}")]
    Write { path: String, cause: io::Error },
    #[error("{path} is not a Pigeon key file (no `{FILE_TAG} <64 hex digits>` line)")]
    Malformed { path: String },
    #[error("the key file {path} can be read by others (mode {mode:o}); make it private with `chmod 600 {path}`")]
    Exposed { path: String, mode: u32 },
}

impl Identity {
    /// A new key pair from a generator seeded by the operating system.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rng().fill_bytes(secret.as_mut());
        Self::from_secret(*secret)
    }

    /// The key pair whose private key is `secret`.
    pub fn from_secret(secret: [u8; KEY_BYTES]) -> Self {
        // Any 32 bytes are an X25519 private key; AWS-LC fails only on
        // allocation, which aborts elsewhere too.
        let public = crate::noise::public_key(&secret).unwrap_or_default();
        Self {
            secret: Zeroizing::new(secret),
            public: PublicKey(public),
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private key, for the Noise handshakes.
    pub fn secret(&self) -> &[u8; KEY_BYTES] {
        &self.secret
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(format!(
            "# Pigeon identity: keep this file private. Fingerprint {}\n{FILE_TAG} ",
            self.public.fingerprint()
        ));
        text.push_str(&Zeroizing::new(crate::datagram::hex(self.secret.as_ref())));
        text.push('\n');
        text
    }

    /// Reads a key file's text.
    pub fn from_file_text(text: &str) -> Option<Self> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .find_map(|line| {
                let rest = line.strip_prefix(FILE_TAG)?.trim();
                crate::datagram::parse_hex_array(rest).map(Self::from_secret)
            })
    }

    /// The identity in `path`; made, with its folder, if there is none
    /// (the file only its owner can read). Whether it was made.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), IdentityError> {
        match Self::load(path) {
            Ok(identity) => Ok((identity, false)),
            Err(IdentityError::Read { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                let identity = Self::generate();
                match identity.save(path) {
                    Ok(()) => Ok((identity, true)),
                    // Another process made it first: that one is the key.
                    Err(IdentityError::Write { cause, .. })
                        if cause.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        Self::load(path).map(|identity| (identity, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The identity in `path`, which must be private to its owner.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let read_error = |cause| IdentityError::Read {
            path: shown.clone(),
            cause,
        };
        let text = Zeroizing::new(fs::read_to_string(path).map_err(read_error)?);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(read_error)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Exposed { path: shown, mode });
            }
        }
        Self::from_file_text(&text).ok_or(IdentityError::Malformed { path: shown })
    }

    /// Writes a new key file at `path` (never over an existing one),
    /// readable and writable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let write_error = |cause| IdentityError::Write {
            path: path.display().to_string(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(write_error)?;
        }
        // Written whole under a name of its own, then linked into place:
        // the link fails if the file exists, and nobody reads half a key.
        let mut nonce = [0u8; 8];
        rand::rng().fill_bytes(&mut nonce);
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.new", crate::datagram::hex(&nonce)));
        let temporary = std::path::PathBuf::from(temporary);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&temporary).and_then(|mut file| {
            file.write_all(self.to_file_text().as_bytes())?;
            file.sync_all()
        });
        let linked = written.and_then(|()| fs::hard_link(&temporary, path));
        let _ = fs::remove_file(&temporary);
        linked.map_err(write_error)
    }
}

/// Makes `dir` and the folders above it that are missing, readable by
/// their owner only (on Unix).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_gives_back_the_same_identity() {
        let identity = Identity::generate();
        let again = Identity::from_file_text(&identity.to_file_text()).unwrap();
        assert_eq!(again.public(), identity.public());
        assert_eq!(again.secret(), identity.secret());
        assert!(Identity::from_file_text("pigeon-identity-v1 00").is_none());
        assert!(Identity::from_file_text("").is_none());
    }

    #[test]
    fn fingerprints_are_one_word_of_eight_groups() {
        let key = PublicKey([7; 32]);
        let text = key.fingerprint().to_string();
        assert_eq!(text.len(), 39);
        assert_eq!(text.split('-').count(), 8);
        assert_ne!(PublicKey([8; 32]).fingerprint(), key.fingerprint());
        assert_eq!(PublicKey::parse(&key.to_string()), Some(key));
    }

    #[test]
    fn processes_starting_together_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("bob.key");
        let keys: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| Identity::load_or_create(&path).map(|(id, _)| id.public())))
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().unwrap().unwrap())
                .collect()
        });
        assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files were left behind");
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("alice.key");
        let (made, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(made.public(), again.public());
        assert!(
            made.save(&path).is_err(),
            "an existing key file was overwritten"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Identity::load(&path),
                Err(IdentityError::Exposed { .. })
            ));
        }
    }
}
