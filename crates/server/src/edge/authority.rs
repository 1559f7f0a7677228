//! The one authority a request names, which decides the registry it is for. RFC 9112 §3.2.2: a request target
//! in absolute form carries the authority, and the `Host` header is ignored; HTTP/2 carries it in `:authority`,
//! which hyper puts in the URI the same way. Otherwise the `Host` header, of which there must be exactly one
//! (RFC 9112 §3.2: more than one, or an invalid value, is a 400): two `Host` lines read by different code would
//! let one request be routed to one registry and checked against another.

use axum::http::uri::Authority;
use axum::http::{HeaderValue, Uri};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request carries {0} Host headers: send exactly one")]
    DuplicateHost(usize),
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
}

/// `host[:port]` without user information, as routing compares it.
fn normalized(a: &Authority) -> String {
    match a.port() {
        Some(p) => format!("{}:{}", a.host(), p.as_str()),
        None => a.host().to_string(),
    }
}

/// The request's authority: the target's, else the single `Host` header's; `None` when there is neither.
pub fn authority(uri: &Uri, hosts: &[&HeaderValue]) -> Result<Option<String>, AuthorityError> {
    if hosts.len() > 1 {
        return Err(AuthorityError::DuplicateHost(hosts.len()));
    }
    if let Some(a) = uri.authority() {
        return Ok(Some(normalized(a)));
    }
    // An empty Host is what RFC 9112 has a client send when the target has no authority.
    let Some(host) = hosts.first().filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let a: Authority = host
        .to_str()
        .ok()
        .and_then(|h| h.parse().ok())
        .ok_or(AuthorityError::InvalidHost)?;
    // A Host header names a host and a numeric port only: not `user@host`, not `host:name`.
    let n = normalized(&a);
    if n != a.as_str() {
        return Err(AuthorityError::InvalidHost);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(uri: &str, hosts: &[&str]) -> Result<Option<String>, AuthorityError> {
        let values: Vec<HeaderValue> = hosts.iter().map(|h| h.parse().unwrap()).collect();
        let refs: Vec<&HeaderValue> = values.iter().collect();
        authority(&uri.parse().unwrap(), &refs)
    }

    #[test]
    fn the_target_authority_wins_over_host() {
        let some = |s: &str| Ok(Some(s.to_string()));
        assert_eq!(of("/v2/", &["a.example:5000"]), some("a.example:5000"));
        assert_eq!(
            of("https://b.example:5000/v2/", &["a.example:5000"]),
            some("b.example:5000")
        );
        assert_eq!(of("http://b.example/v2/", &[]), some("b.example"));
        assert_eq!(
            of("http://u:p@b.example:1/v2/", &["a.example"]),
            some("b.example:1")
        );
        assert_eq!(of("http://[::1]:5000/v2/", &[]), some("[::1]:5000"));
        assert_eq!(of("/v2/", &["[::1]:5000"]), some("[::1]:5000"));
        assert_eq!(of("/v2/", &[]), Ok(None));
        assert_eq!(of("/v2/", &[""]), Ok(None));
    }

    #[test]
    fn duplicate_or_invalid_host_headers_are_refused() {
        assert_eq!(
            of("/v2/", &["a.example", "b.example"]),
            Err(AuthorityError::DuplicateHost(2))
        );
        assert_eq!(
            of("/v2/", &["a.example", "a.example"]),
            Err(AuthorityError::DuplicateHost(2)),
            "even when they agree"
        );
        assert_eq!(
            of("https://b.example/v2/", &["a.example", "b.example"]),
            Err(AuthorityError::DuplicateHost(2)),
            "even with an absolute target"
        );
        for bad in ["a b", "a.example/x", "u@a.example", "a.example:port"] {
            assert_eq!(
                of("/v2/", &[bad]),
                Err(AuthorityError::InvalidHost),
                "{bad:?}"
            );
        }
    }
}
