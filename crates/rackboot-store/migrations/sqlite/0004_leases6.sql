-- DHCPv6 (IA_NA) leases, keyed by address, like the DHCPv4 leases table.
CREATE TABLE leases6 (
    ip         TEXT    NOT NULL PRIMARY KEY,
    duid       TEXT    NOT NULL,
    iaid       INTEGER NOT NULL,
    mac        TEXT,
    hostname   TEXT,
    state      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    subnet     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX leases6_duid ON leases6 (duid, iaid);
