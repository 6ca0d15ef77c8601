//! Classifier tests: a kind for every statement form, the smuggling attempts
//! a client will try, tables, functions, WHERE, errors, and a cross-check
//! that the walk sees every node of the tree.

use pg_query::NodeRef;

use super::children::for_each_child;
use super::*;
use crate::kinds::{KindSet, SqlKind};
use crate::{CompiledPolicy, StatementFacts, Subject, compile, parse_document};

fn all(sql: &str) -> Vec<ClassifiedStatement> {
    classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn one(sql: &str) -> StatementFacts {
    let mut statements = all(sql);
    assert_eq!(statements.len(), 1, "{sql}: {statements:#?}");
    statements.remove(0).facts
}

fn kind_set(kinds: &[SqlKind]) -> KindSet {
    kinds.iter().copied().collect()
}

fn named(names: &[&str]) -> KindSet {
    names
        .iter()
        .map(|n| SqlKind::from_name(n).unwrap_or_else(|| panic!("kind {n}")))
        .collect()
}

/// Every kind of every statement of `sql`.
fn kinds_of(sql: &str) -> KindSet {
    all(sql)
        .iter()
        .fold(KindSet::EMPTY, |acc, s| acc.union(kind_set(&s.facts.kinds)))
}

/// Statement forms and the exact kinds they carry.
/// The kinds of a statement whose setting may be any parameter (computed,
/// or read from a relation), after its own kind.
macro_rules! sets_anything {
    ($first:literal) => {
        &[
            $first,
            "set",
            "set_role",
            "set_session_authorization",
            "other",
        ]
    };
}

const KINDS: &[(&str, &[&str])] = &[
    // Queries and DML.
    ("SELECT 1", &["select"]),
    ("VALUES (1), (2)", &["select"]),
    ("TABLE t", &["select"]),
    ("SELECT * FROM t FOR UPDATE", &["select", "lock"]),
    (
        "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)",
        &["select", "lock"],
    ),
    // Functions that do more than compute a value.
    (
        "SELECT query_to_xml('SELECT * FROM secret', true, false, '')",
        &["select", "dynamic_sql"],
    ),
    (
        "SELECT pg_catalog.table_to_xml('secret', true, false, '')",
        &["select", "dynamic_sql"],
    ),
    (
        "SELECT cursor_to_xml('p', 10, false, false, '')",
        &["select", "dynamic_sql"],
    ),
    (
        "SELECT * FROM ts_stat('SELECT v FROM docs')",
        &["select", "dynamic_sql"],
    ),
    (
        "SELECT * FROM dblink('db', 'DELETE FROM t') AS x(a int)",
        &["select", "dynamic_sql", "user_function"],
    ),
    (
        "SELECT pg_read_file('/etc/passwd')",
        &["select", "server_function"],
    ),
    (
        "SELECT lo_import('/etc/passwd')",
        &["select", "server_function"],
    ),
    (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        &["select", "server_function"],
    ),
    (
        "SELECT PG_CANCEL_BACKEND(1)",
        &["select", "server_function"],
    ),
    (
        "SELECT pg_drop_replication_slot('s')",
        &["select", "server_function"],
    ),
    ("SELECT nextval('s')", &["select", "function_write"]),
    ("SELECT setval('s', 1)", &["select", "function_write"]),
    ("SELECT lo_unlink(16413)", &["select", "function_write"]),
    ("SELECT pg_notify('ch', 'x')", &["select", "notify"]),
    (
        "SELECT brin_summarize_new_values('events_brin')",
        &["select", "function_write"],
    ),
    ("SELECT txid_current()", &["select", "function_write"]),
    (
        "SELECT * FROM ext.xpath_table('id', 'note', 't', '/a', 'true') AS t(id int, a text)",
        &["select", "dynamic_sql", "user_function"],
    ),
    (
        "SELECT * FROM crosstab('select 1, 2, 3') AS t(a int, b int)",
        &["select", "dynamic_sql", "user_function"],
    ),
    (
        "SELECT autoprewarm_dump_now()",
        &["select", "server_function", "user_function"],
    ),
    // Functions and operators that are not PostgreSQL's own (contrib's
    // above are not either).
    ("SELECT touch(t) FROM t", &["select", "user_function"]),
    ("SELECT app.get_orders(1)", &["select", "user_function"]),
    ("SELECT public.lower('a')", &["select", "user_function"]),
    ("SELECT \"LOWER\"('a')", &["select", "user_function"]),
    ("SELECT pg_catalog.lower('a')", &["select"]),
    (
        "SELECT information_schema._pg_expandarray(ARRAY[1])",
        &["select"],
    ),
    (
        "SELECT information_schema.evil(1)",
        &["select", "user_function"],
    ),
    ("SELECT 1 === 2", &["select", "user_function"]),
    ("SELECT 1 OPERATOR(app.+) 2", &["select", "user_function"]),
    ("SELECT 1 OPERATOR(pg_catalog.+) 2", &["select"]),
    ("SELECT * FROM t ORDER BY a USING ~<~", &["select"]),
    (
        "SELECT * FROM t ORDER BY a USING <<<",
        &["select", "user_function"],
    ),
    (
        "SELECT * FROM t WHERE a === ANY (SELECT b FROM u)",
        &["select", "user_function"],
    ),
    (
        "SELECT * FROM t WHERE a = ANY (SELECT b FROM u)",
        &["select"],
    ),
    (
        "INSERT INTO t VALUES (app.f())",
        &["insert", "user_function"],
    ),
    // SQL-standard syntax the parser turns into calls of built-ins.
    (
        "SELECT extract(year FROM now()), position('a' IN 'abc'), \
         substring('abc' FROM 2 FOR 1), substring('abc' SIMILAR 'a' ESCAPE '#'), \
         overlay('abc' PLACING 'x' FROM 2), trim(BOTH 'x' FROM 'xax'), \
         'a' IS NORMALIZED, normalize('a'), COLLATION FOR ('a'), \
         now() AT TIME ZONE 'UTC', now() AT LOCAL, current_date, current_user, \
         session_user, system_user, localtimestamp, \
         xmlexists('//a' PASSING '<a/>'), xmlelement(name a), \
         'a' SIMILAR TO 'a', 'a' NOT LIKE 'b', 'a' ILIKE 'A', \
         1 BETWEEN 0 AND 2, 1 NOT BETWEEN SYMMETRIC 2 AND 0, coalesce(1, 2), \
         greatest(1, 2), nullif(1, 2), 1 IS DISTINCT FROM 2, 1 != 2, \
         1 IN (1, 2), 1 <> ALL (ARRAY[2]), ARRAY[1] @> ARRAY[1], '1'::int",
        &["select"],
    ),
    (
        "SELECT json_object('a': 1), json_array(1, 2), json_query('{}', '$'), \
         json_value('{}', '$'), json_exists('{}', '$'), json_scalar(1), \
         json_serialize('{}'), '{}' IS JSON, json_objectagg('a': 1), \
         json_arrayagg(1), any_value(1)",
        &["select"],
    ),
    (
        "SELECT count(*) FILTER (WHERE a > 1), string_agg(b, ',' ORDER BY b), \
         row_number() OVER (ORDER BY a), percentile_cont(0.5) WITHIN GROUP (ORDER BY a) \
         FROM t, generate_series(1, 2), unnest(ARRAY[1]) WITH ORDINALITY",
        &["select"],
    ),
    ("SELECT pg_advisory_lock(42)", &["select", "lock"]),
    ("SELECT pg_try_advisory_xact_lock(42)", &["select", "lock"]),
    ("SELECT pg_advisory_unlock(42)", &["select"]),
    ("SELECT pg_advisory_unlock_all()", &["select"]),
    ("SELECT lower(name), now() FROM t", &["select"]),
    // Writing pg_settings sets parameters, which ones is data.
    (
        "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
        sets_anything!("update"),
    ),
    (
        "UPDATE pg_catalog.pg_settings SET setting = 'x' WHERE name = 'role'",
        sets_anything!("update"),
    ),
    // pg_dump sets a parameter only newer servers have through the rows
    // of pg_settings that name it: that parameter is the one set.
    (
        "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings \
         WHERE name = 'restrict_nonsystem_relation_kind'",
        &["select", "set"],
    ),
    (
        "SELECT pg_catalog.set_config(s.name, 'x', false) FROM pg_catalog.pg_settings s \
         WHERE 'role' = s.name",
        &["select", "set", "set_role"],
    ),
    (
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'client_encoding'",
        &["select", "set", "other"],
    ),
    // Any other shape may set any parameter.
    (
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name <> 'work_mem'",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'work_mem' OR true",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config(name, 'x', false) FROM roles WHERE name = 'work_mem'",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config(name, 'x', false) FROM pg_settings, roles WHERE name = 'work_mem'",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config(s.name, 'x', false) FROM pg_settings WHERE name = 'work_mem'",
        sets_anything!("select"),
    ),
    (
        "SELECT (SELECT set_config(name, 'x', false) FROM roles) FROM pg_settings \
         WHERE name = 'work_mem'",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'work_mem' \
         UNION ALL SELECT set_config(name, 'x', false) FROM roles",
        sets_anything!("select"),
    ),
    // A relation of that name in any schema, created or renamed, may be
    // found before the catalog's (a temporary one is), with a `name` whose
    // `=` is not identity: as if it set anything.
    (
        "CREATE TEMP TABLE pg_temp.pg_settings (name char(4))",
        sets_anything!("create"),
    ),
    (
        "CREATE VIEW app.pg_settings AS SELECT 'role'::char(4) AS name",
        sets_anything!("create"),
    ),
    (
        "ALTER TABLE t RENAME TO pg_settings",
        sets_anything!("alter"),
    ),
    (
        "INSERT INTO pg_temp.pg_settings VALUES ('role')",
        sets_anything!("insert"),
    ),
    // Only the target's own call is read so.
    (
        "SELECT set_config(name, set_config(name, 'x', false), false) FROM pg_settings \
         WHERE name = 'work_mem'",
        sets_anything!("select"),
    ),
    ("SELECT 1 UNION SELECT 2 EXCEPT SELECT 3", &["select"]),
    ("SELECT * INTO new_t FROM t", &["select", "create"]),
    ("INSERT INTO t VALUES (1)", &["insert"]),
    ("INSERT INTO t SELECT * FROM u", &["insert"]),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
        &["insert"],
    ),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1",
        &["insert", "update"],
    ),
    ("INSERT INTO t DEFAULT VALUES", &["insert"]),
    ("UPDATE t SET a = 1 WHERE id = 1", &["update"]),
    ("UPDATE t SET a = (SELECT max(b) FROM u)", &["update"]),
    ("DELETE FROM t WHERE id IN (SELECT id FROM u)", &["delete"]),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
        &["merge", "delete", "insert"],
    ),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1 WHEN NOT MATCHED THEN DO NOTHING",
        &["merge", "update"],
    ),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        &["select", "delete"],
    ),
    (
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) UPDATE u SET a = 1 WHERE id IN (SELECT id FROM i)",
        &["update", "insert"],
    ),
    (
        "SELECT * FROM (WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x) s",
        &["select", "update"],
    ),
    (
        "SELECT * FROM t UNION ALL (WITH d AS (DELETE FROM u RETURNING *) SELECT * FROM d)",
        &["select", "delete"],
    ),
    (
        "WITH x AS MATERIALIZED (DELETE FROM t RETURNING *) SELECT 1",
        &["select", "delete"],
    ),
    (
        "SELECT (SELECT n FROM (WITH d AS (DELETE FROM t RETURNING 1 AS n) SELECT n FROM d) q)",
        &["select", "delete"],
    ),
    (
        "SELECT * FROM a WHERE EXISTS (SELECT 1 FROM (WITH m AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE RETURNING 1) SELECT 1 FROM m) z)",
        &["select", "merge", "delete"],
    ),
    // COPY.
    ("COPY t FROM STDIN", &["copy", "insert"]),
    (
        "COPY t (a, b) FROM STDIN WITH (FORMAT csv)",
        &["copy", "insert"],
    ),
    ("COPY t TO STDOUT", &["copy", "select"]),
    ("COPY (SELECT * FROM t) TO STDOUT", &["copy", "select"]),
    (
        "COPY (DELETE FROM t RETURNING *) TO STDOUT",
        &["copy", "delete"],
    ),
    (
        "COPY (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) TO STDOUT",
        &["copy", "select", "delete"],
    ),
    ("COPY t TO PROGRAM 'sh'", &["copy_program", "select"]),
    (
        "COPY t FROM PROGRAM 'cat /etc/passwd'",
        &["copy_program", "insert"],
    ),
    (
        "COPY (SELECT 1) TO PROGRAM 'sh'",
        &["copy_program", "select"],
    ),
    ("COPY t FROM '/etc/passwd'", &["copy_file", "insert"]),
    ("COPY t TO '/tmp/x'", &["copy_file", "select"]),
    // DDL and DCL.
    ("CREATE TABLE x (id int)", &["create"]),
    ("CREATE TEMP TABLE x (id int)", &["create"]),
    ("CREATE TABLE x AS SELECT * FROM t", &["create", "select"]),
    (
        "CREATE MATERIALIZED VIEW mv AS SELECT 1",
        &["create", "select"],
    ),
    ("CREATE TABLE x AS EXECUTE p", &["create", "execute"]),
    ("CREATE VIEW v AS SELECT * FROM t", &["create"]),
    ("CREATE INDEX ON t (a)", &["create"]),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        &["create"],
    ),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
        &["create", "delete"],
    ),
    (
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN END $$",
        &["create"],
    ),
    ("CREATE EXTENSION dblink", &["create"]),
    ("CREATE ROLE r SUPERUSER", &["create"]),
    // Role membership, as GRANT gives it.
    ("CREATE ROLE r IN ROLE admin", &["create", "grant"]),
    ("CREATE USER r IN GROUP admin", &["create", "grant"]),
    ("CREATE ROLE admin2 ROLE gw", &["create", "grant"]),
    ("CREATE ROLE admin2 ADMIN gw", &["create", "grant"]),
    ("ALTER GROUP admin ADD USER gw", &["alter", "grant"]),
    ("ALTER GROUP admin DROP USER gw", &["alter", "revoke"]),
    ("CREATE USER u PASSWORD 'x'", &["create"]),
    ("CREATE SCHEMA s CREATE TABLE x (id int)", &["create"]),
    ("CREATE SEQUENCE s", &["create"]),
    ("CREATE DATABASE d", &["create"]),
    ("CREATE TYPE ty AS (a int)", &["create"]),
    ("CREATE TYPE mood AS ENUM ('sad')", &["create"]),
    ("CREATE DOMAIN d AS int", &["create"]),
    // The trigger's function runs at every write of `t` from now on.
    (
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        &["create", "user_function"],
    ),
    (
        "CREATE TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        &["create"],
    ),
    (
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION app.f()",
        &["create", "user_function"],
    ),
    (
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u",
        &["create", "delete"],
    ),
    ("CREATE POLICY p ON t USING (true)", &["create"]),
    (
        "CREATE SERVER s FOREIGN DATA WRAPPER w",
        &["create", "foreign_data"],
    ),
    (
        "CREATE FOREIGN DATA WRAPPER w HANDLER h",
        &["create", "foreign_data"],
    ),
    (
        "CREATE FOREIGN TABLE f (id int) SERVER s",
        &["create", "foreign_data"],
    ),
    (
        "CREATE USER MAPPING FOR current_user SERVER s OPTIONS (user 'u')",
        &["create", "foreign_data"],
    ),
    (
        "ALTER SERVER s OPTIONS (SET host 'elsewhere')",
        &["alter", "foreign_data"],
    ),
    (
        "ALTER USER MAPPING FOR current_user SERVER s OPTIONS (SET user 'v')",
        &["alter", "foreign_data"],
    ),
    (
        "ALTER FOREIGN DATA WRAPPER w NO VALIDATOR",
        &["alter", "foreign_data"],
    ),
    (
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p",
        &["create"],
    ),
    ("CREATE LANGUAGE plperlu", &["create"]),
    (
        "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO t",
        &["create", "foreign_data"],
    ),
    ("ALTER TABLE t ADD COLUMN c int", &["alter"]),
    ("ALTER TABLE t RENAME TO u", &["alter"]),
    ("ALTER TABLE t REPLICA IDENTITY FULL", &["alter"]),
    ("ALTER TABLE t OWNER TO r", &["alter"]),
    ("ALTER ROLE r SUPERUSER", &["alter"]),
    ("ALTER USER r WITH PASSWORD 'x'", &["alter"]),
    ("ALTER ROLE r SET role = 'postgres'", &["alter", "set_role"]),
    ("ALTER DATABASE d SET work_mem = '1GB'", &["alter", "set"]),
    ("ALTER SYSTEM SET work_mem = '1GB'", &["alter", "set"]),
    ("ALTER FUNCTION f() SECURITY DEFINER", &["alter"]),
    ("ALTER EXTENSION e UPDATE", &["alter"]),
    ("ALTER SCHEMA s RENAME TO s2", &["alter"]),
    (
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
        &["alter", "grant"],
    ),
    (
        "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM r",
        &["alter", "revoke"],
    ),
    ("REINDEX TABLE t", &["alter"]),
    ("CLUSTER t USING i", &["alter"]),
    ("REFRESH MATERIALIZED VIEW mv", &["alter"]),
    ("SECURITY LABEL ON TABLE t IS 'x'", &["alter"]),
    ("REASSIGN OWNED BY a TO b", &["alter"]),
    ("DROP TABLE t", &["drop"]),
    ("DROP TABLE IF EXISTS t CASCADE", &["drop"]),
    ("DROP FUNCTION f(int)", &["drop"]),
    ("DROP ROLE r", &["drop"]),
    ("DROP DATABASE d", &["drop"]),
    ("DROP OWNED BY r", &["drop"]),
    ("DROP SUBSCRIPTION s", &["drop"]),
    ("TRUNCATE t", &["truncate"]),
    ("TRUNCATE TABLE a, b RESTART IDENTITY", &["truncate"]),
    ("COMMENT ON TABLE t IS 'x'", &["comment"]),
    ("GRANT SELECT ON t TO r", &["grant"]),
    ("GRANT ALL ON ALL TABLES IN SCHEMA public TO r", &["grant"]),
    ("REVOKE SELECT ON t FROM r", &["revoke"]),
    ("GRANT admin TO u", &["grant"]),
    ("REVOKE admin FROM u", &["revoke"]),
    // Dynamic and server-side.
    ("DO $$ BEGIN EXECUTE 'drop table t'; END $$", &["do_block"]),
    (
        "DO $tag$ BEGIN EXECUTE 'drop table t'; END $tag$",
        &["do_block"],
    ),
    ("DO LANGUAGE plpgsql 'BEGIN NULL; END'", &["do_block"]),
    ("CALL p(1)", &["call", "user_function"]),
    ("EXECUTE p(1)", &["execute"]),
    ("PREPARE p AS DELETE FROM t", &["prepare", "delete"]),
    ("PREPARE p (int) AS SELECT $1", &["prepare", "select"]),
    (
        "PREPARE p AS INSERT INTO t SELECT * FROM u",
        &["prepare", "insert"],
    ),
    ("DEALLOCATE p", &["deallocate"]),
    ("DEALLOCATE ALL", &["deallocate"]),
    ("LOAD 'plpgsql'", &["other"]),
    // Session.
    ("SET work_mem = '1GB'", &["set"]),
    ("SET LOCAL work_mem = 1", &["set"]),
    ("SET TIME ZONE 'UTC'", &["set"]),
    ("SET search_path TO s, public", &["set"]),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", &["set"]),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        &["set"],
    ),
    ("SET CONSTRAINTS ALL DEFERRED", &["set"]),
    ("RESET work_mem", &["reset"]),
    ("RESET ALL", &["reset_all"]),
    ("SET ROLE postgres", &["set_role"]),
    ("SET LOCAL ROLE postgres", &["set_role"]),
    ("SET SESSION ROLE postgres", &["set_role"]),
    ("SET ROLE NONE", &["set_role"]),
    ("SET \"role\" TO 'postgres'", &["set_role"]),
    ("RESET ROLE", &["set_role"]),
    (
        "SET SESSION AUTHORIZATION postgres",
        &["set_session_authorization"],
    ),
    (
        "SET SESSION AUTHORIZATION DEFAULT",
        &["set_session_authorization"],
    ),
    (
        "RESET SESSION AUTHORIZATION",
        &["set_session_authorization"],
    ),
    ("SET standard_conforming_strings = off", &["set", "other"]),
    ("SET client_encoding = 'SJIS'", &["set", "other"]),
    ("RESET backslash_quote", &["reset", "other"]),
    ("SHOW work_mem", &["show"]),
    ("SHOW ALL", &["show"]),
    (
        "DISCARD ALL",
        &["discard", "set_session_authorization", "reset_all"],
    ),
    ("DISCARD TEMP", &["discard"]),
    ("DISCARD PLANS", &["discard"]),
    // Transactions.
    ("BEGIN", &["begin"]),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", &["begin"]),
    ("START TRANSACTION READ ONLY", &["begin"]),
    ("COMMIT", &["commit"]),
    ("END", &["commit"]),
    ("COMMIT AND CHAIN", &["commit"]),
    ("ROLLBACK", &["rollback"]),
    ("ABORT", &["rollback"]),
    ("SAVEPOINT s", &["savepoint"]),
    ("RELEASE SAVEPOINT s", &["savepoint"]),
    ("ROLLBACK TO SAVEPOINT s", &["savepoint"]),
    ("PREPARE TRANSACTION 'x'", &["commit", "other"]),
    ("COMMIT PREPARED 'x'", &["commit", "other"]),
    ("ROLLBACK PREPARED 'x'", &["rollback", "other"]),
    // EXPLAIN.
    ("EXPLAIN SELECT 1", &["explain", "select"]),
    ("EXPLAIN DELETE FROM t", &["explain", "delete"]),
    (
        "EXPLAIN ANALYZE DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN ANALYSE VERBOSE INSERT INTO t VALUES (1)",
        &["explain_analyze", "insert"],
    ),
    (
        "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (FORMAT JSON, ANALYZE true) UPDATE t SET a = 1",
        &["explain_analyze", "update"],
    ),
    (
        "EXPLAIN (ANALYZE 1) DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (ANALYZE on) DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (ANALYSE) DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (\"analyze\") DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (ANALYZE 'on') DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (ANALYZE off, ANALYZE on) DELETE FROM t",
        &["explain_analyze", "delete"],
    ),
    (
        "EXPLAIN (ANALYZE off) DELETE FROM t",
        &["explain", "delete"],
    ),
    ("EXPLAIN (ANALYZE false) SELECT 1", &["explain", "select"]),
    ("EXPLAIN (ANALYZE 0) SELECT 1", &["explain", "select"]),
    (
        "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
        &["explain_analyze", "create", "select"],
    ),
    ("EXPLAIN ANALYZE EXECUTE p", &["explain_analyze", "execute"]),
    (
        "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d",
        &["explain_analyze", "select", "delete"],
    ),
    // Notifications, maintenance, locks, cursors.
    ("LISTEN c", &["listen"]),
    ("NOTIFY c, 'x'", &["notify"]),
    ("UNLISTEN *", &["unlisten"]),
    ("VACUUM", &["vacuum"]),
    ("VACUUM FULL t", &["vacuum"]),
    ("VACUUM (ANALYZE) t", &["vacuum", "analyze"]),
    ("ANALYZE t", &["analyze"]),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", &["lock"]),
    (
        "DECLARE c CURSOR FOR SELECT * FROM t",
        &["declare_cursor", "select"],
    ),
    (
        "DECLARE c CURSOR WITH HOLD FOR WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        &["declare_cursor", "select", "delete"],
    ),
    ("FETCH 10 FROM c", &["fetch"]),
    ("FETCH ALL IN c", &["fetch"]),
    ("MOVE FORWARD 5 IN c", &["fetch"]),
    ("CLOSE c", &["close_cursor"]),
    ("CLOSE ALL", &["close_cursor"]),
    ("CHECKPOINT", &["checkpoint"]),
    // set_config is SET by another name.
    (
        "SELECT set_config('role', 'postgres', false)",
        &["select", "set", "set_role"],
    ),
    (
        "SELECT pg_catalog.set_config('ROLE', 'postgres', true)",
        &["select", "set", "set_role"],
    ),
    (
        "SELECT set_config(U&'r\\006Fle', 'postgres', false)",
        &["select", "set", "set_role"],
    ),
    (
        "SELECT set_config('session_authorization', 'postgres', false)",
        &["select", "set", "set_session_authorization"],
    ),
    (
        "SELECT set_config('application_name', 'x', false)",
        &["select", "set"],
    ),
    (
        "SELECT set_config(current_user, 'x', false)",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config('ro' || 'le', 'x', false)",
        sets_anything!("select"),
    ),
    (
        "SELECT set_config(setting_name => 'role', new_value => 'x', is_local => false)",
        sets_anything!("select"),
    ),
    (
        "SELECT * FROM t WHERE set_config('role', 'x', false) IS NOT NULL",
        &["select", "set", "set_role"],
    ),
    (
        "UPDATE t SET a = set_config('role', 'x', false) WHERE id = 1",
        &["update", "set", "set_role"],
    ),
];

#[test]
fn every_statement_form_has_its_kinds() {
    let mut failures = Vec::new();
    for (sql, expected) in KINDS {
        let got = kind_set(&one(sql).kinds);
        if got != named(expected) {
            failures.push(format!(
                "{sql}\n    expected {}\n    got      {got}",
                named(expected)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_statement_kind_comes_first() {
    assert_eq!(
        one("EXPLAIN ANALYZE DELETE FROM t").kinds,
        [SqlKind::ExplainAnalyze, SqlKind::Delete]
    );
    assert_eq!(
        one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").kinds,
        [SqlKind::Select, SqlKind::Delete]
    );
    assert_eq!(
        one("PREPARE p AS UPDATE t SET a = 1").kinds,
        [SqlKind::Prepare, SqlKind::Update]
    );
}

#[test]
fn every_statement_is_judged_on_its_own() {
    let statements = all("select 1; DROP TABLE t");
    assert_eq!(statements.len(), 2);
    assert_eq!(statements[0].text, "select 1");
    assert_eq!(statements[0].facts.kinds, [SqlKind::Select]);
    assert_eq!(statements[1].text, "DROP TABLE t");
    assert_eq!(statements[1].facts.kinds, [SqlKind::Drop]);
    assert_eq!(statements[1].facts.tables_written, ["t"]);

    let statements = all("select 1;  /* c */ DROP TABLE t ; ;\n SELECT 'é' ;");
    let texts: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["select 1", "DROP TABLE t", "SELECT 'é'"]);

    let statements = all("PREPARE p AS DELETE FROM t; EXECUTE p");
    assert_eq!(
        statements[0].facts.kinds,
        [SqlKind::Prepare, SqlKind::Delete]
    );
    assert_eq!(statements[0].facts.tables_written, ["t"]);
    assert_eq!(statements[1].facts.kinds, [SqlKind::Execute]);
}

#[test]
fn count_columns_are_placed_only_where_the_text_places_every_column() {
    let counts = |sql: &str| all(sql).remove(0).counts;
    assert_eq!(counts("SELECT count(*) FROM t"), [0]);
    assert_eq!(
        counts(
            "SELECT name, count(o.id), pg_catalog.count(DISTINCT x) FILTER (WHERE y), count(*) OVER () FROM t GROUP BY name"
        ),
        [1, 2, 3]
    );
    // Not a count, or columns the text cannot place.
    for sql in [
        "SELECT max(x) FROM t",
        "SELECT public.count(x) FROM t",
        r#"SELECT "COUNT"(x) FROM t"#,
        "SELECT count(*)::text FROM t",
        "SELECT count(*) + 1 FROM t",
        "SELECT *, count(*) FROM t GROUP BY id",
        "SELECT t.*, count(*) FROM t GROUP BY t.id",
        "SELECT (t).*, count(*) FROM t GROUP BY t",
        "SELECT count(*) FROM t UNION SELECT x FROM u",
        "VALUES (1)",
        "DECLARE c CURSOR FOR SELECT count(*) FROM t",
        "EXPLAIN SELECT count(*) FROM t",
        "WITH x AS (SELECT count(*) FROM t) SELECT * FROM x",
    ] {
        assert!(counts(sql).is_empty(), "{sql}");
    }
}

#[test]
fn smuggling_attempts_are_seen() {
    // Each of these must carry the dangerous kind somewhere.
    let cases: &[(&str, SqlKind)] = &[
        ("select 1; DROP TABLE t", SqlKind::Drop),
        ("select 1;DROP TABLE t;", SqlKind::Drop),
        ("BEGIN; DROP TABLE t; COMMIT", SqlKind::Drop),
        ("/* x */ DrOp TaBlE \"T\"", SqlKind::Drop),
        ("/* a /* nested */ comment */ DROP TABLE t", SqlKind::Drop),
        ("-- line\nDROP TABLE t", SqlKind::Drop),
        ("DROP TABLE U&\"\\0074\"", SqlKind::Drop),
        ("DROP TABLE U&\"!0074\" UESCAPE '!'", SqlKind::Drop),
        ("SELECT $$;$$; DROP TABLE t", SqlKind::Drop),
        ("SELECT $a$ $$ $a$; DROP TABLE t", SqlKind::Drop),
        ("SELECT ';'; DROP TABLE t", SqlKind::Drop),
        ("SELECT E'\\';'; DROP TABLE t", SqlKind::Drop),
        ("SELECT \"a;b\" FROM t; DROP TABLE t", SqlKind::Drop),
        (
            "DO $$ BEGIN EXECUTE 'drop table t'; END $$",
            SqlKind::DoBlock,
        ),
        (
            "DO $tag$ BEGIN EXECUTE 'drop table t'; END $tag$",
            SqlKind::DoBlock,
        ),
        ("EXPLAIN ANALYZE DELETE FROM t", SqlKind::Delete),
        ("EXPLAIN ANALYZE DELETE FROM t", SqlKind::ExplainAnalyze),
        (
            "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM t",
            SqlKind::Delete,
        ),
        (
            "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM t",
            SqlKind::ExplainAnalyze,
        ),
        (
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            SqlKind::Delete,
        ),
        (
            "SELECT * FROM (WITH x AS (UPDATE t SET a=1 RETURNING *) SELECT * FROM x) s",
            SqlKind::Update,
        ),
        ("COPY t TO PROGRAM 'sh'", SqlKind::CopyProgram),
        ("COPY t FROM '/etc/passwd'", SqlKind::CopyFile),
        (
            "COPY (DELETE FROM t RETURNING *) TO STDOUT",
            SqlKind::Delete,
        ),
        ("SET ROLE postgres", SqlKind::SetRole),
        (
            "SET SESSION AUTHORIZATION postgres",
            SqlKind::SetSessionAuthorization,
        ),
        ("RESET ALL", SqlKind::ResetAll),
        (
            "SELECT set_config('role','postgres',false)",
            SqlKind::SetRole,
        ),
        ("PREPARE p AS DELETE FROM t; EXECUTE p", SqlKind::Delete),
        (
            "DECLARE c CURSOR FOR SELECT * FROM t",
            SqlKind::DeclareCursor,
        ),
        ("CREATE TABLE x AS SELECT 1", SqlKind::Create),
        ("SELECT 1 INTO x", SqlKind::Create),
        ("SELECT 1 AS a INTO TEMP x FROM t", SqlKind::Create),
    ];
    for (sql, kind) in cases {
        assert!(
            kinds_of(sql).contains(*kind),
            "{sql}: no `{kind}` in {}",
            kinds_of(sql)
        );
    }
}

#[test]
fn literals_and_comments_hide_nothing_and_invent_nothing() {
    for sql in [
        "SELECT '; DROP TABLE t'",
        "SELECT 1 -- ; DROP TABLE t",
        "SELECT 1 /* ; DROP TABLE t */",
        "SELECT $$; DROP TABLE t; $$",
        "SELECT $x$; DROP TABLE t; $x$",
        "SELECT E'\\'; DROP TABLE t; --'",
        "SELECT \"; DROP TABLE t\" FROM u",
        "SELECT U&'\\0027; DROP TABLE t'",
    ] {
        let statements = all(sql);
        assert_eq!(statements.len(), 1, "{sql}");
        assert_eq!(statements[0].facts.kinds, [SqlKind::Select], "{sql}");
    }
}

#[test]
fn standard_conforming_strings_decides_where_a_string_ends() {
    // `'a\'` ends the string when backslashes are ordinary characters (the
    // default), and escapes the quote when they are not.
    let sql = "SELECT 'a\\'; DROP TABLE t; --'";
    let on = ClassifyOptions::default();
    let off = ClassifyOptions {
        standard_conforming_strings: false,
        ..ClassifyOptions::default()
    };
    let kinds = |options| {
        classify_with(sql, options)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .fold(KindSet::EMPTY, |acc, s| acc.union(kind_set(&s.facts.kinds)))
    };
    assert!(kinds(on).contains(SqlKind::Drop));
    assert_eq!(kinds(off), named(&["select"]));

    // And the reverse: one string for the default, two statements for a
    // session that turned standard_conforming_strings off.
    let sql = "SELECT 'a\\'' ; DROP TABLE t; --'";
    let count = |options| classify_with(sql, options).map(|s| s.len());
    assert_eq!(count(on), Ok(1));
    assert_eq!(count(off), Ok(2));
    assert!(
        classify_with(sql, off)
            .unwrap_or_default()
            .iter()
            .any(|s| s.facts.kinds.contains(&SqlKind::Drop))
    );
}

#[test]
fn tables_read_and_written() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "SELECT * FROM a JOIN s.b ON true WHERE x IN (SELECT y FROM c)",
            &["a", "c", "s.b"],
            &[],
        ),
        ("SELECT * FROM mydb.s.t", &["s.t"], &[]),
        ("select * from SECRET.KEYS", &["secret.keys"], &[]),
        ("SELECT * FROM \"Secret\".\"Keys\"", &["Secret.Keys"], &[]),
        ("SELECT * FROM U&\"\\0074\"", &["t"], &[]),
        ("INSERT INTO t SELECT * FROM u", &["u"], &["t"]),
        ("INSERT INTO s.t (a) VALUES (1)", &[], &["s.t"]),
        (
            "UPDATE t SET a = 1 FROM u WHERE t.id = u.id",
            &["u"],
            &["t"],
        ),
        ("DELETE FROM t USING u WHERE t.id = u.id", &["u"], &["t"]),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            &["s"],
            &["t"],
        ),
        ("TRUNCATE a, s.b", &[], &["a", "s.b"]),
        ("COPY t FROM STDIN", &[], &["t"]),
        ("COPY t TO STDOUT", &["t"], &[]),
        ("COPY (SELECT * FROM t) TO STDOUT", &["t"], &[]),
        ("CREATE TABLE x AS SELECT * FROM t", &["t"], &["x"]),
        ("SELECT * INTO x FROM t", &["t"], &["x"]),
        ("DROP TABLE a, s.\"B\"", &[], &["a", "s.B"]),
        ("DROP VIEW v", &[], &["v"]),
        ("DROP FUNCTION f", &[], &[]),
        ("COMMENT ON TABLE s.t IS 'x'", &[], &["s.t"]),
        ("COMMENT ON FUNCTION f() IS 'x'", &[], &[]),
        ("ALTER TABLE t ADD c int", &[], &["t"]),
        ("CREATE VIEW v AS SELECT * FROM t", &["t"], &["v"]),
        ("CREATE INDEX ON t (a)", &[], &["t"]),
        ("GRANT SELECT ON t TO r", &[], &["t"]),
        ("LOCK TABLE t", &["t"], &[]),
        ("EXPLAIN ANALYZE DELETE FROM t", &[], &["t"]),
        ("PREPARE p AS SELECT * FROM t", &["t"], &[]),
        ("DECLARE c CURSOR FOR SELECT * FROM t", &["t"], &[]),
        // CTE names are not tables...
        ("WITH x AS (SELECT * FROM t) SELECT * FROM x", &["t"], &[]),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
            &[],
            &[],
        ),
        (
            "WITH x AS (SELECT 1) INSERT INTO x SELECT * FROM x",
            &[],
            &["x"],
        ),
        // ...except where PostgreSQL would not see the CTE: qualified,
        // outside the query that defines it, or before its definition.
        (
            "WITH x AS (SELECT 1) SELECT * FROM public.x",
            &["public.x"],
            &[],
        ),
        (
            "SELECT * FROM (WITH keys AS (SELECT 1) SELECT * FROM keys) s, keys",
            &["keys"],
            &[],
        ),
        (
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b",
            &["b"],
            &[],
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d JOIN u USING (id)",
            &["u"],
            &["t"],
        ),
    ];
    for (sql, read, written) in cases {
        let f = one(sql);
        assert_eq!(f.tables_read, *read, "{sql}: read");
        assert_eq!(f.tables_written, *written, "{sql}: written");
    }
}

/// A call to `pg_read_file` in every position a function can sit.
const FUNCTION_POSITIONS: &[&str] = &[
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT PG_READ_FILE('x')",
    "SELECT \"pg_read_file\"('x')",
    "SELECT lower(pg_read_file('x'))",
    "SELECT pg_read_file('x')::int",
    "SELECT (pg_read_file('x')).f",
    "SELECT pg_read_file('x') COLLATE \"C\"",
    "SELECT ROW(pg_read_file('x'))",
    "SELECT ARRAY[pg_read_file('x')]",
    "SELECT CASE WHEN true THEN pg_read_file('x') END",
    "SELECT COALESCE(NULL, pg_read_file('x'))",
    "SELECT GREATEST(1, pg_read_file('x')::int)",
    "SELECT * FROM t WHERE a = pg_read_file('x')",
    "SELECT * FROM t WHERE a IS DISTINCT FROM pg_read_file('x')",
    "SELECT * FROM t WHERE a = ANY(ARRAY[pg_read_file('x')])",
    "SELECT * FROM t WHERE a IN (SELECT pg_read_file('x'))",
    "SELECT * FROM t WHERE EXISTS (SELECT pg_read_file('x'))",
    "SELECT * FROM pg_read_file('x')",
    "SELECT * FROM LATERAL pg_read_file('x') f",
    "SELECT * FROM ROWS FROM (generate_series(1, 2), pg_read_file('x'))",
    "SELECT * FROM t JOIN u ON pg_read_file('x') = ''",
    "SELECT * FROM t TABLESAMPLE system (pg_read_file('x')::int)",
    "SELECT a FROM t GROUP BY pg_read_file('x')",
    "SELECT a FROM t GROUP BY GROUPING SETS ((pg_read_file('x')))",
    "SELECT a FROM t GROUP BY a HAVING pg_read_file('x') = ''",
    "SELECT a FROM t ORDER BY pg_read_file('x')",
    "SELECT a FROM t LIMIT pg_read_file('x')::int",
    "SELECT a FROM t OFFSET pg_read_file('x')::int",
    "SELECT count(*) FILTER (WHERE pg_read_file('x') = '') FROM t",
    "SELECT array_agg(a ORDER BY pg_read_file('x')) FROM t",
    "SELECT rank() OVER (ORDER BY pg_read_file('x')) FROM t",
    "SELECT sum(a) OVER w FROM t WINDOW w AS (PARTITION BY pg_read_file('x'))",
    "SELECT 1 UNION SELECT pg_read_file('x')",
    "VALUES (pg_read_file('x'))",
    "WITH c AS (SELECT pg_read_file('x')) SELECT * FROM c",
    "WITH RECURSIVE c AS (SELECT pg_read_file('x') UNION SELECT 'y') SELECT * FROM c",
    "SELECT * FROM XMLTABLE('/x' PASSING pg_read_file('x') COLUMNS a int)",
    "SELECT JSON_OBJECT('a': pg_read_file('x'))",
    "SELECT * FROM JSON_TABLE(pg_read_file('x')::jsonb, '$' COLUMNS (a int))",
    "INSERT INTO t VALUES (pg_read_file('x'))",
    "INSERT INTO t SELECT pg_read_file('x')",
    "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = pg_read_file('x')",
    "INSERT INTO t VALUES (1) RETURNING pg_read_file('x')",
    "UPDATE t SET a = pg_read_file('x') WHERE id = 1",
    "UPDATE t SET a = 1 WHERE b = pg_read_file('x')",
    "DELETE FROM t USING pg_read_file('x') f WHERE t.a = f",
    "DELETE FROM t WHERE id = 1 RETURNING pg_read_file('x')",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = pg_read_file('x')",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND pg_read_file('x') = '' THEN DELETE",
    "MERGE INTO t USING (SELECT pg_read_file('x')) s ON true WHEN MATCHED THEN DO NOTHING",
    "CREATE TABLE t (a text DEFAULT pg_read_file('x'))",
    "CREATE TABLE t (a text CHECK (a <> pg_read_file('x')))",
    "CREATE TABLE t (a text GENERATED ALWAYS AS (pg_read_file('x')) STORED)",
    "CREATE INDEX ON t ((pg_read_file(a)))",
    "CREATE VIEW v AS SELECT pg_read_file('x')",
    "CREATE TABLE x AS SELECT pg_read_file('x')",
    "CREATE POLICY p ON t USING (pg_read_file('x') = '')",
    "ALTER TABLE t ALTER COLUMN a SET DEFAULT pg_read_file('x')",
    "EXPLAIN SELECT pg_read_file('x')",
    "EXPLAIN ANALYZE SELECT pg_read_file('x')",
    "PREPARE p AS SELECT pg_read_file('x')",
    "EXECUTE p(pg_read_file('x'))",
    "DECLARE c CURSOR FOR SELECT pg_read_file('x')",
    "COPY (SELECT pg_read_file('x')) TO STDOUT",
    "COPY t FROM STDIN WHERE a = pg_read_file('x')",
    "CALL p(pg_read_file('x'))",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql RETURN pg_read_file('x')",
];

#[test]
fn functions_are_found_in_every_position() {
    let mut missing = Vec::new();
    for sql in FUNCTION_POSITIONS {
        let found = all(sql)
            .iter()
            .any(|s| s.facts.functions.iter().any(|f| f == "pg_read_file"));
        if !found {
            missing.push(*sql);
        }
    }
    assert!(
        missing.is_empty(),
        "pg_read_file not found in:\n{}",
        missing.join("\n")
    );
}

#[test]
fn function_names_are_qualified_as_written() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT pg_read_file('/etc/passwd')", &["pg_read_file"]),
        (
            "SELECT * FROM pg_catalog.pg_read_file('x')",
            &["pg_catalog.pg_read_file"],
        ),
        (
            "SELECT dblink_exec('dbname=x', 'drop table t')",
            &["dblink_exec"],
        ),
        ("SELECT lo_export(1, '/tmp/x')", &["lo_export"]),
        ("SELECT Lo_Import('/etc/passwd')", &["lo_import"]),
        ("SELECT \"Lo_Import\"('/etc/passwd')", &["Lo_Import"]),
        (
            "SELECT lower(upper(a)), count(*) FROM t GROUP BY 1",
            &["count", "lower", "upper"],
        ),
        ("SELECT mydb.pg_catalog.now()", &["pg_catalog.now"]),
        ("CALL s.p(1)", &["s.p"]),
        ("SELECT 1", &[]),
        // Special forms are not calls by name.
        ("SELECT CURRENT_USER, COALESCE(1, 2)", &[]),
    ];
    for (sql, functions) in cases {
        assert_eq!(one(sql).functions, *functions, "{sql}");
    }
}

#[test]
fn has_where_means_every_update_and_delete_is_bounded() {
    let cases: &[(&str, bool)] = &[
        ("UPDATE t SET a = 1", false),
        ("UPDATE t SET a = 1 WHERE id = 1", true),
        ("DELETE FROM t", false),
        ("DELETE FROM t WHERE id = 1", true),
        ("DELETE FROM t WHERE id = $1", true),
        ("DELETE FROM t WHERE CURRENT OF c", true),
        ("UPDATE t SET a = 1 WHERE CURRENT OF c", true),
        // A WHERE that looks at no column bounds nothing.
        ("DELETE FROM t WHERE true", false),
        ("DELETE FROM t WHERE 1 = 1", false),
        ("UPDATE t SET a = 1 WHERE $1", false),
        ("DELETE FROM t WHERE 'a' = 'a' OR NOT false", false),
        ("DELETE FROM t WHERE 1 = 1 AND id = 2", true),
        (
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
            true,
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            false,
        ),
        (
            "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
            true,
        ),
        (
            "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) UPDATE u SET a = 1 WHERE id = 2",
            true,
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) UPDATE u SET a = 1 WHERE id = 2",
            false,
        ),
        (
            "SELECT * FROM (WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x) s",
            false,
        ),
        ("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", true),
        ("EXPLAIN ANALYZE DELETE FROM t", false),
        ("PREPARE p AS DELETE FROM t", false),
        ("PREPARE p AS DELETE FROM t WHERE id = $1", true),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1",
            true,
        ),
        (
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
            false,
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (1)",
            false,
        ),
        // Not an UPDATE or DELETE: false, and the `unbounded` matcher only
        // looks at update and delete kinds anyway.
        ("SELECT * FROM t WHERE id = 1", false),
        ("INSERT INTO t VALUES (1)", false),
        ("TRUNCATE t", false),
    ];
    for (sql, has_where) in cases {
        assert_eq!(one(sql).has_where, *has_where, "{sql}");
    }
}

#[test]
fn fingerprints_ignore_formatting_but_not_tables() {
    let fp = |sql: &str| {
        let statements = all(sql);
        assert_eq!(statements.len(), 1, "{sql}");
        statements[0].fingerprint.clone()
    };
    let a = fp("SELECT 1");
    assert_eq!(a.len(), 16);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    assert_eq!(a, fp("select  1 -- x"));
    assert_eq!(a, fp("/* hello */ SELECT\n1;"));
    assert_ne!(a, fp("SELECT a FROM t"));
    assert_ne!(fp("SELECT a FROM t"), fp("SELECT b FROM t"));
    // Constants do not count (approvals must compare more than this)...
    assert_eq!(
        fp("DELETE FROM t WHERE id = 1"),
        fp("DELETE FROM t WHERE id = 2")
    );
    // ...but schemas, relation names and aliases never hide a table.
    assert_ne!(
        fp("SELECT * FROM public.t x"),
        fp("SELECT * FROM secret.t x")
    );
    assert_ne!(fp("SELECT * FROM t x"), fp("SELECT * FROM u x"));
    assert_ne!(
        fp("SELECT * FROM orders_2024"),
        fp("SELECT * FROM orders_2025")
    );
    assert_eq!(fp("SELECT * FROM t a"), fp("SELECT * FROM t b"));

    // Each statement of a text has its own fingerprint.
    let statements = all("SELECT 1; DROP TABLE t");
    assert_eq!(statements[0].fingerprint, a);
    assert_eq!(statements[1].fingerprint, fp("drop table t"));
}

#[test]
fn empty_text_has_no_statements() {
    for sql in [
        "",
        "   ",
        "\n\t",
        "-- nothing",
        "/* nothing */",
        ";",
        " ; ;; ",
    ] {
        assert_eq!(classify(sql), Ok(vec![]), "{sql:?}");
    }
}

#[test]
fn unparsable_text_is_an_error() {
    for sql in [
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT $$unterminated",
        "SELECT /* unterminated",
        "SELEC 1",
        "DROP TABLE",
        "garbage",
        "SELECT 1; garbage here; SELECT 2",
        "SELECT 1 FROM",
        "SELECT U&'\\zzzz'",
        ")))",
    ] {
        match classify(sql) {
            Err(ClassifyError::Parse { message, .. }) => assert!(!message.is_empty()),
            other => panic!("{sql}: expected a parse error, got {other:?}"),
        }
    }
    // A statement after an error is not let through either.
    assert!(classify("SELECT 1; DROP TABLE t; garbage").is_err());
}

#[test]
fn nul_bytes_are_refused_with_their_position() {
    assert_eq!(
        classify("SELECT 1\0; DROP TABLE t"),
        Err(ClassifyError::Parse {
            message: "SQL text contains a NUL byte".into(),
            position: Some(8),
        })
    );
}

#[test]
fn long_text_is_refused_before_parsing() {
    let sql = format!("SELECT '{}'", "x".repeat(2 * 1024 * 1024));
    assert_eq!(
        classify(&sql),
        Err(ClassifyError::TooLong {
            len: sql.len(),
            max: MAX_SQL_LEN,
        })
    );
    let err = classify(&sql).expect_err("too long").to_string();
    assert!(err.contains("1048576 bytes"), "{err}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let nest = |open: &str, inner: &str, close: &str, n: usize| {
        format!("SELECT {}{inner}{}", open.repeat(n), close.repeat(n))
    };
    for sql in [
        nest("lower(", "'x'", ")", 5000),
        nest("(SELECT ", "1", ")", 5000),
        nest("ARRAY[", "1", "]", 5000),
        nest("- ", "1", "", 50_000),
        nest("NOT ", "true", "", 50_000),
        format!("SELECT 1{}", " + 1".repeat(50_000)),
        format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
    ] {
        match classify(&sql) {
            Err(ClassifyError::TooDeep { .. } | ClassifyError::Parse { .. }) => {}
            other => panic!("{}...: {:?}", &sql[..40], other.map(|s| s.len())),
        }
    }
    // Everyday nesting is fine. (pg_query's protobuf decoder stops at 100
    // nested messages: about 45 chained operators or nested calls, 15
    // nested scalar subqueries.)
    let sql = format!("SELECT {}'x'{}", "lower(".repeat(40), ")".repeat(40));
    assert_eq!(one(&sql).functions, ["lower"]);
    let sql = format!("SELECT a{} FROM t", " || ', ' || a".repeat(20));
    assert_eq!(one(&sql).tables_read, ["t"]);
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(12), ")".repeat(12));
    assert_eq!(one(&sql).kinds, [SqlKind::Select]);
    let sql = format!("SELECT a FROM t WHERE {}", vec!["a = 1"; 300].join(" OR "));
    assert_eq!(one(&sql).kinds, [SqlKind::Select]);
}

#[test]
fn no_input_makes_it_panic() {
    // Every prefix of every statement above: unterminated strings, comments,
    // dollar quotes, half keywords.
    let corpus = KINDS
        .iter()
        .map(|(sql, _)| *sql)
        .chain(FUNCTION_POSITIONS.iter().copied());
    for sql in corpus {
        for (i, _) in sql.char_indices() {
            let _ = classify(&sql[..i]);
        }
    }
    for sql in [
        "\u{feff}SELECT 1",
        "SELECT '\u{1F600}'",
        "SELECT U&\"\\D800\"",
        "SELECT E'\\xff'",
        "SELECT $1, $999999999999",
        "SELECT 1e99999999",
        "\\x",
        "$$",
        "$a$$a",
        "U&",
        "\"\"",
    ] {
        let _ = classify(sql);
    }
}

/// A PostgreSQL resource named `name` on agent `a`.
fn resource(name: &str) -> crate::model::ResourceSpec {
    crate::model::ResourceSpec {
        name: name.into(),
        kind: crate::model::ResourceKind::Postgres,
        agent: "a".into(),
        address: "h:5432".into(),
        database: Some("d".into()),
        credential: None,
        labels: Default::default(),
        tls_mode: Default::default(),
        tls_ca: None,
        audit_mode: Default::default(),
        max_connections: None,
        max_connections_per_subject: None,
    }
}

#[test]
fn statements_that_reach_tables_they_do_not_name_say_so() {
    for sql in [
        "DROP SCHEMA s CASCADE",
        "DROP TABLE scratch.t CASCADE",
        "DROP TYPE mood CASCADE",
        "DROP FUNCTION f() CASCADE",
        "DROP EXTENSION e",
        "DROP OWNED BY r",
        "REASSIGN OWNED BY a TO b",
        "GRANT SELECT ON ALL TABLES IN SCHEMA secret TO PUBLIC",
        "REVOKE USAGE ON SCHEMA s FROM r",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA s GRANT SELECT ON TABLES TO r",
        "ALTER SCHEMA s OWNER TO r",
        "ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b",
        "VACUUM",
        "ANALYZE",
        "CLUSTER",
        "REINDEX SCHEMA s",
        "REINDEX DATABASE d",
        "SELECT most_common_vals FROM pg_stats WHERE tablename = 'payroll'",
        "SELECT * FROM pg_catalog.pg_statistic",
        "EXPLAIN SELECT * FROM pg_stats",
        "REINDEX SYSTEM d",
        "TRUNCATE scratch.t CASCADE",
        "ALTER TABLE scratch.t DROP COLUMN c CASCADE",
        "ALTER SCHEMA s RENAME TO scratch",
        "ALTER EXTENSION e SET SCHEMA scratch",
        "GRANT pg_read_all_data TO r",
        "ALTER GROUP staff ADD USER r",
        "CREATE ROLE r IN ROLE staff",
        "ALTER DATABASE d OWNER TO r",
        "CREATE PUBLICATION p FOR TABLES IN SCHEMA s",
        "CREATE SCHEMA s GRANT SELECT ON ALL TABLES IN SCHEMA x TO r",
    ] {
        assert!(one(sql).reaches_unnamed_tables, "{sql}");
    }
    for sql in [
        "DROP TABLE scratch.t",
        "DROP SCHEMA s",
        "DROP TYPE mood",
        "GRANT SELECT ON scratch.t TO r",
        "ALTER TABLE scratch.t OWNER TO r",
        "VACUUM scratch.t",
        "ANALYZE scratch.t",
        "CLUSTER scratch.t",
        "REINDEX TABLE scratch.t",
        "SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "SELECT stxname FROM pg_statistic_ext",
        "WITH pg_stats AS (SELECT 1) SELECT * FROM pg_stats",
        "REVOKE SELECT ON scratch.t FROM r CASCADE",
        "TRUNCATE scratch.t",
        "ALTER TABLE scratch.t DROP COLUMN c",
        "ALTER TABLE scratch.t RENAME TO u",
        "CREATE ROLE r LOGIN",
        "CREATE PUBLICATION p FOR TABLE scratch.t",
    ] {
        assert!(!one(sql).reaches_unnamed_tables, "{sql}");
    }
}

#[test]
fn dropping_a_policy_trigger_or_rule_writes_its_table() {
    for sql in [
        "DROP POLICY p ON public.payroll",
        "DROP TRIGGER IF EXISTS tr ON public.payroll",
        "DROP RULE r ON public.payroll",
    ] {
        assert_eq!(one(sql).tables_written, ["public.payroll"], "{sql}");
    }
    assert_eq!(one("DROP POLICY p ON payroll").tables_written, ["payroll"]);
    assert_eq!(
        one("DROP TRIGGER tr ON db.public.payroll").tables_written,
        ["public.payroll"]
    );
}

#[test]
fn table_rules_cannot_vouch_for_what_a_statement_does_not_name() {
    let doc = parse_document(
        "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [db] }\n    rules:\n      - deny: { sql: { tables: [public.payroll] } }\n      - deny: { sql: { functions: [app.rebuild_ledger] } }\n      - allow: { sql: { statements: [ddl, dcl, write, read], tables: [\"scratch.*\"] } }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let policy: CompiledPolicy = compile(&doc, &[resource("db")], "a");
    let u = Subject::user("u", Vec::<String>::new());
    let decide = |sql: &str| policy.decide(&u, "db", &one(sql));
    for sql in [
        "CREATE TABLE scratch.t (x int)",
        "DROP TABLE scratch.t",
        "DROP POLICY p ON scratch.t",
    ] {
        let d = decide(sql);
        assert!(d.is_allowed(), "{sql}: {d:?}");
    }
    // The allow rule's tables cannot vouch for these.
    for sql in [
        "DROP SCHEMA public CASCADE",
        "DROP TABLE scratch.t CASCADE",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC",
    ] {
        let d = decide(sql);
        assert!(d.is_denied(), "{sql}: {d:?}");
        let trace = policy.explain(&u, "db", Some(&one(sql))).trace.join("\n");
        assert!(
            trace.contains("it reaches tables it does not name"),
            "{sql}: {trace}"
        );
    }
    // The deny rules catch them, and what names the table or function.
    for sql in [
        "DROP POLICY tenant ON public.payroll",
        "DROP TRIGGER audit ON public.payroll",
        "DROP OWNED BY someone",
        "CREATE TRIGGER z AFTER INSERT ON scratch.t FOR EACH STATEMENT EXECUTE FUNCTION app.rebuild_ledger()",
    ] {
        let d = decide(sql);
        assert!(d.is_denied(), "{sql}: {d:?}");
        let rule = if sql.starts_with("CREATE") {
            "rules[1]"
        } else {
            "rules[0]"
        };
        assert_eq!(d.rule.as_deref(), Some(rule), "{sql}: {d:?}");
    }
}

#[test]
fn classify_and_decide_deny_smuggled_ddl() {
    let doc = parse_document(
        "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [db] }\n    rules:\n      - deny: { sql: { statements: [ddl] } }\n        reason: no schema changes\n      - allow: { sql: { statements: [select] } }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let policy: CompiledPolicy = compile(&doc, &[resource("db")], "a");
    let u = Subject::user("u", Vec::<String>::new());
    let decisions: Vec<_> = all("select 1; drop table t")
        .iter()
        .map(|s| policy.decide(&u, "db", &s.facts))
        .collect();
    assert!(decisions[0].is_allowed(), "{:?}", decisions[0]);
    assert!(decisions[1].is_denied());
    assert_eq!(decisions[1].reason, "no schema changes");
    // The text as a whole is denied when any statement is.
    assert!(decisions.iter().any(|d| d.is_denied()));

    // Hidden writes are not covered by an allow of select.
    for sql in [
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT set_config('role', 'postgres', false)",
        "LOAD 'x'",
    ] {
        for s in all(sql) {
            assert!(policy.decide(&u, "db", &s.facts).is_denied(), "{sql}");
        }
    }
    let d = policy.decide(&u, "db", &one("LOAD 'x'"));
    assert!(d.reason.contains("could not be classified"), "{}", d.reason);
}

#[test]
fn functions_defined_in_the_database_need_a_rule_naming_them() {
    let doc = parse_document(
        "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [db] }\n    rules:\n      - allow: { sql: { statements: [read, write] } }\n      - allow: { sql: { statements: [user_function], functions: [\"app.get_*\"] } }\n      - deny: { sql: { statements: [user_function], functions: [\"app.get_secret*\"] } }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let policy: CompiledPolicy = compile(&doc, &[resource("db")], "a");
    let u = Subject::user("u", Vec::<String>::new());
    let decide = |sql: &str| policy.decide(&u, "db", &one(sql));

    // PostgreSQL's own functions are covered by `read`; the application's
    // named ones by the second rule, with built-ins beside them.
    for sql in [
        "SELECT lower(name), now() FROM t",
        "SELECT app.get_orders(1)",
        "SELECT lower(x), count(*) FROM app.get_orders(1) AS o(x text) GROUP BY 1",
    ] {
        let d = decide(sql);
        assert!(d.is_allowed(), "{sql}: {d:?}");
    }
    // Any other function or operator of the database is not, however it
    // is reached.
    for sql in [
        "SELECT touch(t) FROM t",
        "SELECT app.get_orders(1), app.purge()",
        "SELECT public.lower('a')",
        "SELECT 1 === 2",
        "UPDATE t SET a = app.bump(a) WHERE id = 1",
    ] {
        let d = decide(sql);
        assert!(d.is_denied(), "{sql}: {d:?}");
        assert!(d.reason.contains("user_function"), "{sql}: {}", d.reason);
    }
    let d = decide("SELECT touch(t), 1 === 2 FROM t");
    assert!(
        d.reason
            .ends_with("(functions or operators defined in the database: ===, touch)"),
        "{}",
        d.reason
    );
    // Deny rules match the calls by name, too.
    let d = decide("SELECT app.get_secret_key()");
    assert!(d.is_denied(), "{d:?}");
    assert_eq!(d.rule.as_deref(), Some("rules[2]"), "{d:?}");
    // The facts say which calls are the database's.
    let facts = one("SELECT lower(app.get_orders(1)::text) WHERE 1 === 2");
    assert_eq!(facts.functions, ["app.get_orders", "lower"]);
    assert_eq!(facts.user_functions, ["===", "app.get_orders"]);
}

/// Attribute notation calls any function of one argument, PostgreSQL's
/// own too: `('/etc/passwd'::text).pg_read_file` is `pg_read_file(...)`.
/// What such a call does is the statement's, and deny rules naming the
/// function see it.
#[test]
fn a_field_selection_that_may_call_a_built_in_carries_what_the_call_does() {
    for (sql, kind) in [
        (
            "SELECT ('/etc/hostname'::text).pg_read_binary_file",
            "server_function",
        ),
        (
            "SELECT p.pg_read_file FROM unnest(ARRAY['/etc/hostname']) p",
            "server_function",
        ),
        (
            "SELECT (pid).pg_terminate_backend FROM pg_locks",
            "server_function",
        ),
        ("SELECT ('s1'::regclass).nextval", "function_write"),
        ("SELECT (-1).lo_creat", "function_write"),
        (
            "SELECT (x).word FROM (SELECT ('select 1'::text).ts_stat AS x) s",
            "dynamic_sql",
        ),
        ("SELECT ('delete from t'::text).dblink_exec", "dynamic_sql"),
        ("SELECT (a).b.pg_ls_dir FROM t a", "server_function"),
    ] {
        let kinds = kinds_of(sql);
        assert!(
            kinds.contains(SqlKind::from_name(kind).unwrap()),
            "{sql}: {kinds:?}"
        );
    }
    // A built-in's name is matched by deny rules as a function reached.
    let facts = one("SELECT (NULL::int).pg_stat_get_activity AS a");
    assert_eq!(facts.functions_reached, ["pg_stat_get_activity"]);
    assert!(facts.functions.is_empty(), "{facts:?}");
    // An ordinary column of the same name as no built-in adds nothing.
    let facts = one("SELECT t.email FROM t");
    assert_eq!(kind_set(&facts.kinds), named(&["select"]));
    assert!(facts.functions_reached.is_empty(), "{facts:?}");
}

/// What only the database's catalog can place: what the agent checks
/// against the functions and operators defined there.
#[test]
fn names_the_catalog_decides_are_reported() {
    let names = |sql: &str| {
        let mut statements = all(sql);
        assert_eq!(statements.len(), 1, "{sql}");
        statements.remove(0).catalog_names
    };
    let attributes = |sql: &str| names(sql).attributes;
    // Attribute notation: `t.touch` may be `touch(t)`.
    assert_eq!(attributes("SELECT t.touch FROM t"), ["touch"]);
    assert_eq!(
        attributes("SELECT s.t.touch, t.id FROM s.t"),
        ["id", "touch"]
    );
    assert_eq!(attributes("SELECT (t).touch FROM t"), ["touch"]);
    assert_eq!(attributes("SELECT (f(1)).a.touch"), ["a", "touch"]);
    assert_eq!(attributes("SELECT 1 FROM t WHERE (t.*).touch"), ["touch"]);
    assert_eq!(
        attributes("WITH c AS (SELECT t.touch FROM t) SELECT * FROM c"),
        ["touch"]
    );
    // A bare name is a column or a whole row, never a call; `t.*` names
    // no field; subscripts are not names.
    assert!(attributes("SELECT touch, t.*, (a)[1] FROM t").is_empty());

    // Operators that are PostgreSQL's own symbols, unqualified: the
    // database may define them again for its own types.
    assert_eq!(
        names("SELECT 1 FROM t WHERE a = b AND c || d LIKE 'x' ORDER BY e USING <").operators,
        ["<", "=", "||", "~~"]
    );
    assert!(
        names("SELECT 1 OPERATOR(pg_catalog.=) 2")
            .operators
            .is_empty()
    );
    // Constructs that compare without naming an operator.
    for (sql, implied) in [
        ("SELECT CASE a WHEN 1 THEN 2 END FROM t", &["="][..]),
        ("SELECT CASE WHEN a THEN 2 END FROM t", &[]),
        ("SELECT 1 FROM t JOIN u USING (id)", &["="]),
        ("SELECT 1 FROM t NATURAL JOIN u", &["="]),
        (
            "SELECT 1 FROM t WHERE a BETWEEN b AND c",
            &["<", "<=", ">", ">="],
        ),
        (
            "SELECT 1 FROM t WHERE a NOT BETWEEN SYMMETRIC b AND c",
            &["<", "<=", ">", ">="],
        ),
        ("SELECT 1 FROM t WHERE a IN (SELECT b FROM u)", &["="]),
        ("SELECT 1 FROM t WHERE a NOT IN (VALUES (1))", &["="]),
        ("SELECT a FROM t ORDER BY a", &["<", ">"]),
        ("SELECT DISTINCT a FROM t", &["<", "="]),
        ("SELECT a FROM t GROUP BY a", &["<", "="]),
        ("SELECT a FROM t UNION SELECT a FROM u", &["<", "="]),
        ("SELECT a FROM t UNION ALL SELECT a FROM u", &[]),
        ("SELECT count(DISTINCT a) FROM t", &["<", "="]),
        ("SELECT rank() OVER (PARTITION BY a) FROM t", &["="]),
        ("SELECT greatest(a, b) FROM t", &["<", ">"]),
        ("SELECT 1 FROM t WHERE a IN (1, 2)", &["="]),
    ] {
        assert_eq!(names(sql).operators, implied, "{sql}");
    }
    // SQL syntax that PostgreSQL 15 reads as a call of a function by that
    // name, and calls the grammar qualifies itself.
    for (sql, call) in [
        ("SELECT json_value('{}', '$.a')", "json_value"),
        ("SELECT json_query('{}', '$.a')", "json_query"),
        ("SELECT json_exists('{}', '$.a')", "json_exists"),
        ("SELECT json_scalar(1)", "json_scalar"),
        ("SELECT json_serialize('{}')", "json_serialize"),
        ("SELECT json('{}')", "json"),
        ("SELECT json_array(1, 2)", "json_array"),
        ("SELECT json_arrayagg(a) FROM t", "json_arrayagg"),
        ("SELECT json_object('a' : 1)", "json_object"),
        ("SELECT json_object(ARRAY['a', 'b'])", "json_object"),
        ("SELECT json_objectagg(a : b) FROM t", "json_objectagg"),
        (
            "SELECT * FROM json_table('[]', '$[*]' COLUMNS (a int PATH '$'))",
            "json_table",
        ),
        (
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE RETURNING merge_action()",
            "merge_action",
        ),
        ("SELECT pg_catalog.lower('a')", "lower"),
    ] {
        assert!(
            names(sql).calls.contains(&call.to_owned()),
            "{sql}: {:?}",
            names(sql)
        );
    }
    assert!(names("SELECT lower('a')").calls.is_empty());
    // A quoted name with a dot is one name, not a schema and a name.
    let st = all("SELECT \"pg_catalog.lower\"('a')").remove(0);
    assert!(st.facts.kinds.contains(&SqlKind::UserFunction), "{st:?}");

    // One that is not PostgreSQL's own is a user function already.
    let st = all("SELECT 1 === 2").remove(0);
    assert!(st.catalog_names.operators.is_empty());
    assert_eq!(st.facts.user_functions, ["==="]);

    // What a statement defines, for the session's later statements.
    for (sql, defined) in [
        (
            "CREATE FUNCTION app.touch(t) RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "touch",
        ),
        (
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'",
            "p",
        ),
        (
            "CREATE AGGREGATE total(int) (sfunc = int4pl, stype = int)",
            "total",
        ),
        (
            "CREATE OPERATOR === (leftarg = int, rightarg = int, function = int4eq)",
            "===",
        ),
        ("ALTER FUNCTION f(int) RENAME TO touch", "touch"),
        ("ALTER ROUTINE f RENAME TO touch", "touch"),
        (
            "CREATE DOMAIN app.positive AS int CHECK (VALUE > 0)",
            "positive",
        ),
        ("CREATE TYPE fr AS RANGE (subtype = float8)", "fr"),
        (
            "CREATE TYPE mood (input = mood_in, output = mood_out)",
            "mood",
        ),
        (
            "CREATE OPERATOR CLASS c DEFAULT FOR TYPE mood USING btree AS FUNCTION 1 f(mood, mood)",
            "mood",
        ),
    ] {
        assert_eq!(names(sql).defines, [defined], "{sql}");
    }
    assert_eq!(
        names("CREATE CAST (int AS mood) WITH FUNCTION f(int)").defines,
        ["int4", "mood"]
    );
    assert!(names("ALTER TABLE t RENAME TO touch").defines.is_empty());
    assert!(names("SELECT 1").is_empty());

    // Types values are cast to, in each spelling, and made as columns of
    // a function's rows.
    assert_eq!(
        names("SELECT '1'::app.positive, CAST(x AS mood[]), fr '[1,2)' FROM t").types,
        ["fr", "mood", "positive"]
    );
    assert_eq!(
        names("SELECT * FROM json_to_record('{}') AS x(n positive)").types,
        ["positive"]
    );
    assert_eq!(
        names("SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS n positive PATH 'n')").types,
        ["positive"]
    );
}

#[test]
fn foreign_data_definitions_name_their_tables() {
    let facts = |sql: &str| all(sql).remove(0).facts;
    assert_eq!(
        facts("CREATE FOREIGN TABLE remote.orders (id int) SERVER s").foreign_tables,
        ["remote.orders"]
    );
    assert_eq!(
        facts("IMPORT FOREIGN SCHEMA public FROM SERVER s INTO remote").foreign_tables,
        ["remote.*"]
    );
    assert_eq!(
        facts("IMPORT FOREIGN SCHEMA public LIMIT TO (a, b) FROM SERVER s INTO remote")
            .foreign_tables,
        ["remote.a", "remote.b"]
    );
    // EXCEPT imports the rest: any table of the schema.
    assert_eq!(
        facts("IMPORT FOREIGN SCHEMA public EXCEPT (a) FROM SERVER s INTO remote").foreign_tables,
        ["remote.*"]
    );
    // Which tables are foreign only the catalog knows.
    assert!(
        facts("SELECT * FROM remote.orders")
            .foreign_tables
            .is_empty()
    );
}

#[test]
fn catalogs_holding_credentials_are_named_however_they_are_read() {
    let facts = |sql: &str| all(sql).remove(0).facts;
    let found = |sql: &str| facts(sql).credential_catalogs;
    for (sql, catalog) in [
        (
            "SELECT * FROM pg_user_mappings",
            "pg_catalog.pg_user_mappings",
        ),
        (
            "SELECT umoptions FROM PG_CATALOG.pg_user_mapping",
            "pg_catalog.pg_user_mapping",
        ),
        ("TABLE pg_authid", "pg_catalog.pg_authid"),
        ("COPY pg_shadow TO STDOUT", "pg_catalog.pg_shadow"),
        (
            "COPY (SELECT subconninfo FROM pg_subscription) TO STDOUT",
            "pg_catalog.pg_subscription",
        ),
        (
            "SELECT 1 WHERE EXISTS (SELECT FROM information_schema.user_mapping_options o WHERE o.option_value LIKE 'a%')",
            "information_schema.user_mapping_options",
        ),
        (
            "SELECT to_jsonb(m) FROM \"pg_user_mappings\" m",
            "pg_catalog.pg_user_mappings",
        ),
    ] {
        assert_eq!(found(sql), [catalog], "{sql}");
        assert!(
            facts(sql).kinds.contains(&SqlKind::CredentialCatalog),
            "{sql}"
        );
    }
    // Another schema's table, and a CTE, of such a name are not catalogs.
    for sql in [
        "SELECT * FROM public.pg_authid",
        "WITH pg_shadow AS (SELECT 1) SELECT * FROM pg_shadow",
        "SELECT * FROM pg_roles",
        "SELECT 'pg_authid'::regclass",
    ] {
        let facts = facts(sql);
        assert!(facts.credential_catalogs.is_empty(), "{sql}");
        assert!(!facts.kinds.contains(&SqlKind::CredentialCatalog), "{sql}");
    }
}

#[test]
fn a_call_reached_through_a_view_carries_the_kinds_a_direct_call_would() {
    assert_eq!(
        kinds_of_call("pg_catalog.query_to_xml"),
        [SqlKind::DynamicSql]
    );
    assert_eq!(kinds_of_call("PG_READ_FILE"), [SqlKind::ServerFunction]);
    assert_eq!(kinds_of_call("public.nextval"), [SqlKind::FunctionWrite]);
    // Its setting is not read: it may set anything.
    let set = kinds_of_call("pg_catalog.set_config");
    for kind in [
        SqlKind::Set,
        SqlKind::SetRole,
        SqlKind::SetSessionAuthorization,
    ] {
        assert!(set.contains(&kind), "{set:?}");
    }
    assert!(kinds_of_call("pg_catalog.lower").is_empty());
}

#[test]
fn renames_of_relations_schemas_and_types_are_reported() {
    use crate::Rename;
    let renames = |sql: &str| all(sql).remove(0).facts.renames;
    let relation = |old: &str, new: &str| Rename::Relation {
        old: old.into(),
        new: new.into(),
    };
    assert_eq!(
        renames("ALTER TABLE remote.items RENAME TO innocent"),
        [relation("remote.items", "remote.innocent")]
    );
    assert_eq!(
        renames("ALTER FOREIGN TABLE IF EXISTS items RENAME TO innocent"),
        [relation("items", "innocent")]
    );
    assert_eq!(
        renames("ALTER MATERIALIZED VIEW v RENAME TO w"),
        [relation("v", "w")]
    );
    assert_eq!(
        renames("ALTER VIEW s.v SET SCHEMA t"),
        [relation("s.v", "t.v")]
    );
    assert_eq!(
        renames("ALTER SCHEMA remote RENAME TO local"),
        [Rename::Schema {
            old: "remote".into(),
            new: "local".into()
        }]
    );
    for sql in [
        "ALTER DOMAIN app.positive RENAME TO harmless",
        "ALTER TYPE positive RENAME TO harmless",
    ] {
        assert_eq!(
            renames(sql),
            [Rename::Type {
                old: "positive".into(),
                new: "harmless".into()
            }],
            "{sql}"
        );
    }
    // Validating a domain's constraint runs its CHECK: it names the type.
    assert_eq!(
        all("ALTER DOMAIN app.positive VALIDATE CONSTRAINT positive_check")
            .remove(0)
            .catalog_names
            .types,
        ["positive"]
    );
    for sql in [
        "ALTER TABLE s.t RENAME COLUMN a TO b",
        "ALTER VIEW s.t RENAME COLUMN a TO b",
    ] {
        assert_eq!(
            renames(sql),
            [Rename::Column {
                relation: "s.t".into(),
                old: "a".into(),
                new: "b".into()
            }],
            "{sql}"
        );
    }
    // Routines: a rename keeps the schema, a move keeps the name.
    let function = |old: &str, new: &str| Rename::Function {
        old: old.into(),
        new: new.into(),
    };
    for (sql, rename) in [
        ("ALTER FUNCTION f(int) RENAME TO g", function("f", "g")),
        (
            "ALTER FUNCTION app.rebuild_ledger RENAME TO harmless",
            function("app.rebuild_ledger", "app.harmless"),
        ),
        (
            "ALTER PROCEDURE db.app.p() SET SCHEMA public",
            function("app.p", "public.p"),
        ),
        ("ALTER ROUTINE r SET SCHEMA tools", function("r", "tools.r")),
        (
            "ALTER AGGREGATE app.total(int) RENAME TO sum2",
            function("app.total", "app.sum2"),
        ),
        (
            "ALTER OPERATOR app.=== (int, int) SET SCHEMA tools",
            function("app.===", "tools.==="),
        ),
    ] {
        assert_eq!(renames(sql), [rename], "{sql}");
    }
    // An extension's objects move from wherever they were.
    assert_eq!(
        renames("ALTER EXTENSION pgcrypto SET SCHEMA tools"),
        [Rename::Extension {
            name: "pgcrypto".into(),
            schema: "tools".into()
        }]
    );
    // The new name is also a definition, for the agent's catalog.
    assert_eq!(
        all("ALTER FUNCTION app.f() RENAME TO g")
            .remove(0)
            .catalog_names
            .defines,
        ["g"]
    );
    // Constraints and enum values are not renames of this kind.
    for sql in [
        "ALTER TABLE t RENAME CONSTRAINT a TO b",
        "ALTER TYPE mood RENAME VALUE 'a' TO 'b'",
    ] {
        assert!(renames(sql).is_empty(), "{sql}");
    }
}

#[test]
fn routines_created_replaced_or_changed_are_redefined() {
    let redefines = |sql: &str| all(sql).remove(0).catalog_names.redefines;
    for (sql, name) in [
        (
            "CREATE OR REPLACE FUNCTION app.audit() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN RETURN NEW; END $$",
            "audit",
        ),
        ("CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", "p"),
        ("ALTER FUNCTION app.audit() SECURITY DEFINER", "audit"),
        ("ALTER PROCEDURE p() SET search_path = evil", "p"),
        ("ALTER ROUTINE r() RESET ALL", "r"),
        ("ALTER FUNCTION audit() OWNER TO r", "audit"),
        // What the catalog knows by the old name, a replacement under the
        // new one would replace.
        ("ALTER FUNCTION app.audit() RENAME TO x", "audit"),
        (
            "CREATE OR REPLACE AGGREGATE total(int) (SFUNC = int4pl, STYPE = int)",
            "total",
        ),
    ] {
        assert_eq!(redefines(sql), [name], "{sql}");
    }
    for sql in [
        "CREATE OPERATOR === (FUNCTION = f, LEFTARG = int, RIGHTARG = int)",
        "ALTER TABLE t OWNER TO r",
        "ALTER TYPE mood OWNER TO r",
        "CREATE DOMAIN d AS int",
        "SELECT audit()",
    ] {
        assert!(redefines(sql).is_empty(), "{sql}");
    }
}

#[test]
fn vacuum_and_analyze_run_what_writing_the_tables_they_name_runs() {
    // Counted as writes: the agent adds what writing them calls (index
    // expressions, extended statistics) for deny rules' `functions:`.
    for sql in [
        "ANALYZE scratch.t",
        "VACUUM FULL scratch.t",
        "VACUUM (ANALYZE) scratch.t (a, b)",
    ] {
        let facts = one(sql);
        assert_eq!(facts.tables_written, ["scratch.t"], "{sql}");
        assert!(facts.tables_read.is_empty(), "{sql}");
    }
    assert_eq!(one("ANALYZE a, public.b").tables_written, ["a", "public.b"]);
}

#[test]
fn sequences_named_in_strings_are_read_or_written() {
    for (sql, written) in [
        ("SELECT nextval('secret.invoice_seq')", "secret.invoice_seq"),
        (
            "SELECT setval('secret.invoice_seq', 1)",
            "secret.invoice_seq",
        ),
        (
            "SELECT pg_catalog.setval('secret.invoice_seq'::regclass, 1, false)",
            "secret.invoice_seq",
        ),
        // As regclass input reads it: unquoted parts fold to lower case,
        // quoted ones keep theirs, a database part is dropped.
        ("SELECT NEXTVAL(' Secret . \"Seq\"\"x\" ')", "secret.Seq\"x"),
        ("SELECT nextval('db.secret.s')", "secret.s"),
        // PostgreSQL's white space, `\v` among it; not Unicode's.
        ("SELECT nextval(E'secret\\x0b.\\fs\\t')", "secret.s"),
        ("SELECT nextval(E'secret.s\\u00a0')", "secret.s\u{a0}"),
        // Cut to 63 bytes, as the server cuts names.
        (
            "SELECT nextval('secret.éééééééééééééééééééééééééééééééééééééééé')",
            "secret.ééééééééééééééééééééééééééééééé",
        ),
    ] {
        let facts = one(sql);
        assert_eq!(facts.tables_written, [written], "{sql}");
        assert!(!facts.reaches_unnamed_tables, "{sql}");
    }
    let facts = one("INSERT INTO t VALUES (nextval('t_id_seq'))");
    assert_eq!(facts.tables_written, ["t", "t_id_seq"]);
    let facts = one("SELECT currval('secret.invoice_seq')");
    assert_eq!(facts.tables_read, ["secret.invoice_seq"]);
    assert!(facts.tables_written.is_empty());
    // A computed name, an OID or what regclass would not read as a name
    // may be any sequence.
    for sql in [
        "SELECT nextval($1)",
        "SELECT nextval('secret.' || 'seq')",
        "SELECT setval(16384, 1)",
        "SELECT nextval('16384')",
        "SELECT currval('a.b.c.d')",
        "SELECT nextval('\"unterminated')",
        "SELECT nextval('a..b')",
        "SELECT nextval('secret.seq'::text)",
        // Attribute notation: `nextval(x)`.
        "SELECT ('secret.seq'::regclass).nextval",
        "SELECT (x).currval FROM t",
    ] {
        assert!(one(sql).reaches_unnamed_tables, "{sql}");
    }
    // Another schema's function of the same name is the database's own;
    // the current database's name may qualify PostgreSQL's.
    let facts = one("SELECT app.nextval('secret.seq')");
    assert!(facts.tables_written.is_empty() && !facts.reaches_unnamed_tables);
    let facts = one("SELECT app.pg_catalog.nextval('secret.seq')");
    assert_eq!(facts.tables_written, ["secret.seq"]);
}

#[test]
fn large_objects_are_tables_no_rule_names() {
    for sql in [
        "SELECT lo_get(16401)",
        "SELECT pg_catalog.LO_GET(16401, 0, 10)",
        "SELECT lo_put(16401, 0, 'x')",
        "SELECT lo_open(16401, 262144)",
        "SELECT loread(0, 100)",
        "SELECT lowrite(0, 'x')",
        "SELECT lo_from_bytea(0, 'x')",
        "SELECT lo_unlink(16401)",
        "SELECT lo_truncate(0, 0)",
        "SELECT lo_export(16401, '/tmp/x')",
        "SELECT (16401::oid).lo_get",
        "SELECT name FROM t WHERE lo_get(doc) IS NOT NULL",
        // The current database's name may come first.
        "SELECT app.pg_catalog.lo_get(16401)",
        // Where the contents are kept.
        "SELECT data FROM pg_largeobject",
        "SELECT data FROM pg_catalog.pg_largeobject WHERE loid = 16401",
        // Privileges or a new owner open them to others.
        "GRANT SELECT ON LARGE OBJECT 16401 TO public",
        "ALTER LARGE OBJECT 16401 OWNER TO r",
    ] {
        assert!(one(sql).reaches_unnamed_tables, "{sql}");
    }
    // No contents: closing, seeking, creating an empty one; and another
    // schema's function of the same name is the database's own.
    for sql in [
        "SELECT lo_close(0)",
        "SELECT lo_lseek(0, 0, 0)",
        "SELECT lo_create(0)",
        "SELECT app.lo_get(16401)",
    ] {
        assert!(!one(sql).reaches_unnamed_tables, "{sql}");
    }
}

#[test]
fn comments_labels_and_extension_members_name_their_table() {
    for sql in [
        "COMMENT ON TABLE s.t IS 'x'",
        "COMMENT ON COLUMN s.t.c IS 'x'",
        "COMMENT ON CONSTRAINT c ON s.t IS 'x'",
        "COMMENT ON POLICY p ON s.t IS 'x'",
        "COMMENT ON TRIGGER tr ON s.t IS 'x'",
        "COMMENT ON RULE r ON s.t IS 'x'",
        "SECURITY LABEL ON TABLE s.t IS 'x'",
        "SECURITY LABEL FOR selinux ON COLUMN s.t.c IS 'x'",
        "ALTER EXTENSION e ADD TABLE s.t",
        "ALTER EXTENSION e DROP VIEW s.t",
    ] {
        assert_eq!(one(sql).tables_written, ["s.t"], "{sql}");
    }
    assert_eq!(one("COMMENT ON COLUMN t.c IS 'x'").tables_written, ["t"]);
    for sql in [
        "COMMENT ON CONSTRAINT c ON DOMAIN d IS 'x'",
        "COMMENT ON FUNCTION f() IS 'x'",
        "ALTER EXTENSION e ADD FUNCTION f()",
    ] {
        assert!(one(sql).tables_written.is_empty(), "{sql}");
    }
}

fn walked(root: NodeRef<'_>) -> usize {
    let (mut count, mut stack) = (0, vec![root]);
    while let Some(node) = stack.pop() {
        count += 1;
        let _ = for_each_child(node, &mut |_, child| {
            stack.push(child);
            Ok::<(), ()>(())
        });
    }
    count
}

/// Counts the same nodes in pg_query's serde form: every JSON object that
/// is a message, looking through `Node` wrappers and oneof tags, and not
/// into constants (which the walk does not need to enter).
fn serialized(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => {
            let mut fields = map.iter();
            if let (1, Some((key, inner))) = (map.len(), fields.next())
                && (key == "node" || key.starts_with(|c: char| c.is_ascii_uppercase()))
            {
                return serialized(inner);
            }
            let constant = map.contains_key("isnull");
            1 + map
                .iter()
                .filter(|(key, _)| !(constant && *key == "val"))
                .map(|(_, v)| serialized(v))
                .sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter().map(serialized).sum(),
        _ => 0,
    }
}

#[test]
fn the_walk_reaches_every_node() {
    let corpus = KINDS
        .iter()
        .map(|(sql, _)| *sql)
        .chain(FUNCTION_POSITIONS.iter().copied());
    for sql in corpus {
        let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        for raw in &parsed.protobuf.stmts {
            let Some(node) = raw.stmt.as_deref() else {
                panic!("{sql}: empty statement");
            };
            let Some(inner) = node.node.as_ref() else {
                panic!("{sql}: empty node");
            };
            let json = serde_json::to_value(node).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(walked(inner.to_ref()), serialized(&json), "{sql}");
        }
    }
}

#[test]
fn statements_that_change_named_prepared_statements_say_so() {
    use crate::PreparedChange as C;
    let cases = [
        ("PREPARE s1 AS SELECT 1", Some(C::Prepare("s1".into()))),
        ("DEALLOCATE s1", Some(C::Deallocate("s1".into()))),
        (
            "DEALLOCATE PREPARE \"S 1\"",
            Some(C::Deallocate("S 1".into())),
        ),
        ("deallocate /* c */ ALL", Some(C::DeallocateAll)),
        ("DISCARD ALL", Some(C::DiscardAll)),
        ("CLOSE p", Some(C::ClosePortal("p".into()))),
        ("CLOSE \"P q\"", Some(C::ClosePortal("P q".into()))),
        ("CLOSE ALL", Some(C::CloseAllPortals)),
        ("ROLLBACK TO SAVEPOINT a", Some(C::CloseAllPortals)),
        ("COMMIT AND CHAIN", Some(C::CloseAllPortals)),
        ("ROLLBACK", Some(C::CloseAllPortals)),
        ("END", Some(C::CloseAllPortals)),
        ("PREPARE TRANSACTION 'x'", Some(C::CloseAllPortals)),
        ("SAVEPOINT a", None),
        ("RELEASE a", None),
        ("DISCARD PLANS", None),
        ("SELECT 1", None),
    ];
    for (sql, want) in cases {
        let got = classify(sql).unwrap();
        assert_eq!(got[0].prepared, want, "{sql}");
    }
}

#[test]
fn fetch_and_move_name_the_portal_they_run() {
    let one = |sql: &str| classify(sql).unwrap().remove(0).fetches;
    assert_eq!(one("FETCH ALL FROM p2"), Some("p2".into()));
    assert_eq!(
        one("MOVE FORWARD 5 IN \"My Portal\""),
        Some("My Portal".into())
    );
    assert_eq!(one("fetch next c"), Some("c".into()));
    assert_eq!(one("CLOSE p2"), None);
    assert_eq!(one("SELECT 1"), None);
}

#[test]
fn copy_to_stdout_says_what_it_copies_and_how() {
    use crate::{CopyFormat, CopyOut};
    let one = |sql: &str| classify(sql).unwrap().remove(0).copy_out;
    assert_eq!(
        one("COPY public.customers (name, ssn) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')"),
        Some(CopyOut {
            table: Some("public.customers".into()),
            columns: vec!["name".into(), "ssn".into()],
            format: CopyFormat::Csv,
            delimiter: Some(";".into()),
            header: true,
            ..CopyOut::default()
        })
    );
    let q = one("COPY (SELECT 1) TO STDOUT").unwrap();
    assert_eq!((q.table, q.format), (None, CopyFormat::Text));
    assert_eq!(
        one("COPY t TO STDOUT BINARY").unwrap().format,
        CopyFormat::Binary
    );
    assert_eq!(one("COPY t FROM STDIN"), None);
    assert_eq!(one("SELECT 1"), None);
}

#[test]
fn copy_from_stdin_is_marked_as_waiting_for_the_client_s_data() {
    let one = |sql: &str| classify(sql).unwrap().remove(0).copy_in;
    assert!(one("COPY t FROM STDIN"));
    assert!(one("copy public.t (a, b) from stdin with (format csv)"));
    // The server reads these itself, or writes: no data from the client.
    assert!(!one("COPY t FROM '/tmp/file'"));
    assert!(!one("COPY t FROM PROGRAM 'cat /tmp/file'"));
    assert!(!one("COPY t TO STDOUT"));
    assert!(!one("SELECT 1"));
    let both = classify("COPY a FROM STDIN; SELECT 1; COPY b FROM STDIN").unwrap();
    assert_eq!(
        both.iter().map(|s| s.copy_in).collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[test]
fn normalize_replaces_values_and_keeps_everything_else() {
    assert_eq!(
        normalize("SELECT a /* why */ FROM t WHERE b = 'x' AND c > -5 GROUP BY 1 LIMIT 3").unwrap(),
        "SELECT a /* why */ FROM t WHERE b = $1 AND c > $2 GROUP BY 1 LIMIT $3"
    );
    // A text that does not parse has no normalized form.
    assert!(normalize("SELEC 1").is_err());
    let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_LEN));
    assert!(matches!(
        normalize(&long),
        Err(ClassifyError::TooLong { .. })
    ));
}

#[test]
fn an_execute_with_constant_arguments_names_what_it_runs() {
    let executes = |sql: &str| all(sql).remove(0).executes;
    assert_eq!(executes("EXECUTE p"), Some("p".into()));
    assert_eq!(
        executes("execute P(1, 'a', -2.5, NULL, true)"),
        Some("p".into())
    );
    assert_eq!(executes(r#"EXECUTE "Q q"(1)"#), Some("Q q".into()));
    // Arguments that compute anything, and statements that only contain
    // an EXECUTE, are not judged by what the EXECUTE runs.
    assert_eq!(executes("EXECUTE p(1 + 1)"), None);
    assert_eq!(executes("EXECUTE p('x'::text)"), None);
    assert_eq!(executes("EXECUTE p(pg_read_file('x'))"), None);
    assert_eq!(executes("EXPLAIN ANALYZE EXECUTE p"), None);
    assert_eq!(executes("CREATE TABLE x AS EXECUTE p"), None);
    assert_eq!(executes("PREPARE p AS SELECT 1"), None);
}

#[test]
fn a_prepared_body_is_the_one_statement_its_prepare_holds() {
    assert_eq!(
        prepared_body("PREPARE p(int) AS SELECT $1 + 1;", "p").unwrap(),
        "SELECT $1 + 1"
    );
    // The target shows the whole text the PREPARE came in.
    assert_eq!(
        prepared_body(
            "SELECT 1; prepare P AS delete from t where id = $1; SELECT 2",
            "p"
        )
        .unwrap(),
        "DELETE FROM t WHERE id = $1"
    );
    assert_eq!(
        prepared_body(r#"PREPARE "Q q" AS SELECT 1"#, "Q q").unwrap(),
        "SELECT 1"
    );
    // Not exactly one PREPARE of that name: which one ran is unknown.
    for source in [
        "PREPARE p AS SELECT 1; DEALLOCATE p; PREPARE p AS DELETE FROM t",
        "PREPARE q AS SELECT 1",
        "SELECT 1",
        "SELEC 1",
        "",
    ] {
        assert!(prepared_body(source, "p").is_err(), "{source}");
    }
    // Read differently with standard_conforming_strings off: with it on,
    // the string ends at the second quote and a DELETE follows; with it
    // off, everything after SELECT is one string.
    let split = r"PREPARE p AS SELECT 'a\'; DELETE FROM t; SELECT 1 -- '";
    let err = prepared_body(split, "p").unwrap_err();
    assert!(err.contains("standard_conforming_strings"), "{err}");
}

#[test]
fn pg_dump_s_set_config_is_left_for_the_catalog_to_confirm() {
    // The setting is the one named only while `pg_settings` is the
    // catalog's: the agent checks the database has no other.
    let by_name = |sql: &str| {
        crate::classify(sql).unwrap()[0]
            .catalog_names
            .setting_by_name
    };
    assert!(by_name(
        "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings \
         WHERE name = 'restrict_nonsystem_relation_kind'"
    ));
    assert!(!by_name("SELECT set_config('work_mem', '1MB', false)"));
    assert!(!by_name(
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name <> 'work_mem'"
    ));
}
