//! Answers an Azure Monitor metrics query from the stored minute points: buckets of the requested interval over
//! the timespan, split by the filter's dimensions, in the JSON `az monitor metrics list` and azure-mgmt-monitor
//! read. Empty buckets are present, with counts and totals 0 and no average, minimum or maximum, as Azure gives them.

use crate::state::AppState;
use moat_model::monitor::metric::{self, Aggregation, MetricDef, METRICS};
use moat_model::monitor::metric_query::{MetricQuery, NAMESPACE};
use moat_model::registry::Registry;
use moat_store::meta::MetricPoint;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Default)]
struct Bucket {
    count: i64,
    total: f64,
    minimum: f64,
    maximum: f64,
}

impl Bucket {
    fn add(&mut self, p: &MetricPoint) {
        if self.count == 0 {
            self.minimum = p.minimum;
            self.maximum = p.maximum;
        } else {
            self.minimum = self.minimum.min(p.minimum);
            self.maximum = self.maximum.max(p.maximum);
        }
        self.count += p.count;
        self.total += p.total;
    }

    fn value(&self, a: Aggregation) -> Option<f64> {
        a.value(self.count, self.total, self.minimum, self.maximum)
    }
}

fn localizable(s: &str) -> Value {
    json!({"value": s, "localizedValue": s})
}

/// The `metrics` answer for `registry` (whose ARM id is `resource_id`).
pub async fn answer(
    state: &AppState,
    registry: &Registry,
    resource_id: &str,
    q: &MetricQuery,
) -> moat_store::error::Result<Value> {
    let buckets = ((q.to - q.from + q.interval_secs - 1) / q.interval_secs) as usize;
    let mut value = Vec::new();
    for m in &q.metrics {
        let points = state
            .meta
            .metric_points(&registry.name, Some(m.name), q.from, q.to)
            .await?;
        value.push(json!({
            "id": format!("{resource_id}/providers/Microsoft.Insights/metrics/{}", m.name),
            "type": "Microsoft.Insights/metrics",
            "name": {"value": m.name, "localizedValue": m.display_name},
            "displayDescription": m.description,
            "unit": m.unit,
            "timeseries": timeseries(q, m, &points, buckets),
            "errorCode": "Success",
        }));
    }
    Ok(json!({
        "cost": buckets * q.metrics.len(),
        "timespan": q.timespan(),
        "interval": q.interval,
        "value": value,
        "namespace": NAMESPACE,
        "resourceregion": registry.settings.location.as_str(),
    }))
}

/// One metric's series: one per combination of the split dimensions' values (one in all without a split).
fn timeseries(q: &MetricQuery, m: &MetricDef, points: &[MetricPoint], n: usize) -> Vec<Value> {
    let mut series: BTreeMap<Vec<String>, Vec<Bucket>> = BTreeMap::new();
    if q.splits.is_empty() {
        series.insert(vec![], vec![Bucket::default(); n]);
    }
    'points: for p in points {
        let mut key = Vec::with_capacity(q.splits.len());
        for s in &q.splits {
            let v = p
                .dimensions
                .iter()
                .find(|(d, _)| d.eq_ignore_ascii_case(&s.name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if let Some(allowed) = &s.values {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&v)) {
                    continue 'points;
                }
            }
            key.push(v);
        }
        let i = ((p.minute - q.from) / q.interval_secs) as usize;
        if i < n {
            series
                .entry(key)
                .or_insert_with(|| vec![Bucket::default(); n])[i]
                .add(p);
        }
    }
    let aggregations = q.aggregations_of(m);
    let order = q.order_by.unwrap_or(aggregations[0]);
    let mut ranked: Vec<(f64, Vec<String>, Vec<Bucket>)> = series
        .into_iter()
        .map(|(k, b)| {
            let score = b.iter().filter_map(|x| x.value(order)).sum::<f64>();
            (score, k, b)
        })
        .collect();
    ranked.sort_by(|a, b| {
        let o = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
        (if q.ascending { o } else { o.reverse() }).then_with(|| a.1.cmp(&b.1))
    });
    if !q.splits.is_empty() {
        ranked.truncate(q.top);
    }
    ranked
        .into_iter()
        .map(|(_, key, buckets)| {
            let metadatavalues: Vec<Value> = q
                .splits
                .iter()
                .zip(&key)
                .map(
                    |(s, v)| json!({"name": localizable(&s.name.to_ascii_lowercase()), "value": v}),
                )
                .collect();
            let data: Vec<Value> = if q.metadata_only {
                vec![]
            } else {
                buckets
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let mut d = serde_json::Map::new();
                        d.insert(
                            "timeStamp".into(),
                            metric::format_unix(q.from + i as i64 * q.interval_secs).into(),
                        );
                        for a in &aggregations {
                            if let Some(v) = b.value(*a) {
                                d.insert(a.key().into(), v.into());
                            }
                        }
                        Value::Object(d)
                    })
                    .collect()
            };
            json!({"metadatavalues": metadatavalues, "data": data})
        })
        .collect()
}

/// `metricDefinitions` of a registry.
pub fn definitions(resource_id: &str) -> Value {
    let value: Vec<Value> = METRICS
        .iter()
        .map(|m| {
            let grains: &[&str] = if m.grain_secs == 3600 {
                &["PT1H", "P1D"]
            } else {
                &["PT1M", "PT5M", "PT15M", "PT30M", "PT1H", "PT6H", "PT12H", "P1D"]
            };
            json!({
                "id": format!("{resource_id}/providers/microsoft.insights/metricdefinitions/{}", m.name),
                "resourceId": resource_id,
                "namespace": NAMESPACE,
                "category": if m.name == metric::STORAGE_USED { "Capacity" } else { "Traffic" },
                "metricClass": if m.name == metric::STORAGE_USED { "Saturation" } else { "Transactions" },
                "name": {"value": m.name, "localizedValue": m.display_name},
                "displayDescription": m.description,
                "isDimensionRequired": false,
                "unit": m.unit,
                "primaryAggregationType": m.primary.as_str(),
                "supportedAggregationTypes": ["None", "Average", "Minimum", "Maximum", "Total", "Count"],
                "metricAvailabilities": grains.iter().map(|g| json!({"timeGrain": g, "retention": "P93D"})).collect::<Vec<_>>(),
                "dimensions": m.dimensions.iter().map(|d| localizable(d)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "value": value })
}

/// `metricNamespaces` of a registry: its one platform namespace.
pub fn namespaces(resource_id: &str) -> Value {
    let name = NAMESPACE.replace('/', "-");
    json!({"value": [{
        "id": format!("{resource_id}/providers/microsoft.insights/metricNamespaces/{name}"),
        "name": name,
        "type": "Microsoft.Insights/metricNamespaces",
        "classification": "Platform",
        "properties": {"metricNamespaceName": NAMESPACE},
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_model::monitor::metric_query::{parse, RawQuery};

    #[test]
    fn buckets_fill_the_timespan_and_splits_rank_by_total() {
        let raw = RawQuery {
            timespan: Some("1970-01-01T00:00:00Z/1970-01-01T00:05:00Z"),
            interval: Some("PT1M"),
            metricnames: Some("PulledBytes"),
            filter: Some("Identity eq '*'"),
            ..Default::default()
        };
        let q = parse(&raw, 0).unwrap();
        let m = metric::find("PulledBytes").unwrap();
        let p = |who: &str, minute: i64, v: f64| {
            MetricPoint::sample(
                "PulledBytes",
                vec![
                    ("Identity".into(), who.into()),
                    ("Repository".into(), "r".into()),
                ],
                minute,
                v,
            )
        };
        let pts = [
            p("a", 60, 5.0),
            p("b", 60, 7.0),
            p("b", 120, 3.0),
            p("a", 240, 1.0),
        ];
        let ts = timeseries(&q, m, &pts, 5);
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[0]["metadatavalues"][0]["value"], "b");
        assert_eq!(ts[0]["data"].as_array().unwrap().len(), 5);
        assert_eq!(ts[0]["data"][1]["total"], 7.0);
        assert_eq!(ts[0]["data"][0]["total"], 0.0);
        assert_eq!(ts[1]["data"][4]["total"], 1.0);
        let mut whole = q.clone();
        whole.splits.clear();
        whole.aggregations = vec![Aggregation::Total, Aggregation::Average];
        let ts = timeseries(&whole, m, &pts, 5);
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0]["data"][1]["total"], 12.0);
        assert_eq!(ts[0]["data"][1]["average"], 6.0);
        assert!(ts[0]["data"][3].get("average").is_none());
    }
}
