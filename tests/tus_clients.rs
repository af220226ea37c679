//! Real tus clients against the real binary: tus-js-client 4.3.1 under node
//! (`tests/clients/tus_js.mjs`) and tuspy 1.1.0 in `.venv`
//! (`tests/clients/tuspy_client.py`). Each scenario runs with both clients
//! and ends with the file in DIR byte-identical (sha256):
//!
//! - a plain 50 MiB upload;
//! - the connection cut once in the middle by [`Proxy`], resumed by the
//!   client's own retries;
//! - the client process killed (SIGKILL) at about 40 %, and a new process
//!   resuming from the URL it stored, at an offset > 0;
//! - the server killed (-9) at about 40 % and started again on the same DIR
//!   and port, the client resuming by itself.
//!
//! `tests/clients/setup.sh` installs the clients; without them each test
//! prints `SKIPPED: <reason>` and passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::tus::{head, num, tus_state};
use crate::util::*;

const MIB: u64 = 1 << 20;
/// The size of every scenario's file.
const SIZE: u64 = 50 * MIB;
/// "About 40 %": exactly 40 % of 50 MiB is a 4 MiB chunk boundary; a bit
/// past it, the kill lands inside a PATCH.
const KILL_AT: u64 = SIZE * 42 / 100;
/// A client run longer than this fails the test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- the clients -------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    /// tus-js-client under node.
    Js,
    /// tuspy in `.venv`.
    Py,
}

/// What a client run is asked to do.
#[derive(Default)]
struct Opts {
    /// Bytes per PATCH (default: the client's own, the whole file for both).
    chunk: Option<u64>,
    /// Retry by itself on errors (tus-js-client `retryDelays`, tuspy `retries`).
    retry: bool,
    /// Keep the upload URL in this file and resume what it holds.
    store: Option<PathBuf>,
}

impl Client {
    /// Why this client cannot run here, if it cannot.
    fn missing(self) -> Option<String> {
        let (what, ok) = match self {
            Client::Js => (
                "node_modules/tus-js-client or node",
                root()
                    .join("node_modules/tus-js-client/package.json")
                    .is_file()
                    && Command::new("node")
                        .arg("--version")
                        .stdout(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success()),
            ),
            Client::Py => (
                ".venv with tuspy",
                Command::new(root().join(".venv/bin/python"))
                    .args(["-c", "import tusclient"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
            ),
        };
        (!ok).then(|| format!("{what} missing (run tests/clients/setup.sh)"))
    }

    fn command(self, endpoint: &str, file: &Path, name: &str, o: &Opts) -> Command {
        let mut cmd = match self {
            Client::Js => {
                let mut c = Command::new("node");
                c.arg(root().join("tests/clients/tus_js.mjs"));
                if o.retry {
                    c.args(["--retry-delays", "0,200,500,1000,1000,2000,2000,3000,3000"]);
                }
                c
            }
            Client::Py => {
                let mut c = Command::new(root().join(".venv/bin/python"));
                c.arg(root().join("tests/clients/tuspy_client.py"));
                if o.retry {
                    c.args(["--retries", "10", "--retry-delay", "0.5"]);
                }
                c
            }
        };
        cmd.arg("--endpoint")
            .arg(endpoint)
            .arg("--file")
            .arg(file)
            .arg("--name")
            .arg(name);
        if let Some(chunk) = o.chunk {
            cmd.arg("--chunk").arg(chunk.to_string());
        }
        if let Some(store) = &o.store {
            cmd.arg("--store").arg(store);
        }
        cmd.current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// Returns true (and says so where `cargo test` shows it, past the output
/// capture) when the client is not installed.
fn skip(client: Client) -> bool {
    match client.missing() {
        None => false,
        Some(why) => {
            let test = thread::current().name().unwrap_or("?").to_string();
            // One write, past libtest's capture, so `cargo test` shows it.
            let line = format!("\nSKIPPED: {test}: {why}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            true
        }
    }
}

/// A client process whose stdout lines are collected as they come.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Run {
    fn start(mut cmd: Command) -> Run {
        let mut child = cmd.spawn().expect("start the client");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let e = stderr.clone();
        thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            e.lock().unwrap().push_str(&s);
        });
        Run {
            child,
            lines,
            stderr,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line starting with `prefix`, without it; waits up to `timeout`.
    fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().iter().find(|l| l.starts_with(prefix)) {
                return l[prefix.len()..].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} line within {timeout:?}: {}",
                self.report()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit (killing it after `timeout`); asserts success.
    fn finish(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the client ran over {timeout:?}: {}", self.report());
            }
            thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads drain the pipes.
        thread::sleep(Duration::from_millis(50));
        if std::env::var_os("TINYDROP_TEST_LOG").is_some() {
            eprintln!("client: {}", self.report());
        }
        assert!(
            status.success(),
            "client failed ({status}): {}",
            self.report()
        );
        self.lines()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn report(&self) -> String {
        format!(
            "stdout {:#?}\nstderr {}",
            self.lines(),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The offsets of the PATCHes a client sent, in order.
fn patch_offsets(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("PATCH offset="))
        .map(|n| n.parse().expect("an offset"))
        .collect()
}

/// How many uploads the client created (tus-js-client prints `POST`, tuspy `URL`).
fn creations(client: Client, lines: &[String]) -> usize {
    let prefix = match client {
        Client::Js => "POST",
        Client::Py => "URL ",
    };
    lines.iter().filter(|l| l.starts_with(prefix)).count()
}

// ---- files -------------------------------------------------------------------

/// Writes `len` pseudo-random bytes to `path`, streaming; returns their sha256.
fn noise_file(path: &Path, seed: u64, len: u64) -> String {
    use sha2::Digest;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut noise = Noise(seed);
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        noise.fill(&mut buf[..n]);
        sha.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    hex(&sha.finalize())
}

fn file_sha256(path: &Path) -> String {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    hex(&sha.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client's final lines name the file and its hash; the file in DIR is
/// byte-identical and nothing but finished-upload records is left in the tus
/// directory.
fn assert_uploaded(dir: &Path, lines: &[String], name: &str, sha: &str) {
    assert!(lines.iter().any(|l| l == "DONE"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == &format!("SAVED_AS {name}")),
        "no SAVED_AS {name}: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == &format!("SHA256 {sha}")),
        "Tinydrop-Sha256 is not the file's: {lines:#?}"
    );
    let path = dir.join(name);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE);
    assert_eq!(
        file_sha256(&path),
        sha,
        "{name} in DIR differs from the source"
    );
    assert_eq!(
        tus_state(dir),
        Vec::<String>::new(),
        "leftovers in the tus dir"
    );
}

/// `/api/tus/<id>` of a full upload URL.
fn path_of(url: &str) -> &str {
    &url[url
        .find("/api/tus/")
        .unwrap_or_else(|| panic!("upload URL {url:?}"))..]
}

// ---- the proxy -----------------------------------------------------------------

/// A TCP proxy of the tests' own in front of the server: forwards both ways,
/// counts the bytes going to the server, can pace them (bytes per second per
/// connection) and can cut once: after `cut_at` bytes towards the server in
/// all, both sockets of that connection are closed (really closed: a client
/// still sending gets a reset); later connections are forwarded normally.
/// Connections end with their peers; dropping the proxy stops new ones.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// Bytes read from clients, all connections.
    up: AtomicU64,
    /// Cut when `up` reaches this; `u64::MAX`: no (more) cut.
    cut_at: AtomicU64,
    cuts: AtomicU64,
    /// Client-to-server bytes per second per connection; 0: as fast as it goes.
    rate: u64,
    stop: AtomicBool,
}

impl Proxy {
    fn start(upstream: SocketAddr, rate: u64, cut_at: Option<u64>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            up: AtomicU64::new(0),
            cut_at: AtomicU64::new(cut_at.unwrap_or(u64::MAX)),
            cuts: AtomicU64::new(0),
            rate,
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let st = st.clone();
                thread::spawn(move || serve(st, client));
            }
        });
        Proxy { addr, state }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/api/tus/", self.addr)
    }

    fn up_bytes(&self) -> u64 {
        self.state.up.load(Ordering::SeqCst)
    }

    fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// Waits until `at_least` bytes went towards the server.
    fn wait_up(&self, at_least: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.up_bytes() < at_least {
            assert!(
                Instant::now() < deadline,
                "only {} of {at_least} bytes through the proxy after {timeout:?}",
                self.up_bytes()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve(st: Arc<ProxyState>, client: TcpStream) {
    // No server (it is being restarted): the client sees its connection closed.
    let Ok(server) = TcpStream::connect_timeout(&st.upstream, Duration::from_secs(2)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Server to client: plain copy; when it ends, the client's side closes.
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        // Close as a dying server does: a reset, not a FIN. A FIN left the
        // client (its send window at zero) probing an orphaned socket for a
        // minute instead of failing and retrying.
        let _ = socket2::SockRef::from(&to_client).set_linger(Some(Duration::ZERO));
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
    // Client to server: counted, paced, maybe cut.
    let (mut from_client, mut to_server) = (client, server);
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to_server.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let before = st.up.fetch_add(n as u64, Ordering::SeqCst);
        let cut_at = st.cut_at.load(Ordering::SeqCst);
        if before + n as u64 >= cut_at
            && st
                .cut_at
                .compare_exchange(cut_at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let keep = cut_at.saturating_sub(before) as usize;
            let _ = to_server.write_all(&buf[..keep.min(n)]);
            let _ = to_server.flush();
            st.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = socket2::SockRef::from(&from_client).set_linger(Some(Duration::ZERO));
            let _ = to_server.shutdown(Shutdown::Both);
            let _ = from_client.shutdown(Shutdown::Both);
            return;
        }
        if to_server.write_all(&buf[..n]).is_err() {
            let _ = from_client.shutdown(Shutdown::Both);
            return;
        }
        sent += n as u64;
        if st.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / st.rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                thread::sleep(due - elapsed);
            }
        }
    }
}

// ---- servers on a fixed port ---------------------------------------------------

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server on `dir` and a given port. `Server::spawn` always passes
/// `--port 0` and the binary refuses a second `--port`, so a shell drops
/// those two words and puts ours in (`exec`: the pid stays the server's).
fn start_on_port(dir: &Path, port: u16) -> Server {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"p="$1"; shift 3; exec "$0" --port "$p" "$@""#,
        BIN,
        &port.to_string(),
    ]);
    let s = Server::spawn(cmd, dir, &[]);
    assert_eq!(s.addr.port(), port);
    s
}

// ---- scenarios -------------------------------------------------------------------

fn plain_upload(client: Client) {
    if skip(client) {
        return;
    }
    let s = Server::start(&[]);
    let src = TempDir::new();
    let file = src.path().join("big.bin");
    let sha = noise_file(&file, 101, SIZE);
    let name = format!("plain-{client:?}.bin");
    let t = Instant::now();
    let mut run = Run::start(client.command(&s.url("/api/tus/"), &file, &name, &Opts::default()));
    let lines = run.finish(CLIENT_TIMEOUT);
    let _ = writeln!(
        std::io::stderr(),
        "{client:?}: 50 MiB in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(creations(client, &lines), 1, "{lines:#?}");
    assert_eq!(patch_offsets(&lines).first(), Some(&0), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "STATUS saved"), "{lines:#?}");
    assert_uploaded(&s.dir, &lines, &name, &sha);
}

fn cut_and_retried(client: Client) {
    if skip(client) {
        return;
    }
    let s = Server::start(&[]);
    let cut_at = SIZE * 45 / 100;
    let proxy = Proxy::start(s.addr, 0, Some(cut_at));
    let src = TempDir::new();
    let file = src.path().join("cut.bin");
    let sha = noise_file(&file, 102, SIZE);
    let name = format!("cut-{client:?}.bin");
    let opts = Opts {
        retry: true,
        ..Opts::default()
    };
    let mut run = Run::start(client.command(&proxy.endpoint(), &file, &name, &opts));
    let lines = run.finish(CLIENT_TIMEOUT);
    assert_eq!(proxy.cuts(), 1, "the proxy did not cut");
    assert_eq!(
        creations(client, &lines),
        1,
        "created again instead of resuming: {lines:#?}"
    );
    let offsets = patch_offsets(&lines);
    let resumed = offsets.iter().copied().filter(|&o| o > 0).min();
    assert!(
        resumed.is_some_and(|o| o <= cut_at),
        "no PATCH resumed from the bytes kept before the cut at {cut_at}: {lines:#?}"
    );
    assert_uploaded(&s.dir, &lines, &name, &sha);
}

fn client_killed_and_resumed(client: Client) {
    if skip(client) {
        return;
    }
    let s = Server::start(&[]);
    // 20 MiB/s towards the server: 40 % of 50 MiB after about a second.
    let proxy = Proxy::start(s.addr, 20 * MIB, None);
    let src = TempDir::new();
    let file = src.path().join("killed.bin");
    let sha = noise_file(&file, 103, SIZE);
    let store = src.path().join(format!("urls-{client:?}.json"));
    let name = format!("killed-{client:?}.bin");
    let opts = Opts {
        store: Some(store.clone()),
        chunk: (client == Client::Py).then_some(4 * MIB),
        ..Opts::default()
    };

    let mut first = Run::start(client.command(&proxy.endpoint(), &file, &name, &opts));
    let url = first.wait_line("URL ", Duration::from_secs(20));
    proxy.wait_up(KILL_AT, Duration::from_secs(30));
    first.kill9();
    assert!(
        proxy.up_bytes() < SIZE,
        "the client finished before it was killed"
    );
    // The server keeps what arrived once the cut PATCH ends; wait for that,
    // so the new process resumes from a settled offset.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let h = head(&s, path_of(&url));
        assert_eq!(h.status, 200, "the upload is gone after the client died");
        let o = num(&h, "Upload-Offset");
        if o > 0 {
            thread::sleep(Duration::from_millis(200));
            if num(&head(&s, path_of(&url)), "Upload-Offset") == o {
                break o;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no bytes kept after the client was killed"
        );
        thread::sleep(Duration::from_millis(50));
    };
    // What the dead client had already handed to its kernel still arrives.
    let forwarded = proxy.up_bytes();
    assert!(kept <= forwarded, "kept {kept} of {forwarded} forwarded");

    let mut second = Run::start(client.command(&proxy.endpoint(), &file, &name, &opts));
    let lines = second.finish(CLIENT_TIMEOUT);
    assert_eq!(
        creations(client, &lines),
        0,
        "the new process created a new upload: {lines:#?}"
    );
    match client {
        Client::Js => {
            assert!(lines.iter().any(|l| l == "PREVIOUS 1"), "{lines:#?}");
            assert!(
                lines
                    .iter()
                    .any(|l| l == &format!("RESPONSE HEAD 200 offset={kept}")),
                "{lines:#?}"
            );
        }
        Client::Py => {
            let line = format!("RESUME offset={kept} url={url}");
            assert!(lines.contains(&line), "no {line:?}: {lines:#?}");
        }
    }
    assert_eq!(patch_offsets(&lines).first(), Some(&kept), "{lines:#?}");
    assert_uploaded(&s.dir, &lines, &name, &sha);
}

fn server_restarted(client: Client) {
    if skip(client) {
        return;
    }
    let tmp = TempDir::new();
    let dir = tmp.path().join("uploads");
    let port = free_port();
    let mut s = start_on_port(&dir, port);
    let proxy = Proxy::start(s.addr, 20 * MIB, None);
    let file = tmp.path().join("restart.bin");
    let sha = noise_file(&file, 104, SIZE);
    let name = format!("restart-{client:?}.bin");
    let opts = Opts {
        retry: true,
        ..Opts::default()
    };
    let mut run = Run::start(client.command(&proxy.endpoint(), &file, &name, &opts));
    proxy.wait_up(KILL_AT, Duration::from_secs(30));
    s.kill9();
    let at_kill = proxy.up_bytes();
    s = start_on_port(&dir, port);
    let lines = run.finish(CLIENT_TIMEOUT);
    assert!(
        at_kill < SIZE,
        "the upload finished before the server was killed"
    );
    assert_eq!(
        creations(client, &lines),
        1,
        "created again instead of resuming: {lines:#?}"
    );
    let offsets = patch_offsets(&lines);
    assert!(
        offsets.iter().any(|&o| o > 0 && o <= at_kill),
        "no PATCH resumed from the bytes the killed server kept: {lines:#?}"
    );
    assert_uploaded(&s.dir, &lines, &name, &sha);
}

#[test]
fn tus_js_client_uploads_50_mib() {
    plain_upload(Client::Js);
}

#[test]
fn tuspy_uploads_50_mib() {
    plain_upload(Client::Py);
}

#[test]
fn tus_js_client_resumes_after_a_cut_by_its_own_retries() {
    cut_and_retried(Client::Js);
}

#[test]
fn tuspy_resumes_after_a_cut_by_its_own_retries() {
    cut_and_retried(Client::Py);
}

#[test]
fn tus_js_client_killed_at_40_percent_resumes_in_a_new_process() {
    client_killed_and_resumed(Client::Js);
}

#[test]
fn tuspy_killed_at_40_percent_resumes_in_a_new_process() {
    client_killed_and_resumed(Client::Py);
}

#[test]
fn tus_js_client_resumes_after_a_server_kill_9_and_restart() {
    server_restarted(Client::Js);
}

#[test]
fn tuspy_resumes_after_a_server_kill_9_and_restart() {
    server_restarted(Client::Py);
}
