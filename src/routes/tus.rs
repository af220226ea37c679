//! tus 1.0.0 over HTTP: the handlers of `/api/tus/`. They check the tus
//! headers (`Tus-Resumable`, `Upload-Length`, `Upload-Offset`,
//! `Upload-Metadata`, `Upload-Checksum`), call [`Tus`], publish a complete
//! upload through the store, and answer with `Upload-Offset`,
//! `Upload-Expires` and the `Tinydrop-*` headers of a published upload.

use std::net::SocketAddr;
use std::time::Instant;

use super::upload::{log_outcome, Outcome};
use super::App;
use crate::clock;
use crate::error::Error;
use crate::http::{Body, Framing, Head, Response};
use crate::names::SafeName;
use crate::tus::{self, Tus};

/// The tus protocol version we speak.
pub(super) const TUS_VERSION: &str = "1.0.0";

/// Every tus request but OPTIONS must say which version it speaks.
fn tus_check_version(head: &Head) -> Result<(), Error> {
    match head.header("tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        Some(other) => Err(Error::PreconditionFailed(format!(
            "This server speaks tus {TUS_VERSION}, not {other:?}."
        ))),
        None => Err(Error::PreconditionFailed(format!(
            "The Tus-Resumable header is missing; this server speaks tus {TUS_VERSION}."
        ))),
    }
}

pub(super) fn tus_options(app: &App) -> Response {
    Response::empty(204)
        .with_header("Tus-Version", TUS_VERSION)
        .with_header(
            "Tus-Extension",
            "creation,creation-with-upload,termination,expiration,checksum",
        )
        .with_header("Tus-Max-Size", app.config.max_size.to_string())
        .with_header("Tus-Checksum-Algorithm", "sha1,sha256")
}

/// A header that must be a plain non-negative number.
fn number_header(head: &Head, name: &str) -> Result<Option<u64>, Error> {
    match head.header(name) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse()
            .map(Some)
            .map_err(|_| Error::BadRequest(format!("{name} must be a number."))),
        Some(_) => Err(Error::BadRequest(format!(
            "The {name} header must be a whole number of bytes."
        ))),
    }
}

fn expires_header(expires: std::time::SystemTime) -> String {
    clock::http_date(expires)
}

/// `POST /api/tus/`: creation, and creation-with-upload when a body comes.
pub(super) fn tus_create(app: &App, head: &Head, body: &mut Body) -> Result<Response, Error> {
    tus_check_version(head)?;
    if head.header("upload-defer-length").is_some() {
        return Err(Error::BadRequest(
            "This server needs Upload-Length at creation (no deferred length).".into(),
        ));
    }
    let length = number_header(head, "upload-length")?.ok_or_else(|| {
        Error::BadRequest("Upload-Length is missing: say how many bytes the file has.".into())
    })?;
    if length > app.config.max_size {
        return Err(Error::TooLarge {
            limit: app.config.max_size,
        });
    }
    let metadata = head.header("upload-metadata").unwrap_or("");
    let pairs = Tus::parse_metadata(metadata)?;
    let client_name = Tus::name_from_metadata(&pairs)?.ok_or_else(|| {
        Error::BadRequest(
            "Upload-Metadata must name the file (relativePath, filename or name).".into(),
        )
    })?;
    SafeName::parse(&client_name)?;
    app.store.check_room(length)?;
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    if has_body {
        tus_check_content_type(head)?;
        if let Framing::Length(n) = head.framing {
            if n > length {
                return Err(Error::TooLarge { limit: length });
            }
        }
    }
    let id = app.tus.create(length, &client_name, metadata)?;
    let location = format!("/api/tus/{id}");
    let started = Instant::now();
    let (offset, completed) = if has_body || length == 0 {
        match app.tus.append(
            &id,
            0,
            body,
            tus_checksum(head)?
                .as_ref()
                .map(|(a, d)| (a.as_str(), d.as_slice())),
        ) {
            Ok(r) => r,
            // The upload exists; tell the client where, so it can resume.
            Err(e) if !e.closes_connection() => {
                return Ok(Response::error(&e, None).with_header("Location", location));
            }
            Err(e) => return Err(e),
        }
    } else {
        (0, None)
    };
    let info = app.tus.info(&id).ok();
    let mut resp = Response::empty(201)
        .with_header("Location", location)
        .with_header("Upload-Offset", offset.to_string());
    if let Some(info) = info {
        resp = resp.with_header("Upload-Expires", expires_header(info.expires));
    }
    if let Some(done) = completed {
        resp = tus_publish(app, body.peer(), done, started, resp)?;
    }
    Ok(resp)
}

fn tus_check_content_type(head: &Head) -> Result<(), Error> {
    let ct = head.header("content-type").unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/offset+octet-stream") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(
            "A tus PATCH body must have Content-Type: application/offset+octet-stream.".into(),
        ))
    }
}

/// `Upload-Checksum: sha1 <base64>`: the algorithm (lower case) and digest.
fn tus_checksum(head: &Head) -> Result<Option<(String, Vec<u8>)>, Error> {
    let Some(v) = head.header("upload-checksum") else {
        return Ok(None);
    };
    let (alg, b64) = v
        .split_once(' ')
        .ok_or_else(|| Error::BadRequest("Upload-Checksum must be \"ALGORITHM BASE64\".".into()))?;
    let digest = crate::base64::decode(b64.trim())
        .ok_or_else(|| Error::BadRequest("Upload-Checksum's digest is not valid base64.".into()))?;
    Ok(Some((alg.trim().to_ascii_lowercase(), digest)))
}

/// Publishes a finished tus upload through the store and adds the
/// `Tinydrop-*` headers to `resp`.
fn tus_publish(
    app: &App,
    peer: SocketAddr,
    done: tus::Completed,
    started: Instant,
    resp: Response,
) -> Result<Response, Error> {
    let name = SafeName::parse(&done.name)?;
    let saved = app
        .store
        .publish_file(&done.data_path, &name, done.size, &done.sha256)?;
    let client_name = done.name.clone();
    if let Err(e) = app.tus.finish(done, &saved.saved_as, saved.duplicate) {
        // The upload stays complete and unpublished: the next HEAD publishes
        // it again, as a duplicate.
        log::warn!("tus upload of {client_name:?} published but not recorded as finished: {e}");
    }
    let resp = tus_finished_headers(
        resp,
        &tus::Finished {
            sha256: saved.sha256.clone(),
            saved_as: Some(saved.saved_as.clone()),
            duplicate: saved.duplicate,
        },
    );
    log_outcome(
        peer,
        &Outcome::Saved {
            name: client_name,
            saved,
        },
        started,
    );
    Ok(resp)
}

/// The `Tinydrop-*` headers of a published upload: `Tinydrop-Saved-As`
/// (percent-encoded), `Tinydrop-Sha256` and `Tinydrop-Status` (`saved` or
/// `duplicate`). Where a crash lost the name (see `crate::tus`) only the sha256.
fn tus_finished_headers(resp: Response, finished: &tus::Finished) -> Response {
    let resp = resp.with_header("Tinydrop-Sha256", finished.sha256.clone());
    match &finished.saved_as {
        Some(saved_as) => resp
            .with_header("Tinydrop-Saved-As", percent_encode_header(saved_as))
            .with_header(
                "Tinydrop-Status",
                if finished.duplicate {
                    "duplicate"
                } else {
                    "saved"
                },
            ),
        None => resp,
    }
}

/// Header values are ASCII: non-ASCII and control bytes of a stored name
/// are percent-encoded (decode with `decodeURIComponent`).
fn percent_encode_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `HEAD /api/tus/<id>`: where the upload stands. An upload whose bytes all
/// arrived but that was not published (its last answer was lost) is
/// published now. A finished one (until its record expires) answers with
/// the offset at the length and the `Tinydrop-*` headers of its publishing.
pub(super) fn tus_head(
    app: &App,
    head: &Head,
    peer: SocketAddr,
    id: &str,
) -> Result<Response, Error> {
    tus_check_version(head)?;
    let info = app.tus.info(id)?;
    let resp = tus_describe(&info);
    if let Some(finished) = &info.finished {
        return Ok(tus_finished_headers(resp, finished));
    }
    if info.offset == info.length {
        match app.tus.completed(id) {
            Ok(Some(done)) => return tus_publish(app, peer, done, Instant::now(), resp),
            // Finished by another request meanwhile.
            Err(Error::NotFound(_)) => {
                if let Ok(info) = app.tus.info(id) {
                    if let Some(finished) = &info.finished {
                        return Ok(tus_finished_headers(tus_describe(&info), finished));
                    }
                }
            }
            // Being published right now (Locked), or publishing can wait.
            _ => {}
        }
    }
    Ok(resp)
}

/// The 200 answer to `HEAD`, without the `Tinydrop-*` headers.
fn tus_describe(info: &tus::Info) -> Response {
    let mut resp = Response::empty(200)
        .with_header("Upload-Offset", info.offset.to_string())
        .with_header("Upload-Length", info.length.to_string())
        .with_header("Upload-Expires", expires_header(info.expires))
        .with_header("Cache-Control", "no-store");
    if !info.metadata.is_empty() {
        resp = resp.with_header("Upload-Metadata", info.metadata.clone());
    }
    resp
}

/// `PATCH /api/tus/<id>`: append at `Upload-Offset`.
pub(super) fn tus_patch(
    app: &App,
    head: &Head,
    body: &mut Body,
    id: &str,
) -> Result<Response, Error> {
    tus_check_version(head)?;
    tus_check_content_type(head)?;
    let offset = number_header(head, "upload-offset")?
        .ok_or_else(|| Error::BadRequest("Upload-Offset is missing.".into()))?;
    let checksum = tus_checksum(head)?;
    let info = app.tus.info(id)?;
    if info.finished.is_some() {
        return tus_patch_finished(head, body, offset, &info);
    }
    if offset != info.offset {
        return Err(Error::Conflict(format!(
            "The upload is at byte {}, not {offset}; continue from byte {}.",
            info.offset, info.offset
        )));
    }
    match head.framing {
        Framing::Length(n) if n > info.length - info.offset => {
            return Err(Error::TooLarge { limit: info.length });
        }
        Framing::Length(n) => app.store.check_room(n)?,
        Framing::Chunked => app.store.check_room(info.length - info.offset)?,
        Framing::None => {}
    }
    let started = Instant::now();
    let peer = body.peer();
    let appended = app.tus.append(
        id,
        offset,
        body,
        checksum.as_ref().map(|(a, d)| (a.as_str(), d.as_slice())),
    );
    let (new_offset, completed) = match appended {
        // Finished by another request since the look-up (nothing was read).
        Err(Error::NotFound(why)) => match app.tus.info(id) {
            Ok(info) if info.finished.is_some() => {
                return tus_patch_finished(head, body, offset, &info)
            }
            _ => return Err(Error::NotFound(why)),
        },
        other => other?,
    };
    let mut resp = Response::empty(204).with_header("Upload-Offset", new_offset.to_string());
    if let Ok(info) = app.tus.info(id) {
        resp = resp.with_header("Upload-Expires", expires_header(info.expires));
    }
    if let Some(done) = completed {
        resp = tus_publish(app, peer, done, started, resp)?;
    }
    Ok(resp)
}

/// `PATCH` on a finished upload: it has all its bytes, so only an empty
/// PATCH at its length succeeds (204 with the `Tinydrop-*` headers, as if it
/// were the last PATCH whose answer the client lost).
///
/// - Another offset is 409, as for any upload: the offset is the length.
/// - Bytes at the length are 413, not 409: the offset is right, so tus'
///   409 (an `Upload-Offset` that differs from the upload's) does not fit;
///   the body would take the upload past its `Upload-Length`, which this
///   server answers with 413 for uploads in progress too (tusd does the same
///   there, "upload's size exceeded"; for a completed upload tusd answers
///   204 without reading the body, but silently dropping bytes hides a
///   client bug). Nothing is read beyond one byte of a chunked body.
fn tus_patch_finished(
    head: &Head,
    body: &mut Body,
    offset: u64,
    info: &tus::Info,
) -> Result<Response, Error> {
    let Some(finished) = &info.finished else {
        return Err(Error::Internal("The upload is not finished.".into()));
    };
    if offset != info.length {
        return Err(Error::Conflict(format!(
            "The upload is complete: all {} bytes arrived; continue from byte {}.",
            info.length, info.length
        )));
    }
    let has_bytes = match head.framing {
        Framing::None | Framing::Length(0) => false,
        Framing::Length(_) => true,
        Framing::Chunked => {
            let mut byte = [0u8; 1];
            loop {
                match std::io::Read::read(body, &mut byte) {
                    Ok(n) => break n > 0,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    if has_bytes {
        return Err(Error::TooLarge { limit: info.length });
    }
    let resp = Response::empty(204)
        .with_header("Upload-Offset", info.length.to_string())
        .with_header("Upload-Expires", expires_header(info.expires));
    Ok(tus_finished_headers(resp, finished))
}

/// `DELETE /api/tus/<id>`: termination; for a finished upload, its record
/// (the published file stays).
pub(super) fn tus_delete(app: &App, head: &Head, id: &str) -> Result<Response, Error> {
    tus_check_version(head)?;
    app.tus.terminate(id)?;
    Ok(Response::empty(204))
}
