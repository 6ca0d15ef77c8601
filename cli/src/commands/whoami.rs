//! `sluice whoami`: who the current token belongs to.

use crate::commands::Ctx;
use crate::output::{emit, emit_json, field, key_values};

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let me = ctx.client.get(&["whoami"], &[]).await?;
    if ctx.json {
        return emit_json(&me);
    }
    emit(&key_values(&[
        ("subject", field(&me, "subject")),
        ("kind", field(&me, "kind")),
        ("issuer", field(&me, "issuer")),
        ("groups", field(&me, "groups")),
        ("roles", field(&me, "roles")),
        ("expires at", field(&me, "expires_at")),
    ]))?;
    Ok(())
}
