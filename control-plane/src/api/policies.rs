//! Policy documents: apply (validate + store a new version), list, show,
//! diff and explain.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_policy::{StatementFacts, Subject, SubjectKind};

use super::{Admin, ApiJson, ApiText, AppError, AppState, ErrorDetail, rfc3339};
use crate::{
    keys::sha256_hex,
    snapshot::{current_inputs, spec_to_row},
    store::PolicyVersionRow,
};

fn version_json(v: &PolicyVersionRow, current: i64) -> Value {
    let (policies, resources) = sluice_policy::parse_document(&v.document)
        .map(|d| (d.policies.len(), d.resources.len()))
        .unwrap_or((0, 0));
    json!({
        "version": v.version,
        "revision": v.revision,
        "created_at": rfc3339(v.created_at),
        "created_by": v.created_by,
        "sha256": v.sha256,
        "comment": v.comment,
        "current": v.version == current,
        "policies": policies,
        "resources": resources,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyQuery {
    comment: Option<String>,
}

pub async fn apply(
    State(cp): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<ApplyQuery>,
    ApiText(body): ApiText,
) -> Result<Json<Value>, AppError> {
    if body.trim().is_empty() {
        return Err(AppError::bad_request(
            "empty policy document: send the YAML or JSON document as the request body",
        ));
    }
    let doc = sluice_policy::parse_document(&body).map_err(|errors| AppError::BadRequest {
        code: "invalid_policy",
        message: format!(
            "the policy document has {} problem(s); nothing was applied",
            errors.errors().len()
        ),
        details: errors
            .errors()
            .iter()
            .map(|e| ErrorDetail {
                path: e.path.clone(),
                line: e.line,
                message: e.message.clone(),
            })
            .collect(),
    })?;
    let sha = sha256_hex(body.as_bytes());
    if let Some(current) = cp.store.current_policy().await?
        && current.sha256 == sha
    {
        // Applying the document in force again is a no-op, so scripts
        // can apply unconditionally.
        let mut v = version_json(&current, current.version);
        v["unchanged"] = Value::Bool(true);
        return Ok(Json(v));
    }
    let resources: Vec<_> = doc.resources.iter().map(spec_to_row).collect();
    let comment = q.comment.unwrap_or_default();
    let (version, revision) = cp
        .store
        .insert_policy_version(&body, &sha, &comment, &admin.subject, &resources)
        .await?;
    cp.changed(revision);
    cp.metrics.policy_versions_applied.inc();
    tracing::info!(by = %admin.subject, version, revision, policies = doc.policies.len(), "policy applied");
    let row = cp.store.policy_version(version).await?.ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "policy version {version} vanished after insert"
        ))
    })?;
    Ok(Json(version_json(&row, version)))
}

pub async fn list(State(cp): State<AppState>, _: Admin) -> Result<Json<Value>, AppError> {
    let rows = cp.store.policy_versions().await?;
    let current = rows.last().map(|r| r.version).unwrap_or(0);
    Ok(Json(
        json!({ "versions": rows.iter().map(|r| version_json(r, current)).collect::<Vec<_>>() }),
    ))
}

async fn resolve(cp: &AppState, which: &str) -> Result<PolicyVersionRow, AppError> {
    let row = if which == "current" {
        cp.store.current_policy().await?
    } else {
        let v: i64 = which.parse().map_err(|_| {
            AppError::bad_request(format!(
                "`{which}` is not a policy version: use a number or `current`"
            ))
        })?;
        cp.store.policy_version(v).await?
    };
    row.ok_or_else(|| {
        AppError::NotFound(if which == "current" {
            "no policy has been applied yet: apply one with `sluice policy apply FILE`".to_owned()
        } else {
            format!("policy version {which} not found: `sluice policy list` shows the versions")
        })
    })
}

pub async fn show(
    State(cp): State<AppState>,
    _: Admin,
    Path(which): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = resolve(&cp, &which).await?;
    let current = cp
        .store
        .current_policy()
        .await?
        .map(|c| c.version)
        .unwrap_or(0);
    let mut v = version_json(&row, current);
    v["document"] = Value::String(row.document);
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    from: String,
    to: Option<String>,
}

pub async fn diff(
    State(cp): State<AppState>,
    _: Admin,
    Query(q): Query<DiffQuery>,
) -> Result<Json<Value>, AppError> {
    let from = resolve(&cp, &q.from).await?;
    let to = resolve(&cp, q.to.as_deref().unwrap_or("current")).await?;
    let text = similar::TextDiff::from_lines(&from.document, &to.document)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("version {}", from.version),
            &format!("version {}", to.version),
        )
        .to_string();
    Ok(Json(
        json!({ "from": from.version, "to": to.version, "diff": text }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    subject: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    service_account: bool,
    resource: String,
    /// SQL text, classified with PostgreSQL's parser as agents do.
    statement: Option<String>,
    /// An already classified statement.
    facts: Option<StatementFacts>,
}

fn outcome_name(d: &sluice_policy::Decision) -> &'static str {
    match d.outcome {
        sluice_policy::Outcome::Allow => "allow",
        sluice_policy::Outcome::Deny => "deny",
        sluice_policy::Outcome::Approve(_) => "approve",
    }
}

/// What the agent does with a text's `EXECUTE`, besides the rules.
enum Execute {
    /// Reads the statement the target holds under this name, and judges it.
    Reads(String),
    /// Refuses it unread (0A000).
    Refused,
}

pub async fn explain(
    State(cp): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<ExplainBody>,
) -> Result<Json<Value>, AppError> {
    let (doc, specs) = current_inputs(&cp)
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    if !specs.iter().any(|r| r.name == body.resource) {
        return Err(AppError::NotFound(format!(
            "resource `{}` not found",
            body.resource
        )));
    }
    let compiled = sluice_policy::compile_all(&doc, &specs);
    let subject = Subject {
        id: body.subject,
        groups: body.groups,
        kind: if body.service_account {
            SubjectKind::ServiceAccount
        } else {
            SubjectKind::User
        },
    };
    // SQL text is classified with the same parser the agents use, and each
    // statement explained; the deciding one is also reported at the top
    // level.
    let mut statements = Vec::new();
    let mut facts = body.facts.clone();
    let mut execute = None;
    if let Some(sql) = &body.statement {
        let classified = sluice_policy::classify(sql).map_err(|e| {
            AppError::bad_request(format!(
                "the statement does not parse, so agents would deny it: {e}"
            ))
        })?;
        if classified.is_empty() {
            return Err(AppError::bad_request("the statement is empty"));
        }
        // As the agent decides a text: the first statement denied, else
        // the first needing approval, else the last.
        let (mut denied, mut approval) = (None, None);
        for st in &classified {
            let e = compiled.explain(&subject, &body.resource, Some(&st.facts));
            let outcome = e.decision.as_ref().map(outcome_name).unwrap_or("deny");
            match outcome {
                "deny" => {
                    denied.get_or_insert_with(|| st.facts.clone());
                }
                "approve" => {
                    approval.get_or_insert_with(|| st.facts.clone());
                }
                _ => {}
            }
            statements.push(json!({
                "text": st.text,
                "kinds": st.facts.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "outcome": outcome,
                "decision": e.decision,
            }));
        }
        facts = denied
            .or(approval)
            .or_else(|| classified.last().map(|c| c.facts.clone()));
        execute = if sluice_policy::runs_unread_execute(&classified) {
            Some(Execute::Refused)
        } else {
            classified
                .first()
                .and_then(|c| c.executes.clone())
                .map(Execute::Reads)
        };
    }
    let mut explanation = compiled.explain(&subject, &body.resource, facts.as_ref());
    let mut refusal = None;
    // What the agent makes of an EXECUTE, after the policy allowed it (a
    // denial stands; see `Judge::sql` and `Relay::execute_verdict`).
    match (&execute, &mut explanation.decision) {
        (Some(Execute::Refused), Some(d)) if d.outcome != sluice_policy::Outcome::Deny => {
            *d = sluice_policy::Decision {
                outcome: sluice_policy::Outcome::Deny,
                policy: None,
                rule: None,
                reason: sluice_policy::SQL_EXECUTE_ALONE.into(),
                row_limit: None,
                masks: Vec::new(),
            };
            refusal = Some("0A000");
            explanation.trace.push(format!(
                "agent: refused with SQLSTATE 0A000, whatever the rules say: {}",
                sluice_policy::SQL_EXECUTE_ALONE
            ));
        }
        (Some(Execute::Reads(name)), Some(d))
            if matches!(d.outcome, sluice_policy::Outcome::Approve(_)) =>
        {
            d.outcome = sluice_policy::Outcome::Deny;
            d.reason = sluice_policy::execute_needs_approval(name, &d.reason);
            d.row_limit = None;
            d.masks.clear();
            explanation.trace.push(format!(
                "agent: denied, not held for approval: {}",
                d.reason
            ));
        }
        (Some(Execute::Reads(name)), Some(d)) if d.outcome == sluice_policy::Outcome::Allow => {
            explanation.trace.push(format!(
                "agent: before it runs, the EXECUTE is judged again as the statement the target holds as \"{name}\" (read from pg_prepared_statements), with the rules above: explain that statement's text to see its decision"
            ));
        }
        _ => {}
    }
    let mut out = serde_json::to_value(&explanation).map_err(|e| AppError::Internal(e.into()))?;
    if let Some(d) = &explanation.decision {
        out["outcome"] = json!(outcome_name(d));
    }
    if let Some(code) = refusal {
        out["refusal"] = json!(code);
    }
    if body.statement.is_some() {
        out["statements"] = json!(statements);
    }
    Ok(Json(out))
}
