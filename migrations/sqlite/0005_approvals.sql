-- Just-in-time approvals (issue 5). Keep in step with the other engine's copy.

-- One statement waiting for (or decided by) human approval. Filed by the
-- agent that holds the statement; survives control-plane restarts.
CREATE TABLE approvals (
    id              TEXT PRIMARY KEY,
    agent           TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    statement_id    TEXT NOT NULL,
    subject         TEXT NOT NULL,
    groups_json     TEXT NOT NULL,
    resource        TEXT NOT NULL,
    statement       TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    parameters_json TEXT NOT NULL,
    rule            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    mode            TEXT NOT NULL,
    approvers_json  TEXT NOT NULL,
    min_approvals   BIGINT NOT NULL,
    ttl_ms          BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL,
    -- pending, approved, denied, withdrawn, expired, used
    status          TEXT NOT NULL,
    decided_ms      BIGINT,
    valid_until_ms  BIGINT
);
CREATE INDEX approvals_status ON approvals (status, created_ms);

-- Each approver's decision on a request (one per approver).
CREATE TABLE approval_votes (
    approval_id  TEXT NOT NULL,
    approver     TEXT NOT NULL,
    groups_json  TEXT NOT NULL,
    decision     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    time_ms      BIGINT NOT NULL,
    PRIMARY KEY (approval_id, approver)
);
