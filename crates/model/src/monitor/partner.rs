//! SIEM sinks' pure parts: which sinks exist and what makes one valid (`moat monitor sink add`), and the bytes a
//! record becomes on each wire — an RFC 5424 syslog message in RFC 5425 octet-counting framing, and a Splunk HEC
//! style event line. No I/O: the server connects and writes.

use serde::{Deserialize, Serialize};

/// ARM namespace of the sinks' ids: a diagnostic setting names one in `marketplacePartnerId`.
pub const PROVIDER: &str = "Moat.Monitor/partnerSinks";

/// The SD-ID of the structured data every syslog message carries. 32473 is the private enterprise number RFC 5612
/// reserves for documentation and examples; Moat has none of its own.
pub const SD_ID: &str = "moat@32473";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Syslog,
    Http,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Syslog => "syslog",
            SinkKind::Http => "http",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerSinkError {
    #[error(
        "unknown sink kind '{0}': use syslog (RFC 5424 over TLS) or http (JSON, Splunk HEC style)"
    )]
    UnknownKind(String),
    #[error("'{0}' is not a sink name: 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit")]
    Name(String),
    #[error("'{0}' is not a syslog address: give host:port (e.g. siem.example.com:6514)")]
    Address(String),
    #[error("'{url}' is not a collector URL: {why}")]
    Url { url: String, why: &'static str },
    #[error(
        "'{0}' is not a syslog facility: a number 0-23 or a name (local0 … local7, user, auth, …)"
    )]
    Facility(String),
    #[error("'{0}' is not a syslog APP-NAME: 1 to 48 printable ASCII characters, no spaces")]
    AppName(String),
    #[error("'{0}' is not an HTTP header name")]
    HeaderName(String),
}

impl std::str::FromStr for SinkKind {
    type Err = PartnerSinkError;
    fn from_str(s: &str) -> Result<SinkKind, PartnerSinkError> {
        match s.to_ascii_lowercase().as_str() {
            "syslog" => Ok(SinkKind::Syslog),
            "http" => Ok(SinkKind::Http),
            _ => Err(PartnerSinkError::UnknownKind(s.to_string())),
        }
    }
}

/// A sink's name: the last segment of its id.
pub fn valid_name(name: &str) -> Result<(), PartnerSinkError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(PartnerSinkError::Name(name.to_string()))
    }
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Moat.Monitor/partnerSinks/{name}`.
pub fn sink_id(subscription_id: &str, resource_group: &str, name: &str) -> String {
    format!("/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/{PROVIDER}/{name}")
}

/// Whether a host (name or address, IPv6 bare or bracketed) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| crate::outbound::canonical(ip).is_loopback())
}

/// Splits `host:port` (`[v6]:port` for IPv6), both parts required.
pub fn parse_address(address: &str) -> Result<(String, u16), PartnerSinkError> {
    let bad = || PartnerSinkError::Address(address.to_string());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() {
        return Err(bad());
    }
    let bare = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        inner.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        inner
    } else {
        if host.contains(':') {
            return Err(bad());
        }
        host
    };
    let name_ok = bare.parse::<std::net::IpAddr>().is_ok()
        || bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !name_ok {
        return Err(bad());
    }
    Ok((bare.to_string(), port))
}

/// The parts of an HTTP collector's URL a sink needs: `https://host[:port]/path`, or `http://` on loopback only
/// (as for storage: a token or a record is never sent in clear across a network). No user info, no fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorUrl {
    pub https: bool,
    /// `host:port` (`[v6]:port`), the port explicit.
    pub netloc: String,
    pub host: String,
}

pub fn parse_collector_url(url: &str) -> Result<CollectorUrl, PartnerSinkError> {
    let bad = |why| PartnerSinkError::Url {
        url: url.to_string(),
        why,
    };
    let (https, rest) = if let Some(r) = strip_prefix_ci(url, "https://") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(url, "http://") {
        (false, r)
    } else {
        return Err(bad(
            "it must start with https:// (or http:// to a loopback address)",
        ));
    };
    if url.contains('#') {
        return Err(bad("a fragment is not sent to a server"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL would be stored in clear: use --header or --token-secret",
        ));
    }
    if authority.is_empty() {
        return Err(bad("it names no host"));
    }
    let default_port = if https { 443 } else { 80 };
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:{default_port}")
    } else {
        authority.to_string()
    };
    let (host, port) =
        parse_address(&with_port).map_err(|_| bad("its host or port is not valid"))?;
    if !https && !is_loopback_host(&host) {
        return Err(bad(
            "plain http is accepted only to a loopback address: use https",
        ));
    }
    let netloc = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(CollectorUrl {
        https,
        netloc,
        host,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// A syslog facility: a number 0-23 or its RFC 5424 name.
pub fn parse_facility(s: &str) -> Result<u8, PartnerSinkError> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    if let Ok(n) = s.parse::<u8>() {
        if n < 24 {
            return Ok(n);
        }
    }
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .map(|p| p as u8)
        .ok_or_else(|| PartnerSinkError::Facility(s.to_string()))
}

pub fn valid_app_name(s: &str) -> Result<(), PartnerSinkError> {
    if (1..=48).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b)) {
        Ok(())
    } else {
        Err(PartnerSinkError::AppName(s.to_string()))
    }
}

/// An HTTP header name (RFC 9110 token).
pub fn valid_header_name(s: &str) -> Result<(), PartnerSinkError> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !s.is_empty() && s.chars().all(tchar) {
        Ok(())
    } else {
        Err(PartnerSinkError::HeaderName(s.to_string()))
    }
}

/// What a syslog message says about the server that sent it.
#[derive(Clone, Debug)]
pub struct SyslogOrigin<'a> {
    pub facility: u8,
    /// HOSTNAME: this server's host name.
    pub hostname: &'a str,
    pub app_name: &'a str,
    /// PROCID: the server's process id.
    pub proc_id: u32,
}

/// One record as the syslog sink sends it.
pub struct SyslogRecord<'a> {
    pub record_id: &'a str,
    pub category: &'a str,
    /// RFC 3339, UTC.
    pub time: &'a str,
    pub json: &'a serde_json::Value,
}

/// MSGID (at most 32 printable characters): the kind of record, so a collector can route on it without parsing
/// MSG. Category names are longer than 32 (`ContainerRegistryRepositoryEvents` is 33).
fn msg_id(category: &str) -> String {
    let short = match category {
        "ContainerRegistryRepositoryEvents" => "RepositoryEvent",
        "ContainerRegistryLoginEvents" => "LoginEvent",
        "Administrative" => "Administrative",
        "AllMetrics" => "Metric",
        "MoatAuditTrail" => "AuditTrail",
        other => other,
    };
    let s: String = short
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable ASCII without spaces, at most `max`, else the NILVALUE.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// TIMESTAMP: RFC 3339 with at most 6 fraction digits (RFC 5424 §6.2.3); anything else becomes the NILVALUE.
fn timestamp(t: &str) -> String {
    if epoch_seconds(t).is_none() {
        return "-".into();
    }
    match t.split_once('.') {
        Some((head, tail)) => {
            let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
            let zone = &tail[digits.len()..];
            let kept = &digits[..digits.len().min(6)];
            if kept.is_empty() {
                format!("{head}{zone}")
            } else {
                format!("{head}.{kept}{zone}")
            }
        }
        None => t.to_string(),
    }
}

/// Severity from the record: a failed or denied operation is a warning (4), anything else informational (6).
fn severity(json: &serde_json::Value) -> u8 {
    let failed = |k: &str| {
        json.get(k).and_then(|v| v.as_str()).is_some_and(|s| {
            let s = s.to_ascii_lowercase();
            s.starts_with("fail") || s.contains("denied") || s == "error"
        })
    };
    if failed("resultType") || failed("level") {
        4
    } else {
        6
    }
}

/// The RFC 5424 message for one record: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [moat@32473
/// recordId="…" category="…"] JSON`.
pub fn syslog_message(origin: &SyslogOrigin, r: &SyslogRecord) -> String {
    let pri = u16::from(origin.facility) * 8 + u16::from(severity(r.json));
    format!(
        "<{pri}>1 {} {} {} {} {} [{SD_ID} recordId=\"{}\" category=\"{}\"] {}",
        timestamp(r.time),
        header_field(origin.hostname, 255),
        header_field(origin.app_name, 48),
        origin.proc_id,
        msg_id(r.category),
        sd_escape(r.record_id),
        sd_escape(r.category),
        r.json,
    )
}

/// RFC 5425 octet-counting framing: `MSG-LEN SP SYSLOG-MSG`, the length in bytes.
pub fn octet_frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// One Splunk HEC event line: `{"time": <epoch seconds>, "sourcetype": "moat:<category>", "event": {record}}`.
/// HEC accepts several such objects concatenated in one POST; they are separated by a newline.
pub fn hec_event(category: &str, time: &str, json: &serde_json::Value) -> serde_json::Value {
    let mut e = serde_json::json!({
        "sourcetype": format!("moat:{category}"),
        "source": "moat",
        "event": json,
    });
    if let Some(t) = epoch_seconds(time) {
        e["time"] = serde_json::json!(t);
    }
    e
}

/// [`hec_event`]'s text, byte for byte, from the record's text already serialized (`text` is `json`'s
/// `to_string()`): the delivery path, which does not copy the record's tree to wrap it.
pub fn hec_line(category: &str, time: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + category.len() + 80);
    // serde_json's maps are sorted by key: event, source, sourcetype, time.
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b",\"source\":\"moat\",\"sourcetype\":");
    serde_json::to_writer(&mut out, &format!("moat:{category}")).expect("writing to a Vec");
    if let Some(t) = epoch_seconds(time) {
        out.extend_from_slice(b",\"time\":");
        serde_json::to_writer(&mut out, &serde_json::json!(t)).expect("writing to a Vec");
    }
    out.push(b'}');
    out
}

/// Seconds since 1970 of an RFC 3339 time (`2026-12-07T18:53:06.123456Z`, or with a numeric offset), with the
/// fraction; `None` if it is not one.
pub fn epoch_seconds(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s - offset) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_names_and_ids() {
        assert_eq!("Syslog".parse::<SinkKind>().unwrap(), SinkKind::Syslog);
        assert!(matches!(
            "kafka".parse::<SinkKind>(),
            Err(PartnerSinkError::UnknownKind(_))
        ));
        assert!(valid_name("siem-1.prod_a").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            sink_id("s", "moat", "siem"),
            "/subscriptions/s/resourceGroups/moat/providers/Moat.Monitor/partnerSinks/siem"
        );
    }

    #[test]
    fn addresses_need_a_host_and_a_port() {
        assert_eq!(
            parse_address("siem.example.com:6514").unwrap(),
            ("siem.example.com".into(), 6514)
        );
        assert_eq!(parse_address("[::1]:6514").unwrap(), ("::1".into(), 6514));
        for bad in [
            "siem",
            "siem:",
            ":6514",
            "siem:0",
            "siem:70000",
            "::1:6514",
            "a b:1",
            "[x]:1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn collector_urls_are_https_except_on_loopback() {
        let u = parse_collector_url("https://splunk.example.com/services/collector").unwrap();
        assert_eq!(u.netloc, "splunk.example.com:443");
        assert!(u.https);
        assert_eq!(
            parse_collector_url("http://127.0.0.1:8088/x")
                .unwrap()
                .netloc,
            "127.0.0.1:8088"
        );
        assert_eq!(
            parse_collector_url("http://[::1]:8088/").unwrap().netloc,
            "[::1]:8088"
        );
        assert!(parse_collector_url("HTTP://localhost/services/collector").is_ok());
        for bad in [
            "http://splunk.example.com/services/collector",
            "http://10.0.0.1:8088/",
            "ftp://x/",
            "https://user:pw@x/",
            "https:///x",
            "https://x/#f",
            "splunk.example.com",
        ] {
            assert!(parse_collector_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn facilities_and_app_names() {
        assert_eq!(parse_facility("local0").unwrap(), 16);
        assert_eq!(parse_facility("13").unwrap(), 13);
        assert!(parse_facility("24").is_err());
        assert!(parse_facility("nope").is_err());
        assert!(valid_app_name("moat").is_ok());
        assert!(valid_app_name("mo at").is_err());
        assert!(valid_header_name("X-Api-Key").is_ok());
        assert!(valid_header_name("X Api").is_err());
    }

    #[test]
    fn syslog_messages_follow_rfc5424_and_frame_by_octets() {
        let json = serde_json::json!({"recordId": "s/audit/7", "resultType": "Failed", "x": "é"});
        let origin = SyslogOrigin {
            facility: 16,
            hostname: "moat host",
            app_name: "moat",
            proc_id: 42,
        };
        let m = syslog_message(
            &origin,
            &SyslogRecord {
                record_id: "s/audit/7",
                category: "ContainerRegistryRepositoryEvents",
                time: "2026-12-07T18:53:06.1234567Z",
                json: &json,
            },
        );
        assert_eq!(
            m,
            format!(
                "<132>1 2026-12-07T18:53:06.123456Z moathost moat 42 RepositoryEvent [moat@32473 recordId=\"s/audit/7\" category=\"ContainerRegistryRepositoryEvents\"] {json}"
            )
        );
        let f = octet_frame(&m);
        let (len, rest) = std::str::from_utf8(&f).unwrap().split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_ne!(
            rest.len(),
            rest.chars().count(),
            "the length counts bytes, not characters"
        );
        let plain = syslog_message(
            &origin,
            &SyslogRecord {
                record_id: "a\"]\\",
                category: "Administrative",
                time: "garbage",
                json: &serde_json::json!({}),
            },
        );
        assert!(
            plain.starts_with(
                "<134>1 - moathost moat 42 Administrative [moat@32473 recordId=\"a\\\"\\]\\\\\""
            ),
            "{plain}"
        );
    }

    #[test]
    fn hec_lines_are_the_events_text() {
        let json = serde_json::json!({"recordId": "s/audit/7", "resultType": "Failed", "x": "é\"\n", "n": 1.5});
        for (cat, time) in [
            (
                "ContainerRegistryLoginEvents",
                "2026-12-07T18:53:06.123456Z",
            ),
            ("Weird \"cat\"", "1970-01-01T00:00:10Z"),
            ("AllMetrics", "not a time"),
        ] {
            let want = serde_json::to_vec(&hec_event(cat, time, &json)).unwrap();
            let got = hec_line(cat, time, &json.to_string());
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }

    #[test]
    fn hec_events_carry_the_time_and_a_sourcetype() {
        let e = hec_event(
            "ContainerRegistryLoginEvents",
            "1970-01-02T00:00:01.5Z",
            &serde_json::json!({"a": 1}),
        );
        assert_eq!(e["time"], 86401.5);
        assert_eq!(e["sourcetype"], "moat:ContainerRegistryLoginEvents");
        assert_eq!(e["event"]["a"], 1);
        assert_eq!(epoch_seconds("2026-12-07T18:53:06Z"), Some(1_796_669_586.0));
        assert_eq!(
            epoch_seconds("2026-12-07T19:53:06+01:00"),
            Some(1_796_669_586.0)
        );
        assert_eq!(epoch_seconds("2026-13-07T18:53:06Z"), None);
    }
}
