//! Every class of statement the policy denies is blocked with SQLSTATE
//! 42501, the session stays usable, and the target confirms that nothing
//! ran: the table is still there, the rows are unchanged, and the server's
//! statement log (log_statement = all) never saw the statement.

use sluice_integration_tests::{
    datapath::DataPath,
    rawpg::{RawSession, bind_text, errors, execute, parse_typed, sync},
};
use sluice_pgwire::{Frame, messages};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `sql` through psql is refused with an error saying `says`, and the
/// target's statement log never saw `marker` (a comment in `sql`).
fn assert_refused(dp: &DataPath, sql: &str, marker: &str, says: &str) {
    let (ok, _, err) = dp.psql(sql);
    assert!(!ok, "`{sql}` was not refused");
    assert!(err.contains(says), "`{sql}`: {err}");
    assert!(
        !dp.pg.logs().contains(marker),
        "the target saw `{marker}` from `{sql}`"
    );
}

fn assert_denied(dp: &DataPath, sql: &str, marker: &str) {
    assert_refused(dp, sql, marker, "denied this statement");
    // The table and its rows are intact.
    assert_eq!(
        dp.target("SELECT count(*) FROM items"),
        "500",
        "after `{sql}`"
    );
}

#[tokio::test]
async fn ddl_and_hidden_ddl_never_reach_the_target() {
    let dp = DataPath::start().await;
    for (sql, marker) in [
        ("DROP TABLE items", "DROP TABLE items"),
        ("TRUNCATE items", "TRUNCATE items"),
        ("ALTER TABLE items ADD COLUMN x int", "ADD COLUMN x"),
        ("SELECT 1; DROP TABLE items", "DROP TABLE items"),
        ("/* harmless */ DrOp TaBlE \"items\"", "DrOp TaBlE"),
        ("DROP TABLE U&\"\\0069tems\"", "0069tems"),
        ("SELECT $q$;$q$; DROP TABLE items", "$q$"),
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE items'; END $$",
            "EXECUTE 'DROP",
        ),
        ("DO $body$ BEGIN DELETE FROM items; END $body$", "$body$"),
        (
            "EXPLAIN ANALYZE DELETE FROM items",
            "EXPLAIN ANALYZE DELETE",
        ),
        (
            "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM items",
            "FORMAT JSON",
        ),
        (
            "WITH gone AS (DELETE FROM items RETURNING *) SELECT count(*) FROM gone",
            "WITH gone",
        ),
        (
            "COPY items TO PROGRAM 'touch /tmp/sluice-copy-program'",
            "TO PROGRAM",
        ),
        ("COPY items FROM '/etc/hostname'", "/etc/hostname"),
        ("SELECT pg_read_file('/etc/hostname')", "pg_read_file"),
        ("SELECT * FROM pg_catalog.pg_ls_dir('.')", "pg_ls_dir"),
        ("SET ROLE postgres", "SET ROLE postgres"),
        (
            "SET SESSION AUTHORIZATION postgres",
            "SESSION AUTHORIZATION",
        ),
        ("RESET ALL", "RESET ALL"),
        ("SELECT set_config('role', 'postgres', false)", "set_config"),
        ("GRANT ALL ON items TO PUBLIC", "GRANT ALL"),
        ("PREPARE p AS DELETE FROM items", "PREPARE p"),
        ("this is not sql", "this is not sql"),
    ] {
        assert_denied(&dp, sql, marker);
    }
    assert!(!std::path::Path::new("/tmp/sluice-copy-program").exists());
    // The session keeps working after a denial.
    let (ok, out, err) = dp.psql("SELECT 1; SELECT count(*) FROM items");
    assert!(ok, "{err}");
    assert!(out.contains("500"));
}

#[tokio::test]
async fn a_table_a_rule_denies_is_denied_through_views_rules_and_partitions() {
    let rules = format!(
        "{}      - deny: {{ sql: {{ tables: [pg_stat_activity, public.payroll, ledger_2025, wages, pg_catalog.pg_database] }} }}\n        name: not-these\n        reason: other sessions and pay are private\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    // The DBA's views over what the rule denies, a view over one of them,
    // a rule that reads it, a partition of a table, a partition of a
    // denied table read by its own name, and a view over a catalog
    // PostgreSQL records no dependency on.
    dp.target(
        "CREATE VIEW public.sessions AS SELECT pid, query FROM pg_stat_activity; \
         CREATE TABLE payroll (id int, salary int); INSERT INTO payroll VALUES (1, 100); \
         CREATE VIEW staff AS SELECT id, salary FROM payroll; \
         CREATE VIEW staff_again AS SELECT * FROM staff; \
         CREATE TABLE memos (id int); \
         CREATE RULE memos_touch AS ON UPDATE TO memos DO ALSO UPDATE payroll SET salary = salary + 1; \
         CREATE TABLE ledger (id int, amount int) PARTITION BY RANGE (id); \
         CREATE TABLE ledger_2025 PARTITION OF ledger FOR VALUES FROM (0) TO (1000); \
         INSERT INTO ledger VALUES (1, 5); \
         CREATE TABLE wages (id int, amount int) PARTITION BY LIST (id); \
         CREATE TABLE wages_1 PARTITION OF wages FOR VALUES IN (1); \
         INSERT INTO wages VALUES (1, 7); \
         CREATE VIEW dbs AS SELECT datname FROM pg_database; \
         CREATE VIEW item_names AS SELECT name FROM items; \
         GRANT SELECT, UPDATE ON sessions, payroll, staff, staff_again, memos, ledger, wages_1, dbs, item_names TO app; \
         GRANT INSERT ON memos TO app",
    );
    for (sql, marker) in [
        ("SELECT query /* d1 */ FROM sessions", "/* d1 */"),
        ("SELECT salary /* d2 */ FROM staff_again", "/* d2 */"),
        ("UPDATE memos SET id = 2 /* d3 */ WHERE id = 1", "/* d3 */"),
        ("SELECT sum(amount) /* d4 */ FROM ledger", "/* d4 */"),
        ("SELECT amount /* d5 */ FROM wages_1", "/* d5 */"),
        ("SELECT datname /* d6 */ FROM dbs", "/* d6 */"),
    ] {
        assert_denied(&dp, sql, marker);
    }
    assert_eq!(dp.target("SELECT salary FROM payroll"), "100");
    // A view over what no rule denies reads as before; reading `memos` or
    // inserting into it runs no ON UPDATE rule, so neither reaches
    // `payroll`.
    for (sql, expected) in [
        ("SELECT count(*) FROM item_names", "500"),
        ("INSERT INTO memos VALUES (3) RETURNING id", "3"),
        ("SELECT count(*) FROM memos", "1"),
    ] {
        let (ok, out, err) = dp.psql(sql);
        assert!(ok, "`{sql}`: {err}");
        assert_eq!(out.lines().next(), Some(expected), "`{sql}`: {out}");
    }
    assert_eq!(dp.target("SELECT salary FROM payroll"), "100");
}

#[tokio::test]
async fn a_function_a_rule_denies_is_denied_when_a_view_or_policy_calls_it() {
    let rules = format!(
        "{}      - deny: {{ sql: {{ functions: [\"pg_stat_get_*\", pg_catalog.md5] }} }}\n        name: not-these-calls\n        reason: other sessions and digests are private\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    // The DBA's view over the activity function (no table in it), a view
    // of that view, a view using the denied function in an aggregate's
    // argument, a table whose row-level-security policy calls it, and
    // PostgreSQL's own view over the activity function; a view calling
    // query_to_xml, and one calling a DBA's alias placed in pg_catalog.
    dp.target(
        "CREATE VIEW public.sessions AS SELECT pid, query FROM pg_stat_get_activity(NULL); \
         CREATE VIEW sessions_again AS SELECT * FROM sessions; \
         CREATE VIEW digests AS SELECT string_agg(md5(name), ',') AS d FROM items; \
         CREATE TABLE secrets (id int, owner text); INSERT INTO secrets VALUES (1, 'app'); \
         ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY mine ON secrets USING (md5(owner) <> ''); \
         CREATE VIEW upper_names AS SELECT upper(name) AS n FROM items; \
         CREATE VIEW xml_sessions AS SELECT query_to_xml('select pid, query from pg_catalog.pg_stat_activity', true, false, '') AS x; \
         CREATE FUNCTION pg_catalog.session_text(int) RETURNS text LANGUAGE internal STABLE AS 'pg_stat_get_backend_activity'; \
         CREATE VIEW aliased AS SELECT pg_catalog.session_text(1) AS q; \
         GRANT SELECT, UPDATE ON sessions, sessions_again, digests, secrets, upper_names, xml_sessions, aliased TO app",
    );
    for (sql, marker) in [
        ("SELECT query /* f1 */ FROM sessions", "/* f1 */"),
        ("SELECT query /* f2 */ FROM sessions_again", "/* f2 */"),
        ("SELECT d /* f3 */ FROM public.digests", "/* f3 */"),
        (
            "UPDATE secrets SET id = 2 /* f4 */ WHERE id = 1",
            "/* f4 */",
        ),
        ("SELECT count(*) /* f5 */ FROM pg_stat_activity", "/* f5 */"),
    ] {
        assert_denied(&dp, sql, marker);
        let (_, _, err) = dp.psql(sql);
        assert!(err.contains("not-these-calls"), "`{sql}`: {err}");
    }
    assert_eq!(dp.target("SELECT id FROM secrets"), "1");
    // What a view's calls do counts as the statement's (query_to_xml runs
    // the SQL text it is given: `dynamic_sql`), and a DBA's function placed
    // in pg_catalog is the database's (`user_function`), not PostgreSQL's:
    // both in the group `dynamic` the rule `no-changes` denies.
    for (sql, marker, why) in [
        (
            "SELECT x /* f6 */ FROM xml_sessions",
            "/* f6 */",
            "no-changes",
        ),
        ("SELECT q /* f7 */ FROM aliased", "/* f7 */", "no-changes"),
    ] {
        assert_denied(&dp, sql, marker);
        let (_, _, err) = dp.psql(sql);
        assert!(err.contains(why), "`{sql}`: {err}");
    }
    // A view calling what no rule denies reads as before.
    let (ok, out, err) = dp.psql("SELECT count(n) FROM upper_names");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "500");
}

#[tokio::test]
async fn a_table_s_rules_for_writes_count_when_it_is_written_that_way_only() {
    // DEFAULT_RULES deny changing the session's role (`set_config`) and
    // reading the server's files (`pg_read_file`). `pg_settings`' ON
    // UPDATE rule calls `set_config`; the DBA's `inbox` has an ON INSERT
    // rule that reads a file as the table's owner, a superuser, and
    // `memo_pad` one that reads a view calling the DBA's function (kind
    // `user_function`, which `no-changes` denies); `outbox`'s reads a view
    // that reads a file, and `gate`'s reads one in its WHERE.
    let dp = DataPath::start().await;
    dp.target(
        "CREATE TABLE inbox (id int); \
         CREATE TABLE file_seen (body text); \
         CREATE RULE inbox_file AS ON INSERT TO inbox \
           DO ALSO INSERT INTO file_seen SELECT pg_read_file('/etc/hostname'); \
         CREATE VIEW inbox_ids AS SELECT id FROM inbox; \
         CREATE FUNCTION leak() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
         CREATE VIEW leaky AS SELECT leak() AS x; \
         CREATE TABLE memo_pad (id int); \
         CREATE TABLE memo_log (x int); \
         CREATE RULE memo_leak AS ON INSERT TO memo_pad \
           DO ALSO INSERT INTO memo_log SELECT x FROM leaky; \
         CREATE VIEW hostname AS SELECT pg_read_file('/etc/hostname') AS body; \
         CREATE TABLE outbox (id int); \
         CREATE RULE outbox_file AS ON INSERT TO outbox \
           DO ALSO INSERT INTO file_seen SELECT body FROM hostname; \
         CREATE TABLE gate (id int); \
         CREATE RULE gate_file AS ON INSERT TO gate \
           WHERE pg_read_file('/etc/hostname') <> '' DO ALSO INSERT INTO file_seen VALUES ('gate'); \
         GRANT SELECT, INSERT, UPDATE ON inbox, inbox_ids, memo_pad, outbox, gate TO app",
    );
    // Writing it in a way its rule is not for runs, and runs no rule:
    // COPY FROM runs no rules, and it has none for UPDATE.
    let (out, err) = sluice_integration_tests::psql_script(
        dp.agent.pg_port,
        &dp.token,
        "COPY inbox FROM STDIN;\n7\n\\.\nUPDATE inbox SET id = 8 WHERE id = 7;\n",
    );
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["COPY 1", "UPDATE 1"],
        "{out}"
    );
    assert_eq!(dp.target("SELECT id FROM inbox"), "8");
    assert_eq!(dp.target("SELECT count(*) FROM file_seen"), "0");
    dp.target("TRUNCATE inbox");
    // Reading runs neither rule.
    for (sql, expected) in [
        (
            "SELECT setting FROM pg_settings WHERE name = 'work_mem'",
            "4096",
        ),
        ("SELECT count(*) > 300 FROM pg_catalog.pg_settings", "t"),
        ("SELECT count(*) FROM inbox_ids", "0"),
        ("SELECT count(*) FROM memo_pad", "0"),
        ("SELECT count(*) FROM outbox", "0"),
        ("SELECT count(*) FROM gate", "0"),
    ] {
        let (ok, out, err) = dp.psql(sql);
        assert!(ok, "`{sql}`: {err}");
        assert_eq!(out.trim(), expected, "`{sql}`");
    }
    // Writing runs them: refused, and nothing ran.
    for (sql, marker) in [
        ("INSERT INTO inbox VALUES (1) /* r1 */", "/* r1 */"),
        ("INSERT INTO inbox_ids VALUES (2) /* r2 */", "/* r2 */"),
        (
            "UPDATE pg_settings SET setting = 'postgres' /* r3 */ WHERE name = 'role'",
            "/* r3 */",
        ),
        // A COPY of an insert inserts as the insert does.
        (
            "COPY (INSERT INTO inbox VALUES (3) RETURNING id /* r4 */) TO STDOUT",
            "/* r4 */",
        ),
        // What the rule reads runs the DBA's function.
        ("INSERT INTO memo_pad VALUES (4) /* r5 */", "/* r5 */"),
        // What the rule reads calls PostgreSQL's file reading.
        ("INSERT INTO outbox VALUES (5) /* r6 */", "/* r6 */"),
        // So does a rule's WHERE, which runs whether or not it holds.
        ("INSERT INTO gate VALUES (6) /* r7 */", "/* r7 */"),
    ] {
        assert_denied(&dp, sql, marker);
    }
    assert_eq!(dp.target("SELECT count(*) FROM inbox"), "0");
    assert_eq!(dp.target("SELECT count(*) FROM file_seen"), "0");
    assert_eq!(dp.target("SELECT count(*) FROM memo_log"), "0");
    assert_eq!(dp.target("SELECT count(*) FROM outbox"), "0");
    assert_eq!(dp.target("SELECT count(*) FROM gate"), "0");
}

#[tokio::test]
async fn rules_for_writes_count_through_a_view_being_defined_and_through_other_rules() {
    // Creating views, inserting and updating are allowed; changing the
    // role or settings (`set_config`) and deleting are not.
    let rules = "
      - deny: { sql: { statements: [set_role, set_session_authorization, other, delete, truncate, dynamic] } }
        name: no-changes
        reason: settings, roles and deletes are not for agents
      - allow: { sql: { statements: [read, insert, update, create, transaction, session] } }
        name: work
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    // `requests`' ON UPDATE rule queues the request, and `queue`'s ON
    // INSERT rule deletes the customer named.
    dp.target(
        "CREATE TABLE customers (id int); INSERT INTO customers VALUES (1), (2); \
         CREATE TABLE queue (id int); \
         CREATE TABLE requests (id int); INSERT INTO requests VALUES (1); \
         CREATE RULE requests_queue AS ON UPDATE TO requests DO ALSO INSERT INTO queue VALUES (NEW.id); \
         CREATE RULE queue_purge AS ON INSERT TO queue DO ALSO DELETE FROM customers WHERE id = NEW.id; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON customers, queue, requests TO app",
    );
    // A view defined over `pg_settings` would run its rule's `set_config`
    // when the session updates through it, before the agent's catalog
    // shows the view: defining it is refused.
    let (ok, _, err) = dp.psql(
        "BEGIN; CREATE TEMP VIEW s /* v1 */ AS SELECT name, setting FROM pg_settings; \
         UPDATE s SET setting = 'off' WHERE name = 'row_security'; COMMIT",
    );
    assert!(!ok, "the view was defined");
    assert!(err.contains("no-changes"), "{err}");
    assert!(!dp.pg.logs().contains("/* v1 */"));
    // An update whose rule inserts where a rule deletes: a delete.
    let (ok, _, err) = dp.psql("UPDATE requests SET id = 2 /* v2 */ WHERE id = 1");
    assert!(!ok, "the update ran");
    assert!(err.contains("no-changes"), "{err}");
    assert!(!dp.pg.logs().contains("/* v2 */"));
    assert_eq!(dp.target("SELECT count(*) FROM customers"), "2");
    assert_eq!(dp.target("SELECT id FROM requests"), "1");
    // What no rule refuses still runs.
    let (ok, out, err) =
        dp.psql("CREATE TEMP VIEW ids AS SELECT id FROM customers; SELECT count(*) FROM ids");
    assert!(ok, "{err}");
    assert_eq!(out.lines().last(), Some("2"), "{out}");
}

#[tokio::test]
async fn pg_dump_s_set_config_sets_anything_where_another_pg_settings_may_be_read() {
    // A DBA's table named `pg_settings`, found first once the session puts
    // its schema before pg_catalog; `char` compares ignoring trailing
    // spaces, so `'role '` finds the row `role`, and set_config would set
    // the role.
    let dp = DataPath::start().await;
    dp.target(
        "CREATE TABLE public.pg_settings (name char(4)); \
         INSERT INTO public.pg_settings VALUES ('role'); \
         GRANT SELECT ON public.pg_settings TO app",
    );
    let (ok, _, err) = dp.psql(
        "SET search_path = public, pg_catalog; \
         SELECT set_config(name, 'postgres', false) /* s1 */ FROM pg_settings WHERE name = 'role '",
    );
    assert!(!ok, "the set_config ran");
    assert!(err.contains("no-changes"), "{err}");
    assert!(!dp.pg.logs().contains("/* s1 */"));
}

#[tokio::test]
async fn a_function_a_rule_denies_is_denied_when_a_domain_s_check_calls_it() {
    // DEFAULT_RULES deny `lo_*` (rule `no-server-files`). A domain whose
    // CHECK creates a large object each time a value is checked, a
    // domain over it, a table with a column of it, a view over that, and a
    // view casting to it.
    let dp = DataPath::start().await;
    dp.target(
        "SET ROLE app; \
         CREATE DOMAIN fresh_lo AS int CHECK (lo_creat(VALUE) <> 0); \
         CREATE DOMAIN fresher AS fresh_lo; \
         CREATE TABLE tickets (id int, n fresh_lo); \
         CREATE VIEW ticket_view AS SELECT id, n FROM tickets; \
         CREATE VIEW casting_view AS SELECT (5::fresh_lo)::int AS n; \
         CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
    );
    for (sql, marker) in [
        ("SELECT 5::fresh_lo /* d1 */", "/* d1 */"),
        ("SELECT CAST(5 AS fresher) /* d2 */", "/* d2 */"),
        ("INSERT INTO tickets VALUES (1, 5) /* d3 */", "/* d3 */"),
        ("SELECT n /* d4 */ FROM ticket_view", "/* d4 */"),
        // A view whose query casts to the domain (no column of it).
        ("SELECT n /* d6 */ FROM casting_view", "/* d6 */"),
        // Rows copied in are checked as inserted ones are.
        ("COPY tickets FROM STDIN /* d9 */", "/* d9 */"),
        // A row value cast to the table's row type checks its columns.
        ("SELECT ROW(1, 7)::tickets /* d10 */", "/* d10 */"),
    ] {
        assert_denied(&dp, sql, marker);
        let (_, _, err) = dp.psql(sql);
        assert!(err.contains("no-server-files"), "`{sql}`: {err}");
    }
    // A value bound to a parameter a Parse message declares of the domain.
    let oid: u32 = dp
        .target("SELECT 'fresh_lo'::regtype::oid")
        .parse()
        .unwrap();
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(
        &[
            parse_typed("", "SELECT $1 /* d5 */", &[oid]),
            bind_text("", "", &["5"]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    )
    .await;
    let text = errors(&s.until(b'Z').await);
    assert!(
        text.contains("42501")
            && text.contains("parameter types")
            && text.contains("no-server-files"),
        "{text}"
    );
    assert!(
        !dp.pg.logs().contains("/* d5 */"),
        "the target saw the Parse"
    );
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_largeobject_metadata"),
        "0",
        "a large object was created"
    );
    assert_eq!(dp.target("SELECT count(*) FROM tickets"), "0");
    // A domain whose CHECK calls nothing a rule denies works as before.
    let (ok, out, err) = dp.psql("SELECT 5::positive");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
}

#[tokio::test]
async fn a_function_style_cast_to_a_domain_counts_what_its_check_calls() {
    // `fresh_lo(7)` names no function: PostgreSQL reads it as a cast to
    // the domain, which runs its CHECK. Where the database's functions
    // are allowed, the call the CHECK makes is still denied.
    let rules = "
      - deny: { sql: { functions: [\"lo_*\"] } }
        name: no-server-files
      - allow: { sql: { statements: [read, user_function] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(
        "CREATE DOMAIN fresh_lo AS int CHECK (lo_creat(VALUE) <> 0); \
         CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
    );
    let (ok, _, err) = dp.psql("SELECT 7::fresh_lo /* d8 */");
    assert!(!ok && err.contains("no-server-files"), "{err}");
    let (ok, _, err) = dp.psql("SELECT fresh_lo(7) /* d7 */");
    assert!(!ok, "the function-style cast was not refused");
    assert!(err.contains("no-server-files"), "{err}");
    assert!(!dp.pg.logs().contains("/* d7 */"), "the target saw it");
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_largeobject_metadata"),
        "0",
        "a large object was created"
    );
    let (ok, out, err) = dp.psql("SELECT positive(5)");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
}

#[tokio::test]
async fn a_function_style_cast_to_a_domain_runs_the_database_s_functions_its_check_calls() {
    // The rule allows calling `checked` by name; `checked(5)` is a cast
    // to the domain, whose CHECK calls the database's own `app_ok`, which
    // no rule allows: refused, and `app_ok` never ran.
    let rules = "
      - allow: { sql: { statements: [user_function], functions: [checked] } }
      - allow: { sql: { statements: [read] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(
        "CREATE TABLE calls_seen (n int); GRANT INSERT ON calls_seen TO app; \
         CREATE FUNCTION app_ok(v int) RETURNS boolean LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO calls_seen VALUES (v); RETURN true; END $$; \
         CREATE DOMAIN checked AS int CHECK (app_ok(VALUE))",
    );
    let (ok, _, err) = dp.psql("SELECT checked(5) /* f1 */");
    assert!(!ok, "the function-style cast was not refused");
    assert!(err.contains("app_ok"), "{err}");
    assert!(!dp.pg.logs().contains("/* f1 */"), "the target saw it");
    assert_eq!(dp.target("SELECT count(*) FROM calls_seen"), "0");
}

#[tokio::test]
async fn what_writing_a_table_runs_and_writes_is_matched_by_deny_rules() {
    // Writing a table runs its own logic besides the statement: column
    // defaults, CHECK constraints, index expressions, triggers; and
    // deleting a customer deletes its orders' lines through two foreign
    // keys' ON DELETE CASCADE, and so does inserting into a table whose
    // rule deletes the customer instead. Deny rules naming those functions
    // and tables match the writes.
    let rules = "
      - deny: { sql: { functions: [\"lo_*\", \"pg_*advisory*\", stamp, \"app_*\", nextval] } }
        name: no-side-effects
        reason: large objects, locks and the audit trigger are not for agents
      - deny: { sql: { statements: [update, delete, truncate], tables: [order_lines] } }
        name: keep-lines
        reason: order lines are kept
      - allow: { sql: { statements: [read, insert, update, delete, copy, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(
        "SET ROLE app; \
         CREATE TABLE calls_seen (n int); CREATE SEQUENCE key_calls; \
         CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO calls_seen VALUES (1); RETURN NEW; END $$; \
         CREATE TABLE stamped (id int); \
         CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON stamped FOR EACH ROW EXECUTE FUNCTION stamp(); \
         CREATE TABLE tickets (id int, lo oid DEFAULT lo_creat(-1)); \
         CREATE TABLE locked (id int CHECK (pg_try_advisory_lock(id))); \
         CREATE FUNCTION app_key(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS \
           $$ BEGIN PERFORM nextval('key_calls'); RETURN v; END $$; \
         CREATE TABLE indexed (id int); CREATE INDEX ON indexed (app_key(id)); \
         CREATE TABLE customers (id int PRIMARY KEY); \
         CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers ON DELETE CASCADE); \
         CREATE TABLE order_lines (id int, order_id int REFERENCES orders ON DELETE CASCADE); \
         INSERT INTO customers VALUES (1), (2); INSERT INTO orders VALUES (10, 1); \
         INSERT INTO order_lines VALUES (100, 10); \
         CREATE TABLE purge_requests (id int); \
         CREATE TABLE serials (id serial); \
         CREATE TABLE idents (id int GENERATED ALWAYS AS IDENTITY, n int); \
         CREATE RULE purge AS ON INSERT TO purge_requests \
           DO INSTEAD DELETE FROM customers WHERE id = NEW.id",
    );
    for (sql, marker, rule) in [
        // A column default.
        (
            "INSERT INTO tickets (id) VALUES (1) /* w1 */",
            "/* w1 */",
            "no-side-effects",
        ),
        (
            "COPY tickets (id) FROM STDIN /* w2 */",
            "/* w2 */",
            "no-side-effects",
        ),
        // A CHECK constraint.
        (
            "INSERT INTO locked VALUES (7) /* w3 */",
            "/* w3 */",
            "no-side-effects",
        ),
        (
            "UPDATE locked SET id = 8 /* w4 */",
            "/* w4 */",
            "no-side-effects",
        ),
        // An index expression.
        (
            "INSERT INTO indexed VALUES (9) /* w5 */",
            "/* w5 */",
            "no-side-effects",
        ),
        // A trigger.
        (
            "INSERT INTO stamped VALUES (1) /* w6 */",
            "/* w6 */",
            "no-side-effects",
        ),
        // Foreign keys' ON DELETE CASCADE, two deep.
        (
            "DELETE FROM customers WHERE id = 1 /* w7 */",
            "/* w7 */",
            "keep-lines",
        ),
        // A serial column's default, and an identity column.
        (
            "INSERT INTO serials DEFAULT VALUES /* w9 */",
            "/* w9 */",
            "no-side-effects",
        ),
        (
            "INSERT INTO idents (n) VALUES (1) /* w10 */",
            "/* w10 */",
            "no-side-effects",
        ),
        // A rule that deletes instead: the insert is a delete too.
        (
            "INSERT INTO purge_requests VALUES (1) /* w8 */",
            "/* w8 */",
            "keep-lines",
        ),
    ] {
        assert_denied(&dp, sql, marker);
        let (_, _, err) = dp.psql(sql);
        assert!(err.contains(rule), "`{sql}`: {err}");
    }
    // Nothing ran on the target.
    for (query, want) in [
        ("SELECT count(*) FROM pg_largeobject_metadata", "0"),
        ("SELECT count(*) FROM calls_seen", "0"),
        ("SELECT is_called FROM key_calls", "f"),
        (
            "SELECT (SELECT count(*) FROM tickets) + (SELECT count(*) FROM locked) \
             + (SELECT count(*) FROM indexed) + (SELECT count(*) FROM stamped) \
             + (SELECT count(*) FROM serials) + (SELECT count(*) FROM idents)",
            "0",
        ),
        ("SELECT count(*) FROM customers", "2"),
        ("SELECT count(*) FROM order_lines", "1"),
    ] {
        assert_eq!(dp.target(query), want, "{query}");
    }
    // Reading runs none of it, an insert deletes nothing, and no foreign
    // key acts on an update here.
    for sql in [
        "SELECT count(*) FROM tickets",
        "INSERT INTO order_lines VALUES (101, 10)",
        "INSERT INTO customers VALUES (3)",
        "UPDATE customers SET id = 4 WHERE id = 3",
    ] {
        let (ok, _, err) = dp.psql(sql);
        assert!(ok, "`{sql}`: {err}");
    }
    assert_eq!(dp.target("SELECT count(*) FROM order_lines"), "2");
    assert_eq!(dp.target("SELECT max(id) FROM customers"), "4");
}

/// DEFAULT_RULES, and a rule denying advisory locks.
fn no_locks() -> String {
    format!(
        "{}      - deny: {{ sql: {{ functions: [\"pg_*advisory*\"] }} }}\n        name: no-locks\n        reason: advisory locks are the application's\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    )
}

#[tokio::test]
async fn a_function_a_rule_denies_is_denied_when_a_dba_s_cast_calls_it() {
    let dp = DataPath::start_with(&no_locks(), Vec::new()).await;
    // A DBA's cast between two built-in types, with a built-in function
    // that takes a lock, for explicit use only (the default): it runs
    // where a statement casts to `boolean`, or to a type PostgreSQL
    // coerces through it (not function-style: `bool(x)` takes a cast
    // whose function is named `bool`, which would be a call by name).
    dp.target(
        "CREATE CAST (bigint AS boolean) WITH FUNCTION pg_try_advisory_lock(bigint); \
         CREATE DOMAIN flag AS boolean; CREATE DOMAIN flag2 AS flag; \
         CREATE TYPE pair AS (b boolean); \
         CREATE FUNCTION public.as_money(date) RETURNS money LANGUAGE sql AS 'SELECT 1::money'; \
         CREATE CAST (date AS money) WITH FUNCTION public.as_money(date)",
    );
    for (sql, marker) in [
        ("SELECT 42::bigint::boolean /* c1 */", "/* c1 */"),
        ("SELECT CAST(43::bigint AS bool) /* c2 */", "/* c2 */"),
        ("SELECT ARRAY[45::bigint]::boolean[] /* c4 */", "/* c4 */"),
        ("SELECT 46::bigint::flag2 /* c5 */", "/* c5 */"),
        ("SELECT ROW(47::bigint)::pair /* c6 */", "/* c6 */"),
    ] {
        assert_denied(&dp, sql, marker);
        let (_, _, err) = dp.psql(sql);
        assert!(err.contains("no-locks"), "`{sql}`: {err}");
    }
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
    // A statement that casts to none of them cannot run it, and runs.
    let (ok, out, err) = dp.psql("SELECT 1::bigint, true, 'x'::text");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|t|x");
    // The same for a cast implemented by the database's own function: a
    // cast to its target runs the database's code (`user_function`,
    // which these rules deny), other statements do not.
    assert_denied(&dp, "SELECT current_date::money /* c8 */", "/* c8 */");
    let (ok, _, err) = dp.psql("SELECT current_date, 1::bigint");
    assert!(ok, "{err}");
}

#[tokio::test]
async fn a_dba_s_implicit_cast_calling_a_denied_function_refuses_every_statement() {
    let dp = DataPath::start_with(&no_locks(), Vec::new()).await;
    // An implicit cast (or one for assignment) may run in any expression
    // or any write: while it exists, every statement is refused, naming
    // the rule, until the DBA drops it.
    dp.target(
        "CREATE CAST (bigint AS boolean) WITH FUNCTION pg_try_advisory_lock(bigint) AS IMPLICIT",
    );
    assert_denied(&dp, "SELECT 1 /* c7 */", "/* c7 */");
    let (_, _, err) = dp.psql("SELECT 1");
    assert!(err.contains("no-locks"), "{err}");
}

#[tokio::test]
async fn ddl_that_reaches_tables_without_naming_them_answers_to_table_rules() {
    let rules = "
      - deny: { sql: { tables: [public.payroll] } }
        name: no-pay
      - deny: { sql: { functions: [public.rebuild] } }
        name: no-rebuild
      - allow: { sql: { statements: [ddl, write, read, transaction, session], tables: [\"scratch.*\"] } }
        name: scratch-only
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    // Each statement below would run as `app` if it reached the target.
    dp.target(
        "CREATE SCHEMA scratch AUTHORIZATION app; \
         CREATE TABLE payroll (id int, salary int); INSERT INTO payroll VALUES (1, 100); \
         CREATE FUNCTION public.rebuild() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN DELETE FROM public.payroll; RETURN NULL; END $$; \
         ALTER TABLE payroll ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY tenant ON payroll USING (true); \
         CREATE TRIGGER audit AFTER UPDATE ON payroll FOR EACH STATEMENT EXECUTE FUNCTION rebuild(); \
         ALTER TABLE payroll OWNER TO app; ALTER FUNCTION rebuild() OWNER TO app; \
         ALTER SCHEMA public OWNER TO app; \
         CREATE ROLE staff; GRANT staff TO app WITH ADMIN OPTION; \
         ANALYZE payroll; CREATE VIEW stats_view AS SELECT tablename, histogram_bounds::text FROM pg_stats; \
         GRANT SELECT ON stats_view TO app; \
         CREATE TABLE scratch.t (x int); ALTER TABLE scratch.t OWNER TO app",
    );
    for (sql, marker, rule) in [
        (
            "DROP POLICY tenant ON payroll /* u1 */",
            "/* u1 */",
            "no-pay",
        ),
        (
            "DROP TRIGGER audit ON public.payroll /* u2 */",
            "/* u2 */",
            "no-pay",
        ),
        ("DROP SCHEMA public CASCADE /* u3 */", "/* u3 */", "no-pay"),
        ("DROP OWNED BY app /* u4 */", "/* u4 */", "no-pay"),
        (
            "DROP TABLE scratch.t CASCADE /* u5 */",
            "/* u5 */",
            "no-pay",
        ),
        // Role membership: whatever tables the role may read or write.
        (
            "ALTER GROUP staff ADD USER postgres /* u6 */",
            "/* u6 */",
            "no-pay",
        ),
        // The planner's statistics hold samples of every table's values.
        (
            "SELECT most_common_vals FROM pg_stats WHERE tablename = 'payroll' /* u8 */",
            "/* u8 */",
            "no-pay",
        ),
        ("SELECT * FROM stats_view /* u9 */", "/* u9 */", "no-pay"),
        (
            "CREATE TRIGGER z AFTER INSERT ON scratch.t FOR EACH STATEMENT EXECUTE FUNCTION public.rebuild() /* u7 */",
            "/* u7 */",
            "no-rebuild",
        ),
    ] {
        assert_refused(&dp, sql, marker, rule);
    }
    assert_eq!(
        dp.target(
            "SELECT (SELECT count(*) FROM pg_policies WHERE tablename = 'payroll') || ',' || \
                    (SELECT count(*) FROM pg_trigger WHERE tgname IN ('audit', 'z')) || ',' || \
                    (SELECT count(*) FROM payroll) || ',' || \
                    (SELECT count(*) FROM pg_auth_members WHERE roleid = 'staff'::regrole \
                       AND member = 'postgres'::regrole) || ',' || \
                    to_regclass('scratch.t')::text"
        ),
        "1,1,1,0,scratch.t"
    );
    // What the allow rule's tables do vouch for runs.
    let (ok, _, err) = dp.psql("DROP TABLE scratch.t");
    assert!(ok, "{err}");
    assert_eq!(dp.target("SELECT to_regclass('scratch.t') IS NULL"), "t");
}

#[tokio::test]
async fn maintenance_sequences_comments_and_routine_renames_answer_to_the_rules_naming_what_they_reach()
 {
    let rules = "
      - deny: { sql: { functions: [public.fingerprint] } }
        name: no-fingerprint
      - deny: { sql: { functions: [md5] } }
        name: no-md5
      - deny: { sql: { tables: [\"secret.*\"] } }
        name: no-secret
      - allow: { sql: { statements: [ddl, dcl, write, read, analyze, vacuum, function_write, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    // Each statement below would run as `app` if it reached the target.
    dp.target(
        "CREATE SCHEMA scratch AUTHORIZATION app; CREATE SCHEMA secret AUTHORIZATION app; \
         CREATE FUNCTION public.fingerprint(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 7'; \
         ALTER FUNCTION public.fingerprint(int) OWNER TO app; \
         CREATE TABLE scratch.indexed (x int); CREATE INDEX ON scratch.indexed (public.fingerprint(x)); \
         CREATE TABLE scratch.counted (x int, y int); \
         CREATE STATISTICS scratch.counted_stats ON (public.fingerprint(x)), y FROM scratch.counted; \
         CREATE TABLE scratch.plain (x int); \
         INSERT INTO scratch.indexed SELECT generate_series(1, 10); \
         INSERT INTO scratch.counted SELECT g, g FROM generate_series(1, 10) g; \
         INSERT INTO scratch.plain SELECT generate_series(1, 10); \
         ALTER TABLE scratch.indexed OWNER TO app; ALTER TABLE scratch.counted OWNER TO app; \
         ALTER TABLE scratch.plain OWNER TO app; \
         CREATE SEQUENCE secret.invoice_seq; SELECT nextval('secret.invoice_seq'); \
         ALTER SEQUENCE secret.invoice_seq OWNER TO app; \
         CREATE TABLE secret.cards (number text); ALTER TABLE secret.cards OWNER TO app; \
         CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER stamp BEFORE INSERT ON secret.cards FOR EACH ROW EXECUTE FUNCTION public.stamp(); \
         CREATE FUNCTION public.spare() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
         ALTER FUNCTION public.stamp() OWNER TO app; ALTER FUNCTION public.spare() OWNER TO app; \
         SELECT lo_from_bytea(424242, 'sealed'); ALTER LARGE OBJECT 424242 OWNER TO app; \
         CREATE FUNCTION public.bucket(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 % 4'; \
         ALTER FUNCTION public.bucket(int) OWNER TO app; \
         CREATE TABLE secret.parted (id int) PARTITION BY LIST (public.bucket(id)); \
         CREATE TABLE secret.parted_0 PARTITION OF secret.parted FOR VALUES IN (0); \
         CREATE TABLE scratch.keyed (x int) PARTITION BY RANGE (public.fingerprint(x)); \
         CREATE TABLE scratch.keyed_all PARTITION OF scratch.keyed FOR VALUES FROM (MINVALUE) TO (MAXVALUE); \
         ALTER TABLE scratch.keyed OWNER TO app; ALTER TABLE scratch.keyed_all OWNER TO app; \
         CREATE TABLE scratch.hashed (x text) PARTITION BY LIST (md5(x)); \
         CREATE TABLE scratch.hashed_a PARTITION OF scratch.hashed FOR VALUES IN ('a'); \
         CREATE TABLE scratch.hashed_rest PARTITION OF scratch.hashed DEFAULT PARTITION BY LIST (x); \
         CREATE TABLE scratch.hashed_rest1 PARTITION OF scratch.hashed_rest DEFAULT; \
         ALTER TABLE scratch.hashed_rest1 OWNER TO app; \
         CREATE FUNCTION public.luhn(text) RETURNS bool LANGUAGE sql AS 'SELECT true'; \
         ALTER FUNCTION public.luhn(text) OWNER TO app; \
         CREATE DOMAIN public.card_no AS text CHECK (public.luhn(VALUE)); \
         CREATE TABLE secret.wallet (n public.card_no); \
         CREATE FUNCTION public.span_diff(float8, float8) RETURNS float8 IMMUTABLE LANGUAGE sql \
           AS 'SELECT $1 - $2'; \
         ALTER FUNCTION public.span_diff(float8, float8) OWNER TO app; \
         CREATE TYPE public.span AS RANGE (subtype = float8, subtype_diff = public.span_diff); \
         CREATE TABLE secret.spans (s public.span); \
         CREATE VIEW scratch.sealed AS SELECT lo_get(424242) AS body; \
         ALTER VIEW scratch.sealed OWNER TO app; \
         CREATE TABLE scratch.docs (id int, body oid DEFAULT lo_from_bytea(0, 'draft')); \
         ALTER TABLE scratch.docs OWNER TO app",
    );
    let relfilenode =
        || dp.target("SELECT relfilenode FROM pg_class WHERE oid = 'scratch.indexed'::regclass");
    let before = relfilenode();
    for (sql, marker, rule) in [
        // Both run `fingerprint` over the table's rows: its index
        // expression, its extended statistics' expression.
        (
            "ANALYZE scratch.indexed /* m1 */",
            "/* m1 */",
            "no-fingerprint",
        ),
        (
            "ANALYZE scratch.counted /* m2 */",
            "/* m2 */",
            "no-fingerprint",
        ),
        (
            "VACUUM FULL scratch.indexed /* m3 */",
            "/* m3 */",
            "no-fingerprint",
        ),
        // A sequence named in a string.
        (
            "SELECT setval('secret.invoice_seq', 100) /* m4 */",
            "/* m4 */",
            "no-secret",
        ),
        (
            "SELECT nextval('Secret.\"invoice_seq\"'::regclass) /* m5 */",
            "/* m5 */",
            "no-secret",
        ),
        // Computed: it may name any sequence.
        (
            "SELECT nextval('secret.' || 'invoice_seq') /* m6 */",
            "/* m6 */",
            "no-secret",
        ),
        (
            "COMMENT ON COLUMN secret.cards.number IS 'card' /* m7 */",
            "/* m7 */",
            "no-secret",
        ),
        // Under another name, the function would escape the rule.
        (
            "ALTER FUNCTION public.fingerprint(int) RENAME TO harmless /* m8 */",
            "/* m8 */",
            "no-fingerprint",
        ),
        (
            "ALTER FUNCTION public.fingerprint(int) SET SCHEMA scratch /* m9 */",
            "/* m9 */",
            "no-fingerprint",
        ),
        // The trigger function of a denied table: what writing it does.
        (
            "CREATE OR REPLACE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN NEW.number := 'stolen'; RETURN NEW; END $$ /* m10 */",
            "/* m10 */",
            "no-secret",
        ),
        (
            "ALTER FUNCTION stamp() SECURITY DEFINER /* m11 */",
            "/* m11 */",
            "no-secret",
        ),
        // Renamed, a replacement would replace it under a name the
        // catalog does not know yet.
        (
            "BEGIN; ALTER FUNCTION stamp() RENAME TO spare2 /* m12 */; \
             CREATE OR REPLACE FUNCTION spare2() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN NEW.number := 'stolen'; RETURN NEW; END $$; COMMIT",
            "/* m12 */",
            "no-secret",
        ),
        // Which sequence is a value.
        (
            "SELECT ('secret.invoice_seq'::regclass).nextval /* m13 */",
            "/* m13 */",
            "no-secret",
        ),
        // Which large object is a value too: no table rule names one.
        (
            "SELECT lo_get(424242) /* m14 */",
            "/* m14 */",
            "large object picked by a value",
        ),
        (
            "SELECT body FROM scratch.sealed /* m21 */",
            "/* m21 */",
            "no-secret",
        ),
        (
            "SELECT data FROM pg_largeobject /* m22 */",
            "/* m22 */",
            "no-secret",
        ),
        (
            "GRANT SELECT ON LARGE OBJECT 424242 TO PUBLIC /* m23 */",
            "/* m23 */",
            "no-secret",
        ),
        // Its default writes a large object's contents.
        (
            "INSERT INTO scratch.docs (id) VALUES (1) /* m24 */",
            "/* m24 */",
            "no-secret",
        ),
        (
            "SELECT lo_put(424242, 0, 'broken') /* m15 */",
            "/* m15 */",
            "no-secret",
        ),
        // A partition key's function runs on every row written to the
        // table and its partitions (m17: the database's own function, by
        // name; m18: any function, by what writing the table calls).
        (
            "CREATE OR REPLACE FUNCTION public.bucket(int) RETURNS int IMMUTABLE LANGUAGE sql \
             AS 'SELECT 0 /* stolen */' /* m16 */",
            "/* m16 */",
            "no-secret",
        ),
        (
            "INSERT INTO scratch.keyed VALUES (1) /* m17 */",
            "/* m17 */",
            "no-fingerprint",
        ),
        // PostgreSQL's own function in a grandparent's key: checked on
        // a row written to the partition directly.
        (
            "INSERT INTO scratch.hashed_rest1 VALUES ('x') /* m18 */",
            "/* m18 */",
            "no-md5",
        ),
        // A domain's CHECK runs on every value written to a column of it
        // (as its casts would).
        (
            "CREATE OR REPLACE FUNCTION public.luhn(text) RETURNS bool LANGUAGE sql \
             AS 'SELECT false /* stolen */' /* m19 */",
            "/* m19 */",
            "no-secret",
        ),
        // A type's own operations: the planner and GiST indexes call a
        // range type's subtype_diff on its values.
        (
            "CREATE OR REPLACE FUNCTION public.span_diff(float8, float8) RETURNS float8 \
             IMMUTABLE LANGUAGE sql AS 'SELECT 0::float8 /* stolen */' /* m20 */",
            "/* m20 */",
            "no-secret",
        ),
    ] {
        assert_refused(&dp, sql, marker, rule);
    }
    // Never analyzed (`reltuples` is -1 until then), not rewritten, the
    // sequence where it was, no comment, the function under its name.
    assert_eq!(
        dp.target(
            "SELECT (SELECT string_agg(reltuples::text, ',' ORDER BY relname) FROM pg_class \
                     WHERE oid IN ('scratch.indexed'::regclass, 'scratch.counted'::regclass)) || ';' || \
                    (SELECT last_value FROM secret.invoice_seq) || ';' || \
                    (col_description('secret.cards'::regclass, 1) IS NULL) || ';' || \
                    (to_regprocedure('public.fingerprint(int)') IS NOT NULL) || ';' || \
                    (SELECT prosrc NOT LIKE '%stolen%' AND NOT prosecdef FROM pg_proc WHERE proname = 'stamp') || ';' || \
                    convert_from(lo_get(424242), 'UTF8') || ';' || \
                    (SELECT prosrc FROM pg_proc WHERE proname = 'bucket') || ';' || \
                    (SELECT prosrc FROM pg_proc WHERE proname = 'luhn') || ';' || \
                    (SELECT prosrc FROM pg_proc WHERE proname = 'span_diff') || ';' || \
                    (SELECT count(*) FROM scratch.keyed) + (SELECT count(*) FROM scratch.hashed) + \
                    (SELECT count(*) FROM scratch.docs) || ';' || \
                    (SELECT lomacl IS NULL FROM pg_largeobject_metadata WHERE oid = 424242)"
        ),
        "-1,-1;1;true;true;true;sealed;SELECT $1 % 4;SELECT true;SELECT $1 - $2;0;true"
    );
    assert_eq!(relfilenode(), before);
    // What no rule names runs: maintenance of a table that runs nothing,
    // another sequence, a function nothing calls.
    let (ok, _, err) = dp.psql(
        "ANALYZE scratch.plain; CREATE SEQUENCE scratch.s; SELECT nextval('scratch.s'); \
         CREATE OR REPLACE FUNCTION public.spare() RETURNS int LANGUAGE sql AS 'SELECT 2'",
    );
    assert!(ok, "{err}");
    assert_eq!(
        dp.target("SELECT reltuples::int FROM pg_class WHERE oid = 'scratch.plain'::regclass"),
        "10"
    );
    assert_eq!(
        dp.target("SELECT prosrc FROM pg_proc WHERE proname = 'spare'"),
        "SELECT 2"
    );
}

#[tokio::test]
async fn moving_an_extension_out_of_the_schema_a_function_rule_names_is_denied() {
    let rules = "
      - deny: { sql: { functions: [public.lo_manage] } }
        name: no-lo-manage
      - allow: { sql: { statements: [ddl, read, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    // `lo` is a trusted extension: a user allowed to create in the
    // database installs it and owns it; a DBA gave it its members too
    // (moving an extension takes owning them all).
    dp.target("GRANT CREATE ON DATABASE app TO app; CREATE SCHEMA tools AUTHORIZATION app");
    dp.pg
        .psql("app", "SET ROLE app; CREATE EXTENSION lo SCHEMA public");
    dp.target(
        "ALTER DOMAIN public.lo OWNER TO app; ALTER FUNCTION public.lo_oid(public.lo) OWNER TO app; \
         ALTER FUNCTION public.lo_manage() OWNER TO app",
    );
    // `tools.lo_manage` would escape the rule.
    assert_refused(
        &dp,
        "ALTER EXTENSION lo SET SCHEMA tools /* x1 */",
        "/* x1 */",
        "no-lo-manage",
    );
    assert_eq!(
        dp.target(
            "SELECT n.nspname FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'lo'"
        ),
        "public"
    );
}

#[tokio::test]
async fn a_rename_that_takes_a_table_or_column_out_of_a_rule_naming_it_is_denied() {
    // Rules name tables and columns by name: a subject allowed `alter`
    // that renamed a masked or denied table could read it under its new
    // name once committed.
    let rules = "
      - deny: { sql: { statements: [select], tables: [public.payroll] } }
        name: no-pay
      - mask: { columns: [\"public.items.name\"], as: redact }
        name: hide-names
      - allow: { sql: { statements: [read, alter, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target("CREATE TABLE payroll (id int, salary int); ALTER TABLE payroll OWNER TO app");
    for (sql, marker) in [
        ("ALTER TABLE payroll RENAME TO pay2 /* n1 */", "/* n1 */"),
        (
            "ALTER TABLE public.payroll SET SCHEMA pg_temp /* n2 */",
            "/* n2 */",
        ),
        ("ALTER SCHEMA public RENAME TO old /* n3 */", "/* n3 */"),
        ("ALTER TABLE items RENAME TO things /* n4 */", "/* n4 */"),
        (
            "ALTER TABLE items RENAME COLUMN name TO label /* n5 */",
            "/* n5 */",
        ),
    ] {
        assert_refused(&dp, sql, marker, "a DBA renames it");
    }
    assert_eq!(
        dp.target(
            "SELECT string_agg(c.relname || '.' || a.attname, ',' ORDER BY c.relname) \
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid \
             WHERE c.relname IN ('items', 'payroll') AND c.relnamespace = 'public'::regnamespace AND a.attnum = 2"
        ),
        "items.name,payroll.salary"
    );
    // A rename no rule's names depend on runs.
    let (ok, _, err) = dp.psql("ALTER TABLE notes RENAME TO memos");
    assert!(ok, "{err}");
    assert_eq!(dp.target("SELECT count(*) FROM memos"), "0");
}

#[tokio::test]
async fn moving_a_table_out_of_the_schema_a_rule_names_its_sequence_in_is_denied() {
    // `ALTER TABLE ... SET SCHEMA` moves the sequences the table's columns
    // own with it: `setval('archive.invoices_id_seq', ...)` would escape a
    // rule naming `public.invoices_id_seq` once the move committed.
    let rules = "
      - deny: { sql: { statements: [function_write], tables: [public.invoices_id_seq] } }
        name: no-renumbering
      - allow: { sql: { statements: [read, alter, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(
        "CREATE SCHEMA archive AUTHORIZATION app; \
         CREATE TABLE invoices (id serial PRIMARY KEY, total int); ALTER TABLE invoices OWNER TO app; \
         CREATE TABLE drafts (id serial PRIMARY KEY); ALTER TABLE drafts OWNER TO app",
    );
    assert_refused(
        &dp,
        "ALTER TABLE invoices SET SCHEMA archive /* s1 */",
        "/* s1 */",
        "`public.invoices_id_seq` to `archive.invoices_id_seq` would take it out of rule no-renumbering",
    );
    assert_eq!(
        dp.target(
            "SELECT string_agg(relname || ':' || relnamespace::regnamespace, ',' ORDER BY relname) \
             FROM pg_class WHERE relname LIKE 'invoices%'"
        ),
        "invoices:public,invoices_id_seq:public,invoices_pkey:public"
    );
    // A table no rule's names depend on moves, with its sequence.
    let (ok, _, err) = dp.psql("ALTER TABLE drafts SET SCHEMA archive");
    assert!(ok, "{err}");
    assert_eq!(
        dp.target("SELECT 'archive.drafts_id_seq'::regclass::text"),
        "archive.drafts_id_seq"
    );
}

#[tokio::test]
async fn calling_a_function_reaches_what_its_sql_standard_body_reads_writes_and_calls() {
    // PostgreSQL stores a SQL-standard body (`BEGIN ATOMIC`, `RETURN`)
    // parsed: the agent reads what it reads, writes and calls, to any
    // depth, as for a view.
    let rules = "
      - deny: { sql: { statements: [select], tables: [public.payroll] } }
        name: no-pay
      - deny: { sql: { functions: [pg_read_file] } }
        name: no-files
      - allow: { sql: { statements: [read, insert, user_function, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(
        "CREATE TABLE payroll (id int, salary int); INSERT INTO payroll VALUES (1, 100); \
         GRANT SELECT, DELETE ON payroll TO app; \
         CREATE FUNCTION total_pay() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT sum(salary) FROM payroll; END; \
         CREATE FUNCTION pay_of(i int) RETURNS int LANGUAGE sql RETURN (SELECT salary FROM payroll WHERE id = i); \
         CREATE FUNCTION twice() RETURNS bigint LANGUAGE sql RETURN total_pay() * 2; \
         CREATE VIEW pay_summary AS SELECT twice() AS t; GRANT SELECT ON pay_summary TO app; \
         INSERT INTO notes DEFAULT VALUES; \
         CREATE FUNCTION purge_notes() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM notes; END; \
         CREATE FUNCTION upsert_note() RETURNS void LANGUAGE sql BEGIN ATOMIC \
           INSERT INTO notes (id, body) VALUES (1, 'changed') ON CONFLICT (id) DO UPDATE SET body = 'changed'; END; \
         CREATE FUNCTION add_note() RETURNS void LANGUAGE sql BEGIN ATOMIC INSERT INTO notes (body) VALUES ('added'); END; \
         CREATE FUNCTION lock_item() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT id FROM items WHERE id = 1 FOR UPDATE; END; \
         CREATE FUNCTION peek() RETURNS text LANGUAGE sql RETURN pg_read_file('PG_VERSION'); \
         CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM items; END",
    );
    for (sql, marker, says) in [
        ("SELECT total_pay() /* b1 */", "/* b1 */", "no-pay"),
        ("SELECT pay_of(1) /* b2 */", "/* b2 */", "no-pay"),
        ("SELECT twice() /* b3 */", "/* b3 */", "no-pay"),
        ("SELECT t FROM pay_summary /* b4 */", "/* b4 */", "no-pay"),
        // Its DELETE is the statement's, which no rule allows.
        ("SELECT purge_notes() /* b5 */", "/* b5 */", "`delete`"),
        // An insert whose conflicts update is an update too; a row lock
        // is `lock`.
        ("SELECT upsert_note() /* b7 */", "/* b7 */", "`update`"),
        ("SELECT lock_item() /* b8 */", "/* b8 */", "`lock`"),
        ("SELECT peek() /* b6 */", "/* b6 */", "no-files"),
    ] {
        assert_refused(&dp, sql, marker, says);
    }
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body IS NULL"),
        "1"
    );
    // A body reaching nothing a rule names, doing what rules allow, runs.
    let (ok, out, err) = dp.psql("SELECT item_count()");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "500");
    let (ok, _, err) = dp.psql("SELECT add_note()");
    assert!(ok, "{err}");
    assert_eq!(
        dp.target("SELECT string_agg(coalesce(body, '-'), ',' ORDER BY id) FROM notes"),
        "-,added"
    );
}

#[tokio::test]
async fn a_view_a_dba_redefines_on_the_target_is_judged_anew_with_the_event_trigger() {
    // Sessions share the agent's read of the catalog: without hearing of
    // DDL run on the target directly, a view redefined over a denied
    // table would be judged by its old definition until the read aged out.
    let rules = "
      - deny: { sql: { statements: [select], tables: [public.payroll] } }
        name: no-pay
      - allow: { sql: { statements: [read, transaction, session] } }
";
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(include_str!("../../docs/ddl-notices.sql"));
    dp.target(
        "SET ROLE app; CREATE TABLE payroll (id int, salary int); \
         CREATE VIEW staff AS SELECT id FROM items",
    );
    let (ok, out, err) = dp.psql("SELECT count(*) FROM staff");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "500");
    dp.agent_logged("listening for the target's DDL notices")
        .await;
    // Read again after the watch started (it marks the read out of date
    // when it starts listening): the agent's read is fresh again.
    let (ok, out, err) = dp.psql("SELECT count(*) FROM staff");
    assert!(ok && out.trim() == "500", "{out}{err}");
    dp.target("SET ROLE app; CREATE OR REPLACE VIEW staff AS SELECT id FROM payroll");
    dp.agent_logged("the target's catalog changed (DDL notice")
        .await;
    assert_denied(&dp, "SELECT count(*) FROM staff /* r1 */", "/* r1 */");

    // Anyone may NOTIFY the channel: a burst of notices makes the agent
    // read the catalog again at most once a second, not once per notice.
    let heard = || {
        dp.agent
            .logs()
            .matches("the target's catalog changed (DDL notice")
            .count()
    };
    let before = heard();
    dp.target("SELECT pg_notify('sluice_ddl', g::text) FROM generate_series(1, 200) g");
    sluice_integration_tests::eventually(
        std::time::Duration::from_secs(20),
        "the agent hearing the notices",
        || async { (heard() > before).then_some(()) },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = heard();
    assert!(
        after - before <= 2,
        "200 notices made {} invalidations",
        after - before
    );
}

#[tokio::test]
async fn a_decision_shared_by_texts_of_one_shape_never_covers_a_constant_that_matters() {
    // One session: the agent remembers decisions by the text's shape (its
    // constants replaced), so a text that differs from an allowed one only
    // in constants is not parsed again, unless a constant could change
    // what it does.
    let dp = DataPath::start().await;
    let (out, err) = sluice_integration_tests::psql_script(
        dp.agent.pg_port,
        &dp.token,
        "SELECT name FROM items WHERE id = 7;\n\
         SELECT name FROM items WHERE id = 8;\n\
         SELECT name FROM items WHERE id = 'nine';\n\
         SELECT set_config('application_name', 'shape-warm', false);\n\
         SELECT set_config('role', 'postgres', false);\n\
         SELECT current_user, current_setting('application_name');\n",
    );
    // Each text ran with its own values (not the first one's).
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["item 7", "item 8", "shape-warm"],
        "{out}\n{err}"
    );
    assert!(
        err.contains("invalid input syntax for type integer: \"nine\""),
        "{err}"
    );
    // set_config's first argument decides what it does: same shape as the
    // allowed call, still judged on its own and denied.
    assert!(err.contains("denied this statement"), "{err}");
    assert_eq!(lines[3], "app|shape-warm", "{out}");
    assert!(
        !dp.pg.logs().contains("set_config('role'"),
        "the target saw the denied set_config"
    );
    assert!(dp.pg.logs().contains("set_config('application_name'"));
}

#[tokio::test]
async fn denial_names_the_policy_and_rule_with_sqlstate_42501() {
    let dp = DataPath::start().await;
    let mut conn = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(&dp.url())
        .await
        .unwrap();
    let err = sqlx::query("DROP TABLE items")
        .execute(&mut conn)
        .await
        .unwrap_err();
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("42501"));
    assert!(
        db.message().contains("devs-on-app/no-changes"),
        "{}",
        db.message()
    );
    assert!(db.message().contains("schema changes"), "{}", db.message());
}

/// A raw protocol client: start-up and password, then arbitrary frames.
async fn raw_session(dp: &DataPath) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", dp.agent.pg_port))
        .await
        .unwrap();
    s.write_all(&messages::startup_message(&[
        ("user", "alice"),
        ("database", "app"),
    ]))
    .await
    .unwrap();
    read_until(&mut s, b'R').await;
    s.write_all(&messages::password_message(dp.token.as_bytes()).raw)
        .await
        .unwrap();
    read_until(&mut s, b'Z').await;
    s
}

/// Reads frames until one with `tag`; returns all bytes read.
async fn read_until(s: &mut tokio::net::TcpStream, tag: u8) -> Vec<u8> {
    read_until_n(s, tag, 1).await
}

/// Reads frames until the `n`th one with `tag`.
async fn read_until_n(s: &mut tokio::net::TcpStream, tag: u8, mut n: usize) -> Vec<u8> {
    let mut reader = sluice_pgwire::FrameReader::new(1 << 20);
    let mut all = Vec::new();
    loop {
        while let Some(f) = reader.next_frame().unwrap() {
            all.extend_from_slice(&f.raw);
            if f.tag == tag {
                n -= 1;
                if n == 0 {
                    return all;
                }
            }
        }
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.read_buf(reader.buffer()),
        )
        .await
        .expect("timed out")
        .unwrap();
        assert!(
            n > 0,
            "connection closed while waiting for `{}`",
            tag as char
        );
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    Frame::new(tag, body).raw.to_vec()
}

#[tokio::test]
async fn parse_of_a_denied_statement_can_never_be_bound_or_executed() {
    let dp = DataPath::start().await;
    let mut s = raw_session(&dp).await;
    // Parse a denied statement, then Bind and Execute it, in one pipeline.
    let mut batch = Vec::new();
    batch.extend(frame(b'P', b"evil\0DELETE FROM items\0\0\0"));
    batch.extend(frame(b'B', b"\0evil\0\0\0\0\0\0\0"));
    batch.extend(frame(b'E', b"\0\0\0\0\0"));
    batch.extend(frame(b'S', b""));
    s.write_all(&batch).await.unwrap();
    let got = read_until(&mut s, b'Z').await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("42501"), "{text}");
    // A later Bind/Execute of that name fails on the target: it was never prepared there.
    let mut again = Vec::new();
    again.extend(frame(b'B', b"\0evil\0\0\0\0\0\0\0"));
    again.extend(frame(b'E', b"\0\0\0\0\0"));
    again.extend(frame(b'S', b""));
    s.write_all(&again).await.unwrap();
    let got = read_until(&mut s, b'Z').await;
    assert!(
        String::from_utf8_lossy(&got).contains("evil"),
        "the target should not know `evil`"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
    assert!(!dp.pg.logs().contains("DELETE FROM items"));
    // Error recovery until Sync worked: the session answers a simple query.
    s.write_all(&frame(b'Q', b"SELECT 7\0")).await.unwrap();
    let got = read_until(&mut s, b'Z').await;
    assert!(got.windows(1).any(|w| w == b"7"));
}

#[tokio::test]
async fn messages_after_a_denied_parse_are_discarded_until_sync() {
    let dp = DataPath::start().await;
    let mut s = raw_session(&dp).await;
    // Flush after the denied Parse: the agent answers the error, then must
    // ignore the rest until Sync, as PostgreSQL does.
    let mut batch = Vec::new();
    batch.extend(frame(b'P', b"\0TRUNCATE items\0\0\0"));
    batch.extend(frame(b'H', b""));
    s.write_all(&batch).await.unwrap();
    let got = read_until(&mut s, b'E').await;
    assert!(String::from_utf8_lossy(&got).contains("42501"));
    let mut rest = Vec::new();
    rest.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    rest.extend(frame(b'E', b"\0\0\0\0\0"));
    rest.extend(frame(b'S', b""));
    s.write_all(&rest).await.unwrap();
    let got = read_until(&mut s, b'Z').await;
    assert_eq!(
        got.first(),
        Some(&b'Z'),
        "nothing but ReadyForQuery after the discarded messages"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
}

#[tokio::test]
async fn function_call_messages_are_denied() {
    let dp = DataPath::start().await;
    let mut s = raw_session(&dp).await;
    // FunctionCall of pg_read_file (oid 2624) with one text argument.
    let mut body = Vec::new();
    body.extend_from_slice(&2624i32.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&13i32.to_be_bytes());
    body.extend_from_slice(b"/etc/hostname");
    body.extend_from_slice(&0i16.to_be_bytes());
    s.write_all(&frame(b'F', &body)).await.unwrap();
    let got = read_until(&mut s, b'Z').await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("42501"), "{text}");
    assert!(
        !text.contains(
            &std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
                .to_owned()
        ) || std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
            .is_empty()
    );
}

#[tokio::test]
async fn a_function_call_message_reaches_tables_no_rule_names() {
    use sluice_integration_tests::rawpg::{RawSession, errors, frame};
    // FunctionCall picks its function by OID: libpq's large-object calls
    // come this way, and any function could. A rule's `tables:` cannot
    // vouch for it.
    let lo_get_of = |dp: &DataPath| {
        let oid: i32 = dp
            .target("SELECT 'lo_get(oid)'::regprocedure::oid")
            .parse()
            .unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes()); // binary argument
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&424_242u32.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes()); // text result
        frame(b'F', &body)
    };
    let seed = "SELECT lo_from_bytea(424242, 'sealed'); ALTER LARGE OBJECT 424242 OWNER TO app";
    let allowed = "
      - allow: { sql: { statements: [read, function_call, transaction, session] } }
";
    for (rules, refused) in [
        (
            format!(
                "
      - deny: {{ sql: {{ tables: [\"secret.*\"] }} }}
        name: no-secret{allowed}"
            ),
            true,
        ),
        (
            format!(
                "
      - approve: {{ sql: {{ tables: [\"secret.*\"] }}, approvers: [dba] }}
        name: ask-secret{allowed}"
            ),
            true,
        ),
        (allowed.to_owned(), false),
    ] {
        let dp = DataPath::start_with(&rules, Vec::new()).await;
        dp.target(seed);
        let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
        s.send(&lo_get_of(&dp)).await;
        let got = s.until(b'Z').await;
        let text = errors(&got);
        let body: Vec<u8> = got
            .iter()
            .filter(|m| m.tag == b'V')
            .flat_map(|m| m.raw.clone())
            .collect();
        let ran = dp.pg.logs().contains("fastpath function call");
        if refused {
            // Refused by the rule, or told that approval cannot be waited
            // for (not left waiting for an approver who sees no text).
            assert!(
                text.contains("42501")
                    && (text.contains("no-secret")
                        || (text.contains("ask-secret") && text.contains("cannot wait"))),
                "{text}"
            );
            assert!(!ran, "the target ran the function call");
            assert!(!String::from_utf8_lossy(&body).contains("736561"));
        } else {
            // The same message, allowed: the target runs it and answers.
            assert!(text.is_empty(), "{text}");
            assert!(ran, "the target did not run the function call");
            assert!(String::from_utf8_lossy(&body).contains("\\x7365616c6564"));
        }
    }
}

#[tokio::test]
async fn encodings_that_could_hide_quotes_are_refused() {
    let dp = DataPath::start().await;
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=alice sslmode=disable client_encoding=SJIS",
            dp.agent.pg_port
        ))
        .args(["-Atc", "SELECT 1"])
        .env("PGPASSWORD", &dp.token)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("client_encoding"),
        "{err}"
    );
    // UTF8 (any spelling) is fine.
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=alice sslmode=disable client_encoding=utf-8",
            dp.agent.pg_port
        ))
        .args(["-Atc", "SHOW client_encoding"])
        .env("PGPASSWORD", &dp.token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "UTF8");
}

#[tokio::test]
async fn backslash_quote_tricks_follow_the_target_s_string_syntax() {
    let dp = DataPath::start().await;
    // With standard_conforming_strings on (the default), this is a string
    // containing a backslash, then a DROP: the DROP must be seen and denied.
    assert_denied(
        &dp,
        r"SELECT 'a\'; DROP TABLE items; --'",
        "DROP TABLE items",
    );
    // E'' strings use backslash escapes whatever the setting: one string, allowed.
    let (ok, out, err) = dp.psql(r"SELECT E'a\'; DROP TABLE items; --'");
    assert!(ok, "{err}");
    assert!(out.contains("DROP TABLE items"));
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
}

#[tokio::test]
async fn changing_string_syntax_and_pipelining_cannot_smuggle_a_statement() {
    // A policy that lets the client change standard_conforming_strings.
    let dp = DataPath::start_with(
        r#"
      - deny: { sql: { statements: [delete, ddl] } }
        name: no-delete
      - allow: { sql: { statements: [read, session, transaction, other] } }
"#,
        Vec::new(),
    )
    .await;
    let mut s = raw_session(&dp).await;
    // Both in one write: the agent judges the second before the target has
    // reported the new setting. With the setting off, the target would see
    // `SELECT 'x'''` and then run the DELETE.
    let mut both = frame(b'Q', b"SET standard_conforming_strings = off\0");
    both.extend(frame(b'Q', b"SELECT 'x\\''; DELETE FROM items; --'\0"));
    s.write_all(&both).await.unwrap();
    let got = read_until_n(&mut s, b'Z', 2).await;
    assert!(
        String::from_utf8_lossy(&got).contains("42501"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
    assert!(!dp.pg.logs().contains("DELETE FROM items"));
}

#[tokio::test]
async fn executing_a_portal_not_bound_through_the_protocol_is_refused() {
    let dp = DataPath::start().await;
    let mut s = raw_session(&dp).await;
    s.write_all(&frame(
        b'Q',
        b"BEGIN; DECLARE c CURSOR FOR SELECT id FROM items\0",
    ))
    .await
    .unwrap();
    read_until(&mut s, b'Z').await;
    // Execute the SQL-level cursor as a protocol portal: it would run
    // unjudged and unaudited, so the agent refuses it (34000, as for a
    // portal that does not exist).
    let mut batch = frame(b'E', b"c\0\0\0\0\0");
    batch.extend(frame(b'S', b""));
    s.write_all(&batch).await.unwrap();
    let got = read_until(&mut s, b'Z').await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("34000") && text.contains("portal"), "{text}");
    assert!(!got.windows(1).any(|w| w == b"D"), "no rows were returned");
}

/// Logs in as alice with extra start-up `params`; returns what the agent
/// said up to ReadyForQuery or the end of the connection.
async fn login_with(dp: &DataPath, params: &[(&str, &str)]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", dp.agent.pg_port))
        .await
        .unwrap();
    let mut all: Vec<(&str, &str)> = vec![("user", "alice"), ("database", "app")];
    all.extend_from_slice(params);
    s.write_all(&messages::startup_message(&all)).await.unwrap();
    read_until(&mut s, b'R').await;
    s.write_all(&messages::password_message(dp.token.as_bytes()).raw)
        .await
        .unwrap();
    s.write_all(&frame(b'Q', b"SHOW statement_timeout\0"))
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut reader = sluice_pgwire::FrameReader::new(1 << 20);
    let mut ready = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // Login, then the SHOW's answer: two ReadyForQuery, or the end.
        while ready < 2 {
            match s.read_buf(reader.buffer()).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            while let Some(f) = reader.next_frame().unwrap() {
                ready += usize::from(f.tag == b'Z');
                out.extend_from_slice(&f.raw);
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn start_up_parameters_cannot_do_what_a_denied_set_would() {
    // `session` allows SET: start-up parameters pass through.
    let mut dp = DataPath::start().await;
    let said = login_with(&dp, &[("statement_timeout", "7s")]).await;
    assert!(said.contains("7s"), "{said}");

    // Without it, a start-up parameter that changes more than how values
    // are shown is refused, as `SET` would be; those that only change how
    // values are shown still pass.
    let doc = dp.policy(
        "devs",
        "\n      - allow: { sql: { statements: [read] } }\n        name: read-only\n",
    );
    let (s, v) = dp.cp.api().apply_policy(&doc).await;
    assert!(s.is_success(), "{v}");
    let revision = v["revision"].as_u64().expect("revision");
    dp.agent
        .wait_version(revision, std::time::Duration::from_secs(10))
        .await;
    let (ok, _, err) = dp.psql("SET statement_timeout = 0");
    assert!(!ok && err.contains("denied this statement"), "{err}");
    for (key, value) in [
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
        ("search_path", "attacker, public"),
    ] {
        let said = login_with(&dp, &[(key, value)]).await;
        assert!(
            said.contains("42501") && said.contains(&format!("start-up parameter `{key}`")),
            "{key}: {said}"
        );
    }
    let said = login_with(
        &dp,
        &[
            ("application_name", "report"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
        ],
    )
    .await;
    assert!(!said.contains("42501"), "{said}");
    assert!(said.contains("SHOW"), "logged in and answered: {said}");
}
