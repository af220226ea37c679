//! tinydrop: drop files of any size onto a machine over HTTP.
//!
//! The data flow of one upload:
//!
//! 1. [`server`] accepts a connection and queues it for a fixed pool of
//!    worker threads (bounded queue, per-address caps).
//! 2. A worker reads the request head ([`http::head`]), checks framing, and
//!    hands it with a lazy body reader ([`http::Body`]) to [`routes`].
//! 3. The route checks size and free space before reading, then streams the
//!    body (through [`multipart`] for form uploads) into the [`store`]: a
//!    temp file under `DIR/.tinydrop/tmp`, hashed as it is written, synced,
//!    and published under a safe ([`names`]) name that never clobbers.
//! 4. Resumable uploads ([`tus`]) keep their partial data on disk and publish
//!    through the same store when complete.
#![forbid(unsafe_code)]

pub mod auth;
pub mod base64;
pub mod clock;
pub mod config;
pub mod download;
pub mod error;
pub mod hashing;
pub mod http;
pub mod json;
pub mod multipart;
pub mod names;
pub mod qr;
pub mod routes;
pub mod server;
pub mod store;
pub mod tls;
pub mod tus;
pub mod writeback;
