//! `HistoryActor`: the history file's owner. SQLite calls block, so the
//! actor runs on a thread of its own (a one-thread `SyncArbiter`) and the
//! terminal UI never waits on the disk. Requests are answered in the order
//! they come, so a conversation's history is read before a message that
//! arrives after it was asked for is written.

use std::collections::HashMap;
use std::sync::Mutex;

use actix::prelude::*;
use pigeon_shared::UserName;
use tracing::warn;

use crate::clock::SharedClock;
use crate::events::MessageId;
use crate::history::{
    Direction, History, HistoryError, StoredDelivery, StoredMessage, MAX_SEARCH_RESULTS,
};

/// Outgoing messages whose delivery is still awaited, remembered so that
/// `Delivered` and `Failed` find their row. Older ones are forgotten (they
/// stay `sending` in the file).
const MAX_AWAITED: usize = 10_000;

/// The history actor. See the module documentation.
pub struct HistoryActor {
    /// `None` only if the actor's thread restarted (the file is then
    /// closed, and every request says so).
    history: Option<History>,
    awaited: HashMap<MessageId, i64>,
    /// When a message is kept.
    clock: SharedClock,
}

impl Actor for HistoryActor {
    type Context = SyncContext<Self>;
}

impl HistoryActor {
    /// Starts the actor on a thread of its own, owning `history`.
    pub fn start(history: History, clock: SharedClock) -> Addr<Self> {
        // The factory of a `SyncArbiter` may be called again if its thread
        // restarts; the history moves in once and a restart has none.
        let slot = Mutex::new(Some(history));
        SyncArbiter::start(1, move || Self {
            history: slot.lock().ok().and_then(|mut slot| slot.take()),
            awaited: HashMap::new(),
            clock: clock.clone(),
        })
    }

    fn history(&self) -> Result<&History, String> {
        self.history
            .as_ref()
            .ok_or_else(|| "the history file is closed".to_owned())
    }
}

/// Store a message.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "Result<(), String>")]
pub struct Record {
    pub peer: UserName,
    pub direction: Direction,
    pub talk_time: String,
    pub text: String,
    pub delivery: StoredDelivery,
    /// This client's number for an outgoing message, to update its
    /// delivery later.
    pub id: Option<MessageId>,
}

/// What became of an outgoing message.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct SetDelivery {
    pub id: MessageId,
    pub delivery: StoredDelivery,
}

/// The last `count` messages with `peer`, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<StoredMessage>, String>")]
pub struct Recent {
    pub peer: UserName,
    pub count: usize,
}

/// Messages containing every word of `text`, newest first.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<StoredMessage>, String>")]
pub struct Search {
    pub text: String,
}

/// A remembered setting.
#[derive(Message, Debug)]
#[rtype(result = "Result<Option<String>, String>")]
pub struct LoadSetting {
    pub key: &'static str,
}

/// Remember a setting.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct SaveSetting {
    pub key: &'static str,
    pub value: String,
}

fn report(what: &str, e: HistoryError) -> String {
    warn!(error = %e, "history: {what} failed");
    e.to_string()
}

impl Handler<Record> for HistoryActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Record, _: &mut SyncContext<Self>) -> Self::Result {
        let row = self
            .history()?
            .record(&StoredMessage {
                peer: msg.peer.to_string(),
                direction: msg.direction,
                at_ms: self.clock.wall_ms(),
                talk_time: msg.talk_time,
                text: msg.text,
                delivery: msg.delivery,
            })
            .map_err(|e| report("saving a message", e))?;
        if let Some(id) = msg.id {
            if self.awaited.len() >= MAX_AWAITED {
                // Forget the oldest: ids grow, so the smallest.
                if let Some(oldest) = self.awaited.keys().min().copied() {
                    self.awaited.remove(&oldest);
                }
            }
            self.awaited.insert(id, row);
        }
        Ok(())
    }
}

impl Handler<SetDelivery> for HistoryActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: SetDelivery, _: &mut SyncContext<Self>) -> Self::Result {
        let Some(row) = self.awaited.remove(&msg.id) else {
            return Ok(());
        };
        self.history()?
            .set_delivery(row, msg.delivery)
            .map_err(|e| report("updating a delivery", e))
    }
}

impl Handler<Recent> for HistoryActor {
    type Result = Result<Vec<StoredMessage>, String>;

    fn handle(&mut self, msg: Recent, _: &mut SyncContext<Self>) -> Self::Result {
        self.history()?
            .recent(msg.peer.as_str(), msg.count)
            .map_err(|e| report("reading a conversation", e))
    }
}

impl Handler<Search> for HistoryActor {
    type Result = Result<Vec<StoredMessage>, String>;

    fn handle(&mut self, msg: Search, _: &mut SyncContext<Self>) -> Self::Result {
        self.history()?
            .search(&msg.text, MAX_SEARCH_RESULTS)
            .map_err(|e| report("searching", e))
    }
}

impl Handler<LoadSetting> for HistoryActor {
    type Result = Result<Option<String>, String>;

    fn handle(&mut self, msg: LoadSetting, _: &mut SyncContext<Self>) -> Self::Result {
        self.history()?
            .setting(msg.key)
            .map_err(|e| report("reading a setting", e))
    }
}

impl Handler<SaveSetting> for HistoryActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: SaveSetting, _: &mut SyncContext<Self>) -> Self::Result {
        self.history()?
            .set_setting(msg.key, &msg.value)
            .map_err(|e| report("saving a setting", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[actix_rt::test]
    async fn records_reads_searches_and_updates_on_its_own_thread() {
        let history =
            HistoryActor::start(History::in_memory("alice").unwrap(), SharedClock::system());
        history
            .send(Record {
                peer: name("bob"),
                direction: Direction::Outgoing,
                talk_time: "9:00:00".into(),
                text: "see you at noon".into(),
                delivery: StoredDelivery::Sending,
                id: Some(MessageId(1)),
            })
            .await
            .unwrap()
            .unwrap();
        history
            .send(SetDelivery {
                id: MessageId(1),
                delivery: StoredDelivery::Delivered,
            })
            .await
            .unwrap()
            .unwrap();
        let recent = history
            .send(Recent {
                peer: name("bob"),
                count: 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].delivery, StoredDelivery::Delivered);
        let found = history
            .send(Search {
                text: "noon".into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found[0].text, "see you at noon");
        history
            .send(SaveSetting {
                key: "bell",
                value: "on".into(),
            })
            .await
            .unwrap()
            .unwrap();
        let bell = history
            .send(LoadSetting { key: "bell" })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bell.as_deref(), Some("on"));
    }
}
