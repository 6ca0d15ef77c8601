//! The bounded record of what a statement returned, kept in its
//! `statement.result` event so a session's transcript shows results.
//!
//! Limits apply per statement (rows, bytes) and per session (bytes); where
//! a limit cuts the record, `truncated` says which one. Only rows the
//! client received are recorded (rows withheld by a row limit are not).
//! Values are recorded as text; a value that is not printable UTF-8 (a
//! binary-format result) is recorded as `\x` hex, shortened.

use serde::Serialize;
use sluice_pgwire::messages;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rows: usize,
    pub statement_bytes: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Capture {
    sets: Vec<ResultSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<&'static str>,
    #[serde(skip)]
    rows: usize,
    #[serde(skip)]
    bytes: usize,
}

#[derive(Debug, Default, Serialize)]
struct ResultSet {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

/// Most result sets recorded per statement (a multi-statement string).
const MAX_SETS: usize = 16;

/// Longest binary value recorded, in bytes (as hex).
const MAX_BINARY: usize = 64;

impl Capture {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// A RowDescription: a new result set begins.
    pub fn columns(&mut self, body: &[u8]) {
        if self.sets.len() >= MAX_SETS {
            self.truncated.get_or_insert("result sets per statement");
            return;
        }
        let columns = messages::parse_row_description(body)
            .map(|names| names.into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        self.sets.push(ResultSet {
            columns,
            rows: Vec::new(),
        });
    }

    /// A DataRow the client received; `session_left` is the session's
    /// remaining byte budget.
    pub fn row(&mut self, body: &[u8], limits: Limits, session_left: &mut usize) {
        if self.truncated.is_some() {
            return;
        }
        if self.rows >= limits.rows {
            self.truncated = Some("rows per statement");
            return;
        }
        let size = body.len();
        if self.bytes + size > limits.statement_bytes {
            self.truncated = Some("bytes per statement");
            return;
        }
        if size > *session_left {
            self.truncated = Some("bytes per session");
            return;
        }
        let Ok(values) = messages::parse_data_row(body) else {
            self.truncated = Some("undecodable row");
            return;
        };
        if self.sets.is_empty() {
            // Rows without a description (a portal executed without Describe).
            self.sets.push(ResultSet::default());
        }
        let row = values.into_iter().map(|v| v.map(render)).collect();
        if let Some(set) = self.sets.last_mut() {
            set.rows.push(row);
        }
        self.rows += 1;
        self.bytes += size;
        *session_left -= size;
    }
}

fn render(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s)
            if !s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
        {
            s.to_owned()
        }
        _ => {
            let shown = &value[..value.len().min(MAX_BINARY)];
            let mut out = format!("\\x{}", hex::encode(shown));
            if value.len() > MAX_BINARY {
                out.push_str(&format!("... ({} bytes)", value.len()));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::postgres::testing::data_row as row;

    const LIMITS: Limits = Limits {
        rows: 2,
        statement_bytes: 1024,
    };

    #[test]
    fn records_rows_up_to_the_limit_and_says_why_it_stopped() {
        let mut c = Capture::default();
        let mut left = 1 << 20;
        for _ in 0..3 {
            c.row(&row(&[Some(b"a"), None]), LIMITS, &mut left);
        }
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["sets"][0]["rows"],
            serde_json::json!([["a", null], ["a", null]])
        );
        assert_eq!(v["truncated"], "rows per statement");
    }

    #[test]
    fn the_session_budget_is_shared_and_binary_values_are_hex() {
        let mut c = Capture::default();
        let mut left = 20;
        c.row(&row(&[Some(&[0, 0, 0, 42])]), LIMITS, &mut left);
        assert_eq!(left, 20 - 10);
        c.row(&row(&[Some(&[0u8; 16])]), LIMITS, &mut left);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["sets"][0]["rows"][0][0], "\\x0000002a");
        assert_eq!(v["truncated"], "bytes per session");
    }
}
