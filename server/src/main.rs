//! `pigeon-server`: the presence server, from the command line.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use pigeon_server::roster::DEFAULT_MAX_USERS;
use pigeon_server::{init_tracing, BoundServer, ServerConfig, DEFAULT_UDP_ADDR};
use tracing::{error, info};

/// Pigeon's presence server: keeps the list of who is online and tells
/// everyone when it changes. Chat goes peer to peer, not through here.
#[derive(Parser, Debug)]
#[command(name = "pigeon-server", version, about)]
struct Args {
    /// UDP address to receive logins and logouts on (port 0: any free port).
    #[arg(long, value_name = "IP:PORT", default_value = DEFAULT_UDP_ADDR)]
    udp: SocketAddr,

    /// TCP port for roster snapshots, on the same IP (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    tcp_port: u16,

    /// Most users online at once; later logins are refused `server-full`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_USERS)]
    max_users: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing("info");
    let mut config = ServerConfig::new(args.udp);
    config.tcp_port = args.tcp_port;
    config.max_users = args.max_users;

    let bound = match BoundServer::bind(config) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("pigeon-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let system = actix::System::new();
    let outcome = system.block_on(async move {
        let server = bound.start().await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "listening udp={} tcp={}",
            server.udp_addr(),
            server.tcp_addr()
        )?;
        stdout.flush()?;
        drop(stdout);
        let signal = shutdown_signal().await?;
        info!(signal, "stopping");
        server.shutdown().await;
        anyhow::Ok(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("pigeon-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for Ctrl-C or SIGTERM and says which.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map(|()| "interrupt"),
            _ = term.recv() => Ok("terminate"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "interrupt")
    }
}
