//! The mailbox requests a Pigeon client makes on the server's Pigeon
//! roster port, and the server's answers: each one .NET `BinaryWriter`
//! string of UTF-8 text, like the roster request it extends. A request
//! names the session (only a session that proved its key can ask) and
//! carries a MAC made with the session's sealing key, which the token does
//! not give:
//!
//! ```text
//! pigeon1 <name> <token> mail <mac> key <user>                 -> key <user> <64 hex> | unregistered <user>
//! pigeon1 <name> <token> mail <mac> deposit <to> <id> <base64> -> stored <serial> | full <detail> | unregistered <to>
//! pigeon1 <name> <token> mail <mac> fetch                      -> lines, then "end" (or "more")
//!     mail <serial> <from> <from's key, 64 hex> <unix ms stored> <base64 sealed>
//!     receipt <serial> <to> <id>
//! pigeon1 <name> <token> mail <mac> ack <m|r><serial>...       -> done
//! ```
//!
//! `<mac>`: 32 lowercase hex digits, the session key's MAC of the request
//! without it (`pigeon1 <name> <token> mail <operation>`, UTF-8). `<id>` is
//! the sender's number for the message, returned to it in the receipt once
//! the recipient has the message. Nothing here does I/O.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::identity::PublicKey;
use crate::ids::{parse_decimal, SessionToken};
use crate::name::UserName;
use crate::offline::MAX_SEALED_BYTES;
use crate::seal::SessionKey;

/// Most bytes of a mailbox request (a deposit of the largest sealed
/// message, in base64, with room to spare).
pub const MAX_MAIL_REQUEST_BYTES: usize = MAX_SEALED_BYTES * 4 / 3 + 1024;

/// Most messages and receipts one fetch answers with (`more` says there
/// are others).
pub const MAX_FETCH_ITEMS: usize = 64;

/// Most serials one acknowledgement names.
pub const MAX_ACK_ITEMS: usize = 2 * MAX_FETCH_ITEMS;

/// What a client asks of its mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailRequest {
    /// The key `name` is registered to.
    Key { name: UserName },
    /// Keep `sealed` for `to`; `id` comes back in the receipt.
    Deposit {
        to: UserName,
        id: u64,
        sealed: Vec<u8>,
    },
    /// What waits: messages to this user, receipts for its messages.
    Fetch,
    /// These messages (`m`) and receipts (`r`) arrived: delete them.
    Ack { mail: Vec<u64>, receipts: Vec<u64> },
}

/// A message waiting in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub serial: u64,
    pub from: UserName,
    /// The key `from` is registered to: the one that must have sealed it.
    pub from_key: PublicKey,
    pub stored_at_ms: u64,
    pub sealed: Vec<u8>,
}

/// Word that a message `id` this user sent to `to` arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub serial: u64,
    pub to: UserName,
    pub id: u64,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailAnswer {
    Key {
        name: UserName,
        key: PublicKey,
    },
    Unregistered {
        name: UserName,
    },
    Stored {
        serial: u64,
    },
    Full {
        detail: String,
    },
    Box {
        mail: Vec<Mail>,
        receipts: Vec<Receipt>,
        /// More wait than one answer holds.
        more: bool,
    },
    Done,
}

/// The request text after `pigeon1 <name> <token> `.
pub const MAIL_WORD: &str = "mail";

impl MailRequest {
    /// The whole request text, as `name` with `token`, signed with the
    /// session's sealing `key`.
    pub fn to_text(&self, name: &UserName, token: SessionToken, key: &SessionKey) -> String {
        let op = self.op_text();
        let mac = key.mac(unsigned_text(name, token, &op).as_bytes());
        format!(
            "{} {name} {token} {MAIL_WORD} {} {op}",
            crate::PIGEON_TAG,
            crate::datagram::hex(&mac)
        )
    }

    /// The operation's words (the text after the MAC).
    fn op_text(&self) -> String {
        match self {
            Self::Key { name } => format!("key {name}"),
            Self::Deposit { to, id, sealed } => {
                format!("deposit {to} {id} {}", BASE64.encode(sealed))
            }
            Self::Fetch => "fetch".to_owned(),
            Self::Ack { mail, receipts } => {
                let mut text = "ack".to_owned();
                for serial in mail {
                    text.push_str(&format!(" m{serial}"));
                }
                for serial in receipts {
                    text.push_str(&format!(" r{serial}"));
                }
                text
            }
        }
    }

    /// Reads the operation (the text after `mail `).
    pub fn parse(op: &str) -> Option<Self> {
        let mut words = op.split(' ');
        let request = match words.next()? {
            "key" => Self::Key {
                name: UserName::parse(words.next()?).ok()?,
            },
            "deposit" => {
                let to = UserName::parse(words.next()?).ok()?;
                let id = parse_decimal(words.next()?)?;
                let sealed = BASE64.decode(words.next()?).ok()?;
                if sealed.is_empty() || sealed.len() > MAX_SEALED_BYTES + 1024 {
                    return None;
                }
                Self::Deposit { to, id, sealed }
            }
            "fetch" => Self::Fetch,
            "ack" => {
                let (mut mail, mut receipts) = (Vec::new(), Vec::new());
                for word in words.by_ref() {
                    if mail.len() + receipts.len() >= MAX_ACK_ITEMS {
                        return None;
                    }
                    match word.split_at_checked(1)? {
                        ("m", serial) => mail.push(parse_decimal(serial)?),
                        ("r", serial) => receipts.push(parse_decimal(serial)?),
                        _ => return None,
                    }
                }
                Self::Ack { mail, receipts }
            }
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }
}

/// What a request's MAC is made over.
fn unsigned_text(name: &UserName, token: SessionToken, op: &str) -> String {
    format!("{} {name} {token} {MAIL_WORD} {op}", crate::PIGEON_TAG)
}

/// A mailbox request as read: who asks, with which token, the MAC it
/// carries, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMailRequest {
    pub name: UserName,
    pub token: SessionToken,
    pub mac: [u8; 16],
    pub request: MailRequest,
}

impl SignedMailRequest {
    /// Whether the session's sealing `key` made this request's MAC (over
    /// the request as this version writes it: reading and writing agree
    /// byte for byte).
    pub fn verify(&self, key: &SessionKey) -> bool {
        let unsigned = unsigned_text(&self.name, self.token, &self.request.op_text());
        key.verify(unsigned.as_bytes(), &self.mac)
    }
}

/// Reads a whole mailbox request.
pub fn parse_mail_request(text: &str) -> Option<SignedMailRequest> {
    let rest = text.strip_prefix(crate::PIGEON_TAG)?.strip_prefix(' ')?;
    let mut words = rest.splitn(5, ' ');
    let name = UserName::parse(words.next()?).ok()?;
    let token = SessionToken::parse(words.next()?)?;
    if words.next()? != MAIL_WORD {
        return None;
    }
    let mac = crate::datagram::parse_hex_array(words.next()?)?;
    let request = MailRequest::parse(words.next()?)?;
    Some(SignedMailRequest {
        name,
        token,
        mac,
        request,
    })
}

impl MailAnswer {
    /// The answer's text.
    pub fn to_text(&self) -> String {
        match self {
            Self::Key { name, key } => format!("key {name} {key}"),
            Self::Unregistered { name } => format!("unregistered {name}"),
            Self::Stored { serial } => format!("stored {serial}"),
            Self::Full { detail } => format!("full {}", detail.replace('\n', " ")),
            Self::Box {
                mail,
                receipts,
                more,
            } => {
                let mut text = String::new();
                for m in mail {
                    text.push_str(&format!(
                        "mail {} {} {} {} {}\n",
                        m.serial,
                        m.from,
                        m.from_key,
                        m.stored_at_ms,
                        BASE64.encode(&m.sealed)
                    ));
                }
                for r in receipts {
                    text.push_str(&format!("receipt {} {} {}\n", r.serial, r.to, r.id));
                }
                text.push_str(if *more { "more" } else { "end" });
                text
            }
            Self::Done => "done".to_owned(),
        }
    }

    /// Reads an answer (`None`: not one).
    pub fn parse(text: &str) -> Option<Self> {
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        Some(match word {
            "key" => {
                let (name, key) = rest.split_once(' ')?;
                Self::Key {
                    name: UserName::parse(name).ok()?,
                    key: PublicKey::parse(key)?,
                }
            }
            "unregistered" => Self::Unregistered {
                name: UserName::parse(rest).ok()?,
            },
            "stored" => Self::Stored {
                serial: parse_decimal(rest)?,
            },
            // One line, as written (a server never sends more).
            "full" => Self::Full {
                detail: rest.replace('\n', " "),
            },
            "done" => Self::Done,
            _ => {
                let (mut mail, mut receipts) = (Vec::new(), Vec::new());
                let mut lines = text.split('\n');
                let more = loop {
                    let line = lines.next()?;
                    let mut words = line.split(' ');
                    match words.next()? {
                        "end" => break false,
                        "more" => break true,
                        "mail" => mail.push(Mail {
                            serial: parse_decimal(words.next()?)?,
                            from: UserName::parse(words.next()?).ok()?,
                            from_key: PublicKey::parse(words.next()?)?,
                            stored_at_ms: parse_decimal(words.next()?)?,
                            sealed: BASE64.decode(words.next()?).ok()?,
                        }),
                        "receipt" => receipts.push(Receipt {
                            serial: parse_decimal(words.next()?)?,
                            to: UserName::parse(words.next()?).ok()?,
                            id: parse_decimal(words.next()?)?,
                        }),
                        _ => return None,
                    }
                };
                Self::Box {
                    mail,
                    receipts,
                    more,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[test]
    fn requests_and_answers_read_back() {
        let me = name("alice");
        let token = SessionToken(42);
        let key = SessionKey::from_secret(b"the session's sealing secret");
        for request in [
            MailRequest::Key { name: name("bob") },
            MailRequest::Deposit {
                to: name("天涯"),
                id: 7,
                sealed: vec![1, 2, 3, 250],
            },
            MailRequest::Fetch,
            MailRequest::Ack {
                mail: vec![1, 5],
                receipts: vec![9],
            },
        ] {
            let text = request.to_text(&me, token, &key);
            let signed = parse_mail_request(&text).unwrap();
            assert_eq!(
                (&signed.name, signed.token, &signed.request),
                (&me, token, &request)
            );
            // Made with the session's key, checked with it; not with
            // another's, nor once anything in it changes.
            assert!(signed.verify(&key));
            assert!(!signed.verify(&SessionKey::from_token(token)));
            let (_, op) = text.split_at(text.len() - request.op_text().len());
            let mac = &text[text.len() - op.len() - 33..text.len() - op.len() - 1];
            assert_eq!(MailRequest::parse(op), Some(request.clone()));
            let forged = format!("pigeon1 alice {token} mail {mac} ack m1 m2 m3");
            assert!(parse_mail_request(&forged).is_some_and(|f| !f.verify(&key)));
        }
        // Without a MAC: not a request.
        assert_eq!(
            parse_mail_request(&format!("pigeon1 alice {token} mail fetch")),
            None
        );
        assert_eq!(MailRequest::parse("ack x1"), None);
        assert_eq!(MailRequest::parse("deposit bob 1 !!"), None);
        assert_eq!(MailRequest::parse("fetch more"), None);

        for answer in [
            MailAnswer::Key {
                name: name("bob"),
                key: PublicKey([3; 32]),
            },
            MailAnswer::Unregistered { name: name("bob") },
            MailAnswer::Stored { serial: 12 },
            MailAnswer::Full {
                detail: "bob has 1000 messages waiting".into(),
            },
            MailAnswer::Box {
                mail: vec![Mail {
                    serial: 3,
                    from: name("carol"),
                    from_key: PublicKey([4; 32]),
                    stored_at_ms: 99,
                    sealed: vec![9; 40],
                }],
                receipts: vec![Receipt {
                    serial: 4,
                    to: name("dave"),
                    id: 17,
                }],
                more: true,
            },
            MailAnswer::Box {
                mail: vec![],
                receipts: vec![],
                more: false,
            },
            MailAnswer::Done,
        ] {
            assert_eq!(MailAnswer::parse(&answer.to_text()), Some(answer));
        }
        assert_eq!(MailAnswer::parse("mail 1 bob"), None);
    }
}
