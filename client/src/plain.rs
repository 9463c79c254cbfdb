//! Plain mode's output lines: one event per line, space-separated, stable
//! for scripts. No I/O here; the console actor prints what these return.
//!
//! ```text
//! ready <own-ip:port> <users-online>
//! online <name> <ip:port>
//! offline <name>
//! msg <from> <time> <text>
//! user <name> <ip:port>
//! refused <reason>
//! failed <to> <text>
//! key-changed <name> <old-fingerprint> <new-fingerprint>
//! key <name> <fingerprint>|none    (/whois)
//! sent <to> <id>           (--verbose)
//! stored <to> <id>         (--verbose; kept by the server for a user offline)
//! delivered <to> <id>      (--verbose)
//! ```

use std::fmt::Write;

use pigeon_shared::{PeerAddr, PublicKey, UserName};

use crate::events::{ClientEvent, MessageId, Route};
use crate::session::KeyInfo;

/// The stdout lines for `event` (most events have one; `Ready` has one for
/// itself and one for each other user in the roster; failures that end the
/// session, and the server coming and going, have none: they are reported
/// on stderr). `verbose` adds delivery confirmations.
pub fn event_lines(event: &ClientEvent, verbose: bool) -> Vec<String> {
    if let ClientEvent::Ready {
        name,
        endpoint,
        online,
        roster,
    } = event
    {
        let mut lines = vec![format!("ready {endpoint} {online}")];
        lines.extend(
            roster
                .iter()
                .filter(|(other, _)| *other != name)
                .map(|(other, peer)| format!("online {other} {}", peer.endpoint)),
        );
        return lines;
    }
    event_line(event, verbose).into_iter().collect()
}

fn event_line(event: &ClientEvent, verbose: bool) -> Option<String> {
    Some(match event {
        ClientEvent::Ready { .. } => return None,
        ClientEvent::Online { name, endpoint } => format!("online {name} {endpoint}"),
        ClientEvent::Offline { name } => format!("offline {name}"),
        ClientEvent::Message { from, time, text } => {
            format!("msg {from} {} {}", time.display_token(), one_line(text))
        }
        ClientEvent::Refused { reason, .. } => format!("refused {reason}"),
        ClientEvent::Failed { to, text, .. } => format!("failed {to} {}", one_line(text)),
        ClientEvent::OfflineMessage {
            from, time, text, ..
        } => format!("msg {from} {} {}", time.display_token(), one_line(text)),
        ClientEvent::Stored { to, id } if verbose => format!("stored {to} {id}"),
        ClientEvent::NotStored { to, text, .. } => format!("failed {to} {}", one_line(text)),
        ClientEvent::Delivered { to, id } if verbose => format!("delivered {to} {id}"),
        ClientEvent::Path { name, route } if verbose => match route {
            Route::Direct(at) => format!("path {name} direct {at}"),
            Route::Relayed => format!("path {name} relayed"),
        },
        ClientEvent::KeyChanged { name, old, new } => format!(
            "key-changed {name} {} {}",
            old.fingerprint(),
            new.fingerprint()
        ),
        ClientEvent::Delivered { .. }
        | ClientEvent::Stored { .. }
        | ClientEvent::Path { .. }
        | ClientEvent::Connecting { .. }
        | ClientEvent::LoginFailed { .. }
        | ClientEvent::LoggedOut
        | ClientEvent::ServerLost { .. }
        | ClientEvent::Reconnected { .. } => return None,
    })
}

/// The `--verbose` line for a message handed to the network.
pub fn sent_line(to: &UserName, id: MessageId) -> String {
    format!("sent {to} {id}")
}

/// The `/whois` line: `key <name> <fingerprint>`, or `none` for a user
/// without a key (a seed-era client: not encrypted, not verified).
pub fn key_line(name: &UserName, key: Option<PublicKey>) -> String {
    match key {
        Some(key) => format!("key {name} {}", key.fingerprint()),
        None => format!("key {name} none"),
    }
}

/// What `/whois` adds for a person to read (stderr in plain mode, the
/// status tab in the terminal UI), if anything.
pub fn whois_note(name: &UserName, info: &KeyInfo) -> Option<String> {
    match (info.online, info.current, info.pinned) {
        (true, Some(new), Some(old)) if new != old => Some(format!(
            "{name}'s key changed from {} to {}: nothing is sent to {name} until you have checked the new one with them and typed /trust {name}",
            old.fingerprint(),
            new.fingerprint()
        )),
        (true, Some(_), _) => None,
        (true, None, _) => Some(format!(
            "{name} has no key (a client from before keys, or a seed-era one): chat with {name} is not encrypted and not verified"
        )),
        (false, _, Some(_)) => Some(format!(
            "{name} is not online; that is the key pinned for {name}"
        )),
        (false, _, None) => Some(format!("{name} is not online and has no key pinned")),
    }
}

/// The `/list` line for one user.
pub fn user_line(name: &UserName, endpoint: &PeerAddr) -> String {
    format!("user {name} {endpoint}")
}

/// `text` on one line: control characters (line breaks, escape sequences
/// a hostile peer might send to a terminal) are written as `\n`, `\r`,
/// `\t` or `\u{..}`.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use pigeon_shared::{RefuseReason, TalkTime};

    use super::*;
    use crate::events::RosterView;
    use crate::session::{Peer, RosterMap};

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[test]
    fn events_print_as_the_documented_lines() {
        let endpoint = PeerAddr::parse("127.0.0.1:5000").unwrap();
        let cases = [
            (
                ClientEvent::Online {
                    name: name("bob"),
                    endpoint,
                },
                "online bob 127.0.0.1:5000",
            ),
            (ClientEvent::Offline { name: name("bob") }, "offline bob"),
            (
                ClientEvent::Message {
                    from: name("天涯"),
                    time: TalkTime::parse("14:03:27").unwrap(),
                    text: "你好, world".into(),
                },
                "msg 天涯 14:03:27 你好, world",
            ),
            (
                ClientEvent::Refused {
                    reason: RefuseReason::NameTaken,
                    detail: "x".into(),
                },
                "refused name-taken",
            ),
        ];
        for (event, line) in cases {
            assert_eq!(event_lines(&event, false), [line]);
        }
        assert!(event_lines(&ClientEvent::LoggedOut, true).is_empty());
        let failed = ClientEvent::Failed {
            to: name("bob"),
            id: MessageId(3),
            text: "are you\nthere?".into(),
        };
        assert_eq!(event_lines(&failed, false), ["failed bob are you\\nthere?"]);
        let delivered = ClientEvent::Delivered {
            to: name("bob"),
            id: MessageId(3),
        };
        assert!(event_lines(&delivered, false).is_empty());
        assert_eq!(event_lines(&delivered, true), ["delivered bob 3"]);
        assert_eq!(sent_line(&name("bob"), MessageId(3)), "sent bob 3");
        assert_eq!(
            user_line(&name("bob"), &endpoint),
            "user bob 127.0.0.1:5000"
        );
    }

    #[test]
    fn ready_prints_itself_then_every_other_user() {
        let peer = |text: &str| Peer {
            endpoint: PeerAddr::parse(text).unwrap(),
            instance: None,
            key: None,
        };
        let roster: RosterMap = [
            (name("carol"), peer("127.0.0.1:5002")),
            (name("alice"), peer("127.0.0.1:5000")),
            (name("bob"), peer("127.0.0.1:5001")),
        ]
        .into_iter()
        .collect();
        let ready = ClientEvent::Ready {
            name: name("alice"),
            endpoint: PeerAddr::parse("127.0.0.1:5000").unwrap(),
            online: 3,
            roster: RosterView(std::sync::Arc::new(roster)),
        };
        assert_eq!(
            event_lines(&ready, false),
            [
                "ready 127.0.0.1:5000 3",
                "online bob 127.0.0.1:5001",
                "online carol 127.0.0.1:5002"
            ]
        );
    }

    #[test]
    fn control_characters_cannot_break_lines_or_drive_the_terminal() {
        assert_eq!(one_line("a\nb\r\tc\u{1b}[2J"), "a\\nb\\r\\tc\\u{1b}[2J");
        assert_eq!(one_line("plain, text 好"), "plain, text 好");
    }
}
