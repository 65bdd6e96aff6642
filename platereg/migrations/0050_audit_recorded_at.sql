-- The database's own time of each audit row, beside `at` (the registry API's clock when it
-- answered): a host whose clock jumped still leaves the time PostgreSQL stored the row, so
-- a reader can see the skew. Rows journaled by a killed API process and replayed later are
-- recorded at the replay. Older rows have none (unknown). Only a column with a default: the
-- append-only triggers and the grants of 0005/0011 apply to it as to every column.
-- depends: 0013_audit_row_id

ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS recorded_at timestamptz;
ALTER TABLE audit_log ALTER COLUMN recorded_at SET DEFAULT now();
