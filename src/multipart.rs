//! Streaming `multipart/form-data` parser over any [`Read`].
//!
//! The upload route hands the request body (already limited in size and
//! time by the HTTP layer) to a [`Multipart`] and walks the parts:
//!
//! ```
//! use std::io::Cursor;
//! use tinydrop::multipart::{boundary_from_content_type, Multipart};
//!
//! # fn main() -> Result<(), tinydrop::error::Error> {
//! let boundary = boundary_from_content_type("multipart/form-data; boundary=xyz")?;
//! let body = "--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nhello\r\n--xyz--\r\n";
//! let mut form = Multipart::new(Cursor::new(body), &boundary);
//! while let Some(head) = form.next_part()? {
//!     if head.filename.is_none() {
//!         continue; // next_part() skips the unread rest of this part
//!     }
//!     let mut saved = Vec::new(); // in the server: a temp file
//!     while let Some(chunk) = form.read_data()? {
//!         saved.extend_from_slice(chunk);
//!     }
//!     // read_data() said Ok(None): the part is complete, commit it.
//!     assert_eq!(saved, b"hello");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # API
//!
//! - [`boundary_from_content_type`]`(&str) -> Result<String, Error>`
//! - [`Multipart::new`]`(reader, boundary) -> Multipart<R>`
//! - [`Multipart::next_part`]`() -> Result<Option<PartHead>, Error>`: skips
//!   the unread rest of the current part; `Ok(None)` after the final boundary.
//! - [`Multipart::read_data`]`() -> Result<Option<&[u8]>, Error>`: the next
//!   slice (never empty, at most [`BUFFER_SIZE`]) of the current part;
//!   `Ok(None)` once the part ended.
//! - [`Multipart::read_field_to_string`]`(max) -> Result<String, Error>`
//! - [`Multipart::into_inner`]`() -> R`
//!
//! # Guarantees
//!
//! - One buffer of [`BUFFER_SIZE`] bytes, allocated in `new`; nothing grows
//!   with the size of a part. Part data is lent out of that buffer; only the
//!   last few bytes that could be the start of a delimiter are held back.
//! - The end of a part (`read_data() == Ok(None)`) is reported only after the
//!   delimiter `\r\n--boundary` *and* what follows it (`--` for the last
//!   part, or optional transport padding and CRLF before the next part) have
//!   been read and checked. A body cut anywhere before that is an error, never
//!   a clean end of a part. The delimiter's CRLF is never part of the data.
//! - An EOF from the inner reader before the final boundary is
//!   [`Error::BodyCut`]; an `io::Error` from the inner reader goes through
//!   `Error::from`, so a [`crate::error::BodyError`] it carries keeps its
//!   meaning (`TooLarge`, `Cut`, ...), and a time-out stays a time-out.
//! - After any error, every later call fails too.
//! - Nothing panics on any input.
//!
//! # Decisions
//!
//! - **Line endings**: delimiters and part headers need CRLF, as RFC 2046 and
//!   every browser do. A body with bare LF line endings is rejected
//!   ([`Error::BadRequest`], or [`Error::BodyCut`] when no CRLF delimiter is
//!   ever found before the end of the body).
//! - **Missing `Content-Disposition`**: a part without one, with a second one,
//!   or with a type other than `form-data` is a [`Error::BadRequest`]
//!   (RFC 7578 makes it mandatory, and every client sends it).
//! - **Invalid UTF-8** in a name, file name, content type or text field is
//!   decoded lossily (U+FFFD), so the file is still saved; the name rules of
//!   `names.rs` decide what is acceptable as a stored name.
//! - **A delimiter followed by anything else** (`\r\n--boundaryX`) is a
//!   [`Error::BadRequest`]: RFC 2046 forbids the boundary inside a part, and
//!   guessing would let two parsers disagree about where a file ends.
//! - **Everything after the final boundary** (epilogue) is not read.
//! - **Caps**: part headers [`MAX_HEAD_SIZE`] bytes and [`MAX_HEADERS`] lines,
//!   preamble [`MAX_PREAMBLE`] bytes, transport padding [`MAX_PADDING`]
//!   bytes, boundary [`MAX_BOUNDARY_LEN`] characters; over a cap is a
//!   [`Error::BadRequest`].

use std::io::{self, Read};

use memchr::memmem::{self, Finder};

use crate::error::Error;

/// Size of the one buffer a [`Multipart`] reads into; the largest slice
/// [`Multipart::read_data`] returns. The store's one buffer size, chosen by
/// `make bench`.
pub use crate::store::BUFFER_SIZE;

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_LEN: usize = 70;

/// Largest header block of one part, its closing blank line included.
pub const MAX_HEAD_SIZE: usize = 8 * 1024;

/// Most header lines in one part.
pub const MAX_HEADERS: usize = 16;

/// Most bytes before the first boundary.
pub const MAX_PREAMBLE: usize = 64 * 1024;

/// Most spaces and tabs between a boundary and its CRLF (transport padding).
pub const MAX_PADDING: usize = 1024;

/// What a part's headers say about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHead {
    /// The form field's `name`, if given.
    pub name: Option<String>,
    /// The client's file name: `filename*` (RFC 5987) if given, else
    /// `filename` with the browsers' `%22`, `%0D`, `%0A` escapes decoded.
    /// `None` for a text field. Browsers send `Some("")` (with an empty
    /// body) for a file input where no file was chosen: callers should skip
    /// such a part rather than reject the upload.
    pub filename: Option<String>,
    /// The part's `Content-Type` header as sent, if any.
    pub content_type: Option<String>,
}

/// Where the parser is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// Just after a `--boundary`: `--` or padding and CRLF must follow.
    Boundary,
    /// At the start of a part's headers.
    Head,
    /// Inside a part's data.
    Data,
    /// The final boundary was read.
    Done,
    /// An error was returned; the body cannot be trusted any more.
    Failed,
}

/// A streaming `multipart/form-data` parser; see the [module docs](self).
pub struct Multipart<R> {
    reader: R,
    buf: Box<[u8]>,
    /// `buf[start..end]` holds the bytes read but not yet consumed.
    start: usize,
    end: usize,
    /// `\r\n--boundary`.
    delimiter: Box<[u8]>,
    /// Built once: finds `delimiter`.
    finder: Finder<'static>,
    /// Built once: finds the blank line ending a part's headers.
    head_end: Finder<'static>,
    state: State,
    /// Preamble bytes skipped so far.
    preamble: usize,
    /// Nothing consumed yet: the first boundary may come without its CRLF.
    at_body_start: bool,
}

impl<R> std::fmt::Debug for Multipart<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multipart")
            .field("state", &self.state)
            .field("buffered", &(self.end - self.start))
            .finish_non_exhaustive()
    }
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadRequest(why.into())
}

fn failed() -> Error {
    bad("The upload could not be read any further after an earlier error.")
}

impl<R: Read> Multipart<R> {
    /// A parser for a body whose boundary is `boundary` (as returned by
    /// [`boundary_from_content_type`]). Allocates the buffer; reads nothing.
    pub fn new(reader: R, boundary: &str) -> Multipart<R> {
        let mut delimiter = Vec::with_capacity(boundary.len() + 4);
        delimiter.extend_from_slice(b"\r\n--");
        delimiter.extend_from_slice(boundary.as_bytes());
        let finder = Finder::new(&delimiter).into_owned();
        Multipart {
            reader,
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            delimiter: delimiter.into_boxed_slice(),
            finder,
            head_end: Finder::new(b"\r\n\r\n").into_owned(),
            state: State::Preamble,
            preamble: 0,
            at_body_start: true,
        }
    }

    /// Moves to the next part and returns its headers, first skipping
    /// (reading and dropping) whatever is left of the current part.
    /// `Ok(None)` once the final boundary was read, and on every call after.
    pub fn next_part(&mut self) -> Result<Option<PartHead>, Error> {
        let result = self.next_part_inner();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// The next slice of the current part's data: never empty, at most
    /// [`BUFFER_SIZE`] bytes. `Ok(None)` when the part has ended, which is
    /// said only once the delimiter after it and the bytes that follow the
    /// delimiter were read and checked; also `Ok(None)` when there is no
    /// current part (before the first [`next_part`](Self::next_part)).
    pub fn read_data(&mut self) -> Result<Option<&[u8]>, Error> {
        match self.next_data() {
            Ok(Some((from, to))) => Ok(Some(&self.buf[from..to])),
            Ok(None) => Ok(None),
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// Reads the rest of the current part as text (lossy UTF-8). More than
    /// `max` bytes is a [`Error::BadRequest`]; the parser stays usable after
    /// that one (the next [`next_part`](Self::next_part) skips the rest).
    pub fn read_field_to_string(&mut self, max: usize) -> Result<String, Error> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.read_data()? {
            if chunk.len() > max.saturating_sub(bytes.len()) {
                return Err(bad(format!(
                    "A form field is longer than the {max} bytes allowed."
                )));
            }
            bytes.extend_from_slice(chunk);
        }
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// The inner reader. Bytes already read into the buffer are lost.
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn next_part_inner(&mut self) -> Result<Option<PartHead>, Error> {
        loop {
            match self.state {
                State::Preamble => self.skip_preamble()?,
                State::Boundary => self.finish_boundary()?,
                State::Head => return self.read_head().map(Some),
                State::Data => while self.next_data()?.is_some() {},
                State::Done => return Ok(None),
                State::Failed => return Err(failed()),
            }
        }
    }

    /// The range of `buf` to lend out next, or `None` at the end of the part.
    fn next_data(&mut self) -> Result<Option<(usize, usize)>, Error> {
        match self.state {
            State::Data => {}
            State::Failed => return Err(failed()),
            _ => return Ok(None),
        }
        loop {
            let window = &self.buf[self.start..self.end];
            let take = match self.finder.find(window) {
                Some(0) => {
                    // The part ends here, but only say so once the bytes
                    // after the delimiter are known to be right.
                    self.start += self.delimiter.len();
                    self.state = State::Boundary;
                    self.finish_boundary()?;
                    return Ok(None);
                }
                Some(at) => at,
                None => partial_start(window, &self.delimiter),
            };
            if take > 0 {
                let from = self.start;
                self.start += take;
                return Ok(Some((from, from + take)));
            }
            self.fill()?;
        }
    }

    /// Skips the preamble up to and including the first `--boundary`.
    fn skip_preamble(&mut self) -> Result<(), Error> {
        loop {
            if self.at_body_start {
                // The first boundary may open the body without a CRLF.
                let window = &self.buf[self.start..self.end];
                let dash_boundary = &self.delimiter[2..];
                if window.len() >= dash_boundary.len() {
                    self.at_body_start = false;
                    if window.starts_with(dash_boundary) {
                        self.start += dash_boundary.len();
                        self.state = State::Boundary;
                        return Ok(());
                    }
                } else if dash_boundary.starts_with(window) {
                    self.fill()?;
                    continue;
                } else {
                    self.at_body_start = false;
                }
            }
            let window = &self.buf[self.start..self.end];
            let (skip, found) = match self.finder.find(window) {
                Some(at) => (at, true),
                None => (partial_start(window, &self.delimiter), false),
            };
            // Counted the same however the body was split into reads.
            self.preamble = self.preamble.saturating_add(skip);
            if self.preamble > MAX_PREAMBLE {
                return Err(bad(format!(
                    "The upload does not start with its multipart boundary \
                     (nothing found in the first {} KiB).",
                    MAX_PREAMBLE / 1024
                )));
            }
            self.start += skip;
            if found {
                self.start += self.delimiter.len();
                self.state = State::Boundary;
                return Ok(());
            }
            self.fill()?;
        }
    }

    /// Reads what follows a `--boundary`: `--` (the end of the body), or
    /// transport padding and CRLF (a part follows).
    fn finish_boundary(&mut self) -> Result<(), Error> {
        enum Tail {
            Final,
            Next(usize),
            More,
            Garbage,
            TooMuchPadding,
        }
        loop {
            let window = &self.buf[self.start..self.end];
            let tail = match window {
                [b'-', b'-', ..] => Tail::Final,
                [b'-'] => Tail::More,
                [b'-', ..] => Tail::Garbage,
                _ => {
                    let padding = window
                        .iter()
                        .take(MAX_PADDING + 1)
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    if padding > MAX_PADDING {
                        Tail::TooMuchPadding
                    } else {
                        match window.get(padding..) {
                            Some([b'\r', b'\n', ..]) => Tail::Next(padding + 2),
                            Some([] | [b'\r']) => Tail::More,
                            _ => Tail::Garbage,
                        }
                    }
                }
            };
            match tail {
                Tail::Final => {
                    self.start += 2;
                    self.state = State::Done;
                    return Ok(());
                }
                Tail::Next(len) => {
                    self.start += len;
                    self.state = State::Head;
                    return Ok(());
                }
                Tail::More => self.fill()?,
                Tail::Garbage => {
                    return Err(bad(
                        "A multipart boundary is followed by unexpected bytes \
                         (the boundary must not appear inside a part, and lines end with CRLF).",
                    ))
                }
                Tail::TooMuchPadding => {
                    return Err(bad(
                        "A multipart boundary line has too many trailing spaces.",
                    ))
                }
            }
        }
    }

    /// Reads and parses a part's header block.
    fn read_head(&mut self) -> Result<PartHead, Error> {
        loop {
            let window = &self.buf[self.start..self.end];
            if window.starts_with(b"\r\n") {
                // No headers at all; the data starts after this CRLF.
                let head = parse_part_head(&[]);
                self.start += 2;
                self.state = State::Data;
                return head;
            }
            let searched = window.get(..MAX_HEAD_SIZE).unwrap_or(window);
            if let Some(at) = self.head_end.find(searched) {
                let head = parse_part_head(&window[..at + 2]);
                self.start += at + 4;
                self.state = State::Data;
                return head;
            }
            if window.len() >= MAX_HEAD_SIZE {
                return Err(bad(format!(
                    "The headers of a part of the upload are larger than {} KiB.",
                    MAX_HEAD_SIZE / 1024
                )));
            }
            self.fill()?;
        }
    }

    /// Moves the unconsumed bytes to the front of the buffer and reads once.
    /// EOF is [`Error::BodyCut`]: every caller needs more bytes to go on.
    fn fill(&mut self) -> Result<(), Error> {
        if self.start > 0 {
            // Only the few bytes that could start a delimiter, or an
            // incomplete header block, are ever left here: a cheap copy.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end >= self.buf.len() {
            // Unreachable with a boundary of at most 70 characters; a guard
            // for absurd boundaries given to `new`.
            return Err(bad(
                "The multipart boundary is too long for this server's buffer.",
            ));
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(Error::BodyCut),
                Ok(n) => {
                    self.end = self.end.saturating_add(n).min(self.buf.len());
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e)),
            }
        }
    }
}

/// The index in `window` from which the rest could be the beginning of
/// `delimiter`, cut off by the end of the window; `window.len()` if none.
/// Only called when `delimiter` is not wholly in `window`.
fn partial_start(window: &[u8], delimiter: &[u8]) -> usize {
    let low = window
        .len()
        .saturating_sub(delimiter.len().saturating_sub(1));
    let tail = &window[low..];
    memchr::memchr_iter(b'\r', tail)
        .find(|&i| delimiter.starts_with(&tail[i..]))
        .map_or(window.len(), |i| low + i)
}

/// The boundary of a `multipart/form-data` Content-Type header value.
///
/// The media type and parameter names are case-insensitive, the boundary
/// may be quoted, other parameters are ignored.
pub fn boundary_from_content_type(content_type: &str) -> Result<String, Error> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("multipart/form-data") {
        return Err(Error::UnsupportedMediaType(
            "This upload must be sent as multipart/form-data.".into(),
        ));
    }
    let (_, params) = parse_params(content_type.as_bytes())
        .map_err(|why| bad(format!("The Content-Type header is malformed: {why}.")))?;
    let boundary = params
        .into_iter()
        .find(|(name, _)| name == "boundary")
        .map(|(_, value)| value)
        .unwrap_or_default();
    if boundary.is_empty() {
        return Err(bad("The multipart Content-Type has no boundary."));
    }
    if boundary.len() > MAX_BOUNDARY_LEN {
        return Err(bad(format!(
            "The multipart boundary is longer than {MAX_BOUNDARY_LEN} characters."
        )));
    }
    if !boundary.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad(
            "The multipart boundary contains characters that are not allowed.",
        ));
    }
    Ok(String::from_utf8_lossy(&boundary).into_owned())
}

/// Parses one part's header lines (each ending in CRLF, the blank line not
/// included).
fn parse_part_head(head: &[u8]) -> Result<PartHead, Error> {
    let mut disposition = None;
    let mut content_type = None;
    let mut count = 0;
    let mut rest = head;
    while !rest.is_empty() {
        let (line, after) = match memmem::find(rest, b"\r\n") {
            Some(at) => (&rest[..at], &rest[at + 2..]),
            None => (rest, &[][..]),
        };
        rest = after;
        count += 1;
        if count > MAX_HEADERS {
            return Err(bad(format!(
                "A part of the upload has more than {MAX_HEADERS} headers."
            )));
        }
        let (name, value) = split_header(line)?;
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if disposition.is_some() {
                return Err(bad(
                    "A part of the upload has two Content-Disposition headers.",
                ));
            }
            disposition = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    let Some(disposition) = disposition else {
        return Err(bad(
            "A part of the upload has no Content-Disposition header.",
        ));
    };
    let (name, filename) = parse_disposition(disposition)?;
    Ok(PartHead {
        name,
        filename,
        content_type,
    })
}

/// `Name: value` -> (name, value without surrounding spaces and tabs).
fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad("A part's header contains a stray line break."));
    }
    let Some(colon) = memchr::memchr(b':', line) else {
        return Err(bad("A part's header line has no colon."));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(bad("A part's header has an invalid name."));
    }
    Ok((name, trim(value)))
}

/// Parses `form-data; name="..."; filename="..."` into (name, file name).
fn parse_disposition(value: &[u8]) -> Result<(Option<String>, Option<String>), Error> {
    let (kind, params) = parse_params(value).map_err(|why| {
        bad(format!(
            "A part's Content-Disposition header is malformed: {why}."
        ))
    })?;
    if !kind.eq_ignore_ascii_case(b"form-data") {
        return Err(bad("A part's Content-Disposition is not form-data."));
    }
    let mut name = None;
    let mut filename = None;
    let mut filename_ext = None;
    for (key, value) in params {
        match key.as_str() {
            "name" => name = Some(value),
            "filename" => filename = Some(value),
            "filename*" => filename_ext = Some(value),
            _ => {}
        }
    }
    let filename = match filename_ext {
        Some(ext) => Some(decode_ext_value(&ext)?),
        None => filename.map(|v| decode_browser_escapes(&v)),
    };
    Ok((name.map(|v| decode_browser_escapes(&v)), filename))
}

/// Parameters of a header value: (lower-case name, unquoted value).
type Params = Vec<(String, Vec<u8>)>;

/// Splits `type; a=b; c="d"` into the type and its parameters: names in
/// lower case, values unquoted. A quoted value undoes `\"` and `\\` only (a
/// backslash before anything else is kept: Windows paths stay intact). A
/// parameter given twice is an error.
fn parse_params(value: &[u8]) -> Result<(&[u8], Params), &'static str> {
    let type_end = memchr::memchr(b';', value).unwrap_or(value.len());
    let kind = trim(&value[..type_end]);
    let mut rest = &value[type_end..];
    let mut params: Params = Vec::new();
    loop {
        rest = trim_start(rest);
        let Some((&first, after)) = rest.split_first() else {
            break;
        };
        if first == b';' {
            rest = after;
            continue;
        }
        let name_len = rest
            .iter()
            .position(|&b| b == b'=' || b == b';' || b == b' ' || b == b'\t')
            .unwrap_or(rest.len());
        let name = String::from_utf8_lossy(&rest[..name_len]).to_ascii_lowercase();
        rest = trim_start(&rest[name_len..]);
        match rest.split_first() {
            Some((b'=', after)) => rest = trim_start(after),
            _ => return Err("a parameter has no value"),
        }
        let value = if let Some((b'"', quoted)) = rest.split_first() {
            let (value, after) = unquote(quoted)?;
            rest = trim_start(after);
            if !matches!(rest.first(), None | Some(b';')) {
                return Err("text follows a quoted value");
            }
            value
        } else {
            let len = memchr::memchr(b';', rest).unwrap_or(rest.len());
            let value = trim(&rest[..len]).to_vec();
            rest = &rest[len..];
            value
        };
        if params.iter().any(|(n, _)| *n == name) {
            return Err("a parameter is given twice");
        }
        params.push((name, value));
    }
    Ok((kind, params))
}

/// The content of a quoted string whose opening quote was already read, and
/// what follows its closing quote.
fn unquote(input: &[u8]) -> Result<(Vec<u8>, &[u8]), &'static str> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'"' => return Ok((out, input.get(i + 1..).unwrap_or(&[]))),
            b'\\' => match input.get(i + 1) {
                Some(&next @ (b'"' | b'\\')) => {
                    out.push(next);
                    i += 2;
                }
                _ => {
                    out.push(b'\\');
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err("a quoted value is not closed")
}

/// Undoes the escapes browsers apply to names and file names (WHATWG
/// multipart/form-data encoding): `%22`, `%0D`, `%0A`, any case. Every other
/// `%` stays as it is, so a file really named `100%41.txt` keeps its name.
/// Invalid UTF-8 is replaced (lossy).
fn decode_browser_escapes(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = memchr::memchr(b'%', rest) {
        out.extend_from_slice(&rest[..at]);
        let escaped = match rest.get(at + 1..at + 3) {
            Some(b"22") => Some(b'"'),
            Some(b"0D" | b"0d") => Some(b'\r'),
            Some(b"0A" | b"0a") => Some(b'\n'),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = rest.get(at + 3..).unwrap_or(&[]);
            }
            None => {
                out.push(b'%');
                rest = rest.get(at + 1..).unwrap_or(&[]);
            }
        }
    }
    out.extend_from_slice(rest);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Decodes an RFC 5987 `ext-value`: `charset'language'percent-encoded`.
/// UTF-8 (lossy) and ISO-8859-1 are understood, in any case.
fn decode_ext_value(value: &[u8]) -> Result<String, Error> {
    let malformed = || bad("A part's filename* parameter is malformed.");
    let mut pieces = value.splitn(3, |&b| b == b'\'');
    let charset = pieces.next().unwrap_or(&[]);
    let _language = pieces.next().ok_or_else(malformed)?;
    let encoded = pieces.next().ok_or_else(malformed)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while let Some(&b) = encoded.get(i) {
        if b == b'%' {
            let high = encoded.get(i + 1).and_then(|&h| hex_value(h));
            let low = encoded.get(i + 2).and_then(|&l| hex_value(l));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(malformed());
            };
            bytes.push(high << 4 | low);
            i += 3;
        } else {
            bytes.push(b);
            i += 1;
        }
    }
    if charset.eq_ignore_ascii_case(b"utf-8") {
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    } else if charset.eq_ignore_ascii_case(b"iso-8859-1") {
        Ok(bytes.iter().map(|&b| char::from(b)).collect())
    } else {
        Err(bad(
            "A part's filename* uses a character set other than UTF-8 or ISO-8859-1.",
        ))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// An HTTP token character (RFC 9110 `tchar`).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &bytes[skip..]
}

fn trim(bytes: &[u8]) -> &[u8] {
    let bytes = trim_start(bytes);
    let keep = bytes.len()
        - bytes
            .iter()
            .rev()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    &bytes[..keep]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BodyError;
    use std::io::Cursor;

    /// Hands out `data` in reads of at most `max` bytes that never cross a
    /// position listed in `cuts`.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        max: usize,
        cuts: Vec<usize>,
    }

    impl Chunked {
        fn new(data: &[u8], max: usize, cuts: &[usize]) -> Chunked {
            Chunked {
                data: data.to_vec(),
                pos: 0,
                max,
                cuts: cuts.to_vec(),
            }
        }
    }

    impl Read for Chunked {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let next_cut = self
                .cuts
                .iter()
                .copied()
                .filter(|&c| c > self.pos)
                .min()
                .unwrap_or(self.data.len())
                .min(self.data.len());
            let n = (next_cut - self.pos).min(out.len()).min(self.max);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Part {
        head: PartHead,
        data: Vec<u8>,
    }

    /// What a whole parse gave: the parts that ended, the part being read
    /// when an error came, and the error (as its Debug text, to compare).
    #[derive(Debug, PartialEq)]
    struct Outcome {
        ended: Vec<Part>,
        pending: Option<Part>,
        error: Option<String>,
    }

    fn run<R: Read>(reader: R, boundary: &str) -> (Outcome, Option<Error>) {
        let mut form = Multipart::new(reader, boundary);
        let mut ended = Vec::new();
        loop {
            let head = match form.next_part() {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => return (outcome(ended, None, &e), Some(e)),
            };
            let mut data = Vec::new();
            loop {
                match form.read_data() {
                    Ok(Some(chunk)) => {
                        assert!(!chunk.is_empty(), "an empty slice was lent out");
                        assert!(chunk.len() <= BUFFER_SIZE);
                        data.extend_from_slice(chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let pending = Some(Part { head, data });
                        return (outcome(ended, pending, &e), Some(e));
                    }
                }
            }
            ended.push(Part { head, data });
        }
        // Done means done, however often one asks.
        assert!(matches!(form.next_part(), Ok(None)));
        assert!(matches!(form.read_data(), Ok(None)));
        let done = Outcome {
            ended,
            pending: None,
            error: None,
        };
        (done, None)
    }

    fn outcome(ended: Vec<Part>, pending: Option<Part>, e: &Error) -> Outcome {
        Outcome {
            ended,
            pending,
            error: Some(format!("{e:?}")),
        }
    }

    /// Parses `body` whole, one byte at a time, and split in two reads at
    /// every position; all must agree. Returns the whole-read result.
    fn parse_every_way(boundary: &str, body: &[u8]) -> (Outcome, Option<Error>) {
        let (whole, error) = run(Cursor::new(body), boundary);
        let (one_byte, _) = run(Chunked::new(body, 1, &[]), boundary);
        assert_eq!(one_byte, whole, "one byte at a time differs");
        for cut in 0..=body.len() {
            let (split, _) = run(Chunked::new(body, usize::MAX, &[cut]), boundary);
            assert_eq!(split, whole, "split at {cut} differs");
        }
        (whole, error)
    }

    #[derive(Debug, Clone, Copy)]
    enum Fail {
        Bad,
        Cut,
    }

    type Want<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a [u8]);

    struct Row<'a> {
        what: &'a str,
        boundary: &'a str,
        body: &'a [u8],
        want: Result<Vec<Want<'a>>, Fail>,
    }

    const CD: &str = "Content-Disposition: form-data";

    fn check_rows(rows: &[Row]) {
        for row in rows {
            let (got, error) = parse_every_way(row.boundary, row.body);
            match (&row.want, error) {
                (Ok(want), None) => {
                    let got: Vec<Want> = got
                        .ended
                        .iter()
                        .map(|p| {
                            (
                                p.head.name.as_deref(),
                                p.head.filename.as_deref(),
                                p.head.content_type.as_deref(),
                                &p.data[..],
                            )
                        })
                        .collect();
                    assert_eq!(&got, want, "{}", row.what);
                }
                (Err(Fail::Bad), Some(Error::BadRequest(_))) => {}
                (Err(Fail::Cut), Some(Error::BodyCut)) => {}
                (want, got) => panic!("{}: wanted {want:?}, got {got:?}", row.what),
            }
        }
    }

    #[test]
    fn well_formed_bodies_give_their_parts() {
        let many = format!(
            "--b\r\n{CD}; name=\"title\"\r\n\r\nHello\r\n\
             --b\r\n{CD}; name=\"f\"; filename=\"one.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n\
             --b\r\n{CD}; name=\"note\"\r\n\r\n\r\n\
             --b\r\n{CD}; name=\"f\"; filename=\"two.txt\"\r\nContent-Type: text/plain\r\n\r\nsecond\nfile\r\n\
             --b--\r\n"
        );
        let rows = [
            Row {
                what: "one file",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\
                        Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
                want: Ok(vec![(Some("f"), Some("a.txt"), Some("text/plain"), b"hello")]),
            },
            Row {
                what: "several files and text fields mixed in",
                boundary: "b",
                body: many.as_bytes(),
                want: Ok(vec![
                    (Some("title"), None, None, b"Hello"),
                    (Some("f"), Some("one.bin"), Some("application/octet-stream"), b"\x00\x01\x02"),
                    (Some("note"), None, None, b""),
                    (Some("f"), Some("two.txt"), Some("text/plain"), b"second\nfile"),
                ]),
            },
            Row {
                what: "an empty file",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"e\"\r\n\r\n\r\n--b--",
                want: Ok(vec![(Some("f"), Some("e"), None, b"")]),
            },
            Row {
                what: "no file chosen: empty filename",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"\"\r\n\
                        Content-Type: application/octet-stream\r\n\r\n\r\n--b--\r\n",
                want: Ok(vec![(Some("f"), Some(""), Some("application/octet-stream"), b"")]),
            },
            Row {
                what: "a data-only body of CRLF",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\n\r\n\r\n--b--",
                want: Ok(vec![(Some("f"), Some("x"), None, b"\r\n")]),
            },
            Row {
                what: "no parts at all",
                boundary: "b",
                body: b"--b--",
                want: Ok(vec![]),
            },
            Row {
                what: "a browser boundary",
                boundary: "----WebKitFormBoundary7MA4YWxkTrZu0gW",
                body: b"------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n\
                        Content-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n\
                        ------WebKitFormBoundary7MA4YWxkTrZu0g\r\n\
                        ------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n",
                want: Ok(vec![(Some("f"), Some("a"), None, b"------WebKitFormBoundary7MA4YWxkTrZu0g")]),
            },
            Row {
                what: "a boundary with spaces and colons (sent quoted)",
                boundary: "a b:c",
                body: b"--a b:c\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--a b:c--",
                want: Ok(vec![(Some("x"), None, None, b"1")]),
            },
            Row {
                what: "data holding --boundary without the CRLF",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n\
                        --b\r\nx--b--\n--b\r--b\r\n--b--",
                want: Ok(vec![(Some("f"), Some("a"), None, b"--b\r\nx--b--\n--b\r--b")]),
            },
            Row {
                what: "data holding a near miss of the delimiter",
                boundary: "boundary",
                body: b"--boundary\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n\
                        \r\n--boundar\r\n--boundar\r\r\n\r\n-\r\n--boundary--",
                want: Ok(vec![(Some("f"), Some("a"), None, b"\r\n--boundar\r\n--boundar\r\r\n\r\n-")]),
            },
            Row {
                what: "data ending with CR",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nabc\r\r\n--b--",
                want: Ok(vec![(Some("f"), Some("a"), None, b"abc\r")]),
            },
            Row {
                what: "data ending with CR CR LF",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nabc\r\r\n\r\n--b--",
                want: Ok(vec![(Some("f"), Some("a"), None, b"abc\r\r\n")]),
            },
            Row {
                what: "a preamble",
                boundary: "b",
                body: b"This is the preamble. --b is not a boundary here.\r\n-- b\r\n--b\r\n\
                        Content-Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
                want: Ok(vec![(Some("x"), None, None, b"1")]),
            },
            Row {
                what: "a preamble of one CRLF",
                boundary: "b",
                body: b"\r\n--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
                want: Ok(vec![(Some("x"), None, None, b"1")]),
            },
            Row {
                what: "transport padding after boundaries",
                boundary: "b",
                body: b"--b \t \r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b\t\r\n\
                        Content-Disposition: form-data; name=y\r\n\r\n2\r\n--b--",
                want: Ok(vec![(Some("x"), None, None, b"1"), (Some("y"), None, None, b"2")]),
            },
            Row {
                what: "an epilogue, even one that looks broken",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--  \r\n\
                        epilogue\r\n--b\r\ngarbage--b",
                want: Ok(vec![(Some("x"), None, None, b"1")]),
            },
            Row {
                what: "filename* preferred over filename",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"EUR rates.txt\"; \
                        filename*=UTF-8''%e2%82%AC%20rates.txt\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f"), Some("\u{20ac} rates.txt"), None, b"x")]),
            },
            Row {
                what: "filename* with a language and a lower-case charset, quoted",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=f; filename*=\"utf-8'en'a%2Fb.txt\"\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f"), Some("a/b.txt"), None, b"x")]),
            },
            Row {
                what: "filename* in ISO-8859-1",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=f; filename*=ISO-8859-1''%E9t%E9.txt\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f"), Some("\u{e9}t\u{e9}.txt"), None, b"x")]),
            },
            Row {
                what: "browser escapes %22 %0D %0A decoded, nothing else",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"a%22b\"; \
                        filename=\"q%22x%0d%0Ay%0D%0a %41 %2522 %zz 100%.txt\"\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("a\"b"), Some("q\"x\r\ny\r\n %41 %2522 %zz 100%.txt"), None, b"x")]),
            },
            Row {
                what: "quoted-string escapes; other backslashes kept",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f\"; \
                        filename=\"a\\\"b\\\\c\\d\\%22.txt\"\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f"), Some("a\"b\\c\\d\\\".txt"), None, b"x")]),
            },
            Row {
                what: "semicolons and equals signs inside quotes",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"f;g\"; filename=\"a=b; c.txt\"\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f;g"), Some("a=b; c.txt"), None, b"x")]),
            },
            Row {
                what: "unquoted values and odd spacing",
                boundary: "b",
                body: b"--b\r\nContent-Disposition:form-data ;name = f;filename= plain.txt ;;\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f"), Some("plain.txt"), None, b"x")]),
            },
            Row {
                what: "raw UTF-8 names as browsers send them",
                boundary: "b",
                body: "--b\r\nContent-Disposition: form-data; name=\"\u{fc}\"; \
                       filename=\"Gr\u{fc}\u{df}e \u{1f600}/\u{65e5}\u{672c}.txt\"\r\n\r\nx\r\n--b--"
                    .as_bytes(),
                want: Ok(vec![(Some("\u{fc}"), Some("Gr\u{fc}\u{df}e \u{1f600}/\u{65e5}\u{672c}.txt"), None, b"x")]),
            },
            Row {
                what: "invalid UTF-8 in a file name is replaced",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=f; filename=\"caf\xe9.txt\"\r\n\r\nx\r\n--b--",
                want: Ok(vec![(Some("f"), Some("caf\u{fffd}.txt"), None, b"x")]),
            },
            Row {
                what: "header and parameter names in any case, other headers ignored",
                boundary: "b",
                body: b"--b\r\ncontent-disposition: FORM-DATA; NAME=\"f\"; FileName=\"x\"; size=3\r\n\
                        CONTENT-TYPE:   text/plain; charset=utf-8  \r\n\
                        Content-Transfer-Encoding: binary\r\n\r\nabc\r\n--b--",
                want: Ok(vec![(Some("f"), Some("x"), Some("text/plain; charset=utf-8"), b"abc")]),
            },
            Row {
                what: "a disposition without name",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--b--",
                want: Ok(vec![(None, None, None, b"abc")]),
            },
            Row {
                what: "exactly 16 headers",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\
                        a: 1\r\na: 2\r\na: 3\r\na: 4\r\na: 5\r\na: 6\r\na: 7\r\na: 8\r\n\
                        a: 9\r\na: 10\r\na: 11\r\na: 12\r\na: 13\r\na: 14\r\nX-Empty:\r\n\r\n1\r\n--b--",
                want: Ok(vec![(Some("x"), None, None, b"1")]),
            },
            // Malformed bodies.
            Row {
                what: "17 headers",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\
                        a: 1\r\na: 2\r\na: 3\r\na: 4\r\na: 5\r\na: 6\r\na: 7\r\na: 8\r\n\
                        a: 9\r\na: 10\r\na: 11\r\na: 12\r\na: 13\r\na: 14\r\na: 15\r\na: 16\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "LF-only line endings",
                boundary: "b",
                body: b"--b\nContent-Disposition: form-data; name=x\n\n1\n--b--\n",
                want: Err(Fail::Bad),
            },
            Row {
                what: "LF-only after a preamble never finds a delimiter",
                boundary: "b",
                body: b"pre\n--b\nContent-Disposition: form-data; name=x\n\n1\n--b--\n",
                want: Err(Fail::Cut),
            },
            Row {
                what: "LF-only headers",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\nContent-Type: a\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a part without Content-Disposition",
                boundary: "b",
                body: b"--b\r\nContent-Type: text/plain\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a part without any header",
                boundary: "b",
                body: b"--b\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a disposition other than form-data",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: attachment; filename=a\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "two dispositions",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=a\r\n\
                        Content-Disposition: form-data; name=b\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a parameter given twice",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=a; filename=x; FILENAME=y\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a parameter without value",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "an unclosed quoted string",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"a; filename=x\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "text after a quoted string",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=\"a\"b\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a bad percent escape in filename*",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=f; filename*=UTF-8''a%2\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "filename* without its quotes",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=f; filename*=a.txt\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "filename* in an unknown charset",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=f; filename*=koi8-r''a\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a header line without colon",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\ngarbage\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a header name with a space",
                boundary: "b",
                body: b"--b\r\nContent Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a folded header line",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data;\r\n name=x\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a stray CR in a header",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\rY\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a NUL in a header",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\0\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a delimiter followed by other text inside data",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--bX\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a final delimiter with one dash",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b-\r\n",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a first boundary followed by garbage",
                boundary: "b",
                body: b"--bb\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "padding followed by garbage",
                boundary: "b",
                body: b"--b  x\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            Row {
                what: "a CR without LF after a boundary",
                boundary: "b",
                body: b"--b\r\rContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
                want: Err(Fail::Bad),
            },
            // Bodies that end too early.
            Row {
                what: "an empty body",
                boundary: "b",
                body: b"",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body of only a preamble",
                boundary: "b",
                body: b"hello\r\n--",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body of only the first boundary",
                boundary: "b",
                body: b"--b\r\n",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body cut in the headers",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body without final boundary",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body cut after one dash of the final boundary",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b-",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body cut in transport padding",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b  \r",
                want: Err(Fail::Cut),
            },
            Row {
                what: "a body cut in data ending with CR",
                boundary: "b",
                body: b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r",
                want: Err(Fail::Cut),
            },
        ];
        check_rows(&rows);
    }

    #[test]
    fn a_part_ends_only_after_its_whole_delimiter_and_the_bytes_after_it() {
        let body: &[u8] = b"preamble\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"a\"; filename=\"a.txt\"\r\n\r\n\
            first\r\nfile\r\r\n--XyZ  \r\n\
            Content-Disposition: form-data; name=\"b\"; filename=\"b.txt\"\r\n\r\n\
            \r\n--Xy-second\r\n--XyZ--\r\nepilogue";
        let boundary = "XyZ";
        let (full, error) = run(Cursor::new(body), boundary);
        assert!(error.is_none());
        assert_eq!(full.ended.len(), 2);
        assert_eq!(full.ended[0].data, b"first\r\nfile\r");
        assert_eq!(full.ended[1].data, b"\r\n--Xy-second");
        // Where each part's end becomes known: after "--XyZ  \r\n" for the
        // first, after "--XyZ--" for the second.
        let end_of = |needle: &[u8]| memmem::find(body, needle).unwrap() + needle.len();
        let knowable = [end_of(b"\r\n--XyZ  \r\n"), end_of(b"\r\n--XyZ--")];
        for n in 0..=body.len() {
            let prefix = &body[..n];
            for (label, (got, error)) in [
                ("whole", run(Cursor::new(prefix), boundary)),
                ("one byte", run(Chunked::new(prefix, 1, &[]), boundary)),
            ] {
                let should_end = knowable.iter().filter(|&&k| k <= n).count();
                assert_eq!(got.ended.len(), should_end, "{label}, cut at {n}");
                assert_eq!(
                    got.ended[..],
                    full.ended[..should_end],
                    "{label}, cut at {n}"
                );
                if should_end == 2 {
                    assert!(error.is_none(), "{label}, cut at {n}: {error:?}");
                    continue;
                }
                assert!(
                    matches!(error, Some(Error::BodyCut)),
                    "{label}, cut at {n}: {error:?}"
                );
                if let Some(pending) = got.pending {
                    let whole = &full.ended[should_end].data;
                    assert!(
                        whole.starts_with(&pending.data),
                        "{label}, cut at {n}: pending data {:?} is not a prefix",
                        pending.data
                    );
                }
            }
        }
    }

    #[test]
    fn parts_skipped_unread_are_consumed() {
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nskip me\r\n\
            --b\r\nContent-Disposition: form-data; name=b; filename=b\r\n\r\nhalf read\r\n\
            --b\r\nContent-Disposition: form-data; name=c\r\n\r\nkeep\r\n--b--";
        let mut form = Multipart::new(Chunked::new(body, 3, &[]), "b");
        assert!(matches!(form.read_data(), Ok(None)), "no part yet");
        assert_eq!(
            form.next_part().unwrap().unwrap().name.as_deref(),
            Some("a")
        );
        assert_eq!(
            form.next_part().unwrap().unwrap().name.as_deref(),
            Some("b")
        );
        let some = form.read_data().unwrap().unwrap();
        assert!(b"half read".starts_with(some) && !some.is_empty());
        assert_eq!(
            form.next_part().unwrap().unwrap().name.as_deref(),
            Some("c")
        );
        assert_eq!(form.read_field_to_string(4).unwrap(), "keep");
        assert!(matches!(form.read_data(), Ok(None)));
        assert!(form.next_part().unwrap().is_none());
        assert!(form.next_part().unwrap().is_none());
    }

    #[test]
    fn text_fields_are_read_up_to_their_cap() {
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nfive!\r\n\
            --b\r\nContent-Disposition: form-data; name=b\r\n\r\ncaf\xc3\xa9 \xff\r\n\
            --b\r\nContent-Disposition: form-data; name=c\r\n\r\nsix!!!\r\n\
            --b\r\nContent-Disposition: form-data; name=d\r\n\r\nend\r\n--b--";
        let mut form = Multipart::new(Chunked::new(body, 2, &[]), "b");
        form.next_part().unwrap();
        assert_eq!(form.read_field_to_string(5).unwrap(), "five!");
        form.next_part().unwrap();
        assert_eq!(
            form.read_field_to_string(100).unwrap(),
            "caf\u{e9} \u{fffd}"
        );
        form.next_part().unwrap();
        let e = form.read_field_to_string(5).unwrap_err();
        assert!(matches!(e, Error::BadRequest(_)), "{e:?}");
        // Over the cap is the caller's policy, not a broken body: go on.
        assert_eq!(
            form.next_part().unwrap().unwrap().name.as_deref(),
            Some("d")
        );
        assert_eq!(form.read_field_to_string(3).unwrap(), "end");
        assert!(form.next_part().unwrap().is_none());
    }

    #[test]
    fn after_an_error_every_call_fails() {
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--bX";
        let mut form = Multipart::new(Cursor::new(&body[..]), "b");
        form.next_part().unwrap();
        assert_eq!(form.read_data().unwrap().unwrap(), b"1");
        assert!(form.read_data().is_err());
        assert!(form.read_data().is_err());
        assert!(form.next_part().is_err());
        assert!(form.read_field_to_string(10).is_err());
    }

    /// Gives `data`, then fails with `error` instead of EOF.
    struct Failing {
        data: Cursor<Vec<u8>>,
        error: Option<io::Error>,
        interrupt: bool,
    }

    impl Read for Failing {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            // Interrupted now and then: must be retried, not reported.
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let len = out.len().min(5);
            match self.data.read(&mut out[..len])? {
                0 => Err(self
                    .error
                    .take()
                    .unwrap_or_else(|| io::Error::other("again"))),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn errors_of_the_inner_reader_keep_their_cause() {
        let body =
            b"--b\r\nContent-Disposition: form-data; name=a; filename=a\r\n\r\n12345678\r\n--b";
        type Case = (io::Error, fn(&Error) -> bool);
        let cases: Vec<Case> = vec![
            (BodyError::TooLarge { limit: 7 }.into_io(), |e| {
                matches!(e, Error::TooLarge { limit: 7 })
            }),
            (BodyError::Cut.into_io(), |e| matches!(e, Error::BodyCut)),
            (
                BodyError::Malformed("bad chunk".into()).into_io(),
                |e| matches!(e, Error::BadRequest(why) if why == "bad chunk"),
            ),
            (io::ErrorKind::TimedOut.into(), |e| {
                matches!(e, Error::Timeout)
            }),
            (io::ErrorKind::ConnectionReset.into(), |e| {
                matches!(e, Error::BodyCut)
            }),
        ];
        for (error, is_expected) in cases {
            let reader = Failing {
                data: Cursor::new(body.to_vec()),
                error: Some(error),
                interrupt: false,
            };
            let (got, error) = run(reader, "b");
            let error = error.expect("the parse must fail");
            assert!(is_expected(&error), "{error:?}");
            assert!(got.ended.is_empty(), "a part ended: {got:?}");
            assert_eq!(got.pending.unwrap().data, b"12345678");
        }
    }

    #[test]
    fn the_preamble_is_capped() {
        let part = b"\r\n--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--";
        for (len, fits) in [(MAX_PREAMBLE, true), (MAX_PREAMBLE + 1, false)] {
            let mut body = vec![b'\r'; len];
            body.extend_from_slice(part);
            for (got, error) in [
                run(Cursor::new(&body), "b"),
                run(Chunked::new(&body, 1000, &[]), "b"),
                run(Chunked::new(&body, 1, &[]), "b"),
            ] {
                if fits {
                    assert!(error.is_none(), "{error:?}");
                    assert_eq!(got.ended.len(), 1);
                } else {
                    assert!(matches!(error, Some(Error::BadRequest(_))), "{error:?}");
                }
            }
        }
    }

    #[test]
    fn part_headers_are_capped_in_size() {
        let make = |head_len: usize| {
            let start = b"--b\r\nContent-Disposition: form-data; name=x\r\nX-Big: ";
            let mut body = start[5..].to_vec();
            body.resize(head_len - 4, b'a');
            body.extend_from_slice(b"\r\n\r\n");
            assert_eq!(body.len(), head_len);
            let mut full = start[..5].to_vec();
            full.extend_from_slice(&body);
            full.extend_from_slice(b"1\r\n--b--");
            full
        };
        for (head_len, fits) in [(MAX_HEAD_SIZE, true), (MAX_HEAD_SIZE + 1, false)] {
            let body = make(head_len);
            for (got, error) in [
                run(Cursor::new(&body), "b"),
                run(Chunked::new(&body, 1, &[]), "b"),
                run(Chunked::new(&body, 100, &[]), "b"),
            ] {
                if fits {
                    assert!(error.is_none(), "{error:?}");
                    assert_eq!(got.ended[0].data, b"1");
                } else {
                    assert!(matches!(error, Some(Error::BadRequest(_))), "{error:?}");
                }
            }
        }
        // A head that never ends is refused without reading it all.
        let mut body = b"--b\r\nContent-Disposition: form-data; name=x\r\nX: ".to_vec();
        body.resize(10 * 1024 * 1024, b'h');
        let mut reader = Cursor::new(body);
        let mut form = Multipart::new(&mut reader, "b");
        assert!(matches!(form.next_part(), Err(Error::BadRequest(_))));
        assert!(reader.position() <= BUFFER_SIZE as u64);
    }

    #[test]
    fn transport_padding_is_capped() {
        for (padding, fits) in [(MAX_PADDING, true), (MAX_PADDING + 1, false)] {
            let mut body = b"--b".to_vec();
            body.resize(3 + padding, b' ');
            body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--");
            let (_, error) = run(Chunked::new(&body, 7, &[]), "b");
            assert_eq!(error.is_none(), fits, "{error:?}");
        }
    }

    /// Small deterministic generator (xorshift) so the tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn a_large_body_streams_through_the_fixed_buffer() {
        let boundary = "----geckoformboundary5c1e6a2f";
        let delimiter = format!("\r\n--{boundary}");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let file = |len: usize, rng: &mut Rng| {
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Near misses everywhere, some straddling buffer edges.
            for _ in 0..200 {
                let at = rng.below(len - 100);
                let keep = rng.below(delimiter.len() - 1) + 1;
                data[at..at + keep].copy_from_slice(&delimiter.as_bytes()[..keep]);
                // Never completed by chance (NUL is in no boundary).
                data[at + keep] = 0;
            }
            for k in 1..len / BUFFER_SIZE {
                let at = k * BUFFER_SIZE - 20;
                data[at..at + delimiter.len() - 1]
                    .copy_from_slice(&delimiter.as_bytes()[..delimiter.len() - 1]);
                data[at + delimiter.len() - 1] = 0;
            }
            data
        };
        let first = file(12 * 1024 * 1024 + 17, &mut rng);
        let second = file(8 * 1024 * 1024 - 3, &mut rng);
        let mut body = Vec::new();
        for (name, data) in [("one.bin", &first), ("two.bin", &second)] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());

        for max_read in [usize::MAX, 65_536, 100_003] {
            let mut form = Multipart::new(Chunked::new(&body, max_read, &[]), boundary);
            for (name, want) in [("one.bin", &first), ("two.bin", &second)] {
                let head = form.next_part().unwrap().unwrap();
                assert_eq!(head.filename.as_deref(), Some(name));
                let mut at = 0;
                let mut biggest = 0;
                while let Some(chunk) = form.read_data().unwrap() {
                    assert!(chunk.len() <= BUFFER_SIZE);
                    assert!(chunk == &want[at..at + chunk.len()], "data differs at {at}");
                    at += chunk.len();
                    biggest = biggest.max(chunk.len());
                }
                assert_eq!(at, want.len());
                if max_read == usize::MAX {
                    // Slices are most of the buffer, for fast writes.
                    assert!(biggest >= BUFFER_SIZE - 1024, "biggest slice {biggest}");
                }
            }
            assert!(form.next_part().unwrap().is_none());
        }
    }

    #[test]
    fn random_garbage_never_panics_and_does_not_depend_on_read_sizes() {
        let pieces: &[&[u8]] = &[
            b"--b",
            b"\r\n",
            b"\r",
            b"\n",
            b"-",
            b"--",
            b" ",
            b"\t",
            b"\"",
            b"\\",
            b";",
            b"=",
            b"%",
            b"%22",
            b"%0",
            b"'",
            b"x",
            b"\xff",
            b"\xc3",
            b"\0",
            b"Content-Disposition: ",
            b"form-data",
            b"; name=",
            b"; filename=",
            b"; filename*=",
            b"UTF-8''",
            b"Content-Type: ",
            b"\r\n--b\r\n",
            b"\r\n--b--",
            b"\r\n\r\n",
        ];
        let mut rng = Rng(42);
        for _ in 0..3000 {
            let mut body = Vec::new();
            if rng.below(2) == 0 {
                body.extend_from_slice(b"--b\r\nContent-Disposition: form-data; name=a");
            }
            for _ in 0..rng.below(40) {
                body.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            let (whole, _) = run(Cursor::new(&body), "b");
            let (one_byte, _) = run(Chunked::new(&body, 1, &[]), "b");
            assert_eq!(whole, one_byte, "{:?}", String::from_utf8_lossy(&body));
            let cut = rng.below(body.len() + 1);
            let (split, _) = run(Chunked::new(&body, usize::MAX, &[cut]), "b");
            assert_eq!(whole, split, "{:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn boundaries_come_from_the_content_type() {
        let long = "x".repeat(MAX_BOUNDARY_LEN);
        let too_long = "x".repeat(MAX_BOUNDARY_LEN + 1);
        let ok = [
            ("multipart/form-data; boundary=xyz", "xyz"),
            ("multipart/form-data;boundary=xyz", "xyz"),
            ("Multipart/Form-Data; BOUNDARY=xyz", "xyz"),
            ("multipart/form-data; boundary=\"xyz\"", "xyz"),
            ("multipart/form-data; boundary=\"a b:c\"", "a b:c"),
            (
                "multipart/form-data; charset=utf-8; boundary=xyz; x=\"y;z\"",
                "xyz",
            ),
            (
                "multipart/form-data; x=\"boundary=no\"; boundary=yes",
                "yes",
            ),
            ("  multipart/form-data ; boundary = xyz ", "xyz"),
            (
                "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
                "----WebKitFormBoundary7MA4YWxkTrZu0gW",
            ),
        ];
        for (header, want) in ok {
            assert_eq!(
                boundary_from_content_type(header).unwrap(),
                want,
                "{header}"
            );
        }
        assert_eq!(
            boundary_from_content_type(&format!("multipart/form-data; boundary={long}")).unwrap(),
            long
        );
        for header in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/mixed; boundary=xyz",
            "multipart/form-datax; boundary=xyz",
        ] {
            assert!(
                matches!(
                    boundary_from_content_type(header),
                    Err(Error::UnsupportedMediaType(_))
                ),
                "{header}"
            );
        }
        for header in [
            "multipart/form-data".to_string(),
            "multipart/form-data;".to_string(),
            "multipart/form-data; boundary=".to_string(),
            "multipart/form-data; boundary=\"\"".to_string(),
            "multipart/form-data; boundary=\"xyz".to_string(),
            "multipart/form-data; boundary=a; boundary=b".to_string(),
            "multipart/form-data; boundary".to_string(),
            "multipart/form-data; boundary=\"a\u{e9}\"".to_string(),
            "multipart/form-data; boundary=\"a\tb\"".to_string(),
            format!("multipart/form-data; boundary={too_long}"),
        ] {
            assert!(
                matches!(
                    boundary_from_content_type(&header),
                    Err(Error::BadRequest(_))
                ),
                "{header}"
            );
        }
    }

    #[test]
    fn error_messages_read_as_sentences() {
        let e = boundary_from_content_type("text/plain").unwrap_err();
        assert_eq!(e.status(), 415);
        assert!(e.to_string().ends_with('.'));
        let body = b"--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--b--";
        let (_, error) = run(Cursor::new(&body[..]), "b");
        let text = error.unwrap().to_string();
        assert!(
            text.starts_with("A part's Content-Disposition header is malformed"),
            "{text}"
        );
        assert!(text.ends_with('.'), "{text}");
    }
}
