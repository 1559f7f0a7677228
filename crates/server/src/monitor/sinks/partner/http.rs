//! HTTP JSON sink in the Splunk HTTP Event Collector's format: a POST whose body is one `{"time", "sourcetype",
//! "source", "event"}` object per record, separated by newlines (HEC accepts concatenated events). A batch counts
//! as delivered only on a 2xx answer; HEC answers all or nothing for one request, so a failed POST is retried
//! whole and nothing arrives twice unless the answer itself was lost.

use super::super::sink::{SinkError, SinkRecord};
use crate::monitor::http_post::{post_blocking, PostError};
use moat_model::monitor::partner::hec_line;

/// Bodies above this are split into several POSTs (HEC's default `max_content_length` is 1 MB).
const MAX_BODY: usize = 512 * 1024;

pub struct HttpSink {
    agent: ureq::Agent,
    url: String,
    host: String,
    /// Custom headers and `Authorization: Splunk <token>`: sent, never logged.
    headers: Vec<(String, String)>,
}

impl HttpSink {
    pub fn new(
        agent: ureq::Agent,
        url: String,
        host: String,
        headers: Vec<(String, String)>,
    ) -> Self {
        HttpSink {
            agent,
            url,
            host,
            headers,
        }
    }

    pub fn describe(&self) -> String {
        format!("http:{}", self.host)
    }

    /// What the collector's answer means for the batch.
    fn judge(&self, status: u16, body: &str) -> Result<(), SinkError> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text: String = body.chars().take(200).collect();
        let message = format!("{} answered {status}: {}", self.describe(), text.trim());
        match status {
            // A token or URL to fix: retrying as is will not help.
            401 | 403 | 404 | 405 => Err(SinkError::Misconfigured(message)),
            _ => Err(SinkError::Unavailable {
                message,
                delivered: 0,
            }),
        }
    }

    fn post(&self, body: &[u8]) -> Result<crate::monitor::http_post::Delivered, SinkError> {
        post_blocking(&self.agent, &self.url, &self.headers, body).map_err(|e| match e {
            PostError::Refused(r) => SinkError::Misconfigured(r),
            PostError::Transport(t) => SinkError::Unavailable {
                message: format!("{}: {t}", self.describe()),
                delivered: 0,
            },
        })
    }

    /// One POST with no events. HEC answers "No data" (400) when the URL and token are right, 401/403 when the
    /// token is not; any answer other than those and 404 proves the collector is there.
    pub fn probe(&mut self) -> Result<(), SinkError> {
        let d = self.post(b"")?;
        match d.status {
            401 | 403 | 404 | 405 => self.judge(d.status, &d.body),
            _ => Ok(()),
        }
    }

    pub fn deliver(&mut self, records: &[SinkRecord]) -> Result<(), SinkError> {
        let mut delivered = 0;
        let mut body = Vec::new();
        let mut in_body = 0;
        for (i, r) in records.iter().enumerate() {
            let line = hec_line(&r.category, &r.time, &r.text);
            if !body.is_empty() && body.len() + line.len() + 1 > MAX_BODY {
                self.send(&body, delivered)?;
                delivered += in_body;
                body.clear();
                in_body = 0;
            }
            if !body.is_empty() {
                body.push(b'\n');
            }
            body.extend_from_slice(&line);
            in_body += 1;
            debug_assert!(delivered + in_body == i + 1);
        }
        if !body.is_empty() {
            self.send(&body, delivered)?;
        }
        Ok(())
    }

    /// POSTs one body; on failure says how many records before it arrived.
    fn send(&self, body: &[u8], delivered: usize) -> Result<(), SinkError> {
        let result = self.post(body).and_then(|d| self.judge(d.status, &d.body));
        match result {
            Err(SinkError::Unavailable { message, .. }) => {
                Err(SinkError::Unavailable { message, delivered })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn record(n: i64, pad: usize) -> SinkRecord {
        SinkRecord::new(
            format!("s/audit/{n}"),
            "ContainerRegistryRepositoryEvents".into(),
            "1970-01-01T00:00:10Z".into(),
            serde_json::json!({"recordId": format!("s/audit/{n}"), "pad": "x".repeat(pad)}),
        )
    }

    /// Answers each request with the next status; returns the requests' heads and bodies.
    fn collector(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<(String, String)>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/services/collector", l.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            for status in statuses {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let (head, len) = loop {
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        buf.drain(..p + 4);
                        break (head, len);
                    }
                };
                while buf.len() < len {
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                got.push((head, String::from_utf8(buf).unwrap()));
            }
            got
        });
        (url, t)
    }

    fn sink(url: String) -> HttpSink {
        let agent = ureq::AgentBuilder::new().build();
        HttpSink::new(
            agent,
            url,
            "127.0.0.1".into(),
            vec![("Authorization".into(), "Splunk tok".into())],
        )
    }

    #[test]
    fn a_batch_is_newline_separated_hec_events_with_the_token() {
        let (url, t) = collector(vec![200]);
        sink(url).deliver(&[record(1, 0), record(2, 0)]).unwrap();
        let got = t.join().unwrap();
        let (head, body) = &got[0];
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: splunk tok"),
            "{head}"
        );
        let lines: Vec<serde_json::Value> = body
            .split('\n')
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"]["recordId"], "s/audit/2");
        assert_eq!(
            lines[0]["sourcetype"],
            "moat:ContainerRegistryRepositoryEvents"
        );
        assert_eq!(lines[0]["time"], 10.0);
    }

    #[test]
    fn big_batches_split_and_a_failure_says_how_many_arrived() {
        // Three records of ~300 KiB: two POSTs fit one each... the second fails with 503.
        let (url, t) = collector(vec![200, 503]);
        let r = sink(url).deliver(&[record(1, 300_000), record(2, 300_000), record(3, 10)]);
        match r {
            Err(SinkError::Unavailable { delivered, .. }) => assert_eq!(delivered, 1),
            other => panic!("{other:?}"),
        }
        let got = t.join().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.split('\n').count(), 2);
    }

    #[test]
    fn a_refused_token_is_misconfigured() {
        let (url, t) = collector(vec![403, 400]);
        let mut s = sink(url);
        assert!(matches!(
            s.deliver(&[record(1, 0)]),
            Err(SinkError::Misconfigured(_))
        ));
        // HEC's "No data" answer to the probe's empty POST proves the collector is there.
        s.probe().unwrap();
        t.join().unwrap();
    }
}
