//! Relayed end-to-end frames: what a Pigeon client hands the server for a
//! peer it cannot reach directly, and what the server passes on. Both are
//! binary, like the frames they carry ([`crate::link`]), and start with
//! the same `00` byte that no text datagram starts with.
//!
//! ```text
//! to the server:  00 | 'T' | sender's session token (16, LE) | len | recipient's name | end-to-end frame
//! to the peer:    00 | 'F' | end-to-end frame (its sender's name inside)
//! ```
//!
//! The server reads the sender from the frame, checks the token and that
//! the request came from the sender's session endpoint, and sends the
//! frame on, two bytes longer than it is: never more than it was sent.

use bytes::BufMut;

use crate::datagram::{DecodeError, Verb};
use crate::ids::SessionToken;
use crate::link::{Secure, FRAME_MARK};
use crate::name::UserName;

/// The second byte of a request to relay.
pub const RELAY_KIND: u8 = b'T';
/// The second byte of a relayed frame.
pub const RELAYED_KIND: u8 = b'F';

/// A request to relay `secure` to `to`, from the session whose token is
/// `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub token: SessionToken,
    pub to: UserName,
    pub secure: Secure,
}

fn bad(verb: Verb, field: &'static str) -> DecodeError {
    DecodeError::BadField {
        verb,
        field,
        text: String::new(),
    }
}

impl Relay {
    /// Decodes a request (`00 'T' ...`). Total.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bad = |field| bad(Verb::Relay, field);
        let rest = bytes
            .strip_prefix(&[FRAME_MARK, RELAY_KIND])
            .ok_or_else(|| bad("mark"))?;
        let (token, rest) = rest.split_first_chunk::<16>().ok_or_else(|| bad("token"))?;
        let (&len, rest) = rest.split_first().ok_or_else(|| bad("name"))?;
        let (name, frame) = rest
            .split_at_checked(usize::from(len))
            .ok_or_else(|| bad("name"))?;
        let name = std::str::from_utf8(name).map_err(|_| bad("name"))?;
        let to = UserName::parse(name).map_err(|source| DecodeError::BadName {
            verb: Verb::Relay,
            source,
        })?;
        let secure = Secure::decode(frame)?;
        Ok(Self {
            token: SessionToken(u128::from_le_bytes(*token)),
            to,
            secure,
        })
    }

    /// Appends the request's bytes to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let name = self.to.as_str().as_bytes();
        buf.put_u8(FRAME_MARK);
        buf.put_u8(RELAY_KIND);
        buf.put_u128_le(self.token.0);
        // A name is at most 32 characters of at most 4 bytes: it fits.
        buf.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
        buf.put_slice(name);
        self.secure.encode(buf);
    }
}

/// Decodes a relayed frame (`00 'F' ...`). Total.
pub fn decode_relayed(bytes: &[u8]) -> Result<Secure, DecodeError> {
    let frame = bytes
        .strip_prefix(&[FRAME_MARK, RELAYED_KIND])
        .ok_or_else(|| bad(Verb::Relayed, "mark"))?;
    Secure::decode(frame)
}

/// Appends `secure`, relayed, to `buf`.
pub fn encode_relayed(secure: &Secure, buf: &mut impl BufMut) {
    buf.put_u8(FRAME_MARK);
    buf.put_u8(RELAYED_KIND);
    secure.encode(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::SecureFrame;
    use crate::Datagram;

    fn secure() -> Secure {
        Secure {
            from: UserName::parse("alice").unwrap(),
            frame: SecureFrame::Data {
                receiver: 7,
                counter: 9,
                ciphertext: vec![1; 20],
            },
        }
    }

    #[test]
    fn a_request_and_its_relayed_frame_round_trip_and_the_frame_grows_by_two_bytes_only() {
        let relay = Datagram::Relay(Relay {
            token: SessionToken(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            to: UserName::parse("bob").unwrap(),
            secure: secure(),
        });
        let bytes = relay.to_bytes();
        assert_eq!(Datagram::decode(&bytes), Ok(relay.clone()));
        let relayed = Datagram::Relayed(secure());
        let out = relayed.to_bytes();
        assert_eq!(Datagram::decode(&out), Ok(relayed));
        assert_eq!(out.len(), Datagram::Secure(secure()).to_bytes().len() + 2);
        assert!(out.len() < bytes.len());
    }

    #[test]
    fn truncated_or_garbled_requests_are_errors_not_panics() {
        let bytes = Datagram::Relay(Relay {
            token: SessionToken(1),
            to: UserName::parse("bob").unwrap(),
            secure: secure(),
        })
        .to_bytes();
        // The data frame's 20 bytes of ciphertext hold a 16-byte tag at
        // least: cut more than 4 and nothing is left that decodes.
        for cut in 0..bytes.len() - 4 {
            assert!(Datagram::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut bad_name = bytes.to_vec();
        bad_name[18] = 200;
        assert!(Datagram::decode(&bad_name).is_err());
        assert!(decode_relayed(&[0, b'F']).is_err());
    }
}
