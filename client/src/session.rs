//! `Session`: a client's login flow and its copy of the roster, as a state
//! machine without sockets or timers.
//!
//! ```text
//! LoggingIn --Accept--> FetchingRoster --snapshot--> Online --logout--> Ended
//!     |  ^                   |
//!     |  +----fetch failed---+   (a new login; the server treats it as a refresh)
//!     +--refused / out of attempts--> Ended
//! ```
//!
//! Roster changes that arrive before the snapshot is in are kept and
//! replayed on top of it, in order, so nothing that happened between the
//! login and the fetch is lost. [`crate::session_actor::SessionActor`] owns
//! the socket, the TCP fetch and the timer, and carries out the outputs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pigeon_shared::{
    same_host, Accept, Datagram, Login, Logout, PeerAddr, Refused, RosterSnapshot, Talk, UserName,
};

use crate::events::ClientEvent;

/// Most roster changes kept while the snapshot is being fetched.
const MAX_BUFFERED_CHANGES: usize = 100_000;

/// What a session needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The name to log in with.
    pub name: UserName,
    /// The server's UDP address.
    pub server: SocketAddr,
    /// This client's receive endpoint, as announced in `login`.
    pub endpoint: PeerAddr,
    /// How long to wait for `Accept` after each login attempt; the number of
    /// entries is the number of attempts.
    pub login_timeouts: Vec<Duration>,
}

/// Default wait after each login attempt: five attempts over 7.5 s.
pub fn default_login_timeouts() -> Vec<Duration> {
    [500, 1000, 2000, 2000, 2000]
        .into_iter()
        .map(Duration::from_millis)
        .collect()
}

/// Something the session wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutput {
    /// Send a datagram.
    Send { to: SocketAddr, datagram: Datagram },
    /// Fetch the roster snapshot over TCP from this address, then call
    /// [`Session::roster_fetched`].
    FetchRoster { from: SocketAddr },
    /// Tell the front end.
    Emit(ClientEvent),
    /// A chat message for the conversation with `talk.from`.
    DeliverTalk { talk: Talk, source: SocketAddr },
}

/// Why a `talk` was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkRefusal {
    /// The sender named a user who is online at another host.
    WrongHost { registered: PeerAddr },
}

#[derive(Debug, Clone)]
enum State {
    LoggingIn {
        attempt: usize,
        buffered: Vec<Change>,
    },
    FetchingRoster {
        attempt: usize,
        buffered: Vec<Change>,
    },
    Online,
    Ended,
}

#[derive(Debug, Clone)]
enum Change {
    Joined(UserName, PeerAddr),
    Left(UserName, PeerAddr),
}

/// A client's session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    roster: BTreeMap<UserName, PeerAddr>,
    deadline: Option<Instant>,
}

impl Session {
    /// A session that has not sent anything yet.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            state: State::LoggingIn {
                attempt: 0,
                buffered: Vec::new(),
            },
            roster: BTreeMap::new(),
            deadline: None,
        }
    }

    /// Sends the first login.
    pub fn start(&mut self, now: Instant) -> Vec<SessionOutput> {
        self.state = State::LoggingIn {
            attempt: 0,
            buffered: Vec::new(),
        };
        vec![self.send_login(0, now)]
    }

    /// When [`Session::timer_fired`] should next be called, if at all.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the roster is fetched and the session is live.
    pub fn is_online(&self) -> bool {
        matches!(self.state, State::Online)
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// This client's name.
    pub fn name(&self) -> &UserName {
        &self.config.name
    }

    /// This client's receive endpoint.
    pub fn endpoint(&self) -> PeerAddr {
        self.config.endpoint
    }

    /// The users online, sorted by name, this one included.
    pub fn users(&self) -> Vec<(UserName, PeerAddr)> {
        self.roster.iter().map(|(n, a)| (n.clone(), *a)).collect()
    }

    /// Where `name` receives, if online.
    pub fn endpoint_of(&self, name: &str) -> Option<PeerAddr> {
        self.roster.get(name).copied()
    }

    /// A datagram arrived from `source`.
    pub fn datagram_received(
        &mut self,
        datagram: Datagram,
        source: SocketAddr,
    ) -> Vec<SessionOutput> {
        match datagram {
            Datagram::Talk(talk) => match self.check_talk(&talk, source) {
                Ok(()) => vec![SessionOutput::DeliverTalk { talk, source }],
                Err(_) => Vec::new(),
            },
            // Everything else comes from the server, or from nobody we
            // listen to. A seed server sends from ephemeral ports, so only
            // the host can be checked.
            _ if !same_host(source.ip(), self.config.server.ip()) => Vec::new(),
            Datagram::Accept(accept) => self.accepted(accept),
            Datagram::Refused(refused) => self.refused(refused),
            Datagram::Login(Login { name, endpoint }) => {
                self.roster_change(Change::Joined(name, endpoint))
            }
            Datagram::Logout(Logout { name, endpoint }) => {
                self.roster_change(Change::Left(name, endpoint))
            }
        }
    }

    /// Whether a `talk` may be delivered: a sender who names a user online
    /// must send from that user's host. A sender not (yet) in the roster is
    /// let through: its login broadcast may simply not have arrived.
    pub fn check_talk(&self, talk: &Talk, source: SocketAddr) -> Result<(), TalkRefusal> {
        match self.roster.get(&talk.from) {
            Some(registered) if !same_host(registered.socket_addr().ip(), source.ip()) => {
                Err(TalkRefusal::WrongHost {
                    registered: *registered,
                })
            }
            _ => Ok(()),
        }
    }

    /// The TCP fetch finished.
    pub fn roster_fetched(
        &mut self,
        result: Result<RosterSnapshot, String>,
        now: Instant,
    ) -> Vec<SessionOutput> {
        let State::FetchingRoster { attempt, buffered } = &mut self.state else {
            return Vec::new();
        };
        let attempt = *attempt;
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(reason) => {
                return self.retry_or_fail(attempt, &format!("roster fetch failed: {reason}"), now)
            }
        };
        let buffered = std::mem::take(buffered);
        self.state = State::Online;
        self.deadline = None;
        self.roster.clear();
        for entry in snapshot.entries {
            self.roster.insert(entry.name, entry.endpoint);
        }
        for change in buffered {
            self.apply(change);
        }
        // The roster is about this client, so it is in it, whatever the
        // server wrote.
        self.roster
            .insert(self.config.name.clone(), self.config.endpoint);
        let mut out = vec![SessionOutput::Emit(ClientEvent::Ready {
            endpoint: self.config.endpoint,
            online: self.roster.len(),
        })];
        out.extend(
            self.roster
                .iter()
                .filter(|(name, _)| **name != self.config.name)
                .map(|(name, endpoint)| {
                    SessionOutput::Emit(ClientEvent::Online {
                        name: name.clone(),
                        endpoint: *endpoint,
                    })
                }),
        );
        out
    }

    /// The deadline passed.
    pub fn timer_fired(&mut self, now: Instant) -> Vec<SessionOutput> {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return Vec::new(),
        }
        match &self.state {
            State::LoggingIn { attempt, .. } => {
                let attempt = *attempt;
                self.retry_or_fail(attempt, "no answer from the server", now)
            }
            // The fetch has a timeout of its own and reports through
            // `roster_fetched`.
            _ => Vec::new(),
        }
    }

    /// The user wants to leave: a logout goes to the server if it knows us.
    pub fn logout(&mut self) -> Vec<SessionOutput> {
        let was = std::mem::replace(&mut self.state, State::Ended);
        self.deadline = None;
        let mut out = Vec::new();
        if !matches!(was, State::Ended) {
            out.push(SessionOutput::Send {
                to: self.config.server,
                datagram: Datagram::Logout(Logout {
                    name: self.config.name.clone(),
                    endpoint: self.config.endpoint,
                }),
            });
        }
        out.push(SessionOutput::Emit(ClientEvent::LoggedOut));
        out
    }

    fn send_login(&mut self, attempt: usize, now: Instant) -> SessionOutput {
        let wait = self
            .config
            .login_timeouts
            .get(attempt)
            .copied()
            .unwrap_or(Duration::from_secs(1));
        self.deadline = Some(now + wait);
        SessionOutput::Send {
            to: self.config.server,
            datagram: Datagram::Login(Login {
                name: self.config.name.clone(),
                endpoint: self.config.endpoint,
            }),
        }
    }

    fn retry_or_fail(&mut self, attempt: usize, why: &str, now: Instant) -> Vec<SessionOutput> {
        let next = attempt + 1;
        if next >= self.config.login_timeouts.len() {
            self.state = State::Ended;
            self.deadline = None;
            let reason = format!(
                "{why}: gave up after {next} login attempt{} to {}",
                if next == 1 { "" } else { "s" },
                self.config.server
            );
            return vec![SessionOutput::Emit(ClientEvent::LoginFailed { reason })];
        }
        let buffered = match &mut self.state {
            State::LoggingIn { buffered, .. } | State::FetchingRoster { buffered, .. } => {
                std::mem::take(buffered)
            }
            _ => Vec::new(),
        };
        self.state = State::LoggingIn {
            attempt: next,
            buffered,
        };
        vec![self.send_login(next, now)]
    }

    fn accepted(&mut self, accept: Accept) -> Vec<SessionOutput> {
        let State::LoggingIn { attempt, buffered } = &mut self.state else {
            // A second Accept answers a repeated login: already handled.
            return Vec::new();
        };
        let attempt = *attempt;
        let buffered = std::mem::take(buffered);
        self.state = State::FetchingRoster { attempt, buffered };
        // The fetch carries its own timeout.
        self.deadline = None;
        // Connect to the server's configured address, not to the datagram's
        // source: a forged Accept cannot point the fetch elsewhere.
        let from = SocketAddr::new(self.config.server.ip(), accept.tcp_port);
        vec![SessionOutput::FetchRoster { from }]
    }

    fn refused(&mut self, refused: Refused) -> Vec<SessionOutput> {
        if !matches!(
            self.state,
            State::LoggingIn { .. } | State::FetchingRoster { .. }
        ) {
            return Vec::new();
        }
        self.state = State::Ended;
        self.deadline = None;
        vec![SessionOutput::Emit(ClientEvent::Refused {
            reason: refused.reason,
            detail: refused.detail,
        })]
    }

    fn roster_change(&mut self, change: Change) -> Vec<SessionOutput> {
        let (name, endpoint) = match &change {
            Change::Joined(name, endpoint) | Change::Left(name, endpoint) => (name, *endpoint),
        };
        // Our own entry is ours to keep: a broadcast cannot move or remove it.
        if *name == self.config.name {
            return Vec::new();
        }
        match &mut self.state {
            State::LoggingIn { buffered, .. } | State::FetchingRoster { buffered, .. } => {
                if buffered.len() < MAX_BUFFERED_CHANGES {
                    buffered.push(change);
                }
                Vec::new()
            }
            State::Ended => Vec::new(),
            State::Online => {
                let name = name.clone();
                match self.apply(change) {
                    Applied::Joined => {
                        vec![SessionOutput::Emit(ClientEvent::Online { name, endpoint })]
                    }
                    Applied::Left => vec![SessionOutput::Emit(ClientEvent::Offline { name })],
                    Applied::Nothing => Vec::new(),
                }
            }
        }
    }

    fn apply(&mut self, change: Change) -> Applied {
        match change {
            Change::Joined(name, endpoint) => {
                if self.roster.insert(name, endpoint) == Some(endpoint) {
                    Applied::Nothing
                } else {
                    Applied::Joined
                }
            }
            // A logout for an endpoint the user no longer has is stale.
            Change::Left(name, endpoint) => match self.roster.get(&name) {
                Some(current) if *current == endpoint => {
                    self.roster.remove(&name);
                    Applied::Left
                }
                _ => Applied::Nothing,
            },
        }
    }
}

enum Applied {
    Joined,
    Left,
    Nothing,
}

#[cfg(test)]
mod tests {
    use pigeon_shared::{RefuseReason, RosterEntry, TalkTime};

    use super::*;

    const SERVER: &str = "10.0.0.1:7788";

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    fn addr(text: &str) -> PeerAddr {
        PeerAddr::parse(text).unwrap()
    }

    fn sock(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn session() -> (Session, Instant) {
        let config = SessionConfig {
            name: name("alice"),
            server: sock(SERVER),
            endpoint: addr("10.0.0.2:5000"),
            login_timeouts: vec![Duration::from_millis(500), Duration::from_secs(1)],
        };
        (Session::new(config), Instant::now())
    }

    fn snapshot(users: &[(&str, &str)]) -> RosterSnapshot {
        RosterSnapshot {
            entries: users
                .iter()
                .map(|(n, a)| RosterEntry {
                    name: name(n),
                    endpoint: addr(a),
                })
                .collect(),
            skipped: Vec::new(),
        }
    }

    fn login_datagram() -> Datagram {
        Datagram::Login(Login {
            name: name("alice"),
            endpoint: addr("10.0.0.2:5000"),
        })
    }

    fn online(s: &mut Session, t: Instant, users: &[(&str, &str)]) -> Vec<SessionOutput> {
        s.start(t);
        s.datagram_received(
            Datagram::Accept(Accept { tcp_port: 4000 }),
            sock("10.0.0.1:61000"),
        );
        s.roster_fetched(Ok(snapshot(users)), t)
    }

    #[test]
    fn login_accept_and_fetch_make_the_session_ready() {
        let (mut s, t) = session();
        assert_eq!(
            s.start(t),
            vec![SessionOutput::Send {
                to: sock(SERVER),
                datagram: login_datagram()
            }]
        );
        // A seed server answers from an ephemeral port.
        let out = s.datagram_received(
            Datagram::Accept(Accept { tcp_port: 4000 }),
            sock("10.0.0.1:61000"),
        );
        assert_eq!(
            out,
            vec![SessionOutput::FetchRoster {
                from: sock("10.0.0.1:4000")
            }]
        );
        let out = s.roster_fetched(
            Ok(snapshot(&[
                ("bob", "10.0.0.3:5000"),
                ("alice", "10.0.0.2:5000"),
            ])),
            t,
        );
        assert_eq!(
            out,
            vec![
                SessionOutput::Emit(ClientEvent::Ready {
                    endpoint: addr("10.0.0.2:5000"),
                    online: 2
                }),
                SessionOutput::Emit(ClientEvent::Online {
                    name: name("bob"),
                    endpoint: addr("10.0.0.3:5000")
                }),
            ]
        );
        assert!(s.is_online());
    }

    #[test]
    fn a_lost_login_is_retried_then_fails_with_a_clear_reason() {
        let (mut s, t) = session();
        s.start(t);
        assert!(s.timer_fired(t + Duration::from_millis(499)).is_empty());
        let out = s.timer_fired(t + Duration::from_millis(500));
        assert_eq!(
            out,
            vec![SessionOutput::Send {
                to: sock(SERVER),
                datagram: login_datagram()
            }]
        );
        let later = t + Duration::from_millis(1500);
        let out = s.timer_fired(later);
        let [SessionOutput::Emit(ClientEvent::LoginFailed { reason })] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(reason.contains("2 login attempts"), "{reason}");
        assert!(s.is_ended());
    }

    #[test]
    fn a_failed_fetch_logs_in_again() {
        let (mut s, t) = session();
        s.start(t);
        s.datagram_received(Datagram::Accept(Accept { tcp_port: 4000 }), sock(SERVER));
        let out = s.roster_fetched(Err("connection refused".into()), t);
        assert_eq!(
            out,
            vec![SessionOutput::Send {
                to: sock(SERVER),
                datagram: login_datagram()
            }]
        );
    }

    #[test]
    fn refusal_ends_the_session() {
        let (mut s, t) = session();
        s.start(t);
        let out = s.datagram_received(
            Datagram::Refused(Refused {
                reason: RefuseReason::NameTaken,
                detail: "alice is already online".into(),
            }),
            sock(SERVER),
        );
        assert_eq!(
            out,
            vec![SessionOutput::Emit(ClientEvent::Refused {
                reason: RefuseReason::NameTaken,
                detail: "alice is already online".into()
            })]
        );
        assert!(s.is_ended());
    }

    #[test]
    fn server_datagrams_from_other_hosts_are_ignored() {
        let (mut s, t) = session();
        s.start(t);
        let out = s.datagram_received(
            Datagram::Accept(Accept { tcp_port: 4000 }),
            sock("10.6.6.6:7788"),
        );
        assert!(out.is_empty());
        let out = s.datagram_received(
            Datagram::Refused(Refused {
                reason: RefuseReason::NameTaken,
                detail: String::new(),
            }),
            sock("10.6.6.6:7788"),
        );
        assert!(out.is_empty());
        assert!(!s.is_ended());
    }

    #[test]
    fn changes_during_the_fetch_are_replayed_on_the_snapshot() {
        let (mut s, t) = session();
        s.start(t);
        s.datagram_received(Datagram::Accept(Accept { tcp_port: 4000 }), sock(SERVER));
        // carol joins and bob leaves while the snapshot is on its way; the
        // snapshot was taken before either.
        s.datagram_received(
            Datagram::Login(Login {
                name: name("carol"),
                endpoint: addr("10.0.0.4:5000"),
            }),
            sock(SERVER),
        );
        s.datagram_received(
            Datagram::Logout(Logout {
                name: name("bob"),
                endpoint: addr("10.0.0.3:5000"),
            }),
            sock(SERVER),
        );
        s.roster_fetched(
            Ok(snapshot(&[
                ("alice", "10.0.0.2:5000"),
                ("bob", "10.0.0.3:5000"),
            ])),
            t,
        );
        assert_eq!(
            s.users(),
            vec![
                (name("alice"), addr("10.0.0.2:5000")),
                (name("carol"), addr("10.0.0.4:5000")),
            ]
        );
    }

    #[test]
    fn broadcasts_update_the_roster_and_tell_the_front_end() {
        let (mut s, t) = session();
        online(&mut s, t, &[("alice", "10.0.0.2:5000")]);
        let carol = Datagram::Login(Login {
            name: name("carol"),
            endpoint: addr("10.0.0.4:5000"),
        });
        assert_eq!(
            s.datagram_received(carol.clone(), sock(SERVER)),
            vec![SessionOutput::Emit(ClientEvent::Online {
                name: name("carol"),
                endpoint: addr("10.0.0.4:5000")
            })]
        );
        // The same login again changes nothing.
        assert!(s.datagram_received(carol, sock(SERVER)).is_empty());
        // A logout for another endpoint is stale.
        let stale = Datagram::Logout(Logout {
            name: name("carol"),
            endpoint: addr("10.0.0.4:5999"),
        });
        assert!(s.datagram_received(stale, sock(SERVER)).is_empty());
        let gone = Datagram::Logout(Logout {
            name: name("carol"),
            endpoint: addr("10.0.0.4:5000"),
        });
        assert_eq!(
            s.datagram_received(gone, sock(SERVER)),
            vec![SessionOutput::Emit(ClientEvent::Offline {
                name: name("carol")
            })]
        );
    }

    #[test]
    fn broadcasts_about_oneself_are_ignored() {
        let (mut s, t) = session();
        online(&mut s, t, &[("alice", "10.0.0.2:5000")]);
        let out = s.datagram_received(
            Datagram::Logout(Logout {
                name: name("alice"),
                endpoint: addr("10.0.0.2:5000"),
            }),
            sock(SERVER),
        );
        assert!(out.is_empty());
        assert_eq!(s.endpoint_of("alice"), Some(addr("10.0.0.2:5000")));
    }

    #[test]
    fn talks_claiming_an_online_user_must_come_from_that_host() {
        let (mut s, t) = session();
        online(
            &mut s,
            t,
            &[("alice", "10.0.0.2:5000"), ("bob", "10.0.0.3:5000")],
        );
        let talk = Talk {
            time: TalkTime::parse("9:05:07").unwrap(),
            from: name("bob"),
            text: "hi".into(),
        };
        // A seed client sends from an ephemeral port on its host: fine.
        let out = s.datagram_received(Datagram::Talk(talk.clone()), sock("10.0.0.3:61234"));
        assert_eq!(out.len(), 1);
        let out = s.datagram_received(Datagram::Talk(talk), sock("10.0.0.66:5000"));
        assert!(out.is_empty());
    }

    #[test]
    fn logout_is_sent_once() {
        let (mut s, t) = session();
        online(&mut s, t, &[("alice", "10.0.0.2:5000")]);
        let out = s.logout();
        assert!(matches!(
            out.as_slice(),
            [
                SessionOutput::Send {
                    datagram: Datagram::Logout(_),
                    ..
                },
                SessionOutput::Emit(ClientEvent::LoggedOut)
            ]
        ));
        assert_eq!(
            s.logout(),
            vec![SessionOutput::Emit(ClientEvent::LoggedOut)]
        );
    }
}
