//! `Roster`: who is online, and every decision about logins and logouts.
//!
//! Plain state machine, no sockets and no actors: a login or logout plus
//! the address it came from goes in; what to send and what happened comes
//! out. [`crate::roster_actor::RosterActor`] is the thin shell around it.
//! The roster also writes through to a [`Directory`], the concurrent map
//! from which TCP roster snapshots are served without a mailbox round trip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use pigeon_shared::{
    same_host, Accept, Datagram, Login, Logout, PeerAddr, RefuseReason, Refused, UserName,
};

/// Users online by name, readable from any thread. Written only by the
/// [`Roster`], always before the `Accept` that lets a client read it.
pub type Directory = Arc<DashMap<UserName, PeerAddr>>;

/// Limits of a roster.
#[derive(Debug, Clone)]
pub struct RosterConfig {
    /// TCP port announced in `Accept`.
    pub tcp_port: u16,
    /// Most users online at once; further logins are refused `server-full`.
    pub max_users: usize,
}

/// Default for [`RosterConfig::max_users`].
pub const DEFAULT_MAX_USERS: usize = 10_000;

/// The online users and the rules for changing them.
#[derive(Debug)]
pub struct Roster {
    config: RosterConfig,
    users: HashMap<UserName, PeerAddr>,
    by_endpoint: HashMap<PeerAddr, UserName>,
    directory: Directory,
}

/// Something the roster wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterAction {
    /// Send one datagram to one address.
    Send { to: SocketAddr, datagram: Datagram },
    /// Send the same datagram to each of these addresses.
    Broadcast {
        to: Vec<SocketAddr>,
        datagram: Datagram,
    },
    /// Tell subscribers.
    Publish(RosterEvent),
}

/// A change to who is online, published to subscribing actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterEvent {
    Joined { name: UserName, endpoint: PeerAddr },
    Left { name: UserName, endpoint: PeerAddr },
}

/// What the roster decided about a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginDecision {
    /// A new user is online.
    Joined,
    /// The same user at the same endpoint logged in again: `Accept` is
    /// repeated, nobody else is told.
    Refreshed,
    /// Refused, with the reason sent back and a sentence for the log.
    Refused {
        reason: RefuseReason,
        detail: String,
    },
}

/// What the roster decided about a logout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutDecision {
    /// The user left.
    Left,
    /// Ignored: nobody is online under that name.
    UnknownUser,
    /// Ignored: the endpoint is not the one the user logged in with.
    EndpointMismatch { registered: PeerAddr },
    /// Ignored: the datagram did not come from the user's host.
    WrongSource { registered: PeerAddr },
}

impl Roster {
    /// An empty roster writing through to `directory`.
    pub fn new(config: RosterConfig, directory: Directory) -> Self {
        directory.clear();
        Self {
            config,
            users: HashMap::new(),
            by_endpoint: HashMap::new(),
            directory,
        }
    }

    /// Decides a login that arrived from `source`.
    ///
    /// The claimed endpoint must be on the sender's host (a seed client
    /// sends its login from a separate ephemeral socket, so only the host,
    /// not the port, can be checked): otherwise anyone could have the server
    /// send `Accept` and broadcasts at a third party.
    pub fn login(
        &mut self,
        login: Login,
        source: SocketAddr,
    ) -> (LoginDecision, Vec<RosterAction>) {
        let Login { name, endpoint } = login;
        if let Err(problem) = endpoint.check_usable() {
            let detail = format!("endpoint {endpoint} cannot receive: {problem}");
            return self.refuse(RefuseReason::BadEndpoint, detail, endpoint, source);
        }
        if !same_host(endpoint.socket_addr().ip(), source.ip()) {
            let detail = format!(
                "endpoint {endpoint} is not on the sender's address {}",
                source.ip().to_canonical()
            );
            return self.refuse(RefuseReason::BadEndpoint, detail, endpoint, source);
        }
        if let Some(&registered) = self.users.get(&name) {
            if registered == endpoint {
                let accept = self.accept(endpoint);
                return (LoginDecision::Refreshed, vec![accept]);
            }
            let detail = format!("{name} is already online");
            return self.refuse(RefuseReason::NameTaken, detail, endpoint, source);
        }
        if let Some(holder) = self.by_endpoint.get(&endpoint) {
            let detail = format!("{holder} is already online at {endpoint}");
            return self.refuse(RefuseReason::EndpointTaken, detail, endpoint, source);
        }
        if self.users.len() >= self.config.max_users {
            let detail = format!("{} users are online, the most allowed", self.users.len());
            return self.refuse(RefuseReason::ServerFull, detail, endpoint, source);
        }

        // Write through before the Accept goes out: a client fetches the
        // snapshot only after Accept, so it always finds itself and everyone
        // who joined before it (those logins were not broadcast to it).
        self.users.insert(name.clone(), endpoint);
        self.by_endpoint.insert(endpoint, name.clone());
        self.directory.insert(name.clone(), endpoint);

        let others = self.addresses_except(&name);
        let mut actions = vec![self.accept(endpoint)];
        if !others.is_empty() {
            actions.push(RosterAction::Broadcast {
                to: others,
                datagram: Datagram::Login(Login {
                    name: name.clone(),
                    endpoint,
                }),
            });
        }
        actions.push(RosterAction::Publish(RosterEvent::Joined {
            name,
            endpoint,
        }));
        (LoginDecision::Joined, actions)
    }

    /// Decides a logout that arrived from `source`: honoured only when the
    /// name, the endpoint and the sender's host all match the user.
    pub fn logout(
        &mut self,
        logout: Logout,
        source: SocketAddr,
    ) -> (LogoutDecision, Vec<RosterAction>) {
        let Logout { name, endpoint } = logout;
        let Some(&registered) = self.users.get(&name) else {
            return (LogoutDecision::UnknownUser, Vec::new());
        };
        if registered != endpoint {
            return (LogoutDecision::EndpointMismatch { registered }, Vec::new());
        }
        if !same_host(registered.socket_addr().ip(), source.ip()) {
            return (LogoutDecision::WrongSource { registered }, Vec::new());
        }
        self.remove(&name);
        let mut actions = Vec::with_capacity(2);
        let remaining = self.addresses_except(&name);
        if !remaining.is_empty() {
            actions.push(RosterAction::Broadcast {
                to: remaining,
                datagram: Datagram::Logout(Logout {
                    name: name.clone(),
                    endpoint,
                }),
            });
        }
        actions.push(RosterAction::Publish(RosterEvent::Left { name, endpoint }));
        (LogoutDecision::Left, actions)
    }

    /// The users online, sorted by name.
    pub fn users(&self) -> Vec<(UserName, PeerAddr)> {
        let mut users: Vec<_> = self.users.iter().map(|(n, a)| (n.clone(), *a)).collect();
        users.sort();
        users
    }

    /// How many users are online.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is online.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The endpoint of `name`, if online.
    pub fn endpoint_of(&self, name: &str) -> Option<PeerAddr> {
        self.users.get(name).copied()
    }

    fn remove(&mut self, name: &UserName) {
        if let Some(endpoint) = self.users.remove(name) {
            self.by_endpoint.remove(&endpoint);
        }
        self.directory.remove(name);
    }

    fn accept(&self, endpoint: PeerAddr) -> RosterAction {
        RosterAction::Send {
            to: endpoint.socket_addr(),
            datagram: Datagram::Accept(Accept {
                tcp_port: self.config.tcp_port,
            }),
        }
    }

    fn addresses_except(&self, name: &UserName) -> Vec<SocketAddr> {
        self.users
            .iter()
            .filter(|(other, _)| *other != name)
            .map(|(_, endpoint)| endpoint.socket_addr())
            .collect()
    }

    /// A refusal goes to the claimed endpoint when that is on the sender's
    /// host (where a Pigeon client listens), otherwise back to the sender
    /// only: never to a third party.
    fn refuse(
        &self,
        reason: RefuseReason,
        detail: String,
        endpoint: PeerAddr,
        source: SocketAddr,
    ) -> (LoginDecision, Vec<RosterAction>) {
        let to = if endpoint.check_usable().is_ok()
            && same_host(endpoint.socket_addr().ip(), source.ip())
        {
            endpoint.socket_addr()
        } else {
            source
        };
        let send = RosterAction::Send {
            to,
            datagram: Datagram::Refused(Refused {
                reason: reason.clone(),
                detail: detail.clone(),
            }),
        };
        (LoginDecision::Refused { reason, detail }, vec![send])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster() -> Roster {
        roster_with_max(DEFAULT_MAX_USERS)
    }

    fn roster_with_max(max_users: usize) -> Roster {
        Roster::new(
            RosterConfig {
                tcp_port: 4242,
                max_users,
            },
            Directory::default(),
        )
    }

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    fn addr(text: &str) -> PeerAddr {
        PeerAddr::parse(text).unwrap()
    }

    fn sock(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn login(n: &str, a: &str) -> Login {
        Login {
            name: name(n),
            endpoint: addr(a),
        }
    }

    fn logout(n: &str, a: &str) -> Logout {
        Logout {
            name: name(n),
            endpoint: addr(a),
        }
    }

    fn accept_to(a: &str) -> RosterAction {
        RosterAction::Send {
            to: sock(a),
            datagram: Datagram::Accept(Accept { tcp_port: 4242 }),
        }
    }

    #[test]
    fn first_login_is_accepted_at_the_claimed_endpoint_and_published() {
        let mut r = roster();
        // A seed client logs in from an ephemeral port; Accept goes to the
        // endpoint it claimed.
        let (decision, actions) = r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:61000"));
        assert_eq!(decision, LoginDecision::Joined);
        assert_eq!(
            actions,
            vec![
                accept_to("10.0.0.1:5000"),
                RosterAction::Publish(RosterEvent::Joined {
                    name: name("alice"),
                    endpoint: addr("10.0.0.1:5000")
                }),
            ]
        );
        assert_eq!(
            r.directory.get("alice").map(|e| *e),
            Some(addr("10.0.0.1:5000"))
        );
    }

    #[test]
    fn a_login_is_broadcast_to_every_other_user_only() {
        let mut r = roster();
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        r.login(login("bob", "10.0.0.2:5000"), sock("10.0.0.2:5000"));
        let (_, actions) = r.login(login("carol", "10.0.0.3:5000"), sock("10.0.0.3:5000"));
        let Some(RosterAction::Broadcast { to, datagram }) = actions.get(1) else {
            panic!("no broadcast: {actions:?}")
        };
        let mut to = to.clone();
        to.sort();
        assert_eq!(to, vec![sock("10.0.0.1:5000"), sock("10.0.0.2:5000")]);
        assert_eq!(datagram, &Datagram::Login(login("carol", "10.0.0.3:5000")));
    }

    #[test]
    fn same_name_from_same_endpoint_is_a_refresh_not_a_duplicate() {
        let mut r = roster();
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        r.login(login("bob", "10.0.0.2:5000"), sock("10.0.0.2:5000"));
        let (decision, actions) = r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        assert_eq!(decision, LoginDecision::Refreshed);
        assert_eq!(actions, vec![accept_to("10.0.0.1:5000")]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn second_login_with_same_name_is_refused() {
        let mut r = roster();
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        let (decision, actions) = r.login(login("alice", "10.0.0.2:6000"), sock("10.0.0.2:6000"));
        assert!(matches!(
            decision,
            LoginDecision::Refused {
                reason: RefuseReason::NameTaken,
                ..
            }
        ));
        let [RosterAction::Send {
            to,
            datagram: Datagram::Refused(refused),
        }] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(*to, sock("10.0.0.2:6000"));
        assert_eq!(refused.reason, RefuseReason::NameTaken);
        assert_eq!(r.endpoint_of("alice"), Some(addr("10.0.0.1:5000")));
    }

    #[test]
    fn a_second_name_at_an_endpoint_in_use_is_refused() {
        let mut r = roster();
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        let (decision, _) = r.login(login("mallory", "10.0.0.1:5000"), sock("10.0.0.1:7000"));
        assert!(matches!(
            decision,
            LoginDecision::Refused {
                reason: RefuseReason::EndpointTaken,
                ..
            }
        ));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_login_claiming_another_hosts_endpoint_is_refused_back_to_the_sender() {
        let mut r = roster();
        let (decision, actions) = r.login(login("eve", "10.9.9.9:5000"), sock("10.0.0.6:4444"));
        assert!(matches!(
            decision,
            LoginDecision::Refused {
                reason: RefuseReason::BadEndpoint,
                ..
            }
        ));
        // Nothing may go to the victim 10.9.9.9.
        let [RosterAction::Send { to, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(*to, sock("10.0.0.6:4444"));
        assert!(r.is_empty());
    }

    #[test]
    fn unusable_endpoints_are_refused() {
        let mut r = roster();
        for (claimed, source) in [
            ("10.0.0.1:0", "10.0.0.1:5000"),
            ("0.0.0.0:5000", "10.0.0.1:5000"),
            ("224.0.0.1:5000", "10.0.0.1:5000"),
        ] {
            let (decision, _) = r.login(login("alice", claimed), sock(source));
            assert!(
                matches!(
                    decision,
                    LoginDecision::Refused {
                        reason: RefuseReason::BadEndpoint,
                        ..
                    }
                ),
                "{claimed}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_sources_match_ipv4_endpoints() {
        let mut r = roster();
        let (decision, _) = r.login(
            login("alice", "10.0.0.1:5000"),
            sock("[::ffff:10.0.0.1]:5000"),
        );
        assert_eq!(decision, LoginDecision::Joined);
    }

    #[test]
    fn a_full_roster_refuses_newcomers_but_refreshes_members() {
        let mut r = roster_with_max(1);
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        let (decision, _) = r.login(login("bob", "10.0.0.2:5000"), sock("10.0.0.2:5000"));
        assert!(matches!(
            decision,
            LoginDecision::Refused {
                reason: RefuseReason::ServerFull,
                ..
            }
        ));
        let (decision, _) = r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        assert_eq!(decision, LoginDecision::Refreshed);
    }

    #[test]
    fn logout_removes_and_tells_the_remaining_users() {
        let mut r = roster();
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        r.login(login("bob", "10.0.0.2:5000"), sock("10.0.0.2:5000"));
        let (decision, actions) =
            r.logout(logout("alice", "10.0.0.1:5000"), sock("10.0.0.1:61000"));
        assert_eq!(decision, LogoutDecision::Left);
        assert_eq!(
            actions,
            vec![
                RosterAction::Broadcast {
                    to: vec![sock("10.0.0.2:5000")],
                    datagram: Datagram::Logout(logout("alice", "10.0.0.1:5000")),
                },
                RosterAction::Publish(RosterEvent::Left {
                    name: name("alice"),
                    endpoint: addr("10.0.0.1:5000")
                }),
            ]
        );
        assert!(r.directory.get("alice").is_none());
        // The endpoint is free for someone else now.
        let (decision, _) = r.login(login("carol", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        assert_eq!(decision, LoginDecision::Joined);
    }

    #[test]
    fn spoofed_logouts_are_ignored() {
        let mut r = roster();
        r.login(login("alice", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        let (decision, actions) =
            r.logout(logout("alice", "10.0.0.1:5000"), sock("10.0.0.66:5000"));
        assert_eq!(
            decision,
            LogoutDecision::WrongSource {
                registered: addr("10.0.0.1:5000")
            }
        );
        assert!(actions.is_empty());
        let (decision, _) = r.logout(logout("alice", "10.0.0.1:5001"), sock("10.0.0.1:5001"));
        assert_eq!(
            decision,
            LogoutDecision::EndpointMismatch {
                registered: addr("10.0.0.1:5000")
            }
        );
        let (decision, _) = r.logout(logout("nobody", "10.0.0.1:5000"), sock("10.0.0.1:5000"));
        assert_eq!(decision, LogoutDecision::UnknownUser);
        assert_eq!(r.users(), vec![(name("alice"), addr("10.0.0.1:5000"))]);
    }
}
