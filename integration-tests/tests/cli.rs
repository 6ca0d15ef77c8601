//! The `sluice` command-line client, driven as a user would (real binary,
//! `SLUICE_URL` / `SLUICE_TOKEN` in the environment) against a real control
//! plane and agent.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_integration_tests::{
    AgentProc, ControlPlaneProc, SluiceCli, eventually, free_port, psql_via_agent,
};

const POLICY: &str = "resources:
  - name: orders
    kind: postgres
    agent: edge
    address: 127.0.0.1:5432
    database: orders
    labels: { env: prod }
policies:
  - name: devs-on-orders
    subjects: { groups: [devs] }
    resources: { names: [orders] }
    rules:
      - deny: { sql: { statements: [ddl] } }
      - allow: { sql: { statements: [read] } }
";

/// A control plane and a CLI holding its admin token.
async fn setup() -> (ControlPlaneProc, SluiceCli) {
    let mut cp = ControlPlaneProc::start().await;
    let cli = SluiceCli::new(&cp.url(), Some(&cp.admin_token()));
    (cp, cli)
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The table row whose first cell is `name`.
fn row<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

fn apply(cli: &SluiceCli, name: &str, text: &str) -> String {
    let path = cli.dir().join(name);
    std::fs::write(&path, text).expect("write policy file");
    let out = cli.run(&["policy", "apply", name]).ok();
    assert!(
        out.stdout.starts_with("applied policy version"),
        "{}",
        out.stdout
    );
    path.display().to_string()
}

#[tokio::test]
async fn whoami_shows_the_tokens_subject_and_roles() {
    let (cp, cli) = setup().await;
    let out = cli.run(&["whoami"]).ok();
    assert!(
        row(&out.stdout, "subject:").is_some_and(|l| l.contains("test-admin")),
        "{}",
        out.stdout
    );
    assert!(
        row(&out.stdout, "roles:").is_some_and(|l| l.contains("admin")),
        "{}",
        out.stdout
    );

    let me = json_of(&cli.run(&["whoami", "--json"]).ok().stdout);
    assert_eq!(me["subject"], "test-admin", "{me}");
    assert_eq!(me["roles"], json!(["admin"]), "{me}");
    assert_eq!(me["issuer"], cp.url(), "{me}");
}

#[tokio::test]
async fn resources_create_list_show_delete_round_trip() {
    let (_cp, cli) = setup().await;
    let out = cli
        .run(&[
            "resources",
            "create",
            "orders",
            "--kind",
            "postgres",
            "--agent",
            "edge",
            "--address",
            "db.internal:5432",
            "--database",
            "orders",
            "--credential",
            "orders-ro",
            "--label",
            "env=prod",
        ])
        .ok();
    assert!(
        out.stdout.starts_with("saved resource orders"),
        "{}",
        out.stdout
    );

    let list = cli.run(&["resources", "list"]).ok().stdout;
    let line = row(&list, "orders").unwrap_or_else(|| panic!("orders not listed:\n{list}"));
    for cell in [
        "postgres",
        "edge",
        "db.internal:5432",
        "orders-ro",
        "env=prod",
    ] {
        assert!(line.contains(cell), "`{cell}` missing from {line}");
    }

    let shown = cli.run(&["resources", "show", "orders"]).ok().stdout;
    assert!(
        row(&shown, "address:").is_some_and(|l| l.contains("db.internal:5432")),
        "{shown}"
    );
    assert!(
        row(&shown, "database:").is_some_and(|l| l.contains("orders")),
        "{shown}"
    );
    let as_json = json_of(
        &cli.run(&["resources", "show", "orders", "--json"])
            .ok()
            .stdout,
    );
    assert_eq!(as_json["labels"], json!({"env": "prod"}), "{as_json}");
    assert_eq!(as_json["tls_mode"], "disable", "{as_json}");

    let out = cli.run(&["resources", "delete", "orders"]).ok();
    assert_eq!(out.stdout.trim(), "deleted resource orders");
    let list = cli.run(&["resources", "list", "--json"]).ok().stdout;
    assert_eq!(json_of(&list)["resources"], json!([]), "{list}");
    let gone = cli.run(&["resources", "show", "orders"]);
    assert_eq!(gone.code, Some(1), "{gone:?}");
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
}

#[tokio::test]
async fn credentials_set_from_stdin_and_rotate_bump_the_version_without_printing_the_secret() {
    let (_cp, cli) = setup().await;
    let first = format!("stdin-secret-{}", std::process::id());
    let second = format!("rotated-secret-{}", std::process::id());

    let out = cli
        .run_with_stdin(
            &[
                "credentials",
                "set",
                "orders-ro",
                "--username",
                "reader",
                "--secret-stdin",
            ],
            Some(&format!("{first}\n")),
        )
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "saved credential orders-ro (username reader, version 1)"
    );
    let out = cli
        .run_with_stdin(
            &["credentials", "rotate", "orders-ro", "--secret-stdin"],
            Some(&second),
        )
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "rotated credential orders-ro: now version 2 (username reader)"
    );

    let list = cli.run(&["credentials", "list"]).ok();
    let line =
        row(&list.stdout, "orders-ro").unwrap_or_else(|| panic!("not listed:\n{}", list.stdout));
    assert_eq!(line.split_whitespace().nth(1), Some("reader"), "{line}");
    assert_eq!(line.split_whitespace().nth(2), Some("2"), "{line}");
    let all = cli.run(&["credentials", "list", "--json"]).ok();
    for text in [&list.stdout, &list.stderr, &all.stdout, &all.stderr] {
        assert!(
            !text.contains(&first) && !text.contains(&second),
            "a secret was printed:\n{text}"
        );
    }

    // Rotating something that does not exist says so.
    let missing = cli.run_with_stdin(
        &["credentials", "rotate", "nope", "--secret-stdin"],
        Some("x"),
    );
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[tokio::test]
async fn policy_apply_list_show_diff_round_trip() {
    let (_cp, cli) = setup().await;
    apply(&cli, "v1.yaml", POLICY);
    let v2 = POLICY.replace("statements: [read] }", "statements: [read, transaction] }");
    let path = cli.dir().join("v2.yaml");
    std::fs::write(&path, &v2).expect("write");
    let out = cli
        .run(&[
            "policy",
            "apply",
            "v2.yaml",
            "--comment",
            "allow transactions",
        ])
        .ok();
    assert!(
        out.stdout
            .starts_with("applied policy version 2 (policies: 1, resources: 1"),
        "{}",
        out.stdout
    );

    let list = cli.run(&["policy", "list"]).ok().stdout;
    assert!(row(&list, "1").is_some_and(|l| !l.contains('*')), "{list}");
    let current = row(&list, "2").unwrap_or_else(|| panic!("version 2 not listed:\n{list}"));
    assert!(
        current.contains('*')
            && current.contains("allow transactions")
            && current.contains("test-admin"),
        "{current}"
    );

    assert_eq!(cli.run(&["policy", "show"]).ok().stdout, v2);
    assert_eq!(cli.run(&["policy", "show", "1"]).ok().stdout, POLICY);

    let diff = cli.run(&["policy", "diff", "1"]).ok().stdout;
    assert!(
        diff.contains("--- version 1") && diff.contains("+++ version 2"),
        "{diff}"
    );
    assert!(
        diff.contains("-      - allow: { sql: { statements: [read] } }"),
        "{diff}"
    );
    assert!(
        diff.contains("+      - allow: { sql: { statements: [read, transaction] } }"),
        "{diff}"
    );
    let same = cli.run(&["policy", "diff", "2", "2"]).ok();
    assert_eq!(same.stdout, "", "{same:?}");
    assert!(same.stderr.contains("no differences"), "{}", same.stderr);
}

#[tokio::test]
async fn policy_apply_of_an_invalid_file_exits_1_with_file_line_diagnostics() {
    let (_cp, cli) = setup().await;
    let bad = POLICY.replace("statements: [ddl]", "statements: [ddl, dorp]");
    std::fs::write(cli.dir().join("bad.yaml"), &bad).expect("write");
    let out = cli.run(&["policy", "apply", "bad.yaml"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.lines().any(|l| l.starts_with("bad.yaml:13: policies[0].rules[0].deny.sql.statements[1]: unknown statement kind `dorp`")),
        "expected FILE:LINE: PATH: MESSAGE on stderr:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("policy not applied"), "{}", out.stderr);
    assert_eq!(out.stdout, "");

    std::fs::write(
        cli.dir().join("broken.yaml"),
        "policies:\n  - name: p\n    subjects: { groups: [devs }\n",
    )
    .expect("write");
    let out = cli.run(&["policy", "apply", "broken.yaml"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.lines().any(|l| l.starts_with("broken.yaml:3: ")),
        "{}",
        out.stderr
    );

    let list = json_of(&cli.run(&["policy", "list", "--json"]).ok().stdout);
    assert_eq!(
        list["versions"],
        json!([]),
        "nothing may be applied: {list}"
    );
}

#[tokio::test]
async fn policy_explain_says_whether_a_subject_may_connect() {
    let (_cp, cli) = setup().await;
    apply(&cli, "policy.yaml", POLICY);

    let allowed = cli
        .run(&[
            "policy",
            "explain",
            "--subject",
            "alice",
            "--group",
            "devs",
            "--resource",
            "orders",
        ])
        .ok();
    assert!(
        row(&allowed.stdout, "connect:")
            .is_some_and(|l| l.contains("allowed (policy devs-on-orders)")),
        "{}",
        allowed.stdout
    );
    let denied = cli
        .run(&[
            "policy",
            "explain",
            "--subject",
            "bob",
            "--group",
            "sales",
            "--resource",
            "orders",
        ])
        .ok();
    assert!(
        row(&denied.stdout, "connect:").is_some_and(|l| l.contains("denied")),
        "{}",
        denied.stdout
    );

    let yes = json_of(
        &cli.run(&[
            "policy",
            "explain",
            "--subject",
            "alice",
            "--group",
            "devs",
            "--resource",
            "orders",
            "--json",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(
        (yes["connect"].clone(), yes["connect_policy"].clone()),
        (json!(true), json!("devs-on-orders")),
        "{yes}"
    );
    let no = json_of(
        &cli.run(&[
            "policy",
            "explain",
            "--subject",
            "bob",
            "--group",
            "sales",
            "--resource",
            "orders",
            "--json",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(no["connect"], false, "{no}");

    let unknown = cli.run(&["policy", "explain", "--subject", "a", "--resource", "nope"]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(unknown.stderr.contains("not found"), "{}", unknown.stderr);
}

#[tokio::test]
async fn agents_lists_an_attached_agent_as_connected() {
    let (mut cp, cli) = setup().await;
    let mut agent = AgentProc::start(&mut cp, "edge").await;
    let enforced = agent.wait_ready().await.to_string();
    let line = eventually(
        Duration::from_secs(10),
        "`sluice agents` to show edge connected",
        || async {
            let out = cli.run(&["agents"]).ok();
            row(&out.stdout, "edge")
                .map(str::to_owned)
                .filter(|l| l.split_whitespace().nth(1) == Some("yes"))
        },
    )
    .await;
    assert_ne!(
        line.split_whitespace().nth(3),
        Some("-"),
        "the agent version is shown: {line}"
    );
    // The SNAPSHOT column is what the agent reports in its heartbeats
    // (every 5 s), so it may lag the enforced version for one period.
    eventually(
        Duration::from_secs(15),
        "`sluice agents` to show the snapshot version edge enforces",
        || async {
            let out = cli.run(&["agents"]).ok();
            row(&out.stdout, "edge")
                .filter(|l| l.split_whitespace().nth(2) == Some(enforced.as_str()))
                .map(|_| ())
        },
    )
    .await;
    let listed = json_of(&cli.run(&["agents", "--json"]).ok().stdout);
    assert_eq!(listed["agents"][0]["connected"], true, "{listed}");
}

#[tokio::test]
async fn join_token_create_prints_only_a_token_that_enrolls_an_agent() {
    let (cp, cli) = setup().await;
    let out = cli
        .run(&["join-token", "create", "--agent", "edge-2", "--ttl", "5m"])
        .ok();
    let token = out.stdout.trim();
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "only the token goes to stdout:\n{}",
        out.stdout
    );
    assert!(
        token.starts_with("sjt1.") && token.split('.').count() == 4,
        "{token}"
    );
    assert!(
        out.stderr.contains("edge-2") && out.stderr.contains("CA fingerprint"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(token),
        "stdout is captured, so stderr must not repeat the token:\n{}",
        out.stderr
    );

    let mut agent = AgentProc::spawn_with_token(&cp.grpc_url(), "edge-2", Some(token), Vec::new());
    agent.wait_ready().await;
    assert_eq!(agent.status().await.expect("status")["agent"], "edge-2");
}

#[tokio::test]
async fn audit_tail_json_shows_the_session_start_denied_for_a_bad_token() {
    let (mut cp, cli) = setup().await;
    apply(&cli, "policy.yaml", POLICY);
    let agent = AgentProc::start(&mut cp, "edge").await;

    let (ok, _, stderr) = psql_via_agent(agent.pg_port, "orders", "not-a-valid-token", "select 1");
    assert!(!ok, "psql with a bad token must fail");
    assert!(stderr.contains("token rejected"), "{stderr}");

    let event = eventually(
        Duration::from_secs(15),
        "the denied session in `sluice audit tail --json`",
        || async {
            let out = cli.run(&["audit", "tail", "--json"]).ok();
            out.stdout.lines().map(json_of).find(|e| {
                e["kind"] == "session.start" && e["decision"] == "deny" && e["resource"] == "orders"
            })
        },
    )
    .await;
    assert_eq!(event["agent"], "edge", "{event}");
    assert!(
        event["error"]
            .as_str()
            .is_some_and(|e| e.contains("token rejected")),
        "{event}"
    );
    assert!(
        !event.to_string().contains("not-a-valid-token"),
        "the audit trail must not keep the presented token: {event}"
    );

    // The filters reach the server: the same event by kind and outcome.
    let filtered = cli
        .run(&[
            "audit",
            "tail",
            "--json",
            "--kind",
            "session.start",
            "--outcome",
            "deny",
        ])
        .ok();
    assert!(
        filtered
            .stdout
            .lines()
            .map(json_of)
            .any(|e| e["id"] == event["id"]),
        "{}",
        filtered.stdout
    );
}

#[tokio::test]
async fn token_issue_prints_a_bearer_token_the_api_accepts() {
    let (_cp, cli) = setup().await;
    let out = cli
        .run(&[
            "token",
            "issue",
            "--subject",
            "ci-bot",
            "--group",
            "ci",
            "--service-account",
            "--ttl",
            "10m",
        ])
        .ok();
    let token = out.stdout.trim();
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "only the token goes to stdout:\n{}",
        out.stdout
    );

    let as_bot = cli.with_token(Some(token));
    let me = json_of(&as_bot.run(&["whoami", "--json"]).ok().stdout);
    assert_eq!(me["subject"], "ci-bot", "{me}");
    assert_eq!(me["groups"], json!(["ci"]), "{me}");
    assert_eq!(me["kind"], "service_account", "{me}");
    // Not an admin: the API says so and the CLI explains it.
    let denied = as_bot.run(&["resources", "list"]);
    assert_eq!(denied.code, Some(1), "{denied:?}");
    assert!(
        denied.stderr.contains("permission denied"),
        "{}",
        denied.stderr
    );
}

#[tokio::test]
async fn missing_token_exits_1_and_says_how_to_authenticate() {
    let (_cp, cli) = setup().await;
    let out = cli.with_token(None).run(&["whoami"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.starts_with("error: no token:"), "{}", out.stderr);
    assert!(out.stderr.contains("SLUICE_TOKEN"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[tokio::test]
async fn rejected_token_exits_1_with_not_authenticated() {
    let (_cp, cli) = setup().await;
    let out = cli.with_token(Some("not-a-token")).run(&["whoami"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.starts_with("error: not authenticated:"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("not-a-token"),
        "the token must not be echoed: {}",
        out.stderr
    );
}

#[tokio::test]
async fn unreachable_url_exits_1_with_cannot_reach() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let cli = SluiceCli::new(&url, Some("some-token"));
    let out = cli.run(&["resources", "list"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach the control plane at {url}")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("some-token"), "{}", out.stderr);
}
