//! The baseline of `make bench`: the least an HTTP upload server must do.
//!
//! `tinydrop-sink [--port N] DIR`: a thread per connection; reads a request
//! head (up to 16 KiB), answers `100 Continue` when asked, writes the raw
//! body (multipart framing included, never parsed, never hashed) to a new
//! file in DIR with 1 MiB reads, then does what tinydrop does to make a
//! file durable: `sync_data` the file, then fsync the folder. Answers 200
//! with `{"saved_as":"NAME","size":N}` and keeps the connection alive.
//! Only `Content-Length` bodies (curl -T and -F send one).
//!
//! Prints `listening on http://127.0.0.1:PORT/` first, like tinydrop.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const BUF: usize = 1 << 20;
const HEAD_MAX: usize = 16 * 1024;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut port = 0u16;
    let mut dir = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--port" || args[i] == "-p" {
            port = args[i + 1].parse().expect("port");
            i += 2;
        } else {
            dir = Some(PathBuf::from(&args[i]));
            i += 1;
        }
    }
    let dir = Arc::new(dir.expect("usage: tinydrop-sink [--port N] DIR"));
    std::fs::create_dir_all(&*dir).expect("create DIR");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let local = listener.local_addr().expect("local addr");
    println!("listening on http://{local}/");
    io::stdout().flush().ok();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let dir = Arc::clone(&dir);
        thread::spawn(move || {
            if let Err(e) = serve(stream, &dir) {
                eprintln!("sink: {e}");
            }
        });
    }
}

fn serve(mut stream: TcpStream, dir: &Path) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; BUF];
    let (mut start, mut end) = (0, 0);
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(i) = find(&buf[start..end], b"\r\n\r\n") {
                break start + i + 4;
            }
            if end - start > HEAD_MAX {
                return Err(io::Error::other("head too large"));
            }
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            let n = stream.read(&mut buf[end..])?;
            if n == 0 {
                return Ok(());
            }
            end += n;
        };
        let head = String::from_utf8_lossy(&buf[start..head_end]).to_ascii_lowercase();
        start = head_end;
        let mut length: u64 = 0;
        let mut expect = false;
        for line in head.split("\r\n").skip(1) {
            if let Some(v) = line.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(io::Error::other)?;
            } else if line.starts_with("expect:") && line.contains("100-continue") {
                expect = true;
            } else if line.starts_with("transfer-encoding:") {
                stream.write_all(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
        }
        if expect && length > 0 {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let name = format!("upload-{}.bin", COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = dir.join(&name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut left = length;
        // Body bytes that came with the head.
        let have = ((end - start) as u64).min(left) as usize;
        file.write_all(&buf[start..start + have])?;
        start += have;
        left -= have as u64;
        if start == end {
            start = 0;
            end = 0;
        }
        while left > 0 {
            // Large reads straight from the socket (nothing else is buffered now).
            let want = (left.min(BUF as u64)) as usize;
            let n = stream.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::other("body cut"));
            }
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        file.sync_data()?;
        drop(file);
        File::open(dir)?.sync_all()?;
        let body = format!("{{\"saved_as\":\"{name}\",\"size\":{length}}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(resp.as_bytes())?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
