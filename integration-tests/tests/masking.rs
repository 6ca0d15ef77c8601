//! Masking of results, end to end: a table seeded with unique canary
//! values, read through the agent in every shape that could carry them
//! (aliases, joins, CTEs, subqueries, RETURNING, a view, casts,
//! concatenation, JSON, aggregates, whole-row references, cursors, COPY,
//! binary results through a Rust driver, notices, error messages). No
//! canary may appear in anything the client received, in any form the test
//! can check, nor in the audit store; non-sensitive columns come back
//! unchanged.

use std::time::Duration;

use sluice_integration_tests::{datapath::DataPath, eventually};
use sqlx::{Connection as _, Row as _, ValueRef as _};

const NAME: &str = "Zebulon Quixotica";
const EMAIL: &str = "zq.canary@example.org";
const CARD: &str = "4539 1488 0343 6467";
const CARD_NUMBER: i64 = 4_539_148_803_436_467;
const SSN: &str = "219-09-9999";
const IBAN: &str = "GB82WEST12345698765432";
const PHONE: &str = "+14155552671";
const PLAN: &str = "gold-plan-visible";

const RULES: &str = r#"
      - mask: { columns: ["public.customers.name", "public.customers.ssn"], detectors: [email, credit_card, ssn, iban, phone], as: redact, strict_tables: ["public.customers"], strict_allow: ["SELECT max(id) FROM customers WHERE plan = 'x'"] }
        name: pii
      - allow: { sql: { statements: [read, insert, update, transaction, session, copy] } }
        name: work
      - allow: { sql: { statements: [user_function], functions: [shout] } }
        name: app-functions
"#;

/// Every form of every canary the test looks for.
fn canaries() -> Vec<String> {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let mut all = vec![
        NAME.to_lowercase(),
        "quixotica".into(),
        EMAIL.to_lowercase(),
        // The address's local part: found in any reformatting of it.
        "zq.canary".into(),
        IBAN.to_lowercase(),
        SSN.into(),
    ];
    for s in [CARD, SSN, PHONE, IBAN] {
        all.push(digits(s));
    }
    all.push(CARD_NUMBER.to_string());
    all
}

/// Panics if any canary is in `text` (raw, lower-cased, or digits only).
fn assert_clean(what: &str, text: &str) {
    let lower = text.to_lowercase();
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    for c in canaries() {
        let numeric = c.chars().all(|ch| ch.is_ascii_digit());
        let found = lower.contains(&c) || (numeric && digits.contains(&c));
        assert!(!found, "{what}: canary `{c}` leaked:\n{text}");
    }
}

async fn seeded() -> DataPath {
    seeded_with(RULES).await
}

async fn seeded_with(rules: &str) -> DataPath {
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.pg.psql(
        "app",
        &format!(
            "SET ROLE app;
             CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text, card_number bigint, ssn text, iban text, phone text, plan text);
             INSERT INTO customers VALUES (1, '{NAME}', '{EMAIL}', '{CARD}', {CARD_NUMBER}, '{SSN}', '{IBAN}', '{PHONE}', '{PLAN}');
             CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total int);
             INSERT INTO orders VALUES (10, 1, 4242);
             CREATE VIEW customer_view AS SELECT id, name, email, plan FROM customers;
             CREATE VIEW renamed_view AS SELECT id, name AS who, ssn AS tax_id FROM customers;
             CREATE FUNCTION shout() RETURNS int LANGUAGE plpgsql AS $$
               BEGIN RAISE NOTICE 'contact %, card %, ssn %', (SELECT email FROM customers LIMIT 1), (SELECT card FROM customers LIMIT 1), (SELECT ssn FROM customers LIMIT 1); RETURN 1; END $$;"
        ),
    );
    dp
}

#[tokio::test]
async fn no_canary_reaches_the_client_or_the_audit_store_in_any_query_shape() {
    let dp = seeded().await;
    let shapes = [
        "SELECT * FROM customers",
        "SELECT name AS n, email AS e, ssn AS s, plan FROM customers c",
        "SELECT c.name, c.ssn, o.total, c.plan FROM customers c JOIN orders o ON o.customer_id = c.id",
        "WITH x AS (SELECT * FROM customers) SELECT * FROM x",
        "SELECT * FROM (SELECT name, ssn, plan FROM customers) s",
        "UPDATE customers SET plan = plan RETURNING *",
        "SELECT * FROM customer_view",
        "SELECT * FROM renamed_view",
        "SELECT name::int FROM customers",
        "SELECT name::text, ssn::varchar, card_number::text, plan FROM customers",
        "SELECT name || ' / ' || ssn || ' / ' || email, plan FROM customers",
        "SELECT to_json(c) FROM customers c",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT json_agg(c) FROM customers c",
        "SELECT string_agg(name, ','), string_agg(ssn, ',') FROM customers",
        "SELECT c FROM customers c",
        "SELECT upper(name), lower(email) FROM customers",
        "SELECT shout()",
        "SELECT ssn::int FROM customers",
        "SELECT email::int FROM customers",
        "SELECT card_number FROM customers",
        "COPY customers TO STDOUT",
        "COPY customers TO STDOUT WITH (FORMAT csv)",
        "COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT binary)",
    ];
    for sql in shapes {
        let (_, out, err) = dp.psql(sql);
        assert_clean(sql, &format!("{out}\n{err}"));
    }
    // COPY in text, CSV and binary is masked field by field, the rest
    // intact.
    for sql in [
        "COPY customers TO STDOUT",
        "COPY customers (id, name, ssn, plan) TO STDOUT WITH (FORMAT csv, HEADER)",
    ] {
        let (ok, out, err) = dp.psql(sql);
        assert!(ok, "{sql}: {err}");
        assert!(out.contains(PLAN), "{sql}: the non-sensitive column: {out}");
        assert!(out.contains("[REDACTED]"), "{sql}: {out}");
    }
    // A query's fields have no origin; it reads a sensitive table (strict
    // mode), so every field is masked.
    let (ok, out, err) =
        dp.psql("COPY (SELECT id, plan FROM customers) TO STDOUT WITH (FORMAT csv)");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#""[REDACTED]","[REDACTED]""#);
    // Binary COPY too: masked values of non-text columns become NULL.
    let (ok, out, err) = dp.psql("COPY customers TO STDOUT WITH (FORMAT binary)");
    assert!(ok, "{err}");
    assert!(out.contains(PLAN) && out.contains("[REDACTED]"), "{out:?}");

    // A cursor, fetched in two steps.
    let (ok, out, err) = dp.psql(
        "BEGIN; DECLARE cur CURSOR FOR SELECT * FROM customers; FETCH 1 FROM cur; FETCH ALL FROM cur; COMMIT",
    );
    assert!(ok, "{err}");
    assert_clean("cursor", &format!("{out}\n{err}"));

    // What is not sensitive comes back unchanged.
    let (ok, out, err) = dp.psql("SELECT id, plan FROM customers");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("1|{PLAN}"));
    // Outside the sensitive table, expressions are not strict.
    let (ok, out, _) = dp.psql("SELECT total, total * 2 FROM orders");
    assert!(ok && out.trim() == "4242|8484", "{out}");
    // A statement the rule explicitly allows is left alone by strict mode
    // (any constants); another shape is not.
    let (_, out, _) = dp.psql(&format!(
        "SELECT max(id) FROM customers WHERE plan = '{PLAN}'"
    ));
    assert_eq!(out.trim(), "1");
    for other in ["min(id)", "max(name)"] {
        let (_, out, _) = dp.psql(&format!(
            "SELECT {other} FROM customers WHERE plan = '{PLAN}'"
        ));
        assert!(
            out.trim().is_empty() || out.trim() == "[REDACTED]",
            "another expression is another statement: {other}: {out}"
        );
    }
    // Row counts stay readable in strict mode (the rows a plain SELECT
    // returns count as much); what is computed around them is not.
    let (ok, out, err) =
        dp.psql("SELECT count(*), count(DISTINCT ssn), max(name), count(*) + 0 FROM customers");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|1|[REDACTED]|");
    // In strict mode an expression over the sensitive table is masked; a
    // number (or a boolean) is masked to NULL, which a driver decoding it
    // can read.
    let (ok, out, err) =
        dp.psql("SELECT card_number % 7, card_number % 7 IS NULL, 'x' FROM customers");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "||[REDACTED]");
    // Masked values read as masked, not as empty.
    let (_, out, _) = dp.psql("SELECT name, email FROM customers");
    assert!(out.contains("[REDACTED]"), "{out}");

    // The target still has the real values: masking is on the way out only.
    assert_eq!(dp.target("SELECT name FROM customers"), NAME);

    let mut cp = dp.cp;
    let api = cp.api();
    let audit = eventually(Duration::from_secs(20), "the sessions' records", || async {
        let v = api.get_ok("/api/v1/audit?subject=alice&limit=1000").await;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let ends = events.iter().filter(|e| e["kind"] == "session.end").count();
        (ends >= 24).then_some(events)
    })
    .await;
    let text = serde_json::to_string(&audit).unwrap();
    assert!(text.contains(PLAN), "results are recorded");
    assert_clean("the audit store", &text);
}

#[tokio::test]
async fn binary_results_through_a_rust_driver_are_masked_too() {
    let dp = seeded().await;
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    // sqlx asks for binary results and never sends Describe for a portal:
    // the agent describes it itself to know the columns' origins.
    for _ in 0..2 {
        let row = sqlx::query(
            "SELECT id, name, email, card_number, ssn, plan FROM customers WHERE id = $1",
        )
        .bind(1_i32)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let id: i32 = row.get("id");
        let name: Option<String> = row.get("name");
        let email: Option<String> = row.get("email");
        let card: Option<i64> = row.get("card_number");
        let ssn: Option<String> = row.get("ssn");
        let plan: String = row.get("plan");
        assert_eq!(id, 1);
        assert_eq!(plan, PLAN);
        let seen = format!("{name:?} {email:?} {card:?} {ssn:?}");
        assert_clean("sqlx binary row", &seen);
        assert_eq!(card, None, "a card number in a binary bigint becomes NULL");
        assert_eq!(name.as_deref(), Some("[REDACTED]"));
    }
    // In text format (the simple protocol) a masked number is NULL too:
    // masked text in a bigint column would fail the driver's decoding.
    let row = sqlx::raw_sql("SELECT card_number, card_number % 7, name FROM customers")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let card: Option<i64> = row.try_get(0).unwrap();
    let remainder: Option<i64> = row.try_get(1).unwrap();
    let name: Option<String> = row.try_get(2).unwrap();
    assert_eq!((card, remainder), (None, None));
    assert_eq!(name.as_deref(), Some("[REDACTED]"));
    // A row count through the extended protocol, in binary: read.
    let row = sqlx::query("SELECT count(*), count(ssn) FILTER (WHERE id > $1) FROM customers")
        .bind(0_i32)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let counts: (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    assert_eq!(counts, (Some(1), Some(1)));
}

#[tokio::test]
async fn protocol_side_channels_carry_no_canary() {
    use sluice_integration_tests::rawpg::{RawSession, bind, execute, frame, parse, query, sync};
    let dp = seeded().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut received = Vec::new();
    for sql in [
        // A setting set from a value: reported back in ParameterStatus,
        // also in a form no detector knows.
        "SELECT set_config('application_name', email, false) FROM customers",
        "SELECT set_config('application_name', replace(email, '@', ' at '), false) FROM customers",
        // Errors that quote a value the statement read.
        "SELECT current_setting(replace(email, '@', '#')) FROM customers",
        "SELECT replace(email, '@', '#')::regclass FROM customers",
        "SELECT card::regtype FROM customers",
        "SELECT 1 FROM customers WHERE current_setting(name) IS NULL",
        // A write reads its target: its errors quote the target's values.
        "UPDATE customers SET plan = name::int::text",
        "UPDATE customers SET plan = plan WHERE name::regclass IS NULL",
        // A notice quoting values, from a function.
        "SELECT shout() FROM customers",
        // A value used as a column name: 42703 raised at run time.
        "SELECT has_column_privilege('customers', string_agg(name, ';'), 'select') FROM customers",
        // A value stashed in a setting, to be read back by a statement
        // that reads no table.
        "SELECT set_config('my.stash', (SELECT string_agg(name || translate(email, '@', '#'), ';') FROM customers), false)",
        "SHOW my.stash",
        "SELECT current_setting('my.stash')::int",
    ] {
        s.send(&query(sql)).await;
        received.extend(s.until(b'Z').await);
    }
    // A batch that fails on its own (Describe of no portal), pipelined with
    // one that reads the table: the second's rows must still be masked.
    let mut batch = frame(b'D', b"Pnope\0");
    batch.extend(sync());
    batch.extend(parse("", "SELECT name, email, ssn FROM customers"));
    batch.extend(bind("", ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    received.extend(s.until_n(b'Z', 2).await);
    let bytes: Vec<u8> = received.iter().flat_map(|f| f.raw.to_vec()).collect();
    assert_clean("raw protocol bytes", &String::from_utf8_lossy(&bytes));
    assert!(
        sluice_integration_tests::rawpg::errors(&received).contains("message is withheld"),
        "the errors were not withheld"
    );
    // Messages of statements that read no masked data, or that never
    // carry data, still say what went wrong.
    for (sql, says) in [
        (
            "SELECT current_setting('no.such_setting')",
            "no.such_setting",
        ),
        (
            "SELECT id FROM orders WHERE total = 'x'",
            "invalid input syntax",
        ),
        ("SELECT no_such_column FROM customers", "no_such_column"),
        (
            "SELECT lower(name, 2) FROM customers",
            "lower(text, integer) does not exist",
        ),
    ] {
        s.send(&query(sql)).await;
        let text = sluice_integration_tests::rawpg::errors(&s.until(b'Z').await);
        assert!(text.contains(says), "`{sql}`: {text}");
    }
}

#[tokio::test]
async fn a_prepared_statement_run_by_execute_is_masked() {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, query};
    // Strict mode is for statements that read the sensitive table: an
    // EXECUTE names none, the statement it runs does (the agent reads it
    // from the target).
    let rules = format!(
        "{RULES}      - allow: {{ sql: {{ statements: [prepare, execute] }} }}\n        name: prepared\n"
    );
    let dp = seeded_with(&rules).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query(
        "PREPARE shouted AS SELECT upper(name) FROM customers; PREPARE plans AS SELECT lower(plan) FROM orders o JOIN customers c ON c.id = o.customer_id",
    ))
    .await;
    assert_eq!(errors(&s.until(b'Z').await), "");
    let mut received = Vec::new();
    for sql in ["EXECUTE shouted", "EXECUTE plans"] {
        s.send(&query(sql)).await;
        let got = s.until(b'Z').await;
        assert_eq!(errors(&got), "", "{sql}");
        assert_eq!(first_column(&got), ["[REDACTED]"], "{sql}");
        received.extend(got);
    }
    let bytes: Vec<u8> = received.iter().flat_map(|f| f.raw.to_vec()).collect();
    assert_clean("EXECUTE results", &String::from_utf8_lossy(&bytes));
    // What reads no sensitive table is not strict, as if sent itself.
    s.send(&query("PREPARE totals AS SELECT total * 2 FROM orders"))
        .await;
    assert_eq!(errors(&s.until(b'Z').await), "");
    s.send(&query("EXECUTE totals")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["8484"]);
}

/// ANALYZE keeps samples of every column's values (most common values,
/// histogram bounds) in the planner's statistics, which never name the
/// table they came from: where masks apply, reading them is refused.
#[tokio::test]
async fn the_planners_statistics_are_refused_where_masks_apply() {
    use sluice_integration_tests::rawpg::{RawSession, errors, query};
    let dp = seeded().await;
    dp.pg.psql(
        "app",
        "INSERT INTO customers (id, name, email) VALUES (2, 'Other Person', 'other@example.org'); ANALYZE customers;",
    );
    // The DBA's view over them, granted to the resource's role.
    dp.target(
        "CREATE VIEW column_stats AS SELECT attname, histogram_bounds::text AS bounds FROM pg_stats; \
         GRANT SELECT ON column_stats TO app",
    );
    // The values are there to be read.
    let truth = dp.target(
        "SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'email'",
    );
    assert!(
        truth.to_lowercase().contains(&EMAIL.to_lowercase()),
        "{truth}"
    );

    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut received = Vec::new();
    for sql in [
        "SELECT attname, reverse(histogram_bounds::text) FROM pg_stats WHERE tablename = 'customers'",
        "SELECT reverse(most_common_vals::text) FROM pg_catalog.pg_stats",
        "SELECT * FROM pg_stats_ext",
        "SELECT reverse(bounds) FROM column_stats WHERE attname = 'email'",
    ] {
        s.send(&query(sql)).await;
        let got = s.until(b'Z').await;
        let said = errors(&got);
        assert!(
            said.contains("42501") && said.contains("samples of column values"),
            "`{sql}`: {said}"
        );
        received.extend(got);
    }
    let bytes: Vec<u8> = received.iter().flat_map(|f| f.raw.to_vec()).collect();
    let text = String::from_utf8_lossy(&bytes);
    assert_clean("raw protocol bytes", &text);
    assert!(
        !text.contains(&EMAIL.chars().rev().collect::<String>()),
        "{text}"
    );
    // Extended statistics' definitions hold no values: psql's `\d` reads them.
    dp.target("CREATE STATISTICS customers_deps (dependencies) ON id, name FROM customers");
    s.send(&query(
        "SELECT stxname, pg_catalog.pg_get_statisticsobjdef_columns(oid) FROM pg_catalog.pg_statistic_ext WHERE stxrelid = 'customers'::regclass",
    ))
    .await;
    let got = s.until(b'Z').await;
    assert_eq!(errors(&got), "");
}

#[tokio::test]
async fn the_hash_strategy_keeps_equal_values_equal_across_sessions() {
    let rules = r#"
      - mask: { columns: ["public.items.name"], as: hash }
      - allow: { sql: { statements: [read] } }
"#;
    let dp = DataPath::start_with(rules, Vec::new()).await;
    let run = |sql: &str| {
        let (ok, out, err) = dp.psql(sql);
        assert!(ok, "{err}");
        out.trim().to_owned()
    };
    let first = run("SELECT name FROM items WHERE id = 1");
    let again = run("SELECT name FROM items WHERE id = 1");
    let other = run("SELECT name FROM items WHERE id = 2");
    assert!(
        first.starts_with("h:") && !first.contains("item"),
        "{first}"
    );
    assert_eq!(first, again, "equal values hash alike in every session");
    assert_ne!(first, other);
}

#[tokio::test]
async fn a_row_that_cannot_be_masked_is_not_sent_and_the_client_is_told() {
    let dp = seeded().await;
    dp.pg.psql(
        "app",
        &format!("SET ROLE app; INSERT INTO customers (id, name, ssn, plan) VALUES (2, 'Café {NAME}', '{SSN}', 'crème')"),
    );
    // COPY in another encoding: rows that are not UTF-8 cannot be read, so
    // not masked: they are withheld and the session ends saying why.
    let (ok, out, err) = dp.psql("COPY customers TO STDOUT WITH (ENCODING 'LATIN1')");
    assert!(!ok, "{out}");
    assert!(err.contains("could not be masked"), "{err}");
    assert_clean("unmaskable COPY", &format!("{out}\n{err}"));
}

#[tokio::test]
async fn a_function_call_is_refused_where_masks_apply_and_nothing_runs() {
    use sluice_integration_tests::rawpg::{RawSession, errors, frame};
    let rules = RULES.replace("session, copy]", "session, copy, function_call]");
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    dp.pg.psql("app", "SET ROLE app; CREATE SEQUENCE fc_seq");
    let nextval = dp.target("SELECT 'nextval(regclass)'::regprocedure::oid");
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // FunctionCall of nextval('fc_seq'): allowed by the policy, but its
    // result has no column to mask by, so under mask rules it is refused.
    let mut body = Vec::new();
    body.extend_from_slice(&nextval.parse::<i32>().unwrap().to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&6i32.to_be_bytes());
    body.extend_from_slice(b"fc_seq");
    body.extend_from_slice(&0i16.to_be_bytes());
    s.send(&frame(b'F', &body)).await;
    let got = s.until(b'Z').await;
    let text = errors(&got);
    assert!(
        text.contains("42501") && text.contains("cannot be masked"),
        "{text}"
    );
    // The target never ran it: the sequence was never advanced.
    assert_eq!(dp.target("SELECT is_called FROM fc_seq"), "f");
}

#[tokio::test]
async fn notification_payloads_are_masked() {
    use sluice_integration_tests::rawpg::{RawSession, query};
    let rules = RULES.replace("session, copy]", "session, copy, listen]");
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("LISTEN contacts")).await;
    s.until(b'Z').await;
    dp.target(&format!(
        "SELECT pg_notify('contacts', 'new contact {EMAIL}, card {CARD}')"
    ));
    let got = s.until(b'A').await;
    let payload = String::from_utf8_lossy(&got.last().unwrap().raw).into_owned();
    assert!(payload.contains("new contact"), "{payload}");
    assert_clean("notification payload", &payload);
}

/// One column masked by origin, with no detector that would catch its
/// value and no strict table: only the catalog's view definitions tell
/// that a view's column is the masked one.
const VIEW_RULES: &str = r#"
      - mask: { columns: ["public.accounts.secret"], as: redact }
        name: secrets
      - allow: { sql: { statements: [read, ddl, session, transaction] } }
        name: work
"#;

const SECRET: &str = "plain-canary-7731";

/// Table `accounts` with a masked `secret`, and a view over its other
/// columns.
fn create_accounts(dp: &DataPath) {
    dp.target(&format!(
        "SET ROLE app;
         CREATE TABLE accounts (id int PRIMARY KEY, label text, secret text);
         INSERT INTO accounts VALUES (1, 'visible-label', '{SECRET}');
         CREATE VIEW accounts_view AS SELECT id, label FROM accounts;"
    ));
}

async fn view_label(conn: &mut sqlx::PgConnection) -> String {
    sqlx::raw_sql("SELECT label FROM accounts_view")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

const REDEFINE: &str =
    "CREATE OR REPLACE VIEW accounts_view AS SELECT id, secret AS label FROM accounts";

#[tokio::test]
async fn a_view_redefined_over_a_masked_column_through_another_session_is_masked() {
    let dp = DataPath::start_with(VIEW_RULES, Vec::new()).await;
    create_accounts(&dp);
    let mut reader = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    assert_eq!(view_label(&mut reader).await, "visible-label");
    // Another session redefines the view over the masked column.
    let mut writer = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    sqlx::raw_sql(REDEFINE).execute(&mut writer).await.unwrap();
    assert_eq!(dp.target("SELECT label FROM accounts_view"), SECRET);
    // The reader's session read the catalog before: it must not resolve
    // the view's column with the old definition.
    let label = view_label(&mut reader).await;
    assert_eq!(
        label, "[REDACTED]",
        "the redefined view's column came back unmasked"
    );
}

#[tokio::test]
async fn a_type_created_by_another_session_is_read_in_binary_under_detectors() {
    const RULES: &str = r#"
      - mask: { detectors: [email], as: redact }
      - allow: { sql: { statements: [read, ddl, insert, session, transaction] } }
        name: work
"#;
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    // sqlx asks for binary results; this session reads the target's types
    // before the new one exists.
    let mut reader = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let one: i32 = sqlx::query("SELECT 1")
        .fetch_one(&mut reader)
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    let mut writer = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TYPE state AS ENUM ('open', 'closed'); \
         CREATE TABLE tickets (id int, state state, contact text); \
         INSERT INTO tickets VALUES (1, 'open', 'zq@example.org')",
    )
    .execute(&mut writer)
    .await
    .unwrap();
    let row = sqlx::query("SELECT state, ARRAY[state], contact FROM tickets WHERE id = $1")
        .bind(1_i32)
        .fetch_one(&mut reader)
        .await
        .unwrap();
    // An enum's binary form is its label: read with the session's fresh
    // read of the target's types, not nulled as a type it cannot read.
    let raw = |i: usize| {
        let value = row.try_get_raw(i).unwrap();
        (!value.is_null()).then(|| value.as_bytes().unwrap().to_vec())
    };
    assert_eq!(raw(0).as_deref(), Some(&b"open"[..]));
    let array = raw(1).expect("the array of the enum read, not nulled");
    assert!(array.ends_with(b"open"), "{array:?}");
    let contact: Option<String> = row.get(2);
    assert_eq!(contact.as_deref(), Some("[REDACTED]"));
}

#[tokio::test]
async fn copy_under_detectors_alone_reads_bytea_text_and_refuses_binary_it_cannot_read() {
    const RULES: &str = r#"
      - mask: { detectors: [email], as: redact }
      - allow: { sql: { statements: [read, copy, session, transaction] } }
        name: work
"#;
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    dp.target(
        "SET ROLE app; CREATE TABLE contacts (id int, email text); \
         INSERT INTO contacts VALUES (1, 'zq@example.org'), (2, 'none')",
    );
    // A query's COPY has no column types: a field spelled as bytea (hex)
    // is read as the bytes it spells, so an email carried as bytes is
    // caught; other bytes and plain text pass or are redacted as ever.
    let (ok, out, err) = dp.psql(
        "COPY (SELECT id, convert_to(email, 'UTF8'), email FROM contacts ORDER BY id) TO STDOUT",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "1\t\\N\t[REDACTED]\n2\t\\\\x6e6f6e65\tnone\n");
    // Binary COPY without the column types (a query's; a table's with no
    // column rule to have the catalog read) would be all NULLs: refused
    // before it runs, with what to do instead.
    for sql in [
        "COPY (SELECT id FROM contacts) TO STDOUT WITH (FORMAT binary)",
        "COPY contacts TO STDOUT WITH (FORMAT binary)",
    ] {
        let (ok, _, err) = dp.psql(sql);
        assert!(!ok, "{sql}");
        assert!(
            err.contains("42501")
                || err.contains("binary COPY output is read by this session's value detectors"),
            "{sql}: {err}"
        );
        assert!(err.contains("use FORMAT text or csv"), "{sql}: {err}");
    }
    assert!(
        !dp.pg.logs().contains("FORMAT binary"),
        "a refused binary COPY reached the target"
    );
    // Text and CSV of the table still flow (a masked row's fields quoted).
    let (ok, out, err) = dp.psql("COPY contacts TO STDOUT WITH (FORMAT csv)");
    assert!(ok, "{err}");
    assert_eq!(out, "\"1\",\"[REDACTED]\"\n2,none\n");
}

/// The accounts with Sluice's DDL event trigger on the target, and a
/// session that has read the view after the agent started listening (it
/// asks for a new read when it starts): its read is fresh.
async fn watched_accounts() -> (DataPath, sqlx::PgConnection) {
    watched_accounts_with(Vec::new()).await
}

/// [`watched_accounts`] with more arguments for the agent.
async fn watched_accounts_with(agent_args: Vec<String>) -> (DataPath, sqlx::PgConnection) {
    let dp = DataPath::start_with(VIEW_RULES, agent_args).await;
    dp.target(include_str!("../../docs/ddl-notices.sql"));
    create_accounts(&dp);
    let mut reader = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    dp.agent_logged("listening for the target's DDL notices")
        .await;
    assert!(
        !dp.agent.logs().contains("no Sluice DDL event trigger"),
        "{}",
        dp.agent.logs()
    );
    assert_eq!(view_label(&mut reader).await, "visible-label");
    (dp, reader)
}

#[tokio::test]
async fn ddl_run_on_the_target_directly_is_heard_with_the_event_trigger() {
    let (dp, mut reader) = watched_accounts().await;
    // A DBA redefines the view on the target, not through the agent.
    dp.target(&format!("SET ROLE app; {REDEFINE}"));
    assert_eq!(dp.target("SELECT label FROM accounts_view"), SECRET);
    dp.agent_logged("the target's catalog changed (DDL notice")
        .await;
    let label = view_label(&mut reader).await;
    assert_eq!(
        label, "[REDACTED]",
        "the redefined view's column came back unmasked"
    );
}

#[tokio::test]
async fn a_catalog_ddl_made_out_of_date_that_cannot_be_read_again_ends_the_session() {
    let (dp, mut reader) = watched_accounts().await;
    // The agent can open no new connection to read the catalog (its
    // open ones stay), and a DBA redefines the view over the masked column.
    dp.target("ALTER ROLE app CONNECTION LIMIT 0");
    dp.target(&format!("SET ROLE app; {REDEFINE}"));
    dp.agent_logged("the target's catalog changed (DDL notice")
        .await;
    // The read from before the DDL must not stand in for masking.
    let err = sqlx::raw_sql("SELECT label FROM accounts_view")
        .fetch_one(&mut reader)
        .await
        .expect_err("read by the catalog from before the DDL");
    let text = err.to_string();
    assert!(!text.contains(SECRET), "{text}");
    assert!(
        text.contains("could not read it again")
            || text.contains("cannot read the functions defined in the target database"),
        "{text}"
    );
    // Once the catalog can be read (a failed read is retried after a few
    // seconds), a new session reads the view masked.
    dp.target("ALTER ROLE app CONNECTION LIMIT -1");
    let label = eventually(
        Duration::from_secs(20),
        "a session after the limit is lifted",
        || async {
            let mut again = sqlx::PgConnection::connect(&dp.url()).await.ok()?;
            Some(view_label(&mut again).await)
        },
    )
    .await;
    assert_eq!(label, "[REDACTED]");
}

#[tokio::test]
async fn a_trigger_dropped_and_installed_again_is_noticed_and_shown_on_status() {
    let recheck = vec!["--ddl-notices-recheck".into(), "1s".into()];
    let (dp, mut reader) = watched_accounts_with(recheck).await;
    let watch = dp.ddl_watch().await;
    assert_eq!(watch["listening"], true, "{watch}");
    assert_eq!(watch["event_trigger"], true, "{watch}");
    // A DBA drops the trigger: the agent says so, and shows it.
    dp.target("DROP EVENT TRIGGER sluice_ddl");
    dp.agent_logged("the Sluice DDL event trigger is gone or disabled on the target")
        .await;
    dp.ddl_watch_shows("event_trigger", false.into()).await;
    // Unheard without it: a redefinition over the masked column. The
    // trigger installed again, the agent reads the catalog again.
    dp.target(&format!("SET ROLE app; {REDEFINE}"));
    dp.target(include_str!("../../docs/ddl-notices.sql"));
    dp.agent_logged("the Sluice DDL event trigger is installed on the target now")
        .await;
    dp.ddl_watch_shows("event_trigger", true.into()).await;
    let label = view_label(&mut reader).await;
    assert_eq!(
        label, "[REDACTED]",
        "the view redefined while the trigger was gone came back unmasked"
    );
    let watch = dp.ddl_watch().await;
    assert_eq!(watch["listening"], true, "{watch}");
    assert_eq!(watch["stopped"], "", "{watch}");
}

#[tokio::test]
async fn the_watch_follows_its_resource_when_the_policy_changes_it() {
    let recheck = vec!["--ddl-notices-recheck".into(), "1s".into()];
    let (mut dp, mut reader) = watched_accounts_with(recheck).await;
    // The resource changes (a connection limit of its own); the session
    // open on it goes on.
    let changed = dp.policy("devs", VIEW_RULES).replace(
        "    credential: app-db\n",
        "    credential: app-db\n    max_connections: 90\n",
    );
    assert!(changed.contains("max_connections: 90"), "{changed}");
    let (s, v) = dp.cp.api().apply_policy(&changed).await;
    assert!(s.is_success(), "{v}");
    let revision = v["revision"].as_u64().unwrap();
    dp.agent
        .wait_version(revision, Duration::from_secs(10))
        .await;
    dp.agent_logged("stopped listening for the target's DDL notices: the resource changed")
        .await;
    eventually(
        Duration::from_secs(20),
        "the watch to listen again as the resource now is",
        || async {
            let logs = dp.agent.logs();
            (logs
                .matches("listening for the target's DDL notices: DDL run on it")
                .count()
                >= 2)
                .then_some(())
        },
    )
    .await;
    dp.ddl_watch_shows("listening", true.into()).await;
    // No new session started it: DDL on the target is still heard.
    dp.target(&format!("SET ROLE app; {REDEFINE}"));
    dp.agent_logged("the target's catalog changed (DDL notice")
        .await;
    assert_eq!(view_label(&mut reader).await, "[REDACTED]");
}

/// `items.name` masked ('item 1' ... 'item 500' in clear), and every
/// expression over `items` (strict mode).
fn names_masked() -> String {
    format!(
        "{}      - mask: {{ columns: [\"public.items.name\"], as: redact, strict_tables: [\"public.items\"] }}\n        name: names\n",
        sluice_integration_tests::datapath::DEFAULT_RULES
    )
}

/// Sends `bytes` on a new session and returns everything it received
/// until the agent closed it, a row `4243` came, or 10 s passed.
async fn received_after(dp: &DataPath, bytes: &[u8]) -> Vec<sluice_pgwire::Frame> {
    use sluice_integration_tests::rawpg::RawSession;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(bytes).await;
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frames = s.until_or_closed(b'Z').await;
            let closed = frames.last().is_none_or(|f| f.tag != b'Z');
            all.extend(frames);
            let last = sluice_integration_tests::rawpg::first_column(&all);
            if closed || last.iter().any(|v| v == "4243") {
                return;
            }
        }
    })
    .await;
    all
}

#[tokio::test]
async fn a_sync_the_target_ignores_during_copy_cannot_pair_results_with_another_statement() {
    use sluice_integration_tests::rawpg::{
        bind, errors, execute, flush, frame, parse, query, sync,
    };
    // PostgreSQL ignores a Sync while it waits for COPY data. Counted, it
    // would have the agent expect one answer too many and pair each later
    // result with the statement before it: `upper(name)` (masked by what
    // its statement reads) came back in clear as `SELECT 4242`'s.
    let dp = DataPath::start_with(&names_masked(), Vec::new()).await;
    let after = |mut b: Vec<u8>| {
        b.extend(query("SELECT 4242"));
        b.extend(query("SELECT upper(name) FROM items WHERE id = 1"));
        b.extend(query("SELECT 4243"));
        b
    };
    let mut simple = query("COPY notes (body) FROM STDIN");
    simple.extend(sync());
    simple.extend(flush());
    simple.extend(frame(b'f', b"stop\0"));
    simple.extend(sync());
    let mut extended = parse("", "COPY notes (body) FROM STDIN");
    extended.extend(bind("", ""));
    extended.extend(execute("", 0));
    extended.extend(sync());
    extended.extend(sync());
    extended.extend(frame(b'c', b""));
    extended.extend(sync());
    // A Query with two COPYs: the Sync after the first one's CopyDone is
    // read while the second waits for its data.
    let mut two = query("COPY notes (body) FROM STDIN; COPY notes (body) FROM STDIN");
    two.extend(frame(b'c', b""));
    two.extend(sync());
    two.extend(frame(b'c', b""));
    two.extend(sync());
    for (name, bytes) in [
        ("simple", after(simple)),
        ("extended", after(extended)),
        ("two copies", after(two)),
    ] {
        let got = received_after(&dp, &bytes).await;
        for f in &got {
            assert!(
                !f.raw.windows(6).any(|w| w.eq_ignore_ascii_case(b"item 1")),
                "{name}: a name in clear: {}",
                String::from_utf8_lossy(&f.raw)
            );
        }
        let text = errors(&got);
        assert!(
            text.contains("08P01") && text.contains("send CopyDone or CopyFail first"),
            "{name}: {text}"
        );
    }
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "0");
    // libpq's own order (the Sync after CopyDone) goes on working.
    let mut libpq = parse("", "COPY notes (body) FROM STDIN");
    libpq.extend(bind("", ""));
    libpq.extend(execute("", 0));
    libpq.extend(sync());
    libpq.extend(frame(b'd', b"copied\n"));
    libpq.extend(frame(b'c', b""));
    libpq.extend(sync());
    // And a Query's COPY with a batch pipelined after its CopyDone.
    let mut pipelined = query("COPY notes (body) FROM STDIN");
    pipelined.extend(frame(b'd', b"copied too\n"));
    pipelined.extend(frame(b'c', b""));
    pipelined.extend(parse("", "SELECT 4241"));
    pipelined.extend(bind("", ""));
    pipelined.extend(execute("", 0));
    pipelined.extend(sync());
    // A COPY's Execute ended by Flush, its data, then Sync: that Sync
    // reaches the target after the COPY and is answered.
    let mut flushed = parse("", "COPY notes (body) FROM STDIN");
    flushed.extend(bind("", ""));
    flushed.extend(execute("", 0));
    flushed.extend(flush());
    flushed.extend(frame(b'd', b"flushed\n"));
    flushed.extend(frame(b'c', b""));
    flushed.extend(sync());
    for (name, bytes, first) in [
        ("libpq", libpq, None),
        ("pipelined", pipelined, Some("4241")),
        ("flushed", flushed, None),
    ] {
        let got = received_after(&dp, &after(bytes)).await;
        assert_eq!(
            errors(&got),
            "",
            "{name}: {}",
            sluice_integration_tests::rawpg::tags(&got)
        );
        let mut want = vec!["4242", "[REDACTED]", "4243"];
        want.splice(0..0, first);
        assert_eq!(
            sluice_integration_tests::rawpg::first_column(&got),
            want,
            "{name}"
        );
    }
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "3");
}

/// A long-lived database's OID counter passes 2^31 (every temporary table
/// takes OIDs), after which new objects' OIDs no longer fit the signed
/// 32-bit integer the protocol carries them in: the agent reads such a
/// database's types, tables, views and functions as any other's. The
/// target's counter is set there with `pg_resetwal -o` before it starts.
#[tokio::test]
async fn a_database_whose_oids_have_passed_2_31_is_read_as_any_other() {
    use sluice_integration_tests::{
        pg::Postgres,
        rawpg::{
            RawSession, bind_binary, bind_text, errors, execute, first_column, parse_typed, query,
            sync,
        },
    };
    const RULES: &str = r#"
      - mask: { columns: ["public.tickets.secret"], detectors: [email], as: redact }
      - deny: { sql: { functions: [reveal] } }
        name: no-reveal
      - allow: { sql: { statements: [read, session, transaction, prepare, execute] } }
        name: work
"#;
    let pg = Postgres::start_at_oid(Some(3_000_000_000));
    let mut dp = DataPath::start_on(pg, RULES, Vec::new(), Vec::new()).await;
    dp.target(
        "SET ROLE app; \
         CREATE TYPE state AS ENUM ('open', 'closed'); \
         CREATE TABLE tickets (id int, state state, contact text, secret text); \
         INSERT INTO tickets VALUES (1, 'open', 'zq@example.org', 'hunter2'); \
         CREATE FUNCTION reveal(t text) RETURNS text LANGUAGE sql AS $$ SELECT t $$; \
         CREATE VIEW revealed AS SELECT reveal(secret) FROM tickets;",
    );
    let oid = |sql: &str| dp.target(sql).parse::<u32>().unwrap();
    let state = oid("SELECT 'state'::regtype::oid");
    let states = oid("SELECT '_state'::regtype::oid");
    for o in [
        state,
        states,
        oid("SELECT 'tickets'::regclass::oid"),
        oid("SELECT 'reveal'::regproc::oid"),
    ] {
        assert!(o > 1 << 31, "the target's OIDs start at 3,000,000,000: {o}");
    }

    // Binary results of the database's own types under detectors: the
    // enum and the array of it read, the masked columns redacted.
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let row = sqlx::query("SELECT state, ARRAY[state], contact, secret FROM tickets WHERE id = $1")
        .bind(1_i32)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let raw = |i: usize| {
        let value = row.try_get_raw(i).unwrap();
        (!value.is_null()).then(|| value.as_bytes().unwrap().to_vec())
    };
    assert_eq!(raw(0).as_deref(), Some(&b"open"[..]));
    let array = raw(1).expect("the array of the enum read, not nulled");
    assert!(array.ends_with(b"open"), "{array:?}");
    for i in [2, 3] {
        let masked: Option<String> = row.get(i);
        assert_eq!(masked.as_deref(), Some("[REDACTED]"), "column {i}");
    }

    // A view calling a denied function is denied (the agent reads the
    // view's calls by the function's OID), and nothing ran.
    let (ok, _, err) = dp.psql("SELECT * FROM revealed");
    assert!(!ok && err.contains("no-reveal"), "{err}");
    assert!(!dp.pg.logs().contains("SELECT * FROM revealed"));

    // Parameters declared of the database's types: by Parse, bound in
    // binary (the audit trail prints them), and by PREPARE for EXECUTE.
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut array = Vec::new();
    for part in [1_i32, 0, state.cast_signed(), 1, 1, 4] {
        array.extend_from_slice(&part.to_be_bytes());
    }
    array.extend_from_slice(b"open");
    let mut request = parse_typed(
        "",
        "SELECT count(*) FROM tickets WHERE state = ANY($1) /* typed */",
        &[states],
    );
    request.extend(bind_binary("", "", &[&array]));
    request.extend(execute("", 0));
    request.extend(parse_typed(
        "s",
        "SELECT id FROM tickets WHERE state = $1",
        &[state],
    ));
    request.extend(bind_text("", "s", &["open"]));
    request.extend(execute("", 0));
    request.extend(sync());
    s.send(&request).await;
    let got = s.until(b'Z').await;
    assert_eq!(errors(&got), "");
    assert_eq!(first_column(&got), ["1", "1"]);
    s.send(&query(
        "PREPARE by_state(state) AS SELECT id FROM tickets WHERE state = $1",
    ))
    .await;
    assert_eq!(errors(&s.until(b'Z').await), "");
    s.send(&query("EXECUTE by_state('open')")).await;
    let got = s.until(b'Z').await;
    assert_eq!(errors(&got), "");
    assert_eq!(first_column(&got), ["1"]);
    let parameters = dp.cp.api().statement_parameters("/* typed */").await;
    assert_eq!(parameters, serde_json::json!(["{open}"]));
}

/// The event trigger of `docs/ddl-notices.sql` stays silent for creating
/// and dropping a session's own temporary tables, indexes and sequences
/// alone (which no other session can read, and for which agents would
/// read a large catalog again for nothing), and notifies for everything
/// else: temporary views, functions and types, which permanent objects
/// may use, DROPs, GRANTs and DROP OWNED included. Each case is
/// followed by a NOTIFY from the same session: notifications of one
/// session arrive in order, so what arrives before the marker is what the
/// case sent.
#[tokio::test]
async fn the_ddl_event_trigger_is_silent_for_temporary_tables_alone() {
    use sluice_integration_tests::pg::Postgres;
    let pg = Postgres::start();
    pg.psql("postgres", include_str!("../../docs/ddl-notices.sql"));
    pg.psql(
        "postgres",
        "CREATE TABLE base (id int, c int); CREATE TABLE gone (id int); CREATE TABLE gone2 (id int); \
         CREATE ROLE carol",
    );
    let mut listener = sqlx::postgres::PgListener::connect(&pg.url("postgres"))
        .await
        .unwrap();
    listener.listen("sluice_ddl").await.unwrap();
    let mut session = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let cases: &[(&str, bool)] = &[
        (
            "CREATE TEMP TABLE t1 (id serial PRIMARY KEY, body text)",
            false,
        ),
        ("CREATE INDEX ON t1 (body)", false),
        ("CREATE TEMP TABLE \"t x\" AS SELECT 1 AS a", false),
        ("SELECT 1 AS a INTO TEMP t4", false),
        ("CREATE TEMP SEQUENCE s1", false),
        // A permanent object may use a temporary view, function or type
        // (other sessions run a function by its OID), or depend on a
        // temporary table's columns.
        ("CREATE TEMP VIEW tv AS SELECT * FROM base", true),
        ("CREATE TEMP VIEW \"v y\" AS SELECT * FROM \"t x\"", true),
        (
            "CREATE FUNCTION pg_temp.gate(int) RETURNS bool LANGUAGE sql AS 'SELECT $1 < 10'",
            true,
        ),
        (
            "CREATE OR REPLACE FUNCTION pg_temp.gate(int) RETURNS bool LANGUAGE sql AS 'SELECT true'",
            true,
        ),
        ("CREATE TYPE pg_temp.mood AS ENUM ('ok')", true),
        ("ALTER TABLE t1 ADD COLUMN n int", true),
        // Dropping what nothing permanent uses (it would be dropped too).
        ("DROP VIEW tv", false),
        ("DROP TABLE t1, t4", false),
        ("DROP TABLE \"t x\" CASCADE", false),
        ("DROP FUNCTION pg_temp.gate(int)", false),
        ("CREATE TABLE kept (id int)", true),
        ("ALTER TABLE base DROP COLUMN c", true),
        ("GRANT SELECT ON base TO PUBLIC", true),
        ("DROP TABLE gone", true),
        (
            "CREATE TEMP TABLE t2 (id int); CREATE VIEW permanent AS SELECT * FROM base",
            true,
        ),
        ("CREATE TEMP TABLE t3 (id int); DROP TABLE t3, gone2", true),
        // A temporary table a permanent policy reads: dropping its column
        // drops the policy.
        (
            "CREATE TEMP TABLE tt (a int, c int); \
             CREATE POLICY p2 ON base USING (EXISTS (SELECT 1 FROM pg_temp.tt WHERE tt.c = base.id))",
            true,
        ),
        ("ALTER TABLE pg_temp.tt DROP COLUMN c CASCADE", true),
        ("DROP TABLE tt", false),
        // DROP OWNED revokes and takes the role out of policies, whatever
        // it drops.
        (
            "SET ROLE carol; CREATE TEMP TABLE mine (a int); RESET ROLE",
            false,
        ),
        ("DROP OWNED BY carol", true),
        // What a drop dropped cannot be set beforehand by the session.
        (
            "SET sluice.ddl_dropped = 'temporary'; DROP TABLE kept",
            true,
        ),
        (
            "SET sluice.ddl_dropped = 'temporary'; DROP TABLE IF EXISTS nothing_here",
            true,
        ),
        (
            "CREATE RULE \"r on pg_temp.x\" AS ON INSERT TO base DO ALSO NOTIFY other",
            true,
        ),
        ("DROP RULE \"r on pg_temp.x\" ON base", true),
        // Without its companions running, no drop is taken for temporary
        // only, whatever the session set.
        (
            "CREATE TEMP TABLE t5 (id int); CREATE TABLE kept2 (id int); \
             ALTER EVENT TRIGGER sluice_ddl_drop DISABLE; \
             ALTER EVENT TRIGGER sluice_ddl_start DISABLE",
            true,
        ),
        ("SET sluice.ddl_dropped = 'temporary'; DROP TABLE t5", true),
        (
            "SET sluice.ddl_dropped = 'temporary'; DROP TABLE kept2",
            true,
        ),
        (
            "ALTER EVENT TRIGGER sluice_ddl_drop ENABLE; \
             ALTER EVENT TRIGGER sluice_ddl_start ENABLE",
            false,
        ),
        ("CREATE TEMP TABLE t6 (id int); DROP TABLE t6", false),
    ];
    for (i, (sql, notifies)) in cases.iter().enumerate() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut session)
            .await
            .unwrap();
        let marker = format!("case {i}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "NOTIFY sluice_ddl, '{marker}'"
        )))
        .execute(&mut session)
        .await
        .unwrap();
        let mut before = Vec::new();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
                .await
                .expect("the marker arrives")
                .unwrap();
            if n.payload() == marker {
                break;
            }
            before.push(n.payload().to_owned());
        }
        assert_eq!(!before.is_empty(), *notifies, "{sql}: {before:?}");
    }
}
