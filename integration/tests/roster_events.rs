//! Extending the server by adding an actor: a subscriber hears every
//! join and leave without any change to the existing actors.

use actix::prelude::*;
use integration::harness::{start_server, TestClient, WAIT};
use pigeon_server::RosterEvent;
use tokio::sync::mpsc;

/// A stand-in for an audit log, a bot or a metrics reporter.
struct AuditLog(mpsc::UnboundedSender<String>);

impl Actor for AuditLog {
    type Context = Context<Self>;
}

impl Handler<RosterEvent> for AuditLog {
    type Result = ();

    fn handle(&mut self, event: RosterEvent, _: &mut Context<Self>) {
        let line = match event {
            RosterEvent::Joined { name, endpoint } => format!("joined {name} {endpoint}"),
            RosterEvent::Left { name, .. } => format!("left {name}"),
        };
        let _ = self.0.send(line);
    }
}

#[actix_rt::test]
async fn a_subscribed_actor_hears_every_join_and_leave() -> anyhow::Result<()> {
    let server = start_server().await?;
    let (tx, mut lines) = mpsc::unbounded_channel();
    server.subscribe(AuditLog(tx).start().recipient());

    let alice = TestClient::online("alice", server.udp_addr()).await?;
    let mut bob = TestClient::online("bob", server.udp_addr()).await?;
    bob.handle.logout();
    bob.wait_for("logout", |e| *e == pigeon_client::ClientEvent::LoggedOut)
        .await?;

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(WAIT, lines.recv()).await?;
        seen.push(line.ok_or_else(|| anyhow::anyhow!("log closed"))?);
    }
    assert_eq!(
        seen,
        [
            format!("joined alice {}", alice.endpoint()),
            format!("joined bob {}", bob.endpoint()),
            "left bob".to_owned(),
        ]
    );
    Ok(())
}
