//! `sluice audit tail`: recent audit events, optionally followed by polling with a cursor;
//! `sluice audit verify`: a session's integrity; `sluice audit export`: JSON lines for a SIEM.

use std::time::Duration;

use serde_json::Value;

use crate::cli::{AuditCommand, AuditExportArgs, AuditTailArgs};
use crate::commands::Ctx;
use crate::output::{emit, emit_json, emit_json_line, field, items};
use crate::table::{Table, truncate};

const POLL_EVERY: Duration = Duration::from_secs(1);
/// The server's maximum page; a full page means more may be waiting.
const FOLLOW_PAGE: u32 = 1000;
const STATEMENT_WIDTH: usize = 60;
const HEADERS: [&str; 7] = [
    "TIME",
    "KIND",
    "SUBJECT",
    "RESOURCE",
    "DECISION",
    "RULE",
    "STATEMENT",
];
/// Column widths to start from in follow mode, where rows arrive later than
/// the header; typical values then stay aligned.
const FOLLOW_MIN_WIDTHS: [usize; 7] = [20, 13, 16, 14, 8, 14, 0];

pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Tail(args) => tail(ctx, args).await,
        AuditCommand::Verify { session } => verify(ctx, &session).await,
        AuditCommand::Export(args) => export(ctx, args).await,
    }
}

/// Prints the verdict; an error (non-zero exit) unless the session verifies.
async fn verify(ctx: &Ctx, session: &str) -> anyhow::Result<()> {
    let report = ctx
        .client
        .get(&["sessions", session, "verify"], &[])
        .await?;
    if ctx.json {
        emit_json(&report)?;
    } else {
        emit(&render_report(&report))?;
    }
    if report.get("ok") == Some(&Value::Bool(true)) {
        Ok(())
    } else {
        anyhow::bail!(
            "session {session} is not verified ({})",
            field(&report, "status")
        )
    }
}

fn render_report(report: &Value) -> String {
    let mut out = format!("{}\n", field(report, "summary"));
    for p in items(report, "problems") {
        out.push_str(&format!("  - {}\n", field(p, "message")));
    }
    out
}

async fn export(ctx: &Ctx, args: AuditExportArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = [("since", &args.since), ("until", &args.until)]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
    if let Some(after) = args.after {
        query.push(("after", after.to_string()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let mut out = std::io::stdout().lock();
    ctx.client
        .download(&["audit", "export"], &query, |chunk| {
            use std::io::Write as _;
            out.write_all(chunk)
        })
        .await?;
    use std::io::Write as _;
    out.flush()?;
    Ok(())
}

fn filters(args: &AuditTailArgs) -> Vec<(&'static str, String)> {
    [
        ("subject", &args.subject),
        ("resource", &args.resource),
        ("outcome", &args.outcome),
        ("kind", &args.kind),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}

fn table_of(events: &[Value]) -> Table {
    let mut table = Table::new(&HEADERS);
    for e in events {
        table.push(vec![
            field(e, "time"),
            field(e, "kind"),
            field(e, "subject"),
            field(e, "resource"),
            field(e, "decision"),
            field(e, "rule"),
            truncate(&field(e, "statement"), STATEMENT_WIDTH),
        ]);
    }
    table
}

/// The cursor to poll after: the server's `cursor`, else the last event's.
fn next_cursor(answer: &Value, previous: Option<String>) -> Option<String> {
    let as_text = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    answer
        .get("cursor")
        .and_then(as_text)
        .or_else(|| {
            items(answer, "events")
                .last()
                .and_then(|e| e.get("cursor"))
                .and_then(as_text)
        })
        .or(previous)
}

async fn tail(ctx: &Ctx, args: AuditTailArgs) -> anyhow::Result<()> {
    let mut query = filters(&args);
    query.push(("limit", args.limit.to_string()));
    let answer = ctx.client.get(&["audit"], &query).await?;
    let events = items(&answer, "events");

    let widths = if ctx.json {
        for e in events {
            emit_json_line(e)?;
        }
        Vec::new()
    } else {
        let table = table_of(events);
        if !args.follow {
            emit(&table.render())?;
            if table.is_empty() {
                eprintln!("no audit events match");
            }
            return Ok(());
        }
        let widths: Vec<usize> = table
            .widths()
            .into_iter()
            .zip(FOLLOW_MIN_WIDTHS)
            .map(|(w, min)| w.max(min))
            .collect();
        emit(&table.render_header(&widths))?;
        emit(&table.render_rows(&widths))?;
        widths
    };
    if !args.follow {
        return Ok(());
    }

    let mut cursor = next_cursor(&answer, None).unwrap_or_else(|| "0".to_owned());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut wait = POLL_EVERY;
    let mut lost = false;
    loop {
        let poll = async {
            tokio::time::sleep(wait).await;
            let mut query = filters(&args);
            query.push(("after", cursor.clone()));
            query.push(("limit", FOLLOW_PAGE.to_string()));
            ctx.client.get(&["audit"], &query).await
        };
        let result = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            r = poll => r,
        };
        match result {
            Ok(answer) => {
                if lost {
                    eprintln!("reconnected to the control plane");
                    lost = false;
                }
                let events = items(&answer, "events");
                if ctx.json {
                    for e in events {
                        emit_json_line(e)?;
                    }
                } else {
                    emit(&table_of(events).render_rows(&widths))?;
                }
                // A full page means more are waiting: fetch again at once.
                wait = if events.len() >= FOLLOW_PAGE as usize {
                    Duration::ZERO
                } else {
                    POLL_EVERY
                };
                if let Some(next) = next_cursor(&answer, None) {
                    cursor = next;
                }
            }
            // Keep following across a control plane restart.
            Err(e) if e.is_transient() => {
                if !lost {
                    eprintln!("warning: {e}; retrying every second");
                    lost = true;
                }
                wait = POLL_EVERY;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursor_comes_from_the_answer_or_the_last_event() {
        assert_eq!(
            next_cursor(&json!({"events": [], "cursor": 42}), None).as_deref(),
            Some("42")
        );
        assert_eq!(
            next_cursor(&json!({"events": [{"cursor": 7}, {"cursor": 9}]}), None).as_deref(),
            Some("9")
        );
        assert_eq!(
            next_cursor(&json!({"events": []}), Some("5".into())).as_deref(),
            Some("5")
        );
        assert_eq!(next_cursor(&json!({}), None), None);
    }

    #[test]
    fn events_render_as_a_table_with_short_statements() {
        let long = format!("SELECT {} FROM orders", "x, ".repeat(40));
        let events = vec![json!({
            "time": "2026-01-01T00:00:00Z", "kind": "statement", "subject": "alice",
            "resource": "orders-db", "decision": "allow", "rule": "read-only",
            "statement": long
        })];
        let out = table_of(&events).render();
        let mut lines = out.lines();
        assert!(lines.next().is_some_and(|h| h.starts_with("TIME")));
        let row = lines.next().expect("row");
        assert!(row.starts_with("2026-01-01T00:00:00Z  statement  alice"));
        let stmt = row.split("read-only  ").nth(1).expect("statement cell");
        assert_eq!(stmt.chars().count(), STATEMENT_WIDTH);
        assert!(stmt.ends_with('…'));
    }

    #[test]
    fn a_report_prints_its_summary_and_each_problem() {
        let report = json!({
            "ok": false, "status": "failed", "summary": "FAILED: 2 problems found in 6 events",
            "problems": [
                {"kind": "altered", "position": 3, "message": "event 3 (e3) was altered: its content no longer matches its hash"},
                {"kind": "removed", "first": 4, "last": 4, "message": "event 4 is missing: it was removed"}
            ]
        });
        assert_eq!(
            render_report(&report),
            "FAILED: 2 problems found in 6 events\n  - event 3 (e3) was altered: its content no longer matches its hash\n  - event 4 is missing: it was removed\n"
        );
        let ok = json!({"ok": true, "summary": "OK: 7 events, chain intact and sealed by the control plane", "problems": []});
        assert_eq!(
            render_report(&ok),
            "OK: 7 events, chain intact and sealed by the control plane\n"
        );
    }

    #[test]
    fn only_given_filters_are_sent() {
        let args = AuditTailArgs {
            subject: Some("alice".into()),
            resource: None,
            outcome: Some("deny".into()),
            kind: None,
            limit: 20,
            follow: false,
        };
        assert_eq!(
            filters(&args),
            [
                ("subject", "alice".to_owned()),
                ("outcome", "deny".to_owned())
            ]
        );
    }
}
