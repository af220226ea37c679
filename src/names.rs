//! Client file names made safe: from whatever a browser, curl or a tus client
//! sent to a relative path that stays inside the upload directory.
//!
//! A [`SafeName`] is only ever built by [`SafeName::parse`], so code that
//! holds one (the store) can join it to `DIR` without checking again. The
//! rules work on the client's text as a string, split on both `/` and `\`
//! here, and never through `std::path::Path`, whose parsing depends on the
//! server's operating system.
//!
//! # Security
//!
//! What `parse` does with each hostile spelling (one decision per row, all
//! covered by the table test at the bottom):
//!
//! - `/` and `\` both separate segments; empty segments (leading `/`, `//`,
//!   UNC `\\server\share`) are dropped, so an absolute name becomes relative.
//! - `.` and `..` are **dropped, never interpreted**: `../x` becomes `x`,
//!   `a/../../x` becomes `a/x`. More generally every segment loses its
//!   trailing dots and spaces (Windows ignores them, so `a.txt.` and `a.txt`
//!   are one file there), and a segment left empty is dropped: `...`, `   `
//!   and `. .` disappear too. Nothing can climb out of `DIR`.
//! - A drive letter (`C:`, `c:foo`) at the start of the first segment that
//!   is kept is removed (`C:\Windows\x` becomes `Windows/x`).
//! - NUL, C0 controls, DEL, C1 controls and the Unicode bidi overrides and
//!   isolates (U+202A..U+202E, U+2066..U+2069) are **rejected** (400), not
//!   silently removed: a name carrying them was crafted (`invoice\u{202E}fdp.exe`
//!   shows as `invoiceexe.pdf`), and quietly saving a different name would
//!   hide that from the person who sent it.
//! - A segment over 255 bytes or a whole name over 4096 bytes is rejected.
//! - A first segment `.tinydrop` (any case, after trimming) is rejected: that
//!   directory holds the server's temporary and resumable-upload files.
//! - Percent escapes are not decoded here (routes decode URL paths before):
//!   `%2e%2e%2f` is a harmless literal name.
//! - A name with nothing left after all this is rejected.
//!
//! Symlinks and files in the way of a name are the store's concern: it never
//! follows a symlink inside `DIR` (see `store.rs`).

use std::fmt;

use crate::error::Error;

/// The server's own directory inside `DIR`; no client name may start with it.
pub const RESERVED_DIR: &str = ".tinydrop";

/// Longest segment (one file or folder name), in bytes, as on most file systems.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Longest whole relative name, in bytes (Linux `PATH_MAX`).
pub const MAX_NAME_BYTES: usize = 4096;

/// Extensions of two parts that stay together in version names:
/// `a.tar.gz` becomes `a (1).tar.gz`, not `a.tar (1).gz`.
const DOUBLE_EXTENSIONS: [&str; 7] = [
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
    ".tar.lz",
    ".tar.lzma",
    ".tar.lz4",
];

/// A relative path, `/`-separated, that is safe to join to the upload
/// directory: no empty, `.` or `..` segment, no separator other than `/`, no
/// control or bidi character, not under `.tinydrop`, within length limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafeName(String);

impl SafeName {
    /// Makes a client's name safe, or says in a sentence why nothing safe is
    /// left (`Error::BadRequest`). See the module docs for every rule.
    pub fn parse(client: &str) -> Result<SafeName, Error> {
        if client.chars().any(|c| c.is_control()) {
            return Err(Error::BadRequest(
                "The file name contains a control character (such as NUL or a line break), \
                 which is not allowed."
                    .to_string(),
            ));
        }
        if client.chars().any(is_bidi_control) {
            return Err(Error::BadRequest(
                "The file name contains a Unicode direction override, \
                 which could disguise its real extension."
                    .to_string(),
            ));
        }
        let mut kept: Vec<&str> = Vec::new();
        for raw in client.split(['/', '\\']) {
            let mut segment = raw;
            if kept.is_empty() {
                segment = strip_drive(segment);
            }
            let segment = segment.trim_end_matches(['.', ' ']);
            if segment.is_empty() {
                continue;
            }
            if segment.len() > MAX_SEGMENT_BYTES {
                return Err(Error::BadRequest(format!(
                    "One part of the file name is longer than {MAX_SEGMENT_BYTES} bytes."
                )));
            }
            kept.push(segment);
        }
        let Some(first) = kept.first() else {
            return Err(Error::BadRequest(
                "The file name is empty once unsafe parts such as `..` or `/` are removed."
                    .to_string(),
            ));
        };
        if first.eq_ignore_ascii_case(RESERVED_DIR) {
            return Err(Error::BadRequest(format!(
                "Names starting with `{RESERVED_DIR}` are reserved for the server."
            )));
        }
        let name = kept.join("/");
        if name.len() > MAX_NAME_BYTES {
            return Err(Error::BadRequest(format!(
                "The file name is longer than {MAX_NAME_BYTES} bytes."
            )));
        }
        Ok(SafeName(name))
    }

    /// The name as a `/`-separated relative path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, outermost folder first; never empty, none empty.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment: the file's own name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The folders above the file, `/`-separated; empty at the top level.
    pub fn parent(&self) -> &str {
        self.0.rsplit_once('/').map_or("", |(parent, _)| parent)
    }
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `C:foo` -> `foo`, `c:` -> ``; anything else unchanged.
fn strip_drive(mut segment: &str) -> &str {
    // Repeatedly: `C:C:x` must not leave a drive letter behind.
    loop {
        let bytes = segment.as_bytes();
        if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
            segment = &segment[2..];
        } else {
            return segment;
        }
    }
}

/// The embedding overrides and isolates that reorder how a name is shown.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Splits a file name into stem and extension for version names:
/// `a.txt` -> (`a`, `.txt`), `a.tar.gz` -> (`a`, `.tar.gz`) for the known
/// double extensions, `x.y.z` -> (`x.y`, `.z`), `.bashrc` -> (`.bashrc`, ``).
/// A stem is never empty or only dots, and an extension is never a lone dot.
pub fn split_ext(file_name: &str) -> (&str, &str) {
    let lower = file_name.to_ascii_lowercase();
    for double in DOUBLE_EXTENSIONS {
        if lower.ends_with(double) {
            let at = file_name.len() - double.len();
            if has_real_stem(&file_name[..at]) {
                return file_name.split_at(at);
            }
        }
    }
    match file_name.rfind('.') {
        Some(at) if at + 1 < file_name.len() && has_real_stem(&file_name[..at]) => {
            file_name.split_at(at)
        }
        _ => (file_name, ""),
    }
}

fn has_real_stem(stem: &str) -> bool {
    stem.chars().any(|c| c != '.')
}

/// The `n`th version of a file name: `a.tar.gz`, 1 -> `a (1).tar.gz`. The
/// stem is shortened (at a character boundary) when the result would pass
/// [`MAX_SEGMENT_BYTES`].
pub fn version_name(file_name: &str, n: u32) -> String {
    let suffix = format!(" ({n})");
    let budget = MAX_SEGMENT_BYTES.saturating_sub(suffix.len());
    let (stem, ext) = split_ext(file_name);
    let (stem, ext) = if stem.len() + ext.len() <= budget {
        (stem, ext)
    } else if ext.len() <= budget / 2 {
        (truncate(stem, budget - ext.len()), ext)
    } else {
        (truncate(file_name, budget), "")
    };
    format!("{stem}{suffix}{ext}")
}

/// The longest prefix of `s` of at most `max` bytes ending at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(expected)` or `Err(())` for a 400.
    fn check(input: &str, expected: Result<&str, ()>) {
        let got = SafeName::parse(input);
        match (&got, expected) {
            (Ok(name), Ok(want)) => assert_eq!(name.as_str(), want, "input {input:?}"),
            (Err(Error::BadRequest(why)), Err(())) => {
                assert!(why.ends_with('.'), "a sentence for {input:?}: {why:?}")
            }
            _ => panic!("input {input:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn hostile_names_are_made_safe_or_refused() {
        let long_segment = "a".repeat(256);
        let max_segment = "a".repeat(255);
        let long_path = vec!["abcdefgh"; 500].join("/"); // 4499 bytes
        let max_path = format!("{}/{}", "b".repeat(200), vec!["a"; 1948].join("/"));
        assert_eq!(max_path.len(), 4096);
        #[rustfmt::skip]
        let table: Vec<(&str, Result<&str, ()>)> = vec![
            // plain names
            ("a.txt",                         Ok("a.txt")),
            ("a/b/c.txt",                     Ok("a/b/c.txt")),
            ("dir\\sub\\c.txt",               Ok("dir/sub/c.txt")),
            ("Übung/日本語 ファイル.txt",       Ok("Übung/日本語 ファイル.txt")),
            ("emoji 🎉.png",                  Ok("emoji 🎉.png")),
            (".bashrc",                       Ok(".bashrc")),
            ("..foo",                         Ok("..foo")),
            ("a..b",                          Ok("a..b")),
            (" leading space.txt",            Ok(" leading space.txt")),
            ("a/.tinydrop/x",                 Ok("a/.tinydrop/x")),
            (".tinydropx/y",                  Ok(".tinydropx/y")),
            ("12:30 notes.txt",               Ok("12:30 notes.txt")),
            // traversal in every spelling
            ("../x",                          Ok("x")),
            ("..\\x",                         Ok("x")),
            ("a/../../x",                     Ok("a/x")),
            ("a\\..\\..\\x",                  Ok("a/x")),
            ("../../../../etc/passwd",        Ok("etc/passwd")),
            ("/etc/passwd",                   Ok("etc/passwd")),
            ("//etc//passwd",                 Ok("etc/passwd")),
            ("./a/./b",                       Ok("a/b")),
            ("C:\\Windows\\x",                Ok("Windows/x")),
            ("c:/x",                          Ok("x")),
            ("C:foo",                         Ok("foo")),
            ("C:..\\..\\x",                   Ok("x")),
            ("\\\\server\\share\\x",          Ok("server/share/x")),
            ("..../x",                        Ok("x")),
            ("a/.. /x",                       Ok("a/x")),
            ("a/ ../x",                       Ok("a/x")),
            // percent escapes are not decoded here
            ("%2e%2e%2f",                     Ok("%2e%2e%2f")),
            ("%2e%2e/%2e%2e/x",               Ok("%2e%2e/%2e%2e/x")),
            // Windows trailing dots and spaces
            ("a.txt.",                        Ok("a.txt")),
            ("a.txt . ",                      Ok("a.txt")),
            ("dir./x",                        Ok("dir/x")),
            // nothing left
            ("",                              Err(())),
            ("/",                             Err(())),
            ("\\",                            Err(())),
            (".",                             Err(())),
            ("..",                            Err(())),
            ("...",                           Err(())),
            ("../..",                         Err(())),
            ("   ",                           Err(())),
            (". .",                           Err(())),
            ("C:",                            Err(())),
            ("C:\\",                          Err(())),
            // control characters
            ("a\0b",                          Err(())),
            ("a.txt\0.jpg",                   Err(())),
            ("a\nb",                          Err(())),
            ("a\rb",                          Err(())),
            ("a\tb",                          Err(())),
            ("a\u{1b}[31mb",                  Err(())),
            ("a\u{7f}b",                      Err(())),
            ("a\u{85}b",                      Err(())),
            ("a\u{9b}b",                      Err(())),
            // bidi overrides and isolates
            ("invoice\u{202E}fdp.exe",        Err(())),
            ("a\u{202A}b",                    Err(())),
            ("a\u{2066}b",                    Err(())),
            ("a\u{2069}b",                    Err(())),
            // lengths
            (&max_segment,                    Ok(&max_segment)),
            (&long_segment,                   Err(())),
            (&max_path,                       Ok(&max_path)),
            (&long_path,                      Err(())),
            // the server's own directory
            (".tinydrop",                     Err(())),
            (".tinydrop/x",                   Err(())),
            (".TinyDrop/x",                   Err(())),
            (".TINYDROP\\tmp\\x",             Err(())),
            ("/.tinydrop/tmp/x",              Err(())),
            ("../.tinydrop/x",                Err(())),
            ("./.tinydrop/x",                 Err(())),
            (".tinydrop./x",                  Err(())),
            (".tinydrop /x",                  Err(())),
            ("C:.tinydrop/x",                 Err(())),
        ];
        for (input, expected) in table {
            check(input, expected);
        }
    }

    #[test]
    fn a_segment_over_255_bytes_is_refused_even_when_made_of_multibyte_characters() {
        check(&"é".repeat(127), Ok(&"é".repeat(127))); // 254 bytes
        check(&"é".repeat(128), Err(()));
    }

    #[test]
    fn a_safe_name_has_segments_a_file_name_and_a_parent() {
        let name = SafeName::parse("/a\\b/c.txt").expect("safe");
        assert_eq!(name.segments().collect::<Vec<_>>(), ["a", "b", "c.txt"]);
        assert_eq!(name.file_name(), "c.txt");
        assert_eq!(name.parent(), "a/b");
        assert_eq!(name.to_string(), "a/b/c.txt");
        let top = SafeName::parse("c.txt").expect("safe");
        assert_eq!(top.file_name(), "c.txt");
        assert_eq!(top.parent(), "");
    }

    #[test]
    fn split_ext_keeps_known_double_extensions_together() {
        #[rustfmt::skip]
        let table = [
            ("a.txt",          ("a", ".txt")),
            ("a.tar.gz",       ("a", ".tar.gz")),
            ("archive.tar.xz", ("archive", ".tar.xz")),
            ("a.TAR.GZ",       ("a", ".TAR.GZ")),
            ("a.tar.zst",      ("a", ".tar.zst")),
            ("a.tar.bz2",      ("a", ".tar.bz2")),
            ("x.y.z",          ("x.y", ".z")),
            ("a.gz",           ("a", ".gz")),
            ("notes.tar",      ("notes", ".tar")),
            (".bashrc",        (".bashrc", "")),
            (".tar.gz",        (".tar", ".gz")),
            ("..foo",          ("..foo", "")),
            ("README",         ("README", "")),
            ("a.",             ("a.", "")),
            ("photo.JPG",      ("photo", ".JPG")),
        ];
        for (input, expected) in table {
            assert_eq!(split_ext(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn version_names_go_before_the_extension() {
        assert_eq!(version_name("a.txt", 1), "a (1).txt");
        assert_eq!(version_name("a.tar.gz", 2), "a (2).tar.gz");
        assert_eq!(version_name(".bashrc", 3), ".bashrc (3)");
        assert_eq!(version_name("README", 10), "README (10)");
        assert_eq!(version_name("x.y.z", 1), "x.y (1).z");
    }

    /// Found by `cargo fuzz run names` (fuzz/): one drive letter is stripped,
    /// a second one stays, so the safe name still starts with `C:` and
    /// parsing it again gives another name.
    #[test]
    fn a_safe_name_never_starts_with_a_drive_letter_and_parses_to_itself() {
        for input in ["C:C:t", "c:D:x.txt", "C:C:\\x", "C:c:/Windows/x", "C:\\C:x"] {
            let name = SafeName::parse(input).expect("safe");
            let first = name.segments().next().unwrap_or_default().as_bytes();
            assert!(
                !(first.len() >= 2 && first[0].is_ascii_alphabetic() && first[1] == b':'),
                "{input:?} -> {name}: starts with a drive letter"
            );
            let again = SafeName::parse(name.as_str()).expect("safe again");
            assert_eq!(again, name, "{input:?}: not a fixed point");
        }
    }

    #[test]
    fn version_names_stay_within_255_bytes() {
        let long = format!("{}.txt", "é".repeat(125)); // 254 bytes
        let v = version_name(&long, 9999);
        assert!(v.len() <= MAX_SEGMENT_BYTES, "{} bytes", v.len());
        assert!(v.ends_with(" (9999).txt"), "{v}");
        let long_ext = format!("a.{}", "x".repeat(250));
        let v = version_name(&long_ext, 1);
        assert!(v.len() <= MAX_SEGMENT_BYTES, "{} bytes", v.len());
        assert!(v.ends_with(" (1)"), "{v}");
        // Every version name of a safe segment is itself a safe segment.
        let name = SafeName::parse(&v).expect("safe");
        assert_eq!(name.as_str(), v);
    }
}
