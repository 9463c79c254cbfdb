//! The roster the server writes on its TCP ports: one .NET `BinaryWriter`
//! string holding `n1,ip:port;n2,ip:port;...;end` (the seed's format), or,
//! on the Pigeon roster port, the same with a revision header and each
//! user's instance id: `pigeon1 42;n1,ip:port,iid;n2,ip:port,-;...;end`.
//!
//! ```text
//! 7-bit length (LEB128, 1..=5 bytes) | UTF-8 text of that many bytes
//! 0x1C                               | "bob,127.0.0.1:5000;end"
//! ```
//!
//! The reader is incremental ([`decode_frame`] says when it needs more
//! bytes) and bounded (a length over the caller's limit is refused before
//! anything is buffered).

use bytes::BufMut;

use crate::datagram::PIGEON_TAG;
use crate::endpoint::PeerAddr;
use crate::identity::PublicKey;
use crate::ids::{InstanceId, Revision, SessionToken};
use crate::name::UserName;

/// The text that ends every roster.
pub const END_MARK: &str = "end";

/// Most bytes a 7-bit encoded `Int32` takes.
const MAX_VARINT_BYTES: usize = 5;

/// One user in a roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    pub name: UserName,
    pub endpoint: PeerAddr,
    /// The user's instance id, for a Pigeon client listed in a Pigeon-format
    /// roster; `None` for a seed-era client or a seed-format roster.
    pub instance: Option<InstanceId>,
    /// The user's public key, for a Pigeon client with one, in a
    /// Pigeon-format roster.
    pub key: Option<PublicKey>,
}

/// A decoded roster. Entries this version cannot represent (a seed server
/// accepts any name) are reported in `skipped` instead of failing the
/// whole roster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterSnapshot {
    /// The roster's revision, in a Pigeon-format roster.
    pub revision: Option<Revision>,
    pub entries: Vec<RosterEntry>,
    pub skipped: Vec<SkippedEntry>,
}

/// An entry that was left out, with an excerpt and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    pub excerpt: String,
    pub reason: String,
}

/// Why bytes are not a roster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("the length prefix is not a 7-bit encoded Int32")]
    BadLength,
    #[error("the roster is {len} bytes, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("the roster is not UTF-8")]
    NotUtf8,
    #[error("the roster does not end with \";end\"")]
    NoEndMark,
    #[error("the roster's revision is not a number")]
    BadRevision,
}

/// Most entries reserved ahead of parsing (the text's length bounds the
/// count anyway; this bounds the reservation made before any is read).
const MAX_RESERVED_ENTRIES: usize = 1 << 20;

/// Most skipped entries kept in a [`RosterSnapshot`]; more are counted in
/// the last one's reason.
const MAX_SKIPPED_KEPT: usize = 16;

/// Which of the two roster texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterFormat {
    /// `n1,ip:port;...;end`, as the seed writes it.
    Seed,
    /// `pigeon1 <rev>;n1,ip:port,iid;...;end`.
    Pigeon,
}

/// The start of a Pigeon-format roster text: `pigeon1 <revision>;`.
pub fn pigeon_roster_header(revision: Revision) -> String {
    format!("{PIGEON_TAG} {revision};")
}

/// One user's roster line as the Pigeon format writes it,
/// `name,ip:port,iid[,key]` (`-` for no instance id; the key in 64 hex
/// digits where the user has one), and the length of its
/// start `name,ip:port`, which is the seed format's line. A server renders
/// each user's line once and writes every snapshot from these.
pub fn roster_line(
    name: &UserName,
    endpoint: &PeerAddr,
    instance: Option<InstanceId>,
    key: Option<PublicKey>,
) -> (String, usize) {
    let seed = format!("{name},{endpoint}");
    let seed_len = seed.len();
    let mut line = match instance {
        Some(iid) => format!("{seed},{iid}"),
        None => format!("{seed},-"),
    };
    if let Some(key) = key {
        line.push(',');
        line.push_str(&key.to_string());
    }
    (line, seed_len)
}

/// Appends a roster in `format` as one `BinaryWriter` string, from lines
/// made by [`roster_line`] (each given with the length of its seed-format
/// start): the header (Pigeon format, at `revision`), each line (cut to
/// its seed-format start in the seed format) and `;`, then `end`. The one
/// encoder of rosters: [`encode_roster`], [`encode_pigeon_roster`] and the
/// server's snapshots all write through it.
pub fn encode_roster_lines<'a>(
    format: RosterFormat,
    revision: Revision,
    lines: impl IntoIterator<Item = (&'a str, usize)>,
    buf: &mut impl BufMut,
) {
    let mut text = match format {
        RosterFormat::Pigeon => pigeon_roster_header(revision),
        RosterFormat::Seed => String::new(),
    };
    for (line, seed_len) in lines {
        let line = match format {
            RosterFormat::Pigeon => line,
            RosterFormat::Seed => line.get(..seed_len).unwrap_or(line),
        };
        text.push_str(line);
        text.push(';');
    }
    text.push_str(END_MARK);
    put_dotnet_string(buf, &text);
}

/// Appends the Pigeon-format roster at `revision` as one `BinaryWriter`
/// string.
pub fn encode_pigeon_roster<'a>(
    revision: Revision,
    entries: impl IntoIterator<
        Item = (
            &'a UserName,
            &'a PeerAddr,
            Option<InstanceId>,
            Option<PublicKey>,
        ),
    >,
    buf: &mut impl BufMut,
) {
    let lines: Vec<(String, usize)> = entries
        .into_iter()
        .map(|(name, endpoint, instance, key)| roster_line(name, endpoint, instance, key))
        .collect();
    encode_roster_lines(
        RosterFormat::Pigeon,
        revision,
        lines.iter().map(|(line, len)| (line.as_str(), *len)),
        buf,
    );
}

/// Most bytes of a roster request.
pub const MAX_REQUEST_BYTES: usize = 256;

/// Appends the request a Pigeon client writes on the Pigeon roster port
/// before it reads: `pigeon1 <name> <token>`, one `BinaryWriter` string.
/// It tells the server who fetched the roster (at which revision), so that
/// deltas start reaching that client then, and not before.
pub fn encode_roster_request(name: &UserName, token: SessionToken, buf: &mut impl BufMut) {
    put_dotnet_string(buf, &format!("{PIGEON_TAG} {name} {token}"));
}

/// Reads a roster request's text.
pub fn parse_roster_request(text: &str) -> Option<(UserName, SessionToken)> {
    let mut words = text.split(' ');
    if words.next()? != PIGEON_TAG {
        return None;
    }
    let name = UserName::parse(words.next()?).ok()?;
    let token = SessionToken::parse(words.next()?)?;
    words.next().is_none().then_some((name, token))
}

/// Appends the seed-format roster of `entries` as one `BinaryWriter` string.
pub fn encode_roster<'a>(
    entries: impl IntoIterator<Item = (&'a UserName, &'a PeerAddr)>,
    buf: &mut impl BufMut,
) {
    let lines: Vec<(String, usize)> = entries
        .into_iter()
        .map(|(name, endpoint)| roster_line(name, endpoint, None, None))
        .collect();
    encode_roster_lines(
        RosterFormat::Seed,
        0,
        lines.iter().map(|(line, len)| (line.as_str(), *len)),
        buf,
    );
}

/// Appends `text` the way .NET's `BinaryWriter.Write(string)` does.
pub fn put_dotnet_string(buf: &mut impl BufMut, text: &str) {
    let mut len = text.len();
    loop {
        // Truncation to the low seven bits is the encoding.
        let low = (len & 0x7F) as u8;
        len >>= 7;
        if len == 0 {
            buf.put_u8(low);
            break;
        }
        buf.put_u8(low | 0x80);
    }
    buf.put_slice(text.as_bytes());
}

/// Reads one `BinaryWriter` string from the front of `buf`.
///
/// `Ok(None)`: the string is not complete yet. `Ok(Some((text, used)))`: the
/// text and how many bytes it took. A declared length over `max_len` is an
/// error at once.
pub fn decode_frame(buf: &[u8], max_len: usize) -> Result<Option<(String, usize)>, RosterError> {
    let mut len: u64 = 0;
    let mut prefix = 0;
    loop {
        let Some(&byte) = buf.get(prefix) else {
            return Ok(None);
        };
        if prefix == MAX_VARINT_BYTES {
            return Err(RosterError::BadLength);
        }
        len |= u64::from(byte & 0x7F) << (7 * prefix);
        prefix += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if len > i32::MAX as u64 {
        return Err(RosterError::BadLength);
    }
    let len = usize::try_from(len).map_err(|_| RosterError::BadLength)?;
    if len > max_len {
        return Err(RosterError::TooLong { len, max: max_len });
    }
    let Some(body) = buf.get(prefix..prefix + len) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(body).map_err(|_| RosterError::NotUtf8)?;
    Ok(Some((text.to_owned(), prefix + len)))
}

impl RosterSnapshot {
    /// Parses roster text in either format.
    pub fn parse(text: &str) -> Result<Self, RosterError> {
        let mut snapshot = Self::default();
        let mut text = text;
        if let Some(rest) = text
            .strip_prefix(PIGEON_TAG)
            .and_then(|t| t.strip_prefix(' '))
        {
            let (revision, rest) = rest.split_once(';').ok_or(RosterError::NoEndMark)?;
            snapshot.revision =
                Some(crate::ids::parse_decimal(revision).ok_or(RosterError::BadRevision)?);
            text = rest;
        }
        let body = if text == END_MARK {
            ""
        } else {
            text.strip_suffix(END_MARK)
                .and_then(|t| t.strip_suffix(';'))
                .ok_or(RosterError::NoEndMark)?
        };
        let mut skipped_total = 0usize;
        // One entry per `;`-separated item: no growing and copying of the
        // entries as they come.
        let items = body.bytes().filter(|&b| b == b';').count() + 1;
        snapshot
            .entries
            .reserve_exact(items.min(MAX_RESERVED_ENTRIES));
        for item in body.split(';').filter(|_| !body.is_empty()) {
            match parse_entry(item) {
                Ok(entry) => snapshot.entries.push(entry),
                Err(reason) => {
                    skipped_total += 1;
                    if snapshot.skipped.len() < MAX_SKIPPED_KEPT {
                        snapshot.skipped.push(SkippedEntry {
                            excerpt: item.chars().take(48).collect(),
                            reason,
                        });
                    }
                }
            }
        }
        if skipped_total > MAX_SKIPPED_KEPT {
            if let Some(last) = snapshot.skipped.last_mut() {
                last.reason = format!(
                    "{} (and {} more entries skipped)",
                    last.reason,
                    skipped_total - MAX_SKIPPED_KEPT
                );
            }
        }
        Ok(snapshot)
    }
}

fn parse_entry(item: &str) -> Result<RosterEntry, String> {
    let mut fields = item.split(',');
    let name = fields.next().unwrap_or_default();
    let endpoint = fields
        .next()
        .ok_or_else(|| "no comma between name and endpoint".to_owned())?;
    let instance = match fields.next() {
        None | Some("-") => None,
        Some(iid) => {
            Some(InstanceId::parse(iid).ok_or_else(|| format!("bad instance id {iid:?}"))?)
        }
    };
    // Fields past the key are for later versions.
    let key = match fields.next() {
        None => None,
        Some(key) => Some(PublicKey::parse(key).ok_or_else(|| format!("bad key {key:?}"))?),
    };
    let name = UserName::parse(name).map_err(|e| e.to_string())?;
    let endpoint = PeerAddr::parse(endpoint).map_err(|e| e.to_string())?;
    Ok(RosterEntry {
        name,
        endpoint,
        instance,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, addr: &str) -> (UserName, PeerAddr) {
        (
            UserName::parse(name).unwrap(),
            PeerAddr::parse(addr).unwrap(),
        )
    }

    #[test]
    fn seed_roster_bytes_are_exact() {
        let users = [entry("bob", "127.0.0.1:5000")];
        let mut buf = Vec::new();
        encode_roster(users.iter().map(|(n, a)| (n, a)), &mut buf);
        let mut expected = vec![0x16];
        expected.extend_from_slice(b"bob,127.0.0.1:5000;end");
        assert_eq!(buf, expected);
        let (text, used) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(used, buf.len());
        let snapshot = RosterSnapshot::parse(&text).unwrap();
        assert_eq!(snapshot.entries.len(), 1);
        assert_eq!(snapshot.entries[0].name.as_str(), "bob");
    }

    #[test]
    fn empty_roster_is_just_end() {
        let mut buf = Vec::new();
        encode_roster(std::iter::empty(), &mut buf);
        assert_eq!(buf, b"\x03end");
        assert_eq!(
            RosterSnapshot::parse("end").unwrap(),
            RosterSnapshot::default()
        );
    }

    #[test]
    fn lengths_over_127_take_more_prefix_bytes() {
        let text = "x".repeat(300);
        let mut buf = Vec::new();
        put_dotnet_string(&mut buf, &text);
        // 300 = 0b10_0101100: low seven bits with the continuation bit, then 2.
        assert_eq!(&buf[..2], &[0xAC, 0x02]);
        assert_eq!(decode_frame(&buf, 1000).unwrap().unwrap().0, text);
    }

    #[test]
    fn chinese_names_count_utf8_bytes() {
        let users = [entry("天涯", "192.168.0.2:8000"), entry("剑痴", "[::1]:9")];
        let mut buf = Vec::new();
        encode_roster(users.iter().map(|(n, a)| (n, a)), &mut buf);
        let text = "天涯,192.168.0.2:8000;剑痴,[::1]:9;end";
        assert_eq!(usize::from(buf[0]), text.len());
        let (decoded, _) = decode_frame(&buf, 1000).unwrap().unwrap();
        assert_eq!(decoded, text);
        let snapshot = RosterSnapshot::parse(&decoded).unwrap();
        assert_eq!(
            snapshot
                .entries
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["天涯", "剑痴"]
        );
    }

    #[test]
    fn incomplete_frames_ask_for_more() {
        let mut buf = Vec::new();
        put_dotnet_string(&mut buf, &"y".repeat(200));
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut], 1000), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bad_prefixes_and_oversize_lengths_are_refused() {
        assert_eq!(
            decode_frame(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 10),
            Err(RosterError::BadLength)
        );
        assert_eq!(
            decode_frame(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F], usize::MAX),
            Err(RosterError::BadLength)
        );
        assert_eq!(
            decode_frame(&[0x80, 0x80, 0x01], 100),
            Err(RosterError::TooLong {
                len: 16384,
                max: 100
            })
        );
        assert_eq!(
            decode_frame(&[0x02, 0xC3, 0x28], 100),
            Err(RosterError::NotUtf8)
        );
    }

    #[test]
    fn rosters_must_end_with_end() {
        assert_eq!(RosterSnapshot::parse(""), Err(RosterError::NoEndMark));
        assert_eq!(
            RosterSnapshot::parse("bob,1.2.3.4:5;"),
            Err(RosterError::NoEndMark)
        );
        assert_eq!(
            RosterSnapshot::parse("bob,1.2.3.4:5end"),
            Err(RosterError::NoEndMark)
        );
    }

    #[test]
    fn pigeon_rosters_carry_a_revision_and_instance_ids() {
        let (alice, alice_at) = entry("alice", "127.0.0.1:5000");
        let (old, old_at) = entry("old", "127.0.0.1:6000");
        let iid = InstanceId(0x1234);
        let mut buf = Vec::new();
        encode_pigeon_roster(
            7,
            [
                (&alice, &alice_at, Some(iid), Some(PublicKey([0xab; 32]))),
                (&old, &old_at, None, None),
            ],
            &mut buf,
        );
        let (text, _) = decode_frame(&buf, 1000).unwrap().unwrap();
        assert_eq!(
            text,
            format!(
                "pigeon1 7;alice,127.0.0.1:5000,0000000000001234,{};old,127.0.0.1:6000,-;end",
                "ab".repeat(32)
            )
        );
        let snapshot = RosterSnapshot::parse(&text).unwrap();
        assert_eq!(snapshot.revision, Some(7));
        assert_eq!(snapshot.entries[0].instance, Some(iid));
        assert_eq!(snapshot.entries[0].key, Some(PublicKey([0xab; 32])));
        assert_eq!(snapshot.entries[1].instance, None);
        assert_eq!(snapshot.entries[1].key, None);
        // A key that does not read skips its entry, not the roster; fields
        // past the key are for later versions.
        let snapshot =
            RosterSnapshot::parse("pigeon1 7;a,1.2.3.4:5,-,zz;b,1.2.3.4:6,-,-;end").unwrap();
        assert_eq!(snapshot.entries.len(), 0);
        assert_eq!(snapshot.skipped.len(), 2);
        let later = format!("pigeon1 7;a,1.2.3.4:5,-,{},more;end", "01".repeat(32));
        assert_eq!(RosterSnapshot::parse(&later).unwrap().entries.len(), 1);
        assert_eq!(
            RosterSnapshot::parse("pigeon1 7;end").unwrap().revision,
            Some(7)
        );
        assert_eq!(
            RosterSnapshot::parse("pigeon1 x;end"),
            Err(RosterError::BadRevision)
        );
    }

    #[test]
    fn roster_requests_round_trip() {
        let name = UserName::parse("天涯").unwrap();
        let token = SessionToken(0xABC);
        let mut buf = Vec::new();
        encode_roster_request(&name, token, &mut buf);
        let (text, _) = decode_frame(&buf, MAX_REQUEST_BYTES).unwrap().unwrap();
        assert_eq!(text, format!("pigeon1 天涯 {token}"));
        assert_eq!(parse_roster_request(&text), Some((name, token)));
        for bad in [
            "",
            "pigeon1",
            "pigeon1 a",
            "pigeon2 a 00",
            "pigeon1 a b c",
            "pigeon1 a,b 0",
        ] {
            assert_eq!(parse_roster_request(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_this_version_cannot_hold_are_skipped_not_fatal() {
        let snapshot =
            RosterSnapshot::parse("Zhang San,1.2.3.4:5;bob,1.2.3.4:6;junk;eve,nowhere;end")
                .unwrap();
        assert_eq!(snapshot.entries.len(), 1);
        assert_eq!(snapshot.entries[0].name.as_str(), "bob");
        assert_eq!(snapshot.skipped.len(), 3);
    }
}
