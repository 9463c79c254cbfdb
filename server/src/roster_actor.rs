//! `RosterActor`: the shell around [`Roster`]. It feeds the roster the
//! logins and logouts the gateway decoded, sends what the roster decides
//! through the gateway, logs each decision, and publishes roster events to
//! subscribing actors, so that new behaviour (an audit log, a bot) is a new
//! actor rather than an edit here.

use std::net::SocketAddr;
use std::time::Instant;

use actix::prelude::*;
use pigeon_shared::{LogLimit, Login, Logout, PeerAddr, UserName};
use tracing::{info, warn};

use crate::roster::{LoginDecision, LogoutDecision, Roster, RosterAction, RosterEvent};
use crate::udp_gateway_actor::{BroadcastDatagram, SendDatagram, UdpGatewayActor};

/// Mailbox size: room for a burst of logins while the gateway waits.
pub const ROSTER_MAILBOX: usize = 4096;

/// The roster actor. See the module documentation.
pub struct RosterActor {
    roster: Roster,
    gateway: Addr<UdpGatewayActor>,
    subscribers: Vec<Recipient<RosterEvent>>,
    events_dropped: u64,
    /// Refusals are logged, but a flood of them must not flood the log.
    refusal_log: LogLimit,
}

/// A login datagram arrived from `source`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LoginReceived {
    pub login: Login,
    pub source: SocketAddr,
}

/// A logout datagram arrived from `source`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LogoutReceived {
    pub logout: Logout,
    pub source: SocketAddr,
}

/// Deliver every later [`RosterEvent`] to `subscriber`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub subscriber: Recipient<RosterEvent>,
}

/// The users online, sorted by name.
#[derive(Message, Debug)]
#[rtype(result = "Vec<(UserName, PeerAddr)>")]
pub struct OnlineUsers;

/// Stop the roster.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopRoster;

impl Message for RosterEvent {
    type Result = ();
}

impl RosterActor {
    /// A roster actor sending through `gateway`.
    pub fn new(roster: Roster, gateway: Addr<UdpGatewayActor>) -> Self {
        Self {
            roster,
            gateway,
            subscribers: Vec::new(),
            events_dropped: 0,
            refusal_log: LogLimit::default(),
        }
    }

    fn dispatch(&mut self, actions: Vec<RosterAction>) {
        for action in actions {
            match action {
                // `do_send` does not wait for room in the gateway's mailbox.
                // The backlog there is bounded all the same: each action
                // answers one inbound datagram, and inbound datagrams reach
                // this actor through a bounded mailbox.
                RosterAction::Send { to, datagram } => {
                    self.gateway.do_send(SendDatagram { to, datagram })
                }
                RosterAction::Broadcast { to, datagram } => {
                    self.gateway.do_send(BroadcastDatagram { to, datagram })
                }
                RosterAction::Publish(event) => self.publish(event),
            }
        }
    }

    /// Fan-out with `try_send`: a subscriber that cannot keep up loses
    /// events (counted), and holds nobody else up.
    fn publish(&mut self, event: RosterEvent) {
        let mut dropped = 0;
        self.subscribers
            .retain(|subscriber| match subscriber.try_send(event.clone()) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(SendError::Closed(_)) => false,
            });
        if dropped > 0 {
            self.events_dropped += dropped;
            warn!(
                dropped,
                total = self.events_dropped,
                "roster event not delivered: subscriber mailbox full"
            );
        }
    }
}

impl Actor for RosterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(ROSTER_MAILBOX);
    }
}

impl Handler<LoginReceived> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: LoginReceived, _: &mut Context<Self>) {
        let name = msg.login.name.clone();
        let endpoint = msg.login.endpoint;
        let source = msg.source;
        let (decision, actions) = self.roster.login(msg.login, source);
        match &decision {
            LoginDecision::Joined => info!(
                user = %name,
                %endpoint,
                %source,
                online = self.roster.len(),
                "user joined; login forwarded to the others"
            ),
            LoginDecision::Refreshed => {
                info!(user = %name, %endpoint, %source, "login repeated; Accept sent again")
            }
            LoginDecision::Refused { reason, detail } => {
                if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
                    warn!(user = %name, %endpoint, %source, %reason, held_back, "login refused: {detail}")
                }
            }
        }
        self.dispatch(actions);
    }
}

impl Handler<LogoutReceived> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: LogoutReceived, _: &mut Context<Self>) {
        let name = msg.logout.name.clone();
        let endpoint = msg.logout.endpoint;
        let source = msg.source;
        let (decision, actions) = self.roster.logout(msg.logout, source);
        let ignored = match decision {
            LogoutDecision::Left => {
                info!(
                    user = %name,
                    %endpoint,
                    %source,
                    online = self.roster.len(),
                    "user left; logout forwarded to the others"
                );
                None
            }
            LogoutDecision::UnknownUser => Some(("no such user online", None)),
            LogoutDecision::EndpointMismatch { registered } => {
                Some(("not the user's endpoint", Some(registered)))
            }
            LogoutDecision::WrongSource { registered } => {
                Some(("not sent from the user's address", Some(registered)))
            }
        };
        if let Some((why, registered)) = ignored {
            if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
                let registered = registered.map(|r| r.to_string()).unwrap_or_default();
                warn!(user = %name, %endpoint, %source, registered, held_back, "logout ignored: {why}");
            }
        }
        self.dispatch(actions);
    }
}

impl Handler<Subscribe> for RosterActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(msg.subscriber);
    }
}

impl Handler<OnlineUsers> for RosterActor {
    type Result = MessageResult<OnlineUsers>;

    fn handle(&mut self, _: OnlineUsers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.roster.users())
    }
}

impl Handler<StopRoster> for RosterActor {
    type Result = ();

    fn handle(&mut self, _: StopRoster, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
