//! Identifiers of Pigeon's extensions: instance ids, session tokens, roster
//! revisions and message sequence numbers, with their text forms.
//!
//! Randomness comes from the caller (this crate does no I/O); these types
//! only say how the values look on the wire.

use std::fmt;

/// Identifies one running client: random, chosen at start, kept across
/// re-logins, and published in the roster. Peers use it to tell one
/// client's message stream from another's. 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u64);

/// A secret the server gives a client in `Accept`: later datagrams that
/// change the client's session (keepalive, logout, re-login) must carry it.
/// 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionToken(pub u128);

/// A random number a client puts in a login or keepalive, for the answer
/// to echo: someone who cannot read the client's traffic cannot forge an
/// answer. 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub u128);

/// The roster's revision: it grows by one with every join and leave.
pub type Revision = u64;

/// A message's place in one conversation's stream, from 1.
pub type Seq = u64;

impl InstanceId {
    /// Reads exactly 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        // Every entry of a roster of thousands goes through here: one pass,
        // no second check by `from_str_radix`.
        if text.len() != 16 {
            return None;
        }
        text.bytes()
            .try_fold(0u64, |value, b| {
                let digit = char::from(b).to_digit(16)?;
                Some((value << 4) | u64::from(digit))
            })
            .map(Self)
    }
}

impl SessionToken {
    /// Reads exactly 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if !is_hex(text, 32) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Self)
    }
}

impl Nonce {
    /// Reads exactly 32 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if !is_lower_hex(text, 32) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Self)
    }
}

/// Whether `text` is exactly `digits` lowercase hex digits: the only
/// spelling that encodes back to the same bytes.
fn is_lower_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `text` is exactly `digits` hex digits (`from_str_radix` alone
/// would also take a leading `+`).
fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a decimal number as the protocol writes it: digits only, no sign,
/// no leading zeros (except `0` itself), at most 20 digits.
pub fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

impl fmt::Debug for SessionToken {
    /// Secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_width_hex() {
        let iid = InstanceId(0xAB);
        assert_eq!(iid.to_string(), "00000000000000ab");
        assert_eq!(InstanceId::parse("00000000000000ab"), Some(iid));
        assert_eq!(InstanceId::parse("ab"), None);
        assert_eq!(InstanceId::parse("00000000000000ag"), None);
        assert_eq!(InstanceId::parse("+0000000000000ab"), None);
        assert_eq!(
            InstanceId::parse("FFFFFFFFFFFFFFFF"),
            Some(InstanceId(u64::MAX))
        );
        let token = SessionToken(u128::MAX);
        assert_eq!(SessionToken::parse(&token.to_string()), Some(token));
        assert_eq!(format!("{token:?}"), "SessionToken(..)");
    }

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("42"), Some(42));
        assert_eq!(parse_decimal("042"), None);
        assert_eq!(parse_decimal("+1"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("18446744073709551616"), None);
    }
}
