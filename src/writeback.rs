//! Writeback paced as an upload is written, so that its final `sync_data`
//! waits for the last few MiB, not for the whole file.
//!
//! Left alone, the kernel keeps a big upload's bytes dirty in memory until
//! the final `sync_data`, which then writes the whole file while the client
//! waits (0.6 s for 1 GiB here, half the time the bytes took to arrive).
//! Every [`PACE`] bytes, [`Pacer`] asks the kernel to start writing what
//! came since (`posix_fadvise(DONTNEED)` starts writeback of dirty pages
//! without waiting) and to drop the window before it, written by then, from
//! the page cache: an upload does not push the rest of the machine's files
//! out of memory either. The advice is only advice: an error is ignored, and
//! the final `sync_data` is what makes the bytes durable.

use std::fs::File;
use std::num::NonZeroU64;

use rustix::fs::{fadvise, Advice};

/// Bytes between two nudges.
pub const PACE: u64 = 8 * 1024 * 1024;

/// Tracks how far writeback was started in one file.
#[derive(Debug)]
pub struct Pacer {
    /// The file offset at which the next nudge is due.
    next: u64,
}

impl Pacer {
    /// A pacer for writes starting at file offset `at`.
    pub fn new(at: u64) -> Pacer {
        Pacer { next: at + PACE }
    }

    /// Called after each write, with the file offset the write ended at.
    pub fn wrote(&mut self, file: &File, end: u64) {
        if end < self.next {
            return;
        }
        self.next = end + PACE;
        let from = end.saturating_sub(2 * PACE);
        if let Some(len) = NonZeroU64::new(end - from) {
            if let Err(e) = fadvise(file, from, Some(len), Advice::DontNeed) {
                log::trace!("writeback advice failed: {e}");
            }
        }
    }
}
