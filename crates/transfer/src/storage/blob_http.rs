//! One Blob service request: URL, authorization (SAS query or Shared Key signature), and the answer's status
//! turned into a [`StorageError`] that says what to do. Every request goes out through the outbound connector's
//! agent.

use super::shared_key::{authorization, Signed};
use super::{xml, Credential, StorageError};
use base64::Engine;
use moat_model::storage_uri::percent_encode_path;
use std::io::Read;
use std::time::Duration;

/// The Blob service version spoken (Azurite 3.35 accepts it; `--skipApiVersionCheck` is not needed for it).
pub const VERSION: &str = "2021-08-06";

pub(crate) enum Auth {
    /// The SAS token's query string, without `?`.
    Sas(String),
    SharedKey {
        account: String,
        key: Vec<u8>,
    },
    Anonymous,
}

pub(crate) struct Client {
    pub agent: ureq::Agent,
    /// `scheme://host[:port][/account]`
    pub endpoint: String,
    pub container: String,
    pub auth: Auth,
}

/// RFC 1123 date, as `x-ms-date` wants it.
pub fn http_date(t: time::OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an RFC 1123 date (`Mon, 07 Dec 2026 15:49:31 GMT`).
pub fn parse_http_date(s: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, hms, _] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u8 + 1;
    let mut t = hms.split(':').map(|x| x.parse::<u8>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    let date = time::Date::from_calendar_date(
        year.parse().ok()?,
        time::Month::try_from(month).ok()?,
        day.parse().ok()?,
    )
    .ok()?;
    let dt = date.with_hms(h, m, sec).ok()?.assume_utc();
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(dt.unix_timestamp()).ok()?))
}

/// A transport failure without its URL: ureq's own text starts with the full URL, SAS token included, and this
/// text ends up in a run's `pipelineRunErrorMessage`.
fn transport_why(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        s.push_str(": ");
        s.push_str(&src.to_string());
    }
    redact_sig(&s)
}

/// Hides every `sig=` value (a SAS signature) in a text.
pub fn redact_sig(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        rest = &rest[i + 4..];
        let end = rest
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Auth {
    pub fn from_credential(cred: Credential, account: &str) -> Result<Auth, StorageError> {
        match cred {
            Credential::None => Ok(Auth::Anonymous),
            Credential::Sas(s) => {
                let q = s.trim();
                let q = q.split_once('?').map(|(_, q)| q).unwrap_or(q);
                if !q.contains("sig=") {
                    return Err(StorageError::Invalid(
                        "the SAS token has no 'sig=' parameter: store the token as `az storage container generate-sas` prints it".into(),
                    ));
                }
                Ok(Auth::Sas(q.trim_start_matches('?').to_string()))
            }
            Credential::SharedKey { account: a, key } => {
                if !a.eq_ignore_ascii_case(account) {
                    return Err(StorageError::Invalid(format!(
                        "the account key registered is for account '{a}', not '{account}'"
                    )));
                }
                let key = base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| {
                        StorageError::Invalid(format!(
                            "the account key for '{a}' is not base64 (as `az storage account keys list` prints it)"
                        ))
                    })?;
                Ok(Auth::SharedKey {
                    account: a.to_ascii_lowercase(),
                    key,
                })
            }
        }
    }
}

/// A request in the making.
pub(crate) struct Req<'a> {
    pub method: &'a str,
    /// A blob name (`None`: the container).
    pub blob: Option<&'a str>,
    pub query: Vec<(&'a str, String)>,
    pub headers: Vec<(&'a str, String)>,
}

impl<'a> Req<'a> {
    pub fn new(method: &'a str, blob: Option<&'a str>) -> Req<'a> {
        Req {
            method,
            blob,
            query: vec![],
            headers: vec![],
        }
    }

    pub fn q(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }

    pub fn h(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

impl Client {
    /// The URL of the container or one blob, without a query: what error messages name.
    pub fn url(&self, blob: Option<&str>) -> String {
        match blob {
            Some(b) => format!(
                "{}/{}/{}",
                self.endpoint,
                self.container,
                percent_encode_path(b)
            ),
            None => format!("{}/{}", self.endpoint, self.container),
        }
    }

    /// Sends `req` with `body` and returns the answer when it is a 2xx.
    pub fn send(&self, req: Req, body: &[u8]) -> Result<ureq::Response, StorageError> {
        let url = self.url(req.blob);
        let mut full = url.clone();
        let mut sep = '?';
        for (k, v) in &req.query {
            full.push(sep);
            full.push_str(k);
            full.push('=');
            full.push_str(&query_encode(v));
            sep = '&';
        }
        if let Auth::Sas(sas) = &self.auth {
            full.push(sep);
            full.push_str(sas);
        }
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        headers.push(("x-ms-version".into(), VERSION.into()));
        headers.push((
            "x-ms-date".into(),
            http_date(time::OffsetDateTime::now_utc()),
        ));
        let mut r = self.agent.request(req.method, &full);
        for (k, v) in &headers {
            r = r.set(k, v);
        }
        if let Auth::SharedKey { account, key } = &self.auth {
            let path_start = url
                .find("://")
                .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
                .unwrap_or(url.len());
            let query: Vec<(String, String)> = req
                .query
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let signed = Signed {
                method: req.method,
                path: &url[path_start..],
                query: &query,
                headers: &headers,
                content_length: body.len() as u64,
            };
            r = r.set("Authorization", &authorization(account, key, &signed));
        }
        let sent = if body.is_empty() && matches!(req.method, "GET" | "HEAD" | "DELETE") {
            r.call()
        } else {
            r.send_bytes(body)
        };
        match sent {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                Err(self.status_error(&url, status, resp, req.blob.is_none()))
            }
            Err(ureq::Error::Transport(t)) => Err(match moat_outbound::refusal(&t) {
                Some(r) => StorageError::Refused(r),
                None => StorageError::Unreachable {
                    uri: url,
                    why: transport_why(&t),
                },
            }),
        }
    }

    fn status_error(
        &self,
        url: &str,
        status: u16,
        resp: ureq::Response,
        container_op: bool,
    ) -> StorageError {
        let header_code = resp.header("x-ms-error-code").map(str::to_string);
        let mut body = String::new();
        let _ = resp.into_reader().take(16 << 10).read_to_string(&mut body);
        let code = header_code.or_else(|| xml::text(&body, "Code"));
        let message = xml::text(&body, "Message")
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|| moat_model::text::bound(body.trim(), 300));
        let message = redact_sig(&message);
        match (status, code.as_deref()) {
            (401 | 403, _) => StorageError::CredentialRefused {
                uri: self.url(None),
                status,
                code,
            },
            (404, Some("ContainerNotFound")) => StorageError::NotFound {
                uri: self.url(None),
                container: true,
            },
            (404, _) => StorageError::NotFound {
                uri: url.to_string(),
                container: container_op,
            },
            _ => StorageError::Status {
                uri: url.to_string(),
                status,
                code,
                message,
            },
        }
    }

    /// Sends with retries for what may pass (network, 5xx, throttling): 4 attempts, backing off.
    pub fn send_retrying<'r>(
        &self,
        make: impl Fn() -> Req<'r>,
        body: &[u8],
    ) -> Result<ureq::Response, StorageError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.send(make(), body) {
                Err(e) if e.is_transient() && attempt < 4 => {
                    tracing::debug!(error = %e, attempt, "storage request failed; retrying");
                    std::thread::sleep(delay);
                    delay *= 3;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_signatures_are_redacted() {
        assert_eq!(
            redact_sig("http://h/c?sv=1&sig=abc%2F&se=2 and sig=x"),
            "http://h/c?sv=1&sig=REDACTED&se=2 and sig=REDACTED"
        );
    }

    #[test]
    fn dates_round_trip() {
        let t = time::macros::datetime!(2026-12-07 15:49:31 UTC);
        let s = http_date(t);
        assert_eq!(s, "Mon, 07 Dec 2026 15:49:31 GMT");
        let back = parse_http_date(&s).unwrap();
        assert_eq!(
            back.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
            t.unix_timestamp()
        );
        assert!(parse_http_date("yesterday").is_none());
    }

    #[test]
    fn sas_tokens_in_every_spelling() {
        for s in [
            "?sv=1&sig=x",
            "sv=1&sig=x",
            "https://a.blob.core.windows.net/c?sv=1&sig=x",
        ] {
            match Auth::from_credential(Credential::Sas(s.into()), "a").unwrap() {
                Auth::Sas(q) => assert_eq!(q, "sv=1&sig=x"),
                _ => unreachable!(),
            }
        }
        assert!(Auth::from_credential(Credential::Sas("sv=1".into()), "a").is_err());
        let e = Auth::from_credential(
            Credential::SharedKey {
                account: "other".into(),
                key: "AAAA".into(),
            },
            "acct",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("'other'"), "{e}");
    }
}
