//! The login handshake: the client names its static key in the login (in
//! clear: it is public), and the server answers in the `Accept` with a
//! Noise `X` message to that key: its own static key (encrypted) and,
//! encrypted to the client's key, the session token and the key of the
//! server's sealed datagrams. The prologue binds the answer to this login
//! (name, endpoint and the login's fresh nonce), so an old answer cannot
//! be replayed to a new login.
//!
//! ```text
//! prologue = "pigeon1 login\n" <name> "\n" <endpoint> "\n" <nonce, 32 hex>
//! login  (hello, 32 bytes):   the client's static public key
//! Accept (reply, 144 bytes):  <- e, es, s, ss   (payload: token, 16 bytes LE | sealing secret, 32 bytes)
//! sealing key = BLAKE3 derive_key("pigeon1 server datagrams v3", sealing secret)
//! ```
//!
//! `es` and `ss` are key agreements with the client's static key, so only
//! its holder reads the payload: a session that later names its token (the
//! TCP roster request) has proved it holds the key it claimed, and nobody
//! else, on the path or not, learns the sealing key (a fresh random secret
//! of the server's, never sent in clear). `ss` also proves the server holds
//! the static key it shows, which the client pins. The client does two
//! X25519 operations per login, the server three. Nothing here does I/O.

use rand::RngCore;
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use crate::endpoint::PeerAddr;
use crate::identity::{Identity, PublicKey, KEY_BYTES};
use crate::ids::{Nonce, SessionToken};
use crate::name::UserName;
use crate::noise;
use crate::seal::SessionKey;

/// The Noise protocol of the login's answer.
pub const LOGIN_PROTOCOL: &str = "Noise_X_25519_ChaChaPoly_BLAKE2s";

/// Bytes of the hello: the client's static public key.
pub const HELLO_BYTES: usize = KEY_BYTES;

/// Bytes of the token inside the reply.
const TOKEN_BYTES: usize = 16;

/// Bytes of the sealing secret inside the reply.
const SECRET_BYTES: usize = 32;

/// Bytes of an AEAD tag.
const TAG_BYTES: usize = 16;

/// Bytes of the reply: the server's ephemeral key, its static key
/// encrypted, the token and the sealing secret encrypted.
pub const REPLY_BYTES: usize =
    KEY_BYTES + (KEY_BYTES + TAG_BYTES) + (TOKEN_BYTES + SECRET_BYTES + TAG_BYTES);

/// What the client sends: its static public key.
pub type Hello = [u8; HELLO_BYTES];

/// The server's answer.
pub type Reply = [u8; REPLY_BYTES];

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the handshake message does not verify")]
    Invalid,
    #[error("the handshake message has the wrong length")]
    Length,
}

impl From<snow::Error> for HandshakeError {
    fn from(_: snow::Error) -> Self {
        Self::Invalid
    }
}

fn prologue(name: &UserName, endpoint: PeerAddr, nonce: Nonce) -> Vec<u8> {
    format!("pigeon1 login\n{name}\n{endpoint}\n{nonce}").into_bytes()
}

fn builder<'a>(identity: &'a Identity, prologue: &'a [u8]) -> Result<Builder<'a>, HandshakeError> {
    Ok(noise::builder(LOGIN_PROTOCOL, identity, prologue)?)
}

/// A client's login, waiting for the server's reply.
pub struct LoginHandshake {
    state: HandshakeState,
}

impl std::fmt::Debug for LoginHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginHandshake(..)")
    }
}

/// What the client learns from a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The server's static key (to be pinned).
    pub server: PublicKey,
    /// The session's token.
    pub token: SessionToken,
    /// The key of the server's sealed datagrams.
    pub key: SessionKey,
}

impl LoginHandshake {
    /// Starts a login as `identity` under `name` at `endpoint` with the
    /// login's `nonce`: the state and the hello to send.
    pub fn start(
        identity: &Identity,
        name: &UserName,
        endpoint: PeerAddr,
        nonce: Nonce,
    ) -> Result<(Self, Hello), HandshakeError> {
        let prologue = prologue(name, endpoint, nonce);
        let state = builder(identity, &prologue)?.build_responder()?;
        Ok((Self { state }, identity.public().0))
    }

    /// Reads the server's reply.
    pub fn finish(mut self, reply: &Reply) -> Result<LoginOutcome, HandshakeError> {
        let mut payload = Zeroizing::new([0u8; REPLY_BYTES]);
        let read = self.state.read_message(reply, payload.as_mut())?;
        let payload = payload.get(..read).ok_or(HandshakeError::Length)?;
        if payload.len() != TOKEN_BYTES + SECRET_BYTES {
            return Err(HandshakeError::Length);
        }
        let (token, secret) = payload.split_at(TOKEN_BYTES);
        let token: [u8; TOKEN_BYTES] = token.try_into().map_err(|_| HandshakeError::Length)?;
        let server = self
            .state
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or(HandshakeError::Invalid)?;
        Ok(LoginOutcome {
            server,
            token: SessionToken(u128::from_le_bytes(token)),
            key: SessionKey::from_secret(secret),
        })
    }
}

/// What the server learns from a hello, and what it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The key the client claims (proved once it uses the token).
    pub client: PublicKey,
    /// The reply to send in `Accept`.
    pub reply: Reply,
    /// The key of the session's sealed datagrams.
    pub key: SessionKey,
}

/// The server's side: answers the `hello` of `name` at `endpoint` (its
/// login's `nonce`) with `token` and a fresh sealing secret, encrypted to
/// the client's key.
pub fn answer(
    server: &Identity,
    name: &UserName,
    endpoint: PeerAddr,
    nonce: Nonce,
    hello: &Hello,
    token: SessionToken,
) -> Result<Answered, HandshakeError> {
    let client = PublicKey(*hello);
    let prologue = prologue(name, endpoint, nonce);
    let mut state = builder(server, &prologue)?
        .remote_public_key(hello)?
        .build_initiator()?;
    let mut payload = Zeroizing::new([0u8; TOKEN_BYTES + SECRET_BYTES]);
    let (token_bytes, secret) = payload.split_at_mut(TOKEN_BYTES);
    token_bytes.copy_from_slice(&token.0.to_le_bytes());
    rand::rng().fill_bytes(secret);
    let key = SessionKey::from_secret(secret);
    let mut buf = [0u8; REPLY_BYTES + TAG_BYTES];
    let written = state.write_message(payload.as_ref(), &mut buf)?;
    let reply = buf
        .get(..written)
        .and_then(|bytes| Reply::try_from(bytes).ok())
        .ok_or(HandshakeError::Length)?;
    Ok(Answered { client, reply, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> (UserName, PeerAddr) {
        (
            UserName::parse("alice").unwrap(),
            PeerAddr::parse("127.0.0.1:5000").unwrap(),
        )
    }

    #[test]
    fn both_sides_learn_each_other_and_agree_on_the_key() {
        let (name, endpoint) = alice();
        let client = Identity::generate();
        let server = Identity::generate();
        let nonce = Nonce(99);
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint, nonce).unwrap();
        assert_eq!(hello, client.public().0);
        let token = SessionToken(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let answered = answer(&server, &name, endpoint, nonce, &hello, token).unwrap();
        assert_eq!(answered.client, client.public());
        let outcome = login.finish(&answered.reply).unwrap();
        assert_eq!(outcome.server, server.public());
        assert_eq!(outcome.token, token);
        assert_eq!(outcome.key, answered.key);
        // A fresh sealing secret each time, unrelated to anything public.
        let again = answer(&server, &name, endpoint, nonce, &hello, token).unwrap();
        assert_ne!(again.key, answered.key);
    }

    #[test]
    fn a_reply_for_another_login_or_a_tampered_one_is_refused() {
        let (name, endpoint) = alice();
        let client = Identity::generate();
        let server = Identity::generate();
        let token = SessionToken(7);
        let nonce = Nonce(1);
        // The server read the hello under another name: the prologues differ.
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint, nonce).unwrap();
        let bob = UserName::parse("bob").unwrap();
        let answered = answer(&server, &bob, endpoint, nonce, &hello, token).unwrap();
        assert!(login.finish(&answered.reply).is_err());
        // An answer to an earlier login (another nonce), replayed.
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint, nonce).unwrap();
        let old = answer(&server, &name, endpoint, Nonce(2), &hello, token).unwrap();
        assert!(login.finish(&old.reply).is_err());
        // A bit flipped in transit.
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint, nonce).unwrap();
        let mut reply = answer(&server, &name, endpoint, nonce, &hello, token)
            .unwrap()
            .reply;
        reply[REPLY_BYTES - 1] ^= 1;
        assert!(login.finish(&reply).is_err());
        // Someone who claims alice's public key without her private key
        // cannot read the token.
        let impostor = Identity::generate();
        let (login, _) = LoginHandshake::start(&impostor, &name, endpoint, nonce).unwrap();
        let answered = answer(&server, &name, endpoint, nonce, &hello, token).unwrap();
        assert_eq!(answered.client, client.public());
        assert!(login.finish(&answered.reply).is_err());
    }
}
