//! Registry metrics as Azure Monitor defines them for `Microsoft.ContainerRegistry/registries` (ACR's own names,
//! units and aggregations) plus Moat's byte and denial metrics, and the rule that says which audit event feeds
//! which metric. Pure: the aggregator in `moat_server::monitor::metrics` folds what [`contributions`] returns.

use crate::audit::AuditEvent;

/// Azure Monitor's aggregation types, in the order `metricDefinitions` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    Average,
    Count,
    Maximum,
    Minimum,
    Total,
}

impl Aggregation {
    pub const ALL: [Aggregation; 5] = [
        Aggregation::Average,
        Aggregation::Count,
        Aggregation::Maximum,
        Aggregation::Minimum,
        Aggregation::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Average => "Average",
            Aggregation::Count => "Count",
            Aggregation::Maximum => "Maximum",
            Aggregation::Minimum => "Minimum",
            Aggregation::Total => "Total",
        }
    }

    /// The JSON key of a timeseries value (`{"timeStamp", "total": 3.0}`).
    pub fn key(self) -> &'static str {
        match self {
            Aggregation::Average => "average",
            Aggregation::Count => "count",
            Aggregation::Maximum => "maximum",
            Aggregation::Minimum => "minimum",
            Aggregation::Total => "total",
        }
    }

    /// Reads an aggregation in any case; Azure also accepts `Sum` for `Total`.
    pub fn parse(s: &str) -> Option<Aggregation> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("sum") {
            return Some(Aggregation::Total);
        }
        Aggregation::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// The aggregate of a bucket of `count` samples summing to `total`, or `None` for an empty bucket (Azure
    /// leaves empty minutes without an average, minimum or maximum, and gives counts and totals as 0).
    pub fn value(self, count: i64, total: f64, minimum: f64, maximum: f64) -> Option<f64> {
        match self {
            Aggregation::Count => Some(count as f64),
            Aggregation::Total => Some(total),
            _ if count == 0 => None,
            Aggregation::Average => Some(total / count as f64),
            Aggregation::Minimum => Some(minimum),
            Aggregation::Maximum => Some(maximum),
        }
    }
}

/// One metric a registry has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub display_name: &'static str,
    pub description: &'static str,
    /// Azure's unit names: `Count`, `Bytes`.
    pub unit: &'static str,
    pub primary: Aggregation,
    pub dimensions: &'static [&'static str],
    /// The grain the points are stored at: `PT1M`, or `PT1H` for a sampled level.
    pub grain_secs: i64,
}

pub const SUCCESSFUL_PULL_COUNT: &str = "SuccessfulPullCount";
pub const TOTAL_PULL_COUNT: &str = "TotalPullCount";
pub const SUCCESSFUL_PUSH_COUNT: &str = "SuccessfulPushCount";
pub const TOTAL_PUSH_COUNT: &str = "TotalPushCount";
pub const STORAGE_USED: &str = "StorageUsed";
pub const PULLED_BYTES: &str = "PulledBytes";
pub const PUSHED_BYTES: &str = "PushedBytes";
pub const DENIED_REQUEST_COUNT: &str = "DeniedRequestCount";

/// The dimension value of a request without an identity (an anonymous pull).
pub const ANONYMOUS: &str = "(anonymous)";

const fn count(
    name: &'static str,
    display_name: &'static str,
    description: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        display_name,
        description,
        unit: "Count",
        primary: Aggregation::Total,
        dimensions: &[],
        grain_secs: 60,
    }
}

pub const METRICS: [MetricDef; 8] = [
    count(
        SUCCESSFUL_PULL_COUNT,
        "Successful Pull Count",
        "Number of successful image pulls (manifest GETs and HEADs).",
    ),
    count(
        TOTAL_PULL_COUNT,
        "Total Pull Count",
        "Number of image pulls, including the refused ones.",
    ),
    count(
        SUCCESSFUL_PUSH_COUNT,
        "Successful Push Count",
        "Number of successful image pushes (manifest PUTs).",
    ),
    count(
        TOTAL_PUSH_COUNT,
        "Total Push Count",
        "Number of image pushes, including the refused ones.",
    ),
    MetricDef {
        name: STORAGE_USED,
        display_name: "Storage used",
        description: "The bytes of the registry's distinct blobs and manifests, sampled hourly.",
        unit: "Bytes",
        primary: Aggregation::Average,
        dimensions: &["Geolocation"],
        grain_secs: 3600,
    },
    MetricDef {
        name: PULLED_BYTES,
        display_name: "Pulled Bytes",
        description: "Bytes of blobs and manifests served by successful pulls.",
        unit: "Bytes",
        primary: Aggregation::Total,
        dimensions: &["Identity", "Repository"],
        grain_secs: 60,
    },
    MetricDef {
        name: PUSHED_BYTES,
        display_name: "Pushed Bytes",
        description: "Bytes of blobs and manifests received by successful pushes.",
        unit: "Bytes",
        primary: Aggregation::Total,
        dimensions: &["Identity", "Repository"],
        grain_secs: 60,
    },
    MetricDef {
        name: DENIED_REQUEST_COUNT,
        display_name: "Denied Request Count",
        description: "Data-plane requests refused by the network rules, a missing permission or the egress gate.",
        unit: "Count",
        primary: Aggregation::Total,
        dimensions: &["Reason", "Operation"],
        grain_secs: 60,
    },
];

/// The definition of `name`, in any case.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    METRICS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name.trim()))
}

/// Why a request was denied, as the `Reason` dimension names it, read from the event's result description
/// (`"403: <reason>"`, as the egress gate and the network rules write it).
pub fn denial_reason(result_description: &str) -> &'static str {
    let d = result_description.to_ascii_lowercase();
    if d.contains("insufficient scope") || d.contains("lacks '") {
        "MissingPermission"
    } else if d.contains("network access")
        || d.contains("ip rule")
        || d.contains("private endpoint")
        || d.contains("trusted services")
    {
        "Network"
    } else if d.contains("exports disabled") {
        "ExportPolicy"
    } else if d.contains("data endpoint") {
        "DataEndpoint"
    } else if d.contains("between registries") {
        "CrossRegistry"
    } else if d.contains("not supported") {
        "NotSupported"
    } else {
        "Other"
    }
}

/// One sample an event adds to a metric: `value` into the minute of the event, under `dimensions` (sorted by name).
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    pub metric: &'static str,
    pub dimensions: Vec<(String, String)>,
    pub value: f64,
}

/// A blob transfer is recorded with this media type; anything else under `Pull`/`Push` is a manifest (an image
/// pull or push, as ACR counts them), and a refused request (no media type) counts as an attempted image pull/push.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What `e` adds to the registry's metrics.
pub fn contributions(e: &AuditEvent) -> Vec<Contribution> {
    let mut out = Vec::new();
    let c = |metric, dimensions, value| Contribution {
        metric,
        dimensions,
        value,
    };
    let success = e.result_type == "Success";
    let denied = e.result_type == "Denied";
    let manifest = e.media_type.as_deref() != Some(BLOB_MEDIA_TYPE);
    let by_who = || {
        vec![
            (
                "Identity".to_string(),
                e.identity.clone().unwrap_or_else(|| ANONYMOUS.to_string()),
            ),
            (
                "Repository".to_string(),
                e.repository.clone().unwrap_or_default(),
            ),
        ]
    };
    match e.operation_name.as_str() {
        "Pull" => {
            if manifest {
                out.push(c(TOTAL_PULL_COUNT, vec![], 1.0));
                if success {
                    out.push(c(SUCCESSFUL_PULL_COUNT, vec![], 1.0));
                }
            }
            if success {
                out.push(c(PULLED_BYTES, by_who(), e.size.unwrap_or(0) as f64));
            }
        }
        "Push" => {
            if manifest {
                out.push(c(TOTAL_PUSH_COUNT, vec![], 1.0));
                if success {
                    out.push(c(SUCCESSFUL_PUSH_COUNT, vec![], 1.0));
                }
            }
            if success {
                out.push(c(PUSHED_BYTES, by_who(), e.size.unwrap_or(0) as f64));
            }
        }
        _ => {}
    }
    if denied {
        out.push(c(
            DENIED_REQUEST_COUNT,
            vec![
                ("Operation".to_string(), e.operation_name.clone()),
                (
                    "Reason".to_string(),
                    denial_reason(&e.result_description).to_string(),
                ),
            ],
            1.0,
        ));
    }
    out
}

/// Unix seconds of the start of the minute of a stored time (`2026-12-07T18:53:06.123456Z`, or any RFC 3339 time
/// in UTC with `Z`), `None` when it is not one.
pub fn minute_of(time: &str) -> Option<i64> {
    unix_secs(time).map(|s| s - s.rem_euclid(60))
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn unix_secs(time: &str) -> Option<i64> {
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
    if !time.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| time.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
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

/// `YYYY-MM-DDTHH:MM:SSZ` of unix seconds (the metrics API's time stamps).
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: &str, result: &str, media: Option<&str>, size: i64) -> AuditEvent {
        AuditEvent {
            time_generated: "2026-12-07T18:53:06.123456Z".into(),
            operation_name: op.into(),
            registry: "app".into(),
            repository: Some("web".into()),
            identity: Some("alice".into()),
            media_type: media.map(String::from),
            size: Some(size),
            result_type: result.into(),
            result_description: "200".into(),
            ..Default::default()
        }
    }

    fn names(e: &AuditEvent) -> Vec<&'static str> {
        contributions(e).iter().map(|c| c.metric).collect()
    }

    #[test]
    fn manifests_count_as_images_blobs_only_as_bytes() {
        let manifest = event(
            "Pull",
            "Success",
            Some("application/vnd.oci.image.manifest.v1+json"),
            500,
        );
        assert_eq!(
            names(&manifest),
            [TOTAL_PULL_COUNT, SUCCESSFUL_PULL_COUNT, PULLED_BYTES]
        );
        let blob = event("Pull", "Success", Some(BLOB_MEDIA_TYPE), 9000);
        let c = contributions(&blob);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].metric, c[0].value), (PULLED_BYTES, 9000.0));
        assert_eq!(
            c[0].dimensions,
            [
                ("Identity".to_string(), "alice".to_string()),
                ("Repository".to_string(), "web".to_string())
            ]
        );
        let push = event(
            "Push",
            "Success",
            Some("application/vnd.oci.image.manifest.v1+json"),
            300,
        );
        assert_eq!(
            names(&push),
            [TOTAL_PUSH_COUNT, SUCCESSFUL_PUSH_COUNT, PUSHED_BYTES]
        );
        assert!(names(&event("ListTags", "Success", None, 0)).is_empty());
    }

    #[test]
    fn refusals_count_as_attempts_and_denials_by_reason() {
        let mut e = event("Push", "Denied", None, 0);
        e.size = None;
        e.result_description = "403: public network access is disabled".into();
        let c = contributions(&e);
        assert_eq!(
            c.iter().map(|c| c.metric).collect::<Vec<_>>(),
            [TOTAL_PUSH_COUNT, DENIED_REQUEST_COUNT]
        );
        assert_eq!(
            c[1].dimensions,
            [
                ("Operation".to_string(), "Push".to_string()),
                ("Reason".to_string(), "Network".to_string())
            ]
        );
        assert_eq!(
            denial_reason("401: insufficient scope"),
            "MissingPermission"
        );
        assert_eq!(
            denial_reason("401: the caller lacks 'pull' on repository 'a'"),
            "MissingPermission"
        );
        assert_eq!(
            denial_reason("403: registry 'x' has exports disabled (exportPolicy): …"),
            "ExportPolicy"
        );
        assert_eq!(
            denial_reason("403: the registry's data endpoint is disabled"),
            "DataEndpoint"
        );
        assert_eq!(denial_reason("403: something new"), "Other");
    }

    #[test]
    fn times_map_to_their_minute_and_back() {
        assert_eq!(minute_of("1970-01-01T00:01:59.999999Z"), Some(60));
        assert_eq!(
            minute_of("2026-12-07T18:53:06.123456Z"),
            Some(1_796_669_580)
        );
        assert_eq!(format_unix(1_796_669_580), "2026-12-07T18:53:00Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(unix_secs("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(minute_of("yesterday"), None);
        assert_eq!(minute_of("2026-13-07T18:53:06Z"), None);
    }

    #[test]
    fn aggregations_parse_and_leave_empty_buckets_without_averages() {
        assert_eq!(Aggregation::parse("sum"), Some(Aggregation::Total));
        assert_eq!(Aggregation::parse("AVERAGE"), Some(Aggregation::Average));
        assert_eq!(Aggregation::parse("p99"), None);
        assert_eq!(Aggregation::Total.value(0, 0.0, 0.0, 0.0), Some(0.0));
        assert_eq!(Aggregation::Average.value(0, 0.0, 0.0, 0.0), None);
        assert_eq!(Aggregation::Average.value(4, 10.0, 1.0, 4.0), Some(2.5));
        assert_eq!(find("storageused").map(|m| m.grain_secs), Some(3600));
    }
}
