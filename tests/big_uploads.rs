//! What a big upload does beyond storing its bytes: its sha256 moves to a
//! spare core (a thread named `sha256` that lives exactly as long as the
//! upload), and its writeback starts as it arrives, so that it does not stay
//! in the page cache.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// Past the server's 8 MiB threshold, with room to spare.
const BIG: u64 = 40 * MIB;
/// Sent before looking for the helper.
const HEAD_START: u64 = 24 * MIB;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Names of the server's threads.
fn thread_names(s: &Server) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{}/task", s.pid()))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn helpers(s: &Server) -> usize {
    thread_names(s).iter().filter(|n| *n == "sha256").count()
}

/// A PUT or a tus PATCH of `BIG` bytes of `Noise(seed)`, sent up to
/// `HEAD_START` and left open.
fn start_upload(s: &Server, door: &str, seed: u64) -> (TcpStream, Noise) {
    let head = match door {
        "put" => format!(
            "PUT /files/big-{seed}.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n"
        ),
        _ => {
            let meta = format!("filename {}", b64(format!("big-{seed}.bin").as_bytes()));
            let r = s.raw(
                format!(
                    "POST /api/tus/ HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {BIG}\r\nUpload-Metadata: {meta}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            assert_eq!(r.status, 201, "tus create: {}", r.text());
            let loc = r.header("Location").expect("Location").to_string();
            format!(
                "PATCH {loc} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {BIG}\r\n\r\n"
            )
        }
    };
    let mut c = s.connect();
    c.write_all(head.as_bytes()).unwrap();
    let mut noise = Noise(seed);
    send_noise(&mut c, &mut noise, HEAD_START);
    (c, noise)
}

fn send_noise(c: &mut TcpStream, noise: &mut Noise, len: u64) {
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        noise.fill(&mut buf[..n]);
        c.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

#[test]
fn a_big_upload_hashes_on_a_spare_core_and_the_helper_ends_with_it() {
    if cores() < 2 {
        eprintln!("skipped: one core, the server never starts a hashing helper");
        return;
    }
    let s = Server::start(&[]);
    for (i, door) in ["put", "tus"].into_iter().enumerate() {
        let seed = 100 + i as u64;
        let (mut c, mut noise) = start_upload(&s, door, seed);
        assert!(
            wait_until(Duration::from_secs(30), || helpers(&s) == 1),
            "{door}: no sha256 thread while one big upload runs: {:?}",
            thread_names(&s)
        );
        send_noise(&mut c, &mut noise, BIG - HEAD_START);
        let r = read_response(&mut c).expect("a response");
        assert!(
            r.status == 201 || r.status == 204,
            "{door}: {} {}",
            r.status,
            r.text()
        );
        let want = sha256_hex(&Noise::bytes(seed, BIG as usize));
        let stored = s.dir.join(format!("big-{seed}.bin"));
        assert_eq!(sha256_file(&stored), want, "{door}: stored bytes");
        let answered = match door {
            "put" => r.text(),
            _ => r.header("Tinydrop-Sha256").unwrap_or_default().to_string(),
        };
        assert!(
            answered.contains(&want),
            "{door}: answered sha256 {answered}"
        );
        assert!(
            wait_until(Duration::from_secs(10), || helpers(&s) == 0),
            "{door}: the sha256 thread outlived its upload"
        );
    }
}

#[test]
fn a_cut_big_upload_ends_its_helper_and_leaves_no_temp() {
    if cores() < 2 {
        eprintln!("skipped: one core, the server never starts a hashing helper");
        return;
    }
    let s = Server::start(&[]);
    let (c, _) = start_upload(&s, "put", 7);
    assert!(wait_until(Duration::from_secs(30), || helpers(&s) == 1));
    drop(c);
    assert!(
        wait_until(Duration::from_secs(10), || helpers(&s) == 0),
        "the sha256 thread outlived its cut upload"
    );
    assert!(wait_until(Duration::from_secs(10), || temps(&s.dir).is_empty()));
    assert!(stored(&s.dir).is_empty(), "{:?}", stored(&s.dir));
}

#[test]
fn uploads_side_by_side_hash_inline() {
    // Two uploads at once on two cores: each core has one already.
    if cores() > 2 {
        eprintln!(
            "skipped: {} cores, a helper is right for two uploads",
            cores()
        );
        return;
    }
    let s = Server::start(&[]);
    let (mut a, mut na) = start_upload(&s, "put", 21);
    let (mut b, mut nb) = start_upload(&s, "put", 22);
    // Either may have taken the spare core before the other started; from
    // now on both are live, and neither may start one.
    let before = helpers(&s);
    assert!(before <= 1);
    send_noise(&mut a, &mut na, 8 * MIB);
    send_noise(&mut b, &mut nb, 8 * MIB);
    assert!(
        helpers(&s) <= before,
        "a helper started while two uploads ran"
    );
    send_noise(&mut a, &mut na, BIG - HEAD_START - 8 * MIB);
    send_noise(&mut b, &mut nb, BIG - HEAD_START - 8 * MIB);
    for (c, seed) in [(&mut a, 21u64), (&mut b, 22)] {
        let r = read_response(c).expect("a response");
        assert_eq!(r.status, 201, "{}", r.text());
        let want = sha256_hex(&Noise::bytes(seed, BIG as usize));
        assert!(r.text().contains(&want));
    }
}

/// Bytes of `path` in the page cache, by util-linux's `fincore`.
fn cached_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[test]
fn a_big_upload_does_not_stay_in_the_page_cache() {
    let s = Server::start(&[]);
    let probe = s.dir.join("probe");
    std::fs::write(&probe, b"x").unwrap();
    if cached_bytes(&probe).is_none() {
        eprintln!("skipped: no fincore (util-linux) to read the page cache");
        return;
    }
    let len = 96 * MIB;
    let body = Noise::bytes(5, len as usize);
    let r = s.put("/files/paced.bin", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let cached = cached_bytes(&s.dir.join("paced.bin")).expect("fincore");
    // Writeback starts every 8 MiB and the window before is dropped once
    // written: what stays is the last few windows, not the whole file.
    assert!(
        cached <= len / 2,
        "{} MiB of a {} MiB upload still cached",
        cached / MIB,
        len / MIB
    );
}
