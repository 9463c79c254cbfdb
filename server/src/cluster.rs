//! What servers of a cluster tell each other through Redis, as text, and
//! the decisions about it that need no connection: which servers are
//! gone. The [`crate::cluster_actor`] does the talking.
//!
//! Keys, under a namespace (`pigeon` unless set):
//!
//! ```text
//! <ns>:servers   hash  server id -> its last heartbeat (ms since the epoch)
//! <ns>:users     hash  name -> "<server id> <change>" (who is online where)
//! <ns>:names     hash  name -> public key (64 hex digits): the registry
//! <ns>:log       stream of {s: server id, c: <change>}: every change, in order
//! ```
//!
//! A `<change>` is a roster change as a `delta` writes it (`+name;endpoint;
//! iid[;key]`, `-name;endpoint`), `=name;key` for a registration, or
//! `!server` for a server found gone (its users left with it), or `@name`:
//! something waits in `name`'s mailbox (its server tells it).

use pigeon_shared::{PublicKey, RosterChange, UserName};

/// One change shared with the other servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// A user joined or left through the server that wrote it.
    Roster(RosterChange),
    /// A name was registered to a key.
    Registered { name: UserName, key: PublicKey },
    /// A server was found gone: every user online through it left.
    Gone { server: String },
    /// Something waits in this user's mailbox.
    Mail { name: UserName },
}

impl Shared {
    /// The change as the log and the users hash keep it.
    pub fn encode(&self) -> String {
        match self {
            Self::Roster(change) => change.to_string(),
            Self::Registered { name, key } => format!("={name};{key}"),
            Self::Gone { server } => format!("!{server}"),
            Self::Mail { name } => format!("@{name}"),
        }
    }

    /// A change from the log, or `None` if it does not read.
    pub fn decode(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix('=') {
            let (name, key) = rest.split_once(';')?;
            return Some(Self::Registered {
                name: UserName::parse(name).ok()?,
                key: PublicKey::parse(key)?,
            });
        }
        if let Some(name) = text.strip_prefix('@') {
            return UserName::parse(name).ok().map(|name| Self::Mail { name });
        }
        if let Some(server) = text.strip_prefix('!') {
            return crate::cluster_actor::valid_server_id(server).then(|| Self::Gone {
                server: server.to_owned(),
            });
        }
        RosterChange::parse(text).map(Self::Roster)
    }
}

/// The value the users hash keeps for a user online through `server`.
pub fn users_value(server: &str, change: &RosterChange) -> String {
    format!("{server} {change}")
}

/// A value of the users hash: the server and the user as it joined.
pub fn parse_users_value(value: &str) -> Option<(String, RosterChange)> {
    let (server, change) = value.split_once(' ')?;
    let change = RosterChange::parse(change)?;
    matches!(change, RosterChange::Joined { .. }).then(|| (server.to_owned(), change))
}

/// The servers (other than `me`) whose last heartbeat is older than
/// `timeout_ms` at `now_ms`, sorted.
pub fn gone_servers(
    beats: &[(String, u64)],
    me: &str,
    now_ms: u64,
    timeout_ms: u64,
) -> Vec<String> {
    let mut gone: Vec<String> = beats
        .iter()
        .filter(|(id, at)| id != me && now_ms.saturating_sub(*at) > timeout_ms)
        .map(|(id, _)| id.clone())
        .collect();
    gone.sort();
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_shared::{InstanceId, PeerAddr};

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[test]
    fn shared_changes_read_back_as_written() {
        let joined = RosterChange::Joined {
            name: name("alice"),
            endpoint: PeerAddr::parse("127.0.0.1:4000").unwrap(),
            instance: Some(InstanceId(0xab)),
            key: Some(PublicKey([7; 32])),
        };
        for shared in [
            Shared::Roster(joined.clone()),
            Shared::Roster(RosterChange::Left {
                name: name("bob"),
                endpoint: PeerAddr::parse("[::1]:5000").unwrap(),
            }),
            Shared::Registered {
                name: name("剑痴"),
                key: PublicKey([9; 32]),
            },
            Shared::Gone {
                server: "s-0123456789ab".into(),
            },
            Shared::Mail { name: name("bob") },
        ] {
            assert_eq!(Shared::decode(&shared.encode()), Some(shared));
        }
        for junk in [
            "",
            "x",
            "=alice",
            "=alice;zz",
            "!",
            "!a b",
            "+alice",
            "-bob;nowhere",
        ] {
            assert_eq!(Shared::decode(junk), None, "{junk:?}");
        }
        let value = users_value("a", &joined);
        assert_eq!(parse_users_value(&value), Some(("a".into(), joined)));
        assert_eq!(parse_users_value("a -bob;127.0.0.1:1"), None);
    }

    #[test]
    fn a_server_is_gone_once_its_heartbeat_is_older_than_the_timeout() {
        let beats = vec![
            ("b".to_owned(), 10_000),
            ("a".to_owned(), 1_000),
            ("c".to_owned(), 6_000),
            ("me".to_owned(), 0),
        ];
        assert_eq!(
            gone_servers(&beats, "me", 11_000, 5_000),
            vec!["a".to_owned()]
        );
        assert_eq!(
            gone_servers(&beats, "me", 20_000, 5_000),
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]
        );
        assert!(gone_servers(&beats, "me", 5_000, 5_000).is_empty());
    }
}
