//! The Redis the cluster tests use: the one `scripts/test` starts for the
//! run (`PIGEON_REDIS_URL`), or none, and the tests say they are skipped.

/// The variable naming the Redis to test against.
pub const REDIS_VAR: &str = "PIGEON_REDIS_URL";

/// The Redis to test against, or `None` (after saying why the caller is
/// skipped).
pub fn redis_url() -> Option<String> {
    match std::env::var(REDIS_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED: {REDIS_VAR} is not set (scripts/test starts a Redis for the run)");
            None
        }
    }
}

/// A namespace of keys no other test uses.
pub fn fresh_namespace(test: &str) -> String {
    format!(
        "test-{test}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
