//! `GET /healthz` (the process answers) and `GET /readyz` (the metadata store answers a query and holds every
//! migration): on every listener and every host (public listeners, private endpoints, data endpoints), without
//! credentials, before any registry is routed to. So they are not registry events (nothing is audited) and no
//! network rule or public-access refusal applies; in return they reveal nothing: a fixed word, no version, no
//! registry name, no reason.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::Duration;

/// How long `/readyz` waits for the store before it says no.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

fn plain(status: StatusCode, word: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        word,
    )
        .into_response()
}

async fn healthz() -> Response {
    plain(StatusCode::OK, "ok")
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(STORE_TIMEOUT, state.meta.ready()).await {
        Ok(Ok(true)) => plain(StatusCode::OK, "ready"),
        Ok(Ok(false)) => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        Ok(Err(e)) => {
            tracing::warn!("readiness: the metadata store did not answer: {e}");
            plain(StatusCode::SERVICE_UNAVAILABLE, "not ready")
        }
        Err(_) => {
            tracing::warn!("readiness: the metadata store did not answer within {STORE_TIMEOUT:?}");
            plain(StatusCode::SERVICE_UNAVAILABLE, "not ready")
        }
    }
}
