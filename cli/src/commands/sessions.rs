//! `sluice sessions`: list recorded sessions, print a transcript, end a
//! live session.

use serde_json::{Value, json};

use crate::cli::{SessionsCommand, SessionsListArgs};
use crate::commands::Ctx;
use crate::output::{emit, emit_json, field, items, key_values, show};
use crate::table::{Table, truncate};

const STATEMENT_WIDTH: usize = 70;

pub async fn run(ctx: &Ctx, cmd: SessionsCommand) -> anyhow::Result<()> {
    match cmd {
        SessionsCommand::List(args) => list(ctx, args).await,
        SessionsCommand::Show { id } => {
            let session = ctx.client.get(&["sessions", &id], &[]).await?;
            if ctx.json {
                return emit_json(&session);
            }
            Ok(emit(&describe(&session))?)
        }
        SessionsCommand::Kill { id, reason } => {
            let body = match reason {
                Some(r) => json!({ "reason": r }),
                None => json!({}),
            };
            let answer = ctx.client.post(&["sessions", &id, "kill"], body).await?;
            if ctx.json {
                return emit_json(&answer);
            }
            let agent = field(&answer, "agent");
            let how = match answer.get("delivery").and_then(|d| d.as_str()) {
                Some("queued") => format!(
                    "; agent {agent} is not attached to this control plane replica: the replica it is attached to passes the request on as soon as it hears of it (at once on PostgreSQL, else at its next poll), or the agent gets it when it reconnects"
                ),
                _ => String::new(),
            };
            Ok(emit(&format!(
                "asked agent {agent} to end session {id} ({}){how}\n",
                field(&answer, "reason")
            ))?)
        }
    }
}

fn filters(args: &SessionsListArgs) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&'static str, String)> = [
        ("subject", &args.subject),
        ("resource", &args.resource),
        ("since", &args.since),
        ("until", &args.until),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect();
    if let Some(o) = args.outcome {
        query.push(("outcome", o.as_api().to_owned()));
    }
    query.push(("limit", args.limit.to_string()));
    query
}

async fn list(ctx: &Ctx, args: SessionsListArgs) -> anyhow::Result<()> {
    let answer = ctx.client.get(&["sessions"], &filters(&args)).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    let table = table_of(items(&answer, "sessions"));
    emit(&table.render())?;
    if table.is_empty() {
        eprintln!("no sessions match");
    }
    Ok(())
}

fn table_of(sessions: &[Value]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "SUBJECT",
        "RESOURCE",
        "STARTED",
        "STATEMENTS",
        "DENIED",
        "ROWS",
        "SEALED",
    ]);
    for s in sessions {
        table.push(vec![
            field(s, "id"),
            field(s, "status"),
            field(s, "subject"),
            field(s, "resource"),
            field(s, "started_at"),
            field(s, "statements"),
            field(s, "denied"),
            field(s, "rows"),
            field(s, "sealed"),
        ]);
    }
    table
}

/// The summary, then one block per statement: what ran, what was decided
/// and what came of it.
fn describe(s: &Value) -> String {
    let mut pairs = vec![
        ("session", field(s, "id")),
        ("status", field(s, "status")),
        ("subject", field(s, "subject")),
        ("groups", field(s, "groups")),
        ("client", field(s, "client_addr")),
        ("resource", field(s, "resource")),
        ("agent", field(s, "agent")),
        ("started", field(s, "started_at")),
        ("ended", field(s, "ended_at")),
        (
            "statements",
            format!(
                "{} ({} denied, {} failed), {} rows",
                field(s, "statements"),
                field(s, "denied"),
                field(s, "errors"),
                field(s, "rows")
            ),
        ),
        ("sealed", field(s, "sealed")),
    ];
    for (label, key) in [("refused", "start_error"), ("end reason", "end_error")] {
        if s.get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            pairs.push((label, field(s, key)));
        }
    }
    let mut out = key_values(&pairs);
    let transcript = items(s, "transcript");
    if transcript.is_empty() {
        out.push_str("\nno statements recorded\n");
        return out;
    }
    out.push_str("\ntranscript:\n");
    let mut table = Table::new(&["#", "TIME", "OUTCOME", "RULE", "ROWS", "MS", "STATEMENT"]);
    let mut notes: Vec<String> = Vec::new();
    for (n, t) in transcript.iter().enumerate() {
        let n = n + 1;
        let millis = t
            .get("duration_us")
            .and_then(Value::as_i64)
            .map(|us| format!("{:.1}", us as f64 / 1000.0))
            .unwrap_or_else(|| "-".to_owned());
        let mut statement = truncate(&one_line(&field(t, "statement")), STATEMENT_WIDTH);
        let params = items(t, "parameters");
        if !params.is_empty() {
            statement.push_str(&format!(
                "  [{}]",
                params.iter().map(show).collect::<Vec<_>>().join(", ")
            ));
        }
        table.push(vec![
            n.to_string(),
            field(t, "time"),
            field(t, "outcome"),
            field(t, "rule"),
            field(t, "rows"),
            millis,
            statement,
        ]);
        for key in ["reason", "error", "result_unavailable"] {
            if let Some(text) = t.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                notes.push(format!("  #{n} {key}: {}", one_line(text)));
            }
        }
    }
    out.push_str(&table.render());
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    for (n, t) in transcript.iter().enumerate() {
        if let Some(result) = t.get("result").filter(|r| r.is_object()) {
            out.push_str(&render_result(n + 1, result));
        }
    }
    out
}

/// A recorded result as a table per result set, with the limit that cut
/// it, if any.
fn render_result(n: usize, result: &Value) -> String {
    let mut out = String::new();
    for set in items(result, "sets") {
        let columns: Vec<String> = items(set, "columns").iter().map(show).collect();
        let rows = items(set, "rows");
        out.push_str(&format!("\n#{n} result ({} rows recorded):\n", rows.len()));
        let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
        let width = rows
            .iter()
            .map(|r| r.as_array().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
            .max(headers.len());
        let mut padded = headers.clone();
        padded.resize(width, "?");
        let mut table = Table::new(&padded);
        for row in rows {
            let mut cells: Vec<String> = row
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|v| match v {
                            Value::Null => "NULL".to_owned(),
                            v => truncate(&one_line(&show(v)), STATEMENT_WIDTH),
                        })
                        .collect()
                })
                .unwrap_or_default();
            cells.resize(width, String::new());
            table.push(cells);
        }
        out.push_str(&table.render());
    }
    if let Some(why) = result.get("truncated").and_then(Value::as_str) {
        out.push_str(&format!("#{n} record cut by the limit on {why}\n"));
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SessionOutcome;

    #[test]
    fn list_sends_only_given_filters() {
        let args = SessionsListArgs {
            subject: Some("alice".into()),
            resource: None,
            since: None,
            until: None,
            outcome: Some(SessionOutcome::Incomplete),
            limit: 5,
        };
        assert_eq!(
            filters(&args),
            [
                ("subject", "alice".to_owned()),
                ("outcome", "incomplete".to_owned()),
                ("limit", "5".to_owned())
            ]
        );
    }

    #[test]
    fn recorded_results_render_as_tables_with_their_cut() {
        let result = json!({
            "sets": [{"columns": ["id", "name"], "rows": [["1", "one"], ["2", null]]}],
            "truncated": "rows per statement"
        });
        let out = render_result(3, &result);
        assert!(out.contains("#3 result (2 rows recorded)"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.iter().any(|l| l.contains("id") && l.contains("name")),
            "{out}"
        );
        assert!(
            lines.iter().any(|l| l.contains('2') && l.contains("NULL")),
            "{out}"
        );
        assert!(
            out.contains("cut by the limit on rows per statement"),
            "{out}"
        );
    }

    #[test]
    fn a_transcript_reads_statement_by_statement() {
        let session = json!({
            "id": "s1", "status": "ended", "subject": "alice", "groups": ["devs"],
            "client_addr": "10.0.0.1:5000", "resource": "orders", "agent": "edge",
            "started_at": "2026-01-31T12:00:00.000Z", "ended_at": "2026-01-31T12:01:00.000Z",
            "statements": 2, "denied": 1, "errors": 0, "rows": 3, "sealed": true,
            "start_error": "", "end_error": "ended by administrator root",
            "transcript": [
                {"time": "2026-01-31T12:00:01.000Z", "statement": "SELECT *\n  FROM orders WHERE id = $1",
                 "parameters": ["42"], "decision": "allow", "rule": "read", "outcome": "ok",
                 "rows": 3, "duration_us": 1500, "reason": "", "error": "", "result": null,
                 "result_unavailable": "the recorded result is unavailable: blob ab12 is missing"},
                {"time": "2026-01-31T12:00:02.000Z", "statement": "DROP TABLE orders", "parameters": [],
                 "decision": "deny", "rule": "no-ddl", "outcome": "denied", "rows": null,
                 "duration_us": null, "reason": "DDL is not allowed", "error": ""}
            ]
        });
        let out = describe(&session);
        assert!(out.contains("status:      ended"), "{out}");
        assert!(
            out.contains("end reason:  ended by administrator root"),
            "{out}"
        );
        assert!(out.contains("2 (1 denied, 0 failed), 3 rows"), "{out}");
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with('1') || l.starts_with('2'))
            .collect();
        assert!(
            rows[0].contains("ok")
                && rows[0].contains("1.5")
                && rows[0].contains("SELECT * FROM orders WHERE id = $1  [42]"),
            "{out}"
        );
        assert!(
            rows[1].contains("denied") && rows[1].contains("no-ddl"),
            "{out}"
        );
        assert!(out.contains("#2 reason: DDL is not allowed"), "{out}");
        assert!(
            out.contains(
                "#1 result_unavailable: the recorded result is unavailable: blob ab12 is missing"
            ),
            "{out}"
        );
    }

    #[test]
    fn sessions_render_as_a_table() {
        let out = table_of(&[json!({"id": "s1", "status": "live", "subject": "alice", "resource": "orders",
            "started_at": "2026-01-31T12:00:00.000Z", "statements": 4, "denied": 0, "rows": 10, "sealed": false})])
        .render();
        let row = out.lines().nth(1).expect("row");
        assert!(row.starts_with("s1  live"), "{out}");
        assert!(row.ends_with("no"), "{out}");
    }
}
