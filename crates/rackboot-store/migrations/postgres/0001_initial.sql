-- rackboot schema, PostgreSQL flavour. Timestamps are timestamptz holding whole
-- milliseconds (the store truncates on write, like SQLite's integer milliseconds),
-- MACs are lower-case colon-separated text ("52:54:00:12:34:56").

CREATE TABLE machines (
    id         uuid        NOT NULL PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    uuid       uuid,
    arch       text,
    labels     jsonb       NOT NULL,
    intent     jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- One row per NIC; the primary key makes a MAC belong to at most one machine.
CREATE TABLE machine_macs (
    mac        text    NOT NULL PRIMARY KEY,
    machine_id uuid    NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    ordinal    integer NOT NULL,
    UNIQUE (machine_id, ordinal)
);

CREATE TABLE profiles (
    name        text        NOT NULL PRIMARY KEY,
    description text        NOT NULL,
    kernel      text,
    initrds     jsonb       NOT NULL,
    cmdline     text        NOT NULL,
    ipxe_script text,
    loader      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE selectors (
    name    text  NOT NULL PRIMARY KEY,
    profile text  NOT NULL,
    matches jsonb NOT NULL
);

CREATE TABLE leases (
    ip         inet        NOT NULL PRIMARY KEY,
    mac        text,
    client_id  text,
    hostname   text,
    state      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    subnet     text        NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX leases_mac ON leases (mac);

CREATE TABLE events (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    kind       text        NOT NULL,
    machine_id uuid,
    mac        text,
    message    text        NOT NULL,
    data       jsonb       NOT NULL
);

CREATE INDEX events_machine_id ON events (machine_id, id);
CREATE INDEX events_mac ON events (mac, id);
