//! UTF-16LE without a byte-order mark: .NET's `Encoding.Unicode`, the text
//! encoding of every seed datagram.

use bytes::BufMut;

/// Appends `text` as UTF-16LE.
pub fn put_utf16le(buf: &mut impl BufMut, text: &str) {
    for unit in text.encode_utf16() {
        buf.put_u16_le(unit);
    }
}

/// Bytes `text` takes as UTF-16LE.
pub fn utf16le_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum::<usize>() * 2
}

/// Why bytes are not UTF-16LE text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Utf16Error {
    #[error("{len} bytes is an odd length for UTF-16")]
    OddLength { len: usize },
    #[error("unpaired surrogate at code unit {unit}")]
    UnpairedSurrogate { unit: usize },
}

/// Decodes UTF-16LE strictly: an odd length or an unpaired surrogate is an
/// error, never a replacement character (a lossy decode would let two
/// different datagrams name the same user).
pub fn decode_utf16le(bytes: &[u8]) -> Result<String, Utf16Error> {
    if !bytes.len().is_multiple_of(2) {
        return Err(Utf16Error::OddLength { len: bytes.len() });
    }
    // Nearly every datagram is ASCII: every high byte zero, every low byte
    // below 0x80. Then the text is the low bytes, and is valid UTF-8.
    let mut ascii = Vec::with_capacity(bytes.len() / 2);
    let mut all_ascii = true;
    for pair in bytes.chunks_exact(2) {
        all_ascii &= pair[1] == 0 && pair[0] < 0x80;
        ascii.push(pair[0]);
    }
    if all_ascii {
        // ASCII is UTF-8, so this always succeeds.
        if let Ok(text) = String::from_utf8(ascii) {
            return Ok(text);
        }
    }
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len() / 2);
    let mut unit = 0;
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(ch) => {
                unit += ch.len_utf16();
                text.push(ch);
            }
            Err(_) => return Err(Utf16Error::UnpairedSurrogate { unit }),
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_chinese_encode_as_dotnet_unicode() {
        let mut buf = Vec::new();
        put_utf16le(&mut buf, "a,好");
        assert_eq!(buf, [0x61, 0x00, 0x2C, 0x00, 0x7D, 0x59]);
        assert_eq!(utf16le_len("a,好"), 6);
        assert_eq!(decode_utf16le(&buf).unwrap(), "a,好");
    }

    #[test]
    fn astral_characters_use_surrogate_pairs() {
        let mut buf = Vec::new();
        put_utf16le(&mut buf, "🐦");
        assert_eq!(buf, [0x3D, 0xD8, 0x26, 0xDC]);
        assert_eq!(utf16le_len("🐦"), 4);
        assert_eq!(decode_utf16le(&buf).unwrap(), "🐦");
    }

    #[test]
    fn odd_lengths_and_lone_surrogates_are_errors() {
        assert_eq!(
            decode_utf16le(&[0x61, 0x00, 0x62]),
            Err(Utf16Error::OddLength { len: 3 })
        );
        assert_eq!(
            decode_utf16le(&[0x61, 0x00, 0x3D, 0xD8]),
            Err(Utf16Error::UnpairedSurrogate { unit: 1 })
        );
        assert_eq!(
            decode_utf16le(&[0x26, 0xDC, 0x61, 0x00]),
            Err(Utf16Error::UnpairedSurrogate { unit: 0 })
        );
    }
}
