//! Our HTTP/1.1 layer on `std::net` and `httparse`.
//!
//! A [`Conn`] owns one socket and one fixed read buffer. [`head::read_head`]
//! fills the buffer until a whole request head parses (within a size limit
//! and a deadline), [`body::Body`] reads the body that follows (declared
//! length or chunked, with an idle deadline and a size limit, sending
//! `100 Continue` only when a handler first reads), and
//! [`response::Response`] writes the answer. Nothing here allocates a size
//! a client declared.

pub mod body;
pub mod head;
pub mod response;
pub mod stream;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use body::Body;
pub use head::{Framing, Head};
pub use response::Response;
pub use stream::Stream;

/// One client connection: the socket, its peer, and the bytes read past the
/// current position (the start of a body, or a pipelined request).
pub struct Conn {
    stream: Stream,
    pub peer: SocketAddr,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The read timeout last set on the socket: a body read sets the same
    /// idle timeout every time, and a system call per buffer is waste.
    timeout: Option<Duration>,
}

impl Conn {
    /// Wraps an accepted socket; `buf_size` bounds the request head.
    pub fn new(stream: Stream, peer: SocketAddr, buf_size: usize) -> Conn {
        Conn {
            stream,
            peer,
            buf: vec![0; buf_size].into_boxed_slice(),
            start: 0,
            end: 0,
            timeout: None,
        }
    }

    /// Sets the socket's read timeout unless it is already `timeout`.
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        if self.timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }

    /// Bytes already read and not yet consumed.
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads into the free end of the buffer, first moving unconsumed bytes
    /// to the front. Returns 0 on end of stream or when the buffer is full.
    fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Ok(0);
        }
        self.set_timeout(timeout)?;
        let n = read_retrying(&mut self.stream, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Reads body bytes: buffered ones first, then straight from the socket
    /// into `out` (no copy through our buffer for big bodies).
    fn read_body(&mut self, out: &mut [u8], idle: Duration) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let have = self.buffered();
        if !have.is_empty() {
            let n = have.len().min(out.len());
            out[..n].copy_from_slice(&have[..n]);
            self.consume(n);
            return Ok(n);
        }
        self.set_timeout(idle)?;
        read_retrying(&mut self.stream, out)
    }

    /// Waits until a byte is available or `deadline` passes, in slices so that
    /// `stop()` is checked often. Ok(false): closed by the peer, timed out or stopped.
    fn wait_readable(&mut self, deadline: Instant, stop: &dyn Fn() -> bool) -> io::Result<bool> {
        if !self.buffered().is_empty() {
            return Ok(true);
        }
        loop {
            if stop() {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let slice = (deadline - now).min(Duration::from_millis(250));
            match self.fill(slice) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `bytes` to the socket.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The transport, for writers that stream (responses with a file body).
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Closes the sending side and briefly reads what the client still sends,
    /// so that a response written before the body was read reaches the client
    /// instead of being destroyed by a reset. Bounded in bytes and time.
    pub fn linger_close(mut self, max_bytes: u64, max_time: Duration) {
        let _ = self.stream.flush();
        self.stream.shutdown_write();
        let deadline = Instant::now() + max_time;
        let mut scratch = [0u8; 8192];
        let mut left = max_bytes;
        while left > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.set_timeout(deadline - now).is_err() {
                break;
            }
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    }
}

fn read_retrying(stream: &mut Stream, out: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A read that ran into its timeout (Linux reports EAGAIN).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `%XX` in a URL path to bytes, then UTF-8. `None` for a broken escape or
/// bytes that are not UTF-8. `+` stays `+` (it means space only in forms).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_utf8_and_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%20b%C3%A9+").as_deref(), Some("a bé+"));
        assert_eq!(percent_decode("%2e%2E%2f").as_deref(), Some("../"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
