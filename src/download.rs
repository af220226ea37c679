//! Serving a stored file: content type, validators and single byte ranges.
//!
//! # Security
//!
//! A stored file must never run as part of tinydrop's own origin: types a
//! browser would execute or render as a document (HTML, SVG, XML,
//! JavaScript) are sent as attachments, with `nosniff` on every response and
//! a sandboxing Content-Security-Policy on every download.

use std::fs::{File, Metadata};
use std::io::{Seek, SeekFrom};
use std::time::UNIX_EPOCH;

use crate::clock;
use crate::error::Error;
use crate::http::response::{Payload, Response};

/// What a `Range` header asks of a file of a known length.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable range: send the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of the file can be sent (416).
    Unsatisfiable,
}

/// Parses a single `bytes=` range (RFC 9110, 14.1.2). Several ranges, other
/// units and malformed values are ignored (the whole file is sent), as the
/// RFC allows.
pub fn parse_range(header: Option<&str>, len: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => Range::Unsatisfiable,
            Some(_) if len == 0 => Range::Unsatisfiable,
            Some(n) => Range::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Range::Whole,
        },
        // bytes=A- : from A to the end.
        (false, true) => match number(first) {
            Some(a) if a < len => Range::Part {
                start: a,
                end: len - 1,
            },
            Some(_) => Range::Unsatisfiable,
            None => Range::Whole,
        },
        // bytes=A-B
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b && a < len => Range::Part {
                start: a,
                end: b.min(len - 1),
            },
            (Some(a), Some(b)) if a <= b => Range::Unsatisfiable,
            _ => Range::Whole,
        },
        (true, true) => Range::Whole,
    }
}

/// Whether a type would run or render as a page if shown inline.
fn is_active(mime: &str) -> bool {
    let m = mime.to_ascii_lowercase();
    m.starts_with("text/html")
        || m.contains("xml")
        || m.contains("javascript")
        || m.contains("ecmascript")
        || m.starts_with("image/svg")
        || m.starts_with("application/xhtml")
        || m.starts_with("text/xsl")
}

/// The response for stored file `name` opened as `file`.
pub fn respond(
    name: &str,
    mut file: File,
    meta: &Metadata,
    range: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Response, Error> {
    let len = meta.len();
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let mtime = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{len:x}-{mtime:x}\"");
    let mime = mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_string();
    let file_name = name.rsplit('/').next().unwrap_or(name);
    let disposition = if is_active(&mime) {
        "attachment"
    } else {
        "inline"
    };

    let mut resp = Response::empty(200)
        .with_header("Content-Type", mime.clone())
        .with_header("Last-Modified", clock::http_date(modified))
        .with_header("ETag", etag.clone())
        .with_header("Accept-Ranges", "bytes")
        .with_header(
            "Content-Disposition",
            format!(
                "{disposition}; filename*=UTF-8''{}",
                encode_rfc5987(file_name)
            ),
        )
        .with_header("Content-Security-Policy", "default-src 'none'; sandbox")
        .with_header("Cache-Control", "no-cache");

    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        resp.status = 304;
        return Ok(resp);
    }
    match parse_range(range, len) {
        Range::Whole => Ok(resp.with_payload(Payload::File(file, len))),
        Range::Part { start, end } => {
            file.seek(SeekFrom::Start(start))?;
            resp.status = 206;
            Ok(resp
                .with_header("Content-Range", format!("bytes {start}-{end}/{len}"))
                .with_payload(Payload::File(file, end - start + 1)))
        }
        Range::Unsatisfiable => Ok(Response::error(
            &Error::RangeNotSatisfiable(format!(
                "The file has {len} bytes; that range is outside it."
            )),
            None,
        )
        .with_header("Content-Range", format!("bytes */{len}"))),
    }
}

/// RFC 5987 `value-chars`: attr-char kept, every other byte `%XX`.
fn encode_rfc5987(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_first_last_suffix_and_beyond() {
        let part = |start, end| Range::Part { start, end };
        for (header, expected) in [
            (None, Range::Whole),
            (Some("bytes=0-0"), part(0, 0)),
            (Some("bytes=99-99"), part(99, 99)),
            (Some("bytes=-1"), part(99, 99)),
            (Some("bytes=-500"), part(0, 99)),
            (Some("bytes=10-"), part(10, 99)),
            (Some("bytes=10-1000"), part(10, 99)),
            (Some("bytes=100-"), Range::Unsatisfiable),
            (Some("bytes=100-200"), Range::Unsatisfiable),
            (Some("bytes=-0"), Range::Unsatisfiable),
            (Some("bytes=5-1"), Range::Whole),
            (Some("bytes=0-1,5-6"), Range::Whole),
            (Some("items=0-1"), Range::Whole),
            (Some("bytes=x-1"), Range::Whole),
        ] {
            assert_eq!(parse_range(header, 100), expected, "{header:?}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Range::Unsatisfiable);
    }

    #[test]
    fn documents_and_scripts_are_active_types() {
        for m in [
            "text/html",
            "image/svg+xml",
            "application/xml",
            "text/javascript",
            "application/xhtml+xml",
        ] {
            assert!(is_active(m), "{m}");
        }
        for m in ["text/plain", "image/png", "application/pdf", "video/mp4"] {
            assert!(!is_active(m), "{m}");
        }
    }

    #[test]
    fn rfc5987_encoding_escapes_spaces_quotes_and_unicode() {
        assert_eq!(encode_rfc5987("a b\"é.txt"), "a%20b%22%C3%A9.txt");
    }
}
