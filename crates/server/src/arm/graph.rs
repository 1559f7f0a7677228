//! The directory reads `az role assignment` makes through Microsoft Graph, answered from Moat's service principals:
//! resolving `--assignee <appId>` (`GET /v1.0/servicePrincipals?$filter=servicePrincipalNames/any(c:c eq '…')`),
//! naming principals in a list (`POST /v1.0/directoryObjects/getByIds`), and users (Moat has none). The cloud
//! metadata names this server as the Graph endpoint, so az asks here instead of graph.microsoft.com. Read only:
//! principals are made, reset and deleted with `moat sp`. A principal's object id is its appId.
//!
//! Who may read: any principal with a role in the subscription, with a current Entra token for the directory
//! (this server's address, or graph.microsoft.com). A refusal is recorded in the activity log.

use super::error::{ArmError, ArmResult};
use super::identity::{authenticate_for, base_url};
use crate::state::AppState;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use moat_model::activity::ActivityEvent;
use moat_store::meta::ServicePrincipal;
use serde_json::{json, Value};

/// Graph's own resource id (tokens for it are accepted too).
const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1.0/servicePrincipals", get(list))
        .route("/v1.0/servicePrincipals/{id}", get(show))
        .route("/v1.0/directoryObjects/getByIds", post(by_ids))
        .route("/v1.0/users", get(users))
}

fn principal_json(sp: &ServicePrincipal, tenant: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.servicePrincipal",
        "id": sp.app_id,
        "appId": sp.app_id,
        "displayName": sp.display_name,
        "servicePrincipalNames": [sp.app_id],
        "servicePrincipalType": "Application",
        "accountEnabled": true,
        "appOwnerOrganizationId": tenant,
        "createdDateTime": sp.created_at,
    })
}

/// The caller, or the refusal (recorded). Returns the tenant for the answer.
async fn caller(state: &AppState, req: &Parts, operation: &str) -> ArmResult<String> {
    let ids = crate::listener::cloud_ids(&state.meta)
        .await
        .map_err(ArmError::internal)?;
    let scheme = if state.config.insecure_http {
        "http"
    } else {
        "https"
    };
    let own = base_url(&req.headers, &req.uri, scheme);
    let refused = match authenticate_for(
        state,
        &req.headers,
        &ids.subscription_id,
        &[GRAPH_AUDIENCE, &own],
    )
    .await
    {
        Ok(p) if p.can_read_subscription() => return Ok(ids.tenant_id),
        Ok(p) => (
            p.app_id,
            ArmError::new(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation: the directory is read by principals with a role in the subscription.",
            ),
        ),
        Err(e) => ("-".to_string(), e),
    };
    let (who, e) = refused;
    let event = ActivityEvent::new(
        uuid::Uuid::new_v4().to_string(),
        moat_store::time_fmt::now(),
        operation,
        "/servicePrincipals",
        &who,
        crate::edge::ClientAddr::of(&req.extensions).to_string(),
        crate::context::correlation_id(&req.headers),
    )
    .failed(e.status.as_u16(), &e.code, &e.message);
    state.audit.record_activity(event);
    Err(e)
}

fn unsupported_query(what: &str) -> ArmError {
    ArmError::bad_request(
        "Request_UnsupportedQuery",
        format!("Moat's directory does not support the query {what}: use servicePrincipalNames/any(c:c eq '{{appId}}'), appId eq '{{appId}}' or displayName eq '{{name}}'."),
    )
}

/// The value of `prefix'value'suffix` (the prefix in any case), a quote-free value.
fn quoted<'a>(filter: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let head = filter.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let v = filter[prefix.len()..].strip_suffix(suffix)?;
    let v = v.strip_prefix('\'')?.strip_suffix('\'')?;
    (!v.contains('\'')).then_some(v)
}

/// `GET /v1.0/servicePrincipals[?$filter=…]`.
async fn list(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let tenant = match caller(&state, &req, "Microsoft.Graph/servicePrincipals/read").await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let filter =
        super::authorization::odata_filter(req.uri.query().unwrap_or("")).unwrap_or_default();
    let filter = filter.trim();
    let all = match state.meta.service_principals().await {
        Ok(all) => all,
        Err(e) => return ArmError::from(e).into_response(),
    };
    let keep: Box<dyn Fn(&ServicePrincipal) -> bool> = if filter.is_empty() {
        Box::new(|_| true)
    } else if let Some(v) = quoted(filter, "servicePrincipalNames/any(c:c eq ", ")")
        .or_else(|| quoted(filter, "appId eq ", ""))
    {
        let v = v.to_ascii_lowercase();
        Box::new(move |sp| sp.app_id == v)
    } else if let Some(v) = quoted(filter, "displayName eq ", "") {
        let v = v.to_string();
        Box::new(move |sp| sp.display_name == v)
    } else {
        return unsupported_query(&moat_model::text::escape(filter)).into_response();
    };
    let value: Vec<Value> = all
        .iter()
        .filter(|sp| keep(sp))
        .map(|sp| principal_json(sp, &tenant))
        .collect();
    axum::Json(json!({ "value": value })).into_response()
}

/// `GET /v1.0/servicePrincipals/{id}` (by object id, which is the appId).
async fn show(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    let tenant = match caller(&state, &req, "Microsoft.Graph/servicePrincipals/read").await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match state.meta.service_principal(&id.to_ascii_lowercase()).await {
        Ok(Some(sp)) => axum::Json(principal_json(&sp, &tenant)).into_response(),
        Ok(None) => ArmError::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{}' does not exist or one of its queried reference-property objects are not present.",
                moat_model::text::escape(&id)
            ),
        )
        .into_response(),
        Err(e) => ArmError::from(e).into_response(),
    }
}

/// `POST /v1.0/directoryObjects/getByIds` with `{"ids": [...]}`: the principals among them.
async fn by_ids(State(state): State<AppState>, req: Request) -> Response {
    let (req, body) = req.into_parts();
    let tenant = match caller(&state, &req, "Microsoft.Graph/directoryObjects/read").await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let body = match http_body_util::Limited::new(body, 1024 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return ArmError::bad_request("Request_BadRequest", format!("unreadable body: {e}"))
                .into_response()
        }
    };
    let ids: Vec<String> = match serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("ids").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
    {
        Some(ids) => ids,
        None => {
            return ArmError::bad_request(
                "Request_BadRequest",
                "The body must be {\"ids\": [\"<object id>\", ...]}.",
            )
            .into_response()
        }
    };
    if ids.len() > 1000 {
        return ArmError::bad_request("Request_BadRequest", "At most 1000 ids per request.")
            .into_response();
    }
    let mut value = Vec::new();
    for id in ids {
        match state.meta.service_principal(&id.to_ascii_lowercase()).await {
            Ok(Some(sp)) => value.push(principal_json(&sp, &tenant)),
            Ok(None) => {}
            Err(e) => return ArmError::from(e).into_response(),
        }
    }
    axum::Json(json!({ "value": value })).into_response()
}

/// `GET /v1.0/users`: Moat's directory holds service principals only.
async fn users(State(state): State<AppState>, req: Request) -> Response {
    let (req, _) = req.into_parts();
    match caller(&state, &req, "Microsoft.Graph/users/read").await {
        Ok(_) => axum::Json(json!({ "value": [] })).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_take_one_quoted_value() {
        let q = |f| super::quoted(f, "servicePrincipalNames/any(c:c eq ", ")");
        assert_eq!(q("servicePrincipalNames/any(c:c eq 'abc')"), Some("abc"));
        assert_eq!(q("SERVICEPRINCIPALNAMES/ANY(C:C EQ 'abc')"), Some("abc"));
        assert_eq!(q("servicePrincipalNames/any(c:c eq 'a'b')"), None);
        assert_eq!(q("servicePrincipalNames/any(c:c eq abc)"), None);
        assert_eq!(super::quoted("appId eq 'x'", "appId eq ", ""), Some("x"));
    }
}
