//! The Docker token service: `GET /oauth2/token` with basic auth (docker, skopeo, podman, oras), and
//! `POST /oauth2/token` with the `password` and `refresh_token` grants. Requested actions the caller may not
//! have are dropped, not refused, as the Docker token spec and ACR do. `POST /oauth2/exchange` turns an Entra
//! (here: Moat's AAD-shaped) access token into a registry refresh token, as `az acr login` and the Azure SDKs ask.

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
use moat_auth::Subject;
use moat_model::access::{AccessGrant, ResourceScope, ScopeRequest};
use moat_model::audit::Operation;
use moat_model::{Access, Action};
use serde_json::json;

/// Access tokens live 75 minutes (ACR's Entra-derived lifetime); refresh tokens 3 hours, as ACR documents.
const ACCESS_TTL: u64 = 4500;
const REFRESH_TTL: u64 = 10800;
const REFRESH_GRANT: &str = "refresh";
/// The username that says "the password is a refresh token" (`az acr login` hands docker one this way).
const REFRESH_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";
/// Audiences an Entra token may carry at `/oauth2/exchange`: ACR's own, and ARM's (the SDKs' default) unless the
/// registry's `azureADAuthenticationAsArmPolicy` is disabled.
const EXCHANGE_AUDIENCES: &[&str] = &[
    "https://containerregistry.azure.net",
    "https://management.azure.com",
    "https://management.core.windows.net",
];
const ACR_AUDIENCE_ONLY: &[&str] = &["https://containerregistry.azure.net"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth2/token", any(token))
        .route("/oauth2/exchange", any(exchange))
}

async fn exchange(State(state): State<AppState>, req: Request) -> Response {
    match exchange_token(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
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

/// A token request's form is a few fields: anything longer is refused with 413.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The query's and (for a POST) the form body's fields; `methods` are those the endpoint answers.
async fn form(
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
    methods: &[Method],
) -> OciResult<Vec<(String, String)>> {
    if !methods.contains(&parts.method) {
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        return Err(
            OciError::new(Code::Unsupported, format!("use {}", names.join(" or ")))
                .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED),
        );
    }
    let mut params = fields(parts.uri.query().unwrap_or(""));
    if parts.method == Method::POST {
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let bytes = crate::oci::read_bounded(body, declared, MAX_FORM_BYTES)
            .await
            .map_err(|e| match e {
                crate::oci::BoundedReadError::TooLarge(_) => {
                    OciError::new(Code::SizeInvalid, format!("the form {e}"))
                        .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE)
                }
                e => OciError::new(Code::Unsupported, format!("unreadable form: {e}"))
                    .with_status(axum::http::StatusCode::BAD_REQUEST),
            })?;
        params.extend(fields(&String::from_utf8_lossy(&bytes)));
    }
    Ok(params)
}

fn field(params: &[(String, String)], k: &str) -> Option<String> {
    params
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.clone())
}

/// Records a failed login and answers with a challenge that says what to do.
fn login_failure(state: &AppState, ctx: &RequestCtx, why: &str, what_next: &str) -> OciError {
    let mut e = ctx.event(None, 401);
    e.result_description = format!("401: {why}");
    state.audit.record(e);
    let mut err = ctx.challenge(None, None);
    err.message = format!("{why}: {what_next}");
    err
}

fn login_success(state: &AppState, ctx: &RequestCtx, identity: &str) {
    let mut e = ctx.event(None, 200);
    e.identity = Some(identity.to_string());
    state.audit.record(e);
}

/// A refresh token this registry issued: the identity it was issued to, while that identity may still use it.
async fn refresh_identity(
    state: &AppState,
    ctx: &RequestCtx,
    token: &str,
) -> OciResult<Option<Subject>> {
    match state
        .tokens
        .verify(token, &ctx.registry.login_server, &ctx.registry.id)
    {
        Ok(c) if c.grant_type == REFRESH_GRANT => {
            let subject = c.subject();
            Ok(identities::is_current(&state.meta, &subject)
                .await?
                .then_some(subject))
        }
        _ => Ok(None),
    }
}

/// `POST /oauth2/exchange`: `grant_type=access_token` (or `access_token_refresh_token`) with an Entra access token
/// for ACR's or ARM's audience → `{"refresh_token"}` for the service principal it names. What that identity may
/// do is decided when the refresh token is traded for an access token, from its role assignments.
async fn exchange_token(state: &AppState, req: Request) -> OciResult<Response> {
    let (parts, body) = req.into_parts();
    let ctx = RequestCtx::classify_unauthenticated(state, &parts, Operation::Login).await?;
    let params = form(&parts, body, &[Method::POST]).await?;
    let bad = |msg: String| {
        OciError::new(Code::Unsupported, msg).with_status(axum::http::StatusCode::BAD_REQUEST)
    };
    match field(&params, "grant_type").as_deref() {
        Some("access_token" | "access_token_refresh_token") => {}
        Some("refresh_token") => {
            return Err(bad("grant_type=refresh_token needs an Entra refresh token, which Moat's token service does not issue: exchange an access token (grant_type=access_token)".into()))
        }
        other => {
            return Err(bad(format!(
                "grant_type {} is not supported: use grant_type=access_token with access_token=<Entra access token>",
                other.unwrap_or("(missing)")
            )))
        }
    }
    if let Some(service) = field(&params, "service").filter(|s| !s.is_empty()) {
        if !service.eq_ignore_ascii_case(&ctx.registry.login_server) {
            return Err(bad(format!(
                "service {service} is not this registry: send the exchange to https://{service}/oauth2/exchange or set service={}",
                ctx.registry.login_server
            )));
        }
    }
    let aad = field(&params, "access_token").unwrap_or_default();
    let arm_tokens = ctx
        .registry
        .settings
        .policies
        .azure_ad_authentication_as_arm
        .is_enabled();
    let (audiences, fix) = if arm_tokens {
        (EXCHANGE_AUDIENCES, "get a new one (`az login` again, or the SDK credential) for https://containerregistry.azure.net")
    } else {
        (ACR_AUDIENCE_ONLY, "this registry's azureADAuthenticationAsArmPolicy is disabled, so only tokens for https://containerregistry.azure.net are exchanged: get one for that audience")
    };
    let claims = state
        .tokens
        .verify_aad(aad.trim(), audiences)
        .map_err(|e| {
            login_failure(
                state,
                &ctx,
                &format!("the Entra access token was refused ({e})"),
                fix,
            )
        })?;
    // The refresh token carries the generation the Entra token was issued under: a reset revokes both.
    let subject = claims.subject();
    if !identities::is_current(&state.meta, &subject).await? {
        return Err(login_failure(
            state,
            &ctx,
            "the Entra access token was revoked (its service principal was deleted or its credentials were reset)",
            "sign in again with the principal's current credentials",
        ));
    }
    let refresh = state.tokens.issue_with_grant(
        &subject,
        &ctx.registry.login_server,
        &ctx.registry.id,
        REFRESH_GRANT,
        REFRESH_TTL,
    );
    login_success(state, &ctx, &subject.name);
    Ok(axum::Json(json!({ "refresh_token": refresh })).into_response())
}

/// Authenticates a username and password; the null GUID user presents a refresh token as its password.
async fn password_identity(
    state: &AppState,
    ctx: &RequestCtx,
    user: &str,
    password: &str,
) -> OciResult<Option<Subject>> {
    if user == REFRESH_TOKEN_USER {
        return refresh_identity(state, ctx, password).await;
    }
    identities::authenticate(state, &ctx.registry, ctx.origin.client_ip, user, password).await
}

async fn issue(state: &AppState, req: Request) -> OciResult<Response> {
    let (parts, body) = req.into_parts();
    let ctx = RequestCtx::classify_unauthenticated(state, &parts, Operation::Login).await?;
    let params = form(&parts, body, &[Method::GET, Method::POST]).await?;
    let get = |k: &str| field(&params, k);
    // Scopes may be repeated fields or space-separated values of one field.
    let scopes: Vec<ScopeRequest> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|s| ScopeRequest::parse(&s))
        .collect();
    let grant_type = get("grant_type");
    let login_failure = |why: &str| {
        login_failure(
            state,
            &ctx,
            why,
            "check the username and password (for the admin user see <data dir>/admin-password)",
        )
    };
    // Who is asking: basic auth, the password grant, a refresh token we issued, or nobody.
    let credentials = basic_credentials(&parts.headers).or_else(|| {
        (grant_type.as_deref() == Some("password"))
            .then(|| Some((get("username")?, get("password").unwrap_or_default())))
            .flatten()
    });
    let identity: Option<Subject> = if let Some((user, password)) = credentials {
        match password_identity(state, &ctx, &user, &password).await? {
            Some(id) => Some(id),
            None => return Err(login_failure("invalid username or password")),
        }
    } else if grant_type.as_deref() == Some("refresh_token") {
        let rt = get("refresh_token").unwrap_or_default();
        match refresh_identity(state, &ctx, &rt).await? {
            Some(id) => Some(id),
            None => return Err(login_failure("invalid, expired or revoked refresh token")),
        }
    } else {
        None
    };
    let may = match &identity {
        Some(id) => identities::permissions(state, &ctx.registry, &id.name).await?,
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
                // Listing the repositories that have deleted artifacts: for who may read deleted artifacts.
                (Some(_), ResourceScope::DeletedCatalog) if may.contains(&Action::DeletedRead) => {
                    [Action::DeletedRead].into()
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
    let subject = identity
        .clone()
        .unwrap_or_else(|| Subject::named("acr_anon_pull"));
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
    if let Some(id) = &identity {
        login_success(state, &ctx, &id.name);
    }
    Ok(axum::Json(body).into_response())
}
