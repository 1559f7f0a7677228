//! `moat serve`'s metrics flags.

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args)]
pub struct MetricsArgs {
    /// Serve Prometheus' `GET /metrics` (plain HTTP) on this address; it must not be a registry listener's.
    #[arg(long, env = "MOAT_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Milliseconds between two passes of the metrics aggregator over the audit log.
    #[arg(
        long,
        env = "MOAT_METRICS_INTERVAL_MS",
        default_value_t = 1000,
        hide = true
    )]
    metrics_interval_ms: u64,
}

impl MetricsArgs {
    /// Applies the flags over what the configuration file said (a flag wins).
    pub fn apply(self, c: &mut moat_server::monitor::metrics::MetricsConfig) {
        if self.admin_listen.is_some() {
            c.admin_listen = self.admin_listen;
        }
        c.interval = Duration::from_millis(self.metrics_interval_ms.max(10));
    }
}
