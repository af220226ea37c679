//! Downloads (with ranges) and deletes: off by default, on with their flags,
//! never through a symlink or into `.tinydrop`.

use std::io::Write;
use std::time::Duration;

use crate::util::*;

fn get_with(s: &Server, method: &str, path: &str, extra: &str) -> Resp {
    get_from(s, "127.0.0.1", method, path, extra)
}

fn get_from(s: &Server, ip: &str, method: &str, path: &str, extra: &str) -> Resp {
    let mut c = s.connect_from(ip);
    c.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    read_one(&mut c, method == "HEAD").unwrap()
}

#[test]
fn downloads_and_deletes_are_refused_by_default() {
    let s = Server::start(&[]);
    assert_eq!(s.put("/files/a.txt", b"hello").status, 201);
    let r = s.get("/files/a.txt");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("--allow-download"), "{}", r.text());
    let r = get_with(&s, "DELETE", "/files/a.txt", "");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("--allow-delete"));
    assert!(s.dir.join("a.txt").exists());
}

#[test]
fn downloads_serve_whole_files_ranges_and_head() {
    let s = Server::start(&["--allow-download"]);
    let data: Vec<u8> = (0..100u8).collect();
    assert_eq!(s.put("/files/d/n.bin", &data).status, 201);

    let r = s.get("/files/d/n.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert!(r.header("ETag").is_some() && r.header("Last-Modified").is_some());

    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=99-", 99, 99),
        ("bytes=-10", 90, 99),
        ("bytes=10-19", 10, 19),
        ("bytes=50-5000", 50, 99),
    ] {
        let r = get_with(&s, "GET", "/files/d/n.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, data[start..=end], "{range}");
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {start}-{end}/100").as_str())
        );
    }
    let r = get_with(&s, "GET", "/files/d/n.bin", "Range: bytes=100-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100"));

    let r = get_with(&s, "HEAD", "/files/d/n.bin", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("100"));
    assert!(r.body.is_empty());

    let etag = s.get("/files/d/n.bin").header("ETag").unwrap().to_string();
    let r = get_with(
        &s,
        "GET",
        "/files/d/n.bin",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);

    assert_eq!(s.get("/files/d/missing.bin").status, 404);
    assert_eq!(
        s.get("/files/d%2Fn.bin").status,
        200,
        "an encoded slash is a path separator in a name"
    );
}

#[test]
fn active_content_is_served_as_an_attachment() {
    let s = Server::start(&["--allow-download"]);
    for name in ["x.html", "x.svg", "x.xml", "x.js"] {
        assert_eq!(
            s.put(&format!("/files/{name}"), b"<script>alert(1)</script>")
                .status,
            201
        );
        let r = s.get(&format!("/files/{name}"));
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.header("Content-Disposition")
                .unwrap()
                .starts_with("attachment"),
            "{name}"
        );
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
        assert!(r
            .header("Content-Security-Policy")
            .unwrap()
            .contains("sandbox"));
    }
    let r = s.get("/files/x.html");
    assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
    s.put("/files/p.txt", b"plain");
    assert!(s
        .get("/files/p.txt")
        .header("Content-Disposition")
        .unwrap()
        .starts_with("inline"));
}

#[test]
fn symlinks_and_the_reserved_folder_are_never_served_or_deleted() {
    let s = Server::start(&["--allow-download", "--allow-delete"]);
    let outside = s.dir.parent().unwrap().join("secret.txt");
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, s.dir.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(s.dir.parent().unwrap(), s.dir.join("linkdir")).unwrap();
    assert_eq!(s.get("/files/link.txt").status, 404);
    assert_eq!(s.get("/files/linkdir/secret.txt").status, 404);
    assert_eq!(
        get_with(&s, "DELETE", "/files/linkdir/secret.txt", "").status,
        404
    );
    assert!(outside.exists());
    for path in [
        "/files/.tinydrop/tmp",
        "/files/.tinydrop/tus/x",
        "/files/..%2fsecret.txt",
        "/files/%2e%2e/secret.txt",
    ] {
        let r = s.get(path);
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(!r.text().contains("secret\""), "{path}");
    }
}

#[test]
fn delete_removes_a_file_and_then_answers_404() {
    let s = Server::start(&["--allow-delete"]);
    assert_eq!(s.put("/files/a/b.txt", b"bye").status, 201);
    let r = get_with(&s, "DELETE", "/files/a/b.txt", "");
    assert_eq!(r.status, 204);
    assert!(!s.dir.join("a/b.txt").exists());
    assert_eq!(get_with(&s, "DELETE", "/files/a/b.txt", "").status, 404);
    // The same bytes can be uploaded again as a new file, not a stale duplicate.
    let r = s.put("/files/a/b.txt", b"bye");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("\"status\":\"saved\""));
}

#[test]
fn sigterm_lets_a_slow_upload_finish_and_exits_zero() {
    let mut s = Server::start(&[]);
    let mut c = s.connect();
    let body = vec![7u8; 300_000];
    c.write_all(
        format!(
            "PUT /files/slow.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    c.write_all(&body[..100_000]).unwrap();
    // Let the worker start reading the body before the signal comes.
    std::thread::sleep(Duration::from_millis(300));
    s.signal("TERM");
    assert!(s.wait_log("signal 15", Duration::from_secs(5)));
    for chunk in body[100_000..].chunks(50_000) {
        std::thread::sleep(Duration::from_millis(200));
        c.write_all(chunk).unwrap();
    }
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(s.wait_exit(Duration::from_secs(35)), Some(0));
    assert_eq!(
        std::fs::read(s.dir.join("slow.bin")).unwrap().len(),
        body.len()
    );
}

/// `Authorization: Basic` for `user:pass`.
fn basic(user_pass: &str) -> String {
    format!("Authorization: Basic {}\r\n", b64(user_pass.as_bytes()))
}

const ROUTES: [(&str, &str); 9] = [
    ("GET", "/"),
    ("GET", "/api/health"),
    ("GET", "/api/config"),
    ("GET", "/api/files"),
    ("PUT", "/files/a.txt"),
    ("POST", "/"),
    ("OPTIONS", "/api/tus/"),
    ("POST", "/api/tus/"),
    ("GET", "/nope"),
];

#[test]
fn with_auth_every_route_needs_the_right_credentials() {
    let s = Server::start(&["--auth", "ann:pa:ss", "--auth", "bob:other"]);
    for (i, (method, path)) in ROUTES.into_iter().enumerate() {
        // One address per route: five failures each stay under the lock-out.
        let ip = format!("127.0.1.{}", i + 1);
        for extra in [
            String::new(),
            basic("ann:wrong"),
            basic("eve:pa:ss"),
            "Authorization: Basic !!notbase64\r\n".to_string(),
            "Authorization: Bearer abc\r\n".to_string(),
        ] {
            let r = get_from(
                &s,
                &ip,
                method,
                path,
                &format!("{extra}Content-Length: 0\r\n"),
            );
            assert_eq!(r.status, 401, "{method} {path} with {extra:?}");
            assert_eq!(
                r.header("WWW-Authenticate")
                    .map(|v| v.starts_with("Basic realm=\"tinydrop\"")),
                Some(true)
            );
        }
    }
    let mut c = s.connect_from("127.0.0.3");
    c.write_all(format!("PUT /files/a.txt HTTP/1.1\r\nHost: t\r\n{}Content-Length: 2\r\nConnection: close\r\n\r\nhi", basic("ann:pa:ss")).as_bytes()).unwrap();
    assert_eq!(read_response(&mut c).unwrap().status, 201);
    let mut c = s.connect_from("127.0.0.3");
    c.write_all(
        format!(
            "GET /api/files HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            basic("bob:other")
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut c).unwrap().status, 200);
    // The password never reaches the log.
    assert!(!s
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("pa:ss") || l.contains("YW5uOnBhOnNz")));
}

#[test]
fn ten_wrong_logins_from_one_address_get_429_for_a_while() {
    let s = Server::start(&["--auth", "ann:secret"]);
    for _ in 0..10 {
        assert_eq!(
            get_with(&s, "GET", "/api/health", &basic("ann:guess")).status,
            401
        );
    }
    let r = get_with(&s, "GET", "/api/health", &basic("ann:secret"));
    assert_eq!(r.status, 429);
    assert!(r.header("Retry-After").is_some());
    let mut c = s.connect_from("127.0.0.4");
    c.write_all(
        format!(
            "GET /api/health HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            basic("ann:secret")
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut c).unwrap().status, 200);
}

#[test]
fn an_auth_file_holds_sha256_hashes_of_passwords() {
    let tmp = TempDir::new();
    let file = tmp.path().join("users");
    // sha256("correct horse")
    std::fs::write(
        &file,
        format!("# users\ncarol:{}\n", sha256_hex(b"correct horse")),
    )
    .unwrap();
    let s = Server::start(&["--auth-file", file.to_str().unwrap()]);
    assert_eq!(
        get_with(&s, "GET", "/api/health", &basic("carol:correct horse")).status,
        200
    );
    assert_eq!(
        get_with(&s, "GET", "/api/health", &basic("carol:wrong")).status,
        401
    );
    let (code, _, err) = run_cli(&["--auth-file", "/nonexistent/users"], &[]);
    assert_eq!(code, 2, "{err}");
}
