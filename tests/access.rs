//! Downloads (with ranges) and deletes: off by default, on with their flags,
//! never through a symlink or into `.tinydrop`.

use std::io::Write;
use std::time::Duration;

use crate::util::*;

fn get_with(s: &Server, method: &str, path: &str, extra: &str) -> Resp {
    let mut c = s.connect();
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
