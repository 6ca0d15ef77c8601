-- Session recording (issue 6). Keep in step with ../postgres/.

-- Position of an event in its session's hash chain (NULL for events
-- recorded before chaining). attributes_json is stored verbatim as the
-- agent sent it: the chain hash covers the exact text.
ALTER TABLE audit_events ADD COLUMN session_seq BIGINT;
CREATE INDEX audit_events_session_seq ON audit_events (session_id, session_seq);

-- The control plane's signature over a session's chain head, made when
-- the session's last event arrives (see audit-chain/src/seal.rs).
CREATE TABLE session_seals (
    session_id   TEXT PRIMARY KEY,
    agent        TEXT NOT NULL,
    event_count  BIGINT NOT NULL,
    head_hash    BLOB NOT NULL,
    signature    BLOB NOT NULL,
    key_id       TEXT NOT NULL,
    sealed_at_ms BIGINT NOT NULL
);

-- When the agent's current connection began (0 when detached): a session
-- without an end that started before it is incomplete, not live.
ALTER TABLE agents ADD COLUMN attached_at BIGINT NOT NULL DEFAULT 0;
