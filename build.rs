//! Prepares the page for embedding: `index.html` without indentation and
//! without whole-line `//` comments (about 9 KB of the 1 MiB budget). The
//! page has no multi-line strings or template literals, so both are safe;
//! the browser tests run against exactly this copy.

use std::env;
use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=index.html");
    let page = fs::read_to_string("index.html").expect("index.html at the top level");
    let mut out = String::with_capacity(page.len());
    for line in page.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let dest = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("index.html");
    fs::write(dest, out).expect("write the embedded page");
}
