-- zis-inventory on PostgreSQL: three roles, so that the account that syncs cannot rewrite
-- or delete the history it wrote (docs/history.md, "PostgreSQL roles").
--
--   zis_inventory_owner    owns the schema: runs `python -m inventory db upgrade`, nothing else
--   zis_inventory_writer   runs `sync --no-migrate` and the daemon: inserts history, updates
--                          only the columns a sync updates, deletes no history
--   zis_inventory_auditor  reads everything (reports, db verify, db heads), writes nothing
--
-- Run it as a superuser (or a role with CREATEROLE that owns the database), connected to
-- the inventory's database, once BEFORE the first migration (it creates the roles) and
-- again AFTER every `db upgrade` (it grants on the tables the migrations made):
--
--   psql -v ON_ERROR_STOP=1 -d inventory -f contrib/postgres-roles.sql
--   ALTER ROLE zis_inventory_writer PASSWORD '...';   -- or certificates, or peer auth
--
-- It is idempotent. The triggers it adds apply to every role, the owner's too; the owner
-- can drop them (an attacker holding the owner role is what `db heads` kept elsewhere is
-- for). Drop them before downgrading below revision 0008:
--   DROP TRIGGER zis_inventory_sealed ON snapshots;
--   DROP TRIGGER zis_inventory_closed_once ON connection_versions;
-- and below revision 0013:
--   DROP TRIGGER zis_inventory_closed_once ON oauth_client_versions;

DO $roles$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['zis_inventory_owner', 'zis_inventory_writer',
                                'zis_inventory_auditor'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', name);
        END IF;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), name);
    END LOOP;
END
$roles$;

-- The owner creates the tables (PostgreSQL 15 lets only the schema's owner create in
-- public by default); the others only use the schema.
GRANT USAGE, CREATE ON SCHEMA public TO zis_inventory_owner;
GRANT USAGE ON SCHEMA public TO zis_inventory_writer, zis_inventory_auditor;

DO $grants$
DECLARE
    t record;
    grant_of text;
BEGIN
    IF to_regclass('public.snapshots') IS NULL THEN
        RAISE NOTICE 'no zis-inventory tables yet: run db upgrade as zis_inventory_owner, '
                     'then this file again';
        RETURN;
    END IF;
    -- The tables belong to the owner (this hands over the ones an earlier setup made as
    -- another role; a table's sequences go with it).
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'
               AND pg_get_userbyid(c.relowner) <> 'zis_inventory_owner' LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO zis_inventory_owner', t.relname);
    END LOOP;
    -- And the function guarding database_identity (its migration's), so the owner can
    -- downgrade.
    IF to_regprocedure('public.database_identity_fixed()') IS NOT NULL THEN
        ALTER FUNCTION public.database_identity_fixed() OWNER TO zis_inventory_owner;
    END IF;

    -- What a sync writes, table by table (inventory/store/ and inventory/discovery.py). History: inserted, never
    -- deleted; updated only where a later snapshot must (a version's end, a snapshot's
    -- hash in its own transaction).
    FOR t IN SELECT * FROM (VALUES
        ('alembic_version', 'SELECT'),
        ('sync_runs', 'SELECT, INSERT, UPDATE (status, finished_at, error)'),
        ('snapshots', 'SELECT, INSERT, UPDATE (prev_hash, chain_hash, chain_rows, '
            'chain_format)'),
        ('connection_changes', 'SELECT, INSERT'),
        ('connection_versions', 'SELECT, INSERT, UPDATE (valid_to)'),
        ('connections', 'SELECT, INSERT, UPDATE (allowed_domain, created_at, updated_at, '
            'header_name, username, created_by, uuid, oauth_url_subdomain, permission_scope, '
            'token_type, token_expiry, oauth_client_uuid, last_changed_at, removed_at)'),
        -- OAuth clients (§17): as connections, their history never deleted.
        ('oauth_client_versions', 'SELECT, INSERT, UPDATE (valid_to)'),
        ('oauth_clients', 'SELECT, INSERT, UPDATE (name, auth_url, token_url, grant_type, '
            'default_scopes, created_by, created_at, updated_at, last_changed_at, '
            'removed_at)'),
        -- The registry (discovery): listings are inserted; an integration's row moves
        -- its last_seen_at / removed_at / description / configured.
        ('registry_listings', 'SELECT, INSERT'),
        ('integrations', 'SELECT, INSERT, UPDATE (description, last_seen_at, removed_at, '
            'configured)'),
        -- Findings: an episode is opened, moved on and resolved, never deleted.
        ('findings', 'SELECT, INSERT, UPDATE (slug, severity, detail, last_seen_at, '
            'resolved_at, suppressed_by, suppressed_until, note)'),
        -- When the connection rules last read an integration's rows (bookkeeping, one
        -- row per integration, moved on by each full evaluation).
        ('findings_evaluations', 'SELECT, INSERT, UPDATE (snapshot_id, evaluated_at, '
            'valid_until, rules_digest)'),
        -- Each integration's row digests (internal, one row per integration, replaced
        -- by the snapshots that change rows).
        ('row_digests', 'SELECT, INSERT, UPDATE (format, snapshot_id, entries, entry_keys, '
            'entry_hashes)'),
        -- The outbox: a message is queued, then its delivery state moves; its attempts,
        -- the expiry ledger and the sinks' first sightings are only added to.
        ('notifications', 'SELECT, INSERT, UPDATE (status, attempts, next_attempt_at, '
            'last_attempt_at, last_status, last_error, sent_at)'),
        ('notification_attempts', 'SELECT, INSERT'),
        ('expiry_warnings', 'SELECT, INSERT'),
        ('notify_sinks', 'SELECT, INSERT'),
        -- The database's id (findings' SIEM ids are derived from it): read, never written;
        -- its migration's triggers refuse changing it to every role.
        ('database_identity', 'SELECT')
    ) AS g(relname, privileges) LOOP
        IF to_regclass('public.' || t.relname) IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON public.%I FROM zis_inventory_writer', t.relname);
            EXECUTE format('GRANT %s ON public.%I TO zis_inventory_writer',
                           t.privileges, t.relname);
        END IF;
    END LOOP;
    -- Tables of features this file does not list yet: the writer may read, add and
    -- update their rows, not delete them; say so, so that someone writes their line.
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname NOT IN (
                'alembic_version', 'sync_runs', 'snapshots', 'connection_changes',
                'connection_versions', 'connections', 'oauth_client_versions',
                'oauth_clients', 'registry_listings', 'integrations',
                'findings', 'findings_evaluations', 'row_digests', 'notifications',
                'notification_attempts', 'expiry_warnings', 'notify_sinks',
                'database_identity') LOOP
        grant_of := 'SELECT, INSERT, UPDATE';
        RAISE NOTICE 'table % is not listed in postgres-roles.sql: the writer gets %',
                     t.relname, grant_of;
        EXECUTE format('GRANT %s ON public.%I TO zis_inventory_writer', grant_of, t.relname);
    END LOOP;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO zis_inventory_writer;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO zis_inventory_auditor;
END
$grants$;

-- A snapshot's row never changes once hashed; before that, only the newest snapshot of
-- its integration (the one its transaction just inserted) may get its hash, and nothing
-- else of it may change.
CREATE OR REPLACE FUNCTION zis_inventory_sealed() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'snapshot % is history: it cannot be deleted', OLD.id;
    END IF;
    IF OLD.chain_hash IS NOT NULL THEN
        RAISE EXCEPTION 'snapshot % is hashed: its row cannot change', OLD.id;
    END IF;
    IF (to_jsonb(NEW) - 'prev_hash' - 'chain_hash' - 'chain_rows' - 'chain_format')
       IS DISTINCT FROM (to_jsonb(OLD) - 'prev_hash' - 'chain_hash' - 'chain_rows'
                         - 'chain_format') THEN
        RAISE EXCEPTION 'snapshot %: only its hash columns may be set', OLD.id;
    END IF;
    IF EXISTS (SELECT FROM snapshots s WHERE s.account = OLD.account
               AND s.integration = OLD.integration AND s.id > OLD.id) THEN
        RAISE EXCEPTION 'snapshot % is not the newest of its integration: it cannot be hashed '
                        'now', OLD.id;
    END IF;
    RETURN NEW;
END
$f$;

-- A version's end is set once, by the snapshot that closes it (connection_versions,
-- oauth_client_versions).
CREATE OR REPLACE FUNCTION zis_inventory_closed_once() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION '% row % is history: it cannot be deleted', TG_TABLE_NAME, OLD.id;
    END IF;
    IF OLD.valid_to IS NOT NULL
       OR (to_jsonb(NEW) - 'valid_to') IS DISTINCT FROM (to_jsonb(OLD) - 'valid_to') THEN
        RAISE EXCEPTION '% row %: only a current version''s valid_to may be set',
                        TG_TABLE_NAME, OLD.id;
    END IF;
    RETURN NEW;
END
$f$;

-- Events are never changed or deleted.
CREATE OR REPLACE FUNCTION zis_inventory_history() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION '% row % is history: it cannot be changed or deleted', TG_TABLE_NAME, OLD.id;
END
$f$;

DO $triggers$
BEGIN
    IF to_regclass('public.snapshots') IS NULL THEN
        RETURN;
    END IF;
    DROP TRIGGER IF EXISTS zis_inventory_sealed ON snapshots;
    CREATE TRIGGER zis_inventory_sealed BEFORE UPDATE OR DELETE ON snapshots
        FOR EACH ROW EXECUTE FUNCTION zis_inventory_sealed();
    DROP TRIGGER IF EXISTS zis_inventory_closed_once ON connection_versions;
    CREATE TRIGGER zis_inventory_closed_once BEFORE UPDATE OR DELETE ON connection_versions
        FOR EACH ROW EXECUTE FUNCTION zis_inventory_closed_once();
    IF to_regclass('public.oauth_client_versions') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS zis_inventory_closed_once ON oauth_client_versions;
        CREATE TRIGGER zis_inventory_closed_once BEFORE UPDATE OR DELETE
            ON oauth_client_versions FOR EACH ROW EXECUTE FUNCTION zis_inventory_closed_once();
    END IF;
    DROP TRIGGER IF EXISTS zis_inventory_history ON connection_changes;
    CREATE TRIGGER zis_inventory_history BEFORE UPDATE OR DELETE ON connection_changes
        FOR EACH ROW EXECUTE FUNCTION zis_inventory_history();
END
$triggers$;
