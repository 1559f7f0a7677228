//! Alert evaluation and notification. Metric rules are evaluated every `evaluationFrequency` over their
//! `windowSize` from the metric points; each (rule, dimension combination) keeps a stored state, so an alert fires
//! on the transition to met and resolves (with `autoMitigate`) on the transition back, across restarts.
//! Activity-log rules are one consumer (`alerts:activity`) of the activity log: each matching record fires once.
//! A firing writes one durable notification per webhook receiver in the same transaction; delivery retries them
//! with backoff through the outbound connector until the receiver takes them.

mod activity;
mod deliver;
mod metric;

use crate::state::AppState;
use moat_model::monitor::alert::{AlertKind, RuleAction};
use moat_store::meta::NewNotification;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The activity-log consumer of every activity-log rule.
pub const ACTIVITY_CONSUMER: &str = "alerts:activity";

pub fn start(state: &AppState) {
    let interval = state.config.alert_interval.max(Duration::from_millis(200));
    let last_runs: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let s = state.clone();
    state.jobs.every("alerts-evaluate", interval, move || {
        let (s, last_runs) = (s.clone(), last_runs.clone());
        async move {
            if let Err(e) = metric::evaluate_due(&s, &last_runs).await {
                tracing::warn!("metric alerts: {e}");
            }
            if let Err(e) = activity::take(&s).await {
                tracing::warn!("activity-log alerts: {e}");
            }
        }
    });
    // Delivery on its own lease: a slow receiver never delays evaluation.
    let s = state.clone();
    state.jobs.every("alerts-deliver", interval, move || {
        let s = s.clone();
        async move {
            if let Err(e) = deliver::send_due(&s).await {
                tracing::warn!("alert notifications: {e}");
            }
        }
    });
}

/// How often a rule is evaluated: its frequency, or the server's alert interval when that is below Azure's
/// one-minute floor (tests run rules in seconds).
fn effective_frequency(state: &AppState, rule_secs: i64) -> i64 {
    let floor = state.config.alert_interval;
    if floor < Duration::from_secs(60) {
        floor.as_secs().max(1) as i64
    } else {
        rule_secs
    }
}

/// One notification per webhook receiver of each enabled action group the rule names (`payload` gets the
/// action's custom properties).
async fn notifications_for(
    state: &AppState,
    rule_id: &str,
    actions: &[RuleAction],
    payload: &(dyn Fn(&RuleAction) -> serde_json::Value + Sync),
) -> anyhow::Result<Vec<NewNotification>> {
    let mut out = Vec::new();
    for a in actions {
        let Some(group) = state
            .meta
            .alert_resource_by_id(AlertKind::ActionGroup.as_str(), &a.action_group_id)
            .await?
        else {
            tracing::warn!(
                "alert rule {rule_id}: action group {} no longer exists",
                a.action_group_id
            );
            continue;
        };
        if group.properties.get("enabled") == Some(&serde_json::Value::Bool(false)) {
            continue;
        }
        let body = payload(a).to_string();
        let receivers = group
            .properties
            .get("webhookReceivers")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default();
        for r in receivers {
            if let Some(name) = r.get("name").and_then(|n| n.as_str()) {
                out.push(NewNotification {
                    rule_id: rule_id.to_string(),
                    action_group_id: group.id.clone(),
                    receiver: name.to_string(),
                    payload: body.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn alert_id(subscription: &str) -> String {
    format!(
        "/subscriptions/{subscription}/providers/Microsoft.AlertsManagement/alerts/{}",
        uuid::Uuid::new_v4()
    )
}
