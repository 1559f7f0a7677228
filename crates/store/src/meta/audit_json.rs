//! An audit record's JSON line written straight from its stored form, byte for byte what
//! `serde_json::to_string(&AuditEvent)` gives (ACR's column names), without building the event: the export path.

use super::audit_read::{Packed, RawRow, Resolver, StoredTime};
use moat_model::trail::codec::{push_time, uuid_text};

fn key(buf: &mut Vec<u8>, first: bool, name: &str) {
    if !first {
        buf.push(b',');
    }
    buf.push(b'"');
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\":");
}

fn string(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        // serde_json's own escaping, so the text is exactly what the event's serialisation gives.
        Some(s) => serde_json::to_writer(&mut *buf, s).expect("writing to a Vec"),
        None => buf.extend_from_slice(b"null"),
    }
}

fn int(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => {
            let mut b = itoa_buf(v);
            buf.append(&mut b);
        }
        None => buf.extend_from_slice(b"null"),
    }
}

fn itoa_buf(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Appends one JSON line (with its newline).
pub(crate) fn write_json(buf: &mut Vec<u8>, res: &Resolver<'_>, r: &RawRow, p: &Packed) {
    let req = |id| Some(res.get(id).unwrap_or(""));
    buf.push(b'{');
    key(buf, true, "TimeGenerated");
    match &r.time {
        StoredTime::Micros(us) => {
            let mut t = String::with_capacity(27);
            push_time(&mut t, *us);
            string(buf, Some(&t));
        }
        StoredTime::Text(t) => string(buf, Some(t)),
    }
    key(buf, false, "Category");
    string(buf, req(p.category));
    key(buf, false, "OperationName");
    string(buf, req(p.operation));
    key(buf, false, "Registry");
    string(buf, req(r.reg));
    key(buf, false, "LoginServer");
    string(buf, req(p.login_server));
    key(buf, false, "Repository");
    string(buf, res.get(p.repository));
    key(buf, false, "Tag");
    string(buf, res.get(p.tag));
    key(buf, false, "Digest");
    string(buf, res.get(p.digest));
    key(buf, false, "MediaType");
    string(buf, res.get(p.media_type));
    key(buf, false, "Size");
    int(buf, p.size);
    key(buf, false, "Identity");
    string(buf, r.ident.and_then(|i| res.get(i)));
    key(buf, false, "CallerIpAddress");
    string(buf, res.get(p.ip));
    key(buf, false, "UserAgent");
    string(buf, res.get(p.user_agent));
    key(buf, false, "DurationMs");
    int(buf, p.duration_ms);
    key(buf, false, "ResultType");
    string(buf, req(p.result_type));
    key(buf, false, "ResultDescription");
    string(buf, req(p.result_description));
    key(buf, false, "CorrelationId");
    match p.correlation_uuid {
        Some(b) => string(buf, Some(&uuid_text(&b))),
        None => string(buf, res.get(p.correlation_id)),
    }
    key(buf, false, "Endpoint");
    string(buf, res.get(p.endpoint));
    buf.extend_from_slice(b"}\n");
}
