//! The bytes a record is chained by: its fields as resolved values (strings, not dictionary ids), each tagged and
//! length-prefixed so that no two different records share bytes (`"ab" + "c"` is not `"a" + "bc"`). Editing a
//! dictionary string therefore breaks every record that uses it, as it changes what each of them says.

/// A stored time: microseconds since the epoch, or the text of a time that did not parse (kept as written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeValue<'a> {
    Micros(i64),
    Text(&'a str),
}

/// Writes canonical bytes into a reusable buffer (a verifier hashes millions of records).
#[derive(Default)]
pub struct AuditCanonical {
    buf: Vec<u8>,
}

impl AuditCanonical {
    /// Starts a record (clears the buffer).
    pub fn start(&mut self) -> &mut Self {
        self.buf.clear();
        self
    }

    pub fn time(&mut self, t: TimeValue<'_>) -> &mut Self {
        match t {
            TimeValue::Micros(v) => self.int(Some(v)),
            TimeValue::Text(s) => self.str(Some(s)),
        }
    }

    pub fn str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.buf.push(0),
            Some(s) => {
                self.buf.push(1);
                self.buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
        self
    }

    pub fn int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            None => self.buf.push(0),
            Some(i) => {
                self.buf.push(2);
                self.buf.extend_from_slice(&i.to_be_bytes());
            }
        }
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_run_into_each_other() {
        let mut a = AuditCanonical::default();
        let mut b = AuditCanonical::default();
        a.start().str(Some("ab")).str(Some("c"));
        b.start().str(Some("a")).str(Some("bc"));
        assert_ne!(a.bytes(), b.bytes());
        a.start().str(None).str(Some(""));
        b.start().str(Some("")).str(None);
        assert_ne!(a.bytes(), b.bytes());
        a.start().time(TimeValue::Micros(5));
        b.start().int(Some(5));
        assert_eq!(a.bytes(), b.bytes());
        b.start().str(Some("5"));
        assert_ne!(a.bytes(), b.bytes());
    }
}
