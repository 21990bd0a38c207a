-- The queue: one row per task. The task *is* its job, so creating a task and
-- enqueuing its work is a single INSERT (never a task without its job or the reverse).

CREATE TYPE task_status AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');

CREATE TABLE tasks (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title            TEXT        NOT NULL,
    description      TEXT        NOT NULL DEFAULT '',
    kind             TEXT        NOT NULL,
    payload          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    status           task_status NOT NULL DEFAULT 'pending',
    priority         SMALLINT    NOT NULL DEFAULT 0,
    run_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    max_attempts     INTEGER     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_secs     INTEGER     NOT NULL DEFAULT 300 CHECK (timeout_secs >= 1),
    last_error       TEXT,
    -- One object per failed attempt: {attempt, at, error, worker}. Appended only on
    -- failure, so the happy path pays nothing for the history.
    errors           JSONB       NOT NULL DEFAULT '[]'::jsonb,
    result           JSONB,
    owner_id         BIGINT,
    request_id       TEXT,
    trace_id         TEXT,
    -- Bumped by every change; the ETag for optimistic concurrency.
    version          BIGINT      NOT NULL DEFAULT 1,
    cancel_requested BOOLEAN     NOT NULL DEFAULT false,
    -- The fence: a fresh token per claim. Every worker write names the token it was
    -- given, so a worker that lost its lease can never overwrite a newer outcome.
    lease_token      UUID,
    lease_expires_at TIMESTAMPTZ,
    leased_by        TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    CONSTRAINT running_has_lease CHECK ((status = 'running') = (lease_token IS NOT NULL))
);

-- Claim order: priority, then age. Partial, so finished tasks cost nothing here.
CREATE INDEX tasks_ready_idx ON tasks (priority DESC, run_at, id) WHERE status = 'pending';
-- Lease rescue scans only running tasks.
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'running';
-- Retention cleanup of finished tasks.
CREATE INDEX tasks_finished_idx ON tasks (completed_at) WHERE status IN ('completed', 'failed', 'cancelled');
-- "My tasks", newest first (keyset pagination).
CREATE INDEX tasks_owner_idx ON tasks (owner_id, id);

-- Wake idle workers when work arrives, whoever inserted it (once per statement, so a
-- bulk insert sends one notification).
CREATE FUNCTION tasks_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowforge_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_insert();
