-- Sluice control plane schema (SQLite). Keep in step with ../postgres/.
-- Times are Unix milliseconds (UTC); JSON is stored as text.

CREATE TABLE config_revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO config_revision (id, value) VALUES (1, 1);

-- Keys the control plane owns (token issuer, snapshot signer, CA), sealed
-- with the vault's key-encryption key.
CREATE TABLE system_keys (
    name        TEXT PRIMARY KEY,
    kid         TEXT NOT NULL,
    kek_id      TEXT NOT NULL,
    wrapped_dek BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    public_data BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE resources (
    name          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    agent         TEXT NOT NULL,
    address       TEXT NOT NULL,
    database_name TEXT NOT NULL DEFAULT '',
    credential    TEXT NOT NULL DEFAULT '',
    labels_json   TEXT NOT NULL DEFAULT '{}',
    tls_mode      TEXT NOT NULL DEFAULT 'disable',
    audit_mode    TEXT NOT NULL DEFAULT 'fail_closed',
    updated_at    BIGINT NOT NULL
);

-- Credentials are write-only through the API: envelope-encrypted secret,
-- never returned.
CREATE TABLE credentials (
    name        TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    kek_id      TEXT NOT NULL,
    wrapped_dek BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE policy_versions (
    version    BIGINT PRIMARY KEY,
    document   TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revision   BIGINT NOT NULL
);

CREATE TABLE agents (
    name             TEXT PRIMARY KEY,
    cert_fingerprint TEXT NOT NULL,
    agent_version    TEXT NOT NULL DEFAULT '',
    enrolled_at      BIGINT NOT NULL,
    last_seen        BIGINT NOT NULL DEFAULT 0,
    snapshot_version BIGINT NOT NULL DEFAULT 0,
    peer             TEXT NOT NULL DEFAULT ''
);

CREATE TABLE join_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    agent       TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE audit_events (
    cursor          INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    agent           TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    time_ms         BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    session_id      TEXT NOT NULL DEFAULT '',
    subject         TEXT NOT NULL DEFAULT '',
    groups_json     TEXT NOT NULL DEFAULT '[]',
    resource        TEXT NOT NULL DEFAULT '',
    decision        TEXT NOT NULL DEFAULT '',
    rule            TEXT NOT NULL DEFAULT '',
    statement       TEXT NOT NULL DEFAULT '',
    parameters_json TEXT NOT NULL DEFAULT '[]',
    duration_us     BIGINT NOT NULL DEFAULT 0,
    rows_count      BIGINT NOT NULL DEFAULT 0,
    error           TEXT NOT NULL DEFAULT '',
    client_addr     TEXT NOT NULL DEFAULT '',
    attributes_json TEXT NOT NULL DEFAULT '{}',
    prev_hash       BLOB,
    hash            BLOB
);
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_subject ON audit_events (subject, time_ms);
CREATE INDEX audit_events_resource ON audit_events (resource, time_ms);
CREATE INDEX audit_events_session ON audit_events (session_id);
