//! `sluice credentials`: list, set and rotate credentials; secrets are read by [`crate::secret`] and never printed.

use serde_json::json;

use crate::cli::CredentialsCommand;
use crate::commands::Ctx;
use crate::output::{emit, emit_json, field, items};
use crate::secret::read_secret;
use crate::table::Table;

pub async fn run(ctx: &Ctx, cmd: CredentialsCommand) -> anyhow::Result<()> {
    match cmd {
        CredentialsCommand::List => {
            let answer = ctx.client.get(&["credentials"], &[]).await?;
            if ctx.json {
                return emit_json(&answer);
            }
            let mut table = Table::new(&["NAME", "USERNAME", "VERSION", "CREATED", "UPDATED"]);
            for c in items(&answer, "credentials") {
                table.push(vec![
                    field(c, "name"),
                    field(c, "username"),
                    field(c, "version"),
                    field(c, "created_at"),
                    field(c, "updated_at"),
                ]);
            }
            emit(&table.render())?;
            if table.is_empty() {
                eprintln!("no credentials yet; add one with `sluice credentials set`");
            }
            Ok(())
        }
        CredentialsCommand::Set {
            name,
            username,
            secret,
        } => {
            let secret = read_secret(&secret)?;
            let body = json!({"username": username, "secret": secret});
            let meta = ctx.client.put(&["credentials", &name], body).await?;
            if ctx.json {
                return emit_json(&meta);
            }
            emit(&format!(
                "saved credential {name} (username {}, version {})\n",
                field(&meta, "username"),
                field(&meta, "version")
            ))?;
            Ok(())
        }
        CredentialsCommand::Rotate {
            name,
            username,
            secret,
        } => {
            let secret = read_secret(&secret)?;
            let mut body = json!({"secret": secret});
            if let (Some(u), Some(obj)) = (username, body.as_object_mut()) {
                obj.insert("username".into(), json!(u));
            }
            let meta = ctx
                .client
                .post(&["credentials", &name, "rotate"], body)
                .await?;
            if ctx.json {
                return emit_json(&meta);
            }
            emit(&format!(
                "rotated credential {name}: now version {} (username {})\n",
                field(&meta, "version"),
                field(&meta, "username")
            ))?;
            Ok(())
        }
    }
}
