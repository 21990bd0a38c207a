-- Fair claims across owners: a claim gives each owner with due tasks its share of the
-- batch (fewest running first), each from its own tasks in claim order. Tasks without
-- an owner (the engine used directly) form one more group, owner 0 (user ids start at 1).
-- The ready index is keyed by that group first, so every part of a claim is a short walk
-- of one group's range; it replaces the global one, which a generic plan could otherwise
-- pick for one owner's part and then walk past every other owner's backlog.
CREATE INDEX tasks_ready_owner_idx ON tasks ((COALESCE(owner_id, 0)), priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE INDEX tasks_running_owner_idx ON tasks ((COALESCE(owner_id, 0)))
    WHERE status = 'running';
DROP INDEX tasks_ready_idx;
-- Unfinished tasks per owner are now counted from the two above.
DROP INDEX tasks_unfinished_owner_idx;
