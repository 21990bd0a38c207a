-- Browser sessions. The web UI signs in once with an API token and then holds an
-- HttpOnly cookie. Only the SHA-256 of the session id is stored. A session hangs off
-- the token it was opened with, so revoking or expiring the token ends its sessions.
CREATE TABLE sessions (
    id_hash    BYTEA       PRIMARY KEY,
    token_id   BIGINT      NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    -- Sent back by the UI in X-CSRF-Token on every change (double submit, kept in memory
    -- by the page: a cross-site form cannot know it).
    csrf_token TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
CREATE INDEX sessions_token_idx ON sessions (token_id);
