//! `sluice resources`: list, show, create (PUT) and delete resources.

use serde_json::{Map, Value, json};

use crate::cli::{ResourceCreateArgs, ResourcesCommand};
use crate::commands::Ctx;
use crate::output::{emit, emit_json, field, items, key_values};
use crate::table::Table;

pub async fn run(ctx: &Ctx, cmd: ResourcesCommand) -> anyhow::Result<()> {
    match cmd {
        ResourcesCommand::List => list(ctx).await,
        ResourcesCommand::Show { name } => {
            let resource = ctx.client.get(&["resources", &name], &[]).await?;
            if ctx.json {
                return emit_json(&resource);
            }
            Ok(emit(&describe(&resource))?)
        }
        ResourcesCommand::Create(args) => create(ctx, args).await,
        ResourcesCommand::Delete { name } => {
            let answer = ctx.client.delete(&["resources", &name]).await?;
            if ctx.json {
                // 204 has no body; print whatever the server sent, if anything.
                if !answer.is_null() {
                    emit_json(&answer)?;
                }
                return Ok(());
            }
            Ok(emit(&format!("deleted resource {name}\n"))?)
        }
    }
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let answer = ctx.client.get(&["resources"], &[]).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    let mut table = Table::new(&[
        "NAME",
        "KIND",
        "AGENT",
        "ADDRESS",
        "DATABASE",
        "CREDENTIAL",
        "TLS",
        "LABELS",
    ]);
    for r in items(&answer, "resources") {
        table.push(vec![
            field(r, "name"),
            field(r, "kind"),
            field(r, "agent"),
            field(r, "address"),
            field(r, "database"),
            field(r, "credential"),
            field(r, "tls_mode"),
            field(r, "labels"),
        ]);
    }
    emit(&table.render())?;
    if table.is_empty() {
        eprintln!("no resources yet; add one with `sluice resources create`");
    }
    Ok(())
}

fn describe(r: &Value) -> String {
    key_values(&[
        ("name", field(r, "name")),
        ("kind", field(r, "kind")),
        ("agent", field(r, "agent")),
        ("address", field(r, "address")),
        ("database", field(r, "database")),
        ("credential", field(r, "credential")),
        ("labels", field(r, "labels")),
        ("tls mode", field(r, "tls_mode")),
        ("audit mode", field(r, "audit_mode")),
        ("max connections", field(r, "max_connections")),
        (
            "max connections per subject",
            field(r, "max_connections_per_subject"),
        ),
        ("updated at", field(r, "updated_at")),
    ])
}

/// The PUT body: only what was given, so server-side defaults apply to the rest.
pub fn resource_body(args: &ResourceCreateArgs) -> Value {
    let labels: Map<String, Value> = args
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut body = json!({
        "name": args.name,
        "kind": args.kind.as_api(),
        "agent": args.agent,
        "address": args.address,
        "labels": labels,
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(db) = &args.database {
            obj.insert("database".into(), json!(db));
        }
        if let Some(cred) = &args.credential {
            obj.insert("credential".into(), json!(cred));
        }
        if let Some(mode) = args.tls_mode {
            obj.insert("tls_mode".into(), json!(mode.as_api()));
        }
        if let Some(mode) = args.audit_mode {
            obj.insert("audit_mode".into(), json!(mode.as_api()));
        }
        if let Some(n) = args.max_connections {
            obj.insert("max_connections".into(), json!(n));
        }
        if let Some(n) = args.max_connections_per_subject {
            obj.insert("max_connections_per_subject".into(), json!(n));
        }
    }
    body
}

async fn create(ctx: &Ctx, args: ResourceCreateArgs) -> anyhow::Result<()> {
    let saved = ctx
        .client
        .put(&["resources", &args.name], resource_body(&args))
        .await?;
    if ctx.json {
        return emit_json(&saved);
    }
    emit(&format!(
        "saved resource {}\n{}",
        args.name,
        describe(&saved)
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> ResourceCreateArgs {
        let mut argv = vec![
            "sluice",
            "resources",
            "create",
            "db",
            "--agent",
            "a1",
            "--address",
            "h:5432",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Resources {
                command: Some(ResourcesCommand::Create(a)),
            } => a,
            other => panic!("wrong command: {other:?}"),
        }
    }

    #[test]
    fn body_has_only_given_fields() {
        let body = resource_body(&args(&[]));
        assert_eq!(
            body,
            json!({"name": "db", "kind": "postgres", "agent": "a1", "address": "h:5432", "labels": {}})
        );
        let body = resource_body(&args(&[
            "--database",
            "orders",
            "--credential",
            "ro",
            "--label",
            "env=prod",
            "--tls-mode",
            "verify-full",
            "--audit-mode",
            "fail_closed",
            "--max-connections",
            "50",
        ]));
        assert_eq!(body["database"], "orders");
        assert_eq!(body["credential"], "ro");
        assert_eq!(body["labels"], json!({"env": "prod"}));
        assert_eq!(body["tls_mode"], "verify-full");
        assert_eq!(body["audit_mode"], "fail_closed");
        assert_eq!(body["max_connections"], 50);
        assert!(body.get("max_connections_per_subject").is_none());
    }
}
