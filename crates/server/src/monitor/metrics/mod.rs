//! Metrics: one-minute aggregates of the audit log (the consumer `metrics`, see [`aggregate`]), the data the Azure
//! Monitor metrics API serves (`crate::arm::insights::metrics`), and the Prometheus registry served on the admin
//! listener ([`prom`], [`admin`]).

pub mod admin;
pub mod aggregate;
pub mod prom;
pub mod query;

use crate::state::AppState;
use moat_model::audit::AuditEvent;
use std::net::SocketAddr;
use std::time::Duration;

/// `moat serve`'s metrics settings.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// How often the aggregator folds new audit events into minute points (`--metrics-interval-ms`).
    pub interval: Duration,
    /// Where `GET /metrics` (Prometheus) is served (`--admin-listen`, `admin_listen` in the file); never on a
    /// registry listener.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval: Duration::from_millis(1000),
            admin_listen: None,
        }
    }
}

pub fn start(state: &AppState) {
    aggregate::start(state);
}

/// Called for every audit event as it is recorded (the request path): in-process counters only, no I/O.
pub fn observe(event: &AuditEvent) {
    prom::observe(event);
}
