-- Claims held by row locks (the engine's `claim` module): each open claim commits a
-- marker here beside its transaction and deletes it in the same commit that records its
-- tasks. A claim that died with its worker leaves its marker behind, and the attempt it
-- made is counted from it: a task that kills its worker every time still runs out of
-- attempts instead of being retried forever.
CREATE TABLE task_claims (
    xid        XID8        PRIMARY KEY,
    worker     TEXT        NOT NULL,
    task_ids   BIGINT[]    NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The queue table is rewritten all day: each task is inserted and updated once or twice.
-- Vacuum it after 2 % of it changed instead of the default 20 %, and without throttling
-- for long, so dead row versions and the dead index entries a claim walks past stay few.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
