//! ACR webhooks as a service: the `webhooks` consumer of the audit log queues one delivery per matching webhook
//! (in the transaction that moves its cursor), and the same periodic job POSTs what is due through the outbound
//! connector, retrying with backoff. Service URIs and custom headers are sealed at rest (they often carry a key)
//! and opened only to deliver or for `getCallbackConfig`.

use crate::secrets::SecretsError;
use crate::state::AppState;
use moat_auth::{SealError, SecretBox};
use moat_model::monitor::webhook;
use moat_store::meta::{AuditFilter, DeliveryRow, NewDelivery, WebhookRow, WEBHOOK_CONSUMER};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How many times a delivery is tried before it is given up (ACR retries a failed delivery a few times too).
pub const MAX_ATTEMPTS: i64 = 5;
/// Audit records taken per round.
const BATCH: i64 = 1000;
/// Deliveries sent per round.
const SEND_BATCH: i64 = 50;
const USER_AGENT: &str = "moat-webhook";

fn sealer(state: &AppState) -> SecretBox {
    SecretBox::new(state.keys.secrets.clone())
}

/// What a sealed value is bound to: copied to another webhook's row, it does not open.
fn context(registry_id: &str, name: &str, what: &str) -> String {
    format!("webhook-{what}/{registry_id}/{}", name.to_ascii_lowercase())
}

pub fn seal_uri(
    state: &AppState,
    registry_id: &str,
    name: &str,
    uri: &str,
) -> Result<String, SealError> {
    sealer(state).seal(uri, &context(registry_id, name, "uri"))
}

pub fn seal_headers(
    state: &AppState,
    registry_id: &str,
    name: &str,
    headers: &BTreeMap<String, String>,
) -> Result<String, SealError> {
    let text = serde_json::to_string(headers).unwrap_or_else(|_| "{}".into());
    sealer(state).seal(&text, &context(registry_id, name, "headers"))
}

/// The service URI and custom headers in clear; a row sealed under a key this process has not loaded yet (a key
/// rotation a moment ago) makes it re-read the key files once.
pub async fn callback_config(
    state: &AppState,
    row: &WebhookRow,
) -> Result<(String, BTreeMap<String, String>), SecretsError> {
    let open = |sb: &SecretBox| -> Result<(String, BTreeMap<String, String>), SealError> {
        let uri = sb.open(
            &row.service_uri_sealed,
            &context(&row.registry_id, &row.name, "uri"),
        )?;
        let headers = sb.open(
            &row.custom_headers_sealed,
            &context(&row.registry_id, &row.name, "headers"),
        )?;
        Ok((uri, serde_json::from_str(&headers).unwrap_or_default()))
    };
    match open(&sealer(state)) {
        Err(SealError::UnknownKey(_)) => {
            let keys = state.keys.clone();
            let _ = tokio::task::spawn_blocking(move || keys.reload()).await;
            Ok(open(&sealer(state))?)
        }
        other => Ok(other?),
    }
}

/// Queues a `ping` event to the webhook; returns its event id (delivered within a round).
pub async fn ping(
    state: &AppState,
    row: &WebhookRow,
    host: &str,
) -> Result<String, moat_store::StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = moat_store::time_fmt::now();
    let d = NewDelivery {
        registry_id: row.registry_id.clone(),
        webhook: row.name.clone(),
        event_id: id.clone(),
        action: "ping".into(),
        payload: webhook::ping_payload(&id, &now, host),
    };
    state
        .meta
        .queue_webhook_deliveries(&[d], None, &now)
        .await?;
    Ok(id)
}

pub fn start(state: &AppState) {
    let s = state.clone();
    let interval = state.config.webhook_interval;
    state.jobs.every("webhooks", interval, move || {
        let s = s.clone();
        async move {
            if let Err(e) = queue_from_audit(&s).await {
                tracing::warn!("webhooks: queueing from the audit log: {e}");
            }
            if let Err(e) = deliver_due(&s).await {
                tracing::warn!("webhooks: delivering: {e}");
            }
        }
    });
}

/// Takes the audit records after the consumer's cursor and queues a delivery for each webhook they fire.
pub async fn queue_from_audit(state: &AppState) -> Result<usize, moat_store::StoreError> {
    let hooks = state.meta.all_webhooks().await?;
    let cursor = state.meta.consumer_seq(WEBHOOK_CONSUMER, "audit").await?;
    if hooks.is_empty() {
        // Nothing can fire: move past what is there (a webhook created later only sees later events anyway).
        let max = state.meta.audit_max_seq().await?;
        if max > cursor {
            state
                .meta
                .set_consumer_seq(WEBHOOK_CONSUMER, "audit", None, max)
                .await?;
        }
        return Ok(0);
    }
    let rows = state
        .meta
        .audit_rows(&AuditFilter {
            after_seq: Some(cursor),
            limit: Some(BATCH),
            ..Default::default()
        })
        .await?;
    let Some((last, _)) = rows.last() else {
        return Ok(0);
    };
    let mut by_registry: HashMap<&str, Vec<&WebhookRow>> = HashMap::new();
    for (reg, h) in &hooks {
        by_registry.entry(reg.as_str()).or_default().push(h);
    }
    let mut queue = Vec::new();
    for (_, e) in &rows {
        let Some(action) = webhook::action_of(e) else {
            continue;
        };
        let Some(candidates) = by_registry.get(e.registry.to_ascii_lowercase().as_str()) else {
            continue;
        };
        let repo = e.repository.as_deref().unwrap_or("");
        for h in candidates {
            // A webhook sees what happened after it was created, and only while enabled.
            if !h.enabled
                || h.created.as_str() > e.time_generated.as_str()
                || !h.actions.iter().any(|a| a == action)
                || !webhook::scope_matches(&h.scope, repo, e.tag.as_deref())
            {
                continue;
            }
            let id = uuid::Uuid::new_v4().to_string();
            queue.push(NewDelivery {
                registry_id: h.registry_id.clone(),
                webhook: h.name.clone(),
                event_id: id.clone(),
                action: action.into(),
                payload: webhook::payload(&id, action, e),
            });
        }
    }
    let now = moat_store::time_fmt::now();
    let n = queue.len();
    state
        .meta
        .queue_webhook_deliveries(&queue, Some(*last), &now)
        .await?;
    Ok(n)
}

/// When the `attempts`-th failed attempt is tried again: 10, 30, 90, 270 rounds' worth of the interval (with
/// the default 1 s interval, a delivery is given up after about 7 minutes).
fn backoff(interval: Duration, attempts: i64) -> Duration {
    interval * 10 * 3u32.pow((attempts.clamp(1, 8) - 1) as u32)
}

/// Sends every delivery that is due, and records each attempt.
pub async fn deliver_due(state: &AppState) -> Result<usize, moat_store::StoreError> {
    let now = moat_store::time_fmt::now();
    let due = state.meta.due_webhook_deliveries(&now, SEND_BATCH).await?;
    let mut hooks: HashMap<(String, String), Option<WebhookRow>> = HashMap::new();
    let agent = state.outbound.agent(USER_AGENT, None);
    let n = due.len();
    for d in due {
        let key = (d.registry_id.clone(), d.webhook.clone());
        if !hooks.contains_key(&key) {
            let row = state.meta.webhook(&d.registry_id, &d.webhook).await?;
            hooks.insert(key.clone(), row);
        }
        let Some(Some(h)) = hooks.get(&key) else {
            continue;
        };
        attempt(state, &agent, h, &d).await?;
    }
    Ok(n)
}

async fn attempt(
    state: &AppState,
    agent: &ureq::Agent,
    h: &WebhookRow,
    d: &DeliveryRow,
) -> Result<(), moat_store::StoreError> {
    let (uri, headers) = match callback_config(state, h).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("webhook {}: secrets do not open: {e}", h.name);
            let response =
                json!({"statusCode": "", "reasonPhrase": "the webhook's secrets do not open"});
            return finish(state, d, false, &json!({}), &response).await;
        }
    };
    let mut shown = Map::new();
    if !headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("content-type"))
    {
        shown.insert("Content-Type".into(), "application/json".into());
    }
    for k in headers.keys() {
        shown.insert(k.clone(), "******".into());
    }
    let request = json!({"requestUri": webhook::shown_uri(&uri), "headers": shown});
    let body = d.payload.to_string().into_bytes();
    let pairs: Vec<(String, String)> = headers.into_iter().collect();
    let result = super::http_post::post(agent.clone(), uri, pairs, body).await;
    let (ok, response) = match result {
        Ok(r) => {
            let mut hs = Map::new();
            for (k, v) in &r.headers {
                hs.insert(k.clone(), v.clone().into());
            }
            (
                r.is_success(),
                json!({
                    "statusCode": r.status.to_string(), "reasonPhrase": r.reason, "headers": hs,
                    "content": r.body, "version": "1.1",
                }),
            )
        }
        Err(e) => (
            false,
            json!({"statusCode": "", "reasonPhrase": e.to_string(), "headers": {}, "content": "", "version": "1.1"}),
        ),
    };
    finish(state, d, ok, &request, &response).await
}

async fn finish(
    state: &AppState,
    d: &DeliveryRow,
    ok: bool,
    request: &Value,
    response: &Value,
) -> Result<(), moat_store::StoreError> {
    let attempts = d.attempts + 1;
    let (next, outcome) = if ok {
        (None, "Delivered")
    } else if attempts >= MAX_ATTEMPTS {
        (None, "Failed")
    } else {
        let at = time::OffsetDateTime::now_utc() + backoff(state.config.webhook_interval, attempts);
        (Some(moat_store::time_fmt::format(at)), "Pending")
    };
    state
        .meta
        .record_webhook_attempt(d.id, next.as_deref(), outcome, request, response)
        .await
}

/// A delivery as `listEvents` shows it (ACR's `Event`: the request with custom header values masked, the last
/// response with its status code as a string).
pub fn event_json(d: &DeliveryRow) -> Value {
    let req = d.request.clone().unwrap_or_else(|| json!({}));
    let mut out = json!({
        "id": d.event_id,
        "eventRequestMessage": {
            "content": d.payload,
            "headers": req.get("headers").cloned().unwrap_or_else(|| json!({})),
            "method": "POST",
            "requestUri": req.get("requestUri").cloned().unwrap_or(Value::Null),
            "version": "1.1",
        },
    });
    if let Some(resp) = &d.response {
        out["eventResponseMessage"] = resp.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(i, 1), Duration::from_secs(10));
        assert_eq!(backoff(i, 2), Duration::from_secs(30));
        assert_eq!(backoff(i, 4), Duration::from_secs(270));
        let total: Duration = (1..MAX_ATTEMPTS).map(|a| backoff(i, a)).sum();
        assert!(total < Duration::from_secs(600), "{total:?}");
    }

    #[test]
    fn events_show_the_masked_request_and_the_answer() {
        let d = DeliveryRow {
            id: 1,
            registry_id: "r".into(),
            webhook: "hook1".into(),
            event_id: "e1".into(),
            action: "push".into(),
            payload: json!({"action": "push"}),
            created: "t".into(),
            attempts: 1,
            next_try: None,
            state: "Delivered".into(),
            request: Some(json!({"requestUri": "http://h/x", "headers": {"X-Key": "******"}})),
            response: Some(json!({"statusCode": "200"})),
        };
        let v = event_json(&d);
        assert_eq!(v["id"], "e1");
        assert_eq!(v["eventRequestMessage"]["content"]["action"], "push");
        assert_eq!(v["eventRequestMessage"]["headers"]["X-Key"], "******");
        assert_eq!(v["eventResponseMessage"]["statusCode"], "200");
    }
}
