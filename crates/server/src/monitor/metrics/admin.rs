//! The admin listener (`--admin-listen`, `admin_listen` in the configuration file): plain HTTP serving
//! `GET /metrics` for Prometheus and nothing else. It is a separate socket so that operational figures (request
//! rates, identities' traffic, backlogs) never reach a registry's clients: it must not share an address with a
//! public listener or a private endpoint, and the registry listeners answer `/metrics` with their usual 404.

use crate::config::ServeConfig;
use crate::state::AppState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;

/// Whether two socket addresses can accept the same connections (same port, and the same or an unspecified IP).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Refuses an admin address that a registry listener also serves: the public ones and the private endpoints
/// (which listen on their address at the main listener's port).
pub fn check(config: &ServeConfig) -> anyhow::Result<()> {
    let Some(admin) = config.metrics.admin_listen else {
        return Ok(());
    };
    let mut registry_listeners: Vec<SocketAddr> = std::iter::once(config.listen)
        .chain(config.extra_listeners.iter().copied())
        .collect();
    for pe in &config.private_endpoints {
        registry_listeners.push(SocketAddr::new(pe.address.ip(), config.listen.port()));
    }
    if let Some(l) = registry_listeners.iter().find(|l| overlaps(admin, **l)) {
        anyhow::bail!(
            "the admin listener {admin} would share {l} with a registry listener: give it an address and port of its own (it serves /metrics, which registry clients must not reach)"
        );
    }
    Ok(())
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if let Err(e) = super::prom::refresh_gauges(&state).await {
        tracing::warn!("metrics: reading gauges: {e}");
    }
    (
        [(header::CONTENT_TYPE, super::prom::CONTENT_TYPE)],
        super::prom::render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: this listener serves GET /metrics\n",
    )
        .into_response()
}

/// Binds the admin listener and serves it until the process ends; `None` when none is configured.
pub async fn start(state: &AppState) -> anyhow::Result<Option<tokio::task::AbortHandle>> {
    let Some(addr) = state.config.metrics.admin_listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the admin listener {addr}: {e}"))?;
    crate::notice::say(format_args!(
        "moat admin listener (Prometheus /metrics) on http://{}",
        listener.local_addr()?
    ));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("admin listener: {e}");
        }
    });
    Ok(Some(task.abort_handle()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_must_not_meet_a_registry_listener() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:5000"), a("127.0.0.1:5000")));
        assert!(overlaps(a("0.0.0.0:5000"), a("127.0.0.1:5000")));
        assert!(overlaps(a("127.0.0.1:5000"), a("0.0.0.0:5000")));
        assert!(!overlaps(a("127.0.0.1:9100"), a("127.0.0.1:5000")));
        assert!(!overlaps(a("127.0.0.2:5000"), a("127.0.0.1:5000")));
    }
}
