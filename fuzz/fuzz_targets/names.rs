//! `SafeName::parse` on arbitrary strings. Whatever it accepts must be safe
//! to join to DIR:
//! - no empty, `.` or `..` segment, no leading `/`, no backslash;
//! - no NUL or other control character, no bidi override or isolate;
//! - the first segment is not `.tinydrop` in any case;
//! - segments of at most 255 bytes, at most 4096 bytes in all;
//! - no segment ends with a dot or a space (Windows would drop them);
//! - it does not start with a drive letter (`C:`), which Windows would read
//!   as another drive, and parsing it again gives the same name (a fixed
//!   point): the first fuzz run found `C:C:t` -> `C:t` -> `t` (see the
//!   ignored regression test in src/names.rs);
//! - every version name of its file name is itself a safe, stable segment.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tinydrop::names::{version_name, SafeName, MAX_NAME_BYTES, MAX_SEGMENT_BYTES, RESERVED_DIR};

fn assert_safe(name: &str, input: &str) {
    assert!(!name.is_empty(), "{input:?}: empty name");
    assert!(!name.starts_with('/'), "{input:?} -> {name:?}: absolute");
    assert!(!name.contains('\\'), "{input:?} -> {name:?}: backslash");
    assert!(!name.contains('\0'), "{input:?} -> {name:?}: NUL");
    assert!(
        !name.chars().any(char::is_control),
        "{input:?} -> {name:?}: control character"
    );
    assert!(
        !name
            .chars()
            .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
        "{input:?} -> {name:?}: bidi control"
    );
    assert!(
        name.len() <= MAX_NAME_BYTES,
        "{input:?}: {} bytes",
        name.len()
    );
    for (i, segment) in name.split('/').enumerate() {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{input:?} -> {name:?}: segment {segment:?}"
        );
        assert!(
            !segment.ends_with(['.', ' ']),
            "{input:?} -> {name:?}: segment {segment:?} ends with a dot or space"
        );
        assert!(
            segment.len() <= MAX_SEGMENT_BYTES,
            "{input:?}: long segment"
        );
        if i == 0 {
            assert!(
                !segment.eq_ignore_ascii_case(RESERVED_DIR),
                "{input:?} -> {name:?}: reserved first segment"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = SafeName::parse(input) else {
        return;
    };
    let s = name.as_str();
    assert_safe(s, input);
    let first = s.split('/').next().unwrap_or_default().as_bytes();
    assert!(
        !(first.len() >= 2 && first[0].is_ascii_alphabetic() && first[1] == b':'),
        "{input:?} -> {s:?}: starts with a drive letter"
    );
    let again = SafeName::parse(s).unwrap_or_else(|e| panic!("{input:?} -> {s:?} refused: {e}"));
    assert_eq!(again.as_str(), s, "{input:?}: not a fixed point");
    assert_eq!(name.segments().collect::<Vec<_>>().join("/"), s);
    let file = name.file_name();
    for n in [1, 9, 10, 9999] {
        let v = version_name(file, n);
        assert!(!v.contains('/'), "{file:?} ({n}) -> {v:?}");
        assert!(
            v.len() <= MAX_SEGMENT_BYTES,
            "{file:?} ({n}) -> {} bytes",
            v.len()
        );
        // A version is a segment inside the file's folder: it must survive
        // the rules there unchanged.
        let in_folder = format!("d/{v}");
        let parsed = SafeName::parse(&in_folder)
            .unwrap_or_else(|e| panic!("{file:?} version {n} {v:?} refused: {e}"));
        assert_eq!(
            parsed.as_str(),
            in_folder,
            "{file:?}: version {n} is not stable"
        );
    }
});
