//! Metric rules: each due rule's window of minute points, per dimension combination, against its stored states.

use super::{alert_id, effective_frequency, notifications_for};
use crate::state::AppState;
use moat_model::monitor::alert::schema::{self, Essentials};
use moat_model::monitor::alert::{
    evaluate_criterion, parse_metric_alert, AlertKind, DimensionKey, MetricAlert, PointView,
};
use moat_store::meta::{AlertResourceRow, AlertStateRow};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub async fn evaluate_due(
    state: &AppState,
    last_runs: &Arc<Mutex<HashMap<String, i64>>>,
) -> anyhow::Result<()> {
    let rules = state
        .meta
        .alert_resources(AlertKind::MetricAlert.as_str(), None)
        .await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sub = crate::listener::cloud_ids(&state.meta)
        .await?
        .subscription_id;
    for row in rules {
        let rule = match parse_metric_alert(&row.properties) {
            Ok(r) if r.enabled => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("metric alert {}: stored rule unreadable: {e}", row.id);
                continue;
            }
        };
        let key = row.id.to_ascii_lowercase();
        let due = {
            let runs = last_runs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            runs.get(&key)
                .is_none_or(|last| now - last >= effective_frequency(state, rule.frequency_secs()))
        };
        if !due {
            continue;
        }
        if let Err(e) = evaluate(state, &sub, &row, &rule, now).await {
            tracing::warn!("metric alert {}: {e}", row.id);
            continue;
        }
        if let Ok(mut runs) = last_runs.lock() {
            runs.insert(key, now);
        }
    }
    Ok(())
}

/// The rule's value per dimension combination and whether every criterion is met there. Combinations come from
/// the first criterion; another criterion is read at the same combination, or at its only (unsplit) one.
fn combine(
    per_criterion: Vec<BTreeMap<DimensionKey, (f64, bool)>>,
) -> BTreeMap<DimensionKey, (Vec<f64>, bool)> {
    let mut out = BTreeMap::new();
    let Some(first) = per_criterion.first() else {
        return out;
    };
    for (key, (v, met)) in first {
        let mut values = vec![*v];
        let mut all = *met;
        for other in &per_criterion[1..] {
            let hit = other.get(key).or_else(|| other.get(&Vec::new()));
            match hit {
                Some((v, m)) => {
                    values.push(*v);
                    all &= *m;
                }
                None => {
                    values.push(0.0);
                    all = false;
                }
            }
        }
        out.insert(key.clone(), (values, all));
    }
    out
}

async fn evaluate(
    state: &AppState,
    sub: &str,
    row: &AlertResourceRow,
    rule: &MetricAlert,
    now: i64,
) -> anyhow::Result<()> {
    let scope = rule.scopes.first().cloned().unwrap_or_default();
    let registry = scope.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
    // The window ends with the current minute (its points so far count: an alert need not wait a minute).
    let to = (now / 60) * 60 + 60;
    let from = to - rule.window_secs();
    let points = state.meta.metric_points(&registry, None, from, to).await?;
    let per: Vec<_> = rule
        .criteria
        .iter()
        .map(|c| {
            evaluate_criterion(
                c,
                points.iter().map(|p| PointView {
                    metric: &p.metric,
                    dimensions: &p.dimensions,
                    count: p.count,
                    total: p.total,
                    minimum: p.minimum,
                    maximum: p.maximum,
                }),
            )
        })
        .collect();
    let results = combine(per);
    let rule_key = row.id.to_ascii_lowercase();
    let stored: HashMap<String, AlertStateRow> = state
        .meta
        .alert_states(&rule_key)
        .await?
        .into_iter()
        .map(|s| (s.dims.clone(), s))
        .collect();
    let window_start = moat_store::time_fmt::from_unix(from as f64);
    let window_end = moat_store::time_fmt::from_unix(to as f64);
    let mut transitions = Vec::new();
    let mut notifications = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let now_s = moat_store::time_fmt::now();
    for (key, (values, met)) in &results {
        let dims = serde_json::to_string(key)?;
        seen.insert(dims.clone());
        let fired = stored.get(&dims).is_some_and(|s| s.condition == "Fired");
        if *met && !fired {
            let st = AlertStateRow {
                dims,
                condition: "Fired".into(),
                alert_id: alert_id(sub),
                fired_at: now_s.clone(),
                resolved_at: None,
            };
            notifications.extend(
                notify(
                    state,
                    sub,
                    row,
                    rule,
                    &st,
                    key,
                    values,
                    &window_start,
                    &window_end,
                )
                .await?,
            );
            transitions.push(st);
        } else if !*met && fired && rule.auto_mitigate {
            let mut st = stored[&dims].clone();
            st.condition = "Resolved".into();
            st.resolved_at = Some(now_s.clone());
            notifications.extend(
                notify(
                    state,
                    sub,
                    row,
                    rule,
                    &st,
                    key,
                    values,
                    &window_start,
                    &window_end,
                )
                .await?,
            );
            transitions.push(st);
        }
    }
    // A fired combination without points in the window any more: its value is gone, so it no longer meets.
    if rule.auto_mitigate {
        for (dims, s) in &stored {
            if s.condition == "Fired" && !seen.contains(dims) {
                let key: DimensionKey = serde_json::from_str(dims).unwrap_or_default();
                let mut st = s.clone();
                st.condition = "Resolved".into();
                st.resolved_at = Some(now_s.clone());
                let zeros = vec![0.0; rule.criteria.len()];
                notifications.extend(
                    notify(
                        state,
                        sub,
                        row,
                        rule,
                        &st,
                        &key,
                        &zeros,
                        &window_start,
                        &window_end,
                    )
                    .await?,
                );
                transitions.push(st);
            }
        }
    }
    if !transitions.is_empty() {
        for t in &transitions {
            tracing::info!(rule = %row.id, dims = %t.dims, condition = %t.condition, "metric alert");
        }
        state
            .meta
            .record_alert_transitions(&rule_key, &transitions, &notifications)
            .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn notify(
    state: &AppState,
    sub: &str,
    row: &AlertResourceRow,
    rule: &MetricAlert,
    st: &AlertStateRow,
    key: &DimensionKey,
    values: &[f64],
    window_start: &str,
    window_end: &str,
) -> anyhow::Result<Vec<moat_store::meta::NewNotification>> {
    let conditions: Vec<_> = rule
        .criteria
        .iter()
        .zip(values)
        .map(|(c, v)| schema::metric_condition(c, key, *v))
        .collect();
    let context = schema::metric_context(&rule.window_size, conditions, window_start, window_end);
    let essentials = Essentials {
        alert_id: st.alert_id.clone(),
        alert_rule: row.name.clone(),
        severity: rule.severity,
        activity: false,
        resolved: st.condition == "Resolved",
        target_ids: rule.scopes.clone(),
        origin_alert_id: format!(
            "{sub}_{}_microsoft.insights_metricalerts_{}_{}",
            row.resource_group, row.name, st.dims
        ),
        fired: st.fired_at.clone(),
        resolved_at: st.resolved_at.clone(),
        description: rule.description.clone(),
    };
    notifications_for(state, &row.id, &rule.actions, &|a| {
        schema::payload(&essentials, context.clone(), &a.web_hook_properties)
    })
    .await
}
