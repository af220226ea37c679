//! The byte stream under a connection: plain TCP, or TLS over TCP when
//! built with the `tls` feature and started with `--tls-cert`/`--tls-key`.
//! Deadlines are set on the TCP socket underneath either way; with TLS the
//! handshake runs in the worker on the first read, under the head deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A client connection's transport.
pub enum Stream {
    Plain(TcpStream),
    /// Bytes in memory, handed out at most `chunk` at a time: for tests and
    /// fuzzing of the parsers above, which then see every way a stream splits.
    Memory(Memory),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

/// An in-memory stream: what a client sends, and what the server wrote.
pub struct Memory {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
    /// Everything written to the stream.
    pub output: Vec<u8>,
}

impl Stream {
    /// A stream that reads `input`, at most `chunk` bytes per read.
    pub fn memory(input: Vec<u8>, chunk: usize) -> Stream {
        Stream::Memory(Memory {
            input,
            pos: 0,
            chunk: chunk.max(1),
            output: Vec::new(),
        })
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Memory(_) => None,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Some(&s.sock),
        }
    }

    /// The deadline of each read on the socket underneath.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self.tcp() {
            Some(tcp) => tcp.set_read_timeout(timeout),
            None => Ok(()),
        }
    }

    /// Ends the sending side: TLS says close_notify first.
    pub fn shutdown_write(&mut self) {
        #[cfg(feature = "tls")]
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        if let Some(tcp) = self.tcp() {
            let _ = tcp.shutdown(Shutdown::Write);
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Memory(m) => {
                let n = buf.len().min(m.chunk).min(m.input.len() - m.pos);
                buf[..n].copy_from_slice(&m.input[m.pos..m.pos + n]);
                m.pos += n;
                Ok(n)
            }
            #[cfg(feature = "tls")]
            Stream::Tls(s) => match s.read(buf) {
                // A client that closes without close_notify has still ended the
                // stream; the body reader decides whether that was too early.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Memory(m) => {
                m.output.extend_from_slice(buf);
                Ok(buf.len())
            }
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Memory(_) => Ok(()),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}
