//! The `moat audit` table. Stored text may carry what a client sent, so every cell is escaped before it is
//! measured, and measured by its display width (a CJK character takes two columns, a combining mark none), so
//! the columns stay aligned whatever the rows hold. A cell wider than its column's bound is cut with `…`; the
//! last column is never cut (`-o json` gives every field exactly).

use moat_model::text::escape;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

pub const HEADER: [&str; 11] = [
    "TIME",
    "LOG",
    "RESULT",
    "OPERATION",
    "REGISTRY",
    "RESOURCE",
    "CALLER",
    "CALLER IP",
    "ENDPOINT",
    "STATUS",
    "DETAIL",
];

/// Columns before the last, which is free.
const FIXED: usize = HEADER.len() - 1;

/// The widest a column grows before its cells are cut (an IPv6 address, an ARM operation, a resource id fit).
const MAX: [usize; FIXED] = [32, 8, 9, 72, 50, 100, 60, 45, 60, 16];

/// The widths a `--follow` table starts with, so that rows arriving later usually fit without a cut.
const FOLLOW: [usize; FIXED] = [27, 8, 9, 44, 16, 40, 36, 15, 24, 6];

pub type Cells = [String; HEADER.len()];

/// The width of each column but the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    widths: [usize; FIXED],
}

impl Layout {
    /// Just wide enough for the header and `rows` (within the bounds).
    pub fn fit<'a>(rows: impl IntoIterator<Item = &'a Cells>) -> Layout {
        let mut widths = [0; FIXED];
        for (w, h) in widths.iter_mut().zip(HEADER) {
            *w = h.width();
        }
        for row in rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(escape(&row[i]).width()).min(MAX[i]);
            }
        }
        Layout { widths }
    }

    /// For a stream: at least the usual widths, since rows not printed yet cannot be measured.
    pub fn following<'a>(rows: impl IntoIterator<Item = &'a Cells>) -> Layout {
        let mut l = Layout::fit(rows);
        for (w, usual) in l.widths.iter_mut().zip(FOLLOW) {
            *w = (*w).max(usual);
        }
        l
    }

    pub fn header(&self) -> String {
        self.line(&HEADER.map(String::from))
    }

    /// One line: every cell escaped, so no stored text can end the line or drive the terminal.
    pub fn line(&self, cells: &Cells) -> String {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let cell = escape(cell);
            match self.widths.get(i) {
                Some(w) => {
                    let cell = cut(&cell, *w);
                    let pad = w.saturating_sub(cell.width());
                    line.push_str(&cell);
                    line.extend(std::iter::repeat_n(' ', pad + 1));
                }
                None => line.push_str(&cell),
            }
        }
        line.trim_end().to_string()
    }
}

/// `s` cut to at most `width` columns, ending in `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: [&str; 11]) -> Cells {
        v.map(String::from)
    }

    /// The display column where each cell after the first starts.
    fn starts(layout: &Layout) -> Vec<usize> {
        let mut at = 0;
        layout
            .widths
            .iter()
            .map(|w| {
                at += w + 1;
                at
            })
            .collect()
    }

    #[test]
    fn columns_stay_aligned_with_wide_zero_width_and_escaped_text() {
        let rows = [
            cells([
                "t",
                "data",
                "Success",
                "Push",
                "reg",
                "team/app",
                "admin",
                "127.0.0.1",
                "public",
                "201",
                "v1",
            ]),
            cells([
                "t",
                "data",
                "Denied",
                "Push",
                "reg",
                "团队/应用",
                "ü\u{301}ser",
                "::1",
                "privateEndpoint/pe",
                "403",
                "x",
            ]),
            cells([
                "t",
                "data",
                "Failure",
                "Pull",
                "reg",
                "a\nb\x1b[2J",
                "\u{202e}evil",
                "-",
                "public",
                "401",
                "y",
            ]),
        ];
        let layout = Layout::fit(&rows);
        let header = layout.header();
        let lines: Vec<String> = rows.iter().map(|r| layout.line(r)).collect();
        for line in std::iter::once(&header).chain(&lines) {
            assert_eq!(line.lines().count(), 1, "{line:?}");
            // Each column boundary falls at the same display column on every line: the text before it is
            // exactly that wide.
            for start in starts(&layout) {
                let mut used = 0;
                let prefix: String = line
                    .chars()
                    .take_while(|c| {
                        used += c.width().unwrap_or(0);
                        used <= start
                    })
                    .collect();
                assert_eq!(prefix.width(), start, "{line:?}");
                assert!(prefix.ends_with(' '), "{line:?} at {start}");
            }
        }
        assert!(lines[2].contains("a\\nb\\x1b[2J"), "{}", lines[2]);
        assert!(lines[2].contains("\\u{202e}evil"), "{}", lines[2]);
    }

    #[test]
    fn an_overlong_cell_is_cut_to_its_column() {
        let long = "r".repeat(500);
        let row = cells([
            "t", "data", "Success", "Push", "reg", &long, "admin", "ip", "public", "201", "tail",
        ]);
        let layout = Layout::fit([&row]);
        let line = layout.line(&row);
        assert!(
            line.contains(&format!("{}…", "r".repeat(MAX[5] - 1))),
            "{line}"
        );
        assert!(line.ends_with("tail"), "{line}");
        assert_eq!(cut("团队应用", 5), "团队…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
