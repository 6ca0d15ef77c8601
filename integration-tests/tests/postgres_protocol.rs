//! Extended-protocol edge cases, driven message by message with a raw
//! protocol client against a real PostgreSQL: what the audit trail says a
//! portal ran is what the target ran (its binary parameters read by the
//! types the target described for that very statement), row limits hold
//! across `max_rows` fetches, and a denial after unsynced work keeps
//! PostgreSQL's ordering and rollback semantics.

use std::time::Duration;

use sluice_integration_tests::{
    datapath::{DEFAULT_RULES, DataPath},
    eventually,
    rawpg::{RawSession, bind, errors, execute, first_column, flush, parse, query, sync, tags},
};

#[tokio::test]
async fn a_portal_fetched_in_pieces_is_row_limited_as_a_whole() {
    let dp = DataPath::start_with(
        r#"
      - limit: { rows: 25 }
      - allow: { sql: { statements: [read, transaction] } }
"#,
        Vec::new(),
    )
    .await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("BEGIN")).await;
    s.until(b'Z').await;
    let mut batch = parse("", "SELECT id FROM items ORDER BY id");
    batch.extend(bind("p", ""));
    batch.extend(execute("p", 10));
    batch.extend(sync());
    s.send(&batch).await;
    let mut rows = first_column(&s.until(b'Z').await);
    assert_eq!(rows.len(), 10);
    // Keep fetching 10 at a time, then the rest: the limit is per portal,
    // not per Execute.
    for max in [10, 10, 0] {
        let mut more = execute("p", max);
        more.extend(sync());
        s.send(&more).await;
        let got = s.until(b'Z').await;
        rows.extend(first_column(&got));
    }
    assert_eq!(rows.len(), 25, "{rows:?}");
    assert_eq!(rows.last().map(String::as_str), Some("25"));
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
}

#[tokio::test]
async fn the_audit_names_what_the_target_actually_ran() {
    let rules = format!(
        "{DEFAULT_RULES}      - allow: {{ sql: {{ statements: [prepare, deallocate] }} }}\n"
    );
    let dp = DataPath::start_with(&rules, Vec::new()).await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // s1 is prepared; a second Parse of s1 is rejected by the target
    // (42P05), so a pipelined Bind of s1 runs the first text.
    let mut batch = parse("s1", "SELECT 'first-text'::text");
    batch.extend(sync());
    s.send(&batch).await;
    s.until(b'Z').await;
    let mut batch = parse("s1", "SELECT 'second-text'::text");
    batch.extend(sync());
    batch.extend(bind("", "s1"));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until_n(b'Z', 2).await;
    assert!(errors(&got).contains("42P05"), "{}", errors(&got));
    assert_eq!(first_column(&got), ["first-text"]);

    // SQL DEALLOCATE frees the name: a new Parse of it takes effect.
    let mut batch = query("DEALLOCATE s1");
    batch.extend(parse("s1", "SELECT 'third-text'::text"));
    batch.extend(bind("", "s1"));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until_n(b'Z', 2).await;
    assert_eq!(first_column(&got), ["third-text"], "{}", errors(&got));

    // A statement made with SQL PREPARE was never judged at Parse: binding
    // it through the protocol is refused, and the session stays usable.
    s.send(&query("PREPARE q AS SELECT 'prepared-text'::text"))
        .await;
    s.until(b'Z').await;
    let mut batch = bind("", "q");
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until(b'Z').await;
    assert!(errors(&got).contains("SQL PREPARE"), "{}", errors(&got));
    assert!(first_column(&got).is_empty());
    s.send(&query("SELECT 'still-usable'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["still-usable"]);

    let mut cp = dp.cp;
    let api = cp.api();
    let results = eventually(Duration::from_secs(20), "statement results", || async {
        let v = api
            .get_ok("/api/v1/audit?kind=statement&outcome=allow&limit=1000")
            .await;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let texts: Vec<String> = events
            .iter()
            .filter_map(|e| e["statement"].as_str().map(str::to_owned))
            .collect();
        texts
            .iter()
            .any(|t| t.contains("still-usable"))
            .then_some(texts)
    })
    .await;
    assert!(
        results.iter().any(|t| t.contains("first-text")),
        "{results:?}"
    );
    assert!(
        results.iter().any(|t| t.contains("third-text")),
        "{results:?}"
    );
    assert!(
        !results.iter().any(|t| t.contains("second-text")),
        "the audit trail names a statement the target never ran: {results:?}"
    );
}

#[tokio::test]
async fn a_denial_after_a_flushed_batch_keeps_order_and_rolls_back_like_postgres() {
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // An INSERT sent with Flush (no Sync: the target's implicit transaction
    // stays open), slow enough that its results are still pending when the
    // denied DELETE and its Sync arrive.
    let mut batch = parse(
        "",
        "INSERT INTO items (id, name) SELECT 100001, 'flushed' FROM pg_sleep(0.3)",
    );
    batch.extend(bind("", ""));
    batch.extend(execute("", 0));
    batch.extend(flush());
    batch.extend(parse("", "DELETE FROM items"));
    batch.extend(bind("", ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until(b'Z').await;
    // ParseComplete, BindComplete, CommandComplete of the INSERT, then the
    // denial, then ReadyForQuery: nothing overtakes the pending results.
    assert_eq!(tags(&got), "12CEZ", "{}", errors(&got));
    assert!(errors(&got).contains("42501"), "{}", errors(&got));
    assert_eq!(got.last().map(|f| f.body().to_vec()), Some(b"I".to_vec()));
    // As in PostgreSQL, the error ended the implicit transaction: the
    // INSERT was rolled back, and the DELETE never reached the target.
    assert_eq!(
        dp.target("SELECT count(*) FROM items WHERE id = 100001"),
        "0"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
    assert!(!dp.pg.logs().contains("DELETE FROM items"));
    s.send(&query("SELECT 'still-usable'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["still-usable"]);
}

/// The status byte of the last ReadyForQuery in `frames`.
fn status(frames: &[sluice_pgwire::Frame]) -> u8 {
    frames
        .iter()
        .rev()
        .find(|f| f.tag == b'Z')
        .and_then(|f| f.body().first().copied())
        .unwrap_or(0)
}

/// The CommandComplete tags in `frames`.
fn completions(frames: &[sluice_pgwire::Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.tag == b'C')
        .map(|f| {
            String::from_utf8_lossy(f.body().strip_suffix(b"\0").unwrap_or(f.body())).into_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_denial_inside_a_transaction_aborts_it_like_postgres() {
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("BEGIN")).await;
    assert_eq!(status(&s.until(b'Z').await), b'T');
    s.send(&query(
        "INSERT INTO items (id, name) VALUES (100002, 'in-tx')",
    ))
    .await;
    assert_eq!(status(&s.until(b'Z').await), b'T');
    // Simple protocol: the denial fails the transaction block, as the
    // statement's own error would have.
    s.send(&query("DELETE FROM items")).await;
    let got = s.until(b'Z').await;
    assert_eq!(tags(&got), "EZ");
    assert!(errors(&got).contains("42501"), "{}", errors(&got));
    assert_eq!(status(&got), b'E');
    s.send(&query("SELECT 1")).await;
    let got = s.until(b'Z').await;
    assert!(errors(&got).contains("25P02"), "{}", errors(&got));
    // COMMIT of an aborted transaction rolls back: the INSERT is gone.
    s.send(&query("COMMIT")).await;
    let got = s.until(b'Z').await;
    assert_eq!(completions(&got), ["ROLLBACK"]);
    assert_eq!(status(&got), b'I');
    assert_eq!(
        dp.target("SELECT count(*) FROM items WHERE id = 100002"),
        "0"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
    assert!(!dp.pg.logs().contains("DELETE FROM items"));

    // Extended protocol, the same.
    s.send(&query(
        "BEGIN; INSERT INTO items (id, name) VALUES (100003, 'in-tx')",
    ))
    .await;
    assert_eq!(status(&s.until(b'Z').await), b'T');
    let mut batch = parse("", "TRUNCATE items");
    batch.extend(bind("", ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until(b'Z').await;
    assert_eq!(tags(&got), "EZ");
    assert!(errors(&got).contains("42501"), "{}", errors(&got));
    assert_eq!(status(&got), b'E');
    s.send(&query("ROLLBACK")).await;
    assert_eq!(status(&s.until(b'Z').await), b'I');
    assert_eq!(
        dp.target("SELECT count(*) FROM items WHERE id = 100003"),
        "0"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
    assert!(!dp.pg.logs().contains("TRUNCATE"));
    s.send(&query("SELECT 'still-usable'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["still-usable"]);
}

#[tokio::test]
async fn a_denial_pipelined_behind_begin_reports_the_true_transaction_status() {
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Sent together: when the DELETE is judged, BEGIN's answer has not
    // arrived, so only the target knows the status the denial leaves.
    let mut batch = query("BEGIN");
    batch.extend(query(
        "INSERT INTO items (id, name) VALUES (100004, 'pipelined')",
    ));
    batch.extend(query("DELETE FROM items"));
    batch.extend(query("COMMIT"));
    s.send(&batch).await;
    let got = s.until_n(b'Z', 4).await;
    assert_eq!(tags(&got), "CZCZEZCZ", "{}", errors(&got));
    assert!(errors(&got).contains("42501"), "{}", errors(&got));
    let statuses: Vec<u8> = got
        .iter()
        .filter(|f| f.tag == b'Z')
        .filter_map(|f| f.body().first().copied())
        .collect();
    assert_eq!(statuses, b"TTEI");
    assert_eq!(completions(&got), ["BEGIN", "INSERT 0 1", "ROLLBACK"]);
    assert_eq!(
        dp.target("SELECT count(*) FROM items WHERE id = 100004"),
        "0"
    );
    assert_eq!(dp.target("SELECT count(*) FROM items"), "500");
}

#[tokio::test]
async fn copy_from_stdin_through_execute_keeps_the_session_in_step() {
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // libpq's way: Parse/Bind/Execute/Sync, then the data, CopyDone and a
    // second Sync (PostgreSQL ignores the first one during copy-in).
    let mut batch = parse("", "COPY notes (body) FROM STDIN");
    batch.extend(bind("", ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    s.until(b'G').await;
    let mut data = sluice_integration_tests::rawpg::frame(b'd', b"copied in\n");
    data.extend(sluice_integration_tests::rawpg::frame(b'c', b""));
    data.extend(sync());
    s.send(&data).await;
    let got = s.until(b'Z').await;
    assert!(tags(&got).contains('C'), "{}", tags(&got));
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'copied in'"),
        "1"
    );
    // The agent's count of cycles is right: a denial is answered at once,
    // and the session goes on.
    s.send(&query("DROP TABLE items")).await;
    let got = s.until(b'Z').await;
    assert!(errors(&got).contains("42501"), "{}", errors(&got));
    s.send(&query("SELECT 'in-step'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["in-step"]);
}

#[tokio::test]
async fn copy_data_still_in_flight_when_the_target_rejects_the_copy_keeps_the_session() {
    // The target fails a COPY on a bad row and leaves copy-in mode while
    // the client is still sending: the rest of its data and its CopyDone
    // arrive after the error. PostgreSQL ignores them; so must the agent.
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("COPY items (id, name) FROM STDIN")).await;
    s.until(b'G').await;
    s.send(&sluice_integration_tests::rawpg::frame(
        b'd',
        b"not-a-number\tbad\n",
    ))
    .await;
    let got = s.until(b'Z').await;
    assert!(errors(&got).contains("22P02"), "{}", errors(&got));
    let mut late = sluice_integration_tests::rawpg::frame(b'd', b"9001\tlate\n");
    late.extend(sluice_integration_tests::rawpg::frame(b'c', b""));
    late.extend(query("SELECT 'still-here'"));
    s.send(&late).await;
    let got = s.until(b'Z').await;
    assert_eq!(first_column(&got), ["still-here"], "{}", errors(&got));
    assert_eq!(dp.target("SELECT count(*) FROM items WHERE id = 9001"), "0");
    // A CopyFail after the copy ended is ignored the same way.
    let mut late = sluice_integration_tests::rawpg::frame(b'f', b"client gave up\0");
    late.extend(query("SELECT 'again'"));
    s.send(&late).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["again"]);
}

#[tokio::test]
async fn copy_data_sent_without_waiting_for_copy_in_response_is_copied() {
    // pgx (Go) sends the COPY, its data and CopyDone without waiting for
    // CopyInResponse: the data reaches the agent before the target has
    // answered the COPY.
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut pipelined = query("COPY notes (body) FROM STDIN");
    for i in 0..3 {
        pipelined.extend(sluice_integration_tests::rawpg::frame(
            b'd',
            format!("eager {i}\n").as_bytes(),
        ));
    }
    pipelined.extend(sluice_integration_tests::rawpg::frame(b'c', b""));
    s.send(&pipelined).await;
    let got = s.until(b'Z').await;
    assert_eq!(errors(&got), "", "{}", tags(&got));
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body LIKE 'eager %'"),
        "3"
    );
    s.send(&query("SELECT 'after'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["after"]);
}

#[tokio::test]
async fn a_query_pipelined_where_copy_data_belongs_ends_the_session_instead_of_hanging() {
    // COPY FROM STDIN and, without waiting for CopyInResponse, a Query the
    // agent must hold until the COPY is answered (its text is not ASCII):
    // the target waits for the COPY's data, which would come after it.
    let dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut pipelined = query("COPY notes (body) FROM STDIN");
    pipelined.extend(query("SELECT 'café'"));
    s.send(&pipelined).await;
    let got = tokio::time::timeout(Duration::from_secs(20), s.until_or_closed(b'Z'))
        .await
        .expect("the session hung");
    let text = errors(&got);
    assert!(
        text.contains("08P01") && text.contains("CopyInResponse"),
        "{}: {text}",
        tags(&got)
    );
    assert_eq!(dp.target("SELECT count(*) FROM notes"), "0");
}

#[tokio::test]
async fn a_statement_prepared_before_a_policy_change_is_judged_again_when_executed() {
    let mut dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    let mut batch = parse(
        "ins",
        "INSERT INTO notes (body) VALUES ('prepared-earlier')",
    );
    batch.extend(sync());
    s.send(&batch).await;
    s.until(b'Z').await;
    // Inserts are no longer allowed.
    let rules = DEFAULT_RULES.replace("insert, ", "");
    let (status, v) = dp.cp.api().apply_policy(&dp.policy("devs", &rules)).await;
    assert!(status.is_success(), "{v}");
    dp.agent
        .wait_version(v["revision"].as_u64().unwrap(), Duration::from_secs(10))
        .await;
    let mut run = bind("", "ins");
    run.extend(execute("", 0));
    run.extend(sync());
    s.send(&run).await;
    let got = s.until(b'Z').await;
    assert!(errors(&got).contains("42501"), "{}", errors(&got));
    assert_eq!(
        dp.target("SELECT count(*) FROM notes WHERE body = 'prepared-earlier'"),
        "0"
    );
}

/// The `COPY` output rows of `frames` (CopyData bodies).
fn copy_rows(frames: &[sluice_pgwire::Frame]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| f.tag == b'd')
        .map(|f| f.body().to_vec())
        .collect()
}

#[tokio::test]
async fn copy_to_stdout_is_row_limited_like_a_select() {
    let dp = DataPath::start_with(
        &format!("{DEFAULT_RULES}      - limit: {{ rows: 25 }}\n"),
        Vec::new(),
    )
    .await;
    // psql, text: 25 of the 500 rows, and a warning saying why.
    let (ok, out, err) = dp.psql("COPY (SELECT id FROM items ORDER BY id) TO STDOUT");
    assert!(ok, "{err}");
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids, (1..=25).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(err.contains("limited to 25 rows by policy"), "{err}");

    // CSV with a header line: the header is not a row.
    let (ok, out, err) = dp.psql("COPY items (id, name) TO STDOUT WITH (FORMAT csv, HEADER)");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 26, "{out}");
    assert_eq!(lines[0], "id,name");

    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Binary: the first message carries the header and the first row, the
    // last is the trailer; both pass, rows past the limit do not.
    s.send(&query(
        "COPY (SELECT id FROM items ORDER BY id) TO STDOUT (FORMAT binary)",
    ))
    .await;
    let got = s.until(b'Z').await;
    let rows = copy_rows(&got);
    assert_eq!(rows.len(), 26, "{}", tags(&got));
    assert!(rows[0].starts_with(b"PGCOPY\n\xff\r\n\0"));
    assert_eq!(rows[25], b"\xff\xff");
    assert_eq!(completions(&got), ["COPY 25"]);
    // No rows at all: header and trailer in one message, untouched.
    s.send(&query(
        "COPY (SELECT id FROM items WHERE false) TO STDOUT (FORMAT binary)",
    ))
    .await;
    let got = s.until(b'Z').await;
    assert_eq!(copy_rows(&got).len(), 1);
    assert_eq!(completions(&got), ["COPY 0"]);

    // Two COPYs in one Query, and a COPY run by Execute: each is limited
    // on its own, and the SELECT between them too.
    s.send(&query(
        "COPY (SELECT id FROM items WHERE id <= 30) TO STDOUT (FORMAT text, HEADER); SELECT id FROM items; COPY (SELECT 1) TO STDOUT",
    ))
    .await;
    let got = s.until(b'Z').await;
    assert_eq!(copy_rows(&got).len(), 26 + 1, "{}", tags(&got));
    assert_eq!(first_column(&got).len(), 25);
    assert_eq!(completions(&got), ["COPY 25", "SELECT 25", "COPY 1"]);
    let mut batch = parse("", "COPY (SELECT id FROM items ORDER BY id) TO STDOUT");
    batch.extend(bind("", ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until(b'Z').await;
    assert_eq!(copy_rows(&got).len(), 25, "{}", tags(&got));
    assert_eq!(completions(&got), ["COPY 25"]);
    assert_eq!(errors(&got), "");
}

#[tokio::test]
async fn binary_parameters_are_recorded_by_the_types_the_target_described() {
    use sluice_integration_tests::rawpg::{bind_binary, close_statement, describe_statement};
    let mut dp = DataPath::start().await;
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // One name, two statements in one batch, neither declaring its
    // parameter's type: each description belongs to the statement it
    // described, not to whatever the name holds when it arrives.
    let mut batch = parse("s", "SELECT $1 || 'x'");
    batch.extend(describe_statement("s"));
    batch.extend(close_statement("s"));
    batch.extend(parse("s", "SELECT $1 + 1::int8"));
    batch.extend(describe_statement("s"));
    batch.extend(sync());
    s.send(&batch).await;
    let got = s.until(b'Z').await;
    assert_eq!(tags(&got), "1tT31tTZ", "{}", errors(&got));
    // An int8 in binary: read as 42 only by the second statement's type.
    let mut run = bind_binary("", "s", &[&42i64.to_be_bytes()]);
    run.extend(execute("", 0));
    run.extend(sync());
    s.send(&run).await;
    let got = s.until(b'Z').await;
    assert_eq!(first_column(&got), ["43"], "{}", errors(&got));

    let api = dp.cp.api();
    let parameters = eventually(Duration::from_secs(20), "the statement's event", || async {
        let v = api.get_ok("/api/v1/audit?kind=statement&limit=1000").await;
        v["events"].as_array()?.iter().find_map(|e| {
            (e["statement"] == "SELECT $1 + 1::int8" && e["decision"] == "allow")
                .then(|| e["parameters"].clone())
        })
    })
    .await;
    assert_eq!(parameters, serde_json::json!(["42"]));
}
