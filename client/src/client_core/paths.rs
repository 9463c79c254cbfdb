//! How one end-to-end encrypted conversation reaches its peer: straight to
//! an address that answered a probe, or through the server's relay, and
//! when to probe. No sockets, no timers: the conversation asks, with `now`.
//!
//! - A frame goes straight to the peer while that path is **trusted**: an
//!   authenticated frame came from it lately ([`TRUST`]) and no `chat` sent
//!   on it has gone unanswered for long ([`SILENT`]). Otherwise it goes
//!   through the relay, if the server has one, so the first message never
//!   waits for a path to be found; without a relay, straight to the
//!   roster's endpoint, as before relays.
//! - While the conversation is active ([`ACTIVE`] since the last `chat`),
//!   the peer's candidate addresses are probed (backing off from
//!   [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]) until one answers, and then the
//!   trusted path every [`KEEPALIVE`], which keeps NAT pinholes open.
//! - The server arranges meetings: this side asks for one when it sends a
//!   `chat` while no direct path is trusted, or loses its path (at most
//!   every [`MEET_AGAIN`]); both sides are then told the other's addresses
//!   (its local one too, behind a shared public address) and probe at
//!   once. Later rounds alternate which side probes first ([`LAG`]), so
//!   that a NAT that lets in only what its own side started is punched
//!   either way.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::events::Route;

/// How long a direct path stays trusted after it was last heard from.
pub const TRUST: Duration = Duration::from_secs(25);
/// How long a `chat` sent straight may go unanswered before the path is
/// no longer trusted (and retransmissions take the relay).
pub const SILENT: Duration = Duration::from_millis(700);
/// A direct path not heard from for this long is stale: a `chat` sent on
/// it then expects an answer within [`SILENT_STALE`] (NAT mappings may
/// have expired while it was quiet).
pub const FRESH: Duration = Duration::from_secs(4);
/// How long a `chat` sent on a stale path may go unanswered.
pub const SILENT_STALE: Duration = Duration::from_millis(250);
/// How often a trusted path is probed while the conversation is active:
/// well inside common NAT timeouts (30 s and more).
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long after its last `chat` a conversation keeps probing.
pub const ACTIVE: Duration = Duration::from_secs(120);
/// The first wait between probes of untrusted candidates.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between probes of untrusted candidates.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long the side that does not lead a round of probes waits.
pub const LAG: Duration = Duration::from_millis(100);
/// The least time between two meetings asked of the server (or between a
/// meeting the peer asked for and one of this side's).
pub const MEET_AGAIN: Duration = Duration::from_secs(10);

/// The paths of one conversation. See the module documentation.
#[derive(Debug, Clone)]
pub struct Paths {
    relay: bool,
    /// Whether direct paths are looked for at all (off: the relay only,
    /// as for load tests of the relay).
    probe: bool,
    /// The peer's endpoint in the roster (its public one behind a NAT).
    endpoint: Option<SocketAddr>,
    /// Where the server last said the peer is to be probed, besides:
    /// its endpoint as the server sees it, and its local one.
    met_at: Vec<SocketAddr>,
    /// Whether this side probes first in odd rounds (the other side in
    /// even ones; both in the first).
    leads: bool,
    /// Rounds of probes since the last kick.
    round: u32,
    /// A meeting is to be asked for.
    meet_due: bool,
    /// When the last meeting was asked for or arranged.
    met: Option<Instant>,
    /// The address that last answered a probe.
    direct: Option<SocketAddr>,
    /// When an authenticated frame last came straight from `direct`.
    heard: Option<Instant>,
    /// When a `chat` went straight with nothing heard straight since, and
    /// how long it may stay unanswered.
    unanswered: Option<(Instant, Duration)>,
    next_probe: Option<Instant>,
    backoff: Duration,
    active_until: Option<Instant>,
    announced: Option<Route>,
}

impl Paths {
    /// Paths to a peer at `endpoint` (from the roster); `relay`: whether
    /// the server relays.
    pub fn new(relay: bool, endpoint: Option<SocketAddr>) -> Self {
        Self {
            relay,
            probe: true,
            endpoint,
            met_at: Vec::new(),
            leads: false,
            round: 0,
            meet_due: false,
            met: None,
            direct: None,
            heard: None,
            unanswered: None,
            next_probe: None,
            backoff: FIRST_BACKOFF,
            active_until: None,
            announced: None,
        }
    }

    /// Whether this side leads odd rounds of probes (the two sides of a
    /// conversation must differ).
    pub fn leading(&mut self, leads: bool) {
        self.leads = leads;
    }

    /// Never look for a direct path: with a relay, everything goes
    /// through it.
    pub fn relay_only(&mut self) {
        self.probe = false;
    }

    /// The server relays (or no longer does).
    pub fn set_relay(&mut self, relay: bool) {
        self.relay = relay;
    }

    /// The roster shows the peer at `endpoint`: a peer that moved is
    /// probed afresh.
    pub fn set_endpoint(&mut self, endpoint: Option<SocketAddr>, now: Instant) {
        if endpoint != self.endpoint {
            self.endpoint = endpoint;
            self.met_at.clear();
            self.direct = None;
            self.heard = None;
            self.unanswered = None;
            self.kick(now);
        }
    }

    /// Whether the direct path may carry frames now.
    fn trusted(&self, now: Instant) -> bool {
        let heard = self
            .heard
            .is_some_and(|at| now.saturating_duration_since(at) < TRUST);
        let answered = self
            .unanswered
            .is_none_or(|(since, limit)| now.saturating_duration_since(since) < limit);
        self.direct.is_some() && heard && answered
    }

    /// Where a frame goes now (`None`: nowhere known).
    pub fn route(&self, now: Instant) -> Option<Route> {
        match self.direct {
            Some(direct) if self.trusted(now) => Some(Route::Direct(direct)),
            _ if self.relay => Some(Route::Relayed),
            _ => self.endpoint.map(Route::Direct),
        }
    }

    /// The server arranged a meeting: probe `endpoint` and `local` (if
    /// any) now.
    pub fn punched(&mut self, endpoint: SocketAddr, local: Option<SocketAddr>, now: Instant) {
        self.met_at = std::iter::once(endpoint).chain(local).collect();
        self.met = Some(now);
        self.meet_due = false;
        if !self.trusted(now) {
            self.active_until = Some(now + ACTIVE);
            self.kick(now);
        }
    }

    /// Ask for a meeting, unless one was had lately.
    fn want_meeting(&mut self, now: Instant) {
        if self
            .met
            .is_none_or(|at| now.saturating_duration_since(at) >= MEET_AGAIN)
        {
            self.meet_due = true;
        }
    }

    /// Whether to ask the server for a meeting now (asked once).
    pub fn take_meeting(&mut self, now: Instant) -> bool {
        self.expire(now);
        let due = std::mem::take(&mut self.meet_due) && self.relay && self.probe;
        if due {
            self.met = Some(now);
        }
        due
    }

    /// A `chat` was sent now (by this user): the conversation is active,
    /// and a chat sent straight expects an answer straight.
    pub fn chat_sent(&mut self, now: Instant) {
        self.active(now);
        if !self.trusted(now) {
            self.want_meeting(now);
        }
        if matches!(self.route(now), Some(Route::Direct(_))) && self.relay {
            let stale = self
                .heard
                .is_none_or(|at| now.saturating_duration_since(at) >= FRESH);
            let limit = if stale { SILENT_STALE } else { SILENT };
            self.unanswered.get_or_insert((now, limit));
            if stale {
                // Check the path now, alongside the chat.
                self.next_probe = Some(now);
            }
        }
    }

    /// The conversation is active (a `chat` either way).
    pub fn active(&mut self, now: Instant) {
        let was_idle = self.active_until.is_none_or(|until| now >= until);
        self.active_until = Some(now + ACTIVE);
        if was_idle {
            self.kick(now);
        }
    }

    /// Probe now (a session is ready, or something changed).
    pub fn kick(&mut self, now: Instant) {
        self.backoff = FIRST_BACKOFF;
        self.round = 0;
        self.next_probe = Some(now);
    }

    /// When the next probe goes: after the first round of a search, the
    /// side that does not lead the round waits [`LAG`] (a trusted path's
    /// keepalives are round 0).
    fn probe_at(&self) -> Option<Instant> {
        let lagging = self.round > 0 && (self.round % 2 == 1) != self.leads;
        self.next_probe
            .map(|at| if lagging { at + LAG } else { at })
    }

    /// An authenticated frame arrived straight from `from`.
    pub fn heard_from(&mut self, from: SocketAddr, now: Instant) {
        if self.direct == Some(from) {
            self.heard = Some(now);
            self.unanswered = None;
        }
    }

    /// `from` answered a probe: the path to it works both ways.
    pub fn answered(&mut self, from: SocketAddr, now: Instant) {
        self.direct = Some(from);
        self.heard = Some(now);
        self.unanswered = None;
        self.backoff = FIRST_BACKOFF;
        self.round = 0;
        self.next_probe = Some(now + KEEPALIVE);
    }

    /// Forgets what has run out by `now`: a direct path not heard from
    /// for [`TRUST`], a `chat` unanswered for [`SILENT`] (the path is then
    /// no longer trusted).
    fn expire(&mut self, now: Instant) {
        if self
            .heard
            .is_some_and(|at| now.saturating_duration_since(at) >= TRUST)
        {
            self.heard = None;
        }
        if self
            .unanswered
            .is_some_and(|(since, limit)| now.saturating_duration_since(since) >= limit)
        {
            self.heard = None;
            self.unanswered = None;
            self.kick(now);
            self.want_meeting(now);
        }
    }

    /// Where to send a probe now, if anywhere. Without a relay nothing is
    /// probed (frames go straight to the roster's endpoint anyway).
    pub fn due_probes(&mut self, now: Instant) -> Vec<SocketAddr> {
        self.expire(now);
        if !self.relay || !self.probe {
            self.next_probe = None;
            return Vec::new();
        }
        if self.probe_at().is_none_or(|at| now < at) {
            return Vec::new();
        }
        if self.active_until.is_none_or(|until| now >= until) {
            self.next_probe = None;
            return Vec::new();
        }
        if self.trusted(now) {
            self.next_probe = Some(now + KEEPALIVE);
            return self.direct.into_iter().collect();
        }
        // The next round counts from this one's own time, not its lag.
        let base = self.next_probe.unwrap_or(now).min(now);
        self.next_probe = Some(base + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.round = self.round.saturating_add(1);
        let mut targets: Vec<SocketAddr> = Vec::with_capacity(4);
        for candidate in self
            .endpoint
            .into_iter()
            .chain(self.met_at.iter().copied())
            .chain(self.direct)
        {
            if !targets.contains(&candidate) {
                targets.push(candidate);
            }
        }
        targets
    }

    /// When [`Paths::due_probes`] or a change of route is next due (each
    /// is forgotten once past, so this is never a time gone by for long).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let silent = self.unanswered.map(|(since, limit)| since + limit);
        let distrust = self.heard.map(|at| at + TRUST);
        [self.probe_at(), silent, distrust]
            .into_iter()
            .flatten()
            .min()
    }

    /// The route, if it changed since last announced.
    pub fn news(&mut self, now: Instant) -> Option<Route> {
        self.expire(now);
        let route = self.route(now);
        if route != self.announced {
            self.announced = route;
            return route;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_a_relay_frames_go_to_the_rosters_endpoint_and_nothing_is_probed() {
        let now = Instant::now();
        let mut paths = Paths::new(false, Some(at("10.0.0.2:5000")));
        paths.active(now);
        assert_eq!(paths.route(now), Some(Route::Direct(at("10.0.0.2:5000"))));
        assert!(paths.due_probes(now).is_empty());
    }

    #[test]
    fn the_relay_carries_until_a_probe_is_answered_then_the_direct_path() {
        let now = Instant::now();
        let peer = at("203.0.113.9:5000");
        let mut paths = Paths::new(true, Some(peer));
        assert_eq!(paths.news(now), Some(Route::Relayed));
        paths.active(now);
        assert_eq!(paths.due_probes(now), vec![peer]);
        // Backing off while nothing answers.
        assert!(paths
            .due_probes(now + Duration::from_millis(100))
            .is_empty());
        // (This side does not lead the second round: it waits LAG.)
        assert!(paths.due_probes(now + FIRST_BACKOFF).is_empty());
        assert_eq!(paths.due_probes(now + FIRST_BACKOFF + LAG), vec![peer]);
        let t = now + Duration::from_secs(1);
        paths.answered(peer, t);
        assert_eq!(paths.route(t), Some(Route::Direct(peer)));
        assert_eq!(paths.news(t), Some(Route::Direct(peer)));
        assert_eq!(paths.news(t), None);
        // Kept alive while active.
        assert_eq!(paths.due_probes(t + KEEPALIVE), vec![peer]);
    }

    #[test]
    fn a_silent_direct_path_falls_back_to_the_relay_and_is_probed_again() {
        let now = Instant::now();
        let peer = at("203.0.113.9:5000");
        let mut paths = Paths::new(true, Some(peer));
        paths.active(now);
        paths.answered(peer, now);
        paths.chat_sent(now);
        assert_eq!(paths.route(now + SILENT / 2), Some(Route::Direct(peer)));
        // Fresh: the longer wait.
        assert_eq!(paths.poll_timeout(), Some(now + SILENT));
        let later = now + SILENT;
        assert_eq!(paths.route(later), Some(Route::Relayed));
        // The next probe (the keepalive's time) finds it again if it works.
        paths.answered(peer, later + Duration::from_millis(5));
        assert_eq!(
            paths.route(later + Duration::from_millis(5)),
            Some(Route::Direct(peer))
        );
    }

    #[test]
    fn a_chat_on_a_quiet_path_expects_its_answer_sooner_and_probes_alongside() {
        let now = Instant::now();
        let peer = at("203.0.113.9:5000");
        let mut paths = Paths::new(true, Some(peer));
        paths.active(now);
        paths.answered(peer, now);
        let later = now + FRESH;
        paths.chat_sent(later);
        assert_eq!(paths.due_probes(later), vec![peer]);
        assert_eq!(paths.poll_timeout(), Some(later + SILENT_STALE));
        assert_eq!(paths.route(later + SILENT_STALE), Some(Route::Relayed));
    }

    #[test]
    fn a_path_not_heard_from_for_a_while_is_not_trusted_and_an_idle_one_not_probed() {
        let now = Instant::now();
        let peer = at("203.0.113.9:5000");
        let mut paths = Paths::new(true, Some(peer));
        paths.active(now);
        paths.answered(peer, now);
        assert_eq!(paths.route(now + TRUST), Some(Route::Relayed));
        assert!(paths.due_probes(now + ACTIVE).is_empty());
        // A new chat after the idle spell probes at once.
        let back = now + ACTIVE + Duration::from_secs(1);
        paths.active(back);
        assert_eq!(paths.due_probes(back), vec![peer]);
    }

    #[test]
    fn a_peer_that_moves_is_probed_afresh() {
        let now = Instant::now();
        let mut paths = Paths::new(true, Some(at("203.0.113.9:5000")));
        paths.active(now);
        paths.answered(at("203.0.113.9:5000"), now);
        paths.set_endpoint(Some(at("203.0.113.9:6000")), now);
        assert_eq!(paths.route(now), Some(Route::Relayed));
        assert_eq!(paths.due_probes(now), vec![at("203.0.113.9:6000")]);
    }

    #[test]
    fn a_chat_without_a_direct_path_asks_for_a_meeting_and_not_again_soon() {
        let now = Instant::now();
        let peer = at("198.18.0.11:5000");
        let mut paths = Paths::new(true, Some(peer));
        paths.chat_sent(now);
        assert!(paths.take_meeting(now));
        assert!(!paths.take_meeting(now), "asked once");
        paths.chat_sent(now + Duration::from_secs(1));
        assert!(!paths.take_meeting(now + Duration::from_secs(1)));
        // A trusted path needs none; losing it asks again (once the last
        // meeting is old enough).
        let later = now + MEET_AGAIN;
        paths.answered(peer, later);
        paths.chat_sent(later);
        assert!(!paths.take_meeting(later));
        assert_eq!(paths.route(later + SILENT), Some(Route::Relayed));
        assert!(paths.take_meeting(later + SILENT));
        // Without a relay (no server to ask) or probing, never.
        let mut alone = Paths::new(false, Some(peer));
        alone.chat_sent(now);
        assert!(!alone.take_meeting(now));
        let mut relayed = Paths::new(true, Some(peer));
        relayed.relay_only();
        relayed.chat_sent(now);
        assert!(!relayed.take_meeting(now));
    }

    #[test]
    fn a_punch_probes_every_address_at_once_and_the_first_answer_wins() {
        let now = Instant::now();
        let public = at("198.18.0.10:5001");
        let local = at("10.1.0.3:5000");
        let mut paths = Paths::new(true, Some(public));
        paths.punched(public, Some(local), now);
        // Not asked for again: the peer asked, and both were told.
        paths.chat_sent(now);
        assert!(!paths.take_meeting(now));
        assert_eq!(paths.due_probes(now), vec![public, local]);
        paths.answered(local, now + Duration::from_millis(2));
        assert_eq!(
            paths.route(now + Duration::from_millis(2)),
            Some(Route::Direct(local))
        );
        // The peer moves: what the meeting said is forgotten.
        paths.set_endpoint(Some(at("198.18.0.10:6000")), now);
        assert_eq!(paths.due_probes(now), vec![at("198.18.0.10:6000")]);
    }

    #[test]
    fn after_the_first_round_the_two_sides_take_turns_probing_first() {
        let now = Instant::now();
        let peer = at("198.18.0.11:5000");
        let mut sides = [true, false].map(|leads| {
            let mut paths = Paths::new(true, Some(peer));
            paths.leading(leads);
            paths.punched(peer, None, now);
            paths
        });
        // The first round: both at once.
        for paths in &mut sides {
            assert_eq!(paths.due_probes(now), vec![peer]);
        }
        // Each later round: one on time, the other LAG after it, turn
        // about.
        let mut round_at = now + FIRST_BACKOFF;
        let mut backoff = FIRST_BACKOFF;
        for round in 1..5 {
            let first = usize::from(round % 2 == 0);
            let [a, b] = &mut sides;
            let (on_time, lagging) = if first == 0 { (a, b) } else { (b, a) };
            assert_eq!(on_time.poll_timeout(), Some(round_at), "round {round}");
            assert_eq!(
                lagging.poll_timeout(),
                Some(round_at + LAG),
                "round {round}"
            );
            assert_eq!(on_time.due_probes(round_at), vec![peer]);
            assert!(lagging.due_probes(round_at).is_empty());
            assert_eq!(lagging.due_probes(round_at + LAG), vec![peer]);
            backoff *= 2;
            round_at += backoff;
        }
    }
}
