//! The streaming multipart parser on any body, with the boundary fixed
//! (`XbOuNdArYx`, as the integration tests send it).
//!
//! Input: the first byte picks how the inner reader splits the body (1 to
//! 255 bytes a read, or 0 for whole reads); the rest is the body. Every part
//! is read to its end. Checks:
//! - nothing panics, and the parser always ends (a bounded number of calls);
//! - `read_data` lends non-empty slices of at most `BUFFER_SIZE` bytes;
//! - after an error every later call fails too;
//! - the outcome (each part's head and data, where it ended and whether it
//!   failed) does not depend on how the body was split into reads.

#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use tinydrop::multipart::{Multipart, PartHead, BUFFER_SIZE};

const BOUNDARY: &str = "XbOuNdArYx";

/// Gives the body at most `step` bytes a read (`0`: all it can).
struct Split<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Split<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = buf.len().min(self.data.len());
        if self.step > 0 {
            n = n.min(self.step);
        }
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Part(PartHead, Vec<u8>),
    End,
    Failed,
}

fn transcript(body: &[u8], step: usize) -> Vec<Event> {
    let mut form = Multipart::new(Split { data: body, step }, BOUNDARY);
    let mut events = Vec::new();
    // Each call consumes bytes or ends the body: bounded by its length.
    for _ in 0..=body.len() + 2 {
        match form.next_part() {
            Ok(None) => {
                events.push(Event::End);
                assert!(matches!(form.next_part(), Ok(None)), "End is not sticky");
                return events;
            }
            Err(_) => {
                events.push(Event::Failed);
                assert!(form.next_part().is_err(), "an error is not sticky");
                assert!(form.read_data().is_err(), "an error is not sticky");
                return events;
            }
            Ok(Some(head)) => {
                let mut data = Vec::new();
                let mut failed = false;
                for _ in 0..=body.len() + 1 {
                    match form.read_data() {
                        Ok(Some(chunk)) => {
                            assert!(!chunk.is_empty(), "an empty slice of data");
                            assert!(chunk.len() <= BUFFER_SIZE, "a slice over the buffer");
                            data.extend_from_slice(chunk);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                assert!(data.len() <= body.len(), "more data than body");
                events.push(Event::Part(head, data));
                if failed {
                    events.push(Event::Failed);
                    assert!(form.next_part().is_err(), "an error is not sticky");
                    return events;
                }
            }
        }
    }
    panic!("the parser did not end within {} calls", body.len() + 3);
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, body)) = input.split_first() else {
        return;
    };
    let split = transcript(body, usize::from(step));
    let whole = transcript(body, 0);
    assert_eq!(
        split, whole,
        "the outcome depends on how the body was split (step {step})"
    );
});
