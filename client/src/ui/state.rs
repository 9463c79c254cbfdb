//! `UiState`: everything the terminal UI shows, and what keys and client
//! events do to it. No terminal and no clock: times come in as [`Stamp`]s,
//! keys as crossterm's plain key events, and what must happen outside
//! (send a message, read the history, ring the bell, quit) goes out as
//! [`Effect`]s for the console actor to carry out.

use std::collections::{BTreeMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use pigeon_shared::{TalkTime, UserName};

use crate::client_core::Sent;
use crate::command::{parse_command, Command, UI_HELP};
use crate::events::{ClientEvent, MessageId, Route};
use crate::history::{Direction, StoredDelivery, StoredMessage};
use crate::history_actor::Record;
use crate::session::{KeyInfo, NO_ANSWER};
use crate::ui::input::LineEditor;

/// Lines kept per tab; older ones scroll away.
pub const MAX_TAB_LINES: usize = 5_000;

/// Conversation tabs open at once (besides the status tab); opening one
/// more closes the one looked at longest ago.
pub const MAX_CHAT_TABS: usize = 64;

/// Messages of history shown when a conversation is opened.
pub const OPENING_HISTORY: usize = 20;

/// The key bindings, for `/help`.
pub const KEY_HELP: &str = "\
Enter            send the line (or open the conversation picked on the roster)
Esc              move between the roster and the input line
Up/Down          earlier lines you typed (on the roster: pick a user)
Tab              complete a user name
Ctrl-N, Ctrl-P   next / previous conversation (also Alt-Right, Alt-Left)
Alt-1 .. Alt-9   go to conversation 1 .. 9 (Alt-0: the status tab)
PageUp/PageDown  scroll the conversation
Ctrl-A/E, Ctrl-W/U/K, Home/End, Ctrl-Left/Right   edit the line
Ctrl-C           log out and quit";

/// A time of day to show next to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(pub String);

impl Stamp {
    /// `HH:MM` from an hour and a minute.
    pub fn hm(hour: u32, minute: u32) -> Self {
        Self(format!("{hour:02}:{minute:02}"))
    }
}

/// The stamp of a message sent at `ms` (since the Unix epoch): its date
/// and time in this machine's time zone.
pub fn sent_stamp(ms: u64) -> Stamp {
    let when = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|utc| utc.with_timezone(&chrono::Local));
    match when {
        Some(when) => Stamp(when.format("%Y-%m-%d %H:%M").to_string()),
        None => Stamp("earlier".to_owned()),
    }
}

/// Whether the client is logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Online,
    /// The server went away; the client is logging in again.
    Reconnecting,
    /// The session is over (refused, failed, logged out).
    Ended,
}

/// Where the keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Input,
    Roster,
}

/// Who a line is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// This user.
    Me,
    /// The other user.
    Peer(UserName),
    /// Pigeon itself: someone came or went, help, search results.
    System,
}

/// The delivery state of a line this user sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Nothing to show (received messages, system lines).
    None,
    /// On its way, not yet confirmed.
    Sending,
    /// Sent to a seed-era peer, which never confirms.
    Sent,
    /// Kept by the server for a peer who is offline.
    Stored,
    /// Confirmed by the peer.
    Delivered,
    /// Given up.
    Failed,
}

/// One line of a tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: Stamp,
    pub who: Who,
    pub text: String,
    pub mark: Mark,
    /// This client's number for a message it sent in this run.
    pub id: Option<MessageId>,
    /// From the history file, not this run.
    pub earlier: bool,
}

/// What a tab shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TabKind {
    /// Pigeon's own messages: who comes and goes, help, search results.
    Status,
    /// The conversation with one user.
    Chat(UserName),
}

/// A tab: the status tab, or one conversation.
#[derive(Debug, Clone)]
pub struct Tab {
    pub kind: TabKind,
    pub lines: VecDeque<Line>,
    /// Messages that arrived while the tab was not in view.
    pub unread: usize,
    /// Rows scrolled back from the newest.
    pub scroll: usize,
    /// How an end-to-end encrypted conversation reaches its peer, once
    /// known: straight, or through the server's relay.
    pub route: Option<Route>,
}

impl Tab {
    fn new(kind: TabKind) -> Self {
        Self {
            kind,
            lines: VecDeque::new(),
            unread: 0,
            scroll: 0,
            route: None,
        }
    }

    /// The tab's title: `status`, or the peer's name.
    pub fn title(&self) -> &str {
        match &self.kind {
            TabKind::Status => "status",
            TabKind::Chat(peer) => peer.as_str(),
        }
    }

    fn push(&mut self, line: Line) {
        if self.lines.len() >= MAX_TAB_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// Something the console actor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `text` to `to`; report back with [`UiState::message_sent`] or
    /// [`UiState::message_refused`].
    Send { to: UserName, text: String },
    /// Read the last `count` messages with `peer`; report back with
    /// [`UiState::history_loaded`].
    LoadHistory {
        peer: UserName,
        count: usize,
        /// Asked for with `/history` (replaces what was shown before),
        /// rather than on opening.
        asked: bool,
    },
    /// Search the history; report back with [`UiState::search_done`].
    Search { text: String },
    /// Remember the bell setting.
    SaveBell(bool),
    /// Ring the terminal bell.
    Bell,
    /// Log out and quit.
    Quit,
    /// Keep a message in the history.
    Record(Record),
    /// What became of message `id`, for the history.
    SetDelivery {
        id: MessageId,
        delivery: StoredDelivery,
    },
    /// Look up `name`'s key; report back with [`UiState::whois_done`].
    WhoIs { name: UserName },
    /// Trust `name`'s new key; report back with [`UiState::trust_done`].
    Trust { name: UserName },
}

/// The one-line notice at the bottom: `line` is the whole text; from
/// `hint_at` on it is a hint (how to open the conversation, say) that must
/// stay visible, so a narrow terminal cuts the text before it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    line: String,
    hint_at: usize,
    /// The conversation the notice announces: it goes once that is in view.
    about: Option<UserName>,
    /// About logging in: it goes once logged in.
    until_online: bool,
}

impl Notice {
    fn plain(text: String) -> Self {
        Self {
            hint_at: text.len(),
            line: text,
            about: None,
            until_online: false,
        }
    }

    /// The text, and the hint that must stay visible (may be empty).
    pub fn parts(&self) -> (&str, &str) {
        self.line.split_at(self.hint_at.min(self.line.len()))
    }
}

/// One user on the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterUser {
    pub name: UserName,
    /// A seed-era client: messages to it are never confirmed.
    pub seed_era: bool,
}

/// The whole UI. See the module documentation.
#[derive(Debug, Clone)]
pub struct UiState {
    me: UserName,
    /// The server's address, shown while connecting.
    server: Option<String>,
    endpoint: Option<String>,
    connection: Connection,
    /// Everyone online but this user.
    roster: BTreeMap<UserName, RosterUser>,
    roster_cursor: usize,
    focus: Focus,
    tabs: Vec<Tab>,
    active: usize,
    /// Order in which chat tabs were last looked at (oldest first), for
    /// closing one when too many are open.
    looked_at: Vec<UserName>,
    input: LineEditor,
    notice: Option<Notice>,
    bell: bool,
    history: bool,
    /// Rows the conversation area showed last time (PageUp's step), and
    /// the most it can scroll back.
    page_rows: usize,
    max_scroll: usize,
}

impl UiState {
    /// The UI for `me`, before login; `history` says whether a history
    /// file is in use, `bell` whether to ring on news.
    pub fn new(me: UserName, history: bool, bell: bool) -> Self {
        Self {
            me,
            server: None,
            endpoint: None,
            connection: Connection::Connecting,
            roster: BTreeMap::new(),
            roster_cursor: 0,
            focus: Focus::Input,
            tabs: vec![Tab::new(TabKind::Status)],
            active: 0,
            looked_at: Vec::new(),
            input: LineEditor::new(),
            notice: None,
            bell,
            history,
            page_rows: 10,
            max_scroll: usize::MAX,
        }
    }

    // --- What the renderer reads. ---

    pub fn me(&self) -> &UserName {
        &self.me
    }

    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The server's address, if known.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// Where the client logs in; said on the status tab.
    pub fn set_server(&mut self, server: impl Into<String>, at: &Stamp) {
        let server = server.into();
        self.system(0, at, format!("connecting to {server} as {}…", self.me));
        self.server = Some(server);
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Everyone online but this user, sorted by name.
    pub fn roster(&self) -> impl ExactSizeIterator<Item = &RosterUser> {
        self.roster.values()
    }

    /// The roster entry picked with Up/Down.
    pub fn roster_cursor(&self) -> usize {
        self.roster_cursor
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    pub fn tabs(&self) -> &[Tab] {
        &self.tabs
    }

    /// The tab in view.
    pub fn active(&self) -> usize {
        self.active
    }

    pub fn active_tab(&self) -> Option<&Tab> {
        self.tabs.get(self.active)
    }

    /// Unread messages from `name`.
    pub fn unread(&self, name: &str) -> usize {
        self.chat_index(name)
            .and_then(|i| self.tabs.get(i))
            .map_or(0, |tab| tab.unread)
    }

    pub fn input(&self) -> &LineEditor {
        &self.input
    }

    /// The notice's whole line.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_ref().map(|n| n.line.as_str())
    }

    /// The notice, with its hint apart.
    pub fn notice_parts(&self) -> Option<(&str, &str)> {
        self.notice.as_ref().map(Notice::parts)
    }

    pub fn bell(&self) -> bool {
        self.bell
    }

    /// Tells the state what the last drawing could show: the rows of the
    /// conversation area and how far the tab in view can scroll back.
    pub fn viewed(&mut self, page_rows: usize, max_scroll: usize) {
        self.page_rows = page_rows.max(1);
        self.max_scroll = max_scroll;
        if let Some(tab) = self.tabs.get_mut(self.active) {
            tab.scroll = tab.scroll.min(max_scroll);
        }
    }

    // --- Client events. ---

    /// What a client event does to the UI.
    pub fn on_event(&mut self, event: &ClientEvent, at: &Stamp) -> Vec<Effect> {
        match event {
            ClientEvent::Ready {
                name,
                endpoint,
                roster,
                ..
            } => {
                self.connection = Connection::Online;
                self.endpoint = Some(endpoint.to_string());
                if self.notice.as_ref().is_some_and(|n| n.until_online) {
                    self.notice = None;
                }
                self.roster = roster
                    .iter()
                    .filter(|(other, _)| *other != name)
                    .map(|(other, peer)| {
                        (
                            other.clone(),
                            RosterUser {
                                name: other.clone(),
                                seed_era: peer.instance.is_none(),
                            },
                        )
                    })
                    .collect();
                self.clamp_roster_cursor();
                let others = self.roster.len();
                self.system(
                    0,
                    at,
                    format!(
                        "logged in as {} at {endpoint}; {others} other{} online. /help lists the commands",
                        self.me,
                        if others == 1 { "" } else { "s" }
                    ),
                );
                // This user's own fingerprint, on the status tab.
                vec![Effect::WhoIs {
                    name: self.me.clone(),
                }]
            }
            ClientEvent::Path { name, route } => {
                if let Some(i) = self.chat_index(name.as_str()) {
                    let line = match route {
                        Route::Direct(at) => format!("talking with {name} directly ({at})"),
                        Route::Relayed => format!(
                            "talking with {name} through the server's relay (still end-to-end encrypted)"
                        ),
                    };
                    if let Some(tab) = self.tabs.get_mut(i) {
                        tab.route = Some(*route);
                    }
                    self.system(i, at, line);
                }
                Vec::new()
            }
            ClientEvent::KeyChanged { name, old, new } => {
                let warning = format!(
                    "WARNING: {name}'s key changed from {} to {}. Someone may be posing as {name}. Nothing is sent to {name} until you have checked the new fingerprint with them (in person, by phone) and typed /trust {name}",
                    old.fingerprint(),
                    new.fingerprint()
                );
                self.system(0, at, warning.clone());
                if let Some(i) = self.chat_index(name.as_str()) {
                    self.system(i, at, warning);
                }
                self.set_notice(format!(
                    "{name}'s key changed: /whois {name}, check it with them, then /trust {name}"
                ));
                vec![Effect::Bell]
            }
            ClientEvent::Online { name, endpoint } => {
                if *name == self.me {
                    return Vec::new();
                }
                // Whether a newcomer is a seed-era client shows when a
                // message to it is sent (`message_sent`).
                let known = self.roster.get(name).is_some_and(|u| u.seed_era);
                self.roster.insert(
                    name.clone(),
                    RosterUser {
                        name: name.clone(),
                        seed_era: known,
                    },
                );
                self.system(0, at, format!("{name} is online at {endpoint}"));
                if let Some(i) = self.chat_index(name.as_str()) {
                    self.system(i, at, format!("{name} is online"));
                }
                Vec::new()
            }
            ClientEvent::Offline { name } => {
                self.roster.remove(name);
                self.clamp_roster_cursor();
                self.system(0, at, format!("{name} left"));
                if let Some(i) = self.chat_index(name.as_str()) {
                    self.system(i, at, format!("{name} left"));
                }
                Vec::new()
            }
            ClientEvent::Message { from, time, text } => self.incoming(from, time, text, at),
            // Shown with the date it was sent, not the time it arrived.
            ClientEvent::OfflineMessage {
                from,
                time,
                sent_at_ms,
                text,
            } => self.incoming(from, time, text, &sent_stamp(*sent_at_ms)),
            ClientEvent::Stored { to, id } => {
                self.mark(to, *id, Mark::Stored);
                Vec::new()
            }
            ClientEvent::NotStored { to, id, text, why } => {
                self.mark(to, *id, Mark::Failed);
                self.set_notice(format!("not kept for {to}: {why}: {}", preview(text, 40)));
                self.delivery(*id, StoredDelivery::Failed)
            }
            ClientEvent::Delivered { to, id } => {
                self.mark(to, *id, Mark::Delivered);
                self.delivery(*id, StoredDelivery::Delivered)
            }
            ClientEvent::Failed { to, id, text } => {
                self.mark(to, *id, Mark::Failed);
                self.set_notice(format!("not delivered to {to}: {}", preview(text, 60)));
                self.delivery(*id, StoredDelivery::Failed)
            }
            ClientEvent::Connecting {
                server,
                attempt,
                why,
            } => {
                if *attempt == 2 {
                    self.system(
                        0,
                        at,
                        format!("{why} at {server} yet; still trying (Ctrl-C quits)"),
                    );
                }
                let hint = if why == NO_ANSWER {
                    "is a server running? Start one with --host"
                } else {
                    why.as_str()
                };
                let text = format!("connecting to {server} (attempt {attempt})");
                self.notice = Some(Notice {
                    hint_at: text.len(),
                    line: format!("{text} — {hint}"),
                    about: None,
                    until_online: true,
                });
                Vec::new()
            }
            ClientEvent::ServerLost { reason } => {
                self.connection = Connection::Reconnecting;
                self.system(
                    0,
                    at,
                    format!("{reason}; logging in again (chat goes on meanwhile)"),
                );
                Vec::new()
            }
            ClientEvent::Reconnected { online } => {
                self.connection = Connection::Online;
                self.system(0, at, format!("logged in again; {online} users online"));
                Vec::new()
            }
            ClientEvent::Refused { reason, detail } => {
                self.connection = Connection::Ended;
                self.system(0, at, format!("login refused ({reason}): {detail}"));
                Vec::new()
            }
            ClientEvent::LoginFailed { reason } => {
                self.connection = Connection::Ended;
                self.system(0, at, format!("login failed: {reason}"));
                Vec::new()
            }
            ClientEvent::LoggedOut => {
                self.connection = Connection::Ended;
                Vec::new()
            }
        }
    }

    fn message_received(&mut self, from: &UserName, text: &str, at: &Stamp) -> Vec<Effect> {
        let (index, mut effects) = self.open_tab(from);
        let in_view = index == self.active;
        if let Some(tab) = self.tabs.get_mut(index) {
            tab.push(Line {
                at: at.clone(),
                who: Who::Peer(from.clone()),
                text: text.to_owned(),
                mark: Mark::None,
                id: None,
                earlier: false,
            });
            if !in_view {
                tab.unread += 1;
            }
        }
        if !in_view {
            let unread = self.unread(from.as_str());
            let text = format!("{from}: {}", preview(text, MAX_PREVIEW_CHARS));
            let keys = if index <= 9 {
                format!("Alt-{index} or ")
            } else {
                String::new()
            };
            let hint = format!("   ({unread} unread; {keys}/open {from})");
            self.notice = Some(Notice {
                hint_at: text.len(),
                line: text + &hint,
                about: Some(from.clone()),
                until_online: false,
            });
            if self.bell {
                effects.push(Effect::Bell);
            }
        }
        effects
    }

    /// A message this user typed went out (`sent` says as which number,
    /// whether the peer will confirm it, and the time it carries); what to
    /// keep in the history.
    pub fn message_sent(
        &mut self,
        to: &UserName,
        sent: &Sent,
        text: &str,
        at: &Stamp,
    ) -> Vec<Effect> {
        let id = sent.id;
        let seed_era = !sent.confirmed;
        if let Some(user) = self.roster.get_mut(to) {
            user.seed_era = seed_era;
        }
        let (index, _) = self.open_tab(to);
        if let Some(tab) = self.tabs.get_mut(index) {
            tab.push(Line {
                at: at.clone(),
                who: Who::Me,
                text: text.to_owned(),
                mark: if seed_era { Mark::Sent } else { Mark::Sending },
                id: Some(id),
                earlier: false,
            });
            tab.scroll = 0;
        }
        // Kept with the time it carries, and updated when the peer
        // confirms it (a seed-era peer never does).
        self.keep(Record {
            peer: to.clone(),
            direction: Direction::Outgoing,
            talk_time: sent.time.to_string(),
            text: text.to_owned(),
            delivery: if seed_era {
                StoredDelivery::Sent
            } else {
                StoredDelivery::Sending
            },
            id: sent.confirmed.then_some(id),
        })
    }

    /// An effect that updates message `id` in the history, if there is one.
    fn delivery(&self, id: MessageId, delivery: StoredDelivery) -> Vec<Effect> {
        if self.history {
            vec![Effect::SetDelivery { id, delivery }]
        } else {
            Vec::new()
        }
    }

    /// An effect that keeps `record` in the history, if there is one.
    fn keep(&self, record: Record) -> Vec<Effect> {
        if self.history {
            vec![Effect::Record(record)]
        } else {
            Vec::new()
        }
    }

    /// A message this user typed could not be sent at all (`why`); the
    /// text comes back to the input line if that is empty.
    pub fn message_refused(&mut self, to: &UserName, text: &str, why: &str) {
        self.set_notice(format!("not sent to {to}: {why}"));
        if self.input.is_empty() {
            self.input.set_text(text);
        }
    }

    /// The history asked for with [`Effect::LoadHistory`] (or why it could
    /// not be read).
    pub fn history_loaded(
        &mut self,
        peer: &UserName,
        asked: bool,
        found: Result<Vec<StoredMessage>, String>,
    ) {
        let found = match found {
            Ok(found) => found,
            Err(why) => {
                self.set_notice(format!("history not available: {why}"));
                return;
            }
        };
        let Some(index) = self.chat_index(peer.as_str()) else {
            return;
        };
        let Some(tab) = self.tabs.get_mut(index) else {
            return;
        };
        if asked {
            tab.lines.retain(|line| !line.earlier);
        } else if tab.lines.iter().any(|line| line.earlier) {
            return;
        }
        let count = found.len();
        let room = MAX_TAB_LINES.saturating_sub(tab.lines.len());
        for stored in found.into_iter().rev().take(room) {
            tab.lines.push_front(Line {
                at: Stamp(format_ms(stored.at_ms)),
                who: match stored.direction {
                    Direction::Incoming => {
                        Who::Peer(UserName::parse(&stored.peer).unwrap_or_else(|_| peer.clone()))
                    }
                    Direction::Outgoing => Who::Me,
                },
                text: stored.text,
                mark: match stored.delivery {
                    StoredDelivery::Received => Mark::None,
                    StoredDelivery::Sending => Mark::Sending,
                    StoredDelivery::Sent => Mark::Sent,
                    StoredDelivery::Delivered => Mark::Delivered,
                    StoredDelivery::Failed => Mark::Failed,
                },
                id: None,
                earlier: true,
            });
        }
        if asked {
            tab.scroll = 0;
            self.set_notice(match count {
                0 => format!("no earlier messages with {peer}"),
                n => format!("{n} earlier messages with {peer}"),
            });
        }
    }

    /// The results of a search (or why it failed), shown on the status tab.
    pub fn search_done(
        &mut self,
        text: &str,
        found: Result<Vec<StoredMessage>, String>,
        at: &Stamp,
    ) {
        self.active = 0;
        self.take_unread();
        match found {
            Err(why) => self.system(0, at, format!("search failed: {why}")),
            Ok(found) if found.is_empty() => {
                self.system(0, at, format!("no messages contain \"{text}\""));
            }
            Ok(found) => {
                let count = found.len();
                let heading = if count == 1 {
                    format!("1 message contains \"{text}\":")
                } else {
                    format!("{count} messages contain \"{text}\", newest first:")
                };
                self.system(0, at, heading);
                for stored in found {
                    let arrow = match stored.direction {
                        Direction::Incoming => format!("{} → {}", stored.peer, self.me),
                        Direction::Outgoing => format!("{} → {}", self.me, stored.peer),
                    };
                    let line = format!(
                        "  {} {arrow}: {}",
                        format_date_ms(stored.at_ms),
                        stored.text
                    );
                    self.system(0, at, line);
                }
            }
        }
    }

    /// A line on the status tab (the address of a hosted server, say).
    pub fn note(&mut self, text: impl Into<String>, at: &Stamp) {
        self.system(0, at, text.into());
    }

    /// A one-line notice at the bottom (a warning, say).
    pub fn set_notice(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice::plain(text.into()));
    }

    // --- Keys. ---

    /// Text pasted into the terminal.
    pub fn on_paste(&mut self, text: &str) {
        self.focus = Focus::Input;
        self.input.insert_str(text);
    }

    /// What a key does.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        // Keys that work wherever the focus is.
        match key.code {
            KeyCode::Char('c') if ctrl => return vec![Effect::Quit],
            KeyCode::Char('d') if ctrl && self.input.is_empty() => return vec![Effect::Quit],
            KeyCode::Char('n') if ctrl => return self.cycle_tab(1),
            KeyCode::Char('p') if ctrl => return self.cycle_tab(-1),
            KeyCode::Right if alt => return self.cycle_tab(1),
            KeyCode::Left if alt => return self.cycle_tab(-1),
            KeyCode::Char(c @ '0'..='9') if alt => {
                let n = c.to_digit(10).map_or(0, |d| d as usize);
                if n < self.tabs.len() {
                    return self.switch_to(n);
                }
                return Vec::new();
            }
            KeyCode::PageUp => {
                self.scroll_by(self.page_rows as isize);
                return Vec::new();
            }
            KeyCode::PageDown => {
                self.scroll_by(-(self.page_rows as isize));
                return Vec::new();
            }
            KeyCode::Esc => {
                self.focus = match self.focus {
                    Focus::Input => Focus::Roster,
                    Focus::Roster => Focus::Input,
                };
                return Vec::new();
            }
            _ => {}
        }
        match self.focus {
            Focus::Roster => self.roster_key(key),
            Focus::Input => self.input_key(key, ctrl),
        }
    }

    fn roster_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let last = self.roster.len().saturating_sub(1);
        match key.code {
            KeyCode::Up => self.roster_cursor = self.roster_cursor.saturating_sub(1),
            KeyCode::Down => self.roster_cursor = (self.roster_cursor + 1).min(last),
            KeyCode::Home => self.roster_cursor = 0,
            KeyCode::End => self.roster_cursor = last,
            KeyCode::Enter => {
                let Some(name) = self.roster.keys().nth(self.roster_cursor).cloned() else {
                    return Vec::new();
                };
                self.focus = Focus::Input;
                return self.open(&name);
            }
            KeyCode::Tab => self.focus = Focus::Input,
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                // Typing goes to the input line.
                self.focus = Focus::Input;
                self.input.insert(c);
            }
            _ => {}
        }
        Vec::new()
    }

    fn input_key(&mut self, key: KeyEvent, ctrl: bool) -> Vec<Effect> {
        match key.code {
            KeyCode::Enter => return self.submit(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('u') if ctrl => self.input.delete_to_start(),
            KeyCode::Char('k') if ctrl => self.input.delete_to_end(),
            KeyCode::Char(_) if ctrl => {}
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left if ctrl => self.input.word_left(),
            KeyCode::Right if ctrl => self.input.word_right(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up => self.input.history_prev(),
            KeyCode::Down => self.input.history_next(),
            KeyCode::Tab => {
                let names: Vec<&str> = self.roster.keys().map(UserName::as_str).collect();
                self.input.complete(names);
            }
            _ => {}
        }
        Vec::new()
    }

    fn submit(&mut self) -> Vec<Effect> {
        let line = self.input.submit();
        self.notice = None;
        if line.trim().is_empty() {
            return Vec::new();
        }
        // `//text` sends `/text`.
        if let Some(text) = line.strip_prefix("//") {
            return self.say(format!("/{text}"));
        }
        if !line.starts_with('/') {
            return self.say(line);
        }
        let command = match parse_command(&line) {
            Ok(Some(command)) => command,
            Ok(None) => return Vec::new(),
            Err(e) => {
                self.set_notice(e.to_string());
                return Vec::new();
            }
        };
        match command {
            Command::Msg { to, text } => {
                let mut effects = self.open(&to);
                effects.push(Effect::Send { to, text });
                effects
            }
            Command::Open { name } => self.open(&name),
            Command::Close => {
                self.close_active();
                Vec::new()
            }
            Command::List => {
                let at = Stamp(String::new());
                let names: Vec<String> = self.roster.keys().map(ToString::to_string).collect();
                let line = match names.len() {
                    0 => "nobody else is online".to_owned(),
                    1 => format!("1 other online: {}", names.join(", ")),
                    n => format!("{n} others online: {}", names.join(", ")),
                };
                self.system(0, &at, line);
                self.switch_to(0)
            }
            Command::History { name, count } => {
                let mut effects = self.open(&name);
                effects.retain(|e| !matches!(e, Effect::LoadHistory { .. }));
                if self.history {
                    effects.push(Effect::LoadHistory {
                        peer: name,
                        count,
                        asked: true,
                    });
                } else {
                    self.set_notice("history is off (--no-history)");
                }
                effects
            }
            Command::Search { text } => {
                if self.history {
                    vec![Effect::Search { text }]
                } else {
                    self.set_notice("history is off (--no-history)");
                    Vec::new()
                }
            }
            Command::Bell { on } => {
                self.bell = on;
                self.set_notice(format!("bell {}", if on { "on" } else { "off" }));
                vec![Effect::SaveBell(on)]
            }
            Command::Help => {
                let at = Stamp(String::new());
                for line in UI_HELP.lines().chain(["", "Keys:"]).chain(KEY_HELP.lines()) {
                    self.system(0, &at, line.to_owned());
                }
                self.switch_to(0)
            }
            Command::Quit => vec![Effect::Quit],
            Command::WhoIs { name } => vec![Effect::WhoIs {
                name: name.unwrap_or_else(|| self.me.clone()),
            }],
            Command::Trust { name } => vec![Effect::Trust { name }],
        }
    }

    /// A message from `from`, shown at `at` and kept with the time it
    /// carries.
    fn incoming(
        &mut self,
        from: &UserName,
        time: &TalkTime,
        text: &str,
        at: &Stamp,
    ) -> Vec<Effect> {
        let mut effects = self.message_received(from, text, at);
        effects.extend(self.keep(Record {
            peer: from.clone(),
            direction: Direction::Incoming,
            talk_time: time.to_string(),
            text: text.to_owned(),
            delivery: StoredDelivery::Received,
            id: None,
        }));
        effects
    }

    /// What `/whois` found: a line on the status tab and, for a peer, in
    /// its conversation.
    pub fn whois_done(&mut self, name: &UserName, info: &KeyInfo, at: &Stamp) {
        let line = if *name == self.me {
            match info.current {
                Some(key) => format!(
                    "your key's fingerprint: {} (read it to whoever asks /whois {})",
                    key.fingerprint(),
                    self.me
                ),
                None => "you have no key: chat is not encrypted".to_owned(),
            }
        } else {
            let shown = info.current.or(info.pinned);
            let mut line = match shown {
                Some(key) => format!("{name}'s key fingerprint: {}", key.fingerprint()),
                None => format!("{name}: no key"),
            };
            if let Some(note) = crate::plain::whois_note(name, info) {
                line.push_str("; ");
                line.push_str(&note);
            } else {
                line.push_str("; chat with them is end-to-end encrypted");
            }
            line
        };
        self.system(0, at, line.clone());
        if let Some(i) = self.chat_index(name.as_str()) {
            if i != 0 {
                self.system(i, at, line);
            }
        }
    }

    /// What `/trust` did.
    pub fn trust_done(&mut self, name: &UserName, result: Result<(), String>, at: &Stamp) {
        match result {
            Ok(()) => {
                let line = format!("{name}'s new key is trusted; messages to {name} go out again");
                self.system(0, at, line.clone());
                if let Some(i) = self.chat_index(name.as_str()) {
                    self.system(i, at, line.clone());
                }
                self.set_notice(line);
            }
            Err(why) => self.set_notice(why),
        }
    }

    /// Plain text: a message to the conversation in view.
    fn say(&mut self, text: String) -> Vec<Effect> {
        match self.tabs.get(self.active).map(|tab| &tab.kind) {
            Some(TabKind::Chat(peer)) => vec![Effect::Send {
                to: peer.clone(),
                text,
            }],
            _ => {
                self.set_notice(
                    "pick someone first: Esc and Enter on a name, or /open NAME, or /msg NAME TEXT",
                );
                self.input.set_text(&text);
                Vec::new()
            }
        }
    }

    // --- Tabs. ---

    fn chat_index(&self, name: &str) -> Option<usize> {
        self.tabs
            .iter()
            .position(|tab| matches!(&tab.kind, TabKind::Chat(peer) if peer.as_str() == name))
    }

    /// Opens (or finds) the tab for `name` without switching to it; a new
    /// tab asks for its history.
    fn open_tab(&mut self, name: &UserName) -> (usize, Vec<Effect>) {
        if let Some(index) = self.chat_index(name.as_str()) {
            return (index, Vec::new());
        }
        if self.tabs.len() > MAX_CHAT_TABS {
            self.close_oldest();
        }
        self.tabs.push(Tab::new(TabKind::Chat(name.clone())));
        self.looked_at.insert(0, name.clone());
        let effects = if self.history {
            vec![Effect::LoadHistory {
                peer: name.clone(),
                count: OPENING_HISTORY,
                asked: false,
            }]
        } else {
            Vec::new()
        };
        (self.tabs.len() - 1, effects)
    }

    /// Opens the conversation with `name` and shows it.
    fn open(&mut self, name: &UserName) -> Vec<Effect> {
        let (index, mut effects) = self.open_tab(name);
        effects.extend(self.switch_to(index));
        effects
    }

    fn switch_to(&mut self, index: usize) -> Vec<Effect> {
        if index < self.tabs.len() {
            self.active = index;
            self.take_unread();
        }
        Vec::new()
    }

    fn take_unread(&mut self) {
        if let Some(tab) = self.tabs.get_mut(self.active) {
            tab.unread = 0;
            if let TabKind::Chat(peer) = &tab.kind {
                let peer = peer.clone();
                // The news is read: its notice goes.
                if self
                    .notice
                    .as_ref()
                    .is_some_and(|n| n.about.as_ref() == Some(&peer))
                {
                    self.notice = None;
                }
                self.looked_at.retain(|n| *n != peer);
                self.looked_at.push(peer);
            }
        }
    }

    fn cycle_tab(&mut self, step: isize) -> Vec<Effect> {
        let n = self.tabs.len() as isize;
        let next = (self.active as isize + step).rem_euclid(n.max(1));
        self.switch_to(next as usize)
    }

    fn close_active(&mut self) {
        if self.active == 0 {
            self.set_notice("the status tab stays open");
            return;
        }
        if let Some(tab) = self.tabs.get(self.active) {
            if let TabKind::Chat(peer) = &tab.kind {
                let peer = peer.clone();
                self.looked_at.retain(|n| *n != peer);
            }
            self.tabs.remove(self.active);
            self.active = self.active.min(self.tabs.len() - 1);
            self.take_unread();
        }
    }

    fn close_oldest(&mut self) {
        let active = self.tabs.get(self.active).map(|t| t.kind.clone());
        let Some(oldest) = self
            .looked_at
            .iter()
            .find(|n| active.as_ref() != Some(&TabKind::Chat((*n).clone())))
            .cloned()
        else {
            return;
        };
        if let Some(index) = self.chat_index(oldest.as_str()) {
            self.tabs.remove(index);
            self.looked_at.retain(|n| *n != oldest);
            if self.active > index {
                self.active -= 1;
            }
        }
    }

    fn scroll_by(&mut self, rows: isize) {
        let max = self.max_scroll;
        if let Some(tab) = self.tabs.get_mut(self.active) {
            tab.scroll = tab.scroll.saturating_add_signed(rows).min(max);
        }
    }

    fn system(&mut self, index: usize, at: &Stamp, text: String) {
        if let Some(tab) = self.tabs.get_mut(index) {
            tab.push(Line {
                at: at.clone(),
                who: Who::System,
                text,
                mark: Mark::None,
                id: None,
                earlier: false,
            });
        }
    }

    fn mark(&mut self, to: &UserName, id: MessageId, mark: Mark) {
        let Some(index) = self.chat_index(to.as_str()) else {
            return;
        };
        if let Some(line) = self
            .tabs
            .get_mut(index)
            .and_then(|tab| tab.lines.iter_mut().rev().find(|l| l.id == Some(id)))
        {
            line.mark = mark;
        }
    }

    fn clamp_roster_cursor(&mut self) {
        self.roster_cursor = self.roster_cursor.min(self.roster.len().saturating_sub(1));
    }
}

/// Characters of a message kept for its notice; the screen shows as many
/// as fit.
const MAX_PREVIEW_CHARS: usize = 200;

/// The first `chars` characters of `text` on one line.
fn preview(text: &str, chars: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > chars {
        let cut: String = one_line.chars().take(chars).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// A stored time as `MM-DD HH:MM` on the local clock.
fn format_ms(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%m-%d %H:%M").to_string())
}

/// A stored time as `YYYY-MM-DD HH:MM` on the local clock.
fn format_date_ms(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

#[cfg(test)]
mod tests;
