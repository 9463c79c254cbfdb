//! The Noise handshakes' primitives: X25519 from AWS-LC (the same RFC 7748
//! function as snow's default, in assembly: about 2.5x faster here), and
//! snow's defaults for hashing, ciphers and randomness.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, Error};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::identity::{Identity, KEY_BYTES};

/// A builder for `protocol` (a Noise protocol name) whose static key is
/// `identity`'s and whose prologue is `prologue`.
pub fn builder<'a>(
    protocol: &str,
    identity: &'a Identity,
    prologue: &'a [u8],
) -> Result<Builder<'a>, Error> {
    let params = protocol.parse()?;
    let resolver = Resolver {
        known: Some(KnownPair {
            private: Zeroizing::new(*identity.secret()),
            public: identity.public().0,
        }),
    };
    Builder::with_resolver(params, Box::new(resolver))
        .local_private_key(identity.secret())?
        .prologue(prologue)
}

/// The X25519 public key of `secret`; `None` only if AWS-LC refuses the
/// length, which is fixed.
pub fn public_key(secret: &[u8; KEY_BYTES]) -> Option<[u8; KEY_BYTES]> {
    let key = PrivateKey::from_private_key(&X25519, secret).ok()?;
    let public = key.compute_public_key().ok()?;
    public.as_ref().try_into().ok()
}

/// X25519 from AWS-LC, the rest from snow's default resolver.
struct Resolver {
    /// The static key pair, whose public half is known: setting it costs
    /// no key derivation (a third of a handshake's X25519 work).
    known: Option<KnownPair>,
}

#[derive(Clone)]
struct KnownPair {
    private: Zeroizing<[u8; KEY_BYTES]>,
    public: [u8; KEY_BYTES],
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(Dh25519 {
                known: self.known.clone(),
                ..Dh25519::default()
            })),
            _ => DefaultResolver.resolve_dh(choice),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// One X25519 key pair of a handshake (static or ephemeral).
#[derive(Default)]
struct Dh25519 {
    private: Zeroizing<[u8; KEY_BYTES]>,
    public: [u8; KEY_BYTES],
    known: Option<KnownPair>,
}

impl Dh for Dh25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_BYTES
    }

    fn priv_len(&self) -> usize {
        KEY_BYTES
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut private = Zeroizing::new([0u8; KEY_BYTES]);
        // snow hands over keys of `priv_len` bytes; anything else leaves
        // the pair unset (all zero), and every agreement with it fails.
        if let Ok(bytes) = <[u8; KEY_BYTES]>::try_from(privkey) {
            *private = bytes;
        }
        self.public = match &self.known {
            Some(known) if bool::from(known.private.ct_eq(&*private)) => known.public,
            _ => public_key(&private).unwrap_or_default(),
        };
        self.private = private;
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), Error> {
        let mut private = Zeroizing::new([0u8; KEY_BYTES]);
        rng.try_fill_bytes(private.as_mut())?;
        self.set(private.as_ref());
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.private.as_ref()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), Error> {
        let key =
            PrivateKey::from_private_key(&X25519, self.private.as_ref()).map_err(|_| Error::Dh)?;
        let peer = pubkey.get(..KEY_BYTES).ok_or(Error::Dh)?;
        let out = out.get_mut(..KEY_BYTES).ok_or(Error::Dh)?;
        // AWS-LC refuses a peer key of small order (an all-zero result);
        // the handshake then fails like any other bad message.
        agreement::agree(
            &key,
            UnparsedPublicKey::new(&X25519, peer),
            Error::Dh,
            |shared| {
                if shared.len() == out.len() {
                    out.copy_from_slice(shared);
                    Ok(())
                } else {
                    Err(Error::Dh)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dalek_public(secret: [u8; 32]) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes()
    }

    proptest! {
        #[test]
        fn agrees_with_x25519_dalek(a: [u8; 32], b: [u8; 32]) {
            prop_assert_eq!(public_key(&a), Some(dalek_public(a)));
            let mut ours = Dh25519::default();
            ours.set(&a);
            let mut shared = [0u8; 32];
            ours.dh(&dalek_public(b), &mut shared).unwrap();
            let theirs = x25519_dalek::StaticSecret::from(b)
                .diffie_hellman(&x25519_dalek::PublicKey::from(ours.public));
            prop_assert_eq!(shared, theirs.to_bytes());
        }
    }

    #[test]
    fn a_handshake_with_snows_own_x25519_completes() {
        const PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
        let alice = Identity::generate();
        let bob = Identity::generate();
        let mut initiator = builder(PROTOCOL, &alice, b"p")
            .unwrap()
            .remote_public_key(&bob.public().0)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut responder = snow::Builder::new(PROTOCOL.parse().unwrap())
            .local_private_key(bob.secret())
            .unwrap()
            .prologue(b"p")
            .unwrap()
            .build_responder()
            .unwrap();
        let mut buf = [0u8; 256];
        let mut read = [0u8; 256];
        let n = initiator.write_message(b"hi", &mut buf).unwrap();
        let m = responder.read_message(&buf[..n], &mut read).unwrap();
        assert_eq!(&read[..m], b"hi");
        assert_eq!(responder.get_remote_static(), Some(&alice.public().0[..]));
        let n = responder.write_message(b"ho", &mut buf).unwrap();
        let m = initiator.read_message(&buf[..n], &mut read).unwrap();
        assert_eq!(&read[..m], b"ho");
    }

    #[test]
    fn a_known_static_key_keeps_its_public_half_and_others_derive_theirs() {
        let identity = Identity::generate();
        let known = KnownPair {
            private: Zeroizing::new(*identity.secret()),
            public: identity.public().0,
        };
        let mut dh = Dh25519 {
            known: Some(known),
            ..Dh25519::default()
        };
        dh.set(identity.secret());
        assert_eq!(dh.pubkey(), identity.public().0);
        dh.set(&[9u8; 32]);
        assert_eq!(dh.pubkey(), dalek_public([9u8; 32]));
    }

    #[test]
    fn a_small_order_peer_key_fails_the_agreement() {
        let mut ours = Dh25519::default();
        ours.set(&[7u8; 32]);
        let mut out = [0u8; 32];
        assert!(ours.dh(&[0u8; 32], &mut out).is_err());
    }
}
