//! The two small text files that hold an upload's state: `<id>.meta` while
//! it is in progress and `<id>.done` once it is published (both formats are
//! in the module docs of [`crate::tus`]). Pure text in, text out: writing
//! them to disk atomically is the caller's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Finished, Info};

/// First line of every `.meta` file.
const META_MAGIC: &str = "tinydrop-tus 1";

/// First line of every `.done` file.
const DONE_MAGIC: &str = "tinydrop-tus-done 1";

/// The contents of a `.meta` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) length: u64,
    pub(super) offset: u64,
    pub(super) created: u64,
    pub(super) pending: Option<u64>,
    /// sha256 of a complete upload handed out without a hard link (see the
    /// module docs of [`crate::tus`]).
    pub(super) publishing: Option<String>,
    pub(super) name: String,
    pub(super) metadata: String,
}

impl Meta {
    pub(super) fn to_text(&self) -> String {
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
    pub(super) fn parse(text: &str) -> Option<Meta> {
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

/// A finished upload in memory: what `<id>.done` holds, and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Done {
    pub(super) length: u64,
    pub(super) sha256: String,
    pub(super) saved_as: Option<String>,
    pub(super) duplicate: bool,
    pub(super) name: String,
    pub(super) metadata: String,
    /// The completion: the record's mtime.
    pub(super) at: SystemTime,
}

impl Done {
    pub(super) fn to_text(&self) -> String {
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
    pub(super) fn parse(text: &str) -> Option<Done> {
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

    pub(super) fn info(&self, expiry: Duration) -> Info {
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

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tus::testing::sha256_hex;

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
}
