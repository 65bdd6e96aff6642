-- Signed producers (contract section 2, "Signed producers").
--
-- 1. producers: each producer of plates.events, the source prefixes it may speak for,
--    and whether it is revoked; producer_secrets: its secrets (one, or two during a
--    rotation). The registry keeps the secrets themselves (an HMAC is checked with the
--    key, not a hash of it). `platereg sources producer add|rotate|retire-secret|revoke`
--    changes them; every change bumps producers_version (a trigger), which the registry
--    consumer reads in each batch's transaction to reload its producers.
-- 2. plate_events records who sent each event: the producer whose signature was
--    checked, and the authcontext (authtype, authid) the producer stamped on it (the
--    ingest API: api_key and the key id). Events stored before this have none.
-- 3. dlq_messages keeps the original headers of a rejected message (the signature
--    and, in binary mode, the ce_ attributes), relayed with the dead-letter copy and
--    re-sent by `platereg dlq replay`: JSON [[name, base64 of the value], ...].
-- depends: 0008_sources 0013_audit_row_id

CREATE TABLE producers (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    prefixes   text[] NOT NULL CHECK (cardinality(prefixes) BETWEEN 1 AND 100
                                      AND array_position(prefixes, '') IS NULL
                                      AND array_position(prefixes, NULL) IS NULL),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE producer_secrets (
    producer   text NOT NULL REFERENCES producers (name) ON DELETE CASCADE,
    serial     integer NOT NULL CHECK (serial > 0),   -- 1, then one more per rotation
    secret     text NOT NULL CHECK (secret ~ '^[A-Za-z0-9_-]{43}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer, serial)
);

CREATE TABLE producers_version (
    id      integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO producers_version VALUES (1, 1);

CREATE FUNCTION producers_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE producers_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER producers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON producers FOR EACH STATEMENT EXECUTE FUNCTION producers_bump();
CREATE TRIGGER producer_secrets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON producer_secrets FOR EACH STATEMENT EXECUTE FUNCTION producers_bump();

ALTER TABLE plate_events ADD COLUMN producer text;
ALTER TABLE plate_events ADD COLUMN authtype text;
ALTER TABLE plate_events ADD COLUMN authid text;

ALTER TABLE dlq_messages ADD COLUMN headers jsonb;

-- Who may read the secrets: the registry consumer (SELECT on the three tables) and the
-- operator commands (`platereg sources producer ...`: SELECT, INSERT, UPDATE, DELETE on
-- producers and producer_secrets, UPDATE on producers_version through the trigger). No
-- other role: not the purge role, not PUBLIC. Both run as platereg_service today, so it
-- holds the union; a role per service keeps these grants for those two roles only (and
-- the registry API, ingest API and notices roles get none of them).
REVOKE ALL ON producers, producer_secrets, producers_version FROM PUBLIC;
REVOKE ALL ON producers, producer_secrets, producers_version FROM platereg_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON producers, producer_secrets TO platereg_service;
GRANT SELECT, UPDATE ON producers_version TO platereg_service;
