//! The command line and `TINYDROP_*` environment variables, turned into one
//! validated, read-only [`Config`].
//!
//! Parsing takes plain inputs (the argument list and an environment lookup),
//! so it is tested without starting a process. The command line wins over
//! the environment; the environment wins over defaults.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

/// One user allowed in by `--auth` or `--auth-file`.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// sha256 of the password, so plain passwords are not kept in memory longer than parsing.
    pub password_sha256: [u8; 32],
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print credentials, even hashed.
        write!(f, "User({:?})", self.name)
    }
}

/// Every bound and deadline of DESIGN.md's table, in one place.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections waiting for a worker before new ones get 503.
    pub queue: usize,
    /// Connections one client address may hold, queued plus active.
    pub per_ip: usize,
    /// Request line plus headers, in bytes.
    pub head_bytes: usize,
    /// Number of request headers.
    pub head_count: usize,
    /// Time to receive a whole request head.
    pub head_timeout: Duration,
    /// Longest silence in the middle of a body.
    pub body_idle: Duration,
    /// Longest silence between two requests on one connection.
    pub keep_alive: Duration,
    /// Longest wait in the queue for a worker.
    pub queue_wait: Duration,
    /// Most bytes of an unread body drained to keep a connection open.
    pub drain: u64,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where uploads land.
    pub dir: PathBuf,
    /// Address to bind.
    pub bind: IpAddr,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Worker threads in the fixed pool.
    pub threads: usize,
    /// Largest accepted file, in bytes.
    pub max_size: u64,
    /// Users allowed in; empty means no authentication.
    pub users: Vec<User>,
    /// Serve `GET /files/<path>`.
    pub allow_download: bool,
    /// Serve `DELETE /files/<path>`.
    pub allow_delete: bool,
    /// Certificate and key for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Print the first network URL as a QR code.
    pub qr: bool,
    /// Log level before `RUST_LOG` refines it.
    pub log_level: LevelFilter,
    /// Idle time after which an unfinished resumable upload is removed.
    pub tus_expiry: Duration,
    /// Connection and request limits.
    pub limits: Limits,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve with this configuration.
    Run(Box<Config>),
    /// Print this text (help or version) and exit 0.
    Print(String),
}

/// A bad option or value: one line for the person, then the usage.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_THREADS: usize = 16;
const DEFAULT_MAX_SIZE: u64 = 10 << 30;
const MAX_THREADS: usize = 1024;

fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "p",
        "port",
        "TCP port (default 8080; 0 = pick a free one)",
        "PORT",
    );
    o.optopt("b", "bind", "address to bind (default 0.0.0.0)", "ADDR");
    o.optopt(
        "t",
        "threads",
        "worker threads in the fixed pool (default 16)",
        "N",
    );
    o.optopt(
        "",
        "max-size",
        "largest accepted file, e.g. 500M, 10G (default 10G)",
        "SIZE",
    );
    o.optmulti(
        "",
        "auth",
        "require HTTP Basic auth for every request (repeatable)",
        "USER:PASS",
    );
    o.optopt(
        "",
        "auth-file",
        "users from a file, one `user:sha256-hex-of-password` a line",
        "PATH",
    );
    o.optflag(
        "",
        "allow-download",
        "serve GET /files/<path> (off by default)",
    );
    o.optflag(
        "",
        "allow-delete",
        "serve DELETE /files/<path> (off by default)",
    );
    o.optopt(
        "",
        "tls-cert",
        "serve HTTPS with this certificate (builds with the `tls` feature)",
        "PEM",
    );
    o.optopt("", "tls-key", "the private key for --tls-cert", "PEM");
    o.optflag("", "qr", "print the first network URL as a QR code");
    o.optopt(
        "",
        "per-ip",
        "connections one client address may hold (default: half the threads)",
        "N",
    );
    o.optopt(
        "",
        "body-timeout",
        "fail an upload after this long without a byte (default 30s)",
        "TIME",
    );
    o.optopt(
        "",
        "tus-expiry",
        "remove unfinished resumable uploads idle this long (default 24h)",
        "TIME",
    );
    o.optflag("q", "quiet", "log warnings and errors only");
    o.optflag("v", "verbose", "log debugging detail");
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// The usage text printed by `--help` and after a usage error.
pub fn usage() -> String {
    let brief = "Usage: tinydrop [OPTIONS] [DIR]\n\n\
        Takes file uploads over HTTP into DIR (default ./uploads, created if missing).\n\
        Every option can also come from TINYDROP_<NAME> (TINYDROP_PORT=9000, TINYDROP_DIR);\n\
        the command line wins. RUST_LOG sets log levels.";
    options().usage(brief)
}

/// Reads the arguments (without the program name) and the environment.
pub fn parse<S: AsRef<str>>(
    args: &[S],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    let m = options()
        .parse(&args)
        .map_err(|e| UsageError(format!("{e}.")))?;
    if m.opt_present("help") {
        return Ok(Command::Print(usage()));
    }
    if m.opt_present("version") {
        return Ok(Command::Print(format!(
            "tinydrop {}",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if m.free.len() > 1 {
        return Err(UsageError(format!(
            "Only one DIR may be given, not {} ({}).",
            m.free.len(),
            m.free.join(", ")
        )));
    }

    // One lookup for every option: command line first, then TINYDROP_<NAME>.
    let value = |name: &str| -> Option<String> { m.opt_str(name).or_else(|| env(&env_name(name))) };
    let flag = |name: &str| -> Result<bool, UsageError> {
        if m.opt_present(name) {
            return Ok(true);
        }
        match env(&env_name(name)) {
            None => Ok(false),
            Some(v) => parse_bool(&v).ok_or_else(|| {
                UsageError(format!(
                    "{} must be 1/0, true/false or yes/no, not {v:?}.",
                    env_name(name)
                ))
            }),
        }
    };

    let dir = m
        .free
        .first()
        .cloned()
        .or_else(|| env("TINYDROP_DIR"))
        .unwrap_or_else(|| "uploads".to_string());
    if dir.is_empty() {
        return Err(UsageError("DIR must not be empty.".into()));
    }

    let port = match value("port") {
        None => DEFAULT_PORT,
        Some(v) => v.trim().parse::<u16>().map_err(|_| {
            UsageError(format!(
                "--port must be a number from 0 to 65535, not {v:?}."
            ))
        })?,
    };
    let bind = match value("bind") {
        None => IpAddr::from([0, 0, 0, 0]),
        Some(v) => {
            let t = v.trim().trim_start_matches('[').trim_end_matches(']');
            t.parse::<IpAddr>().map_err(|_| {
                UsageError(format!(
                    "--bind must be an IP address such as 0.0.0.0 or ::1, not {v:?}."
                ))
            })?
        }
    };
    let threads = match value("threads") {
        None => DEFAULT_THREADS,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => n,
            _ => {
                return Err(UsageError(format!(
                    "--threads must be a whole number from 1 to {MAX_THREADS}, not {v:?}."
                )))
            }
        },
    };
    let max_size = match value("max-size") {
        None => DEFAULT_MAX_SIZE,
        Some(v) => parse_size(&v).ok_or_else(|| {
            UsageError(format!(
                "--max-size must be a size such as 500M or 10G, not {v:?}."
            ))
        })?,
    };
    let per_ip = match value("per-ip") {
        None => (threads / 2).max(1),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(UsageError(format!(
                    "--per-ip must be a whole number of 1 or more, not {v:?}."
                )))
            }
        },
    };
    let tus_expiry = match value("tus-expiry") {
        None => Duration::from_secs(24 * 3600),
        Some(v) => parse_duration(&v).ok_or_else(|| {
            UsageError(format!(
                "--tus-expiry must be a time such as 90s, 30m or 24h, not {v:?}."
            ))
        })?,
    };

    let body_idle = match value("body-timeout") {
        None => Duration::from_secs(30),
        Some(v) => parse_duration(&v).ok_or_else(|| {
            UsageError(format!(
                "--body-timeout must be a time such as 30s or 5m, not {v:?}."
            ))
        })?,
    };

    let mut users = Vec::new();
    let mut auth: Vec<String> = m.opt_strs("auth");
    if auth.is_empty() {
        if let Some(v) = env("TINYDROP_AUTH") {
            auth = v.split_whitespace().map(str::to_string).collect();
        }
    }
    for a in &auth {
        users.push(parse_user_pass(a)?);
    }
    if let Some(path) = value("auth-file") {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| UsageError(format!("--auth-file {path:?} cannot be read: {e}.")))?;
        users.extend(
            parse_auth_file(&text).map_err(|e| UsageError(format!("--auth-file {path:?}: {e}")))?,
        );
    }

    let tls = match (value("tls-cert"), value("tls-key")) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        _ => return Err(UsageError("--tls-cert and --tls-key go together.".into())),
    };
    if tls.is_some() && !cfg!(feature = "tls") {
        return Err(UsageError(
            "This build has no TLS support; build with `cargo build --release --features tls`, or put tinydrop behind a TLS proxy.".into(),
        ));
    }

    let log_level = match (flag("quiet")?, flag("verbose")?) {
        (true, true) => {
            return Err(UsageError(
                "--quiet and --verbose contradict each other.".into(),
            ))
        }
        (true, false) => LevelFilter::Warn,
        (false, true) => LevelFilter::Debug,
        (false, false) => LevelFilter::Info,
    };

    Ok(Command::Run(Box::new(Config {
        dir: PathBuf::from(dir),
        bind,
        port,
        threads,
        max_size,
        users,
        allow_download: flag("allow-download")?,
        allow_delete: flag("allow-delete")?,
        tls,
        qr: flag("qr")?,
        log_level,
        tus_expiry,
        limits: Limits {
            queue: 64,
            per_ip,
            head_bytes: 16 * 1024,
            head_count: 100,
            head_timeout: Duration::from_secs(10),
            body_idle,
            keep_alive: Duration::from_secs(5),
            queue_wait: Duration::from_secs(10),
            drain: 64 * 1024,
            shutdown_grace: Duration::from_secs(30),
        },
    })))
}

/// `max-size` -> `TINYDROP_MAX_SIZE`.
fn env_name(option: &str) -> String {
    format!("TINYDROP_{}", option.to_ascii_uppercase().replace('-', "_"))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// `500M`, `10G`, `1.5G`, `4096`, `64KiB`: binary multiples (K = 1024).
pub fn parse_size(v: &str) -> Option<u64> {
    let t = v.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    // Exact decimal arithmetic: "1.5G" is 1.5 x 2^30 bytes, rounded down.
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let scale = 10u128.pow(frac.len() as u32);
    let digits: u128 = format!("{whole}{frac}").parse().ok()?;
    let bytes = digits.checked_mul(1u128 << shift)? / scale;
    u64::try_from(bytes).ok()
}

/// `90s`, `30m`, `24h`, `2d`, or plain seconds.
fn parse_duration(v: &str) -> Option<Duration> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn parse_user_pass(a: &str) -> Result<User, UsageError> {
    match a.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !pass.is_empty() => Ok(User {
            name: user.to_string(),
            password_sha256: sha256(pass.as_bytes()),
        }),
        _ => Err(UsageError(
            "--auth must look like USER:PASS, both parts non-empty.".into(),
        )),
    }
}

/// One `user:sha256-hex` per line; blank lines and `#` comments skipped.
fn parse_auth_file(text: &str) -> Result<Vec<User>, String> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {} must look like user:sha256-hex-of-password.", i + 1);
        let (user, hex) = line.split_once(':').ok_or_else(bad)?;
        let hash = decode_hex32(hex.trim()).ok_or_else(bad)?;
        if user.is_empty() {
            return Err(bad());
        }
        users.push(User {
            name: user.to_string(),
            password_sha256: hash,
        });
    }
    if users.is_empty() {
        return Err("it lists no users.".into());
    }
    Ok(users)
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

impl fmt::Display for Config {
    /// The effective settings, one line, for the start-up log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dir={:?} threads={} max-size={} per-ip={} auth={} download={} delete={}",
            self.dir,
            self.threads,
            crate::error::human_size(self.max_size),
            self.limits.per_ip,
            if self.users.is_empty() {
                "off".to_string()
            } else {
                format!("{} users", self.users.len())
            },
            self.allow_download,
            self.allow_delete
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse(args, &lookup) {
            Ok(Command::Run(c)) => Ok(*c),
            Ok(Command::Print(s)) => Err(format!("printed {s}")),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert_eq!(c.threads, 16);
        assert_eq!(c.max_size, 10 << 30);
        assert_eq!(c.dir, PathBuf::from("uploads"));
        assert_eq!(c.limits.per_ip, 8);
        assert!(!c.allow_download && !c.allow_delete && c.users.is_empty());
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        let c = run(
            &["-p", "9001"],
            &[("TINYDROP_PORT", "9000"), ("TINYDROP_MAX_SIZE", "500M")],
        )
        .unwrap();
        assert_eq!(c.port, 9001);
        assert_eq!(c.max_size, 500 << 20);
        let c = run(
            &[],
            &[
                ("TINYDROP_PORT", "9000"),
                ("TINYDROP_DIR", "/x"),
                ("TINYDROP_ALLOW_DOWNLOAD", "1"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.dir, PathBuf::from("/x"));
        assert!(c.allow_download);
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("0.5M"), Some(512 << 10));
        assert_eq!(parse_size("1.25G"), Some(5 << 28));
        assert_eq!(parse_size("0.001k"), Some(1));
        assert_eq!(parse_size("16777215.99T"), Some(18_446_744_062_714_435_338));
        assert_eq!(parse_size("16777216T"), None);
        assert_eq!(parse_size("1.5.5G"), None);
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        for bad in [
            "",
            "G",
            "10X",
            "-1",
            "1..5G",
            ".5G",
            "99999999999999999999T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (args, needle) in [
            (&["--port", "70000"][..], "--port"),
            (&["--port", "x"][..], "--port"),
            (&["--threads", "0"][..], "--threads"),
            (&["--max-size", "lots"][..], "--max-size"),
            (&["--bind", "localhost:80"][..], "--bind"),
            (&["--auth", "nopass"][..], "--auth"),
            (&["--tls-cert", "a.pem"][..], "--tls-key"),
            (&["--nope"][..], "nope"),
            (&["a", "b"][..], "Only one DIR"),
            (&["-q", "-v"][..], "contradict"),
        ] {
            let e = run(args, &[]).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn auth_users_come_from_flags_env_and_files() {
        let c = run(&["--auth", "a:b", "--auth", "c:d:e"], &[]).unwrap();
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[1].name, "c");
        assert_eq!(c.users[1].password_sha256, sha256(b"d:e"));
        let c = run(&[], &[("TINYDROP_AUTH", "x:y z:w")]).unwrap();
        assert_eq!(c.users.len(), 2);
        let users = parse_auth_file(&format!("# team\nann:{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(users[0].name, "ann");
        assert!(parse_auth_file("ann:xyz").is_err());
    }

    #[test]
    fn help_and_version_print() {
        let lookup = |_: &str| None;
        assert!(
            matches!(parse(&["--help"], &lookup), Ok(Command::Print(s)) if s.contains("--max-size"))
        );
        assert!(
            matches!(parse(&["-V"], &lookup), Ok(Command::Print(s)) if s.starts_with("tinydrop "))
        );
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("1w"), None);
    }
}
