//! `UserName`: the validated name a user logs in with.
//!
//! Names travel inside comma-separated UTF-16 datagrams and `;`-separated
//! roster text, and appear as one space-separated token in the console's
//! plain mode, so the characters that would break any of those are refused
//! here, once, at the edge. Comparison is exact (no case folding), as in
//! the seed.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;

/// Most characters (Unicode scalar values) a name may have.
pub const MAX_NAME_CHARS: usize = 32;

/// A user name: 1 to [`MAX_NAME_CHARS`] characters, none of them `,` `;` `:`,
/// a control character, white space, or an invisible formatting character
/// (zero-width and bidirectional overrides, which would let one name pass
/// for another on screen).
///
/// Names up to 24 bytes of UTF-8 (nearly all of them) are stored inline,
/// without an allocation: a crowd of in-process clients holds millions of
/// roster entries, and cloning one is a copy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(CompactString);

/// Why a text is not a valid [`UserName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("a name has at most {MAX_NAME_CHARS} characters, this one has {chars}")]
    TooLong { chars: usize },
    /// `position` counts characters from 1, as a person does.
    #[error("a name cannot contain {ch:?} (at position {position})")]
    ForbiddenChar { ch: char, position: usize },
}

impl UserName {
    /// Validates `text` as a name.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        validate(text)?;
        Ok(Self(CompactString::new(text)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(text: &str) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    let mut chars = 0;
    for (position, ch) in text.chars().enumerate() {
        if is_forbidden(ch) {
            return Err(NameError::ForbiddenChar {
                ch,
                position: position + 1,
            });
        }
        chars += 1;
    }
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong { chars });
    }
    Ok(())
}

/// `,` separates datagram fields, `;` roster entries, `:` address and port;
/// white space separates plain-mode tokens.
fn is_forbidden(ch: char) -> bool {
    matches!(ch, ',' | ';' | ':')
        || ch.is_control()
        || ch.is_whitespace()
        || is_invisible_format(ch)
}

/// Zero-width characters, bidirectional controls, the BOM and the
/// non-characters: they render as nothing or reorder what follows.
fn is_invisible_format(ch: char) -> bool {
    matches!(
        ch,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{FFFE}'
            | '\u{FFFF}'
    )
}

impl FromStr for UserName {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<&str> for UserName {
    type Error = NameError;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        Self::parse(text)
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for UserName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_chinese_names_are_accepted() {
        for name in ["alice", "Bob_2", "剑痴", "天涯", "a", "ünïcødé", "🐦pigeon"] {
            assert_eq!(UserName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn thirty_two_characters_fit_and_thirty_three_do_not() {
        let ok = "好".repeat(32);
        assert!(UserName::parse(&ok).is_ok());
        let long = "好".repeat(33);
        assert_eq!(
            UserName::parse(&long),
            Err(NameError::TooLong { chars: 33 })
        );
    }

    #[test]
    fn separators_controls_and_spaces_are_refused() {
        for (name, ch) in [
            ("a,b", ','),
            ("a;b", ';'),
            ("a:b", ':'),
            ("a\nb", '\n'),
            ("a\u{0}b", '\u{0}'),
            ("a b", ' '),
            ("a\u{3000}b", '\u{3000}'),
            ("a\u{202E}b", '\u{202E}'),
            ("a\u{200B}b", '\u{200B}'),
        ] {
            assert_eq!(
                UserName::parse(name),
                Err(NameError::ForbiddenChar { ch, position: 2 }),
                "{name:?}"
            );
        }
        let refused = UserName::parse("b,ob").map(|_| ()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "a name cannot contain ',' (at position 2)"
        );
        assert_eq!(UserName::parse(""), Err(NameError::Empty));
    }
}
