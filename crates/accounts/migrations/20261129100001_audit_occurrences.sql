-- Repeated refusals of anonymous callers are written as one row with their count
-- (a constant default: no table rewrite, old replicas keep inserting during an update).
ALTER TABLE audit_log ADD COLUMN occurrences integer NOT NULL DEFAULT 1 CHECK (occurrences > 0);
