-- Provisioning lifecycle, workflows, agent sessions and webhooks.

-- Where each machine stands in its lifecycle and why; the operator's
-- maintenance flag ({reason, by, since}) and the last inspection's facts as
-- JSON. Machines enrolled before this migration start as 'enrolled'.
ALTER TABLE machines ADD COLUMN state TEXT NOT NULL DEFAULT 'enrolled';
ALTER TABLE machines ADD COLUMN state_reason TEXT;
ALTER TABLE machines ADD COLUMN state_changed_at INTEGER;
ALTER TABLE machines ADD COLUMN maintenance TEXT;
ALTER TABLE machines ADD COLUMN facts TEXT;
ALTER TABLE machines ADD COLUMN facts_at INTEGER;

-- Every lifecycle change and maintenance change, oldest first by id.
-- `changed_by` is who asked (`by` is an SQL keyword). workflow_id is history,
-- kept as written: no foreign key.
CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id  TEXT    NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    from_state  TEXT    NOT NULL,
    to_state    TEXT    NOT NULL,
    changed_by  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    workflow_id TEXT
);

CREATE INDEX transitions_machine ON transitions (machine_id, id);

-- A workflow is stored whole as JSON (`body`, steps included) so a restarted
-- server resumes it where it was; the other columns copy what queries filter
-- and sort on.
CREATE TABLE workflows (
    id         TEXT    NOT NULL PRIMARY KEY,
    machine_id TEXT    NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body       TEXT    NOT NULL
);

CREATE INDEX workflows_state ON workflows (state);
CREATE INDEX workflows_machine ON workflows (machine_id, created_at);

-- One agent session per machine. Only the token's SHA-256 is stored; UNIQUE
-- lets the agent API find the session from a presented token.
CREATE TABLE agent_sessions (
    machine_id   TEXT    NOT NULL PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
    token_sha256 TEXT    NOT NULL UNIQUE,
    bound_ip     TEXT    NOT NULL,
    issued_at    INTEGER NOT NULL,
    workflow_id  TEXT,
    instance     TEXT,
    boot_id      TEXT
);

-- Webhooks; events is a JSON array of filter words, the HMAC key is sealed by
-- the server's secret key and kept in its own column like bmc_password.
CREATE TABLE webhooks (
    name          TEXT    NOT NULL PRIMARY KEY,
    url           TEXT    NOT NULL,
    events        TEXT    NOT NULL,
    enabled       INTEGER NOT NULL,
    sealed_secret TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- The outbox: one row per event and webhook. body is the exact JSON sent
-- (signed byte for byte), so it is TEXT, never re-encoded.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook         TEXT    NOT NULL REFERENCES webhooks (name) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL,
    event_kind      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER
);

CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_webhook ON deliveries (webhook, id);
