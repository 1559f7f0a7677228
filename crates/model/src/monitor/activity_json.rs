//! An activity-log record as Azure's `EventData` (api-version 2015-04-01): the shape `az monitor activity-log list`
//! prints and the `Administrative` records a diagnostic setting ships. Azure writes `properties` values as
//! strings (a policy's `before`/`after` is JSON text inside a string), so this does too: a client that parses
//! Azure's records parses Moat's. Sinks ship the flatter storage-account schema ([`archive_record`]).

use crate::activity::{ActivityEvent, ActivityStatus};
use serde_json::{json, Map, Value};

/// Azure's `EventData` for `e` in subscription `subscription_id` (tenant unknown: `tenantId` is empty; see
/// [`event_data_in`]).
pub fn event_data(e: &ActivityEvent, subscription_id: &str) -> Value {
    event_data_in(e, subscription_id, "")
}

/// Azure's `EventData` for `e`, naming the tenant as well.
pub fn event_data_in(e: &ActivityEvent, subscription_id: &str, tenant_id: &str) -> Value {
    let (namespace, resource_type) = provider_and_type(&e.resource_id);
    let (event_name, event_label) = match e.status {
        ActivityStatus::Started => ("BeginRequest", "Begin request"),
        _ => ("EndRequest", "End request"),
    };
    let ticks = dotnet_ticks(&e.time).unwrap_or(0);
    let sub_status_label = if e.sub_status.is_empty() {
        String::new()
    } else {
        format!(
            "{} (HTTP Status Code: {})",
            e.sub_status, e.http_status_code
        )
    };
    let mut claims = Map::new();
    if e.caller != "-" {
        claims.insert("appid".into(), e.caller.clone().into());
    }
    claims.insert("ipaddr".into(), e.caller_ip_address.clone().into());
    json!({
        "authorization": {"action": e.operation_name, "scope": e.resource_id},
        "caller": e.caller,
        "channels": "Operation",
        "claims": claims,
        "correlationId": e.correlation_id,
        "description": "",
        "eventDataId": e.event_data_id,
        "eventName": {"value": event_name, "localizedValue": event_label},
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "eventTimestamp": e.time,
        "id": format!("{}/events/{}/ticks/{}", e.resource_id, e.event_data_id, ticks),
        "level": e.level,
        "operationId": e.correlation_id,
        "operationName": {"value": e.operation_name, "localizedValue": operation_label(&e.operation_name)},
        "resourceGroupName": resource_group(&e.resource_id).unwrap_or_default(),
        "resourceProviderName": {"value": namespace, "localizedValue": namespace},
        "resourceType": {"value": resource_type, "localizedValue": resource_type},
        "resourceId": e.resource_id,
        "status": {"value": e.status.as_str(), "localizedValue": e.status.as_str()},
        "subStatus": {"value": e.sub_status, "localizedValue": sub_status_label},
        "submissionTimestamp": e.time,
        "subscriptionId": subscription_id,
        "tenantId": tenant_id,
        "httpRequest": {
            "clientRequestId": e.correlation_id,
            "clientIpAddress": e.caller_ip_address,
            "method": http_method(&e.operation_name),
        },
        "properties": properties(e, subscription_id, tenant_id),
        "relatedEvents": [],
    })
}

/// The same record as Azure Monitor writes the activity log to a storage account, an event hub or a partner
/// (the "schema from storage account and event hubs"): flat common-schema fields — `time`, `operationName` as a
/// string, `resultType` (the status), `resultSignature` (the sub-status), `callerIpAddress`, `identity` holding
/// the `authorization` and `claims` — rather than `EventData`'s localized pairs. `recordId` is Moat's, added by
/// the sink. Activity records carry no location: Azure writes `global`.
pub fn archive_record(e: &ActivityEvent, subscription_id: &str) -> Value {
    let mut claims = Map::new();
    if e.caller != "-" {
        claims.insert("appid".into(), e.caller.clone().into());
    }
    claims.insert("ipaddr".into(), e.caller_ip_address.clone().into());
    json!({
        "time": e.time,
        "resourceId": e.resource_id,
        "operationName": e.operation_name,
        "category": e.category,
        "resultType": e.status.as_str(),
        "resultSignature": e.sub_status,
        "callerIpAddress": e.caller_ip_address,
        "correlationId": e.correlation_id,
        "caller": e.caller,
        "identity": {
            "authorization": {"action": e.operation_name, "scope": e.resource_id},
            "claims": claims,
        },
        "level": e.level,
        "location": "global",
        "properties": properties(e, subscription_id, ""),
    })
}

/// `properties` as Azure writes them: every value a string.
fn properties(e: &ActivityEvent, subscription_id: &str, tenant_id: &str) -> Value {
    let mut out = Map::new();
    out.insert("eventCategory".into(), "Administrative".into());
    out.insert("entity".into(), e.resource_id.clone().into());
    out.insert("message".into(), e.operation_name.clone().into());
    let hierarchy = if tenant_id.is_empty() {
        subscription_id.to_string()
    } else {
        format!("{tenant_id}/{subscription_id}")
    };
    out.insert("hierarchy".into(), hierarchy.into());
    out.insert("statusCode".into(), e.sub_status.clone().into());
    if let Value::Object(map) = &e.properties {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            out.insert(k.clone(), text.into());
        }
    }
    Value::Object(out)
}

/// The HTTP method of a request by ARM's naming rule (a `write` may have been a PATCH: Azure says PUT for both
/// in `authorization.action`, and Moat keeps one record per request, not its method).
fn http_method(operation_name: &str) -> &'static str {
    match operation_name.rsplit('/').next().unwrap_or("") {
        "write" => "PUT",
        "delete" => "DELETE",
        "action" => "POST",
        _ => "GET",
    }
}

/// Azure's display names for the operations people look for most; others show their name.
fn operation_label(name: &str) -> String {
    let known = [
        (
            "Microsoft.ContainerRegistry/registries/write",
            "Create or Update Container Registry",
        ),
        (
            "Microsoft.ContainerRegistry/registries/delete",
            "Delete Container Registry",
        ),
        (
            "Microsoft.ContainerRegistry/registries/listCredentials/action",
            "List Container Registry Login Credentials",
        ),
        (
            "Microsoft.ContainerRegistry/registries/regenerateCredential/action",
            "Regenerate Container Registry Login Credentials",
        ),
        (
            "Microsoft.ContainerRegistry/registries/webhooks/write",
            "Create or Update Webhook",
        ),
        (
            "Microsoft.ContainerRegistry/registries/webhooks/delete",
            "Delete Webhook",
        ),
        (
            "Microsoft.ContainerRegistry/registries/webhooks/ping/action",
            "Ping Webhook",
        ),
        (
            "Microsoft.ContainerRegistry/registries/importImage/action",
            "Import Image",
        ),
    ];
    known
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| l.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// The resource group named in a resource id.
fn resource_group(resource_id: &str) -> Option<String> {
    let parts: Vec<&str> = resource_id.split('/').collect();
    parts
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("resourceGroups"))
        .map(|w| w[1].to_string())
        .filter(|s| !s.is_empty())
}

/// The provider namespace and the resource type of a resource id: `Microsoft.ContainerRegistry` and
/// `Microsoft.ContainerRegistry/registries/webhooks` for a webhook; `Microsoft.Resources` and
/// `Microsoft.Resources/subscriptions/resourceGroups` for a group.
pub fn provider_and_type(resource_id: &str) -> (String, String) {
    let parts: Vec<&str> = resource_id
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(p) = parts
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
        .filter(|p| p + 1 < parts.len())
    {
        let namespace = parts[p + 1].to_string();
        let mut ty = namespace.clone();
        for t in parts[p + 2..].iter().step_by(2) {
            ty.push('/');
            ty.push_str(t);
        }
        return (namespace, ty);
    }
    let mut ty = String::from("Microsoft.Resources");
    for t in parts.iter().step_by(2) {
        ty.push('/');
        ty.push_str(t);
    }
    ("Microsoft.Resources".into(), ty)
}

/// .NET ticks (100 ns since 0001-01-01) of a UTC time `YYYY-MM-DDTHH:MM:SS[.f…]Z`, as Azure puts in event ids.
pub fn dotnet_ticks(time: &str) -> Option<i64> {
    let unix_micros = unix_micros(time)?;
    Some(unix_micros * 10 + 621_355_968_000_000_000)
}

/// Microseconds since the Unix epoch of a UTC time `YYYY-MM-DDTHH:MM:SS[.f…]Z` (the stored form).
pub fn unix_micros(time: &str) -> Option<i64> {
    let b = time.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = time.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let rest = &time[19..];
    let (frac, tail) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..n], &r[n..])
        }
        None => ("", rest),
    };
    if tail != "Z" {
        return None;
    }
    let mut micros = 0i64;
    for (i, c) in frac.bytes().take(6).enumerate() {
        micros += i64::from(c - b'0') * 10i64.pow(5 - i as u32);
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str =
        "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/app";

    fn change() -> ActivityEvent {
        let mut e = ActivityEvent::new(
            "e1".into(),
            "2026-12-07T18:53:06.123456Z".into(),
            "Microsoft.ContainerRegistry/registries/write",
            REG,
            "app-id-1",
            "10.0.0.9",
            "corr-1",
        )
        .with_change(
            Some(json!({"exportPolicy": {"status": "enabled"}})),
            Some(json!({"exportPolicy": {"status": "disabled"}})),
        );
        e.set_property("userAgent", "az/2".into());
        e
    }

    #[test]
    fn a_change_archives_in_azures_storage_schema() {
        let v = archive_record(&change(), "s1");
        assert_eq!(v["time"], "2026-12-07T18:53:06.123456Z");
        assert_eq!(
            v["operationName"],
            "Microsoft.ContainerRegistry/registries/write"
        );
        assert_eq!(v["category"], "Administrative");
        assert_eq!(v["resultType"], "Succeeded");
        assert_eq!(v["resultSignature"], "OK");
        assert_eq!(v["callerIpAddress"], "10.0.0.9");
        assert_eq!(v["identity"]["claims"]["appid"], "app-id-1");
        assert_eq!(v["identity"]["authorization"]["scope"], REG);
        assert_eq!(v["properties"]["eventCategory"], "Administrative");
        assert_eq!(v["properties"]["hierarchy"], "s1");
        // A policy's before/after stays JSON text inside a string, as Azure writes properties.
        let after: Value =
            serde_json::from_str(v["properties"]["after"].as_str().unwrap()).unwrap();
        assert_eq!(after["exportPolicy"]["status"], "disabled");
    }

    #[test]
    fn a_change_reads_as_azures_event_data() {
        let v = event_data_in(&change(), "s1", "t1");
        assert_eq!(v["caller"], "app-id-1");
        assert_eq!(v["eventDataId"], "e1");
        assert_eq!(v["category"]["value"], "Administrative");
        assert_eq!(v["eventName"]["value"], "EndRequest");
        assert_eq!(v["channels"], "Operation");
        assert_eq!(
            v["operationName"]["value"],
            "Microsoft.ContainerRegistry/registries/write"
        );
        assert_eq!(
            v["operationName"]["localizedValue"],
            "Create or Update Container Registry"
        );
        assert_eq!(
            v["authorization"]["action"],
            "Microsoft.ContainerRegistry/registries/write"
        );
        assert_eq!(v["authorization"]["scope"], REG);
        assert_eq!(v["resourceGroupName"], "rg1");
        assert_eq!(
            v["resourceProviderName"]["value"],
            "Microsoft.ContainerRegistry"
        );
        assert_eq!(
            v["resourceType"]["value"],
            "Microsoft.ContainerRegistry/registries"
        );
        assert_eq!(v["status"]["value"], "Succeeded");
        assert_eq!(v["subStatus"]["value"], "OK");
        assert_eq!(
            v["subStatus"]["localizedValue"],
            "OK (HTTP Status Code: 200)"
        );
        assert_eq!(v["subscriptionId"], "s1");
        assert_eq!(v["tenantId"], "t1");
        assert_eq!(v["level"], "Informational");
        assert_eq!(v["claims"]["appid"], "app-id-1");
        assert_eq!(v["httpRequest"]["method"], "PUT");
        assert_eq!(v["httpRequest"]["clientIpAddress"], "10.0.0.9");
        assert_eq!(v["correlationId"], "corr-1");
        // Every property is a string, the change as JSON text.
        let props = v["properties"].as_object().unwrap();
        assert!(props.values().all(Value::is_string));
        let after: Value = serde_json::from_str(props["after"].as_str().unwrap()).unwrap();
        assert_eq!(after["exportPolicy"]["status"], "disabled");
        assert_eq!(props["userAgent"], "az/2");
        assert_eq!(props["statusCode"], "OK");
        assert_eq!(
            v["id"],
            format!("{REG}/events/e1/ticks/{}", 639_322_663_861_234_560i64)
        );
    }

    #[test]
    fn refusals_and_started_requests() {
        let refused = change().failed(403, "AuthorizationFailed", "no");
        let v = event_data(&refused, "s1");
        assert_eq!(v["status"]["value"], "Failed");
        assert_eq!(v["subStatus"]["value"], "Forbidden");
        assert_eq!(v["level"], "Warning");
        assert_eq!(v["tenantId"], "");
        let err: Value = serde_json::from_str(v["properties"]["error"].as_str().unwrap()).unwrap();
        assert_eq!(err["code"], "AuthorizationFailed");
        let mut started = change();
        started.set_http_status(202);
        assert_eq!(
            event_data(&started, "s1")["eventName"]["value"],
            "BeginRequest"
        );
        let mut anonymous = change();
        anonymous.caller = "-".into();
        assert!(event_data(&anonymous, "s1")["claims"]
            .get("appid")
            .is_none());
    }

    #[test]
    fn resource_types_and_methods() {
        assert_eq!(
            provider_and_type(&format!("{REG}/webhooks/h1")),
            (
                "Microsoft.ContainerRegistry".into(),
                "Microsoft.ContainerRegistry/registries/webhooks".into()
            )
        );
        assert_eq!(
            provider_and_type("/subscriptions/s1/resourceGroups/rg2").1,
            "Microsoft.Resources/subscriptions/resourceGroups"
        );
        assert_eq!(
            http_method("Microsoft.ContainerRegistry/registries/delete"),
            "DELETE"
        );
        assert_eq!(
            http_method("Microsoft.ContainerRegistry/registries/listCredentials/action"),
            "POST"
        );
    }

    #[test]
    fn times_convert_to_ticks() {
        assert_eq!(unix_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_micros("1970-01-02T00:00:01.5Z"), Some(86_401_500_000));
        assert_eq!(
            unix_micros("2000-03-01T00:00:00.000000Z"),
            Some(951_868_800_000_000)
        );
        assert_eq!(
            dotnet_ticks("1970-01-01T00:00:00Z"),
            Some(621_355_968_000_000_000)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-12-07 18:53:06Z",
            "2026-12-07T18:53:06+01:00",
        ] {
            assert_eq!(unix_micros(bad), None, "{bad}");
        }
    }
}
