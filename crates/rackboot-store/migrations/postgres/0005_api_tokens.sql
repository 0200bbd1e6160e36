-- Named API tokens with roles. Only the SHA-256 of a token is stored; the
-- token is shown once, when it is created. A revoked token's row is deleted.
-- Every server looks tokens up in this table on each request, so a token
-- revoked through one server is refused by all of them at once.
CREATE TABLE api_tokens (
    name         text        NOT NULL PRIMARY KEY,
    role         text        NOT NULL,
    sha256       text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    created_by   text        NOT NULL,
    last_used_at timestamptz
);
