//! Standard base64 decoding, for tus `Upload-Metadata` values and HTTP Basic
//! credentials.

/// Decodes standard base64 (`A-Z a-z 0-9 + /`), with or without `=` padding.
/// `None` for any other character, misplaced padding or an impossible length.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let pads = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pads > 2 || (pads > 0 && bytes.len() % 4 != 0) {
        return None;
    }
    let body = &bytes[..bytes.len() - pads];
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_and_without_padding() {
        let rows: &[(&str, &[u8])] = &[
            ("", b""),
            ("YQ==", b"a"),
            ("YQ", b"a"),
            ("YWI=", b"ab"),
            ("YWI", b"ab"),
            ("YWJj", b"abc"),
            ("aGVsbG8gd29ybGQ=", b"hello world"),
            ("+/8=", &[0xfb, 0xff]),
            ("w6lsw6h2ZS50eHQ", "élève.txt".as_bytes()),
        ];
        for (text, want) in rows {
            assert_eq!(decode(text).as_deref(), Some(*want), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_base64() {
        for text in [
            "Y", "YQ=", "Y===", "=", "==", "YQ==YQ==", "YQ=a", "a-b_", "YW I=", "YWJj\n", "é",
            "YWJjZ===",
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }
}
