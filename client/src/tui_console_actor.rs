//! `TuiConsoleActor`: the terminal UI front end. It owns the terminal
//! (raw mode, the alternate screen), turns keys and client events into
//! changes of the [`UiState`], carries out the state's [`Effect`]s
//! (sending, history, the bell, quitting) and draws.
//!
//! The terminal is put back as it was, once, on every way out: logout, a
//! refused login, an error, and a panic. Keys arrive in batches from
//! [`terminal_events`] and are drawn once per batch.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event};
use pigeon_shared::UserName;
use ratatui::DefaultTerminal;
use tracing::debug;

use crate::client::ClientHandle;
use crate::clock::SharedClock;
use crate::events::{ClientEvent, ClientEvents, MessageId};
use crate::front_end::{Attach, Quit};
use crate::history::StoredDelivery;
use crate::history_actor::{HistoryActor, Recent, Record, SaveSetting, Search, SetDelivery};
use crate::plain_console_actor::EXIT_REFUSED;
use crate::ui::render;
use crate::ui::state::{Effect, Stamp, UiState};
use crate::ui::terminal_input::terminal_events;

/// Client events are drawn at most this often; keys once per batch.
const REDRAW_DELAY: Duration = Duration::from_millis(15);

/// Whether the terminal is in the UI's hands (raw mode, the alternate
/// screen). Putting it back twice would be wrong: leaving the alternate
/// screen also moves the cursor back to where it was when the UI began,
/// so whatever was printed after the first time (the reason the program
/// ends) would be overwritten by the shell's prompt.
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The history setting that keeps `/bell`.
pub const BELL_SETTING: &str = "bell";

/// The terminal UI. See the module documentation.
pub struct TuiConsoleActor {
    /// `None` once the terminal is given back.
    terminal: Option<DefaultTerminal>,
    ui: UiState,
    client: Option<ClientHandle>,
    history: Option<Addr<HistoryActor>>,
    quitting: bool,
    redraw: Option<SpawnHandle>,
    /// Whether a failed history write was reported already.
    history_warned: bool,
    /// Terminal events read but not yet handled: those behind a message
    /// being handed to the client wait for it, so lines go out in the
    /// order they were typed.
    input: VecDeque<io::Result<Event>>,
    /// A message is being handed to the client.
    sending: bool,
    /// Where the time on screen comes from.
    clock: SharedClock,
}

impl TuiConsoleActor {
    /// Takes over the terminal for `ui`; `history`, if any, keeps the
    /// conversations.
    pub fn new(
        ui: UiState,
        history: Option<Addr<HistoryActor>>,
        clock: SharedClock,
    ) -> io::Result<Self> {
        // A panic puts the terminal back before it is reported, and ends
        // the program: a UI whose actor died would only leave a session
        // nobody can see. (This replaces the hook `try_init` installs, which
        // would put the terminal back even if it was back already.)
        let report = std::panic::take_hook();
        let terminal = ratatui::try_init()?;
        TERMINAL_TAKEN.store(true, Ordering::SeqCst);
        std::panic::set_hook(Box::new(move |info| {
            give_back_terminal();
            report(info);
            std::process::exit(101);
        }));
        // Pasted text arrives whole, not as keys (a pasted line break
        // would otherwise send).
        let _ = crossterm::execute!(io::stdout(), EnableBracketedPaste);
        Ok(Self {
            terminal: Some(terminal),
            ui,
            client: None,
            history,
            quitting: false,
            redraw: None,
            history_warned: false,
            input: VecDeque::new(),
            sending: false,
            clock,
        })
    }

    /// The local time of day, for the lines of this run.
    fn stamp(&self) -> Stamp {
        let (hour, minute) = self.clock.hour_minute();
        Stamp::hm(hour, minute)
    }

    fn draw(&mut self) {
        let Some(terminal) = self.terminal.as_mut() else {
            return;
        };
        let ui = &self.ui;
        let mut view = None;
        if let Err(e) = terminal.draw(|frame| view = Some(render::draw(frame, ui))) {
            debug!(error = %e, "cannot draw");
            return;
        }
        if let Some(view) = view {
            self.ui.viewed(view.rows, view.max_scroll);
        }
    }

    fn draw_soon(&mut self, ctx: &mut Context<Self>) {
        if self.redraw.is_none() {
            self.redraw = Some(ctx.run_later(REDRAW_DELAY, |act, _| {
                act.redraw = None;
                act.draw();
            }));
        }
    }

    /// Gives the terminal back, says `why` (if anything) on stderr, and
    /// ends the program with `code`.
    fn finish(&mut self, code: i32, why: Option<String>) {
        restore_terminal(&mut self.terminal);
        if let Some(why) = why {
            eprintln!("pigeon: {why}");
        }
        System::current().stop_with_code(code);
    }

    fn quit(&mut self) {
        if self.quitting {
            return;
        }
        self.quitting = true;
        match &self.client {
            Some(client) => {
                self.ui
                    .set_notice("logging out (waiting up to 5 s for messages on their way)…");
                client.logout();
            }
            None => self.finish(0, None),
        }
    }

    fn event(&mut self, event: ClientEvent, ctx: &mut Context<Self>) {
        let effects = self.ui.on_event(&event, &self.stamp());
        // Effects first: a conversation opened by this message reads its
        // history before the message itself is written to it.
        self.apply(effects, ctx);
        match event {
            ClientEvent::Refused { reason, detail } => {
                self.finish(
                    EXIT_REFUSED,
                    Some(format!("login refused ({reason}): {detail}")),
                );
            }
            ClientEvent::LoginFailed { reason } => {
                self.finish(1, Some(format!("login failed: {reason}")));
            }
            ClientEvent::LoggedOut => self.finish(0, None),
            _ => {}
        }
    }

    fn record(&mut self, record: Record, ctx: &mut Context<Self>) {
        let Some(history) = self.history.clone() else {
            return;
        };
        // A failed write is a warning (once); the chat goes on.
        let write = history.send(record);
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            let failure = match written {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            if !act.history_warned {
                act.history_warned = true;
                act.ui
                    .set_notice(format!("history: a message was not saved: {failure}"));
                act.draw_soon(ctx);
            }
        }));
    }

    fn set_delivery(&mut self, id: MessageId, delivery: StoredDelivery) {
        if let Some(history) = &self.history {
            history.do_send(SetDelivery { id, delivery });
        }
    }

    fn apply(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Send { to, text } => self.send(to, text, ctx),
                Effect::LoadHistory { peer, count, asked } => {
                    let Some(history) = self.history.clone() else {
                        continue;
                    };
                    let read = history.send(Recent {
                        peer: peer.clone(),
                        count,
                    });
                    ctx.spawn(read.into_actor(self).map(move |found, act, ctx| {
                        let found = found.unwrap_or_else(|e| Err(e.to_string()));
                        act.ui.history_loaded(&peer, asked, found);
                        act.draw_soon(ctx);
                    }));
                }
                Effect::Search { text } => {
                    let Some(history) = self.history.clone() else {
                        continue;
                    };
                    let search = history.send(Search { text: text.clone() });
                    ctx.spawn(search.into_actor(self).map(move |found, act, ctx| {
                        let found = found.unwrap_or_else(|e| Err(e.to_string()));
                        act.ui.search_done(&text, found, &act.stamp());
                        act.draw_soon(ctx);
                    }));
                }
                Effect::SaveBell(on) => match &self.history {
                    Some(history) => history.do_send(SaveSetting {
                        key: BELL_SETTING,
                        value: if on { "on" } else { "off" }.into(),
                    }),
                    None => self.ui.set_notice(format!(
                        "bell {} for this run (without a history file it is not remembered)",
                        if on { "on" } else { "off" }
                    )),
                },
                Effect::Bell => {
                    let mut out = io::stdout();
                    let _ = out.write_all(b"\x07").and_then(|()| out.flush());
                }
                Effect::Quit => self.quit(),
                Effect::Record(record) => self.record(record, ctx),
                Effect::SetDelivery { id, delivery } => self.set_delivery(id, delivery),
                Effect::WhoIs { name } => {
                    let Some(client) = self.client.clone() else {
                        continue;
                    };
                    let asked = async move {
                        let info = client.whois(name.clone()).await;
                        (name, info)
                    };
                    ctx.spawn(asked.into_actor(self).map(|(name, info), act, ctx| {
                        act.ui.whois_done(&name, &info, &act.stamp());
                        act.draw_soon(ctx);
                    }));
                }
                Effect::Trust { name } => {
                    let Some(client) = self.client.clone() else {
                        continue;
                    };
                    let trusted = async move {
                        let result = client.trust(name.clone()).await;
                        (name, result.map_err(|e| e.to_string()))
                    };
                    ctx.spawn(trusted.into_actor(self).map(|(name, result), act, ctx| {
                        act.ui.trust_done(&name, result, &act.stamp());
                        act.draw_soon(ctx);
                    }));
                }
            }
        }
    }

    fn send(&mut self, to: UserName, text: String, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let sending = {
            let to = to.clone();
            let text = text.clone();
            async move { client.send(to, text).await }
        };
        // Waiting keeps the lines in the order they were typed, and the
        // line in place before its delivery is reported.
        self.sending = true;
        ctx.wait(sending.into_actor(self).map(move |sent, act, ctx| {
            act.sending = false;
            match sent {
                Ok(sent) => {
                    let effects = act.ui.message_sent(&to, &sent, &text, &act.stamp());
                    act.apply(effects, ctx);
                }
                Err(e) => act.ui.message_refused(&to, &text, &e.to_string()),
            }
            // Keys typed after the line, if any, come next.
            act.handle_input(ctx);
        }));
    }

    /// Handles the terminal events waiting, in order, up to a line that
    /// must be sent first; then draws once.
    fn handle_input(&mut self, ctx: &mut Context<Self>) {
        while !self.sending {
            let Some(event) = self.input.pop_front() else {
                break;
            };
            match event {
                Ok(Event::Key(key)) => {
                    let effects = self.ui.on_key(key);
                    self.apply(effects, ctx);
                }
                Ok(Event::Paste(text)) => self.ui.on_paste(&text),
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "cannot read the terminal");
                    self.quit();
                }
            }
        }
        self.draw();
    }
}

/// Puts the terminal back: raw mode off, the main screen back, the cursor
/// shown. Safe to call twice.
fn restore_terminal(terminal: &mut Option<DefaultTerminal>) {
    if terminal.take().is_some() {
        give_back_terminal();
    }
}

/// Puts the terminal back if the terminal UI still has it; otherwise does
/// nothing (see `TERMINAL_TAKEN`). For every way out of the program.
pub fn give_back_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        let _ = crossterm::execute!(io::stdout(), DisableBracketedPaste);
        ratatui::restore();
    }
}

impl Actor for TuiConsoleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match terminal_events() {
            Ok(events) => {
                ctx.add_stream(events);
            }
            Err(e) => self.finish(1, Some(format!("cannot read the terminal: {e}"))),
        }
        self.draw();
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        restore_terminal(&mut self.terminal);
    }
}

impl Handler<Attach> for TuiConsoleActor {
    type Result = ();

    fn handle(&mut self, Attach(client): Attach, _: &mut Context<Self>) {
        self.client = Some(client);
    }
}

impl Handler<ClientEvents> for TuiConsoleActor {
    type Result = ();

    fn handle(&mut self, ClientEvents(events): ClientEvents, ctx: &mut Context<Self>) {
        for event in events {
            self.event(event, ctx);
        }
        self.draw_soon(ctx);
    }
}

impl Handler<Quit> for TuiConsoleActor {
    type Result = ();

    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        self.quit();
        self.draw_soon(ctx);
    }
}

impl StreamHandler<Vec<io::Result<Event>>> for TuiConsoleActor {
    /// Everything typed (or pasted, or resized) since the last batch.
    fn handle(&mut self, events: Vec<io::Result<Event>>, ctx: &mut Context<Self>) {
        self.input.extend(events);
        self.handle_input(ctx);
    }

    /// The terminal is gone: log out.
    fn finished(&mut self, _: &mut Context<Self>) {
        self.quit();
    }
}
