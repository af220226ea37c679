//! The chunked body decoder (`Body` with `Transfer-Encoding: chunked`) on any
//! bytes, over an in-memory stream with the server's 16 KiB connection buffer.
//!
//! Input: the first byte picks how many bytes each read of the stream hands
//! out (1 to 255; 0 reads one byte at a time too), the second how big the
//! reader's buffer is (1 to 255; 0 for 64 KiB); the rest is what follows a
//! request head. Checks:
//! - nothing panics, and decoding always ends (every read consumes input or
//!   ends the body);
//! - no read returns more than it was asked for, and the decoded body is
//!   never longer than the bytes sent;
//! - once a read fails, the body stays failed;
//! - the outcome (the decoded bytes, or the kind of failure) and the bytes
//!   left after a complete body (a pipelined request) are the same however
//!   the stream and the reads split: in the chosen sizes, or all at once.

#![no_main]

use std::io::Read;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tinydrop::error::Error;
use tinydrop::http::head::{Framing, Head};
use tinydrop::http::{Body, Conn, Stream};

/// The server's connection buffer (config::Limits head_bytes).
const CONN_BUFFER: usize = 16 * 1024;
const LONG: Duration = Duration::from_secs(3600);

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The decoded body and what followed it on the stream.
    Body(Vec<u8>, Vec<u8>),
    /// The failure's HTTP status (400 malformed or cut, 413 over a limit),
    /// and the bytes decoded before it.
    Failed(u16, Vec<u8>),
}

fn head() -> Head {
    Head {
        method: "PUT".into(),
        path: "/files/x".into(),
        query: None,
        version: 1,
        headers: Vec::new(),
        framing: Framing::Chunked,
        keep_alive: true,
        expect_continue: false,
    }
}

fn decode(input: &[u8], chunk: usize, read_size: usize) -> Outcome {
    let mut conn = Conn::new(
        Stream::memory(input.to_vec(), chunk),
        ([127, 0, 0, 1], 1).into(),
        CONN_BUFFER,
    );
    let chunked = head();
    let mut body = Body::new(&mut conn, &chunked, LONG);
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    // Each successful read returns at least one byte of at most `input`'s:
    // this many calls are always enough to end.
    for _ in 0..=input.len() + 1 {
        match body.read(&mut buf) {
            Ok(0) => {
                assert!(out.len() <= input.len(), "more bytes out than in");
                // The rest of the stream, through a length body that ends
                // with it (the stream closes first).
                let mut plain = head();
                plain.framing = Framing::Length(input.len() as u64 + 1);
                let mut rest = Vec::new();
                let _ = Body::new(&mut conn, &plain, LONG).read_to_end(&mut rest);
                return Outcome::Body(out, rest);
            }
            Ok(n) => {
                assert!(n <= buf.len(), "a read returned more than asked");
                out.extend_from_slice(&buf[..n]);
                assert!(out.len() <= input.len(), "more bytes out than in");
            }
            Err(e) => {
                assert!(body.read(&mut buf).is_err(), "a failure is not sticky");
                return Outcome::Failed(Error::from(e).status(), out);
            }
        }
    }
    panic!("the body did not end within {} reads", input.len() + 2);
}

fuzz_target!(|input: &[u8]| {
    let [step, size, bytes @ ..] = input else {
        return;
    };
    let read_size = if *size == 0 {
        64 * 1024
    } else {
        usize::from(*size)
    };
    let whole = decode(bytes, usize::MAX, 64 * 1024);
    let split = decode(bytes, usize::from(*step), read_size);
    match (&whole, &split) {
        // A failure may come after more or fewer decoded bytes depending on
        // where the reads stop; what was decoded agrees as far as it goes.
        (Outcome::Failed(a, x), Outcome::Failed(b, y)) => {
            assert_eq!(a, b, "the failure depends on the split ({step}, {size})");
            let n = x.len().min(y.len());
            assert_eq!(x[..n], y[..n], "decoded bytes differ ({step}, {size})");
        }
        _ => assert_eq!(
            whole, split,
            "the outcome depends on the split ({step}, {size})"
        ),
    }
});
