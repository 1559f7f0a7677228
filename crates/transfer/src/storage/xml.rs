//! Just enough XML for the Blob service's answers (List Blobs, Get Block List, error bodies): elements found by
//! name, their text unescaped. The answers are flat, machine-written documents; a full parser would add a crate
//! for three element shapes.

/// The inner text of every `<tag …>…</tag>` (and `""` for `<tag/>`), in document order, at any depth. Elements of
/// the same name do not nest in the documents read here.
pub fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(first) = after.chars().next() else {
            break;
        };
        if !matches!(first, '>' | ' ' | '/' | '\t' | '\r' | '\n') {
            rest = after; // `<NameX`: another element
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        if after[..gt].ends_with('/') {
            out.push("");
            rest = &after[gt + 1..];
            continue;
        }
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

/// The first element's text, unescaped.
pub fn text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|s| unescape(s))
}

/// The direct children `(name, text)` of an element's inner XML whose children hold only text (`<Metadata>`).
pub fn children(inner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while let Some(i) = rest.find('<') {
        let after = &rest[i + 1..];
        let Some(gt) = after.find('>') else { break };
        let head = &after[..gt];
        if head.starts_with('/') || head.starts_with('?') || head.starts_with('!') {
            rest = &after[gt + 1..];
            continue;
        }
        let name = head
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        if head.ends_with('/') {
            out.push((name.to_string(), String::new()));
            rest = &after[gt + 1..];
            continue;
        }
        let body = &after[gt + 1..];
        let close = format!("</{name}>");
        let Some(end) = body.find(&close) else { break };
        out.push((name.to_string(), unescape(&body[..end])));
        rest = &body[end + close.len()..];
    }
    out
}

pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_blobs_shape() {
        let doc = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="t"><Prefix/><Blobs><Blob><Name>a &amp; b.tar</Name><Properties><Content-Length>12</Content-Length><Content-MD5/></Properties><Metadata><category>acr-transfer-blob</category><x/></Metadata></Blob><Blob><Name Encoded="false">c</Name></Blob></Blobs><NextMarker>m&#x31;</NextMarker></EnumerationResults>"#;
        let blobs = elements(doc, "Blob");
        assert_eq!(blobs.len(), 2);
        assert_eq!(text(blobs[0], "Name").unwrap(), "a & b.tar");
        assert_eq!(text(blobs[1], "Name").unwrap(), "c");
        assert_eq!(text(blobs[0], "Content-MD5").unwrap(), "");
        assert_eq!(text(blobs[0], "Content-Length").unwrap(), "12");
        assert_eq!(
            children(elements(blobs[0], "Metadata")[0]),
            vec![
                ("category".to_string(), "acr-transfer-blob".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(text(doc, "NextMarker").unwrap(), "m1");
        assert_eq!(text(doc, "Prefix").unwrap(), "");
        assert!(text(doc, "Missing").is_none());
    }
}
