//! The tinydrop binary: parse the configuration, start logging, serve, and
//! map every outcome to an exit code (0 clean stop, 1 runtime failure,
//! 2 bad usage).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use tinydrop::config::{self, Command, Config};
use tinydrop::routes::App;
use tinydrop::tls::Acceptor;
use tinydrop::{clock, server};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match config::parse(&args, &|name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Print(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tinydrop: {e}\n\n{}", config::usage());
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tinydrop: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    let listener = server::bind(SocketAddr::new(config.bind, config.port))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}."))?;
    let threads = config.threads;
    let limits = config.limits.clone();
    let dir = config.dir.clone();
    let qr = config.qr;
    log::info!("{config}");
    let tls = load_tls(&config)?;
    let app = App::new(config, tls).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    server::serve(listener, Arc::new(app), threads, limits, || {
        print_urls(local, qr)
    })
    .map_err(|e| format!("the server failed: {e}."))
}

#[cfg(feature = "tls")]
fn load_tls(config: &Config) -> Result<Option<Acceptor>, String> {
    match &config.tls {
        Some((cert, key)) => Acceptor::from_pem_files(cert, key).map(Some),
        None => Ok(None),
    }
}

#[cfg(not(feature = "tls"))]
fn load_tls(_config: &Config) -> Result<Option<Acceptor>, String> {
    // The command line refuses --tls-cert in this build.
    Ok(None)
}

/// First line `listening on http://ADDR:PORT/` (scripts read the port from
/// it), then one URL per address a person on the network can open.
fn print_urls(local: SocketAddr, qr: bool) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", url(local.ip(), local.port()));
    if local.ip().is_unspecified() {
        let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| !ip.is_loopback() && (local.ip().is_ipv6() || ip.is_ipv4()))
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
            .collect();
        ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        ips.dedup();
        for ip in &ips {
            let _ = writeln!(out, "  {}", url(*ip, local.port()));
        }
        if qr {
            match ips.first() {
                Some(ip) => print_qr(&mut out, &url(*ip, local.port())),
                None => log::warn!("--qr: this machine has no network address to show"),
            }
        }
    } else if qr {
        print_qr(&mut out, &url(local.ip(), local.port()));
    }
    let _ = out.flush();
}

fn print_qr(out: &mut impl Write, url: &str) {
    match tinydrop::qr::render(url) {
        Some(code) => {
            let _ = writeln!(out, "\nscan to open {url}:\n{code}");
        }
        None => log::warn!("--qr: {url} does not fit in a QR code"),
    }
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
    }
}

/// env_logger on stderr: the level from -q/-v, refined by RUST_LOG.
fn init_logging(config: &Config) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(config.log_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(|buf, record| {
        writeln!(
            buf,
            "{} {:<5} {}",
            clock::rfc3339(std::time::SystemTime::now()),
            record.level(),
            record.args()
        )
    });
    builder.init();
}
