//! Turning server JSON into what gets printed: pretty JSON for scripts,
//! cells and `key: value` blocks for people. Fields are read leniently (a
//! missing field shows as `-`), so a newer server does not break an older CLI.

use std::io::Write;

use serde_json::Value;

/// Writes to stdout and flushes, so a closed pipe (`sluice ... | head`)
/// surfaces as an error that `main` treats as a normal exit. Control
/// characters other than line ends are shown escaped (see [`printable`]).
pub fn emit(text: &str) -> std::io::Result<()> {
    write_out(&printable(text, true))
}

fn write_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// `text` with control characters (escape sequences, carriage returns) and
/// bidirectional overrides shown as `\u{..}`; line ends and tabs are kept
/// with `keep_lines`, else shown as spaces (a value on a `key: value` line
/// cannot start a line of its own). What people read comes from clients of the gateway
/// (statement text, parameters, names): a terminal must not be made to show
/// an approver one statement while another is approved.
pub fn printable(text: &str, keep_lines: bool) -> String {
    let hidden = |c: char| {
        (c.is_control() && !(keep_lines && matches!(c, '\n' | '\t')))
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hidden) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if matches!(c, '\n' | '\t') && !keep_lines {
                " ".to_owned()
            } else if hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints `text` and makes sure it ends with exactly one newline.
pub fn emit_line(text: &str) -> std::io::Result<()> {
    if text.ends_with('\n') {
        emit(text)
    } else {
        emit(&format!("{text}\n"))
    }
}

/// The server's JSON, pretty-printed (JSON escapes control characters
/// itself; anything else is left as is for the program reading it).
pub fn emit_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    Ok(write_out(&format!("{text}\n"))?)
}

/// One compact JSON document per line (JSON Lines).
pub fn emit_json_line(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    Ok(write_out(&format!("{text}\n"))?)
}

pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A field rendered for a table cell or a `key: value` line.
pub fn field(value: &Value, key: &str) -> String {
    show(value.get(key).unwrap_or(&Value::Null))
}

pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => printable(s, false),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(", "),
        Value::Object(map) if map.is_empty() => "-".to_owned(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// A count for fields the API may send either as a number or as a list.
pub fn count(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::Array(items)) => items.len().to_string(),
        Some(other) => show(other),
        None => "-".to_owned(),
    }
}

/// The first `n` characters, for long hashes.
pub fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The array under `key` (e.g. `{"resources": [...]}`); empty if absent.
pub fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `key: value` lines with the values aligned, for single objects.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:"), width = width + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let spoof = "UPDATE t SET x = 1 /*\r\u{1b}[2Kstatement: UPDATE t SET x = 1 WHERE id = 42\n\u{202e}*/";
        let shown = field(&json!({ "statement": spoof }), "statement");
        assert_eq!(
            shown,
            "UPDATE t SET x = 1 /*\\u{d}\\u{1b}[2Kstatement: UPDATE t SET x = 1 WHERE id = 42 \\u{202e}*/"
        );
        assert_eq!(printable("a\nb\tc\u{7}", true), "a\nb\tc\\u{7}");
        assert_eq!(printable("plain café", false), "plain café");
    }

    #[test]
    fn shows_json_values_for_people() {
        let v = json!({
            "s": "x", "empty": "", "n": 3, "t": true, "f": false, "null": null,
            "list": ["a", "b"], "labels": {"env": "prod", "team": "db"}
        });
        assert_eq!(field(&v, "s"), "x");
        assert_eq!(field(&v, "empty"), "-");
        assert_eq!(field(&v, "n"), "3");
        assert_eq!(field(&v, "t"), "yes");
        assert_eq!(field(&v, "f"), "no");
        assert_eq!(field(&v, "null"), "-");
        assert_eq!(field(&v, "missing"), "-");
        assert_eq!(field(&v, "list"), "a, b");
        assert_eq!(field(&v, "labels"), "env=prod,team=db");
        assert_eq!(count(&v, "list"), "2");
        assert_eq!(count(&v, "n"), "3");
        assert_eq!(items(&v, "list").len(), 2);
        assert!(items(&v, "nope").is_empty());
    }

    #[test]
    fn key_values_align() {
        let out = key_values(&[("name", "db".into()), ("address", "h:1".into())]);
        assert_eq!(out, "name:     db\naddress:  h:1\n");
    }
}
