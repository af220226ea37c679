//! tinydrop: drop files of any size onto a machine over HTTP.
#![forbid(unsafe_code)]

pub mod error;
pub mod multipart;
