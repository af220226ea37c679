//! Reading a request head: bounded in bytes, header count and time, then
//! strict about how the body is framed.

use std::time::{Duration, Instant};

use super::Conn;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head, owning its strings.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The path part of the target, still percent-encoded.
    pub path: String,
    /// What followed `?`, if anything.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// The client wants to keep the connection open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent and not yet answered.
    pub expect_continue: bool,
}

impl Head {
    /// The first value of header `name` (lower case) if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection ended, went idle or the server is stopping, before a
    /// request began: close quietly.
    Idle,
    /// A request began but did not complete in time: close.
    TimedOut,
    /// The request line alone is longer than the limit (414).
    UriTooLong,
    /// The head is longer than the limit, or has too many headers (431).
    TooLarge,
    /// Not HTTP, or framing that could be misread (400).
    Malformed(String),
}

/// Limits for one head.
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
    /// Time allowed from the start of waiting to the end of the head.
    pub timeout: Duration,
    /// Time allowed for the first byte (keep-alive idle for later requests).
    pub first_byte: Duration,
    /// This is the connection's first request: the deadline counts from its start.
    pub first: bool,
}

/// Reads and parses the next request head from `conn`.
pub fn read_head(
    conn: &mut Conn,
    limits: &HeadLimits,
    stop: &dyn Fn() -> bool,
) -> Result<Head, HeadError> {
    let begin = Instant::now();
    match conn.wait_readable(begin + limits.first_byte, stop) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(HeadError::Idle),
    }
    // The head deadline counts from the connection's start for its first
    // request, and from the first byte of later ones.
    let deadline = if limits.first { begin } else { Instant::now() } + limits.timeout;
    // Bytes already offered to the parser: it runs again only when a line
    // has ended since, so a head sent a byte at a time costs one parse per
    // line, not one per byte.
    let mut parsed: usize = 0;
    loop {
        // Empty lines before a request are allowed (RFC 9112, 2.2).
        let skip = conn
            .buffered()
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        conn.consume(skip);
        parsed = parsed.saturating_sub(skip);
        let new_line =
            memchr::memchr(b'\n', &conn.buffered()[parsed.min(conn.buffered().len())..]).is_some();
        if new_line {
            parsed = conn.buffered().len();
            if let Some((head, len)) = try_parse(conn.buffered(), limits)? {
                conn.consume(len);
                return Ok(head);
            }
        }
        let now = Instant::now();
        let stopped = if conn.buffered().len() >= limits.max_bytes {
            Some(if memchr::memchr(b'\n', conn.buffered()).is_none() {
                HeadError::UriTooLong
            } else {
                HeadError::TooLarge
            })
        } else if now >= deadline {
            Some(HeadError::TimedOut)
        } else {
            match conn.fill(deadline - now) {
                Ok(0) if conn.buffered().is_empty() => Some(HeadError::Idle),
                Ok(0) => Some(HeadError::TimedOut),
                Ok(_) => None,
                Err(e) if super::is_timeout(&e) => Some(HeadError::TimedOut),
                Err(_) => Some(HeadError::Idle),
            }
        };
        if let Some(why) = stopped {
            // Bytes the parser has not seen may already show the request is
            // malformed: say so, whatever way the stream was split.
            if parsed < conn.buffered().len() {
                try_parse(conn.buffered(), limits)?;
            }
            return Err(why);
        }
    }
}

/// Parses `bytes` if they hold a complete head: the head and its length.
fn try_parse(bytes: &[u8], limits: &HeadLimits) -> Result<Option<(Head, usize)>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => {
            return Err(HeadError::Malformed(format!(
                "The request head is not valid HTTP ({e})."
            )))
        }
    };
    let method = req.method.unwrap_or_default().to_string();
    let version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or_default();
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let (path, query) = split_target(target)?;
    let framing = framing(&headers, version)?;
    let connection = header_tokens(&headers, "connection");
    let keep_alive = if version == 0 {
        connection.iter().any(|t| t == "keep-alive")
    } else {
        !connection.iter().any(|t| t == "close")
    };
    let expect_continue = version == 1
        && header_tokens(&headers, "expect")
            .iter()
            .any(|t| t == "100-continue");
    Ok(Some((
        Head {
            method,
            path,
            query,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
        },
        len,
    )))
}

/// Splits the request target into path and query; absolute-form targets
/// (`http://host/path`) keep only their path.
fn split_target(target: &str) -> Result<(String, Option<String>), HeadError> {
    let rest = if target.starts_with('/') || target == "*" {
        target
    } else if let Some(after) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        after.find('/').map(|i| &after[i..]).unwrap_or("/")
    } else {
        return Err(HeadError::Malformed(
            "The request target must be a path starting with /.".into(),
        ));
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    Ok(match rest.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (rest.to_string(), None),
    })
}

/// Comma-separated tokens of every `name` header, lower-cased and trimmed.
fn header_tokens(headers: &[(String, Vec<u8>)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Strict framing: one Content-Length of digits (identical repeats allowed),
/// or `Transfer-Encoding: chunked` alone. Anything else could be read two
/// ways by two parsers (request smuggling), so it is refused.
fn framing(headers: &[(String, Vec<u8>)], version: u8) -> Result<Framing, HeadError> {
    let bad = |why: &str| HeadError::Malformed(why.to_string());
    let mut length: Option<u64> = None;
    for (_, v) in headers.iter().filter(|(n, _)| n == "content-length") {
        let v = trim_ows(v);
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(bad("Content-Length must be digits only."));
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("Content-Length must be digits only."))?;
        match length {
            Some(prev) if prev != n => {
                return Err(bad("The request has two different Content-Length headers."))
            }
            _ => length = Some(n),
        }
    }
    let te: Vec<&(String, Vec<u8>)> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .collect();
    if te.is_empty() {
        return Ok(length.map_or(Framing::None, Framing::Length));
    }
    if length.is_some() {
        return Err(bad(
            "The request has both Content-Length and Transfer-Encoding.",
        ));
    }
    if version == 0 {
        return Err(bad("HTTP/1.0 requests cannot use Transfer-Encoding."));
    }
    if te.len() > 1 || !trim_ows(&te[0].1).eq_ignore_ascii_case(b"chunked") {
        return Err(bad("Transfer-Encoding must be exactly \"chunked\"."));
    }
    Ok(Framing::Chunked)
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 16 * 1024,
            max_headers: 100,
            timeout: Duration::from_secs(1),
            first_byte: Duration::from_secs(1),
            first: true,
        }
    }

    fn parse(s: &str) -> Result<Option<Head>, HeadError> {
        try_parse(s.as_bytes(), &limits()).map(|o| o.map(|(h, _)| h))
    }

    fn framing_of(s: &str) -> Result<Framing, String> {
        match parse(s) {
            Ok(Some(h)) => Ok(h.framing),
            Ok(None) => Err("partial".into()),
            Err(HeadError::Malformed(m)) => Err(m),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn a_simple_get_parses_with_path_and_query() {
        let h = parse("GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/a%20b");
        assert_eq!(h.query.as_deref(), Some("x=1"));
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
        assert_eq!(h.header("host"), Some("h"));
    }

    #[test]
    fn framing_is_strict() {
        let base = "POST / HTTP/1.1\r\nHost: h\r\n";
        assert_eq!(
            framing_of(&format!("{base}Content-Length: 5\r\n\r\n")),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing_of(&format!(
                "{base}Content-Length: 5\r\nContent-Length: 5\r\n\r\n"
            )),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing_of(&format!("{base}Transfer-Encoding: Chunked\r\n\r\n")),
            Ok(Framing::Chunked)
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5x\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\n",
        ] {
            assert!(
                framing_of(&format!("{base}{bad}\r\n")).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(framing_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn huge_declared_lengths_are_just_numbers() {
        let h = parse("PUT /files/x HTTP/1.1\r\nContent-Length: 1099511627776\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(1 << 40));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(
            parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            parse("PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .unwrap()
                .expect_continue
        );
    }

    #[test]
    fn partial_heads_ask_for_more_and_garbage_is_refused() {
        assert!(parse("GET / HTTP/1.1\r\nHost:").unwrap().is_none());
        assert!(matches!(
            parse("GET\x01 / HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET nope HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(matches!(
            parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn heads_read_the_same_however_the_stream_splits() {
        use crate::http::{Conn, Stream};
        let input =
            b"\r\nPUT /files/a%20b?x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET";
        for chunk in 1..=input.len() {
            let mut conn = Conn::new(
                Stream::memory(input.to_vec(), chunk),
                ([127, 0, 0, 1], 1).into(),
                1024,
            );
            let head = read_head(&mut conn, &limits(), &|| false)
                .unwrap_or_else(|e| panic!("reads of {chunk}: {e:?}"));
            assert_eq!(
                (head.method.as_str(), head.path.as_str()),
                ("PUT", "/files/a%20b")
            );
            assert_eq!(head.framing, Framing::Length(3));
            assert!(
                b"abcGET".starts_with(conn.buffered()),
                "the body start stays buffered"
            );
        }
        // A head cut short is not a request.
        for cut in 0..input.len() - 6 {
            let mut conn = Conn::new(
                Stream::memory(input[..cut].to_vec(), 7),
                ([127, 0, 0, 1], 1).into(),
                1024,
            );
            assert!(
                read_head(&mut conn, &limits(), &|| false).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_bad_header_in_an_unfinished_line_is_malformed_however_the_stream_splits() {
        use crate::http::{Conn, Stream};
        // Found by the `head` fuzz target: the parser runs once per line, so
        // a stream that ends inside a bad line must still be read as malformed.
        let input = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encart/form-datipart/for";
        for chunk in [1, 5, input.len()] {
            let mut conn = Conn::new(
                Stream::memory(input.to_vec(), chunk),
                ([127, 0, 0, 1], 1).into(),
                1024,
            );
            let got = read_head(&mut conn, &limits(), &|| false);
            assert!(
                matches!(got, Err(HeadError::Malformed(_))),
                "reads of {chunk}: {got:?}"
            );
        }
    }

    #[test]
    fn absolute_form_targets_keep_their_path() {
        let h = parse("GET http://example/api/health HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path, "/api/health");
    }
}
