//! Sealing what the server sends a Pigeon client after `Accept`: a keyed
//! BLAKE3 hash of the datagram, keyed by a key both derive from the
//! session's token (which only the client's endpoint ever received).
//! Someone who can forge the server's address but not read the client's
//! traffic cannot make a sealed datagram the client takes.
//!
//! ```text
//! sealed,<32 hex: first 16 bytes of keyed_hash(key, inner bytes)>,<inner datagram>
//! key = derive_key("pigeon1 server datagrams", token as 16 little-endian bytes)
//! ```

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::datagram::{hex, Datagram, DecodeError, Sealed};
use crate::ids::SessionToken;
use crate::utf16::{decode_utf16le, put_utf16le};

/// The context string the key is derived with from a token.
const CONTEXT: &str = "pigeon1 server datagrams";

/// The context string the key is derived with from the secret a login
/// handshake carries.
const HANDSHAKE_CONTEXT: &str = "pigeon1 server datagrams v3";

/// The bytes sealing adds to a datagram: `sealed,`, the MAC and a comma,
/// in UTF-16.
pub const SEAL_OVERHEAD: usize = 2 * ("sealed,".len() + 32 + 1);

/// A session's key for sealed datagrams.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The key of the session whose token is `token`.
    pub fn from_token(token: SessionToken) -> Self {
        Self(blake3::derive_key(CONTEXT, &token.0.to_le_bytes()))
    }

    /// The key of a session set up by the login handshake
    /// ([`crate::handshake`]), from the secret the server sent in it,
    /// encrypted to the client's key.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(blake3::derive_key(HANDSHAKE_CONTEXT, secret))
    }

    /// The MAC of `bytes`.
    pub fn mac(&self, bytes: &[u8]) -> [u8; 16] {
        let hash = blake3::keyed_hash(&self.0, bytes);
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&hash.as_bytes()[..16]);
        mac
    }

    /// Whether `mac` is the MAC of `bytes` (compared without an early
    /// exit).
    pub fn verify(&self, bytes: &[u8], mac: &[u8; 16]) -> bool {
        let expected = self.mac(bytes);
        expected
            .iter()
            .zip(mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for SessionKey {
    /// Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// Why a sealed datagram was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the MAC does not match: not sealed with this session's key")]
    BadMac,
    #[error("a sealed datagram inside a sealed one")]
    Nested,
    #[error("the sealed datagram does not decode: {0}")]
    Inner(#[from] DecodeError),
}

/// `datagram`, sealed with `key`. An end-to-end frame (`Secure`,
/// `Relayed`: binary, and authenticated by its own keys) is not a text
/// datagram `sealed` can carry: it is returned as it is.
pub fn seal(key: &SessionKey, datagram: &Datagram) -> Datagram {
    if matches!(datagram, Datagram::Secure(_) | Datagram::Relayed(_)) {
        return datagram.clone();
    }
    let bytes = datagram.to_bytes();
    let mut inner = String::new();
    if let Ok(text) = decode_utf16le(&bytes) {
        inner = text;
    }
    Datagram::Sealed(Sealed {
        mac: key.mac(&bytes),
        inner,
    })
}

/// The bytes of `inner` (an encoded datagram) sealed with `key`: for a
/// datagram encoded once and sealed for many receivers.
pub fn seal_bytes(key: &SessionKey, inner: &[u8]) -> Bytes {
    let mac = key.mac(inner);
    let mut buf = BytesMut::with_capacity(inner.len() + SEAL_OVERHEAD);
    put_utf16le(&mut buf, &format!("sealed,{},", hex(&mac)));
    buf.put_slice(inner);
    buf.freeze()
}

/// The datagram inside `sealed`, if `key` sealed it.
pub fn open(key: &SessionKey, sealed: &Sealed) -> Result<Datagram, SealError> {
    let mut bytes = BytesMut::with_capacity(2 * sealed.inner.len());
    put_utf16le(&mut bytes, &sealed.inner);
    if !key.verify(&bytes, &sealed.mac) {
        return Err(SealError::BadMac);
    }
    match Datagram::decode(&bytes)? {
        Datagram::Sealed(_) => Err(SealError::Nested),
        inner => Ok(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagram::Pong;

    #[test]
    fn only_the_sessions_key_opens_what_it_sealed() {
        let key = SessionKey::from_token(SessionToken(0x1234));
        let other = SessionKey::from_token(SessionToken(0x1235));
        let pong = Datagram::Pong(Pong { revision: 42 });
        let Datagram::Sealed(sealed) = seal(&key, &pong) else {
            panic!("not sealed")
        };
        assert_eq!(open(&key, &sealed), Ok(pong.clone()));
        assert_eq!(open(&other, &sealed), Err(SealError::BadMac));
        // Sealed once as bytes for many: the same datagram on the wire.
        let bytes = seal_bytes(&key, &pong.to_bytes());
        assert_eq!(bytes.len(), pong.encoded_len() + SEAL_OVERHEAD);
        assert_eq!(
            Datagram::decode(&bytes),
            Ok(Datagram::Sealed(sealed.clone()))
        );
        // Any change to the inner datagram breaks the seal.
        let mut forged = sealed.clone();
        forged.inner = "pong,43".into();
        assert_eq!(open(&key, &forged), Err(SealError::BadMac));
        // Sealing a sealed datagram gains nothing.
        let Datagram::Sealed(twice) = seal(&key, &Datagram::Sealed(sealed)) else {
            panic!("not sealed")
        };
        assert_eq!(open(&key, &twice), Err(SealError::Nested));
        assert_eq!(format!("{key:?}"), "SessionKey(..)");
    }
}
