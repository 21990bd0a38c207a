-- Accounts, API tokens, the audit log and idempotency keys: the api service's schema.

CREATE TYPE user_role AS ENUM ('user', 'admin');

CREATE TABLE users (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    role       user_role   NOT NULL DEFAULT 'user',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Only a SHA-256 of each token is stored: tokens are 256-bit random strings, so a fast
-- hash is enough (no dictionary to attack) and keeps authentication to one index lookup.
CREATE TABLE api_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT        NOT NULL DEFAULT '',
    token_hash BYTEA       NOT NULL UNIQUE,
    -- The first characters, so people can tell their tokens apart in listings.
    prefix     TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

ALTER TABLE tasks ADD CONSTRAINT tasks_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE SET NULL;

-- Every state-changing request: who, what, when, from where, and how it ended.
CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_id    BIGINT,
    token_id   BIGINT,
    method     TEXT        NOT NULL,
    route      TEXT        NOT NULL,
    path       TEXT        NOT NULL,
    target     TEXT,
    status     SMALLINT    NOT NULL,
    request_id TEXT,
    client_ip  TEXT,
    user_agent TEXT
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, at);

-- Create requests carrying an Idempotency-Key: the first response is stored and
-- replayed for retries of the same request.
CREATE TABLE idempotency_keys (
    owner_id     BIGINT      NOT NULL,
    key          TEXT        NOT NULL,
    request_hash BYTEA       NOT NULL,
    status       SMALLINT,
    response     JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
