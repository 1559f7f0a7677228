//! Workloads 1, 2 and 4: the large blob pushed and pulled, 4 KiB blobs pushed and pulled by 16 clients, and the
//! server's RSS during a push of several GiB; with the data they use, made once and not timed.

use super::*;

// Data prepared once (not timed)

pub struct Data {
    /// Random bytes of the large blob; the RSS push streams it `RSS_REPEAT` times.
    pub large: Bytes,
    pub large_digest: String,
    pub rss_digest: String,
    pub small: Vec<(Bytes, String)>,
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::SeedableRng;
    let mut v = vec![0u8; n];
    // Two generators in parallel (2 cores), each on one half.
    let (a, b) = v.split_at_mut(n / 2);
    std::thread::scope(|s| {
        s.spawn(|| rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(a));
        s.spawn(|| rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15).fill_bytes(b));
    });
    v
}

// Workloads. Each returns figures for one server; `Server`s are dropped (killed) when a workload ends.

#[derive(Default, Clone, Copy)]
pub struct LargeFig {
    pub push: f64,
    pub pull: f64,
}

pub async fn large_blob(reg: &Reg, d: &Data, sizes: &Sizes, repo: &str) -> Result<LargeFig> {
    let auth = reg.authorize(repo).await?;
    let t = Instant::now();
    reg.push_post_put(
        repo,
        auth.as_ref(),
        BenchBody::repeat(d.large.clone(), d.large.len() as u64),
        &d.large_digest,
    )
    .await?;
    let push = mib_s(d.large.len() as u64, t.elapsed());
    let mut pull: f64 = 0.0;
    for _ in 0..sizes.pull_repeats {
        let t = Instant::now();
        let n = reg.pull(repo, auth.as_ref(), &d.large_digest).await?;
        let el = t.elapsed();
        if n != d.large.len() as u64 {
            bail!(
                "GET /v2/{repo}/blobs/{}: {n} bytes, wanted {}",
                d.large_digest,
                d.large.len()
            );
        }
        pull = pull.max(mib_s(n, el));
    }
    Ok(LargeFig { push, pull })
}

#[derive(Default, Clone, Copy)]
pub struct SmallFig {
    pub push: f64,
    pub pull: f64,
}

/// Workload 2 over the raw client: each connection takes the next blob; a push is `POST ?digest=` with the body
/// (plus `PUT <Location>&digest=` when the server answers 202), a pull a `GET` whose length is checked.
pub async fn small_blobs(reg: Arc<Reg>, d: Arc<Data>, sizes: &Sizes) -> Result<SmallFig> {
    let repo = "bench/small";
    let auth = Arc::new(auth_line(reg.authorize(repo).await?.as_ref())?);
    let n = d.small.len();
    let run = |pull: bool| {
        let (reg, d, auth) = (reg.clone(), d.clone(), auth.clone());
        async move {
            let conns = raw_conns(&reg, sizes.concurrency).await?;
            let next = Arc::new(AtomicUsize::new(0));
            let t = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    let (reg, d, next, auth) = (reg.clone(), d.clone(), next.clone(), auth.clone());
                    tokio::spawn(async move {
                        let host = reg.host.as_str();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= d.small.len() {
                                return Ok::<_, anyhow::Error>(());
                            }
                            let (bytes, digest) = &d.small[i];
                            c.out.clear();
                            if pull {
                                write!(c.out, "GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")?;
                                c.send_out().await?;
                                let h = raw_expect(&mut c, |_| format!("GET /v2/{repo}/blobs/{digest}"), &[200]).await?;
                                let got = c.skip_body(&h).await?;
                                if got != bytes.len() as u64 {
                                    bail!("GET /v2/{repo}/blobs/{digest}: {got} bytes, wanted {}", bytes.len());
                                }
                                continue;
                            }
                            write!(
                                c.out,
                                "POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                                bytes.len()
                            )?;
                            c.out.extend_from_slice(bytes);
                            c.send_out().await?;
                            let h = raw_expect(&mut c, |_| format!("POST /v2/{repo}/blobs/uploads/?digest={digest}"), &[201, 202]).await?;
                            c.skip_body(&h).await?;
                            if h.status == 202 {
                                // No monolithic POST: PUT the bytes to the upload's Location.
                                let path = raw::same_host_path(&c.location, host)?;
                                let sep = if path.contains('?') { '&' } else { '?' };
                                c.out.clear();
                                write!(
                                    c.out,
                                    "PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                                    bytes.len()
                                )?;
                                c.out.extend_from_slice(bytes);
                                c.send_out().await?;
                                let h = raw_expect(&mut c, |_| format!("PUT <the 202's Location>{sep}digest={digest}"), &[201]).await?;
                                c.skip_body(&h).await?;
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            Ok::<_, anyhow::Error>(n as f64 / t.elapsed().as_secs_f64())
        }
    };
    let push = run(false).await?;
    let pull = run(true).await?;
    Ok(SmallFig { push, pull })
}

#[derive(Default, Clone, Copy)]
pub struct RssFig {
    pub hwm_mib: f64,
    pub sampled_peak_mib: f64,
    pub push: f64,
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn rss_push(reg: &Reg, pid: u32, d: &Data) -> Result<RssFig> {
    let repo = "bench/rss";
    let auth = reg.authorize(repo).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(k) = proc_status_kib(pid, "VmRSS:") {
                    peak = peak.max(k);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let total = d.large.len() as u64 * RSS_REPEAT;
    let t = Instant::now();
    let r = reg
        .push_post_put(
            repo,
            auth.as_ref(),
            BenchBody::repeat(d.large.clone(), total),
            &d.rss_digest,
        )
        .await;
    let el = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler.join().map_err(|_| anyhow!("sampler panicked"))?;
    r?;
    let hwm =
        proc_status_kib(pid, "VmHWM:").ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(RssFig {
        hwm_mib: hwm as f64 / 1024.0,
        sampled_peak_mib: sampled as f64 / 1024.0,
        push: mib_s(total, el),
    })
}
