//! Logging for the programs (cargo feature `log`): `tracing` output on
//! stderr, one line per event, as `RUST_LOG` says.

/// Sends `tracing` output to stderr, one line per event, filtered by
/// `RUST_LOG` (or `default_filter` when it is unset).
pub fn init_tracing(default_filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .compact()
        .try_init();
}

/// Sends `tracing` output to the file at `path` (appending, no colours),
/// filtered by `RUST_LOG` (or `default_filter`): for a program whose
/// screen has no room for it.
pub fn init_tracing_to_file(path: &std::path::Path, default_filter: &str) -> std::io::Result<()> {
    use tracing_subscriber::EnvFilter;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .compact()
        .try_init();
    Ok(())
}
