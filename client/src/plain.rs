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
//! sent <to> <id>           (--verbose)
//! delivered <to> <id>      (--verbose)
//! ```

use std::fmt::Write;

use pigeon_shared::{PeerAddr, UserName};

use crate::events::{ClientEvent, MessageId};

/// The stdout line for `event`, if it has one. (Failures that end the
/// session, and the server coming and going, are reported on stderr
/// instead.) `verbose` adds delivery confirmations.
pub fn event_line(event: &ClientEvent, verbose: bool) -> Option<String> {
    Some(match event {
        ClientEvent::Ready { endpoint, online } => format!("ready {endpoint} {online}"),
        ClientEvent::Online { name, endpoint } => format!("online {name} {endpoint}"),
        ClientEvent::Offline { name } => format!("offline {name}"),
        ClientEvent::Message { from, time, text } => {
            format!("msg {from} {} {}", time.display_token(), one_line(text))
        }
        ClientEvent::Refused { reason, .. } => format!("refused {reason}"),
        ClientEvent::Failed { to, text, .. } => format!("failed {to} {}", one_line(text)),
        ClientEvent::Delivered { to, id } if verbose => format!("delivered {to} {id}"),
        ClientEvent::Delivered { .. }
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

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[test]
    fn events_print_as_the_documented_lines() {
        let endpoint = PeerAddr::parse("127.0.0.1:5000").unwrap();
        let cases = [
            (
                ClientEvent::Ready {
                    endpoint,
                    online: 3,
                },
                "ready 127.0.0.1:5000 3",
            ),
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
            assert_eq!(event_line(&event, false).as_deref(), Some(line));
        }
        assert_eq!(event_line(&ClientEvent::LoggedOut, true), None);
        let failed = ClientEvent::Failed {
            to: name("bob"),
            id: MessageId(3),
            text: "are you\nthere?".into(),
        };
        assert_eq!(
            event_line(&failed, false).as_deref(),
            Some("failed bob are you\\nthere?")
        );
        let delivered = ClientEvent::Delivered {
            to: name("bob"),
            id: MessageId(3),
        };
        assert_eq!(event_line(&delivered, false), None);
        assert_eq!(
            event_line(&delivered, true).as_deref(),
            Some("delivered bob 3")
        );
        assert_eq!(sent_line(&name("bob"), MessageId(3)), "sent bob 3");
        assert_eq!(
            user_line(&name("bob"), &endpoint),
            "user bob 127.0.0.1:5000"
        );
    }

    #[test]
    fn control_characters_cannot_break_lines_or_drive_the_terminal() {
        assert_eq!(one_line("a\nb\r\tc\u{1b}[2J"), "a\\nb\\r\\tc\\u{1b}[2J");
        assert_eq!(one_line("plain, text 好"), "plain, text 好");
    }
}
