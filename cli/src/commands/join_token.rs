//! `sluice join-token create`: one-time enrollment tokens for new agents.

use std::io::IsTerminal;

use anyhow::bail;
use serde_json::json;

use crate::cli::JoinTokenCommand;
use crate::commands::Ctx;
use crate::output::{emit_json, emit_line, field};

/// The CLI only knows the REST URL; the agent needs the gRPC endpoint.
const GRPC_URL_HINT: &str = "https://<control-plane-host>:8443";

pub async fn run(ctx: &Ctx, cmd: JoinTokenCommand) -> anyhow::Result<()> {
    let JoinTokenCommand::Create { agent, ttl } = cmd;
    let created = ctx
        .client
        .post(&["join-tokens"], json!({"agent": agent, "ttl": ttl}))
        .await?;
    if ctx.json {
        return emit_json(&created);
    }
    let Some(token) = created.get("token").and_then(|t| t.as_str()) else {
        bail!("the control plane's answer has no `token` field");
    };
    emit_line(token)?;
    // Repeat the token in the hint only when it is on screen anyway; when
    // stdout is captured, stderr may be a CI log that should not hold it.
    let shown = if std::io::stdout().is_terminal() {
        token
    } else {
        "<token>"
    };
    eprintln!(
        "join token for agent {} valid until {} (control plane CA fingerprint {})",
        field(&created, "agent"),
        field(&created, "expires_at"),
        field(&created, "ca_fingerprint"),
    );
    eprintln!("hint: sluice-agent run --control-plane {GRPC_URL_HINT} --join-token {shown}");
    Ok(())
}
