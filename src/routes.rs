//! The one route table: (method, path) -> handler, and the conversion of a
//! handler's `Result` into a response. The only module that knows both HTTP
//! and storage.
//!
//! # Security
//!
//! Every client-supplied name (multipart filename, PUT path, tus metadata)
//! goes through [`SafeName::parse`] before it touches the file system, and
//! the store never follows a symlink out of DIR. Sizes are checked against
//! `--max-size` and free space before the body is read wherever a length was
//! declared, so a refused upload costs the client nothing.

use std::net::SocketAddr;
use std::time::Instant;

use log::info;

use crate::auth::Auth;
use crate::config::Config;
use crate::error::{decimal, Error};
use crate::http::response::Payload;
use crate::http::{percent_decode, Body, Framing, Head, Response};
use crate::multipart::{self, Multipart};
use crate::names::SafeName;
use crate::store::{Saved, Store};
use crate::tls::Acceptor;
use crate::tus::{self, Tus};
use crate::{clock, download, json};

/// The page, compiled in (`build.rs` strips its indentation and comments).
const INDEX_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/index.html"));

/// The tus protocol version we speak.
const TUS_VERSION: &str = "1.0.0";

/// Everything a handler may use, shared read-only by the workers.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub tus: Tus,
    pub auth: Auth,
    /// Set when serving HTTPS.
    pub tls: Option<Acceptor>,
}

impl App {
    /// Opens DIR (creating it) and the resumable uploads kept in it.
    pub fn new(config: Config, tls: Option<Acceptor>) -> Result<App, Error> {
        let store = Store::open(&config.dir)?;
        let tus = Tus::open(store.tus_dir(), config.max_size, config.tus_expiry)?;
        let auth = Auth::new(config.users.clone());
        Ok(App {
            config,
            store,
            tus,
            auth,
            tls,
        })
    }
}

/// Paths tinydrop serves, before the method is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<'a> {
    Page,
    Health,
    ApiConfig,
    ApiFiles,
    /// `/files/<path>`, still percent-encoded.
    File(&'a str),
    TusCollection,
    TusUpload(&'a str),
    /// Debug builds only: a handler that panics, to test that a panic
    /// answers 500 and the worker lives on.
    #[cfg(debug_assertions)]
    DebugPanic,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Option<Route<'a>> {
        Some(match path {
            "/" | "/index.html" => Route::Page,
            "/api/health" => Route::Health,
            "/api/config" => Route::ApiConfig,
            "/api/files" => Route::ApiFiles,
            "/api/tus" | "/api/tus/" => Route::TusCollection,
            #[cfg(debug_assertions)]
            "/api/debug/panic" => Route::DebugPanic,
            _ => {
                if let Some(rest) = path.strip_prefix("/files/") {
                    Route::File(rest)
                } else if path == "/files" {
                    Route::File("")
                } else if let Some(id) = path.strip_prefix("/api/tus/") {
                    Route::TusUpload(id)
                } else {
                    return None;
                }
            }
        })
    }

    /// The methods a path takes, for 405's `Allow`.
    fn allow(&self) -> &'static str {
        match self {
            Route::Page => "GET, HEAD, POST",
            Route::Health | Route::ApiConfig | Route::ApiFiles => "GET, HEAD",
            Route::File(_) => "GET, HEAD, PUT, DELETE",
            Route::TusCollection => "OPTIONS, POST",
            Route::TusUpload(_) => "HEAD, PATCH, DELETE, OPTIONS",
            #[cfg(debug_assertions)]
            Route::DebugPanic => "GET",
        }
    }
}

/// Answers one request. Never panics on client input; errors become JSON.
pub fn handle(app: &App, head: &Head, body: &mut Body) -> Response {
    let allowed = app
        .auth
        .check(body.peer().ip(), head.header("authorization"));
    let resp = match allowed.and_then(|()| dispatch(app, head, body)) {
        Ok(resp) => resp,
        Err(e) => Response::error(&e, None),
    };
    if head.path.starts_with("/api/tus") {
        let _ = app.tus.sweep_if_due();
        // Every tus answer names the protocol version, errors included; a
        // 412 also says which versions this server speaks.
        let resp = resp.with_header("Tus-Resumable", TUS_VERSION);
        if resp.status == 412 {
            resp.with_header("Tus-Version", TUS_VERSION)
        } else {
            resp
        }
    } else {
        resp
    }
}

#[rustfmt::skip]
fn dispatch(app: &App, head: &Head, body: &mut Body) -> Result<Response, Error> {
    let route = Route::of(&head.path)
        .ok_or_else(|| Error::NotFound(format!("Nothing is at {}.", head.path)))?;
    match (head.method.as_str(), &route) {
        ("GET" | "HEAD", Route::Page)          => Ok(page()),
        ("POST",         Route::Page)          => upload_form(app, head, body),
        ("GET" | "HEAD", Route::Health)        => Ok(Response::json(200, r#"{"status":"ok"}"#.into())),
        ("GET" | "HEAD", Route::ApiConfig)     => Ok(api_config(app)),
        ("GET" | "HEAD", Route::ApiFiles)      => list_files(app),
        ("PUT",          Route::File(path))    => upload_put(app, head, body, path),
        ("GET" | "HEAD", Route::File(path))    => download(app, head, path),
        ("DELETE",       Route::File(path))    => delete(app, path),
        ("OPTIONS",      Route::TusCollection | Route::TusUpload(_)) => Ok(tus_options(app)),
        ("POST",         Route::TusCollection) => tus_create(app, head, body),
        ("HEAD",         Route::TusUpload(id)) => tus_head(app, head, body.peer(), id),
        ("PATCH",        Route::TusUpload(id)) => tus_patch(app, head, body, id),
        ("DELETE",       Route::TusUpload(id)) => tus_delete(app, head, id),
        #[cfg(debug_assertions)]
        ("GET",          Route::DebugPanic)    => panic!("the test route panicked on purpose"),
        _ => Err(Error::MethodNotAllowed { allow: route.allow() }),
    }
}

/// `GET /files/<path>` (with `--allow-download`): the stored file, with
/// single ranges; never through a symlink, never `.tinydrop`.
fn download(app: &App, head: &Head, path: &str) -> Result<Response, Error> {
    if !app.config.allow_download {
        return Err(Error::Forbidden(
            "Downloads are off on this server (start it with --allow-download).".into(),
        ));
    }
    let (_, name) = file_name(path)?;
    let (file, meta) = app.store.open_stored(&name)?;
    download::respond(
        name.as_str(),
        file,
        &meta,
        head.header("range"),
        head.header("if-none-match"),
    )
}

/// `DELETE /files/<path>` (with `--allow-delete`).
fn delete(app: &App, path: &str) -> Result<Response, Error> {
    if !app.config.allow_delete {
        return Err(Error::Forbidden(
            "Deleting is off on this server (start it with --allow-delete).".into(),
        ));
    }
    let (_, name) = file_name(path)?;
    app.store.remove(&name)?;
    info!("deleted {:?}", name.as_str());
    Ok(Response::empty(204))
}

fn page() -> Response {
    Response::empty(200)
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_header("Cache-Control", "no-cache")
        .with_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
        .with_payload(Payload::Static(INDEX_HTML.as_bytes()))
}

fn api_config(app: &App) -> Response {
    let c = &app.config;
    Response::json(
        200,
        json::object(&[
            ("max_size", c.max_size.to_string()),
            ("download", c.allow_download.to_string()),
            ("delete", c.allow_delete.to_string()),
        ]),
    )
}

fn list_files(app: &App) -> Result<Response, Error> {
    let files = app.store.list()?;
    let items = files.iter().map(|f| {
        json::object(&[
            ("path", json::string(&f.path)),
            ("size", f.size.to_string()),
            ("modified", json::string(&clock::rfc3339(f.modified))),
        ])
    });
    Ok(Response::json(200, json::array(items)).with_header("Cache-Control", "no-store"))
}

/// The outcome of one file of an upload.
enum Outcome {
    Saved { name: String, saved: Saved },
    Failed { name: String, error: Error },
}

impl Outcome {
    fn to_json(&self) -> String {
        match self {
            Outcome::Saved { name, saved } => json::object(&[
                ("name", json::string(name)),
                ("saved_as", json::string(&saved.saved_as)),
                ("size", saved.size.to_string()),
                ("sha256", json::string(&saved.sha256)),
                (
                    "status",
                    json::string(if saved.duplicate {
                        "duplicate"
                    } else {
                        "saved"
                    }),
                ),
            ]),
            Outcome::Failed { name, error } => json::object(&[
                ("name", json::string(name)),
                ("status", json::string("error")),
                ("error", json::string(&error.to_string())),
            ]),
        }
    }
}

/// The answer to an upload of one or more files: 201 when something was
/// saved, 200 when everything was a duplicate, else the first error's status.
/// `abort` is an error that stopped the request before all files were read.
fn upload_response(outcomes: &[Outcome], abort: Option<Error>) -> Response {
    let files = json::array(outcomes.iter().map(Outcome::to_json));
    if let Some(e) = abort {
        return Response::error(&e, (!outcomes.is_empty()).then_some(files));
    }
    let saved = outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Saved { saved, .. } if !saved.duplicate));
    let first_error = outcomes.iter().find_map(|o| match o {
        Outcome::Failed { error, .. } => Some(error),
        _ => None,
    });
    match (saved, first_error) {
        (true, _) => Response::json(201, json::object(&[("files", files)])),
        (false, Some(e)) => Response::error(e, Some(files)),
        (false, None) if outcomes.is_empty() => Response::error(
            &Error::BadRequest("The upload contained no files.".into()),
            None,
        ),
        (false, None) => Response::json(200, json::object(&[("files", files)])),
    }
}

/// One `info` line per file outcome: peer, stored name, size, hash prefix,
/// duration and speed.
fn log_outcome(peer: SocketAddr, outcome: &Outcome, started: Instant) {
    let micros = started.elapsed().as_micros();
    let secs = decimal(micros, 1_000_000, 2);
    match outcome {
        Outcome::Saved { name, saved } => {
            let mibs = decimal(u128::from(saved.size) * 1_000_000, micros << 20, 1);
            info!(
                "{peer} {} {:?} as {:?}: {} bytes, sha256 {}, {}s, {} MiB/s",
                if saved.duplicate {
                    "duplicate"
                } else {
                    "saved"
                },
                name,
                saved.saved_as,
                saved.size,
                saved.sha256.get(..12).unwrap_or(&saved.sha256),
                secs,
                mibs
            );
        }
        Outcome::Failed { name, error } => {
            info!("{peer} failed {name:?} after {secs}s: {error}");
        }
    }
}

/// Refuses a declared length that cannot be stored, before reading it.
fn check_declared(app: &App, len: u64, per_file_limit: bool) -> Result<(), Error> {
    if per_file_limit && len > app.config.max_size {
        return Err(Error::TooLarge {
            limit: app.config.max_size,
        });
    }
    app.store.check_room(len)
}

/// `POST /`: every part with a filename is saved; one outcome per file.
fn upload_form(app: &App, head: &Head, body: &mut Body) -> Result<Response, Error> {
    let content_type = head.header("content-type").unwrap_or("");
    let boundary = multipart::boundary_from_content_type(content_type)?;
    match head.framing {
        Framing::None => return Err(Error::LengthRequired),
        Framing::Length(len) => check_declared(app, len, false)?,
        Framing::Chunked => {}
    }
    let peer = body.peer();
    let max = app.config.max_size;
    let mut parts = Multipart::new(body, &boundary);
    let mut outcomes = Vec::new();
    loop {
        let part = match parts.next_part() {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(e) => return Ok(upload_response(&outcomes, Some(e))),
        };
        // A part without a filename is a text field; an empty filename is
        // a file input with nothing chosen. Both are skipped.
        let Some(client_name) = part.filename.filter(|f| !f.is_empty()) else {
            continue;
        };
        let started = Instant::now();
        let name = match SafeName::parse(&client_name) {
            Ok(name) => name,
            Err(error) => {
                let outcome = Outcome::Failed {
                    name: client_name,
                    error,
                };
                log_outcome(peer, &outcome, started);
                outcomes.push(outcome);
                continue;
            }
        };
        let mut temp = match app.store.begin() {
            Ok(t) => t,
            Err(e) => return Ok(upload_response(&outcomes, Some(e))),
        };
        let streamed: Result<(), Error> = loop {
            match parts.read_data() {
                Ok(Some(data)) => {
                    if temp.len() + data.len() as u64 > max {
                        break Err(Error::TooLarge { limit: max });
                    }
                    if let Err(e) = temp.write_all(data) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = streamed {
            // The temp file is removed on drop; the rest of the body is not read.
            info!(
                "{peer} failed {client_name:?} after {} bytes: {e}",
                temp.len()
            );
            return Ok(upload_response(&outcomes, Some(e)));
        }
        let outcome = match temp.publish(&app.store, &name) {
            Ok(saved) => Outcome::Saved {
                name: client_name,
                saved,
            },
            Err(error) if matches!(error, Error::DiskFull | Error::Io(_)) => {
                return Ok(upload_response(&outcomes, Some(error)));
            }
            Err(error) => Outcome::Failed {
                name: client_name,
                error,
            },
        };
        log_outcome(peer, &outcome, started);
        outcomes.push(outcome);
    }
    Ok(upload_response(&outcomes, None))
}

/// The safe name of a `/files/<path>` target.
fn file_name(path: &str) -> Result<(String, SafeName), Error> {
    let decoded = percent_decode(path).ok_or_else(|| {
        Error::BadRequest("The path has a broken %-escape or is not UTF-8.".into())
    })?;
    if decoded.is_empty() || decoded.ends_with('/') {
        return Err(Error::BadRequest(
            "Name the file in the path: PUT /files/NAME (curl -T FILE http://HOST/files/ does this).".into(),
        ));
    }
    let name = SafeName::parse(&decoded)?;
    Ok((decoded, name))
}

/// `PUT /files/<path>`: the raw body is the file.
fn upload_put(app: &App, head: &Head, body: &mut Body, path: &str) -> Result<Response, Error> {
    let (client_name, name) = file_name(path)?;
    match head.framing {
        Framing::None => return Err(Error::LengthRequired),
        Framing::Length(len) => check_declared(app, len, true)?,
        Framing::Chunked => {}
    }
    let started = Instant::now();
    let peer = body.peer();
    let max = app.config.max_size;
    body.set_limit(max);
    let outcome = match app.store.save(&name, body, max) {
        Ok(saved) => Outcome::Saved {
            name: client_name,
            saved,
        },
        Err(error) => {
            info!(
                "{peer} failed {client_name:?} after {}s: {error}",
                decimal(started.elapsed().as_micros(), 1_000_000, 2)
            );
            return Err(error);
        }
    };
    log_outcome(peer, &outcome, started);
    Ok(upload_response(&[outcome], None))
}

// ---- tus 1.0.0 -------------------------------------------------------------

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

fn tus_options(app: &App) -> Response {
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
fn tus_create(app: &App, head: &Head, body: &mut Body) -> Result<Response, Error> {
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
    let digest = tus::base64_decode(b64.trim())
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
/// `duplicate`). Where a crash lost the name (see tus.rs) only the sha256.
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
fn tus_head(app: &App, head: &Head, peer: SocketAddr, id: &str) -> Result<Response, Error> {
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
fn tus_patch(app: &App, head: &Head, body: &mut Body, id: &str) -> Result<Response, Error> {
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
fn tus_delete(app: &App, head: &Head, id: &str) -> Result<Response, Error> {
    tus_check_version(head)?;
    app.tus.terminate(id)?;
    Ok(Response::empty(204))
}
