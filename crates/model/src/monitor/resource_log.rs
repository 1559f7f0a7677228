//! Records as Azure Monitor archives them: the resource-log common schema for the data plane's audit events
//! (`ContainerRegistryRepositoryEvents`, `ContainerRegistryLoginEvents`), a metric minute of `AllMetrics`, and
//! where each lands in a storage account (`insights-logs-<category>/resourceId=/SUBSCRIPTIONS/…/PT1H.json`).
//! Pure: the caller gives the subscription, the registry's resource id and location.

use crate::audit::AuditEvent;
use serde_json::{json, Map, Value};

/// Azure's category of the activity log (management operations).
pub const ADMINISTRATIVE: &str = "Administrative";
/// Moat's category for the trail's signed chain heads.
pub const AUDIT_TRAIL: &str = "MoatAuditTrail";
/// The metrics category.
pub const ALL_METRICS: &str = "AllMetrics";

/// What the caller knows about the registry a record belongs to.
#[derive(Clone, Debug)]
pub struct Resource<'a> {
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`.
    pub id: &'a str,
    pub location: &'a str,
}

/// The container Azure Monitor archives `category` into: `insights-logs-<category lower-case>`, the activity
/// log's `insights-activity-logs`, metrics' `insights-metrics-pt1m`.
pub fn container(category: &str) -> String {
    match category {
        ADMINISTRATIVE => "insights-activity-logs".into(),
        ALL_METRICS => "insights-metrics-pt1m".into(),
        c => format!("insights-logs-{}", c.to_ascii_lowercase()),
    }
}

/// The hourly append blob a record of `time` (RFC 3339) is filed in, under `resource_path` (the upper-cased
/// resource id, or `/SUBSCRIPTIONS/{sub}` for the activity log): `resourceId=…/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`.
/// `None` when the time is not of the form `YYYY-MM-DDTHH…`.
pub fn blob_path(resource_path: &str, time: &str) -> Option<String> {
    let b = time.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|s| s.iter().all(u8::is_ascii_digit))
            .map(|_| &time[r])
    };
    let (y, mo, d, h) = (
        digits(0..4)?,
        digits(5..7)?,
        digits(8..10)?,
        digits(11..13)?,
    );
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b' '))
    {
        return None;
    }
    Some(format!(
        "resourceId={}/y={y}/m={mo}/d={d}/h={h}/m=00/PT1H.json",
        resource_path.to_ascii_uppercase()
    ))
}

/// The level Azure gives a record of this result.
fn level(result_type: &str) -> &'static str {
    match result_type {
        "Success" => "Informational",
        "Denied" => "Warning",
        _ => "Error",
    }
}

/// An audit event in the resource-log common schema, with `recordId`. `properties` holds the table's columns
/// (ACR documents the columns, not the keys: these are the columns in camel case) and Moat's `endpoint`.
pub fn audit_record(e: &AuditEvent, resource: &Resource, record_id: &str) -> Value {
    let mut props = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            props.insert(k.into(), v);
        }
    };
    let s = |v: &Option<String>| v.as_ref().map(|x| Value::String(x.clone()));
    put("loginServer", Some(e.login_server.clone().into()));
    put("repository", s(&e.repository));
    put("tag", s(&e.tag));
    put("digest", s(&e.digest));
    put("mediaType", s(&e.media_type));
    put("size", e.size.map(Value::from));
    put("userAgent", s(&e.user_agent));
    put("endpoint", s(&e.endpoint));
    put("region", Some(resource.location.into()));
    json!({
        "time": e.time_generated,
        "resourceId": resource.id.to_ascii_uppercase(),
        "operationName": e.operation_name,
        "operationVersion": "1.0",
        "category": e.category,
        "resultType": e.result_type,
        "resultDescription": e.result_description,
        "durationMs": e.duration_ms.map(|d| d.to_string()),
        "callerIpAddress": e.caller_ip_address,
        "correlationId": e.correlation_id,
        "identity": e.identity,
        "level": level(&e.result_type),
        "location": resource.location,
        "recordId": record_id,
        "properties": Value::Object(props),
    })
}

/// One metric's minute as Azure Monitor archives `AllMetrics` (`insights-metrics-pt1m`): count, total,
/// minimum, maximum, average of the minute, `time` its start (RFC 3339). Dimensioned series are summed by the
/// caller: the archive format has no dimensions.
#[allow(clippy::too_many_arguments)]
pub fn metric_record(
    resource_id: &str,
    metric: &str,
    time: &str,
    count: i64,
    total: f64,
    minimum: f64,
    maximum: f64,
    record_id: &str,
) -> Value {
    let average = if count > 0 { total / count as f64 } else { 0.0 };
    json!({
        "count": count,
        "total": total,
        "minimum": minimum,
        "maximum": maximum,
        "average": average,
        "resourceId": resource_id.to_ascii_uppercase(),
        "time": time,
        "metricName": metric,
        "timeGrain": "PT1M",
        "recordId": record_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull() -> AuditEvent {
        AuditEvent {
            time_generated: "2026-12-07T18:05:01.123456Z".into(),
            category: "ContainerRegistryRepositoryEvents".into(),
            operation_name: "Pull".into(),
            registry: "app".into(),
            login_server: "app.moat.test".into(),
            repository: Some("web".into()),
            tag: Some("v1".into()),
            digest: Some("sha256:ab".into()),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            size: Some(512),
            identity: Some("admin".into()),
            caller_ip_address: Some("10.0.0.1".into()),
            user_agent: Some("skopeo".into()),
            duration_ms: Some(3),
            result_type: "Success".into(),
            result_description: "200".into(),
            correlation_id: Some("c1".into()),
            endpoint: Some("public".into()),
        }
    }

    #[test]
    fn audit_events_take_the_common_schema_with_the_tables_columns() {
        let id = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app";
        let r = audit_record(
            &pull(),
            &Resource {
                id,
                location: "westeurope",
            },
            "s1/audit/9",
        );
        assert_eq!(r["resourceId"], id.to_ascii_uppercase());
        assert_eq!(r["time"], "2026-12-07T18:05:01.123456Z");
        assert_eq!(r["operationName"], "Pull");
        assert_eq!(r["category"], "ContainerRegistryRepositoryEvents");
        assert_eq!(r["resultType"], "Success");
        assert_eq!(r["resultDescription"], "200");
        assert_eq!(r["durationMs"], "3");
        assert_eq!(r["callerIpAddress"], "10.0.0.1");
        assert_eq!(r["identity"], "admin");
        assert_eq!(r["level"], "Informational");
        assert_eq!(r["location"], "westeurope");
        assert_eq!(r["recordId"], "s1/audit/9");
        let p = &r["properties"];
        assert_eq!(p["repository"], "web");
        assert_eq!(p["tag"], "v1");
        assert_eq!(p["size"], 512);
        assert_eq!(p["loginServer"], "app.moat.test");
        assert_eq!(p["userAgent"], "skopeo");
        assert_eq!(p["endpoint"], "public");
        let mut denied = pull();
        denied.result_type = "Denied".into();
        denied.tag = None;
        let r = audit_record(&denied, &Resource { id, location: "x" }, "r");
        assert_eq!(r["level"], "Warning");
        assert!(r["properties"].get("tag").is_none());
    }

    #[test]
    fn blobs_are_filed_by_the_records_hour_under_the_upper_cased_id() {
        assert_eq!(
            blob_path("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app",
                "2026-12-07T18:05:01.123456Z").unwrap(),
            "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERREGISTRY/REGISTRIES/APP/y=2026/m=12/d=07/h=18/m=00/PT1H.json"
        );
        assert!(blob_path("/x", "yesterday").is_none());
        assert!(blob_path("/x", "2026-1-07T18:00").is_none());
        assert_eq!(
            container("ContainerRegistryLoginEvents"),
            "insights-logs-containerregistryloginevents"
        );
        assert_eq!(container(ADMINISTRATIVE), "insights-activity-logs");
        assert_eq!(container(ALL_METRICS), "insights-metrics-pt1m");
        assert_eq!(container(AUDIT_TRAIL), "insights-logs-moataudittrail");
    }

    #[test]
    fn metric_minutes_carry_the_average() {
        let r = metric_record(
            "/x/y",
            "TotalPullCount",
            "2026-12-07T18:05:00Z",
            4,
            8.0,
            1.0,
            3.0,
            "id",
        );
        assert_eq!(r["average"], 2.0);
        assert_eq!(r["timeGrain"], "PT1M");
        assert_eq!(r["resourceId"], "/X/Y");
        assert_eq!(
            metric_record("/x", "m", "t", 0, 0.0, 0.0, 0.0, "i")["average"],
            0.0
        );
    }
}
