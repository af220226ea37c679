//! Resumable uploads (tus 1.0.0) over raw HTTP: every status API.md names,
//! checksums, expiry, termination, cut and concurrent PATCHes, kill -9 and
//! clean restarts. The real clients (tus-js-client, tuspy) are in
//! `tus_clients.rs`.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::*;

pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
const OCTETS: &str = "application/offset+octet-stream";

// ---- helpers ---------------------------------------------------------------

/// `Upload-Metadata` naming a file the way tus-js-client does.
fn meta(name: &str) -> String {
    format!(
        "filename {},filetype {}",
        b64(name.as_bytes()),
        b64(b"text/plain")
    )
}

/// One request on a new connection, `Tus-Resumable: 1.0.0` added unless
/// `headers` has one (an empty value leaves it out). HEAD answers are read
/// without a body.
pub fn tus(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut c = s.connect();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("tus-resumable"))
    {
        head.push_str("Tus-Resumable: 1.0.0\r\n");
    }
    for (n, v) in headers {
        if !v.is_empty() {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    if !body.is_empty() || method == "PATCH" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    // The server may answer before reading the body and close: ignore write errors.
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(body);
    read_one(&mut c, method == "HEAD").expect("a response")
}

/// Creates an upload; returns its Location (`/api/tus/<id>`).
fn create(s: &Server, len: u64, name: &str) -> String {
    let r = tus(
        s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", &len.to_string()),
            ("Upload-Metadata", &meta(name)),
        ],
        b"",
    );
    assert_eq!(r.status, 201, "create {name:?}: {}", r.text());
    let loc = r.header("Location").expect("Location").to_string();
    assert_location(&loc);
    loc
}

fn assert_location(loc: &str) {
    let id = loc
        .strip_prefix("/api/tus/")
        .unwrap_or_else(|| panic!("Location {loc:?} is not /api/tus/<id>"));
    assert!(
        id.len() >= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "id {id:?} is not a long random string"
    );
}

fn id_of(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

fn patch(s: &Server, loc: &str, offset: u64, bytes: &[u8]) -> Resp {
    tus(
        s,
        "PATCH",
        loc,
        &[
            ("Upload-Offset", &offset.to_string()),
            ("Content-Type", OCTETS),
        ],
        bytes,
    )
}

fn patch_sum(s: &Server, loc: &str, offset: u64, bytes: &[u8], checksum: &str) -> Resp {
    tus(
        s,
        "PATCH",
        loc,
        &[
            ("Upload-Offset", &offset.to_string()),
            ("Content-Type", OCTETS),
            ("Upload-Checksum", checksum),
        ],
        bytes,
    )
}

pub fn head(s: &Server, loc: &str) -> Resp {
    tus(s, "HEAD", loc, &[], b"")
}

pub fn num(r: &Resp, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {} {:?}", r.status, r.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", r.headers))
}

/// The offset HEAD reports (asserting 200).
fn offset(s: &Server, loc: &str) -> u64 {
    let r = head(s, loc);
    assert_eq!(r.status, 200, "HEAD {loc}: {:?}", r.headers);
    num(&r, "Upload-Offset")
}

/// Polls HEAD until `ok(offset)`, at most `timeout`; the last offset seen.
fn wait_offset(s: &Server, loc: &str, timeout: Duration, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let o = offset(s, loc);
        if ok(o) || Instant::now() > deadline {
            return o;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn tus_dir(dir: &Path) -> PathBuf {
    dir.join(".tinydrop").join("tus")
}

/// Names of the files in DIR/.tinydrop/tus.
pub fn tus_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tus_dir(dir))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The tus directory's files but the records of finished uploads (`.done`):
/// what an upload in progress (or a leftover) keeps.
pub fn tus_state(dir: &Path) -> Vec<String> {
    tus_files(dir)
        .into_iter()
        .filter(|f| !f.ends_with(".done"))
        .collect()
}

fn data_len(dir: &Path, loc: &str) -> u64 {
    std::fs::metadata(tus_dir(dir).join(format!("{}.data", id_of(loc))))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Polls until `cond`, at most `timeout`.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(25));
    }
    cond()
}

/// Asserts the published file: headers of the last answer and the bytes in DIR.
fn assert_published(s: &Server, r: &Resp, saved_as: &str, bytes: &[u8]) {
    assert_eq!(
        r.header("Tinydrop-Saved-As"),
        Some(saved_as),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("Tinydrop-Sha256"),
        Some(sha256_hex(bytes).as_str()),
        "{:?}",
        r.headers
    );
    let stored = std::fs::read(s.dir.join(saved_as)).expect("the file in DIR");
    assert_eq!(stored.len(), bytes.len(), "size of {saved_as}");
    assert!(stored == bytes, "{saved_as} differs from what was sent");
}

/// Opens a PATCH of `total` bytes at `offset` and sends the first `send` of
/// `bytes`, leaving the connection open.
fn open_patch(s: &Server, loc: &str, offset: u64, total: usize, bytes: &[u8]) -> TcpStream {
    let mut c = s.connect();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: {OCTETS}\r\nContent-Length: {total}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    for piece in bytes.chunks(64 * 1024) {
        c.write_all(piece).unwrap();
    }
    c.flush().unwrap();
    c
}

/// Unix seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<u64> {
    let w: Vec<&str> = s.split_whitespace().collect();
    if w.len() != 6 || w[5] != "GMT" || !w[0].ends_with(',') {
        return None;
    }
    let day: i64 = w[1].parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == w[2])? as i64 + 1;
    let year: i64 = w[3].parse().ok()?;
    let t: Vec<i64> = w[4]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]).ok()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- discovery and the protocol version -----------------------------------

#[test]
fn options_names_version_extensions_max_size_and_checksums() {
    let s = Server::start(&["--max-size", "5M"]);
    let max = s.get("/api/config").text();
    for path in ["/api/tus/", "/api/tus"] {
        // OPTIONS needs no Tus-Resumable.
        let r = tus(&s, "OPTIONS", path, &[("Tus-Resumable", "")], b"");
        assert!(matches!(r.status, 200 | 204), "{path}: {}", r.status);
        assert_eq!(r.header("Tus-Version"), Some("1.0.0"));
        assert_eq!(r.header("Tus-Extension"), Some(EXTENSIONS));
        assert_eq!(r.header("Tus-Checksum-Algorithm"), Some("sha1,sha256"));
        let tus_max = r.header("Tus-Max-Size").expect("Tus-Max-Size");
        assert!(
            max.contains(&format!("\"max_size\":{tus_max},")),
            "Tus-Max-Size {tus_max} is not --max-size ({max})"
        );
        assert_eq!(tus_max, (5u64 << 20).to_string());
    }
}

#[test]
fn a_missing_or_wrong_tus_resumable_gets_412_and_changes_nothing() {
    let s = Server::start(&[]);
    let len = ("Upload-Length", "10");
    let m = meta("a.txt");
    let name = ("Upload-Metadata", m.as_str());
    for version in ["", "0.2.2", "1.0", "1.0.0, 0.2.2"] {
        let r = tus(
            &s,
            "POST",
            "/api/tus/",
            &[("Tus-Resumable", version), len, name],
            b"",
        );
        assert_eq!(r.status, 412, "Tus-Resumable {version:?}: {}", r.text());
        assert!(r.text().starts_with("{\"error\":\""), "{}", r.text());
    }
    assert!(
        !tus_files(&s.dir).iter().any(|f| f.ends_with(".data")),
        "a refused POST created an upload: {:?}",
        tus_files(&s.dir)
    );

    let loc = create(&s, 10, "a.txt");
    let no = ("Tus-Resumable", "");
    let r = tus(&s, "HEAD", &loc, &[no], b"");
    assert_eq!(r.status, 412);
    let r = tus(
        &s,
        "PATCH",
        &loc,
        &[no, ("Upload-Offset", "0"), ("Content-Type", OCTETS)],
        b"0123456789",
    );
    assert_eq!(r.status, 412, "{}", r.text());
    let r = tus(
        &s,
        "PATCH",
        &loc,
        &[
            ("Tus-Resumable", "2.0.0"),
            ("Upload-Offset", "0"),
            ("Content-Type", OCTETS),
        ],
        b"0123456789",
    );
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(offset(&s, &loc), 0, "a refused PATCH wrote bytes");
    let r = tus(&s, "DELETE", &loc, &[no], b"");
    assert_eq!(r.status, 412);
    assert_eq!(offset(&s, &loc), 0, "a refused DELETE removed the upload");
    assert!(!s.dir.join("a.txt").exists());
}

#[test]
fn a_412_names_the_versions_the_server_speaks() {
    let s = Server::start(&[]);
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Tus-Resumable", "0.2.2"),
            ("Upload-Length", "1"),
            ("Upload-Metadata", &meta("a")),
        ],
        b"",
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{:?}", r.headers);
}

// ---- creation ---------------------------------------------------------------

#[test]
fn an_upload_length_over_max_size_gets_413() {
    let s = Server::start(&["--max-size", "1M"]);
    let m = meta("big.bin");
    for (len, want) in [(1_048_577u64, 413), (10u64 << 40, 413), (1_048_576, 201)] {
        let r = tus(
            &s,
            "POST",
            "/api/tus/",
            &[("Upload-Length", &len.to_string()), ("Upload-Metadata", &m)],
            b"",
        );
        assert_eq!(r.status, want, "Upload-Length {len}: {}", r.text());
        if want == 413 {
            assert!(r.text().starts_with("{\"error\":\""), "{}", r.text());
            assert!(r.header("Location").is_none());
        }
    }
    // A creation-with-upload body longer than the declared length.
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", "4"),
            ("Upload-Metadata", &m),
            ("Content-Type", OCTETS),
        ],
        b"0123456789",
    );
    assert_eq!(r.status, 413, "{}", r.text());
    // Exactly one upload exists: the 1 MiB one.
    let datas = tus_files(&s.dir)
        .into_iter()
        .filter(|f| f.ends_with(".data"))
        .count();
    assert_eq!(datas, 1, "{:?}", tus_files(&s.dir));
}

#[test]
fn creation_needs_a_length_and_a_usable_name() {
    let s = Server::start(&[]);
    let good = meta("ok.txt");
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no Upload-Length", vec![("Upload-Metadata", good.clone())]),
        (
            "Upload-Length abc",
            vec![
                ("Upload-Length", "abc".into()),
                ("Upload-Metadata", good.clone()),
            ],
        ),
        (
            "Upload-Length -1",
            vec![
                ("Upload-Length", "-1".into()),
                ("Upload-Metadata", good.clone()),
            ],
        ),
        (
            "deferred length",
            vec![
                ("Upload-Defer-Length", "1".into()),
                ("Upload-Metadata", good.clone()),
            ],
        ),
        ("no metadata", vec![("Upload-Length", "5".into())]),
        (
            "metadata without a name",
            vec![
                ("Upload-Length", "5".into()),
                (
                    "Upload-Metadata",
                    format!("filetype {}", b64(b"text/plain")),
                ),
            ],
        ),
        (
            "empty filename",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", "filename ".into()),
            ],
        ),
        (
            "filename not base64",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", "filename !!!".into()),
            ],
        ),
        (
            "filename not UTF-8",
            vec![
                ("Upload-Length", "5".into()),
                (
                    "Upload-Metadata",
                    format!("filename {}", b64(&[0xff, 0xfe, b'a'])),
                ),
            ],
        ),
        (
            "name ..",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("..")),
            ],
        ),
        (
            "name ../..",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("../..")),
            ],
        ),
        (
            "name /",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("/")),
            ],
        ),
        (
            "name into .tinydrop",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("../.tinydrop/tus/x")),
            ],
        ),
        (
            "name .tinydrop/tus/x",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta(".tinydrop/tus/x")),
            ],
        ),
        (
            "name with a newline",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("a\nb.txt")),
            ],
        ),
        (
            "name with NUL",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("a\0b.txt")),
            ],
        ),
        (
            "name with a bidi override",
            vec![
                ("Upload-Length", "5".into()),
                ("Upload-Metadata", meta("invoice\u{202E}fdp.exe")),
            ],
        ),
        (
            "relativePath ..",
            vec![
                ("Upload-Length", "5".into()),
                (
                    "Upload-Metadata",
                    format!("relativePath {},filename {}", b64(b"../.."), b64(b"x")),
                ),
            ],
        ),
    ];
    for (what, headers) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = tus(&s, "POST", "/api/tus/", &h, b"");
        assert_eq!(r.status, 400, "{what}: {} {}", r.status, r.text());
        assert!(
            r.text().starts_with("{\"error\":\""),
            "{what}: {}",
            r.text()
        );
        assert!(r.header("Location").is_none(), "{what}");
    }
    assert!(
        !tus_files(&s.dir).iter().any(|f| f.ends_with(".data")),
        "a refused POST created an upload: {:?}",
        tus_files(&s.dir)
    );
    let listing = s.get("/api/files").text();
    assert_eq!(listing, "[]");
}

#[test]
fn a_climbing_name_is_made_safe_and_stays_inside_dir() {
    // API.md: `..` segments are dropped, never interpreted; only a name that
    // cannot be made safe is a 400 (see creation_needs_a_length_and_a_usable_name).
    let s = Server::start(&[]);
    for (client, stored) in [
        ("../x.txt", "x.txt"),
        ("a/../../../y.txt", "a/y.txt"),
        ("/abs/z.txt", "abs/z.txt"),
    ] {
        let body = client.as_bytes();
        let r = tus(
            &s,
            "POST",
            "/api/tus/",
            &[
                ("Upload-Length", &body.len().to_string()),
                ("Upload-Metadata", &meta(client)),
                ("Content-Type", OCTETS),
            ],
            body,
        );
        assert_eq!(r.status, 201, "{client}: {}", r.text());
        assert_published(&s, &r, stored, body);
    }
    let parent = s.dir.parent().unwrap();
    assert!(!parent.join("x.txt").exists() && !parent.join("y.txt").exists());
}

#[test]
fn creation_answers_201_with_location_and_expiry_and_head_describes_it() {
    let s = Server::start(&[]);
    let m = meta("later.txt");
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[("Upload-Length", "1000"), ("Upload-Metadata", &m)],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
    let loc = r.header("Location").unwrap().to_string();
    assert_location(&loc);
    let expires = r.header("Upload-Expires").expect("Upload-Expires");
    let at = parse_http_date(expires).unwrap_or_else(|| panic!("Upload-Expires {expires:?}"));
    let day = 24 * 3600;
    let now = now_secs();
    assert!(
        at + 5 >= now + day && at <= now + day + 5,
        "Upload-Expires {expires} is not 24 h from now"
    );
    let other = create(&s, 1000, "later.txt");
    assert_ne!(loc, other, "two uploads got one id");

    let h = head(&s, &loc);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Upload-Offset"), Some("0"));
    assert_eq!(h.header("Upload-Length"), Some("1000"));
    assert_eq!(h.header("Cache-Control"), Some("no-store"));
    assert_eq!(h.header("Tus-Resumable"), Some("1.0.0"));
    assert_eq!(h.header("Upload-Metadata"), Some(m.as_str()));
    assert!(h.header("Upload-Expires").is_some());
    // Nothing is visible in DIR before the upload completes.
    assert_eq!(s.get("/api/files").text(), "[]");
}

#[test]
fn creation_with_upload_stores_the_first_bytes_or_the_whole_file() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(11, 300_000);
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", &bytes.len().to_string()),
            ("Upload-Metadata", &meta("part.bin")),
            ("Content-Type", OCTETS),
        ],
        &bytes[..100_000],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(num(&r, "Upload-Offset"), 100_000);
    assert!(r.header("Tinydrop-Saved-As").is_none());
    let loc = r.header("Location").unwrap().to_string();
    assert_eq!(offset(&s, &loc), 100_000);
    let r = patch(&s, &loc, 100_000, &bytes[100_000..]);
    assert_eq!(r.status, 204);
    assert_published(&s, &r, "part.bin", &bytes);

    // The whole file in the POST publishes it at once.
    let whole = Noise::bytes(12, 70_000);
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", &whole.len().to_string()),
            ("Upload-Metadata", &meta("whole.bin")),
            ("Content-Type", OCTETS),
        ],
        &whole,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(num(&r, "Upload-Offset"), whole.len() as u64);
    assert_eq!(r.header("Tinydrop-Status"), Some("saved"));
    assert_published(&s, &r, "whole.bin", &whole);
    let loc = r.header("Location").unwrap().to_string();
    let h = head(&s, &loc);
    assert_eq!(h.status, 200, "a finished upload is remembered");
    assert_eq!(num(&h, "Upload-Offset"), whole.len() as u64);
    assert_published(&s, &h, "whole.bin", &whole);

    // A body of another type is refused and creates nothing.
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", "5"),
            ("Upload-Metadata", &meta("typed.bin")),
            ("Content-Type", "application/octet-stream"),
        ],
        b"12345",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    // An empty file needs no PATCH.
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", "0"),
            ("Upload-Metadata", &meta("empty.txt")),
        ],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_published(&s, &r, "empty.txt", b"");
    assert_eq!(
        tus_state(&s.dir),
        Vec::<String>::new(),
        "leftovers in the tus dir"
    );
}

// ---- HEAD and PATCH ---------------------------------------------------------

#[test]
fn patches_append_and_the_last_one_publishes_the_file() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(21, 1_000_003);
    let loc = create(&s, bytes.len() as u64, "three/parts.bin");
    let mut at = 0usize;
    for end in [1, 400_000, bytes.len()] {
        let r = patch(&s, &loc, at as u64, &bytes[at..end]);
        assert_eq!(r.status, 204, "PATCH {at}..{end}: {}", r.text());
        assert_eq!(num(&r, "Upload-Offset"), end as u64);
        assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
        if end < bytes.len() {
            assert!(r.header("Tinydrop-Saved-As").is_none());
            assert!(r.header("Upload-Expires").is_some());
            let h = head(&s, &loc);
            assert_eq!(num(&h, "Upload-Offset"), end as u64);
            assert_eq!(num(&h, "Upload-Length"), bytes.len() as u64);
            assert_eq!(h.header("Cache-Control"), Some("no-store"));
            assert!(!s.dir.join("three/parts.bin").exists(), "published early");
        } else {
            assert_eq!(r.header("Tinydrop-Status"), Some("saved"));
            assert_published(&s, &r, "three/parts.bin", &bytes);
        }
        at = end;
    }
    let h = head(&s, &loc);
    assert_eq!(h.status, 200, "a finished upload is remembered");
    assert_eq!(num(&h, "Upload-Offset"), bytes.len() as u64);
    assert_eq!(h.header("Tinydrop-Status"), Some("saved"));
    assert_eq!(tus_files(&s.dir), vec![format!("{}.done", id_of(&loc))]);
    let listing = s.get("/api/files").text();
    assert!(
        listing.contains("\"path\":\"three/parts.bin\",\"size\":1000003"),
        "{listing}"
    );
}

#[test]
fn a_patch_at_the_wrong_offset_gets_409_and_changes_nothing() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(31, 1000);
    let loc = create(&s, 1000, "o.bin");
    let r = patch(&s, &loc, 5, &bytes[5..10]);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(patch(&s, &loc, 0, &bytes[..100]).status, 204);
    for wrong in [0u64, 99, 101, 500] {
        let r = patch(&s, &loc, wrong, &bytes[wrong as usize..wrong as usize + 10]);
        assert_eq!(r.status, 409, "offset {wrong}: {}", r.text());
        assert!(
            r.text().contains("100"),
            "the error names where to go on: {}",
            r.text()
        );
    }
    let r = tus(
        &s,
        "PATCH",
        &loc,
        &[("Content-Type", OCTETS)],
        &bytes[100..110],
    );
    assert_eq!(r.status, 400, "no Upload-Offset: {}", r.text());
    let r = tus(
        &s,
        "PATCH",
        &loc,
        &[("Content-Type", OCTETS), ("Upload-Offset", "1e2")],
        &bytes[100..110],
    );
    assert_eq!(r.status, 400, "Upload-Offset 1e2: {}", r.text());
    assert_eq!(offset(&s, &loc), 100);
    assert_eq!(data_len(&s.dir, &loc), 100);
    let r = patch(&s, &loc, 100, &bytes[100..]);
    assert_eq!(r.status, 204);
    assert_published(&s, &r, "o.bin", &bytes);
}

#[test]
fn a_patch_of_another_content_type_gets_415() {
    let s = Server::start(&[]);
    let loc = create(&s, 10, "t.bin");
    for ct in ["application/octet-stream", "text/plain", ""] {
        let r = tus(
            &s,
            "PATCH",
            &loc,
            &[("Upload-Offset", "0"), ("Content-Type", ct)],
            b"0123456789",
        );
        assert_eq!(r.status, 415, "Content-Type {ct:?}: {}", r.text());
    }
    assert_eq!(offset(&s, &loc), 0);
    // Parameters and case do not matter.
    let r = tus(
        &s,
        "PATCH",
        &loc,
        &[
            ("Upload-Offset", "0"),
            ("Content-Type", "Application/Offset+Octet-Stream; x=1"),
        ],
        b"0123456789",
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

#[test]
fn a_patch_longer_than_the_rest_of_the_upload_is_refused_whole() {
    let s = Server::start(&[]);
    let loc = create(&s, 10, "short.bin");
    assert_eq!(patch(&s, &loc, 0, b"0123").status, 204);
    let r = patch(&s, &loc, 4, b"456789abc");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(offset(&s, &loc), 4);
    let r = patch(&s, &loc, 4, b"456789");
    assert_eq!(r.status, 204);
    assert_published(&s, &r, "short.bin", b"0123456789");
}

#[test]
fn unknown_ids_get_404() {
    let s = Server::start(&[]);
    let loc = create(&s, 10, "u.bin");
    let mut other = id_of(&loc).to_string();
    // Same shape, another id.
    let last = if other.ends_with('0') { "1" } else { "0" };
    other.replace_range(other.len() - 1.., last);
    for path in [
        format!("/api/tus/{other}"),
        "/api/tus/nope".to_string(),
        "/api/tus/../../etc/passwd".to_string(),
        "/api/tus/%2e%2e%2fx".to_string(),
        format!("/api/tus/{}/x", id_of(&loc)),
        format!("/api/tus/{}", id_of(&loc).to_uppercase()),
    ] {
        let r = head(&s, &path);
        assert_eq!(r.status, 404, "HEAD {path}");
        let r = patch(&s, &path, 0, b"01234");
        assert_eq!(r.status, 404, "PATCH {path}: {}", r.text());
        assert!(r.text().starts_with("{\"error\":\""), "{}", r.text());
        let r = tus(&s, "DELETE", &path, &[], b"");
        assert_eq!(r.status, 404, "DELETE {path}");
    }
    assert_eq!(offset(&s, &loc), 0);
}

#[test]
fn termination_removes_the_upload_and_its_bytes() {
    let s = Server::start(&[]);
    let loc = create(&s, 100, "gone.bin");
    assert_eq!(patch(&s, &loc, 0, &[7u8; 40]).status, 204);
    assert_eq!(tus_files(&s.dir).len(), 2, "{:?}", tus_files(&s.dir));
    let r = tus(&s, "DELETE", &loc, &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
    assert_eq!(head(&s, &loc).status, 404);
    assert_eq!(patch(&s, &loc, 40, &[7u8; 60]).status, 404);
    assert_eq!(tus(&s, "DELETE", &loc, &[], b"").status, 404);
    assert_eq!(tus_files(&s.dir), Vec::<String>::new());
    assert!(!s.dir.join("gone.bin").exists());
}

// ---- expiration -------------------------------------------------------------

#[test]
fn an_upload_without_progress_expires_and_progress_keeps_one_alive() {
    let s = Server::start(&["--tus-expiry", "2s"]);
    let idle = create(&s, 100, "idle.bin");
    let r = patch(&s, &idle, 0, &[1u8; 10]);
    assert_eq!(r.status, 204);
    let last_progress = Instant::now();
    let expires = parse_http_date(r.header("Upload-Expires").unwrap()).unwrap();
    assert!(
        expires <= now_secs() + 3,
        "Upload-Expires is not about 2 s ahead: {:?}",
        r.header("Upload-Expires")
    );
    let busy = create(&s, 1_000_000, "busy.bin");
    let busy_created = Instant::now();
    let mut busy_at = 0u64;

    // Poll HEAD; keep the other upload moving meanwhile.
    let deadline = Instant::now() + Duration::from_secs(8);
    let expired_after = loop {
        assert!(
            Instant::now() < deadline,
            "no 404 within 8 s of a 2 s expiry"
        );
        if head(&s, &idle).status == 404 {
            break last_progress.elapsed();
        }
        assert_eq!(patch(&s, &busy, busy_at, &[2u8; 5]).status, 204);
        busy_at += 5;
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        expired_after >= Duration::from_millis(1500),
        "expired after {expired_after:?}, before its 2 s"
    );
    // Progress keeps the other one alive well past 2 s.
    while busy_created.elapsed() < Duration::from_millis(3500) {
        assert_eq!(patch(&s, &busy, busy_at, &[2u8; 5]).status, 204);
        busy_at += 5;
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(offset(&s, &busy), busy_at);
    // A PATCH on the expired one gets 404 too; DELETE removes what is left.
    assert_eq!(patch(&s, &idle, 10, &[1u8; 90]).status, 404);
    assert_eq!(tus(&s, "DELETE", &idle, &[], b"").status, 404);
    let id = id_of(&idle).to_string();
    assert!(
        !tus_files(&s.dir).iter().any(|f| f.starts_with(&id)),
        "expired data still in DIR/.tinydrop/tus after DELETE: {:?}",
        tus_files(&s.dir)
    );
    assert!(!s.dir.join("idle.bin").exists());
}

#[test]
fn an_expired_upload_leaves_no_data_behind() {
    let s = Server::start(&["--tus-expiry", "2s"]);
    let loc = create(&s, 100, "left.bin");
    assert_eq!(patch(&s, &loc, 0, &[1u8; 10]).status, 204);
    assert!(
        wait_until(Duration::from_secs(6), || head(&s, &loc).status == 404),
        "no 404 within 6 s of a 2 s expiry"
    );
    assert_eq!(patch(&s, &loc, 10, &[1u8; 90]).status, 404);
    // Other traffic goes on (creation runs the sweep); the expired bytes
    // must not stay on disk.
    let id = id_of(&loc).to_string();
    let mine = || -> Vec<String> {
        tus_files(&s.dir)
            .into_iter()
            .filter(|f| f.starts_with(&id))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    while !mine().is_empty() && Instant::now() < deadline {
        let _ = create(&s, 1, "other.bin");
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        mine(),
        Vec::<String>::new(),
        "expired upload still on disk 4 s after HEAD and PATCH said 404"
    );
}

// ---- checksums --------------------------------------------------------------

fn digest(alg: &str, bytes: &[u8]) -> String {
    use sha2::Digest;
    let raw: Vec<u8> = match alg {
        "sha1" => sha1::Sha1::digest(bytes).to_vec(),
        "sha256" => sha2::Sha256::digest(bytes).to_vec(),
        _ => unreachable!(),
    };
    format!("{alg} {}", b64(&raw))
}

#[test]
fn checksums_sha1_and_sha256_are_verified_and_a_mismatch_is_discarded() {
    let s = Server::start(&[]);
    for alg in ["sha1", "sha256"] {
        let name = format!("sum-{alg}.bin");
        let bytes = Noise::bytes(41, 700_000);
        let loc = create(&s, bytes.len() as u64, &name);
        let (a, b, c) = (
            &bytes[..300_000],
            &bytes[300_000..600_000],
            &bytes[600_000..],
        );
        let r = patch_sum(&s, &loc, 0, a, &digest(alg, a));
        assert_eq!(r.status, 204, "{alg} right: {}", r.text());
        // Wrong digest: 460, that PATCH's bytes discarded.
        let r = patch_sum(&s, &loc, 300_000, b, &digest(alg, a));
        assert_eq!(r.status, 460, "{alg} wrong: {}", r.text());
        assert!(r.text().starts_with("{\"error\":\""), "{}", r.text());
        assert_eq!(
            offset(&s, &loc),
            300_000,
            "{alg}: bytes of a mismatched PATCH kept"
        );
        assert_eq!(data_len(&s.dir, &loc), 300_000);
        // One flipped byte is a mismatch as well.
        let mut flipped = b.to_vec();
        flipped[12_345] ^= 1;
        let r = patch_sum(&s, &loc, 300_000, &flipped, &digest(alg, b));
        assert_eq!(r.status, 460, "{alg} flipped byte");
        assert_eq!(offset(&s, &loc), 300_000);
        // An algorithm we do not offer, or a malformed header: 400, nothing kept.
        for bad in ["md5 1B2M2Y8AsgTpgAmY7PhCfg==", "sha1", "sha256 not*base64"] {
            let r = patch_sum(&s, &loc, 300_000, b, bad);
            assert_eq!(r.status, 400, "Upload-Checksum {bad:?}: {}", r.text());
        }
        assert_eq!(offset(&s, &loc), 300_000);
        let r = patch_sum(&s, &loc, 300_000, b, &digest(alg, b));
        assert_eq!(r.status, 204, "{alg} right again: {}", r.text());
        let r = patch_sum(&s, &loc, 600_000, c, &digest(alg, c));
        assert_eq!(r.status, 204);
        assert_published(&s, &r, &name, &bytes);
    }
    // Checksum on creation-with-upload: a mismatch still tells where the upload is.
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", "10"),
            ("Upload-Metadata", &meta("sum-post.bin")),
            ("Content-Type", OCTETS),
            ("Upload-Checksum", &digest("sha1", b"other")),
        ],
        b"01234",
    );
    assert_eq!(r.status, 460, "{}", r.text());
    let loc = r
        .header("Location")
        .expect("Location with the 460")
        .to_string();
    assert_eq!(offset(&s, &loc), 0);
    let r = patch_sum(&s, &loc, 0, b"0123456789", &digest("sha256", b"0123456789"));
    assert_eq!(r.status, 204);
    assert_published(&s, &r, "sum-post.bin", b"0123456789");
}

// ---- names, versions, duplicates -------------------------------------------

/// A whole upload in one PATCH; the final answer.
fn upload(s: &Server, metadata: &str, bytes: &[u8]) -> Resp {
    let r = tus(
        s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", &bytes.len().to_string()),
            ("Upload-Metadata", metadata),
        ],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let loc = r.header("Location").unwrap().to_string();
    let r = patch(s, &loc, 0, bytes);
    assert_eq!(r.status, 204, "{}", r.text());
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_finished_file_gets_name_rules_versions_and_duplicates() {
    let s = Server::start(&[]);
    let a = Noise::bytes(51, 5000);
    let b = Noise::bytes(52, 5000);
    let r = upload(&s, &meta("v.txt"), &a);
    assert_eq!(r.header("Tinydrop-Status"), Some("saved"));
    assert_published(&s, &r, "v.txt", &a);
    let r = upload(&s, &meta("v.txt"), &b);
    assert_eq!(r.header("Tinydrop-Status"), Some("saved"));
    assert_published(&s, &r, "v (1).txt", &b);
    // Same bytes again: nothing written, the existing name reported.
    let r = upload(&s, &meta("v.txt"), &a);
    assert_eq!(r.header("Tinydrop-Status"), Some("duplicate"));
    assert_published(&s, &r, "v.txt", &a);
    let r = upload(&s, &meta("v.txt"), &b);
    assert_eq!(r.header("Tinydrop-Status"), Some("duplicate"));
    assert_eq!(r.header("Tinydrop-Saved-As"), Some("v (1).txt"));
    assert!(!s.dir.join("v (2).txt").exists());

    // A file that came by multipart is a duplicate for tus too.
    let c = b"the same bytes both ways";
    assert_eq!(s.post_files(&[("w.txt", c)]).status, 201);
    let r = upload(&s, &meta("w.txt"), c);
    assert_eq!(r.header("Tinydrop-Status"), Some("duplicate"));

    // relativePath wins over filename; Uppy's "null" counts as absent; name is the last resort.
    let both = format!(
        "relativePath {},filename {}",
        b64(b"dir/sub/r.txt"),
        b64(b"r.txt")
    );
    let r = upload(&s, &both, b"r");
    assert_published(&s, &r, "dir/sub/r.txt", b"r");
    let null = format!("relativePath {},filename {}", b64(b"null"), b64(b"n.txt"));
    let r = upload(&s, &null, b"n");
    assert_published(&s, &r, "n.txt", b"n");
    let r = upload(
        &s,
        &format!("name {},type {}", b64(b"uppy.txt"), b64(b"text/plain")),
        b"u",
    );
    assert_published(&s, &r, "uppy.txt", b"u");
    // tuspy sends lower-case keys, tus-js-client may send any case.
    let r = upload(&s, &format!("FileName {}", b64(b"case.txt")), b"k");
    assert_published(&s, &r, "case.txt", b"k");

    // A non-ASCII name: the header is percent-encoded UTF-8.
    let name = "résumé 日本.txt";
    let r = upload(&s, &meta(name), b"utf8");
    let saved = r.header("Tinydrop-Saved-As").unwrap();
    assert!(saved.is_ascii(), "{saved:?}");
    assert_eq!(percent_decode(saved), name);
    assert_eq!(std::fs::read(s.dir.join(name)).unwrap(), b"utf8");

    assert_eq!(
        tus_state(&s.dir),
        Vec::<String>::new(),
        "duplicates left data behind"
    );
    let listing = s.get("/api/files").text();
    assert!(!listing.contains(".tinydrop"), "{listing}");
    assert!(listing.contains("\"path\":\"v (1).txt\""), "{listing}");
}

// ---- cut, concurrent and killed PATCHes -------------------------------------

#[test]
fn a_cut_patch_keeps_what_arrived_and_a_resumed_patch_completes() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(61, 4 << 20);
    let loc = create(&s, bytes.len() as u64, "cut.bin");
    let sent = 1_500_001;
    let c = open_patch(&s, &loc, 0, bytes.len(), &bytes[..sent]);
    drop(c); // closes the socket mid-body
    let kept = wait_offset(&s, &loc, Duration::from_secs(10), |o| o > 0);
    assert!(kept > 0, "nothing of the cut PATCH was kept");
    assert!(kept <= sent as u64, "kept {kept} of {sent} sent");
    // It stays there (nothing half-committed).
    thread::sleep(Duration::from_millis(100));
    assert_eq!(offset(&s, &loc), kept);
    let r = patch(&s, &loc, kept, &bytes[kept as usize..]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_published(&s, &r, "cut.bin", &bytes);
    assert_eq!(tus_state(&s.dir), Vec::<String>::new());
}

#[test]
fn a_second_patch_while_one_is_half_open_is_refused_at_once() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(71, 4 << 20);
    let loc = create(&s, bytes.len() as u64, "held.bin");
    let first = open_patch(&s, &loc, 0, bytes.len(), &bytes[..700_000]);
    // The first PATCH is being written (at least one buffer on disk).
    assert!(
        wait_until(Duration::from_secs(10), || data_len(&s.dir, &loc) > 0),
        "the first PATCH never reached the disk"
    );
    // HEAD does not wait for it.
    let t = Instant::now();
    let seen = offset(&s, &loc);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "HEAD waited {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = patch(&s, &loc, seen, &bytes[seen as usize..seen as usize + 1000]);
    let took = t.elapsed();
    assert!(
        matches!(r.status, 423 | 409),
        "second PATCH: {} {}",
        r.status,
        r.text()
    );
    assert!(
        took < Duration::from_secs(2),
        "the second PATCH waited {took:?}"
    );
    // DELETE is refused too, not queued.
    let t = Instant::now();
    let r = tus(&s, "DELETE", &loc, &[], b"");
    assert!(matches!(r.status, 423 | 409), "DELETE: {}", r.status);
    assert!(t.elapsed() < Duration::from_secs(2));
    // Other uploads go on meanwhile.
    let other = Noise::bytes(72, 300_000);
    let r = upload(&s, &meta("other.bin"), &other);
    assert_published(&s, &r, "other.bin", &other);

    drop(first);
    let kept = wait_offset(&s, &loc, Duration::from_secs(10), |o| o > 0);
    assert!(kept > 0 && kept <= 700_000, "kept {kept}");
    // The lock is gone with the first PATCH.
    let r = patch(&s, &loc, kept, &bytes[kept as usize..]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_published(&s, &r, "held.bin", &bytes);
}

#[test]
fn kill_9_mid_patch_and_a_restart_resume_byte_identical() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("uploads");
    let bytes = Noise::bytes(81, 8 << 20);
    let sent = (3 << 20) + 12_345;
    let loc;
    {
        let mut s = Server::start_in(&dir, &[]);
        loc = create(&s, bytes.len() as u64, "killed.bin");
        let _c = open_patch(&s, &loc, 0, bytes.len(), &bytes[..sent]);
        assert!(
            wait_until(Duration::from_secs(15), || data_len(&dir, &loc)
                >= (2 << 20)),
            "the PATCH did not reach the disk: {} bytes",
            data_len(&dir, &loc)
        );
        s.kill9();
    }
    let s = Server::start_in(&dir, &[]);
    let h = head(&s, &loc);
    assert_eq!(h.status, 200, "the upload did not survive kill -9");
    assert_eq!(num(&h, "Upload-Length"), bytes.len() as u64);
    assert_eq!(
        h.header("Upload-Metadata"),
        Some(meta("killed.bin").as_str())
    );
    let at = num(&h, "Upload-Offset");
    assert!(at <= sent as u64, "offset {at} past the {sent} bytes sent");
    assert!(at > 0, "the bytes on disk before the kill were lost");
    let r = patch(&s, &loc, at, &bytes[at as usize..]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_published(&s, &r, "killed.bin", &bytes);
    assert_eq!(tus_state(&dir), Vec::<String>::new());
}

#[test]
fn uploads_survive_a_clean_restart() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("uploads");
    let bytes = Noise::bytes(91, 2 << 20);
    let half = 1 << 20;
    let m = format!(
        "relativePath {},filetype {}",
        b64(b"kept/over.bin"),
        b64(b"x/y")
    );
    let loc;
    {
        let mut s = Server::start_in(&dir, &[]);
        let r = tus(
            &s,
            "POST",
            "/api/tus/",
            &[
                ("Upload-Length", &bytes.len().to_string()),
                ("Upload-Metadata", &m),
            ],
            b"",
        );
        assert_eq!(r.status, 201);
        loc = r.header("Location").unwrap().to_string();
        assert_eq!(patch(&s, &loc, 0, &bytes[..half]).status, 204);
        s.signal("TERM");
        assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    }
    let s = Server::start_in(&dir, &[]);
    let h = head(&s, &loc);
    assert_eq!(h.status, 200);
    assert_eq!(num(&h, "Upload-Offset"), half as u64);
    assert_eq!(h.header("Upload-Metadata"), Some(m.as_str()));
    let r = patch(&s, &loc, half as u64, &bytes[half..]);
    assert_eq!(r.status, 204);
    assert_published(&s, &r, "kept/over.bin", &bytes);
}

// ---- finished uploads ------------------------------------------------------

/// Regular files directly in DIR (not `.tinydrop`), sorted.
fn top_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A HEAD on a finished upload: 200, the offset at the length, and the
/// headers of the publishing.
fn assert_head_finished(s: &Server, loc: &str, saved_as: &str, bytes: &[u8], status: &str) {
    let h = head(s, loc);
    assert_eq!(h.status, 200, "HEAD on a finished upload: {:?}", h.headers);
    assert_eq!(num(&h, "Upload-Offset"), bytes.len() as u64);
    assert_eq!(num(&h, "Upload-Length"), bytes.len() as u64);
    assert!(h.header("Upload-Expires").is_some(), "{:?}", h.headers);
    assert_eq!(h.header("Tinydrop-Status"), Some(status), "{:?}", h.headers);
    assert_published(s, &h, saved_as, bytes);
}

#[test]
fn a_cut_right_after_the_last_byte_is_finished_and_head_says_so() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(101, 3 << 20);
    let loc = create(&s, bytes.len() as u64, "lost-answer.bin");
    // The whole body, then the connection goes before the answer is read.
    let c = open_patch(&s, &loc, 0, bytes.len(), &bytes);
    drop(c);
    // The client comes back and asks where to resume: at the end.
    let mut last = None;
    let published = wait_until(Duration::from_secs(10), || {
        let h = head(&s, &loc);
        let done = h.status == 200 && h.header("Tinydrop-Saved-As").is_some();
        last = Some(h);
        done
    });
    assert!(
        published,
        "HEAD never reported the finished upload: {last:?}"
    );
    assert_head_finished(&s, &loc, "lost-answer.bin", &bytes, "saved");
    // The final empty PATCH a client may send then also succeeds.
    let r = patch(&s, &loc, bytes.len() as u64, b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(num(&r, "Upload-Offset"), bytes.len() as u64);
    assert_published(&s, &r, "lost-answer.bin", &bytes);
    // Stored once.
    assert_eq!(top_files(&s.dir), vec!["lost-answer.bin".to_string()]);
    assert_eq!(tus_state(&s.dir), Vec::<String>::new());
}

#[test]
fn an_empty_upload_is_finished_by_its_post_and_takes_an_empty_patch() {
    let s = Server::start(&[]);
    let r = tus(
        &s,
        "POST",
        "/api/tus/",
        &[
            ("Upload-Length", "0"),
            ("Upload-Metadata", &meta("nothing.txt")),
        ],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(num(&r, "Upload-Offset"), 0);
    assert_published(&s, &r, "nothing.txt", b"");
    let loc = r.header("Location").unwrap().to_string();
    assert_head_finished(&s, &loc, "nothing.txt", b"", "saved");

    // tus-js-client and others send one empty PATCH at 0 after creating it.
    let r = patch(&s, &loc, 0, b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("Upload-Offset"), Some("0"));
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
    assert!(r.header("Upload-Expires").is_some(), "{:?}", r.headers);
    assert_eq!(r.header("Tinydrop-Status"), Some("saved"));
    assert_published(&s, &r, "nothing.txt", b"");
    // Chunked and empty: the same.
    let raw = |body: &str| {
        s.raw(format!("PATCH {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: {OCTETS}\r\nTransfer-Encoding: chunked\r\n\r\n{body}").as_bytes())
    };
    let r = raw("0\r\n\r\n");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("Tinydrop-Saved-As"), Some("nothing.txt"));

    // Another offset is a conflict; bytes past the length are too large.
    let r = patch(&s, &loc, 1, b"");
    assert_eq!(r.status, 409, "{}", r.text());
    let r = patch(&s, &loc, 0, b"x");
    assert_eq!(r.status, 413, "{}", r.text());
    let r = raw("1\r\nx\r\n0\r\n\r\n");
    assert_eq!(r.status, 413, "{}", r.text());
    let r = tus(
        &s,
        "PATCH",
        &loc,
        &[("Upload-Offset", "0"), ("Content-Type", "text/plain")],
        b"",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    // Nothing changed.
    assert_head_finished(&s, &loc, "nothing.txt", b"", "saved");
    assert_eq!(top_files(&s.dir), vec!["nothing.txt".to_string()]);
}

#[test]
fn a_finished_upload_is_remembered_across_restarts() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("uploads");
    let bytes = Noise::bytes(111, 200_000);
    let (first, second);
    {
        let mut s = Server::start_in(&dir, &[]);
        first = create(&s, bytes.len() as u64, "restart.bin");
        assert_eq!(patch(&s, &first, 0, &bytes).status, 204);
        // The same bytes again: a duplicate, remembered as one.
        second = create(&s, bytes.len() as u64, "restart.bin");
        assert_eq!(patch(&s, &second, 0, &bytes).status, 204);
        s.kill9();
    }
    {
        let mut s = Server::start_in(&dir, &[]);
        assert_head_finished(&s, &first, "restart.bin", &bytes, "saved");
        assert_head_finished(&s, &second, "restart.bin", &bytes, "duplicate");
        s.signal("TERM");
        assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    }
    let s = Server::start_in(&dir, &[]);
    assert_head_finished(&s, &first, "restart.bin", &bytes, "saved");
    let r = patch(&s, &first, bytes.len() as u64, b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(top_files(&dir), vec!["restart.bin".to_string()]);
    assert_eq!(tus_state(&dir), Vec::<String>::new());
}

#[test]
fn a_finished_upload_is_forgotten_after_the_expiry_and_its_file_stays() {
    let s = Server::start(&["--tus-expiry", "2s"]);
    let bytes = Noise::bytes(121, 10_000);
    let loc = create(&s, bytes.len() as u64, "kept.bin");
    let r = patch(&s, &loc, 0, &bytes);
    assert_eq!(r.status, 204);
    let finished = Instant::now();
    assert_head_finished(&s, &loc, "kept.bin", &bytes, "saved");
    let expires = parse_http_date(head(&s, &loc).header("Upload-Expires").unwrap()).unwrap();
    assert!(
        expires <= now_secs() + 3,
        "Upload-Expires is not about 2 s after completion"
    );
    assert!(
        wait_until(Duration::from_secs(8), || head(&s, &loc).status == 404),
        "the record of a finished upload did not expire"
    );
    assert!(
        finished.elapsed() >= Duration::from_millis(1500),
        "expired after {:?}, before its 2 s",
        finished.elapsed()
    );
    assert_eq!(patch(&s, &loc, bytes.len() as u64, b"").status, 404);
    assert_eq!(tus_files(&s.dir), Vec::<String>::new());
    assert_eq!(std::fs::read(s.dir.join("kept.bin")).unwrap(), bytes);
}

#[test]
fn deleting_a_finished_upload_forgets_it_and_keeps_the_file() {
    let s = Server::start(&[]);
    let bytes = Noise::bytes(131, 50_000);
    let loc = create(&s, bytes.len() as u64, "stays.bin");
    assert_eq!(patch(&s, &loc, 0, &bytes).status, 204);
    let r = tus(&s, "DELETE", &loc, &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
    assert_eq!(head(&s, &loc).status, 404);
    assert_eq!(patch(&s, &loc, bytes.len() as u64, b"").status, 404);
    assert_eq!(tus(&s, "DELETE", &loc, &[], b"").status, 404);
    assert_eq!(tus_files(&s.dir), Vec::<String>::new());
    assert_eq!(std::fs::read(s.dir.join("stays.bin")).unwrap(), bytes);
    assert!(s
        .get("/api/files")
        .text()
        .contains("\"path\":\"stays.bin\""));
}
