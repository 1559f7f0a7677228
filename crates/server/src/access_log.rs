//! The access log (`moat serve --access-log`): one line per request, written when its response has been sent
//! (or the connection dropped), to the `moat::access` tracing target: the listener, the address it arrived at, the
//! client (the socket, or what a trusted proxy says), method, path, status, bytes sent and duration.
//!
//! The query string is logged with the value of every key not known to be harmless replaced by `***`: a
//! data-endpoint link's signature (`s`), a token or password a client put in a URL, a key this version does not
//! know yet. Bodies and headers are never logged.

use crate::config::ServeConfig;
use crate::endpoints::{ConnInfo, ListenerKind};
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The tracing target of access lines (`MOAT_LOG=moat::access=info` is what `--access-log` turns on).
pub const TARGET: &str = "moat::access";

/// Query keys whose values are logged as sent: paging, api versions, OCI and token-request parameters, and a
/// data-endpoint link's repository, digest and expiry (never its signature).
const SHOWN: &[&str] = &[
    "api-version",
    "n",
    "last",
    "orderby",
    "digest",
    "mount",
    "from",
    "artifactType",
    "service",
    "scope",
    "r",
    "d",
    "e",
];

/// `path?query` with every value of a key not in [`SHOWN`] replaced by `***`, bounded and escaped for a log line.
pub fn logged_target(path: &str, query: Option<&str>) -> String {
    let mut out = String::from(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if SHOWN.contains(&k) => format!("{k}={v}"),
                Some((k, _)) => format!("{k}=***"),
                // A bare item may itself be a secret (`?<token>`).
                None if SHOWN.contains(&pair) => pair.to_string(),
                None => "***".to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    moat_model::text::stored(&out)
}

/// What the accept loop knows of a request when it arrives.
pub struct Entry {
    listener: &'static str,
    local: Option<SocketAddr>,
    client: IpAddr,
    method: String,
    target: String,
    started: Instant,
}

impl Entry {
    pub fn begin<B>(
        req: &hyper::Request<B>,
        info: &ConnInfo,
        local: Option<SocketAddr>,
        config: &ServeConfig,
    ) -> Entry {
        let peer = info.peer.ip();
        Entry {
            listener: match info.kind {
                ListenerKind::Public => "public",
                ListenerKind::PrivateEndpoint(_) => "privateEndpoint",
            },
            local,
            // As the edge decides it; a request the edge refuses for its forwarding headers is the socket's.
            client: crate::edge::client_address(config, req.headers(), peer).unwrap_or(peer),
            method: req.method().to_string(),
            target: logged_target(req.uri().path(), req.uri().query()),
            started: Instant::now(),
        }
    }

    /// The response, whose body writes the line when it is done.
    pub fn finish(self, resp: axum::response::Response) -> axum::response::Response {
        let status = resp.status().as_u16();
        resp.map(|inner| {
            Body::new(Logged {
                inner,
                entry: Some(self),
                status,
                bytes: 0,
            })
        })
    }

    fn write(self, status: u16, bytes: u64) {
        let local = self.local.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            target: TARGET,
            listener = %self.listener,
            local = %local,
            client = %self.client,
            method = %self.method,
            path = %self.target,
            status,
            bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "request"
        );
    }
}

/// A response body that counts what it sends and logs its request when dropped (sent, or the client gone).
struct Logged {
    inner: Body,
    entry: Option<Entry>,
    status: u16,
    bytes: u64,
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(data) = f.data_ref() {
                this.bytes += data.len() as u64;
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.write(self.status, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::logged_target;

    #[test]
    fn query_values_are_hidden_unless_known_harmless() {
        assert_eq!(
            logged_target("/", Some("r=team%2Fapp&d=sha256:1&e=17&s=SIGNATURE")),
            "/?r=team%2Fapp&d=sha256:1&e=17&s=***"
        );
        assert_eq!(
            logged_target(
                "/x",
                Some("sig=a&se=b&token=c&code=d&password=e&Password=f&client_secret=g&unknown=h&flag")
            ),
            "/x?sig=***&se=***&token=***&code=***&password=***&Password=***&client_secret=***&unknown=***&***"
        );
        assert_eq!(
            logged_target("/subscriptions/s", Some("api-version=2025-11-01")),
            "/subscriptions/s?api-version=2025-11-01"
        );
        assert_eq!(
            logged_target(
                "/oauth2/token",
                Some("service=a&scope=repository:x:pull&account=admin")
            ),
            "/oauth2/token?service=a&scope=repository:x:pull&account=***"
        );
        assert_eq!(logged_target("/v2/", None), "/v2/");
        assert_eq!(logged_target("/v2/", Some("")), "/v2/");
    }
}
