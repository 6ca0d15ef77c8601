//! `sluice policy`: apply, list, show, diff and explain policy versions.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{ExplainArgs, PolicyCommand};
use crate::client::{Body, ClientError, ErrorDetail};
use crate::commands::Ctx;
use crate::output::{count, emit, emit_json, emit_line, field, items, key_values, short};
use crate::table::Table;

/// Policy files are hand-written documents; refuse anything absurdly large.
const MAX_POLICY_BYTES: u64 = 8 * 1024 * 1024;

pub async fn run(ctx: &Ctx, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Apply { file, comment } => apply(ctx, &file, comment).await,
        PolicyCommand::List => list(ctx).await,
        PolicyCommand::Show { policy_version } => show(ctx, &policy_version).await,
        PolicyCommand::Diff { from, to } => diff(ctx, from, to).await,
        PolicyCommand::Explain(args) => explain(ctx, args).await,
    }
}

fn read_document(file: &Path) -> anyhow::Result<(String, String)> {
    let (name, reader): (String, Box<dyn Read>) = if file.as_os_str() == "-" {
        ("<stdin>".to_owned(), Box::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .with_context(|| format!("cannot open policy file {}", file.display()))?;
        (file.display().to_string(), Box::new(f))
    };
    let mut buf = Vec::new();
    reader
        .take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {name}"))?;
    if buf.len() as u64 > MAX_POLICY_BYTES {
        bail!("{name} is larger than {MAX_POLICY_BYTES} bytes; is it really a policy?");
    }
    let text = String::from_utf8(buf).map_err(|_| anyhow::anyhow!("{name} is not UTF-8 text"))?;
    Ok((name, text))
}

/// `FILE:LINE: PATH: MESSAGE`, the shape editors and CI annotate from.
pub fn diagnostic(file: &str, d: &ErrorDetail) -> String {
    let mut out = file.to_owned();
    if let Some(line) = d.line {
        out.push_str(&format!(":{line}"));
    }
    out.push_str(": ");
    if let Some(path) = d.path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(&d.message);
    out
}

async fn apply(ctx: &Ctx, file: &Path, comment: Option<String>) -> anyhow::Result<()> {
    let (name, text) = read_document(file)?;
    let query: Vec<(&str, String)> = comment.into_iter().map(|c| ("comment", c)).collect();
    let body = Body::Text {
        content_type: "application/yaml",
        text,
    };
    let applied = match ctx
        .client
        .request(Method::POST, &["policies"], &query, body)
        .await
    {
        Ok(v) => v,
        Err(ClientError::Api {
            code,
            message,
            details,
            ..
        }) if code == "invalid_policy" => {
            for d in &details {
                eprintln!("{}", diagnostic(&name, d));
            }
            bail!("{message} (policy not applied)");
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        return emit_json(&applied);
    }
    emit(&format!(
        "applied policy version {} (policies: {}, resources: {}, sha256 {})\n",
        field(&applied, "version"),
        count(&applied, "policies"),
        count(&applied, "resources"),
        short(&field(&applied, "sha256"), 12),
    ))?;
    Ok(())
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let answer = ctx.client.get(&["policies"], &[]).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    let mut table = Table::new(&[
        "VERSION",
        "CURRENT",
        "CREATED",
        "CREATED BY",
        "POLICIES",
        "SHA256",
        "COMMENT",
    ]);
    for v in items(&answer, "versions") {
        let current = if v.get("current").and_then(Value::as_bool) == Some(true) {
            "*"
        } else {
            ""
        };
        table.push(vec![
            field(v, "version"),
            current.to_owned(),
            field(v, "created_at"),
            field(v, "created_by"),
            count(v, "policies"),
            short(&field(v, "sha256"), 12),
            crate::table::truncate(&field(v, "comment"), 60),
        ]);
    }
    emit(&table.render())?;
    if table.is_empty() {
        eprintln!("no policy applied yet; everything is denied until `sluice policy apply FILE`");
    }
    Ok(())
}

async fn show(ctx: &Ctx, version: &str) -> anyhow::Result<()> {
    let answer = ctx.client.get(&["policies", version], &[]).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    match answer.get("document").and_then(Value::as_str) {
        Some(doc) => Ok(emit_line(doc)?),
        None => bail!("the control plane's answer has no `document` field (try --json)"),
    }
}

async fn diff(ctx: &Ctx, from: String, to: Option<String>) -> anyhow::Result<()> {
    let mut query = vec![("from", from)];
    if let Some(to) = to {
        query.push(("to", to));
    }
    let answer = ctx.client.get(&["policies", "diff"], &query).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    let text = answer
        .get("diff")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if text.trim().is_empty() {
        eprintln!(
            "no differences between version {} and version {}",
            field(&answer, "from"),
            field(&answer, "to")
        );
        return Ok(());
    }
    Ok(emit_line(text)?)
}

async fn explain(ctx: &Ctx, args: ExplainArgs) -> anyhow::Result<()> {
    let mut body = json!({
        "subject": args.subject,
        "groups": args.groups,
        "service_account": args.service_account,
        "resource": args.resource,
    });
    if let (Some(sql), Some(obj)) = (args.statement, body.as_object_mut()) {
        obj.insert("statement".into(), json!(sql));
    }
    let answer = ctx.client.post(&["policies", "explain"], body).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&render_explanation(&answer))?;
    Ok(())
}

pub fn render_explanation(e: &Value) -> String {
    let connect = match e.get("connect").and_then(Value::as_bool) {
        Some(true) => "allowed",
        Some(false) => "denied",
        None => "-",
    };
    let connect_policy = field(e, "connect_policy");
    let connect = if connect_policy == "-" {
        connect.to_owned()
    } else {
        format!("{connect} (policy {connect_policy})")
    };
    // `decision` is the deciding statement's verdict (an object), or null
    // when no statement was given.
    let decision = e.get("decision").cloned().unwrap_or(Value::Null);
    let kinds: Vec<String> = e
        .get("statements")
        .and_then(Value::as_array)
        .map(|sts| sts.iter().map(|st| field(st, "kinds")).collect())
        .unwrap_or_default();
    let outcome = match e.get("refusal").and_then(Value::as_str) {
        Some(code) => format!(
            "{} (refused by the agent, SQLSTATE {code})",
            field(e, "outcome")
        ),
        None => field(e, "outcome"),
    };
    let mut out = key_values(&[
        ("decision", outcome),
        ("policy", field(&decision, "policy")),
        ("rule", field(&decision, "rule")),
        ("reason", field(&decision, "reason")),
        ("connect", connect),
        (
            "statement kinds",
            if kinds.is_empty() {
                "-".to_owned()
            } else {
                kinds.join("; ")
            },
        ),
    ]);
    if let Some(sts) = e.get("statements").and_then(Value::as_array)
        && sts.len() > 1
    {
        {
            out.push_str("statements:\n");
            for st in sts {
                out.push_str(&format!(
                    "  {:<7} {}\n",
                    field(st, "outcome"),
                    field(st, "text")
                ));
            }
        }
    }
    let trace = items(e, "trace");
    if !trace.is_empty() {
        out.push_str("trace:\n");
        for line in trace {
            out.push_str("  ");
            out.push_str(&crate::output::show(line));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_read_like_compiler_errors() {
        let d = ErrorDetail {
            path: Some("policies[0].rules[1].deny.sql.statements[0]".into()),
            line: Some(12),
            message: "unknown statement kind `dorp`".into(),
        };
        assert_eq!(
            diagnostic("policy.yaml", &d),
            "policy.yaml:12: policies[0].rules[1].deny.sql.statements[0]: unknown statement kind `dorp`"
        );
        let d = ErrorDetail {
            path: None,
            line: None,
            message: "not YAML".into(),
        };
        assert_eq!(diagnostic("p.yaml", &d), "p.yaml: not YAML");
    }

    #[test]
    fn explanation_lists_decision_first_then_trace() {
        let e = json!({
            "connect": true, "connect_policy": "analysts",
            "outcome": "deny",
            "decision": {"outcome": "deny", "policy": "analysts", "rule": "no-writes", "reason": "DELETE is not allowed"},
            "statements": [{"text": "DELETE FROM t", "kinds": ["delete"], "outcome": "deny"}],
            "trace": ["policy analysts matches group analysts", "rule no-writes denies delete"]
        });
        assert_eq!(
            render_explanation(&e),
            "decision:         deny\n\
             policy:           analysts\n\
             rule:             no-writes\n\
             reason:           DELETE is not allowed\n\
             connect:          allowed (policy analysts)\n\
             statement kinds:  delete\n\
             trace:\n  \
             policy analysts matches group analysts\n  \
             rule no-writes denies delete\n"
        );
        let refused = json!({
            "connect": true, "connect_policy": "analysts", "outcome": "deny", "refusal": "0A000",
            "decision": {"outcome": "deny", "policy": null, "rule": null, "reason": "EXECUTE runs ..."},
        });
        assert!(
            render_explanation(&refused)
                .starts_with("decision:         deny (refused by the agent, SQLSTATE 0A000)\n"),
            "{}",
            render_explanation(&refused)
        );
    }
}
