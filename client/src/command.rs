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
/quit            log out and exit (end of input does the same)
/help            this list";

const MSG_USAGE: &str = "/msg NAME TEXT";

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
            _ => "/help",
        })),
    };
    match verb {
        "list" => bare(Command::List),
        "quit" => bare(Command::Quit),
        "help" => bare(Command::Help),
        "msg" => {
            let rest = rest.ok_or(CommandError::Usage(MSG_USAGE))?;
            let rest = rest.trim_start();
            let (name, text) = rest
                .split_once(char::is_whitespace)
                .ok_or(CommandError::Usage(MSG_USAGE))?;
            if text.is_empty() {
                return Err(CommandError::Usage(MSG_USAGE));
            }
            let to = UserName::parse(name).map_err(|source| CommandError::BadName {
                name: name.to_owned(),
                source,
            })?;
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
    fn bare_commands_and_blank_lines() {
        assert_eq!(parse_command("/list").unwrap(), Some(Command::List));
        assert_eq!(parse_command("/quit\r").unwrap(), Some(Command::Quit));
        assert_eq!(parse_command("/help ").unwrap(), Some(Command::Help));
        assert_eq!(parse_command("   ").unwrap(), None);
        assert_eq!(parse_command("").unwrap(), None);
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
