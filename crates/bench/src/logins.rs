//! Workload 8, Moat's alone: a login flood. 1,000 token requests at once, every other one with a wrong password
//! (each a different one, so nothing coalesces), each on its own connection from one of eight loopback addresses
//! (under the per-address connection cap). Measured: the server's peak RSS (VmHWM) and the latency of the right
//! logins, with the default limits (the failed-login throttle on) and with the throttle off (every wrong password
//! then costs a full argon2 check: this is the bound on concurrent checks itself). The old server ran one argon2
//! check (~19 MiB) per request at once: 1,000 logins took it to 20.8 GB.

use anyhow::{Context, Result};
use base64::Engine as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const LOGINS: usize = 1000;
const SOURCES: u8 = 8;

#[derive(Clone, Copy, Debug, Default)]
pub struct LoginFig {
    pub peak_rss_mib: f64,
    pub good_p50_ms: f64,
    pub good_p99_ms: f64,
    /// Right passwords answered 200.
    pub good_ok: usize,
    /// Wrong passwords answered 401 or 429.
    pub bad_refused: usize,
    /// Of those, 429 (throttled without a check).
    pub bad_throttled: usize,
    pub secs: f64,
}

async fn one(port: u16, source: IpAddr, request: Vec<u8>) -> Result<(u16, Duration)> {
    let started = Instant::now();
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut s = socket
        .connect(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port))
        .await
        .context("connecting")?;
    s.write_all(&request).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, started.elapsed()))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Floods the Moat at `port` (admin password `password`) and reads its peak RSS afterwards.
pub async fn login_flood(port: u16, pid: u32, password: &str) -> Result<LoginFig> {
    let request = |pw: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{pw}"));
        format!(
            "GET /oauth2/token?service=127.0.0.1:{port}&scope=repository:bench/login:pull HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..LOGINS)
        .map(|i| {
            let right = i % 2 == 0;
            let req = if right {
                request(password)
            } else {
                request(&format!("wrong-{i}"))
            };
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES as usize) as u8));
            (right, tokio::spawn(one(port, source, req)))
        })
        .collect();
    let mut fig = LoginFig::default();
    let mut good = Vec::new();
    for (right, t) in tasks {
        let (status, took) = t.await??;
        match (right, status) {
            (true, 200) => {
                fig.good_ok += 1;
                good.push(took);
            }
            (true, other) => anyhow::bail!("a right password was answered {other}"),
            (false, 401) => fig.bad_refused += 1,
            (false, 429) => {
                fig.bad_refused += 1;
                fig.bad_throttled += 1;
            }
            (false, other) => anyhow::bail!("a wrong password was answered {other}"),
        }
    }
    fig.secs = started.elapsed().as_secs_f64();
    good.sort();
    fig.good_p50_ms = percentile(&good, 0.50);
    fig.good_p99_ms = percentile(&good, 0.99);
    fig.peak_rss_mib =
        crate::proc_status_kib(pid, "VmHWM").context("reading VmHWM")? as f64 / 1024.0;
    Ok(fig)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(super::percentile(&v, 0.99), 99.0);
        assert_eq!(super::percentile(&v, 0.50), 50.0);
        assert!(super::percentile(&[], 0.5).is_nan());
    }
}
