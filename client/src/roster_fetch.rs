//! Fetching the roster snapshot over TCP: connect, read one .NET
//! `BinaryWriter` string, parse it. Bounded in time and size. The mailbox
//! requests go the same way ([`ask_mailbox`]).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pigeon_shared::mailbox::{MailAnswer, MailRequest};
use pigeon_shared::roster_snapshot::{decode_frame, encode_roster_request, put_dotnet_string};
use pigeon_shared::{RosterError, RosterSnapshot, SessionToken, UserName};

use crate::session::MailboxAccess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest roster accepted (bytes of text).
pub const MAX_ROSTER_BYTES: usize = 16 << 20;

/// Largest mailbox answer accepted (a fetch of the most messages, each
/// the largest, in base64).
pub const MAX_MAIL_ANSWER_BYTES: usize = 32 << 20;

/// Why a roster could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading from {addr} failed: {source}")]
    Read {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} closed the connection before the roster was complete")]
    Truncated { addr: SocketAddr },
    #[error("{addr} sent a bad roster: {source}")]
    Malformed {
        addr: SocketAddr,
        source: RosterError,
    },
    #[error("no roster from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} did not answer the mailbox request")]
    NoAnswer { addr: SocketAddr },
}

/// Asks the mailbox at `addr` (the Pigeon roster port) as `name` with
/// `token`.
pub async fn ask_mailbox(
    access: &MailboxAccess,
    timeout: Duration,
    request: &MailRequest,
) -> Result<MailAnswer, FetchError> {
    let addr = access.addr;
    let mut bytes = Vec::new();
    put_dotnet_string(
        &mut bytes,
        &request.to_text(&access.name, access.token, &access.key),
    );
    let asked = exchange(addr, Some(bytes), MAX_MAIL_ANSWER_BYTES);
    let text = match tokio::time::timeout(timeout, asked).await {
        Ok(result) => result?,
        Err(_) => return Err(FetchError::Timeout { addr, timeout }),
    };
    MailAnswer::parse(&text).ok_or(FetchError::NoAnswer { addr })
}

/// Fetches and parses the roster served at `addr`; on a Pigeon roster port,
/// first says who asks (`as_user`).
pub async fn fetch_roster(
    addr: SocketAddr,
    timeout: Duration,
    as_user: Option<(UserName, SessionToken)>,
) -> Result<RosterSnapshot, FetchError> {
    match tokio::time::timeout(timeout, fetch(addr, as_user)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { addr, timeout }),
    }
}

async fn fetch(
    addr: SocketAddr,
    as_user: Option<(UserName, SessionToken)>,
) -> Result<RosterSnapshot, FetchError> {
    let request = as_user.map(|(name, token)| {
        let mut request = Vec::new();
        encode_roster_request(&name, token, &mut request);
        request
    });
    let text = exchange(addr, request, MAX_ROSTER_BYTES).await?;
    RosterSnapshot::parse(&text).map_err(|source| FetchError::Malformed { addr, source })
}

/// Connects, writes `request` (if any), and reads one string back.
async fn exchange(
    addr: SocketAddr,
    request: Option<Vec<u8>>,
    max: usize,
) -> Result<String, FetchError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| FetchError::Connect { addr, source })?;
    if let Some(request) = request {
        stream
            .write_all(&request)
            .await
            .map_err(|source| FetchError::Read { addr, source })?;
    }
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Stop as soon as one whole string is in; the server closes anyway.
        if let Some((text, _)) =
            decode_frame(&buf, max).map_err(|source| FetchError::Malformed { addr, source })?
        {
            return Ok(text);
        }
        let read = stream
            .read_buf(&mut buf)
            .await
            .map_err(|source| FetchError::Read { addr, source })?;
        if read == 0 {
            return Err(FetchError::Truncated { addr });
        }
    }
}
