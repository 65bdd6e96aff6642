-- Audit rows are committed by the registry API before the read they record is answered
-- (registry/api/audit.py): nothing writes a row twice, so the unique id that let a
-- replayed journal skip rows already written has no use, and its index (random UUIDs)
-- cost every insert. The append-only triggers and grants (0011, 0020, 0021) are unchanged.
-- depends: 0013_audit_row_id 0021_retention

DROP INDEX IF EXISTS audit_row_id_idx;
ALTER TABLE audit_log DROP COLUMN IF EXISTS row_id;
