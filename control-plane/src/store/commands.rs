//! The outbox of messages for agents (approval decisions, session kills).
//! Any replica may write one; the replica the agent is attached to sends
//! it (see `crate::commands`).

use sqlx::Row as _;

use super::{Result, Store};

/// A message waiting for its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    pub id: String,
    pub agent: String,
    /// An encoded `ControlMessage`.
    pub message: Vec<u8>,
    pub created_ms: i64,
}

impl Store {
    /// Stores a message; with `sent_ms`, as already claimed (the replica
    /// writing it is about to send it).
    pub async fn insert_agent_command(&self, c: &AgentCommand, sent_ms: Option<i64>) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_commands (id, agent, message, created_ms, sent_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.id)
        .bind(&c.agent)
        .bind(&c.message)
        .bind(c.created_ms)
        .bind(sent_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Messages not yet sent that were written at or after `since_ms`,
    /// oldest first; `agent` narrows them to one agent.
    pub async fn unsent_agent_commands(
        &self,
        agent: Option<&str>,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<AgentCommand>> {
        let rows = sqlx::query(
            "SELECT id, agent, message, created_ms FROM agent_commands WHERE sent_ms IS NULL AND created_ms >= $1 AND ($2 = '' OR agent = $2) ORDER BY created_ms, id LIMIT $3",
        )
        .bind(since_ms)
        .bind(agent.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_of).collect()
    }

    /// Messages already sent to `agent` that were written at or after
    /// `since_ms`, newest first (so a `limit` keeps the latest).
    pub async fn sent_agent_commands(
        &self,
        agent: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<AgentCommand>> {
        let rows = sqlx::query(
            "SELECT id, agent, message, created_ms FROM agent_commands WHERE sent_ms IS NOT NULL AND created_ms >= $1 AND agent = $2 ORDER BY created_ms DESC, id DESC LIMIT $3",
        )
        .bind(since_ms)
        .bind(agent)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(command_of).collect()
    }

    /// The agents that have messages not yet sent, written at or after
    /// `since_ms`.
    pub async fn agents_with_unsent_commands(&self, since_ms: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT agent FROM agent_commands WHERE sent_ms IS NULL AND created_ms >= $1 ORDER BY agent",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("agent")?)).collect()
    }

    /// Takes a message for sending; `false` when another replica (or an
    /// earlier pass of this one) took it first.
    pub async fn claim_agent_command(&self, id: &str, now_ms: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE agent_commands SET sent_ms = $1 WHERE id = $2 AND sent_ms IS NULL")
                .bind(now_ms)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed message back (its agent's stream did not take it).
    pub async fn unclaim_agent_command(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE agent_commands SET sent_ms = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes messages written before `before_ms`, sent or not (an unsent
    /// one that old is moot: its request expired, its agent is gone).
    /// Returns how many.
    pub async fn prune_agent_commands(&self, before_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM agent_commands WHERE created_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn command_of(r: &sqlx::any::AnyRow) -> Result<AgentCommand> {
    Ok(AgentCommand {
        id: r.try_get("id")?,
        agent: r.try_get("agent")?,
        message: r.try_get("message")?,
        created_ms: r.try_get("created_ms")?,
    })
}
