//! `PeerActor`: one open conversation's mailbox and timer, running its part
//! of the client core, a [`PeerCore`]. It decides nothing itself: what the
//! session sends in goes to the core, and what the core wants done (datagrams
//! with their destinations, events, the end of a drain) goes back to the
//! session, which owns the socket and the one path to the front end.
//!
//! The session starts one the moment a message arrives from someone new,
//! so a message shows without the user opening anything first. A
//! conversation idle for a while says so; the session then takes its core
//! back and the actor stops, to be started again when needed.

use std::time::{Duration, Instant};

use actix::prelude::*;
use pigeon_shared::{TalkTime, UserName};
use tokio::sync::oneshot;
use tracing::debug;

use crate::client_core::{PeerCore, PeerOutput, Sent};
use crate::clock::SharedClock;
use crate::conversation::{ChatLine, SendRefusal};
use crate::events::MessageIds;
use crate::session::PeerInput;

/// The actor for one conversation. See the module documentation.
pub struct PeerActor {
    name: UserName,
    /// `None` once handed back to the session.
    core: Option<PeerCore>,
    session: Recipient<PeerOutputs>,
    idle: Recipient<PeerIdle>,
    ids: MessageIds,
    clock: SharedClock,
    timer: Option<SpawnHandle>,
    /// How long an idle conversation keeps its actor.
    idle_stop: Duration,
    idle_timer: Option<SpawnHandle>,
}

/// What the session tells the conversation. `ticket`, if any, comes back
/// with the outputs, so that the session can put the events in order.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ToPeer {
    pub input: PeerInput,
    pub ticket: Option<u64>,
}

/// What a conversation wants done, for the session to carry out.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerOutputs {
    pub peer: UserName,
    /// The ticket of the input these answer (`None`: a timer's).
    pub ticket: Option<u64>,
    pub outputs: Vec<PeerOutput>,
}

/// The conversation has been idle for a while: the session may take it
/// back with [`Park`].
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerIdle {
    pub peer: UserName,
    pub actor: Addr<PeerActor>,
}

/// Hand the conversation back and stop, if it is still idle.
#[derive(Message)]
#[rtype(result = "Option<PeerCore>")]
pub struct Park;

/// This user writes `text`; `reply` says how it was sent. Sent with
/// `do_send`, like everything the session sends here, so that it keeps its
/// place among them; what it takes to send it comes back as
/// [`PeerOutputs`], in order with the rest.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Say {
    pub text: String,
    pub time: TalkTime,
    pub reply: oneshot::Sender<Result<Sent, SendRefusal>>,
}

/// Deliver what can be until `deadline` (the user is leaving).
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
    /// Runs `core`, answering to `session` (and telling `idle` when it has
    /// been idle for `idle_stop`); numbers messages from `ids`.
    pub fn new(
        core: PeerCore,
        session: Recipient<PeerOutputs>,
        idle: Recipient<PeerIdle>,
        ids: MessageIds,
        clock: SharedClock,
        idle_stop: Duration,
    ) -> Self {
        Self {
            name: core.name().clone(),
            core: Some(core),
            session,
            idle,
            ids,
            clock,
            timer: None,
            idle_stop,
            idle_timer: None,
        }
    }

    /// Sends the core's outputs to the session, and arms the timers.
    fn report(&mut self, ticket: Option<u64>, outputs: Vec<PeerOutput>, ctx: &mut Context<Self>) {
        if ticket.is_some() || !outputs.is_empty() {
            self.session.do_send(PeerOutputs {
                peer: self.name.clone(),
                ticket,
                outputs,
            });
        }
        self.schedule(ctx);
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let Some(core) = self.core.as_ref() else {
            return;
        };
        if let Some(at) = core.poll_timeout() {
            let wait = at.saturating_duration_since(self.clock.now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                let now = act.clock.now();
                let outputs = act
                    .core
                    .as_mut()
                    .map(|core| core.handle_timeout(now))
                    .unwrap_or_default();
                act.report(None, outputs, ctx);
            }));
        }
        // Idle: say so after a while (any activity starts the wait again).
        if let Some(handle) = self.idle_timer.take() {
            ctx.cancel_future(handle);
        }
        if core.is_idle() {
            self.idle_timer = Some(ctx.run_later(self.idle_stop, |act, ctx| {
                act.idle_timer = None;
                if act.core.as_ref().is_some_and(PeerCore::is_idle) {
                    act.idle.do_send(PeerIdle {
                        peer: act.name.clone(),
                        actor: ctx.address(),
                    });
                }
            }));
        }
    }
}

impl Actor for PeerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!(peer = %self.name, "conversation opened");
        self.schedule(ctx);
    }
}

impl Handler<ToPeer> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: ToPeer, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let outputs = self
            .core
            .as_mut()
            .map(|core| core.handle(msg.input, now))
            .unwrap_or_default();
        self.report(msg.ticket, outputs, ctx);
    }
}

impl Handler<Say> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Say, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let said = match self.core.as_mut() {
            Some(core) => core.say(msg.text, msg.time, &self.ids, now),
            None => Err(SendRefusal::Leaving),
        };
        let (said, outputs) = match said {
            Ok((sent, outputs)) => (Ok(sent), outputs),
            Err(refusal) => (Err(refusal), Vec::new()),
        };
        // The session may have stopped waiting (it is ending): fine.
        let _ = msg.reply.send(said);
        self.report(None, outputs, ctx);
    }
}

impl Handler<Drain> for PeerActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let outputs = self
            .core
            .as_mut()
            .map(|core| core.drain(msg.deadline, now))
            .unwrap_or_default();
        self.report(None, outputs, ctx);
    }
}

impl Handler<Park> for PeerActor {
    type Result = MessageResult<Park>;

    fn handle(&mut self, _: Park, ctx: &mut Context<Self>) -> Self::Result {
        if !self.core.as_ref().is_some_and(PeerCore::is_idle) {
            return MessageResult(None);
        }
        debug!(peer = %self.name, "conversation idle; its actor stops");
        ctx.stop();
        MessageResult(self.core.take())
    }
}

impl Handler<History> for PeerActor {
    type Result = MessageResult<History>;

    fn handle(&mut self, _: History, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .as_ref()
                .map(|core| core.lines().cloned().collect())
                .unwrap_or_default(),
        )
    }
}
