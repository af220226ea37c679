//! The HTTP layer against misbehaving clients: every limit and deadline of
//! DESIGN.md's table, strict framing, huge declared lengths, caps per
//! address, descriptor exhaustion, panics and shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn health_page_404_405_and_head_work() {
    let s = Server::start(&[]);
    let r = s.get("/api/health");
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"));
    assert!(page.header("Content-Security-Policy").is_some());

    let r = s.get("/nope");
    assert_eq!(r.status, 404);
    assert!(r.text().starts_with("{\"error\":\""), "{}", r.text());

    let r = s.raw(b"DELETE /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));

    let mut c = s.connect();
    c.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = read_one(&mut c, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(page.body.len().to_string().as_str())
    );
    // The next pipelined request's answer follows directly: HEAD sent no body.
    assert_eq!(read_response(&mut c).unwrap().text(), r#"{"status":"ok"}"#);
}

#[test]
fn keep_alive_serves_many_requests_and_http10_closes() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    for _ in 0..20 {
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut c).unwrap().status, 200);
    }
    let mut c = s.connect();
    c.write_all(b"GET /api/health HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.headers.iter().any(|(n, _)| n.starts_with("HTTP/1.0"))
            || closed_within(&mut c, Duration::from_secs(2))
    );
}

#[test]
fn an_oversized_head_gets_431_and_a_long_target_414() {
    let s = Server::start(&[]);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut c = s.connect();
    let _ = c.write_all(big.as_bytes());
    assert_eq!(read_response(&mut c).unwrap().status, 431);

    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(20_000));
    let mut c = s.connect();
    let _ = c.write_all(long.as_bytes());
    assert_eq!(read_response(&mut c).unwrap().status, 414);

    let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
    let r = s.raw(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(r.status, 431);
}

#[test]
fn a_slow_head_is_cut_off_after_the_head_deadline() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let start = Instant::now();
    let mut closed = false;
    for b in b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Slow: "
        .iter()
        .cycle()
        .take(40)
    {
        if c.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut c, Duration::from_millis(500)) {
            closed = true;
            break;
        }
    }
    let elapsed = start.elapsed();
    assert!(closed, "a head trickling for {elapsed:?} was not cut off");
    assert!(
        elapsed >= Duration::from_secs(9),
        "cut off too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(16),
        "cut off too late: {elapsed:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).unwrap().status, 200);
    let start = Instant::now();
    assert!(
        closed_within(&mut c, Duration::from_secs(12)),
        "idle connection kept open"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(4),
        "closed too early: {elapsed:?}"
    );
}

#[test]
fn one_address_gets_at_most_its_share_of_workers() {
    let s = Server::start(&["--threads", "4"]); // per-IP cap: 2
    let mut held: Vec<TcpStream> = (0..2).map(|_| s.connect()).collect();
    for c in &mut held {
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // a head that never ends
    }
    thread::sleep(Duration::from_millis(200));
    let r = s.raw(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 503);
    assert!(r.header("Retry-After").is_some());
    // Another address is served at once.
    let mut other = s.connect_from("127.0.0.2");
    other
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut other).unwrap().status, 200);
}

#[test]
fn a_full_queue_answers_503_at_once() {
    let s = Server::start(&["--threads", "1", "--per-ip", "1000"]);
    let mut busy = s.connect();
    busy.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // holds the only worker
    thread::sleep(Duration::from_millis(200));
    let queued: Vec<TcpStream> = (0..64).map(|_| s.connect()).collect();
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let r = s.raw(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(queued);
}

#[test]
fn a_connection_that_waits_too_long_in_the_queue_gets_503() {
    let s = Server::start(&["--threads", "1", "--per-ip", "1000"]);
    let mut busy = s.connect();
    busy.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap(); // holds the worker ~10 s
    thread::sleep(Duration::from_millis(100));
    let mut waiting = s.connect();
    waiting
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The head deadline frees the worker after 10 s; by then the queued
    // connection has waited longer than the queue limit (10 s) or just under.
    let r = read_response(&mut waiting).unwrap();
    assert!(r.status == 503 || r.status == 200, "{}", r.status);
}

#[test]
fn smuggling_shapes_get_400_and_the_connection_closes() {
    let s = Server::start(&[]);
    for bad in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5x\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
    ] {
        let mut c = s.connect();
        c.write_all(format!("POST /api/health HTTP/1.1\r\nHost: t\r\n{bad}\r\nhello").as_bytes())
            .unwrap();
        let r = read_response(&mut c).unwrap();
        assert_eq!(r.status, 400, "{bad:?}");
        assert!(r.text().contains("\"error\""));
        assert!(
            closed_within(&mut c, Duration::from_secs(3)),
            "{bad:?} left the connection open"
        );
    }
}

#[test]
fn a_bad_chunk_size_closes_the_connection() {
    let s = Server::start(&[]);
    for bad in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n",
        "-1\r\n",
        "fffffffffffffffff\r\n",
    ] {
        let mut c = s.connect();
        c.write_all(
            format!(
                "POST /api/health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{bad}"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut c).unwrap();
        assert_eq!(r.status, 405);
        assert!(
            closed_within(&mut c, Duration::from_secs(3)),
            "{bad:?} left the connection open"
        );
    }
    // A well-formed small chunked body that nobody reads is drained; the connection lives on.
    let mut c = s.connect();
    c.write_all(b"POST /api/health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /api/health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).unwrap().status, 405);
    assert_eq!(read_response(&mut c).unwrap().status, 200);
}

#[test]
fn a_terabyte_content_length_is_answered_without_reading_or_allocating() {
    let s = Server::start(&[]);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/health"),
        ("POST", "/"),
        ("PUT", "/files/x.bin"),
        ("POST", "/api/tus/"),
        ("PATCH", "/api/tus/abc"),
        ("GET", "/nope"),
        ("DELETE", "/files/x"),
    ] {
        let mut c = s.connect();
        c.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1099511627776\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        c.write_all(&[0u8; 1000]).unwrap();
        let r = read_response(&mut c).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(r.status >= 200, "{method} {path}");
        assert!(
            closed_within(&mut c, Duration::from_secs(5)),
            "{method} {path} kept a connection with a terabyte to come"
        );
    }
    assert_eq!(s.get("/api/health").status, 200);
    let (rss, peak) = s.rss_kib();
    eprintln!("RSS after terabyte declarations: {rss} KiB, peak {peak} KiB");
    assert!(peak < 32 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn expect_100_continue_is_not_sent_when_the_request_is_refused() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.write_all(b"POST /api/health HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let r = read_one(&mut c, false).unwrap();
    assert_eq!(r.status, 405, "got {} first", r.status);
}

#[test]
fn three_hundred_trickling_connections_do_not_lock_out_another_address() {
    let s = Server::start(&[]);
    let base_threads = s.threads();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut conns: Vec<TcpStream> = Vec::new();
    for _ in 0..300 {
        if let Ok(c) = TcpStream::connect(s.addr) {
            conns.push(c);
        }
    }
    let stop2 = stop.clone();
    let trickler = thread::spawn(move || {
        let line = b"GET / HTTP/1.1\r\nX: ";
        let mut i = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
            for c in &mut conns {
                let _ = c.write_all(&line[i % line.len()..i % line.len() + 1]);
            }
            i += 1;
            thread::sleep(Duration::from_secs(1));
        }
    });
    thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    // A 1 MiB upload from another address completes within 5 s.
    let body = Noise::bytes(7, 1 << 20);
    let mut other = s.connect_from("127.0.0.2");
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = format!(
        "PUT /files/through.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    other.write_all(head.as_bytes()).unwrap();
    other.write_all(&body).unwrap();
    let r = read_response(&mut other).expect("another address was not served within 5 s");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(std::fs::read(s.dir.join("through.bin")).unwrap(), body);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    trickler.join().unwrap();
    // Threads never grow past the fixed set.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.threads() != base_threads && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.threads(), base_threads);
}

#[test]
fn descriptor_exhaustion_recovers_once_connections_close() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit is not installed");
        return;
    }
    let tmp = TempDir::new();
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=48:48", "--", BIN]);
    let s = Server::spawn(cmd, &tmp.path().join("u"), &["--per-ip", "1000"]);
    let flood: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect(s.addr).ok())
        .collect();
    thread::sleep(Duration::from_millis(500));
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = TcpStream::connect(s.addr).ok().and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .ok()?;
            read_response(&mut c).ok()
        });
        if ok.map(|r| r.status) == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not recover after descriptor exhaustion"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        s.wait_log("accept failed", Duration::from_secs(1)),
        "the flood never exhausted descriptors"
    );
}

#[test]
fn a_panicking_handler_answers_500_and_the_worker_lives_on() {
    let s = Server::start(&["--threads", "1", "--per-ip", "4"]);
    for _ in 0..3 {
        let r = s.get("/api/debug/panic");
        assert_eq!(r.status, 500);
        assert!(r.text().contains("internal error"));
    }
    assert_eq!(s.get("/api/health").status, 200);
}

#[test]
fn unread_small_bodies_are_drained_and_big_ones_close_the_connection() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let body = vec![b'x'; 1000];
    c.write_all(b"POST /api/health HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    c.write_all(&body).unwrap();
    c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).unwrap().status, 405);
    assert_eq!(read_response(&mut c).unwrap().status, 200);

    let mut c = s.connect();
    c.write_all(b"POST /api/health HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
}

#[test]
fn a_stalled_body_fails_after_the_body_timeout_and_leaves_nothing() {
    let s = Server::start(&["--body-timeout", "2s"]);
    let mut c = s.connect();
    c.write_all(b"PUT /files/stall.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    c.write_all(&[1u8; 5000]).unwrap();
    let start = Instant::now();
    let r = read_response(&mut c).expect("an answer after the stall");
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "gave up too early"
    );
    assert!(!s.dir.join("stall.bin").exists());
    let tmp = s.dir.join(".tinydrop/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "temp data left behind"
    );
    assert_eq!(s.get("/api/health").status, 200);
}

#[test]
fn every_request_and_every_upload_outcome_gets_one_log_line() {
    let s = Server::start(&[]);
    assert_eq!(s.get("/api/health").status, 200);
    assert!(
        s.wait_log("GET \"/api/health\" 200 15 ", Duration::from_secs(5)),
        "no request line: {:?}",
        s.log.lock().unwrap()
    );
    let r = s.put("/files/caf%C3%A9%20%22q%22.txt", b"hello");
    assert_eq!(r.status, 201);
    // Client text is escaped: quotes inside the name come out as \".
    assert!(
        s.wait_log("saved \"café \\\"q\\\".txt\" as", Duration::from_secs(5)),
        "no outcome line: {:?}",
        s.log.lock().unwrap()
    );
    let log = s.log.lock().unwrap();
    let line = log.iter().find(|l| l.contains("saved \"café")).unwrap();
    assert!(
        line.contains("127.0.0.1:")
            && line.contains("5 bytes")
            && line.contains("sha256 2cf24dba5fb0")
            && line.contains("MiB/s"),
        "{line}"
    );
}
