//! `KeyPins`: the peers' keys, pinned the first time the roster shows them
//! (trust on first use, like SSH's known hosts), and the names whose key
//! the roster now shows different: told once, and nothing is sent to them
//! until the user trusts the new key. A crowd of simulated peers pins only
//! the keys it uses (a message sent or received, an offline message,
//! `/whois`), so that each keeps its contacts, not everyone. Part of the
//! replica; no I/O (the session actor keeps the file).

use std::collections::BTreeMap;

use pigeon_shared::{PublicKey, UserName};

use super::SessionOutput;
use crate::events::ClientEvent;

/// Most keys pinned (a roster can be no larger than a server allows; this
/// bounds what a hostile server could make a client remember).
pub const MAX_PINS: usize = 100_000;

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyPins {
    pinned: BTreeMap<UserName, PublicKey>,
    /// Names whose roster key is not the pinned one: the key shown.
    changed: BTreeMap<UserName, PublicKey>,
    /// Pin keys on first sight, not only on first use.
    on_sight: bool,
}

/// What is known of a user's key, for `/whois`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Whether the user is in the roster.
    pub online: bool,
    /// The key the roster shows (`None`: the user has none, or is offline).
    pub current: Option<PublicKey>,
    /// The key pinned for the name, if any.
    pub pinned: Option<PublicKey>,
}

impl KeyInfo {
    /// Whether the roster's key is not the one the user trusts.
    pub fn changed(&self) -> bool {
        matches!((self.current, self.pinned), (Some(a), Some(b)) if a != b)
    }
}

impl KeyPins {
    /// Pins known from before (the file).
    pub(crate) fn new(pinned: BTreeMap<UserName, PublicKey>, on_sight: bool) -> Self {
        Self {
            pinned,
            changed: BTreeMap::new(),
            on_sight,
        }
    }

    /// The roster shows `key` for `name` (`used`: and this user is using
    /// it): pins it if it is the first seen (or, pinning on use only, the
    /// first used), says so once if it is not the pinned one.
    pub(crate) fn vet(
        &mut self,
        name: &UserName,
        key: PublicKey,
        used: bool,
        out: &mut Vec<SessionOutput>,
    ) {
        match self.pinned.get(name) {
            None if (used || self.on_sight) && self.pinned.len() < MAX_PINS => {
                self.pinned.insert(name.clone(), key);
                out.push(SessionOutput::PinPeer {
                    name: name.clone(),
                    key,
                });
            }
            None => {}
            Some(pinned) if *pinned == key => {
                self.changed.remove(name);
            }
            Some(pinned) if self.changed.get(name) != Some(&key) => {
                self.changed.insert(name.clone(), key);
                out.push(SessionOutput::Emit(ClientEvent::KeyChanged {
                    name: name.clone(),
                    old: *pinned,
                    new: key,
                }));
            }
            // Told already.
            Some(_) => {}
        }
    }

    /// Whether sending to `name` waits for the user to trust its new key.
    pub(crate) fn blocked(&self, name: &str) -> Option<(PublicKey, PublicKey)> {
        let new = self.changed.get(name)?;
        let old = self.pinned.get(name)?;
        Some((*old, *new))
    }

    /// The user trusts the key the roster now shows for `name`: pinned in
    /// place of the old one. `None` if there is nothing to trust.
    pub(crate) fn trust(&mut self, name: &UserName) -> Option<SessionOutput> {
        let key = self.changed.remove(name)?;
        self.pinned.insert(name.clone(), key);
        Some(SessionOutput::PinPeer {
            name: name.clone(),
            key,
        })
    }

    /// What is pinned for `name`.
    pub(crate) fn pinned(&self, name: &str) -> Option<PublicKey> {
        self.pinned.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    #[test]
    fn a_key_is_pinned_when_the_roster_first_shows_it() {
        let mut pins = KeyPins::new(BTreeMap::new(), true);
        let mut out = Vec::new();
        let bob = name("bob");
        // Never written to, only seen: pinned all the same.
        pins.vet(&bob, PublicKey([1; 32]), false, &mut out);
        assert!(
            matches!(out.as_slice(), [SessionOutput::PinPeer { key, .. }] if *key == PublicKey([1; 32])),
            "{out:?}"
        );
        assert_eq!(pins.pinned("bob"), Some(PublicKey([1; 32])));
        out.clear();
        // The name freed and taken by another key before bob was ever
        // written to: told, and blocked.
        pins.vet(&bob, PublicKey([2; 32]), false, &mut out);
        assert!(
            matches!(
                out.as_slice(),
                [SessionOutput::Emit(ClientEvent::KeyChanged { .. })]
            ),
            "{out:?}"
        );
        assert!(pins.blocked("bob").is_some());
    }

    #[test]
    fn the_first_key_is_pinned_and_a_change_is_told_once_and_blocks() {
        // Pinning on use only, as a crowd of simulated peers does.
        let mut pins = KeyPins::default();
        let mut out = Vec::new();
        let bob = name("bob");
        // Seen in the roster only: not pinned.
        pins.vet(&bob, PublicKey([1; 32]), false, &mut out);
        assert!(out.is_empty());
        assert_eq!(pins.pinned("bob"), None);
        pins.vet(&bob, PublicKey([1; 32]), true, &mut out);
        assert!(matches!(out.as_slice(), [SessionOutput::PinPeer { .. }]));
        out.clear();
        pins.vet(&bob, PublicKey([1; 32]), false, &mut out);
        assert!(out.is_empty());
        assert_eq!(pins.blocked("bob"), None);

        pins.vet(&bob, PublicKey([2; 32]), false, &mut out);
        pins.vet(&bob, PublicKey([2; 32]), true, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(matches!(
            &out[0],
            SessionOutput::Emit(ClientEvent::KeyChanged { old, new, .. })
                if *old == PublicKey([1; 32]) && *new == PublicKey([2; 32])
        ));
        assert_eq!(
            pins.blocked("bob"),
            Some((PublicKey([1; 32]), PublicKey([2; 32])))
        );
        // Back to the trusted key: nothing to trust any more.
        pins.vet(&bob, PublicKey([1; 32]), false, &mut out);
        assert_eq!(pins.blocked("bob"), None);
        assert!(pins.trust(&bob).is_none());

        // Changed again, and trusted: pinned, and no longer blocked.
        out.clear();
        pins.vet(&bob, PublicKey([3; 32]), false, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(
            pins.trust(&bob),
            Some(SessionOutput::PinPeer { key, .. }) if key == PublicKey([3; 32])
        ));
        assert_eq!(pins.blocked("bob"), None);
        assert_eq!(pins.pinned("bob"), Some(PublicKey([3; 32])));
    }
}
