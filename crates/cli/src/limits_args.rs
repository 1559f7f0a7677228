//! `moat serve`'s bounds under load (connection caps, timeouts, login throttle), as flags with environment twins.

use clap::Args;
use moat_server::limits::Limits;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct LimitArgs {
    /// Seconds a client may take to finish the TLS handshake.
    #[arg(long, env = "MOAT_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    tls_handshake_timeout_secs: u64,
    /// Seconds a client may take to send a request's headers (HTTP/1: also the longest wait between requests).
    #[arg(long, env = "MOAT_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// Seconds a request body may send nothing while the server waits for it (per read).
    #[arg(long, env = "MOAT_BODY_READ_TIMEOUT_SECS", default_value_t = 60)]
    body_read_timeout_secs: u64,
    /// Seconds a connection with no request in flight and no bytes moving stays open.
    #[arg(long, env = "MOAT_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    idle_timeout_secs: u64,
    /// Open connections in all; more are closed on accept.
    #[arg(long, env = "MOAT_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    #[arg(long, env = "MOAT_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256)]
    max_connections_per_address: usize,
    /// Failed logins per minute from one client address before 429 (0: unlimited).
    #[arg(long, env = "MOAT_LOGIN_FAILURES_PER_ADDRESS", default_value_t = 10)]
    login_failures_per_address: u32,
    /// Failed logins per minute for one identity, from all addresses (0: unlimited).
    #[arg(long, env = "MOAT_LOGIN_FAILURES_PER_IDENTITY", default_value_t = 50)]
    login_failures_per_identity: u32,
    /// Password (argon2) checks run at once; defaults to the number of cores.
    #[arg(long, env = "MOAT_PASSWORD_CHECKS")]
    password_checks: Option<usize>,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        let defaults = Limits::default();
        Limits {
            tls_handshake_timeout: secs(self.tls_handshake_timeout_secs),
            header_read_timeout: secs(self.header_read_timeout_secs),
            body_read_timeout: secs(self.body_read_timeout_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            max_connections: self.max_connections.max(1),
            max_connections_per_address: self.max_connections_per_address.max(1),
            login_failures_per_address: self.login_failures_per_address,
            login_failures_per_identity: self.login_failures_per_identity,
            password_checks: self
                .password_checks
                .unwrap_or(defaults.password_checks)
                .max(1),
        }
    }
}
