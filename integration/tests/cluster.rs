//! Several servers over Redis (`pigeon-server --cluster`): the link to
//! Redis works inside an actor, on actix's own runtime.
//!
//! Needs the Redis `scripts/test` starts (`PIGEON_REDIS_URL`); skipped,
//! saying so, without one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use integration::redis::{fresh_namespace, redis_url};
use pigeon_server::cluster_actor::{ClusterActor, ClusterConfig, ClusterStats, RoundTrip};

#[test]
fn a_round_trip_to_redis_inside_an_actor() -> anyhow::Result<()> {
    let Some(url) = redis_url() else {
        return Ok(());
    };
    actix_rt::System::new().block_on(async move {
        let mut config = ClusterConfig::new(url.clone(), "a");
        config.namespace = fresh_namespace("round-trip");
        config.heartbeat = Duration::from_millis(50);
        let servers = config.servers_key();
        let stats = Arc::new(ClusterStats::default());
        let actor = ClusterActor::connect(config, stats.clone()).await?.start();
        let took = actor.send(RoundTrip).await??;
        eprintln!("Redis round trip (SET, GET) inside an actor: {took:?}");
        anyhow::ensure!(stats.rtt_us.load(Ordering::Relaxed) > 0);
        // The heartbeat is in Redis, where the other servers look.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        anyhow::ensure!(stats.heartbeats.load(Ordering::Relaxed) >= 2);
        let client = redis::Client::open(url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let beat: Option<u64> = redis::cmd("HGET")
            .arg(&servers)
            .arg("a")
            .query_async(&mut connection)
            .await?;
        anyhow::ensure!(beat.is_some_and(|ms| ms > 0), "no heartbeat: {beat:?}");
        let _: () = redis::cmd("DEL")
            .arg(&servers)
            .query_async(&mut connection)
            .await?;
        Ok(())
    })
}

#[test]
fn an_unreachable_redis_is_a_clear_error() -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async {
        // Nothing listens on port 1 of loopback.
        let config = ClusterConfig::new("redis://127.0.0.1:1", "a");
        let stats = Arc::new(ClusterStats::default());
        match ClusterActor::connect(config, stats).await {
            Ok(_) => anyhow::bail!("connected to nothing?"),
            Err(e) => {
                let text = e.to_string();
                anyhow::ensure!(text.starts_with("Redis"), "{text}");
                Ok(())
            }
        }
    })
}
