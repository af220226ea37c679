//! Integration tests: the real binary on `--port 0`, real sockets, real files.

mod util;

mod access;
mod big_uploads;
mod cli;
mod core;
mod faults;
mod tls;
mod tus;
mod tus_clients;
mod uploads;
