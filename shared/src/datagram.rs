//! The UDP datagrams: the seed protocol's (its section 2.2) and Pigeon's
//! extensions, as typed values with a total decoder and an infallible
//! encoder.
//!
//! Every datagram is UTF-16LE text, fields separated by `,`:
//!
//! ```text
//! login,<name>,<endpoint>[,<ext>]     client -> server; server -> other users
//! Accept,<tcp_port>[,<ext>]           server -> client that logged in
//! logout,<name>,<endpoint>[,<ext>]    client -> server; server -> remaining users
//! talk,<time>,<from>,<text>           client -> client; <text> is the rest
//!
//! Pigeon only (sent only to peers that declared `pigeon1`):
//! refused,<reason>[,<detail>]         server -> client: login refused
//! ping,<name>,<token>                 client -> server: keepalive
//! pong,<revision>                     server -> client: keepalive answered
//! expired,<name>                      server -> client: session unknown, log in again
//! bye,<name>                          server -> client: logout done
//! closing[,<detail>]                  server -> clients: shutting down
//! delta,<from>,<to>,<change>...       server -> clients: roster changes
//! chat,<iid>,<seq>,<base>,<part>/<parts>,<time>,<from>,<text>   client -> client
//! ack,<from>,<iid>,<seq>              client -> client: chat received
//! mail                                server -> client (sealed): the mailbox has news
//! meet,<name>,<token>,<peer>[,<pad>]  client -> server: tell me and <peer> where to punch
//! punch,<peer>,<endpoint>[,<local>]   server -> client (sealed): probe <peer> there now
//! ```
//!
//! `<ext>` is Pigeon's extension field, `pigeon1;key=value;...`: a seed peer
//! ignores a trailing field, so it is how Pigeon peers find each other.
//! Fields past the last defined one are ignored everywhere but in the text
//! of `talk` and `chat`. Decoding never panics. `PROTOCOL.md` has the bytes.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::endpoint::PeerAddr;
use crate::handshake::{Hello, Reply, REPLY_BYTES};
use crate::identity::PublicKey;
use crate::ids::{parse_decimal, InstanceId, Nonce, Revision, Seq, SessionToken};
use crate::link::{Secure, FRAME_MARK};
use crate::name::{NameError, UserName};
use crate::relay::{decode_relayed, encode_relayed, Relay, RELAYED_KIND, RELAY_KIND};
use crate::talk_time::{TalkTime, TimeError};
use crate::utf16::{decode_utf16le, put_utf16le, Utf16Error};

/// Largest UDP payload over IPv4, and so the largest datagram Pigeon sends
/// or accepts.
pub const MAX_DATAGRAM_LEN: usize = 65_507;

/// The largest `Accept` a Pigeon server sends (5-digit ports, a 10-digit
/// keepalive, the echoed nonce, the handshake's answer, the longest
/// observed endpoint and a 10-digit relay rate), in bytes: a Pigeon login
/// is padded to at least this, so that the server's answer is never larger
/// than the datagram that asked for it.
pub const MIN_PIGEON_LOGIN_BYTES: usize = 2
    * ("Accept,65535,pigeon1;rx=65535;ka=4294967295;n=;hs=;pub=;rl=4294967295".len()
        + 32
        + 2 * REPLY_BYTES
        + MAX_ENDPOINT_CHARS);

/// The longest endpoint's text, `[<IPv6>%<scope>]:<port>`.
pub const MAX_ENDPOINT_CHARS: usize =
    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535".len();

/// The most padding a login may carry.
pub const MAX_PAD: usize = 512;

/// The version tag that starts Pigeon's extension field.
pub const PIGEON_TAG: &str = "pigeon1";

/// Most UTF-16 code units of text in one `chat` part: what is left of a
/// 1,200-byte datagram after the longest possible header. A longer part is
/// refused by the decoder, so a receiver never holds more.
pub const MAX_PART_UNITS: usize = 420;

/// Most parts one message may have (53,760 UTF-16 units in all).
pub const MAX_PARTS: u16 = 128;

/// Largest sequence number (and base) a `chat` or `ack` may carry: far
/// beyond any conversation's reach (a part a microsecond for a hundred
/// thousand years), and small enough that a receiver's arithmetic on it
/// never overflows.
pub const MAX_SEQ: Seq = 1 << 62;

/// One datagram of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    Login(Login),
    Accept(Accept),
    Logout(Logout),
    Talk(Talk),
    Refused(Refused),
    Ping(Ping),
    Pong(Pong),
    Expired(Expired),
    Bye(Bye),
    Closing(Closing),
    Delta(Delta),
    Chat(Chat),
    Ack(Ack),
    Sealed(Sealed),
    /// `mail`: something waits in this user's mailbox (sealed, from the
    /// server).
    Mail,
    Meet(Meet),
    Punch(Punch),
    /// An end-to-end frame between Pigeon peers: binary, not text
    /// ([`crate::link`]).
    Secure(Secure),
    /// A client asks the server to relay an end-to-end frame to a peer
    /// (binary, [`crate::relay`]).
    Relay(Relay),
    /// An end-to-end frame the server relays from a peer (binary,
    /// [`crate::relay`]).
    Relayed(Secure),
}

/// `sealed,<mac>,<datagram>`: a datagram from the server to a Pigeon client
/// after its `Accept`, with a MAC keyed by the session's secret
/// ([`crate::seal`]): nobody who has not read the `Accept` can forge one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// 32 lowercase hex digits: the first 16 bytes of a keyed BLAKE3 hash
    /// of the inner datagram's bytes.
    pub mac: [u8; 16],
    /// The inner datagram's text, not yet read: only a receiver with the
    /// key may read it ([`crate::seal::open`]).
    pub inner: String,
}

/// `login,<name>,<endpoint>[,<ext>]`: a user announces itself and the
/// endpoint it receives on. The server forwards it to every other user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub name: UserName,
    pub endpoint: PeerAddr,
    /// Present when the sender is a Pigeon client.
    pub pigeon: Option<LoginExt>,
}

/// A Pigeon client's login extension:
/// `pigeon1;iid=<16 hex>[;tok=<32 hex>][;n=<32 hex>][;hs=<64 hex>][;pad=<0s>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginExt {
    /// The client's instance id, kept across re-logins.
    pub instance: InstanceId,
    /// The session token from an earlier `Accept` (no longer sent by
    /// Pigeon clients; still honoured).
    pub token: Option<SessionToken>,
    /// A random number the answer (`Accept` or `refused`) echoes.
    pub nonce: Option<Nonce>,
    /// The client's static public key, which the login handshake's answer
    /// is encrypted to ([`crate::handshake`]). Clients from before keys
    /// send none.
    pub hello: Option<Hello>,
    /// Padding: this many `0`s, so that the login is no smaller than the
    /// `Accept` that answers it ([`Login::padded`]).
    pub pad: u16,
}

/// `logout,<name>,<endpoint>[,<ext>]`: a user leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logout {
    pub name: UserName,
    pub endpoint: PeerAddr,
    /// Present when the sender is a Pigeon client: proves the session.
    pub pigeon: Option<LogoutExt>,
}

/// A Pigeon client's logout extension: `pigeon1;tok=<32 hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutExt {
    pub token: SessionToken,
}

/// `Accept,<tcp_port>[,<ext>]`: the login is accepted; fetch the roster over
/// TCP from this port on the server's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub tcp_port: u16,
    /// Present when the server is Pigeon and the client declared `pigeon1`.
    pub pigeon: Option<AcceptExt>,
}

/// A Pigeon server's accept extension:
/// `pigeon1;rx=<port>[;tok=<32 hex>];ka=<ms>[;n=<32 hex>][;hs=<288 hex>][;pub=<endpoint>][;rl=<rate>]`:
/// the token in clear for a login without a handshake, inside the
/// handshake's reply otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptExt {
    /// TCP port of the Pigeon-format roster (with revisions and instance ids).
    pub roster_port: u16,
    /// The session's secret, in clear (a login without a handshake).
    pub token: Option<SessionToken>,
    /// How often to send `ping`, in milliseconds.
    pub keepalive_ms: u32,
    /// The login's nonce, echoed.
    pub nonce: Option<Nonce>,
    /// The login handshake's answer: the server's key, and the token and
    /// the sealing secret encrypted to the client's.
    pub reply: Option<Reply>,
    /// Where the server sees the login come from: the client's public
    /// endpoint (behind a NAT, not the one it claimed).
    pub public: Option<PeerAddr>,
    /// The server relays end-to-end frames for this session, this many a
    /// second at most; `None`: no relay.
    pub relay: Option<u32>,
}

/// `talk,<time>,<from>,<text>`: a chat message in the seed's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Talk {
    pub time: TalkTime,
    pub from: UserName,
    /// Everything after the third comma, so commas in the text survive.
    pub text: String,
}

/// `refused,<reason>[,pigeon1;n=<32 hex>][,<detail>]`: a login is refused;
/// the extension echoes a Pigeon login's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: RefuseReason,
    /// Human-readable explanation; may be empty.
    pub detail: String,
    /// The Pigeon login's nonce, echoed.
    pub nonce: Option<Nonce>,
}

/// Why a login was refused, as a stable token on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// Another user is online under this name at another endpoint (or
    /// without proof of being the same session).
    NameTaken,
    /// Another user is online at this endpoint.
    EndpointTaken,
    /// The endpoint is not the sender's address, or cannot receive.
    BadEndpoint,
    /// The roster holds as many users as the server allows.
    ServerFull,
    /// The sender's host has as many users online as the server allows one
    /// host.
    HostFull,
    /// The login is smaller than the `Accept` it asks for (a Pigeon login
    /// is padded to [`MIN_PIGEON_LOGIN_BYTES`]).
    ShortLogin,
    /// The name is registered to another key: only its holder may log in
    /// under it ([`crate::handshake`]).
    NameRegistered,
    /// The login's handshake does not verify.
    BadHandshake,
    /// A reason this version does not know (kept for forward compatibility).
    Other(String),
}

/// `ping,<name>,<token>[,<nonce>]`: a Pigeon client's keepalive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub name: UserName,
    pub token: SessionToken,
    /// For an `expired` answer to echo.
    pub nonce: Option<Nonce>,
}

/// `meet,<name>,<token>,<peer>[,<pad>]`: a Pigeon client asks the server
/// to tell it and `peer`, at the same moment, where to probe each other
/// (NAT hole punching). Encoded padded to [`MEET_BYTES`], so that the
/// server's answer to the sender is never larger than the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meet {
    pub name: UserName,
    pub token: SessionToken,
    pub peer: UserName,
}

/// `punch,<peer>,<endpoint>[,<local>]`: the server tells a Pigeon client
/// (sealed) to probe `peer` now at `endpoint` (where the server sees it)
/// and, when both are behind the same public address, at `local` (the
/// address it has on its own network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Punch {
    pub peer: UserName,
    pub endpoint: PeerAddr,
    pub local: Option<PeerAddr>,
}

/// The size a `meet` is padded to: the largest `punch` that can answer it,
/// sealed.
pub const MEET_BYTES: usize = crate::seal::SEAL_OVERHEAD
    + 2 * ("punch,".len() + 2 * crate::name::MAX_NAME_CHARS + 2 * (1 + MAX_ENDPOINT_CHARS));

/// `pong,<revision>`: the keepalive is answered; the roster is at
/// `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    pub revision: Revision,
}

/// `expired,<name>[,<nonce>]`: the server has no such session (it
/// restarted, or evicted the user): log in again. It echoes the keepalive's
/// nonce (the server no longer has the session's key to seal it with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub name: UserName,
    pub nonce: Option<Nonce>,
}

/// `bye,<name>`: the logout is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    pub name: UserName,
}

/// `closing[,<detail>]`: the server is shutting down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub detail: String,
}

/// `delta,<from>,<to>,<change>...`: roster changes `from + 1 ..= to`, one
/// per revision, in order.
///
/// The changes are kept as they stand on the wire and parsed on demand:
/// a client that already has most of them (they overlap the snapshot it
/// just fetched) skips those without parsing them. Decoding checks the
/// revision range against the number of changes; each change is checked
/// when it is read ([`Delta::changes`]), and a bad one is an error then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The revision before the first change.
    pub from: Revision,
    /// The changes, comma-separated.
    text: String,
    count: u64,
}

/// One roster change in a [`Delta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterChange {
    /// `+<name>;<endpoint>;<iid>[;<key>]` (`-` for a seed-era client's
    /// iid; the key in 64 hex digits, for a Pigeon client with one).
    Joined {
        name: UserName,
        endpoint: PeerAddr,
        instance: Option<InstanceId>,
        key: Option<PublicKey>,
    },
    /// `-<name>;<endpoint>`.
    Left { name: UserName, endpoint: PeerAddr },
}

/// `chat,<iid>,<seq>,<base>,<part>/<parts>,<time>,<from>,<text>`: a chat
/// message between Pigeon peers, acknowledged by `ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// The sender's instance id: names the stream `seq` counts in.
    pub instance: InstanceId,
    /// This datagram's place in the sender's stream to this receiver.
    pub seq: Seq,
    /// Every sequence number below `base` is delivered or given up: the
    /// receiver need not wait for it.
    pub base: Seq,
    /// Which part of the message this is, from 1.
    pub part: u16,
    /// How many parts the message has.
    pub parts: u16,
    pub time: TalkTime,
    pub from: UserName,
    /// This part's text: everything after the seventh comma.
    pub text: String,
}

/// `ack,<from>,<iid>,<seq>`: `from` received `seq` of the stream of the
/// sender whose instance id is `iid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub from: UserName,
    pub instance: InstanceId,
    pub seq: Seq,
}

/// The first field of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Login,
    Accept,
    Logout,
    Talk,
    Refused,
    Ping,
    Pong,
    Expired,
    Bye,
    Closing,
    Delta,
    Chat,
    Ack,
    Sealed,
    Mail,
    Meet,
    Punch,
    /// Not a text verb: the binary end-to-end frame.
    Secure,
    /// Not a text verb: a binary request to relay a frame.
    Relay,
    /// Not a text verb: a binary relayed frame.
    Relayed,
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
    #[error("`{verb}` has a bad time: {source}")]
    BadTime { verb: Verb, source: TimeError },
    #[error("`refused` has a bad reason {text:?}")]
    BadReason { text: String },
    #[error("`{verb}` has a bad {field} {text:?}")]
    BadField {
        verb: Verb,
        field: &'static str,
        text: String,
    },
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
    BadField,
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
        if bytes.first() == Some(&FRAME_MARK) {
            return match bytes.get(1) {
                Some(&RELAY_KIND) => Relay::decode(bytes).map(Self::Relay),
                Some(&RELAYED_KIND) => decode_relayed(bytes).map(Self::Relayed),
                _ => Secure::decode(bytes).map(Self::Secure),
            };
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
        let mut f = Fields {
            verb,
            rest: rest.unwrap_or(""),
            exhausted: rest.is_none(),
        };
        Ok(match verb {
            Verb::Login => {
                let (name, endpoint) = f.name_and_endpoint()?;
                let pigeon = match f.extension() {
                    Some(ext) => Some(LoginExt {
                        instance: ext.require(verb, "iid", InstanceId::parse)?,
                        token: ext.optional(verb, "tok", SessionToken::parse)?,
                        nonce: ext.optional(verb, "n", Nonce::parse)?,
                        hello: ext.optional(verb, "hs", parse_hex_array)?,
                        pad: ext.optional(verb, "pad", parse_pad)?.unwrap_or(0),
                    }),
                    None => None,
                };
                Self::Login(Login {
                    name,
                    endpoint,
                    pigeon,
                })
            }
            Verb::Logout => {
                let (name, endpoint) = f.name_and_endpoint()?;
                let pigeon = match f.extension() {
                    Some(ext) => Some(LogoutExt {
                        token: ext.require(verb, "tok", SessionToken::parse)?,
                    }),
                    None => None,
                };
                Self::Logout(Logout {
                    name,
                    endpoint,
                    pigeon,
                })
            }
            Verb::Accept => {
                let text = f.next("tcp port")?;
                let tcp_port = parse_port(text).ok_or_else(|| DecodeError::BadPort {
                    text: excerpt(text),
                })?;
                let pigeon = match f.extension() {
                    Some(ext) => {
                        let roster_port = ext.require(verb, "rx", parse_port)?;
                        let token = ext.optional(verb, "tok", SessionToken::parse)?;
                        let keepalive_ms = ext.require(verb, "ka", |t| {
                            parse_decimal(t)
                                .and_then(|ms| u32::try_from(ms).ok())
                                .filter(|&ms| ms > 0)
                        })?;
                        let nonce = ext.optional(verb, "n", Nonce::parse)?;
                        let reply = ext.optional(verb, "hs", parse_hex_array)?;
                        let public = ext.optional(verb, "pub", |t| PeerAddr::parse(t).ok())?;
                        let relay = ext.optional(verb, "rl", |t| {
                            parse_decimal(t)
                                .and_then(|rate| u32::try_from(rate).ok())
                                .filter(|&rate| rate > 0)
                        })?;
                        if token.is_none() && reply.is_none() {
                            // Neither way to hand over the token.
                            ext.require(verb, "tok", SessionToken::parse)?;
                        }
                        Some(AcceptExt {
                            roster_port,
                            token,
                            keepalive_ms,
                            nonce,
                            reply,
                            public,
                            relay,
                        })
                    }
                    None => None,
                };
                Self::Accept(Accept { tcp_port, pigeon })
            }
            Verb::Talk => {
                let time = f.time()?;
                let from = f.name("from")?;
                let text = f.remainder("text")?;
                Self::Talk(Talk {
                    time,
                    from,
                    text: text.to_owned(),
                })
            }
            Verb::Refused => {
                let token = f.next("reason")?;
                let reason = RefuseReason::parse(token).ok_or_else(|| DecodeError::BadReason {
                    text: excerpt(token),
                })?;
                let rest = f.remainder("detail").unwrap_or("");
                // A Pigeon server's refusal starts with its extension.
                let (nonce, detail) = match pigeon_items(rest) {
                    Some(ext) => {
                        let (items, detail) = ext.split_once(',').unwrap_or((ext, ""));
                        let ext = Extension {
                            items: items.strip_prefix(';').unwrap_or(items),
                        };
                        (ext.optional(verb, "n", Nonce::parse)?, detail)
                    }
                    None => (None, rest),
                };
                // The sentence never looks like the extension: each
                // refusal has one spelling.
                if pigeon_items(detail).is_some() {
                    return Err(DecodeError::BadField {
                        verb,
                        field: "detail",
                        text: excerpt(detail),
                    });
                }
                Self::Refused(Refused {
                    reason,
                    detail: detail.to_owned(),
                    nonce,
                })
            }
            Verb::Ping => Self::Ping(Ping {
                name: f.name("name")?,
                token: f.parsed("token", SessionToken::parse)?,
                nonce: f.optional("nonce", Nonce::parse)?,
            }),
            Verb::Pong => Self::Pong(Pong {
                revision: f.parsed("revision", parse_decimal)?,
            }),
            Verb::Expired => Self::Expired(Expired {
                name: f.name("name")?,
                nonce: f.optional("nonce", Nonce::parse)?,
            }),
            Verb::Bye => Self::Bye(Bye {
                name: f.name("name")?,
            }),
            Verb::Closing => Self::Closing(Closing {
                detail: f.remainder("detail").unwrap_or("").to_owned(),
            }),
            Verb::Delta => {
                let from = f.parsed("from revision", parse_decimal)?;
                let to = f.parsed("to revision", parse_decimal)?;
                let text = f.remainder("change")?;
                let count = text.split(',').count() as u64;
                if text.is_empty() || to.checked_sub(from) != Some(count) {
                    return Err(DecodeError::BadField {
                        verb,
                        field: "revision range",
                        text: format!("{from}..{to} with {count} changes"),
                    });
                }
                Self::Delta(Delta {
                    from,
                    text: text.to_owned(),
                    count,
                })
            }
            Verb::Chat => {
                let instance = f.parsed("iid", InstanceId::parse)?;
                let seq = f.parsed("seq", parse_seq)?;
                let base = f.parsed("base", |t| parse_seq(t).filter(|&b| b <= seq))?;
                let (part, parts) = f.parsed("part", parse_part)?;
                let time = f.time()?;
                let from = f.name("from")?;
                let text = f.remainder("text")?;
                // A part is never longer than a sender may make it: a
                // receiver holds no more than that, whatever it is sent.
                if text.chars().map(char::len_utf16).sum::<usize>() > MAX_PART_UNITS {
                    return Err(DecodeError::BadField {
                        verb: Verb::Chat,
                        field: "text",
                        text: excerpt(text),
                    });
                }
                let text = text.to_owned();
                Self::Chat(Chat {
                    instance,
                    seq,
                    base,
                    part,
                    parts,
                    time,
                    from,
                    text,
                })
            }
            Verb::Ack => Self::Ack(Ack {
                from: f.name("from")?,
                instance: f.parsed("iid", InstanceId::parse)?,
                seq: f.parsed("seq", parse_seq)?,
            }),
            Verb::Sealed => {
                let mac = f.parsed("mac", parse_mac)?;
                let inner = f.remainder("datagram")?;
                Self::Sealed(Sealed {
                    mac,
                    inner: inner.to_owned(),
                })
            }
            Verb::Mail => Self::Mail,
            Verb::Meet => Self::Meet(Meet {
                name: f.name("name")?,
                token: f.parsed("token", SessionToken::parse)?,
                peer: f.name("peer")?,
            }),
            Verb::Punch => Self::Punch(Punch {
                peer: f.name("peer")?,
                endpoint: f.endpoint()?,
                local: f.optional("local endpoint", |text| PeerAddr::parse(text).ok())?,
            }),
            // Never read from text (`Verb::parse` does not know them).
            Verb::Secure | Verb::Relay | Verb::Relayed => {
                return Err(DecodeError::UnknownVerb {
                    verb: excerpt(verb_text),
                })
            }
        })
    }

    /// The verb this datagram starts with.
    pub fn verb(&self) -> Verb {
        match self {
            Self::Login(_) => Verb::Login,
            Self::Accept(_) => Verb::Accept,
            Self::Logout(_) => Verb::Logout,
            Self::Talk(_) => Verb::Talk,
            Self::Refused(_) => Verb::Refused,
            Self::Ping(_) => Verb::Ping,
            Self::Pong(_) => Verb::Pong,
            Self::Expired(_) => Verb::Expired,
            Self::Bye(_) => Verb::Bye,
            Self::Closing(_) => Verb::Closing,
            Self::Delta(_) => Verb::Delta,
            Self::Chat(_) => Verb::Chat,
            Self::Ack(_) => Verb::Ack,
            Self::Sealed(_) => Verb::Sealed,
            Self::Mail => Verb::Mail,
            Self::Meet(_) => Verb::Meet,
            Self::Punch(_) => Verb::Punch,
            Self::Secure(_) => Verb::Secure,
            Self::Relay(_) => Verb::Relay,
            Self::Relayed(_) => Verb::Relayed,
        }
    }

    /// Appends the encoded datagram to `buf`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Secure(secure) => return secure.encode(buf),
            Self::Relay(relay) => return relay.encode(buf),
            Self::Relayed(secure) => return encode_relayed(secure, buf),
            _ => {}
        }
        put_utf16le(buf, self.verb().as_str());
        let mut w = Writer { buf };
        match self {
            Self::Login(Login {
                name,
                endpoint,
                pigeon,
            }) => {
                w.field(name.as_str());
                w.display(endpoint);
                if let Some(ext) = pigeon {
                    let mut text = format!("{PIGEON_TAG};iid={}", ext.instance);
                    if let Some(token) = ext.token {
                        text.push_str(&format!(";tok={token}"));
                    }
                    if let Some(nonce) = ext.nonce {
                        text.push_str(&format!(";n={nonce}"));
                    }
                    if let Some(hello) = &ext.hello {
                        text.push_str(";hs=");
                        text.push_str(&hex(hello));
                    }
                    if ext.pad > 0 {
                        text.push_str(";pad=");
                        text.extend(std::iter::repeat_n('0', usize::from(ext.pad)));
                    }
                    w.field(&text);
                }
            }
            Self::Logout(Logout {
                name,
                endpoint,
                pigeon,
            }) => {
                w.field(name.as_str());
                w.display(endpoint);
                if let Some(ext) = pigeon {
                    w.field(&format!("{PIGEON_TAG};tok={}", ext.token));
                }
            }
            Self::Accept(Accept { tcp_port, pigeon }) => {
                w.display(tcp_port);
                if let Some(ext) = pigeon {
                    let mut text = format!("{PIGEON_TAG};rx={}", ext.roster_port);
                    if let Some(token) = ext.token {
                        text.push_str(&format!(";tok={token}"));
                    }
                    text.push_str(&format!(";ka={}", ext.keepalive_ms));
                    if let Some(nonce) = ext.nonce {
                        text.push_str(&format!(";n={nonce}"));
                    }
                    if let Some(reply) = &ext.reply {
                        text.push_str(";hs=");
                        text.push_str(&hex(reply));
                    }
                    if let Some(public) = ext.public {
                        text.push_str(&format!(";pub={public}"));
                    }
                    if let Some(rate) = ext.relay {
                        text.push_str(&format!(";rl={rate}"));
                    }
                    w.field(&text);
                }
            }
            Self::Talk(Talk { time, from, text }) => {
                w.field(time.as_str());
                w.field(from.as_str());
                w.field(text);
            }
            Self::Refused(Refused {
                reason,
                detail,
                nonce,
            }) => {
                w.field(reason.as_str());
                if let Some(nonce) = nonce {
                    w.field(&format!("{PIGEON_TAG};n={nonce}"));
                }
                if !detail.is_empty() {
                    w.field(detail);
                }
            }
            Self::Ping(Ping { name, token, nonce }) => {
                w.field(name.as_str());
                w.display(token);
                if let Some(nonce) = nonce {
                    w.display(nonce);
                }
            }
            Self::Pong(Pong { revision }) => w.display(revision),
            Self::Expired(Expired { name, nonce }) => {
                w.field(name.as_str());
                if let Some(nonce) = nonce {
                    w.display(nonce);
                }
            }
            Self::Bye(Bye { name }) => w.field(name.as_str()),
            Self::Closing(Closing { detail }) => {
                if !detail.is_empty() {
                    w.field(detail);
                }
            }
            Self::Delta(delta) => {
                w.display(&delta.from);
                w.display(&delta.to());
                w.field(&delta.text);
            }
            Self::Chat(chat) => {
                w.display(&chat.instance);
                w.display(&chat.seq);
                w.display(&chat.base);
                w.field(&format!("{}/{}", chat.part, chat.parts));
                w.field(chat.time.as_str());
                w.field(chat.from.as_str());
                w.field(&chat.text);
            }
            Self::Ack(Ack {
                from,
                instance,
                seq,
            }) => {
                w.field(from.as_str());
                w.display(instance);
                w.display(seq);
            }
            Self::Sealed(Sealed { mac, inner }) => {
                w.field(&hex(mac));
                w.field(inner);
            }
            Self::Meet(Meet { name, token, peer }) => {
                w.field(name.as_str());
                w.display(token);
                w.field(peer.as_str());
                // Padding: `,` and `0`s up to MEET_BYTES (two bytes each).
                let so_far = 2
                    * ("meet".len()
                        + 3
                        + name.as_str().encode_utf16().count()
                        + 32
                        + peer.as_str().encode_utf16().count());
                let zeros = MEET_BYTES.saturating_sub(so_far + 2) / 2;
                w.field(&"0".repeat(zeros.max(1)));
            }
            Self::Punch(Punch {
                peer,
                endpoint,
                local,
            }) => {
                w.field(peer.as_str());
                w.display(endpoint);
                if let Some(local) = local {
                    w.display(local);
                }
            }
            Self::Mail | Self::Secure(_) | Self::Relay(_) | Self::Relayed(_) => {}
        }
    }

    /// The datagram's bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }

    /// How many bytes [`Datagram::encode`] writes. A sender checks this
    /// against its size limit before sending user-supplied text.
    pub fn encoded_len(&self) -> usize {
        self.to_bytes().len()
    }
}

impl Login {
    /// This login with its Pigeon extension padded (if it has one) so that
    /// it is at least [`MIN_PIGEON_LOGIN_BYTES`] long.
    pub fn padded(mut self) -> Self {
        let Some(ext) = self.pigeon.as_mut() else {
            return self;
        };
        ext.pad = 0;
        let len = Datagram::Login(self.clone()).encoded_len();
        if len < MIN_PIGEON_LOGIN_BYTES {
            // `;pad=` then two bytes a `0`.
            let zeros = (MIN_PIGEON_LOGIN_BYTES - len)
                .saturating_sub(10)
                .div_ceil(2);
            if let Some(ext) = self.pigeon.as_mut() {
                ext.pad = u16::try_from(zeros.max(1)).unwrap_or(u16::MAX);
            }
        }
        self
    }
}

impl Delta {
    /// The changes `from + 1 ..=` in order (at least one).
    pub fn new(from: Revision, changes: &[RosterChange]) -> Self {
        use std::fmt::Write;
        let mut text = String::new();
        for (i, change) in changes.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(text, "{change}");
        }
        Self {
            from,
            text,
            count: changes.len() as u64,
        }
    }

    /// The revision after the last change.
    pub fn to(&self) -> Revision {
        self.from + self.count
    }

    /// How many changes.
    pub fn len(&self) -> usize {
        usize::try_from(self.count).unwrap_or(usize::MAX)
    }

    /// Whether there are no changes (never, for a decoded delta).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the changes take on the wire (UTF-16).
    pub fn wire_len(&self) -> usize {
        crate::utf16::utf16le_len(&self.text)
    }

    /// Every change with its revision, parsed now.
    pub fn changes(
        &self,
    ) -> impl Iterator<Item = (Revision, Result<RosterChange, DecodeError>)> + '_ {
        self.changes_after(self.from)
    }

    /// The changes after `revision` with their revisions; those at or before
    /// it are skipped without being parsed.
    pub fn changes_after(
        &self,
        revision: Revision,
    ) -> impl Iterator<Item = (Revision, Result<RosterChange, DecodeError>)> + '_ {
        let skip = revision.saturating_sub(self.from);
        (self.from + 1..)
            .zip(self.text.split(','))
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .map(|(revision, op)| {
                let change = parse_change(op).ok_or_else(|| DecodeError::BadField {
                    verb: Verb::Delta,
                    field: "change",
                    text: excerpt(op),
                });
                (revision, change)
            })
    }
}

impl RosterChange {
    /// A change as one is written in a `delta` (`+name;endpoint;iid[;key]`
    /// or `-name;endpoint`), or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        parse_change(text)
    }

    /// The user the change is about.
    pub fn name(&self) -> &UserName {
        match self {
            Self::Joined { name, .. } | Self::Left { name, .. } => name,
        }
    }
}

impl fmt::Display for RosterChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Joined {
                name,
                endpoint,
                instance,
                key,
            } => {
                write!(f, "+{name};{endpoint};")?;
                match instance {
                    Some(iid) => write!(f, "{iid}")?,
                    None => f.write_str("-")?,
                }
                match key {
                    Some(key) => write!(f, ";{key}"),
                    None => Ok(()),
                }
            }
            Self::Left { name, endpoint } => write!(f, "-{name};{endpoint}"),
        }
    }
}

fn parse_change(op: &str) -> Option<RosterChange> {
    let mut chars = op.chars();
    let sign = chars.next()?;
    let mut parts = chars.as_str().split(';');
    let name = UserName::parse(parts.next()?).ok()?;
    let endpoint = PeerAddr::parse(parts.next()?).ok()?;
    let change = match sign {
        '+' => {
            let instance = match parts.next()? {
                "-" => None,
                iid => Some(InstanceId::parse(iid)?),
            };
            let key = match parts.next() {
                None => None,
                Some(key) => Some(PublicKey::parse(key)?),
            };
            // Fields past the key are for later versions.
            return Some(RosterChange::Joined {
                name,
                endpoint,
                instance,
                key,
            });
        }
        '-' => RosterChange::Left { name, endpoint },
        _ => return None,
    };
    parts.next().is_none().then_some(change)
}

fn parse_part(text: &str) -> Option<(u16, u16)> {
    let (part, parts) = text.split_once('/')?;
    let part = u16::try_from(parse_decimal(part)?).ok()?;
    let parts = u16::try_from(parse_decimal(parts)?).ok()?;
    (part >= 1 && part <= parts && parts <= MAX_PARTS).then_some((part, parts))
}

/// What follows the Pigeon tag, if `text` starts with the extension
/// (`pigeon1` alone, or followed by `;` or `,`).
fn pigeon_items(text: &str) -> Option<&str> {
    text.strip_prefix(PIGEON_TAG)
        .filter(|rest| rest.is_empty() || rest.starts_with(';') || rest.starts_with(','))
}

/// Login padding: 1 to [`MAX_PAD`] `0`s.
fn parse_pad(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > MAX_PAD || !text.bytes().all(|b| b == b'0') {
        return None;
    }
    u16::try_from(text.len()).ok()
}

/// A MAC: exactly 32 lowercase hex digits.
fn parse_mac(text: &str) -> Option<[u8; 16]> {
    parse_hex_array(text)
}

/// Exactly `2 * N` lowercase hex digits, as `N` bytes.
pub(crate) fn parse_hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    // Every key of a roster of thousands goes through here: one table
    // look-up per digit, and one check for the whole text at the end.
    let mut bad = 0u8;
    let digit = |b: u8| HEX_DIGITS.get(usize::from(b)).copied().unwrap_or(0x80);
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = match pair {
            [high, low] => (digit(*high), digit(*low)),
            _ => (0x80, 0x80),
        };
        bad |= (high | low) & 0x80;
        *byte = (high << 4) | (low & 0x0f);
    }
    (bad == 0).then_some(bytes)
}

/// The value of each lowercase hex digit; `0x80` for every other byte.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A sequence number: from 1 to [`MAX_SEQ`].
fn parse_seq(text: &str) -> Option<Seq> {
    parse_decimal(text).filter(|&s| (1..=MAX_SEQ).contains(&s))
}

/// The `;key=value` items of an extension field after its version tag.
struct Extension<'a> {
    items: &'a str,
}

impl<'a> Extension<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.items
            .split(';')
            .filter_map(|item| item.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    fn require<T>(
        &self,
        verb: Verb,
        key: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let text = self
            .get(key)
            .ok_or(DecodeError::MissingField { verb, field: key })?;
        parse(text).ok_or_else(|| DecodeError::BadField {
            verb,
            field: key,
            text: excerpt(text),
        })
    }

    fn optional<T>(
        &self,
        verb: Verb,
        key: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.require(verb, key, parse).map(Some),
        }
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

    /// The next field through `parse`, if there is one.
    fn optional<T>(
        &mut self,
        field: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        if self.exhausted {
            return Ok(None);
        }
        self.parsed(field, parse).map(Some)
    }

    /// The next field through `parse`.
    fn parsed<T>(
        &mut self,
        field: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let text = self.next(field)?;
        parse(text).ok_or_else(|| DecodeError::BadField {
            verb: self.verb,
            field,
            text: excerpt(text),
        })
    }

    /// Pigeon's extension field, if the next field is one. Anything else
    /// there (a seed peer's junk, a future version) is ignored, as a seed
    /// peer would ignore it.
    fn extension(&mut self) -> Option<Extension<'a>> {
        let text = self.next("extension").ok()?;
        let (tag, items) = text.split_once(';').unwrap_or((text, ""));
        (tag == PIGEON_TAG).then_some(Extension { items })
    }

    fn name(&mut self, field: &'static str) -> Result<UserName, DecodeError> {
        let text = self.next(field)?;
        UserName::parse(text).map_err(|source| DecodeError::BadName {
            verb: self.verb,
            source,
        })
    }

    fn time(&mut self) -> Result<TalkTime, DecodeError> {
        let text = self.next("time")?;
        TalkTime::parse(text).map_err(|source| DecodeError::BadTime {
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

/// Writes fields after the verb.
struct Writer<'b, B: BufMut> {
    buf: &'b mut B,
}

impl<B: BufMut> Writer<'_, B> {
    fn field(&mut self, text: &str) {
        self.buf.put_u16_le(u16::from(b','));
        put_utf16le(self.buf, text);
    }

    fn display(&mut self, value: &impl fmt::Display) {
        self.field(&value.to_string());
    }
}

/// A port as the seed writes it: decimal digits, 1 to 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

/// At most [`EXCERPT_CHARS`] characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    text.chars().take(EXCERPT_CHARS).collect()
}

impl Verb {
    /// Every verb.
    pub const ALL: [Self; 20] = [
        Self::Login,
        Self::Accept,
        Self::Logout,
        Self::Talk,
        Self::Refused,
        Self::Ping,
        Self::Pong,
        Self::Expired,
        Self::Bye,
        Self::Closing,
        Self::Delta,
        Self::Chat,
        Self::Ack,
        Self::Sealed,
        Self::Mail,
        Self::Meet,
        Self::Punch,
        Self::Secure,
        Self::Relay,
        Self::Relayed,
    ];

    /// The verb exactly as it is spelled on the wire (the seed's `switch`
    /// is case-sensitive: `Accept` has a capital).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Accept => "Accept",
            Self::Logout => "logout",
            Self::Talk => "talk",
            Self::Refused => "refused",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Expired => "expired",
            Self::Bye => "bye",
            Self::Closing => "closing",
            Self::Delta => "delta",
            Self::Chat => "chat",
            Self::Ack => "ack",
            Self::Sealed => "sealed",
            Self::Mail => "mail",
            Self::Meet => "meet",
            Self::Punch => "punch",
            Self::Secure => "secure",
            Self::Relay => "relay",
            Self::Relayed => "relayed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .filter(|verb| !matches!(verb, Self::Secure | Self::Relay | Self::Relayed))
            .find(|verb| verb.as_str() == text)
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
            Self::HostFull => "host-full",
            Self::ShortLogin => "short-login",
            Self::NameRegistered => "name-registered",
            Self::BadHandshake => "bad-handshake",
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
            "host-full" => Self::HostFull,
            "short-login" => Self::ShortLogin,
            "name-registered" => Self::NameRegistered,
            "bad-handshake" => Self::BadHandshake,
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
            Self::BadTime { .. } => DecodeErrorKind::BadTime,
            Self::BadReason { .. } => DecodeErrorKind::BadReason,
            Self::BadField { .. } => DecodeErrorKind::BadField,
        }
    }
}

impl DecodeErrorKind {
    /// Every kind, in a fixed order (for counters indexed by kind).
    pub const ALL: [Self; 11] = [
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
        Self::BadField,
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
            Self::BadField => "bad-field",
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
    fn a_refusals_extension_and_sentence_cannot_be_mistaken() {
        let nonce = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let text = format!("refused,name-taken,pigeon1;n={nonce},pigeon1 is a fine word");
        let Ok(Datagram::Refused(refused)) = Datagram::decode(&wide(&text)) else {
            panic!("{text}")
        };
        assert_eq!(refused.nonce, Nonce::parse(nonce));
        assert_eq!(refused.detail, "pigeon1 is a fine word");
        // An extension without a nonce reads as none.
        assert_eq!(
            Datagram::decode(&wide("refused,name-taken,pigeon1;x=1")),
            Ok(Datagram::Refused(Refused {
                reason: RefuseReason::NameTaken,
                detail: String::new(),
                nonce: None,
            }))
        );
        // A sentence that would read as the extension is refused: it could
        // not be written back the same (found by fuzzing).
        for text in [
            "refused,n,pigeon1;n=x,pigeon1;n=y",
            "refused,n,pigeon1,pigeon1",
        ] {
            assert!(Datagram::decode(&wide(text)).is_err(), "{text}");
        }
    }

    #[test]
    fn a_meet_is_never_smaller_than_the_largest_punch_that_answers_it() {
        let longest = "\u{1F54A}".repeat(crate::name::MAX_NAME_CHARS);
        let endpoint = addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535");
        let punch = Datagram::Punch(Punch {
            peer: name(&longest),
            endpoint,
            local: Some(endpoint),
        });
        let sealed = punch.encoded_len() + crate::seal::SEAL_OVERHEAD;
        assert_eq!(sealed, MEET_BYTES);
        for (me, peer) in [("a", "b"), (longest.as_str(), longest.as_str())] {
            let meet = Datagram::Meet(Meet {
                name: name(me),
                token: SessionToken(u128::MAX),
                peer: name(peer),
            });
            let bytes = meet.to_bytes();
            assert!(bytes.len() >= MEET_BYTES, "{} bytes", bytes.len());
            assert_eq!(Datagram::decode(&bytes), Ok(meet));
        }
        // Read as the bytes say, the local endpoint optional.
        assert_eq!(
            Datagram::decode(&wide("punch,bob,198.18.0.10:4000")),
            Ok(Datagram::Punch(Punch {
                peer: name("bob"),
                endpoint: addr("198.18.0.10:4000"),
                local: None,
            }))
        );
        let with_local = Datagram::decode(&wide("punch,bob,198.18.0.10:4000,10.1.0.2:4000"));
        assert!(
            matches!(&with_local, Ok(Datagram::Punch(p)) if p.local == Some(addr("10.1.0.2:4000"))),
            "{with_local:?}"
        );
        assert!(Datagram::decode(&wide("punch,bob,198.18.0.10:4000,nowhere")).is_err());
        assert!(Datagram::decode(&wide("meet,alice,12,bob")).is_err());
    }

    #[test]
    fn a_padded_pigeon_login_is_as_large_as_the_largest_accept() {
        let largest = Datagram::Accept(Accept {
            tcp_port: 65535,
            pigeon: Some(AcceptExt {
                roster_port: 65535,
                token: None,
                keepalive_ms: u32::MAX,
                nonce: Some(Nonce(u128::MAX)),
                reply: Some([0xff; REPLY_BYTES]),
                public: Some(
                    PeerAddr::parse("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535")
                        .unwrap(),
                ),
                relay: Some(u32::MAX),
            }),
        });
        assert_eq!(largest.encoded_len(), MIN_PIGEON_LOGIN_BYTES);
        // The form without a handshake, its token in clear, is smaller.
        let plain = Datagram::Accept(Accept {
            tcp_port: 65535,
            pigeon: Some(AcceptExt {
                roster_port: 65535,
                token: Some(SessionToken(u128::MAX)),
                keepalive_ms: u32::MAX,
                nonce: Some(Nonce(u128::MAX)),
                reply: None,
                public: None,
                relay: None,
            }),
        });
        assert!(plain.encoded_len() < MIN_PIGEON_LOGIN_BYTES);
        for (n, a) in [
            ("a", "1.2.3.4:5"),
            ("bob", "127.0.0.1:5000"),
            ("天涯若比邻天涯若比邻", "[fe80::1%3]:65535"),
            (
                "a-name-of-thirty-two-characters!",
                "[2001:db8:1:2:3:4:5:6]:65535",
            ),
        ] {
            for (nonce, hello) in [
                (None, None),
                (Some(Nonce(1)), None),
                (Some(Nonce(1)), Some([7; crate::handshake::HELLO_BYTES])),
            ] {
                let login = Login {
                    name: name(n),
                    endpoint: addr(a),
                    pigeon: Some(LoginExt {
                        instance: InstanceId(1),
                        token: None,
                        nonce,
                        hello,
                        pad: 0,
                    }),
                }
                .padded();
                let datagram = Datagram::Login(login);
                let len = datagram.encoded_len();
                let pad = match &datagram {
                    Datagram::Login(Login {
                        pigeon: Some(ext), ..
                    }) => ext.pad,
                    _ => 0,
                };
                assert!(len >= MIN_PIGEON_LOGIN_BYTES, "{n}: {len}");
                // No more than needed: one `0` less would not do.
                assert!(
                    pad == 0 || len - 2 < MIN_PIGEON_LOGIN_BYTES || pad == 1,
                    "{n}: {len}"
                );
                assert_eq!(Datagram::decode(&datagram.to_bytes()), Ok(datagram));
            }
        }
        // A seed login is left as it is.
        let seed = Login {
            name: name("old"),
            endpoint: addr("1.2.3.4:5"),
            pigeon: None,
        };
        assert_eq!(seed.clone().padded(), seed);
        // Padding is zeros, and bounded.
        for bad in [
            "pad=",
            "pad=01",
            &format!("pad={}", "0".repeat(MAX_PAD + 1)),
        ] {
            let text = format!("login,a,1.2.3.4:5,pigeon1;iid=0000000000000001;{bad}");
            assert!(Datagram::decode(&wide(&text)).is_err(), "{bad}");
        }
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
            pigeon: None,
        });
        assert_eq!(Datagram::decode(&bytes), Ok(login.clone()));
        assert_eq!(login.to_bytes().as_ref(), &bytes[..]);
        assert_eq!(login.encoded_len(), bytes.len());
    }

    #[test]
    fn accept_logout_and_refused_have_their_seed_shapes() {
        let accept = Datagram::Accept(Accept {
            tcp_port: 50123,
            pigeon: None,
        });
        assert_eq!(accept.to_bytes().as_ref(), wide("Accept,50123").as_slice());
        let logout = Datagram::Logout(Logout {
            name: name("alice"),
            endpoint: addr("[::1]:7000"),
            pigeon: None,
        });
        assert_eq!(
            logout.to_bytes().as_ref(),
            wide("logout,alice,[::1]:7000").as_slice()
        );
        let refused = Datagram::Refused(Refused {
            nonce: None,
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
            Ok(Datagram::Accept(Accept {
                tcp_port: 80,
                pigeon: None
            }))
        );
    }

    #[test]
    fn hex_arrays_read_only_lowercase_hex_of_the_exact_length() {
        assert_eq!(parse_hex_array::<2>("00ff"), Some([0, 255]));
        assert_eq!(parse_hex_array::<2>("a1b2"), Some([0xa1, 0xb2]));
        for bad in ["00FF", "0g00", "00f", "00ff0", "+0ff", "é0f", "0 ff"] {
            assert_eq!(parse_hex_array::<2>(bad), None, "{bad:?}");
        }
        assert_eq!(parse_hex_array::<3>(&hex(&[1, 2, 254])), Some([1, 2, 254]));
    }

    #[test]
    fn malformed_datagrams_give_typed_errors() {
        let cases: &[(&[u8], DecodeErrorKind)] = &[
            (b"", DecodeErrorKind::Empty),
            (b"l\0o", DecodeErrorKind::Text),
            (&[0x61, 0x00, 0x00, 0xD8], DecodeErrorKind::Text),
            // A first byte 0 is an end-to-end frame.
            (&[0x00, 0xD8], DecodeErrorKind::BadField),
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

    const IID: &str = "0123456789abcdef";
    const TOK: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn pigeon_extensions_ride_in_a_trailing_field() {
        let text = format!("login,bob,1.2.3.4:5,pigeon1;iid={IID};tok={TOK}");
        let Ok(Datagram::Login(login)) = Datagram::decode(&wide(&text)) else {
            panic!("not a login")
        };
        let ext = login.pigeon.unwrap();
        assert_eq!(ext.instance.to_string(), IID);
        assert_eq!(ext.token.unwrap().to_string(), TOK);
        assert_eq!(
            Datagram::Login(login).to_bytes().as_ref(),
            wide(&text).as_slice()
        );

        let text = format!("Accept,4000,pigeon1;rx=4001;tok={TOK};ka=2500");
        let Ok(Datagram::Accept(accept)) = Datagram::decode(&wide(&text)) else {
            panic!("not an Accept")
        };
        let ext = accept.pigeon.unwrap();
        assert_eq!(
            (accept.tcp_port, ext.roster_port, ext.keepalive_ms),
            (4000, 4001, 2500)
        );
        assert_eq!(
            Datagram::Accept(accept).to_bytes().as_ref(),
            wide(&text).as_slice()
        );
    }

    #[test]
    fn chat_parts_beyond_the_protocols_limits_are_refused() {
        let chat = |seq: &str, base: &str, part: &str, text: &str| {
            let line = format!("chat,{IID},{seq},{base},{part},9:05:07,alice,{text}");
            let bytes: Vec<u8> = line.encode_utf16().flat_map(u16::to_le_bytes).collect();
            Datagram::decode(&bytes)
        };
        let longest = "话".repeat(MAX_PART_UNITS);
        let ok = chat("7", "5", "128/128", &longest);
        assert!(ok.is_ok(), "{ok:?}");
        // A part numbered past the most parts a message may have.
        assert!(chat("7", "5", "1/129", "hi").is_err());
        assert!(chat("7", "5", "65535/65535", "hi").is_err());
        // A part longer than a sender may make it (an emoji counts twice).
        assert!(chat("7", "5", "1/1", &format!("{longest}x")).is_err());
        assert!(chat("7", "5", "1/1", &"🐦".repeat(MAX_PART_UNITS / 2 + 1)).is_err());
        // Sequence numbers and bases a receiver could overflow on.
        let max = MAX_SEQ.to_string();
        let beyond = (MAX_SEQ + 1).to_string();
        assert!(chat(&max, &max, "1/1", "hi").is_ok());
        assert!(chat(&beyond, "1", "1/1", "hi").is_err());
        assert!(chat("18446744073709551615", "18446744073709551615", "1/1", "hi").is_err());
        assert!(chat("5", "7", "1/1", "hi").is_err(), "a base past its seq");
        let ack = format!("ack,bob,{IID},{beyond}");
        assert!(Datagram::decode(&wide(&ack)).is_err());
    }

    #[test]
    fn unknown_keys_and_tags_are_ignored_but_missing_keys_are_errors() {
        let text = format!("login,bob,1.2.3.4:5,pigeon1;future=1;iid={IID}");
        assert!(matches!(
            Datagram::decode(&wide(&text)),
            Ok(Datagram::Login(Login {
                pigeon: Some(_),
                ..
            }))
        ));
        let text = "login,bob,1.2.3.4:5,pigeon9;iid=zz";
        assert!(matches!(
            Datagram::decode(&wide(text)),
            Ok(Datagram::Login(Login { pigeon: None, .. }))
        ));
        let text = "logout,bob,1.2.3.4:5,pigeon1";
        assert_eq!(
            Datagram::decode(&wide(text)).unwrap_err().kind(),
            DecodeErrorKind::MissingField
        );
        let text = "login,bob,1.2.3.4:5,pigeon1;iid=short";
        assert_eq!(
            Datagram::decode(&wide(text)).unwrap_err().kind(),
            DecodeErrorKind::BadField
        );
    }

    #[test]
    fn chat_and_ack_round_trip_with_commas_in_the_text() {
        let text = format!("chat,{IID},7,5,2/3,9:05:07,bob,part two, with commas");
        let Ok(Datagram::Chat(chat)) = Datagram::decode(&wide(&text)) else {
            panic!("not a chat")
        };
        assert_eq!((chat.seq, chat.base, chat.part, chat.parts), (7, 5, 2, 3));
        assert_eq!(chat.text, "part two, with commas");
        assert_eq!(
            Datagram::Chat(chat).to_bytes().as_ref(),
            wide(&text).as_slice()
        );
        let text = format!("ack,alice,{IID},7");
        let Ok(datagram @ Datagram::Ack(_)) = Datagram::decode(&wide(&text)) else {
            panic!("not an ack")
        };
        assert_eq!(datagram.to_bytes().as_ref(), wide(&text).as_slice());
        for bad in [
            format!("chat,{IID},0,1,1/1,9:05:07,bob,x"),
            format!("chat,{IID},3,4,1/1,9:05:07,bob,x"),
            format!("chat,{IID},3,1,2/1,9:05:07,bob,x"),
            format!("chat,{IID},3,1,0/1,9:05:07,bob,x"),
            format!("ack,alice,{IID},0"),
        ] {
            assert_eq!(
                Datagram::decode(&wide(&bad)).unwrap_err().kind(),
                DecodeErrorKind::BadField,
                "{bad}"
            );
        }
    }

    #[test]
    fn deltas_carry_numbered_changes() {
        let text = format!("delta,41,43,+carol;10.0.0.3:5000;{IID},-bob;10.0.0.2:5000");
        let Ok(Datagram::Delta(delta)) = Datagram::decode(&wide(&text)) else {
            panic!("not a delta")
        };
        assert_eq!((delta.from, delta.to(), delta.len()), (41, 43, 2));
        let changes: Vec<_> = delta.changes().map(|(r, c)| (r, c.unwrap())).collect();
        assert_eq!(
            changes[1],
            (
                43,
                RosterChange::Left {
                    name: name("bob"),
                    endpoint: addr("10.0.0.2:5000")
                }
            )
        );
        // Changes already had are skipped unparsed.
        let after: Vec<_> = delta.changes_after(42).map(|(r, _)| r).collect();
        assert_eq!(after, [43]);
        assert_eq!(delta.changes_after(43).count(), 0);
        assert_eq!(
            Datagram::Delta(delta).to_bytes().as_ref(),
            wide(&text).as_slice()
        );
        let Ok(Datagram::Delta(seed_user)) = Datagram::decode(&wide("delta,0,1,+old;10.0.0.9:1;-"))
        else {
            panic!("not a delta")
        };
        assert!(matches!(
            seed_user.changes().next(),
            Some((1, Ok(RosterChange::Joined { instance: None, .. })))
        ));
        for bad in [
            "delta,1,3,-bob;10.0.0.2:5000",
            "delta,3,2,-bob;10.0.0.2:5000",
        ] {
            assert_eq!(
                Datagram::decode(&wide(bad)).unwrap_err().kind(),
                DecodeErrorKind::BadField,
                "{bad}"
            );
        }
        assert_eq!(
            Datagram::decode(&wide("delta,1,1")).unwrap_err().kind(),
            DecodeErrorKind::MissingField
        );
        // A malformed change is found when it is read.
        for bad in [
            "delta,1,2,*bob;10.0.0.2:5000",
            "delta,1,2,-bob;10.0.0.2:5000;extra",
            "delta,1,2,+bob;10.0.0.2:5000",
        ] {
            let Ok(Datagram::Delta(delta)) = Datagram::decode(&wide(bad)) else {
                panic!("{bad}: the range is right")
            };
            assert!(matches!(delta.changes().next(), Some((2, Err(_)))), "{bad}");
        }
    }

    #[test]
    fn keepalive_and_session_datagrams_round_trip() {
        for text in [
            format!("ping,bob,{TOK}"),
            "pong,42".to_owned(),
            "expired,bob".to_owned(),
            "bye,bob".to_owned(),
            "closing,going down".to_owned(),
            "closing".to_owned(),
        ] {
            let datagram = Datagram::decode(&wide(&text)).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                datagram.to_bytes().as_ref(),
                wide(&text).as_slice(),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_refusal_reasons_are_kept() {
        assert_eq!(
            Datagram::decode(&wide("refused,too-early")),
            Ok(Datagram::Refused(Refused {
                nonce: None,
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
