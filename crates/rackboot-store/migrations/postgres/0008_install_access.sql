-- Who may fetch a pending install's boot script and files and call its
-- callbacks (issue 15): the address bound on the first fetch (rackboot's
-- DHCP lease of the machine, else the address that fetched), when that was
-- (the files are served for a short window after it), when the window
-- closed (the installer reported started), and the address the installed
-- system's completion came from when it was not the bound one. One row per
-- install, written once and then only amended.
CREATE TABLE install_access (
    install_id     uuid        NOT NULL PRIMARY KEY REFERENCES installs (id) ON DELETE CASCADE,
    bound_ip       inet        NOT NULL,
    first_fetch_at timestamptz NOT NULL,
    closed_at      timestamptz,
    done_ip        inet
);
