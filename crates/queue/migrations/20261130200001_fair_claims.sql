-- Fair claims across owners: a claim first gives each owner with due tasks its share of
-- the batch (fewest running first), from its own tasks in claim order, then fills what
-- is left in the global order. These two indexes make each owner's part a short index
-- walk. Tasks without an owner (the engine used directly) are in neither and cost them
-- nothing.
CREATE INDEX tasks_ready_owner_idx ON tasks (owner_id, priority DESC, run_at, id)
    WHERE status = 'pending' AND owner_id IS NOT NULL;
CREATE INDEX tasks_running_owner_idx ON tasks (owner_id)
    WHERE status = 'running' AND owner_id IS NOT NULL;
-- Unfinished tasks per owner are now counted from the two above.
DROP INDEX tasks_unfinished_owner_idx;
