//! Just-in-time approval of single statements, end to end: a real
//! PostgreSQL, psql and sqlx as clients, the CLI as approvers, and a real
//! HTTP listener for the webhook. The target confirms what ran.

use std::time::{Duration, Instant};

use sluice_integration_tests::{
    SluiceCli,
    datapath::{DataPath, TARGET_PASSWORD},
    eventually,
};
use sqlx::Connection as _;

/// Deletes need a DBA's approval (`mode`, extra settings in `extra`);
/// reads and writes are allowed.
fn rules(extra: &str) -> String {
    format!(
        r#"
      - approve: {{ sql: {{ statements: [delete] }}, approvers: [dba]{extra} }}
        name: risky
        reason: deletes need a DBA
      - allow: {{ sql: {{ statements: [read, insert, update, transaction, session] }} }}
        name: work
"#
    )
}

/// Pending requests, oldest first: (id, statement, parameters).
fn pending(cli: &SluiceCli) -> Vec<(String, String, Vec<String>)> {
    let out = cli
        .run(&["approvals", "list", "--status", "pending", "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut list: Vec<_> = v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["statement"].as_str().unwrap().to_owned(),
                a["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    list.reverse();
    list
}

/// Waits for a pending request whose statement contains `needle`.
async fn wait_pending(cli: &SluiceCli, needle: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("a pending request for `{needle}`"),
        || async {
            pending(cli)
                .into_iter()
                .find(|(_, s, _)| s.contains(needle))
                .map(|(id, _, _)| id)
        },
    )
    .await
}

/// Waits until request `id` shows as withdrawn; returns how it shows.
async fn wait_withdrawn(cli: &SluiceCli, id: &str) -> String {
    eventually(
        Duration::from_secs(10),
        "the request to be withdrawn",
        || async {
            let out = cli.run(&["approvals", "show", id, "--json"]).ok();
            out.stdout
                .contains(r#""status": "withdrawn""#)
                .then_some(out.stdout)
        },
    )
    .await
}

/// Waits until the agent holds the decision on `id`: the API answers once
/// the decision is on its way to the agent, so a client retrying at once
/// could otherwise get there first.
async fn agent_has_decision(dp: &DataPath, id: &str) {
    eventually(
        Duration::from_secs(20),
        "the agent to hold the decision",
        || async {
            let logs = dp.agent.logs();
            logs.lines()
                .any(|l| l.contains("approval decided") && l.contains(id))
                .then_some(())
        },
    )
    .await;
}

/// Waits until request `id` is on the control plane: a client told its
/// request is queued (the control plane did not confirm it in time) hears
/// of it before it is there.
async fn filed(cli: &SluiceCli, id: &str) {
    eventually(
        Duration::from_secs(20),
        "the request to reach the control plane",
        || async { cli.run(&["approvals", "show", id]).success().then_some(()) },
    )
    .await;
}

/// Approves `id` as `dba` and waits until the agent has the decision.
async fn approve(dba: &SluiceCli, dp: &DataPath, id: &str) {
    filed(dba, id).await;
    dba.run(&["approvals", "approve", id]).ok();
    agent_has_decision(dp, id).await;
}

fn row_exists(dp_target: &dyn Fn(&str) -> String, id: i32) -> bool {
    dp_target(&format!("SELECT count(*) FROM items WHERE id = {id}")) == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_holds_the_statement_until_a_dba_decides() {
    let mut dp = DataPath::start_with(&rules(", timeout: 6s"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let alice = SluiceCli::new(&dp.cp.url(), Some(&dp.token));
    let port = dp.agent.pg_port;
    let token = dp.token.clone();
    let psql = std::thread::spawn(move || {
        sluice_integration_tests::psql_script(
            port,
            &token,
            "DELETE FROM items WHERE id = 1;\nDELETE FROM items WHERE id = 2;\nDELETE FROM items WHERE id = 3;\nSELECT 'after';\n",
        )
    });

    // The first DELETE waits; the requester cannot approve it herself.
    let first = wait_pending(&dba, "id = 1").await;
    let own = alice.run(&["approvals", "approve", &first]);
    assert!(
        !own.success() && own.stderr.contains("someone else"),
        "{own:?}"
    );
    assert!(
        row_exists(&|s| dp.target(s), 1),
        "nothing ran while waiting"
    );
    dba.run(&["approvals", "approve", &first, "--reason", "ticket 42"])
        .ok();
    // The second is denied; the third is left to time out.
    let second = wait_pending(&dba, "id = 2").await;
    dba.run(&["approvals", "deny", &second, "--reason", "not today"])
        .ok();
    let third = wait_pending(&dba, "id = 3").await;
    let started = Instant::now();
    let (out, err) = psql.join().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the third DELETE did not wait for its timeout"
    );
    assert!(out.contains("DELETE 1"), "{out}\n{err}");
    assert!(err.contains(&second) && err.contains("not today"), "{err}");
    assert!(
        err.contains(&third) && err.contains("not decided within"),
        "{err}"
    );
    assert!(out.contains("after"), "the session went on: {out}");
    assert!(!row_exists(&|s| dp.target(s), 1), "the approved DELETE ran");
    assert!(
        row_exists(&|s| dp.target(s), 2),
        "the denied DELETE did not run"
    );
    assert!(
        row_exists(&|s| dp.target(s), 3),
        "the expired DELETE did not run"
    );
    let shown = dba.run(&["approvals", "show", &third, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(v["status"], "expired", "{}", shown.stdout);
}

/// The request id in a retry-mode error.
fn request_id(err: &sqlx::Error) -> String {
    let text = err.to_string();
    let after = text
        .split("approval request ")
        .nth(1)
        .unwrap_or_else(|| panic!("no request id in: {text}"));
    after.split_whitespace().next().unwrap().to_owned()
}

async fn delete(conn: &mut sqlx::PgConnection, id: i32) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
}

#[tokio::test]
async fn a_retry_request_can_be_approved_the_moment_its_client_hears_of_it() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = dp.cp.api().with_token(Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    // An approver bot reading the request id from the error and approving
    // straight away, without looking for the request first (the agent
    // answers only once the control plane has stored it), and the client
    // retrying the moment the approval is given, without waiting for the
    // decision to reach the agent (the agent waits for it).
    for row in 11..=20 {
        let err = delete(&mut conn, row).await.unwrap_err();
        assert!(err.to_string().contains("was sent"), "{err}");
        let id = request_id(&err);
        let (status, body) = dba
            .post(
                &format!("/api/v1/approvals/{id}/approve"),
                serde_json::json!({}),
            )
            .await;
        assert!(
            status.is_success(),
            "approving {id} at once: {status} {body}"
        );
        assert_eq!(delete(&mut conn, row).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_statement_sent_again_while_its_request_is_pending_is_not_filed_again() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let id = request_id(&delete(&mut conn, 30).await.unwrap_err());
    filed(&dba, &id).await;
    // A client retrying in a loop, on this connection and on new ones.
    for attempt in 0..3 {
        let err = if attempt == 1 {
            let mut other = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
            delete(&mut other, 30).await.unwrap_err()
        } else {
            delete(&mut conn, 30).await.unwrap_err()
        };
        assert!(
            err.to_string().contains("still awaiting a decision"),
            "{err}"
        );
        assert_eq!(request_id(&err), id, "pointed at the same request");
    }
    assert!(row_exists(&|s| dp.target(s), 30));
    // Approvers have one request to decide, not four.
    let requests: Vec<_> = pending(&dba)
        .into_iter()
        .filter(|(_, s, p)| s.starts_with("DELETE") && p == &["30"])
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    // Each attempt is on record, naming the request.
    let api = dp.cp.api();
    eventually(
        Duration::from_secs(20),
        "three approval.pending events",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=approval.pending&limit=100")
                .await;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            (events.len() == 3
                && events
                    .iter()
                    .all(|e| e["attributes"]["request_id"] == id.as_str()))
            .then_some(())
        },
    )
    .await;
    // Another value is another statement: a request of its own.
    let other = request_id(&delete(&mut conn, 31).await.unwrap_err());
    assert_ne!(other, id);
    // Approved, the statement runs once; after that it needs a new request.
    dba.run(&["approvals", "approve", &id]).ok();
    assert_eq!(delete(&mut conn, 30).await.unwrap(), 1);
    let again = delete(&mut conn, 30).await.unwrap_err();
    assert_ne!(request_id(&again), id);
}

#[tokio::test]
async fn a_denied_statement_sent_again_is_refused_without_asking_approvers_again() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let id = request_id(&delete(&mut conn, 40).await.unwrap_err());
    filed(&dba, &id).await;
    dba.run(&["approvals", "deny", &id, "--reason", "row 40 is audited"])
        .ok();
    agent_has_decision(&dp, &id).await;
    // A client retrying in a loop, on this connection and a new one.
    for attempt in 0..3 {
        let err = if attempt == 1 {
            let mut other = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
            delete(&mut other, 40).await.unwrap_err()
        } else {
            delete(&mut conn, 40).await.unwrap_err()
        };
        let text = err.to_string();
        assert!(
            text.contains("was denied by bob")
                && text.contains("row 40 is audited")
                && text.contains("not filed again"),
            "{text}"
        );
        assert_eq!(request_id(&err), id, "pointed at the denied request");
    }
    assert!(
        row_exists(&|s| dp.target(s), 40),
        "the row must not be deleted"
    );
    // Approvers are not asked again.
    let requests: Vec<_> = pending(&dba)
        .into_iter()
        .filter(|(_, s, _)| s.starts_with("DELETE"))
        .collect();
    assert!(requests.is_empty(), "{requests:?}");
    // Each attempt is on record, naming the denied request.
    let api = dp.cp.api();
    eventually(
        Duration::from_secs(20),
        "three approval.denied events",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=approval.denied&limit=100")
                .await;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            (events.len() == 3
                && events.iter().all(|e| {
                    e["attributes"]["request_id"] == id.as_str() && e["decision"] == "deny"
                }))
            .then_some(())
        },
    )
    .await;
    // Another value is another statement: it may be asked for.
    let other = request_id(&delete(&mut conn, 41).await.unwrap_err());
    assert_ne!(other, id);
    filed(&dba, &other).await;
    assert_eq!(pending(&dba).len(), 1);
}

#[tokio::test]
async fn a_retry_request_the_control_plane_has_not_confirmed_is_reported_as_queued() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    // The request reaches a control plane that cannot store it yet.
    dp.cp.pause();
    let err = delete(&mut conn, 21).await.unwrap_err();
    dp.cp.resume();
    let text = err.to_string();
    assert!(
        text.contains("is queued") && text.contains("has not confirmed it yet"),
        "the client is not told the request was sent: {text}"
    );
    assert!(row_exists(&|s| dp.target(s), 21));
    // Once the control plane has it, it is approved as any other.
    let id = request_id(&err);
    approve(&dba, &dp, &id).await;
    assert_eq!(delete(&mut conn, 21).await.unwrap(), 1);
}

#[tokio::test]
async fn retry_mode_approves_exactly_one_run_of_exactly_that_statement() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let carol = dp.cp.user_token("carol", &["devs"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();

    let err = delete(&mut conn, 5).await.unwrap_err();
    let id = request_id(&err);
    assert!(row_exists(&|s| dp.target(s), 5));
    approve(&dba, &dp, &id).await;
    // The same statement with another parameter is not covered.
    let other = delete(&mut conn, 6).await.unwrap_err();
    assert_ne!(request_id(&other), id);
    assert!(row_exists(&|s| dp.target(s), 6), "row 6 untouched");
    // The approved one runs, once.
    assert_eq!(delete(&mut conn, 5).await.unwrap(), 1);
    assert!(!row_exists(&|s| dp.target(s), 5));
    let again = delete(&mut conn, 5).await.unwrap_err();
    assert_ne!(request_id(&again), id, "a second run needs a new approval");

    // An approval for alice does not cover carol.
    let err = delete(&mut conn, 7).await.unwrap_err();
    let for_alice = request_id(&err);
    approve(&dba, &dp, &for_alice).await;
    let carol_url = dp.url().replace(&dp.token, &carol);
    let mut carol_conn = sqlx::PgConnection::connect(&carol_url).await.unwrap();
    let err = delete(&mut carol_conn, 7).await.unwrap_err();
    assert!(err.to_string().contains("needs approval"), "{err}");
    assert!(
        row_exists(&|s| dp.target(s), 7),
        "carol could not use alice's approval"
    );
    assert_eq!(delete(&mut conn, 7).await.unwrap(), 1);
    // The agent tells the control plane after the statement ran, not
    // before the client has its answer.
    eventually(
        Duration::from_secs(10),
        "the approval shown as used",
        || async {
            dba.run(&["approvals", "show", &for_alice, "--json"])
                .ok()
                .stdout
                .contains(r#""status": "used""#)
                .then_some(())
        },
    )
    .await;
    // The run's one statement event names the approval it ran on.
    let api = dp.cp.api();
    let ran = eventually(
        Duration::from_secs(20),
        "the approved run's event",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=statement&outcome=allow&limit=1000")
                .await;
            v["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .find(|e| e["attributes"]["approval_id"] == for_alice.as_str())
        },
    )
    .await;
    assert_eq!(ran["statement"], "DELETE FROM items WHERE id = $1", "{ran}");
    assert_eq!(
        (&ran["rows"], &ran["subject"]),
        (&serde_json::json!(1), &serde_json::json!("alice")),
        "{ran}"
    );
}

#[tokio::test]
async fn an_approved_statement_the_audit_spool_refused_runs_later_on_the_same_approval() {
    let mut dp = DataPath::start_with(
        &rules(", mode: retry, ttl: 10m"),
        vec!["--spool-max-bytes".into(), "65536".into()],
    )
    .await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let id = request_id(&delete(&mut conn, 5).await.unwrap_err());
    approve(&dba, &dp, &id).await;

    // No acknowledgements: the spool fills up and refuses statements.
    dp.cp.stop();
    let mut i = 0;
    let full = loop {
        i += 1;
        assert!(i < 5_000, "the spool never filled up");
        if let Err(e) = sqlx::query("INSERT INTO notes (body) VALUES ($1)")
            .bind(format!("note {i}"))
            .execute(&mut conn)
            .await
        {
            break e;
        }
    };
    let code = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    };
    assert_eq!(code(&full).as_deref(), Some("57P03"), "{full}");
    // The approved statement is refused too, and does not run...
    let refused = delete(&mut conn, 5).await.unwrap_err();
    assert_eq!(code(&refused).as_deref(), Some("57P03"), "{refused}");
    assert!(row_exists(&|s| dp.target(s), 5));

    // ...and its approval was not spent on the refusal: once the spool
    // drains, the same statement runs on it, without a new request.
    dp.cp.start_again().await;
    let start = Instant::now();
    let deleted = loop {
        match delete(&mut conn, 5).await {
            Ok(n) => break n,
            Err(e) if code(&e).as_deref() == Some("57P03") => assert!(
                start.elapsed() < Duration::from_secs(30),
                "the spool did not drain: {e}"
            ),
            Err(e) => panic!("the approval was lost: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(deleted, 1);
    assert!(!row_exists(&|s| dp.target(s), 5));
    eventually(
        Duration::from_secs(20),
        "the approval to be used",
        || async {
            let out = dba.run(&["approvals", "show", &id, "--json"]).ok();
            out.stdout.contains(r#""status": "used""#).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_approvers_are_needed_when_min_is_two() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, min: 2"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dave = dp.cp.user_token("dave", &["dba"]).await;
    let mallory = dp.cp.user_token("mallory", &["devs"]).await;
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let id = request_id(&delete(&mut conn, 9).await.unwrap_err());
    filed(&SluiceCli::new(&dp.cp.url(), Some(&bob)), &id).await;
    let outsider = SluiceCli::new(&dp.cp.url(), Some(&mallory)).run(&["approvals", "approve", &id]);
    assert!(
        !outsider.success() && outsider.stderr.contains("dba"),
        "{outsider:?}"
    );
    let first = SluiceCli::new(&dp.cp.url(), Some(&bob))
        .run(&["approvals", "approve", &id])
        .ok();
    assert!(first.stdout.contains("1 of 2"), "{}", first.stdout);
    let twice = SluiceCli::new(&dp.cp.url(), Some(&bob)).run(&["approvals", "approve", &id]);
    assert!(!twice.success(), "one approver counts once");
    let err = delete(&mut conn, 9).await.unwrap_err();
    assert!(
        err.to_string().contains("still awaiting a decision"),
        "one approval is not enough: {err}"
    );
    assert_eq!(request_id(&err), id, "the same request, not another");
    assert!(row_exists(&|s| dp.target(s), 9));
    SluiceCli::new(&dp.cp.url(), Some(&dave))
        .run(&["approvals", "approve", &id])
        .ok();
    agent_has_decision(&dp, &id).await;
    assert_eq!(delete(&mut conn, 9).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_survives_a_control_plane_restart() {
    let mut dp = DataPath::start_with(&rules(", timeout: 60s"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let url = dp.url();
    let held = tokio::spawn(async move {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        delete(&mut conn, 11).await
    });
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let id = wait_pending(&dba, "DELETE").await;
    dp.cp.restart().await;
    // The agent reconnects and resends; the stored request can be decided.
    dba.run(&["approvals", "approve", &id]).ok();
    let done = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("the held statement was released")
        .unwrap();
    assert_eq!(done.unwrap(), 1);
    assert!(!row_exists(&|s| dp.target(s), 11));
}

#[tokio::test]
async fn the_webhook_and_the_event_stream_get_the_request_without_any_credential() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks/approvals", listener.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (head, body) = read_http_request(&mut s).await;
                use tokio::io::AsyncWriteExt as _;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tx.send((head, body)).await;
            });
        }
    });
    let mut dp = DataPath::start_full(
        &rules(", mode: retry"),
        Vec::new(),
        vec![("SLUICE_APPROVAL_WEBHOOK_URL".into(), hook)],
    )
    .await;
    // Live updates: subscribe to the event stream before the request.
    let admin_token = dp.cp.admin_token();
    let mut events = reqwest::Client::new()
        .get(format!("{}/api/v1/approvals/events", dp.cp.url()))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    // Someone neither requester, approver nor admin, on the same stream.
    let outsider_token = dp.cp.user_token("mallory", &["sales"]).await;
    let mut outsider = reqwest::Client::new()
        .get(format!("{}/api/v1/approvals/events", dp.cp.url()))
        .bearer_auth(&outsider_token)
        .send()
        .await
        .unwrap();
    assert!(outsider.status().is_success());
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let id = request_id(&delete(&mut conn, 12).await.unwrap_err());
    let mut streamed = String::new();
    while !streamed.contains("event: approval.request") || !streamed.contains(&id) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), events.chunk())
            .await
            .expect("an approval event was streamed")
            .unwrap()
            .expect("the stream stays open");
        streamed.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        streamed.contains("DELETE FROM items WHERE id = $1"),
        "{streamed}"
    );
    // The same event went to every subscriber at once; the outsider's
    // stream carried nothing of it.
    let mut seen = String::new();
    while let Ok(chunk) = tokio::time::timeout(Duration::from_secs(2), outsider.chunk()).await {
        match chunk.unwrap() {
            Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    assert!(
        !seen.contains(&id) && !seen.contains("DELETE"),
        "an outsider saw the request: {seen}"
    );
    let api = sluice_integration_tests::api::Api::new(&dp.cp.url(), Some(outsider_token));
    let (s, v) = api.get("/api/v1/approvals").await;
    assert!(s.is_success(), "{v}");
    assert_eq!(v["approvals"], serde_json::json!([]));
    let (s, _) = api.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(s.as_u16(), 403);
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the webhook was called")
        .unwrap();
    assert!(head.starts_with("POST /hooks/approvals"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "approval.request");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["subject"], "alice");
    assert_eq!(v["resource"], "app");
    assert_eq!(v["statement"], "DELETE FROM items WHERE id = $1");
    assert_eq!(v["parameters"], serde_json::json!(["12"]));
    assert_eq!(v["rule"], "devs-on-app/risky");
    assert!(
        v["reason"].as_str().unwrap().contains("deletes need a DBA"),
        "{v}"
    );
    assert!(
        !body.contains(TARGET_PASSWORD),
        "a credential reached the webhook"
    );
    assert!(
        !body.contains(&dp.token),
        "the client's token reached the webhook"
    );
}

/// Reads one HTTP/1.1 request: (request line and headers, body).
async fn read_http_request(s: &mut tokio::net::TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
            return (head, body);
        }
    }
    (String::from_utf8_lossy(&buf).into_owned(), String::new())
}

#[tokio::test]
async fn cancelling_a_held_statement_withdraws_its_request() {
    use sluice_integration_tests::rawpg::{RawSession, errors, first_column, query};
    let mut dp = DataPath::start_with(&rules(", timeout: 60s"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // A cancel from before the hold (a driver's statement timeout, say)
    // does not withdraw the next held statement. The cancel travels on its
    // own connection: wait until the agent has handled it, or under load it
    // could arrive after the hold began, which would rightly withdraw it.
    s.cancel().await;
    eventually(
        Duration::from_secs(20),
        "the agent to handle the cancel",
        || async {
            dp.agent
                .logs()
                .contains("cancel request forwarded")
                .then_some(())
        },
    )
    .await;
    s.send(&query("SELECT 1")).await;
    s.until(b'Z').await;
    s.send(&query("DELETE FROM items WHERE id = 13")).await;
    let id = wait_pending(&dba, "id = 13").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pending(&dba).len(),
        1,
        "still pending after an earlier cancel"
    );
    s.cancel().await;
    let got = s.until(b'Z').await;
    let text = errors(&got);
    assert!(text.contains("57014") && text.contains(&id), "{text}");
    let shown = wait_withdrawn(&dba, &id).await;
    assert!(shown.contains("DELETE FROM items WHERE id = 13"));
    assert!(row_exists(&|s| dp.target(s), 13));
    let late = dba.run(&["approvals", "approve", &id]);
    assert!(!late.success(), "a withdrawn request cannot be approved");
    s.send(&query("SELECT 'still-usable'")).await;
    assert_eq!(first_column(&s.until(b'Z').await), ["still-usable"]);
}

#[tokio::test]
async fn a_client_that_leaves_while_held_withdraws_its_request() {
    use sluice_integration_tests::rawpg::{RawSession, query};
    let mut dp = DataPath::start_with(&rules(", timeout: 60s"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    s.send(&query("DELETE FROM items WHERE id = 14")).await;
    let id = wait_pending(&dba, "id = 14").await;
    drop(s);
    wait_withdrawn(&dba, &id).await;
    // Nobody can approve it into running later.
    let late = dba.run(&["approvals", "approve", &id]);
    assert!(!late.success(), "a withdrawn request cannot be approved");
    assert!(row_exists(&|s| dp.target(s), 14));
    // The session's record ends with the request's fate, not with an
    // open request.
    let trail = session_trail(&mut dp, &id).await;
    let kinds: Vec<&str> = trail.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.ends_with(&["approval.request", "approval.withdrawn", "session.end"]),
        "{kinds:?}"
    );
    let withdrawn = &trail[trail.len() - 2];
    assert_eq!(withdrawn["attributes"]["request_id"], id.as_str());
    assert_eq!(withdrawn["statement"], "DELETE FROM items WHERE id = 14");
    assert!(
        withdrawn["error"].as_str().unwrap().contains("did not run"),
        "{withdrawn}"
    );
}

/// The events of the session that filed approval request `id`, in its
/// chain's order, once its end is on record.
async fn session_trail(dp: &mut DataPath, id: &str) -> Vec<serde_json::Value> {
    let api = dp.cp.api();
    eventually(
        Duration::from_secs(20),
        "the session's end on record",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=approval.request&limit=1000")
                .await;
            let request = v["events"]
                .as_array()?
                .iter()
                .find(|e| e["attributes"]["request_id"] == id)?;
            let session = request["session_id"].as_str()?.to_owned();
            let v = api
                .get_ok(&format!("/api/v1/audit?session={session}&limit=1000"))
                .await;
            let mut events = v["events"].as_array()?.clone();
            events.sort_by_key(|e| e["session_seq"].as_i64());
            (events.last()?["kind"] == "session.end").then_some(events)
        },
    )
    .await
}

#[tokio::test]
async fn an_approval_for_the_text_null_does_not_cover_sql_null() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    // Deletes row 20 only when the parameter is SQL NULL.
    let by_name = |name: Option<&'static str>| {
        sqlx::query("DELETE FROM items WHERE id = 20 AND $1::text IS NULL").bind(name)
    };
    // Approved for the four-letter text 'NULL' (which matches no row)...
    let err = by_name(Some("NULL")).execute(&mut conn).await.unwrap_err();
    let id = request_id(&err);
    approve(&dba, &dp, &id).await;
    // ...it does not let the same statement run with SQL NULL, although
    // both read `NULL` in the audit trail.
    let err = by_name(None).execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("needs approval"), "{err}");
    assert_ne!(request_id(&err), id);
    assert!(row_exists(&|s| dp.target(s), 20), "row 20 is still there");
    // The approved one runs (and deletes nothing).
    let done = by_name(Some("NULL")).execute(&mut conn).await.unwrap();
    assert_eq!(done.rows_affected(), 0);
    assert!(row_exists(&|s| dp.target(s), 20));
}

#[tokio::test]
async fn a_statement_too_large_to_review_is_not_put_to_approvers() {
    let mut dp = DataPath::start_with(&rules(", mode: retry, ttl: 10m"), Vec::new()).await;
    let bob = dp.cp.user_token("bob", &["dba"]).await;
    let dba = SluiceCli::new(&dp.cp.url(), Some(&bob));
    let mut conn = sqlx::PgConnection::connect(&dp.url()).await.unwrap();
    let padding = "x".repeat(1024 * 1024);
    let err = sqlx::query("DELETE FROM items WHERE id = 41 AND name <> $1")
        .bind(&padding)
        .execute(&mut conn)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("too large to put to approvers"), "{text}");
    assert!(pending(&dba).is_empty(), "no request was filed");
    assert!(row_exists(&|s| dp.target(s), 41));
    // The denial is on record like any other.
    let api = dp.cp.api();
    eventually(
        Duration::from_secs(20),
        "the denial in the audit trail",
        || async {
            let v = api
                .get_ok("/api/v1/audit?kind=statement&subject=alice&limit=10")
                .await;
            v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["decision"] == "deny"
                        && e["statement"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("DELETE FROM items WHERE id = 41"))
                        && e.to_string().contains("too large to put to approvers")
                })
                .then_some(())
        },
    )
    .await;
    // The session goes on.
    let one: (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one.0, 1);
}

#[tokio::test]
async fn a_statement_that_needs_approval_is_bound_only_with_its_execute() {
    use sluice_integration_tests::rawpg::{
        RawSession, bind, errors, execute, flush, parse, sync, tags,
    };
    // Calling `app_note` needs approval. It is STABLE, so planning a
    // statement that calls it with a constant runs it, and Bind plans:
    // a Bind sent without its Execute would run it before anyone approved.
    let rules = r#"
      - approve: { sql: { functions: [app_note] }, approvers: [dba], mode: retry, ttl: 10m }
        name: notes-need-approval
      - allow: { sql: { statements: [read, user_function, transaction] } }
"#;
    let dp = DataPath::start_with(rules, Vec::new()).await;
    dp.target(
        "SET ROLE app; CREATE SEQUENCE notes_seen; \
         CREATE FUNCTION app_note(v int) RETURNS int LANGUAGE plpgsql STABLE AS \
           $$ BEGIN PERFORM nextval('notes_seen'); RETURN v; END $$",
    );
    let not_run = || {
        assert_eq!(
            dp.target("SELECT is_called FROM notes_seen"),
            "f",
            "app_note ran"
        );
    };
    let sql = "SELECT id FROM items WHERE id = app_note(1) /* b1 */";
    let mut s = RawSession::connect(dp.agent.pg_port, "app", &dp.token).await;
    // Parse and Bind, then Flush: refused, and none of it sent.
    s.send(&[parse("", sql), bind("", ""), flush()].concat())
        .await;
    s.send(&sync()).await;
    let text = errors(&s.until(b'Z').await);
    not_run();
    assert!(
        text.contains("0A000")
            && text.contains("the unnamed portal binds")
            && text.contains("send its Bind and Execute together"),
        "{text}"
    );
    // Inside a transaction block, to a named portal, with Sync.
    s.send(
        &[
            parse("", "BEGIN"),
            bind("", ""),
            execute("", 0),
            parse("n1", sql),
            bind("p1", "n1"),
            sync(),
        ]
        .concat(),
    )
    .await;
    let frames = s.until(b'Z').await;
    let text = errors(&frames);
    assert!(
        text.contains("0A000") && text.contains("portal \"p1\" binds"),
        "{}: {text}",
        tags(&frames)
    );
    s.send(&sluice_integration_tests::rawpg::query("ROLLBACK"))
        .await;
    s.until(b'Z').await;
    assert!(!dp.pg.logs().contains("/* b1 */"), "the target saw it");
    not_run();
    // With its Execute, the statement is put to approvers (retry mode:
    // refused until approved), and nothing runs meanwhile.
    s.send(&[parse("", sql), bind("", ""), execute("", 0), sync()].concat())
        .await;
    let text = errors(&s.until(b'Z').await);
    assert!(text.contains("was sent"), "{text}");
    not_run();
    // EXPLAIN plans without running the statement, but planning runs it.
    let (ok, _, err) = dp.psql("EXPLAIN SELECT id FROM items WHERE id = app_note(2)");
    assert!(!ok && err.contains("was sent"), "{err}");
    not_run();
    // A Parse alone plans nothing and goes through.
    s.send(&[parse("n2", sql), sync()].concat()).await;
    let frames = s.until(b'Z').await;
    assert_eq!(tags(&frames), "1Z", "{}", errors(&frames));
    not_run();
}
