-- A NOTIFY gives its transaction an id and takes a database-wide lock at commit that it
-- holds until the commit's WAL flush is done, so every such commit waits for the one before:
-- with one task per transaction (the API's POST /tasks) that, not the disk, caps the rate.
-- A writer may instead set flowforge.notify_after_commit for its transaction and send the
-- same notifications once committed (Queue::notify_inserted), from a transaction that
-- commits asynchronously: it holds the lock without waiting for the disk. Every other
-- writer keeps the triggers' notifications.

CREATE OR REPLACE FUNCTION tasks_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('flowforge.notify_after_commit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('flowforge_tasks', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload TEXT;
BEGIN
    IF current_setting('flowforge.notify_after_commit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM removed) > 300 THEN
            payload := 'r';
        ELSE
            SELECT 'd' || string_agg(id::text || ':' || coalesce(owner_id::text, ''), ',') INTO payload FROM removed;
        END IF;
    ELSE
        IF (SELECT count(*) FROM changed) > 600 THEN
            payload := 'r';
        ELSE
            SELECT 'c' || string_agg(id::text, ',') INTO payload FROM changed;
        END IF;
    END IF;
    IF payload IS NULL THEN
        RETURN NULL; -- the statement touched no row
    END IF;
    IF length(payload) > 7900 THEN
        payload := 'r';
    END IF;
    PERFORM pg_notify('flowforge_task_events', payload);
    RETURN NULL;
END
$$;
