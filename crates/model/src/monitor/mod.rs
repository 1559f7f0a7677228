//! Monitoring's pure parts: the shapes records take when they leave the server (resource logs, the activity log,
//! ACR webhook payloads, Azure's common alert schema), metric definitions and alert conditions. No I/O.

pub mod activity_json;
pub mod alert;
pub mod diagnostic_setting;
pub mod metric;
pub mod metric_query;
pub mod partner;
pub mod resource_log;
pub mod webhook;

/// The stable id of record `seq` of `log` (`audit`, `activity`, `checkpoint`) in the store of `subscription_id`:
/// a sink that ships a record twice ships the same id, and two Moat installations never share one.
pub fn record_id(subscription_id: &str, log: &str, seq: i64) -> String {
    format!("{subscription_id}/{log}/{seq}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_ids_name_the_store_the_log_and_the_sequence() {
        assert_eq!(super::record_id("s1", "audit", 7), "s1/audit/7");
        assert_ne!(
            super::record_id("s1", "audit", 7),
            super::record_id("s1", "activity", 7)
        );
    }
}
