//! Fetching the roster snapshot over TCP: connect, read one .NET
//! `BinaryWriter` string, parse it. Bounded in time and size.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pigeon_shared::roster_snapshot::{decode_frame, encode_roster_request};
use pigeon_shared::{RosterError, RosterSnapshot, SessionToken, UserName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest roster accepted (bytes of text).
pub const MAX_ROSTER_BYTES: usize = 16 << 20;

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
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| FetchError::Connect { addr, source })?;
    if let Some((name, token)) = as_user {
        let mut request = Vec::new();
        encode_roster_request(&name, token, &mut request);
        stream
            .write_all(&request)
            .await
            .map_err(|source| FetchError::Read { addr, source })?;
    }
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Stop as soon as one whole string is in; the server closes anyway.
        if let Some((text, _)) = decode_frame(&buf, MAX_ROSTER_BYTES)
            .map_err(|source| FetchError::Malformed { addr, source })?
        {
            return RosterSnapshot::parse(&text)
                .map_err(|source| FetchError::Malformed { addr, source });
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
