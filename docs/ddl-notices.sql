-- Sluice: notices of DDL for the agents serving this database.
--
-- Run once per target database, as a superuser (event triggers need one):
--   psql -d <database> -f docs/ddl-notices.sql
--
-- Each transaction that runs DDL (CREATE, ALTER, DROP, GRANT, COMMENT,
-- ... on objects of this database) sends a notification on channel
-- sluice_ddl when it commits. Agents listen on it with the resource's own
-- credential and read the catalog again before judging or masking the
-- next statement, instead of within --catalog-max-age. The payload is
-- empty, so a migration's many commands send one notification.
--
-- To remove: DROP EVENT TRIGGER sluice_ddl; DROP FUNCTION sluice_notify_ddl();

CREATE OR REPLACE FUNCTION sluice_notify_ddl() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
BEGIN
    PERFORM pg_notify('sluice_ddl', '');
END
$$;

DROP EVENT TRIGGER IF EXISTS sluice_ddl;
CREATE EVENT TRIGGER sluice_ddl ON ddl_command_end
    EXECUTE FUNCTION sluice_notify_ddl();
