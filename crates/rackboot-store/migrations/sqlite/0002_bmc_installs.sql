-- BMC of a machine: the public part as JSON ({address, username, insecure_tls})
-- and the password sealed by the server's secret key, kept apart so no query
-- that lists machines for the API ever needs it.
ALTER TABLE machines ADD COLUMN bmc TEXT;
ALTER TABLE machines ADD COLUMN bmc_password TEXT;

-- User templates for unattended files; built-in ones live in the binary.
CREATE TABLE install_templates (
    name        TEXT    NOT NULL PRIMARY KEY,
    family      TEXT    NOT NULL,
    description TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Install requests; the token is the single-use secret of the completion callback.
CREATE TABLE installs (
    id           TEXT    NOT NULL PRIMARY KEY,
    machine_id   TEXT    NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    os           TEXT    NOT NULL,
    template     TEXT,
    vars         TEXT    NOT NULL,
    token        TEXT    NOT NULL UNIQUE,
    state        TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    completed_at INTEGER
);

CREATE INDEX installs_machine ON installs (machine_id, requested_at);
