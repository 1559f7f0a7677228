//! Connection caps: at most `max` open connections in all, and `per_address` from one client address (IPv6: one
//! /64). A connection past either cap is closed as soon as it is accepted, before TLS or HTTP costs anything.
//! The table holds only addresses with open connections, so it is bounded by `max`.

use crate::logins::throttle::address_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct ConnCaps {
    max: usize,
    per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Held for the life of one connection; frees its place when dropped.
pub struct ConnPermit {
    caps: Arc<ConnCaps>,
    address: IpAddr,
}

impl ConnCaps {
    pub fn new(max: usize, per_address: usize) -> Arc<ConnCaps> {
        Arc::new(ConnCaps {
            max: max.max(1),
            per_address: per_address.max(1),
            open: Mutex::default(),
        })
    }

    /// A place for a connection from `peer`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnPermit> {
        let address = address_key(peer);
        let mut open = self.open.lock().expect("lock");
        if open.total >= self.max {
            return None;
        }
        let n = open.by_address.entry(address).or_default();
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        open.total += 1;
        Some(ConnPermit {
            caps: self.clone(),
            address,
        })
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().expect("lock").by_address.len()
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().expect("lock");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_cap_leaves_room_for_others() {
        let caps = ConnCaps::new(10, 3);
        let held: Vec<_> = (0..3)
            .map(|_| caps.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert!(caps.admit(ip("192.0.2.1")).is_none());
        // The same host by its IPv4-mapped spelling is the same address.
        assert!(caps.admit(ip("::ffff:192.0.2.1")).is_none());
        assert!(caps.admit(ip("192.0.2.2")).is_some());
        drop(held);
        assert!(caps.admit(ip("192.0.2.1")).is_some());
        assert_eq!(caps.addresses(), 0, "closed connections leave no entry");
    }

    #[test]
    fn global_cap_holds_across_addresses() {
        let caps = ConnCaps::new(4, 3);
        let held: Vec<_> = (0..4)
            .map(|i| caps.admit(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert!(caps.admit(ip("198.51.100.1")).is_none());
        drop(held);
        assert!(caps.admit(ip("198.51.100.1")).is_some());
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_rotating_addresses() {
        let caps = ConnCaps::new(100, 2);
        let _a = caps.admit(ip("2001:db8::1")).unwrap();
        let _b = caps.admit(ip("2001:db8::2")).unwrap();
        assert!(caps.admit(ip("2001:db8::3")).is_none());
        assert!(caps.admit(ip("2001:db8:0:1::1")).is_some());
    }
}
