//! With `--insecure-http`, the management API and the Entra-style token service answer loopback clients only:
//! client secrets and bearer tokens for the management plane must never cross a network in clear. The socket
//! peer decides (not a forwarding header): a proxy on this host that terminates TLS is a loopback peer, and a
//! remote client's request over plain HTTP has already crossed the network.

use super::error::ArmError;
use crate::endpoints::ConnInfo;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.config.insecure_http {
        let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer.ip());
        if !peer.is_some_and(|ip| ip.to_canonical().is_loopback()) {
            return ArmError::new(
                StatusCode::FORBIDDEN,
                "InsecureTransportRefused",
                "the management API and the token service answer only local (loopback) clients when the server runs with --insecure-http: serve HTTPS (drop --insecure-http) or connect from this host",
            )
            .into_response();
        }
    }
    next.run(req).await
}
