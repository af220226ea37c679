//! The request head reader (`read_head`) on any bytes, over an in-memory
//! stream, as the server runs it (a 16 KiB buffer, at most 100 headers).
//!
//! Input: the first byte picks how many bytes each read of the stream hands
//! out (1 to 255; 0 reads one byte at a time too); the rest is what a client
//! sends. Checks:
//! - nothing panics, and `read_head` always returns;
//! - the outcome (the parsed head or the kind of refusal) and the bytes left
//!   after the head (the start of the body or the next request) are the same
//!   however the stream splits: in reads of the chosen size, one byte at a
//!   time, or all at once;
//! - a parsed head never claims more bytes than were sent.

#![no_main]

use std::io::Read;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tinydrop::http::head::{read_head, Framing, HeadError, HeadLimits};
use tinydrop::http::{Body, Conn, Stream};

/// The server's defaults (config::Limits): 16 KiB of head, 100 headers.
const HEAD_BYTES: usize = 16 * 1024;
const HEAD_COUNT: usize = 100;
/// Long enough that no deadline ever fires on a memory stream.
const LONG: Duration = Duration::from_secs(3600);

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The head as `{:?}` (all its fields) and the bytes after it.
    Head(String, Vec<u8>),
    Idle,
    TimedOut,
    UriTooLong,
    TooLarge,
    Malformed,
}

fn outcome(input: &[u8], chunk: usize) -> Outcome {
    let mut conn = Conn::new(
        Stream::memory(input.to_vec(), chunk),
        ([127, 0, 0, 1], 1).into(),
        HEAD_BYTES,
    );
    let limits = HeadLimits {
        max_bytes: HEAD_BYTES,
        max_headers: HEAD_COUNT,
        timeout: LONG,
        first_byte: LONG,
        first: true,
    };
    match read_head(&mut conn, &limits, &|| false) {
        Ok(mut head) => {
            let described = format!("{head:?}");
            // What follows the head: read it all back through a body of
            // (at least) the input's length; the stream ends first.
            head.framing = Framing::Length(input.len() as u64 + 1);
            head.expect_continue = false;
            let mut rest = Vec::new();
            let mut body = Body::new(&mut conn, &head, LONG);
            let _ = body.read_to_end(&mut rest);
            assert!(rest.len() < input.len(), "the head took no bytes");
            Outcome::Head(described, rest)
        }
        Err(HeadError::Idle) => Outcome::Idle,
        Err(HeadError::TimedOut) => Outcome::TimedOut,
        Err(HeadError::UriTooLong) => Outcome::UriTooLong,
        Err(HeadError::TooLarge) => Outcome::TooLarge,
        Err(HeadError::Malformed(why)) => {
            assert!(!why.is_empty(), "a refusal without a reason");
            Outcome::Malformed
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, bytes)) = input.split_first() else {
        return;
    };
    let whole = outcome(bytes, usize::MAX);
    let split = outcome(bytes, usize::from(step));
    assert_eq!(split, whole, "the outcome depends on reads of {step} bytes");
    if step > 1 {
        let bytewise = outcome(bytes, 1);
        assert_eq!(bytewise, whole, "the outcome depends on reads of 1 byte");
    }
});
