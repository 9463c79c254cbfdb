//! `pigeon`: the console client.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use actix::prelude::*;
use clap::Parser;
use pigeon_client::front_end::{Attach, Quit};
use pigeon_client::history::{self, History};
use pigeon_client::history_actor::{HistoryActor, LoadSetting};
use pigeon_client::plain_console_actor::PlainConsoleActor;
use pigeon_client::tui_console_actor::{give_back_terminal, TuiConsoleActor, BELL_SETTING};
use pigeon_client::ui::state::{Stamp, UiState};
use pigeon_client::{ClientConfig, ClientEvents, ClientHandle, DEFAULT_BIND};
use pigeon_server::{init_tracing, BoundServer, ServerConfig, DEFAULT_UDP_ADDR};
use pigeon_shared::UserName;

/// Pigeon: chat on your network from the console. Logs in to a Pigeon
/// server, then talks to other users directly.
#[derive(Parser, Debug)]
#[command(name = "pigeon", version, about)]
struct Args {
    /// Your user name (1 to 32 characters; no spaces, `,` `;` `:`).
    #[arg(long, value_parser = parse_name)]
    name: UserName,

    /// The server's UDP address.
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_UDP_ADDR)]
    server: SocketAddr,

    /// Where to receive messages (port 0: any free port). Defaults to
    /// 127.0.0.1:0, or, for a server not on this machine, every interface
    /// with the address that routes to the server announced.
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,

    /// Also run a server, at --server, in this process (port 0: any free
    /// port; the address is printed on stderr).
    #[arg(long)]
    host: bool,

    /// With --host: the server's TCP roster port (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0, requires = "host")]
    tcp_port: u16,

    /// Plain mode: also print `sent <to> <id>` when a message goes out and
    /// `delivered <to> <id>` when its peer confirms it.
    #[arg(long, short)]
    verbose: bool,

    /// Line mode for scripts: commands on stdin, events on stdout, one per
    /// line (the default when stdin or stdout is not a terminal).
    #[arg(long)]
    plain: bool,

    /// Terminal UI: keep the conversations in this SQLite file (default:
    /// history.sqlite3 in the per-user data folder, such as
    /// ~/.local/share/pigeon).
    #[arg(long, value_name = "PATH")]
    history: Option<PathBuf>,

    /// Terminal UI: keep no history on disk.
    #[arg(long, conflicts_with = "history")]
    no_history: bool,

    /// Terminal UI: write the log (RUST_LOG, default warnings) to this file;
    /// the screen has no room for it.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

fn parse_name(text: &str) -> Result<UserName, String> {
    UserName::parse(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tui = !args.plain && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !tui {
        init_tracing("warn");
    } else if let Some(path) = &args.log {
        if let Err(e) = log_to_file(path) {
            eprintln!("pigeon: cannot write the log to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let code = run(args, tui);
    // Exit at once: the stdin reader may be blocked in a read that nothing
    // can cancel.
    std::process::exit(code);
}

fn run(args: Args, tui: bool) -> i32 {
    let hosted = if args.host {
        let mut config = ServerConfig::new(args.server);
        config.tcp_port = args.tcp_port;
        match BoundServer::bind(config) {
            Ok(bound) => Some(bound),
            Err(e) => {
                eprintln!("pigeon: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    // With --host and port 0, the client logs in wherever the server landed.
    let server_addr = hosted.as_ref().map_or(args.server, BoundServer::udp_addr);
    let bind = args.bind.unwrap_or_else(|| default_bind(server_addr));

    let system = System::new();
    let started = system.block_on(async move {
        let (server, hosting) = match hosted {
            Some(bound) => {
                let server = bound.start().await?;
                let hosting = format!(
                    "hosting a server: udp={} tcp={}",
                    server.udp_addr(),
                    server.tcp_addr()
                );
                (Some(server), Some(hosting))
            }
            None => (None, None),
        };
        // Bound first: a port in use is reported before the terminal UI
        // takes the screen.
        let mut config = ClientConfig::new(args.name.clone(), server_addr);
        config.bind = bind;
        let bound = ClientHandle::bind(config)?;
        let front_end = if tui {
            FrontEnd::of(start_tui(&args, hosting).await?)
        } else {
            if let Some(hosting) = hosting {
                eprintln!("pigeon: {hosting}");
            }
            FrontEnd::of(PlainConsoleActor::new(args.verbose).start())
        };
        let client = bound.start(front_end.events);
        front_end.attach.do_send(Attach(client));
        actix_rt::spawn(quit_on_signal(front_end.quit));
        anyhow::Ok(server)
    });
    // A hosted server lives as long as the process.
    let _server = match started {
        Ok(server) => server,
        Err(e) => {
            eprintln!("pigeon: {e:#}");
            return 1;
        }
    };
    let code = match system.run_with_code() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pigeon: {e}");
            1
        }
    };
    // The terminal UI gives the terminal back as it ends; this covers any
    // other way out, and does nothing if it is back already.
    give_back_terminal();
    code
}

/// The three ways to reach a front end, whichever it is.
struct FrontEnd {
    events: Recipient<ClientEvents>,
    attach: Recipient<Attach>,
    quit: Recipient<Quit>,
}

impl FrontEnd {
    fn of<A>(actor: Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<ClientEvents> + Handler<Attach> + Handler<Quit>,
    {
        Self {
            events: actor.clone().recipient(),
            attach: actor.clone().recipient(),
            quit: actor.recipient(),
        }
    }
}

/// Opens the history (unless turned off), reads the bell setting and takes
/// over the terminal. A history that cannot be opened is a warning on the
/// screen, not an error: the chat works without it.
async fn start_tui(args: &Args, hosting: Option<String>) -> anyhow::Result<Addr<TuiConsoleActor>> {
    let mut warning = None;
    let history = if args.no_history {
        None
    } else {
        match args.history.clone().or_else(history::default_path) {
            None => {
                warning = Some("no data folder for the history (use --history PATH)".to_owned());
                None
            }
            Some(path) => match History::open(&path, args.name.as_str()) {
                Ok(history) => Some(HistoryActor::start(history)),
                Err(e) => {
                    warning = Some(e.to_string());
                    None
                }
            },
        }
    };
    let bell = match &history {
        Some(history) => matches!(
            history.send(LoadSetting { key: BELL_SETTING }).await,
            Ok(Ok(Some(value))) if value == "on"
        ),
        None => false,
    };
    let mut ui = UiState::new(args.name.clone(), history.is_some(), bell);
    let at = Stamp(String::new());
    if let Some(hosting) = hosting {
        ui.note(hosting, &at);
    }
    if let Some(warning) = warning {
        ui.note(format!("history off: {warning}"), &at);
        ui.set_notice(format!(
            "history off: {warning} (the chat works without it)"
        ));
    }
    let console = TuiConsoleActor::new(ui, history)
        .map_err(|e| anyhow::anyhow!("cannot use the terminal: {e} (try --plain)"))?;
    Ok(console.start())
}

/// Sends the log to `path` (appending), as `RUST_LOG` says (default:
/// warnings).
fn log_to_file(path: &std::path::Path) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .compact()
        .try_init();
    Ok(())
}

/// 127.0.0.1:0 for a server on loopback; otherwise every interface, so the
/// address that routes to the server is the one announced.
fn default_bind(server: SocketAddr) -> SocketAddr {
    if server.ip().is_loopback() {
        DEFAULT_BIND
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    } else if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

/// First Ctrl-C or SIGTERM: log out and exit. A second: exit now.
async fn quit_on_signal(console: Recipient<Quit>) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    for round in 0.. {
        #[cfg(unix)]
        {
            let terminate = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        if round == 0 {
            console.do_send(Quit);
        } else {
            std::process::exit(130);
        }
    }
}
