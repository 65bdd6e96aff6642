-- One group role per service instead of one for all (platereg/security/roles.py).
-- The grants themselves are not written here: `platereg migrate` applies the table
-- GRANTS of platereg/security/roles.py after every migration run (roles.apply_grants),
-- so each table has exactly the grants of its line there. This migration takes away
-- what 0005 gave the one services' group: its privileges on every table and sequence,
-- and the default privileges that gave it every table created later. The role itself
-- is cluster-wide (other databases may still use it); it keeps no privilege here.
-- depends: 0005_roles 0013_audit_row_id

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'platereg_service') THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES'
                       ' FROM platereg_service', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON SEQUENCES'
                       ' FROM platereg_service', current_schema());
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM platereg_service',
                       current_schema());
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM platereg_service',
                       current_schema());
    END IF;
END $$;
