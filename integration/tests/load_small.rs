//! A small load run inside the ordinary test suite: fifty real clients (ten
//! of them speaking the seed's plain protocol) in one process log in at
//! once, chat, and leave. It checks what must hold at any speed: every
//! roster converges, every message arrives exactly once and in order,
//! everyone leaves. Speed is measured by `pigeon-load`, not here.

use std::time::Duration;

use integration::load::{self, LoadConfig, Quiet};

#[actix_rt::test]
async fn fifty_peers_converge_chat_exactly_once_and_leave() -> anyhow::Result<()> {
    integration::harness::init_tracing();
    let config = LoadConfig {
        peers: 50,
        messages: 10,
        legacy: 10,
        relayed: 10,
        ceiling_receivers: 20,
        ceiling_duration: Duration::from_millis(60),
        phase_timeout: Duration::from_secs(60),
        ..LoadConfig::default()
    };
    let report = load::run(config, &mut Quiet, None, None).await?;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.ok);
    assert_eq!(report.roster_events, 50 * 49);
    assert_eq!(report.messages_sent, 500);
    assert_eq!(report.messages_delivered, 500);
    // Ten of them kept to the relay, which carried their chat.
    assert!(report.relayed_frames > 0, "{}", report.relayed_frames);
    // Chat between the 40 Pigeon peers went end-to-end encrypted.
    assert!(
        report.encrypted && report.handshakes > 0,
        "{}",
        report.handshakes
    );
    assert_eq!(
        (
            report.messages_lost,
            report.messages_duplicated,
            report.messages_reordered
        ),
        (0, 0, 0)
    );
    Ok(())
}
