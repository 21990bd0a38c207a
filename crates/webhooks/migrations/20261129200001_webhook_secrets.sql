-- Each tenant's webhook signing secrets. `owner_id` is the tenant key the services give
-- (the api's user id); this crate knows nothing more about it. A secret is sealed with
-- the deployment's key (AES-256-GCM, the owner and row bound in as associated data), so
-- the table alone, a dump or a backup, forges nothing.
CREATE TABLE webhook_secrets (
    id         bigserial PRIMARY KEY,
    owner_id   bigint      NOT NULL,
    -- nonce (12 bytes) || ciphertext || tag
    sealed     bytea       NOT NULL,
    -- Which deployment key sealed it: the first 8 bytes of the SHA-256 of that key.
    key_id     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- NULL for the owner's current secret; a rotated-out one signs until then.
    retires_at timestamptz
);
CREATE INDEX webhook_secrets_owner_idx ON webhook_secrets (owner_id, id DESC);
-- One current secret per owner (rotations of one owner also take a lock).
CREATE UNIQUE INDEX webhook_secrets_current_idx ON webhook_secrets (owner_id) WHERE retires_at IS NULL;
