-- Each owner's unfinished tasks, counted when a user's creations are checked against
-- their cap (FLOWFORGE_USER_MAX_UNFINISHED_TASKS): without it the count would visit every
-- task the owner ever had. Tasks without an owner (the engine used directly) are not in
-- it, and cost it nothing.
CREATE INDEX tasks_unfinished_owner_idx ON tasks (owner_id)
    WHERE status IN ('pending', 'running') AND owner_id IS NOT NULL;
