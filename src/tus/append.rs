//! PATCH: appending a body to an upload at its offset, in buffer-sized
//! writes, with the running sha256 of the whole file and the optional
//! checksum of the body (tus checksum extension).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{meta_of, Completed, Entry, Running, Tus};
use crate::error::Error;
use crate::hashing::Feed;
use crate::writeback::Pacer;

/// One PATCH reads into and writes from one buffer of the store's size (one
/// write per buffer, allocated per call).
use crate::store::BUFFER_SIZE;

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

    /// The sha256 of the first `offset` bytes: the one kept in memory, or
    /// (after a restart, a panic, a lost hasher) read once more from disk.
    pub(super) fn running_hash(
        &self,
        entry: &Entry,
        data: &mut File,
        offset: u64,
    ) -> Result<Running, Error> {
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
    let mut buf = vec![0u8; BUFFER_SIZE];
    loop {
        let want = (room - *written).min(BUFFER_SIZE as u64) as usize;
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
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut left = len;
    while left > 0 {
        let want = left.min(BUFFER_SIZE as u64) as usize;
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::tus::testing::*;

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

    // ---- cuts, full disks ----

    #[test]
    fn bytes_before_a_cut_are_kept_and_the_next_append_continues() {
        let dir = TempDir::new("cut");
        let tus = dir.open(LONG);
        let bytes = pattern(2 * BUFFER_SIZE + 5000);
        let len = bytes.len() as u64;
        let id = tus.create(len, "a", "").unwrap();
        let cut_at = BUFFER_SIZE + 1234;
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
        assert_eq!(offset % BUFFER_SIZE as u64, 0);
        assert_eq!(fs::metadata(tus.data_path(&id)).unwrap().len(), offset);
        let on_disk = fs::read(tus.data_path(&id)).unwrap();
        assert_eq!(on_disk[..], bytes[..offset as usize]);
        // Still usable: a small PATCH fits, with the right hash continuing.
        let (next, _) = append_all(&tus, &id, offset, &bytes[offset as usize..][..10]);
        assert_eq!(next, offset + 10);
        tus.terminate(&id).unwrap();
    }
}
