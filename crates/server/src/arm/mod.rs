//! The management plane: ACR's ARM API under `/subscriptions/…`, the AAD-shaped token service, and the
//! cloud metadata `az cloud register` reads. ARM paths are case-insensitive in their fixed segments, so they are
//! dispatched by hand after lower-casing those.

pub mod activity;
pub mod api_version;
pub mod authorization;
mod authz;
pub mod error;
pub mod graph;
pub mod identity;
pub mod import;
pub mod insights;
mod loopback_only;
pub mod pipelines;
pub mod private_endpoints;
pub mod registries;
pub mod registry_json;
pub mod webhooks;

use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use error::{ArmError, ArmResult};
use http_body_util::BodyExt;
use identity::ArmPrincipal;
use moat_model::arm_support;
use serde_json::{json, Value};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/subscriptions", any(dispatch))
        .route("/subscriptions/{*rest}", any(dispatch))
        .route("/metadata/endpoints", get(metadata))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid),
        )
        .route("/{tenant}/.well-known/openid-configuration", get(openid))
        .route("/{tenant}/oauth2/v2.0/token", post(aad_token))
        .merge(graph::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            loopback_only::guard,
        ))
}

fn scheme(state: &AppState) -> &'static str {
    if state.config.insecure_http {
        "http"
    } else {
        "https"
    }
}

async fn metadata(State(state): State<AppState>, req: Request) -> Response {
    let base = identity::base_url(req.headers(), req.uri(), scheme(&state));
    let port = state.config.listen.port();
    let suffix = crate::config::login_server_for(
        "x",
        &state.config.domain,
        port,
        state.config.insecure_http,
    );
    identity::cloud_metadata(&base, suffix.trim_start_matches("x."))
}

async fn openid(
    State(state): State<AppState>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    req: Request,
) -> Response {
    identity::openid_configuration(
        &identity::base_url(req.headers(), req.uri(), scheme(&state)),
        &tenant,
    )
}

async fn aad_token(
    State(state): State<AppState>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return ArmError::bad_request("InvalidRequest", format!("unreadable body: {e}"))
                .into_response()
        }
    };
    let client = crate::edge::ClientAddr::of(&parts.extensions);
    identity::token(
        &state,
        &tenant,
        client,
        &parts.headers,
        &String::from_utf8_lossy(&body),
    )
    .await
}

/// What every management handler receives.
pub struct ArmCtx {
    pub subscription: String,
    pub tenant: String,
    pub principal: ArmPrincipal,
    pub api_version: String,
    pub base_url: String,
    pub method: Method,
    /// The caller's address (socket, or a trusted proxy's forwarding headers), for audit events.
    pub caller_ip: std::net::IpAddr,
    pub correlation_id: String,
    /// The request's query string (as sent, without `?`): paging tokens of POST actions (`listEvents`).
    pub query: String,
    /// The request's activity-log record: handlers that change state take it for the store (`change()`).
    pub activity: std::sync::Arc<activity::ActivityScope>,
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let scope = std::sync::Arc::new(activity::ActivityScope::of(&req));
    let result = handle(&state, req, &scope).await;
    activity::finish(&state, &scope, result).await
}

fn query_param(query: &str, key: &str) -> Option<String> {
    crate::oci::query_param(query, key)
}

async fn read_json(body: axum::body::Body) -> ArmResult<Value> {
    let bytes = http_body_util::Limited::new(body, 1024 * 1024)
        .collect()
        .await
        .map_err(|e| {
            ArmError::bad_request("InvalidRequestContent", format!("unreadable body: {e}"))
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content is not valid JSON: {e}"),
        )
    })
}

async fn handle(
    state: &AppState,
    req: Request,
    scope: &std::sync::Arc<activity::ActivityScope>,
) -> ArmResult<Response> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    // Path segments are percent-decoded once, here: a name is compared, validated and stored as the caller meant
    // it (the Azure SDK encodes `(` and `)` of a resource group name), never in one of its encodings.
    let decoded: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(crate::oci::percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let ids = crate::listener::cloud_ids(&state.meta)
        .await
        .map_err(ArmError::internal)?;
    // A feature Moat does not implement is named as such whatever api-version the client's SDK for it sends.
    let not_served = matches!(
        arm_support::support(scope.operation()),
        arm_support::Support::Unsupported(_)
    );
    let extension = authorization::extension_at(&l);
    let registry_route = l.len() >= 5
        && l[2] != "resources"
        && extension.is_none()
        && l.contains(&"microsoft.containerregistry");
    // Azure Monitor's resources (Microsoft.Insights) have api-versions of their own: each route checks its own.
    let insights_route = insights::is_insights_path(&l);
    let api_version = if not_served {
        query_param(&query, "api-version").unwrap_or_default()
    } else if insights_route {
        api_version::check(query_param(&query, "api-version").as_deref(), false)?
    } else if registry_route && pipelines::is_pipeline_path(&l) {
        pipelines::check_api_version(query_param(&query, "api-version").as_deref())?
    } else {
        api_version::check(
            query_param(&query, "api-version").as_deref(),
            registry_route,
        )?
    };

    // Who asks comes first: nothing about the subscription (its id, what exists in it) is answered before.
    let principal = identity::authenticate(state, &parts.headers, &ids.subscription_id).await?;
    scope.set_caller(&principal.app_id);
    // `GET /subscriptions` lists the subscription to whoever has a role in it (ARM's rule), else nothing.
    if l.len() == 1 {
        let value = if principal.can_read_subscription() {
            vec![subscription_json(&ids)]
        } else {
            vec![]
        };
        return Ok(axum::Json(json!({ "value": value })).into_response());
    }
    // A caller without any role is refused everything under `/subscriptions/{id}` alike, whichever id it names and
    // whatever exists there: ARM's `AuthorizationFailed` for the scope as it spelled it.
    if !principal.can_read_subscription() {
        let (action, requested) = authz::requested(&parts.method, &decoded, &lower);
        return Err(principal.denied(&action, &requested));
    }
    if !l[1].eq_ignore_ascii_case(&ids.subscription_id) {
        return Err(ArmError::new(
            axum::http::StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!(
                "The subscription '{}' could not be found. `moat acr list` and `az account list` show yours.",
                segments[1]
            ),
        ));
    }
    // Every route with a resource group names it in the path: held to ARM's grammar before anything else.
    if l.len() >= 4 && l[2] == "resourcegroups" {
        moat_model::resource::check_resource_group_name(segments[3]).map_err(|e| {
            ArmError::bad_request(e.code(), e.to_string()).with_target("resourceGroupName")
        })?;
    }
    let ctx = ArmCtx {
        subscription: ids.subscription_id.clone(),
        tenant: ids.tenant_id.clone(),
        principal,
        api_version,
        base_url: identity::base_url(&parts.headers, &parts.uri, scheme(state)),
        method: parts.method.clone(),
        caller_ip: crate::edge::ClientAddr::of(&parts.extensions),
        correlation_id: scope.correlation_id().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        activity: scope.clone(),
    };
    if not_served {
        return Err(unsupported(&ctx));
    }
    let m = parts.method.clone();
    let body = if matches!(m, Method::PUT | Method::PATCH | Method::POST) {
        read_json(body).await?
    } else {
        json!({})
    };
    // Role assignments and definitions extend every scope: routed before the resources they extend.
    if let Some(k) = extension {
        return authorization::dispatch(
            state,
            &ctx,
            &segments[..k],
            &l[k + 2..],
            &segments[k + 2..],
            &query,
            &body,
        )
        .await;
    }
    match (&m, &l[2..]) {
        (&Method::GET, []) => Ok(axum::Json(subscription_json(&ids)).into_response()),
        (&Method::GET, ["resources"]) => registries::generic_resources(state, &ctx, &query).await,
        (&Method::GET, ["resourcegroups"]) => registries::list_resource_groups(state, &ctx).await,
        (_, ["resourcegroups", _]) => {
            registries::resource_group(state, &ctx, segments[3], &body).await
        }
        (
            &Method::GET,
            ["providers", "microsoft.containerregistry", "locations", _, "operationresults", _],
        ) => import::operation_result(state, &ctx, segments[7]).await,
        (&Method::GET, ["providers", "microsoft.containerregistry", "registries"]) => {
            registries::list(state, &ctx, None).await
        }
        (&Method::POST, ["providers", "microsoft.containerregistry", "checknameavailability"]) => {
            registries::check_name(state, &ctx, &body).await
        }
        (
            &Method::GET,
            ["resourcegroups", _, "providers", "microsoft.containerregistry", "registries"],
        ) => registries::list(state, &ctx, Some(segments[3])).await,
        // Azure Monitor on a registry: diagnostic settings, metrics (before the registry's own routes).
        (
            _,
            ["resourcegroups", _, "providers", "microsoft.containerregistry", "registries", _, "providers", "microsoft.insights", rest @ ..],
        ) => {
            let (rg, name) = (segments[3], segments[7]);
            insights::registry_dispatch(state, &ctx, rg, name, rest, &segments[10..], &body, &query)
                .await
        }
        // Azure Monitor in a resource group: action groups, metric alerts, activity-log alerts.
        (_, ["resourcegroups", _, "providers", "microsoft.insights", rest @ ..]) => {
            insights::group_dispatch(
                state,
                &ctx,
                segments[3],
                rest,
                &segments[6..],
                &body,
                &query,
            )
            .await
        }
        // Azure Monitor on the subscription: the activity log, alerts listed across groups.
        (_, ["providers", "microsoft.insights", rest @ ..]) => {
            insights::subscription_dispatch(state, &ctx, rest, &segments[4..], &body, &query).await
        }
        (
            _,
            ["resourcegroups", _, "providers", "microsoft.containerregistry", "registries", _, rest @ ..],
        ) => {
            let (rg, name) = (segments[3], segments[7]);
            registries::dispatch(state, &ctx, rg, name, rest, &segments[8..], &body).await
        }
        (
            _,
            ["resourcegroups", _, "providers", "microsoft.network", "privateendpoints", rest @ ..],
        ) => {
            private_endpoints::endpoint_dispatch(
                state,
                &ctx,
                segments[3],
                rest,
                &segments[7..],
                &body,
            )
            .await
        }
        _ => Err(unsupported(&ctx)),
    }
}

/// The answer to a management request no route serves: `400 FeatureNotSupported` naming the feature (or, on a
/// resource type Moat serves, the operation), never a bare "no route". One rule for every router below.
pub fn unsupported(ctx: &ArmCtx) -> ArmError {
    ArmError::bad_request(
        arm_support::CODE,
        arm_support::unsupported_message(ctx.activity.operation()),
    )
}

/// The answer to a change: done already, but shaped as ARM's async operation so that every Azure poller
/// finishes on its first poll (`Azure-AsyncOperation` + `Retry-After: 1`, see reference/azure-clients.md §3.3).
/// `resource_id` is the resource whose `operationStatuses/{op}` answers the poll.
pub fn lro(
    ctx: &ArmCtx,
    resource_id: &str,
    body: Value,
    status: axum::http::StatusCode,
) -> Response {
    use axum::http::{header, HeaderValue};
    let op = format!("op-{}", uuid::Uuid::new_v4());
    let url = format!(
        "{}{resource_id}/operationStatuses/{op}?api-version={}",
        ctx.base_url, ctx.api_version
    );
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert("azure-asyncoperation", v);
    }
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// `GET {resource}/operationStatuses/{op}`: every operation finished before it was answered.
pub fn operation_status(resource_id: &str, op: &str) -> Response {
    let now = moat_store::time_fmt::now();
    axum::Json(json!({
        "id": format!("{resource_id}/operationStatuses/{op}"),
        "name": op, "status": "Succeeded", "startTime": now, "endTime": now,
    }))
    .into_response()
}

fn subscription_json(ids: &crate::listener::CloudIds) -> Value {
    json!({
        "id": format!("/subscriptions/{}", ids.subscription_id),
        "subscriptionId": ids.subscription_id,
        "tenantId": ids.tenant_id,
        "displayName": "Moat",
        "state": "Enabled",
        "managedByTenants": [],
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "Moat", "spendingLimit": "Off"},
        "authorizationSource": "RoleBased",
    })
}
