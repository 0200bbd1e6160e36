-- rackboot schema, SQLite flavour. Timestamps are INTEGER unix milliseconds (UTC),
-- UUIDs are lower-case hyphenated TEXT, JSON is TEXT, MACs are lower-case
-- colon-separated TEXT ("52:54:00:12:34:56").

CREATE TABLE machines (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    uuid       TEXT,
    arch       TEXT,
    labels     TEXT    NOT NULL,
    intent     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One row per NIC; the primary key makes a MAC belong to at most one machine.
CREATE TABLE machine_macs (
    mac        TEXT    NOT NULL PRIMARY KEY,
    machine_id TEXT    NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    ordinal    INTEGER NOT NULL,
    UNIQUE (machine_id, ordinal)
);

CREATE TABLE profiles (
    name        TEXT    NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    kernel      TEXT,
    initrds     TEXT    NOT NULL,
    cmdline     TEXT    NOT NULL,
    ipxe_script TEXT,
    loader      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE selectors (
    name    TEXT NOT NULL PRIMARY KEY,
    profile TEXT NOT NULL,
    matches TEXT NOT NULL
);

-- ip is the dotted quad; list_leases sorts numerically in Rust.
CREATE TABLE leases (
    ip         TEXT    NOT NULL PRIMARY KEY,
    mac        TEXT,
    client_id  TEXT,
    hostname   TEXT,
    state      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    subnet     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX leases_mac ON leases (mac);

-- AUTOINCREMENT: ids never go backwards, even after the newest rows are deleted
-- (they are SSE Last-Event-IDs).
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    machine_id TEXT,
    mac        TEXT,
    message    TEXT    NOT NULL,
    data       TEXT    NOT NULL
);

CREATE INDEX events_machine_id ON events (machine_id, id);
CREATE INDEX events_mac ON events (mac, id);
