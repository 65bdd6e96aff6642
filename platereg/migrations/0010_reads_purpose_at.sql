-- Registry API reads (contract revision 2, section 5): the case a read belongs to
-- (case_ref, beside purpose) and, for a past view, the `at` asked. (owner_id and
-- nullable plates: 0011; both migrations add them only if missing.)
-- depends: 0005_roles 0008_sources

ALTER TABLE audit_log
    ADD COLUMN IF NOT EXISTS case_ref text,
    ADD COLUMN IF NOT EXISTS as_at    timestamptz,      -- the `at` of the query, if any
    ADD COLUMN IF NOT EXISTS owner_id text;
ALTER TABLE audit_log ALTER COLUMN jurisdiction DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN plate DROP NOT NULL;

-- `at` reads fold `plate_events WHERE plate_key = ANY($1) AND event_time <= $2 ORDER BY
-- plate_key, event_time, event_id, source`: an index range scan of the fold index
-- (0008 made it (plate_key, event_time, event_id, source)); asserted here so the `at`
-- path never falls back to a scan of the whole history.
CREATE INDEX IF NOT EXISTS plate_events_fold_idx
    ON plate_events (plate_key, event_time, event_id, source);
