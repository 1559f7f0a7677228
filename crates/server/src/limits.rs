//! The server's bounds under hostile load: connection caps and timeouts, and the login throttle. Every value
//! has a flag and an environment twin (see the README's configuration table).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Limits {
    /// A TLS handshake not finished in this time is dropped.
    pub tls_handshake_timeout: Duration,
    /// A request's headers must arrive in this time (HTTP/1: counted from the end of the previous response, so
    /// it also closes keep-alive connections idle that long).
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long, while the server waits for it, is cut: per read, so a
    /// large upload that keeps moving is never cut.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed (HTTP/2 included).
    pub idle_timeout: Duration,
    /// Open connections across every listener; past it new ones are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Failed logins a client address may make per minute before it gets 429 (0: unlimited).
    pub login_failures_per_address: u32,
    /// Failed logins per identity per minute, from all addresses together (0: unlimited).
    pub login_failures_per_identity: u32,
    /// argon2 checks run at once, on as many dedicated threads (each check holds ~19 MiB); defaults to the cores.
    pub password_checks: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
            max_connections_per_address: 256,
            login_failures_per_address: 10,
            login_failures_per_identity: 50,
            password_checks: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}
