-- Retention of personal data (contract section 5), and the audit trail guarded by the
-- database itself.
--
-- 1. `retention`: how many days each kind of personal data is kept. `platereg migrate`
--    writes it from the PLATEREG_*_RETENTION_DAYS settings (platereg/retention.py) on
--    every run, as the schema's owner; `platereg purge` reads it (it may not change it),
--    and so do the audit triggers below. The values here are the defaults, for a
--    database migrated by something else.
-- 2. Audit rows: none younger than the audit retention can be deleted, by any role (the
--    owner and the purge included: a trigger, not a grant), and an inserted row's time
--    must be within a minute ahead of the database's clock and not past the retention.
--    Rows may legitimately arrive late (buffered while PostgreSQL was away, or replayed
--    from a killed API process's journal), never from the future.
-- 3. Dead letters: `purged_at` marks a record whose key and value the purge removed.
-- depends: 0011_audit_owner_append_only 0013_audit_row_id 0020_roles_per_service

CREATE TABLE retention (
    kind       text PRIMARY KEY,
    days       integer NOT NULL CHECK (days BETWEEN 1 AND 36500),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention (kind, days) VALUES
    ('audit', 365), ('notice', 365), ('dead_letter', 30), ('sign_in_link', 30),
    ('owner_session', 30);

ALTER TABLE dlq_messages ADD COLUMN IF NOT EXISTS purged_at timestamptz;

-- UPDATE and TRUNCATE: refused to everyone (as in 0011).
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only platereg purge removes rows, past retention';
END $$;

-- DELETE: refused for the whole statement when it would remove a row younger than the
-- retention (one check per statement over the deleted rows).
CREATE FUNCTION audit_log_check_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    keep interval := (SELECT make_interval(days => days) FROM retention WHERE kind = 'audit');
BEGIN
    IF keep IS NULL OR EXISTS (SELECT FROM deleted WHERE at >= now() - keep) THEN
        RAISE EXCEPTION 'audit_log is append-only: DELETE of a row younger than the '
                        'retention (%) refused', coalesce(keep::text, 'unknown')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only platereg purge removes rows, past retention';
    END IF;
    RETURN NULL;
END $$;

-- INSERT (and COPY): every new row's time within [now - retention, now + 1 minute].
CREATE FUNCTION audit_log_check_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    keep interval := (SELECT make_interval(days => days) FROM retention WHERE kind = 'audit');
    bad timestamptz;
BEGIN
    SELECT at INTO bad FROM inserted
     WHERE at > now() + interval '1 minute' OR at < now() - keep OR keep IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit_log: row time % refused: the database clock says %, rows '
                        'may be at most a minute ahead and not past the retention (%)',
                        bad, now(), coalesce(keep::text, 'unknown')
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- The checks read `retention` as its owner, whoever fires them, with a search path
-- nobody else can add to.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION audit_log_check_deleted() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION audit_log_check_inserted() SET search_path = %I, pg_temp',
                   current_schema());
END $$;
REVOKE ALL ON FUNCTION audit_log_check_deleted() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_log_check_inserted() FROM PUBLIC;

DROP TRIGGER IF EXISTS audit_log_no_recent_delete ON audit_log;
CREATE TRIGGER audit_log_delete_checked AFTER DELETE ON audit_log
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_check_deleted();
CREATE TRIGGER audit_log_time_checked AFTER INSERT ON audit_log
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_check_inserted();

-- What the purge looks for, without reading every row each time.
CREATE INDEX notices_unpurged_idx ON notices (created_at)
    WHERE recipient <> '{}'::jsonb OR context <> '{}'::jsonb;
CREATE INDEX dlq_unpurged_idx ON dlq_messages (received_at) WHERE purged_at IS NULL;
CREATE INDEX owner_tokens_expires_idx ON owner_tokens (expires_at);
CREATE INDEX owner_sessions_expires_idx ON owner_sessions (expires_at);
