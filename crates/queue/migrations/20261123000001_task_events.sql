-- The change feed behind live views (the api's server-sent events): once per statement,
-- the ids of the tasks it inserted or updated ('c1,2,3') or deleted ('d<id>:<owner>,...').
-- NOTIFY payloads are limited to 8000 bytes, so a statement touching more rows sends
-- 'r' (resync) and listeners reload instead. One notification per statement keeps the
-- cost off the queue's hot path: a worker's claim or outcome batch is one statement.
CREATE FUNCTION tasks_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload TEXT;
BEGIN
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

CREATE TRIGGER tasks_events_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_change();
CREATE TRIGGER tasks_events_update AFTER UPDATE ON tasks
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_change();
CREATE TRIGGER tasks_events_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_change();
