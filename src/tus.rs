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

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::hashing::Feed;
use crate::writeback::Pacer;

/// Size of the buffer one PATCH reads into and writes from: one write per
/// buffer. 256 KiB per running PATCH, allocated per call.
pub const BUF_SIZE: usize = 256 * 1024;

/// [`Tus::sweep_if_due`] sweeps at most this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Random bytes in an id; hex makes it twice as many characters.
const ID_BYTES: usize = 16;

/// First line of every `.meta` file.
const META_MAGIC: &str = "tinydrop-tus 1";

/// First line of every `.done` file.
const DONE_MAGIC: &str = "tinydrop-tus-done 1";

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

/// A finished upload in memory: what `<id>.done` holds, and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Done {
    length: u64,
    sha256: String,
    saved_as: Option<String>,
    duplicate: bool,
    name: String,
    metadata: String,
    /// The completion: the record's mtime.
    at: SystemTime,
}

impl Done {
    fn to_text(&self) -> String {
        let mut text = format!(
            "{DONE_MAGIC}\nlength {}\nsha256 {}\n",
            self.length, self.sha256
        );
        if let Some(saved_as) = &self.saved_as {
            text.push_str(&format!("saved_as {}\n", escape(saved_as)));
            text.push_str(&format!("duplicate {}\n", u8::from(self.duplicate)));
        }
        text.push_str(&format!("name {}\n", escape(&self.name)));
        text.push_str(&format!("metadata {}\n", escape(&self.metadata)));
        text
    }

    /// `None` when the text is not a done record we wrote. `at` is left at
    /// the epoch for the caller to set.
    fn parse(text: &str) -> Option<Done> {
        let mut lines = text.lines();
        if lines.next()? != DONE_MAGIC {
            return None;
        }
        let (mut length, mut sha256, mut name) = (None, None, None);
        let mut done = Done {
            length: 0,
            sha256: String::new(),
            saved_as: None,
            duplicate: false,
            name: String::new(),
            metadata: String::new(),
            at: UNIX_EPOCH,
        };
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "length" => length = Some(value.parse().ok()?),
                "sha256" if is_sha256_hex(value) => sha256 = Some(value.to_owned()),
                "sha256" => return None,
                "saved_as" => done.saved_as = Some(unescape(value)?),
                "duplicate" => {
                    done.duplicate = match value {
                        "0" => false,
                        "1" => true,
                        _ => return None,
                    }
                }
                "name" => name = Some(unescape(value)?),
                "metadata" => done.metadata = unescape(value)?,
                _ => {}
            }
        }
        done.length = length?;
        done.sha256 = sha256?;
        done.name = name?;
        Some(done)
    }

    fn info(&self, expiry: Duration) -> Info {
        Info {
            offset: self.length,
            length: self.length,
            expires: self.at + expiry,
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            finished: Some(Finished {
                sha256: self.sha256.clone(),
                saved_as: self.saved_as.clone(),
                duplicate: self.duplicate,
            }),
        }
    }
}

/// An upload whose bytes have all arrived, ready to be published.
///
/// While this value lives the upload stays locked (a PATCH or DELETE on it
/// gets [`Error::Locked`], the sweep skips it). After publishing, give it to
/// [`Tus::finish`]. Dropping it instead leaves the upload complete and
/// unlocked, so [`Tus::completed`] can hand it out again (for example when
/// publishing failed on a full disk).
#[derive(Debug)]
pub struct Completed {
    /// The complete file to publish, inside the tus directory: `<id>.pub`, a
    /// second name of the data file, which publishing may take away (or,
    /// without hard links, `<id>.data` itself).
    pub data_path: PathBuf,
    /// The client's file name, as given at creation (still to be made safe).
    pub name: String,
    /// Size in bytes (the declared length).
    pub size: u64,
    /// sha256 of the whole file, lower-case hex.
    pub sha256: String,
    /// The `<id>.pub` link, removed on drop if publishing left it.
    link: Option<PathBuf>,
    busy: Busy,
}

impl Drop for Completed {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            remove_logged(link);
        }
    }
}

/// One upload in memory.
#[derive(Debug)]
struct Entry {
    id: String,
    length: u64,
    name: String,
    metadata: String,
    /// Unix seconds of creation, kept in the meta file for people reading it.
    created: u64,
    /// Set while a PATCH, DELETE, sweep or [`Completed`] owns the upload.
    busy: AtomicBool,
    /// Locked only for short reads and writes of the fields, never across I/O.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Bytes received and kept.
    offset: u64,
    /// sha256 of the data file's first `at` bytes, while the process lives.
    hasher: Option<Running>,
    /// Terminated, expired or finished: any later call answers NotFound.
    removed: bool,
}

#[derive(Debug, Clone)]
struct Running {
    at: u64,
    sha: Sha256,
}

impl Entry {
    fn state(&self) -> MutexGuard<'_, State> {
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
struct Busy {
    entry: Arc<Entry>,
}

impl Busy {
    fn acquire(entry: Arc<Entry>) -> Result<Busy, Error> {
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

/// The contents of a `.meta` file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    length: u64,
    offset: u64,
    created: u64,
    pending: Option<u64>,
    /// sha256 of a complete upload handed out without a hard link (see the module docs).
    publishing: Option<String>,
    name: String,
    metadata: String,
}

impl Meta {
    fn to_text(&self) -> String {
        let mut text = format!(
            "{META_MAGIC}\nlength {}\noffset {}\ncreated {}\n",
            self.length, self.offset, self.created
        );
        if let Some(pending) = self.pending {
            text.push_str(&format!("pending {pending}\n"));
        }
        if let Some(sha256) = &self.publishing {
            text.push_str(&format!("publishing {sha256}\n"));
        }
        text.push_str(&format!("name {}\n", escape(&self.name)));
        text.push_str(&format!("metadata {}\n", escape(&self.metadata)));
        text
    }

    /// `None` when the text is not a meta file we wrote.
    fn parse(text: &str) -> Option<Meta> {
        let mut lines = text.lines();
        if lines.next()? != META_MAGIC {
            return None;
        }
        let (mut length, mut offset, mut name) = (None, None, None);
        let mut meta = Meta {
            length: 0,
            offset: 0,
            created: 0,
            pending: None,
            publishing: None,
            name: String::new(),
            metadata: String::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "length" => length = Some(value.parse().ok()?),
                "offset" => offset = Some(value.parse().ok()?),
                "created" => meta.created = value.parse().ok()?,
                "pending" => meta.pending = Some(value.parse().ok()?),
                "publishing" if is_sha256_hex(value) => meta.publishing = Some(value.to_owned()),
                "publishing" => return None,
                "name" => name = Some(unescape(value)?),
                "metadata" => meta.metadata = unescape(value)?,
                _ => {}
            }
        }
        meta.length = length?;
        meta.offset = offset?;
        meta.name = name?;
        Some(meta)
    }
}

/// `\` -> `\\`, LF -> `\n`, CR -> `\r`: one value per line whatever it holds.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            _ => return None,
        }
    }
    Some(out)
}

/// A checksum of one PATCH body (tus checksum extension).
enum Checksum {
    Sha1(Sha1, Vec<u8>),
    Sha256(Sha256, Vec<u8>),
}

impl Checksum {
    fn new(algorithm: &str, expected: &[u8]) -> Result<Checksum, Error> {
        let (checksum, want) = if algorithm.eq_ignore_ascii_case("sha1") {
            (Checksum::Sha1(Sha1::new(), expected.to_vec()), 20)
        } else if algorithm.eq_ignore_ascii_case("sha256") {
            (Checksum::Sha256(Sha256::new(), expected.to_vec()), 32)
        } else {
            return Err(Error::BadRequest(format!(
                "The checksum algorithm {algorithm:?} is not supported; use sha1 or sha256."
            )));
        };
        if expected.len() != want {
            return Err(Error::BadRequest(format!(
                "The {} checksum has {} bytes; it should have {want}.",
                algorithm.to_ascii_lowercase(),
                expected.len()
            )));
        }
        Ok(checksum)
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Checksum::Sha1(h, _) => h.update(bytes),
            Checksum::Sha256(h, _) => h.update(bytes),
        }
    }

    fn matches(self) -> bool {
        match self {
            Checksum::Sha1(h, want) => h.finalize().as_slice() == want.as_slice(),
            Checksum::Sha256(h, want) => h.finalize().as_slice() == want.as_slice(),
        }
    }
}

/// Why receiving a PATCH body stopped before its clean end.
enum Stop {
    /// Reading the body failed (cut, timeout, bad framing): what arrived before counts.
    Read(Error),
    /// Writing to disk failed: what was fully written before counts.
    Write(io::Error),
    /// The body holds more bytes than the upload has room for.
    TooMuch,
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

    /// Parses `Upload-Metadata`: comma-separated `key base64value` pairs, the
    /// value optional. An empty header is no pairs. Malformed (empty entry,
    /// bad base64, a repeated key, extra words) is [`Error::BadRequest`].
    pub fn parse_metadata(header: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        if header.trim().is_empty() {
            return Ok(pairs);
        }
        for pair in header.split(',') {
            let mut words = pair.split_ascii_whitespace();
            let Some(key) = words.next() else {
                return Err(Error::BadRequest(
                    "Upload-Metadata has an empty entry between commas.".into(),
                ));
            };
            let value = match words.next() {
                None => Vec::new(),
                Some(encoded) => base64_decode(encoded).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "The Upload-Metadata value of {key:?} is not valid base64."
                    ))
                })?,
            };
            if words.next().is_some() {
                return Err(Error::BadRequest(format!(
                    "The Upload-Metadata entry {key:?} has more than a key and a value."
                )));
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(Error::BadRequest(format!(
                    "Upload-Metadata names {key:?} more than once."
                )));
            }
            pairs.push((key.to_owned(), value));
        }
        Ok(pairs)
    }

    /// The file name in the metadata: `relativePath` if present and non-empty
    /// (folder uploads from Uppy and the page), else `filename` (tus-js-client,
    /// tuspy), else `name`. Keys match in any case. Uppy sends the text `null`
    /// as `relativePath` for a file picked outside a folder; that counts as
    /// absent. A chosen value that is not UTF-8 is [`Error::BadRequest`].
    pub fn name_from_metadata(meta: &[(String, Vec<u8>)]) -> Result<Option<String>, Error> {
        for key in ["relativePath", "filename", "name"] {
            let Some((_, value)) = meta.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) else {
                continue;
            };
            let text = std::str::from_utf8(value).map_err(|_| {
                Error::BadRequest(format!("The file name in metadata {key:?} is not UTF-8."))
            })?;
            if text.is_empty() || (key == "relativePath" && text == "null") {
                continue;
            }
            return Ok(Some(text.to_owned()));
        }
        Ok(None)
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

    /// PATCH: appends `body` at `offset`, which must be the upload's current
    /// offset ([`Error::Conflict`] otherwise). Returns the new offset, and a
    /// [`Completed`] when it reached the declared length.
    ///
    /// - `checksum` is `(algorithm, expected digest)` with algorithm `sha1` or
    ///   `sha256` (else [`Error::BadRequest`], nothing read). On a mismatch the
    ///   bytes of this PATCH are discarded: [`Error::ChecksumMismatch`]. With a
    ///   checksum, a body that breaks off is discarded too, since it cannot be
    ///   verified.
    /// - Without a checksum, bytes received before the body broke off (a read
    ///   error) are kept, synced and counted, then the read error is returned.
    /// - A body longer than the room left is refused whole
    ///   ([`Error::TooLarge`] with the declared length): nothing of it is kept
    ///   and nothing is ever written past the length.
    /// - A disk error keeps the buffers fully written before it (none with a
    ///   checksum) and returns the error ([`Error::DiskFull`] for ENOSPC).
    ///
    /// A second call for the same upload while one runs gets [`Error::Locked`]
    /// at once. An empty body at an offset equal to the length hands out the
    /// [`Completed`] again.
    pub fn append(
        &self,
        id: &str,
        offset: u64,
        body: &mut dyn Read,
        checksum: Option<(&str, &[u8])>,
    ) -> Result<(u64, Option<Completed>), Error> {
        let mut check = match checksum {
            Some((algorithm, expected)) => Some(Checksum::new(algorithm, expected)?),
            None => None,
        };
        let busy = self.own(id)?;
        let entry = Arc::clone(&busy.entry);
        let current = entry.state().offset;
        if offset != current {
            return Err(Error::Conflict(format!(
                "The upload is at byte {current}, not {offset}; continue from byte {current}."
            )));
        }
        let mut data = self.open_data(&busy)?;
        let on_disk = data.metadata()?.len();
        if on_disk < current {
            // Bytes vanished from under us: believe the disk, let the client re-ask.
            self.set_offset(&entry, on_disk, None);
            self.write_meta(id, &meta_of(&entry, on_disk, None))?;
            return Err(Error::Conflict(format!(
                "The upload is at byte {on_disk}, not {offset}; continue from byte {on_disk}."
            )));
        }
        if on_disk > current {
            // Left by a request that panicked or failed to record its bytes.
            data.set_len(current)?;
        }
        let running = self.running_hash(&entry, &mut data, current)?;
        if check.is_some() {
            self.write_meta(id, &meta_of(&entry, current, Some(current)))?;
        }
        data.seek(SeekFrom::Start(current))?;

        let mut feed = Feed::new(running.sha.clone());
        let mut written = 0;
        let room = entry.length - current;
        let stop = receive(&mut data, body, room, &mut feed, &mut check, &mut written);
        let sha = feed.finish();

        let (kept, error) = match stop {
            Ok(()) if check.take().is_some_and(|c| !c.matches()) => {
                (0, Some(Error::ChecksumMismatch))
            }
            Ok(()) => (written, None),
            Err(Stop::TooMuch) => (
                0,
                Some(Error::TooLarge {
                    limit: entry.length,
                }),
            ),
            Err(Stop::Read(e)) if check.is_some() => (0, Some(e)),
            Err(Stop::Read(e)) => (written, Some(e)),
            Err(Stop::Write(e)) if check.is_some() => (0, Some(e.into())),
            Err(Stop::Write(e)) => (written, Some(e.into())),
        };
        // A lost hash loses the bytes too: the client sends them again.
        let (kept, error, sha) = match sha {
            Ok(sha) => (kept, error, sha),
            Err(e) => (0, Some(error.unwrap_or(e)), running.sha.clone()),
        };
        let sha = if kept == written { sha } else { running.sha };
        let new_offset = current + kept;
        if let Err(e) = self.commit(&entry, &mut data, new_offset, sha) {
            log::warn!("tus upload {id}: could not record offset {new_offset}: {e}");
            return Err(error.unwrap_or(e.into()));
        }
        if let Some(error) = error {
            return Err(error);
        }
        let completed = if new_offset == entry.length {
            Some(self.completion(busy, &mut data)?)
        } else {
            None
        };
        Ok((new_offset, completed))
    }

    /// Hands out an upload whose bytes have all arrived but that was not
    /// published yet (its last PATCH failed after the bytes were kept, or the
    /// server stopped in between): `Ok(None)` while bytes are still missing.
    pub fn completed(&self, id: &str) -> Result<Option<Completed>, Error> {
        let busy = self.own(id)?;
        if busy.entry.state().offset != busy.entry.length {
            return Ok(None);
        }
        let mut data = self.open_data(&busy)?;
        Ok(Some(self.completion(busy, &mut data)?))
    }

    /// Records a published upload as finished (`<id>.done`, durable before
    /// anything else goes), then removes its state and, if still there, its
    /// data file (publishing took the `.pub` name, or moved the data away).
    /// `saved_as` and `duplicate` are what the store answered.
    ///
    /// On an error writing the record the upload stays complete and
    /// unpublished (as if `completed` had been dropped): the next HEAD
    /// publishes it again, which the store then finds to be a duplicate.
    pub fn finish(
        &self,
        completed: Completed,
        saved_as: &str,
        duplicate: bool,
    ) -> Result<(), Error> {
        let entry = &completed.busy.entry;
        let done = Done {
            length: entry.length,
            sha256: completed.sha256.clone(),
            saved_as: Some(saved_as.to_owned()),
            duplicate,
            name: entry.name.clone(),
            metadata: entry.metadata.clone(),
            at: UNIX_EPOCH,
        };
        self.record_done(&entry.id, done)?;
        log::debug!("tus upload {} finished as {saved_as:?}", entry.id);
        self.discard(&completed.busy)
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

    /// Last progress (the data file's mtime) plus the expiry.
    fn expires(&self, entry: &Entry) -> io::Result<SystemTime> {
        let modified = fs::metadata(self.data_path(&entry.id))?.modified()?;
        Ok(modified + self.expiry)
    }

    /// The sha256 of the first `offset` bytes: the one kept in memory, or
    /// (after a restart, a panic, a lost hasher) read once more from disk.
    fn running_hash(&self, entry: &Entry, data: &mut File, offset: u64) -> Result<Running, Error> {
        let kept = entry.state().hasher.clone();
        match kept {
            Some(running) if running.at == offset => Ok(running),
            _ => {
                let running = Running {
                    at: offset,
                    sha: hash_prefix(data, offset)?,
                };
                entry.state().hasher = Some(running.clone());
                Ok(running)
            }
        }
    }

    /// Makes `offset` the upload's truth: data cut and synced there, meta
    /// rewritten (which also clears a `pending` mark), memory updated. On
    /// failure memory keeps the last recorded offset: the next PATCH cuts the
    /// data file back to it, and a restart trusts what the disk holds (less
    /// any bytes a `pending` mark still covers).
    fn commit(&self, entry: &Entry, data: &mut File, offset: u64, sha: Sha256) -> io::Result<()> {
        if data.metadata()?.len() != offset {
            data.set_len(offset)?;
        }
        data.sync_data()?;
        self.write_meta(&entry.id, &meta_of(entry, offset, None))?;
        self.set_offset(entry, offset, Some(sha));
        Ok(())
    }

    fn set_offset(&self, entry: &Entry, offset: u64, sha: Option<Sha256>) {
        let mut state = entry.state();
        state.offset = offset;
        state.hasher = sha.map(|sha| Running { at: offset, sha });
    }

    fn completion(&self, busy: Busy, data: &mut File) -> Result<Completed, Error> {
        let entry = &busy.entry;
        let running = self.running_hash(entry, data, entry.length)?;
        let sha256 = hex(&running.sha.finalize());
        log::debug!("tus upload {} complete: {} bytes", entry.id, entry.length);
        let (data_path, link) = self.hand_out(entry, &sha256)?;
        Ok(Completed {
            data_path,
            name: entry.name.clone(),
            size: entry.length,
            sha256,
            link,
            busy,
        })
    }

    /// The path a complete upload is published from: a fresh `<id>.pub` link
    /// to its data, so that publishing never takes `<id>.data` away; where
    /// hard links fail, `<id>.data` itself after a `publishing` mark in the
    /// meta. Returns the path and the link to remove later, if one was made.
    fn hand_out(&self, entry: &Entry, sha256: &str) -> Result<(PathBuf, Option<PathBuf>), Error> {
        let data = self.data_path(&entry.id);
        if self.hard_links.load(Ordering::Relaxed) {
            let link = self.pub_path(&entry.id);
            remove_if_there(&link)?;
            match fs::hard_link(&data, &link) {
                Ok(()) => return Ok((link.clone(), Some(link))),
                Err(e) => {
                    log::warn!(
                        "tus upload {}: cannot hard-link in {} ({e}); publishing moves the data",
                        entry.id,
                        self.dir.display()
                    );
                    // FAT and exFAT say EPERM: no use trying again.
                    if matches!(
                        e.kind(),
                        io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
                    ) {
                        self.hard_links.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        let mut meta = meta_of(entry, entry.length, None);
        meta.publishing = Some(sha256.to_owned());
        self.write_meta(&entry.id, &meta)?;
        Ok((data, None))
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

    /// Start-up: see [`Tus::open`]. One broken upload is logged and skipped,
    /// it does not stop the server.
    fn recover(&self) -> Result<(), Error> {
        let mut metas = BTreeSet::new();
        let mut datas = BTreeSet::new();
        let mut dones = BTreeSet::new();
        for item in fs::read_dir(&self.dir)? {
            let item = item?;
            let file_name = item.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let (id, set) = if let Some(id) = file_name.strip_suffix(".meta") {
                (id, &mut metas)
            } else if let Some(id) = file_name.strip_suffix(".data") {
                (id, &mut datas)
            } else if let Some(id) = file_name.strip_suffix(".done") {
                (id, &mut dones)
            } else if file_name.ends_with(".meta.tmp")
                || file_name.ends_with(".done.tmp")
                || file_name.ends_with(".pub")
            {
                // Half-written state, or a second name of a data file
                // (see "Crash safety of publishing").
                remove_logged(&item.path());
                continue;
            } else {
                continue;
            };
            if is_valid_id(id) {
                set.insert(id.to_owned());
            } else {
                remove_logged(&item.path());
            }
        }
        // A valid done record wins over whatever else the id left.
        for id in &dones {
            match self.recover_done(id) {
                Ok(true) => {
                    let had_meta = metas.remove(id);
                    let had_data = datas.remove(id);
                    if had_meta || had_data {
                        log::info!("finished tus upload {id}: leftover state removed");
                    }
                    remove_logged(&self.meta_path(id));
                    remove_logged(&self.data_path(id));
                }
                // Broken record, removed: the upload's own files decide.
                Ok(false) => {}
                Err(e) => {
                    log::warn!("finished tus upload {id}: could not recover it: {e}");
                    metas.remove(id);
                    datas.remove(id);
                }
            }
        }
        for id in metas.difference(&datas) {
            match self.recover_published(id) {
                Ok(true) => log::info!(
                    "tus upload {id}: published just before a stop, now finished (name not known)"
                ),
                Ok(false) => {
                    log::warn!("tus upload {id}: half of it is missing, removed");
                    remove_logged(&self.meta_path(id));
                }
                Err(e) => log::warn!("tus upload {id}: could not recover it: {e}"),
            }
        }
        for id in datas.difference(&metas) {
            log::warn!("tus upload {id}: half of it is missing, removed");
            remove_logged(&self.data_path(id));
        }
        for id in metas.intersection(&datas) {
            match self.recover_one(id) {
                Ok(Some(entry)) => {
                    self.uploads_map().insert(id.clone(), Arc::new(entry));
                }
                Ok(None) => {
                    remove_logged(&self.meta_path(id));
                    remove_logged(&self.data_path(id));
                }
                Err(e) => log::warn!("tus upload {id}: could not recover it: {e}"),
            }
        }
        Ok(())
    }

    /// A `<id>.done` at start-up. `Ok(true)`: the upload is finished (the
    /// record kept, or removed as expired); `Ok(false)`: the record was
    /// broken and is removed.
    fn recover_done(&self, id: &str) -> io::Result<bool> {
        let path = self.done_path(id);
        let text = fs::read(&path)?;
        let Some(mut done) = std::str::from_utf8(&text).ok().and_then(Done::parse) else {
            log::warn!("finished tus upload {id}: unreadable record, removed");
            remove_logged(&path);
            return Ok(false);
        };
        done.at = fs::metadata(&path)?.modified()?;
        if done.at + self.expiry <= SystemTime::now() {
            log::info!("finished tus upload {id} expired, record removed");
            remove_logged(&path);
        } else {
            self.finished_map().insert(id.to_owned(), done);
        }
        Ok(true)
    }

    /// A `<id>.meta` without data at start-up: if it carries a `publishing`
    /// mark, the store moved the data into DIR and the server stopped before
    /// the done record: write that record now (without `saved_as`) and
    /// return `Ok(true)`. `Ok(false)`: not that case, the caller removes it.
    fn recover_published(&self, id: &str) -> io::Result<bool> {
        let text = fs::read(self.meta_path(id))?;
        let Some(meta) = std::str::from_utf8(&text).ok().and_then(Meta::parse) else {
            return Ok(false);
        };
        let Some(sha256) = meta.publishing else {
            return Ok(false);
        };
        let done = Done {
            length: meta.length,
            sha256,
            saved_as: None,
            duplicate: false,
            name: meta.name,
            metadata: meta.metadata,
            at: UNIX_EPOCH,
        };
        self.record_done(id, done)?;
        remove_logged(&self.meta_path(id));
        Ok(true)
    }

    /// `Ok(None)`: remove it (unparsable or expired).
    fn recover_one(&self, id: &str) -> io::Result<Option<Entry>> {
        let text = fs::read(self.meta_path(id))?;
        let Some(mut meta) = std::str::from_utf8(&text).ok().and_then(Meta::parse) else {
            log::warn!("tus upload {id}: unreadable state, removed");
            return Ok(None);
        };
        let data = OpenOptions::new().write(true).open(self.data_path(id))?;
        let stat = data.metadata()?;
        if stat.modified()? + self.expiry <= SystemTime::now() {
            log::info!("tus upload {id} expired, removed");
            return Ok(None);
        }
        // Offset truth is the data on disk, up to the length, and up to the
        // start of a checksum PATCH that never got verified.
        let mut offset = stat.len().min(meta.length);
        if let Some(pending) = meta.pending {
            offset = offset.min(pending);
        }
        if offset < stat.len() {
            data.set_len(offset)?;
            data.sync_all()?;
        }
        // A `publishing` mark with the data still here: the store did not
        // move it (see the module docs); it is complete and unpublished.
        if offset != meta.offset || meta.pending.is_some() || meta.publishing.is_some() {
            meta.offset = offset;
            meta.pending = None;
            meta.publishing = None;
            self.write_meta(id, &meta)?;
        }
        Ok(Some(Entry {
            id: id.to_owned(),
            length: meta.length,
            name: meta.name,
            metadata: meta.metadata,
            created: meta.created,
            busy: AtomicBool::new(false),
            state: Mutex::new(State {
                offset,
                hasher: None,
                removed: false,
            }),
        }))
    }
}

/// Reads the body into `data` in buffer-sized writes, at most `room` bytes;
/// `written` counts the bytes fully written, also when it stops early.
fn receive(
    data: &mut File,
    body: &mut dyn Read,
    room: u64,
    sha: &mut Feed,
    check: &mut Option<Checksum>,
    written: &mut u64,
) -> Result<(), Stop> {
    let start = data.stream_position().map_err(Stop::Write)?;
    let mut pacer = Pacer::new(start);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let want = (room - *written).min(BUF_SIZE as u64) as usize;
        if want == 0 {
            // At the length: one more byte means the body is too long.
            return match fill(body, &mut buf[..1]) {
                (0, None) => Ok(()),
                (0, Some(e)) => match Error::from(e) {
                    Error::TooLarge { .. } => Err(Stop::TooMuch),
                    e => Err(Stop::Read(e)),
                },
                _ => Err(Stop::TooMuch),
            };
        }
        let (n, error) = fill(body, &mut buf[..want]);
        if n > 0 {
            data.write_all(&buf[..n]).map_err(Stop::Write)?;
            sha.update(&buf[..n]);
            if let Some(check) = check.as_mut() {
                check.update(&buf[..n]);
            }
            *written += n as u64;
            pacer.wrote(data, start + *written);
        }
        if let Some(e) = error {
            return Err(Stop::Read(e.into()));
        }
        if n < want {
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the body ends; returns how many bytes came,
/// and the error that stopped it early, if one did.
fn fill(body: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match body.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// sha256 of the first `len` bytes of `file`.
fn hash_prefix(file: &mut File, len: u64) -> Result<Sha256, Error> {
    file.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut left = len;
    while left > 0 {
        let want = left.min(BUF_SIZE as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(Error::Internal(
                "A resumable upload's data is shorter than recorded.".into(),
            ));
        }
        sha.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(sha)
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

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// A new upload id: 16 bytes from `/dev/urandom`, hex. Where that cannot be
/// read, std's randomly keyed hasher over the time, a counter and the pid.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for chunk in bytes.chunks_mut(8) {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            h.write_u32(std::process::id());
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    hex(&bytes)
}

/// Decodes standard base64 (`A-Z a-z 0-9 + /`), with or without `=` padding.
/// `None` for any other character, misplaced padding or an impossible length.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let pads = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pads > 2 || (pads > 0 && bytes.len() % 4 != 0) {
        return None;
    }
    let body = &bytes[..bytes.len() - pads];
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BodyError;
    use std::sync::mpsc;
    use std::thread;

    const LONG: Duration = Duration::from_secs(3600);

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "tinydrop-tus-{}-{}-{label}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn tus_dir(&self) -> PathBuf {
            self.0.join(".tinydrop").join("tus")
        }

        fn open(&self, expiry: Duration) -> Tus {
            Tus::open(self.tus_dir(), 1 << 20, expiry).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// Deterministic test bytes.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Hands out at most `step` bytes per read, then fails with a cut after `cut_at` bytes.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        cut_at: Option<usize>,
    }

    impl Trickle {
        fn new(data: &[u8], step: usize, cut_at: Option<usize>) -> Trickle {
            Trickle {
                data: data.to_vec(),
                pos: 0,
                step,
                cut_at,
            }
        }
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let end = self.cut_at.unwrap_or(self.data.len()).min(self.data.len());
            if self.pos >= end {
                return match self.cut_at {
                    Some(_) => Err(BodyError::Cut.into_io()),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.step).min(end - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

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

    fn append_all(tus: &Tus, id: &str, offset: u64, bytes: &[u8]) -> (u64, Option<Completed>) {
        tus.append(id, offset, &mut &bytes[..], None).unwrap()
    }

    fn meta_text(tus: &Tus, id: &str) -> String {
        fs::read_to_string(tus.meta_path(id)).unwrap()
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    /// Names of the files in the tus directory, sorted.
    fn tus_files(dir: &TempDir) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.tus_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Does what the store's publish does to the path handed out (link it
    /// under DIR, or rename it there without hard links, and remove the
    /// source name), without finishing. Returns the published path.
    fn publish_only(dir: &TempDir, done: &Completed) -> PathBuf {
        let dest = dir.0.join(format!("published-{}", random_id()));
        if done.link.is_some() {
            fs::hard_link(&done.data_path, &dest).unwrap();
            fs::remove_file(&done.data_path).unwrap();
        } else {
            fs::rename(&done.data_path, &dest).unwrap();
        }
        dest
    }

    /// Publishes as the store would, then finishes. Returns the published path.
    fn publish(tus: &Tus, dir: &TempDir, done: Completed) -> PathBuf {
        let dest = publish_only(dir, &done);
        let saved_as = dest.file_name().unwrap().to_str().unwrap().to_owned();
        tus.finish(done, &saved_as, false).unwrap();
        dest
    }

    fn b64_pairs(header: &str) -> Vec<(String, Vec<u8>)> {
        Tus::parse_metadata(header).unwrap()
    }

    // ---- base64 ----

    #[test]
    fn base64_decodes_with_and_without_padding() {
        let rows: &[(&str, &[u8])] = &[
            ("", b""),
            ("YQ==", b"a"),
            ("YQ", b"a"),
            ("YWI=", b"ab"),
            ("YWI", b"ab"),
            ("YWJj", b"abc"),
            ("aGVsbG8gd29ybGQ=", b"hello world"),
            ("+/8=", &[0xfb, 0xff]),
            ("w6lsw6h2ZS50eHQ", "élève.txt".as_bytes()),
        ];
        for (text, want) in rows {
            assert_eq!(base64_decode(text).as_deref(), Some(*want), "{text:?}");
        }
    }

    #[test]
    fn base64_refuses_what_is_not_base64() {
        for text in [
            "Y", "YQ=", "Y===", "=", "==", "YQ==YQ==", "YQ=a", "a-b_", "YW I=", "YWJj\n", "é",
            "YWJjZ===",
        ] {
            assert_eq!(base64_decode(text), None, "{text:?}");
        }
    }

    #[test]
    fn random_ids_are_long_hex_and_differ() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 32);
        assert!(is_valid_id(&a));
        assert_ne!(a, b);
    }

    // ---- metadata ----

    #[test]
    fn metadata_parses_pairs_and_keys_without_values() {
        let pairs = b64_pairs("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential");
        assert_eq!(
            pairs,
            vec![
                ("filename".to_owned(), b"world_domination_plan.pdf".to_vec()),
                ("is_confidential".to_owned(), Vec::new()),
            ]
        );
    }

    #[test]
    fn metadata_from_tuspy_with_lower_case_keys_and_spaces_after_commas() {
        let pairs = b64_pairs("filename YS50eHQ=, filetype dGV4dC9wbGFpbg==");
        assert_eq!(pairs[0], ("filename".to_owned(), b"a.txt".to_vec()));
        assert_eq!(pairs[1], ("filetype".to_owned(), b"text/plain".to_vec()));
    }

    #[test]
    fn metadata_empty_header_is_no_pairs() {
        assert!(b64_pairs("").is_empty());
        assert!(b64_pairs("   ").is_empty());
    }

    #[test]
    fn metadata_malformed_is_bad_request() {
        for header in [
            "filename not*base64",
            "filename YQ==,,filetype dGV4dA==",
            "filename YQ== extra",
            "filename YQ==,filename Yg==",
            ",",
            "filename Y",
        ] {
            let e = Tus::parse_metadata(header).unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{header:?}: {e:?}");
        }
    }

    #[test]
    fn name_prefers_relative_path_then_filename_then_name() {
        let name = |header: &str| Tus::name_from_metadata(&b64_pairs(header)).unwrap();
        // relativePath "dir/a.txt", filename "a.txt", name "b.txt"
        assert_eq!(
            name("name Yi50eHQ=,filename YS50eHQ=,relativePath ZGlyL2EudHh0").as_deref(),
            Some("dir/a.txt")
        );
        assert_eq!(
            name("name Yi50eHQ=,filename YS50eHQ=").as_deref(),
            Some("a.txt")
        );
        assert_eq!(name("name Yi50eHQ=").as_deref(), Some("b.txt"));
        assert_eq!(name("filetype dGV4dA==").as_deref(), None);
        assert_eq!(name("").as_deref(), None);
        // Empty values and Uppy's "null" relativePath fall through.
        assert_eq!(
            name("relativePath,filename YS50eHQ=").as_deref(),
            Some("a.txt")
        );
        assert_eq!(
            name("relativePath bnVsbA==,filename YS50eHQ=").as_deref(),
            Some("a.txt")
        );
        // Keys match in any case.
        assert_eq!(
            name("relativepath ZGlyL2EudHh0,FILENAME YS50eHQ=").as_deref(),
            Some("dir/a.txt")
        );
    }

    #[test]
    fn name_that_is_not_utf8_is_bad_request() {
        let meta = vec![("filename".to_owned(), vec![0xff, 0xfe])];
        assert!(matches!(
            Tus::name_from_metadata(&meta),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn meta_file_round_trips_names_with_newlines_and_backslashes() {
        let meta = Meta {
            length: 10,
            offset: 3,
            created: 42,
            pending: Some(3),
            publishing: None,
            name: "a\\b\nc\rd é".into(),
            metadata: "filename YQ==".into(),
        };
        let text = meta.to_text();
        assert_eq!(text.lines().count(), 7);
        assert_eq!(Meta::parse(&text), Some(meta.clone()));
        let marked = Meta {
            publishing: Some(sha256_hex(b"x")),
            ..meta
        };
        assert_eq!(Meta::parse(&marked.to_text()), Some(marked));
        assert_eq!(Meta::parse("something else\nlength 1"), None);
        assert_eq!(Meta::parse("tinydrop-tus 1\nlength 1\nname a"), None);
    }

    // ---- create, info, append ----

    #[test]
    fn create_info_append_to_completion_gives_the_right_sha256() {
        let dir = TempDir::new("complete");
        let tus = dir.open(LONG);
        let bytes = pattern(3 * BUF_SIZE + 123);
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
    fn an_empty_upload_completes_with_an_empty_body() {
        let dir = TempDir::new("empty");
        let tus = dir.open(LONG);
        let id = tus.create(0, "empty.txt", "").unwrap();
        let (offset, done) = append_all(&tus, &id, 0, b"");
        assert_eq!(offset, 0);
        assert_eq!(done.unwrap().sha256, sha256_hex(b""));
    }

    #[test]
    fn offset_mismatch_is_conflict_and_changes_nothing() {
        let dir = TempDir::new("conflict");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        append_all(&tus, &id, 0, b"abc");
        for wrong in [0, 2, 4, 10] {
            let e = tus.append(&id, wrong, &mut &b"x"[..], None).unwrap_err();
            assert!(matches!(e, Error::Conflict(_)), "{wrong}: {e:?}");
        }
        assert_eq!(tus.info(&id).unwrap().offset, 3);
        let (offset, done) = append_all(&tus, &id, 3, b"defghij");
        assert_eq!(offset, 10);
        assert_eq!(done.unwrap().sha256, sha256_hex(b"abcdefghij"));
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
    fn more_bytes_than_the_length_are_refused_and_nothing_is_kept() {
        let dir = TempDir::new("overflow");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        append_all(&tus, &id, 0, b"abc");
        let e = tus
            .append(&id, 3, &mut &b"defghijXYZ"[..], None)
            .unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 10 }), "{e:?}");
        assert_eq!(tus.info(&id).unwrap().offset, 3);
        assert_eq!(fs::read(tus.data_path(&id)).unwrap(), b"abc");
        // Exactly the rest works.
        let (_, done) = append_all(&tus, &id, 3, b"defghij");
        assert_eq!(done.unwrap().sha256, sha256_hex(b"abcdefghij"));
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

    // ---- checksums ----

    #[test]
    fn checksum_sha1_and_sha256_that_match_are_kept() {
        let dir = TempDir::new("checksum-ok");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        let sha1 = Sha1::digest(b"hello");
        let (offset, _) = tus
            .append(&id, 0, &mut &b"hello"[..], Some(("sha1", &sha1)))
            .unwrap();
        assert_eq!(offset, 5);
        let sha256 = Sha256::digest(b"world");
        let (offset, done) = tus
            .append(&id, 5, &mut &b"world"[..], Some(("sha256", &sha256)))
            .unwrap();
        assert_eq!(offset, 10);
        assert_eq!(done.unwrap().sha256, sha256_hex(b"helloworld"));
        assert!(!meta_text(&tus, &id).contains("pending"));
    }

    #[test]
    fn checksum_mismatch_discards_the_patch_and_a_later_good_one_finishes() {
        let dir = TempDir::new("checksum-bad");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        append_all(&tus, &id, 0, b"he");
        for (algorithm, wrong) in [
            ("sha1", Sha1::digest(b"other").to_vec()),
            ("sha256", Sha256::digest(b"other").to_vec()),
        ] {
            let e = tus
                .append(&id, 2, &mut &b"llowor"[..], Some((algorithm, &wrong)))
                .unwrap_err();
            assert!(matches!(e, Error::ChecksumMismatch), "{e:?}");
            assert_eq!(tus.info(&id).unwrap().offset, 2);
            assert_eq!(fs::read(tus.data_path(&id)).unwrap(), b"he");
            assert!(!meta_text(&tus, &id).contains("pending"));
        }
        let good = Sha256::digest(b"lloworld");
        let (offset, done) = tus
            .append(&id, 2, &mut &b"lloworld"[..], Some(("SHA256", &good)))
            .unwrap();
        assert_eq!(offset, 10);
        assert_eq!(done.unwrap().sha256, sha256_hex(b"helloworld"));
    }

    #[test]
    fn checksum_with_an_unknown_algorithm_or_wrong_size_is_bad_request_and_reads_nothing() {
        let dir = TempDir::new("checksum-algo");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        for (algorithm, digest) in [("md5", vec![0u8; 16]), ("sha1", vec![0u8; 32])] {
            let mut body = Trickle::new(b"hello", 5, None);
            let e = tus
                .append(&id, 0, &mut body, Some((algorithm, &digest)))
                .unwrap_err();
            assert!(matches!(e, Error::BadRequest(_)), "{e:?}");
            assert_eq!(body.pos, 0);
        }
        assert_eq!(tus.info(&id).unwrap().offset, 0);
    }

    #[test]
    fn checksum_patch_cut_off_is_discarded_because_it_cannot_be_verified() {
        let dir = TempDir::new("checksum-cut");
        let tus = dir.open(LONG);
        let id = tus.create(10, "a", "").unwrap();
        let digest = Sha1::digest(b"helloworld");
        let mut body = Trickle::new(b"helloworld", 3, Some(6));
        let e = tus
            .append(&id, 0, &mut body, Some(("sha1", &digest)))
            .unwrap_err();
        assert!(matches!(e, Error::BodyCut), "{e:?}");
        assert_eq!(tus.info(&id).unwrap().offset, 0);
        assert_eq!(fs::metadata(tus.data_path(&id)).unwrap().len(), 0);
    }

    // ---- cuts, restarts, recovery ----

    #[test]
    fn bytes_before_a_cut_are_kept_and_the_next_append_continues() {
        let dir = TempDir::new("cut");
        let tus = dir.open(LONG);
        let bytes = pattern(2 * BUF_SIZE + 5000);
        let len = bytes.len() as u64;
        let id = tus.create(len, "a", "").unwrap();
        let cut_at = BUF_SIZE + 1234;
        let mut body = Trickle::new(&bytes, 1000, Some(cut_at));
        let e = tus.append(&id, 0, &mut body, None).unwrap_err();
        assert!(matches!(e, Error::BodyCut), "{e:?}");
        assert_eq!(tus.info(&id).unwrap().offset, cut_at as u64);
        assert!(meta_text(&tus, &id).contains(&format!("offset {cut_at}\n")));

        let (offset, done) = append_all(&tus, &id, cut_at as u64, &bytes[cut_at..]);
        assert_eq!(offset, len);
        assert_eq!(done.unwrap().sha256, sha256_hex(&bytes));
    }

    #[test]
    fn reopening_keeps_the_offset_and_finishing_after_gives_the_right_sha256() {
        let dir = TempDir::new("reopen");
        let bytes = pattern(BUF_SIZE + 777);
        let len = bytes.len() as u64;
        let id = {
            let tus = dir.open(LONG);
            let id = tus
                .create(len, "x\ny.txt", "filename eAp5LnR4dA==")
                .unwrap();
            append_all(&tus, &id, 0, &bytes[..BUF_SIZE + 1]);
            id
        };
        let tus = dir.open(LONG);
        let info = tus.info(&id).unwrap();
        assert_eq!((info.offset, info.length), (BUF_SIZE as u64 + 1, len));
        assert_eq!(info.name, "x\ny.txt");
        assert_eq!(info.metadata, "filename eAp5LnR4dA==");
        let (_, done) = append_all(&tus, &id, info.offset, &bytes[BUF_SIZE + 1..]);
        assert_eq!(done.unwrap().sha256, sha256_hex(&bytes));
    }

    #[test]
    fn recovery_trusts_the_data_on_disk_over_the_recorded_offset() {
        let dir = TempDir::new("recover-offset");
        let (a, b) = {
            let tus = dir.open(LONG);
            let a = tus.create(100, "a", "").unwrap();
            append_all(&tus, &a, 0, &[1; 50]);
            let b = tus.create(100, "b", "").unwrap();
            append_all(&tus, &b, 0, &[2; 50]);
            // a: the meta claims more than the data holds.
            let text = meta_text(&tus, &a).replace("offset 50\n", "offset 80\n");
            fs::write(tus.meta_path(&a), text).unwrap();
            // b: a killed process wrote bytes and beyond the length, without recording them.
            let mut data = OpenOptions::new()
                .append(true)
                .open(tus.data_path(&b))
                .unwrap();
            data.write_all(&[3; 70]).unwrap();
            (a, b)
        };
        let tus = dir.open(LONG);
        assert_eq!(tus.info(&a).unwrap().offset, 50);
        assert!(meta_text(&tus, &a).contains("offset 50\n"));
        assert_eq!(tus.info(&b).unwrap().offset, 100);
        assert_eq!(fs::metadata(tus.data_path(&b)).unwrap().len(), 100);
        assert!(meta_text(&tus, &b).contains("offset 100\n"));
        let done = tus.completed(&b).unwrap().expect("complete");
        let mut want = vec![2; 50];
        want.extend([3; 50]);
        assert_eq!(done.sha256, sha256_hex(&want));
        assert!(tus.completed(&a).unwrap().is_none());
    }

    #[test]
    fn recovery_cuts_an_unverified_checksum_patch() {
        let dir = TempDir::new("recover-pending");
        let id = {
            let tus = dir.open(LONG);
            let id = tus.create(100, "a", "").unwrap();
            append_all(&tus, &id, 0, &[1; 20]);
            // As if killed in the middle of a checksum PATCH from byte 20.
            let text = meta_text(&tus, &id).replace("created", "pending 20\ncreated");
            fs::write(tus.meta_path(&id), text).unwrap();
            let mut data = OpenOptions::new()
                .append(true)
                .open(tus.data_path(&id))
                .unwrap();
            data.write_all(&[9; 30]).unwrap();
            id
        };
        let tus = dir.open(LONG);
        assert_eq!(tus.info(&id).unwrap().offset, 20);
        assert_eq!(fs::metadata(tus.data_path(&id)).unwrap().len(), 20);
        assert!(!meta_text(&tus, &id).contains("pending"));
    }

    #[test]
    fn orphans_and_temp_files_are_removed_at_open() {
        let dir = TempDir::new("orphans");
        let good = {
            let tus = dir.open(LONG);
            tus.create(10, "good", "").unwrap()
        };
        let tus_dir = dir.tus_dir();
        let (lonely_data, lonely_meta, garbled) = (random_id(), random_id(), random_id());
        fs::write(tus_dir.join(format!("{lonely_data}.data")), b"x").unwrap();
        fs::write(tus_dir.join(format!("{lonely_meta}.meta")), b"x").unwrap();
        fs::write(tus_dir.join(format!("{garbled}.data")), b"x").unwrap();
        fs::write(tus_dir.join(format!("{garbled}.meta")), b"not a meta file").unwrap();
        fs::write(tus_dir.join(format!("{good}.meta.tmp")), b"half").unwrap();
        fs::write(tus_dir.join("nonsense.data"), b"x").unwrap();

        let tus = dir.open(LONG);
        let mut left: Vec<String> = fs::read_dir(&tus_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![format!("{good}.data"), format!("{good}.meta")]);
        assert_eq!(tus.info(&good).unwrap().name, "good");
    }

    // ---- expiry, termination ----

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
    fn expired_uploads_are_removed_at_open() {
        let dir = TempDir::new("expired-open");
        let id = {
            let tus = dir.open(Duration::from_secs(1));
            tus.create(10, "a", "").unwrap()
        };
        thread::sleep(Duration::from_millis(1100));
        let tus = dir.open(Duration::from_secs(1));
        assert!(matches!(tus.info(&id), Err(Error::NotFound(_))));
        assert_eq!(fs::read_dir(dir.tus_dir()).unwrap().count(), 0);
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

    // ---- completion hand-over ----

    #[test]
    fn a_completed_upload_stays_locked_until_finished_or_dropped() {
        let dir = TempDir::new("completed");
        let tus = dir.open(LONG);
        let id = tus.create(3, "a", "").unwrap();
        let (_, done) = append_all(&tus, &id, 0, b"abc");
        let done = done.unwrap();
        assert!(matches!(
            tus.append(&id, 3, &mut &b""[..], None),
            Err(Error::Locked(_))
        ));
        assert!(matches!(tus.terminate(&id), Err(Error::Locked(_))));
        assert_eq!(tus.info(&id).unwrap().offset, 3);
        // Publishing failed: drop it; it can be handed out again, also by an empty PATCH.
        drop(done);
        let again = tus.completed(&id).unwrap().expect("complete");
        assert_eq!(again.sha256, sha256_hex(b"abc"));
        drop(again);
        let (_, again) = append_all(&tus, &id, 3, b"");
        publish(&tus, &dir, again.unwrap());
        assert!(tus.info(&id).unwrap().finished.is_some());
        // A finished upload takes no more appends (the routes answer for it).
        assert!(matches!(
            tus.append(&id, 3, &mut &b""[..], None),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(tus.completed(&id), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_full_disk_keeps_whole_buffers_and_says_disk_full() {
        let dir = TempDir::new("diskfull");
        let mount = dir.0.join("small");
        fs::create_dir_all(&mount).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mount)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a 1 MiB tmpfs here (needs root)");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _unmount = Unmount(mount.clone());

        let tus = Tus::open(mount.join("tus"), 1 << 30, LONG).unwrap();
        let bytes = pattern(4 << 20);
        let id = tus.create(bytes.len() as u64, "big", "").unwrap();
        let e = tus.append(&id, 0, &mut &bytes[..], None).unwrap_err();
        assert!(matches!(e, Error::DiskFull), "{e:?}");
        let offset = tus.info(&id).unwrap().offset;
        assert!(offset > 0 && offset < 1 << 20, "{offset}");
        assert_eq!(offset % BUF_SIZE as u64, 0);
        assert_eq!(fs::metadata(tus.data_path(&id)).unwrap().len(), offset);
        let on_disk = fs::read(tus.data_path(&id)).unwrap();
        assert_eq!(on_disk[..], bytes[..offset as usize]);
        // Still usable: a small PATCH fits, with the right hash continuing.
        let (next, _) = append_all(&tus, &id, offset, &bytes[offset as usize..][..10]);
        assert_eq!(next, offset + 10);
        tus.terminate(&id).unwrap();
    }

    // ---- finished uploads ----

    #[test]
    fn done_record_round_trips_and_refuses_what_we_did_not_write() {
        let done = Done {
            length: 12,
            sha256: sha256_hex(b"hello world!"),
            saved_as: Some("a\\b\nc (1).txt".into()),
            duplicate: true,
            name: "a\\b\nc.txt".into(),
            metadata: "filename YQ==".into(),
            at: UNIX_EPOCH,
        };
        let text = done.to_text();
        assert_eq!(text.lines().count(), 7);
        assert_eq!(Done::parse(&text), Some(done.clone()));
        let lost = Done {
            saved_as: None,
            duplicate: false,
            ..done.clone()
        };
        assert_eq!(Done::parse(&lost.to_text()), Some(lost));
        for broken in [
            String::new(),
            "tinydrop-tus 1\nlength 1\nname a\n".to_owned(),
            text.replace("length 12", "length x"),
            text.replace(&done.sha256, "abc"),
            text.replace("duplicate 1", "duplicate yes"),
            text.replace("name ", "nom "),
            text.replace("\\n", "\\q"),
        ] {
            assert_eq!(Done::parse(&broken), None, "{broken:?}");
        }
    }

    #[test]
    fn a_finished_upload_is_remembered_and_survives_a_restart() {
        let dir = TempDir::new("finished");
        let id = {
            let tus = dir.open(LONG);
            let id = tus.create(5, "f.txt", "filename Zi50eHQ=").unwrap();
            let (_, done) = append_all(&tus, &id, 0, b"hello");
            let done = done.unwrap();
            // Handed out as a second name of the data, which stays.
            assert_eq!(done.data_path, tus.pub_path(&id));
            assert!(tus.data_path(&id).exists());
            let dest = publish_only(&dir, &done);
            tus.finish(done, "f (1).txt", true).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"hello");
            assert_eq!(tus_files(&dir), vec![format!("{id}.done")]);
            id
        };
        let tus = dir.open(LONG);
        let info = tus.info(&id).unwrap();
        assert_eq!((info.offset, info.length), (5, 5));
        assert_eq!(info.name, "f.txt");
        assert_eq!(info.metadata, "filename Zi50eHQ=");
        assert!(info.expires > SystemTime::now() + Duration::from_secs(3500));
        assert_eq!(
            info.finished,
            Some(Finished {
                sha256: sha256_hex(b"hello"),
                saved_as: Some("f (1).txt".into()),
                duplicate: true,
            })
        );
        assert_eq!(tus_files(&dir), vec![format!("{id}.done")]);
    }

    #[test]
    fn recovery_keeps_valid_done_records_and_removes_broken_ones() {
        let dir = TempDir::new("recover-done");
        let (kept, broken_alone, broken_upload) = {
            let tus = dir.open(LONG);
            let kept = tus.create(3, "kept", "").unwrap();
            let (_, done) = append_all(&tus, &kept, 0, b"abc");
            publish(&tus, &dir, done.unwrap());
            // As if killed after the record but before the clean-up.
            fs::write(tus.meta_path(&kept), b"tinydrop-tus 1\n").unwrap();
            fs::write(tus.data_path(&kept), b"abc").unwrap();
            fs::write(tus.pub_path(&kept), b"abc").unwrap();
            fs::write(dir.tus_dir().join(format!("{kept}.done.tmp")), b"half").unwrap();

            let broken_alone = random_id();
            fs::write(tus.done_path(&broken_alone), b"tinydrop-tus-done 1\nlen").unwrap();

            // A broken record next to a complete upload: the upload decides.
            let broken_upload = tus.create(3, "b", "").unwrap();
            append_all(&tus, &broken_upload, 0, b"xyz");
            fs::write(tus.done_path(&broken_upload), b"garbage").unwrap();
            (kept, broken_alone, broken_upload)
        };
        let tus = dir.open(LONG);
        assert_eq!(
            tus_files(&dir),
            sorted(vec![
                format!("{broken_upload}.data"),
                format!("{broken_upload}.meta"),
                format!("{kept}.done"),
            ])
        );
        let info = tus.info(&kept).unwrap();
        assert_eq!(info.finished.unwrap().sha256, sha256_hex(b"abc"));
        assert!(matches!(tus.info(&broken_alone), Err(Error::NotFound(_))));
        let info = tus.info(&broken_upload).unwrap();
        assert_eq!((info.offset, info.finished), (3, None));
        let again = tus.completed(&broken_upload).unwrap().expect("complete");
        assert_eq!(again.sha256, sha256_hex(b"xyz"));
    }

    #[test]
    fn a_crash_between_publishing_and_the_record_leaves_it_complete_and_unpublished() {
        let dir = TempDir::new("crash-window");
        let (id, dest) = {
            let tus = dir.open(LONG);
            let id = tus.create(5, "c.txt", "").unwrap();
            let (_, done) = append_all(&tus, &id, 0, b"crash");
            let done = done.unwrap();
            let dest = publish_only(&dir, &done);
            // Killed here: no finish, no drop.
            std::mem::forget(done);
            (id, dest)
        };
        let tus = dir.open(LONG);
        let info = tus.info(&id).unwrap();
        assert_eq!((info.offset, info.length, info.finished), (5, 5, None));
        // Publishing it again finds the same bytes (a duplicate for the store).
        let again = tus.completed(&id).unwrap().expect("complete");
        assert_eq!(again.sha256, sha256_hex(b"crash"));
        let saved_as = dest.file_name().unwrap().to_str().unwrap().to_owned();
        tus.finish(again, &saved_as, true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"crash");
        assert_eq!(tus_files(&dir), vec![format!("{id}.done")]);

        // A crash with the `.pub` link still there: it goes at start-up, the data stays.
        let id = tus.create(4, "d.txt", "").unwrap();
        let (_, done) = append_all(&tus, &id, 0, b"link");
        std::mem::forget(done.unwrap());
        let tus = dir.open(LONG);
        assert!(!tus.pub_path(&id).exists());
        assert_eq!(tus.info(&id).unwrap().offset, 4);
        assert!(tus.completed(&id).unwrap().is_some());
    }

    #[test]
    fn without_hard_links_a_crash_after_the_move_still_ends_finished() {
        let dir = TempDir::new("no-links");
        let (moved, not_moved, dest) = {
            let tus = dir.open(LONG);
            tus.hard_links.store(false, Ordering::Relaxed);
            let moved = tus.create(5, "m.txt", "filename bS50eHQ=").unwrap();
            let (_, done) = append_all(&tus, &moved, 0, b"moved");
            let done = done.unwrap();
            assert_eq!(done.data_path, tus.data_path(&moved));
            assert!(meta_text(&tus, &moved).contains(&format!("publishing {}\n", done.sha256)));
            let dest = publish_only(&dir, &done);
            std::mem::forget(done);

            let not_moved = tus.create(3, "n.txt", "").unwrap();
            let (_, done) = append_all(&tus, &not_moved, 0, b"not");
            std::mem::forget(done.unwrap());
            (moved, not_moved, dest)
        };
        let tus = dir.open(LONG);
        let info = tus.info(&moved).unwrap();
        assert_eq!((info.offset, info.length), (5, 5));
        assert_eq!(info.metadata, "filename bS50eHQ=");
        let finished = info.finished.unwrap();
        assert_eq!(finished.sha256, sha256_hex(b"moved"));
        assert_eq!(finished.saved_as, None);
        assert_eq!(fs::read(&dest).unwrap(), b"moved");
        // The rename did not happen: an ordinary complete upload, mark cleared.
        let info = tus.info(&not_moved).unwrap();
        assert_eq!((info.offset, info.finished), (3, None));
        assert!(!meta_text(&tus, &not_moved).contains("publishing"));
        assert_eq!(
            tus_files(&dir),
            sorted(vec![
                format!("{moved}.done"),
                format!("{not_moved}.data"),
                format!("{not_moved}.meta"),
            ])
        );
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

    // ---- concurrency ----

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
