//! `{registry}/providers/Microsoft.Insights/metrics`, `metricDefinitions`, `metricNamespaces`: the Azure Monitor
//! metrics API as `az monitor metrics list|list-definitions|list-namespaces` and azure-mgmt-monitor call it
//! (api-versions 2017-12-01-preview, 2018-01-01, 2019-07-01, 2021-05-01, 2023-10-01, 2024-02-01). Parses and
//! answers from `crate::monitor::metrics::query`; reading only, so the routes need read access to the registry.

use crate::arm::error::{ArmError, ArmResult};
use crate::arm::ArmCtx;
use crate::monitor::metrics::query;
use crate::state::AppState;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use moat_model::monitor::metric_query::{self, RawQuery};
use moat_model::registry::Registry;
use serde_json::Value;

/// A query parameter, its name compared in any case and percent-decoded (`%24filter` is `$filter`). az quotes
/// the timespan itself before the HTTP layer quotes it again: a value still holding `%XX` is decoded once more.
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| crate::oci::percent_decode(k).eq_ignore_ascii_case(key))
        .map(|(_, v)| crate::oci::percent_decode(&v.replace('+', " ")))
        .map(|v| {
            if v.contains('%') {
                crate::oci::percent_decode(&v)
            } else {
                v
            }
        })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    registry: &Registry,
    rest: &[&str],
    _body: &Value,
    query: &str,
) -> ArmResult<Response> {
    if !matches!(ctx.method, Method::GET | Method::HEAD) {
        return Err(ArmError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "{} is read-only: use GET.",
                rest.first().copied().unwrap_or("metrics")
            ),
        ));
    }
    let resource_id = crate::arm::registry_json::registry_id(
        &ctx.subscription,
        &registry.resource_group,
        &registry.name,
    );
    let body = match rest {
        ["metricdefinitions"] => {
            check_namespace(query)?;
            query::definitions(&resource_id)
        }
        ["metricnamespaces"] => query::namespaces(&resource_id),
        _ => {
            let p = |k| param(query, k);
            let (timespan, interval, names, aggregation) = (
                p("timespan"),
                p("interval"),
                p("metricnames"),
                p("aggregation"),
            );
            let (filter, top, orderby, result_type, ns) = (
                p("$filter"),
                p("top"),
                p("orderby"),
                p("resultType"),
                p("metricnamespace"),
            );
            let raw = RawQuery {
                timespan: timespan.as_deref(),
                interval: interval.as_deref(),
                metricnames: names.as_deref(),
                aggregation: aggregation.as_deref(),
                filter: filter.as_deref(),
                top: top.as_deref(),
                orderby: orderby.as_deref(),
                result_type: result_type.as_deref(),
                metricnamespace: ns.as_deref(),
            };
            let q = metric_query::parse(&raw, now_secs())
                .map_err(|m| ArmError::bad_request("BadRequest", m))?;
            query::answer(state, registry, &resource_id, &q).await?
        }
    };
    Ok(axum::Json(body).into_response())
}

fn check_namespace(query: &str) -> ArmResult<()> {
    match param(query, "metricnamespace").filter(|s| !s.is_empty()) {
        Some(ns) if !ns.eq_ignore_ascii_case(metric_query::NAMESPACE) => {
            Err(ArmError::bad_request(
                "BadRequest",
                format!(
                    "Metric namespace '{ns}' is not valid for this resource: the only one is '{}'.",
                    metric_query::NAMESPACE
                ),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_found_in_any_case_and_decoded_as_az_sends_them() {
        let q = "api-version=2018-01-01&%24filter=Identity%20eq%20%27%2A%27&timespan=2026-12-07T10%253A00%253A00%252F2026-12-07T11%253A00%253A00&Interval=PT1M";
        assert_eq!(
            super::param(q, "$filter").as_deref(),
            Some("Identity eq '*'")
        );
        assert_eq!(
            super::param(q, "timespan").as_deref(),
            Some("2026-12-07T10:00:00/2026-12-07T11:00:00")
        );
        assert_eq!(super::param(q, "interval").as_deref(), Some("PT1M"));
        assert_eq!(super::param(q, "top"), None);
    }
}
