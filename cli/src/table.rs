//! Plain aligned text tables: a header row, then one line per row, columns
//! separated by two spaces. No borders or colours, so output stays friendly
//! to `grep`, `awk` and narrow terminals.

const GAP: &str = "  ";

#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells render empty and extra cells are dropped,
    /// so every line has exactly as many columns as the header.
    pub fn push(&mut self, mut row: Vec<String>) {
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Width of each column: its widest cell, header included.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        widths
    }

    /// The header and all rows, each line ending in a newline.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = line(&self.headers, &widths);
        out.push_str(&self.render_rows(&widths));
        out
    }

    /// Only the rows, padded to `widths`; used to keep appending lines under a
    /// header printed earlier (`audit tail --follow`). Cells wider than their
    /// column push the rest of that line right rather than being cut.
    pub fn render_rows(&self, widths: &[usize]) -> String {
        self.rows.iter().map(|row| line(row, widths)).collect()
    }

    /// The header line alone, padded to `widths`.
    pub fn render_header(&self, widths: &[usize]) -> String {
        line(&self.headers, widths)
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn line(cells: &[String], widths: &[usize]) -> String {
    let mut out = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push_str(GAP);
        }
        out.push_str(cell);
        // No padding after the last column: no trailing spaces.
        if i < last {
            let w = widths.get(i).copied().unwrap_or(0);
            out.extend(std::iter::repeat_n(' ', w.saturating_sub(width(cell))));
        }
    }
    out.push('\n');
    out
}

/// Shortens `s` to at most `max` characters, ending in `…` when cut, and
/// folds newlines and runs of whitespace into single spaces so one value
/// never breaks a table line.
pub fn truncate(s: &str, max: usize) -> String {
    let folded = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if width(&folded) <= max {
        return folded;
    }
    let mut out: String = folded.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_to_the_widest_cell() {
        let mut t = Table::new(&["NAME", "KIND", "AGENT"]);
        t.push(vec!["orders-db".into(), "postgres".into(), "a1".into()]);
        t.push(vec!["x".into(), "ssh".into(), "agent-two".into()]);
        assert_eq!(
            t.render(),
            "NAME       KIND      AGENT\n\
             orders-db  postgres  a1\n\
             x          ssh       agent-two\n"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let t = Table::new(&["A", "B"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A  B\n");
    }

    #[test]
    fn short_and_long_rows_are_normalised() {
        let mut t = Table::new(&["A", "B", "C"]);
        t.push(vec!["1".into()]);
        t.push(vec!["1".into(), "2".into(), "3".into(), "4".into()]);
        assert_eq!(t.render(), "A  B  C\n1     \n1  2  3\n");
    }

    #[test]
    fn counts_characters_not_bytes() {
        let mut t = Table::new(&["WHO", "X"]);
        t.push(vec!["zoë".into(), "1".into()]);
        t.push(vec!["bob".into(), "2".into()]);
        assert_eq!(t.render(), "WHO  X\nzoë  1\nbob  2\n");
    }

    #[test]
    fn follow_mode_reuses_earlier_widths() {
        let mut first = Table::new(&["TIME", "KIND"]);
        first.push(vec!["t1".into(), "a".into()]);
        let widths = first.widths();
        let mut later = Table::new(&["TIME", "KIND"]);
        later.push(vec!["t2".into(), "b".into()]);
        later.push(vec!["longer-than-header".into(), "c".into()]);
        assert_eq!(first.render_header(&widths), "TIME  KIND\n");
        assert_eq!(
            later.render_rows(&widths),
            "t2    b\nlonger-than-header  c\n"
        );
    }

    #[test]
    fn truncate_folds_whitespace_and_marks_cuts() {
        assert_eq!(truncate("SELECT 1", 60), "SELECT 1");
        assert_eq!(truncate("SELECT *\n  FROM t", 60), "SELECT * FROM t");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
        assert_eq!(truncate("abcde", 5), "abcde");
        assert_eq!(truncate("ééééééé", 4), "ééé…");
        assert_eq!(truncate("", 3), "");
    }
}
