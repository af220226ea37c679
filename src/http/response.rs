//! Responses: a status, headers and a body held in memory or streamed from
//! a file. Every response carries a Content-Length and the security headers.

use std::fs::File;
use std::io::{self, Read, Write};

use crate::error::Error;
use crate::json;

/// Bodies up to this size go out in the same write as the head.
const SMALL_BODY: usize = 16 * 1024;

/// What follows the head.
pub enum Payload {
    Bytes(Vec<u8>),
    Static(&'static [u8]),
    /// `len` bytes read from the file's current position.
    File(File, u64),
}

/// One HTTP response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Payload,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A response with no body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            payload: Payload::Static(b""),
            close: false,
        }
    }

    /// A JSON body that is already encoded.
    pub fn json(status: u16, body: String) -> Response {
        Response::empty(status)
            .with_header("Content-Type", "application/json")
            .with_payload(Payload::Bytes(body.into_bytes()))
    }

    /// The one place an error becomes `{"error": "..."}`, with the error's
    /// status. `files` adds the outcomes of files a request already handled.
    pub fn error(e: &Error, files: Option<String>) -> Response {
        let mut fields = vec![("error", json::string(&e.to_string()))];
        if let Some(files) = files {
            fields.push(("files", files));
        }
        let mut r = Response::json(e.status(), json::object(&fields));
        if let Error::MethodNotAllowed { allow } = e {
            r = r.with_header("Allow", *allow);
        }
        match e.status() {
            503 => r = r.with_header("Retry-After", "1"),
            429 => r = r.with_header("Retry-After", "60"),
            _ => {}
        }
        if e.status() == 401 {
            r = r.with_header(
                "WWW-Authenticate",
                "Basic realm=\"tinydrop\", charset=\"UTF-8\"",
            );
        }
        r.close = e.closes_connection();
        r
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_payload(mut self, payload: Payload) -> Response {
        self.payload = payload;
        self
    }

    fn payload_len(&self) -> u64 {
        match &self.payload {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Static(b) => b.len() as u64,
            Payload::File(_, len) => *len,
        }
    }

    /// Writes the response; `head_only` for HEAD requests, `version` 0 or 1.
    /// Returns the body bytes written.
    pub fn write_to(
        &mut self,
        w: &mut impl Write,
        head_only: bool,
        version: u8,
    ) -> io::Result<u64> {
        let len = self.payload_len();
        let mut head = format!(
            "HTTP/1.{} {} {}\r\n",
            version.min(1),
            self.status,
            reason(self.status)
        );
        for (name, value) in &self.headers {
            // Header values we write never hold CR or LF; make sure of it.
            let value: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        // 1xx, 204 and 304 have no body and no length (RFC 9110, 8.6).
        if !(self.status == 204 || self.status == 304 || self.status < 200) {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        head.push_str("X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n");
        if self.close {
            head.push_str("Connection: close\r\n");
        } else if version == 0 {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        let mut head = head.into_bytes();
        // A small body goes out with its head: one system call, one segment.
        if let Payload::Bytes(b) = &self.payload {
            if !head_only && b.len() <= SMALL_BODY {
                head.extend_from_slice(b);
                w.write_all(&head)?;
                w.flush()?;
                return Ok(b.len() as u64);
            }
        }
        w.write_all(&head)?;
        if head_only {
            w.flush()?;
            return Ok(0);
        }
        let written = match &mut self.payload {
            Payload::Bytes(b) => {
                w.write_all(b)?;
                b.len() as u64
            }
            Payload::Static(b) => {
                w.write_all(b)?;
                b.len() as u64
            }
            Payload::File(f, len) => {
                let copied = io::copy(&mut f.take(*len), w)?;
                if copied != *len {
                    // The file shrank under us: the length we promised is a lie now.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while sending",
                    ));
                }
                copied
            }
        };
        w.flush()?;
        Ok(written)
    }
}

/// The reason phrase for the statuses tinydrop sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        423 => "Locked",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        460 => "Checksum Mismatch",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(mut r: Response, head_only: bool) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out, head_only, 1).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn errors_are_json_sentences_with_their_status() {
        let text = written(
            Response::error(&Error::MethodNotAllowed { allow: "GET, HEAD" }, None),
            false,
        );
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text
            .ends_with("{\"error\":\"This path does not take that method; it takes GET, HEAD.\"}"));
    }

    #[test]
    fn head_requests_get_the_length_but_no_body() {
        let text = written(Response::json(200, "{}".into()), true);
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn header_values_cannot_split_the_head() {
        let text = written(
            Response::empty(204).with_header("X-A", "a\r\nX-B: b"),
            false,
        );
        assert!(text.contains("X-A: aX-B: b\r\n"));
        assert!(!text.contains("Content-Length"));
    }
}
