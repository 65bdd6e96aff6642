-- Registry: markers of the expiry sweep, one per plate and expiry date, so the
-- change "became expired" is recorded exactly once even with several sweepers.
-- depends: 0001_initial

CREATE TABLE expiry_marks (
    plate_key  text NOT NULL,
    expires_on date NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plate_key, expires_on)
);
