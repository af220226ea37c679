//! The one error type of tinydrop.
//!
//! Every variant's `Display` reads as a sentence a person understands, because
//! it is exactly what a client sees in `{"error": "..."}`. The HTTP status of
//! each variant is decided in one place, [`Error::status`], matching API.md.

use std::fmt;
use std::io;

/// Everything that can go wrong while serving a request.
#[derive(Debug)]
pub enum Error {
    /// The request is malformed; the sentence says how.
    BadRequest(String),
    /// No credentials, or wrong ones.
    Unauthorized,
    /// The server is configured not to allow this.
    Forbidden(String),
    /// Nothing is at that path.
    NotFound(String),
    /// The path exists but not with this method; `allow` lists the methods that work.
    MethodNotAllowed { allow: &'static str },
    /// The request conflicts with the current state (for example a tus offset mismatch).
    Conflict(String),
    /// A body is needed and the request declared neither a length nor chunked encoding.
    LengthRequired,
    /// A precondition header is missing or has an unsupported value (tus `Tus-Resumable`).
    PreconditionFailed(String),
    /// The body (or one file in it) is larger than `--max-size`.
    TooLarge { limit: u64 },
    /// A `Range` lies outside the file.
    RangeNotSatisfiable(String),
    /// The request target is longer than the head limit.
    UriTooLong,
    /// The content type is not one this route takes.
    UnsupportedMediaType(String),
    /// The resource is busy with another request (tus upload with a PATCH in flight).
    Locked(String),
    /// The request head is larger than the limit.
    HeadersTooLarge,
    /// Too many failed attempts from one address.
    TooManyRequests,
    /// A tus checksum did not match the bytes received.
    ChecksumMismatch,
    /// The disk is full (or the quota is used up).
    DiskFull,
    /// The client stopped sending in the middle of the body.
    BodyCut,
    /// The client sent nothing for too long.
    Timeout,
    /// The server is at a limit of connections; try again later.
    Unavailable(String),
    /// A handler panicked or an invariant broke; the sentence is generic.
    Internal(String),
    /// Any other I/O failure on the server's side.
    Io(io::Error),
}

/// Why reading a request body stopped early. Carried inside an `io::Error`
/// (kind `Other`) by body readers, and turned back into an [`Error`] by
/// `From<io::Error>`, so that code reading through `impl Read` keeps the cause.
#[derive(Debug)]
pub enum BodyError {
    /// More bytes than the limit.
    TooLarge { limit: u64 },
    /// The connection closed before the declared end of the body.
    Cut,
    /// The body's framing is invalid (for example a bad chunk size).
    Malformed(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "body larger than {limit} bytes"),
            BodyError::Cut => f.write_str("connection closed in the middle of the body"),
            BodyError::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    /// Wraps this cause in an `io::Error`, for `Read` implementations.
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

impl Error {
    /// The HTTP status code for this error; the one table of API.md.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::Timeout => 408,
            Error::Conflict(_) => 409,
            Error::LengthRequired => 411,
            Error::PreconditionFailed(_) => 412,
            Error::TooLarge { .. } => 413,
            Error::UriTooLong => 414,
            Error::RangeNotSatisfiable(_) => 416,
            Error::UnsupportedMediaType(_) => 415,
            Error::Locked(_) => 423,
            Error::TooManyRequests => 429,
            Error::HeadersTooLarge => 431,
            Error::ChecksumMismatch => 460,
            Error::BodyCut => 400,
            Error::Internal(_) | Error::Io(_) => 500,
            Error::Unavailable(_) => 503,
            Error::DiskFull => 507,
        }
    }

    /// Whether the connection must close after answering this error, because
    /// the rest of the request can no longer be trusted or read.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Error::BodyCut | Error::Timeout | Error::HeadersTooLarge | Error::UriTooLong
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => f.write_str(why),
            Error::Unauthorized => f.write_str("This server needs a user name and password."),
            Error::Forbidden(why) => f.write_str(why),
            Error::NotFound(what) => f.write_str(what),
            Error::MethodNotAllowed { allow } => {
                write!(f, "This path does not take that method; it takes {allow}.")
            }
            Error::Conflict(why) => f.write_str(why),
            Error::LengthRequired => f.write_str(
                "The request has no Content-Length and is not chunked, so its size is unknown.",
            ),
            Error::PreconditionFailed(why) => f.write_str(why),
            Error::TooLarge { limit } => write!(
                f,
                "The file is larger than this server accepts ({}).",
                human_size(*limit)
            ),
            Error::UriTooLong => f.write_str("The request path is too long."),
            Error::RangeNotSatisfiable(why) => f.write_str(why),
            Error::UnsupportedMediaType(why) => f.write_str(why),
            Error::Locked(why) => f.write_str(why),
            Error::TooManyRequests => {
                f.write_str("Too many failed log-ins from this address; wait a minute.")
            }
            Error::HeadersTooLarge => f.write_str("The request headers are too large."),
            Error::ChecksumMismatch => {
                f.write_str("The checksum does not match the bytes received; they were discarded.")
            }
            Error::DiskFull => f.write_str("The server's disk is full; nothing was saved."),
            Error::BodyCut => f.write_str("The connection closed before the whole upload arrived."),
            Error::Timeout => f.write_str("The client sent nothing for too long."),
            Error::Unavailable(why) => f.write_str(why),
            Error::Internal(why) => f.write_str(why),
            Error::Io(e) => write!(f, "The server could not complete this: {e}."),
        }
    }
}

impl std::error::Error for Error {}

/// `ENOSPC` and `EDQUOT` on Linux: both mean "no room to write".
fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28) | Some(122))
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        if let Some(body) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<BodyError>())
        {
            return match body {
                BodyError::TooLarge { limit } => Error::TooLarge { limit: *limit },
                BodyError::Cut => Error::BodyCut,
                BodyError::Malformed(why) => Error::BadRequest(why.clone()),
            };
        }
        if is_disk_full(&e) {
            return Error::DiskFull;
        }
        // ENAMETOOLONG: DIR plus a legal name can exceed what the file system takes.
        if e.raw_os_error() == Some(36) {
            return Error::BadRequest(
                "The file name is too long for the server's file system; use a shorter name or fewer folders."
                    .into(),
            );
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Error::BodyCut,
            _ => Error::Io(e),
        }
    }
}

/// `10737418240` -> `10 GiB`; `1536` -> `1.5 KiB`. For sentences, not for parsing.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let (mut unit, mut div) = ("KiB", 1024u64);
    for (i, u) in UNITS.iter().enumerate().skip(1) {
        let next = 1u64 << (10 * (i + 1));
        if bytes < next {
            break;
        }
        (unit, div) = (u, next);
    }
    if bytes % div == 0 {
        format!("{} {unit}", bytes / div)
    } else {
        format!("{} {unit}", decimal(bytes.into(), div.into(), 1))
    }
}

/// `num / den` with `places` decimals, rounded to nearest, in integers
/// (no float formatting code in the binary): `decimal(3, 2, 1)` is `1.5`.
pub fn decimal(num: u128, den: u128, places: u32) -> String {
    let scale = 10u128.pow(places);
    let den = den.max(1);
    let v = (num * scale + den / 2) / den;
    if places == 0 {
        return v.to_string();
    }
    format!(
        "{}.{:0width$}",
        v / scale,
        v % scale,
        width = places as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_survive_a_trip_through_io_error() {
        let e: Error = BodyError::TooLarge { limit: 5 }.into_io().into();
        assert_eq!(e.status(), 413);
        let e: Error = BodyError::Cut.into_io().into();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn enospc_is_disk_full() {
        let e: Error = io::Error::from_raw_os_error(28).into();
        assert_eq!(e.status(), 507);
    }

    #[test]
    fn human_sizes_read_well() {
        assert_eq!(human_size(10 * 1024 * 1024 * 1024), "10 GiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1024.0 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 + 1024 * 1024 / 4), "5.3 MiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
        assert_eq!(decimal(1, 3, 2), "0.33");
        assert_eq!(decimal(2, 3, 2), "0.67");
        assert_eq!(decimal(7, 1, 0), "7");
        assert_eq!(decimal(5, 0, 1), "5.0");
    }
}
