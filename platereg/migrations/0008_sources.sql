-- Who may say what (contract revision 2, section 2).
--
-- 1. Events are identified by (source, id): the history's key becomes
--    (source, event_id). Every stored row keeps its place (event ids were
--    unique, so they are unique per source too); the fold index gets source as
--    its last column (the fold's tiebreaker after time and id).
-- 2. The source policy: which source prefixes may send which event types (and,
--    for plate.suspended / plate.reinstated, which reasons; 'none' = no reason).
--    Seeded once here with the contract's default (registry.policy.DEFAULT_POLICY);
--    `platereg sources` changes it and re-running `platereg migrate` never
--    touches it again. Every change bumps source_policy_version (a trigger), which
--    the consumer reads in each batch's transaction to reload the policy.
-- 3. Ingest API keys carry the source prefixes they may publish for.
-- depends: 0005_roles 0006_notices

ALTER TABLE plate_events DROP CONSTRAINT plate_events_pkey;
ALTER TABLE plate_events ADD CONSTRAINT plate_events_pkey PRIMARY KEY (source, event_id);
DROP INDEX plate_events_fold_idx;
CREATE INDEX plate_events_fold_idx ON plate_events (plate_key, event_time, event_id, source);

CREATE TABLE source_policy (
    prefix     text NOT NULL CHECK (prefix <> ''),
    type       text NOT NULL,
    reasons    text[],                  -- NULL: any reason; 'none': no reason given
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (prefix, type)
);

CREATE TABLE source_policy_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO source_policy_version VALUES (1, 1);

CREATE FUNCTION source_policy_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE source_policy_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER source_policy_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON source_policy FOR EACH STATEMENT EXECUTE FUNCTION source_policy_bump();

INSERT INTO source_policy (prefix, type, reasons) VALUES
    ('/registry/', 'plate.issued', NULL),
    ('/registry/', 'plate.renewed', NULL),
    ('/registry/', 'plate.transferred', NULL),
    ('/registry/', 'plate.owner_updated', NULL),
    ('/registry/', 'plate.cancelled', NULL),
    ('/registry/', 'plate.device_paired', NULL),
    ('/registry/', 'plate.device_unpaired', NULL),
    ('/registry/', 'plate.suspended', '{administrative}'),
    ('/registry/', 'plate.reinstated', '{administrative,none}'),
    ('/insurance/', 'plate.suspended', '{insurance_lapsed}'),
    ('/insurance/', 'plate.reinstated', '{insurance_lapsed}'),
    ('/fines/', 'plate.suspended', '{unpaid_fines}'),
    ('/fines/', 'plate.reinstated', '{unpaid_fines}'),
    ('/courts/', 'plate.suspended', '{court_order,unpaid_fines}'),
    ('/courts/', 'plate.reinstated', '{court_order,unpaid_fines}'),
    ('/emissions/', 'plate.suspended', '{emissions_failed}'),
    ('/emissions/', 'plate.reinstated', '{emissions_failed}'),
    ('/police/', 'plate.stolen_reported', NULL),
    ('/police/', 'plate.recovered', NULL);

-- Ingest keys: the source prefixes they may publish for (empty: none; other roles
-- publish nothing).
ALTER TABLE api_keys ADD COLUMN sources text[] NOT NULL DEFAULT '{}';

GRANT SELECT, INSERT, UPDATE, DELETE ON source_policy TO platereg_service;
GRANT SELECT, UPDATE ON source_policy_version TO platereg_service;
