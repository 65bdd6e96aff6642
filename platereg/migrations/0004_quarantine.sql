-- Registry: plates in quarantine. A plate whose stored state or history cannot be
-- folded (a time outside 1900..2200 such as the -infinity an event of year 1
-- became before the time checks, or a row the fold fails on) is listed here. The
-- consumer keeps storing the plate's new events but leaves its state alone until
-- an operator repairs the history and runs `platereg quarantine release`.
-- Every timestamp column is already timestamptz (0001..0003); nothing to convert.
-- depends: 0001_initial

CREATE TABLE quarantined_plates (
    plate_key      text PRIMARY KEY,
    reason         text NOT NULL,          -- the rule broken; never data
    event_id       text,                   -- the stored event at fault, when known
    held_events    integer NOT NULL DEFAULT 0,   -- events stored but not folded since
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
