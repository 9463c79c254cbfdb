//! `PeerActor`: one open conversation. It wraps a [`Conversation`]: sends
//! this user's messages to the peer (and again, until they are
//! acknowledged), puts the peer's messages in order and announces them,
//! keeps the history, and runs the retransmission timer.
//!
//! The session starts one the moment a message arrives from someone new,
//! so a message shows without the user opening anything first.

use std::time::{Duration, Instant};

use actix::prelude::*;
use pigeon_shared::net::LocalSender;
use pigeon_shared::{Ack, Chat, Datagram, PeerAddr, Talk, TalkTime};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::conversation::{ChatLine, Conversation, ConversationOutput, SendRefusal};
use crate::events::{ClientEvents, MessageId, MessageIds};
use crate::session::Peer;

/// The actor for one conversation. See the module documentation.
pub struct PeerActor {
    conversation: Conversation,
    /// What the session last said about the peer (`None`: offline).
    peer: Option<Peer>,
    /// Where the peer was last seen: retransmissions keep going there while
    /// it is offline, in case it comes back before the deadline.
    last_endpoint: Option<PeerAddr>,
    sender: LocalSender,
    events: Recipient<ClientEvents>,
    timer: Option<SpawnHandle>,
    drained: Vec<oneshot::Sender<()>>,
    /// The client's message numbers.
    ids: MessageIds,
}

/// Send `text`; the answer is the number it was given.
#[derive(Message, Debug)]
#[rtype(result = "Result<MessageId, SendRefusal>")]
pub struct Say {
    pub text: String,
    pub time: TalkTime,
}

/// A plain `talk` from the peer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct TalkReceived(pub Talk);

/// A `chat` part from the peer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChatReceived(pub Chat);

/// An acknowledgement from the peer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AckReceived(pub Ack);

/// The session's news about the peer (`None`: it left).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerUpdated(pub Option<Peer>);

/// Resolve once every message sent is acknowledged, or at `deadline`,
/// when whatever is left is reported failed (the user is leaving).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain {
    pub deadline: Instant,
}

/// The conversation so far, oldest line first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<ChatLine>")]
pub struct History;

impl PeerActor {
    /// A conversation over `sender`, announcing to `events`, numbering
    /// what it sends from `ids`.
    pub fn new(
        conversation: Conversation,
        peer: Option<Peer>,
        sender: LocalSender,
        events: Recipient<ClientEvents>,
        ids: MessageIds,
    ) -> Self {
        Self {
            last_endpoint: peer.map(|p| p.endpoint),
            conversation,
            peer,
            sender,
            events,
            timer: None,
            drained: Vec::new(),
            ids,
        }
    }

    fn apply(&mut self, outputs: Vec<ConversationOutput>, ctx: &mut Context<Self>) {
        let mut events = Vec::new();
        for output in outputs {
            match output {
                ConversationOutput::Transmit(datagram) => self.transmit(&datagram),
                ConversationOutput::Emit(event) => events.push(event),
            }
        }
        if !events.is_empty() {
            self.events.do_send(ClientEvents(events));
        }
        if self.conversation.unconfirmed() == 0 {
            for waiting in self.drained.drain(..) {
                let _ = waiting.send(());
            }
        }
        self.schedule(ctx);
    }

    fn transmit(&self, datagram: &Datagram) {
        let Some(to) = self.last_endpoint else {
            return;
        };
        if let Err(e) = self.sender.send(datagram, to.socket_addr()) {
            warn!(peer = %self.conversation.peer(), %to, error = %e, "datagram not sent");
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = self.conversation.next_deadline() {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                let outputs = act.conversation.tick(Instant::now());
                act.apply(outputs, ctx);
            }));
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        debug!(peer = %self.conversation.peer(), "conversation opened");
    }
}

impl Handler<Say> for PeerActor {
    type Result = Result<MessageId, SendRefusal>;

    fn handle(&mut self, msg: Say, ctx: &mut Context<Self>) -> Self::Result {
        let pigeon = self.peer.is_some_and(|p| p.instance.is_some());
        // A refused message takes no number.
        self.conversation.check(&msg.text, pigeon, &msg.time)?;
        let id = self.ids.next();
        let outputs = self
            .conversation
            .send(id, msg.text, pigeon, msg.time, Instant::now())?;
        self.apply(outputs, ctx);
        Ok(id)
    }
}

impl Handler<TalkReceived> for PeerActor {
    type Result = ();

    fn handle(&mut self, TalkReceived(talk): TalkReceived, ctx: &mut Context<Self>) {
        let outputs = self.conversation.talk_received(talk);
        self.apply(outputs, ctx);
    }
}

impl Handler<ChatReceived> for PeerActor {
    type Result = ();

    fn handle(&mut self, ChatReceived(chat): ChatReceived, ctx: &mut Context<Self>) {
        let outputs = self.conversation.chat_received(chat);
        self.apply(outputs, ctx);
    }
}

impl Handler<AckReceived> for PeerActor {
    type Result = ();

    fn handle(&mut self, AckReceived(ack): AckReceived, ctx: &mut Context<Self>) {
        let outputs = self.conversation.ack_received(ack, Instant::now());
        self.apply(outputs, ctx);
    }
}

impl Handler<PeerUpdated> for PeerActor {
    type Result = ();

    fn handle(&mut self, PeerUpdated(peer): PeerUpdated, _: &mut Context<Self>) {
        if let Some(peer) = peer {
            self.last_endpoint = Some(peer.endpoint);
        }
        self.peer = peer;
    }
}

impl Handler<Drain> for PeerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        if self.conversation.unconfirmed() == 0 {
            return Box::pin(fut::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        let wait = msg.deadline.saturating_duration_since(Instant::now());
        let done = async move {
            let _ = tokio::time::timeout(wait.max(Duration::from_millis(1)), rx).await;
        };
        Box::pin(done.into_actor(self).map(|(), act, ctx| {
            let outputs = act.conversation.abandon();
            act.apply(outputs, ctx);
        }))
    }
}

impl Handler<History> for PeerActor {
    type Result = MessageResult<History>;

    fn handle(&mut self, _: History, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.conversation.lines().cloned().collect())
    }
}
