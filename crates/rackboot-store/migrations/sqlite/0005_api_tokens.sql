-- Named API tokens with roles. Only the SHA-256 of a token is stored; the
-- token is shown once, when it is created. A revoked token's row is deleted.
CREATE TABLE api_tokens (
    name         TEXT    NOT NULL PRIMARY KEY,
    role         TEXT    NOT NULL,
    sha256       TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    last_used_at INTEGER
);
