//! The few places where SQLite and PostgreSQL need different SQL text, side by side. Every other statement in
//! the store is one text for both dialects: `$N` parameters, `ON CONFLICT … DO NOTHING / DO UPDATE`,
//! `COALESCE`, `RETURNING`, `lower(x) = lower($n)` for case-insensitive names. Keep dialect branches here only.

/// The SQL dialect of the database a [`super::MetadataStore`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect a connection speaks (for code that has a connection but not the store).
    pub(crate) fn of(conn: &super::Conn) -> Dialect {
        if conn.backend_name() == "PostgreSQL" {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    /// The current time in unix seconds (a REAL), the unit the collector's and soft delete's tables keep.
    pub(crate) fn now_secs(self) -> &'static str {
        match self {
            Dialect::Sqlite => "((julianday('now') - 2440587.5) * 86400.0)",
            Dialect::Postgres => "(extract(epoch from clock_timestamp())::double precision)",
        }
    }

    /// A subquery (one column, `value`) over the strings of the JSON array bound as parameter `$n`.
    pub(crate) fn json_strings(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each(${n})"),
            Dialect::Postgres => {
                format!("SELECT value FROM jsonb_array_elements_text(${n}::jsonb)")
            }
        }
    }

    /// A subquery over the `[registry_id, repository, digest]` triples of the JSON array bound as `$n`.
    pub(crate) fn json_triples(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!(
                "SELECT json_extract(value, '$[0]') AS registry_id, json_extract(value, '$[1]') AS repository,
                        json_extract(value, '$[2]') AS digest FROM json_each(${n})"
            ),
            Dialect::Postgres => format!(
                "SELECT value->>0 AS registry_id, value->>1 AS repository, value->>2 AS digest
                 FROM jsonb_array_elements(${n}::jsonb)"
            ),
        }
    }

    /// `col` equals parameter `$n` in any case, in the form the column's case-insensitive index serves
    /// (SQLite: a `COLLATE NOCASE` index; PostgreSQL: an index on `lower(col)`).
    pub(crate) fn eq_nocase(self, col: &str, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("{col} = ${n} COLLATE NOCASE"),
            Dialect::Postgres => format!("lower({col}) = lower(${n})"),
        }
    }

    /// The last value handed out by the key sequence of `table` (an append-only log's `seq`), 0 if none:
    /// what a reader takes as the log's head without scanning it.
    pub(crate) fn last_seq(self, table: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0)"
            ),
            // PostgreSQL: the logs take explicit seqs, so an identity's sequence does not move. The newest row,
            // or the newest chain head of the log where pruning has removed every row (heads are never pruned).
            Dialect::Postgres => {
                let log = if table == "activity_events" {
                    "activity"
                } else {
                    "audit"
                };
                format!(
                    "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM {table}),
                        (SELECT COALESCE(MAX(last_seq), 0) FROM trail_heads WHERE log = '{log}'))"
                )
            }
        }
    }

    /// Whether a table named `$1` exists.
    pub(crate) fn table_exists(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
            Dialect::Postgres => {
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
            }
        }
    }
}

/// `rows` parenthesised groups of `cols` parameters, `($1,…,$cols),(…)`: the `VALUES` of a multi-row insert.
pub(crate) fn value_rows(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 4);
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push(',');
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// `$from, $from+1, …` (`count` parameters): the list of an `IN (…)`.
pub(crate) fn param_list(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Numbers the `?` placeholders of dynamically built SQL `$1…$N` in the order they appear (outside quoted
/// literals), so a statement assembled from optional pieces stays one text for both dialects. Statements
/// written in one piece carry `$N` in their text instead.
pub(crate) fn numbered(sql: &str) -> String {
    debug_assert!(
        !sql.contains('$') || !sql.bytes().any(|b| b == b'?'),
        "mixing `?` and `$N` in one statement: {sql}"
    );
    let mut out = String::with_capacity(sql.len() + 16);
    let (mut n, mut quoted) = (0, false);
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn numbers_placeholders_in_order_and_skips_quoted_text() {
        assert_eq!(
            numbered("SELECT 1 FROM t WHERE a = ? AND b = '?' AND c IN (?,?)"),
            "SELECT 1 FROM t WHERE a = $1 AND b = '?' AND c IN ($2,$3)"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
        assert_eq!(super::value_rows(2, 2), "($1,$2),($3,$4)");
        assert_eq!(super::param_list(3, 2), "$3,$4");
    }
}
