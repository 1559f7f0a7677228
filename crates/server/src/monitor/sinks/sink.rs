//! What every destination of a diagnostic setting is to the delivery loop: something that takes a batch of
//! records, in order, and says whether all of them arrived. Blocking (the loop runs it on the blocking pool) and
//! kept between batches, so that a connection (TLS to a syslog collector, HTTP keep-alive) is reused.

/// One record as it leaves the server.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkRecord {
    /// Stable across retries and restarts: `moat_model::monitor::record_id`.
    pub id: String,
    /// `ContainerRegistryRepositoryEvents`, `ContainerRegistryLoginEvents`, `Administrative` (the activity
    /// log), `AllMetrics`, or `MoatAuditTrail` (a signed chain head).
    pub category: String,
    /// The record's time (RFC 3339, UTC): where it is filed (an hourly blob) and the syslog TIMESTAMP.
    pub time: String,
    /// The record in its schema (resource-log common schema, Azure activity log, …), `recordId` included.
    pub json: serde_json::Value,
    /// `json` serialized, once: the batch's byte bound and every destination's line use this text.
    pub text: String,
}

impl SinkRecord {
    pub fn new(id: String, category: String, time: String, json: serde_json::Value) -> SinkRecord {
        let text = json.to_string();
        SinkRecord {
            id,
            category,
            time,
            json,
            text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Nothing of the batch is known to have arrived (or only a prefix, see `delivered`): retry later.
    #[error("{message}")]
    Unavailable {
        message: String,
        /// How many leading records of the batch did arrive (the loop moves the cursor past them).
        delivered: usize,
    },
    /// The destination is misconfigured (bad credentials, refused by the outbound rules): retrying will not help
    /// until someone changes something; the loop keeps the records, backs off longer, and says so.
    #[error("{0}")]
    Misconfigured(String),
}

pub trait Sink: Send {
    /// A short name for logs and metrics: `storage:<account>`, `syslog:<host:port>`, `http:<host>`.
    fn describe(&self) -> String;

    /// Ships `records` in order. `Ok(())`: every one arrived (the loop moves the cursor past the batch).
    fn deliver(&mut self, records: &[SinkRecord]) -> Result<(), SinkError>;
}
