-- The audit trail records owner reads and cannot be rewritten by anyone.
-- depends: 0005_roles

-- Reads of an owner's records (plates, notices, preferences, owner tokens) name the
-- owner; a read of an owner record that is not about a plate has no plate.
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS owner_id text;
ALTER TABLE audit_log ALTER COLUMN jurisdiction DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN plate DROP NOT NULL;
CREATE INDEX IF NOT EXISTS audit_owner_idx ON audit_log (owner_id, at)
    WHERE owner_id IS NOT NULL;

-- Beyond the grants of 0005 (the services' role may only INSERT and SELECT): even a
-- role with the privilege (the owner, the purge role, a superuser without
-- session_replication_role = replica) cannot UPDATE or TRUNCATE audit rows, nor
-- DELETE a row younger than a day (the purge's shortest retention).
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.at < now() - interval '1 day' THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only platereg audit purge removes rows, past retention';
END $$;

DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_recent_delete ON audit_log;
CREATE TRIGGER audit_log_no_recent_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
