//! Metrics: one-minute aggregates of the audit log, the Azure Monitor metrics API's data, and the Prometheus
//! registry served on the admin listener. (Owned by the metrics work; a stub until it lands.)

use crate::state::AppState;
use moat_model::audit::AuditEvent;

pub fn start(_state: &AppState) {}

/// Called for every audit event as it is recorded (the request path): in-process counters only, no I/O.
pub fn observe(_event: &AuditEvent) {}
