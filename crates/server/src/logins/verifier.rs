//! Password verification under load. Each argon2 check holds ~19 MiB for tens of milliseconds, so unbounded
//! concurrent checks are a memory bomb (1,000 concurrent logins once took the server to 20 GB). Here:
//! - at most `workers` checks run at once (one per core: more would only queue on the CPU), on that many
//!   dedicated threads: the allocator keeps a freed 19 MiB block in the arena of the thread that used it, so
//!   checks spread over tokio's blocking pool (up to 512 threads) would pin up to 512 such blocks even when
//!   only a few ran at a time;
//! - identical checks in flight (same user, secret and stored hash) are coalesced: one runs, the others wait
//!   for its answer;
//! - a verified secret is remembered for a minute, so clients sending Basic on every request pay argon2 once.
//!
//! Cache and in-flight entries are keyed by an HMAC under a key made at start and never stored, so memory holds
//! no password nor a fast unkeyed hash of one. The stored hash is part of the key: a changed password or a
//! regenerated secret never matches an old entry.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a verified secret is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Bound on remembered secrets; only correct secrets get in, so this is never reached by guessing.
const MAX_REMEMBERED: usize = 10_000;

pub type CheckKey = [u8; 32];

type Job = Box<dyn FnOnce() + Send>;

pub struct PasswordChecks {
    /// Queue of the dedicated verification threads.
    workers: Mutex<std::sync::mpsc::Sender<Job>>,
    /// Keys the HMAC of cache and in-flight entries; lives only in memory.
    key: [u8; 32],
    verified: Mutex<HashMap<CheckKey, Instant>>,
    in_flight: Mutex<HashMap<CheckKey, Arc<OnceCell<bool>>>>,
}

impl PasswordChecks {
    pub fn new(workers: usize) -> PasswordChecks {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("moat-password-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().expect("lock").recv();
                    match job {
                        Ok(job) => job(),
                        // The checker is gone (tests): the thread ends.
                        Err(_) => return,
                    }
                })
                .expect("spawning a password-check thread");
        }
        PasswordChecks {
            workers: Mutex::new(tx),
            key,
            verified: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    pub fn key(&self, user: &str, secret: &str, stored_hash: &str) -> CheckKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in [user, secret, stored_hash] {
            // Length-prefixed, so no two different triples feed the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether this secret was verified less than a minute ago.
    pub fn remembered(&self, key: &CheckKey) -> bool {
        self.verified
            .lock()
            .expect("lock")
            .get(key)
            .is_some_and(|at| at.elapsed() < REMEMBER_FOR)
    }

    fn remember(&self, key: CheckKey) {
        let mut map = self.verified.lock().expect("lock");
        if map.len() >= MAX_REMEMBERED {
            map.retain(|_, at| at.elapsed() < REMEMBER_FOR);
        }
        if map.len() < MAX_REMEMBERED {
            map.insert(key, Instant::now());
        }
    }

    /// Runs `verify` (a blocking argon2 check) under the bound, or waits for an identical check already running.
    pub async fn verify<F>(&self, key: CheckKey, verify: F) -> bool
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        if self.remembered(&key) {
            return true;
        }
        let cell = self
            .in_flight
            .lock()
            .expect("lock")
            .entry(key)
            .or_default()
            .clone();
        let ok = *cell
            .get_or_init(|| async {
                // A caller that goes away (client disconnect) leaves its check queued or running on a worker:
                // the number of checks holding memory never exceeds the workers.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let job: Job = Box::new(move || {
                    let _ = tx.send(verify());
                });
                if self.workers.lock().expect("lock").send(job).is_err() {
                    return false;
                }
                rx.await.unwrap_or(false)
            })
            .await;
        {
            let mut in_flight = self.in_flight.lock().expect("lock");
            if in_flight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                in_flight.remove(&key);
            }
        }
        if ok {
            self.remember(key);
        }
        ok
    }

    /// Checks running or waiting, for tests.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.lock().expect("lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn identical_checks_are_coalesced_and_then_remembered() {
        let checks = Arc::new(PasswordChecks::new(2));
        let runs = Arc::new(AtomicUsize::new(0));
        let key = checks.key("admin", "right", "$argon2id$stored");
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (checks, runs) = (checks.clone(), runs.clone());
                tokio::spawn(async move {
                    checks
                        .verify(key, move || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            true
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one check served all fifty");
        assert_eq!(checks.in_flight(), 0);
        assert!(checks.remembered(&key));
        // Remembered: no further check runs.
        assert!(checks.verify(key, || unreachable!()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failures_are_shared_but_not_remembered() {
        let checks = Arc::new(PasswordChecks::new(1));
        let key = checks.key("admin", "wrong", "$argon2id$stored");
        assert!(!checks.verify(key, || false).await);
        assert!(!checks.remembered(&key));
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        assert!(
            !checks
                .verify(key, move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    false
                })
                .await
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "a failure is checked again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn distinct_checks_never_exceed_the_workers() {
        let checks = Arc::new(PasswordChecks::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (checks, running, peak) = (checks.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let key = checks.key("admin", &format!("guess-{i}"), "$argon2id$stored");
                    checks
                        .verify(key, move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                            false
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert!(!t.await.unwrap());
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn keys_depend_on_every_part_and_on_the_process_key() {
        let a = PasswordChecks::new(1);
        let b = PasswordChecks::new(1);
        let k = a.key("u", "p", "h");
        assert_ne!(k, a.key("u", "p", "h2"), "a new stored hash invalidates");
        assert_ne!(k, a.key("up", "", "h"), "parts are delimited");
        assert_ne!(k, b.key("u", "p", "h"), "keyed per process");
        assert_eq!(k, a.key("u", "p", "h"));
    }
}
