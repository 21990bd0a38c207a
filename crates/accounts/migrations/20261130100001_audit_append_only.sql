-- The audit trail is append-only for the app's login roles: they add records, and remove
-- only expired ones, through this function, which keeps at least the last 7 days
-- whatever retention it is asked for. So a stolen app password cannot erase or rewrite
-- what was recorded about its use. (Roles exist only where the database image created
-- them; elsewhere, as in tests, there is nothing to revoke.)
CREATE FUNCTION purge_audit_log(older_than interval) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    WITH gone AS (DELETE FROM audit_log WHERE at < now() - greatest(older_than, interval '7 days') RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION purge_audit_log(interval) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'flowforge_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM flowforge_app;
        GRANT EXECUTE ON FUNCTION purge_audit_log(interval) TO flowforge_app;
    END IF;
END
$$;
