//! Sending due notifications to their receivers: the URL is unsealed at the moment of sending, a failure that
//! may pass (no answer, 408, 429, 5xx) is retried with exponential backoff, any other answer ends the
//! notification as failed (Azure's action groups retry the same set).

use crate::arm::insights::alerts::receiver_context;
use crate::monitor::http_post::{self, PostError};
use crate::state::AppState;
use moat_auth::sealed::SecretBox;
use moat_model::monitor::alert::AlertKind;
use std::time::Duration;

/// Notifications sent per pass.
const BATCH: i64 = 50;
/// After this many attempts a notification is given up (about two hours at the production pace).
const MAX_ATTEMPTS: i64 = 30;
/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(300);

fn backoff(state: &AppState, attempts: i64) -> i64 {
    let base = state
        .config
        .alert_interval
        .clamp(Duration::from_millis(200), Duration::from_secs(10));
    let d = base
        .saturating_mul(1u32 << attempts.clamp(0, 16) as u32)
        .min(MAX_DELAY);
    d.as_millis() as i64
}

pub async fn send_due(state: &AppState) -> anyhow::Result<()> {
    let due = state.meta.due_alert_notifications(BATCH).await?;
    if due.is_empty() {
        return Ok(());
    }
    let sb = SecretBox::new(state.keys.secrets.clone());
    let agent = state
        .outbound
        .agent(concat!("moat-alerts/", env!("CARGO_PKG_VERSION")), None);
    for n in due {
        let group = state
            .meta
            .alert_resource_by_id(AlertKind::ActionGroup.as_str(), &n.action_group_id)
            .await?;
        let sealed = group.as_ref().and_then(|g| {
            g.secrets
                .get(n.receiver.to_ascii_lowercase())
                .and_then(|v| v.as_str())
                .map(|s| (g.id.clone(), s.to_string()))
        });
        let Some((group_id, sealed)) = sealed else {
            state
                .meta
                .finish_alert_notification(
                    n.id,
                    "failed",
                    Some("the action group or its receiver was deleted"),
                )
                .await?;
            continue;
        };
        let uri = match sb.open(&sealed, &receiver_context(&group_id, &n.receiver)) {
            Ok(u) => u,
            Err(e) => {
                state
                    .meta
                    .retry_alert_notification(
                        n.id,
                        backoff(state, n.attempts),
                        &format!("receiver URL not readable: {e}"),
                    )
                    .await?;
                continue;
            }
        };
        let result =
            http_post::post(agent.clone(), uri, vec![], n.payload.clone().into_bytes()).await;
        let retry_error = match result {
            Ok(d) if d.is_success() => {
                state
                    .meta
                    .finish_alert_notification(n.id, "delivered", None)
                    .await?;
                continue;
            }
            Ok(d) if matches!(d.status, 408 | 429) || d.status >= 500 => {
                format!("receiver answered {} {}", d.status, d.reason)
            }
            Ok(d) => {
                let why = format!("receiver answered {} {}", d.status, d.reason);
                state
                    .meta
                    .finish_alert_notification(n.id, "failed", Some(&why))
                    .await?;
                continue;
            }
            Err(PostError::Refused(r)) => {
                let why = format!("refused by the outbound rules: {r}");
                state
                    .meta
                    .finish_alert_notification(n.id, "failed", Some(&why))
                    .await?;
                continue;
            }
            Err(PostError::Transport(t)) => t,
        };
        if n.attempts + 1 >= MAX_ATTEMPTS {
            state
                .meta
                .finish_alert_notification(n.id, "failed", Some(&retry_error))
                .await?;
        } else {
            tracing::info!(
                notification = n.id,
                attempts = n.attempts + 1,
                "alert notification not delivered: {retry_error}"
            );
            state
                .meta
                .retry_alert_notification(n.id, backoff(state, n.attempts), &retry_error)
                .await?;
        }
    }
    Ok(())
}
