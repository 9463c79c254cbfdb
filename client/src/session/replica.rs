//! `Replica`: a client's copy of the roster, kept up to date from
//! snapshots, numbered deltas and the seed's plain broadcasts, and what it
//! says about peer datagrams: whether one comes from the user it names.
//! Part of the session (which decides when to fetch, buffer or apply);
//! plain data, no I/O.

use std::net::SocketAddr;
use std::sync::Arc;

use pigeon_shared::{
    same_host, Chat, Delta, PeerAddr, Revision, RosterChange, RosterSnapshot, Talk, UserName,
};

use super::pins::KeyPins;
use super::{to_conversation, Peer, PeerInput, Refusal, RosterMap, SessionOutput};
use crate::events::ClientEvent;

/// Most roster changes kept while a snapshot is being fetched.
const MAX_BUFFERED: usize = 100_000;

/// A roster change kept until a snapshot is in.
#[derive(Debug, Clone)]
pub(crate) enum Buffered {
    /// From a seed server's `login`/`logout`: no revision.
    Plain(RosterChange),
    /// From a Pigeon server.
    Delta(Delta),
}

/// The roster replica. See the module documentation.
#[derive(Debug)]
pub(crate) struct Replica {
    /// This client: its own entry is its to keep.
    me: UserName,
    me_peer: Peer,
    /// Shared, copy on write: the `Ready` event hands the front end the
    /// whole roster without copying it.
    roster: Arc<RosterMap>,
    revision: Option<Revision>,
    buffered: Vec<Buffered>,
    /// The peers' keys as first seen; every key the roster shows is vetted.
    pins: KeyPins,
}

impl Replica {
    /// An empty roster for `me`, listed as `me_peer`.
    pub(crate) fn new(me: UserName, me_peer: Peer, pins: KeyPins) -> Self {
        Self {
            me,
            me_peer,
            roster: Arc::default(),
            revision: None,
            buffered: Vec::new(),
            pins,
        }
    }

    /// The pinned keys.
    pub(crate) fn pins(&self) -> &KeyPins {
        &self.pins
    }

    /// The pinned keys, to trust a new one.
    pub(crate) fn pins_mut(&mut self) -> &mut KeyPins {
        &mut self.pins
    }

    /// The roster, shared.
    pub(crate) fn shared(&self) -> Arc<RosterMap> {
        self.roster.clone()
    }

    /// How many users, this client included.
    pub(crate) fn len(&self) -> usize {
        self.roster.len()
    }

    /// The users online, sorted by name, this one included.
    pub(crate) fn users(&self) -> Vec<(UserName, PeerAddr)> {
        self.roster
            .iter()
            .map(|(n, p)| (n.clone(), p.endpoint))
            .collect()
    }

    /// What is known about `name`, if online.
    pub(crate) fn peer(&self, name: &str) -> Option<Peer> {
        self.roster.get(name).copied()
    }

    /// The revision reached (Pigeon servers only).
    pub(crate) fn revision(&self) -> Option<Revision> {
        self.revision
    }

    /// Forgets the changes waiting for a snapshot.
    pub(crate) fn clear_buffered(&mut self) {
        self.buffered.clear();
    }

    /// A chat from `name`'s exact endpoint taught us it is a Pigeon
    /// client (instance `learnt`); what it means.
    pub(crate) fn learn(&mut self, name: &UserName, learnt: Peer) -> SessionOutput {
        Arc::make_mut(&mut self.roster).insert(name.clone(), learnt);
        to_conversation(name.clone(), PeerInput::Peer(Some(learnt)))
    }

    /// Whether a `talk` may be delivered: its sender must be online, and it
    /// must come from that user's address: the exact endpoint for a Pigeon
    /// client (which sends from it), the host for a seed-era client (which
    /// sends from throwaway ports, so its port cannot be checked).
    pub(crate) fn check_talk(&self, talk: &Talk, source: SocketAddr) -> Result<(), Refusal> {
        let peer = self.roster.get(&talk.from).ok_or(Refusal::UnknownSender)?;
        let genuine = match peer.instance {
            Some(_) => peer.endpoint.socket_addr() == source,
            None => same_host(peer.endpoint.socket_addr().ip(), source.ip()),
        };
        if genuine {
            Ok(())
        } else {
            Err(Refusal::WrongAddress)
        }
    }

    /// A Pigeon peer sends from its receive endpoint: the source must be
    /// exactly the endpoint of the user it names.
    /// Every other user's name.
    pub(crate) fn names(&self) -> impl Iterator<Item = &UserName> {
        self.roster.keys().filter(|name| **name != self.me)
    }

    pub(crate) fn check_exact(&self, name: &UserName, source: SocketAddr) -> Result<Peer, Refusal> {
        let peer = self.roster.get(name).ok_or(Refusal::UnknownSender)?;
        if peer.endpoint.socket_addr() == source {
            Ok(*peer)
        } else {
            Err(Refusal::WrongAddress)
        }
    }

    /// Why a `chat` would be refused, for counting (the same checks as
    /// delivery, without learning anything).
    pub(crate) fn check_chat(&self, chat: &Chat, source: SocketAddr) -> Result<(), Refusal> {
        let peer = self.check_exact(&chat.from, source)?;
        match peer.instance {
            Some(instance) if instance != chat.instance => Err(Refusal::WrongInstance),
            _ => Ok(()),
        }
    }

    pub(crate) fn buffer(&mut self, item: Buffered) {
        if self.buffered.len() < MAX_BUFFERED {
            self.buffered.push(item);
        }
    }

    /// Applies the changes of `delta` newer than this client's revision.
    /// Changes this client already has are skipped without being parsed.
    /// `false`: a change did not parse, and this client's roster is no
    /// longer known to be right (it stops at the change before).
    pub(crate) fn apply_delta(&mut self, delta: Delta, out: &mut Vec<SessionOutput>) -> bool {
        let mine = self.revision.unwrap_or(delta.from);
        for (revision, change) in delta.changes_after(mine) {
            match change {
                Ok(change) => {
                    self.apply(change, out);
                    self.revision = Some(revision);
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Replaces the roster with `snapshot` plus the changes that arrived
    /// meanwhile, and reports the differences if `report`; `true` with
    /// them if a buffered change showed a gap (fetch again).
    pub(crate) fn install(
        &mut self,
        snapshot: RosterSnapshot,
        report: bool,
    ) -> (Vec<SessionOutput>, bool) {
        let before = std::mem::take(&mut self.roster);
        // This client is in the roster whatever the server wrote.
        let me = self.me_peer;
        // Built in one go from the whole snapshot, the map's nodes are full:
        // a third less memory than inserting entry by entry, which matters
        // with thousands of clients in one process.
        let mut roster: RosterMap = snapshot
            .entries
            .into_iter()
            .filter(|entry| entry.name != self.me)
            .map(|entry| {
                let peer = Peer {
                    endpoint: entry.endpoint,
                    instance: entry.instance,
                    key: entry.key,
                };
                (entry.name, peer)
            })
            .chain(std::iter::once((self.me.clone(), me)))
            .collect();
        // A seed server's roster does not say who is a Pigeon client; keep
        // what chats already taught us.
        for (name, peer) in roster.iter_mut() {
            if peer.instance.is_none() {
                if let Some(old) = before.get(name).filter(|old| old.endpoint == peer.endpoint) {
                    peer.instance = old.instance;
                }
            }
        }
        self.roster = Arc::new(roster);
        self.revision = snapshot.revision;
        let mut gap = false;
        // What replaying says is covered by the difference reported below.
        let mut replayed = Vec::new();
        for item in std::mem::take(&mut self.buffered) {
            match item {
                Buffered::Plain(change) => self.apply(change, &mut replayed),
                Buffered::Delta(delta) => match self.revision {
                    Some(mine) if delta.from > mine => gap = true,
                    _ => gap |= !self.apply_delta(delta, &mut replayed),
                },
            }
        }
        drop(replayed);
        let mut out = if report {
            self.diff(&before)
        } else {
            Vec::new()
        };
        for (name, peer) in self.roster.iter() {
            if let Some(key) = peer.key.filter(|_| *name != self.me) {
                self.pins.vet(name, key, false, &mut out);
            }
        }
        (out, gap)
    }

    /// Events for every difference between `before` and the roster now.
    fn diff(&self, before: &RosterMap) -> Vec<SessionOutput> {
        let me = &self.me;
        let mut out = Vec::new();
        for (name, peer) in self.roster.iter() {
            if name != me && before.get(name) != Some(peer) {
                if before.get(name).map(|old| old.endpoint) != Some(peer.endpoint) {
                    out.push(SessionOutput::Emit(ClientEvent::Online {
                        name: name.clone(),
                        endpoint: peer.endpoint,
                    }));
                }
                out.push(to_conversation(name.clone(), PeerInput::Peer(Some(*peer))));
            }
        }
        for name in before.keys() {
            if name != me && !self.roster.contains_key(name) {
                out.push(SessionOutput::Emit(ClientEvent::Offline {
                    name: name.clone(),
                }));
                out.push(to_conversation(name.clone(), PeerInput::Peer(None)));
            }
        }
        out
    }

    /// Applies one change, idempotently, adding what it means to `out`.
    pub(crate) fn apply(&mut self, change: RosterChange, out: &mut Vec<SessionOutput>) {
        // Our own entry is ours to keep: a broadcast cannot move or remove it.
        if *change.name() == self.me {
            return;
        }
        match change {
            RosterChange::Joined {
                name,
                endpoint,
                instance,
                key,
            } => {
                let peer = Peer {
                    endpoint,
                    instance,
                    key,
                };
                if let Some(key) = key {
                    self.pins.vet(&name, key, false, out);
                }
                let old = Arc::make_mut(&mut self.roster).insert(name.clone(), peer);
                if old == Some(peer) {
                    return;
                }
                if old.map(|o| o.endpoint) != Some(endpoint) {
                    out.push(SessionOutput::Emit(ClientEvent::Online {
                        name: name.clone(),
                        endpoint,
                    }));
                }
                out.push(to_conversation(name, PeerInput::Peer(Some(peer))));
            }
            // A logout for an endpoint the user no longer has is stale.
            RosterChange::Left { name, endpoint } => match self.roster.get(&name) {
                Some(current) if current.endpoint == endpoint => {
                    Arc::make_mut(&mut self.roster).remove(&name);
                    out.push(SessionOutput::Emit(ClientEvent::Offline {
                        name: name.clone(),
                    }));
                    out.push(to_conversation(name, PeerInput::Peer(None)));
                }
                _ => {}
            },
        }
    }
}
