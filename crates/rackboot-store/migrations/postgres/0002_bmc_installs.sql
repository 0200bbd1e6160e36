-- BMC of a machine: the public part as JSON ({address, username, insecure_tls})
-- and the password sealed by the server's secret key, kept apart so no query
-- that lists machines for the API ever needs it.
ALTER TABLE machines ADD COLUMN bmc jsonb;
ALTER TABLE machines ADD COLUMN bmc_password text;

-- User templates for unattended files; built-in ones live in the binary.
CREATE TABLE install_templates (
    name        text        NOT NULL PRIMARY KEY,
    family      text        NOT NULL,
    description text        NOT NULL,
    source      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Install requests; the token is the single-use secret of the completion callback.
CREATE TABLE installs (
    id           uuid        NOT NULL PRIMARY KEY,
    machine_id   uuid        NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    os           text        NOT NULL,
    template     text,
    vars         jsonb       NOT NULL,
    token        text        NOT NULL UNIQUE,
    state        text        NOT NULL,
    requested_at timestamptz NOT NULL,
    completed_at timestamptz
);

CREATE INDEX installs_machine ON installs (machine_id, requested_at);
