//! The login handshake: Noise `IX` between a Pigeon client and a server,
//! carried in the login's and the `Accept`'s extensions. In one round
//! trip each side learns the other's static key, the server hands over
//! the session token encrypted to the client's key, and both derive the
//! key of the server's sealed datagrams from the handshake.
//!
//! ```text
//! prologue = "pigeon1 login\n" <name> "\n" <endpoint>
//! login  (hello, 64 bytes):  -> e, s                      (payload empty)
//! Accept (reply, 112 bytes): <- e, ee, se, s, es          (payload: the token)
//! sealing key = BLAKE3 derive_key("pigeon1 server datagrams v2", handshake hash)
//! ```
//!
//! Only the holder of the client's private key can read the token, so a
//! session that later names its token (the TCP roster request) has proved
//! it holds the key it claimed in the hello. Nothing here does I/O.

use snow::{Builder, HandshakeState};

use crate::endpoint::PeerAddr;
use crate::identity::{Identity, PublicKey, KEY_BYTES};
use crate::ids::SessionToken;
use crate::name::UserName;
use crate::seal::SessionKey;

/// The Noise protocol of the login.
pub const LOGIN_PROTOCOL: &str = "Noise_IX_25519_ChaChaPoly_BLAKE2s";

/// Bytes of the hello: the client's ephemeral and static keys, in clear.
pub const HELLO_BYTES: usize = 2 * KEY_BYTES;

/// Bytes of the token inside the reply.
const TOKEN_BYTES: usize = 16;

/// Bytes of an AEAD tag.
const TAG_BYTES: usize = 16;

/// Bytes of the reply: the server's ephemeral key, its static key
/// encrypted, the token encrypted.
pub const REPLY_BYTES: usize = KEY_BYTES + (KEY_BYTES + TAG_BYTES) + (TOKEN_BYTES + TAG_BYTES);

/// The first message, from the client.
pub type Hello = [u8; HELLO_BYTES];

/// The second message, from the server.
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

fn prologue(name: &UserName, endpoint: PeerAddr) -> Vec<u8> {
    format!("pigeon1 login\n{name}\n{endpoint}").into_bytes()
}

fn builder<'a>(identity: &'a Identity, prologue: &'a [u8]) -> Result<Builder<'a>, HandshakeError> {
    // The protocol name is a constant that parses.
    let params = LOGIN_PROTOCOL
        .parse()
        .map_err(|_| HandshakeError::Invalid)?;
    Ok(Builder::new(params)
        .local_private_key(identity.secret())?
        .prologue(prologue)?)
}

fn sealing_key(state: &HandshakeState) -> SessionKey {
    SessionKey::from_handshake(state.get_handshake_hash())
}

/// A client's login handshake, waiting for the server's reply.
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
    /// Starts a login as `identity` under `name` at `endpoint`: the state
    /// and the hello to send.
    pub fn start(
        identity: &Identity,
        name: &UserName,
        endpoint: PeerAddr,
    ) -> Result<(Self, Hello), HandshakeError> {
        let prologue = prologue(name, endpoint);
        let mut state = builder(identity, &prologue)?.build_initiator()?;
        // snow wants room for a tag even where the payload goes in clear.
        let mut buf = [0u8; HELLO_BYTES + TAG_BYTES];
        let written = state.write_message(&[], &mut buf)?;
        let hello = buf
            .get(..written)
            .and_then(|bytes| Hello::try_from(bytes).ok())
            .ok_or(HandshakeError::Length)?;
        Ok((Self { state }, hello))
    }

    /// Reads the server's reply.
    pub fn finish(mut self, reply: &Reply) -> Result<LoginOutcome, HandshakeError> {
        let mut payload = [0u8; REPLY_BYTES];
        let read = self.state.read_message(reply, &mut payload)?;
        let token_bytes: [u8; TOKEN_BYTES] = payload
            .get(..read)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(HandshakeError::Length)?;
        let server = self
            .state
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or(HandshakeError::Invalid)?;
        Ok(LoginOutcome {
            server,
            token: SessionToken(u128::from_le_bytes(token_bytes)),
            key: sealing_key(&self.state),
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

/// The server's side: reads `hello` from `name` at `endpoint` and answers
/// with `token`, encrypted to the client's key.
pub fn answer(
    server: &Identity,
    name: &UserName,
    endpoint: PeerAddr,
    hello: &Hello,
    token: SessionToken,
) -> Result<Answered, HandshakeError> {
    let prologue = prologue(name, endpoint);
    let mut state = builder(server, &prologue)?.build_responder()?;
    let mut empty = [0u8; HELLO_BYTES];
    let read = state.read_message(hello, &mut empty)?;
    if read != 0 {
        return Err(HandshakeError::Length);
    }
    let client = state
        .get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or(HandshakeError::Invalid)?;
    let mut buf = [0u8; REPLY_BYTES + TAG_BYTES];
    let written = state.write_message(&token.0.to_le_bytes(), &mut buf)?;
    let reply = buf
        .get(..written)
        .and_then(|bytes| Reply::try_from(bytes).ok())
        .ok_or(HandshakeError::Length)?;
    Ok(Answered {
        client,
        reply,
        key: sealing_key(&state),
    })
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
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint).unwrap();
        let token = SessionToken(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let answered = answer(&server, &name, endpoint, &hello, token).unwrap();
        assert_eq!(answered.client, client.public());
        let outcome = login.finish(&answered.reply).unwrap();
        assert_eq!(outcome.server, server.public());
        assert_eq!(outcome.token, token);
        assert_eq!(outcome.key, answered.key);
    }

    #[test]
    fn a_reply_for_another_login_or_a_tampered_one_is_refused() {
        let (name, endpoint) = alice();
        let client = Identity::generate();
        let server = Identity::generate();
        let token = SessionToken(7);
        // The server read the hello under another name: the prologues differ.
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint).unwrap();
        let bob = UserName::parse("bob").unwrap();
        let answered = answer(&server, &bob, endpoint, &hello, token).unwrap();
        assert!(login.finish(&answered.reply).is_err());
        // A bit flipped in transit.
        let (login, hello) = LoginHandshake::start(&client, &name, endpoint).unwrap();
        let mut reply = answer(&server, &name, endpoint, &hello, token)
            .unwrap()
            .reply;
        reply[REPLY_BYTES - 1] ^= 1;
        assert!(login.finish(&reply).is_err());
        // Someone who claims alice's public key without her private key
        // cannot read the token.
        let (_, hello) = LoginHandshake::start(&client, &name, endpoint).unwrap();
        let impostor = Identity::generate();
        let (login, mut forged) = LoginHandshake::start(&impostor, &name, endpoint).unwrap();
        forged[KEY_BYTES..].copy_from_slice(&hello[KEY_BYTES..]);
        let answered = answer(&server, &name, endpoint, &forged, token).unwrap();
        assert_eq!(answered.client, client.public());
        assert!(login.finish(&answered.reply).is_err());
    }
}
