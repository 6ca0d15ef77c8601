-- Sluice: notices of DDL for the agents serving this database.
--
-- Run once per target database, as a superuser (event triggers need one):
--   psql -d <database> -f docs/ddl-notices.sql
-- Running it again upgrades an earlier version in place.
--
-- Each transaction that runs DDL (CREATE, ALTER, DROP, GRANT, COMMENT,
-- ... on objects of this database) sends a notification on channel
-- sluice_ddl when it commits. Agents listen on it with the resource's own
-- credential and read the catalog again before judging or masking the
-- next statement, instead of within --catalog-max-age. The payload is
-- empty, so a migration's many commands send one notification.
--
-- Creating and dropping a session's own temporary tables, indexes and
-- sequences alone (CREATE TEMP TABLE, SELECT ... INTO TEMP, DROP TABLE of
-- one) sends nothing: no other session can read them, and reading a large
-- catalog again for each would stall every agent session on this
-- database. Everything else notifies, temporary views, functions and
-- types included (a permanent object may use those), and so does any
-- command the triggers cannot show to touch only such objects.
--
-- PostgreSQL runs no event trigger when it drops a session's temporary
-- objects itself (the session ends, DISCARD TEMP, ON COMMIT DROP), nor for
-- roles, databases and tablespaces (REASSIGN OWNED, ALTER ROLE ... SET):
-- a permanent policy or default using a temporary function or sequence
-- that goes away so, and changes to those, are seen by the agents within
-- --catalog-max-age.
--
-- To remove: DROP EVENT TRIGGER sluice_ddl; DROP EVENT TRIGGER sluice_ddl_start;
--            DROP EVENT TRIGGER sluice_ddl_drop; DROP FUNCTION sluice_notify_ddl();

CREATE OR REPLACE FUNCTION sluice_notify_ddl() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
DECLARE
    dropped text;
BEGIN
    -- What a command dropped is seen only by sql_drop, which runs between
    -- the command's ddl_command_start and ddl_command_end: it leaves its
    -- finding in a setting the start of every command clears.
    IF TG_EVENT = 'ddl_command_start' THEN
        PERFORM set_config('sluice.ddl_dropped', '', true);
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        -- A rule has no schema of its own: one on a temporary relation (a
        -- temporary view's) is told by the relation ending its identity.
        -- Anything permanent that used what was dropped is dropped with
        -- it (CASCADE), or the drop fails.
        PERFORM set_config('sluice.ddl_dropped',
            CASE WHEN EXISTS (SELECT FROM pg_event_trigger_dropped_objects()
                              WHERE NOT is_temporary
                              AND NOT (object_type = 'rule'
                                       AND object_identity ~ ' on pg_temp[.]([^" ]+|"([^"]|"")*")$'))
                 THEN 'permanent' ELSE 'temporary' END,
            true);
        RETURN;
    END IF;
    dropped := coalesce(current_setting('sluice.ddl_dropped', true), '');
    IF dropped = 'permanent'
       -- DROP OWNED also revokes and takes the role out of policies.
       OR TG_TAG = 'DROP OWNED'
       OR EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
                  WHERE schema_name IS DISTINCT FROM 'pg_temp'
                  OR command_tag NOT IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
                                         'CREATE INDEX', 'CREATE SEQUENCE', 'ALTER SEQUENCE'))
       -- A drop of temporary objects only is told by the two companions
       -- below; without them running, `dropped` may be stale or the
       -- session's own.
       OR (NOT EXISTS (SELECT FROM pg_event_trigger_ddl_commands())
           AND (dropped <> 'temporary'
                OR (SELECT count(*) FROM pg_event_trigger t
                    JOIN pg_event_trigger e ON e.evtname = 'sluice_ddl' AND e.evtfoid = t.evtfoid
                    WHERE t.evtname IN ('sluice_ddl_start', 'sluice_ddl_drop')
                    AND t.evtenabled <> 'D') <> 2))
    THEN
        PERFORM pg_notify('sluice_ddl', '');
    END IF;
END
$$;

DROP EVENT TRIGGER IF EXISTS sluice_ddl;
CREATE EVENT TRIGGER sluice_ddl ON ddl_command_end
    EXECUTE FUNCTION sluice_notify_ddl();
DROP EVENT TRIGGER IF EXISTS sluice_ddl_start;
CREATE EVENT TRIGGER sluice_ddl_start ON ddl_command_start
    EXECUTE FUNCTION sluice_notify_ddl();
DROP EVENT TRIGGER IF EXISTS sluice_ddl_drop;
CREATE EVENT TRIGGER sluice_ddl_drop ON sql_drop
    EXECUTE FUNCTION sluice_notify_ddl();
