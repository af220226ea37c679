//! sha256 of an upload as its bytes go by, moved to a spare core when there is
//! one.
//!
//! sha256 is most of what an upload costs: about 0.85 CPU seconds per GiB
//! with SHA-NI (as fast as `openssl speed` on the same core), against about
//! 0.5 for receiving, writing and syncing the bytes. On the worker thread it
//! runs in series with them and halves the speed of one big upload; on an
//! idle core it runs beside them.
//!
//! So a [`Feed`] starts hashing inline and hands its running state to a
//! helper thread once it has seen [`HELPER_AFTER`] bytes, but only while the
//! machine has a core to spare: fewer live feeds plus helpers than cores.
//! When uploads run side by side every core already has one, and a helper
//! would only add copies and wake-ups; small files never reach the
//! threshold. A feed that stays inline asks again every [`HELPER_AFTER`]
//! bytes.
//!
//! The helper gets the bytes in buffers of [`CHUNK`] through a small queue
//! and hands the emptied buffers back, so at most [`CHUNKS`] of them exist
//! per helper and the worker waits when the helper falls behind.
//! Copying into them costs the worker about 0.05 CPU s per GiB.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// Bytes a feed hashes inline before it asks for a helper (and again after
/// each further such amount while it stays inline).
pub const HELPER_AFTER: u64 = 8 * 1024 * 1024;

/// Size of one buffer handed to a helper.
pub const CHUNK: usize = 256 * 1024;

/// Most buffers one helper and its feed hold: 1 MiB per big upload.
pub const CHUNKS: usize = 4;

/// Feeds that exist: uploads being received right now.
static FEEDS: AtomicUsize = AtomicUsize::new(0);

/// Helper threads running.
static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// The sha256 of a stream of byte slices; see the module docs.
pub struct Feed {
    mode: Mode,
    /// Bytes seen, and the count at which an inline feed asks again.
    fed: u64,
    next_ask: u64,
}

enum Mode {
    Inline(Sha256),
    Helper(Helper),
    /// After `finish`, or after a helper died (then `finish` says so).
    Gone,
}

impl Feed {
    /// A feed continuing from `state` (a fresh `Sha256::new()`, or the hash
    /// of bytes received before).
    pub fn new(state: Sha256) -> Feed {
        FEEDS.fetch_add(1, Ordering::Relaxed);
        Feed {
            mode: Mode::Inline(state),
            fed: 0,
            next_ask: HELPER_AFTER,
        }
    }

    /// Hashes `bytes` (inline, or by handing a copy to the helper).
    pub fn update(&mut self, bytes: &[u8]) {
        self.fed += bytes.len() as u64;
        match &mut self.mode {
            Mode::Inline(sha) => {
                sha.update(bytes);
                if self.fed >= self.next_ask {
                    self.next_ask = self.fed.saturating_add(HELPER_AFTER);
                    self.try_helper();
                }
            }
            Mode::Helper(helper) => {
                if helper.feed(bytes).is_err() {
                    self.mode = Mode::Gone;
                }
            }
            Mode::Gone => {}
        }
    }

    /// True while a helper thread does the hashing.
    pub fn on_helper(&self) -> bool {
        matches!(self.mode, Mode::Helper(_))
    }

    /// The hash state after every byte fed, waiting for the helper to catch
    /// up. The feed is spent afterwards.
    pub fn finish(&mut self) -> Result<Sha256, Error> {
        match std::mem::replace(&mut self.mode, Mode::Gone) {
            Mode::Inline(sha) => Ok(sha),
            Mode::Helper(helper) => helper.finish(),
            Mode::Gone => Err(lost()),
        }
    }

    fn try_helper(&mut self) {
        if spare_core() {
            self.start_helper();
        }
    }

    /// Moves an inline feed to a new helper; anything else stays as it is.
    fn start_helper(&mut self) {
        self.mode = match std::mem::replace(&mut self.mode, Mode::Gone) {
            Mode::Inline(sha) => match Helper::start(sha) {
                Ok(helper) => Mode::Helper(helper),
                Err(sha) => Mode::Inline(sha),
            },
            other => other,
        };
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        FEEDS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// True when live feeds plus helpers leave a core free.
fn spare_core() -> bool {
    let busy = FEEDS.load(Ordering::Relaxed) + HELPERS.load(Ordering::Relaxed);
    busy < cores()
}

/// The cores this process may run on, read once.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

fn lost() -> Error {
    Error::Internal("The thread computing the upload's sha256 stopped.".into())
}

/// A helper thread and the queue between it and the feed.
struct Helper {
    queue: Arc<Queue>,
    /// The buffer being filled; queued when it holds [`CHUNK`] bytes.
    filling: Vec<u8>,
    /// Buffers made so far, at most [`CHUNKS`].
    made: usize,
    thread: Option<JoinHandle<Sha256>>,
}

/// Full buffers towards the helper, empty ones back.
#[derive(Default)]
struct Queue {
    slots: Mutex<Slots>,
    /// The helper sleeps here for full buffers or the close.
    to_helper: Condvar,
    /// The feed sleeps here for an empty buffer or the helper's end.
    to_feed: Condvar,
}

/// Which side of a [`Queue`].
#[derive(Clone, Copy)]
enum Side {
    Feed,
    Helper,
}

#[derive(Default)]
struct Slots {
    full: VecDeque<Vec<u8>>,
    empty: Vec<Vec<u8>>,
    /// No more buffers will come: the helper ends once `full` is empty.
    closed: bool,
    /// The helper ended (normally only after `closed`).
    ended: bool,
    /// A side sleeps: only then is it signalled (a signal costs a system
    /// call, and buffers pass thousands of times per GiB).
    feed_waits: bool,
    helper_waits: bool,
}

impl Slots {
    fn waits(&mut self, side: Side) -> &mut bool {
        match side {
            Side::Feed => &mut self.feed_waits,
            Side::Helper => &mut self.helper_waits,
        }
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Plain buffers and flags: a panic elsewhere leaves them usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn condvar(&self, side: Side) -> &Condvar {
        match side {
            Side::Feed => &self.to_feed,
            Side::Helper => &self.to_helper,
        }
    }

    /// Sleeps as `side` until signalled (or woken spuriously: callers loop).
    fn wait<'a>(&self, side: Side, mut slots: MutexGuard<'a, Slots>) -> MutexGuard<'a, Slots> {
        *slots.waits(side) = true;
        let mut slots = self
            .condvar(side)
            .wait(slots)
            .unwrap_or_else(|p| p.into_inner());
        *slots.waits(side) = false;
        slots
    }

    /// Wakes `side` if it sleeps.
    fn signal(&self, side: Side, slots: &mut Slots) {
        if std::mem::take(slots.waits(side)) {
            self.condvar(side).notify_one();
        }
    }

    /// The helper thread: hashes full buffers in order until closed.
    fn hash(&self, mut sha: Sha256) -> Sha256 {
        let mut slots = self.lock();
        loop {
            if let Some(mut buf) = slots.full.pop_front() {
                drop(slots);
                sha.update(&buf);
                buf.clear();
                slots = self.lock();
                slots.empty.push(buf);
                self.signal(Side::Feed, &mut slots);
            } else if slots.closed {
                return sha;
            } else {
                slots = self.wait(Side::Helper, slots);
            }
        }
    }
}

impl Helper {
    /// Starts a helper with `sha`, or gives `sha` back when no thread can be
    /// started (the feed then stays inline).
    fn start(sha: Sha256) -> Result<Helper, Sha256> {
        let queue = Arc::new(Queue::default());
        let theirs = Arc::clone(&queue);
        // A failed spawn drops the closure and the state in it.
        let kept = sha.clone();
        HELPERS.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("sha256".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ended = Ended(Arc::clone(&theirs));
                theirs.hash(sha)
            });
        match spawned {
            Ok(thread) => Ok(Helper {
                queue,
                filling: Vec::with_capacity(CHUNK),
                made: 1,
                thread: Some(thread),
            }),
            Err(e) => {
                HELPERS.fetch_sub(1, Ordering::Relaxed);
                log::debug!("no sha256 helper thread ({e}); hashing inline");
                Err(kept)
            }
        }
    }

    /// Copies `bytes` into buffers and queues each full one.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        while !bytes.is_empty() {
            let room = CHUNK - self.filling.len();
            let take = room.min(bytes.len());
            self.filling.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.filling.len() == CHUNK {
                self.queue_filling()?;
            }
        }
        Ok(())
    }

    /// Queues the buffer being filled and takes an empty one: a returned
    /// one, a new one while fewer than [`CHUNKS`] exist, else waits.
    fn queue_filling(&mut self) -> Result<(), ()> {
        let mut slots = self.queue.lock();
        if slots.ended {
            return Err(());
        }
        let full = std::mem::take(&mut self.filling);
        slots.full.push_back(full);
        self.queue.signal(Side::Helper, &mut slots);
        self.filling = loop {
            if let Some(buf) = slots.empty.pop() {
                break buf;
            }
            if self.made < CHUNKS {
                self.made += 1;
                break Vec::with_capacity(CHUNK);
            }
            if slots.ended {
                return Err(());
            }
            slots = self.queue.wait(Side::Feed, slots);
        };
        Ok(())
    }

    /// Queues what is left, closes the queue and takes the state back.
    fn finish(mut self) -> Result<Sha256, Error> {
        {
            let mut slots = self.queue.lock();
            if !self.filling.is_empty() {
                slots.full.push_back(std::mem::take(&mut self.filling));
            }
            slots.closed = true;
            self.queue.signal(Side::Helper, &mut slots);
        }
        let thread = self.thread.take().ok_or_else(lost)?;
        thread.join().map_err(|_| lost())
    }
}

impl Drop for Helper {
    /// An upload that failed midway: drop the queued buffers, close, and wait
    /// for the thread, which ends after the buffer in hand, so no thread
    /// outlives its upload.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            {
                let mut slots = self.queue.lock();
                slots.full.clear();
                slots.closed = true;
                self.queue.signal(Side::Helper, &mut slots);
            }
            let _ = thread.join();
        }
    }
}

/// Marks the helper ended and counts it out of [`HELPERS`] when its thread
/// ends, however it ends.
struct Ended(Arc<Queue>);

impl Drop for Ended {
    fn drop(&mut self) {
        HELPERS.fetch_sub(1, Ordering::Relaxed);
        let mut slots = self.0.lock();
        slots.ended = true;
        self.0.signal(Side::Feed, &mut slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn hex_of(sha: Sha256) -> String {
        crate::store::hex(&sha.finalize())
    }

    /// Feeds `bytes` in slices of `step`, on a helper from the start when
    /// `helper` (else inline until the threshold asks for one).
    fn feed(bytes: &[u8], step: usize, helper: bool) -> (String, bool) {
        let mut feed = Feed::new(Sha256::new());
        if helper {
            feed.start_helper();
            assert!(feed.on_helper(), "a helper thread starts on this machine");
        }
        for piece in bytes.chunks(step) {
            feed.update(piece);
        }
        let used = feed.on_helper();
        (hex_of(feed.finish().expect("hash")), used)
    }

    #[test]
    fn inline_and_helper_hashes_match_sha2_at_every_chunk_edge() {
        let bytes = pattern(3 * CHUNK * CHUNKS + 1);
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            CHUNK * CHUNKS,
            bytes.len(),
        ] {
            let want = hex_of(Sha256::new().chain_update(&bytes[..len]));
            for step in [1usize, 4093, CHUNK, 3 * CHUNK + 5] {
                if step == 1 && len > 2 * CHUNK {
                    continue;
                }
                for helper in [false, true] {
                    let (got, _) = feed(&bytes[..len], step, helper);
                    assert_eq!(got, want, "len {len} step {step} helper {helper}");
                }
            }
        }
    }

    #[test]
    fn a_feed_continues_from_an_earlier_state() {
        let bytes = pattern(CHUNK * 2 + 99);
        let (head, tail) = bytes.split_at(1000);
        let mut feed = Feed::new(Sha256::new().chain_update(head));
        feed.start_helper();
        feed.update(&tail[..10]);
        // Asking again keeps the helper and what it was given.
        feed.start_helper();
        assert!(feed.on_helper());
        feed.update(&tail[10..]);
        let got = hex_of(feed.finish().expect("hash"));
        assert_eq!(got, hex_of(Sha256::new().chain_update(&bytes)));
    }

    #[test]
    fn past_the_threshold_an_only_feed_moves_to_a_spare_core() {
        if cores() < 2 {
            eprintln!("skipped: one core, no helper is ever started");
            return;
        }
        // Other tests' feeds may hold the spare core for a moment: the feed
        // asks again every HELPER_AFTER bytes, so feed until it gets one.
        let piece = pattern(CHUNK);
        let mut feed = Feed::new(Sha256::new());
        let mut want = Sha256::new();
        let mut fed = 0u64;
        while !feed.on_helper() && fed < 400 * HELPER_AFTER {
            feed.update(&piece);
            want.update(&piece);
            fed += piece.len() as u64;
        }
        assert!(feed.on_helper(), "no helper after {fed} bytes");
        assert!(fed >= HELPER_AFTER, "a helper only past the threshold");
        feed.update(&piece);
        want.update(&piece);
        assert_eq!(hex_of(feed.finish().expect("hash")), hex_of(want));
    }

    #[test]
    fn a_small_upload_never_starts_a_helper() {
        let bytes = pattern((HELPER_AFTER - 1) as usize);
        let (_, used) = feed(&bytes, CHUNK, false);
        assert!(!used);
    }

    #[test]
    fn dropping_a_busy_feed_ends_its_helper_thread() {
        let bytes = pattern(CHUNK * CHUNKS * 4);
        for _ in 0..20 {
            let mut feed = Feed::new(Sha256::new());
            feed.start_helper();
            feed.update(&bytes);
            let Mode::Helper(helper) = &feed.mode else {
                panic!("no helper");
            };
            let queue = Arc::clone(&helper.queue);
            drop(feed);
            // Drop joined the thread: it has marked itself ended.
            assert!(queue.lock().ended);
        }
    }

    #[test]
    fn feeds_side_by_side_each_get_their_own_hash() {
        let threads: Vec<_> = (0..6)
            .map(|i| {
                std::thread::spawn(move || {
                    let bytes = pattern(CHUNK * 5 + i * 1001);
                    let (got, _) = feed(&bytes, 65_536 + i, i % 2 == 0);
                    (got, hex_of(Sha256::new().chain_update(&bytes)))
                })
            })
            .collect();
        for t in threads {
            let (got, want) = t.join().expect("thread");
            assert_eq!(got, want);
        }
    }

    #[test]
    fn thousands_of_buffers_pass_without_a_lost_wake_up() {
        // A lost wake-up leaves both sides asleep: wait with a deadline.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let piece = pattern(CHUNK / 2 + i);
                let mut feed = Feed::new(Sha256::new());
                let mut want = Sha256::new();
                feed.start_helper();
                for _ in 0..3000 {
                    feed.update(&piece);
                    want.update(&piece);
                }
                let got = hex_of(feed.finish().expect("hash"));
                let _ = done_tx.send(got == hex_of(want));
            });
        }
        for _ in 0..3 {
            let matched = done_rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .expect("a feed and its helper both fell asleep");
            assert!(matched);
        }
    }
}
