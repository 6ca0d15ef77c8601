//! Ways to run a statement other than the one the agent judged: portals
//! the target dropped and the client bound again, FETCH of a portal bound
//! through the protocol, a client encoding that splits text differently,
//! and functions that act beyond the statement. Each is refused, and the
//! target confirms nothing ran.

use std::time::Duration;

use sqlx::Connection as _;

use sluice_integration_tests::{
    datapath::DataPath,
    eventually,
    rawpg::{
        RawSession, bind, bind_text, errors, execute, first_column, flush, parse, parse_typed,
        query, sync,
    },
};

/// Deletes need approval (retry mode: the answer comes at once); reads,
/// inserts, updates, transactions and session settings are allowed, and
/// so are the functions the tests define, by name: the agent cannot see
/// what they do, so what they may do must not matter.
const RULES: &str = r#"
      - approve: { sql: { statements: [delete] }, approvers: [dba], mode: retry, ttl: 10m }
        name: risky
        reason: deletes need a DBA
      - allow: { sql: { statements: [read, insert, update, transaction, session] } }
        name: work
      - allow: { sql: { statements: [user_function], functions: [close_portal, to_sjis] } }
        name: app-functions
"#;

/// RULES, but deletes run without approval.
fn deletes_allowed() -> String {
    RULES.replace(
        "approve: { sql: { statements: [delete] }, approvers: [dba], mode: retry, ttl: 10m }",
        "allow: { sql: { statements: [delete] } }",
    )
}

/// Gives the running data path's policy `rules`, once the agent has them.
async fn switch_rules(dp: &mut DataPath, rules: &str) {
    let doc = dp.policy("devs", rules);
    let (status, v) = dp.cp.api().apply_policy(&doc).await;
    assert!(status.is_success(), "{v}");
    dp.agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(10))
        .await;
}

fn row_exists(dp: &DataPath, id: i32) -> bool {
    dp.target(&format!("SELECT count(*) FROM items WHERE id = {id}")) == "1"
}

/// Sends `bytes` and returns the error text up to ReadyForQuery.
async fn errors_of(s: &mut RawSession, bytes: &[u8]) -> String {
    s.send(bytes).await;
    errors(&s.until(b'Z').await)
}

/// In a transaction: binds portal `p` to a harmless SELECT, lets `drop`
/// remove it on the target, then binds `p` to a DELETE and executes it.
async fn rebind_after(dp: &DataPath, drop: &str, id: i32) -> String {
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(errors_of(&mut s, &query("BEGIN; SAVEPOINT a")).await, "");
    let harmless = [
        parse("sel", "SELECT 'harmless'::text"),
        bind("p", "sel"),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &harmless).await, "");
    assert_eq!(errors_of(&mut s, &query(drop)).await, "", "{drop}");
    let delete = [
        parse(
            "d",
            &format!("DELETE FROM items WHERE id = {id} RETURNING id"),
        ),
        bind("p", "d"),
        execute("p", 0),
        sync(),
    ]
    .concat();
    let text = errors_of(&mut s, &delete).await;
    assert_eq!(errors_of(&mut s, &query("COMMIT")).await, "");
    text
}

#[tokio::test]
async fn a_portal_dropped_on_the_target_is_never_rebound_to_a_statement_the_agent_did_not_judge() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    // Drops the agent sees: the DELETE bound to `p` is judged as what it
    // is, so it needs approval.
    for (drop, id) in [
        ("CLOSE p", 50),
        ("CLOSE ALL", 51),
        ("ROLLBACK TO SAVEPOINT a", 52),
    ] {
        let text = rebind_after(&dp, drop, id).await;
        assert!(
            text.contains("needs approval") && text.contains("42501"),
            "after `{drop}`: {text}"
        );
        assert!(row_exists(&dp, id), "after `{drop}` row {id} was deleted");
    }
    // A drop the agent cannot see (a function closing `p` as a cursor): it
    // still believes `p` is bound, so binding `p` again is refused as
    // PostgreSQL would refuse it, and never reaches the target.
    dp.pg.psql(
        "app",
        "CREATE FUNCTION close_portal(c refcursor) RETURNS int LANGUAGE plpgsql AS $$ BEGIN CLOSE c; RETURN 1; END $$",
    );
    let text = rebind_after(&dp, "SELECT close_portal('p')", 53).await;
    assert!(
        text.contains("42P03") && text.contains("already exists"),
        "{text}"
    );
    assert!(row_exists(&dp, 53));
}

#[tokio::test]
async fn fetch_cannot_run_a_portal_whose_statement_needs_approval() {
    let mut dp = DataPath::start_with(RULES, Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Bound, then fetched in the same batch.
    let batch = [
        parse("d", "DELETE FROM items WHERE id = 60 RETURNING id"),
        bind("pd", "d"),
        parse("", "FETCH ALL FROM pd"),
        bind("", ""),
        execute("", 0),
        sync(),
    ]
    .concat();
    let text = errors_of(&mut s, &batch).await;
    assert!(
        text.contains("42501") && text.contains("portal \"pd\"") && text.contains("needs approval"),
        "{text}"
    );
    assert!(row_exists(&dp, 60));
    // Bound in a transaction without its Execute: refused (binding plans).
    let prepared = [
        parse("d2", "DELETE FROM items WHERE id = 61 RETURNING id"),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &prepared).await, "");
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    let bound = [bind("pd2", "d2"), sync()].concat();
    let text = errors_of(&mut s, &bound).await;
    assert!(text.contains("0A000"), "{text}");
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    // Bound while deletes needed no approval, then run with MOVE, FETCH or
    // cursor_to_xml once they do.
    for (sql, why) in [
        ("MOVE ALL IN pd2", "needs approval"),
        ("FETCH NEXT FROM \"pd2\"", "needs approval"),
        (
            "SELECT cursor_to_xml('pd2', 10, false, false, '')",
            "dynamic_sql",
        ),
    ] {
        switch_rules(&mut dp, &deletes_allowed()).await;
        assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
        assert_eq!(errors_of(&mut s, &bound).await, "");
        switch_rules(&mut dp, RULES).await;
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains(why),
            "`{sql}` was not refused: {text}"
        );
        assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    }
    assert!(row_exists(&dp, 61));
    // FETCH of a portal whose statement is allowed works as it should.
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    let select = [
        parse("s", "SELECT id FROM items WHERE id <= 3 ORDER BY id"),
        bind("ps", "s"),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &select).await, "");
    s.send(&query("FETCH ALL FROM ps")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["1", "2", "3"]);
}

#[tokio::test]
async fn the_client_encoding_cannot_be_changed_under_the_agent() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Ways the classifier sees: refused.
    for sql in [
        "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
        "SELECT query_to_xml('select set_config(''client_encoding'', ''SJIS'', false)', false, false, '')",
        "SET client_encoding = 'SJIS'",
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(text.contains("42501"), "`{sql}` was not refused: {text}");
        s.send(&query("SHOW client_encoding")).await;
        assert_eq!(
            first_column(&s.until(b'Z').await),
            ["UTF8"],
            "after `{sql}`"
        );
    }
    // A function the classifier cannot see into: the target reports the
    // change, and the agent ends the session before anything else runs in
    // the new encoding.
    dp.pg.psql(
        "app",
        "CREATE FUNCTION to_sjis() RETURNS text LANGUAGE sql AS $$ SELECT set_config('client_encoding', 'SJIS', false) $$",
    );
    s.send(&query("SELECT to_sjis()")).await;
    let got = tokio::time::timeout(Duration::from_secs(10), s.until_or_closed(b'E'))
        .await
        .expect("the session was not ended");
    let text = errors(&got);
    assert!(
        text.contains("0A000") && text.contains("client_encoding was changed to SJIS"),
        "{text}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), s.until_or_closed(b'Z'))
        .await
        .expect("the connection was not closed");
    assert!(closed.iter().all(|f| f.tag != b'Z'), "the session went on");
}

/// Valid UTF-8 whose last byte opens a two-byte character in SJIS. Read as
/// UTF-8 (as the agent judges it), the backslash escapes the quote and the
/// DELETE is inside a string; read as SJIS, the backslash is the second byte
/// of that character, the string ends there, and the DELETE runs.
fn delete_hidden_from_utf8(id: i32) -> String {
    format!("SELECT E'\u{c1}\\'; DELETE FROM items WHERE id = {id}; --'")
}

/// A function the classifier cannot see into that switches the session to
/// SJIS (created as a database's owner might).
fn create_to_sjis(dp: &DataPath) {
    dp.pg.psql(
        "app",
        "CREATE FUNCTION to_sjis() RETURNS text LANGUAGE sql AS $$ SELECT set_config('client_encoding', 'SJIS', false) $$",
    );
}

#[tokio::test]
async fn text_pipelined_behind_an_encoding_change_is_not_read_in_the_new_encoding() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    create_to_sjis(&dp);
    // In UTF8, agent and target read the text alike: one harmless SELECT.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query(&delete_hidden_from_utf8(7))).await;
    assert_eq!(
        first_column(&s.until(b'Z').await),
        ["\u{c1}'; DELETE FROM items WHERE id = 7; --"]
    );
    assert!(row_exists(&dp, 7));

    // The switch and the text in one write: the text waits for the switch's
    // answer, which reports the change, and the session ends unread.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let pipelined = [
        query("SELECT to_sjis()"),
        query(&delete_hidden_from_utf8(8)),
    ]
    .concat();
    s.send(&pipelined).await;
    let got = tokio::time::timeout(Duration::from_secs(10), s.until_or_closed(b'X'))
        .await
        .expect("the session was not ended");
    let text = errors(&got);
    assert!(
        text.contains("0A000") && text.contains("client_encoding was changed to SJIS"),
        "{text}"
    );
    assert!(row_exists(&dp, 8), "the hidden DELETE ran on the target");

    // Text that is not ASCII behind ordinary statements waits its turn and
    // runs as sent.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let pipelined = [
        query("SELECT pg_sleep(0.2)"),
        query("SELECT 'caf\u{e9}'"),
        query("SELECT 'ok'"),
    ]
    .concat();
    s.send(&pipelined).await;
    let got = s.until_n(b'Z', 3).await;
    assert_eq!(errors(&got), "");
    assert_eq!(first_column(&got), ["", "caf\u{e9}", "ok"]);
}

#[tokio::test]
async fn text_after_an_execute_in_the_same_cycle_must_be_ascii() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    create_to_sjis(&dp);
    let run = |sql: &str| [parse("", sql), bind("", ""), execute("", 0)].concat();
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;

    // One batch: the switch, then the text. Refused whole; nothing ran.
    let batch = [
        run("SELECT to_sjis()"),
        run(&delete_hidden_from_utf8(9)),
        sync(),
    ]
    .concat();
    let text = errors_of(&mut s, &batch).await;
    assert!(
        text.contains("0A000") && text.contains("cannot follow an Execute before Sync"),
        "{text}"
    );
    s.send(&query("SHOW client_encoding")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["UTF8"]);

    // The switch in a batch ended with Flush (it ran; its cycle stays open),
    // then the text as a Query: refused, which fails the open cycle on the
    // target, so the switch is rolled back with it.
    s.send(&[run("SELECT to_sjis()"), flush()].concat()).await;
    s.until(b'C').await;
    let text = errors_of(&mut s, &query(&delete_hidden_from_utf8(9))).await;
    assert!(
        text.contains("0A000") && text.contains("cannot follow an Execute before Sync"),
        "{text}"
    );
    s.send(&query("SHOW client_encoding")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["UTF8"]);
    assert!(row_exists(&dp, 9), "the hidden DELETE ran on the target");

    // Not after an Execute, or after Sync: as usual.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let batch = [
        run("SELECT 'caf\u{e9}'"),
        sync(),
        run("SELECT 'na\u{ef}ve'"),
        run("SELECT 'ok'"),
        sync(),
    ]
    .concat();
    s.send(&batch).await;
    let got = s.until_n(b'Z', 2).await;
    assert_eq!(errors(&got), "");
    assert_eq!(first_column(&got), ["caf\u{e9}", "na\u{ef}ve", "ok"]);
}

#[tokio::test]
async fn a_read_only_subject_cannot_act_through_functions_in_a_select() {
    let dp = DataPath::start_with(
        r#"
      - allow: { sql: { statements: [select] } }
        name: read-only
"#,
        Vec::new(),
    )
    .await;
    let mut victim = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for sql in [
        "SELECT nextval('notes_id_seq')",
        "SELECT setval('notes_id_seq', 1000)",
        "SELECT lo_from_bytea(0, 'planted')",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND pid <> pg_backend_pid()",
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
        "SELECT pg_notify('ch', 'hi')",
        "SELECT pg_advisory_lock(42)",
        "SELECT * FROM items WHERE id = 1 FOR UPDATE",
        "SELECT query_to_xml('SELECT 1', false, false, '')",
    ] {
        let (ok, _, err) = dp.psql(sql);
        assert!(
            !ok && err.contains("denied this statement"),
            "`{sql}`: {err}"
        );
    }
    // Nothing happened on the target.
    assert_eq!(dp.target("SELECT is_called FROM notes_id_seq"), "f");
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_largeobject_metadata"),
        "0"
    );
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0"
    );
    victim.send(&query("SELECT 'still here'")).await;
    assert_eq!(first_column(&victim.until(b'Z').await), ["still here"]);
    // Plain functions over values are reads.
    let (ok, out, err) = dp.psql("SELECT lower(name) FROM items WHERE id = 1");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "item 1");
}

#[tokio::test]
async fn functions_defined_in_the_database_run_only_when_a_rule_names_them() {
    let dp = DataPath::start_with(
        r#"
      - allow: { sql: { statements: [read] } }
        name: read-only
      - allow: { sql: { statements: [user_function], functions: [app_price] } }
        name: app-functions
"#,
        Vec::new(),
    )
    .await;
    // An application's functions: one that writes, reachable as a call, in
    // FROM, as an operator, and a harmless one policy names.
    dp.pg.psql(
        "app",
        "CREATE FUNCTION touch(i items) RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN UPDATE items SET name = 'touched' WHERE id = i.id; RETURN 1; END $$; \
         CREATE FUNCTION touch_id(a int, b int) RETURNS boolean LANGUAGE plpgsql AS $$ \
           BEGIN UPDATE items SET name = 'touched' WHERE id = a; RETURN true; END $$; \
         CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = touch_id); \
         CREATE SCHEMA app; GRANT USAGE ON SCHEMA app TO app; \
         CREATE FUNCTION app.lower(t text) RETURNS text LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 2; RETURN t; END $$; \
         CREATE FUNCTION app_price(i int) RETURNS int LANGUAGE sql AS $$ SELECT i * 2 $$;",
    );
    for sql in [
        "SELECT touch(i) FROM items i WHERE id = 1",
        "SELECT * FROM touch((SELECT i FROM items i WHERE id = 1))",
        "SELECT 1 === 1",
        "SELECT id FROM items WHERE id === 1",
        "SELECT app.lower('x')",
        "SELECT app_price(1), touch(i) FROM items i WHERE id = 1",
    ] {
        let (ok, _, err) = dp.psql(sql);
        assert!(
            !ok && err.contains("denied this statement") && err.contains("user_function"),
            "`{sql}`: {err}"
        );
    }
    // The target confirms none of them ran.
    assert_eq!(
        dp.target("SELECT count(*) FROM items WHERE name = 'touched'"),
        "0"
    );
    assert!(row_exists(&dp, 2));
    // The function the rule names runs, beside PostgreSQL's own.
    let (ok, out, err) = dp.psql("SELECT app_price(21), upper('x')");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "42|X");
    // With `app.lower` in the database, an unqualified `lower` may be it
    // (a search_path naming `app` first), so it needs a rule too.
    let (ok, _, err) = dp.psql("SELECT lower('X')");
    assert!(
        !ok && err.contains("user_function") && err.contains("lower"),
        "{err}"
    );
}

/// The database's own code reached without naming it as such: attribute
/// notation, a function or operator sharing a built-in's name (or one
/// implied by a construct, or by syntax newer than the target), a view or
/// a row-level-security policy that calls one, a function the session
/// itself creates, and one created on the target while a session runs.
#[tokio::test]
async fn functions_reached_without_naming_them_need_a_rule_too() {
    let dp = DataPath::start_with(
        r#"
      - allow: { sql: { statements: [read, transaction, create] } }
        name: read-and-create
"#,
        vec!["--catalog-max-age".into(), "1s".into()],
    )
    .await;
    // Each writes to `items` when it runs.
    dp.pg.psql(
        "app",
        "SET ROLE app; \
         CREATE FUNCTION touch(i items) RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN UPDATE items SET name = 'touched' WHERE id = i.id; RETURN 1; END $$; \
         CREATE TYPE mood AS ENUM ('calm', 'cross'); \
         CREATE FUNCTION lower(m mood) RETURNS text LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 2; RETURN m::text; END $$; \
         CREATE FUNCTION mood_eq(a mood, b mood) RETURNS boolean LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 3; RETURN a::text < b::text OR a::text > b::text; END $$; \
         CREATE OPERATOR = (LEFTARG = mood, RIGHTARG = mood, FUNCTION = mood_eq); \
         CREATE FUNCTION json_value(j text, p text) RETURNS text LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 5; RETURN j; END $$; \
         CREATE VIEW touching AS SELECT touch(i) FROM items i WHERE id < 10; \
         CREATE VIEW over_touching AS SELECT * FROM touching; \
         CREATE FUNCTION allowed(i int) RETURNS boolean LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 4; RETURN true; END $$; \
         CREATE TABLE guarded (id int); INSERT INTO guarded VALUES (1); \
         ALTER TABLE guarded ENABLE ROW LEVEL SECURITY; ALTER TABLE guarded FORCE ROW LEVEL SECURITY; \
         CREATE POLICY see ON guarded USING (allowed(id));",
    );
    let denied = |sql: &str, name: &str| {
        let (ok, _, err) = dp.psql(sql);
        assert!(
            !ok && err.contains("user_function") && err.contains(name),
            "`{sql}`: {err}"
        );
    };
    denied("SELECT i.touch FROM items i WHERE id < 10", "touch");
    denied("SELECT (i).touch FROM items i WHERE id < 10", "touch");
    denied("SELECT lower('calm'::mood)", "lower");
    denied("SELECT 'calm'::mood = 'cross'::mood", "=");
    // Its `=` without naming it.
    denied(
        "SELECT CASE 'calm'::mood WHEN 'cross'::mood THEN 1 END",
        "=",
    );
    denied("SELECT 1 WHERE 'calm'::mood IN (SELECT 'cross'::mood)", "=");
    // Syntax of PostgreSQL 17 that the target (15) runs as a call.
    denied("SELECT json_value('{}', '$.a')", "json_value");
    denied("SELECT * FROM touching", "touch");
    denied("SELECT * FROM public.over_touching", "touch");
    denied("SELECT * FROM guarded", "allowed");
    // Defined by the session and called in the same text, or later in its
    // transaction, where no other connection can see it yet.
    denied(
        "CREATE FUNCTION mine(i items) RETURNS int LANGUAGE sql AS $$ UPDATE items SET name = 'mine' WHERE id = i.id RETURNING 1 $$; \
         SELECT i.mine FROM items i WHERE id < 10",
        "mine",
    );
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    assert_eq!(
        errors_of(
            &mut s,
            &query("CREATE FUNCTION mine(i items) RETURNS int LANGUAGE sql AS $$ UPDATE items SET name = 'mine' WHERE id = i.id RETURNING 1 $$"),
        )
        .await,
        ""
    );
    let text = errors_of(&mut s, &query("SELECT i.mine FROM items i WHERE id < 10")).await;
    assert!(text.contains("42501") && text.contains("mine"), "{text}");
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");

    // Created on the target by other means while a session is open: seen
    // once the agent's read is older than --catalog-max-age.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let text = errors_of(&mut s, &query("SELECT i.sneak FROM items i WHERE false")).await;
    assert!(text.contains("column i.sneak does not exist"), "{text}");
    dp.target(
        "SET ROLE app; CREATE FUNCTION sneak(i items) RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN UPDATE items SET name = 'sneaked' WHERE id = i.id; RETURN 1; END $$",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = errors_of(&mut s, &query("SELECT i.sneak FROM items i WHERE id < 10")).await;
    assert!(text.contains("42501") && text.contains("sneak"), "{text}");

    // The target confirms none of it ran.
    assert_eq!(
        dp.target("SELECT count(*) FROM items WHERE id < 10 AND name <> 'item ' || id"),
        "0"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items WHERE id < 10"), "9");
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_proc WHERE proname = 'mine'"),
        "0"
    );
    // Columns and PostgreSQL's own functions and operators still work.
    let (ok, out, err) = dp.psql("SELECT i.name, length(i.name) FROM items i WHERE id < 2");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "item 1|6");
}

#[tokio::test]
async fn functions_a_type_runs_need_a_rule_too() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    // Each function deletes a row of `items` when it runs.
    dp.pg.psql(
        "app",
        "SET ROLE app; \
         CREATE FUNCTION is_positive(v int) RETURNS boolean LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 30; RETURN v > 0; END $$; \
         CREATE DOMAIN positive AS int CHECK (is_positive(VALUE)); \
         CREATE DOMAIN small AS int CHECK (VALUE < 10); \
         CREATE TABLE counts (n positive); \
         CREATE TYPE mood AS (level int); \
         CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 31; RETURN json_build_object('level', m.level); END $$; \
         CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood); \
         CREATE TABLE moods (m mood); INSERT INTO moods VALUES (ROW(1)); \
         CREATE VIEW mood_view AS SELECT m FROM moods; \
         CREATE TYPE pair AS (a int, b int); \
         CREATE FUNCTION pair_cmp(x pair, y pair) RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 32; RETURN btrecordcmp(x, y); END $$; \
         CREATE TABLE pairs (p pair); INSERT INTO pairs VALUES (ROW(1, 2)), (ROW(0, 1)); \
         CREATE FUNCTION fr_diff(a float8, b float8) RETURNS float8 LANGUAGE sql IMMUTABLE AS 'SELECT a - b'; \
         CREATE TYPE fr AS RANGE (subtype = float8, subtype_diff = fr_diff); \
         RESET ROLE; \
         CREATE OPERATOR CLASS pair_ops DEFAULT FOR TYPE pair USING btree AS FUNCTION 1 pair_cmp(pair, pair); \
         CREATE FUNCTION my_int_cmp(a int, b int) RETURNS int LANGUAGE plpgsql AS $$ \
           BEGIN DELETE FROM items WHERE id = 33; RETURN btint4cmp(a, b); END $$; \
         CREATE OPERATOR CLASS my_int_ops FOR TYPE int USING btree AS \
           OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 my_int_cmp(int, int); \
         CREATE TABLE ranged (id int) PARTITION BY RANGE (id my_int_ops); \
         CREATE TABLE ranged_low PARTITION OF ranged FOR VALUES FROM (0) TO (100); \
         GRANT SELECT ON ranged, ranged_low TO app; \
         INSERT INTO items VALUES (33, 'item 33') ON CONFLICT DO NOTHING;",
    );
    let denied = |sql: &str, name: &str| {
        let (ok, _, err) = dp.psql(sql);
        assert!(
            !ok && err.contains("user_function") && err.contains(name),
            "`{sql}`: {err}"
        );
    };
    // A domain's CHECK, by cast or by a column of the domain.
    denied("SELECT '5'::positive", "is_positive");
    denied("SELECT CAST(5 AS positive)", "is_positive");
    denied(
        "SELECT * FROM json_to_record('{\"n\": 5}') AS x(n positive)",
        "is_positive",
    );
    denied("SELECT n FROM counts", "is_positive");
    // A cast `to_json` uses, through a view too.
    denied("SELECT to_json(m) FROM moods", "mood_json");
    denied("SELECT to_json(m) FROM mood_view", "mood_json");
    // The comparison function of the type's default operator class.
    denied("SELECT p FROM pairs ORDER BY p", "pair_cmp");
    // A range type's subtype_diff.
    denied("SELECT '[1,2)'::fr", "fr_diff");
    denied("SELECT '{[1,2)}'::fr_multirange", "fr_diff");
    // A partition key's operator class, not the type's default: pruning
    // partitions and routing rows run its comparison function (creating
    // the partition ran it, so the setup puts item 33 back).
    denied("SELECT * FROM ranged WHERE id = 5", "my_int_cmp");
    denied("SELECT * FROM ranged_low", "my_int_cmp");

    // A parameter the client declares of the domain's type (or an array
    // of it), and a built-in that makes a value of a type given by OID.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for typ in ["positive", "positive[]"] {
        let oid: u32 = dp
            .target(&format!("SELECT '{typ}'::regtype::oid"))
            .parse()
            .unwrap();
        let typed = [
            parse_typed("", "SELECT $1", &[oid]),
            bind_text("", "", &["5"]),
            execute("", 0),
            sync(),
        ]
        .concat();
        let text = errors_of(&mut s, &typed).await;
        assert!(
            text.contains("42501")
                && text.contains("parameter types")
                && text.contains("is_positive"),
            "{typ}: {text}"
        );
    }
    let int4 = [
        parse_typed("", "SELECT $1", &[23]),
        bind_text("", "", &["5"]),
        execute("", 0),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &int4).await, "");
    denied(
        "SELECT array_in('{5}', 'positive[]'::regtype::oid, -1)",
        "array_in",
    );

    // The target confirms none of it ran.
    for id in [30, 31, 32, 33] {
        assert!(row_exists(&dp, id), "item {id}");
    }
    // Types whose operations are PostgreSQL's own still work.
    let (ok, out, err) = dp.psql("SELECT '5'::small, '[1,2)'::numrange");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5|[1,2)");
}

/// Sets up a foreign server `loop` that is this same database, as the
/// superuser (what the agent's credential could never reach directly), a
/// schema `remote` owned by `app`, and then runs `then`.
fn with_loopback_server(dp: &DataPath, then: &str) {
    dp.target(&format!(
        "CREATE EXTENSION postgres_fdw; \
         CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{}', dbname 'app'); \
         CREATE USER MAPPING FOR PUBLIC SERVER loop OPTIONS (user 'postgres', password_required 'false'); \
         GRANT USAGE ON FOREIGN SERVER loop TO app; \
         CREATE SCHEMA remote AUTHORIZATION app; {then}",
        dp.pg.port
    ));
}

#[tokio::test]
async fn foreign_tables_need_a_rule_of_their_own() {
    let rules = format!(
        "{RULES}      - allow: {{ sql: {{ statements: [foreign_data], tables: [\"remote.open_*\"] }} }}\n        name: open-remote\n"
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    with_loopback_server(
        &dp,
        "SET ROLE app; \
         CREATE FOREIGN TABLE remote.items (id int, name text) SERVER loop OPTIONS (schema_name 'public', table_name 'items'); \
         CREATE FOREIGN TABLE remote.open_items (id int, name text) SERVER loop OPTIONS (schema_name 'public', table_name 'items'); \
         CREATE VIEW remote_view AS SELECT * FROM remote.items; \
         CREATE TABLE parts (id int, name text) PARTITION BY RANGE (id); \
         CREATE FOREIGN TABLE parts_remote PARTITION OF parts FOR VALUES FROM (0) TO (1000) \
           SERVER loop OPTIONS (schema_name 'public', table_name 'items'); \
         CREATE FOREIGN TABLE \"odd.name\" (id int, name text) SERVER loop OPTIONS (schema_name 'public', table_name 'items'); \
         CREATE TABLE ruled (id int); \
         CREATE RULE ruled_update AS ON UPDATE TO ruled DO INSTEAD SELECT * FROM remote.items;",
    );
    let fdw_connections = || {
        dp.target("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'postgres_fdw'")
    };
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for (sql, table) in [
        ("SELECT name FROM remote.items WHERE id = 1", "remote.items"),
        (
            "SELECT name FROM items JOIN remote.items USING (id)",
            "remote.items",
        ),
        ("SELECT * FROM remote_view", "remote.items"),
        ("SELECT * FROM parts", "public.parts_remote"),
        (
            "UPDATE remote.items SET name = 'remote' WHERE id = 20",
            "remote.items",
        ),
        (
            "UPDATE parts SET name = 'parted' WHERE id = 21",
            "public.parts_remote",
        ),
        // A name with a dot in it is one name.
        ("SELECT * FROM \"odd.name\"", "public.odd.name"),
        // A table whose rule reads one.
        ("UPDATE ruled SET id = 1 WHERE id = 0", "remote.items"),
        (
            "SELECT * FROM remote.open_items JOIN remote.items USING (id)",
            "remote.items",
        ),
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains("foreign_data") && text.contains(table),
            "`{sql}`: {text}"
        );
    }
    // The target confirms nothing ran: no row changed, and the session's
    // database never connected to the foreign server.
    assert_eq!(dp.target("SELECT name FROM items WHERE id = 20"), "item 20");
    assert_eq!(dp.target("SELECT name FROM items WHERE id = 21"), "item 21");
    assert_eq!(fdw_connections(), "0");
    // A foreign table the rule names is read as any table.
    s.send(&query("SELECT name FROM remote.open_items WHERE id = 3"))
        .await;
    let reply = s.until(b'Z').await;
    assert_eq!(errors(&reply), "");
    assert_eq!(first_column(&reply), ["item 3"]);
    assert_eq!(
        fdw_connections(),
        "1",
        "the allowed read went through the server"
    );
}

#[tokio::test]
async fn catalogs_holding_credentials_need_a_rule_naming_them() {
    let rules = format!(
        "{RULES}      - allow: {{ sql: {{ statements: [credential_catalog], tables: [pg_catalog.pg_shadow] }} }}\n        name: shadow\n"
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    // A user mapping for the resource's own role keeps the password the
    // database logs in to another server with; the DBA's view shows role
    // password hashes to that role.
    dp.target(
        "CREATE EXTENSION postgres_fdw; \
         CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '192.0.2.1', dbname 'x'); \
         CREATE USER MAPPING FOR app SERVER elsewhere OPTIONS (user 'remote', password 'remote-secret-77'); \
         GRANT USAGE ON FOREIGN SERVER elsewhere TO app; \
         CREATE VIEW public.logins AS SELECT rolname, rolpassword FROM pg_authid; \
         GRANT SELECT ON public.logins TO app; \
         CREATE VIEW information_schema.mapping_copy AS SELECT * FROM pg_user_mapping; \
         GRANT SELECT ON information_schema.mapping_copy TO app; \
         CREATE TABLE signups (id int); \
         CREATE TABLE signup_log (hash text); \
         CREATE RULE signups_log AS ON INSERT TO signups \
           DO ALSO INSERT INTO signup_log SELECT rolpassword FROM pg_authid WHERE rolname = 'app'; \
         GRANT SELECT, INSERT ON signups TO app; \
         SET ROLE app; \
         CREATE VIEW my_mappings AS SELECT * FROM pg_user_mappings; \
         CREATE VIEW login_names AS SELECT * FROM public.logins",
    );
    // The role itself may read them: the catalog, not the agent, is what
    // holds the secrets back.
    assert!(
        dp.target("SET ROLE app; SELECT umoptions FROM pg_user_mappings")
            .contains("remote-secret-77")
    );
    assert!(
        dp.target("SET ROLE app; SELECT count(*) FROM login_names WHERE rolpassword LIKE 'SCRAM-SHA-256$%'")
            != "0"
    );
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for (sql, catalog) in [
        (
            "SELECT umoptions /* m1 */ FROM pg_user_mappings",
            "pg_catalog.pg_user_mappings",
        ),
        (
            "SELECT option_value /* m2 */ FROM information_schema.user_mapping_options",
            "information_schema.user_mapping_options",
        ),
        (
            "SELECT * /* m3 */ FROM my_mappings",
            "pg_catalog.pg_user_mappings",
        ),
        (
            "SELECT rolpassword /* m4 */ FROM login_names",
            "pg_catalog.pg_authid",
        ),
        ("TABLE public.logins /* m5 */", "pg_catalog.pg_authid"),
        (
            "COPY (SELECT * /* m6 */ FROM pg_catalog.pg_user_mapping) TO STDOUT",
            "pg_catalog.pg_user_mapping",
        ),
        // A view created in a system schema is the database's own still.
        (
            "SELECT umoptions /* m8 */ FROM information_schema.mapping_copy",
            "pg_catalog.pg_user_mapping",
        ),
        // A table whose rule for inserts reads one, inserted into.
        (
            "INSERT INTO signups VALUES (1) /* m9 */",
            "pg_catalog.pg_authid",
        ),
    ] {
        s.send(&query(sql)).await;
        let reply = s.until(b'Z').await;
        let text = errors(&reply);
        assert!(
            text.contains("42501") && text.contains("credential_catalog") && text.contains(catalog),
            "`{sql}`: {text}"
        );
        let received: Vec<u8> = reply.iter().flat_map(|f| f.raw.iter().copied()).collect();
        for secret in ["remote-secret-77", "SCRAM-SHA-256$"] {
            assert!(
                !String::from_utf8_lossy(&received).contains(secret),
                "`{sql}` showed {secret}"
            );
        }
    }
    let log = dp.pg.logs();
    for marker in ["m1", "m2", "m3", "m4", "m5", "m6", "m8", "m9"] {
        assert!(
            !log.contains(&format!("/* {marker} */")),
            "the target ran {marker}"
        );
    }
    // A catalog the rule names is read as any table (app may read pg_shadow
    // only as a superuser: the target, not the agent, refuses it now).
    s.send(&query("SELECT count(*) /* m7 */ FROM pg_shadow"))
        .await;
    let text = errors(&s.until(b'Z').await);
    assert!(
        text.contains("42501") && text.contains("permission denied"),
        "{text}"
    );
    assert!(dp.pg.logs().contains("/* m7 */"));
    assert_eq!(dp.target("SELECT count(*) FROM signup_log"), "0");
    // Other catalogs read as before, and PostgreSQL's views over these that
    // show no secrets (`pg_user` shows `********`); and a table whose rule
    // for inserts reads one, read.
    for sql in [
        "SELECT count(*) FROM pg_roles WHERE rolname = 'app'",
        "SELECT count(*) FROM pg_user WHERE usename = 'app'",
        "SELECT count(*) FROM information_schema.user_mappings WHERE authorization_identifier = 'app'",
        "SELECT count(*) + 1 FROM signups",
    ] {
        s.send(&query(sql)).await;
        let reply = s.until(b'Z').await;
        assert_eq!(errors(&reply), "", "{sql}");
        assert_eq!(first_column(&reply), ["1"], "{sql}");
    }
}

#[tokio::test]
async fn a_parameter_type_newer_than_the_agent_s_catalog_read_waits_for_the_next_read() {
    // No read expires during the test: only the refusal makes one.
    let dp = DataPath::start_with(RULES, vec!["--catalog-max-age".into(), "1h".into()]).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(errors_of(&mut s, &query("SELECT 1")).await, "");
    // Created on the target by other means, after the agent's read.
    dp.target(
        "CREATE FUNCTION late_check(int) RETURNS bool LANGUAGE sql AS 'SELECT $1 > 0'; \
         CREATE DOMAIN late_plain AS int; \
         CREATE DOMAIN late_checked AS int CHECK (late_check(VALUE))",
    );
    // A refusal makes the session read again once its read is a second old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let oid = |typ: &str| -> u32 {
        dp.target(&format!("SELECT '{typ}'::regtype::oid"))
            .parse()
            .unwrap()
    };
    let typed = |oid: u32, marker: &str| {
        [
            parse_typed("", &format!("SELECT $1 /* {marker} */"), &[oid]),
            bind_text("", "", &["5"]),
            execute("", 0),
            sync(),
        ]
        .concat()
    };
    let text = errors_of(&mut s, &typed(oid("late_plain"), "n1")).await;
    assert!(
        text.contains("42704")
            && text.contains(&format!("no type with OID {}", oid("late_plain")))
            && text.contains("retry it shortly"),
        "{text}"
    );
    assert!(!dp.pg.logs().contains("/* n1 */"), "the target saw it");
    // The refusal made the session read the catalog again: the plain
    // domain runs nothing and passes, the checked one needs a rule.
    assert_eq!(errors_of(&mut s, &typed(oid("late_plain"), "n2")).await, "");
    assert!(dp.pg.logs().contains("/* n2 */"));
    let text = errors_of(&mut s, &typed(oid("late_checked"), "n3")).await;
    assert!(
        text.contains("42501") && text.contains("parameter types") && text.contains("late_check"),
        "{text}"
    );
    assert!(!dp.pg.logs().contains("/* n3 */"), "the target saw it");
    // PostgreSQL's own types need no read.
    assert_eq!(errors_of(&mut s, &typed(23, "n4")).await, "");
}

#[tokio::test]
async fn what_a_session_renames_in_its_transaction_reaches_what_the_old_name_did() {
    let rules = format!(
        "{RULES}      - allow: {{ sql: {{ statements: [alter] }} }}\n        name: migrations\n"
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    with_loopback_server(
        &dp,
        "CREATE SCHEMA other AUTHORIZATION app; \
         SET ROLE app; \
         CREATE FOREIGN TABLE remote.items (id int, name text) SERVER loop OPTIONS (schema_name 'public', table_name 'items'); \
         CREATE FUNCTION is_positive(int) RETURNS bool LANGUAGE sql AS 'SELECT $1 > 0'; \
         CREATE DOMAIN positive AS int CHECK (is_positive(VALUE)); \
         CREATE TABLE guarded (id int); \
         CREATE POLICY only_positive ON guarded USING (is_positive(id))",
    );
    let fdw_connections = || {
        dp.target("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'postgres_fdw'")
    };
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for (rename, sql, says) in [
        (
            "ALTER SCHEMA remote RENAME TO local",
            "SELECT * /* r1 */ FROM local.items",
            "remote.items",
        ),
        (
            "ALTER SCHEMA remote RENAME TO a; ALTER SCHEMA a RENAME TO b",
            "SELECT name /* r2 */ FROM b.items WHERE id = 4",
            "remote.items",
        ),
        (
            "ALTER DOMAIN positive RENAME TO harmless",
            "SELECT '5'::harmless /* r3 */",
            "is_positive",
        ),
        (
            "ALTER TYPE positive RENAME TO harmless",
            "SELECT '{5}'::harmless[] /* r4 */",
            "is_positive",
        ),
        // Its array type is renamed with it.
        (
            "ALTER DOMAIN positive RENAME TO harmless",
            "SELECT '{5}'::_harmless /* r8 */",
            "is_positive",
        ),
    ] {
        assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
        assert_eq!(errors_of(&mut s, &query(rename)).await, "", "{rename}");
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains(says),
            "`{sql}`: {text}"
        );
        assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    }
    // In one text with the rename.
    let text = errors_of(
        &mut s,
        &query("ALTER SCHEMA remote RENAME TO quiet; SELECT * /* r5 */ FROM quiet.items"),
    )
    .await;
    assert!(
        text.contains("42501") && text.contains("remote.items"),
        "{text}"
    );
    // Renaming or moving the foreign table itself names it: that needs the
    // rule reading it would.
    for sql in [
        "ALTER TABLE remote.items RENAME TO innocent /* r6 */",
        "ALTER FOREIGN TABLE remote.items SET SCHEMA other /* r7 */",
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains("foreign_data"),
            "`{sql}`: {text}"
        );
    }
    // Validating a domain's constraint runs its CHECK over stored values;
    // a table's row-level-security policy counts while disabled too (the
    // session may enable it in its transaction).
    for sql in [
        "ALTER DOMAIN positive VALIDATE CONSTRAINT positive_check /* r9 */",
        "BEGIN; ALTER TABLE guarded ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; SELECT * /* r10 */ FROM guarded",
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains("is_positive"),
            "`{sql}`: {text}"
        );
        assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    }
    // The target confirms none of it ran: no statement, no connection to
    // the foreign server, and every rename rolled back.
    let log = dp.pg.logs();
    for marker in ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10"] {
        assert!(
            !log.contains(&format!("/* {marker} */")),
            "the target ran {marker}"
        );
    }
    assert_eq!(fdw_connections(), "0");
    assert_eq!(
        dp.target("SELECT count(*) FROM pg_class WHERE relname = 'items' AND relkind = 'f'"),
        "1"
    );
    // Renaming what reaches nothing of the kind changes nothing.
    assert_eq!(
        errors_of(
            &mut s,
            &query("BEGIN; ALTER TABLE public.items RENAME TO goods")
        )
        .await,
        ""
    );
    s.send(&query("SELECT count(*) FROM goods")).await;
    let reply = s.until(b'Z').await;
    assert_eq!(errors(&reply), "");
    assert_eq!(first_column(&reply), ["500"]);
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");

    // Once a rename commits, another session's read of the catalog is out
    // of date: it reads again before its next statement.
    let mut other = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(errors_of(&mut other, &query("SELECT 1")).await, "");
    assert_eq!(
        errors_of(&mut s, &query("ALTER SCHEMA remote RENAME TO moved")).await,
        ""
    );
    let text = errors_of(&mut other, &query("SELECT * /* r11 */ FROM moved.items")).await;
    assert!(
        text.contains("42501") && text.contains("moved.items"),
        "{text}"
    );
    assert!(!dp.pg.logs().contains("/* r11 */"), "the target ran r11");
    assert_eq!(fdw_connections(), "0");
}

/// A type's subscript handler is among the functions its operations run
/// (the agent finds it by the dependency PostgreSQL records, as the column
/// is PostgreSQL 14's). Created in C by a superuser; never run here.
#[tokio::test]
async fn a_type_whose_subscript_handler_is_the_database_s_own_needs_a_rule() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    dp.target(
        "CREATE TYPE counter; \
         CREATE FUNCTION counter_in(cstring) RETURNS counter LANGUAGE internal IMMUTABLE STRICT AS 'int4in'; \
         CREATE FUNCTION counter_out(counter) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'int4out'; \
         CREATE FUNCTION counter_subscript(internal) RETURNS internal LANGUAGE c \
           AS '$libdir/plpgsql', 'plpgsql_call_handler'; \
         CREATE TYPE counter (INPUT = counter_in, OUTPUT = counter_out, INTERNALLENGTH = 4, \
           PASSEDBYVALUE, ALIGNMENT = int4, SUBSCRIPT = counter_subscript)",
    );
    let (ok, _, err) = dp.psql("SELECT '7'::counter /* s1 */");
    assert!(
        !ok && err.contains("user_function") && err.contains("counter_subscript"),
        "{err}"
    );
    assert!(!dp.pg.logs().contains("/* s1 */"), "the target ran s1");
}

#[tokio::test]
async fn a_catalog_read_the_agent_gives_up_on_stops_on_the_target_too() {
    let dp = DataPath::start_with(RULES, vec!["--catalog-max-age".into(), "1s".into()]).await;
    let (ok, _, err) = dp.psql("SELECT 1");
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The next login's read of the types waits for this lock until the
    // agent gives up (10 s), then the last read stands in.
    let mut holder = sqlx::PgConnection::connect(&dp.pg.url("app"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE pg_catalog.pg_range IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut late = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    sqlx::raw_sql("SELECT 1").execute(&mut late).await.unwrap();
    // The abandoned query does not wait on in the target.
    let waiting = || {
        dp.target("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while waiting() != "0" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waiting(), "0", "a catalog query still waits on the target");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
}

/// A busy resource's sessions do not wait for the read that replaces an
/// aging catalog read: it starts in the background a quarter of
/// `--catalog-max-age` ahead (2 s of 8 here), and they go on meanwhile
/// with the read they have. (That no read is used past its maximum age is
/// the cache's unit test.)
#[tokio::test]
async fn sessions_do_not_wait_for_the_read_that_replaces_an_aging_catalog_read() {
    let dp = DataPath::start_with(RULES, vec!["--catalog-max-age".into(), "8s".into()]).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Listening for DDL notices (the target has no trigger for them), the
    // agent asked for a new read; the next statement waits for it, and
    // the read is at most as old as the statement's answer.
    dp.ddl_watch_shows("listening", true.into()).await;
    served(&mut s).await;
    let read = std::time::Instant::now();
    let mut holder = sqlx::PgConnection::connect(&dp.pg.url("app"))
        .await
        .unwrap();
    // While this is held, a read of the catalog waits for it.
    let lock = "BEGIN; LOCK TABLE pg_catalog.pg_range IN ACCESS EXCLUSIVE MODE";
    sqlx::raw_sql(lock).execute(&mut holder).await.unwrap();
    let reads_waiting = || {
        dp.target(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
        )
    };
    async fn served(s: &mut RawSession) {
        let answer = async {
            s.send(&query("SELECT count(*) FROM items")).await;
            s.until(b'Z').await
        };
        let got = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("the statement waited for the agent's catalog read");
        assert_eq!(first_column(&got), ["500"], "{}", errors(&got));
    }

    // Due to be read again (from 6 s on): the read starts, and waits on
    // the target, while the statement that started it is served.
    tokio::time::sleep(Duration::from_millis(7000).saturating_sub(read.elapsed())).await;
    served(&mut s).await;
    eventually(
        Duration::from_secs(5),
        "the agent's read waiting",
        || async { (reads_waiting() != "0").then_some(()) },
    )
    .await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    // Its connection closes when it is done: the session's is left.
    eventually(Duration::from_secs(5), "the agent's read done", || async {
        let connections =
            dp.target("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice'");
        (connections == "1").then_some(())
    })
    .await;

    // Past the first read's maximum age, the new read is in: nothing to
    // wait for, even where a read now would.
    sqlx::raw_sql(lock).execute(&mut holder).await.unwrap();
    tokio::time::sleep(Duration::from_millis(8500).saturating_sub(read.elapsed())).await;
    served(&mut s).await;
    assert_eq!(reads_waiting(), "0");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_is_refused_when_the_agent_cannot_read_the_target_s_functions() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    dp.target("REVOKE SELECT ON pg_catalog.pg_proc FROM PUBLIC");
    let (ok, _, err) = dp.psql("SELECT 1");
    assert!(
        !ok && err.contains("cannot read the functions defined in \"app\"")
            && err.contains("refused a catalog query: permission denied"),
        "{err}"
    );
}

#[tokio::test]
async fn names_longer_than_the_target_keeps_are_refused() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // PostgreSQL keeps the first 63 bytes of a name: `pA` and `pB` below
    // would be one portal there, two to an agent comparing whole names.
    let (a, b) = (
        format!("{}A", "p".repeat(63)),
        format!("{}B", "p".repeat(63)),
    );
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    let harmless = [
        parse("sel", "SELECT 'harmless'::text"),
        bind(&a, "sel"),
        sync(),
    ]
    .concat();
    let text = errors_of(&mut s, &harmless).await;
    assert!(
        text.contains("42622") && text.contains("63 bytes"),
        "{text}"
    );
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    let update = [
        parse(&b, "UPDATE items SET name = 'swapped' WHERE id = 70"),
        sync(),
    ]
    .concat();
    let text = errors_of(&mut s, &update).await;
    assert!(text.contains("42622"), "{text}");
    assert_eq!(dp.target("SELECT name FROM items WHERE id = 70"), "item 70");
}

#[tokio::test]
async fn a_portal_kept_across_rollback_to_savepoint_cannot_be_fetched_unjudged() {
    // Bound while deletes needed no approval; they do by the FETCH.
    let mut dp = DataPath::start_with(&deletes_allowed(), Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    let bound = [
        parse("d", "DELETE FROM items WHERE id = 62 RETURNING id"),
        bind("pd", "d"),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &bound).await, "");
    switch_rules(&mut dp, RULES).await;
    // The target keeps `pd` (bound before the savepoint); the agent cannot
    // tell which portals ROLLBACK TO dropped.
    assert_eq!(
        errors_of(&mut s, &query("SAVEPOINT s; ROLLBACK TO SAVEPOINT s")).await,
        ""
    );
    let text = errors_of(&mut s, &query("FETCH ALL FROM pd")).await;
    assert!(
        text.contains("42501") && text.contains("may still be on the target"),
        "{text}"
    );
    assert_eq!(errors_of(&mut s, &query("COMMIT")).await, "");
    assert!(row_exists(&dp, 62));
}

#[tokio::test]
async fn a_close_the_target_skipped_does_not_let_a_kept_portal_be_fetched_unjudged() {
    // As above, but the portal is closed by a CLOSE the target never runs
    // (the statement before it fails), and then by a protocol Close after
    // an error: the target keeps `pd` either way.
    let mut dp = DataPath::start_with(&deletes_allowed(), Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    let bound = [
        parse("d", "DELETE FROM items WHERE id = 64 RETURNING id"),
        bind("pd", "d"),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &bound).await, "");
    switch_rules(&mut dp, RULES).await;
    assert_eq!(errors_of(&mut s, &query("SAVEPOINT s")).await, "");
    let text = errors_of(&mut s, &query("SELECT 1/0; CLOSE pd")).await;
    assert!(text.contains("22012"), "{text}");
    assert_eq!(
        errors_of(&mut s, &query("ROLLBACK TO SAVEPOINT s")).await,
        ""
    );
    let text = errors_of(&mut s, &query("FETCH ALL FROM pd")).await;
    assert!(
        text.contains("42501") && text.contains("may still be on the target"),
        "{text}"
    );
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    assert!(row_exists(&dp, 64), "the DELETE ran through FETCH");
}

#[tokio::test]
async fn a_query_after_a_failed_flushed_batch_keeps_every_answer_with_its_statement() {
    // The target discards a Query that follows an error before Sync and
    // answers nothing for it; counted as forwarded, every later result
    // would be paired with the statement before it.
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let batch = [
        parse("", "SELECT 1/0"),
        bind("", ""),
        execute("", 0),
        flush(),
        query("SELECT 'lost'"),
        sync(),
    ]
    .concat();
    s.send(&batch).await;
    let got = s.until_n(b'Z', 2).await;
    assert!(errors(&got).contains("22012"), "{}", errors(&got));
    assert!(first_column(&got).is_empty(), "{:?}", first_column(&got));
    for word in ["one", "two", "three"] {
        s.send(&query(&format!("SELECT '{word}'"))).await;
        assert_eq!(first_column(&s.until(b'Z').await), [word]);
    }
    // Without an error, the Query is refused all the same (the agent
    // cannot know in time), and the flushed statement is rolled back
    // with the cycle, as a denial would be.
    let batch = [
        parse("", "SELECT 'flushed'"),
        bind("", ""),
        execute("", 0),
        flush(),
        query("SELECT 'after'"),
        sync(),
    ]
    .concat();
    s.send(&batch).await;
    let got = s.until_n(b'Z', 2).await;
    assert!(
        errors(&got).contains("0A000") && errors(&got).contains("Send Sync first"),
        "{}",
        errors(&got)
    );
    assert_eq!(first_column(&got), ["flushed"]);
    s.send(&query("SELECT 'four'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["four"]);
    // The refused Queries never reached the target.
    let logs = dp.pg.logs();
    assert!(
        logs.contains("SELECT 'flushed'"),
        "the log has no statements"
    );
    assert!(!logs.contains("SELECT 'lost'") && !logs.contains("SELECT 'after'"));
}

#[tokio::test]
async fn a_built_in_called_by_field_selection_is_judged_as_a_call() {
    // `(pid).pg_terminate_backend` is `pg_terminate_backend(pid)`: a read
    // policy must not let one client end other sessions that way.
    let dp = DataPath::start().await;
    let mut victim = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for sql in [
        "SELECT (pid).pg_terminate_backend FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database()",
        "SELECT a.pg_terminate_backend FROM (SELECT pid FROM pg_stat_activity) a(pid) WHERE pid <> pg_backend_pid()",
        "SELECT ('notes_id_seq'::regclass).nextval",
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(text.contains("42501"), "{sql}: {text}");
    }
    victim.send(&query("SELECT 'alive'")).await;
    assert_eq!(
        first_column(&victim.until(b'Z').await),
        ["alive"],
        "another session was ended"
    );
    assert!(!dp.pg.logs().contains(".pg_terminate_backend"));
    assert!(!dp.pg.logs().contains(").nextval"));
    assert_eq!(dp.target("SELECT is_called FROM notes_id_seq"), "f");
}

#[tokio::test]
async fn approval_is_not_asked_for_a_statement_that_also_does_what_no_rule_allows() {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // The approve rule covers `delete`; nothing allows `set_role`.
    let text = errors_of(
        &mut s,
        &query(
            "DELETE FROM items WHERE id = 63 AND set_config('role', 'postgres', false) IS NOT NULL",
        ),
    )
    .await;
    assert!(
        text.contains("42501") && text.contains("set_role") && !text.contains("needs approval"),
        "{text}"
    );
    assert!(row_exists(&dp, 63));
}

/// Reads and the database's functions allowed; `NOTES_DENIED` denies
/// `app_note` besides.
const NOTES_ALLOWED: &str = "
      - allow: { sql: { statements: [read, user_function, transaction] } }
";
const NOTES_DENIED: &str = "
      - deny: { sql: { functions: [app_note] } }
        name: no-notes
      - allow: { sql: { statements: [read, user_function, transaction] } }
";

/// A data path under `NOTES_ALLOWED` whose database has `app_note(int)`
/// (`volatility`), which advances the sequence `notes_seen` when it runs,
/// and then `more` SQL.
async fn with_app_note(volatility: &str, more: &str) -> DataPath {
    let dp = DataPath::start_with(NOTES_ALLOWED, Vec::new()).await;
    dp.target(&format!(
        "SET ROLE app; CREATE SEQUENCE notes_seen; \
         CREATE FUNCTION app_note(v int) RETURNS int LANGUAGE plpgsql {volatility} AS \
           $$ BEGIN PERFORM nextval('notes_seen'); RETURN v; END $$; {more}"
    ));
    dp
}

/// Panics if `app_note` ever ran.
fn app_note_never_ran(dp: &DataPath) {
    assert_eq!(
        dp.target("SELECT is_called FROM notes_seen"),
        "f",
        "app_note ran"
    );
}

#[tokio::test]
async fn a_statement_denied_since_it_was_prepared_is_not_bound() {
    // Binding plans, and planning runs the STABLE `app_note` (which
    // advances a sequence) on its constant argument: a statement prepared
    // while `app_note` was allowed, bound after a rule denied it, must not
    // reach the target, even without an Execute.
    let mut dp = with_app_note("STABLE", "").await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let prepared = [
        parse("n", "SELECT id FROM items WHERE id = app_note(1)"),
        sync(),
    ]
    .concat();
    assert_eq!(errors_of(&mut s, &prepared).await, "");
    switch_rules(&mut dp, NOTES_DENIED).await;
    // With Flush, and inside a transaction block with Sync.
    let text = errors_of(&mut s, &[bind("p", "n"), flush(), sync()].concat()).await;
    app_note_never_ran(&dp);
    assert!(
        text.contains("42501") && text.contains("no-notes"),
        "{text}"
    );
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    let text = errors_of(&mut s, &[bind("p", "n"), sync()].concat()).await;
    assert!(
        text.contains("42501") && text.contains("no-notes"),
        "{text}"
    );
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    app_note_never_ran(&dp);
}

#[tokio::test]
async fn a_parameter_type_denied_since_it_was_declared_is_not_bound() {
    // A parameter declared of a domain whose CHECK calls `app_note`:
    // binding a value runs the CHECK. Declared while `app_note` was
    // allowed, bound after a rule denied it: refused, and it never ran.
    let mut dp = with_app_note(
        "VOLATILE",
        "CREATE DOMAIN noted AS int CHECK (app_note(VALUE) > 0)",
    )
    .await;
    let noted: u32 = dp.target("SELECT 'noted'::regtype::oid").parse().unwrap();
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let prepared = [parse_typed("n", "SELECT $1", &[noted]), sync()].concat();
    assert_eq!(errors_of(&mut s, &prepared).await, "");
    switch_rules(&mut dp, NOTES_DENIED).await;
    let text = errors_of(
        &mut s,
        &[bind_text("p", "n", &["5"]), flush(), sync()].concat(),
    )
    .await;
    app_note_never_ran(&dp);
    assert!(
        text.contains("42501") && text.contains("no-notes"),
        "{text}"
    );
}

/// `rules`, with SQL `PREPARE` and `EXECUTE` allowed and `prep_hidden` (which prepares a
/// statement the agent never sees) allowed by name.
fn executes_allowed(rules: &str) -> String {
    format!(
        "{rules}      - allow: {{ sql: {{ statements: [prepare, execute, explain_analyze] }} }}\n        name: executes\n      - allow: {{ sql: {{ statements: [user_function], functions: [prep_hidden] }} }}\n"
    )
}

#[tokio::test]
async fn an_execute_is_judged_as_the_statement_it_runs() {
    // Allowing `execute` must not let a prepared statement run what the
    // policy no longer allows, what needed approval for other values, or
    // what code the agent cannot see prepared.
    let mut dp = DataPath::start_with(&executes_allowed(&deletes_allowed()), Vec::new()).await;
    dp.pg.psql(
        "app",
        "CREATE FUNCTION prep_hidden() RETURNS int LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'PREPARE hidden(int) AS DELETE FROM items WHERE id = $1'; RETURN 1; END $$",
    );
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Prepared while deletes ran without approval: by SQL, through the
    // protocol, and by a function.
    let prepared = "PREPARE del(int) AS DELETE FROM items WHERE id = $1; PREPARE sel(int) AS SELECT id FROM items WHERE id = $1";
    assert_eq!(errors_of(&mut s, &query(prepared)).await, "");
    let protocol = [parse("pdel", "DELETE FROM items WHERE id = $1"), sync()].concat();
    assert_eq!(errors_of(&mut s, &protocol).await, "");
    assert_eq!(errors_of(&mut s, &query("SELECT prep_hidden()")).await, "");
    switch_rules(&mut dp, &executes_allowed(RULES)).await;

    // A statement that may run runs, with its values.
    s.send(&query("EXECUTE sel(5)")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["5"]);
    // One that needs approval now is refused, however it was prepared, in
    // a transaction too.
    for (sql, id) in [
        ("EXECUTE del(70)", 70),
        ("EXECUTE pdel(71)", 71),
        ("EXECUTE hidden(72)", 72),
        ("execute \"del\" ('73')", 73),
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains("needs approval"),
            "{sql}: {text}"
        );
        assert!(row_exists(&dp, id), "{sql} deleted row {id}");
    }
    assert_eq!(errors_of(&mut s, &query("BEGIN")).await, "");
    s.send(&query("EXECUTE sel(6)")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["6"]);
    let text = errors_of(&mut s, &query("EXECUTE del(74)")).await;
    assert!(text.contains("needs approval"), "{text}");
    // In a failed transaction the statement cannot be read: refused as
    // the target would refuse it.
    let text = errors_of(&mut s, &query("EXECUTE sel(1)")).await;
    assert!(text.contains("25P02"), "{text}");
    assert_eq!(errors_of(&mut s, &query("ROLLBACK")).await, "");
    assert!(row_exists(&dp, 74));

    // What the agent cannot read before it runs is refused.
    let text = errors_of(&mut s, &query("EXECUTE nothing_by_this_name")).await;
    assert!(text.contains("26000"), "{text}");
    for sql in [
        "SELECT 1; EXECUTE del(75)",
        "EXECUTE del(75 + 0)",
        "EXPLAIN ANALYZE EXECUTE del(75)",
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(text.contains("0A000"), "{sql}: {text}");
    }
    let extended = [
        parse("", "EXECUTE del(75)"),
        bind("", ""),
        execute("", 0),
        sync(),
    ]
    .concat();
    let text = errors_of(&mut s, &extended).await;
    assert!(text.contains("0A000"), "{text}");
    assert!(row_exists(&dp, 75));
    // The session goes on, and only the allowed EXECUTEs reached the
    // target.
    s.send(&query("EXECUTE sel(7)")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["7"]);
    let logs = dp.pg.logs();
    assert!(logs.contains("EXECUTE sel(5)"), "the log has no statements");
    assert!(!logs.contains("EXECUTE del") && !logs.contains("EXECUTE pdel"));
    assert!(!logs.contains("EXECUTE hidden") && !logs.contains("execute \"del\""));
    // An EXECUTE that itself needs approval is refused: an approver would
    // see only its name.
    switch_rules(
        &mut dp,
        &executes_allowed(RULES).replace(
            "allow: { sql: { statements: [prepare, execute, explain_analyze] } }",
            "approve: { sql: { statements: [execute] }, approvers: [dba], mode: retry }",
        ),
    )
    .await;
    let text = errors_of(&mut s, &query("EXECUTE sel(8)")).await;
    assert!(
        text.contains("42501") && text.contains("EXECUTE needs approval"),
        "{text}"
    );
    assert!(!dp.pg.logs().contains("EXECUTE sel(8)"));
}

/// The agent's read of which statement an EXECUTE runs can itself fail:
/// cancelled by the client while it waits, or ended with the session by
/// the target. Either way the EXECUTE does not run, the cancel is answered
/// as PostgreSQL answers one (57014) and the session goes on, and the
/// target's FATAL reaches the client as the target sent it.
#[tokio::test]
async fn an_execute_whose_read_is_cancelled_or_terminated_does_not_run() {
    let dp = DataPath::start_with(&executes_allowed(&deletes_allowed()), Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let prepared = "PREPARE del(int) AS DELETE FROM items WHERE id = $1";
    assert_eq!(errors_of(&mut s, &query(prepared)).await, "");
    // A superuser's session holds the view the agent reads, so the read
    // waits for it.
    let mut holder = sqlx::PgConnection::connect(&dp.pg.url("app"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE pg_catalog.pg_prepared_statements IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let waiting = || async {
        let pid = dp.target(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%FROM pg_catalog.pg_prepared_statements WHERE name%'",
        );
        (!pid.is_empty()).then_some(pid)
    };

    s.send(&query("EXECUTE del(80)")).await;
    eventually(Duration::from_secs(10), "the agent's read waiting", waiting).await;
    s.cancel().await;
    let got = s.until(b'Z').await;
    let text = errors(&got);
    assert!(
        text.contains("57014") && text.contains("EXECUTE \"del\""),
        "{text}"
    );
    assert!(row_exists(&dp, 80));
    s.send(&query("SELECT 1")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["1"]);

    s.send(&query("EXECUTE del(81)")).await;
    let pid = eventually(Duration::from_secs(10), "the agent's read waiting", waiting).await;
    dp.target(&format!("SELECT pg_terminate_backend({pid})"));
    let got = s.until_or_closed(b'Z').await;
    let text = errors(&got);
    assert!(text.contains("57P01"), "{text}");
    assert!(!got.iter().any(|f| f.tag == b'Z'), "the session went on");
    assert!(s.until_or_closed(b'Z').await.is_empty(), "not closed");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert!(row_exists(&dp, 81));
    assert!(!dp.pg.logs().contains("EXECUTE del"));
    // The agent serves others.
    let (ok, out, err) = dp.psql("SELECT count(*) FROM items WHERE id IN (80, 81)");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
}

#[tokio::test]
async fn an_execute_is_refused_when_the_target_may_read_its_name_otherwise() {
    // A LATIN1 target keeps 63 characters of a long non-ASCII name where
    // the agent's parser (UTF-8) keeps 31: it would read one statement and
    // the target run another.
    let mut dp = DataPath::start_with(&executes_allowed(&deletes_allowed()), Vec::new()).await;
    dp.pg.psql("postgres", "DROP DATABASE app WITH (FORCE)");
    dp.pg.psql(
        "postgres",
        "CREATE DATABASE app OWNER app ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    // And a setting under which `\'` in a string is an error.
    dp.pg
        .psql("postgres", "ALTER DATABASE app SET backslash_quote = off");
    dp.pg.psql(
        "app",
        "SET ROLE app; CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
    );
    let long = "é".repeat(63);
    let short = "é".repeat(31);
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for prepare in [
        format!("PREPARE \"{long}\"(int) AS DELETE FROM items WHERE id = $1"),
        format!("PREPARE \"{short}\"(int) AS SELECT $1"),
        "PREPARE \"it's\" AS SELECT 'quoted'".to_owned(),
    ] {
        assert_eq!(errors_of(&mut s, &query(&prepare)).await, "");
    }
    switch_rules(&mut dp, &executes_allowed(RULES)).await;
    for sql in [
        format!("EXECUTE \"{long}\"(80)"),
        format!("EXECUTE \"{short}\"(80)"),
    ] {
        let text = errors_of(&mut s, &query(&sql)).await;
        assert!(text.contains("0A000") && text.contains("ASCII"), "{text}");
    }
    assert!(row_exists(&dp, 80));
    // An ASCII name is read as the target reads it, quotes and all.
    s.send(&query("EXECUTE \"it's\"")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["quoted"]);
}

#[tokio::test]
async fn an_extension_s_function_called_by_field_selection_is_judged_as_a_call() {
    // pg_visibility's `pg_truncate_visibility_map(regclass)` rewrites a
    // table's visibility map; `(x).pg_truncate_visibility_map` calls it.
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    dp.pg.psql("app", "CREATE EXTENSION pg_visibility");
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    for sql in [
        "SELECT ('items'::regclass).pg_truncate_visibility_map",
        "SELECT r.pg_truncate_visibility_map FROM (SELECT 'items'::regclass) r",
        "SELECT pg_truncate_visibility_map('items')",
    ] {
        let text = errors_of(&mut s, &query(sql)).await;
        assert!(
            text.contains("42501") && text.contains("user_function"),
            "{sql}: {text}"
        );
    }
    assert!(!dp.pg.logs().contains("pg_truncate_visibility_map"));
    // A column is still read as one.
    s.send(&query("SELECT i.name FROM items i WHERE id = 1"))
        .await;
    assert_eq!(first_column(&s.until(b'Z').await), ["item 1"]);
}

#[tokio::test]
async fn an_execute_sent_where_copy_data_belongs_ends_the_session_saying_so() {
    let rules = format!(
        "{}      - allow: {{ sql: {{ statements: [copy] }} }}\n",
        deletes_allowed()
    );
    let dp = DataPath::start_with(&executes_allowed(&rules), Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    assert_eq!(
        errors_of(
            &mut s,
            &query("PREPARE del(int) AS DELETE FROM items WHERE id = $1")
        )
        .await,
        ""
    );
    let copy = [
        parse("", "COPY notes (body) FROM STDIN"),
        bind("", ""),
        execute("", 0),
        sync(),
    ]
    .concat();
    s.send(&copy).await;
    s.until(b'G').await;
    // The agent cannot ask the target what `del` is meanwhile: the client
    // broke the protocol, and its session ends saying so.
    s.send(&query("EXECUTE del(90)")).await;
    let text = errors(&s.until_or_closed(b'Z').await);
    assert!(
        text.contains("08P01") && text.contains("where the COPY's data belongs"),
        "{text}"
    );
    // Nothing ran, and other sessions go on.
    let mut other = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    other.send(&query("SELECT 'after'")).await;
    assert_eq!(first_column(&other.until(b'Z').await), ["after"]);
    assert!(row_exists(&dp, 90));
    assert!(!dp.pg.logs().contains("EXECUTE del(90)"));
}
