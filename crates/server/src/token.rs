//! The Docker token service: `GET /oauth2/token` with basic auth (docker, skopeo, podman, oras), and
//! `POST /oauth2/token` with the `password` and `refresh_token` grants. Requested actions the caller may not
//! have are dropped, not refused, as the Docker token spec and ACR do.

use crate::context::{basic_credentials, RequestCtx};
use crate::identities;
use crate::oci::error::{Code, OciError, OciResult};
use crate::oci::percent_decode;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::BodyExt;
use moat_model::access::{AccessGrant, ResourceScope, ScopeRequest};
use moat_model::audit::Category;
use moat_model::{Access, Action};
use serde_json::json;

/// Access tokens live 75 minutes (ACR's Entra-derived lifetime); refresh tokens 3 hours, as ACR documents.
const ACCESS_TTL: u64 = 4500;
const REFRESH_TTL: u64 = 10800;
const REFRESH_GRANT: &str = "refresh";

pub fn router() -> Router<AppState> {
    Router::new().route("/oauth2/token", any(token))
}

async fn token(State(state): State<AppState>, req: Request) -> Response {
    match issue(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn fields(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

async fn issue(state: &AppState, req: Request) -> OciResult<Response> {
    let (parts, body) = req.into_parts();
    let ctx = RequestCtx::classify_unauthenticated(state, &parts).await?;
    let mut params = fields(parts.uri.query().unwrap_or(""));
    if parts.method == Method::POST {
        let bytes = http_body_util::Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map_err(|e| {
                OciError::new(Code::Unsupported, format!("unreadable form: {e}"))
                    .with_status(axum::http::StatusCode::BAD_REQUEST)
            })?
            .to_bytes();
        params.extend(fields(&String::from_utf8_lossy(&bytes)));
    } else if parts.method != Method::GET {
        return Err(OciError::new(Code::Unsupported, "use GET or POST")
            .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED));
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    // Scopes may be repeated fields or space-separated values of one field.
    let scopes: Vec<ScopeRequest> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|s| ScopeRequest::parse(&s))
        .collect();
    let grant_type = get("grant_type");
    let login_failure = |why: &str| {
        let mut e = ctx.event("Login", None, 401);
        e.category = Category::ContainerRegistryLoginEvents.as_str().into();
        e.result_type = "Failure".into();
        e.result_description = format!("401: {why}");
        state.audit.record(e);
        let mut err = ctx.challenge(None, None);
        err.message = format!("{why}: check the username and password (for the admin user see <data dir>/admin-password)");
        err
    };
    // Who is asking: basic auth, the password grant, a refresh token we issued, or nobody.
    let identity: Option<String> = if let Some((user, password)) = basic_credentials(&parts.headers)
    {
        match identities::authenticate(state, &ctx.registry, &user, &password).await? {
            Some(id) => Some(id),
            None => return Err(login_failure("invalid username or password")),
        }
    } else if grant_type.as_deref() == Some("password") && get("username").is_some() {
        let (user, password) = (
            get("username").unwrap_or_default(),
            get("password").unwrap_or_default(),
        );
        match identities::authenticate(state, &ctx.registry, &user, &password).await? {
            Some(id) => Some(id),
            None => return Err(login_failure("invalid username or password")),
        }
    } else if grant_type.as_deref() == Some("refresh_token") {
        let rt = get("refresh_token").unwrap_or_default();
        match state
            .tokens
            .verify(&rt, &ctx.registry.login_server, &ctx.registry.id)
        {
            Ok(c) if c.grant_type == REFRESH_GRANT => Some(c.sub),
            _ => return Err(login_failure("invalid or expired refresh token")),
        }
    } else {
        None
    };
    let may = match &identity {
        Some(id) => identities::permissions(state, &ctx.registry, id).await?,
        None => Default::default(),
    };
    let grants: Vec<AccessGrant> = scopes
        .into_iter()
        .map(|s| {
            let actions = match (&identity, &s.resource) {
                (Some(_), ResourceScope::Repository(_)) => {
                    s.actions.intersection(&may).copied().collect()
                }
                (Some(_), ResourceScope::Catalog) if may.contains(&Action::Pull) => {
                    s.actions.clone()
                }
                (None, ResourceScope::Repository(_)) if ctx.registry.anonymous_pull_enabled() => s
                    .actions
                    .iter()
                    .copied()
                    .filter(|a| matches!(a, Action::Pull | Action::MetadataRead))
                    .collect(),
                _ => Default::default(),
            };
            // Refused actions are dropped, but the resource stays in the token with what remains (possibly
            // nothing): the registry can then tell "asked and refused" from "never asked".
            AccessGrant {
                resource: s.resource,
                actions,
            }
        })
        .collect();
    let subject = identity.clone().unwrap_or_else(|| "acr_anon_pull".into());
    let access = Access {
        any_repository: Default::default(),
        grants,
    };
    let token = state.tokens.issue(
        &subject,
        &ctx.registry.login_server,
        &ctx.registry.id,
        access,
        ACCESS_TTL,
    );
    let mut body = json!({
        "access_token": token, "token": token, "expires_in": ACCESS_TTL,
        "issued_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    });
    let offline = get("offline_token").as_deref() == Some("true")
        || get("access_type").as_deref() == Some("offline");
    if let (Some(id), true) = (
        &identity,
        offline || grant_type.as_deref() == Some("password"),
    ) {
        body["refresh_token"] = json!(state.tokens.issue_with_grant(
            id,
            &ctx.registry.login_server,
            &ctx.registry.id,
            REFRESH_GRANT,
            REFRESH_TTL
        ));
    }
    if identity.is_some() {
        let mut e = ctx.event("Login", None, 200);
        e.category = Category::ContainerRegistryLoginEvents.as_str().into();
        e.identity = identity;
        state.audit.record(e);
    }
    Ok(axum::Json(body).into_response())
}
