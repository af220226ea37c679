//! The one route table: (method, path) -> handler, and the conversion of a
//! handler's `Result` into a response. The only module that knows both HTTP
//! and storage.

use crate::config::Config;
use crate::error::Error;
use crate::http::{Body, Head, Response};
use crate::json;

/// The page, compiled in.
const INDEX_HTML: &str = include_str!("../index.html");

/// Everything a handler may use, shared read-only by the workers.
pub struct App {
    pub config: Config,
}

impl App {
    pub fn new(config: Config) -> Result<App, Error> {
        std::fs::create_dir_all(&config.dir)?;
        Ok(App { config })
    }
}

/// Paths tinydrop serves, before the method is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Page,
    Health,
    ApiConfig,
    /// Debug builds only: a handler that panics, to test that a panic
    /// answers 500 and the worker lives on.
    #[cfg(debug_assertions)]
    DebugPanic,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/" | "/index.html" => Route::Page,
            "/api/health" => Route::Health,
            "/api/config" => Route::ApiConfig,
            #[cfg(debug_assertions)]
            "/api/debug/panic" => Route::DebugPanic,
            _ => return None,
        })
    }

    /// The methods a path takes, for 405's `Allow`.
    fn allow(self) -> &'static str {
        match self {
            Route::Page | Route::Health | Route::ApiConfig => "GET, HEAD",
            #[cfg(debug_assertions)]
            Route::DebugPanic => "GET",
        }
    }
}

/// Answers one request. Never panics on client input; errors become JSON.
pub fn handle(app: &App, head: &Head, body: &mut Body) -> Response {
    match dispatch(app, head, body) {
        Ok(resp) => resp,
        Err(e) => Response::error(&e, None),
    }
}

#[rustfmt::skip]
fn dispatch(app: &App, head: &Head, _body: &mut Body) -> Result<Response, Error> {
    let route = Route::of(&head.path)
        .ok_or_else(|| Error::NotFound(format!("Nothing is at {}.", head.path)))?;
    match (head.method.as_str(), route) {
        ("GET" | "HEAD", Route::Page)      => Ok(page()),
        ("GET" | "HEAD", Route::Health)    => Ok(Response::json(200, r#"{"status":"ok"}"#.into())),
        ("GET" | "HEAD", Route::ApiConfig) => Ok(api_config(app)),
        #[cfg(debug_assertions)]
        ("GET", Route::DebugPanic)         => panic!("the test route panicked on purpose"),
        _ => Err(Error::MethodNotAllowed { allow: route.allow() }),
    }
}

fn page() -> Response {
    Response::empty(200)
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_header("Cache-Control", "no-cache")
        .with_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
        .with_payload(crate::http::response::Payload::Static(INDEX_HTML.as_bytes()))
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
