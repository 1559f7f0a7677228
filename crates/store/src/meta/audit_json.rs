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

/// A string that has nothing JSON escapes (a time or uuid this code formatted).
fn plain(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

fn int(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => {
            use std::io::Write;
            write!(buf, "{v}").expect("writing to a Vec");
        }
        None => buf.extend_from_slice(b"null"),
    }
}

/// A dictionary string (or null) from its JSON text made once per id.
fn id(buf: &mut Vec<u8>, res: &Resolver<'_>, id: i64) {
    buf.extend_from_slice(res.get_json(id));
}

/// A string the record requires: an id of 0 (none) reads as empty text, as the event's field does.
fn req(buf: &mut Vec<u8>, res: &Resolver<'_>, i: i64) {
    if i == 0 {
        buf.extend_from_slice(b"\"\"");
    } else {
        id(buf, res, i);
    }
}

/// Appends one JSON line (with its newline).
pub(crate) fn write_json(buf: &mut Vec<u8>, res: &Resolver<'_>, r: &RawRow, p: &Packed) {
    buf.push(b'{');
    key(buf, true, "TimeGenerated");
    match &r.time {
        StoredTime::Micros(us) => {
            // Digits and `-:.TZ`: nothing to escape.
            let mut t = String::with_capacity(27);
            push_time(&mut t, *us);
            plain(buf, &t);
        }
        StoredTime::Text(t) => string(buf, Some(t)),
    }
    key(buf, false, "Category");
    req(buf, res, p.category);
    key(buf, false, "OperationName");
    req(buf, res, p.operation);
    key(buf, false, "Registry");
    req(buf, res, r.reg);
    key(buf, false, "LoginServer");
    req(buf, res, p.login_server);
    key(buf, false, "Repository");
    id(buf, res, p.repository);
    key(buf, false, "Tag");
    id(buf, res, p.tag);
    key(buf, false, "Digest");
    id(buf, res, p.digest);
    key(buf, false, "MediaType");
    id(buf, res, p.media_type);
    key(buf, false, "Size");
    int(buf, p.size);
    key(buf, false, "Identity");
    id(buf, res, r.ident.unwrap_or(0));
    key(buf, false, "CallerIpAddress");
    id(buf, res, p.ip);
    key(buf, false, "UserAgent");
    id(buf, res, p.user_agent);
    key(buf, false, "DurationMs");
    int(buf, p.duration_ms);
    key(buf, false, "ResultType");
    req(buf, res, p.result_type);
    key(buf, false, "ResultDescription");
    req(buf, res, p.result_description);
    key(buf, false, "CorrelationId");
    match p.correlation_uuid {
        Some(b) => plain(buf, &uuid_text(&b)),
        None => id(buf, res, p.correlation_id),
    }
    key(buf, false, "Endpoint");
    id(buf, res, p.endpoint);
    buf.extend_from_slice(b"}\n");
}
