//! `sluice approvals`: the requests statements wait on, and deciding them.

use serde_json::{Value, json};

use crate::cli::ApprovalsCommand;
use crate::commands::Ctx;
use crate::output::{emit, emit_json, field, items, key_values, show};
use crate::table::{Table, truncate};

const STATEMENT_WIDTH: usize = 60;

pub async fn run(ctx: &Ctx, cmd: ApprovalsCommand) -> anyhow::Result<()> {
    match cmd {
        ApprovalsCommand::List { status } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(("status", s.as_api().to_owned()));
            }
            let answer = ctx.client.get(&["approvals"], &query).await?;
            if ctx.json {
                return emit_json(&answer);
            }
            let list = items(&answer, "approvals");
            if list.is_empty() {
                eprintln!("no approval requests match");
                return Ok(());
            }
            Ok(emit(&table_of(list).render())?)
        }
        ApprovalsCommand::Show { id } => {
            let a = ctx.client.get(&["approvals", &id], &[]).await?;
            if ctx.json {
                return emit_json(&a);
            }
            Ok(emit(&describe(&a))?)
        }
        ApprovalsCommand::Approve { id, reason } => decide(ctx, &id, "approve", reason).await,
        ApprovalsCommand::Deny { id, reason } => decide(ctx, &id, "deny", reason).await,
    }
}

async fn decide(ctx: &Ctx, id: &str, verb: &str, reason: Option<String>) -> anyhow::Result<()> {
    let body = match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    };
    let a = ctx.client.post(&["approvals", id, verb], body).await?;
    if ctx.json {
        return emit_json(&a);
    }
    let status = field(&a, "status");
    let approvals = items(&a, "votes")
        .iter()
        .filter(|v| v["decision"] == "approve")
        .count();
    let note = match status.as_str() {
        "pending" => format!(
            "recorded; {approvals} of {} approvals so far",
            field(&a, "min_approvals")
        ),
        "approved" if a["mode"] == "retry" => format!(
            "approved: {} may run exactly this statement once, until {}",
            field(&a, "subject"),
            field(&a, "valid_until")
        ),
        "approved" => "approved: the held statement runs now".to_owned(),
        other => other.to_owned(),
    };
    Ok(emit(&format!("{id}: {note}\n"))?)
}

fn table_of(list: &[Value]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "STATUS",
        "MODE",
        "SUBJECT",
        "RESOURCE",
        "APPROVERS",
        "CREATED",
        "STATEMENT",
    ]);
    for a in list {
        table.push(vec![
            field(a, "id"),
            field(a, "status"),
            field(a, "mode"),
            field(a, "subject"),
            field(a, "resource"),
            format!(
                "{} (min {})",
                items(a, "approvers")
                    .iter()
                    .map(show)
                    .collect::<Vec<_>>()
                    .join(", "),
                field(a, "min_approvals")
            ),
            field(a, "created_at"),
            truncate(&field(a, "statement"), STATEMENT_WIDTH),
        ]);
    }
    table
}

fn describe(a: &Value) -> String {
    let params = items(a, "parameters")
        .iter()
        .map(show)
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = key_values(&[
        ("request", field(a, "id")),
        ("status", field(a, "status")),
        ("mode", field(a, "mode")),
        ("subject", field(a, "subject")),
        ("groups", field(a, "groups")),
        ("resource", field(a, "resource")),
        ("session", field(a, "session_id")),
        ("rule", field(a, "rule")),
        ("reason", field(a, "reason")),
        (
            "approvers",
            format!(
                "{} (min {})",
                field(a, "approvers"),
                field(a, "min_approvals")
            ),
        ),
        ("created", field(a, "created_at")),
        ("expires", field(a, "expires_at")),
        ("statement", field(a, "statement")),
        ("parameters", params),
    ]);
    let votes = items(a, "votes");
    if !votes.is_empty() {
        let mut table = Table::new(&["APPROVER", "DECISION", "TIME", "REASON"]);
        for v in votes {
            table.push(vec![
                field(v, "approver"),
                field(v, "decision"),
                field(v, "time"),
                field(v, "reason"),
            ]);
        }
        out.push_str("\nvotes:\n");
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_with_its_statement_parameters_and_votes() {
        let a = json!({
            "id": "r1", "status": "pending", "mode": "wait", "subject": "alice", "groups": ["devs"],
            "resource": "orders", "session_id": "s1", "rule": "p/risky", "reason": "deletes need review",
            "approvers": ["dba"], "min_approvals": 2, "created_at": "2026-01-01T00:00:00.000Z",
            "expires_at": "2026-01-01T00:05:00.000Z", "statement": "DELETE FROM orders WHERE id = $1",
            "parameters": ["7"],
            "votes": [{"approver": "bob", "decision": "approve", "time": "2026-01-01T00:01:00.000Z", "reason": "ok"}]
        });
        let out = describe(&a);
        assert!(out.contains("DELETE FROM orders WHERE id = $1"), "{out}");
        assert!(out.contains("parameters:") && out.contains('7'), "{out}");
        assert!(out.contains("bob") && out.contains("approve"), "{out}");
        let table = table_of(std::slice::from_ref(&a)).render();
        assert!(table.contains("dba (min 2)"), "{table}");
    }
}
