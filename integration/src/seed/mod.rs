//! Seed-faithful peers: a server and a client that behave like the C# code of
//! the original design (the tutorial "实现类似QQ的即时通信程序", sections 2.2
//! and 3), written again in plain Rust so that end-to-end tests can prove that
//! Pigeon interoperates with programs built from that design.
//!
//! These peers reproduce the seed **deliberately, defects included**; they are
//! test fixtures, not examples of good code. In particular:
//!
//! - payloads are .NET `Encoding.Unicode` (UTF-16LE, no BOM), decoded lossily;
//! - messages are cut with .NET `Split(',')`, and a missing field or a parse
//!   failure in a receive loop *ends that loop* (the seed's `catch { break; }`);
//! - the seed server parses field 2 of **every** datagram as `ip:port` before it
//!   looks at the verb, so anything else stops it for good;
//! - the seed client keeps only field 3 of `talk`, truncating the text at a comma;
//! - every send goes out from a fresh anonymous socket bound to `0.0.0.0:0`
//!   (the seed's `new UdpClient(0)`), so the source port is never the sender's
//!   receiving port.
//!
//! They use only the standard library and share no code with Pigeon, so they
//! are an independent reading of the seed. What the seed does not show (the
//! chat window, the list view helpers) is written down as an assumption where
//! it is implemented.
//!
//! This module holds the pieces both peers need: the .NET text encodings, the
//! .NET `Split` and `int.Parse` semantics, and the `BinaryWriter` /
//! `BinaryReader` string framing used for the TCP roster.

pub mod client;
pub mod server;

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest string [`read_dotnet_string`] accepts from a peer (8 MiB). .NET
/// would accept up to `int.MaxValue`; the cap keeps a broken peer from making
/// a test allocate gigabytes.
pub const MAX_DOTNET_STRING: usize = 8 * 1024 * 1024;

/// How long the peers' blocking socket calls wait before they look at their
/// stop flag again. The seed blocks forever; the timeout exists only so that
/// tests can shut the peers down.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// .NET `Encoding.Unicode.GetBytes(s)`: UTF-16 little-endian, no byte order
/// mark.
pub fn encode_unicode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// .NET `Encoding.Unicode.GetString(bytes, 0, bytes.Length)`: UTF-16
/// little-endian, lossy. Unpaired surrogates and an odd trailing byte each
/// become U+FFFD, as with .NET's default replacement fallback.
pub fn decode_unicode(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let mut text = String::from_utf16_lossy(&units);
    if bytes.len() % 2 == 1 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// .NET `s.Split(separator)`: every piece, empty ones included; an empty
/// string gives one empty piece. Rust's `str::split` has the same semantics.
pub fn dotnet_split(text: &str, separator: char) -> Vec<&str> {
    text.split(separator).collect()
}

/// .NET `int.Parse(s)` with the default `NumberStyles.Integer`: optional
/// leading and trailing white space, an optional sign, then decimal digits.
/// Returns `None` where .NET throws (`FormatException`, `OverflowException`).
pub fn dotnet_int_parse(text: &str) -> Option<i32> {
    let trimmed =
        text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r'));
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: i64 = 0;
    for digit in digits.bytes() {
        value = value * 10 + i64::from(digit - b'0');
        if value > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    let value = if negative { -value } else { value };
    i32::try_from(value).ok()
}

/// The seed's endpoint parsing, as written in both the server's
/// `ReceiveMessage` and (by assumption) the chat window:
///
/// ```csharp
/// string[] splitsubstring = text.Split(':');
/// new IPEndPoint(IPAddress.Parse(splitsubstring[0]), int.Parse(splitsubstring[1]));
/// ```
///
/// Pieces after the second are ignored. The address is parsed with Rust's
/// `IpAddr::from_str`, which accepts a little less than .NET's
/// `IPAddress.Parse` (no `127.1` shorthand). Because the text is split on every
/// `:`, an IPv6 endpoint never parses (`"[::1]:5"` gives `"["`), exactly as in
/// the seed. The port must lie in `0..=65535` (the `IPEndPoint` constructor
/// throws otherwise).
pub fn parse_seed_endpoint(text: &str) -> Result<SocketAddr, String> {
    let parts = dotnet_split(text, ':');
    let address = parts
        .first()
        .ok_or_else(|| format!("no address in {text:?}"))?;
    let address =
        IpAddr::from_str(address).map_err(|_| format!("IPAddress.Parse failed on {address:?}"))?;
    let port = parts
        .get(1)
        .ok_or_else(|| format!("index out of range: no port in {text:?}"))?;
    let port = dotnet_int_parse(port).ok_or_else(|| format!("int.Parse failed on {port:?}"))?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} out of range"))?;
    Ok(SocketAddr::new(address, port))
}

/// .NET `IPEndPoint.ToString()`: `1.2.3.4:5` or `[::1]:5` (with a `%scope`
/// when there is one). Rust's `SocketAddr` display gives the same text.
pub fn dotnet_endpoint_string(endpoint: SocketAddr) -> String {
    endpoint.to_string()
}

/// .NET `BinaryWriter.Write(string)`: the UTF-8 byte count as a 7-bit encoded
/// integer (LEB128, low group first), then the UTF-8 bytes.
pub fn write_dotnet_string(writer: &mut impl Write, text: &str) -> io::Result<()> {
    let mut frame = Vec::with_capacity(text.len() + 5);
    // The length is an `int`, so the encoder sees it as unsigned 32 bits.
    let mut length = u32::try_from(text.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string too long for .NET"))?;
    while length >= 0x80 {
        frame.push((length as u8) | 0x80);
        length >>= 7;
    }
    frame.push(length as u8);
    frame.extend_from_slice(text.as_bytes());
    writer.write_all(&frame)
}

/// .NET `BinaryReader.ReadString()` with the default UTF-8 encoding: a 7-bit
/// encoded length (at most five bytes, else `FormatException`; negative is an
/// `IOException`), then that many UTF-8 bytes decoded with replacement.
/// Lengths above `max_len` are refused.
///
/// `stop`, when given, is consulted whenever a read times out (set a read
/// timeout on the stream): a set flag ends the read with an error, a clear one
/// keeps waiting, so a blocking .NET read can be imitated without leaking
/// threads.
pub fn read_dotnet_string(
    reader: &mut impl Read,
    max_len: usize,
    stop: Option<&AtomicBool>,
) -> io::Result<String> {
    // Read7BitEncodedInt as in .NET Framework: bits past 32 are dropped.
    let mut count: u32 = 0;
    let mut shift = 0u32;
    loop {
        if shift == 5 * 7 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "FormatException: bad 7-bit encoded Int32",
            ));
        }
        let mut byte = [0u8; 1];
        read_exact_interruptible(reader, &mut byte, stop)?;
        count |= u32::from(byte[0] & 0x7F).wrapping_shl(shift);
        shift += 7;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let count = count as i32;
    if count < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("IOException: invalid string length {count}"),
        ));
    }
    let count = count as usize;
    if count > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("string of {count} bytes exceeds the {max_len}-byte cap"),
        ));
    }
    let mut bytes = vec![0u8; count];
    read_exact_interruptible(reader, &mut bytes, stop)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `read_exact` that survives read timeouts until `stop` is set.
fn read_exact_interruptible(
    reader: &mut impl Read,
    mut buf: &mut [u8],
    stop: Option<&AtomicBool>,
) -> io::Result<()> {
    while !buf.is_empty() {
        match reader.read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EndOfStreamException",
                ))
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => match stop {
                Some(flag) if !flag.load(Ordering::SeqCst) => {}
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Largest datagram the receive loop accepts (`UdpClient.Receive` uses a
/// 64 KiB buffer).
const MAX_DATAGRAM: usize = 65_536;

/// The receive loop of both seed peers' `ReceiveMessage`: each datagram is
/// decoded as `Encoding.Unicode` and given to `handle` with its sender, until
/// `handle` fails (the seed's `catch { break; }`), the socket fails, or `stop`
/// is set (checked at each read timeout). Returns why it ended.
pub(crate) fn receive_loop(
    socket: &UdpSocket,
    stop: &AtomicBool,
    mut handle: impl FnMut(&str, SocketAddr) -> Result<(), String>,
) -> String {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if stop.load(Ordering::SeqCst) {
                    return "stopped".to_string();
                }
                continue;
            }
            Err(e) => return format!("receive failed: {e}"),
        };
        if stop.load(Ordering::SeqCst) {
            return "stopped".to_string();
        }
        let message = decode_unicode(buf.get(..len).unwrap_or_default());
        if let Err(reason) = handle(&message, remote) {
            return reason;
        }
    }
}

/// Whether an I/O error is a read timeout (the platform reports either kind).
pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The seed's anonymous send (`new UdpClient(0)`, `Send`, `Close`): a new IPv4
/// socket bound to `0.0.0.0:0`, one datagram of `Encoding.Unicode` bytes,
/// then the socket is dropped.
pub fn send_anonymous(message: &str, to: SocketAddr) -> io::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", 0))?;
    socket.send_to(&encode_unicode(message), to)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_round_trip_and_lossy_decode() {
        let bytes = encode_unicode("login,张三,127.0.0.1:5");
        assert_eq!(&bytes[..4], &[b'l', 0, b'o', 0]);
        assert_eq!(decode_unicode(&bytes), "login,张三,127.0.0.1:5");
        assert_eq!(decode_unicode(&[b'a', 0, b'b']), "a\u{FFFD}");
        assert_eq!(decode_unicode(&[0x00, 0xD8, b'a', 0]), "\u{FFFD}a");
    }

    #[test]
    fn split_keeps_empty_pieces() {
        assert_eq!(dotnet_split("", ','), vec![""]);
        assert_eq!(dotnet_split("a,,b,", ','), vec!["a", "", "b", ""]);
    }

    #[test]
    fn int_parse_like_dotnet() {
        assert_eq!(dotnet_int_parse(" +42 "), Some(42));
        assert_eq!(dotnet_int_parse("-7"), Some(-7));
        assert_eq!(dotnet_int_parse("-2147483648"), Some(i32::MIN));
        assert_eq!(dotnet_int_parse("2147483648"), None);
        assert_eq!(dotnet_int_parse(""), None);
        assert_eq!(dotnet_int_parse("1 2"), None);
        assert_eq!(dotnet_int_parse("0x10"), None);
    }

    #[test]
    fn endpoint_parse_like_the_seed() {
        assert_eq!(
            parse_seed_endpoint("127.0.0.1:80:junk"),
            Ok("127.0.0.1:80".parse().unwrap())
        );
        assert!(parse_seed_endpoint("hello").is_err());
        assert!(parse_seed_endpoint("[::1]:5").is_err());
        assert!(parse_seed_endpoint("127.0.0.1:65536").is_err());
        assert!(parse_seed_endpoint("127.0.0.1:-1").is_err());
    }

    #[test]
    fn binary_writer_string_round_trip() {
        let long = "x".repeat(300);
        for text in ["", "end", "张三,127.0.0.1:5;end", long.as_str()] {
            let mut frame = Vec::new();
            write_dotnet_string(&mut frame, text).unwrap();
            let read = read_dotnet_string(&mut frame.as_slice(), MAX_DOTNET_STRING, None).unwrap();
            assert_eq!(read, text);
        }
        let mut frame = Vec::new();
        write_dotnet_string(&mut frame, &long).unwrap();
        assert_eq!(&frame[..2], &[0xAC, 0x02]);
    }

    #[test]
    fn binary_reader_refuses_bad_lengths() {
        let too_many_groups = [0x80u8, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(read_dotnet_string(&mut &too_many_groups[..], 100, None).is_err());
        let negative = [0xFFu8, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(read_dotnet_string(&mut &negative[..], 100, None).is_err());
        let over_cap = [0x10u8];
        assert!(read_dotnet_string(&mut &over_cap[..], 8, None).is_err());
        let truncated = [0x05u8, b'a'];
        assert!(read_dotnet_string(&mut &truncated[..], 100, None).is_err());
    }
}
