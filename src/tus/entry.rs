//! One upload in memory, and the busy flag that lets one request at a time
//! own it (see "Concurrency" in the module docs of [`crate::tus`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::Sha256;

use crate::error::Error;

/// One upload in memory.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) length: u64,
    pub(super) name: String,
    pub(super) metadata: String,
    /// Unix seconds of creation, kept in the meta file for people reading it.
    pub(super) created: u64,
    /// Set while a PATCH, DELETE, sweep or [`Completed`](super::Completed) owns the upload.
    pub(super) busy: AtomicBool,
    /// Locked only for short reads and writes of the fields, never across I/O.
    pub(super) state: Mutex<State>,
}

#[derive(Debug)]
pub(super) struct State {
    /// Bytes received and kept.
    pub(super) offset: u64,
    /// sha256 of the data file's first `at` bytes, while the process lives.
    pub(super) hasher: Option<Running>,
    /// Terminated, expired or finished: any later call answers NotFound.
    pub(super) removed: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Running {
    pub(super) at: u64,
    pub(super) sha: Sha256,
}

impl Entry {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves plain numbers behind; the busy
        // holder re-checks the data file before trusting them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ownership of one upload; clears the busy flag when dropped, also while
/// unwinding from a panic.
#[derive(Debug)]
pub(super) struct Busy {
    pub(super) entry: Arc<Entry>,
}

impl Busy {
    pub(super) fn acquire(entry: Arc<Entry>) -> Result<Busy, Error> {
        if entry
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::Locked(
                "Another request is still sending to this upload; try again shortly.".into(),
            ));
        }
        Ok(Busy { entry })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.entry.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tus::testing::*;
    use crate::tus::{Completed, Tus};

    /// Blocks on a channel for each piece; says on `started` when first read.
    struct ChannelReader {
        rx: mpsc::Receiver<Vec<u8>>,
        started: Option<mpsc::Sender<()>>,
        piece: Vec<u8>,
        pos: usize,
    }

    impl Read for ChannelReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(started) = self.started.take() {
                let _ = started.send(());
            }
            while self.pos == self.piece.len() {
                match self.rx.recv() {
                    Ok(piece) => {
                        self.piece = piece;
                        self.pos = 0;
                    }
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.piece.len() - self.pos);
            buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    type AppendResult = Result<(u64, Option<Completed>), Error>;

    /// Starts `append` on another thread with a body fed through the returned sender;
    /// returns once the append is reading.
    fn held_append(
        tus: &Arc<Tus>,
        id: &str,
        offset: u64,
    ) -> (mpsc::Sender<Vec<u8>>, thread::JoinHandle<AppendResult>) {
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let tus = Arc::clone(tus);
        let id = id.to_owned();
        let handle = thread::spawn(move || {
            let mut body = ChannelReader {
                rx,
                started: Some(started_tx),
                piece: Vec::new(),
                pos: 0,
            };
            tus.append(&id, offset, &mut body, None)
        });
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the append should start reading");
        (tx, handle)
    }

    #[test]
    fn a_second_append_on_a_busy_upload_is_locked_at_once() {
        let dir = TempDir::new("locked");
        let tus = Arc::new(dir.open(LONG));
        let id = tus.create(10, "a", "").unwrap();
        let (tx, handle) = held_append(&tus, &id, 0);
        tx.send(b"hello".to_vec()).unwrap();

        let started = Instant::now();
        let e = tus.append(&id, 0, &mut &b"hello"[..], None).unwrap_err();
        assert!(matches!(e, Error::Locked(_)), "{e:?}");
        assert!(matches!(tus.terminate(&id), Err(Error::Locked(_))));
        // HEAD does not wait either.
        assert_eq!(tus.info(&id).unwrap().offset, 0);
        assert!(started.elapsed() < Duration::from_secs(1));

        tx.send(b"world".to_vec()).unwrap();
        drop(tx);
        let (offset, done) = handle.join().unwrap().unwrap();
        assert_eq!(offset, 10);
        assert_eq!(done.unwrap().sha256, sha256_hex(b"helloworld"));
    }

    #[test]
    fn appends_on_different_uploads_run_side_by_side() {
        let dir = TempDir::new("parallel");
        let tus = Arc::new(dir.open(LONG));
        let a = tus.create(4, "a", "").unwrap();
        let b = tus.create(4, "b", "").unwrap();
        // Both are reading at once: neither waits for the other.
        let (tx_a, handle_a) = held_append(&tus, &a, 0);
        let (tx_b, handle_b) = held_append(&tus, &b, 0);
        // A third upload is not held up by them either.
        let c = tus.create(1, "c", "").unwrap();
        assert!(append_all(&tus, &c, 0, b"c").1.is_some());

        tx_b.send(b"bbbb".to_vec()).unwrap();
        drop(tx_b);
        let (_, done_b) = handle_b.join().unwrap().unwrap();
        assert_eq!(done_b.unwrap().sha256, sha256_hex(b"bbbb"));
        tx_a.send(b"aaaa".to_vec()).unwrap();
        drop(tx_a);
        let (_, done_a) = handle_a.join().unwrap().unwrap();
        assert_eq!(done_a.unwrap().sha256, sha256_hex(b"aaaa"));
    }

    #[test]
    fn a_panicking_body_releases_the_lock_and_leaves_the_upload_usable() {
        struct Panics;
        impl Read for Panics {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("reader blew up");
            }
        }
        let dir = TempDir::new("panic");
        let tus = Arc::new(dir.open(LONG));
        let id = tus.create(3, "a", "").unwrap();
        let handle = {
            let (tus, id) = (Arc::clone(&tus), id.clone());
            thread::spawn(move || tus.append(&id, 0, &mut Panics, None))
        };
        assert!(handle.join().is_err());
        let (_, done) = append_all(&tus, &id, 0, b"abc");
        assert_eq!(done.unwrap().sha256, sha256_hex(b"abc"));
    }
}
