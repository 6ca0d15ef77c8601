-- Messages for one agent (approval decisions, session kills), delivered by
-- whichever replica the agent is attached to, so a decision made through
-- one replica reaches an agent attached to another. Keep in step with the
-- other engine's copy.
CREATE TABLE agent_commands (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL,
    -- An encoded sluice.agent.v1.ControlMessage.
    message     BLOB NOT NULL,
    created_ms  BIGINT NOT NULL,
    -- When a replica handed it to the agent's stream; NULL until then.
    sent_ms     BIGINT
);
CREATE INDEX agent_commands_unsent ON agent_commands (agent, created_ms) WHERE sent_ms IS NULL;
