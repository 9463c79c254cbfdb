//! `PeerActor`: one open conversation. It keeps the conversation's history
//! and announces the peer's messages to the front end. (The session sends
//! this user's messages itself, in the order the user typed them, so that a
//! logout right after a message cannot overtake it.)
//!
//! The session starts one the moment a message arrives from someone new, so
//! a message shows without the user opening anything first.

use actix::prelude::*;
use pigeon_shared::{Talk, TalkTime, UserName};
use tracing::debug;

use crate::conversation::{ChatLine, Conversation, Direction};
use crate::events::ClientEvent;

/// The actor for one conversation. See the module documentation.
pub struct PeerActor {
    conversation: Conversation,
    events: Recipient<ClientEvent>,
}

/// A message from the peer arrived.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct TalkReceived {
    pub talk: Talk,
}

/// This user sent `text` to the peer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Said {
    pub text: String,
    pub time: TalkTime,
}

/// The conversation so far, oldest line first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<ChatLine>")]
pub struct History;

impl PeerActor {
    /// A conversation with `peer`.
    pub fn new(peer: UserName, events: Recipient<ClientEvent>, history_lines: usize) -> Self {
        Self {
            conversation: Conversation::new(peer, history_lines),
            events,
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        debug!(peer = %self.conversation.peer(), "conversation opened");
    }
}

impl Handler<TalkReceived> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: TalkReceived, _: &mut Context<Self>) {
        let Talk { time, from, text } = msg.talk;
        self.conversation.record(ChatLine {
            direction: Direction::Incoming,
            time: time.clone(),
            text: text.clone(),
        });
        self.events
            .do_send(ClientEvent::Message { from, time, text });
    }
}

impl Handler<Said> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Said, _: &mut Context<Self>) {
        self.conversation.record(ChatLine {
            direction: Direction::Outgoing,
            time: msg.time,
            text: msg.text,
        });
    }
}

impl Handler<History> for PeerActor {
    type Result = MessageResult<History>;

    fn handle(&mut self, _: History, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.conversation.lines().cloned().collect())
    }
}
