//! Failed-login throttle: failures are counted per key (a client address, an identity) in a fixed window that
//! starts at the key's first failure; a key that reaches its limit is refused until its window ends.
//!
//! The table must stay bounded whatever an attacker makes up (addresses, user names): it keeps two generations
//! of at most `capacity / 2` keys each. A key touched again moves to the current generation; when the current one
//! is full it becomes the previous one and the oldest generation is forgotten. Flushing a blocked key out
//! therefore takes `capacity / 2` fresh failures, each of which also counts against its sender's address.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
}

pub struct Throttle<K> {
    /// Failures allowed per window; 0 turns the throttle off.
    limit: u32,
    window: Duration,
    /// Keys per generation.
    half: usize,
    current: HashMap<K, Entry>,
    previous: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(limit: u32, window: Duration, capacity: usize) -> Throttle<K> {
        Throttle {
            limit,
            window,
            half: (capacity / 2).max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// How long until `key` may try again, when it has used up its failures for the current window.
    pub fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let e = self.current.get(key).or_else(|| self.previous.get(key))?;
        let ends = e.window_start + self.window;
        (e.failures >= self.limit && now < ends).then(|| ends - now)
    }

    /// Counts one failure of `key`.
    pub fn fail(&mut self, key: &K, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut e = self
            .current
            .remove(key)
            .or_else(|| self.previous.remove(key))
            .filter(|e| now < e.window_start + self.window)
            .unwrap_or(Entry {
                window_start: now,
                failures: 0,
            });
        e.failures = e.failures.saturating_add(1);
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key.clone(), e);
    }

    /// Keys held, for tests and metrics.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key a client address is throttled by: IPv4 addresses (IPv4-mapped IPv6 included) as themselves, IPv6
/// addresses by their /64, which one host usually holds whole (otherwise each host could rotate through 2^64
/// addresses).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn blocks_at_the_limit_until_the_window_ends() {
        let mut t = Throttle::new(3, MIN, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.blocked(&"a", t0), None, "failure {i}");
            t.fail(&"a", t0 + Duration::from_secs(i));
        }
        let retry = t.blocked(&"a", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(retry, Duration::from_secs(50));
        assert_eq!(t.blocked(&"b", t0), None, "another key is not affected");
        assert_eq!(t.blocked(&"a", t0 + MIN), None, "the window ended");
        // A failure after the window starts a new one.
        t.fail(&"a", t0 + MIN);
        assert_eq!(t.blocked(&"a", t0 + MIN), None);
    }

    #[test]
    fn zero_turns_it_off() {
        let mut t = Throttle::new(0, MIN, 10);
        let now = Instant::now();
        for _ in 0..100 {
            t.fail(&"a", now);
        }
        assert_eq!(t.blocked(&"a", now), None);
        assert!(t.is_empty());
    }

    #[test]
    fn made_up_keys_cannot_grow_the_table() {
        let mut t = Throttle::new(5, MIN, 1000);
        let now = Instant::now();
        for i in 0..100_000u32 {
            t.fail(&i, now);
            assert!(t.len() <= 1000);
        }
    }

    #[test]
    fn a_key_that_keeps_failing_stays_blocked_while_others_churn() {
        let mut t = Throttle::new(2, MIN, 100);
        let now = Instant::now();
        t.fail(&u32::MAX, now);
        t.fail(&u32::MAX, now);
        for i in 0..1000u32 {
            t.fail(&i, now);
            // The attacker retries (and fails) now and then: the key moves to the current generation.
            if i % 40 == 0 {
                assert!(
                    t.blocked(&u32::MAX, now).is_some(),
                    "after {i} made-up keys"
                );
                t.fail(&u32::MAX, now);
            }
        }
    }

    #[test]
    fn ipv6_hosts_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
