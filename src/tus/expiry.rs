//! Expiry: an upload without progress, or the record of a finished one,
//! goes `--tus-expiry` after its last change. Looking at it removes it at
//! once; the sweep removes those nobody looks at (start-up removes them in
//! [`Tus::open`]).

use std::fs;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Busy, Entry, Tus};
use crate::error::Error;

/// [`Tus::sweep_if_due`] sweeps at most this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Tus {
    /// Removes the uploads without progress for longer than the expiry,
    /// skipping those a request owns right now, and the records of uploads
    /// finished longer ago than the expiry. Returns how many went.
    pub fn sweep(&self) -> Result<usize, Error> {
        let entries: Vec<Arc<Entry>> = self.uploads_map().values().cloned().collect();
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let Ok(busy) = Busy::acquire(entry) else {
                continue;
            };
            if busy.entry.state().removed {
                continue;
            }
            // A data file that cannot be read is of no use either.
            if self.expires(&busy.entry).is_ok_and(|t| t > now) {
                continue;
            }
            log::info!("tus upload {} expired, removed", busy.entry.id);
            self.discard(&busy)?;
            removed += 1;
        }
        let expired: Vec<String> = self
            .finished_map()
            .iter()
            .filter(|(_, done)| done.at + self.expiry <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            log::info!("finished tus upload {id} expired, record removed");
            self.forget_done(&id);
            removed += 1;
        }
        Ok(removed)
    }

    /// [`Tus::sweep`], at most once per [`SWEEP_INTERVAL`]; for the server to
    /// call now and then. Returns how many went.
    pub fn sweep_if_due(&self) -> Result<usize, Error> {
        {
            let mut last = self
                .last_sweep
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.elapsed() < SWEEP_INTERVAL {
                return Ok(0);
            }
            *last = Instant::now();
        }
        self.sweep()
    }

    /// Last progress (the data file's mtime) plus the expiry.
    pub(super) fn expires(&self, entry: &Entry) -> io::Result<SystemTime> {
        let modified = fs::metadata(self.data_path(&entry.id))?.modified()?;
        Ok(modified + self.expiry)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::thread;

    use super::*;
    use crate::tus::testing::*;

    #[test]
    fn uploads_without_progress_expire_and_are_swept() {
        let dir = TempDir::new("expiry");
        let tus = dir.open(Duration::from_secs(1));
        let stale = tus.create(10, "stale", "").unwrap();
        let looked_at = tus.create(10, "looked at", "").unwrap();
        let info = tus.info(&stale).unwrap();
        assert!(info.expires <= SystemTime::now() + Duration::from_secs(1));
        thread::sleep(Duration::from_millis(600));
        let fresh = tus.create(10, "fresh", "").unwrap();
        thread::sleep(Duration::from_millis(600));

        // Looking at an expired upload removes it at once...
        assert!(matches!(tus.info(&looked_at), Err(Error::NotFound(_))));
        assert!(!tus.data_path(&looked_at).exists());
        // ... and the sweep removes those nobody looked at.
        assert_eq!(tus.sweep().unwrap(), 1);
        assert!(matches!(tus.info(&stale), Err(Error::NotFound(_))));
        assert!(!tus.data_path(&stale).exists());
        assert!(!tus.meta_path(&stale).exists());
        assert_eq!(tus.info(&fresh).unwrap().offset, 0);
        // Within the minute nothing more happens; the next sweep finds nothing yet.
        assert_eq!(tus.sweep_if_due().unwrap(), 0);
    }

    #[test]
    fn appending_to_an_expired_upload_is_not_found() {
        let dir = TempDir::new("expired-append");
        let tus = dir.open(Duration::from_secs(1));
        let id = tus.create(10, "a", "").unwrap();
        thread::sleep(Duration::from_millis(1100));
        assert!(matches!(
            tus.append(&id, 0, &mut &b"abc"[..], None),
            Err(Error::NotFound(_))
        ));
        assert!(!tus.data_path(&id).exists());
    }

    #[test]
    fn the_sweep_skips_an_upload_that_is_owned() {
        let dir = TempDir::new("sweep-busy");
        let tus = dir.open(Duration::from_secs(1));
        let id = tus.create(3, "a", "").unwrap();
        let (_, done) = append_all(&tus, &id, 0, b"abc");
        let done = done.unwrap();
        thread::sleep(Duration::from_millis(1100));
        assert_eq!(tus.sweep().unwrap(), 0);
        assert!(done.data_path.exists());
        drop(done);
        assert_eq!(tus.sweep().unwrap(), 1);
    }

    #[test]
    fn finished_records_expire_from_completion_and_are_swept() {
        let dir = TempDir::new("done-expiry");
        let tus = dir.open(Duration::from_secs(1));
        let swept = tus.create(1, "s", "").unwrap();
        let looked_at = tus.create(1, "l", "").unwrap();
        let at_open = tus.create(1, "o", "").unwrap();
        let mut published = Vec::new();
        for id in [&swept, &looked_at, &at_open] {
            let (_, done) = append_all(&tus, id, 0, b"x");
            published.push(publish(&tus, &dir, done.unwrap()));
        }
        let info = tus.info(&swept).unwrap();
        assert!(info.expires <= SystemTime::now() + Duration::from_secs(1));
        thread::sleep(Duration::from_millis(1100));
        assert!(matches!(tus.info(&looked_at), Err(Error::NotFound(_))));
        assert!(!tus.done_path(&looked_at).exists());
        // The sweep finds `swept` and `at_open`; put the latter's record back
        // to see a restart remove it too.
        let record = fs::read(tus.done_path(&at_open)).unwrap();
        assert_eq!(tus.sweep().unwrap(), 2);
        assert!(matches!(tus.info(&swept), Err(Error::NotFound(_))));
        assert_eq!(tus_files(&dir), Vec::<String>::new());
        fs::write(tus.done_path(&at_open), record).unwrap();
        thread::sleep(Duration::from_millis(1100));
        let tus = dir.open(Duration::from_secs(1));
        assert!(matches!(tus.info(&at_open), Err(Error::NotFound(_))));
        assert_eq!(tus_files(&dir), Vec::<String>::new());
        // The published files stay.
        for path in published {
            assert_eq!(fs::read(path).unwrap(), b"x");
        }
    }
}
