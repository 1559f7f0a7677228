//! Activity-log rules: the records after the consumer's cursor, matched against every enabled rule that existed
//! before them; the notifications and the cursor's move are written together.

use super::{alert_id, notifications_for, ACTIVITY_CONSUMER};
use crate::state::AppState;
use moat_model::monitor::alert::schema::{self, Essentials};
use moat_model::monitor::alert::{parse_activity_log_alert, AlertKind};
use moat_store::meta::ActivityFilter;

/// Records taken per pass.
const BATCH: i64 = 500;

pub async fn take(state: &AppState) -> anyhow::Result<()> {
    let rows = state
        .meta
        .alert_resources(AlertKind::ActivityLogAlert.as_str(), None)
        .await?;
    let rules: Vec<_> = rows
        .iter()
        .filter_map(|r| match parse_activity_log_alert(&r.properties) {
            Ok(rule) if rule.enabled => Some((r, rule)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("activity-log alert {}: stored rule unreadable: {e}", r.id);
                None
            }
        })
        .collect();
    let cursor = state
        .meta
        .consumer_seq(ACTIVITY_CONSUMER, "activity")
        .await?;
    if rules.is_empty() {
        // Nothing to match: keep up with the log so that retention never waits for this consumer. (A rule created
        // later starts at the log's end anyway.)
        let last = state.meta.activity_last_seq().await?;
        if last > cursor {
            state
                .meta
                .take_activity_alerts(ACTIVITY_CONSUMER, last, &[])
                .await?;
        }
        return Ok(());
    }
    let records = state
        .meta
        .activity_rows(&ActivityFilter {
            after_seq: Some(cursor),
            limit: Some(BATCH),
            ..Default::default()
        })
        .await?;
    let Some(last) = records.last().map(|(s, _)| *s) else {
        return Ok(());
    };
    let sub = crate::listener::cloud_ids(&state.meta)
        .await?
        .subscription_id;
    let mut notifications = Vec::new();
    for (seq, e) in &records {
        for (row, rule) in &rules {
            if *seq <= row.from_seq
                || !rule.matches(&e.resource_id, &|f| schema::activity_field(e, f))
            {
                continue;
            }
            tracing::info!(rule = %row.id, event = %e.event_data_id, "activity-log alert fired");
            let essentials = Essentials {
                alert_id: alert_id(&sub),
                alert_rule: row.name.clone(),
                severity: 4,
                activity: true,
                resolved: false,
                target_ids: vec![e.resource_id.clone()],
                origin_alert_id: format!("{}_{}", e.event_data_id, e.time),
                fired: moat_store::time_fmt::now(),
                resolved_at: None,
                description: rule.description.clone(),
            };
            let context = schema::activity_context(e);
            notifications.extend(
                notifications_for(state, &row.id, &rule.actions, &|a| {
                    schema::payload(&essentials, context.clone(), &a.web_hook_properties)
                })
                .await?,
            );
        }
    }
    state
        .meta
        .take_activity_alerts(ACTIVITY_CONSUMER, last, &notifications)
        .await?;
    Ok(())
}
