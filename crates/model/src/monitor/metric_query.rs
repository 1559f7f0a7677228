//! The Azure Monitor metrics query (`GET {resource}/providers/Microsoft.Insights/metrics?…`) parsed and checked:
//! timespan, interval, metric names, aggregations and the `$filter` that splits by dimension. Pure; every error
//! names what is valid, as Azure's `BadRequest` messages do.

use super::metric::{self, Aggregation, MetricDef};

/// Intervals Azure Monitor accepts for platform metrics, in seconds, with their ISO 8601 names.
pub const INTERVALS: [(&str, i64); 8] = [
    ("PT1M", 60),
    ("PT5M", 300),
    ("PT15M", 900),
    ("PT30M", 1800),
    ("PT1H", 3600),
    ("PT6H", 21_600),
    ("PT12H", 43_200),
    ("P1D", 86_400),
];

/// Buckets one answer holds at most (Azure refuses a timespan that makes too many data points).
pub const MAX_BUCKETS: i64 = 50_000;

/// A dimension the answer is split by: every value (`eq '*'`) or only the listed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// As the metric defines it (`Identity`), whatever case the filter used.
    pub name: String,
    /// `None`: every value.
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricQuery {
    pub metrics: Vec<&'static MetricDef>,
    /// Requested aggregations; empty: each metric's primary one.
    pub aggregations: Vec<Aggregation>,
    /// Unix seconds: the first bucket's start (the timespan's start aligned down to the interval) and the end
    /// (exclusive).
    pub from: i64,
    pub to: i64,
    pub interval_secs: i64,
    pub interval: &'static str,
    pub splits: Vec<Split>,
    pub top: usize,
    /// Series ordered by this aggregation's sum, descending unless `ascending`.
    pub order_by: Option<Aggregation>,
    pub ascending: bool,
    /// `resultType=Metadata`: the series without their data.
    pub metadata_only: bool,
}

impl MetricQuery {
    /// The aggregations reported for `m`.
    pub fn aggregations_of(&self, m: &MetricDef) -> Vec<Aggregation> {
        if self.aggregations.is_empty() {
            vec![m.primary]
        } else {
            self.aggregations.clone()
        }
    }

    /// The timespan as answered: `start/end` of the buckets.
    pub fn timespan(&self) -> String {
        format!(
            "{}/{}",
            metric::format_unix(self.from),
            metric::format_unix(self.to)
        )
    }
}

/// The query parameters, as sent (percent-decoded once).
#[derive(Clone, Debug, Default)]
pub struct RawQuery<'a> {
    pub timespan: Option<&'a str>,
    pub interval: Option<&'a str>,
    pub metricnames: Option<&'a str>,
    pub aggregation: Option<&'a str>,
    pub filter: Option<&'a str>,
    pub top: Option<&'a str>,
    pub orderby: Option<&'a str>,
    pub result_type: Option<&'a str>,
    pub metricnamespace: Option<&'a str>,
}

pub const NAMESPACE: &str = "Microsoft.ContainerRegistry/registries";

/// Parses and checks a query at time `now` (unix seconds; the default timespan is the last hour).
pub fn parse(q: &RawQuery, now: i64) -> Result<MetricQuery, String> {
    if let Some(ns) = q.metricnamespace.filter(|s| !s.is_empty()) {
        if !ns.eq_ignore_ascii_case(NAMESPACE) {
            return Err(format!(
                "Metric namespace '{ns}' is not valid for this resource: the only one is '{NAMESPACE}'."
            ));
        }
    }
    let valid_names = || {
        metric::METRICS
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let metrics: Vec<&'static MetricDef> = match q.metricnames.filter(|s| !s.trim().is_empty()) {
        None => vec![&metric::METRICS[0]],
        Some(names) => names
            .split(',')
            .map(|n| {
                metric::find(n).ok_or_else(|| {
                    format!(
                        "Failed to find metric configuration for provider: Microsoft.ContainerRegistry, resource Type: registries, metric: {}, Valid metrics: {}",
                        n.trim(),
                        valid_names()
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let aggregations = match q.aggregation.filter(|s| !s.trim().is_empty()) {
        None => vec![],
        Some(list) => list
            .split(',')
            .map(|a| {
                Aggregation::parse(a).ok_or_else(|| {
                    format!(
                        "Invalid aggregation type '{}'. Valid values: Average, Count, Maximum, Minimum, Total.",
                        a.trim()
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let (interval, interval_secs) = parse_interval(q.interval.unwrap_or("PT1M"))?;
    let (start, end) = match q.timespan.filter(|s| !s.is_empty()) {
        None => (now - 3600, now),
        Some(t) => parse_timespan(t)?,
    };
    if end <= start {
        return Err(format!(
            "Invalid timespan '{}': its end must be after its start.",
            q.timespan.unwrap_or_default()
        ));
    }
    let from = start - start.rem_euclid(interval_secs);
    let to = end;
    if (to - from) / interval_secs > MAX_BUCKETS {
        return Err(format!(
            "The timespan and interval make {} data points per series, more than {MAX_BUCKETS}: use a shorter timespan or a longer interval ({}).",
            (to - from) / interval_secs,
            interval_names()
        ));
    }
    let splits = match q.filter.filter(|s| !s.trim().is_empty()) {
        None => vec![],
        Some(f) => parse_filter(f, &metrics)?,
    };
    let top = match q.top.filter(|s| !s.is_empty()) {
        None => 10,
        Some(t) => t
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("Invalid top '{t}': a positive integer is expected."))?,
    };
    let (order_by, ascending) = match q.orderby.filter(|s| !s.trim().is_empty()) {
        None => (None, false),
        Some(o) => {
            let mut words = o.split_whitespace();
            let agg = words.next().and_then(Aggregation::parse).ok_or_else(|| {
                format!("Invalid orderby '{o}': expected '<aggregation> [asc|desc]', e.g. 'Total desc'.")
            })?;
            let asc = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("desc") => false,
                Some("asc") => true,
                _ => {
                    return Err(format!(
                        "Invalid orderby '{o}': the direction is asc or desc."
                    ))
                }
            };
            (Some(agg), asc)
        }
    };
    let metadata_only = match q.result_type.filter(|s| !s.is_empty()) {
        None => false,
        Some(r) if r.eq_ignore_ascii_case("Data") => false,
        Some(r) if r.eq_ignore_ascii_case("Metadata") => true,
        Some(r) => {
            return Err(format!(
                "Invalid resultType '{r}'. Valid values: Data, Metadata."
            ))
        }
    };
    Ok(MetricQuery {
        metrics,
        aggregations,
        from,
        to,
        interval_secs,
        interval,
        splits,
        top,
        order_by,
        ascending,
        metadata_only,
    })
}

fn interval_names() -> String {
    INTERVALS.map(|(n, _)| n).join(", ")
}

/// `PT1M` … `P1D`, or az's shorthand (`1m`, `1h`, `1d`).
pub fn parse_interval(s: &str) -> Result<(&'static str, i64), String> {
    let t = s.trim().to_ascii_uppercase();
    let iso = if t.starts_with('P') {
        t.clone()
    } else if let Some(d) = t.strip_suffix('D') {
        format!("P{d}D")
    } else {
        format!("PT{t}")
    };
    // `PT24H` and `P1D` name the same interval; so do `PT60M` and `PT1H`.
    let secs = iso_duration_secs(&iso);
    INTERVALS
        .iter()
        .find(|(n, v)| *n == iso || Some(*v) == secs)
        .copied()
        .ok_or_else(|| {
            format!(
                "Invalid interval '{s}'. Valid values: {}.",
                interval_names()
            )
        })
}

/// Seconds of an ISO 8601 duration of days, hours, minutes and seconds (`P1DT2H`, `PT30M`).
fn iso_duration_secs(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut total = 0i64;
    for (part, units) in [
        (date, &[('D', 86_400i64)][..]),
        (time, &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| *u == c)?.1;
                total += num.parse::<i64>().ok()? * unit;
                num.clear();
            }
        }
        if !num.is_empty() {
            return None;
        }
    }
    (total > 0).then_some(total)
}

/// `start/end` (ISO 8601 times; without an offset, UTC) or `start/duration`.
pub fn parse_timespan(s: &str) -> Result<(i64, i64), String> {
    let bad = || {
        format!("Invalid timespan '{s}': expected '<start>/<end>' in ISO 8601, e.g. 2026-12-07T10:00:00Z/2026-12-07T11:00:00Z.")
    };
    let (a, b) = s.split_once('/').ok_or_else(bad)?;
    let start = parse_time(a).ok_or_else(bad)?;
    let end = match parse_time(b) {
        Some(t) => t,
        None => start + iso_duration_secs(&b.trim().to_ascii_uppercase()).ok_or_else(bad)?,
    };
    Ok((start, end))
}

/// `YYYY-MM-DDTHH:MM[:SS[.frac]]` with `Z`, an offset `±HH:MM`, or nothing (UTC). Seconds, rounded down.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (body, offset) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (b, 0)
    } else if s.len() > 19
        && matches!(s.as_bytes()[s.len() - 6], b'+' | b'-')
        && s.as_bytes()[s.len() - 3] == b':'
    {
        let (b, o) = s.split_at(s.len() - 6);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let h: i64 = o.get(1..3)?.parse().ok()?;
        let m: i64 = o.get(4..6)?.parse().ok()?;
        (b, sign * (h * 3600 + m * 60))
    } else {
        (s, 0)
    };
    let (date_time, _frac) = match body.split_once('.') {
        Some((d, f)) if f.chars().all(|c| c.is_ascii_digit()) => (d, f),
        Some(_) => return None,
        None => (body, ""),
    };
    let full = match date_time.len() {
        16 => format!("{date_time}:00Z"),
        19 => format!("{date_time}Z"),
        _ => return None,
    };
    metric::unix_secs(&full).map(|t| t - offset)
}

/// `Identity eq '*'`, `Identity eq 'a' or Identity eq 'b'`, clauses joined by `and`.
pub fn parse_filter(f: &str, metrics: &[&'static MetricDef]) -> Result<Vec<Split>, String> {
    let mut splits: Vec<Split> = Vec::new();
    for clause in split_words(f, "and") {
        for alt in split_words(&clause, "or") {
            let alt = alt
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            let bad = || {
                format!("Invalid $filter clause '{alt}': expected \"<dimension> eq '<value>'\" (value '*' for every value), clauses joined by 'and' or 'or'.")
            };
            let mut parts = alt.splitn(3, ' ');
            let (name, op, value) = (
                parts.next().ok_or_else(bad)?,
                parts.next().ok_or_else(bad)?,
                parts.next().ok_or_else(bad)?.trim(),
            );
            if !op.eq_ignore_ascii_case("eq") {
                return Err(bad());
            }
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .ok_or_else(bad)?;
            let mut canonical = None;
            for m in metrics {
                match m.dimensions.iter().find(|d| d.eq_ignore_ascii_case(name)) {
                    Some(d) => canonical = Some(*d),
                    None => {
                        return Err(format!(
                            "Metric: {} does not support requested dimension combination: {name}, supported ones are: {}",
                            m.name,
                            if m.dimensions.is_empty() { "none".to_string() } else { m.dimensions.join(", ") }
                        ))
                    }
                }
            }
            let name = canonical.ok_or_else(bad)?.to_string();
            let split = match splits.iter_mut().find(|s| s.name == name) {
                Some(s) => s,
                None => {
                    splits.push(Split {
                        name,
                        values: Some(vec![]),
                    });
                    splits.last_mut().expect("pushed")
                }
            };
            if value == "*" {
                split.values = None;
            } else if let Some(v) = split.values.as_mut() {
                v.push(value.replace("''", "'"));
            }
        }
    }
    Ok(splits)
}

/// Splits on a keyword surrounded by spaces, in any case, outside quotes.
fn split_words(s: &str, word: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let chars: Vec<char> = s.chars().collect();
    let w: Vec<char> = format!(" {word} ").chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted
            && i + w.len() <= chars.len()
            && chars[i..i + w.len()]
                .iter()
                .zip(&w)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
        {
            out.push(String::new());
            i += w.len();
            continue;
        }
        out.last_mut().expect("one").push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q<'a>(metricnames: &'a str, filter: Option<&'a str>) -> RawQuery<'a> {
        RawQuery {
            timespan: Some("2026-12-07T10:00:30.5Z/2026-12-07T11:00:00Z"),
            interval: Some("PT1M"),
            metricnames: Some(metricnames),
            filter,
            ..Default::default()
        }
    }

    #[test]
    fn a_query_as_az_sends_it() {
        let m = parse(&q("SuccessfulPullCount,totalpushcount", None), 0).unwrap();
        assert_eq!(
            m.metrics.iter().map(|m| m.name).collect::<Vec<_>>(),
            ["SuccessfulPullCount", "TotalPushCount"]
        );
        assert_eq!(m.from, parse_time("2026-12-07T10:00:00Z").unwrap());
        assert_eq!(m.to - m.from, 3600);
        assert_eq!(m.timespan(), "2026-12-07T10:00:00Z/2026-12-07T11:00:00Z");
        // az sends a naive UTC time (datetime.utcnow().isoformat()).
        assert_eq!(
            parse_time("2026-12-07T10:00:00.123456"),
            parse_time("2026-12-07T10:00:00Z")
        );
        assert_eq!(
            parse_time("2026-12-07T12:00:00+02:00"),
            parse_time("2026-12-07T10:00:00Z")
        );
        assert_eq!(parse_interval("1h").unwrap(), ("PT1H", 3600));
        assert_eq!(parse_interval("PT24H").unwrap(), ("P1D", 86_400));
        assert_eq!(
            parse_timespan("2026-12-07T10:00:00Z/PT2H").unwrap().1
                - parse_time("2026-12-07T10:00:00Z").unwrap(),
            7200
        );
    }

    #[test]
    fn filters_split_by_the_metrics_dimensions() {
        let m = parse(&q("PulledBytes", Some("identity eq '*'")), 0).unwrap();
        assert_eq!(
            m.splits,
            [Split {
                name: "Identity".into(),
                values: None
            }]
        );
        let m = parse(
            &q(
                "PulledBytes",
                Some("Identity eq 'a' or Identity eq 'o''b' and Repository eq '*'"),
            ),
            0,
        )
        .unwrap();
        assert_eq!(
            m.splits[0].values.as_deref(),
            Some(&["a".to_string(), "o'b".to_string()][..])
        );
        assert_eq!(m.splits[1].name, "Repository");
        let e = parse(&q("SuccessfulPullCount", Some("Identity eq '*'")), 0).unwrap_err();
        assert!(e.contains("does not support requested dimension"), "{e}");
        assert!(parse(&q("PulledBytes", Some("Identity ne 'a'")), 0).is_err());
    }

    #[test]
    fn bad_input_names_what_is_valid() {
        let e = parse(&q("Nope", None), 0).unwrap_err();
        assert!(e.contains("Valid metrics: SuccessfulPullCount"), "{e}");
        let mut r = q("TotalPullCount", None);
        r.interval = Some("PT7M");
        assert!(parse(&r, 0).unwrap_err().contains("PT1M, PT5M"));
        r.interval = Some("PT1M");
        r.aggregation = Some("Total,p99");
        assert!(parse(&r, 0).unwrap_err().contains("Valid values: Average"));
        r.aggregation = None;
        r.timespan = Some("yesterday");
        assert!(parse(&r, 0).unwrap_err().contains("Invalid timespan"));
        r.timespan = Some("2026-12-07T11:00:00Z/2026-12-07T10:00:00Z");
        assert!(parse(&r, 0).is_err());
        r.timespan = Some("2020-01-01T00:00:00Z/2026-01-01T00:00:00Z");
        assert!(parse(&r, 0).unwrap_err().contains("data points"));
        r.timespan = None;
        r.metricnamespace = Some("Microsoft.Storage/storageAccounts");
        assert!(parse(&r, 0).is_err());
    }
}
