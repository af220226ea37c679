//! The upload directory on disk: temp files, hashing as bytes arrive, fsync,
//! no-clobber publishing under versioned names, duplicate detection, listing,
//! and start-up clean-up.
//!
//! Everything here takes `impl Read`, strings and paths; nothing knows HTTP.
//!
//! ```text
//! DIR/
//!   .tinydrop/tmp/           bytes being received: anonymous files (O_TMPFILE),
//!                            or where the system has none, <random> names
//!                            (removed on any failure, and on start)
//!   .tinydrop/tus/           resumable uploads (kept until they expire; see tus/mod.rs)
//!   a/b.txt, a/b (1).txt     published files
//! ```
//!
//! Publishing a complete file (`publish_file`, `TempFile::publish`):
//! `sync_data` the file; create the folders of the name, each one a real
//! folder; walk `name`, `name (1).ext`, `name (2).ext`, …: a regular file of
//! the same size and sha256 is a duplicate (the new bytes are dropped), the
//! first free name is taken with `hard_link(temp, final)`, which fails
//! atomically if the name appeared meanwhile (then the walk goes on); then the
//! temp name is removed and the folder fsynced. Where hard links do not exist
//! (FAT, exFAT) the final name is reserved with `create_new` and the temp
//! renamed over it.
//!
//! # Security
//!
//! - Names come in as [`SafeName`]s only, so no `..`, absolute path or
//!   `.tinydrop` segment ever reaches a path joined here.
//! - Nothing is ever overwritten: final names are taken with `hard_link` or
//!   `create_new`, both of which fail if anything (file, folder, symlink,
//!   even a dangling one) already has the name. That holds across threads and
//!   processes without any lock; the store's lock only makes identical
//!   concurrent uploads see each other as duplicates.
//! - No symlink inside `DIR` is followed: a folder of the name that is a
//!   symlink (or a file) refuses the upload with `Error::Conflict`; an entry
//!   at a candidate name that is a symlink or folder just counts as taken;
//!   stored files are opened with `O_NOFOLLOW` to hash them; the listing
//!   skips symlinks.
//! - These checks use paths, not directory handles, so a local user who can
//!   write inside `DIR` could swap a folder for a symlink between the check
//!   and the link. HTTP clients cannot create symlinks, and local users with
//!   write access to `DIR` are outside the threat model.
//! - No allocation is sized by the client: bodies go through one fixed
//!   buffer of [`BUFFER_SIZE`], and the hash cache has a fixed cap.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::hashing::Feed;
use crate::names::{version_name, SafeName, RESERVED_DIR};
use crate::writeback::Pacer;

/// Size of the one buffer a body is copied through (and a stored file is
/// hashed through). 64 KiB and more measured about 1.5x faster than 8 KiB;
/// `make bench` measured 128 KiB as fast as 256 KiB (same MiB/s and CPU
/// per GiB), at half the memory: 16 workers x 128 KiB is 2 MiB.
pub const BUFFER_SIZE: usize = 128 * 1024;

/// How many names a walk tries (`name`, `name (1)` … `name (9999)`) before
/// refusing with `Error::Conflict`.
pub const MAX_VERSIONS: u32 = 10_000;

/// Room kept free on top of an upload's size, for metadata and logs.
const ROOM_MARGIN: u64 = 1024 * 1024;

/// Most entries in the hash cache; past it the cache starts afresh.
const HASH_CACHE_CAP: usize = 65_536;

/// How many times a version walk lets go of the lock to hash a stored file
/// before it hashes under the lock (only when files keep changing).
const HASH_RESTARTS: u32 = 4;

/// The sha256 of a stored file, valid while its size and mtime are unchanged.
struct Hashed {
    size: u64,
    modified: SystemTime,
    sha256: String,
}

/// The upload directory. `Send + Sync`: worker threads share one through an `Arc`.
pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
    /// Held around each version walk (metadata calls and one link, never a
    /// file read), so that identical concurrent uploads find each other.
    publish_lock: Mutex<()>,
    /// Absolute path of a stored file -> its hash, so duplicate checks do not
    /// re-read big files.
    hashes: Mutex<HashMap<PathBuf, Hashed>>,
    /// False once the file system said it has no hard links.
    hard_links: AtomicBool,
    /// Temp files are anonymous (`O_TMPFILE`), linked in by their
    /// `/proc/self/fd` path: checked at start.
    anonymous_temps: bool,
}

/// The outcome of publishing one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Where the file is, relative to `DIR`, `/`-separated; for a duplicate,
    /// the file that already held these bytes.
    pub saved_as: String,
    /// Bytes.
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// True when nothing was written because the same bytes were already
    /// stored under this name or one of its versions.
    pub duplicate: bool,
}

/// One stored file, for the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Relative to `DIR`, `/`-separated.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Last modification (the Unix epoch if the file system does not say).
    pub modified: SystemTime,
}

/// What the version walk found under the lock.
enum Step {
    /// Done: the name taken or found, whether it held these bytes already,
    /// and whether `src` was hard-linked (and so is still there to remove).
    Done {
        candidate: String,
        duplicate: bool,
        linked: bool,
    },
    /// A stored file of the same size needs hashing first (outside the lock).
    Hash(PathBuf),
}

/// How a free candidate name went.
enum Claim {
    /// Hard-linked: the source is still there and must be removed.
    Linked,
    /// Renamed over a reservation: the source is gone.
    Renamed,
    /// Someone took the name between the look and the claim.
    Raced,
}

impl Store {
    /// Creates DIR (and DIR/.tinydrop/tmp, DIR/.tinydrop/tus) if missing;
    /// removes stale files in .tinydrop/tmp (uploads cut off by a stop or a
    /// crash); fails with a clear io error if DIR is not writable.
    ///
    /// Two servers on one DIR are not supported: the second would remove the
    /// first one's temp files.
    pub fn open(root: &Path) -> Result<Store, Error> {
        fs::create_dir_all(root).map_err(|e| context(e, "create the upload folder", root))?;
        let root =
            fs::canonicalize(root).map_err(|e| context(e, "find the upload folder", root))?;
        let private = root.join(RESERVED_DIR);
        let tmp = private.join("tmp");
        for dir in [&private, &tmp, &private.join("tus")] {
            make_real_dir(dir)?;
        }
        remove_stale(&tmp);
        let probe = tmp.join(format!("probe-{}", random_id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| context(e, "write in the upload folder", &root))?;
        fs::remove_file(&probe).map_err(|e| context(e, "remove", &probe))?;
        let anonymous_temps = anonymous_temps_work(&tmp);
        log::debug!("anonymous temp files: {anonymous_temps}");
        Ok(Store {
            root,
            tmp,
            publish_lock: Mutex::new(()),
            hashes: Mutex::new(HashMap::new()),
            hard_links: AtomicBool::new(true),
            anonymous_temps,
        })
    }

    /// The upload directory, absolute.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// DIR/.tinydrop/tus, where resumable uploads live.
    pub fn tus_dir(&self) -> PathBuf {
        self.root.join(RESERVED_DIR).join("tus")
    }

    /// Free bytes on DIR's file system (statvfs `f_bavail * f_frsize`), None
    /// if unknown.
    pub fn free_space(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.root).ok()?;
        let unit = if stat.f_frsize > 0 {
            stat.f_frsize
        } else {
            stat.f_bsize
        };
        Some(stat.f_bavail.saturating_mul(unit))
    }

    /// `Err(DiskFull)` when `len` bytes (plus a small margin) cannot fit; Ok
    /// when they can or when the free space is unknown.
    pub fn check_room(&self, len: u64) -> Result<(), Error> {
        match self.free_space() {
            Some(free) if free < len.saturating_add(ROOM_MARGIN) => Err(Error::DiskFull),
            _ => Ok(()),
        }
    }

    /// A new temp file: anonymous in `DIR/.tinydrop/tmp` where the system
    /// has `O_TMPFILE` (see [`TempFile`]), else `DIR/.tinydrop/tmp/<random>`
    /// created with `create_new`.
    pub fn begin(&self) -> Result<TempFile, Error> {
        // Anonymous files are published by linking; without hard links the
        // fallback renames, which needs a name.
        if self.anonymous_temps && self.hard_links.load(Ordering::Relaxed) {
            match open_anonymous(&self.tmp) {
                Ok(file) => {
                    let path = fd_path(&file);
                    return Ok(TempFile::new(file, path, false));
                }
                Err(e) => log::debug!("no anonymous temp file ({e}); using a named one"),
            }
        }
        for _ in 0..4 {
            let path = self.tmp.join(random_id());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(TempFile::new(file, path, true)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(
            "The server could not pick a fresh temporary file name.".to_string(),
        ))
    }

    /// Streams all of `body` into a temp file through one buffer of
    /// [`BUFFER_SIZE`], refuses with `TooLarge` past `limit` bytes, then
    /// publishes it as `name`. Read errors keep their cause (a body reader's
    /// `BodyError` becomes `TooLarge`, `BodyCut` or `BadRequest`), write
    /// errors too (ENOSPC is `DiskFull`). On any error the temp file is gone.
    pub fn save(&self, name: &SafeName, body: &mut dyn Read, limit: u64) -> Result<Saved, Error> {
        let mut temp = self.begin()?;
        let mut buf = vec![0u8; BUFFER_SIZE];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e)),
            };
            if temp.len().saturating_add(n as u64) > limit {
                return Err(Error::TooLarge { limit });
            }
            temp.write_all(&buf[..n])?;
        }
        temp.publish(self, name)
    }

    /// Publishes an already complete file at `src` (a tus data file, or a
    /// temp) of known `size` and `sha256` (hex) under `name`: fsyncs it,
    /// checks for a duplicate, links it under the first free version of the
    /// name, removes `src` and fsyncs the folder. On error `src` is left
    /// where it was (the caller owns it). An error after the link (the
    /// folder fsync) leaves the file in place; a retry finds it as a duplicate.
    pub fn publish_file(
        &self,
        src: &Path,
        name: &SafeName,
        size: u64,
        sha256: &str,
    ) -> Result<Saved, Error> {
        let file = File::open(src)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != size {
            return Err(Error::Internal(
                "The upload's size on disk does not match the bytes received.".to_string(),
            ));
        }
        file.sync_data()?;
        drop(file);
        let src = Source {
            path: src,
            named: true,
        };
        self.publish_synced(src, name, size, &sha256.to_ascii_lowercase(), true)
    }

    /// Recursive listing of stored files, sorted by path: regular files only,
    /// `.tinydrop` hidden, symlinks skipped (never followed). A folder that
    /// cannot be read (other than DIR) is skipped; names that are not UTF-8
    /// are shown lossily.
    pub fn list(&self) -> Result<Vec<Listed>, Error> {
        let mut out = Vec::new();
        // An explicit stack, so a deep tree cannot overflow the thread's stack.
        let mut stack: Vec<(PathBuf, String)> = Vec::new();
        let entries = fs::read_dir(&self.root)?;
        self.list_into(entries, "", &mut stack, &mut out);
        while let Some((dir, prefix)) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&dir) {
                self.list_into(entries, &prefix, &mut stack, &mut out);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn list_into(
        &self,
        entries: fs::ReadDir,
        prefix: &str,
        stack: &mut Vec<(PathBuf, String)>,
        out: &mut Vec<Listed>,
    ) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if prefix.is_empty() && file_name.eq_ignore_ascii_case(RESERVED_DIR) {
                continue;
            }
            // `file_type` does not follow symlinks: a symlink is neither.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = if prefix.is_empty() {
                file_name.into_owned()
            } else {
                format!("{prefix}/{file_name}")
            };
            if kind.is_dir() {
                stack.push((entry.path(), path));
            } else if kind.is_file() {
                if let Ok(meta) = entry.metadata() {
                    out.push(Listed {
                        path,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(UNIX_EPOCH),
                    });
                }
            }
        }
    }

    /// The publish flow after the file's data is synced. `serialize` is
    /// false only in a test that shows no-clobber holds without the lock.
    fn publish_synced(
        &self,
        src: Source<'_>,
        name: &SafeName,
        size: u64,
        sha256: &str,
        serialize: bool,
    ) -> Result<Saved, Error> {
        let mut created = Vec::new();
        let result = self.publish_into(src, name, size, sha256, serialize, &mut created);
        if result.is_err() {
            // Folders made for this file and still empty go again.
            for dir in created.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        result
    }

    /// [`Store::publish_synced`]'s work; `created` collects the folders it makes.
    fn publish_into(
        &self,
        src: Source<'_>,
        name: &SafeName,
        size: u64,
        sha256: &str,
        serialize: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<Saved, Error> {
        let dir = self.make_parents(name, created)?;
        let file_name = name.file_name();
        let mut restarts = 0;
        let (candidate, duplicate, linked) = loop {
            let guard = serialize.then(|| self.lock_publish());
            let inline = restarts >= HASH_RESTARTS;
            match self.walk(src.path, &dir, file_name, size, sha256, inline)? {
                Step::Done {
                    candidate,
                    duplicate,
                    linked,
                } => break (candidate, duplicate, linked),
                Step::Hash(path) => {
                    drop(guard);
                    restarts += 1;
                    // A failure here is retried by the next walk, in the end inline.
                    let _ = self.hash_stored(&path);
                }
            }
        };
        if (duplicate || linked) && src.named {
            // The bytes are stored (or were already): a leftover temp is only
            // untidy, and start-up removes it.
            let _ = fs::remove_file(src.path);
        }
        if !duplicate {
            File::open(&dir)?.sync_all()?;
            for new_dir in created.iter().rev() {
                if let Some(parent) = new_dir.parent() {
                    File::open(parent)?.sync_all()?;
                }
            }
        }
        let parent = name.parent();
        let saved_as = if parent.is_empty() {
            candidate
        } else {
            format!("{parent}/{candidate}")
        };
        Ok(Saved {
            saved_as,
            size,
            sha256: sha256.to_string(),
            duplicate,
        })
    }

    /// Where stored file `name` is, if every folder on the way is a real
    /// folder and the file a regular file: no symlink is followed, and
    /// `.tinydrop` cannot be named (the name rules refuse it).
    fn stored_path(&self, name: &SafeName) -> Result<PathBuf, Error> {
        let missing = || Error::NotFound(format!("No file is stored as `{name}`."));
        let mut path = self.root.clone();
        for segment in name.parent().split('/').filter(|s| !s.is_empty()) {
            path.push(segment);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                _ => return Err(missing()),
            }
        }
        path.push(name.file_name());
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(path),
            _ => Err(missing()),
        }
    }

    /// Opens stored file `name` for reading, never through a symlink.
    /// [`Error::NotFound`] when there is no such regular file.
    pub fn open_stored(&self, name: &SafeName) -> Result<(File, fs::Metadata), Error> {
        let path = self.stored_path(name)?;
        let file = open_no_follow(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("No file is stored as `{name}`.")),
            _ => Error::from(e),
        })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(Error::NotFound(format!("No file is stored as `{name}`.")));
        }
        Ok((file, meta))
    }

    /// Deletes stored file `name` (a regular file, reached without following
    /// a symlink) and fsyncs its folder. [`Error::NotFound`] otherwise.
    pub fn remove(&self, name: &SafeName) -> Result<(), Error> {
        let path = self.stored_path(name)?;
        let _publishing = self.lock_publish();
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("No file is stored as `{name}`.")),
            _ => Error::from(e),
        })?;
        self.lock_hashes().remove(&path);
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Creates the folders of `name` under DIR, each existing one checked to
    /// be a real folder (not a symlink, not a file). Returns the innermost.
    fn make_parents(&self, name: &SafeName, created: &mut Vec<PathBuf>) -> Result<PathBuf, Error> {
        let mut dir = self.root.clone();
        let mut shown = String::new();
        for segment in name.parent().split('/').filter(|s| !s.is_empty()) {
            dir.push(segment);
            if !shown.is_empty() {
                shown.push('/');
            }
            shown.push_str(segment);
            let in_the_way = || {
                Error::Conflict(format!(
                    "`{shown}` already exists and is not a folder, so `{name}` cannot be saved."
                ))
            };
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(in_the_way()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                    Ok(()) => created.push(dir.clone()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Another upload made it meanwhile; it must be a folder too.
                        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                            return Err(in_the_way());
                        }
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dir)
    }

    /// The version walk, run under the lock: metadata calls and at most a
    /// few claims, no file read unless `inline`.
    fn walk(
        &self,
        src: &Path,
        dir: &Path,
        file_name: &str,
        size: u64,
        sha256: &str,
        inline: bool,
    ) -> Result<Step, Error> {
        let mut n = 0;
        let mut looked_again = false;
        while n < MAX_VERSIONS {
            let candidate = if n == 0 {
                file_name.to_string()
            } else {
                version_name(file_name, n)
            };
            let path = dir.join(&candidate);
            match fs::symlink_metadata(&path) {
                // Folders, symlinks and other sizes are simply taken.
                Ok(meta) if meta.is_file() && meta.len() == size => {
                    let known = match self.cached_hash(&path, &meta) {
                        Some(known) => Some(known),
                        None if inline => self.hash_stored(&path).ok(),
                        None => return Ok(Step::Hash(path)),
                    };
                    if known.as_deref() == Some(sha256) {
                        return Ok(Step::Done {
                            candidate,
                            duplicate: true,
                            linked: false,
                        });
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let linked = match self.claim(src, &path)? {
                        Claim::Linked => true,
                        Claim::Renamed => false,
                        Claim::Raced if !looked_again => {
                            // Look at what appeared: it may hold these very bytes.
                            looked_again = true;
                            continue;
                        }
                        Claim::Raced => {
                            n += 1;
                            looked_again = false;
                            continue;
                        }
                    };
                    self.remember(&path, sha256);
                    return Ok(Step::Done {
                        candidate,
                        duplicate: false,
                        linked,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            n += 1;
            looked_again = false;
        }
        Err(Error::Conflict(format!(
            "There are already {MAX_VERSIONS} files named like `{file_name}` in that folder; \
             nothing was saved."
        )))
    }

    /// Takes the free name `path` for `src` without ever replacing anything.
    fn claim(&self, src: &Path, path: &Path) -> Result<Claim, Error> {
        if self.hard_links.load(Ordering::Relaxed) {
            match link_following(src, path) {
                Ok(()) => return Ok(Claim::Linked),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Claim::Raced),
                Err(e) => match no_hard_links(&e) {
                    Some(for_good) => {
                        if for_good {
                            self.hard_links.store(false, Ordering::Relaxed);
                        }
                    }
                    None => return Err(e.into()),
                },
            }
        }
        // No hard links here: reserve the name, then rename over the reservation.
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Claim::Raced),
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = fs::rename(src, path) {
            let _ = fs::remove_file(path);
            return Err(e.into());
        }
        Ok(Claim::Renamed)
    }

    fn lock_publish(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it broken.
        self.publish_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_hashes(&self) -> MutexGuard<'_, HashMap<PathBuf, Hashed>> {
        // Entries are inserted whole: a poisoned map is still consistent.
        self.hashes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached hash of a stored file, if its size and mtime still match.
    fn cached_hash(&self, path: &Path, meta: &fs::Metadata) -> Option<String> {
        let modified = meta.modified().ok()?;
        let hashes = self.lock_hashes();
        let entry = hashes.get(path)?;
        (entry.size == meta.len() && entry.modified == modified).then(|| entry.sha256.clone())
    }

    fn insert_hash(&self, path: &Path, size: u64, modified: SystemTime, sha256: &str) {
        let mut hashes = self.lock_hashes();
        if hashes.len() >= HASH_CACHE_CAP && !hashes.contains_key(path) {
            hashes.clear();
        }
        let entry = Hashed {
            size,
            modified,
            sha256: sha256.to_string(),
        };
        hashes.insert(path.to_path_buf(), entry);
    }

    /// Caches the hash of a file just published at `path`.
    fn remember(&self, path: &Path, sha256: &str) {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if let Ok(modified) = meta.modified() {
                self.insert_hash(path, meta.len(), modified, sha256);
            }
        }
    }

    /// Reads a stored file (never through a symlink) and caches its hash.
    fn hash_stored(&self, path: &Path) -> io::Result<String> {
        let mut file = open_no_follow(path)?;
        // The size and mtime from before the read: a change during the read
        // makes the entry stale, never wrongly fresh.
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUFFER_SIZE];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let sha256 = hex(&hasher.finalize());
        if let Ok(modified) = meta.modified() {
            self.insert_hash(path, meta.len(), modified, &sha256);
        }
        Ok(sha256)
    }

    #[cfg(test)]
    fn without_hard_links(self) -> Store {
        self.hard_links.store(false, Ordering::Relaxed);
        self
    }

    #[cfg(test)]
    fn with_named_temps(mut self) -> Store {
        self.anonymous_temps = false;
        self
    }
}

/// A file being received, under DIR/.tinydrop/tmp. Hashes what it writes.
/// Dropping it without a successful [`TempFile::publish`] removes it.
///
/// Where the system allows it the file is anonymous (`O_TMPFILE`) and
/// published by linking its `/proc/self/fd` path: no name is created in,
/// and removed from, the shared temp folder for each upload. With many
/// small uploads at once those two changes of one folder made the workers
/// queue for its lock (a sixth of the server's CPU in S3, by `perf`), and a
/// crash leaves nothing behind to clean up.
///
/// Writes go straight to the file: callers write in buffer-sized pieces.
pub struct TempFile {
    file: File,
    /// The temp's name, or for an anonymous one its `/proc/self/fd` path.
    path: PathBuf,
    /// False for an anonymous file: nothing to remove, ever.
    named: bool,
    hasher: Feed,
    pacer: Pacer,
    len: u64,
    published: bool,
}

impl TempFile {
    fn new(file: File, path: PathBuf, named: bool) -> TempFile {
        TempFile {
            file,
            path,
            named,
            hasher: Feed::new(Sha256::new()),
            pacer: Pacer::new(0),
            len: 0,
            published: false,
        }
    }

    /// Appends `buf`, hashing it. ENOSPC is `Error::DiskFull`.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), Error> {
        self.file.write_all(buf)?;
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        self.pacer.wrote(&self.file, self.len);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before the first byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Syncs the bytes and publishes them as `name` (see [`Store::publish_file`]).
    /// On error the temp file is removed.
    pub fn publish(mut self, store: &Store, name: &SafeName) -> Result<Saved, Error> {
        self.file.sync_data()?;
        let sha256 = hex(&self.hasher.finish()?.finalize());
        let src = Source {
            path: &self.path,
            named: self.named,
        };
        let saved = store.publish_synced(src, name, self.len, &sha256, true)?;
        self.published = true;
        Ok(saved)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.named && !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// 32 lowercase hex characters (128 bits) from /dev/urandom; used for temp
/// names and tus ids. Fallback where /dev/urandom cannot be read: std's
/// randomly keyed `RandomState` mixed with the time, a counter and the
/// thread, unique but not suitable as a secret.
pub fn random_id() -> String {
    // Opened once: an open, a read and a close per upload showed up in S3's
    // system calls.
    static URANDOM: OnceLock<Option<File>> = OnceLock::new();
    let mut bytes = [0u8; 16];
    let read = match URANDOM.get_or_init(|| File::open("/dev/urandom").ok()) {
        Some(file) => (&*file).read_exact(&mut bytes),
        None => Err(io::ErrorKind::NotFound.into()),
    };
    if read.is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u64(count);
            hasher.write_u128(nanos);
            hasher.write_usize(i);
            hasher.write(format!("{:?}", std::thread::current().id()).as_bytes());
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    hex(&bytes)
}

/// Lowercase hex of `bytes` (sha256 digests, ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// What is being published: a path, and whether it is a name of its own to
/// remove afterwards (not for an anonymous temp's `/proc/self/fd` path).
#[derive(Clone, Copy)]
struct Source<'a> {
    path: &'a Path,
    named: bool,
}

/// A file in `dir` with no name (`O_TMPFILE`): it never shows up in a
/// folder, needs no removal, and vanishes by itself if the process dies.
fn open_anonymous(dir: &Path) -> io::Result<File> {
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::from_bits_truncate(0o666))?;
    Ok(File::from(fd))
}

/// The path that names an open file, for `linkat` to follow.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// `link(src, dst)` that follows `src` if it is a link (the
/// `/proc/self/fd` path of an anonymous temp); never replaces `dst`.
fn link_following(src: &Path, dst: &Path) -> io::Result<()> {
    rustix::fs::linkat(CWD, src, CWD, dst, AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

/// True when an anonymous file can be made in `tmp` and linked to a name:
/// `O_TMPFILE` support (ext4, xfs, btrfs, tmpfs; not FAT) and a `/proc`.
fn anonymous_temps_work(tmp: &Path) -> bool {
    let Ok(file) = open_anonymous(tmp) else {
        return false;
    };
    let name = tmp.join(format!("probe-{}", random_id()));
    let linked = link_following(&fd_path(&file), &name).is_ok();
    let _ = fs::remove_file(&name);
    linked
}

/// Some(for good) when `link` failed because the file system has no hard
/// links (FAT, exFAT: EPERM; others: ENOTSUP, ENOSYS) or not across these
/// folders (EXDEV, a mount inside DIR: only this once); None for real errors.
fn no_hard_links(e: &io::Error) -> Option<bool> {
    use rustix::io::Errno;
    if e.kind() == io::ErrorKind::Unsupported {
        return Some(true);
    }
    match Errno::from_io_error(e)? {
        Errno::PERM | Errno::OPNOTSUPP | Errno::NOSYS => Some(true),
        Errno::XDEV => Some(false),
        _ => None,
    }
}

/// Opens for reading without following a symlink at the last component.
fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // OFlags bits are a small positive C int; the cast cannot truncate.
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

/// Creates `dir` if missing; an existing entry must be a real folder.
fn make_real_dir(dir: &Path) -> Result<(), Error> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                Err(Error::Io(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a folder", dir.display()),
                )))
            }
        }
        Err(e) => Err(context(e, "create", dir)),
    }
}

/// Removes what an earlier run left in DIR/.tinydrop/tmp.
fn remove_stale(tmp: &Path) {
    let entries = match fs::read_dir(tmp) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("could not list {} to clean it: {e}", tmp.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        if let Err(e) = removed {
            log::warn!(
                "could not remove stale temporary file {}: {e}",
                path.display()
            );
        }
    }
}

/// An io error that names what was being done and where, for start-up.
fn context(e: io::Error, doing: &str, path: &Path) -> Error {
    Error::Io(io::Error::new(
        e.kind(),
        format!("cannot {doing} {}: {e}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BodyError;
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// A fresh folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let path = std::env::temp_dir().join(format!("tinydrop-test-{}", random_id()));
            fs::create_dir_all(&path).expect("create test dir");
            TempDir(path)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn name(s: &str) -> SafeName {
        SafeName::parse(s).expect("a safe name")
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn save(store: &Store, to: &str, bytes: &[u8]) -> Saved {
        store
            .save(&name(to), &mut &bytes[..], u64::MAX)
            .expect("saved")
    }

    fn temps(store: &Store) -> usize {
        fs::read_dir(&store.tmp).expect("tmp dir").count()
    }

    fn paths(store: &Store) -> Vec<String> {
        store
            .list()
            .expect("list")
            .into_iter()
            .map(|l| l.path)
            .collect()
    }

    /// Gives the bytes a few at a time, then fails (or ends) as told.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        then: Option<BodyError>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return match self.then.take() {
                    Some(e) => Err(e.into_io()),
                    None => Ok(0),
                };
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_saved_file_reads_back_byte_for_byte_in_nested_folders() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let bytes = pattern(3 * BUFFER_SIZE + 17, 1);
        let saved = save(&store, "a/b/c/d.bin", &bytes);
        assert_eq!(saved.saved_as, "a/b/c/d.bin");
        assert_eq!(saved.size, bytes.len() as u64);
        assert!(!saved.duplicate);
        let back = fs::read(dir.path().join("a/b/c/d.bin")).expect("read back");
        assert_eq!(back, bytes);
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn the_sha256_matches_sha2_at_every_buffer_edge_and_read_size() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let sizes = [0, 1, 63, BUFFER_SIZE - 1, BUFFER_SIZE, BUFFER_SIZE + 1];
        for (i, &len) in sizes.iter().enumerate() {
            for step in [1usize, 7, 4096, BUFFER_SIZE * 2] {
                if step == 1 && len > 4096 {
                    continue;
                }
                let bytes = pattern(len, i as u8 + step as u8);
                let mut body = Trickle {
                    data: bytes.clone(),
                    at: 0,
                    step,
                    then: None,
                };
                let to = format!("f{i}-{step}.bin");
                let saved = store.save(&name(&to), &mut body, u64::MAX).expect("saved");
                assert_eq!(saved.sha256, sha(&bytes), "{len} bytes by {step}");
                assert_eq!(saved.size, len as u64);
                assert_eq!(fs::read(dir.path().join(&to)).expect("read"), bytes);
            }
        }
    }

    #[test]
    fn a_taken_name_gets_numbered_versions_before_the_extension() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(save(&store, "a.txt", b"one").saved_as, "a.txt");
        assert_eq!(save(&store, "a.txt", b"two").saved_as, "a (1).txt");
        assert_eq!(save(&store, "a.txt", b"three").saved_as, "a (2).txt");
        assert_eq!(save(&store, "d/a.tar.gz", b"1").saved_as, "d/a.tar.gz");
        assert_eq!(save(&store, "d/a.tar.gz", b"2").saved_as, "d/a (1).tar.gz");
        assert_eq!(save(&store, "d/a.tar.gz", b"3").saved_as, "d/a (2).tar.gz");
        assert_eq!(
            fs::read(dir.path().join("a (1).txt")).expect("read"),
            b"two"
        );
        assert_eq!(fs::read(dir.path().join("a.txt")).expect("read"), b"one");
    }

    #[test]
    fn the_same_bytes_again_are_a_duplicate_and_write_nothing() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let first = save(&store, "a.txt", b"hello");
        let again = save(&store, "a.txt", b"hello");
        assert!(again.duplicate);
        assert_eq!(again.saved_as, "a.txt");
        assert_eq!(again.sha256, first.sha256);
        assert_eq!(paths(&store), ["a.txt"]);
        // Same size, other bytes: a new version.
        let other = save(&store, "a.txt", b"HELLO");
        assert!(!other.duplicate);
        assert_eq!(other.saved_as, "a (1).txt");
        // The bytes of a version are a duplicate of that version.
        let again = save(&store, "a.txt", b"HELLO");
        assert!(again.duplicate);
        assert_eq!(again.saved_as, "a (1).txt");
        assert_eq!(paths(&store), ["a (1).txt", "a.txt"]);
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn empty_files_are_saved_and_found_as_duplicates() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let saved = save(&store, "empty", b"");
        assert_eq!(saved.sha256, sha(b""));
        assert!(!saved.duplicate);
        assert!(save(&store, "empty", b"").duplicate);
        assert_eq!(paths(&store), ["empty"]);
    }

    #[test]
    fn a_file_stored_before_start_is_hashed_from_disk_for_the_duplicate_check() {
        let dir = TempDir::new();
        fs::write(dir.path().join("old.txt"), b"from before").expect("write");
        let store = Store::open(dir.path()).expect("open");
        let again = save(&store, "old.txt", b"from before");
        assert!(again.duplicate);
        assert_eq!(again.saved_as, "old.txt");
    }

    #[test]
    fn a_file_changed_behind_the_cache_is_hashed_again() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        save(&store, "c.txt", b"xxxx");
        let path = dir.path().join("c.txt");
        fs::write(&path, b"yyyy").expect("rewrite");
        let file = File::options().write(true).open(&path).expect("open");
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
            .expect("set mtime");
        drop(file);
        let saved = save(&store, "c.txt", b"xxxx");
        assert!(!saved.duplicate, "the cache must not trust a changed file");
        assert_eq!(saved.saved_as, "c (1).txt");
        assert!(save(&store, "c.txt", b"yyyy").duplicate);
    }

    fn race(store: Arc<Store>, inputs: Vec<Vec<u8>>, serialize: bool) -> Vec<Saved> {
        let barrier = Arc::new(Barrier::new(inputs.len()));
        let threads: Vec<_> = inputs
            .into_iter()
            .map(|bytes| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut temp = store.begin().expect("begin");
                    temp.write_all(&bytes).expect("write");
                    temp.file.sync_data().expect("sync");
                    let digest = sha(&bytes);
                    barrier.wait();
                    let saved = store
                        .publish_synced(
                            Source {
                                path: &temp.path,
                                named: temp.named,
                            },
                            &name("race/same.bin"),
                            temp.len,
                            &digest,
                            serialize,
                        )
                        .expect("published");
                    temp.published = true;
                    saved
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    }

    fn distinct_inputs() -> Vec<Vec<u8>> {
        // Same size, so every walk has to compare hashes.
        (0..24).map(|i| pattern(100_000, i)).collect()
    }

    fn check_distinct(dir: &Path, store: &Store, inputs: &[Vec<u8>], saved: &[Saved]) {
        let names: HashSet<_> = saved.iter().map(|s| s.saved_as.clone()).collect();
        assert_eq!(names.len(), inputs.len(), "{saved:?}");
        assert!(saved.iter().all(|s| !s.duplicate));
        let mut stored: Vec<Vec<u8>> = paths(store)
            .iter()
            .map(|p| fs::read(dir.join(p)).expect("read"))
            .collect();
        let mut expected = inputs.to_vec();
        stored.sort();
        expected.sort();
        assert!(
            stored == expected,
            "every file complete and one of the inputs"
        );
        for s in saved {
            let bytes = fs::read(dir.join(&s.saved_as)).expect("read");
            assert_eq!(
                sha(&bytes),
                s.sha256,
                "{} holds what was reported",
                s.saved_as
            );
        }
        assert_eq!(temps(store), 0);
    }

    #[test]
    fn twenty_four_threads_saving_different_bytes_under_one_name_keep_all_24() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(dir.path()).expect("open"));
        let inputs = distinct_inputs();
        let saved = race(Arc::clone(&store), inputs.clone(), true);
        check_distinct(dir.path(), &store, &inputs, &saved);
    }

    #[test]
    fn no_clobber_holds_without_the_lock() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(dir.path()).expect("open"));
        let inputs = distinct_inputs();
        let saved = race(Arc::clone(&store), inputs.clone(), false);
        check_distinct(dir.path(), &store, &inputs, &saved);
    }

    #[test]
    fn no_clobber_holds_without_hard_links() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(dir.path()).expect("open").without_hard_links());
        let inputs = distinct_inputs();
        let saved = race(Arc::clone(&store), inputs.clone(), true);
        check_distinct(dir.path(), &store, &inputs, &saved);
    }

    #[test]
    fn twenty_four_threads_saving_identical_bytes_store_exactly_one_file() {
        for hard_links in [true, false] {
            let dir = TempDir::new();
            let mut store = Store::open(dir.path()).expect("open");
            if !hard_links {
                store = store.without_hard_links();
            }
            let store = Arc::new(store);
            let bytes = pattern(50_000, 9);
            let saved = race(Arc::clone(&store), vec![bytes.clone(); 24], true);
            assert_eq!(paths(&store), ["race/same.bin"]);
            assert_eq!(saved.iter().filter(|s| !s.duplicate).count(), 1);
            assert!(saved.iter().all(|s| s.saved_as == "race/same.bin"));
            assert_eq!(
                fs::read(dir.path().join("race/same.bin")).expect("read"),
                bytes
            );
            assert_eq!(temps(&store), 0);
        }
    }

    #[test]
    fn saves_through_the_fallback_without_hard_links() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open").without_hard_links();
        assert_eq!(save(&store, "a.txt", b"one").saved_as, "a.txt");
        assert_eq!(save(&store, "a.txt", b"two").saved_as, "a (1).txt");
        assert!(save(&store, "a.txt", b"two").duplicate);
        assert_eq!(
            fs::read(dir.path().join("a (1).txt")).expect("read"),
            b"two"
        );
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn a_body_over_the_limit_is_too_large_and_leaves_nothing() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let bytes = pattern(1000, 3);
        let err = store
            .save(&name("big.bin"), &mut &bytes[..], 999)
            .expect_err("too large");
        assert!(matches!(err, Error::TooLarge { limit: 999 }), "{err:?}");
        assert_eq!(temps(&store), 0);
        assert!(paths(&store).is_empty());
        // Exactly the limit is fine.
        let saved = store
            .save(&name("big.bin"), &mut &bytes[..], 1000)
            .expect("saved");
        assert_eq!(saved.size, 1000);
    }

    #[test]
    fn a_body_that_fails_midway_leaves_no_temp_and_no_file() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let cases = [
            (BodyError::Cut, 400),
            (BodyError::TooLarge { limit: 10 }, 413),
            (BodyError::Malformed("bad chunk size".to_string()), 400),
        ];
        for (cause, status) in cases {
            let mut body = Trickle {
                data: pattern(BUFFER_SIZE + 5, 4),
                at: 0,
                step: 5000,
                then: Some(cause),
            };
            let err = store
                .save(&name("cut/off.bin"), &mut body, u64::MAX)
                .expect_err("cut");
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(temps(&store), 0);
            assert!(paths(&store).is_empty());
        }
        let mut body = Trickle {
            data: vec![1; 10],
            at: 0,
            step: 3,
            then: Some(BodyError::Cut),
        };
        let err = store
            .save(&name("cut.bin"), &mut body, u64::MAX)
            .expect_err("cut");
        assert!(matches!(err, Error::BodyCut), "{err:?}");
    }

    #[test]
    fn a_dropped_temp_file_is_removed() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open").with_named_temps();
        let mut temp = store.begin().expect("begin");
        temp.write_all(b"partial").expect("write");
        assert_eq!(temp.len(), 7);
        assert_eq!(temps(&store), 1);
        drop(temp);
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn an_anonymous_temp_file_is_never_seen_and_publishes_like_a_named_one() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        if !store.anonymous_temps {
            eprintln!(
                "skipped: no O_TMPFILE or no /proc for {}",
                dir.path().display()
            );
            return;
        }
        let mut temp = store.begin().expect("begin");
        assert!(!temp.named);
        temp.write_all(b"partial").expect("write");
        assert_eq!(temps(&store), 0, "an anonymous temp has no name");
        drop(temp);
        assert_eq!(temps(&store), 0);
        assert!(paths(&store).is_empty());
        // Published twice: a file, then a duplicate; a third with other bytes
        // takes the next version.
        assert!(!save(&store, "a/x.bin", b"bytes").duplicate);
        assert!(save(&store, "a/x.bin", b"bytes").duplicate);
        assert_eq!(save(&store, "a/x.bin", b"other").saved_as, "a/x (1).bin");
        assert_eq!(
            fs::read(dir.path().join("a/x.bin")).expect("read"),
            b"bytes"
        );
        assert_eq!(temps(&store), 0);
        // Its permissions are a normal file's (0666 less the umask), not 0600.
        let mode = fs::metadata(dir.path().join("a/x.bin"))
            .expect("meta")
            .permissions();
        let named = {
            let p = dir.path().join("named");
            fs::write(&p, b"").expect("write");
            fs::metadata(&p).expect("meta").permissions()
        };
        assert_eq!(mode, named);
    }

    #[test]
    fn a_symlinked_folder_inside_dir_is_never_followed_out() {
        let dir = TempDir::new();
        let elsewhere = TempDir::new();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("out")).expect("symlink");
        let store = Store::open(dir.path()).expect("open");
        for to in ["out/x.txt", "out/deeper/x.txt"] {
            let err = store
                .save(&name(to), &mut &b"escape"[..], u64::MAX)
                .expect_err("refused");
            assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        }
        assert_eq!(fs::read_dir(elsewhere.path()).expect("list").count(), 0);
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn a_symlink_at_the_final_name_counts_as_taken_and_is_not_written_through() {
        let dir = TempDir::new();
        let elsewhere = TempDir::new();
        let target = elsewhere.path().join("target.txt");
        std::os::unix::fs::symlink(&target, dir.path().join("link.txt")).expect("symlink");
        fs::write(elsewhere.path().join("same.txt"), b"same").expect("write");
        std::os::unix::fs::symlink(
            elsewhere.path().join("same.txt"),
            dir.path().join("same.txt"),
        )
        .expect("symlink");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(save(&store, "link.txt", b"data").saved_as, "link (1).txt");
        assert!(
            !target.exists(),
            "nothing written through the dangling link"
        );
        let saved = save(&store, "same.txt", b"same");
        assert!(!saved.duplicate, "a symlink is not a stored file");
        assert_eq!(saved.saved_as, "same (1).txt");
    }

    #[test]
    fn a_file_or_folder_in_the_way() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        save(&store, "a", b"a file");
        let err = store
            .save(&name("a/b.txt"), &mut &b"x"[..], u64::MAX)
            .expect_err("refused");
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "`a` already exists and is not a folder, so `a/b.txt` cannot be saved."
        );
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        assert_eq!(save(&store, "d", b"x").saved_as, "d (1)");
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn too_many_versions_is_a_conflict() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        File::create(dir.path().join("v.txt")).expect("create");
        for n in 1..MAX_VERSIONS {
            File::create(dir.path().join(version_name("v.txt", n))).expect("create");
        }
        let err = store
            .save(&name("v.txt"), &mut &b"x"[..], u64::MAX)
            .expect_err("no room");
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(temps(&store), 0);
    }

    #[test]
    fn open_creates_the_folders_and_removes_stale_temps_but_keeps_tus() {
        let dir = TempDir::new();
        let root = dir.path().join("new/uploads");
        let store = Store::open(&root).expect("open");
        assert!(store.tus_dir().is_dir());
        assert!(root.join(".tinydrop/tmp").is_dir());
        drop(store);
        fs::write(root.join(".tinydrop/tmp/stale"), b"cut off").expect("write");
        fs::create_dir(root.join(".tinydrop/tmp/odd")).expect("mkdir");
        fs::write(root.join(".tinydrop/tus/abc"), b"partial").expect("write");
        let store = Store::open(&root).expect("open");
        assert_eq!(temps(&store), 0);
        assert!(root.join(".tinydrop/tus/abc").exists());
        assert!(store.root().is_absolute());
    }

    #[test]
    fn open_refuses_a_folder_it_cannot_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let root = dir.path().join("ro");
        fs::create_dir(&root).expect("mkdir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o555)).expect("chmod");
        if File::create(root.join("probe")).is_ok() {
            // Root ignores permissions: nothing to check here.
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
            return;
        }
        let err = Store::open(&root).err().expect("refused");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let Error::Io(e) = &err else {
            panic!("an io error, got {err:?}")
        };
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            err.to_string().contains(&root.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn open_refuses_a_file_where_the_private_folder_should_be() {
        let dir = TempDir::new();
        fs::write(dir.path().join(".tinydrop"), b"x").expect("write");
        let err = Store::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("not a folder"), "{err}");
    }

    #[test]
    fn the_listing_is_sorted_recursive_and_hides_private_files_and_symlinks() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        save(&store, "b.txt", b"b");
        save(&store, "a/z.txt", b"z");
        save(&store, "a/b/c.txt", b"cc");
        save(&store, "a.txt", b"a");
        fs::create_dir(dir.path().join("empty")).expect("mkdir");
        std::os::unix::fs::symlink(dir.path().join("b.txt"), dir.path().join("link.txt"))
            .expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("linkdir"))
            .expect("symlink");
        let _temp = store.begin().expect("begin");
        fs::write(store.tus_dir().join("x"), b"partial").expect("write");
        let listed = store.list().expect("list");
        let got: Vec<_> = listed.iter().map(|l| (l.path.as_str(), l.size)).collect();
        assert_eq!(
            got,
            [("a.txt", 1), ("a/b/c.txt", 2), ("a/z.txt", 1), ("b.txt", 1)]
        );
        assert!(listed.iter().all(|l| l.modified > UNIX_EPOCH));
    }

    #[test]
    fn publish_file_moves_a_complete_file_in_and_checks_its_size() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        let src = store.tus_dir().join("upload");
        fs::write(&src, b"resumed bytes").expect("write");
        let err = store
            .publish_file(&src, &name("r.txt"), 99, &sha(b"resumed bytes"))
            .expect_err("size mismatch");
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
        assert!(src.exists(), "the caller's file is kept on error");
        let digest = sha(b"resumed bytes").to_ascii_uppercase();
        let saved = store
            .publish_file(&src, &name("r.txt"), 13, &digest)
            .expect("published");
        assert_eq!(saved.saved_as, "r.txt");
        assert_eq!(saved.sha256, sha(b"resumed bytes"));
        assert!(!src.exists());
        assert_eq!(
            fs::read(dir.path().join("r.txt")).expect("read"),
            b"resumed bytes"
        );
    }

    #[test]
    fn free_space_is_known_and_an_impossible_size_is_disk_full() {
        let dir = TempDir::new();
        let store = Store::open(dir.path()).expect("open");
        assert!(store.free_space().is_some_and(|free| free > 0));
        assert!(matches!(store.check_room(u64::MAX), Err(Error::DiskFull)));
        assert!(store.check_room(1).is_ok());
    }

    #[test]
    fn random_ids_are_32_hex_characters_and_differ() {
        let ids: HashSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    }

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Store>();
    }
}
