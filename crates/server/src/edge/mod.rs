//! The edge every request passes before it is routed, on every listener and protocol: bounds on the request
//! target and header fields, the one authority the request names (written back as its only `Host`, so routing,
//! token realms and URLs all read the same one), and the client's address behind trusted proxies (put in the
//! request's extensions as [`ClientAddr`], so no handler reads forwarding headers itself). A refusal is answered
//! in the format of the plane the path belongs to: OCI error JSON for the registry, ARM's envelope for management.
//!
//! The bounds are far below hyper's own (HTTP/1: a 64 KiB target, a ~400 KiB head, 100 header fields; HTTP/2: the
//! header list size set in [`crate::connection`]), so the requests a client can get wrong are answered here, with
//! a body the client can show, instead of by hyper with an empty one.

pub mod authority;
pub mod forwarded;

use crate::arm::error::ArmError;
use crate::endpoints::ConnInfo;
use crate::oci::error::{Code, OciError};
use crate::state::AppState;
use authority::AuthorityError;
use axum::extract::{Request, State};
use axum::http::{header, Extensions, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use forwarded::{ClientAddrError, TrustedProxies};
use std::net::IpAddr;

/// The longest request target (path and query; scheme and authority too in absolute form) accepted.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The most header-field bytes accepted, counted as on the HTTP/1 wire (`name: value\r\n`).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The client's address, decided once at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The address the edge decided; a request that did not pass the edge (a router driven directly in a test)
    /// is its socket peer, or loopback.
    pub fn of(extensions: &Extensions) -> IpAddr {
        extensions
            .get::<ClientAddr>()
            .map(|c| c.0)
            .or_else(|| extensions.get::<ConnInfo>().map(|c| c.peer.ip()))
            .unwrap_or([127, 0, 0, 1].into())
    }
}

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(
        "the request target is {0} bytes long; this server accepts at most {MAX_TARGET_BYTES}"
    )]
    TargetTooLong(usize),
    #[error("the request's header fields take {0} bytes; this server accepts at most {MAX_HEADER_BYTES}")]
    HeadersTooLarge(usize),
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    ClientAddr(#[from] ClientAddrError),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::TargetTooLong(_) => StatusCode::URI_TOO_LONG,
            Refusal::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Authority(_) | Refusal::ClientAddr(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// ARM's error code.
    fn arm_code(&self) -> &'static str {
        match self {
            Refusal::TargetTooLong(_) => "RequestUriTooLong",
            Refusal::HeadersTooLarge(_) => "RequestHeaderFieldsTooLarge",
            Refusal::Authority(_) => "InvalidHostHeader",
            Refusal::ClientAddr(_) => "ClientAddressUnknown",
        }
    }
}

/// The management plane's paths (ARM, the Entra-style token service, cloud metadata); everything else is the
/// registry's.
fn is_management(path: &str) -> bool {
    path.starts_with("/subscriptions")
        || path.starts_with("/metadata/")
        || path.contains("/.well-known/openid-configuration")
        || path.ends_with("/oauth2/v2.0/token")
}

pub async fn admit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match check(&state, &mut req) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refuse(&req, refusal),
    }
}

fn check(state: &AppState, req: &mut Request) -> Result<(), Refusal> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, str::len);
    if target > MAX_TARGET_BYTES {
        return Err(Refusal::TargetTooLong(target));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Refusal::HeadersTooLarge(header_bytes));
    }
    let hosts: Vec<&HeaderValue> = req.headers().get_all(header::HOST).iter().collect();
    let authority = authority::authority(req.uri(), &hosts)?;
    // Only the target's authority needs writing back: otherwise the one Host header is already it.
    let rewrite = req.uri().authority().is_some();
    let peer = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.peer.ip())
        .unwrap_or([127, 0, 0, 1].into());
    let client = client_address(&state.config, req.headers(), peer)?;
    if let Some(a) = authority
        .filter(|_| rewrite)
        .and_then(|a| HeaderValue::from_str(&a).ok())
    {
        req.headers_mut().insert(header::HOST, a);
    }
    req.extensions_mut().insert(ClientAddr(client));
    Ok(())
}

/// The client's address for a request from the socket peer `peer` carrying `headers`: the peer, unless it is a
/// trusted proxy, then what the forwarding headers say (see [`forwarded`]).
pub fn client_address(
    config: &crate::config::ServeConfig,
    headers: &axum::http::HeaderMap,
    peer: IpAddr,
) -> Result<IpAddr, ClientAddrError> {
    let proxies = TrustedProxies {
        nets: &config.trusted_proxies,
        header: config.trusted_proxy_header,
    };
    if !proxies.trusts(peer) {
        return Ok(peer.to_canonical());
    }
    let lines = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            // A value that is not text cannot name an address: it stays in the list, as a hop that does not parse.
            .map(|v| v.to_str().unwrap_or("\u{0}"))
            .collect()
    };
    proxies.client(peer, &lines("forwarded"), &lines("x-forwarded-for"))
}

fn refuse(req: &Request, refusal: Refusal) -> Response {
    let status = refusal.status();
    let message = refusal.to_string();
    let mut resp = if is_management(req.uri().path()) {
        ArmError::new(status, refusal.arm_code(), message).into_response()
    } else {
        let mut r = OciError::new(Code::Unsupported, message)
            .with_status(status)
            .into_response();
        r.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        r
    };
    // The body of a refused request is left unread: on HTTP/1 the connection cannot carry another request.
    if req.version() < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::is_management;

    #[test]
    fn planes_by_path() {
        for p in [
            "/subscriptions",
            "/subscriptions/x/resourceGroups",
            "/metadata/endpoints",
            "/tenant/v2.0/.well-known/openid-configuration",
            "/tenant/oauth2/v2.0/token",
        ] {
            assert!(is_management(p), "{p}");
        }
        for p in [
            "/v2/",
            "/v2/a/manifests/b",
            "/oauth2/token",
            "/acr/v1/_catalog",
            "/",
            "/x",
        ] {
            assert!(!is_management(p), "{p}");
        }
    }
}
