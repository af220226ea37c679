//! Test support: a temp dir, the real binary on `--port 0`, and a raw HTTP
//! client that lets tests misbehave on purpose.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_tinydrop");

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!(
            "t-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real binary, serving a temp dir on 127.0.0.1 and a free port.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Owns the dir when the server made it.
    _tmp: Option<TempDir>,
    /// Every stderr line (log) so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts on a new temp dir with extra arguments.
    pub fn start(args: &[&str]) -> Server {
        let tmp = TempDir::new();
        let dir = tmp.path().join("uploads");
        let mut s = Server::start_in(&dir, args);
        s._tmp = Some(tmp);
        s
    }

    /// Starts on `dir` (kept after the server stops).
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        Server::spawn(Command::new(BIN), dir, args)
    }

    /// Starts `cmd` (the binary, or a wrapper such as prlimit) with the usual arguments.
    pub fn spawn(mut cmd: Command, dir: &Path, args: &[&str]) -> Server {
        cmd.args(["--port", "0", "--bind", "127.0.0.1"])
            .args(args)
            .arg(dir)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start tinydrop");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TINYDROP_TEST_LOG").is_some() {
                    eprintln!("server: {line}");
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                panic!(
                    "tinydrop printed no first line; log: {:?}, {:?}",
                    log.lock().unwrap(),
                    out.map(|o| o.status)
                );
            }
        };
        let rest = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {first:?}"));
        let addr: SocketAddr = rest
            .trim_end_matches('/')
            .parse()
            .expect("address in first line");
        Server {
            child,
            addr,
            dir: dir.to_path_buf(),
            _tmp: None,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    /// A connection from another loopback address (127.0.0.2), so per-address caps do not apply.
    pub fn connect_from(&self, ip: &str) -> TcpStream {
        let sock = socket_from(ip, self.addr);
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        sock
    }

    /// Sends raw bytes on a new connection and reads one response.
    pub fn raw(&self, bytes: &[u8]) -> Resp {
        let mut s = self.connect();
        s.write_all(bytes).expect("send");
        read_response(&mut s).expect("a response")
    }

    pub fn get(&self, path: &str) -> Resp {
        self.raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Resp {
        let mut s = self.connect();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        read_response(&mut s).expect("a response")
    }

    /// `multipart/form-data` POST of `(filename, bytes)` pairs.
    pub fn post_files(&self, files: &[(&str, &[u8])]) -> Resp {
        let body = multipart_body(files, "XbOuNdArYx");
        let mut s = self.connect();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=XbOuNdArYx\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        read_response(&mut s).expect("a response")
    }

    /// Resident memory of the server, in KiB (`VmRSS`), and its peak (`VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = proc_status(self.pid());
        (
            status_field(&status, "VmRSS:"),
            status_field(&status, "VmHWM:"),
        )
    }

    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit, at most `timeout`; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls until a log line contains `needle`, at most `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `to` from local address `ip` (any port). Linux lets
/// any 127.x address be the source of a loopback connection; std cannot bind
/// before connecting, so this uses the test-only `socket2`.
pub fn socket_from(ip: &str, to: SocketAddr) -> TcpStream {
    let local: std::net::IpAddr = ip.parse().expect("an IP address");
    let domain = if to.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::new(local, 0).into())
        .expect("bind source address");
    s.connect(&to.into()).expect("connect");
    s.into()
}

/// One parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (skipping `100 Continue`s). Body by Content-Length,
/// or to the end of the stream.
pub fn read_response(s: &mut impl Read) -> std::io::Result<Resp> {
    loop {
        let r = read_one(s, false)?;
        if r.status != 100 {
            return Ok(r);
        }
    }
}

/// Reads one response head and body; `head_only` for HEAD requests.
pub fn read_one(s: &mut impl Read, head_only: bool) -> std::io::Result<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
        if head.len() > 65536 {
            return Err(std::io::Error::other("head too long"));
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if status >= 200 && status != 204 && status != 304 && !head_only {
        match len {
            Some(n) => {
                body.resize(n, 0);
                s.read_exact(&mut body)?;
            }
            None => {
                s.read_to_end(&mut body)?;
            }
        }
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Whether the server closed `s` within `timeout` (EOF or reset), reading and
/// discarding whatever else it sends.
pub fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
    false
}

pub fn multipart_body(files: &[(&str, &[u8])], boundary: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// Deterministic pseudo-random bytes (xorshift), for big bodies without storing them.
pub struct Noise(pub u64);

impl Noise {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        Noise(seed.max(1)).fill(&mut v);
        v
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs the binary with arguments to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tinydrop");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- shared by the upload, tus and fault tests --------------------------------

/// The multipart boundary the tests send.
pub const BOUNDARY: &str = "XbOuNdArYx";
pub const MIB: u64 = 1 << 20;

pub fn post_head(len: usize) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// Sends `len` bytes of `Noise(seed)` in 1 MiB writes (as chunks when
/// `chunked`), hashing every byte, also the ones that could no longer be sent
/// after a write failed. Returns the sha256 of the whole stream and how the
/// sending went. `progress` counts bytes written.
pub fn stream_noise(
    w: &mut impl Write,
    seed: u64,
    len: u64,
    chunked: bool,
    progress: Option<&AtomicU64>,
) -> (String, io::Result<()>) {
    let mut noise = Noise(seed.max(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    let mut result = Ok(());
    while left > 0 {
        let n = left.min(MIB) as usize;
        noise.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
        if result.is_ok() {
            result = if chunked {
                w.write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| w.write_all(&buf[..n]))
                    .and_then(|()| w.write_all(b"\r\n"))
            } else {
                w.write_all(&buf[..n])
            };
            if result.is_ok() {
                if let Some(p) = progress {
                    p.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    }
    if chunked && result.is_ok() {
        result = w.write_all(b"0\r\n\r\n");
    }
    (hex(&hasher.finalize()), result)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).expect("open stored file");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).expect("read stored file");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// The multipart framing around one file of `len` bytes: (head, tail).
pub fn multipart_frame(name: &str) -> (String, String) {
    (
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ),
        format!("\r\n--{BOUNDARY}--\r\n"),
    )
}

/// Regular files under `dir`, relative and `/`-separated, sorted; the
/// top-level `.tinydrop` is skipped, symlinks are not followed (and listed
/// with a trailing `@` so that they show in a comparison).
pub fn stored(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name == ".tinydrop" {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = fs::symlink_metadata(entry.path())
                .expect("lstat")
                .file_type();
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_symlink() {
                out.push(format!("{rel}@"));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// Everything under DIR/.tinydrop other than its `tmp` and `tus` folders.
pub fn private_leftovers(dir: &Path) -> Vec<String> {
    let private = dir.join(".tinydrop");
    let mut out = Vec::new();
    for entry in fs::read_dir(&private).expect("read .tinydrop").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if (name == "tmp" || name == "tus") && is_dir {
            for inner in fs::read_dir(entry.path()).expect("read").flatten() {
                out.push(format!("{name}/{}", inner.file_name().to_string_lossy()));
            }
        } else {
            out.push(name);
        }
    }
    out
}

pub fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join(".tinydrop/tmp"))
        .expect("read tmp")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A connection that could not be made: every write fails.
pub struct Unplugged;

impl Write for Unplugged {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `/proc/PID/status` as text ("" once the process is gone).
pub fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The number after `name` (e.g. `VmRSS:`, in KiB) in a `/proc/PID/status` text; 0 if absent.
pub fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Standard base64 with padding, as tus metadata and checksums use it.
pub fn b64(bytes: &[u8]) -> String {
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
