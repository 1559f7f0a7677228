//! Monitoring as services: the consumers of the audit and activity logs (diagnostic-setting sinks, metrics,
//! alerts, ACR webhooks) and the trail's own upkeep (signed chain heads, retention). Each consumer reads the logs
//! after its durable cursor (`MetadataStore::consumer_seq`), so the logs themselves are the outbox: nothing is
//! copied on the request path, nothing is lost when a consumer is down, and retention never prunes a record a
//! consumer has not taken. The ARM routes in `crate::arm::insights` and `crate::arm::webhooks` only parse and call
//! in here.

pub mod alerts;
pub mod http_post;
pub mod metrics;
pub mod sinks;
pub mod trail;
pub mod webhooks;

use crate::state::AppState;

/// Starts every consumer's loop (each a `Jobs::every` lease, so one process of those sharing the store runs it).
pub fn start(state: &AppState) {
    trail::start(state);
    sinks::start(state);
    metrics::start(state);
    alerts::start(state);
    webhooks::start(state);
}
