-- Notices: scheduler windows, the notices outbox, dispatch state, sign-in tokens.
-- depends: 0003_api_indexes 0004_quarantine 0005_roles

-- One notice per (plate, expires_on, window), ever: window_days is N for the
-- reminder N days before expires_on and -1 for `expired` (the day after).
-- seq orders the outbox; published_at marks rows relayed to plates.notices.
-- recipient: the contact data of the owner the notice is for, as it was when
-- the notice was made (a previous owner's, for transferred_out).
ALTER TABLE notices
    ADD COLUMN seq bigserial,
    ADD COLUMN published_at timestamptz,
    ADD COLUMN recipient jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN expires_on date,
    ADD COLUMN window_days integer;
CREATE UNIQUE INDEX notices_window_key ON notices (plate_key, expires_on, window_days)
    WHERE window_days IS NOT NULL;
CREATE INDEX notices_unpublished_idx ON notices (seq) WHERE published_at IS NULL;
CREATE INDEX notices_plate_idx ON notices (plate_key, created_at);

-- Owner preferences: a webhook endpoint for the webhook channel.
ALTER TABLE owner_preferences ADD COLUMN webhook_url text;

-- Delivery state of each notice on each channel it reached (the dispatcher's
-- queue): pending (due at next_at), sent, failed (for good; the next channel
-- gets a row), print (waiting for `platereg notices paper`).
CREATE TABLE notice_dispatch (
    notice_id  uuid NOT NULL REFERENCES notices (notice_id),
    channel    text NOT NULL,
    state      text NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'print')),
    attempts   integer NOT NULL DEFAULT 0,
    next_at    timestamptz NOT NULL DEFAULT now(),
    queued_at  timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notice_id, channel)
);
CREATE INDEX notice_dispatch_due_idx ON notice_dispatch (next_at) WHERE state = 'pending';
CREATE INDEX notice_dispatch_print_idx ON notice_dispatch (queued_at) WHERE state = 'print';

-- One-time sign-in links to the owner page: only a SHA-256 of the token.
CREATE TABLE owner_tokens (
    token_hash text PRIMARY KEY,
    owner_id   text NOT NULL,
    notice_id  uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX owner_tokens_owner_idx ON owner_tokens (owner_id, created_at);

-- The scheduler: the last day each scheduler finished, and the plates whose
-- expiry or cancellation changed since (written by the registry consumer), so
-- a run reads only what became due, never every plate.
CREATE TABLE notice_scheduler_runs (
    name        text PRIMARY KEY,
    last_day    date NOT NULL,
    last_run_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE notice_rechecks (
    plate_key text PRIMARY KEY,
    queued_at timestamptz NOT NULL DEFAULT now()
);
