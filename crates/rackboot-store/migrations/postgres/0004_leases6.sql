-- DHCPv6 (IA_NA) leases, keyed by address, like the DHCPv4 leases table.
CREATE TABLE leases6 (
    ip         inet        NOT NULL PRIMARY KEY,
    duid       text        NOT NULL,
    iaid       bigint      NOT NULL,
    mac        text,
    hostname   text,
    state      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    subnet     text        NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX leases6_duid ON leases6 (duid, iaid);
