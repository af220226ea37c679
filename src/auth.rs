//! HTTP Basic authentication for `--auth` and `--auth-file`.
//!
//! # Security
//!
//! Passwords are compared as sha256 digests in constant time, and every
//! user is compared (no early exit), so timing tells nothing about which
//! part was wrong. An address that sends 10 wrong credentials within a
//! minute gets 429 for a minute. Credentials are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::base64;
use crate::config::User;
use crate::error::Error;

/// Wrong credentials from one address within [`WINDOW`] before it is locked out.
const MAX_FAILURES: u32 = 10;
/// The window failures are counted in, and how long a lock-out lasts.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond, the oldest entries are dropped.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// The users allowed in and the failures seen per address.
pub struct Auth {
    users: Vec<User>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Auth {
    pub fn new(users: Vec<User>) -> Auth {
        Auth {
            users,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any credentials are needed at all.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Ok when no auth is configured or `authorization` holds a known user's
    /// credentials; `Unauthorized` (401) or `TooManyRequests` (429) otherwise.
    pub fn check(&self, peer: IpAddr, authorization: Option<&str>) -> Result<(), Error> {
        if !self.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        if self.locked(peer, now) {
            return Err(Error::TooManyRequests);
        }
        let Some(header) = authorization else {
            return Err(Error::Unauthorized);
        };
        if self.matches(header) {
            return Ok(());
        }
        self.record_failure(peer, now);
        Err(Error::Unauthorized)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn locked(&self, peer: IpAddr, now: Instant) -> bool {
        self.table()
            .get(&peer)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    fn record_failure(&self, peer: IpAddr, now: Instant) {
        let mut table = self.table();
        if table.len() >= MAX_TRACKED {
            table.retain(|_, f| {
                now.duration_since(f.since) < WINDOW || f.locked_until.is_some_and(|u| now < u)
            });
            if table.len() >= MAX_TRACKED {
                table.clear();
            }
        }
        let f = table.entry(peer).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(f.since) >= WINDOW {
            *f = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= MAX_FAILURES {
            f.locked_until = Some(now + WINDOW);
            log::warn!(
                "{peer}: {} wrong log-ins within a minute; refusing it for a minute",
                f.count
            );
        }
    }

    /// `Basic base64(user:pass)` against every user, in constant time.
    fn matches(&self, header: &str) -> bool {
        let Some((scheme, token)) = header.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Some(decoded) = base64::decode(token.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_digest: [u8; 32] = Sha256::digest(user).into();
        let pass_digest: [u8; 32] = Sha256::digest(pass).into();
        let mut found = 0u8;
        for u in &self.users {
            let name_digest: [u8; 32] = Sha256::digest(u.name.as_bytes()).into();
            let same = constant_time_eq(&name_digest, &user_digest)
                & constant_time_eq(&u.password_sha256, &pass_digest);
            found |= same;
        }
        found == 1
    }
}

/// 1 when equal, 0 otherwise, touching every byte.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    u8::from(diff == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![User {
            name: "ann".into(),
            password_sha256: Sha256::digest(b"s3cret:x").into(),
        }])
    }

    /// `Authorization` values, base64 worked out once by hand.
    fn basic(user_pass: &str) -> String {
        let token = match user_pass {
            "ann:s3cret:x" => "YW5uOnMzY3JldDp4",
            "ann:wrong" => "YW5uOndyb25n",
            "bob:s3cret:x" => "Ym9iOnMzY3JldDp4",
            "annS3cret" => "YW5uUzNjcmV0",
            "ann:no" => "YW5uOm5v",
            other => panic!("no token for {other:?}"),
        };
        format!("Basic {token}")
    }

    #[test]
    fn the_right_user_and_password_pass_and_everything_else_fails() {
        let a = auth();
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!(a.check(ip, Some(&basic("ann:s3cret:x"))).is_ok());
        assert!(a
            .check(
                ip,
                Some(&basic("ann:s3cret:x"))
                    .map(|s| s.replace("Basic", "basic"))
                    .as_deref()
            )
            .is_ok());
        for bad in [
            None,
            Some(basic("ann:wrong")),
            Some(basic("bob:s3cret:x")),
            Some("Basic !!!".into()),
            Some("Bearer abc".into()),
            Some(basic("annS3cret")),
        ] {
            assert!(
                matches!(a.check(ip, bad.as_deref()), Err(Error::Unauthorized)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ten_failures_lock_an_address_out_but_not_others() {
        let a = auth();
        let ip: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..10 {
            assert!(matches!(
                a.check(ip, Some(&basic("ann:no"))),
                Err(Error::Unauthorized)
            ));
        }
        assert!(matches!(
            a.check(ip, Some(&basic("ann:s3cret:x"))),
            Err(Error::TooManyRequests)
        ));
        assert!(a
            .check([10, 0, 0, 3].into(), Some(&basic("ann:s3cret:x")))
            .is_ok());
    }

    #[test]
    fn no_users_means_no_auth() {
        assert!(Auth::new(Vec::new())
            .check([1, 1, 1, 1].into(), None)
            .is_ok());
    }
}
