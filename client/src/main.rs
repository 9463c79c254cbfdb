//! `pigeon`: the console client.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use actix::prelude::*;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use pigeon_client::clock::SharedClock;
use pigeon_client::front_end::{Attach, Quit};
use pigeon_client::history::{self, History};
use pigeon_client::history_actor::{HistoryActor, LoadSetting};
use pigeon_client::plain_console_actor::PlainConsoleActor;
use pigeon_client::settings::{
    default_config_path, load_config, parse_server, write_config, Choices, HistoryChoice,
    ServerAddr, DEFAULT_SERVER,
};
use pigeon_client::tui_console_actor::{give_back_terminal, TuiConsoleActor, BELL_SETTING};
use pigeon_client::ui::state::{Stamp, UiState};
use pigeon_client::{known_servers, mail_seen};
use pigeon_client::{ClientConfig, ClientEvents, ClientHandle, DEFAULT_BIND};
use pigeon_shared::log::{init_tracing, init_tracing_to_file};
use pigeon_shared::{Identity, UserName};

/// Pigeon: chat on your network from the console. Logs in to a Pigeon
/// server, then talks to other users directly.
///
/// Settings not given as flags come from the config file
/// (~/.config/pigeon/config.toml on Linux; --write-config writes it).
#[derive(Parser, Debug)]
#[command(name = "pigeon", version, about)]
struct Args {
    /// Your user name (1 to 32 characters; no spaces, `,` `;` `:`).
    /// Needed here or in the config file.
    #[arg(long, value_parser = parse_name)]
    name: Option<UserName>,

    /// The server's address: IP:PORT or HOST:PORT (a host name is looked
    /// up; without a port, 7788) [default: 127.0.0.1:7788]
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server)]
    server: Option<ServerAddr>,

    /// Where to receive messages (port 0: any free port). Defaults to
    /// 127.0.0.1:0, or, for a server not on this machine, every interface
    /// with the address that routes to the server announced.
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,

    /// Also run a server, at --server, in this process (port 0: any free
    /// port; its address is shown on the status tab, or on stderr in plain
    /// mode).
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

    /// Your key file (made on first use): who you are to the server and
    /// to other users [default: keys/NAME.key in the per-user data folder,
    /// such as ~/.local/share/pigeon]
    #[arg(long, value_name = "PATH")]
    identity: Option<PathBuf>,

    /// Terminal UI: keep no history on disk.
    #[arg(long, conflicts_with = "history")]
    no_history: bool,

    /// Terminal UI: ring the bell when a message arrives for a conversation
    /// not in view (default: as last set with /bell, else off).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    bell: Option<bool>,

    /// Terminal UI: write the log (RUST_LOG, default warnings) to this file;
    /// the screen has no room for it.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,

    /// Read (and with --write-config, write) the settings in this file
    /// instead of the default one.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Write the settings given as flags (name, server, bind, history,
    /// bell), over those already in the config file, to the config file;
    /// then exit.
    #[arg(long)]
    write_config: bool,
}

impl Args {
    /// What the flags choose.
    fn choices(&self) -> Choices {
        let history = if self.no_history {
            Some(HistoryChoice::Off)
        } else {
            self.history.as_ref().map(|path| {
                // A config file outlives the folder it was written from.
                HistoryChoice::File(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
            })
        };
        Choices {
            name: self.name.clone(),
            server: self.server.clone(),
            bind: self.bind,
            history,
            bell: self.bell,
        }
    }
}

/// What the client runs with: flags over the config file over defaults.
struct Settings {
    name: UserName,
    server: SocketAddr,
    /// Other servers of its cluster, tried in turn when it is lost.
    alternates: Vec<SocketAddr>,
    bind: Option<SocketAddr>,
    history: HistoryChoice,
    bell: Option<bool>,
}

fn parse_name(text: &str) -> Result<UserName, String> {
    UserName::parse(text).map_err(|e| e.to_string())
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("on or off".into()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config_path = args.config.clone().or_else(default_config_path);
    let from_file = match &config_path {
        // A file named with --config must be there (unless it is to be
        // written); the default one need not.
        Some(path) => match load_config(path, args.config.is_some() && !args.write_config) {
            Ok(choices) => choices,
            Err(e) => {
                eprintln!("pigeon: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Choices::default(),
    };
    let chosen = args.choices().over(from_file);
    if args.write_config {
        return write_choices(config_path.as_deref(), &chosen);
    }
    let Some(name) = chosen.name else {
        Args::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "no name to log in with: give --name NAME, or put name = \"NAME\" in {}",
                    config_path.as_deref().map_or_else(
                        || "a config file (--config PATH)".to_owned(),
                        |path| path.display().to_string()
                    )
                ),
            )
            .exit();
    };
    let (server, alternates) = match chosen.server {
        Some(server) => (server.addr, server.alternates),
        None => (DEFAULT_SERVER, Vec::new()),
    };
    let settings = Settings {
        name,
        server,
        alternates,
        bind: chosen.bind,
        history: chosen.history.unwrap_or(HistoryChoice::Default),
        bell: chosen.bell,
    };
    let tui = !args.plain && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !tui {
        init_tracing("warn");
    } else if let Some(path) = &args.log {
        if let Err(e) = init_tracing_to_file(path, "warn") {
            eprintln!("pigeon: cannot write the log to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let code = run(args, settings, tui);
    // Exit at once: the stdin reader may be blocked in a read that nothing
    // can cancel.
    std::process::exit(code);
}

/// `--write-config`: writes `chosen` to `path`, says where, and ends.
fn write_choices(path: Option<&std::path::Path>, chosen: &Choices) -> ExitCode {
    let Some(path) = path else {
        eprintln!("pigeon: no config folder on this system; name a file with --config PATH");
        return ExitCode::FAILURE;
    };
    match write_config(path, chosen) {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pigeon: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The key file of `name`: `--identity`, else `keys/NAME.key` in the
/// per-user data folder.
fn identity_path(args: &Args, name: &UserName) -> Result<PathBuf, String> {
    match &args.identity {
        Some(path) => Ok(path.clone()),
        None => dirs::data_dir()
            .map(|dir| dir.join("pigeon").join("keys").join(format!("{name}.key")))
            .ok_or_else(|| "no per-user data folder for your key; give --identity PATH".to_owned()),
    }
}

fn run(args: Args, settings: Settings, tui: bool) -> i32 {
    let identity = match identity_path(&args, &settings.name).and_then(|path| {
        Identity::load_or_create(&path)
            .map(|(identity, made)| (identity, made, path))
            .map_err(|e| e.to_string())
    }) {
        Ok((identity, made, path)) => {
            if made {
                eprintln!(
                    "pigeon: made a key for {} in {}; its fingerprint is {}",
                    settings.name,
                    path.display(),
                    identity.public().fingerprint()
                );
            }
            identity
        }
        Err(e) => {
            eprintln!("pigeon: {e}");
            return 1;
        }
    };
    let hosted = if args.host {
        match hosting::bind(settings.server, args.tcp_port) {
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
    let server_addr = hosted
        .as_ref()
        .map_or(settings.server, hosting::Hosted::udp_addr);
    let bind = settings.bind.unwrap_or_else(|| default_bind(server_addr));

    let system = System::new();
    let started = system.block_on(async move {
        let (server, hosting) = match hosted {
            Some(bound) => {
                let (server, hosting) = bound.start().await?;
                (Some(server), Some(hosting))
            }
            None => (None, None),
        };
        // Bound first: a port in use is reported before the terminal UI
        // takes the screen.
        let mut config = ClientConfig::new(settings.name.clone(), server_addr);
        config.bind = bind;
        config.identity = Some(identity);
        config.known_servers = known_servers::default_path();
        config.known_peers = known_servers::default_peers_path(&settings.name);
        config.mail_seen = mail_seen::default_path(&settings.name);
        config.alternates = settings.alternates.clone();
        // A person watching the screen decides when to give up; a script
        // gets the documented exit after the login attempts.
        config.keep_trying = tui;
        let bound = ClientHandle::bind(config)?;
        let front_end = if tui {
            FrontEnd::of(start_tui(&settings, server_addr, hosting).await?)
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

/// `--host`: a server in this process (cargo feature `host`, on by
/// default).
#[cfg(feature = "host")]
mod hosting {
    use std::net::SocketAddr;

    use pigeon_server::store::StoreChoice;
    use pigeon_server::{BoundServer, ServerConfig, ServerHandle};

    /// A server bound, not yet started.
    pub struct Hosted(BoundServer);

    /// Binds a server at `udp`, its seed roster on `tcp_port`.
    pub fn bind(udp: SocketAddr, tcp_port: u16) -> Result<Hosted, String> {
        let mut config = ServerConfig::new(udp);
        config.tcp_port = tcp_port;
        // The same store as `pigeon-server` on this machine: its key, and
        // the names registered, outlive the process.
        if let Some(dir) = StoreChoice::default_folder() {
            config.store = StoreChoice::Folder(dir);
            config.identity = None;
        }
        BoundServer::bind(config)
            .map(Hosted)
            .map_err(|e| e.to_string())
    }

    impl Hosted {
        /// Where the server receives.
        pub fn udp_addr(&self) -> SocketAddr {
            self.0.udp_addr()
        }

        /// Starts it; the running server (keep it) and a line saying where.
        pub async fn start(self) -> anyhow::Result<(ServerHandle, String)> {
            let server = self.0.start().await?;
            let line = format!(
                "hosting a server: udp={} tcp={}",
                server.udp_addr(),
                server.tcp_addr()
            );
            Ok((server, line))
        }
    }
}

/// Without the `host` feature, `--host` is an error.
#[cfg(not(feature = "host"))]
mod hosting {
    use std::net::SocketAddr;

    /// Never made.
    pub enum Hosted {}

    pub fn bind(_: SocketAddr, _: u16) -> Result<Hosted, String> {
        Err(
            "this pigeon was built without --host (cargo feature `host`); \
             start a pigeon-server instead"
                .into(),
        )
    }

    impl Hosted {
        pub fn udp_addr(&self) -> SocketAddr {
            match *self {}
        }

        pub async fn start(self) -> anyhow::Result<(std::convert::Infallible, String)> {
            match self {}
        }
    }
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
async fn start_tui(
    settings: &Settings,
    server: SocketAddr,
    hosting: Option<String>,
) -> anyhow::Result<Addr<TuiConsoleActor>> {
    let mut warning = None;
    let history = match &settings.history {
        HistoryChoice::Off => None,
        HistoryChoice::File(path) => Some(path.clone()),
        HistoryChoice::Default => {
            let path = history::default_path();
            if path.is_none() {
                warning = Some("no data folder for the history (use --history PATH)".to_owned());
            }
            path
        }
    };
    let history = match history.map(|path| History::open(&path, settings.name.as_str())) {
        Some(Ok(history)) => Some(HistoryActor::start(history, SharedClock::system())),
        Some(Err(e)) => {
            warning = Some(e.to_string());
            None
        }
        None => None,
    };
    // A bell chosen in the flags or the config file; else as last set.
    let bell = match (&settings.bell, &history) {
        (Some(bell), _) => *bell,
        (None, Some(history)) => matches!(
            history.send(LoadSetting { key: BELL_SETTING }).await,
            Ok(Ok(Some(value))) if value == "on"
        ),
        (None, None) => false,
    };
    let mut ui = UiState::new(settings.name.clone(), history.is_some(), bell);
    let at = Stamp(String::new());
    if let Some(hosting) = hosting {
        ui.note(hosting, &at);
    }
    ui.set_server(server.to_string(), &at);
    if let Some(warning) = warning {
        ui.note(format!("history off: {warning}"), &at);
        ui.set_notice(format!(
            "history off: {warning} (the chat works without it)"
        ));
    }
    let console = TuiConsoleActor::new(ui, history, SharedClock::system())
        .map_err(|e| anyhow::anyhow!("cannot use the terminal: {e} (try --plain)"))?;
    Ok(console.start())
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
