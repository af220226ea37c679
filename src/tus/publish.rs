//! Completion: handing a complete upload out to be published, and
//! recording it as finished once the store has published it (see "Crash
//! safety of publishing" in the module docs of [`crate::tus`]).

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use sha2::Digest;

use super::{hex, meta_of, remove_if_there, remove_logged, Busy, Done, Entry, Tus};
use crate::error::Error;

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
    pub(super) link: Option<PathBuf>,
    busy: Busy,
}

impl Drop for Completed {
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            remove_logged(link);
        }
    }
}

impl Tus {
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

    pub(super) fn completion(&self, busy: Busy, data: &mut File) -> Result<Completed, Error> {
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
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::tus::testing::*;
    use crate::tus::Finished;

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
}
