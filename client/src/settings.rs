//! The client's settings: the config file (TOML, in the per-user config
//! folder), the command line over it, and the server address as a person
//! writes it (an IP or a host name, with or without a port).
//!
//! ```toml
//! name = "alice"
//! server = "chat.example.org:7788"
//! bind = "0.0.0.0:0"
//! history = "/home/alice/pigeon.sqlite3"   # or false: keep none
//! bell = true
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};

use pigeon_shared::UserName;
use serde::Deserialize;
use toml::Spanned;

/// The config file's name in the per-user config folder.
pub const CONFIG_FILE: &str = "config.toml";

/// The server's port when an address names none.
pub const DEFAULT_SERVER_PORT: u16 = 7788;

/// The server when none is named: this machine's.
pub const DEFAULT_SERVER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_SERVER_PORT));

/// Longest config file read; a config is a few lines.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Where the config file is by default: `$XDG_CONFIG_HOME/pigeon/config.toml`
/// (`~/.config/pigeon/config.toml`) on Linux, the platform's config folder
/// elsewhere.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("pigeon").join(CONFIG_FILE))
}

/// The server's address as it was written, and where that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// As written (kept for the config file, so a host name stays one).
    pub text: String,
    /// Resolved.
    pub addr: SocketAddr,
    /// Other servers of the same cluster (`A,B,C`: B and C), tried in turn
    /// when `addr` does not answer.
    pub alternates: Vec<SocketAddr>,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Reads a server address: `IP:PORT`, `HOST:PORT`, `[IPv6]:PORT`, or an IP
/// or host name alone (port 7788). A host name with both IPv4 and IPv6
/// addresses is reached over IPv4, where a server listens by default.
pub fn parse_server(text: &str) -> Result<ServerAddr, String> {
    // Several servers of one cluster: the first, then the others in turn.
    if text.contains(',') {
        let mut parsed = text.split(',').map(parse_one_server);
        let mut first = parsed
            .next()
            .unwrap_or_else(|| Err("an empty address".into()))?;
        for other in parsed {
            first.alternates.push(other?.addr);
        }
        first.text = text.trim().to_owned();
        return Ok(first);
    }
    parse_one_server(text)
}

fn parse_one_server(text: &str) -> Result<ServerAddr, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "an empty address; give the server as HOST:PORT, such as 127.0.0.1:7788".into(),
        );
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(ServerAddr {
            text: text.to_owned(),
            addr,
            alternates: Vec::new(),
        });
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ServerAddr {
            text: text.to_owned(),
            addr: SocketAddr::new(ip, DEFAULT_SERVER_PORT),
            alternates: Vec::new(),
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port number (1 to 65535)"))?;
            (host, port)
        }
        Some(_) => {
            return Err(format!(
                "{text:?} is not an address; an IPv6 address with a port is written [IP]:PORT"
            ))
        }
        None => (text, DEFAULT_SERVER_PORT),
    };
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            format!("cannot find the host {host:?} ({e}); give the server as IP:PORT, such as 127.0.0.1:7788")
        })?
        .collect();
    let addr = found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("the host {host:?} has no address"))?;
    Ok(ServerAddr {
        text: text.to_owned(),
        addr,
        alternates: Vec::new(),
    })
}

/// Whether and where to keep the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryChoice {
    /// The default file in the per-user data folder.
    Default,
    /// This file.
    File(PathBuf),
    /// None.
    Off,
}

/// What the user chose, from the config file or the command line; `None`
/// is "not said here".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    pub name: Option<UserName>,
    pub server: Option<ServerAddr>,
    pub bind: Option<SocketAddr>,
    pub history: Option<HistoryChoice>,
    pub bell: Option<bool>,
}

impl Choices {
    /// These choices, with `under`'s for whatever these do not say.
    pub fn over(self, under: Choices) -> Choices {
        Choices {
            name: self.name.or(under.name),
            server: self.server.or(under.server),
            bind: self.bind.or(under.bind),
            history: self.history.or(under.history),
            bell: self.bell.or(under.bell),
        }
    }

    /// The choices as a config file.
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::new();
        if let Some(name) = &self.name {
            table.insert("name".into(), name.to_string().into());
        }
        if let Some(server) = &self.server {
            table.insert("server".into(), server.text.clone().into());
        }
        if let Some(bind) = &self.bind {
            table.insert("bind".into(), bind.to_string().into());
        }
        match &self.history {
            Some(HistoryChoice::File(path)) => {
                table.insert("history".into(), path.display().to_string().into());
            }
            Some(HistoryChoice::Off) => {
                table.insert("history".into(), false.into());
            }
            Some(HistoryChoice::Default) | None => {}
        }
        if let Some(bell) = self.bell {
            table.insert("bell".into(), bell.into());
        }
        let body = toml::to_string(&table).unwrap_or_default();
        format!("# Pigeon's settings; flags on the command line override them.\n{body}")
    }
}

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is longer than {MAX_CONFIG_BYTES} bytes; is it a config file?")]
    TooLong { path: PathBuf },
    #[error("{path}, line {line}: {why}")]
    Invalid {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// The file as written, each value with where it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    name: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    bind: Option<Spanned<String>>,
    history: Option<Spanned<toml::Value>>,
    bell: Option<Spanned<bool>>,
}

/// Reads the config file at `path`; a missing file is no choices, unless
/// `must_exist` (the user named it).
pub fn load_config(path: &Path, must_exist: bool) -> Result<Choices, ConfigError> {
    use std::io::Read;
    let read_error = |cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(Choices::default())
        }
        Err(e) => return Err(read_error(e)),
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLong {
            path: path.to_owned(),
        });
    }
    parse_config(&text).map_err(|(span, why)| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of(&text, span.start),
        why,
    })
}

/// The choices in a config file's text, or where and why it is wrong.
pub fn parse_config(text: &str) -> Result<Choices, (Range<usize>, String)> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        (span, e.message().trim().to_owned())
    })?;
    let name = match file.name {
        Some(name) => {
            Some(UserName::parse(name.get_ref()).map_err(|e| (name.span(), format!("name: {e}")))?)
        }
        None => None,
    };
    let server = match file.server {
        Some(server) => Some(
            parse_server(server.get_ref()).map_err(|e| (server.span(), format!("server: {e}")))?,
        ),
        None => None,
    };
    let bind = match file.bind {
        Some(bind) => Some(bind.get_ref().parse::<SocketAddr>().map_err(|_| {
            (
                bind.span(),
                format!(
                    "bind: {:?} is not IP:PORT, such as 0.0.0.0:0",
                    bind.get_ref()
                ),
            )
        })?),
        None => None,
    };
    let history =
        match file.history {
            Some(history) => Some(match history.get_ref() {
                toml::Value::String(path) if !path.is_empty() => {
                    HistoryChoice::File(PathBuf::from(path))
                }
                toml::Value::Boolean(true) => HistoryChoice::Default,
                toml::Value::Boolean(false) => HistoryChoice::Off,
                _ => return Err((
                    history.span(),
                    "history: a file path in quotes, true for the default file, or false for none"
                        .into(),
                )),
            }),
            None => None,
        };
    Ok(Choices {
        name,
        server,
        bind,
        history,
        bell: file.bell.map(Spanned::into_inner),
    })
}

/// Writes `choices` to `path`, creating its folder.
pub fn write_config(path: &Path, choices: &Choices) -> Result<(), ConfigError> {
    let write_error = |cause| ConfigError::Write {
        path: path.to_owned(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    std::fs::write(path, choices.to_toml()).map_err(write_error)
}

/// The line (from 1) that byte `at` of `text` is on.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()
        .get(..at)
        .map_or(0, |before| before.iter().filter(|&&b| b == b'\n').count())
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_and_why(text: &str) -> (usize, String) {
        let (span, why) = parse_config(text).unwrap_err();
        (line_of(text, span.start), why)
    }

    #[test]
    fn a_whole_config_reads() {
        let choices = parse_config(
            "name = \"alice\"\nserver = \"127.0.0.1:7790\"\nbind = \"0.0.0.0:0\"\n\
             history = \"/tmp/h.sqlite3\"\nbell = true\n",
        )
        .unwrap();
        assert_eq!(choices.name.unwrap().as_str(), "alice");
        assert_eq!(
            choices.server.unwrap().addr,
            "127.0.0.1:7790".parse().unwrap()
        );
        assert_eq!(choices.bind, Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(
            choices.history,
            Some(HistoryChoice::File("/tmp/h.sqlite3".into()))
        );
        assert_eq!(choices.bell, Some(true));
        assert_eq!(parse_config("").unwrap(), Choices::default());
        assert_eq!(
            parse_config("history = false").unwrap().history,
            Some(HistoryChoice::Off)
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        let (line, why) = line_and_why("name = \"alice\"\n\nserver = \"nowhere:x\"\n");
        assert_eq!(line, 3);
        assert!(why.starts_with("server: "), "{why}");
        let (line, why) = line_and_why("name = \"al,ice\"\n");
        assert_eq!(line, 1);
        assert_eq!(why, "name: a name cannot contain ',' (at position 3)");
        let (line, why) = line_and_why("# me\nnmae = \"alice\"\n");
        assert_eq!(line, 2);
        assert!(why.contains("unknown field `nmae`"), "{why}");
        let (line, why) = line_and_why("name = \"alice\"\nbell = \"yes\"\n");
        assert_eq!(line, 2);
        assert!(why.contains("bool"), "{why}");
        let (line, _) = line_and_why("name = \"alice\"\nserver = \n");
        assert_eq!(line, 2);
        let (line, why) = line_and_why("\n\nhistory = 3\n");
        assert_eq!(line, 3);
        assert!(why.starts_with("history: "), "{why}");
        let (line, why) = line_and_why("bind = \"localhost\"\n");
        assert_eq!(line, 1);
        assert!(why.contains("IP:PORT"), "{why}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file =
            parse_config("name = \"alice\"\nserver = \"10.0.0.5:7788\"\nbell = true\n").unwrap();
        let flags = Choices {
            server: Some(parse_server("127.0.0.1:9000").unwrap()),
            bell: Some(false),
            ..Choices::default()
        };
        let chosen = flags.over(file);
        assert_eq!(chosen.name.unwrap().as_str(), "alice");
        assert_eq!(chosen.server.unwrap().text, "127.0.0.1:9000");
        assert_eq!(chosen.bell, Some(false));
    }

    #[test]
    fn written_choices_read_back() {
        let choices = Choices {
            name: Some(UserName::parse("剑痴").unwrap()),
            server: Some(parse_server("localhost:7790").unwrap()),
            bind: Some("0.0.0.0:0".parse().unwrap()),
            history: Some(HistoryChoice::Off),
            bell: Some(true),
        };
        let text = choices.to_toml();
        assert_eq!(parse_config(&text).unwrap(), choices);
        assert!(text.contains("server = \"localhost:7790\""), "{text}");
    }

    #[test]
    fn servers_are_written_as_people_write_them() {
        let at = |text: &str| parse_server(text).map(|s| s.addr.to_string());
        assert_eq!(at("127.0.0.1:7788").unwrap(), "127.0.0.1:7788");
        assert_eq!(at("127.0.0.1").unwrap(), "127.0.0.1:7788");
        assert_eq!(at("[::1]:9000").unwrap(), "[::1]:9000");
        assert_eq!(at("::1").unwrap(), "[::1]:7788");
        // A host name resolves, over IPv4 where it can.
        assert_eq!(at("localhost:7790").unwrap(), "127.0.0.1:7790");
        assert_eq!(at("localhost").unwrap(), "127.0.0.1:7788");
        assert!(at("localhost:http").unwrap_err().contains("not a port"));
        assert!(at("").unwrap_err().contains("HOST:PORT"));
        assert!(at("no-such-host.invalid:7788")
            .unwrap_err()
            .contains("cannot find the host"));
    }
}
