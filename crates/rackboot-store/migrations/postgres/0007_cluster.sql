-- Several rackboot servers on one database.
--
-- Change feed: every write the in-memory snapshots depend on sends a NOTIFY
-- on channel `rackboot_changes` with the changed row's id (DHCP leases: on
-- `rackboot_leases`, the whole lease), so the other
-- servers re-read that row within milliseconds. `src` is the writer's
-- application_name (each server sets its own), so a server skips its own
-- writes. A NOTIFY is sent at commit: a rolled-back write sends nothing.

CREATE FUNCTION rackboot_notify_row() RETURNS trigger AS $$
DECLARE
    rec record;
    kind text := TG_ARGV[0];
    payload json;
BEGIN
    IF TG_OP = 'DELETE' THEN rec := OLD; ELSE rec := NEW; END IF;
    -- One branch per table: a record's fields are resolved when read, and
    -- each table has only its own.
    IF kind = 'machine' THEN
        payload := json_build_object('t', kind, 'id', rec.id);
    ELSIF kind = 'install' THEN
        payload := json_build_object('t', 'machine', 'id', rec.machine_id);
    ELSIF kind = 'agent_session' THEN
        payload := json_build_object('t', kind, 'id', rec.machine_id);
    ELSIF kind = 'lease' THEN
        -- The whole lease: DHCP servers sharing a pool learn each other's
        -- offers and bindings without reading them back.
        payload := json_build_object('t', kind, 'lease', json_build_object(
            'ip', host(rec.ip), 'mac', rec.mac, 'client_id', rec.client_id,
            'hostname', rec.hostname, 'state', rec.state, 'expires_at', rec.expires_at,
            'subnet', rec.subnet, 'updated_at', rec.updated_at));
    ELSE
        payload := json_build_object('t', kind, 'id', rec.id, 'machine', rec.machine_id);
    END IF;
    -- Leases have their own channel: only DHCP servers follow them.
    PERFORM pg_notify(CASE WHEN kind = 'lease' THEN 'rackboot_leases' ELSE 'rackboot_changes' END,
        (payload::jsonb || jsonb_build_object('src', current_setting('application_name', true)))::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE FUNCTION rackboot_notify_table() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('rackboot_changes', json_build_object(
        't', TG_ARGV[0], 'src', current_setting('application_name', true))::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER machines_changed AFTER INSERT OR UPDATE OR DELETE ON machines
    FOR EACH ROW EXECUTE FUNCTION rackboot_notify_row('machine');
CREATE TRIGGER installs_changed AFTER INSERT OR UPDATE OR DELETE ON installs
    FOR EACH ROW EXECUTE FUNCTION rackboot_notify_row('install');
CREATE TRIGGER agent_sessions_changed AFTER INSERT OR UPDATE OR DELETE ON agent_sessions
    FOR EACH ROW EXECUTE FUNCTION rackboot_notify_row('agent_session');
CREATE TRIGGER workflows_changed AFTER INSERT OR UPDATE OR DELETE ON workflows
    FOR EACH ROW EXECUTE FUNCTION rackboot_notify_row('workflow');
CREATE TRIGGER leases_changed AFTER INSERT OR UPDATE ON leases
    FOR EACH ROW EXECUTE FUNCTION rackboot_notify_row('lease');
CREATE TRIGGER profiles_changed AFTER INSERT OR UPDATE OR DELETE ON profiles
    FOR EACH STATEMENT EXECUTE FUNCTION rackboot_notify_table('catalog');
CREATE TRIGGER selectors_changed AFTER INSERT OR UPDATE OR DELETE ON selectors
    FOR EACH STATEMENT EXECUTE FUNCTION rackboot_notify_table('catalog');

-- Live servers. Each upserts its row every second (heartbeat_at from the
-- database's clock, so servers' clocks do not matter); a server whose row
-- is older than the dead-after interval is dead, and its machines (BMC
-- polling, workflows) go to the survivors by rendezvous hashing on the
-- machine id. `id` is one incarnation: a server that lapsed comes back under
-- a new id, so nothing it owned before is its own any more.
CREATE TABLE cluster_members (
    id           uuid        NOT NULL PRIMARY KEY,
    name         text        NOT NULL,
    api_url      text        NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- Per row, on INSERT and DELETE only: a heartbeat (an upsert that updates)
-- sends nothing.
CREATE TRIGGER cluster_members_changed AFTER INSERT OR DELETE ON cluster_members
    FOR EACH ROW EXECUTE FUNCTION rackboot_notify_table('members');

-- The incarnation that runs each workflow. Only it may write the workflow
-- (the store refuses a write by another: fencing), so a server that lost
-- its machines while it was away cannot act on them when it comes back.
-- NULL: not claimed yet (the machine's owner claims it).
ALTER TABLE workflows ADD COLUMN owner uuid;
CREATE INDEX workflows_active_owner ON workflows (owner) WHERE state IN ('queued', 'running');

