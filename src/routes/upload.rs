//! The upload handlers: multipart `POST /` and `PUT /files/<path>`, the
//! JSON answer with one outcome per file, and the one log line per outcome.

use std::net::SocketAddr;
use std::time::Instant;

use log::info;

use super::{file_name, App};
use crate::error::{decimal, Error};
use crate::http::{Body, Framing, Head, Response};
use crate::json;
use crate::multipart::{self, Multipart};
use crate::names::SafeName;
use crate::store::Saved;

/// The outcome of one file of an upload.
pub(super) enum Outcome {
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
pub(super) fn log_outcome(peer: SocketAddr, outcome: &Outcome, started: Instant) {
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
pub(super) fn upload_form(app: &App, head: &Head, body: &mut Body) -> Result<Response, Error> {
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

/// `PUT /files/<path>`: the raw body is the file.
pub(super) fn upload_put(
    app: &App,
    head: &Head,
    body: &mut Body,
    path: &str,
) -> Result<Response, Error> {
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
