-- Least-privilege roles (see platereg/roles.py). The role running the
-- migrations owns the schema; the services get data access only, and may
-- only add to and read the audit trail; the purge role may delete from it.
-- depends: 0002_registry_expiry 0003_api_indexes

-- Group roles, cluster-wide: created here when missing (needs CREATEROLE
-- then; `platereg roles` creates them beforehand for a non-superuser owner).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'platereg_service') THEN
        CREATE ROLE platereg_service NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'platereg_purge') THEN
        CREATE ROLE platereg_purge NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database's migration created them at the same moment
END $$;

-- Nobody but the owner creates objects in the schema (the default before PostgreSQL 15
-- let every role do so). Only the schema's owner may change this; others are told.
DO $$
BEGIN
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'could not revoke CREATE on schema % from PUBLIC', current_schema();
END $$;

-- Every application table (not yoyo's own) now, and every table and sequence
-- that later migrations create.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema() AND tablename NOT LIKE '%yoyo%' LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO platereg_service', t);
    END LOOP;
    FOR t IN SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() LOOP
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %I TO platereg_service', t);
    END LOOP;
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE'
                   ' ON TABLES TO platereg_service', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT'
                   ' ON SEQUENCES TO platereg_service', current_schema());
END $$;

-- The audit trail: services add and read rows; only the purge deletes them.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM platereg_service;
GRANT SELECT, DELETE ON audit_log TO platereg_purge;
