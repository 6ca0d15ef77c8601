//! `sluice token issue`: mint tokens; only the token goes to stdout.

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::json;

use crate::cli::{TokenCommand, TokenIssueArgs};
use crate::commands::Ctx;
use crate::output::{emit_json, emit_line, field};

pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Issue(args) => issue(ctx, args).await,
    }
}

async fn issue(ctx: &Ctx, args: TokenIssueArgs) -> anyhow::Result<()> {
    let body = json!({
        "subject": args.subject,
        "groups": args.groups,
        "roles": args.roles,
        "ttl": args.ttl,
        "service_account": args.service_account,
    });
    let issued = ctx.client.post(&["tokens"], body).await?;
    if ctx.json {
        return emit_json(&issued);
    }
    let Some(token) = issued.get("token").and_then(|t| t.as_str()) else {
        bail!("the control plane's answer has no `token` field");
    };
    // Only the token on stdout, so `$(sluice token issue ...)` captures it.
    emit_line(token)?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "token for {} valid until {}",
            field(&issued, "subject"),
            field(&issued, "expires_at")
        );
    }
    Ok(())
}
