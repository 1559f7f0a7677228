//! Text that came from a client and will be stored and shown to a person. A stored audit or activity field may
//! carry anything a client sent (a token header, a User-Agent, a tag as given), and a terminal that prints it
//! obeys every control character in it: a newline forges a row, an escape sequence clears the screen. So every
//! free-text field is stored bounded and with its control characters written out (`\n`, `\x1b`, `\u{202e}`),
//! which keeps what the client sent readable without letting it act on the reader's terminal.

/// Most bytes one stored free-text field keeps (after escaping); longer text ends with [`TRUNCATED`].
pub const MAX_FIELD_BYTES: usize = 1024;
/// What ends a field cut at [`MAX_FIELD_BYTES`].
pub const TRUNCATED: &str = "…";

/// Characters a terminal or a bidi-aware viewer acts on instead of showing: C0 and C1 controls, DEL, the
/// Unicode line and paragraph separators and the bidirectional overrides and isolates (which reorder a line).
pub fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every dangerous character written out as an escape: `\n`, `\r`, `\t`, `\xNN` below U+0100,
/// `\u{NNNN}` above. A backslash stays as it is: the output is for reading, not for parsing back.
pub fn escape(text: &str) -> String {
    if !text.chars().any(is_dangerous) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_dangerous(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_dangerous(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max` bytes on a character boundary, marked with [`TRUNCATED`] when cut.
pub fn bound(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &text[..end])
}

/// The form in which a client-supplied field is stored: escaped, then bounded.
pub fn stored(text: &str) -> String {
    // The common case (short, plain text) is one copy: every pull's audit event passes through here.
    if text.len() <= MAX_FIELD_BYTES && !text.chars().any(is_dangerous) {
        return text.to_string();
    }
    bound(&escape(text), MAX_FIELD_BYTES)
}

/// [`stored`] for every string inside a JSON value (keys too), so structured details are as safe as text.
pub fn stored_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(stored(s)),
        Value::Array(items) => Value::Array(items.iter().map(stored_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (stored(k), stored_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forged_rows_and_escapes_are_written_out() {
        assert_eq!(
            escape("ES256\n2026 Success Pull\x1b[2J"),
            "ES256\\n2026 Success Pull\\x1b[2J"
        );
        assert_eq!(escape("a\u{202e}b\u{9b}c\x7f"), "a\\u{202e}b\\x9bc\\x7f");
        assert_eq!(escape("plain ünïcode \\n"), "plain ünïcode \\n");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let s = "é".repeat(2000);
        let b = stored(&s);
        assert!(b.len() <= MAX_FIELD_BYTES);
        assert!(b.ends_with(TRUNCATED));
        assert_eq!(stored("short"), "short");
    }

    proptest! {
        #[test]
        fn stored_text_is_bounded_and_inert(s in any::<String>()) {
            let out = stored(&s);
            prop_assert!(out.len() <= MAX_FIELD_BYTES);
            prop_assert!(!out.chars().any(is_dangerous));
            if s.len() <= MAX_FIELD_BYTES && !s.chars().any(is_dangerous) {
                prop_assert_eq!(out, s);
            }
        }
    }
}
