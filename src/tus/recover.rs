//! Start-up recovery: what a previous run left in the tus directory becomes
//! live uploads and finished records again, or is removed (the rules are in
//! [`Tus::open`] and in the module docs of [`crate::tus`]).

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{is_valid_id, remove_logged, Done, Entry, Meta, State, Tus};
use crate::error::Error;

impl Tus {
    /// Start-up: see [`Tus::open`]. One broken upload is logged and skipped,
    /// it does not stop the server.
    pub(super) fn recover(&self) -> Result<(), Error> {
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
                // (see "Crash safety of publishing" in tus/mod.rs).
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
        // move it (see tus/mod.rs); it is complete and unpublished.
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

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::store::BUFFER_SIZE;
    use crate::tus::random_id;
    use crate::tus::testing::*;

    #[test]
    fn reopening_keeps_the_offset_and_finishing_after_gives_the_right_sha256() {
        let dir = TempDir::new("reopen");
        let bytes = pattern(BUFFER_SIZE + 777);
        let len = bytes.len() as u64;
        let id = {
            let tus = dir.open(LONG);
            let id = tus
                .create(len, "x\ny.txt", "filename eAp5LnR4dA==")
                .unwrap();
            append_all(&tus, &id, 0, &bytes[..BUFFER_SIZE + 1]);
            id
        };
        let tus = dir.open(LONG);
        let info = tus.info(&id).unwrap();
        assert_eq!((info.offset, info.length), (BUFFER_SIZE as u64 + 1, len));
        assert_eq!(info.name, "x\ny.txt");
        assert_eq!(info.metadata, "filename eAp5LnR4dA==");
        let (_, done) = append_all(&tus, &id, info.offset, &bytes[BUFFER_SIZE + 1..]);
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
}
