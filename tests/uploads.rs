//! Uploads as clients send them (issue 3): hostile names through both doors
//! (multipart filename and PUT path), versions and duplicates, racing
//! uploads of one name, symlinks, cut-off bodies, size limits, a full disk,
//! kill -9 mid-upload, gigabyte uploads in little memory, keep-alive and the
//! listing. Every test runs the real binary and speaks HTTP over 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

// ---- a little JSON reader, for the server's answers ------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    fn parse(text: &str) -> Json {
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        let value = Json::value(&chars, &mut at)
            .unwrap_or_else(|why| panic!("bad JSON ({why}) at {at}: {text:?}"));
        skip_ws(&chars, &mut at);
        assert_eq!(at, chars.len(), "text after the JSON value: {text:?}");
        value
    }

    fn value(c: &[char], at: &mut usize) -> Result<Json, &'static str> {
        skip_ws(c, at);
        let Some(&first) = c.get(*at) else {
            return Err("end of text");
        };
        match first {
            '{' => {
                *at += 1;
                let mut fields = Vec::new();
                skip_ws(c, at);
                if c.get(*at) == Some(&'}') {
                    *at += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    skip_ws(c, at);
                    let Json::Str(key) = Json::value(c, at)? else {
                        return Err("a key that is not a string");
                    };
                    skip_ws(c, at);
                    if c.get(*at) != Some(&':') {
                        return Err("no colon");
                    }
                    *at += 1;
                    fields.push((key, Json::value(c, at)?));
                    skip_ws(c, at);
                    match c.get(*at) {
                        Some(',') => *at += 1,
                        Some('}') => {
                            *at += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err("object not closed"),
                    }
                }
            }
            '[' => {
                *at += 1;
                let mut items = Vec::new();
                skip_ws(c, at);
                if c.get(*at) == Some(&']') {
                    *at += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(Json::value(c, at)?);
                    skip_ws(c, at);
                    match c.get(*at) {
                        Some(',') => *at += 1,
                        Some(']') => {
                            *at += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err("array not closed"),
                    }
                }
            }
            '"' => {
                *at += 1;
                let mut s = String::new();
                loop {
                    let ch = *c.get(*at).ok_or("string not closed")?;
                    *at += 1;
                    match ch {
                        '"' => return Ok(Json::Str(s)),
                        '\\' => {
                            let e = *c.get(*at).ok_or("escape at the end")?;
                            *at += 1;
                            match e {
                                '"' | '\\' | '/' => s.push(e),
                                'n' => s.push('\n'),
                                'r' => s.push('\r'),
                                't' => s.push('\t'),
                                'b' => s.push('\u{8}'),
                                'f' => s.push('\u{c}'),
                                'u' => {
                                    let hex: String =
                                        c.get(*at..*at + 4).ok_or("short \\u")?.iter().collect();
                                    *at += 4;
                                    let code =
                                        u32::from_str_radix(&hex, 16).map_err(|_| "bad \\u")?;
                                    s.push(char::from_u32(code).ok_or("surrogate \\u")?);
                                }
                                _ => return Err("unknown escape"),
                            }
                        }
                        ch if (ch as u32) < 0x20 => return Err("raw control character"),
                        ch => s.push(ch),
                    }
                }
            }
            't' | 'f' | 'n' => {
                for (word, v) in [
                    ("true", Json::Bool(true)),
                    ("false", Json::Bool(false)),
                    ("null", Json::Null),
                ] {
                    let w: Vec<char> = word.chars().collect();
                    if c.get(*at..*at + w.len()) == Some(&w[..]) {
                        *at += w.len();
                        return Ok(v);
                    }
                }
                Err("unknown word")
            }
            _ => {
                let start = *at;
                while c
                    .get(*at)
                    .is_some_and(|ch| ch.is_ascii_digit() || "+-.eE".contains(*ch))
                {
                    *at += 1;
                }
                let s: String = c[start..*at].iter().collect();
                s.parse().map(Json::Num).map_err(|_| "bad number")
            }
        }
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn u64(&self) -> u64 {
        match self {
            Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 => *n as u64,
            other => panic!("not a whole number: {other:?}"),
        }
    }
}

fn skip_ws(c: &[char], at: &mut usize) {
    while c.get(*at).is_some_and(|ch| ch.is_ascii_whitespace()) {
        *at += 1;
    }
}

fn json(r: &Resp) -> Json {
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json"),
        "status {}: {}",
        r.status,
        r.text()
    );
    Json::parse(&r.text())
}

/// The `files` outcomes of an upload's answer.
fn outcomes(r: &Resp) -> Vec<Json> {
    json(r).get("files").arr().to_vec()
}

/// The answer is `status` with `{"error": "a sentence."}`.
fn assert_error(r: &Resp, status: u16, context: &str) -> Json {
    assert_eq!(r.status, status, "{context}: {}", r.text());
    let j = json(r);
    let why = j.get("error").str();
    assert!(
        why.len() > 10 && why.ends_with('.') && !why.starts_with(|c: char| c.is_lowercase()),
        "{context}: not a sentence: {why:?}"
    );
    j
}

/// The answer is 201 with one file saved as `saved_as`; returns the outcome.
fn assert_saved(r: &Resp, saved_as: &str, context: &str) -> Json {
    assert_eq!(r.status, 201, "{context}: {}", r.text());
    let files = outcomes(r);
    assert_eq!(files.len(), 1, "{context}: {}", r.text());
    let f = files[0].clone();
    assert_eq!(f.get("status").str(), "saved", "{context}");
    assert_eq!(f.get("saved_as").str(), saved_as, "{context}");
    f
}

// ---- requests ---------------------------------------------------------------

/// Every byte but unreserved ones and `/` as `%XX`: the PUT path for a name.
fn encode_path(name: &[u8]) -> String {
    let mut out = String::new();
    for &b in name {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A multipart body; file names are raw bytes (NUL and all).
fn multipart(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(b"--");
        body.extend_from_slice(BOUNDARY.as_bytes());
        body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"");
        body.extend_from_slice(name);
        body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_multipart(s: &Server, files: &[(&[u8], &[u8])]) -> Resp {
    let body = multipart(files);
    s.raw(&[post_head(body.len()).as_bytes(), &body].concat())
}

fn post_texts(s: &Server, files: &[(&str, &str)]) -> Resp {
    let files: Vec<(&[u8], &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_bytes(), b.as_bytes()))
        .collect();
    post_multipart(s, &files)
}

fn post_one(s: &Server, name: &str, bytes: &[u8]) -> Resp {
    post_multipart(s, &[(name.as_bytes(), bytes)])
}

/// `PUT /files/<target>` (target as sent on the wire).
fn put(s: &Server, target: &str, bytes: &[u8]) -> Resp {
    s.put(&format!("/files/{target}"), bytes)
}

/// `body` in chunked encoding, chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Writes `bytes` on a clone of `c` from another thread, in 64 KiB pieces,
/// stopping quietly at the first error (the server may answer and close
/// before reading everything).
fn send_in_background(c: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<u64> {
    let mut w = c.try_clone().expect("clone socket");
    thread::spawn(move || {
        let mut sent = 0u64;
        for piece in bytes.chunks(64 * 1024) {
            if w.write_all(piece).is_err() {
                break;
            }
            sent += piece.len() as u64;
        }
        sent
    })
}

// ---- the upload directory ---------------------------------------------------

/// Polls (2 s) until DIR holds no file and no temp file; says what is left.
fn assert_left_nothing(dir: &Path, context: &str) {
    let clean = wait_until(Duration::from_secs(2), || {
        stored(dir).is_empty() && temps(dir).is_empty()
    });
    assert!(
        clean,
        "{context}: left files {:?} and temps {:?}",
        stored(dir),
        temps(dir)
    );
}

/// DIR's parent holds DIR and nothing else, and DIR/.tinydrop holds only
/// its empty tmp and tus folders.
fn assert_nothing_outside(dir: &Path) {
    let parent = dir.parent().expect("DIR has a parent");
    let siblings: Vec<String> = fs::read_dir(parent)
        .expect("read parent")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        siblings,
        [dir.file_name().unwrap().to_string_lossy().into_owned()],
        "something was written next to DIR"
    );
    assert!(
        wait_until(Duration::from_secs(2), || private_leftovers(dir).is_empty()),
        "left in DIR/.tinydrop: {:?}",
        private_leftovers(dir)
    );
}

/// `saved_as` is a regular file inside DIR (no symlink on the way) holding `bytes`.
fn assert_stored(dir: &Path, saved_as: &str, bytes: &[u8]) {
    let path = dir.join(saved_as);
    let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{saved_as:?}: {e}"));
    assert!(meta.is_file(), "{saved_as:?} is not a regular file");
    let real = fs::canonicalize(&path).expect("canonicalize");
    let root = fs::canonicalize(dir).expect("canonicalize DIR");
    assert!(real.starts_with(&root), "{saved_as:?} is at {real:?}");
    assert_eq!(real, root.join(saved_as), "a symlink on the way");
    assert_eq!(fs::read(&path).unwrap(), bytes, "{saved_as:?} differs");
}

/// A server whose DIR lives on a fresh temp dir kept by the test, so that it
/// can be restarted on the same DIR.
fn dir_in(tmp: &TempDir) -> PathBuf {
    tmp.path().join("uploads")
}

// ---- names ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Door {
    Multipart,
    Put,
}

/// One hostile name: as a multipart filename (raw bytes), as a PUT target
/// (as on the wire), and the safe name both must give (None: 400).
struct NameRow {
    what: &'static str,
    filename: Vec<u8>,
    put: String,
    want: Option<String>,
}

fn row(what: &'static str, name: impl AsRef<[u8]>, want: Option<&str>) -> NameRow {
    let filename = name.as_ref().to_vec();
    NameRow {
        what,
        put: encode_path(&filename),
        filename,
        want: want.map(str::to_string),
    }
}

/// A row whose PUT target is spelled differently on the wire (decoded by the
/// route before the name rules).
fn row_put(what: &'static str, name: impl AsRef<[u8]>, put: &str, want: Option<&str>) -> NameRow {
    NameRow {
        put: put.to_string(),
        ..row(what, name, want)
    }
}

fn hostile_names() -> Vec<NameRow> {
    let long_segment = "a".repeat(256);
    let max_segment = "m".repeat(255);
    let long_path = format!("{}abcdefgh", "abcdefgh/".repeat(499)); // 4499 bytes
    assert!(long_path.len() > 4096);
    vec![
        // traversal in every spelling
        row("../", "../t01.txt", Some("t01.txt")),
        row("..\\", "..\\t02.txt", Some("t02.txt")),
        row("a/../../", "a/../../t03.txt", Some("a/t03.txt")),
        row(
            "deep ../",
            "../../../../../../t04/passwd",
            Some("t04/passwd"),
        ),
        row("absolute", "/etc/passwd", Some("etc/passwd")),
        row("double slashes", "//etc//t06", Some("etc/t06")),
        row(
            "drive and backslashes",
            "C:\\Windows\\t07.txt",
            Some("Windows/t07.txt"),
        ),
        row("drive-relative", "d:t08.txt", Some("t08.txt")),
        row("drive then ..\\", "C:..\\..\\t09.txt", Some("t09.txt")),
        row(
            "UNC",
            "\\\\server\\share\\t10.txt",
            Some("server/share/t10.txt"),
        ),
        row("backslashes", "dir\\sub\\t11.txt", Some("dir/sub/t11.txt")),
        row("dot-space segments", "a/. ./.. /t12.txt", Some("a/t12.txt")),
        row("trailing dots", "t13.txt...", Some("t13.txt")),
        row(
            "literal %2e%2e%2f",
            "%2e%2e%2ft14.txt",
            Some("%2e%2e%2ft14.txt"),
        ),
        // the PUT path is percent-decoded, then the same rules apply
        row_put(
            "%2e%2e%2f in the path",
            "../t15.txt",
            "%2e%2e%2ft15.txt",
            Some("t15.txt"),
        ),
        row_put(
            "%2e%2e%5c in the path",
            "..\\t16.txt",
            "%2e%2e%5ct16.txt",
            Some("t16.txt"),
        ),
        row_put(
            "%2E%2E/ twice",
            "../../t17.txt",
            "%2E%2E/%2E%2E/t17.txt",
            Some("t17.txt"),
        ),
        row_put(
            "raw ../ in the path",
            "../t18.txt",
            "../t18.txt",
            Some("t18.txt"),
        ),
        row_put(
            "a/%2e%2e/%2e%2e/",
            "a/../../t19.txt",
            "a/%2e%2e/%2e%2e/t19.txt",
            Some("a/t19.txt"),
        ),
        row_put(
            "%2f as a separator",
            "x/t20.txt",
            "x%2ft20.txt",
            Some("x/t20.txt"),
        ),
        row(
            "nested .tinydrop is a plain folder",
            "a/.tinydrop/t21.txt",
            Some("a/.tinydrop/t21.txt"),
        ),
        row("longest segment", &max_segment, Some(max_segment.as_str())),
        // NUL and control characters
        row("NUL", "a\0b.txt", None),
        row("NUL before an extension", "t.txt\0.jpg", None),
        row_put(
            "newline (browser escape %0A)",
            "a%0Ab.txt",
            "a%0Ab.txt",
            None,
        ),
        row_put(
            "carriage return (browser escape %0D)",
            "a%0Db.txt",
            "a%0Db.txt",
            None,
        ),
        row("SOH", "a\u{1}b.txt", None),
        row("ANSI escape", "a\u{1b}[31mb.txt", None),
        row("tab", "a\tb.txt", None),
        row("DEL", "a\u{7f}b.txt", None),
        row("C1 NEL", "a\u{85}b.txt", None),
        // direction overrides
        row("RTL override U+202E", "invoice\u{202E}fdp.exe", None),
        row("LTR isolate U+2066", "a\u{2066}b.txt", None),
        // lengths
        row("segment of 256 bytes", &long_segment, None),
        row("name of 4499 bytes", &long_path, None),
        // nothing left
        row("dots only", "...", None),
        row(".", ".", None),
        row("..", "..", None),
        row("../..", "../..", None),
        row("spaces only", "   ", None),
        row("drive only", "C:\\", None),
        // the server's own folder
        row(".tinydrop/x", ".tinydrop/x", None),
        row(".TinyDrop/x", ".TinyDrop/x", None),
        row(".tinydrop/tmp/x", ".tinydrop/tmp/x", None),
        row("../.tinydrop/tus/x", "../.tinydrop/tus/x", None),
        row(".tinydrop./x", ".tinydrop./x", None),
        row("C:.TINYDROP\\x", "C:.TINYDROP\\x", None),
        row_put("%2etinydrop/x", ".tinydrop/x", "%2etinydrop/x", None),
    ]
}

fn names_table(door: Door) {
    let s = Server::start(&[]);
    let mut expected = BTreeSet::new();
    for (i, r) in hostile_names().into_iter().enumerate() {
        let bytes = format!("row {i}: {}", r.what).into_bytes();
        let resp = match door {
            Door::Multipart => post_multipart(&s, &[(&r.filename[..], &bytes[..])]),
            Door::Put => put(&s, &r.put, &bytes),
        };
        let context = format!("{door:?} row {i} ({}): {:?}", r.what, r.put);
        match &r.want {
            Some(want) => {
                assert_saved(&resp, want, &context);
                assert_stored(&s.dir, want, &bytes);
                expected.insert(want.clone());
            }
            None => {
                assert_error(&resp, 400, &context);
            }
        }
    }
    assert_eq!(stored(&s.dir), expected.into_iter().collect::<Vec<_>>());
    assert_nothing_outside(&s.dir);
}

#[test]
fn hostile_multipart_filenames_are_made_safe_or_refused_and_nothing_lands_outside_dir() {
    names_table(Door::Multipart);
}

#[test]
fn hostile_put_paths_are_made_safe_or_refused_and_nothing_lands_outside_dir() {
    names_table(Door::Put);
}

#[test]
fn a_legal_name_near_4096_bytes_is_saved_or_refused_with_400_never_500() {
    // 16 segments of 255 bytes: 4095 bytes, within the name rules; with DIR
    // in front the absolute path is longer than Linux's PATH_MAX.
    let name = vec!["n".repeat(255); 16].join("/");
    assert_eq!(name.len(), 4095);
    let s = Server::start(&[]);
    let mut saved_any = false;
    for door in [Door::Put, Door::Multipart] {
        let r = match door {
            Door::Put => put(&s, &name, b"deep"),
            Door::Multipart => post_one(&s, &name, b"deep"),
        };
        match r.status {
            201 => {
                let saved = outcomes(&r)[0].get("saved_as").str().to_string();
                assert!(saved.starts_with(&"n".repeat(255)), "{door:?}: {saved}");
                saved_any = true;
            }
            _ => {
                assert_error(&r, 400, &format!("{door:?}"));
            }
        }
    }
    if !saved_any {
        // A refused upload leaves nothing behind, empty folders included.
        let top: Vec<_> = fs::read_dir(&s.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(top, [".tinydrop"], "left in DIR");
    }
    assert_nothing_outside(&s.dir);
}

// ---- versions and duplicates --------------------------------------------------

#[test]
fn a_taken_name_gets_numbered_versions_through_both_doors() {
    let s = Server::start(&[]);
    assert_saved(&put(&s, "a.txt", b"first"), "a.txt", "1st");
    assert_saved(&put(&s, "a.txt", b"second"), "a (1).txt", "2nd");
    assert_saved(&post_one(&s, "a.txt", b"third"), "a (2).txt", "3rd");
    assert_saved(&put(&s, "a.tar.gz", b"x1"), "a.tar.gz", "tar 1");
    assert_saved(&post_one(&s, "a.tar.gz", b"x2"), "a (1).tar.gz", "tar 2");
    assert_saved(&put(&s, "d/README", b"r1"), "d/README", "no extension");
    assert_saved(
        &put(&s, "d/README", b"r2"),
        "d/README (1)",
        "no extension 2",
    );
    for (name, bytes) in [
        ("a.txt", &b"first"[..]),
        ("a (1).txt", b"second"),
        ("a (2).txt", b"third"),
        ("a.tar.gz", b"x1"),
        ("a (1).tar.gz", b"x2"),
        ("d/README", b"r1"),
        ("d/README (1)", b"r2"),
    ] {
        assert_stored(&s.dir, name, bytes);
    }
    assert_eq!(stored(&s.dir).len(), 7);
    assert_nothing_outside(&s.dir);
}

#[test]
fn the_same_bytes_again_are_a_duplicate_answered_200_and_nothing_is_written() {
    use std::os::unix::fs::MetadataExt;
    let s = Server::start(&[]);
    let a = Noise::bytes(1, 100_000);
    let b = Noise::bytes(2, 100_000);
    let first = assert_saved(&put(&s, "a.bin", &a), "a.bin", "first");
    assert_eq!(first.get("sha256").str(), sha256_hex(&a));
    assert_saved(&put(&s, "a.bin", &b), "a (1).bin", "other bytes");
    let before: Vec<_> = ["a.bin", "a (1).bin"]
        .iter()
        .map(|n| {
            let m = fs::metadata(s.dir.join(n)).unwrap();
            (m.ino(), m.mtime_nsec(), m.mtime(), m.nlink())
        })
        .collect();

    let cases: [(&str, Resp, &str, &[u8]); 4] = [
        ("PUT a", put(&s, "a.bin", &a), "a.bin", &a),
        ("PUT b", put(&s, "a.bin", &b), "a (1).bin", &b),
        ("POST a", post_one(&s, "a.bin", &a), "a.bin", &a),
        ("POST b", post_one(&s, "a.bin", &b), "a (1).bin", &b),
    ];
    for (what, r, saved_as, bytes) in cases {
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let f = &outcomes(&r)[0];
        assert_eq!(f.get("status").str(), "duplicate", "{what}");
        assert_eq!(f.get("saved_as").str(), saved_as, "{what}");
        assert_eq!(f.get("name").str(), "a.bin", "{what}");
        assert_eq!(f.get("size").u64(), bytes.len() as u64, "{what}");
        assert_eq!(f.get("sha256").str(), sha256_hex(bytes), "{what}");
    }
    let after: Vec<_> = ["a.bin", "a (1).bin"]
        .iter()
        .map(|n| {
            let m = fs::metadata(s.dir.join(n)).unwrap();
            (m.ino(), m.mtime_nsec(), m.mtime(), m.nlink())
        })
        .collect();
    assert_eq!(before, after, "a duplicate touched a stored file");
    assert_eq!(stored(&s.dir), ["a (1).bin", "a.bin"]);
    assert_nothing_outside(&s.dir);
}

#[test]
fn one_multipart_request_reports_each_files_outcome() {
    let s = Server::start(&[]);
    assert_saved(&put(&s, "dup.txt", b"old bytes"), "dup.txt", "setup");

    // saved + duplicate + error: 201, one outcome per file, in order.
    let r = post_texts(
        &s,
        &[
            ("new.txt", "new bytes"),
            ("dup.txt", "old bytes"),
            (".tinydrop/evil", "evil"),
            ("dup.txt", "other bytes"),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let files = outcomes(&r);
    let summary: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.get("name").str(), f.get("status").str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("new.txt", "saved"),
            ("dup.txt", "duplicate"),
            (".tinydrop/evil", "error"),
            ("dup.txt", "saved"),
        ]
    );
    assert_eq!(files[0].get("saved_as").str(), "new.txt");
    assert_eq!(files[1].get("saved_as").str(), "dup.txt");
    assert!(files[2].get("error").str().ends_with('.'));
    assert_eq!(files[2].get("saved_as"), &Json::Null);
    assert_eq!(files[3].get("saved_as").str(), "dup (1).txt");

    // Only duplicates: 200.
    let r = post_texts(&s, &[("new.txt", "new bytes"), ("dup.txt", "old bytes")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(outcomes(&r)
        .iter()
        .all(|f| f.get("status").str() == "duplicate"));

    // Duplicates and an error, nothing saved: the error's status, with files.
    let r = post_texts(&s, &[("new.txt", "new bytes"), ("a\u{1}b", "x")]);
    let j = assert_error(&r, 400, "duplicate + error");
    let statuses: Vec<&str> = j
        .get("files")
        .arr()
        .iter()
        .map(|f| f.get("status").str())
        .collect();
    assert_eq!(statuses, ["duplicate", "error"]);

    // Only errors: 400 with every file's outcome.
    let r = post_texts(&s, &[("..", "x"), (".tinydrop/x", "y")]);
    let j = assert_error(&r, 400, "only errors");
    let files = j.get("files").arr();
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(f.get("status").str(), "error");
        assert!(f.get("error").str().ends_with('.'));
    }

    assert_eq!(stored(&s.dir), ["dup (1).txt", "dup.txt", "new.txt"]);
    assert_nothing_outside(&s.dir);
}

// ---- races --------------------------------------------------------------------

#[test]
fn twenty_four_concurrent_uploads_of_one_name_keep_all_24_intact() {
    const N: usize = 24;
    const LEN: usize = 300 * 1024; // one size: every version check must hash
    let s = Server::start(&["--threads", "24", "--per-ip", "100"]);
    let inputs: Vec<Vec<u8>> = (0..N).map(|i| Noise::bytes(100 + i as u64, LEN)).collect();
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let bytes = bytes.clone();
            let barrier = barrier.clone();
            let addr = s.addr;
            thread::spawn(move || {
                let request = if i % 2 == 0 {
                    let head = format!(
                        "PUT /files/race/same.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n"
                    );
                    [head.as_bytes(), &bytes].concat()
                } else {
                    let body = multipart(&[(&b"race/same.bin"[..], &bytes[..])]);
                    [post_head(body.len()).as_bytes(), &body].concat()
                };
                let mut c = TcpStream::connect(addr).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                barrier.wait();
                c.write_all(&request).expect("send");
                read_response(&mut c).expect("a response")
            })
        })
        .collect();
    let mut names = BTreeSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.join().expect("uploader thread");
        let f = assert_saved_any(&r, &format!("upload {i}"));
        assert_eq!(f.get("sha256").str(), sha256_hex(&inputs[i]), "upload {i}");
        assert_eq!(f.get("size").u64(), LEN as u64);
        let saved_as = f.get("saved_as").str().to_string();
        assert_stored(&s.dir, &saved_as, &inputs[i]);
        assert!(names.insert(saved_as.clone()), "{saved_as} given twice");
    }
    let mut want: BTreeSet<String> = (1..N).map(|n| format!("race/same ({n}).bin")).collect();
    want.insert("race/same.bin".into());
    assert_eq!(names, want);
    assert_eq!(stored(&s.dir).len(), N);
    assert_nothing_outside(&s.dir);
}

/// 201 with one file saved under any name; returns the outcome.
fn assert_saved_any(r: &Resp, context: &str) -> Json {
    assert_eq!(r.status, 201, "{context}: {}", r.text());
    let files = outcomes(r);
    assert_eq!(files.len(), 1, "{context}");
    assert_eq!(files[0].get("status").str(), "saved", "{context}");
    files[0].clone()
}

// ---- symlinks -----------------------------------------------------------------

#[test]
fn a_symlink_inside_dir_is_never_followed_out_by_either_door() {
    let s = Server::start(&[]);
    let elsewhere = TempDir::new();
    std::os::unix::fs::symlink(elsewhere.path(), s.dir.join("out")).unwrap();
    std::os::unix::fs::symlink(
        elsewhere.path().join("target.txt"),
        s.dir.join("dangling.txt"),
    )
    .unwrap();

    for name in ["out/x.txt", "out/sub/x.txt"] {
        let r = put(&s, name, b"through the link");
        assert_error(&r, 409, &format!("PUT {name}"));
        let r = post_one(&s, name, b"through the link");
        let j = assert_error(&r, 409, &format!("POST {name}"));
        assert_eq!(j.get("files").arr()[0].get("status").str(), "error");
    }
    // A symlink at the final name counts as taken: a new version, never a write through it.
    assert_saved(&put(&s, "out", b"o"), "out (1)", "PUT out");
    assert_saved(
        &post_one(&s, "dangling.txt", b"d"),
        "dangling (1).txt",
        "POST dangling.txt",
    );
    let outside: Vec<_> = fs::read_dir(elsewhere.path()).unwrap().flatten().collect();
    assert!(outside.is_empty(), "written outside DIR: {outside:?}");
    assert!(fs::symlink_metadata(s.dir.join("out"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        stored(&s.dir),
        ["dangling (1).txt", "dangling.txt@", "out (1)", "out@"]
    );
    assert!(temps(&s.dir).is_empty());
}

// ---- cut-offs -------------------------------------------------------------------

/// Sends `bytes` on a new connection and closes it; waits until the server
/// logged the failure of `name`, then until nothing is left.
fn cut_and_check(s: &Server, name: &str, bytes: &[u8], context: &str) {
    let mut c = s.connect();
    c.write_all(bytes).expect("send");
    c.shutdown(Shutdown::Write).expect("close");
    drop(c);
    assert!(
        s.wait_log(&format!("failed {name:?}"), Duration::from_secs(10)),
        "{context}: the server never logged the failure of {name:?}"
    );
    assert_left_nothing(&s.dir, context);
    assert_eq!(s.get("/api/health").status, 200, "{context}");
}

#[test]
fn a_multipart_upload_cut_off_anywhere_leaves_nothing_and_the_server_keeps_serving() {
    let s = Server::start(&[]);
    let data = Noise::bytes(7, 300_000);
    let delim = format!("\r\n--{BOUNDARY}");
    let cuts: Vec<(&str, Vec<u8>)> = vec![
        ("after 1 byte of data", data[..1].to_vec()),
        ("in the middle of the data", data[..150_000].to_vec()),
        ("right after the data", data.clone()),
        ("after the data's CRLF", [&data[..], b"\r\n"].concat()),
        ("after CRLF--", [&data[..], b"\r\n--"].concat()),
        (
            "after half the boundary",
            [&data[..], &delim.as_bytes()[..8]].concat(),
        ),
        (
            "after the whole boundary",
            [&data[..], delim.as_bytes()].concat(),
        ),
        (
            "after the boundary and one dash",
            [&data[..], delim.as_bytes(), b"-"].concat(),
        ),
        (
            "after the boundary and CR",
            [&data[..], delim.as_bytes(), b"\r"].concat(),
        ),
    ];
    for (i, (what, sent)) in cuts.iter().enumerate() {
        for framing in ["length", "chunked"] {
            let name = format!("cut-mp-{i}-{framing}.bin");
            let (head, tail) = multipart_frame(&name);
            let full_len = head.len() + data.len() + tail.len();
            let partial = [head.as_bytes(), sent].concat();
            let request = if framing == "length" {
                [post_head(full_len).as_bytes(), &partial].concat()
            } else {
                let head = format!(
                    "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                // Whole chunks only: the cut is in the multipart body, not in a chunk.
                let mut out = head.into_bytes();
                for piece in partial.chunks(64 * 1024) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out
            };
            cut_and_check(
                &s,
                &name,
                &request,
                &format!("multipart {framing} cut {what}"),
            );
        }
    }
    // Still serving uploads.
    let r = post_one(&s, "after.bin", &data);
    assert_saved(&r, "after.bin", "upload after the cuts");
}

#[test]
fn a_put_cut_off_anywhere_leaves_nothing_and_the_server_keeps_serving() {
    let s = Server::start(&[]);
    let data = Noise::bytes(8, 300_000);
    // With Content-Length.
    for (i, at) in [0usize, 1, 65_536, 150_001, 299_999]
        .into_iter()
        .enumerate()
    {
        let name = format!("cut-put-{i}.bin");
        let head = format!(
            "PUT /files/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            data.len()
        );
        let request = [head.as_bytes(), &data[..at]].concat();
        cut_and_check(&s, &name, &request, &format!("PUT cut after {at} bytes"));
    }
    // Chunked, cut at every kind of place in the framing.
    let whole = chunked(&data, 100_000);
    let first_chunk_head = "186a0\r\n".len();
    let after_first_chunk = first_chunk_head + 100_000;
    let cuts: Vec<(&str, usize)> = vec![
        ("before any chunk", 0),
        ("in a chunk-size line", 3),
        ("after a chunk-size line", first_chunk_head),
        ("in the middle of a chunk", first_chunk_head + 50_000),
        ("after a chunk's data, before its CRLF", after_first_chunk),
        ("after a chunk's CR", after_first_chunk + 1),
        ("between chunks", after_first_chunk + 2),
        ("after the last chunk's 0 line", whole.len() - 2),
        ("after the last chunk's 0 line and CR", whole.len() - 1),
    ];
    for (i, (what, at)) in cuts.into_iter().enumerate() {
        let name = format!("cut-chunked-{i}.bin");
        let head =
            format!("PUT /files/{name} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        let request = [head.as_bytes(), &whole[..at]].concat();
        cut_and_check(&s, &name, &request, &format!("chunked PUT cut {what}"));
    }
    assert_saved(&put(&s, "after.bin", &data), "after.bin", "after the cuts");
}

// ---- limits ---------------------------------------------------------------------

#[test]
fn a_declared_length_over_max_size_gets_413_before_any_100_continue() {
    let s = Server::start(&["--max-size", "1M"]);
    for (what, head) in [
        (
            "PUT",
            "PUT /files/big.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n",
        ),
        (
            "PUT one byte over",
            "PUT /files/big.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\nExpect: 100-continue\r\n\r\n",
        ),
    ] {
        let mut c = s.connect();
        c.write_all(head.as_bytes()).unwrap();
        let first = read_one(&mut c, false).expect("an answer");
        assert_eq!(first.status, 413, "{what}: 100 Continue (or other) came first");
        assert_error(&first, 413, what);
    }
    assert_left_nothing(&s.dir, "declared too large");
}

#[test]
fn a_chunked_put_over_max_size_gets_413_and_leaves_nothing() {
    let s = Server::start(&["--max-size", "1M"]);
    let mut c = s.connect();
    c.write_all(b"PUT /files/big.bin HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let writer = send_in_background(&c, chunked(&Noise::bytes(3, 2_000_000), 64 * 1024));
    let r = read_response(&mut c).expect("an answer");
    assert_error(&r, 413, "chunked over the limit");
    assert!(closed_within(&mut c, Duration::from_secs(5)));
    drop(c);
    writer.join().unwrap();
    assert_left_nothing(&s.dir, "chunked over the limit");
}

#[test]
fn a_multipart_file_over_max_size_gets_413_and_leaves_nothing() {
    let s = Server::start(&["--max-size", "1M"]);
    let big = Noise::bytes(4, 2_000_000);
    for framing in ["length", "chunked"] {
        let body = multipart(&[
            (&b"small.txt"[..], &b"small"[..]),
            (&b"big.bin"[..], &big[..]),
        ]);
        let mut c = s.connect();
        let body = if framing == "length" {
            c.write_all(post_head(body.len()).as_bytes()).unwrap();
            body
        } else {
            c.write_all(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes()).unwrap();
            chunked(&body, 64 * 1024)
        };
        let writer = send_in_background(&c, body);
        let r = read_response(&mut c).expect("an answer");
        let j = assert_error(&r, 413, framing);
        // The small file before it was handled and is reported.
        let files = j.get("files").arr();
        assert_eq!(files.len(), 1, "{framing}: {}", r.text());
        assert_eq!(files[0].get("name").str(), "small.txt");
        drop(c);
        writer.join().unwrap();
        assert!(
            wait_until(Duration::from_secs(2), || temps(&s.dir).is_empty()),
            "{framing}: temps left {:?}",
            temps(&s.dir)
        );
        assert!(
            !stored(&s.dir).iter().any(|n| n.starts_with("big")),
            "{framing}: {:?}",
            stored(&s.dir)
        );
    }
    assert_nothing_outside(&s.dir);
}

#[test]
fn a_file_of_exactly_max_size_is_accepted_by_every_framing() {
    let s = Server::start(&["--max-size", "1M"]);
    let exact = Noise::bytes(5, MIB as usize);
    let f = assert_saved(&put(&s, "put.bin", &exact), "put.bin", "PUT 1 MiB");
    assert_eq!(f.get("size").u64(), MIB);
    let head = |name: &str| {
        format!("PUT /files/{name} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    };
    let r = s.raw(&[head("put.bin").as_bytes(), &chunked(&exact, 100_000)].concat());
    assert_eq!(r.status, 200, "same bytes: a duplicate of put.bin");
    assert_eq!(outcomes(&r)[0].get("saved_as").str(), "put.bin");
    let other = Noise::bytes(6, MIB as usize);
    let r = s.raw(&[head("chunked.bin").as_bytes(), &chunked(&other, 100_000)].concat());
    assert_saved(&r, "chunked.bin", "chunked 1 MiB");
    // A multipart body is larger than the limit; each file is within it.
    let third = Noise::bytes(7, MIB as usize);
    assert_saved(&post_one(&s, "post.bin", &third), "post.bin", "POST 1 MiB");
    assert_stored(&s.dir, "post.bin", &third);
    assert_stored(&s.dir, "chunked.bin", &other);
    // One byte over, undeclared: refused.
    let over = Noise::bytes(8, MIB as usize + 1);
    let r = s.raw(&[head("over.bin").as_bytes(), &chunked(&over, 100_000)].concat());
    assert_error(&r, 413, "chunked 1 MiB + 1");
    assert_error(&post_one(&s, "over.bin", &over), 413, "POST 1 MiB + 1");
    assert!(wait_until(Duration::from_secs(2), || temps(&s.dir).is_empty()));
    assert_eq!(stored(&s.dir), ["chunked.bin", "post.bin", "put.bin"]);
}

#[test]
fn a_put_without_a_length_gets_411_and_a_post_that_is_not_multipart_gets_415() {
    let s = Server::start(&[]);
    let r = s.raw(b"PUT /files/x.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_error(&r, 411, "PUT without length");
    let r = s.raw(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nConnection: close\r\n\r\n").as_bytes());
    assert_error(&r, 411, "POST without length");
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "multipart/mixed; boundary=x",
    ] {
        let r = s.raw(
            format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
                .as_bytes(),
        );
        assert_error(&r, 415, ct);
    }
    let r =
        s.raw(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert_error(&r, 415, "POST without Content-Type");
    assert_left_nothing(&s.dir, "411/415");
}

#[test]
fn bad_chunk_sizes_on_a_put_get_400_and_close_the_connection() {
    let s = Server::start(&[]);
    for (i, bad) in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",
        "-1\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "fffffffffffffffff\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = s.connect();
        c.write_all(
            format!(
                "PUT /files/bad-{i}.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{bad}GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut c).expect("an answer");
        assert_error(&r, 400, bad);
        assert!(
            closed_within(&mut c, Duration::from_secs(3)),
            "{bad:?} left the connection open"
        );
    }
    assert_left_nothing(&s.dir, "bad chunks");
}

// ---- a full disk ----------------------------------------------------------------

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Free bytes on the file system of `path` (`stat -f`).
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .expect("stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text
        .split_whitespace()
        .map(|w| w.parse::<u64>().expect("a number"));
    words.next().expect("free blocks") * words.next().expect("block size")
}

/// Sends only the head of a request that says `Expect: 100-continue`: the
/// first answer must be the refusal itself, no `100 Continue` first.
fn refused_before_the_body(s: &Server, head: &str, status: u16, context: &str) {
    let mut c = s.connect();
    c.write_all(head.as_bytes()).unwrap();
    let first = read_one(&mut c, false).expect("an answer");
    assert_ne!(
        first.status, 100,
        "{context}: 100 Continue came before the refusal"
    );
    assert_error(&first, status, context);
}

fn tus_create_head(len: u64, name: &str, extra: &str) -> String {
    format!(
        "POST /api/tus/ HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {len}\r\nUpload-Metadata: filename {}\r\n{extra}\r\n",
        b64(name.as_bytes())
    )
}

fn tus_patch_head(loc: &str, offset: u64, len: usize) -> String {
    format!(
        "PATCH {loc} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
}

/// A whole tus upload in one PATCH; the 204 of that PATCH.
fn tus_whole(s: &Server, name: &str, bytes: &[u8]) -> Resp {
    let r = s.raw(
        tus_create_head(
            bytes.len() as u64,
            name,
            "Content-Length: 0\r\nConnection: close\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "create {name}: {}", r.text());
    let loc = r.header("Location").expect("Location").to_string();
    s.raw(&[tus_patch_head(&loc, 0, bytes.len()).as_bytes(), bytes].concat())
}

/// A full disk through all three doors: refusals before the body wherever
/// the size is declared (no `100 Continue` first), 507 with a sentence when
/// the disk fills mid-write, nothing partial left, and uploads work again
/// once space is freed.
#[test]
fn a_full_disk_answers_507_and_leaves_nothing_partial() {
    let tmp = TempDir::new();
    // Declared before the server, so it is unmounted after the server stopped.
    let mnt = match Tmpfs::mount(&tmp.path().join("small"), "16m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: a_full_disk_answers_507_and_leaves_nothing_partial: {why}");
            return;
        }
    };
    let dir = mnt.0.join("uploads");
    let s = Server::start_in(&dir, &[]);
    let tus_left = || crate::tus::tus_files(&dir);
    const BIG: usize = 20_000_000;

    // Declared sizes that cannot fit: refused before the body, by every door.
    refused_before_the_body(
        &s,
        &format!("PUT /files/declared.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\nExpect: 100-continue\r\n\r\n"),
        507,
        "PUT declaring 20 MB",
    );
    refused_before_the_body(
        &s,
        &format!(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {BIG}\r\nExpect: 100-continue\r\n\r\n"
        ),
        507,
        "multipart declaring 20 MB",
    );
    refused_before_the_body(
        &s,
        &tus_create_head(BIG as u64, "tus.bin", "Content-Length: 0\r\n"),
        507,
        "tus creation of 20 MB",
    );
    refused_before_the_body(
        &s,
        &tus_create_head(
            BIG as u64,
            "tus-with-body.bin",
            &format!("Content-Type: application/offset+octet-stream\r\nContent-Length: {BIG}\r\nExpect: 100-continue\r\n"),
        ),
        507,
        "tus creation-with-upload of 20 MB",
    );
    assert_left_nothing(&dir, "declared 20 MB");
    assert!(tus_left().is_empty(), "tus files left: {:?}", tus_left());

    let big = Noise::bytes(9, BIG);
    // Chunked PUT: the disk fills mid-write.
    let mut c = s.connect();
    c.write_all(
        b"PUT /files/chunked.bin HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let writer = send_in_background(&c, chunked(&big, 256 * 1024));
    let r = read_response(&mut c).expect("an answer");
    assert_error(&r, 507, "chunked PUT of 20 MB");
    drop(c);
    writer.join().unwrap();
    assert_left_nothing(&dir, "chunked PUT of 20 MB");

    // Multipart, declared (refused before reading) and chunked (mid-write).
    let body = multipart(&[(&b"form.bin"[..], &big[..])]);
    let mut c = s.connect();
    c.write_all(post_head(body.len()).as_bytes()).unwrap();
    let writer = send_in_background(&c, body.clone());
    let r = read_response(&mut c).expect("an answer");
    assert_error(&r, 507, "multipart of 20 MB with Content-Length");
    drop(c);
    writer.join().unwrap();
    assert_left_nothing(&dir, "multipart of 20 MB with Content-Length");

    let mut c = s.connect();
    c.write_all(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes()).unwrap();
    let writer = send_in_background(&c, chunked(&body, 256 * 1024));
    let r = read_response(&mut c).expect("an answer");
    assert_error(&r, 507, "chunked multipart of 20 MB");
    drop(c);
    writer.join().unwrap();
    assert_left_nothing(&dir, "chunked multipart of 20 MB");

    // The failed uploads left the space free: 1 MB fits, by both doors.
    let one = Noise::bytes(10, 1_000_000);
    assert_saved(
        &put(&s, "one.bin", &one),
        "one.bin",
        "1 MB after the full disk",
    );
    let two = Noise::bytes(11, 1_000_000);
    assert_saved(&post_one(&s, "two.bin", &two), "two.bin", "1 MB by POST");
    assert_stored(&dir, "one.bin", &one);
    assert_stored(&dir, "two.bin", &two);
    assert!(temps(&dir).is_empty());

    // A tus upload created while there is room; then a filler file next to
    // DIR leaves about 1.5 MiB free, less than 1 MB plus the server's margin.
    let resumable = Noise::bytes(12, 1_000_000);
    let r = s.raw(
        tus_create_head(
            1_000_000,
            "resumable.bin",
            "Content-Length: 0\r\nConnection: close\r\n",
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let loc = r.header("Location").expect("Location").to_string();
    let filler = mnt.0.join("filler");
    let free = free_bytes(&mnt.0);
    fs::write(&filler, vec![0u8; (free - 3 * MIB / 2) as usize]).expect("write the filler");
    let free = free_bytes(&mnt.0);
    assert!(free < 2 * MIB, "{free} bytes still free");
    let three = Noise::bytes(13, 1_000_000);
    refused_before_the_body(
        &s,
        "PUT /files/three.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        507,
        "PUT of 1 MB on a full disk",
    );
    let form = multipart(&[(&b"four.bin"[..], &three[..])]);
    refused_before_the_body(
        &s,
        &format!(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            form.len()
        ),
        507,
        "multipart of 1 MB on a full disk",
    );
    refused_before_the_body(
        &s,
        &tus_create_head(1_000_000, "five.bin", "Content-Length: 0\r\n"),
        507,
        "tus creation of 1 MB on a full disk",
    );
    refused_before_the_body(
        &s,
        &tus_patch_head(&loc, 0, resumable.len()),
        507,
        "tus PATCH of 1 MB on a full disk",
    );
    let h = crate::tus::head(&s, &loc);
    assert_eq!(
        crate::tus::num(&h, "Upload-Offset"),
        0,
        "the refused PATCH wrote"
    );
    assert_eq!(
        stored(&dir),
        ["one.bin", "two.bin"],
        "something partial is visible"
    );
    assert!(temps(&dir).is_empty(), "temps left: {:?}", temps(&dir));
    assert_eq!(tus_left().len(), 2, "tus files: {:?}", tus_left());

    // Space freed: every door works again, byte for byte.
    fs::remove_file(&filler).unwrap();
    assert_saved(
        &put(&s, "three.bin", &three),
        "three.bin",
        "PUT after freeing space",
    );
    let four = Noise::bytes(14, 1_000_000);
    assert_saved(
        &post_one(&s, "four.bin", &four),
        "four.bin",
        "POST after freeing space",
    );
    let five = Noise::bytes(15, 1_000_000);
    let r = tus_whole(&s, "five.bin", &five);
    assert_eq!(r.status, 204, "tus after freeing space: {}", r.text());
    assert_eq!(r.header("Tinydrop-Saved-As"), Some("five.bin"));
    let r = s.raw(
        &[
            tus_patch_head(&loc, 0, resumable.len()).as_bytes(),
            &resumable[..],
        ]
        .concat(),
    );
    assert_eq!(r.status, 204, "the tus upload refused before: {}", r.text());
    assert_eq!(r.header("Tinydrop-Saved-As"), Some("resumable.bin"));
    for (name, bytes) in [
        ("one.bin", &one),
        ("two.bin", &two),
        ("three.bin", &three),
        ("four.bin", &four),
        ("five.bin", &five),
        ("resumable.bin", &resumable),
    ] {
        assert_stored(&dir, name, bytes);
    }
    assert!(temps(&dir).is_empty());
    // Only the small records of the two finished tus uploads stay.
    let left = tus_left();
    assert!(
        left.len() == 2 && left.iter().all(|f| f.ends_with(".done")),
        "tus files left: {left:?}"
    );
    drop(s);
}

// ---- kill -9 ----------------------------------------------------------------------

#[test]
fn kill_9_during_sixteen_big_uploads_leaves_only_complete_files_after_restart() {
    const N: usize = 16;
    const LEN: u64 = 64 * MIB;
    let tmp = TempDir::new();
    let dir = dir_in(&tmp);
    let mut s = Server::start_in(&dir, &["--per-ip", "100"]);
    let seed = std::env::var("TINYDROP_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut dice = Noise(seed.max(1));
    let mut roll = [0u8; 8];
    dice.fill(&mut roll);
    let total = N as u64 * LEN;
    // Somewhere between 8 MiB and all bytes sent (then during the publishing).
    let threshold = 8 * MIB + u64::from_le_bytes(roll) % (total - 8 * MIB);
    eprintln!(
        "kill -9 test: seed {seed} (TINYDROP_TEST_SEED to repeat), kill after {} MiB of {} MiB",
        threshold / MIB,
        total / MIB
    );
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let sent = sent.clone();
            let stop = stop.clone();
            let addr = s.addr;
            thread::spawn(move || {
                let name = format!("kill/{i:02}.bin");
                // A light stagger (all 16 still overlap), so that at the kill
                // some uploads are complete, some publishing, some in flight.
                while sent.load(Ordering::SeqCst) < i as u64 * 32 * MIB && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                }
                let (chunked, head, tail) = match i % 4 {
                    0 => (false, format!("PUT /files/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n"), String::new()),
                    1 => (true, format!("PUT /files/{name} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"), String::new()),
                    _ => {
                        let (part_head, part_tail) = multipart_frame(&name);
                        let len = part_head.len() as u64 + LEN + part_tail.len() as u64;
                        (false, format!("{}{part_head}", post_head(len as usize)), part_tail)
                    }
                };
                let conn = TcpStream::connect(addr).ok();
                let mut w: Box<dyn Write> = match conn.as_ref().and_then(|c| c.try_clone().ok()) {
                    Some(c) => Box::new(c),
                    None => Box::new(Unplugged),
                };
                let mut result = w.write_all(head.as_bytes());
                let (sha, streamed) = stream_noise(&mut w, 1000 + i as u64, LEN, chunked, Some(&sent));
                result = result.and(streamed).and_then(|()| w.write_all(tail.as_bytes()));
                let status = match (result, conn) {
                    (Ok(()), Some(mut c)) => {
                        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                        read_response(&mut c).ok().map(|r| r.status)
                    }
                    _ => None,
                };
                (name, sha, status)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while sent.load(Ordering::SeqCst) < threshold
        && !handles.iter().all(|h| h.is_finished())
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(1));
    }
    let at = sent.load(Ordering::SeqCst);
    s.kill9();
    stop.store(true, Ordering::SeqCst);
    let results: Vec<(String, String, Option<u16>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let answered: Vec<&String> = results
        .iter()
        .filter(|r| r.2 == Some(201))
        .map(|r| &r.0)
        .collect();
    eprintln!(
        "killed after {} MiB sent; {} of {N} uploads answered 201 before the kill",
        at / MIB,
        answered.len()
    );
    let expected: BTreeMap<String, String> = results
        .iter()
        .map(|(name, sha, _)| (name.clone(), sha.clone()))
        .collect();

    let s = Server::start_in(&dir, &[]);
    assert!(
        temps(&dir).is_empty(),
        "temps after restart: {:?}",
        temps(&dir)
    );
    let visible = stored(&dir);
    for name in &visible {
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("unexpected file {name:?} after restart"));
        let path = dir.join(name);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            LEN,
            "{name} is incomplete"
        );
        assert_eq!(
            &sha256_file(&path),
            want,
            "{name} differs from what was sent"
        );
    }
    for name in answered {
        assert!(
            visible.contains(name),
            "{name} was answered 201 but is gone"
        );
    }
    let listing = json(&s.get("/api/files"));
    let listed: Vec<&str> = listing.arr().iter().map(|f| f.get("path").str()).collect();
    assert_eq!(listed, visible);
    eprintln!(
        "after restart: {} complete files, no temp data",
        visible.len()
    );
    assert!(
        private_leftovers(&dir).is_empty(),
        "{:?}",
        private_leftovers(&dir)
    );
}

// ---- big uploads ------------------------------------------------------------------

fn big_upload(door: Door, len: u64) {
    let s = Server::start(&[]);
    let name = format!("big-{}.bin", len / MIB);
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let started = Instant::now();
    let (sha, sent) = match door {
        Door::Put => {
            let head = format!(
                "PUT /files/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            c.write_all(head.as_bytes()).unwrap();
            stream_noise(&mut c, 42, len, false, None)
        }
        Door::Multipart => {
            let (head, tail) = multipart_frame(&name);
            let total = head.len() as u64 + len + tail.len() as u64;
            c.write_all(post_head(total as usize).as_bytes()).unwrap();
            c.write_all(head.as_bytes()).unwrap();
            let (sha, sent) = stream_noise(&mut c, 43, len, false, None);
            (sha, sent.and_then(|()| c.write_all(tail.as_bytes())))
        }
    };
    sent.expect("the whole body was sent");
    let r = read_response(&mut c).expect("an answer");
    let secs = started.elapsed().as_secs_f64();
    let f = assert_saved(&r, &name, &format!("{door:?} of {len} bytes"));
    assert_eq!(f.get("sha256").str(), sha);
    assert_eq!(f.get("size").u64(), len);
    assert_eq!(fs::metadata(s.dir.join(&name)).unwrap().len(), len);
    let (rss, peak) = s.rss_kib();
    eprintln!(
        "{door:?} of {} MiB: {:.1} s, {:.0} MiB/s; server RSS {rss} KiB, peak (VmHWM) {peak} KiB",
        len / MIB,
        secs,
        len as f64 / MIB as f64 / secs
    );
    assert!(peak < 64 * 1024, "server peak RSS {peak} KiB");
    assert!(temps(&s.dir).is_empty());
}

#[test]
fn a_2_gib_put_is_stored_byte_identical_in_little_memory() {
    big_upload(Door::Put, 2048 * MIB);
}

#[test]
fn a_1_gib_multipart_upload_is_stored_byte_identical_in_little_memory() {
    big_upload(Door::Multipart, 1024 * MIB);
}

// ---- keep-alive and the listing -----------------------------------------------------

#[test]
fn several_uploads_on_one_keep_alive_connection_then_a_sorted_recursive_listing() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let uploads: Vec<(&str, Vec<u8>)> = vec![
        ("b.txt", b"bee".to_vec()),
        ("a/z.txt", b"zed".to_vec()),
        ("a/b/c.txt", b"see".to_vec()),
        ("A.txt", b"capital".to_vec()),
        (
            "a/.tinydrop/kept.txt",
            b"nested private-looking folder".to_vec(),
        ),
        ("Z/empty", Vec::new()),
    ];
    for (i, (name, bytes)) in uploads.iter().enumerate() {
        let request = match i % 3 {
            0 => [
                format!(
                    "PUT /files/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                )
                .as_bytes(),
                bytes,
            ]
            .concat(),
            1 => [
                format!(
                    "PUT /files/{name} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
                &chunked(bytes, 2),
            ]
            .concat(),
            _ => {
                let body = multipart(&[(name.as_bytes(), &bytes[..])]);
                [
                    format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    &body,
                ]
                .concat()
            }
        };
        c.write_all(&request).unwrap();
        let r = read_response(&mut c).expect("an answer on the same connection");
        assert_saved(&r, name, name);
        assert_ne!(r.header("Connection"), Some("close"), "{name}");
    }
    c.write_all(b"GET /api/files HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 200);
    let listing = json(&r);
    let paths: Vec<&str> = listing.arr().iter().map(|f| f.get("path").str()).collect();
    let mut want: Vec<&str> = uploads.iter().map(|(n, _)| *n).collect();
    want.sort();
    assert_eq!(paths, want, "sorted, recursive, DIR/.tinydrop hidden");
    for f in listing.arr() {
        let (_, bytes) = uploads
            .iter()
            .find(|(n, _)| *n == f.get("path").str())
            .unwrap();
        assert_eq!(f.get("size").u64(), bytes.len() as u64);
        let m = f.get("modified").str();
        assert!(
            m.len() == 20 && m.ends_with('Z') && &m[4..5] == "-" && &m[10..11] == "T",
            "{m}"
        );
    }
    c.write_all(
        b"HEAD /api/files HTTP/1.1\r\nHost: t\r\n\r\nGET /api/health HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let head = read_one(&mut c, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    // HEAD sent no body: the next answer follows directly.
    assert_eq!(read_response(&mut c).unwrap().text(), r#"{"status":"ok"}"#);
}
