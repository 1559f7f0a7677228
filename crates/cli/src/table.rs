//! A small aligned table for listings: every cell escaped (stored text is printed inert), columns padded by
//! display width.

use unicode_width::UnicodeWidthStr;

/// Prints `header` and `rows`, each column as wide as its widest cell, the last one unpadded.
pub fn print<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.clone().map(|c| moat_model::text::escape(&c)))
        .collect();
    let mut widths = header.map(UnicodeWidthStr::width);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.width());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < N {
                out.push_str(&" ".repeat(widths[i] - c.width() + 2));
            }
        }
        out
    };
    crate::emit(format_args!("{}", line(header)));
    for r in &rows {
        crate::emit(format_args!("{}", line(r.each_ref().map(String::as_str))));
    }
}
