//! The report: one row per figure with its peer, ratio and target, printed as a table and as JSON lines.

use super::*;

pub struct Row {
    pub metric: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub moat: Option<f64>,
    pub dist: Option<f64>,
    pub target: String,
    pub pass: Option<bool>,
}

pub fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

pub fn json_num(v: Option<f64>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |v| {
        serde_json::json!((v * 100.0).round() / 100.0)
    })
}

/// Every figure of a run; `None` where a workload was not asked for or failed.
#[derive(Clone, Copy)]
pub struct Figures {
    /// Workloads 1 to 4: Moat's figure, then Distribution's.
    pub large: [Option<LargeFig>; 2],
    pub tls: Option<LargeFig>,
    pub small: [Option<SmallFig>; 2],
    pub manifest: [Option<f64>; 2],
    pub rss: [Option<RssFig>; 2],
    /// Workload 5: single-core SHA-256, fsync'd disk writes, and the lower of the two.
    pub sha_mibs: f64,
    pub disk_mibs: f64,
    pub limit: f64,
    pub rules: Option<RulesFig>,
    /// Workload 7: importImage and `skopeo copy` (MiB/s), same-server imports.
    pub import: Option<f64>,
    pub skopeo: Option<f64>,
    pub local: Option<LocalImportFig>,
    /// Workload 8 with the default limits, then with the login throttle off.
    pub login: [Option<logins::LoginFig>; 2],
    pub gc: Option<gc::GcFig>,
    pub transfer: Option<transfer::TransferFig>,
    pub monitor: Option<monitoring::MonitorFig>,
}

pub fn rows(f: Figures) -> Vec<Row> {
    let Figures {
        large: large_fig,
        tls: tls_fig,
        small: small_fig,
        manifest: manifest_fig,
        rss: rss_fig,
        sha_mibs,
        disk_mibs,
        limit,
        rules: rules_fig,
        import: import_fig,
        skopeo: skopeo_fig,
        local: local_fig,
        login: login_fig,
        gc: gc_fig,
        transfer: transfer_fig,
        monitor: monitor_fig,
    } = f;
    let ge = |m: Option<f64>, d: Option<f64>, k: f64| match (m, d) {
        (Some(m), Some(d)) if d > 0.0 => Some(m >= k * d),
        _ => None,
    };
    let lg = |i: usize| large_fig[i];
    let moat_push = lg(0).map(|f| f.push);
    let dist_push = lg(1).map(|f| f.push);
    let pct_of_limit = moat_push.map(|p| 100.0 * p / limit);
    let moat_hwm = rss_fig[0].map(|f| f.hwm_mib);
    let rules_ratio = rules_fig.filter(|f| f.open > 0.0).map(|f| f.rules / f.open);
    let private_ratio = rules_fig
        .filter(|f| f.open > 0.0)
        .map(|f| f.private / f.open);
    let import_ratio = match (import_fig, skopeo_fig) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let under_50 = |v: Option<f64>| v.map(|ms| ms < 50.0);
    let local = |f: fn(&LocalImportFig) -> f64| local_fig.as_ref().map(f);
    let rows = vec![
        Row {
            metric: "large_push",
            label: "1 large blob push",
            unit: "MiB/s",
            moat: moat_push,
            dist: dist_push,
            target: ">= 3x dist".into(),
            pass: ge(moat_push, dist_push, 3.0),
        },
        Row {
            metric: "large_push_pct_physical",
            label: "1 push % of phys. limit",
            unit: "%",
            moat: pct_of_limit,
            dist: dist_push.map(|p| 100.0 * p / limit),
            target: ">= 50% (moat)".into(),
            pass: pct_of_limit.map(|p| p >= 50.0),
        },
        Row {
            metric: "large_pull",
            label: "1 large blob pull (HTTP)",
            unit: "MiB/s",
            moat: lg(0).map(|f| f.pull),
            dist: lg(1).map(|f| f.pull),
            target: ">= 1x dist".into(),
            pass: ge(lg(0).map(|f| f.pull), lg(1).map(|f| f.pull), 1.0),
        },
        Row {
            metric: "large_push_https",
            label: "1 large push, moat HTTPS",
            unit: "MiB/s",
            moat: tls_fig.map(|f| f.push),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "large_pull_https",
            label: "1 large pull, moat HTTPS",
            unit: "MiB/s",
            moat: tls_fig.map(|f| f.pull),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "small_push",
            label: "2 4 KiB blob push (16 cl.)",
            unit: "blobs/s",
            moat: small_fig[0].map(|f| f.push),
            dist: small_fig[1].map(|f| f.push),
            target: ">= 4x dist".into(),
            pass: ge(
                small_fig[0].map(|f| f.push),
                small_fig[1].map(|f| f.push),
                4.0,
            ),
        },
        Row {
            metric: "small_pull",
            label: "2 4 KiB blob pull (16 cl.)",
            unit: "blobs/s",
            moat: small_fig[0].map(|f| f.pull),
            dist: small_fig[1].map(|f| f.pull),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get",
            label: "3 manifest GET by tag (16 cl.)",
            unit: "req/s",
            moat: manifest_fig[0],
            dist: manifest_fig[1],
            target: ">= 10x dist".into(),
            pass: ge(manifest_fig[0], manifest_fig[1], 10.0),
        },
        Row {
            metric: "rss_push_hwm",
            label: "4 server VmHWM, big push",
            unit: "MiB",
            moat: moat_hwm,
            dist: rss_fig[1].map(|f| f.hwm_mib),
            target: "< 100 MiB (moat)".into(),
            pass: moat_hwm.map(|m| m < 100.0),
        },
        Row {
            metric: "rss_push_sampled_peak",
            label: "4 server VmRSS peak (sampled)",
            unit: "MiB",
            moat: rss_fig[0].map(|f| f.sampled_peak_mib),
            dist: rss_fig[1].map(|f| f.sampled_peak_mib),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "rss_push_throughput",
            label: "4 big push throughput",
            unit: "MiB/s",
            moat: rss_fig[0].map(|f| f.push),
            dist: rss_fig[1].map(|f| f.push),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "physical_sha256",
            label: "5 SHA-256, one core",
            unit: "MiB/s",
            moat: Some(sha_mibs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "physical_disk_fsync",
            label: "5 disk write, fsync'd",
            unit: "MiB/s",
            moat: Some(disk_mibs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "physical_push_limit",
            label: "5 push physical limit",
            unit: "MiB/s",
            moat: Some(limit),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_no_rules",
            label: "6a manifest GET, no rules",
            unit: "req/s",
            moat: rules_fig.map(|f| f.open),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_100_ip_rules",
            label: "6b manifest GET, 100 IP rules",
            unit: "req/s",
            moat: rules_fig.map(|f| f.rules),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_ip_rules_ratio",
            label: "6 ratio (b)/(a)",
            unit: "x",
            moat: rules_ratio,
            dist: None,
            target: ">= 0.95 (within 5%)".into(),
            pass: rules_ratio.map(|r| r >= 0.95),
        },
        Row {
            metric: "manifest_get_private_endpoint",
            label: "6c manifest GET via private endpoint, 100 IP rules",
            unit: "req/s",
            moat: rules_fig.map(|f| f.private),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_private_endpoint_ratio",
            label: "6 ratio (c)/(a)",
            unit: "x",
            moat: private_ratio,
            dist: None,
            target: ">= 0.95 (within 5%)".into(),
            pass: private_ratio.map(|r| r >= 0.95),
        },
        Row {
            metric: "import_remote",
            label: "7a importImage dist->moat",
            unit: "MiB/s",
            moat: import_fig,
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "import_skopeo_copy",
            label: "7b skopeo copy dist->moat",
            unit: "MiB/s",
            moat: skopeo_fig,
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "import_remote_vs_skopeo_ratio",
            label: "7 ratio (a)/(b)",
            unit: "x",
            moat: import_ratio,
            dist: None,
            target: ">= 1.5x skopeo".into(),
            pass: import_ratio.map(|r| r >= 1.5),
        },
        Row {
            metric: "import_local_large_best",
            label: "7c same-srv import large, best",
            unit: "ms",
            moat: local(|f| f.large.0),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.large.0)),
        },
        Row {
            metric: "import_local_large_median",
            label: "7c same-srv import large, median",
            unit: "ms",
            moat: local(|f| f.large.1),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.large.1)),
        },
        Row {
            metric: "import_local_1kib_best",
            label: "7c same-srv import 1 KiB, best",
            unit: "ms",
            moat: local(|f| f.tiny.0),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.tiny.0)),
        },
        Row {
            metric: "import_local_1kib_median",
            label: "7c same-srv import 1 KiB, median",
            unit: "ms",
            moat: local(|f| f.tiny.1),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.tiny.1)),
        },
        Row {
            metric: "login_flood_peak_rss",
            label: "8 1,000 logins: peak RSS",
            unit: "MiB",
            moat: login_fig[0].map(|f| f.peak_rss_mib),
            dist: None,
            target: "< 200 MiB".into(),
            pass: login_fig[0].map(|f| f.peak_rss_mib < 200.0),
        },
        Row {
            metric: "login_flood_good_p99",
            label: "8 1,000 logins: p99 right ones",
            unit: "ms",
            moat: login_fig[0].map(|f| f.good_p99_ms),
            dist: None,
            target: "< 1000 ms".into(),
            pass: login_fig[0].map(|f| f.good_p99_ms < 1000.0),
        },
        Row {
            metric: "login_flood_unthrottled_peak_rss",
            label: "8b same, throttle off: RSS",
            unit: "MiB",
            moat: login_fig[1].map(|f| f.peak_rss_mib),
            dist: None,
            target: "< 200 MiB".into(),
            pass: login_fig[1].map(|f| f.peak_rss_mib < 200.0),
        },
        Row {
            metric: "login_flood_unthrottled_good_p99",
            label: "8b same, throttle off: p99",
            unit: "ms",
            moat: login_fig[1].map(|f| f.good_p99_ms),
            dist: None,
            target: "< 1000 ms".into(),
            pass: login_fig[1].map(|f| f.good_p99_ms < 1000.0),
        },
        Row {
            metric: "gc_push_rate_ratio",
            label: "9 pushes during GC / without",
            unit: "x",
            moat: gc_fig.map(|f| f.during / f.baseline),
            dist: None,
            target: ">= 0.90".into(),
            pass: gc_fig.map(|f| f.during / f.baseline >= 0.9),
        },
        Row {
            metric: "transfer_export_azure",
            label: "10a export to Azurite / SDK upload",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.export_azure),
            dist: transfer_fig.map(|f| f.sdk_upload),
            target: ">= 0.8x".into(),
            pass: transfer_fig.map(|f| f.export_azure >= 0.8 * f.sdk_upload),
        },
        Row {
            metric: "transfer_import_azure",
            label: "10b import from Azurite / SDK download",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.import_azure),
            dist: transfer_fig.map(|f| f.sdk_download),
            target: ">= 0.8x".into(),
            pass: transfer_fig.map(|f| f.import_azure >= 0.8 * f.sdk_download),
        },
        Row {
            metric: "transfer_export_local",
            label: "10c LocalDirectory export / fsync'd disk",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.export_local),
            dist: transfer_fig.map(|f| f.disk),
            target: ">= 0.8x".into(),
            pass: transfer_fig.map(|f| f.export_local >= 0.8 * f.disk),
        },
        Row {
            // The archive's digest is one SHA-256 pass over the whole tar: one core's hashing rate bounds an
            // export wherever the disk is faster.
            metric: "transfer_export_local_vs_sha256",
            label: "10c LocalDirectory export / SHA-256",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.export_local),
            dist: transfer_fig.map(|_| sha_mibs),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "monitoring_manifest_get_ratio",
            label: "12 manifest GET, 2 settings / none",
            unit: "req/s",
            moat: monitor_fig.map(|f| f.get_with),
            dist: monitor_fig.map(|f| f.get_none),
            target: ">= 0.95x".into(),
            pass: monitor_fig.map(|f| f.get_with >= 0.95 * f.get_none),
        },
        Row {
            metric: "monitoring_push_ratio",
            label: "12 4 KiB push, 2 settings / none",
            unit: "blobs/s",
            moat: monitor_fig.map(|f| f.push_with),
            dist: monitor_fig.map(|f| f.push_none),
            target: ">= 0.95x".into(),
            pass: monitor_fig.map(|f| f.push_with >= 0.95 * f.push_none),
        },
        Row {
            metric: "monitoring_sink_backlog_end",
            label: "12 sink backlog at load's end",
            unit: "records",
            moat: monitor_fig.map(|f| f.backlog_end as f64),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "monitoring_sink_drain",
            label: "12 sink backlog drained in",
            unit: "s",
            moat: monitor_fig.map(|f| f.drain_secs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "gc_duration",
            label: "9 GC, half of 100k blobs",
            unit: "s",
            moat: gc_fig.map(|f| f.gc_secs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
    ];
    rows
}

/// The table, the run's description and one JSON line per row.
pub fn render(
    rows: &[Row],
    sizes: &Sizes,
    env: &Env,
    root: &Path,
    load_start: &str,
    import_mib: f64,
    errors: &[String],
) -> String {
    let mut out = String::new();
    let git = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok();
    let commit = git
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    out.push_str(&format!(
        "\nMoat vs Distribution ({}; commit {commit}; {cores} cores, {cpu}; load avg {load_start} -> {}; large blob {} MiB (pull best of {}), {} small blobs of {} KiB and {} s manifest run (best of {} rounds), RSS push {} MiB; import image {:.0} MiB in {IMPORT_LAYERS} layers (best of {} rounds), {} same-server imports per image)\n",
        if sizes.quick { "quick" } else { "full" },
        loadavg(),
        sizes.large >> 20,
        sizes.pull_repeats,
        sizes.small_count,
        sizes.small_size >> 10,
        sizes.manifest_secs,
        sizes.rounds,
        (sizes.large as u64 * RSS_REPEAT) >> 20,
        import_mib,
        sizes.rounds,
        sizes.import_calls
    ));
    out.push_str(&format!(
        "{:<32} {:>7} {:>10} {:>12} {:>8}  {:<19} {}\n",
        "workload", "unit", "moat", "distribution", "ratio", "target", "result"
    ));
    out.push_str(&format!("{}\n", "-".repeat(102)));
    for r in rows {
        let ratio = match (r.moat, r.dist) {
            (Some(m), Some(d)) if d > 0.0 => Some(m / d),
            _ => None,
        };
        let result = match r.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None if r.target != "-" => "n/a",
            None => "",
        };
        out.push_str(&format!(
            "{:<32} {:>7} {:>10} {:>12} {:>8}  {:<19} {}\n",
            r.label,
            r.unit,
            fmt_num(r.moat),
            fmt_num(r.dist),
            ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            r.target,
            result
        ));
    }
    if !errors.is_empty() {
        out.push_str("\nerrors:\n");
        for e in errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out.push('\n');
    out.push_str(
        &serde_json::json!({
            "bench": "moat-vs-distribution",
            "mode": if sizes.quick { "quick" } else { "full" },
            "commit": commit,
            "cores": cores,
            "cpu": cpu,
            "large_blob_mib": sizes.large >> 20,
            "small_blobs": sizes.small_count,
            "small_blob_kib": sizes.small_size >> 10,
            "concurrency": sizes.concurrency,
            "manifest_secs": sizes.manifest_secs,
            "rss_push_mib": (sizes.large as u64 * RSS_REPEAT) >> 20,
            "distribution": "docker-registry (Debian), filesystem storage, blobdescriptor cache inmemory, log warn, no auth",
            "rounds_small_and_manifest": sizes.rounds,
            "network_ip_rules": IP_RULES,
            "large_pull_best_of": sizes.pull_repeats,
            "import_image_mib": (import_mib * 100.0).round() / 100.0,
            "import_layers": IMPORT_LAYERS,
            "import_rounds": sizes.rounds,
            "import_local_calls": sizes.import_calls,
            "import_poll_ms": IMPORT_POLL.as_millis() as u64,
            "skopeo": env.skopeo_bin.display().to_string(),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": loadavg(),
            "errors": errors,
        })
        .to_string(),
    );
    out.push('\n');
    for r in rows {
        let ratio = match (r.moat, r.dist) {
            (Some(m), Some(d)) if d > 0.0 => Some(m / d),
            _ => None,
        };
        out.push_str(
            &serde_json::json!({
                "metric": r.metric,
                "unit": r.unit,
                "moat": json_num(r.moat),
                "distribution": json_num(r.dist),
                "ratio": json_num(ratio),
                "target": r.target,
                "result": r.pass.map(|p| if p { "PASS" } else { "MISS" }),
            })
            .to_string(),
        );
        out.push('\n');
    }
    out
}
