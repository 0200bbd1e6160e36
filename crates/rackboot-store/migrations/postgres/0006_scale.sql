-- Large fleets. Machine pages are cut by name in byte order (COLLATE "C",
-- as SQLite and the CLI sort), which the default-collation unique index on
-- name cannot serve: without this index every page sorted the whole table.
CREATE INDEX machines_name_bytes ON machines (name COLLATE "C");
