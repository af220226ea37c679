//! HTTPS: with the `tls` feature, a round trip with a certificate made in
//! the test; without it, `--tls-cert` is a usage error.

use crate::util::*;

#[cfg(feature = "tls")]
#[test]
fn an_upload_and_a_listing_work_over_https() {
    use std::process::Command;
    let tmp = TempDir::new();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!("SKIPPED: openssl could not make a test certificate: {other:?}");
            return;
        }
    }
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let base = format!("https://127.0.0.1:{}", s.addr.port());
    let file = tmp.path().join("hello.txt");
    std::fs::write(&file, b"over tls").unwrap();
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(&[&format!("{base}/api/health")]), r#"{"status":"ok"}"#);
    let put = curl(&["-T", file.to_str().unwrap(), &format!("{base}/files/")]);
    assert!(put.contains("\"status\":\"saved\""), "{put}");
    assert_eq!(std::fs::read(s.dir.join("hello.txt")).unwrap(), b"over tls");
    let form = curl(&[
        "-F",
        &format!("file=@{};filename=d/h.txt", file.display()),
        &format!("{base}/"),
    ]);
    assert!(form.contains("\"saved_as\":\"d/h.txt\""), "{form}");
    assert!(curl(&[&format!("{base}/api/files")]).contains("d/h.txt"));
    // Plain HTTP on the TLS port gets nothing useful, and the server lives on.
    let mut c = s.connect();
    use std::io::Write;
    let _ = c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(read_response(&mut c).is_err());
    assert_eq!(curl(&[&format!("{base}/api/health")]), r#"{"status":"ok"}"#);
}

#[cfg(feature = "tls")]
#[test]
fn a_missing_certificate_is_one_clear_line_and_exit_one() {
    let (code, _, err) = run_cli(
        &[
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}

#[cfg(not(feature = "tls"))]
#[test]
fn without_the_tls_feature_tls_options_are_a_usage_error() {
    let (code, _, err) = run_cli(&["--tls-cert", "c.pem", "--tls-key", "k.pem"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--features tls"), "{err}");
}
