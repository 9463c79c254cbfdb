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

/// A Redis of a test's own (to stop and start again mid-test), on a unix
/// socket in a folder of its own, saving nothing; stopped when dropped.
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (after saying why the caller is skipped)
    /// where `redis-server` cannot run.
    pub fn start() -> anyhow::Result<Option<Self>> {
        let mut redis = Self {
            dir: tempfile::tempdir()?,
            child: None,
        };
        match redis.spawn() {
            Ok(()) => Ok(Some(redis)),
            Err(e) => {
                eprintln!("SKIPPED: no redis-server to start here: {e:#}");
                Ok(None)
            }
        }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = std::time::Instant::now();
        while !socket.exists() {
            anyhow::ensure!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "redis-server did not open its socket"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it (everything in it is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, at the same socket.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
