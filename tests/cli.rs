//! The command line: help, version, usage errors (exit 2), runtime failures
//! (exit 1), environment variables.

use std::process::Command;
use std::time::Duration;

use crate::util::*;

#[test]
fn help_and_version_exit_zero() {
    let (code, out, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Usage: tinydrop") && out.contains("--max-size") && out.contains("TINYDROP_"),
        "{out}"
    );
    let (code, out, _) = run_cli(&["-V"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("tinydrop "), "{out}");
}

#[test]
fn a_bad_option_or_value_prints_one_line_and_usage_and_exits_two() {
    for args in [
        &["--bogus"][..],
        &["--port", "99999"],
        &["--max-size", "ten"],
        &["--threads", "0"],
        &["a", "b"],
        &["--auth", "x"],
    ] {
        let (code, out, err) = run_cli(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed to stdout: {out}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("tinydrop: "), "{args:?}: {err}");
        assert!(err.contains("Usage: tinydrop"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_bad_environment_value_is_a_usage_error_too() {
    let (code, _, err) = run_cli(&[], &[("TINYDROP_PORT", "eighty")]);
    assert_eq!(code, 2);
    assert!(err.contains("--port"), "{err}");
}

#[test]
fn a_port_in_use_is_one_clear_line_and_exit_one() {
    let first = Server::start(&[]);
    let port = first.addr.port().to_string();
    let tmp = TempDir::new();
    let (code, out, err) = run_cli(
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            tmp.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

#[test]
fn an_unusable_dir_is_one_clear_line_and_exit_one() {
    let tmp = TempDir::new();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let dir = file.join("uploads");
    let (code, _, err) = run_cli(
        &["--bind", "127.0.0.1", "--port", "0", dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot use"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn port_zero_prints_the_chosen_port_first_and_dir_is_created() {
    let s = Server::start(&[]);
    assert_ne!(s.addr.port(), 0);
    assert!(s.dir.is_dir(), "DIR was not created");
    assert_eq!(s.get("/api/health").status, 200);
}

#[test]
fn environment_variables_configure_and_the_command_line_wins() {
    let tmp = TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.env("TINYDROP_MAX_SIZE", "1K")
        .env("TINYDROP_ALLOW_DELETE", "true");
    let s = Server::spawn(cmd, &tmp.path().join("u"), &[]);
    let r = s.get("/api/config");
    assert_eq!(
        r.text(),
        r#"{"max_size":1024,"download":false,"delete":true}"#
    );
    drop(s);

    let mut cmd = Command::new(BIN);
    cmd.env("TINYDROP_MAX_SIZE", "1K");
    let s = Server::spawn(cmd, &tmp.path().join("u"), &["--max-size", "2K"]);
    assert!(s.get("/api/config").text().contains("\"max_size\":2048"));
}

#[test]
fn sigterm_when_idle_exits_zero_quickly() {
    let mut s = Server::start(&[]);
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn qr_prints_a_scannable_block_after_the_urls() {
    use std::io::{BufRead, BufReader};
    let tmp = TempDir::new();
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--bind", "127.0.0.1", "--qr"])
        .arg(tmp.path().join("u"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first}"
    );
    let mut block = Vec::new();
    for line in lines.by_ref().take(40) {
        let line = line.unwrap();
        if line.starts_with('█') {
            block.push(line);
        } else if !block.is_empty() {
            break;
        }
        if block.len() > 10 && block.last().is_some_and(|l| l.chars().all(|c| c == '█')) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(block.len() >= 11, "no QR block: {block:?}");
    let width = block[0].chars().count();
    assert!(block.iter().all(|l| l.chars().count() == width));
}
