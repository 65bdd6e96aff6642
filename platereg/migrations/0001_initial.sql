-- Plate Registry: initial schema.
-- depends:

-- Every accepted event, once (the history). The fold of a plate's rows sorted
-- by (event_time, event_id) is its current state.
CREATE TABLE plate_events (
    event_id        text PRIMARY KEY,
    plate_key       text NOT NULL,
    type            text NOT NULL,
    source          text NOT NULL,
    event_time      timestamptz NOT NULL,
    data            jsonb NOT NULL,
    fingerprint     text NOT NULL,          -- sha256 of the normalized content
    kafka_partition integer,
    kafka_offset    bigint,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plate_events_fold_idx ON plate_events (plate_key, event_time, event_id);

-- Current state of every plate that has at least one accepted event.
-- `issued` is false until a plate.issued event is in the fold (unknown plate).
CREATE TABLE plates (
    plate_key          text PRIMARY KEY,
    jurisdiction       text NOT NULL,
    plate              text NOT NULL,
    issued             boolean NOT NULL DEFAULT false,
    plate_class        text,
    expires_on         date,
    vehicle            jsonb,
    owner_id           text,
    owner              jsonb,
    device_id          text,
    suspension_reasons text[] NOT NULL DEFAULT '{}',
    stolen             boolean NOT NULL DEFAULT false,
    cancelled          boolean NOT NULL DEFAULT false,
    last_event_time    timestamptz NOT NULL,
    last_event_id      text NOT NULL,
    event_count        integer NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plates_owner_idx ON plates (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX plates_expires_idx ON plates (expires_on) WHERE issued AND NOT cancelled;

-- Kafka offsets of the registry consumer, written in the same transaction as
-- the effects of the records before them. The only offsets trusted on start.
CREATE TABLE consumer_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Outbox of enforcement-view changes: relayed to plates.status after commit
-- and read by GET /v1/hotlist. Writers take
-- pg_advisory_xact_lock(hashtext('status_changes')) before inserting so that
-- seq order is commit order (a cursor never skips a late-committing row).
CREATE TABLE status_changes (
    seq         bigserial PRIMARY KEY,
    plate_key   text NOT NULL,
    view        jsonb NOT NULL,
    flagged     boolean NOT NULL,     -- status of the new view is not `valid`
    was_flagged boolean NOT NULL,     -- status of the previous view was not `valid`
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_changes_plate_idx ON status_changes (plate_key, seq);

-- How far each relay has published an outbox.
CREATE TABLE relay_cursors (
    name     text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Rejected messages, recorded with the offset advance, published to the DLQ
-- topic after commit (so a crash between the two loses nothing).
CREATE TABLE dlq_messages (
    id             bigserial PRIMARY KEY,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    kafka_offset   bigint NOT NULL,
    key            bytea,
    value          bytea,
    reason         text NOT NULL,
    detail         text NOT NULL DEFAULT '',
    received_at    timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    replayed_at    timestamptz,
    UNIQUE (topic, partition, kafka_offset)
);
CREATE INDEX dlq_unpublished_idx ON dlq_messages (id) WHERE published_at IS NULL;

-- API keys: only a hash of the secret is stored.
CREATE TABLE api_keys (
    key_id         text PRIMARY KEY,
    name           text NOT NULL,
    role           text NOT NULL CHECK (role IN ('enforcement', 'portal', 'operator', 'ingest')),
    secret_hash    text NOT NULL,
    rate_limit     double precision,          -- requests/s; NULL = the default
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

-- Who looked up what.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    key_id       text NOT NULL,
    kind         text NOT NULL,        -- single, batch, candidates, hotlist
    jurisdiction text NOT NULL,
    plate        text NOT NULL,
    purpose      text,
    result       text NOT NULL         -- the status answered, or not_found
);
CREATE INDEX audit_plate_idx ON audit_log (jurisdiction, plate, at);
CREATE INDEX audit_key_idx ON audit_log (key_id, at);
CREATE INDEX audit_at_idx ON audit_log (at);

-- Owners' notice preferences (channels and language).
CREATE TABLE owner_preferences (
    owner_id   text PRIMARY KEY,
    channels   text[] NOT NULL,
    language   text CHECK (language IN ('en', 'fr')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Notices to owners and their delivery attempts.
CREATE TABLE notices (
    notice_id   uuid PRIMARY KEY,
    dedupe_key  text NOT NULL UNIQUE,   -- e.g. reminder:<plate_key>:<expires_on>:<N>, event:<id>:<owner>
    kind        text NOT NULL,
    plate_key   text NOT NULL,
    owner_id    text NOT NULL,
    language    text NOT NULL,
    channels    text[] NOT NULL,
    context     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notices_owner_idx ON notices (owner_id, created_at);

CREATE TABLE notice_deliveries (
    id          bigserial PRIMARY KEY,
    notice_id   uuid NOT NULL REFERENCES notices (notice_id),
    channel     text NOT NULL,
    attempt     integer NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed')),
    status_code integer,
    error       text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notice_deliveries_notice_idx ON notice_deliveries (notice_id, at);
