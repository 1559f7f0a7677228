//! Every password check goes through here: the throttle of failed logins (per client address and per identity)
//! and the bounded, coalesced, remembered argon2 verification. Used by the `/v2` Basic path, the Docker token
//! endpoint and the Entra token endpoint alike, so one flood cannot pick the unguarded door.

pub mod throttle;
pub mod verifier;

use crate::limits::Limits;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use throttle::{address_key, Throttle};
use verifier::PasswordChecks;

/// Failures are counted over this window (from a key's first failure).
const WINDOW: Duration = Duration::from_secs(60);
/// Keys each throttle table holds at most (two generations of half this).
const TABLE_CAPACITY: usize = 65_536;

/// What the caller presents, against what the server holds.
pub enum Secret<'a> {
    /// A password to check against a stored argon2 hash.
    Hashed { password: &'a str, stored: &'a str },
    /// Already compared (cheap, constant-time: the registry admin user's generated passwords).
    Compared(bool),
    /// The identity does not exist.
    Unknown,
}

/// Too many failed logins: refused without checking the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
    /// Whether the client address (rather than the identity) is the one throttled.
    pub by_address: bool,
}

impl Throttled {
    /// Whole seconds for `Retry-After`, rounded up: a client that waits this long is let in.
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    pub fn message(&self) -> String {
        let whom = if self.by_address {
            "this client address"
        } else {
            "this identity"
        };
        format!(
            "too many failed logins from {whom}: retry after {} seconds",
            self.retry_after_secs()
        )
    }
}

pub struct LoginGuard {
    checks: PasswordChecks,
    addresses: Mutex<Throttle<IpAddr>>,
    identities: Mutex<Throttle<String>>,
}

impl LoginGuard {
    pub fn new(limits: &Limits) -> LoginGuard {
        LoginGuard {
            checks: PasswordChecks::new(limits.password_checks),
            addresses: Mutex::new(Throttle::new(
                limits.login_failures_per_address,
                WINDOW,
                TABLE_CAPACITY,
            )),
            identities: Mutex::new(Throttle::new(
                limits.login_failures_per_identity,
                WINDOW,
                TABLE_CAPACITY,
            )),
        }
    }

    /// Whether `secret` is right for `user`, unless the client or the identity is throttled.
    ///
    /// The order matters: a throttled address is refused before anything else; a secret verified in the last
    /// minute is let in even while its identity is throttled (so a flood of wrong passwords from elsewhere does
    /// not lock out a user already signed in); otherwise a throttled identity is refused before argon2 runs.
    pub async fn check(
        &self,
        client: IpAddr,
        user: &str,
        secret: Secret<'_>,
    ) -> Result<bool, Throttled> {
        let address = address_key(client);
        let identity = user.to_ascii_lowercase();
        let now = Instant::now();
        if let Some(retry_after) = self.addresses.lock().expect("lock").blocked(&address, now) {
            return Err(Throttled {
                retry_after,
                by_address: true,
            });
        }
        let identity_blocked = || {
            self.identities
                .lock()
                .expect("lock")
                .blocked(&identity, now)
                .map(|retry_after| Throttled {
                    retry_after,
                    by_address: false,
                })
        };
        let ok = match secret {
            Secret::Hashed { password, stored } => {
                let key = self.checks.key(user, password, stored);
                if self.checks.remembered(&key) {
                    return Ok(true);
                }
                if let Some(t) = identity_blocked() {
                    return Err(t);
                }
                let (password, stored) = (password.to_string(), stored.to_string());
                self.checks
                    .verify(key, move || {
                        moat_auth::password::verify_on_this_thread(&password, &stored)
                    })
                    .await
            }
            Secret::Compared(ok) => {
                if let Some(t) = identity_blocked() {
                    return Err(t);
                }
                ok
            }
            Secret::Unknown => {
                if let Some(t) = identity_blocked() {
                    return Err(t);
                }
                false
            }
        };
        if !ok {
            let now = Instant::now();
            self.addresses.lock().expect("lock").fail(&address, now);
            self.identities.lock().expect("lock").fail(&identity, now);
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_address: u32, per_identity: u32) -> LoginGuard {
        LoginGuard::new(&Limits {
            login_failures_per_address: per_address,
            login_failures_per_identity: per_identity,
            ..Limits::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn an_address_is_throttled_after_its_failures_whatever_the_identity() {
        let g = guard(3, 100);
        for i in 0..3 {
            assert_eq!(
                g.check(ip("192.0.2.1"), &format!("user{i}"), Secret::Unknown)
                    .await,
                Ok(false)
            );
        }
        let t = g
            .check(ip("192.0.2.1"), "admin", Secret::Compared(true))
            .await
            .unwrap_err();
        assert!(t.by_address);
        assert!((59..=60).contains(&t.retry_after_secs()));
        assert_eq!(
            g.check(ip("192.0.2.2"), "admin", Secret::Compared(true))
                .await,
            Ok(true),
            "another address is not throttled"
        );
    }

    #[tokio::test]
    async fn an_identity_is_throttled_across_addresses_in_every_spelling() {
        let g = guard(100, 3);
        for i in 0..3 {
            let _ = g
                .check(
                    ip(&format!("192.0.2.{i}")),
                    "Admin",
                    Secret::Compared(false),
                )
                .await;
        }
        let t = g
            .check(ip("198.51.100.1"), "ADMIN", Secret::Compared(true))
            .await
            .unwrap_err();
        assert!(!t.by_address);
        assert_eq!(
            g.check(ip("198.51.100.1"), "other", Secret::Compared(true))
                .await,
            Ok(true)
        );
    }

    #[tokio::test]
    async fn a_remembered_secret_passes_a_throttled_identity_but_not_a_throttled_address() {
        let g = guard(3, 3);
        let stored = moat_auth::password::hash("right");
        let right = || Secret::Hashed {
            password: "right",
            stored: &stored,
        };
        assert_eq!(g.check(ip("192.0.2.1"), "admin", right()).await, Ok(true));
        for i in 0..3 {
            let wrong = Secret::Hashed {
                password: "wrong",
                stored: &stored,
            };
            assert_eq!(
                g.check(ip(&format!("198.51.100.{i}")), "admin", wrong)
                    .await,
                Ok(false)
            );
        }
        // The identity is throttled for a wrong (not remembered) password...
        let wrong = Secret::Hashed {
            password: "wrong",
            stored: &stored,
        };
        assert!(g.check(ip("192.0.2.1"), "admin", wrong).await.is_err());
        // ... but the user who signed in a moment ago still gets in.
        assert_eq!(g.check(ip("192.0.2.1"), "admin", right()).await, Ok(true));
        // A throttled address gets nothing, not even an answer to a right guess.
        for _ in 0..3 {
            let _ = g.check(ip("203.0.113.9"), "x", Secret::Unknown).await;
        }
        assert!(g.check(ip("203.0.113.9"), "admin", right()).await.is_err());
    }
}
