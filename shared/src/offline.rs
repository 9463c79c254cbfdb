//! Offline messages: a message to a registered user who is not online,
//! sealed to the recipient's key so that only the recipient can read it
//! (the server that keeps it cannot), and signed, in effect, by the
//! sender's: Noise `X` (one way; the sender's static key travels encrypted
//! and is authenticated by the recipient's), through snow. Also the text of
//! the mailbox requests and answers on the server's Pigeon roster port.
//!
//! ```text
//! prologue  = "pigeon1 offline\n" <from> "\n" <to>
//! sealed    = chunk... ; chunk = length (u16 LE) | bytes
//!             chunk 1: X's message (e, s, payload), chunks 2..: transport messages
//! plaintext = "pigeon1 offline\n" <unix ms sent> "\n" <time of day> "\n" <text>
//! ```
//!
//! Nothing here does I/O.

use snow::Builder;

use crate::identity::{Identity, PublicKey, KEY_BYTES};
use crate::link::TAG_BYTES;
use crate::name::UserName;
use crate::noise;
use crate::talk_time::TalkTime;

/// The Noise protocol of offline messages.
pub const OFFLINE_PROTOCOL: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";

/// Most bytes of a Noise message.
const NOISE_MAX: usize = 65_535;

/// Most plaintext bytes in the first chunk (after `e`, the encrypted `s`
/// and the payload's tag).
const FIRST_CHUNK: usize = NOISE_MAX - KEY_BYTES - (KEY_BYTES + TAG_BYTES) - TAG_BYTES;

/// Most plaintext bytes in a later chunk.
const LATER_CHUNK: usize = NOISE_MAX - TAG_BYTES;

/// Most bytes of a sealed message a server keeps (a message of the most
/// characters a client sends, 53,760 UTF-16 units, is under 170 kB).
pub const MAX_SEALED_BYTES: usize = 256 << 10;

/// What the recipient reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// When it was sent, in milliseconds since the Unix epoch (the
    /// sender's clock).
    pub sent_at_ms: u64,
    /// The time of day it carries, as a `chat` would.
    pub time: TalkTime,
    pub text: String,
}

/// Why a sealed message does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfflineError {
    #[error("the sealed message does not verify")]
    Invalid,
    #[error("the sealed message is cut short or too long")]
    Length,
    #[error("the sealed message's text is not one")]
    Malformed,
}

impl From<snow::Error> for OfflineError {
    fn from(_: snow::Error) -> Self {
        Self::Invalid
    }
}

fn prologue(from: &UserName, to: &UserName) -> Vec<u8> {
    format!("pigeon1 offline\n{from}\n{to}").into_bytes()
}

fn builder<'a>(identity: &'a Identity, prologue: &'a [u8]) -> Result<Builder<'a>, OfflineError> {
    Ok(noise::builder(OFFLINE_PROTOCOL, identity, prologue)?)
}

fn push_chunk(out: &mut Vec<u8>, chunk: &[u8]) -> Result<(), OfflineError> {
    let len = u16::try_from(chunk.len()).map_err(|_| OfflineError::Length)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(chunk);
    Ok(())
}

/// `message` from `from` (this `sender`) to `to`, sealed to `recipient`.
pub fn seal(
    sender: &Identity,
    from: &UserName,
    to: &UserName,
    recipient: PublicKey,
    message: &OfflineMessage,
) -> Result<Vec<u8>, OfflineError> {
    let plain = format!(
        "pigeon1 offline\n{}\n{}\n{}",
        message.sent_at_ms, message.time, message.text
    )
    .into_bytes();
    if plain.len() > MAX_SEALED_BYTES {
        return Err(OfflineError::Length);
    }
    let prologue = prologue(from, to);
    let mut state = builder(sender, &prologue)?
        .remote_public_key(&recipient.0)?
        .build_initiator()?;
    let (first, rest) = plain.split_at(plain.len().min(FIRST_CHUNK));
    let mut buf = vec![0u8; NOISE_MAX];
    let mut out = Vec::with_capacity(plain.len() + 128);
    let written = state.write_message(first, &mut buf)?;
    push_chunk(&mut out, buf.get(..written).ok_or(OfflineError::Length)?)?;
    let mut transport = state.into_transport_mode()?;
    for chunk in rest.chunks(LATER_CHUNK) {
        let written = transport.write_message(chunk, &mut buf)?;
        push_chunk(&mut out, buf.get(..written).ok_or(OfflineError::Length)?)?;
    }
    Ok(out)
}

/// What a sealed message is known by: no two messages share it (each is
/// sealed with a fresh ephemeral key), whatever server keeps it.
pub fn digest(sealed: &[u8]) -> u64 {
    let hash = blake3::hash(sealed);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Opens a message sealed to this `recipient` by `from` for `to`: the
/// sender's key (which the caller checks is `from`'s) and the message.
pub fn open(
    recipient: &Identity,
    from: &UserName,
    to: &UserName,
    sealed: &[u8],
) -> Result<(PublicKey, OfflineMessage), OfflineError> {
    if sealed.len() > MAX_SEALED_BYTES + 1024 {
        return Err(OfflineError::Length);
    }
    let mut chunks = Vec::new();
    let mut rest = sealed;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or(OfflineError::Length)?;
        let len: [u8; 2] = len.try_into().map_err(|_| OfflineError::Length)?;
        let len = usize::from(u16::from_le_bytes(len));
        let (chunk, tail) = tail.split_at_checked(len).ok_or(OfflineError::Length)?;
        chunks.push(chunk);
        rest = tail;
    }
    let (first, later) = chunks.split_first().ok_or(OfflineError::Length)?;
    let prologue = prologue(from, to);
    let mut state = builder(recipient, &prologue)?.build_responder()?;
    let mut buf = vec![0u8; NOISE_MAX];
    let mut plain = Vec::with_capacity(sealed.len());
    let read = state.read_message(first, &mut buf)?;
    plain.extend_from_slice(buf.get(..read).ok_or(OfflineError::Length)?);
    let sender = state
        .get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or(OfflineError::Invalid)?;
    let mut transport = state.into_transport_mode()?;
    for chunk in later {
        let read = transport.read_message(chunk, &mut buf)?;
        plain.extend_from_slice(buf.get(..read).ok_or(OfflineError::Length)?);
    }
    let text = String::from_utf8(plain).map_err(|_| OfflineError::Malformed)?;
    let mut parts = text.splitn(4, '\n');
    if parts.next() != Some("pigeon1 offline") {
        return Err(OfflineError::Malformed);
    }
    let sent_at_ms = parts
        .next()
        .and_then(crate::ids::parse_decimal)
        .ok_or(OfflineError::Malformed)?;
    let time = parts
        .next()
        .and_then(|t| TalkTime::parse(t).ok())
        .ok_or(OfflineError::Malformed)?;
    let text = parts.next().ok_or(OfflineError::Malformed)?.to_owned();
    Ok((
        sender,
        OfflineMessage {
            sent_at_ms,
            time,
            text,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[test]
    fn only_the_recipient_opens_it_and_learns_who_sealed_it() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let (a, b) = (name("alice"), name("bob"));
        for text in ["hi bob", &"天涯若比邻, ".repeat(8_000)] {
            let message = OfflineMessage {
                sent_at_ms: 1_764_000_000_000,
                time: TalkTime::parse("9:05:07").unwrap(),
                text: text.to_owned(),
            };
            let sealed = seal(&alice, &a, &b, bob.public(), &message).unwrap();
            assert!(!sealed.windows(6).any(|w| text.as_bytes().starts_with(w)));
            let (sender, opened) = open(&bob, &a, &b, &sealed).unwrap();
            assert_eq!(sender, alice.public());
            assert_eq!(opened, message);
            // Not for anyone else, nor under other names.
            assert!(open(&Identity::generate(), &a, &b, &sealed).is_err());
            assert!(open(&bob, &name("carol"), &b, &sealed).is_err());
            // Any change to it is found.
            let mut bent = sealed.clone();
            let last = bent.len() - 1;
            bent[last] ^= 1;
            assert!(open(&bob, &a, &b, &bent).is_err());
            assert!(open(&bob, &a, &b, &sealed[..sealed.len() - 1]).is_err());
        }
        assert!(open(&bob, &a, &b, &[]).is_err());
        assert!(open(&bob, &a, &b, &[5, 0, 1]).is_err());
    }
}
