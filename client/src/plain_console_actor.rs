//! `PlainConsoleActor`: the line-mode front end. Commands come in on stdin,
//! events go out on stdout one per line (see [`crate::plain`]), errors go to
//! stderr. Stdin is read only once the client is ready, so a script can pipe
//! its commands in from the start.

use std::io::{BufRead, Read, Write};

use actix::prelude::*;
use futures_util::stream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::client::ClientHandle;
use crate::command::{parse_command, Command, HELP};
use crate::events::{ClientEvent, ClientEvents};
pub use crate::front_end::{Attach, Quit};
use crate::plain::{event_lines, key_line, sent_line, user_line, whois_note};
use crate::session::NO_ANSWER;

/// Longest command line accepted (bytes); longer lines are refused whole.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Exit status after a refused login.
pub const EXIT_REFUSED: i32 = 2;

/// The plain console. See the module documentation.
pub struct PlainConsoleActor {
    client: Option<ClientHandle>,
    reading: bool,
    quitting: bool,
    verbose: bool,
}

/// One line from stdin.
#[derive(Message, Debug)]
#[rtype(result = "()")]
enum StdinLine {
    Line(String),
    TooLong,
    NotUtf8,
}

impl PlainConsoleActor {
    /// A console with no client yet; send [`Attach`] once it is started.
    /// `verbose` adds `sent` and `delivered` lines.
    pub fn new(verbose: bool) -> Self {
        Self {
            client: None,
            reading: false,
            quitting: false,
            verbose,
        }
    }

    fn print(&mut self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        let written = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        if let Err(e) = written {
            // Nobody reads our output any more: leave cleanly.
            debug!(error = %e, "stdout closed");
            self.quit();
        }
    }

    fn quit(&mut self) {
        if self.quitting {
            return;
        }
        self.quitting = true;
        match &self.client {
            Some(client) => client.logout(),
            None => System::current().stop(),
        }
    }

    fn start_reading(&mut self, ctx: &mut Context<Self>) {
        if self.reading {
            return;
        }
        self.reading = true;
        let (tx, rx) = mpsc::channel(64);
        // A plain thread, not tokio's stdin: its blocking read cannot be
        // cancelled and would hold up shutdown until the user hits Enter.
        let spawned = std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_stdin(&tx));
        if let Err(e) = spawned {
            eprintln!("pigeon: cannot read commands: {e}");
            self.quit();
            return;
        }
        ctx.add_stream(stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|line| (line, rx))
        }));
    }

    fn execute(&mut self, command: Command, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if command.ui_only() {
            eprintln!("pigeon: that command is for the terminal UI (run without --plain); /help lists these");
            return;
        }
        match command {
            Command::Help => eprintln!("{HELP}"),
            Command::Quit => self.quit(),
            // Waiting (`ctx.wait`) keeps replies in the order the commands
            // were typed.
            Command::List => {
                let users = async move { client.users().await };
                ctx.wait(users.into_actor(self).map(|users, act, _| {
                    for (name, endpoint) in &users {
                        act.print(&user_line(name, endpoint));
                    }
                }));
            }
            Command::Msg { to, text } => {
                let sent = async move {
                    let result = client.send_text(to.clone(), text).await;
                    (to, result)
                };
                ctx.wait(
                    sent.into_actor(self)
                        .map(|(to, result), act, _| match result {
                            Ok(id) if act.verbose => act.print(&sent_line(&to, id)),
                            Ok(_) => {}
                            Err(e) => eprintln!("pigeon: message not sent: {e}"),
                        }),
                );
            }
            Command::WhoIs { name } => {
                let name = name.unwrap_or_else(|| client.name().clone());
                let asked = async move {
                    let info = client.whois(name.clone()).await;
                    (name, info)
                };
                ctx.wait(asked.into_actor(self).map(|(name, info), act, _| {
                    act.print(&key_line(&name, info.current.or(info.pinned)));
                    if let Some(note) = whois_note(&name, &info) {
                        eprintln!("pigeon: {note}");
                    }
                }));
            }
            Command::Trust { name } => {
                let trusted = async move {
                    let result = client.trust(name.clone()).await;
                    (name, result)
                };
                ctx.wait(trusted.into_actor(self).map(|(name, result), _, _| match result {
                    Ok(()) => eprintln!("pigeon: {name}'s new key is trusted; messages to {name} go out again"),
                    Err(e) => eprintln!("pigeon: {e}"),
                }));
            }
            Command::Open { .. }
            | Command::Close
            | Command::History { .. }
            | Command::Search { .. }
            | Command::Bell { .. } => {}
        }
    }
}

impl Actor for PlainConsoleActor {
    type Context = Context<Self>;
}

impl Handler<Attach> for PlainConsoleActor {
    type Result = ();

    fn handle(&mut self, Attach(client): Attach, _: &mut Context<Self>) {
        self.client = Some(client);
    }
}

impl Handler<ClientEvents> for PlainConsoleActor {
    type Result = ();

    fn handle(&mut self, ClientEvents(events): ClientEvents, ctx: &mut Context<Self>) {
        for event in events {
            self.event(event, ctx);
        }
    }
}

impl PlainConsoleActor {
    fn event(&mut self, event: ClientEvent, ctx: &mut Context<Self>) {
        for line in event_lines(&event, self.verbose) {
            self.print(&line);
        }
        match event {
            ClientEvent::Ready { .. } => self.start_reading(ctx),
            // Once, when the first answer is late.
            ClientEvent::Connecting {
                server,
                attempt: 2,
                why,
            } => {
                let hint = if why == NO_ANSWER {
                    " (is a server running there? Start one with pigeon-server, or use --host)"
                } else {
                    ""
                };
                eprintln!("pigeon: {why}; trying {server} again{hint}");
            }
            ClientEvent::ServerLost { reason } => {
                eprintln!("pigeon: {reason}; logging in again (chat goes on meanwhile)");
            }
            ClientEvent::Reconnected { online } => {
                eprintln!("pigeon: logged in again; {online} users online");
            }
            ClientEvent::Refused { reason, detail } => {
                eprintln!("pigeon: login refused ({reason}): {detail}");
                System::current().stop_with_code(EXIT_REFUSED);
            }
            ClientEvent::LoginFailed { reason } => {
                eprintln!("pigeon: login failed: {reason}");
                System::current().stop_with_code(1);
            }
            ClientEvent::LoggedOut => System::current().stop_with_code(0),
            ClientEvent::NotStored { to, why, .. } => {
                eprintln!("pigeon: not kept for {to}: {why}");
            }
            _ => {}
        }
    }
}

impl Handler<Quit> for PlainConsoleActor {
    type Result = ();

    fn handle(&mut self, _: Quit, _: &mut Context<Self>) {
        self.quit();
    }
}

impl StreamHandler<StdinLine> for PlainConsoleActor {
    fn handle(&mut self, line: StdinLine, ctx: &mut Context<Self>) {
        if self.quitting {
            return;
        }
        let line = match line {
            StdinLine::Line(line) => line,
            StdinLine::TooLong => {
                eprintln!("pigeon: line ignored: longer than {MAX_LINE_BYTES} bytes");
                return;
            }
            StdinLine::NotUtf8 => {
                eprintln!("pigeon: line ignored: not UTF-8 text");
                return;
            }
        };
        match parse_command(&line) {
            Ok(Some(command)) => self.execute(command, ctx),
            Ok(None) => {}
            Err(e) => eprintln!("pigeon: {e}"),
        }
    }

    /// End of input quits, after logging out.
    fn finished(&mut self, _: &mut Context<Self>) {
        self.quit();
    }
}

/// Reads stdin line by line into `tx`, each line bounded.
fn read_stdin(tx: &mpsc::Sender<StdinLine>) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = (MAX_LINE_BYTES + 1) as u64;
        match (&mut input).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = if buf.last() == Some(&b'\n') {
            buf.pop();
            match String::from_utf8(std::mem::take(&mut buf)) {
                Ok(line) => StdinLine::Line(line),
                Err(_) => StdinLine::NotUtf8,
            }
        } else if buf.len() > MAX_LINE_BYTES {
            if skip_line(&mut input).is_err() {
                return;
            }
            StdinLine::TooLong
        } else {
            // The last line, without a newline.
            match String::from_utf8(std::mem::take(&mut buf)) {
                Ok(line) => StdinLine::Line(line),
                Err(_) => StdinLine::NotUtf8,
            }
        };
        if tx.blocking_send(line).is_err() {
            return;
        }
    }
}

/// Discards input up to and including the next newline, holding none of it.
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            input.consume(end + 1);
            return Ok(());
        }
        let len = buf.len();
        input.consume(len);
    }
}
