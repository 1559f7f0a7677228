//! Recording management requests in the activity log. Every request gets an [`ActivityScope`] before it is
//! handled: it knows the operation (from ARM's naming rule in `moat_model::activity`), the caller's address and
//! the correlation id, and learns the caller once the token is checked. Handlers that change state take their
//! record from it ([`ActivityScope::change`]) and hand it to the store, which writes it in the change's own
//! transaction. [`finish`] then covers the rest, so no route can forget: a refused request is recorded as
//! `Failed` (through the batched writer: it changed nothing), and a change request answered with success whose
//! record the store did not write (a delete of what was already gone, an import accepted for later, a resource
//! group) is recorded before its answer is sent.

use super::error::ArmError;
use crate::state::AppState;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::activity::{arm_operation, ActivityEvent, ArmOperation};
use std::sync::{Mutex, OnceLock};

/// What the activity log needs to know about one management request.
pub struct ActivityScope {
    operation: ArmOperation,
    caller_ip: String,
    correlation_id: String,
    /// The `User-Agent` the request carried, kept in the record's properties (stored escaped and bounded).
    user_agent: Option<String>,
    /// The authenticated service principal; unset while the token is unchecked or when it was refused.
    caller: OnceLock<String>,
    /// The ids of the records handlers took to write with their change (written only if the change was made).
    issued: Mutex<Vec<String>>,
}

/// The response header that carries the correlation id (ARM sends it on every answer).
pub const CORRELATION_HEADER: &str = "x-ms-correlation-request-id";

impl ActivityScope {
    pub fn of(req: &Request) -> ActivityScope {
        let headers = req.headers();
        ActivityScope {
            operation: arm_operation(req.method().as_str(), req.uri().path()),
            caller_ip: crate::edge::ClientAddr::of(req.extensions()).to_string(),
            correlation_id: crate::context::correlation_id(headers),
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            caller: OnceLock::new(),
            issued: Mutex::new(Vec::new()),
        }
    }

    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// What the request does, by ARM's naming rule (also what decides whether Moat serves it).
    pub fn operation(&self) -> &ArmOperation {
        &self.operation
    }

    pub fn set_caller(&self, app_id: &str) {
        let _ = self.caller.set(app_id.to_string());
    }

    fn event(&self) -> ActivityEvent {
        let mut e = ActivityEvent::new(
            uuid::Uuid::new_v4().to_string(),
            moat_store::time_fmt::now(),
            &self.operation.operation_name,
            &self.operation.resource_id,
            self.caller.get().map(String::as_str).unwrap_or("-"),
            &self.caller_ip,
            &self.correlation_id,
        );
        if let Some(ua) = &self.user_agent {
            e.set_property("userAgent", ua.as_str().into());
        }
        e
    }

    /// The record of this request's change, for the store to write with it.
    pub fn change(&self) -> ActivityEvent {
        let e = self.event();
        if let Ok(mut ids) = self.issued.lock() {
            ids.push(e.event_data_id.clone());
        }
        e
    }

    /// The record of how an operation that outlives its request (a remote import) ended; written by whoever
    /// sees it end, with [`completed`].
    pub fn completion(&self) -> ActivityEvent {
        self.event()
    }
}

/// `record` completed with the outcome of its long-running operation.
pub fn completed(mut record: ActivityEvent, outcome: &Result<(), ArmError>) -> ActivityEvent {
    record.time = moat_store::time_fmt::now();
    match outcome {
        Ok(()) => {
            record.set_http_status(200);
            record
        }
        Err(e) => record.failed(e.status.as_u16(), &e.code, &e.message),
    }
}

/// Turns a handler's result into the response, recording what [`ActivityScope::change`] did not.
pub async fn finish(
    state: &AppState,
    scope: &ActivityScope,
    result: Result<Response, ArmError>,
) -> Response {
    let mut response = match result {
        Err(e) => {
            // Refusals of changes, and every authentication or authorization refusal even of a read.
            let refused = matches!(e.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            if scope.operation.is_change || refused {
                state.audit.record_activity(scope.event().failed(
                    e.status.as_u16(),
                    &e.code,
                    &e.message,
                ));
            }
            e.into_response()
        }
        Ok(r) => {
            if scope.operation.is_change && r.status().is_success() {
                // Written before the answer leaves: an acknowledged change request is recorded.
                if let Err(e) = record_unrecorded(state, scope, r.status()).await {
                    return ArmError::internal(format!("activity log not written: {e}"))
                        .into_response();
                }
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&scope.correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}

/// Records a successful change request unless the store already wrote one of the records handed out for it.
async fn record_unrecorded(
    state: &AppState,
    scope: &ActivityScope,
    status: StatusCode,
) -> Result<(), moat_store::StoreError> {
    let issued = scope
        .issued
        .lock()
        .map(|ids| ids.clone())
        .unwrap_or_default();
    if !issued.is_empty() && state.meta.activity_recorded(&issued).await? {
        return Ok(());
    }
    let mut event = scope.event();
    event.set_http_status(status.as_u16());
    state.meta.record_activity(&event).await
}

/// A record of a change made on the server's own side (its first start, its configuration file, an operator
/// command on the data directory): no network caller, so the caller names where it came from.
pub fn local_event(caller: &str, operation_name: &str, resource_id: &str) -> ActivityEvent {
    ActivityEvent::new(
        uuid::Uuid::new_v4().to_string(),
        moat_store::time_fmt::now(),
        operation_name,
        resource_id,
        caller,
        "local",
        uuid::Uuid::new_v4().to_string(),
    )
}

/// The caller of an operator command: `local:<login name>`.
pub fn operator() -> String {
    format!(
        "local:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "operator".into())
    )
}
