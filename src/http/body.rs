//! The body of one request as an `impl Read`: declared length or chunked,
//! an idle deadline per read, an optional size limit, and `100 Continue`
//! sent only on the first read, so a handler that refuses the request first
//! costs the client nothing.
//!
//! Errors carry a [`BodyError`] inside the `io::Error`, so code that reads
//! through `impl Read` (multipart, store, tus) keeps the cause.

use std::io::{self, Read};
use std::time::Duration;

use super::{Conn, Framing, Head};
use crate::error::BodyError;

/// Longest chunk-size line (size, extensions, CRLF) we accept.
const MAX_CHUNK_LINE: usize = 1024;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of a length-delimited body are still to come.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers(usize),
    /// The whole body has been read.
    Done,
    /// Reading failed; the connection cannot be reused.
    Broken,
}

/// What is left of a body once its handler has finished, for deciding
/// whether the connection can serve another request.
#[derive(Debug)]
pub struct Rest {
    state: State,
    continue_pending: bool,
}

/// A request body being read from its connection.
pub struct Body<'c> {
    conn: &'c mut Conn,
    state: State,
    continue_pending: bool,
    idle: Duration,
    limit: u64,
    received: u64,
}

impl<'c> Body<'c> {
    /// The body that follows `head` on `conn`; each read waits at most `idle`.
    pub fn new(conn: &'c mut Conn, head: &Head, idle: Duration) -> Body<'c> {
        let state = match head.framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        let continue_pending = head.expect_continue && state != State::Done;
        Body {
            conn,
            state,
            continue_pending,
            idle,
            limit: u64::MAX,
            received: 0,
        }
    }

    /// Fails reads with `TooLarge` once more than `limit` bytes arrived.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Body bytes read so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The peer address, for logs.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.conn.peer
    }

    /// What remains to be decided after the handler.
    pub fn into_rest(self) -> Rest {
        Rest {
            state: self.state,
            continue_pending: self.continue_pending,
        }
    }

    fn send_continue(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            self.conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }

    fn read_inner(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Broken => {
                    return Err(BodyError::Malformed("The body could not be read.".into()).into_io())
                }
                State::Length(left) => {
                    let (n, left) = self.read_at_most(out, left)?;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(n);
                }
                State::ChunkData(left) => {
                    let (n, left) = self.read_at_most(out, left)?;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(n);
                }
                State::ChunkSize => {
                    let line = self.line(MAX_CHUNK_LINE)?;
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    let line = self.line(2)?;
                    if !line.is_empty() {
                        return Err(malformed("A chunk is longer than its declared size."));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let line = self.line(MAX_TRAILERS)?;
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(malformed("The chunked body's trailers are too large."));
                    }
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen)
                    };
                }
            }
        }
    }

    /// Reads up to `left` body bytes; the count read and what is left.
    /// The stream ending first is a cut body.
    fn read_at_most(&mut self, out: &mut [u8], left: u64) -> io::Result<(usize, u64)> {
        let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match self.conn.read_body(&mut out[..want], self.idle)? {
            0 => Err(BodyError::Cut.into_io()),
            n => Ok((n, left - n as u64)),
        }
    }

    /// One CRLF-terminated line of framing (without the CRLF), at most `max` bytes.
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        loop {
            let buffered = self.conn.buffered();
            if let Some(i) = memchr::memchr(b'\n', buffered) {
                if i == 0 || buffered[i - 1] != b'\r' || i - 1 > max {
                    return Err(malformed("The chunked body has a malformed line."));
                }
                let line = buffered[..i - 1].to_vec();
                self.conn.consume(i + 1);
                return Ok(line);
            }
            // A full buffer without a line end is a line too long as well:
            // `fill` would return 0 for it, which reads as a cut connection.
            if buffered.len() > max + 1 || buffered.len() == self.conn.buf.len() {
                return Err(malformed("The chunked body has a line that is too long."));
            }
            match self.conn.fill(self.idle)? {
                0 => return Err(BodyError::Cut.into_io()),
                _ => continue,
            }
        }
    }
}

fn malformed(why: &str) -> io::Error {
    BodyError::Malformed(why.to_string()).into_io()
}

/// `1a2b;ext=1` -> 0x1a2b. Hex digits only, at most 15 of them (fits in u64
/// with room), extensions after `;` ignored.
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = match digits.iter().rposition(|b| *b != b' ' && *b != b'\t') {
        Some(end) => &digits[..=end],
        None => digits,
    };
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("The chunked body has an invalid chunk size."));
    }
    let s = std::str::from_utf8(digits)
        .map_err(|_| malformed("The chunked body has an invalid chunk size."))?;
    u64::from_str_radix(s, 16).map_err(|_| malformed("The chunked body has an invalid chunk size."))
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.state == State::Done || out.is_empty() {
            return Ok(0);
        }
        self.send_continue()?;
        let room = self.limit.saturating_sub(self.received);
        // Ask for one byte past the limit so that "exactly at the limit" passes
        // and "one byte over" is seen.
        let want = out
            .len()
            .min(usize::try_from(room.saturating_add(1)).unwrap_or(usize::MAX));
        match self.read_inner(&mut out[..want]) {
            Ok(n) => {
                self.received += n as u64;
                if self.received > self.limit {
                    self.state = State::Broken;
                    return Err(BodyError::TooLarge { limit: self.limit }.into_io());
                }
                Ok(n)
            }
            Err(e) => {
                self.state = State::Broken;
                Err(e)
            }
        }
    }
}

impl Rest {
    /// Whether the body was read to its end.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Whether [`Rest::drain`] may succeed with `max` bytes: known before the
    /// response is written, so it can say `Connection: close` when not.
    pub fn may_drain(&self, max: u64) -> bool {
        match self.state {
            State::Done => true,
            State::Broken => false,
            _ if self.continue_pending => false,
            State::Length(left) => left <= max,
            _ => true,
        }
    }

    /// Makes the connection ready for the next request by reading what is
    /// left of the body, at most `max` bytes. False: close the connection.
    pub fn drain(self, conn: &mut Conn, max: u64, idle: Duration) -> bool {
        match self.state {
            State::Done => return true,
            State::Broken => return false,
            // The client waits for our go-ahead we never gave: it may or may
            // not send the body now, so the connection's next bytes are unknown.
            _ if self.continue_pending => return false,
            State::Length(left) if left > max => return false,
            _ => {}
        }
        let mut body = Body {
            conn,
            state: self.state,
            continue_pending: false,
            idle,
            limit: max,
            received: 0,
        };
        let mut scratch = [0u8; 8192];
        loop {
            match body.read(&mut scratch) {
                Ok(0) => return body.state == State::Done,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::http::Stream;

    /// Reads the whole body of `input` framed as `framing`, the stream
    /// handing out `chunk` bytes per read; then what follows the body.
    fn decode(
        input: &[u8],
        chunk: usize,
        framing: Framing,
        limit: u64,
    ) -> (Result<Vec<u8>, String>, Vec<u8>) {
        let mut conn = Conn::new(
            Stream::memory(input.to_vec(), chunk),
            ([127, 0, 0, 1], 1).into(),
            1024,
        );
        let head = Head {
            method: "PUT".into(),
            path: "/".into(),
            query: None,
            version: 1,
            headers: Vec::new(),
            framing,
            keep_alive: true,
            expect_continue: false,
        };
        let mut body = Body::new(&mut conn, &head, Duration::from_secs(1));
        body.set_limit(limit);
        let mut out = Vec::new();
        let result = body
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| Error::from(e).to_string());
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(conn.stream(), &mut rest);
        let mut buffered = conn.buffered().to_vec();
        buffered.extend_from_slice(&rest);
        (result, buffered)
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_the_stream_splits() {
        let good: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\nNEXT", b"hello"),
            (
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
                b"hello world",
            ),
            (b"0\r\nTrailer: x\r\n\r\nNEXT", b""),
            (b"A\r\n0123456789\r\n0\r\n\r\nNEXT", b"0123456789"),
        ];
        for (input, expected) in good {
            for chunk in 1..=input.len() {
                let (got, rest) = decode(input, chunk, Framing::Chunked, u64::MAX);
                assert_eq!(
                    got.as_deref(),
                    Ok(*expected),
                    "{:?} in reads of {chunk}",
                    String::from_utf8_lossy(input)
                );
                assert_eq!(rest, b"NEXT", "the next request's bytes stay");
            }
        }
    }

    #[test]
    fn broken_chunked_bodies_fail_at_every_split() {
        for input in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"-1\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nhel",
            b"5\r\nhello\r\n",
            b"5\r\nhello\r\n0\r\n",
        ] {
            for chunk in 1..=input.len() {
                let (got, _) = decode(input, chunk, Framing::Chunked, u64::MAX);
                assert!(
                    got.is_err(),
                    "{:?} in reads of {chunk} decoded",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn a_line_longer_than_the_connection_buffer_is_too_long_not_a_cut() {
        // The test connections have a 1 KiB buffer (the server's: 16 KiB,
        // as large as the trailer limit): a trailer or chunk-size line that
        // fills it was reported as "the connection closed" while it was open.
        let long = "a".repeat(3000);
        for input in [
            format!("0\r\nX-T: {long}\r\n\r\n"),
            format!("5;ext={long}\r\nhello\r\n0\r\n\r\n"),
        ] {
            for chunk in [1, 7, 4096] {
                let (got, _) = decode(input.as_bytes(), chunk, Framing::Chunked, u64::MAX);
                let err = got.unwrap_err();
                assert!(err.contains("too long"), "reads of {chunk}: {err}");
            }
        }
        // A line cut by the end of the stream is still a cut.
        let (got, _) = decode(b"0\r\nX-T: aaa", 3, Framing::Chunked, u64::MAX);
        assert!(got.unwrap_err().contains("closed before"));
    }

    #[test]
    fn length_bodies_stop_at_their_length_and_fail_when_cut() {
        let (got, rest) = decode(b"helloNEXT", 2, Framing::Length(5), u64::MAX);
        assert_eq!(got.as_deref(), Ok(&b"hello"[..]));
        assert_eq!(rest, b"NEXT");
        let (got, _) = decode(b"hel", 1, Framing::Length(5), u64::MAX);
        assert!(got.unwrap_err().contains("closed before"));
    }

    #[test]
    fn the_limit_lets_exactly_limit_bytes_through() {
        let (got, _) = decode(b"hello", 1, Framing::Length(5), 5);
        assert!(got.is_ok());
        let (got, _) = decode(b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n", 3, Framing::Chunked, 5);
        assert!(got.unwrap_err().contains("larger"), "over the limit");
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FF;name=value").unwrap(), 255);
        assert_eq!(parse_chunk_size(b"10 ").unwrap(), 16);
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"+1",
            b"0x10",
            b"1 2",
            b"ffffffffffffffff",
            b" 1",
        ] {
            assert!(
                parse_chunk_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
