-- Registry API: indexes for its read paths.
-- depends: 0001_initial

-- GET /v1/hotlist?since=: changes into, out of or inside a flagged status, by seq.
CREATE INDEX status_changes_hotlist_idx ON status_changes (seq) WHERE flagged OR was_flagged;

-- GET /v1/audit?key_id=...&since=... pages by id; the (key_id, at) index exists.
-- GET /v1/plates/.../events reads plate_events_fold_idx (plate_key, event_time, event_id).
