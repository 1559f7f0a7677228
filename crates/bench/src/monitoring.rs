//! Workload 12, Moat's alone: what shipping the logs costs the data plane. One server with an admin listener
//! (`--admin-listen`), Azurite, and a tiny HTTP receiver in this process that answers every POST 200 (a Splunk
//! HEC stand-in). In each round, in alternating order, two phases of the same load: workload 3's manifest GET by
//! tag (16 raw connections) and 4 KiB pushes (16 raw connections, `POST ?digest=`), (a) with no diagnostic
//! setting, (b) with two: one to the Azurite account registered with `moat storage-account add` (every log
//! category and `AllMetrics`), one to the receiver registered with `moat monitor sink add --kind http` and named
//! by `marketplacePartnerId`. The sinks run at the README's default `--sink-interval-ms` (1000).
//!
//! The backlog is read from the admin listener's `/metrics` once a second during every load, with or without the
//! settings (so the scrapes cost the same in each): `moat_log_consumer_backlog` of the `sink:` consumers (computed
//! at each scrape from the cursors) and `moat_sink_backlog` (what the delivery loop last reported). After each load
//! with the settings the bench waits until the sinks' cursors reach the logs' end and reports how long that took,
//! so that the next load is not charged for shipping this one's records; then it deletes the settings. The CPU
//! time of the server, Azurite and the bench during each load says where a slowdown comes from: on this machine
//! Azurite shares the server's cores, in production it does not.

use super::{free_port, gc, json_call, Arm, BenchBody, Env, ManifestTarget, Reg, Server, Sizes};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Azure Monitor's diagnostic-settings api-version (the one az and azure-mgmt-monitor 6.0.2 send).
const API: &str = "api-version=2021-05-01-preview";
/// How long the sinks get to catch up after a loaded phase before the bench calls it a failure.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// Pushes made before this point of a push phase do not count (the connections are opening).
const PUSH_WARMUP: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, Default)]
pub struct MonitorFig {
    /// Manifest GETs per second without settings, and with the two (best round of each).
    pub get_none: f64,
    pub get_with: f64,
    /// 4 KiB pushes per second, likewise.
    pub push_none: f64,
    pub push_with: f64,
    /// The largest backlog of all sinks together (records after their cursors) seen during a load with the
    /// settings, and the largest at the end of one (`moat_log_consumer_backlog`).
    pub backlog_max: i64,
    pub backlog_end: i64,
    /// The largest backlog at the end of a load of the storage account's sink and of the HTTP one.
    pub backlog_end_storage: i64,
    pub backlog_end_partner: i64,
    /// `moat_sink_backlog` summed over the sinks at the end of the loaded phase.
    pub sink_gauge_end: i64,
    /// The longest time from the end of a load until every sink had caught up.
    pub drain_secs: f64,
    /// Records the HTTP receiver got, and a lower bound of the requests made while the settings existed (the
    /// measured GETs, not their warm-up, and every push).
    pub http_records: u64,
    pub requests_with: u64,
    /// Cores used during each load (CPU seconds over wall seconds), without and with the settings: the
    /// server, Azurite (on the same two cores here, elsewhere in production) and this process (the clients and the
    /// HTTP receiver). Where the with/without ratio comes from.
    pub cores_get_none: Cores,
    pub cores_get_with: Cores,
    pub cores_push_none: Cores,
    pub cores_push_with: Cores,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cores {
    pub moat: f64,
    pub azurite: f64,
    pub bench: f64,
}

impl std::fmt::Display for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "moat {:.2}, azurite {:.2}, bench {:.2}",
            self.moat, self.azurite, self.bench
        )
    }
}

impl Cores {
    pub fn json(&self) -> serde_json::Value {
        let r = |v: f64| (v * 100.0).round() / 100.0;
        serde_json::json!({"moat": r(self.moat), "azurite": r(self.azurite), "bench": r(self.bench)})
    }
}

/// Microseconds of the server's CPU per request at `rate` requests a second: what a request costs whatever share
/// of the cores the machine's other work leaves the server (the warm-up of a GET load counts in the CPU time, not
/// in the rate, so this errs high by the same factor with and without settings).
pub fn cpu_us(c: Cores, rate: f64) -> f64 {
    if rate > 0.0 {
        c.moat / rate * 1e6
    } else {
        f64::NAN
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: the fields counted from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no ')'"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        Ok(f.get(i)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: too short"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are the 14th and 15th fields; the state (3rd) is the first after the name.
    Ok((tick(11)? + tick(12)?) / hz)
}

/// The three processes' CPU seconds now.
struct CpuClock {
    pids: [String; 3],
    at: Instant,
    used: [f64; 3],
}

impl CpuClock {
    fn start(moat: u32, azurite: u32) -> Result<CpuClock> {
        let pids = [moat.to_string(), azurite.to_string(), "self".to_string()];
        let mut used = [0.0; 3];
        for (u, p) in used.iter_mut().zip(&pids) {
            *u = cpu_secs(p)?;
        }
        Ok(CpuClock {
            pids,
            at: Instant::now(),
            used,
        })
    }

    fn cores(&self) -> Result<Cores> {
        let wall = self.at.elapsed().as_secs_f64();
        let mut c = [0.0; 3];
        for (i, p) in self.pids.iter().enumerate() {
            c[i] = (cpu_secs(p)? - self.used[i]) / wall;
        }
        Ok(Cores {
            moat: c[0],
            azurite: c[1],
            bench: c[2],
        })
    }
}

/// The HTTP collector: answers every request 200 as HEC does, counts the POSTs and their records (one a line).
struct Receiver {
    port: u16,
    posts: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let (posts, records) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (p, r) = (posts.clone(), records.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (p, r) = (p.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (p, r) = (p.clone(), r.clone());
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            if !body.is_empty() {
                                p.fetch_add(1, Ordering::Relaxed);
                                let n = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
                                r.fetch_add(n.count() as u64, Ordering::Relaxed);
                            }
                            Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(
                                Bytes::from_static(br#"{"text":"Success","code":0}"#),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Receiver {
            port,
            posts,
            records,
            task,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The backlogs on the admin listener's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
struct Backlog {
    /// `moat_log_consumer_backlog` of every `sink:` consumer, summed over consumers and logs.
    consumers: i64,
    /// The same, of the storage account's sink and of the partner (HTTP) sink.
    storage: i64,
    partner: i64,
    /// `moat_sink_backlog`, summed.
    gauge: i64,
}

async fn scrape(reg: &Reg, admin: u16) -> Result<Backlog> {
    let url = format!("http://127.0.0.1:{admin}/metrics");
    let resp = reg
        .send(Method::GET, &url, None, &[], BenchBody::empty())
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(super::unexpected(&Method::GET, &url, resp, "200").await);
    }
    let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
    parse_backlog(&text)
}

/// Sums the two backlog metrics in Prometheus text (labels never hold spaces here: the value is the last field).
fn parse_backlog(text: &str) -> Result<Backlog> {
    let mut b = Backlog::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = || -> Result<i64> {
            let v = line
                .rsplit(' ')
                .next()
                .ok_or_else(|| anyhow!("no value in '{line}'"))?;
            Ok(v.parse::<f64>()
                .with_context(|| format!("value of '{line}'"))? as i64)
        };
        if line.starts_with("moat_log_consumer_backlog{") && line.contains("consumer=\"sink:") {
            let v = value()?;
            b.consumers += v;
            if line.contains(":storage\"") {
                b.storage += v;
            } else if line.contains(":partner\"") {
                b.partner += v;
            }
        } else if line.starts_with("moat_sink_backlog{") {
            b.gauge += value()?;
        }
    }
    Ok(b)
}

/// Scrapes `/metrics` every second until dropped, keeping the largest sink backlog seen.
struct Sampler {
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Sampler {
    fn start(reg: Arc<Reg>, admin: u16) -> Sampler {
        let (max, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (m, s) = (max.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let b = scrape(&reg, admin).await?;
                m.fetch_max(b.consumers.max(0) as u64, Ordering::Relaxed);
                tokio::time::sleep(SCRAPE_EVERY).await;
            }
            Ok(())
        });
        Sampler { max, stop, task }
    }

    async fn finish(self) -> Result<i64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await??;
        Ok(self.max.load(Ordering::Relaxed) as i64)
    }
}

/// What one loaded phase cost and left behind.
struct Load {
    cores: Cores,
    /// The sinks' backlog: the largest seen during the load, at its end, and `moat_sink_backlog` at its end.
    backlog_max: i64,
    backlog_end: i64,
    sink_gauge_end: i64,
    /// `backlog_end` of the storage account's sink and of the HTTP one.
    end_storage: i64,
    end_partner: i64,
    /// From the load's end until every sink's cursor reached the logs' end (0 without settings).
    drain_secs: f64,
}

/// Runs loads with `/metrics` scraped and the processes' CPU time counted.
struct Probe {
    reg: Arc<Reg>,
    admin: u16,
    /// Moat's and Azurite's.
    pids: (u32, u32),
}

impl Probe {
    /// Runs `load` with the scraper running (as much in both cases), then, `with` settings, waits until the sinks
    /// have caught up: the next load starts with nothing waiting, so it is not charged for this one's records.
    async fn load<T>(
        &self,
        with: bool,
        load: impl std::future::Future<Output = Result<T>>,
    ) -> Result<(T, Load)> {
        let sampler = Sampler::start(self.reg.clone(), self.admin);
        let clock = CpuClock::start(self.pids.0, self.pids.1)?;
        let out = load.await?;
        let cores = clock.cores()?;
        // Read at once: the sampler may sleep up to a second before it sees the stop, and the sinks go on.
        let end = scrape(&self.reg, self.admin).await?;
        let seen = sampler.finish().await?;
        let mut l = Load {
            cores,
            backlog_max: seen.max(end.consumers),
            backlog_end: end.consumers,
            end_storage: end.storage,
            end_partner: end.partner,
            sink_gauge_end: end.gauge,
            drain_secs: 0.0,
        };
        if with {
            let t = Instant::now();
            loop {
                let b = scrape(&self.reg, self.admin).await?;
                if b.consumers == 0 {
                    break;
                }
                if t.elapsed() > DRAIN_LIMIT {
                    bail!(
                        "the sinks still had {} records waiting {DRAIN_LIMIT:?} after the load stopped",
                        b.consumers
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            l.drain_secs = t.elapsed().as_secs_f64();
        }
        Ok((out, l))
    }
}

/// 4 KiB pushes over 16 connections for `secs` (after a warm-up that does not count); pushes per second, and
/// how many were made in all.
async fn push_rate(reg: &Reg, tag: u64, secs: f64) -> Result<(f64, u64)> {
    let to = gc::Target::new(reg, "bench/monitor-push").await?;
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let task = tokio::spawn(gc::push(to, tag, u64::MAX, stop.clone(), done.clone()));
    tokio::time::sleep(PUSH_WARMUP).await;
    let (t, before) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (el, after) = (t.elapsed(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    task.await??;
    Ok((
        (after - before) as f64 / el.as_secs_f64(),
        done.load(Ordering::Relaxed),
    ))
}

/// Runs a `moat` subcommand on the server's data directory; its stdout.
async fn moat_cli(env: &Env, server: &Server, args: &[&str]) -> Result<String> {
    let mut cmd = env.moat_command();
    cmd.args(args)
        .arg("--data-dir")
        .arg(server.dir.join("data"))
        .stdin(Stdio::null());
    let what = format!("moat {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The two settings: their names and bodies.
fn settings(storage_id: &str, partner_id: &str) -> [(&'static str, serde_json::Value); 2] {
    let logs = serde_json::json!([{"categoryGroup": "allLogs", "enabled": true}]);
    let metrics = serde_json::json!([{"category": "AllMetrics", "enabled": true}]);
    [
        (
            "bench-archive",
            serde_json::json!({"properties": {"storageAccountId": storage_id, "logs": logs, "metrics": metrics}}),
        ),
        (
            "bench-hec",
            serde_json::json!({"properties": {"marketplacePartnerId": partner_id, "logs": logs, "metrics": metrics}}),
        ),
    ]
}

impl Arm<'_> {
    async fn diagnostic_setting(&self, name: &str, body: Option<&serde_json::Value>) -> Result<()> {
        let path = format!(
            "{}/providers/Microsoft.Insights/diagnosticSettings/{name}?{API}",
            self.registry
        );
        let (method, ok) = match body {
            Some(_) => (Method::PUT, [StatusCode::OK, StatusCode::CREATED]),
            None => (Method::DELETE, [StatusCode::OK, StatusCode::NO_CONTENT]),
        };
        let url = self.reg.url(&path);
        let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let resp = self
            .reg
            .send(
                method.clone(),
                &path,
                Some(&self.bearer),
                &[(hyper::header::CONTENT_TYPE, "application/json")],
                BenchBody::full(payload),
            )
            .await?;
        if !ok.contains(&resp.status()) {
            return Err(super::unexpected(&method, &url, resp, "200").await);
        }
        resp.into_body().collect().await?;
        Ok(())
    }
}

pub async fn run(env: &Env, sizes: &Sizes) -> Result<MonitorFig> {
    let azurite = super::transfer::start_azurite(env).await?;
    let rx = Receiver::start().await?;
    let admin = free_port()?;
    let server = env
        .start_moat_with(false, &["--admin-listen", &format!("127.0.0.1:{admin}")])
        .await?;
    let reg = Arc::new(Reg::plain(&server));
    let target: ManifestTarget = super::manifest_setup(reg.clone()).await?;

    // The destinations, registered once as an operator would.
    let key_file = server.dir.join("azurite-key");
    std::fs::write(&key_file, super::transfer::ACCOUNT_KEY)?;
    let endpoint = format!(
        "http://127.0.0.1:{}/{}/",
        azurite.port,
        super::transfer::ACCOUNT
    );
    moat_cli(
        env,
        &server,
        &[
            "storage-account",
            "add",
            "--name",
            super::transfer::ACCOUNT,
            "--blob-endpoint",
            &endpoint,
            "--key-file",
            &key_file.display().to_string(),
        ],
    )
    .await?;
    let sink = moat_cli(
        env,
        &server,
        &[
            "monitor",
            "sink",
            "add",
            "--name",
            "bench-hec",
            "--kind",
            "http",
            "--url",
            &format!("http://127.0.0.1:{}/services/collector", rx.port),
        ],
    )
    .await?;
    let sink: serde_json::Value = serde_json::from_str(sink.trim())
        .with_context(|| format!("moat monitor sink add: not JSON: {sink}"))?;
    let partner_id = sink["id"]
        .as_str()
        .ok_or_else(|| anyhow!("moat monitor sink add: no id in {sink}"))?
        .to_string();
    let arm = Arm::login(env, &server, &reg).await?;
    let sub = arm
        .registry
        .split('/')
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let storage_id = format!(
        "/subscriptions/{sub}/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/{}",
        super::transfer::ACCOUNT
    );
    let settings = settings(&storage_id, &partner_id);
    // The registry's id as the ARM API names it must be what the bench PUTs under.
    json_call(
        &reg,
        Method::GET,
        &format!(
            "{}/providers/Microsoft.Insights/diagnosticSettingsCategories?{API}",
            arm.registry
        ),
        Some(&arm.bearer),
        "",
        Bytes::new(),
        StatusCode::OK,
    )
    .await?;

    let mut fig = MonitorFig::default();
    let mut tag = 1_000u64;
    let probe = Probe {
        reg: reg.clone(),
        admin,
        pids: (server.pid(), azurite.pid()),
    };
    for round in 1..=sizes.rounds {
        // Round 1 measures without the settings first, round 2 with them first: neither always runs on a warmer
        // server.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for with in order {
            let what = if with { "2 settings" } else { "no setting" };
            if with {
                for (name, body) in &settings {
                    arm.diagnostic_setting(name, Some(body)).await?;
                }
            }
            let (get, get_load) = probe.load(with, target.measure(sizes)).await?;
            tag += 1;
            let ((push, pushes), push_load) = probe
                .load(with, push_rate(&reg, tag, sizes.manifest_secs))
                .await?;
            eprintln!(
                "  round {round}/{}, {what}: manifest GET {get:.0}/s (cores: {}; {:.0} µs of moat CPU each), 4 KiB push {push:.0}/s (cores: {}; {:.0} µs each)",
                sizes.rounds,
                get_load.cores,
                cpu_us(get_load.cores, get),
                push_load.cores,
                cpu_us(push_load.cores, push)
            );
            if with {
                for l in [&get_load, &push_load] {
                    eprintln!(
                        "    sink backlog: max {} during the load, {} at its end (Azurite {}, HTTP {}; moat_sink_backlog {}); drained in {:.1} s",
                        l.backlog_max, l.backlog_end, l.end_storage, l.end_partner, l.sink_gauge_end, l.drain_secs
                    );
                }
                eprintln!(
                    "    the HTTP receiver has {} records in {} POSTs",
                    rx.records.load(Ordering::Relaxed),
                    rx.posts.load(Ordering::Relaxed)
                );
            }
            // The cores of the round whose rate is kept (the best), so that they explain that rate.
            let (g, p, gc, pc) = if with {
                fig.requests_with += (get * sizes.manifest_secs) as u64 + pushes;
                for l in [&get_load, &push_load] {
                    fig.backlog_max = fig.backlog_max.max(l.backlog_max);
                    fig.backlog_end = fig.backlog_end.max(l.backlog_end);
                    fig.backlog_end_storage = fig.backlog_end_storage.max(l.end_storage);
                    fig.backlog_end_partner = fig.backlog_end_partner.max(l.end_partner);
                    fig.sink_gauge_end = fig.sink_gauge_end.max(l.sink_gauge_end);
                    fig.drain_secs = fig.drain_secs.max(l.drain_secs);
                }
                (
                    &mut fig.get_with,
                    &mut fig.push_with,
                    &mut fig.cores_get_with,
                    &mut fig.cores_push_with,
                )
            } else {
                (
                    &mut fig.get_none,
                    &mut fig.push_none,
                    &mut fig.cores_get_none,
                    &mut fig.cores_push_none,
                )
            };
            if get > *g {
                (*g, *gc) = (get, get_load.cores);
            }
            if push > *p {
                (*p, *pc) = (push, push_load.cores);
            }
            if with {
                for (name, _) in &settings {
                    arm.diagnostic_setting(name, None).await?;
                }
            }
        }
    }
    fig.http_records = rx.records.load(Ordering::Relaxed);
    if fig.http_records == 0 {
        bail!("the HTTP receiver got no records although the sinks' cursors reached the logs' end");
    }
    drop(arm);
    drop(azurite);
    Ok(fig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlogs_are_summed_over_sink_consumers_only() {
        let text = "# HELP moat_sink_backlog x\n# TYPE moat_sink_backlog gauge\n\
            moat_sink_backlog{sink=\"sink:a:storage:audit\"} 7\n\
            moat_sink_backlog{sink=\"sink:a:partner:audit\"} 3\n\
            moat_log_consumer_backlog{consumer=\"sink:a:storage\",log=\"audit\"} 120\n\
            moat_log_consumer_backlog{consumer=\"sink:a:partner\",log=\"activity\"} 5\n\
            moat_log_consumer_backlog{consumer=\"sink:b:partner\",log=\"audit\"} 2\n\
            moat_log_consumer_backlog{consumer=\"metrics\",log=\"audit\"} 999\n";
        let b = parse_backlog(text).unwrap();
        assert_eq!(
            (b.consumers, b.storage, b.partner, b.gauge),
            (127, 120, 7, 10)
        );
        assert!(parse_backlog("moat_sink_backlog{sink=\"s\"} x\n").is_err());
    }
}
