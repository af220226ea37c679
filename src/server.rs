//! The listener, the accept loop, the fixed pool of workers and shutdown.
//!
//! ```text
//! main thread: accept() ──► bounded queue ──► N named workers
//!   per-IP cap and full queue: 503 at once    each serves one connection,
//!                                             request by request
//! signal thread: SIGINT/SIGTERM -> stop accepting, finish in-flight work (bounded)
//! ```
//!
//! Every resource has a bound and every wait a deadline (config::Limits), so
//! slow or hostile clients on one address cannot hold all the workers.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::config::Limits;
use crate::error::Error;
use crate::http::head::{read_head, HeadError, HeadLimits};
use crate::http::{Body, Conn, Response, Stream};
use crate::routes::{self, App};

/// How long writing one response may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection closed with an unread body is read from, so the
/// client sees our answer instead of a reset.
const LINGER: Duration = Duration::from_secs(1);

/// State shared by the accept loop, the workers and the signal thread.
struct Shared {
    limits: Limits,
    /// Connections speak TLS: a plain-text 503 would be noise to them.
    tls: bool,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    stopping: AtomicBool,
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A poisoned map is still a valid map of counters.
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection slot for `ip`, or None when it holds its share.
    fn take_slot(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.limits.per_ip {
            return None;
        }
        *n += 1;
        Some(Slot {
            shared: Arc::clone(self),
            ip,
        })
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// One connection's share of its address's cap; given back on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.shared.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A connection waiting for a worker.
struct Job {
    stream: TcpStream,
    peer: SocketAddr,
    queued_at: Instant,
    _slot: Slot,
}

/// Binds the listening socket; errors are for the person starting tinydrop.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => format!("port {} is already in use on {}; pick another with --port.", addr.port(), addr.ip()),
        io::ErrorKind::AddrNotAvailable => format!("{} is not an address of this machine; check --bind.", addr.ip()),
        io::ErrorKind::PermissionDenied => {
            format!("not allowed to listen on port {}; ports below 1024 need privileges, try --port 8080.", addr.port())
        }
        _ => format!("cannot listen on {addr}: {e}."),
    })
}

/// Serves until SIGINT or SIGTERM, then lets in-flight requests finish (at
/// most `limits.shutdown_grace`) and returns. `ready` runs once the workers
/// and the signal handler are in place, before the first accept.
pub fn serve(
    listener: TcpListener,
    app: Arc<App>,
    threads: usize,
    limits: Limits,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        limits,
        tls: app.tls.is_some(),
        per_ip: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::sync_channel::<Job>(shared.limits.queue);
    let rx = Arc::new(Mutex::new(rx));

    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (rx, shared, app) = (Arc::clone(&rx), Arc::clone(&shared), Arc::clone(&app));
        workers.push(
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(rx, shared, app))?,
        );
    }
    watch_signals(Arc::clone(&shared), wake_address(local))?;
    ready();

    accept_loop(&listener, &shared, &tx);
    drop(listener);
    drop(tx);

    let deadline = Instant::now() + shared.limits.shutdown_grace;
    while workers.iter().any(|w| !w.is_finished()) {
        if Instant::now() >= deadline {
            warn!(
                "stopping with requests still in flight after {:?}",
                shared.limits.shutdown_grace
            );
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    info!("stopped");
    Ok(())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, tx: &SyncSender<Job>) {
    let mut backoff = Duration::ZERO;
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                dispatch(stream, peer, shared, tx);
            }
            Err(e) => {
                // EMFILE/ENFILE leave the connection in the backlog: wait for
                // descriptors to come back instead of spinning.
                let exhausted = matches!(e.raw_os_error(), Some(23) | Some(24))
                    || e.kind() == io::ErrorKind::OutOfMemory;
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!(
                        "accept failed: {e}{}",
                        if exhausted { "; backing off" } else { "" }
                    );
                    last_warning = Some(Instant::now());
                }
                if exhausted {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    thread::sleep(backoff);
                }
            }
        }
    }
}

fn dispatch(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>, tx: &SyncSender<Job>) {
    let Some(slot) = shared.take_slot(peer.ip()) else {
        debug!(
            "{peer}: over the per-address cap of {}",
            shared.limits.per_ip
        );
        reject(
            stream,
            "This address has too many connections open; try again shortly.",
            shared,
        );
        return;
    };
    let job = Job {
        stream,
        peer,
        queued_at: Instant::now(),
        _slot: slot,
    };
    match tx.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
            debug!("{peer}: queue full");
            reject(job.stream, "The server is busy; try again shortly.", shared);
        }
    }
}

/// Answers 503 without ever blocking the caller, and closes. Over TLS the
/// connection is just closed: no handshake is done on the accept thread.
fn reject(stream: TcpStream, why: &str, shared: &Shared) {
    if shared.tls {
        return;
    }
    let mut resp = Response::error(&Error::Unavailable(why.to_string()), None);
    resp.close = true;
    let mut bytes = Vec::new();
    if resp.write_to(&mut bytes, false, 1).is_ok() && stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write_all(&bytes);
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, shared: Arc<Shared>, app: Arc<App>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        if shared.stopping() {
            reject(job.stream, "The server is shutting down.", &shared);
            continue;
        }
        if job.queued_at.elapsed() > shared.limits.queue_wait {
            reject(
                job.stream,
                "The server is busy; try again shortly.",
                &shared,
            );
            continue;
        }
        let peer = job.peer;
        // A panic below a handler is already answered with 500; this catches
        // anything else so the worker lives on.
        if panic::catch_unwind(AssertUnwindSafe(|| {
            serve_connection(job.stream, peer, &shared, &app)
        }))
        .is_err()
        {
            error!("{peer}: connection handling panicked; connection dropped");
        }
    }
}

fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared, app: &App) {
    let limits = &shared.limits;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let stream = match app.tls.as_ref() {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream) {
            Some(s) => s,
            None => return,
        },
    };
    let mut conn = Conn::new(stream, peer, limits.head_bytes);
    let mut first = true;
    loop {
        let head_limits = HeadLimits {
            max_bytes: limits.head_bytes,
            max_headers: limits.head_count,
            timeout: limits.head_timeout,
            first_byte: if first {
                limits.head_timeout
            } else {
                limits.keep_alive
            },
            first,
        };
        let head = match read_head(&mut conn, &head_limits, &|| shared.stopping()) {
            Ok(head) => head,
            Err(HeadError::Idle) => return,
            Err(e) => {
                let err = match e {
                    HeadError::TimedOut => Error::Timeout,
                    HeadError::UriTooLong => Error::UriTooLong,
                    HeadError::TooLarge => Error::HeadersTooLarge,
                    HeadError::Malformed(why) => Error::BadRequest(why),
                    HeadError::Idle => return,
                };
                info!("{peer} - - {} 0 ({err})", err.status());
                let mut resp = Response::error(&err, None);
                resp.close = true;
                let _ = resp.write_to(conn.stream(), false, 1);
                conn.linger_close(limits.drain, LINGER);
                return;
            }
        };
        first = false;
        let started = Instant::now();
        let mut body = Body::new(&mut conn, &head, limits.body_idle);
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| routes::handle(app, &head, &mut body)));
        let rest = body.into_rest();
        let mut resp = outcome.unwrap_or_else(|_| {
            error!("{peer} {} {:?}: handler panicked", head.method, head.path);
            let mut r = Response::error(
                &Error::Internal("The server hit an internal error; nothing was saved.".into()),
                None,
            );
            r.close = true;
            r
        });
        let drainable = rest.is_complete() || rest.may_drain(limits.drain);
        if !head.keep_alive || !drainable || shared.stopping() {
            resp.close = true;
        }
        let written = resp.write_to(conn.stream(), head.method == "HEAD", head.version);
        info!(
            "{peer} {} {:?} {} {} {}ms",
            head.method,
            head.path,
            resp.status,
            written.as_ref().copied().unwrap_or(0),
            started.elapsed().as_millis()
        );
        if written.is_err() {
            return;
        }
        if resp.close {
            if !rest.is_complete() {
                conn.linger_close(limits.drain, LINGER);
            }
            return;
        }
        if !rest.drain(&mut conn, limits.drain, LINGER) {
            return;
        }
    }
}

/// Where the signal thread connects to wake a blocked `accept()`.
fn wake_address(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// SIGINT/SIGTERM: stop accepting and wake the accept loop. A second signal
/// exits at once.
fn watch_signals(shared: Arc<Shared>, wake: SocketAddr) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if shared.stopping.swap(true, Ordering::SeqCst) {
                    warn!("second signal: exiting now");
                    std::process::exit(0);
                }
                info!("signal {signal}: no new connections; finishing requests in flight");
                // Wake accept(); retry while descriptors are short.
                for _ in 0..50 {
                    if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}
