//! Fixtures shared by the unit tests of the tus modules.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{hex, random_id, Completed, Tus};
use crate::error::BodyError;

pub(super) const LONG: Duration = Duration::from_secs(3600);

/// A fresh directory, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(label: &str) -> TempDir {
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

    pub(super) fn tus_dir(&self) -> PathBuf {
        self.0.join(".tinydrop").join("tus")
    }

    pub(super) fn open(&self, expiry: Duration) -> Tus {
        Tus::open(self.tus_dir(), 1 << 20, expiry).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Deterministic test bytes.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Hands out at most `step` bytes per read, then fails with a cut after `cut_at` bytes.
pub(super) struct Trickle {
    data: Vec<u8>,
    pub(super) pos: usize,
    step: usize,
    cut_at: Option<usize>,
}

impl Trickle {
    pub(super) fn new(data: &[u8], step: usize, cut_at: Option<usize>) -> Trickle {
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

pub(super) fn append_all(
    tus: &Tus,
    id: &str,
    offset: u64,
    bytes: &[u8],
) -> (u64, Option<Completed>) {
    tus.append(id, offset, &mut &bytes[..], None).unwrap()
}

pub(super) fn meta_text(tus: &Tus, id: &str) -> String {
    fs::read_to_string(tus.meta_path(id)).unwrap()
}

pub(super) fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// Names of the files in the tus directory, sorted.
pub(super) fn tus_files(dir: &TempDir) -> Vec<String> {
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
pub(super) fn publish_only(dir: &TempDir, done: &Completed) -> PathBuf {
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
pub(super) fn publish(tus: &Tus, dir: &TempDir, done: Completed) -> PathBuf {
    let dest = publish_only(dir, &done);
    let saved_as = dest.file_name().unwrap().to_str().unwrap().to_owned();
    tus.finish(done, &saved_as, false).unwrap();
    dest
}
