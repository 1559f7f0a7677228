//! `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?$filter=…`: the activity
//! log as Azure serves it (api-version 2015-04-01), in the form `az monitor activity-log list` sends. The
//! `$filter` is read strictly, as Azure reads it: an eventTimestamp range (both ends, at most 90 days) and at
//! most one of resourceUri/resourceId, resourceGroupName, resourceProvider, correlationId, plus caller and
//! status. Anything else is refused with what it accepts, never ignored (a filter silently dropped would show
//! an auditor events they did not ask for, or hide the ones they did). Each caller sees only the records of
//! scopes it may read. Pages end with a `nextLink` carrying the sequence number to go on after.

use crate::arm::error::{ArmError, ArmResult};
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::response::{IntoResponse, Response};
use moat_model::activity::ActivityEvent;
use moat_model::monitor::activity_json::{event_data_in, provider_and_type, unix_micros};
use moat_model::rbac::RoleScope;
use moat_store::meta::ActivityFilter;
use serde_json::{Map, Value};

pub const API_VERSION: &str = "2015-04-01";
/// Records in a page unless `$top` says otherwise.
const PAGE: usize = 200;
/// Rows read from the store per scan step, and the most scanned for one page (a partial page then says where to
/// go on: a filter that matches little never makes one request read the whole log).
const SCAN_STEP: i64 = 500;
const SCAN_MAX: usize = 20_000;
const MAX_RANGE_MICROS: i64 = 90 * 86_400 * 1_000_000;

const ACCEPTED: &str = "The $filter accepts: eventTimestamp ge '<time>' and eventTimestamp le '<time>' (both, at most 90 days apart), optionally 'and' one of resourceUri eq '<id>' (or resourceId), resourceGroupName eq '<name>', resourceProvider eq '<namespace>', correlationId eq '<id>', and caller eq '<caller>', status eq '<status>'.";

/// The fields `$select` may name (Azure's list).
const SELECTABLE: &[&str] = &[
    "authorization",
    "caller",
    "category",
    "claims",
    "correlationId",
    "description",
    "eventDataId",
    "eventName",
    "eventTimestamp",
    "httpRequest",
    "id",
    "level",
    "operationId",
    "operationName",
    "properties",
    "resourceGroupName",
    "resourceProviderName",
    "resourceId",
    "resourceType",
    "status",
    "submissionTimestamp",
    "subStatus",
    "subscriptionId",
    "tenantId",
];

/// A parsed `$filter`.
#[derive(Debug, Default, PartialEq)]
pub struct Query {
    /// Stored time form.
    pub since: String,
    pub until: String,
    pub resource: Option<String>,
    pub resource_group: Option<String>,
    pub provider: Option<String>,
    pub correlation_id: Option<String>,
    pub caller: Option<String>,
    pub status: Option<String>,
}

fn invalid(message: impl Into<String>) -> ArmError {
    ArmError::bad_request("BadRequest", format!("{} {ACCEPTED}", message.into()))
}

/// A time as az sends it (`2026-12-07T13:00:00.123456`, no zone: UTC) or as Azure documents it (RFC 3339).
fn parse_time(s: &str) -> Option<String> {
    let s = s.trim();
    let has_zone = s.ends_with('Z')
        || s.ends_with('z')
        || s.get(s.len().saturating_sub(6)..)
            .is_some_and(|t| (t.starts_with('+') || t.starts_with('-')) && t.as_bytes()[3] == b':');
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else if has_zone {
        s.to_string()
    } else {
        format!("{s}Z")
    };
    moat_store::time_fmt::parse_user(&full)
}

/// Splits `a eq 'x' and b ge 'y'` into clauses, honouring quotes ('' is a quote inside a value).
fn clauses(filter: &str) -> Result<Vec<(String, String, String)>, ArmError> {
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = filter.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut v = String::from("'");
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        v.push('\'');
                    }
                    Some('\'') => break,
                    Some(ch) => v.push(ch),
                    None => return Err(invalid("The $filter has an unterminated quoted value.")),
                }
            }
            tokens.push(v);
        } else {
            let mut t = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                t.push(ch);
                chars.next();
            }
            tokens.push(t);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if i > 0 {
            if !tokens[i].eq_ignore_ascii_case("and") {
                return Err(invalid(format!(
                    "The $filter joins conditions with 'and' only, not '{}'.",
                    tokens[i]
                )));
            }
            i += 1;
        }
        let (Some(field), Some(op), Some(value)) =
            (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2))
        else {
            return Err(invalid("The $filter ends in an incomplete condition."));
        };
        let value = value.strip_prefix('\'').unwrap_or(value).to_string();
        out.push((field.clone(), op.to_ascii_lowercase(), value));
        i += 3;
    }
    Ok(out)
}

/// Reads a `$filter` (see the module comment).
pub fn parse_filter(filter: &str) -> Result<Query, ArmError> {
    let mut q = Query::default();
    let (mut since, mut until) = (None, None);
    let mut selectors = 0;
    for (field, op, value) in clauses(filter)? {
        let f = field.to_ascii_lowercase();
        let eq = || {
            if op == "eq" {
                Ok(value.clone())
            } else {
                Err(invalid(format!(
                    "'{field}' is compared with 'eq' only, not '{op}'."
                )))
            }
        };
        match f.as_str() {
            "eventtimestamp" => {
                let t = parse_time(&value).ok_or_else(|| {
                    invalid(format!(
                        "'{value}' is not a time (ISO 8601, UTC unless it says)."
                    ))
                })?;
                match op.as_str() {
                    "ge" => since = Some(t),
                    "le" => until = Some(t),
                    _ => {
                        return Err(invalid(format!(
                            "eventTimestamp is compared with 'ge' and 'le' only, not '{op}'."
                        )))
                    }
                }
            }
            "resourceuri" | "resourceid" => {
                q.resource = Some(eq()?);
                selectors += 1;
            }
            "resourcegroupname" => {
                q.resource_group = Some(eq()?);
                selectors += 1;
            }
            "resourceprovider" => {
                q.provider = Some(eq()?);
                selectors += 1;
            }
            "correlationid" => {
                q.correlation_id = Some(eq()?);
                selectors += 1;
            }
            "caller" => q.caller = Some(eq()?),
            "status" => q.status = Some(eq()?),
            _ => return Err(invalid(format!("The $filter cannot filter on '{field}'."))),
        }
    }
    if selectors > 1 {
        return Err(invalid("The $filter names more than one of resourceUri, resourceGroupName, resourceProvider and correlationId."));
    }
    let (Some(since), Some(until)) = (since, until) else {
        return Err(invalid(
            "The $filter must give the time range: eventTimestamp ge and eventTimestamp le.",
        ));
    };
    let (a, b) = (
        unix_micros(&since).unwrap_or(0),
        unix_micros(&until).unwrap_or(0),
    );
    if b < a {
        return Err(invalid("The time range ends before it starts."));
    }
    if b - a > MAX_RANGE_MICROS {
        return Err(invalid("The time range is longer than 90 days."));
    }
    q.since = since;
    q.until = until;
    Ok(q)
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether a record is one the query asks for. `resourceUri` takes the resource and what is below it (a
/// registry's webhooks, connections).
pub fn matches(q: &Query, e: &ActivityEvent) -> bool {
    let rg = resource_group(&e.resource_id);
    e.time >= q.since
        && e.time <= q.until
        && q.resource.as_deref().is_none_or(|r| {
            let r = r.trim_end_matches('/');
            eq_ci(&e.resource_id, r)
                || (e.resource_id.len() > r.len()
                    && e.resource_id.is_char_boundary(r.len())
                    && eq_ci(&e.resource_id[..r.len()], r)
                    && e.resource_id.as_bytes()[r.len()] == b'/')
        })
        && q.resource_group
            .as_deref()
            .is_none_or(|g| rg.as_deref().is_some_and(|x| eq_ci(x, g)))
        && q.provider
            .as_deref()
            .is_none_or(|p| eq_ci(&provider_and_type(&e.resource_id).0, p))
        && q.correlation_id
            .as_deref()
            .is_none_or(|c| eq_ci(&e.correlation_id, c))
        && q.caller.as_deref().is_none_or(|c| eq_ci(&e.caller, c))
        && q.status
            .as_deref()
            .is_none_or(|s| eq_ci(e.status.as_str(), s))
}

fn resource_group(resource_id: &str) -> Option<String> {
    let parts: Vec<&str> = resource_id.split('/').collect();
    parts
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("resourceGroups"))
        .map(|w| w[1].to_string())
}

/// The scope whose readers may see a record: its registry, else its resource group, else the subscription.
fn scope_of(e: &ActivityEvent) -> RoleScope {
    match (resource_group(&e.resource_id), &e.registry) {
        (Some(rg), Some(name)) => RoleScope::Registry {
            resource_group: rg,
            name: name.clone(),
        },
        (Some(rg), None) => RoleScope::ResourceGroup(rg),
        _ => RoleScope::Subscription,
    }
}

/// A query parameter, its name and value percent-decoded and `+` read as a space (clients send `$filter` as
/// `%24filter`, and form-encode spaces).
fn query_param(query: &str, key: &str) -> Option<String> {
    let decode = crate::oci::percent_decode;
    query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| decode(k) == key)
        .map(|(_, v)| decode(v))
}

fn select(v: Value, fields: &Option<Vec<String>>) -> Value {
    let (Some(fields), Value::Object(map)) = (fields, &v) else {
        return v;
    };
    let mut out = Map::new();
    for f in fields {
        if let Some(x) = map.get(f) {
            out.insert(f.clone(), x.clone());
        }
    }
    Value::Object(out)
}

pub async fn list(state: &AppState, ctx: &ArmCtx, query: &str) -> ArmResult<Response> {
    if ctx.api_version != API_VERSION {
        return Err(ArmError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{}' is invalid for the activity log. The supported version is '{API_VERSION}'.", ctx.api_version),
        ));
    }
    let filter = query_param(query, "$filter")
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| invalid("The $filter is required."))?;
    let q = parse_filter(&filter)?;
    let fields = match query_param(query, "$select").filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => {
            let mut out = Vec::new();
            for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                let Some(known) = SELECTABLE.iter().find(|k| k.eq_ignore_ascii_case(f)) else {
                    return Err(ArmError::bad_request(
                        "BadRequest",
                        format!(
                            "$select cannot name '{f}'. It may name: {}.",
                            SELECTABLE.join(", ")
                        ),
                    ));
                };
                out.push(known.to_string());
            }
            Some(out)
        }
    };
    let top = match query_param(query, "$top") {
        None => PAGE,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ArmError::bad_request("BadRequest", "$top must be a number from 1 to 1000.")
            })?,
    };
    let mut after = match query_param(query, "$skipToken") {
        None => 0,
        Some(t) => t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ArmError::bad_request("BadRequest", "$skipToken is not one this server issued.")
        })?,
    };
    let mut value = Vec::new();
    let mut scanned = 0usize;
    let mut more = false;
    'scan: loop {
        let rows = state
            .meta
            .activity_rows(&ActivityFilter {
                since: Some(q.since.clone()),
                after_seq: Some(after),
                limit: Some(SCAN_STEP),
                ..Default::default()
            })
            .await?;
        let n = rows.len();
        for (seq, e) in rows {
            after = seq;
            scanned += 1;
            if matches(&q, &e) && ctx.principal.can_read_scope(&scope_of(&e)) {
                value.push(select(
                    event_data_in(&e, &ctx.subscription, &ctx.tenant),
                    &fields,
                ));
                if value.len() >= top {
                    more = true;
                    break 'scan;
                }
            }
        }
        if (n as i64) < SCAN_STEP {
            break;
        }
        if scanned >= SCAN_MAX {
            more = true;
            break;
        }
    }
    let mut body = serde_json::json!({ "value": value });
    if more {
        let mut link = format!(
            "{}/subscriptions/{}/providers/Microsoft.Insights/eventtypes/management/values?api-version={API_VERSION}&$filter={}&$skipToken={after}",
            ctx.base_url,
            ctx.subscription,
            urlencoding(&filter)
        );
        if let Some(f) = &fields {
            link.push_str(&format!("&$select={}", urlencoding(&f.join(","))));
        }
        if top != PAGE {
            link.push_str(&format!("&$top={top}"));
        }
        body["nextLink"] = link.into();
    }
    Ok(axum::Json(body).into_response())
}

/// Percent-encodes a query value.
fn urlencoding(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str =
        "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/app";

    #[test]
    fn filters_in_azs_and_azures_forms() {
        let q = parse_filter(&format!(
            "eventTimestamp ge 2026-12-07T13:00:00.123456 and eventTimestamp le 2026-12-07T19:00:00.123456 and resourceId eq '{REG}' and caller eq 'app1'"
        ))
        .unwrap();
        assert_eq!(q.since, "2026-12-07T13:00:00.123456Z");
        assert_eq!(q.resource.as_deref(), Some(REG));
        assert_eq!(q.caller.as_deref(), Some("app1"));
        let q = parse_filter(
            "eventTimestamp ge '2026-12-01T00:00:00Z' AND eventTimestamp le '2026-12-02T00:00:00+01:00' and correlationId eq 'it''s'",
        )
        .unwrap();
        assert_eq!(q.until, "2026-12-01T23:00:00.000000Z");
        assert_eq!(q.correlation_id.as_deref(), Some("it's"));
    }

    #[test]
    fn filters_it_cannot_read_are_refused() {
        for bad in [
            "",
            "eventTimestamp ge '2026-12-01T00:00:00Z'",
            "eventTimestamp ge '2026-01-01T00:00:00Z' and eventTimestamp le '2026-12-01T00:00:00Z'",
            "eventTimestamp ge '2026-12-02T00:00:00Z' and eventTimestamp le '2026-12-01T00:00:00Z'",
            "eventTimestamp ge 'x' and eventTimestamp le '2026-12-01T00:00:00Z'",
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le '2026-12-02T00:00:00Z' or caller eq 'a'",
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le '2026-12-02T00:00:00Z' and level eq 'Error'",
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le '2026-12-02T00:00:00Z' and caller ne 'a'",
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le '2026-12-02T00:00:00Z' and correlationId eq 'a' and resourceGroupName eq 'b'",
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le '2026-12-02T00:00:00Z' and caller eq 'a",
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le",
        ] {
            let e = parse_filter(bad).unwrap_err();
            assert!(e.message.contains("accepts"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn query_names_and_values_are_decoded() {
        let q = "api-version=2015-04-01&%24filter=caller+eq+%27a%2Bb%27&$top=3";
        assert_eq!(
            query_param(q, "$filter").as_deref(),
            Some("caller eq 'a+b'")
        );
        assert_eq!(query_param(q, "$top").as_deref(), Some("3"));
        assert_eq!(query_param(q, "$select"), None);
    }

    #[test]
    fn records_match_by_resource_and_below() {
        let q = parse_filter(&format!(
            "eventTimestamp ge '2026-12-01T00:00:00Z' and eventTimestamp le '2026-12-02T00:00:00Z' and resourceUri eq '{}'",
            REG.to_ascii_lowercase()
        ))
        .unwrap();
        let e = |id: &str, t: &str| {
            ActivityEvent::new("e".into(), t.into(), "op", id, "c", "ip", "corr")
        };
        assert!(matches(&q, &e(REG, "2026-12-01T10:00:00.000000Z")));
        assert!(matches(
            &q,
            &e(
                &format!("{REG}/webhooks/hook1"),
                "2026-12-01T10:00:00.000000Z"
            )
        ));
        assert!(!matches(
            &q,
            &e(&format!("{REG}2"), "2026-12-01T10:00:00.000000Z")
        ));
        assert!(!matches(&q, &e(REG, "2026-12-03T10:00:00.000000Z")));
        assert!(matches!(scope_of(&e(REG, "t")), RoleScope::Registry { .. }));
        assert!(matches!(
            scope_of(&e("/subscriptions/s1/resourceGroups/rg2", "t")),
            RoleScope::ResourceGroup(_)
        ));
    }
}
