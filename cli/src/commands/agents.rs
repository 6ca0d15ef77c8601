//! `sluice agents`: which agents exist, whether they are connected and which policy snapshot they run.

use crate::commands::Ctx;
use crate::output::{emit, emit_json, field, items};
use crate::table::Table;

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let answer = ctx.client.get(&["agents"], &[]).await?;
    if ctx.json {
        return emit_json(&answer);
    }
    let mut table = Table::new(&["NAME", "CONNECTED", "SNAPSHOT", "VERSION", "LAST SEEN"]);
    for a in items(&answer, "agents") {
        table.push(vec![
            field(a, "name"),
            field(a, "connected"),
            field(a, "snapshot_version"),
            field(a, "agent_version"),
            field(a, "last_seen"),
        ]);
    }
    emit(&table.render())?;
    if table.is_empty() {
        eprintln!("no agents yet; enroll one with `sluice join-token create --agent NAME`");
    }
    Ok(())
}
