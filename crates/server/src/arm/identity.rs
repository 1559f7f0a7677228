//! The AAD-shaped token service (discovery and client credentials) and the caller of a management request:
//! which service principal, and what its role assignments let it do.

use super::error::{ArmError, ArmResult};
use crate::logins::{Secret, Throttled};
use crate::state::AppState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::rbac::{Role, RoleAssignment, RoleScope};
use serde_json::json;

/// Audiences a management-plane token may carry (az asks for `management.core.windows.net//.default`).
pub const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
];
/// Access tokens live an hour, like AAD's.
const TOKEN_TTL: u64 = 3599;

/// `scheme://host[:port]` as the client addressed us (HTTP/2 carries the host in the URI, not a Host header).
pub fn base_url(headers: &HeaderMap, uri: &axum::http::Uri, scheme: &str) -> String {
    let host = crate::context::host_of(headers, uri);
    format!(
        "{scheme}://{}",
        if host.is_empty() { "127.0.0.1" } else { &host }
    )
}

pub fn openid_configuration(base: &str, tenant: &str) -> Response {
    axum::Json(json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "issuer": format!("{base}/{tenant}/v2.0"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["token"],
        "tenant_region_scope": "WW",
    }))
    .into_response()
}

/// The `az cloud register` document (`/metadata/endpoints`).
pub fn cloud_metadata(base: &str, acr_suffix: &str) -> Response {
    axum::Json(json!({
        "name": "Moat",
        "resourceManager": format!("{base}/"),
        "authentication": {
            "loginEndpoint": base,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        // `az acr show-endpoints` on a registry without dedicated data endpoints prints `*.blob.<storage>`, and az
        // fails when the cloud has no storage suffix. Moat has no storage endpoint (blobs come from the login
        // server or the data endpoint), so the suffix is a name that never resolves (RFC 2606).
        // az resolves principals through Graph (`az role assignment`): this server answers the reads it makes.
        "microsoftGraphResourceId": format!("{base}/"),
        "suffixes": {"acrLoginServer": acr_suffix, "storage": "invalid"},
    }))
    .into_response()
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": moat_store::time_fmt::now(),
        "trace_id": uuid::Uuid::new_v4().to_string(),
        "correlation_id": uuid::Uuid::new_v4().to_string(),
    });
    (status, axum::Json(body)).into_response()
}

/// A throttled sign-in, as Entra answers one (AADSTS50053: locked after too many failed sign-ins), with the
/// `Retry-After` MSAL and azure-identity honour.
fn throttled(t: &Throttled) -> Response {
    let mut r = aad_error(
        StatusCode::TOO_MANY_REQUESTS,
        "invalid_client",
        50053,
        &t.message(),
    );
    if let Ok(v) = t.retry_after_secs().to_string().parse() {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

fn form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (crate::oci::percent_decode(k), crate::oci::percent_decode(v))
        })
        .collect()
}

/// `POST /{tenant}/oauth2/v2.0/token` with the client-credentials grant.
pub async fn token(
    state: &AppState,
    tenant: &str,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let ids = match crate::listener::cloud_ids(&state.meta).await {
        Ok(ids) => ids,
        Err(e) => return ArmError::internal(e).into_response(),
    };
    if !(tenant.eq_ignore_ascii_case(&ids.tenant_id)
        || tenant == "common"
        || tenant == "organizations")
    {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Use the tenant printed by `moat sp create`."),
        );
    }
    let fields = form(body);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if get("grant_type").as_deref() != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; use client_credentials.",
        );
    }
    let (client_id, secret) = match (get("client_id"), get("client_secret")) {
        (Some(c), Some(s)) => (c, s),
        _ => match crate::context::basic_credentials(headers) {
            Some(pair) => pair,
            None => {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain client_id and client_secret.",
                )
            }
        },
    };
    let sp = match state.meta.service_principal(&client_id).await {
        Ok(sp) => sp,
        Err(e) => return ArmError::from(e).into_response(),
    };
    let secret_check = match &sp {
        Some(sp) => Secret::Hashed {
            password: &secret,
            stored: &sp.secret_hash,
        },
        None => Secret::Unknown,
    };
    let ok = match state.logins.check(client, &client_id, secret_check).await {
        Ok(ok) => ok,
        Err(t) => return throttled(&t),
    };
    let sp = match sp {
        Some(sp) if ok => sp,
        Some(_) => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            )
        }
        None => {
            return aad_error(StatusCode::BAD_REQUEST, "unauthorized_client", 700016, &format!("Application with identifier '{client_id}' was not found. Create it with `moat sp create`."))
        }
    };
    let scope = get("scope").unwrap_or_default();
    let resource = scope
        .split(' ')
        .next()
        .unwrap_or("")
        .trim_end_matches(".default")
        .trim_end_matches('/');
    let resource = if resource.is_empty() {
        ARM_AUDIENCES[0]
    } else {
        resource
    };
    let (access_token, expires_in) = state.tokens.issue_aad(
        &ids.tenant_id,
        &sp.app_id,
        sp.generation,
        resource,
        TOKEN_TTL,
    );
    axum::Json(json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": access_token})).into_response()
}

/// Who is calling the management API, and where they may act.
#[derive(Clone, Debug)]
pub struct ArmPrincipal {
    pub app_id: String,
    pub assignments: Vec<RoleAssignment>,
}

impl ArmPrincipal {
    fn any(&self, pred: impl Fn(&RoleAssignment) -> bool) -> bool {
        self.assignments.iter().any(pred)
    }

    pub fn can_read(&self, rg: &str, name: &str) -> bool {
        self.any(|a| a.role.can_read_resources() && a.scope.covers(rg, name))
    }

    pub fn can_write(&self, rg: &str, name: &str) -> bool {
        self.any(|a| a.role.can_write_resources() && a.scope.covers(rg, name))
    }

    pub fn can_read_group(&self, rg: &str) -> bool {
        self.any(|a| a.role.can_read_resources() && a.scope.covers_group(rg))
    }

    pub fn can_write_group(&self, rg: &str) -> bool {
        self.any(|a| a.role.can_write_resources() && a.scope.covers_group(rg))
    }

    /// Reading what is at a scope (role assignments included): a role that reads resources, at it or above.
    pub fn can_read_scope(&self, scope: &RoleScope) -> bool {
        self.any(|a| a.role.can_read_resources() && a.scope.covers_scope(scope))
    }

    /// Creating and deleting role assignments at a scope: Owner, at it or above.
    pub fn can_assign_roles(&self, scope: &RoleScope) -> bool {
        self.any(|a| a.role.can_assign_roles() && a.scope.covers_scope(scope))
    }

    pub fn can_read_subscription(&self) -> bool {
        !self.assignments.is_empty()
    }

    pub fn denied(&self, action: &str, scope: &str) -> ArmError {
        ArmError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{0}' with object id '{0}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. Assign a role with `moat sp create --role` or ask an Owner.",
                self.app_id
            ),
        )
    }
}

/// The caller of a management request: a current Entra token for ARM's audience.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    sub: &str,
) -> ArmResult<ArmPrincipal> {
    authenticate_for(state, headers, sub, ARM_AUDIENCES).await
}

/// The caller, with a current Entra token for one of `audiences` (ARM's, or the directory's for Graph).
pub async fn authenticate_for(
    state: &AppState,
    headers: &HeaderMap,
    sub: &str,
    audiences: &[&str],
) -> ArmResult<ArmPrincipal> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing: run `moat login`.",
        ));
    };
    let token = auth.strip_prefix("Bearer ").ok_or_else(|| {
        ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header must be a Bearer token.",
        )
    })?;
    let claims = state
        .tokens
        .verify_aad(token.trim(), audiences)
        .map_err(|e| {
            ArmError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                format!("The access token is invalid: {e}. Run `moat login` again."),
            )
        })?;
    if !crate::identities::is_current(&state.meta, &claims.subject()).await? {
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!(
                "The access token was revoked: service principal '{}' was deleted or its credentials were reset after it was issued. Sign in again with its current credentials.",
                claims.appid
            ),
        ));
    }
    let assignments = state
        .meta
        .role_assignments(&claims.appid)
        .await?
        .into_iter()
        .filter_map(|row| {
            Some(RoleAssignment {
                role: Role::parse(&row.role)?,
                scope: RoleScope::parse(&row.scope, sub)?,
            })
        })
        .collect();
    Ok(ArmPrincipal {
        app_id: claims.appid,
        assignments,
    })
}
