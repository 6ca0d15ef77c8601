//! The drivers AI workloads use, as real programs through the agent:
//! psycopg 3 (text and binary results, server-side prepared statements,
//! pipeline mode), asyncpg (binary everything, its quoted `'utf-8'`
//! client_encoding, a pool), node-postgres (named statements,
//! multi-statement queries, a pool), postgres.js (every query prepared
//! and described first, pipelined, cursors) and psycopg2 with SQLAlchemy on it
//! (parameters interpolated on the client, schema reflection). Each reads
//! a table of numbers, arrays and a detector-masked value, commits a
//! write, and meets a denied statement it recovers from; the target
//! confirms what ran.
//!
//! And the reading those rely on: the agent's text form of binary values
//! (`sluice_pgwire::binary`) checked against PostgreSQL's own.

use serde_json::{Value, json};
use sluice_integration_tests::{Postgres, datapath::DataPath, drivers};
use sluice_pgwire::binary::{Form, text_of_with};
use sqlx::{Connection as _, Row as _, ValueRef as _};

/// A workload's policy: reads, inserts, transactions and session tidying
/// (what drivers and pools send) allowed; deletes and DDL denied; email
/// and card-number detectors.
const RULES: &str = r#"
      - deny: { sql: { statements: [ddl, dcl, dynamic, delete, truncate] } }
        name: no-changes
        reason: deletes are not allowed here
      - mask: { detectors: [email, credit_card], as: redact }
      - allow: { sql: { statements: [read, insert, transaction, session] } }
        name: work
"#;

/// A data path whose target also has `ledger`: numbers, arrays, an email
/// (row 1) and a card number stored as `numeric` (row 1); and `accounts`,
/// of the database's own types: an enum, an array of it, and a composite
/// holding an email (row 1) and a date.
async fn ledger() -> DataPath {
    let dp = DataPath::start_with(RULES, Vec::new()).await;
    dp.target(
        "SET ROLE app; CREATE TABLE ledger (id int PRIMARY KEY, owner text, amount numeric(12,2), card numeric, tags text[]); \
         INSERT INTO ledger VALUES (1, 'ada@example.com', 1234.50, 4111111111111111, ARRAY['vip', 'new']), \
                                   (2, 'no email here', -0.25, 42, ARRAY[]::text[]); \
         CREATE TYPE status AS ENUM ('active', 'closed'); \
         CREATE TYPE contact AS (name text, email text, since date); \
         CREATE TABLE accounts (id int PRIMARY KEY, status status, history status[], contact contact); \
         INSERT INTO accounts VALUES (1, 'active', '{active,closed}', ('Ada', 'ada@example.com', '2024-01-02')), \
                                     (2, 'closed', '{closed}', ('Bob', 'none', '2024-03-04'))",
    );
    dp
}

/// Row 1 and row 2 of `ledger` as every driver must see them: the email
/// redacted by its detector, the card number (not text, so not
/// redactable) NULL, numbers and arrays intact.
fn ledger_rows() -> Value {
    json!([
        [1, "[REDACTED]", "1234.50", null, ["vip", "new"]],
        [2, "no email here", "-0.25", "42", []]
    ])
}

/// The driver's insert of `body` into `notes` committed on the target.
fn assert_committed(dp: &DataPath, body: &str) {
    let count = dp.target(&format!("SELECT count(*) FROM notes WHERE body = '{body}'"));
    assert_eq!(count, "1", "{body} not committed on the target");
}

/// What every driver must have seen of the denied DELETE, and that it
/// never reached the target.
fn assert_denied_and_recovered(dp: &DataPath, seen: &Value, driver: &str) {
    assert_eq!(seen["denied"]["sqlstate"], "42501", "{driver}: {seen}");
    let message = seen["denied"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no-changes"), "{driver}: {message}");
    assert_eq!(seen["after_denied"], "item 1", "{driver}: {seen}");
    assert_eq!(dp.target("SELECT count(*) FROM items WHERE id = 1"), "1");
    assert!(
        !dp.pg.logs().contains("DELETE FROM items"),
        "{driver}: the DELETE reached the target"
    );
}

#[tokio::test]
async fn psycopg_reads_writes_and_recovers_from_a_denial_through_the_agent() {
    let dp = ledger().await;
    let seen = drivers::python("psycopg_session.py", dp.agent.pg_port, &dp.token);
    assert_eq!(seen["text"], ledger_rows(), "text results: {seen}");
    assert_eq!(seen["binary"], ledger_rows(), "binary results: {seen}");
    let rows = ledger_rows();
    assert_eq!(
        seen["prepared"],
        json!([rows[1], rows[0], rows[1]]),
        "prepared: {seen}"
    );
    // The detectors read bytea's bytes, hex-spelled in text or raw in
    // binary: the email's become NULL, other bytes pass.
    let bytea = json!([null, "no email here"]);
    assert_eq!(
        seen["bytea"],
        json!({"text": bytea, "binary": bytea}),
        "{seen}"
    );
    assert_committed(&dp, "from psycopg");
    // psycopg rolls back after the error and deallocates its prepared
    // statements (`DEALLOCATE`, in the `session` group).
    assert_denied_and_recovered(&dp, &seen, "psycopg");
    assert_eq!(seen["pipeline"], json!(["item 5", "item 6", "item 7"]));
    assert_eq!(seen["cursor"], json!([1, 2, 3]));
}

#[tokio::test]
async fn asyncpg_reads_writes_and_recovers_from_a_denial_through_the_agent() {
    let mut dp = ledger().await;
    let seen = drivers::python("asyncpg_session.py", dp.agent.pg_port, &dp.token);
    assert_eq!(seen["binary"], ledger_rows(), "binary results: {seen}");
    let rows = ledger_rows();
    assert_eq!(seen["prepared"], json!([rows[1], rows[0], rows[1]]));
    // Arrays and records of PostgreSQL's types pass the detectors in
    // binary: read, not nulled.
    assert_eq!(seen["arrays"], "{1.5,NULL,3}");
    assert_eq!(seen["array_values"], json!(["1.5", null, "3"]));
    assert_eq!(seen["record"], json!([7, "a,b", null]));
    // The database's own types in binary: enums and arrays of them read
    // as their labels; a composite read field by field, nulled only where
    // a detector matched (row 1's email).
    assert_eq!(
        seen["accounts"],
        json!([
            [1, "active", ["active", "closed"], null],
            [2, "closed", ["closed"], ["Bob", "none", "2024-03-04"]]
        ]),
        "{seen}"
    );
    assert_eq!(seen["bytea"], json!([null, "no email here"]), "{seen}");
    // Its binary parameters, of types it left to the target to infer (an
    // enum, a date, a timestamptz, a composite holding a date, an
    // interval, an address), are in the audit trail as PostgreSQL prints
    // them, not as hex.
    assert_eq!(seen["typed_params"], 1, "{seen}");
    let parameters = dp.cp.api().statement_parameters("$5::contact").await;
    assert_eq!(
        parameters,
        json!([
            "active",
            "0",
            "2025-01-01",
            "2026-01-02 03:04:05.00012+00",
            "(Eve,eve,1999-12-31)",
            "1 day 02:00:00",
            "10.0.0.1"
        ])
    );
    assert_committed(&dp, "from asyncpg");
    assert_denied_and_recovered(&dp, &seen, "asyncpg");
    assert_eq!(seen["cursor"], json!([1, 2, 3]));
    assert_eq!(
        seen["pool"],
        json!(["item 8", "item 9", "item 10", "item 11"])
    );
}

#[tokio::test]
async fn postgres_js_reads_writes_and_recovers_from_a_denial_through_the_agent() {
    let dp = ledger().await;
    let seen = drivers::node("postgres_js_session.js", dp.agent.pg_port, &dp.token);
    // postgres.js reads numeric and bigint as strings, arrays as arrays.
    assert_eq!(seen["text"], ledger_rows(), "{seen}");
    assert_eq!(
        seen["pipelined"],
        json!(["item 5", "item 6", "item 7", "item 8"])
    );
    assert_eq!(seen["any"], json!(["item 2", "item 3"]));
    assert_eq!(seen["identifier"], "item 9");
    assert_committed(&dp, "from postgres.js");
    assert_denied_and_recovered(&dp, &seen, "postgres.js");
    // A cursor fetched two rows at a time.
    assert_eq!(seen["cursor"], json!([[1, 2], [3, 4], [5]]));
}

#[tokio::test]
async fn psycopg2_and_sqlalchemy_reflect_read_write_and_recover_through_the_agent() {
    let dp = ledger().await;
    let seen = drivers::python("psycopg2_session.py", dp.agent.pg_port, &dp.token);
    assert_eq!(seen["text"], ledger_rows(), "text results: {seen}");
    assert_committed(&dp, "from psycopg2");
    assert_denied_and_recovered(&dp, &seen, "psycopg2");
    // SQLAlchemy's reflection: its catalog queries pass the judge and
    // show the schema as it is.
    assert_eq!(
        seen["tables"],
        json!(["accounts", "items", "ledger", "notes"]),
        "{seen}"
    );
    assert_eq!(
        seen["columns"],
        json!({
            "ledger": ["id", "owner", "amount", "card", "tags"],
            "accounts": ["id", "status", "history", "contact"],
        })
    );
    assert_eq!(seen["primary_key"], json!(["id"]));
    assert_eq!(
        seen["enums"],
        json!([{"name": "status", "labels": ["active", "closed"]}])
    );
    let rows = ledger_rows();
    assert_eq!(seen["orm"], json!([rows[0], rows[1]]), "{seen}");
}

#[tokio::test]
async fn node_postgres_reads_writes_and_recovers_from_a_denial_through_the_agent() {
    let dp = ledger().await;
    let seen = drivers::node("node_pg_session.js", dp.agent.pg_port, &dp.token);
    assert_eq!(seen["text"], ledger_rows(), "text results: {seen}");
    let rows = ledger_rows();
    assert_eq!(seen["prepared"], json!([rows[1], rows[0], rows[1]]));
    assert_eq!(seen["multi"], json!([{"a": 1}, {"name": "item 4"}]));
    assert_committed(&dp, "from node-postgres");
    assert_denied_and_recovered(&dp, &seen, "node-postgres");
    assert_eq!(
        seen["pool"],
        json!(["item 12", "item 13", "item 14", "item 15"])
    );
}

/// `SELECT value` in binary (sqlx asks for every result column so): its
/// type OID and bytes.
async fn binary_value(conn: &mut sqlx::PgConnection, value: &str) -> (u32, Vec<u8>) {
    // The values are this test's own literals.
    let sql = sqlx::AssertSqlSafe(format!("SELECT {value}"));
    let row = sqlx::query(sql)
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{value}: {e}"));
    let raw = row.try_get_raw(0).unwrap();
    let oid = raw.type_info().oid().expect("a type with an OID").0;
    (oid, raw.as_bytes().expect("not NULL").to_vec())
}

#[tokio::test]
async fn binary_values_read_as_postgresql_prints_them() {
    let pg = Postgres::start();
    let mut conn = sqlx::postgres::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect to PostgreSQL");
    // sqlx asks for every result column in binary.
    let values = [
        "0::numeric",
        "1.50::numeric",
        "-123456.780::numeric",
        "0.00000001::numeric",
        "1e30::numeric",
        "12345678901234567890.123456789::numeric",
        "(-0.5)::numeric(10, 4)",
        "'NaN'::numeric",
        "'-Infinity'::numeric",
        "true",
        "(-7)::int2",
        "9000000000::int8",
        "1234::oid",
        "1.5::float8",
        "ARRAY[1, NULL, 3]",
        r#"ARRAY['a b', '', 'say "hi"', 'null', NULL, 'x\y', '{}', 'ünï']"#,
        r"ARRAY[E'a\tb', E'c\x0bd', E'e\\f']",
        r"row(E'a\x0bb', E'c\\d', 'x')",
        "'[2:3][1:2]={{1,2},{3,4}}'::int[]",
        "'{}'::int[]",
        "ARRAY[1.5, 2]::numeric[]",
        "ARRAY['a@b.example']::varchar[]",
        "ARRAY[true, false]",
        "ARRAY['{\"a\": 1}']::jsonb[]",
        "row(1, 'a,b', NULL, 'x', '')",
        "row(row(1, '(x)'), ARRAY[1, 2], 'q\"uote')",
        "ARRAY[row(1, 'a'), row(2, NULL)]",
        r#"'{"a": [1, 2], "b": "x"}'::jsonb"#,
        "'{\"a\":1}'::json",
        "'b5a8c0de-0000-4000-8000-0123456789ab'::uuid",
        "'x'::name",
        "'ab'::char(4)",
        "'<a>x</a>'::xml",
        "int4range(1, 10)",
        "'empty'::int4range",
        "'(,5]'::int8range",
        "numrange(1.5, NULL)",
        "ARRAY[int4range(1, 3), 'empty']",
        // Multiranges in records: sqlx does not know their type kind.
        "row('{[1,3), [5,7)}'::int4multirange, '{}'::nummultirange)",
        "row(ARRAY['{(,2]}'::int8multirange])",
        r#"row('{["a b",c), [x,)}'::wordsmulti)"#,
        // The database's own types, read by the forms below.
        "'very happy'::mood",
        "ARRAY['sad', 'very happy']::mood[]",
        "ARRAY['a@b.example', NULL]::email[]",
        "row('a@b.example', 'sad', 'x,y')::pair",
        "ARRAY[row('x y', 'sad', NULL)::pair]",
        r#"'["a b",z]'::words"#,
        "'(,m)'::words",
    ];
    pg.psql(
        "postgres",
        "CREATE TYPE mood AS ENUM ('sad', 'very happy'); CREATE DOMAIN email AS text; \
         CREATE TYPE pair AS (e email, m mood, note text); CREATE TYPE words AS RANGE (subtype = text, multirange_type_name = wordsmulti)",
    );
    // What the agent reads from the catalog for these (`TYPE_FORMS`).
    let oid = |name: &str| -> i32 {
        pg.psql("postgres", &format!("SELECT '{name}'::regtype::oid"))
            .trim()
            .parse()
            .unwrap()
    };
    let forms: std::collections::HashMap<i32, Form> = [
        (oid("mood"), Form::Text),
        (oid("mood[]"), Form::Array(oid("mood"))),
        (oid("email"), Form::Domain(25)),
        (oid("email[]"), Form::Array(oid("email"))),
        (oid("pair"), Form::Record),
        (oid("pair[]"), Form::Array(oid("pair"))),
        (oid("words"), Form::Range(25)),
        (oid("wordsmulti"), Form::Multirange(oid("words"))),
    ]
    .into();
    for value in values {
        let (oid, bytes) = binary_value(&mut conn, value).await;
        let bytes = bytes.as_slice();
        // psql asks for text: the type's output function, as a text-format
        // result gives it (not a cast to text: `true::text` is `true`).
        let printed = pg.psql("postgres", &format!("SELECT {value}"));
        let printed = printed.strip_suffix('\n').unwrap_or(&printed);
        assert_eq!(
            text_of_with(i32::try_from(oid).unwrap(), bytes, &|t| forms
                .get(&t)
                .copied())
            .as_deref(),
            Some(printed),
            "{value} (type {oid})"
        );
    }
    // The audit trail's reading also takes dates, times, intervals and
    // network addresses, at any depth, as PostgreSQL prints them (in UTC).
    let temporal = [
        "'2026-01-02'::date",
        "'0044-03-15 BC'::date",
        "'infinity'::date",
        "'12:30:00.25'::time",
        "'1999-12-31 23:59:59.000001'::timestamp",
        "'2026-01-02 03:04:05.5+02'::timestamptz",
        "ARRAY['2026-01-02 03:04:05+00', NULL, '-infinity']::timestamptz[]",
        "tstzrange('2026-01-01 00:00+00', '2026-02-01 12:00+00')",
        "'[2026-01-01,2026-02-01)'::daterange",
        "row('Eve', '1999-12-31'::date, '00:00'::time)",
        "'1 year -2 mons 3 days -04:05:06.789'::interval",
        "ARRAY['0'::interval, '-1 day +01:00', '100 hours']",
        "'10.1.2.3/8'::inet",
        "ARRAY['::1', '2001:db8::1/64', '::ffff:10.0.0.1']::inet[]",
        "'2001:db8::/32'::cidr",
    ];
    for value in temporal {
        let (oid, bytes) = binary_value(&mut conn, value).await;
        let bytes = bytes.as_slice();
        let printed = pg.psql(
            "postgres",
            &format!("SET TimeZone = 'UTC'; SET DateStyle = ISO; SELECT {value}"),
        );
        // After the two SETs' command tags, one line.
        let printed = printed.trim_end().rsplit('\n').next().unwrap_or_default();
        assert_eq!(
            sluice_pgwire::messages::binary_as_text(i32::try_from(oid).unwrap(), bytes, &|_| None),
            printed,
            "{value} (type {oid})"
        );
    }
}
