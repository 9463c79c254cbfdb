//! `pigeon`: the console client.

use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use clap::Parser;
use pigeon_client::plain_console_actor::{Attach, PlainConsoleActor, Quit};
use pigeon_client::{ClientConfig, ClientHandle, DEFAULT_BIND};
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

    /// Also print `sent <to> <id>` when a message goes out and
    /// `delivered <to> <id>` when its peer confirms it.
    #[arg(long, short)]
    verbose: bool,
}

fn parse_name(text: &str) -> Result<UserName, String> {
    UserName::parse(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing("warn");
    let code = run(args);
    // Exit at once: the stdin reader may be blocked in a read that nothing
    // can cancel.
    std::process::exit(code);
}

fn run(args: Args) -> i32 {
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
        let server = match hosted {
            Some(bound) => {
                let server = bound.start().await?;
                eprintln!(
                    "pigeon: hosting a server: udp={} tcp={}",
                    server.udp_addr(),
                    server.tcp_addr()
                );
                Some(server)
            }
            None => None,
        };
        let console = PlainConsoleActor::new(args.verbose).start();
        let mut config = ClientConfig::new(args.name, server_addr);
        config.bind = bind;
        let client = ClientHandle::start(config, console.clone().recipient())?;
        console.do_send(Attach(client));
        actix_rt::spawn(quit_on_signal(console));
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
    match system.run_with_code() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pigeon: {e}");
            1
        }
    }
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
async fn quit_on_signal(console: Addr<PlainConsoleActor>) {
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
