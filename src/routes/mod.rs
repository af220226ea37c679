//! The one route table: (method, path) -> handler, and the conversion of a
//! handler's `Result` into a response. The only module that knows both HTTP
//! and storage. The handlers of uploads (multipart `POST`, `PUT`) are in
//! `routes/upload.rs`, those of tus in `routes/tus.rs`.
//!
//! # Security
//!
//! Every client-supplied name (multipart filename, PUT path, tus metadata)
//! goes through [`SafeName::parse`] before it touches the file system, and
//! the store never follows a symlink out of DIR. Sizes are checked against
//! `--max-size` and free space before the body is read wherever a length was
//! declared, so a refused upload costs the client nothing.

use log::info;

use crate::auth::Auth;
use crate::config::Config;
use crate::error::Error;
use crate::http::response::Payload;
use crate::http::{percent_decode, Body, Head, Response};
use crate::names::SafeName;
use crate::store::Store;
use crate::tls::Acceptor;
use crate::tus::Tus;
use crate::{clock, download, json};

mod tus;
mod upload;

use self::tus::{tus_create, tus_delete, tus_head, tus_options, tus_patch, TUS_VERSION};
use self::upload::{upload_form, upload_put};

/// The page, compiled in (`build.rs` strips its indentation and comments).
const INDEX_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/index.html"));

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
