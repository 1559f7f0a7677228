//! One JSON POST to a URL a user configured (an ACR webhook, an action group's webhook receiver, an HTTP log
//! sink), through the outbound connector, bounded in time, without following redirects to places nobody
//! configured. Retrying and remembering what was delivered is the caller's (each keeps its own durable state).

use std::time::Duration;

/// How long one delivery may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How much of a receiver's answer is kept (`listEvents` shows it; a hostile receiver cannot fill memory).
const MAX_RESPONSE: u64 = 16 * 1024;

/// What the receiver answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// At most 16 KiB of the body, lossily decoded.
    pub body: String,
}

impl Delivered {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The outbound connector refused the address (an own listener, a denied range).
    #[error("refused by the outbound rules: {0}")]
    Refused(String),
    /// Could not connect, timed out, TLS failed, … (the URL's query is never in the text: it may hold a secret).
    #[error("{0}")]
    Transport(String),
}

/// POSTs `body` (already serialized JSON) to `url` with `headers` (custom headers; `Content-Type` defaults to
/// `application/json` unless one of them sets it). Blocking: call from `spawn_blocking` or use [`post`].
pub fn post_blocking(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Delivered, PostError> {
    let mut req = agent.post(url).timeout(TIMEOUT);
    let mut has_type = false;
    for (k, v) in headers {
        has_type |= k.eq_ignore_ascii_case("content-type");
        req = req.set(k, v);
    }
    if !has_type {
        req = req.set("Content-Type", "application/json");
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            if let Some(r) = moat_outbound::refusal(&t) {
                return Err(PostError::Refused(r.to_string()));
            }
            return Err(PostError::Transport(describe(&t)));
        }
    };
    let status = resp.status();
    let reason = resp.status_text().to_string();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut buf = Vec::new();
    use std::io::Read;
    let _ = resp.into_reader().take(MAX_RESPONSE).read_to_end(&mut buf);
    Ok(Delivered {
        status,
        reason,
        headers,
        body: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// [`post_blocking`] on the blocking pool.
pub async fn post(
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<Delivered, PostError> {
    tokio::task::spawn_blocking(move || post_blocking(&agent, &url, &headers, &body))
        .await
        .unwrap_or_else(|e| Err(PostError::Transport(format!("delivery task failed: {e}"))))
}

/// A transport error without the request URL ureq puts at its front (its query may carry a SAS or a token).
fn describe(t: &ureq::Transport) -> String {
    let kind = t.kind().to_string();
    match t.message() {
        Some(m) => format!("{kind}: {m}"),
        None => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn posts_json_and_keeps_the_answer_bounded() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let big = "x".repeat(100_000);
            let _ = write!(
                s,
                "HTTP/1.1 202 Accepted\r\nX-Seen: yes\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            );
            req
        });
        let agent = ureq::AgentBuilder::new().build();
        let d = post_blocking(
            &agent,
            &format!("http://{addr}/hook?sig=secret"),
            &[("X-Custom".into(), "1".into())],
            br#"{"a":1}"#,
        )
        .unwrap();
        let req = t.join().unwrap();
        assert!(req.starts_with("POST /hook?sig=secret"));
        assert!(req
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert!(req.to_ascii_lowercase().contains("x-custom: 1"));
        assert_eq!(d.status, 202);
        assert!(d.is_success());
        assert_eq!(d.body.len() as u64, MAX_RESPONSE);
        assert!(d
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-seen") && v == "yes"));
    }

    #[test]
    fn a_dead_receiver_is_a_transport_error_without_the_query() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let agent = ureq::AgentBuilder::new().build();
        let e =
            post_blocking(&agent, &format!("http://{addr}/h?sig=secret"), &[], b"{}").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
