//! Console commands: parsing a typed line into a [`Command`]. No I/O.

use pigeon_shared::{NameError, UserName};

/// What a console line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/list`: the users online.
    List,
    /// `/msg NAME TEXT`: send TEXT to NAME.
    Msg { to: UserName, text: String },
    /// `/quit`: log out and exit.
    Quit,
    /// `/help`: list the commands.
    Help,
    /// `/open NAME`: show the conversation with NAME (terminal UI).
    Open { name: UserName },
    /// `/close`: close the conversation in view (terminal UI).
    Close,
    /// `/history NAME [N]`: the last N messages with NAME from the history
    /// file (terminal UI).
    History { name: UserName, count: usize },
    /// `/search TEXT`: past messages containing TEXT (terminal UI).
    Search { text: String },
    /// `/bell on|off`: ring the terminal bell on news (terminal UI).
    Bell { on: bool },
    /// `/whois [NAME]`: NAME's key fingerprint (this user's own without a
    /// name).
    WhoIs { name: Option<UserName> },
    /// `/trust NAME`: accept NAME's new key.
    Trust { name: UserName },
}

impl Command {
    /// Whether the command exists only in the terminal UI.
    pub fn ui_only(&self) -> bool {
        matches!(
            self,
            Self::Open { .. }
                | Self::Close
                | Self::History { .. }
                | Self::Search { .. }
                | Self::Bell { .. }
        )
    }
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {0}; /help lists the commands")]
    Unknown(String),
    #[error("lines start with a command, such as /msg NAME TEXT; /help lists them")]
    NotACommand,
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{name:?} is not a user name: {source}")]
    BadName { name: String, source: NameError },
}

/// The commands, one per line, for `/help`.
pub const HELP: &str = "\
/msg NAME TEXT   send TEXT to NAME
/list            list the users online
/whois [NAME]    NAME's key fingerprint (yours without a name)
/trust NAME      accept NAME's new key after checking it
/quit            log out and exit (end of input does the same)
/help            this list";

/// The terminal UI's commands, one per line, for `/help`.
pub const UI_HELP: &str = "\
/open NAME          open the conversation with NAME (or Enter on the roster)
/close              close the conversation in view
/msg NAME TEXT      send TEXT to NAME (typing in a conversation sends there)
/history NAME [N]   show the last N (default 50) messages with NAME
/search TEXT        find past messages containing TEXT
/list               list the users online
/whois [NAME]       NAME's key fingerprint (yours without a name)
/trust NAME         accept NAME's new key after checking it
/bell on|off        ring the terminal bell on news (remembered)
/quit               log out and exit (Ctrl-C does the same)
/help               this list";

/// Messages `/history NAME` shows when no number is given.
pub const DEFAULT_HISTORY_COUNT: usize = 50;

/// Most messages `/history` shows at once.
pub const MAX_HISTORY_COUNT: usize = 10_000;

const MSG_USAGE: &str = "/msg NAME TEXT";
const OPEN_USAGE: &str = "/open NAME";
const HISTORY_USAGE: &str = "/history NAME [N]";
const SEARCH_USAGE: &str = "/search TEXT";
const BELL_USAGE: &str = "/bell on|off";
const WHOIS_USAGE: &str = "/whois [NAME]";
const TRUST_USAGE: &str = "/trust NAME";

/// Parses a line; `Ok(None)` for a blank line.
///
/// The text of `/msg` is everything after the one space that follows the
/// name, kept exactly as typed.
pub fn parse_command(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Err(CommandError::NotACommand);
    };
    let (verb, rest) = match command.split_once(char::is_whitespace) {
        Some((verb, rest)) => (verb, Some(rest)),
        None => (command, None),
    };
    let bare = |c: Command| match rest.map(str::trim) {
        None | Some("") => Ok(Some(c)),
        Some(_) => Err(CommandError::Usage(match c {
            Command::List => "/list",
            Command::Quit => "/quit",
            Command::Close => "/close",
            _ => "/help",
        })),
    };
    let name = |text: &str| {
        UserName::parse(text).map_err(|source| CommandError::BadName {
            name: text.to_owned(),
            source,
        })
    };
    let words: Vec<&str> = rest
        .map(|r| r.split_whitespace().collect())
        .unwrap_or_default();
    match verb {
        "list" => bare(Command::List),
        "quit" => bare(Command::Quit),
        "help" => bare(Command::Help),
        "close" => bare(Command::Close),
        "open" => match words.as_slice() {
            [who] => Ok(Some(Command::Open { name: name(who)? })),
            _ => Err(CommandError::Usage(OPEN_USAGE)),
        },
        "history" => {
            let (who, count) = match words.as_slice() {
                [who] => (who, DEFAULT_HISTORY_COUNT),
                [who, count] => match count.parse::<usize>() {
                    Ok(n) if n > 0 => (who, n.min(MAX_HISTORY_COUNT)),
                    _ => return Err(CommandError::Usage(HISTORY_USAGE)),
                },
                _ => return Err(CommandError::Usage(HISTORY_USAGE)),
            };
            Ok(Some(Command::History {
                name: name(who)?,
                count,
            }))
        }
        "search" => match rest.map(str::trim) {
            Some(text) if !text.is_empty() => Ok(Some(Command::Search {
                text: text.to_owned(),
            })),
            _ => Err(CommandError::Usage(SEARCH_USAGE)),
        },
        "whois" => match words.as_slice() {
            [] => Ok(Some(Command::WhoIs { name: None })),
            [who] => Ok(Some(Command::WhoIs {
                name: Some(name(who)?),
            })),
            _ => Err(CommandError::Usage(WHOIS_USAGE)),
        },
        "trust" => match words.as_slice() {
            [who] => Ok(Some(Command::Trust { name: name(who)? })),
            _ => Err(CommandError::Usage(TRUST_USAGE)),
        },
        "bell" => match words.as_slice() {
            ["on"] => Ok(Some(Command::Bell { on: true })),
            ["off"] => Ok(Some(Command::Bell { on: false })),
            _ => Err(CommandError::Usage(BELL_USAGE)),
        },
        "msg" => {
            let rest = rest.ok_or(CommandError::Usage(MSG_USAGE))?;
            let rest = rest.trim_start();
            let (who, text) = rest
                .split_once(char::is_whitespace)
                .ok_or(CommandError::Usage(MSG_USAGE))?;
            if text.is_empty() {
                return Err(CommandError::Usage(MSG_USAGE));
            }
            let to = name(who)?;
            Ok(Some(Command::Msg {
                to,
                text: text.to_owned(),
            }))
        }
        other => Err(CommandError::Unknown(format!("/{other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: &str, text: &str) -> Command {
        Command::Msg {
            to: UserName::parse(to).unwrap(),
            text: text.into(),
        }
    }

    #[test]
    fn msg_keeps_commas_spaces_and_chinese_in_the_text() {
        assert_eq!(
            parse_command("/msg bob hello, world").unwrap(),
            Some(msg("bob", "hello, world"))
        );
        assert_eq!(
            parse_command("/msg 剑痴 你好，朋友,  两个空格").unwrap(),
            Some(msg("剑痴", "你好，朋友,  两个空格"))
        );
        assert_eq!(
            parse_command("/msg bob  x").unwrap(),
            Some(msg("bob", " x"))
        );
    }

    #[test]
    fn key_commands() {
        let bob = UserName::parse("bob").unwrap();
        assert_eq!(
            parse_command("/whois").unwrap(),
            Some(Command::WhoIs { name: None })
        );
        assert_eq!(
            parse_command("/whois bob").unwrap(),
            Some(Command::WhoIs {
                name: Some(bob.clone())
            })
        );
        assert_eq!(
            parse_command("/trust bob").unwrap(),
            Some(Command::Trust { name: bob })
        );
        assert!(matches!(
            parse_command("/trust"),
            Err(CommandError::Usage(TRUST_USAGE))
        ));
        assert!(parse_command("/whois a b").is_err());
    }

    #[test]
    fn bare_commands_and_blank_lines() {
        assert_eq!(parse_command("/list").unwrap(), Some(Command::List));
        assert_eq!(parse_command("/quit\r").unwrap(), Some(Command::Quit));
        assert_eq!(parse_command("/help ").unwrap(), Some(Command::Help));
        assert_eq!(parse_command("   ").unwrap(), None);
        assert_eq!(parse_command("").unwrap(), None);
    }

    #[test]
    fn terminal_ui_commands() {
        let bob = UserName::parse("bob").unwrap();
        assert_eq!(
            parse_command("/open bob").unwrap(),
            Some(Command::Open { name: bob.clone() })
        );
        assert_eq!(parse_command("/close").unwrap(), Some(Command::Close));
        assert_eq!(
            parse_command("/history bob").unwrap(),
            Some(Command::History {
                name: bob.clone(),
                count: DEFAULT_HISTORY_COUNT
            })
        );
        assert_eq!(
            parse_command("/history bob 7").unwrap(),
            Some(Command::History {
                name: bob.clone(),
                count: 7
            })
        );
        assert_eq!(
            parse_command("/history bob 99999999").unwrap(),
            Some(Command::History {
                name: bob,
                count: MAX_HISTORY_COUNT
            })
        );
        assert_eq!(
            parse_command("/search  你好 world ").unwrap(),
            Some(Command::Search {
                text: "你好 world".into()
            })
        );
        assert_eq!(
            parse_command("/bell off").unwrap(),
            Some(Command::Bell { on: false })
        );
        assert!(Command::Close.ui_only());
        assert!(!Command::List.ui_only());
        for (line, usage) in [
            ("/open", OPEN_USAGE),
            ("/open a b", OPEN_USAGE),
            ("/history", HISTORY_USAGE),
            ("/history bob 0", HISTORY_USAGE),
            ("/history bob x", HISTORY_USAGE),
            ("/search ", SEARCH_USAGE),
            ("/bell maybe", BELL_USAGE),
            ("/close now", "/close"),
        ] {
            assert_eq!(
                parse_command(line),
                Err(CommandError::Usage(usage)),
                "{line}"
            );
        }
    }

    #[test]
    fn mistakes_get_clear_errors() {
        assert_eq!(parse_command("hello"), Err(CommandError::NotACommand));
        assert_eq!(
            parse_command("/frobnicate"),
            Err(CommandError::Unknown("/frobnicate".into()))
        );
        assert_eq!(parse_command("/msg"), Err(CommandError::Usage(MSG_USAGE)));
        assert_eq!(
            parse_command("/msg bob"),
            Err(CommandError::Usage(MSG_USAGE))
        );
        assert_eq!(
            parse_command("/msg bob "),
            Err(CommandError::Usage(MSG_USAGE))
        );
        assert_eq!(
            parse_command("/list all"),
            Err(CommandError::Usage("/list"))
        );
        assert!(matches!(
            parse_command("/msg a,b hi"),
            Err(CommandError::BadName { .. })
        ));
    }
}
