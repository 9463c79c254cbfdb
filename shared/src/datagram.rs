//! The UDP datagrams of the seed protocol (its section 2.2), plus Pigeon's
//! `refused`, as typed values with a total decoder and an infallible encoder.
//!
//! Every datagram is UTF-16LE text, fields separated by `,`:
//!
//! ```text
//! login,<name>,<endpoint>        client -> server, server -> every other user
//! Accept,<tcp_port>              server -> client that logged in
//! logout,<name>,<endpoint>       client -> server, server -> remaining users
//! talk,<time>,<from>,<text>      client -> client; <text> is the rest, commas and all
//! refused,<reason>[,<detail>]    server -> client whose login was refused (Pigeon)
//! ```
//!
//! Fields past the last defined one are ignored on `login`, `logout`,
//! `Accept` and `refused`, as a seed peer ignores them. Decoding never
//! panics: any bytes give a [`Datagram`] or a [`DecodeError`]. See
//! `PROTOCOL.md` for the byte-level description.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::endpoint::PeerAddr;
use crate::name::{NameError, UserName};
use crate::talk_time::{TalkTime, TimeError};
use crate::utf16::{decode_utf16le, put_utf16le, utf16le_len, Utf16Error};

/// Largest UDP payload over IPv4, and so the largest datagram Pigeon sends
/// or accepts.
pub const MAX_DATAGRAM_LEN: usize = 65_507;

/// One datagram of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    Login(Login),
    Accept(Accept),
    Logout(Logout),
    Talk(Talk),
    Refused(Refused),
}

/// `login,<name>,<endpoint>`: a user announces itself and the endpoint it
/// receives on. The server forwards the same datagram to every other user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub name: UserName,
    pub endpoint: PeerAddr,
}

/// `logout,<name>,<endpoint>`: a user leaves; forwarded to those remaining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub name: UserName,
    pub endpoint: PeerAddr,
}

/// `Accept,<tcp_port>`: the login is accepted; fetch the roster over TCP
/// from this port on the server's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub tcp_port: u16,
}

/// `talk,<time>,<from>,<text>`: a chat message, peer to peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Talk {
    pub time: TalkTime,
    pub from: UserName,
    /// Everything after the third comma, so commas in the text survive.
    pub text: String,
}

/// `refused,<reason>[,<detail>]`: a login is refused (Pigeon's addition;
/// a seed client ignores a verb it does not know).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: RefuseReason,
    /// Human-readable explanation; may be empty.
    pub detail: String,
}

/// Why a login was refused, as a stable token on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Another user is online under this name at another endpoint.
    NameTaken,
    /// Another user is online at this endpoint.
    EndpointTaken,
    /// The endpoint is not the sender's address, or cannot receive.
    BadEndpoint,
    /// The roster holds as many users as the server allows.
    ServerFull,
    /// A reason this version does not know (kept for forward compatibility).
    Other(String),
}

/// The first field of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Login,
    Accept,
    Logout,
    Talk,
    Refused,
}

/// Why bytes are not a datagram of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty datagram")]
    Empty,
    #[error("{len} bytes is more than a datagram may carry")]
    TooLong { len: usize },
    #[error("not UTF-16LE text: {0}")]
    Text(#[from] Utf16Error),
    #[error("unknown verb {verb:?}")]
    UnknownVerb { verb: String },
    #[error("`{verb}` lacks its {field} field")]
    MissingField { verb: Verb, field: &'static str },
    #[error("`{verb}` has a bad name: {source}")]
    BadName { verb: Verb, source: NameError },
    #[error("`{verb}` has a bad endpoint {text:?}")]
    BadEndpoint { verb: Verb, text: String },
    #[error("`Accept` has a bad TCP port {text:?}")]
    BadPort { text: String },
    #[error("`talk` has a bad time: {0}")]
    BadTime(TimeError),
    #[error("`refused` has a bad reason {text:?}")]
    BadReason { text: String },
}

/// A `DecodeError` without its details: a key to count drops by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeErrorKind {
    Empty,
    TooLong,
    Text,
    UnknownVerb,
    MissingField,
    BadName,
    BadEndpoint,
    BadPort,
    BadTime,
    BadReason,
}

/// Longest excerpt of hostile input kept in an error (characters).
const EXCERPT_CHARS: usize = 24;

impl Datagram {
    /// Decodes one datagram. Total: never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(DecodeError::TooLong { len: bytes.len() });
        }
        let text = decode_utf16le(bytes)?;
        Self::decode_text(&text)
    }

    /// Decodes the text of a datagram (already UTF-16 decoded).
    pub fn decode_text(text: &str) -> Result<Self, DecodeError> {
        let (verb_text, rest) = match text.split_once(',') {
            Some((verb, rest)) => (verb, Some(rest)),
            None => (text, None),
        };
        let verb = Verb::parse(verb_text).ok_or_else(|| DecodeError::UnknownVerb {
            verb: excerpt(verb_text),
        })?;
        let mut fields = Fields {
            verb,
            rest: rest.unwrap_or(""),
            exhausted: rest.is_none(),
        };
        match verb {
            Verb::Login => {
                let (name, endpoint) = fields.name_and_endpoint()?;
                Ok(Self::Login(Login { name, endpoint }))
            }
            Verb::Logout => {
                let (name, endpoint) = fields.name_and_endpoint()?;
                Ok(Self::Logout(Logout { name, endpoint }))
            }
            Verb::Accept => {
                let text = fields.next("tcp port")?;
                let tcp_port = parse_port(text).ok_or_else(|| DecodeError::BadPort {
                    text: excerpt(text),
                })?;
                Ok(Self::Accept(Accept { tcp_port }))
            }
            Verb::Talk => {
                let time = TalkTime::parse(fields.next("time")?).map_err(DecodeError::BadTime)?;
                let from = fields.name("from")?;
                let text = fields.remainder("text")?;
                Ok(Self::Talk(Talk {
                    time,
                    from,
                    text: text.to_owned(),
                }))
            }
            Verb::Refused => {
                let token = fields.next("reason")?;
                let reason = RefuseReason::parse(token).ok_or_else(|| DecodeError::BadReason {
                    text: excerpt(token),
                })?;
                let detail = fields.remainder("detail").unwrap_or("").to_owned();
                Ok(Self::Refused(Refused { reason, detail }))
            }
        }
    }

    /// The verb this datagram starts with.
    pub fn verb(&self) -> Verb {
        match self {
            Self::Login(_) => Verb::Login,
            Self::Accept(_) => Verb::Accept,
            Self::Logout(_) => Verb::Logout,
            Self::Talk(_) => Verb::Talk,
            Self::Refused(_) => Verb::Refused,
        }
    }

    /// Appends the encoded datagram to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        put_utf16le(buf, self.verb().as_str());
        match self {
            Self::Login(Login { name, endpoint }) | Self::Logout(Logout { name, endpoint }) => {
                put_field(buf, name.as_str());
                put_field_display(buf, endpoint);
            }
            Self::Accept(Accept { tcp_port }) => put_field_display(buf, tcp_port),
            Self::Talk(Talk { time, from, text }) => {
                put_field(buf, time.as_str());
                put_field(buf, from.as_str());
                put_field(buf, text);
            }
            Self::Refused(Refused { reason, detail }) => {
                put_field(buf, reason.as_str());
                if !detail.is_empty() {
                    put_field(buf, detail);
                }
            }
        }
    }

    /// The datagram's bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

    /// How many bytes [`Datagram::encode`] writes. A sender checks this
    /// against [`MAX_DATAGRAM_LEN`] before sending user-supplied text.
    pub fn encoded_len(&self) -> usize {
        let comma = 2;
        let fields = match self {
            Self::Login(Login { name, endpoint }) | Self::Logout(Logout { name, endpoint }) => {
                comma + utf16le_len(name.as_str()) + comma + utf16le_len(&endpoint.to_string())
            }
            Self::Accept(Accept { tcp_port }) => comma + utf16le_len(&tcp_port.to_string()),
            Self::Talk(Talk { time, from, text }) => {
                3 * comma
                    + utf16le_len(time.as_str())
                    + utf16le_len(from.as_str())
                    + utf16le_len(text)
            }
            Self::Refused(Refused { reason, detail }) => {
                let detail = if detail.is_empty() {
                    0
                } else {
                    comma + utf16le_len(detail)
                };
                comma + utf16le_len(reason.as_str()) + detail
            }
        };
        utf16le_len(self.verb().as_str()) + fields
    }
}

/// Walks the comma-separated fields after the verb.
struct Fields<'a> {
    verb: Verb,
    rest: &'a str,
    exhausted: bool,
}

impl<'a> Fields<'a> {
    /// The next field, up to the next comma.
    fn next(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        if self.exhausted {
            return Err(DecodeError::MissingField {
                verb: self.verb,
                field,
            });
        }
        match self.rest.split_once(',') {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => {
                self.exhausted = true;
                Ok(std::mem::take(&mut self.rest))
            }
        }
    }

    /// Everything that is left, commas included.
    fn remainder(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        if self.exhausted {
            return Err(DecodeError::MissingField {
                verb: self.verb,
                field,
            });
        }
        self.exhausted = true;
        Ok(std::mem::take(&mut self.rest))
    }

    fn name(&mut self, field: &'static str) -> Result<UserName, DecodeError> {
        let text = self.next(field)?;
        UserName::parse(text).map_err(|source| DecodeError::BadName {
            verb: self.verb,
            source,
        })
    }

    fn endpoint(&mut self) -> Result<PeerAddr, DecodeError> {
        let text = self.next("endpoint")?;
        PeerAddr::parse(text).map_err(|_| DecodeError::BadEndpoint {
            verb: self.verb,
            text: excerpt(text),
        })
    }

    fn name_and_endpoint(&mut self) -> Result<(UserName, PeerAddr), DecodeError> {
        let name = self.name("name")?;
        let endpoint = self.endpoint()?;
        Ok((name, endpoint))
    }
}

/// A TCP port as the seed writes it: decimal digits, 1 to 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

fn put_field(buf: &mut impl BufMut, text: &str) {
    buf.put_u16_le(u16::from(b','));
    put_utf16le(buf, text);
}

fn put_field_display(buf: &mut impl BufMut, value: &impl fmt::Display) {
    put_field(buf, &value.to_string());
}

/// At most [`EXCERPT_CHARS`] characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    text.chars().take(EXCERPT_CHARS).collect()
}

impl Verb {
    /// The verb exactly as the seed spells it (its `switch` is case-sensitive).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Accept => "Accept",
            Self::Logout => "logout",
            Self::Talk => "talk",
            Self::Refused => "refused",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "login" => Self::Login,
            "Accept" => Self::Accept,
            "logout" => Self::Logout,
            "talk" => Self::Talk,
            "refused" => Self::Refused,
            _ => return None,
        })
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest reason token.
const MAX_REASON_CHARS: usize = 32;

impl RefuseReason {
    /// The token on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::NameTaken => "name-taken",
            Self::EndpointTaken => "endpoint-taken",
            Self::BadEndpoint => "bad-endpoint",
            Self::ServerFull => "server-full",
            Self::Other(token) => token,
        }
    }

    /// Reads a token: lowercase ASCII letters, digits and `-`, 1 to 32 long.
    pub fn parse(token: &str) -> Option<Self> {
        Some(match token {
            "name-taken" => Self::NameTaken,
            "endpoint-taken" => Self::EndpointTaken,
            "bad-endpoint" => Self::BadEndpoint,
            "server-full" => Self::ServerFull,
            _ => {
                let well_formed = !token.is_empty()
                    && token.len() <= MAX_REASON_CHARS
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !well_formed {
                    return None;
                }
                Self::Other(token.to_owned())
            }
        })
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DecodeError {
    /// The kind of error, for counting.
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            Self::Empty => DecodeErrorKind::Empty,
            Self::TooLong { .. } => DecodeErrorKind::TooLong,
            Self::Text(_) => DecodeErrorKind::Text,
            Self::UnknownVerb { .. } => DecodeErrorKind::UnknownVerb,
            Self::MissingField { .. } => DecodeErrorKind::MissingField,
            Self::BadName { .. } => DecodeErrorKind::BadName,
            Self::BadEndpoint { .. } => DecodeErrorKind::BadEndpoint,
            Self::BadPort { .. } => DecodeErrorKind::BadPort,
            Self::BadTime(_) => DecodeErrorKind::BadTime,
            Self::BadReason { .. } => DecodeErrorKind::BadReason,
        }
    }
}

impl DecodeErrorKind {
    /// Every kind, in a fixed order (for counters indexed by kind).
    pub const ALL: [Self; 10] = [
        Self::Empty,
        Self::TooLong,
        Self::Text,
        Self::UnknownVerb,
        Self::MissingField,
        Self::BadName,
        Self::BadEndpoint,
        Self::BadPort,
        Self::BadTime,
        Self::BadReason,
    ];

    /// A short stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too-long",
            Self::Text => "not-utf16",
            Self::UnknownVerb => "unknown-verb",
            Self::MissingField => "missing-field",
            Self::BadName => "bad-name",
            Self::BadEndpoint => "bad-endpoint",
            Self::BadPort => "bad-port",
            Self::BadTime => "bad-time",
            Self::BadReason => "bad-reason",
        }
    }

    /// Position in [`DecodeErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UTF-16LE bytes of ASCII text, written out by hand for the vectors.
    fn wide(text: &str) -> Vec<u8> {
        text.bytes().flat_map(|b| [b, 0]).collect()
    }

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    fn addr(text: &str) -> PeerAddr {
        PeerAddr::parse(text).unwrap()
    }

    #[test]
    fn seed_login_bytes_decode_and_encode_exactly() {
        let bytes = [
            0x6C, 0x00, 0x6F, 0x00, 0x67, 0x00, 0x69, 0x00, 0x6E, 0x00, // login
            0x2C, 0x00, 0x62, 0x00, 0x6F, 0x00, 0x62, 0x00, // ,bob
            0x2C, 0x00, 0x31, 0x00, 0x2E, 0x00, 0x32, 0x00, 0x2E, 0x00, 0x33, 0x00, 0x2E, 0x00,
            0x34, 0x00, 0x3A, 0x00, 0x35, 0x00, // ,1.2.3.4:5
        ];
        let login = Datagram::Login(Login {
            name: name("bob"),
            endpoint: addr("1.2.3.4:5"),
        });
        assert_eq!(Datagram::decode(&bytes), Ok(login.clone()));
        assert_eq!(login.to_bytes().as_ref(), &bytes[..]);
        assert_eq!(login.encoded_len(), bytes.len());
    }

    #[test]
    fn accept_logout_and_refused_have_their_seed_shapes() {
        let accept = Datagram::Accept(Accept { tcp_port: 50123 });
        assert_eq!(accept.to_bytes().as_ref(), wide("Accept,50123").as_slice());
        let logout = Datagram::Logout(Logout {
            name: name("alice"),
            endpoint: addr("[::1]:7000"),
        });
        assert_eq!(
            logout.to_bytes().as_ref(),
            wide("logout,alice,[::1]:7000").as_slice()
        );
        let refused = Datagram::Refused(Refused {
            reason: RefuseReason::NameTaken,
            detail: "alice is online".into(),
        });
        assert_eq!(
            refused.to_bytes().as_ref(),
            wide("refused,name-taken,alice is online").as_slice()
        );
        for datagram in [accept, logout, refused] {
            let bytes = datagram.to_bytes();
            assert_eq!(bytes.len(), datagram.encoded_len());
            assert_eq!(Datagram::decode(&bytes), Ok(datagram));
        }
    }

    #[test]
    fn talk_text_keeps_its_commas_and_chinese() {
        let mut bytes = wide("talk,14:03:27,bob,");
        put_utf16le(&mut bytes, "你好,世界, ok");
        let Ok(Datagram::Talk(talk)) = Datagram::decode(&bytes) else {
            panic!("not a talk")
        };
        assert_eq!(talk.time.as_str(), "14:03:27");
        assert_eq!(talk.from.as_str(), "bob");
        assert_eq!(talk.text, "你好,世界, ok");
        assert_eq!(Datagram::Talk(talk).to_bytes().as_ref(), bytes.as_slice());
    }

    #[test]
    fn empty_talk_text_is_a_message_but_a_missing_one_is_not() {
        let Ok(Datagram::Talk(talk)) = Datagram::decode(&wide("talk,9:05:07,bob,")) else {
            panic!("not a talk")
        };
        assert_eq!(talk.text, "");
        assert_eq!(
            Datagram::decode(&wide("talk,9:05:07,bob")),
            Err(DecodeError::MissingField {
                verb: Verb::Talk,
                field: "text"
            })
        );
    }

    #[test]
    fn trailing_fields_are_ignored_like_the_seed_does() {
        let Ok(Datagram::Login(login)) = Datagram::decode(&wide("login,bob,1.2.3.4:5,future"))
        else {
            panic!("not a login")
        };
        assert_eq!(login.endpoint, addr("1.2.3.4:5"));
        assert_eq!(
            Datagram::decode(&wide("Accept,80,more")),
            Ok(Datagram::Accept(Accept { tcp_port: 80 }))
        );
    }

    #[test]
    fn malformed_datagrams_give_typed_errors() {
        let cases: &[(&[u8], DecodeErrorKind)] = &[
            (b"", DecodeErrorKind::Empty),
            (b"l\0o", DecodeErrorKind::Text),
            (&[0x00, 0xD8], DecodeErrorKind::Text),
            (&wide("hello,world"), DecodeErrorKind::UnknownVerb),
            (&wide("LOGIN,bob,1.2.3.4:5"), DecodeErrorKind::UnknownVerb),
            (&wide("login"), DecodeErrorKind::MissingField),
            (&wide("login,bob"), DecodeErrorKind::MissingField),
            (&wide("login,,1.2.3.4:5"), DecodeErrorKind::BadName),
            (&wide("login,a;b,1.2.3.4:5"), DecodeErrorKind::BadName),
            (&wide("login,bob,1.2.3.4"), DecodeErrorKind::BadEndpoint),
            (&wide("logout,bob,[::1:5"), DecodeErrorKind::BadEndpoint),
            (&wide("Accept,0"), DecodeErrorKind::BadPort),
            (&wide("Accept,65536"), DecodeErrorKind::BadPort),
            (&wide("Accept,+80"), DecodeErrorKind::BadPort),
            (&wide("talk,,bob,hi"), DecodeErrorKind::BadTime),
            (&wide("refused,Name Taken"), DecodeErrorKind::BadReason),
        ];
        for (bytes, kind) in cases {
            let err = Datagram::decode(bytes).unwrap_err();
            assert_eq!(err.kind(), *kind, "{bytes:?}: {err}");
        }
        let too_long = vec![0x61; MAX_DATAGRAM_LEN + 1];
        assert_eq!(
            Datagram::decode(&too_long).unwrap_err().kind(),
            DecodeErrorKind::TooLong
        );
    }

    #[test]
    fn unknown_refusal_reasons_are_kept() {
        assert_eq!(
            Datagram::decode(&wide("refused,too-early")),
            Ok(Datagram::Refused(Refused {
                reason: RefuseReason::Other("too-early".into()),
                detail: String::new(),
            }))
        );
    }

    #[test]
    fn errors_quote_at_most_a_short_excerpt() {
        let long_verb = "x".repeat(10_000);
        let err = Datagram::decode(&wide(&long_verb)).unwrap_err();
        assert!(err.to_string().len() < 100, "{err}");
    }

    #[test]
    fn kinds_index_their_table() {
        for (i, kind) in DecodeErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
