//! `Tus::parse_metadata` and `Tus::name_from_metadata` on any header value
//! (`Upload-Metadata: key base64,key2 base64,…`). Checks:
//! - nothing panics;
//! - keys are non-empty, hold no comma and no ASCII whitespace, and are
//!   unique;
//! - a parsed header, encoded again (`key` alone for an empty value, else
//!   `key base64`), parses to the same pairs and names the same file: the
//!   parse is a fixed point of its own re-encoding;
//! - the chosen name is one of the values, and not empty.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tinydrop::tus::Tus;

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn encode(pairs: &[(String, Vec<u8>)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k} {}", b64(v))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fuzz_target!(|data: &[u8]| {
    let header = String::from_utf8_lossy(data);
    let Ok(pairs) = Tus::parse_metadata(&header) else {
        return;
    };
    for (i, (k, _)) in pairs.iter().enumerate() {
        assert!(!k.is_empty(), "{header:?}: an empty key");
        assert!(
            !k.contains(',') && !k.bytes().any(|b| b.is_ascii_whitespace()),
            "{header:?}: key {k:?}"
        );
        assert!(
            pairs[..i].iter().all(|(other, _)| other != k),
            "{header:?}: key {k:?} twice"
        );
    }
    let name = Tus::name_from_metadata(&pairs);
    if let Ok(Some(n)) = &name {
        assert!(!n.is_empty(), "{header:?}: an empty name");
        assert!(
            pairs.iter().any(|(_, v)| v == n.as_bytes()),
            "{header:?}: the name {n:?} is no value"
        );
    }
    let again = encode(&pairs);
    let reparsed = Tus::parse_metadata(&again)
        .unwrap_or_else(|e| panic!("{header:?} -> {again:?} refused: {e}"));
    assert_eq!(
        reparsed, pairs,
        "{header:?} -> {again:?} parses differently"
    );
    let name_again = Tus::name_from_metadata(&reparsed);
    assert_eq!(
        format!("{name_again:?}"),
        format!("{name:?}"),
        "{header:?} -> {again:?}: another name"
    );
});
