-- Owner tokens (contract section 5): each signed owner token names a session row,
-- so that sign-out ends it at once and mints are limited per owner across processes.
-- depends: 0006_notices

CREATE TABLE owner_sessions (
    session_id text PRIMARY KEY,            -- random, inside the signed token
    owner_id   text NOT NULL,
    via        text NOT NULL CHECK (via IN ('portal', 'link')),
    key_id     text,                        -- the portal key that minted it
    link_hash  text,                        -- the sign-in link it came from (owner_tokens)
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX owner_sessions_owner_idx ON owner_sessions (owner_id, created_at);

-- Reads of owner records name the owner and may have no plate (a token mint). The
-- same statements as the audit branch's migration, so either may run first.
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS owner_id text;
ALTER TABLE audit_log ALTER COLUMN jurisdiction DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN plate DROP NOT NULL;
CREATE INDEX IF NOT EXISTS audit_owner_idx ON audit_log (owner_id, at)
    WHERE owner_id IS NOT NULL;
