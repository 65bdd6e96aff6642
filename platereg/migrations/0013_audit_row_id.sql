-- Audit rows written through a registry API process's journal (registry/audit_journal.py)
-- carry the id the journal gave them, unique, so a row written again (the journal of a
-- killed process replayed, a COPY whose commit answer was lost) is kept once. Older rows
-- and rows inserted by hand have none (NULLs do not collide). Only a column and an index:
-- the append-only triggers and the grants of 0005/0011 apply to it as to every column.
-- depends: 0011_audit_owner_append_only 0012_owner_sessions

ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS row_id uuid;
CREATE UNIQUE INDEX IF NOT EXISTS audit_row_id_idx ON audit_log (row_id);
