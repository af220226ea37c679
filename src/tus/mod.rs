//! tus 1.0.0 resumable uploads: the state of each upload, kept on disk.
//!
//! This module knows nothing of HTTP. The routes turn `POST`, `HEAD`, `PATCH`
//! and `DELETE` on `/api/tus/` into calls on [`Tus`] with strings, numbers and
//! a body as `impl Read`, and turn the [`Error`]s back into statuses.
//!
//! Each upload in progress is two files under `DIR/.tinydrop/tus/`:
//!
//! - `<id>.data`: the bytes received so far, in order. After a restart its
//!   size (capped at the declared length) is the upload's offset, because
//!   every byte `write` accepted survives a killed process.
//! - `<id>.meta`: a small text file, replaced atomically (temp, fsync,
//!   rename, fsync of the directory):
//!
//!   ```text
//!   tinydrop-tus 1
//!   length 1048576
//!   offset 65536
//!   created 1764500000
//!   pending 65536
//!   name a/b.txt
//!   metadata filename YS9iLnR4dA==
//!   ```
//!
//!   `pending N` is there only while a PATCH with a checksum runs: bytes past
//!   N are not verified yet, so recovery cuts them off. `name` and `metadata`
//!   escape `\`, CR and LF as `\\`, `\r`, `\n`; unknown keys are ignored.
//!
//!   `publishing SHA256` is there only on file systems without hard links,
//!   from the moment a complete upload is handed out to be published (see
//!   below).
//! - `<id>.pub`: a second name (hard link) of the complete data file, made
//!   when it is handed out to be published; publishing takes this name away.
//! - `<id>.done`: a finished upload, once published (written atomically like
//!   `.meta`; `.data` and `.meta` are then removed):
//!
//!   ```text
//!   tinydrop-tus-done 1
//!   length 1048576
//!   sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!   saved_as a/b (1).txt
//!   duplicate 0
//!   name a/b.txt
//!   metadata filename YS9iLnR4dA==
//!   ```
//!
//!   `saved_as` and `duplicate` are missing when a crash lost them (see
//!   below). The record's mtime is the completion time; it expires like an
//!   upload, `--tus-expiry` after that. Until then `HEAD` answers with
//!   `Upload-Offset` = `Upload-Length` and an empty PATCH at that offset
//!   succeeds, so a client whose last answer was lost does not start again.
//!
//! Completion does not publish: [`Tus::append`] hands back a [`Completed`]
//! (path to publish, size, sha256, client name) that keeps the upload locked
//! while the caller publishes it, then [`Tus::finish`] writes the done record
//! and removes what is left.
//!
//! # Crash safety of publishing
//!
//! The store publishes a file by linking it under its final name and then
//! removing the source name (or, without hard links, renaming it there). If
//! that source were `<id>.data`, a crash after the removal reached the disk
//! but before `<id>.done` did would leave a `.meta` without `.data`: the
//! upload would be lost (HEAD 404, the client sends everything again). So:
//!
//! 1. [`Completed`] hands out `<id>.pub`, a hard link to `<id>.data`.
//!    `<id>.data` and `<id>.meta` stay untouched while publishing runs.
//! 2. The store links `<id>.pub` into DIR (same inode) and removes `<id>.pub`.
//! 3. [`Tus::finish`] writes `<id>.done` (temp, fsync, rename, fsync of the
//!    directory), and only then removes `<id>.meta` and `<id>.data`.
//!
//! A crash at any point leaves one of:
//!
//! - no durable `<id>.done`: `<id>.data` and `<id>.meta` are still there and
//!   complete, so the upload is complete-and-unpublished; the next HEAD (or
//!   empty PATCH) publishes it again. If step 2's link reached the disk, the
//!   store finds the same bytes under the name and calls it a duplicate, so
//!   the file is never stored twice under two names (unless someone renamed
//!   or deleted it meanwhile). A leftover `<id>.pub` is removed at start-up:
//!   it is only a name, the bytes stay reachable through `<id>.data`.
//! - a durable `<id>.done`: the upload is finished; leftover `<id>.meta`,
//!   `<id>.data` or `<id>.pub` of that id are removed at start-up. Removing
//!   them never touches the published file: at most they are other names of
//!   its inode.
//!
//! Where the file system has no hard links (FAT, exFAT) step 1 cannot make a
//! second name, so the store renames `<id>.data` itself. Before handing it out
//! the meta gets `publishing SHA256`. A crash after the rename but before the
//! done record leaves `.meta` with that mark and no `.data`: start-up turns it
//! into a done record with the length and sha256 but without `saved_as` (the
//! bytes are in DIR, where exactly is not known). Nothing is lost and nothing
//! is published twice; only the `Tinydrop-Saved-As` answer is. A mark with
//! `.data` still there (the rename did not happen) is just cleared.
//!
//! Concurrency: the map of uploads is locked only for look-ups. Each upload
//! has a busy flag; a second PATCH (or a DELETE) while one runs gets
//! [`Error::Locked`] at once instead of waiting, and `HEAD` never waits.
//!
//! The parts: `records.rs` (the `.meta` and `.done` formats), `metadata.rs`
//! (`Upload-Metadata` and base64), `append.rs` (PATCH), `publish.rs`
//! (handing a complete upload out, finishing it), `expiry.rs` (the sweep),
//! `recover.rs` (start-up), `entry.rs` (one upload in memory, its busy flag).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::{hex, random_id};

mod append;
mod entry;
mod expiry;
mod metadata;
mod publish;
mod records;
mod recover;
#[cfg(test)]
mod testing;

pub use expiry::SWEEP_INTERVAL;
pub use publish::Completed;

use entry::{Busy, Entry, Running, State};
use records::{Done, Meta};

/// Random bytes in an id; hex makes it twice as many characters.
const ID_BYTES: usize = 16;

/// The resumable uploads of one server, on disk under one directory.
pub struct Tus {
    /// `DIR/.tinydrop/tus`.
    dir: PathBuf,
    /// Largest `Upload-Length` accepted (`--max-size`).
    max_size: u64,
    /// How long an upload may go without progress before it is removed.
    expiry: Duration,
    /// id -> upload. Locked only to look up, insert or remove, never across I/O.
    uploads: Mutex<HashMap<String, Arc<Entry>>>,
    /// id -> finished (published) upload, kept until it expires. Locked like
    /// `uploads`; never both at once.
    finished: Mutex<HashMap<String, Done>>,
    /// False once making a hard link in the tus directory failed: complete
    /// uploads are then handed out as `<id>.data` itself, with a `publishing`
    /// mark in the meta (see the module docs).
    hard_links: AtomicBool,
    /// When [`Tus::sweep_if_due`] last swept.
    last_sweep: Mutex<Instant>,
}

/// What `HEAD` reports about an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Bytes received and kept.
    pub offset: u64,
    /// Declared size (`Upload-Length`).
    pub length: u64,
    /// When the upload is removed if nothing more arrives (`Upload-Expires`).
    pub expires: SystemTime,
    /// The client's file name, as given at creation.
    pub name: String,
    /// The raw `Upload-Metadata` header given at creation ("" if none).
    pub metadata: String,
    /// Set once the upload was published: then `offset == length` and
    /// `expires` counts from the completion.
    pub finished: Option<Finished>,
}

/// How a finished upload was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
    /// Where the file went, relative to DIR (for a duplicate, the file that
    /// already held the bytes). `None` only when a crash on a file system
    /// without hard links lost it (see the module docs).
    pub saved_as: Option<String>,
    /// Whether the bytes were already stored (meaningless without `saved_as`).
    pub duplicate: bool,
}

impl Tus {
    /// Opens (creating it if needed) the tus directory and recovers what a
    /// previous run left: temp files, `.pub` links and orphans (data without
    /// meta, meta without data, unparsable meta or done record) are removed,
    /// expired uploads and done records are removed, valid done records are
    /// kept (and win over any other file of their id), a meta marked
    /// `publishing` whose data is gone becomes a done record, and each
    /// upload's offset becomes the bytes really on disk (data cut to the
    /// declared length, and to the start of an unverified checksum PATCH).
    pub fn open(dir: PathBuf, max_size: u64, expiry: Duration) -> Result<Tus, Error> {
        fs::create_dir_all(&dir)?;
        let tus = Tus {
            dir,
            max_size,
            expiry,
            uploads: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
            hard_links: AtomicBool::new(true),
            last_sweep: Mutex::new(Instant::now()),
        };
        tus.recover()?;
        Ok(tus)
    }

    /// Creates an upload of `length` bytes for the file `name` (validated by
    /// the caller), keeping the raw metadata header for `HEAD`. Returns the
    /// new id: 32 lower-case hex characters from 16 random bytes.
    pub fn create(&self, length: u64, name: &str, metadata_header: &str) -> Result<String, Error> {
        if length > self.max_size {
            return Err(Error::TooLarge {
                limit: self.max_size,
            });
        }
        let (id, data) = loop {
            let id = random_id();
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.data_path(&id))
            {
                Ok(data) => break (id, data),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let entry = Entry {
            id: id.clone(),
            length,
            name: name.to_owned(),
            metadata: metadata_header.to_owned(),
            created: unix_secs(SystemTime::now()),
            busy: AtomicBool::new(false),
            state: Mutex::new(State {
                offset: 0,
                hasher: Some(Running {
                    at: 0,
                    sha: Sha256::new(),
                }),
                removed: false,
            }),
        };
        // The meta write syncs the directory, which makes the data file's name durable too.
        let written = data
            .sync_all()
            .and_then(|()| self.write_meta(&id, &meta_of(&entry, 0, None)));
        if let Err(e) = written {
            let _ = fs::remove_file(self.data_path(&id));
            let _ = fs::remove_file(self.meta_path(&id));
            return Err(e.into());
        }
        self.uploads_map().insert(id.clone(), Arc::new(entry));
        log::debug!("tus upload {id} created: {length} bytes for {name:?}");
        Ok(id)
    }

    /// Offset, length, expiry time, name and metadata of an upload, and for
    /// a finished one how it was published. [`Error::NotFound`] for an
    /// unknown, terminated or expired id. Never waits for a running PATCH: it
    /// reports the bytes kept so far.
    pub fn info(&self, id: &str) -> Result<Info, Error> {
        if !is_valid_id(id) {
            return Err(not_found());
        }
        let live = self.uploads_map().get(id).cloned();
        if let Some(entry) = live {
            if let Some(info) = self.live_info(id, entry)? {
                return Ok(info);
            }
        }
        // Not there, or removed a moment ago by `finish`, which records the
        // finished upload before it forgets the live one.
        self.finished_info(id)
    }

    /// [`Tus::info`] of an upload in progress; `Ok(None)` once it is removed.
    fn live_info(&self, id: &str, entry: Arc<Entry>) -> Result<Option<Info>, Error> {
        let offset = {
            let state = entry.state();
            if state.removed {
                return Ok(None);
            }
            state.offset
        };
        let now = SystemTime::now();
        let expires = if entry.busy.load(Ordering::Acquire) {
            // Owned by a running request: it does not expire under it.
            now + self.expiry
        } else {
            let expires = self.expires(&entry).map_err(|_| not_found())?;
            if expires <= now {
                // Expired: remove its bytes now rather than at the next sweep
                // (own() discards it unless a request took it meanwhile).
                drop(entry);
                let _ = self.own(id);
                return Err(not_found());
            }
            expires
        };
        Ok(Some(Info {
            offset,
            length: entry.length,
            expires,
            name: entry.name.clone(),
            metadata: entry.metadata.clone(),
            finished: None,
        }))
    }

    /// [`Tus::info`] of a finished upload; an expired record is removed.
    fn finished_info(&self, id: &str) -> Result<Info, Error> {
        let done = self.finished_map().get(id).cloned().ok_or_else(not_found)?;
        if done.at + self.expiry <= SystemTime::now() {
            log::info!("finished tus upload {id} expired, record removed");
            self.forget_done(id);
            return Err(not_found());
        }
        Ok(done.info(self.expiry))
    }

    /// Termination: removes an upload and its bytes, or the record of a
    /// finished one (never the published file). [`Error::Locked`] while a
    /// PATCH on it runs, [`Error::NotFound`] for an unknown or expired id.
    pub fn terminate(&self, id: &str) -> Result<(), Error> {
        match self.own(id) {
            Ok(busy) => {
                log::debug!("tus upload {id} terminated");
                self.discard(&busy)
            }
            Err(Error::NotFound(_)) => {
                // Looked up after the live map, like `info`: `finish` records
                // the finished upload before it forgets the live one.
                self.finished_info(id)?;
                log::debug!("finished tus upload {id}: record removed");
                self.forget_done(id);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    // ---- internals ----

    fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.meta"))
    }

    fn pub_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.pub"))
    }

    fn done_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.done"))
    }

    fn finished_map(&self) -> MutexGuard<'_, HashMap<String, Done>> {
        self.finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `<id>.done` atomically (temp, fsync, rename, fsync of the
    /// directory) and remembers it; its completion time is the file's mtime.
    fn record_done(&self, id: &str, mut done: Done) -> io::Result<()> {
        let tmp = self.dir.join(format!("{id}.done.tmp"));
        let path = self.done_path(id);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(done.to_text().as_bytes())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        done.at = fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        self.finished_map().insert(id.to_owned(), done);
        Ok(())
    }

    /// Forgets a finished upload and removes its record.
    fn forget_done(&self, id: &str) {
        self.finished_map().remove(id);
        remove_logged(&self.done_path(id));
    }

    fn uploads_map(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The upload of this id.
    ///
    /// # Security
    /// `id` comes from the request path and ends up in file names: only our
    /// own form (32 lower-case hex characters) gets past this, so no id can
    /// name a path outside the tus directory.
    fn lookup(&self, id: &str) -> Result<Arc<Entry>, Error> {
        if !is_valid_id(id) {
            return Err(not_found());
        }
        self.uploads_map().get(id).cloned().ok_or_else(not_found)
    }

    /// Looks up and takes ownership of a live, unexpired upload.
    fn own(&self, id: &str) -> Result<Busy, Error> {
        let busy = Busy::acquire(self.lookup(id)?)?;
        if busy.entry.state().removed {
            return Err(not_found());
        }
        match self.expires(&busy.entry) {
            Ok(t) if t > SystemTime::now() => Ok(busy),
            _ => {
                self.discard(&busy)?;
                Err(not_found())
            }
        }
    }

    fn open_data(&self, busy: &Busy) -> Result<File, Error> {
        let path = self.data_path(&busy.entry.id);
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.discard(busy)?;
                Err(not_found())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets an owned upload and removes its files.
    fn discard(&self, busy: &Busy) -> Result<(), Error> {
        let entry = &busy.entry;
        {
            let mut state = entry.state();
            state.removed = true;
            state.hasher = None;
        }
        {
            let mut map = self.uploads_map();
            if map.get(&entry.id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                map.remove(&entry.id);
            }
        }
        remove_if_there(&self.meta_path(&entry.id))?;
        remove_if_there(&self.data_path(&entry.id))?;
        remove_if_there(&self.pub_path(&entry.id))?;
        Ok(())
    }

    /// Replaces `<id>.meta` atomically: temp, fsync, rename, fsync the directory.
    fn write_meta(&self, id: &str, meta: &Meta) -> io::Result<()> {
        let tmp = self.dir.join(format!("{id}.meta.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(meta.to_text().as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.meta_path(id))?;
        File::open(&self.dir)?.sync_all()
    }
}

fn meta_of(entry: &Entry, offset: u64, pending: Option<u64>) -> Meta {
    Meta {
        length: entry.length,
        offset,
        created: entry.created,
        pending,
        publishing: None,
        name: entry.name.clone(),
        metadata: entry.metadata.clone(),
    }
}

fn not_found() -> Error {
    Error::NotFound("No resumable upload has this id; it may have expired or finished.".into())
}

fn is_valid_id(id: &str) -> bool {
    id.len() == 2 * ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_logged(path: &Path) {
    if let Err(e) = remove_if_there(path) {
        log::warn!("could not remove {}: {e}", path.display());
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::store::BUFFER_SIZE;

    #[test]
    fn random_ids_are_long_hex_and_differ() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 32);
        assert!(is_valid_id(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn create_info_append_to_completion_gives_the_right_sha256() {
        let dir = TempDir::new("complete");
        let tus = dir.open(LONG);
        let bytes = pattern(3 * BUFFER_SIZE + 123);
        let len = bytes.len() as u64;
        let id = tus.create(len, "a/b.bin", "filename YS9iLmJpbg==").unwrap();
        assert_eq!(id.len(), 32);

        let info = tus.info(&id).unwrap();
        assert_eq!((info.offset, info.length), (0, len));
        assert_eq!(info.name, "a/b.bin");
        assert_eq!(info.metadata, "filename YS9iLmJpbg==");
        assert!(info.expires > SystemTime::now() + Duration::from_secs(3500));

        let (offset, done) = append_all(&tus, &id, 0, &bytes[..1000]);
        assert_eq!(offset, 1000);
        assert!(done.is_none());
        assert_eq!(tus.info(&id).unwrap().offset, 1000);

        let mut body = Trickle::new(&bytes[1000..], 7777, None);
        let (offset, done) = tus.append(&id, 1000, &mut body, None).unwrap();
        assert_eq!(offset, len);
        let done = done.expect("complete");
        assert_eq!(done.size, len);
        assert_eq!(done.name, "a/b.bin");
        assert_eq!(done.sha256, sha256_hex(&bytes));
        assert_eq!(fs::read(&done.data_path).unwrap(), bytes);

        let published = publish(&tus, &dir, done);
        assert_eq!(fs::read(&published).unwrap(), bytes);
        let info = tus.info(&id).unwrap();
        assert_eq!((info.offset, info.length), (len, len));
        assert_eq!(info.finished.unwrap().sha256, sha256_hex(&bytes));
        assert_eq!(tus_files(&dir), vec![format!("{id}.done")]);
    }

    #[test]
    fn create_over_the_max_size_is_too_large() {
        let dir = TempDir::new("toolarge");
        let tus = Tus::open(dir.tus_dir(), 100, LONG).unwrap();
        assert!(matches!(
            tus.create(101, "a", ""),
            Err(Error::TooLarge { limit: 100 })
        ));
        assert!(tus.create(100, "a", "").is_ok());
    }

    #[test]
    fn unknown_ids_and_path_like_ids_are_not_found() {
        let dir = TempDir::new("unknown");
        let tus = dir.open(LONG);
        for id in [
            "",
            "../../etc/passwd",
            "0123456789abcdef0123456789abcdeF",
            &random_id(),
        ] {
            assert!(matches!(tus.info(id), Err(Error::NotFound(_))), "{id:?}");
            assert!(matches!(
                tus.append(id, 0, &mut &b""[..], None),
                Err(Error::NotFound(_))
            ));
            assert!(matches!(tus.terminate(id), Err(Error::NotFound(_))));
        }
    }

    #[test]
    fn terminate_removes_the_upload() {
        let dir = TempDir::new("terminate");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        append_all(&tus, &id, 0, b"abc");
        tus.terminate(&id).unwrap();
        assert!(matches!(tus.info(&id), Err(Error::NotFound(_))));
        assert!(matches!(
            tus.append(&id, 3, &mut &b"d"[..], None),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(tus.terminate(&id), Err(Error::NotFound(_))));
        assert_eq!(fs::read_dir(dir.tus_dir()).unwrap().count(), 0);
    }

    #[test]
    fn terminating_a_finished_upload_removes_its_record_not_the_file() {
        let dir = TempDir::new("terminate-finished");
        let tus = dir.open(LONG);
        let id = tus.create(3, "t", "").unwrap();
        let (_, done) = append_all(&tus, &id, 0, b"abc");
        let dest = publish(&tus, &dir, done.unwrap());
        tus.terminate(&id).unwrap();
        assert!(matches!(tus.info(&id), Err(Error::NotFound(_))));
        assert!(matches!(tus.terminate(&id), Err(Error::NotFound(_))));
        assert_eq!(tus_files(&dir), Vec::<String>::new());
        assert_eq!(fs::read(dest).unwrap(), b"abc");
        // And it stays gone after a restart.
        let tus = dir.open(LONG);
        assert!(matches!(tus.info(&id), Err(Error::NotFound(_))));
    }
}
