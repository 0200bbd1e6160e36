-- Provisioning lifecycle, workflows, agent sessions and webhooks.
--
-- The JSON columns added here are text, not jsonb: workflows, facts and
-- maintenance carry agent output and operator text, which may contain NUL
-- characters, and jsonb refuses their \u0000 escape. Nothing queries inside them.

-- Where each machine stands in its lifecycle and why; the operator's
-- maintenance flag ({reason, by, since}) and the last inspection's facts as
-- JSON. Machines enrolled before this migration start as 'enrolled'.
ALTER TABLE machines ADD COLUMN state text NOT NULL DEFAULT 'enrolled';
ALTER TABLE machines ADD COLUMN state_reason text;
ALTER TABLE machines ADD COLUMN state_changed_at timestamptz;
ALTER TABLE machines ADD COLUMN maintenance text;
ALTER TABLE machines ADD COLUMN facts text;
ALTER TABLE machines ADD COLUMN facts_at timestamptz;

-- Every lifecycle change and maintenance change, oldest first by id.
-- `changed_by` is who asked (`by` is an SQL keyword). workflow_id is history,
-- kept as written: no foreign key.
CREATE TABLE transitions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id  uuid        NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    from_state  text        NOT NULL,
    to_state    text        NOT NULL,
    changed_by  text        NOT NULL,
    reason      text        NOT NULL,
    workflow_id uuid
);

CREATE INDEX transitions_machine ON transitions (machine_id, id);

-- A workflow is stored whole as JSON (`body`, steps included) so a restarted
-- server resumes it where it was; the other columns copy what queries filter
-- and sort on.
CREATE TABLE workflows (
    id         uuid        NOT NULL PRIMARY KEY,
    machine_id uuid        NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    state      text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    body       text        NOT NULL
);

CREATE INDEX workflows_state ON workflows (state);
CREATE INDEX workflows_machine ON workflows (machine_id, created_at);

-- One agent session per machine. Only the token's SHA-256 is stored; UNIQUE
-- lets the agent API find the session from a presented token.
CREATE TABLE agent_sessions (
    machine_id   uuid        NOT NULL PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
    token_sha256 text        NOT NULL UNIQUE,
    bound_ip     inet        NOT NULL,
    issued_at    timestamptz NOT NULL,
    workflow_id  uuid,
    instance     uuid,
    boot_id      text
);

-- Webhooks; events is a JSON array of filter words, the HMAC key is sealed by
-- the server's secret key and kept in its own column like bmc_password.
CREATE TABLE webhooks (
    name          text        NOT NULL PRIMARY KEY,
    url           text        NOT NULL,
    events        text        NOT NULL,
    enabled       boolean     NOT NULL,
    sealed_secret text        NOT NULL,
    created_at    timestamptz NOT NULL
);

-- The outbox: one row per event and webhook. body is the exact JSON sent
-- (signed byte for byte), so it is text: jsonb would re-encode it.
CREATE TABLE deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook         text        NOT NULL REFERENCES webhooks (name) ON DELETE CASCADE,
    event_id        bigint      NOT NULL,
    event_kind      text        NOT NULL,
    body            text        NOT NULL,
    state           text        NOT NULL,
    attempts        bigint      NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz
);

CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_webhook ON deliveries (webhook, id);
