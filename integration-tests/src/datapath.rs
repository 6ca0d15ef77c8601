//! A complete data path for PostgreSQL tests: a real target database with
//! an application role that logs in with SCRAM, a control plane holding
//! that role's password in its vault, a policy, and an enrolled agent.

use serde_json::json;

use crate::{AgentProc, ControlPlaneProc, Postgres};

/// The password the agent uses upstream; tests assert clients never see it.
pub const TARGET_PASSWORD: &str = "Upstream-Secret-7f3a9c21";

pub const DEFAULT_RULES: &str = r#"
      - deny: { sql: { statements: [ddl, dcl, dynamic, set_role, set_session_authorization, reset_all, function_call, delete, truncate] } }
        name: no-changes
        reason: schema changes and deletes are not allowed here
      - deny: { sql: { functions: ["pg_read_file", "pg_read_binary_file", "pg_ls_dir", "dblink*", "lo_*"] } }
        name: no-server-files
        reason: server-side file access is not allowed
      - allow: { sql: { statements: [read, insert, update, copy, transaction, session] } }
        name: work
"#;

pub struct DataPath {
    pub pg: Postgres,
    pub cp: ControlPlaneProc,
    pub agent: AgentProc,
    /// A token of subject `alice` in group `devs` (granted).
    pub token: String,
}

impl DataPath {
    pub async fn start() -> Self {
        Self::start_with(DEFAULT_RULES, Vec::new()).await
    }

    /// `rules` is the YAML list of rules of the `devs` policy (indented 6).
    pub async fn start_with(rules: &str, agent_args: Vec<String>) -> Self {
        Self::start_full(rules, agent_args, Vec::new()).await
    }

    /// Also passes `cp_env` to the control plane.
    pub async fn start_full(
        rules: &str,
        agent_args: Vec<String>,
        cp_env: Vec<(String, String)>,
    ) -> Self {
        Self::start_on(Postgres::start(), rules, agent_args, cp_env).await
    }

    /// [`DataPath::start_full`] on the server `pg` (started by the caller).
    pub async fn start_on(
        pg: Postgres,
        rules: &str,
        agent_args: Vec<String>,
        cp_env: Vec<(String, String)>,
    ) -> Self {
        create_target(&pg);
        let mut cp = ControlPlaneProc::start_with(cp_env).await;
        let revision = configure(&mut cp, pg.port, rules).await;
        let join = cp.join_token("edge").await;
        let mut agent =
            AgentProc::spawn_with_token(&cp.grpc_url(), "edge", Some(&join), agent_args);
        agent.wait_ready().await;
        agent
            .wait_version(revision, std::time::Duration::from_secs(10))
            .await;
        let token = cp.user_token("alice", &["devs"]).await;
        Self {
            pg,
            cp,
            agent,
            token,
        }
    }

    /// The policy document the data path starts with, granting `group`
    /// instead of `devs`, with `rules`.
    pub fn policy(&self, group: &str, rules: &str) -> String {
        policy_document(self.pg.port, group, rules)
    }

    /// psql through the agent as alice; (success, stdout, stderr).
    pub fn psql(&self, sql: &str) -> (bool, String, String) {
        crate::psql_via_agent(self.agent.pg_port, "app", &self.token, sql)
    }

    /// A connection string for drivers (sqlx, pgbench).
    pub fn url(&self) -> String {
        format!(
            "postgres://alice:{}@127.0.0.1:{}/app?sslmode=disable",
            self.token, self.agent.pg_port
        )
    }

    /// Waits (up to 20 s) until the agent has logged `needle`.
    pub async fn agent_logged(&self, needle: &str) {
        crate::eventually(std::time::Duration::from_secs(20), needle, || async {
            self.agent.logs().contains(needle).then_some(())
        })
        .await;
    }

    /// The agent's watch for the target's DDL notices, as its `/status`
    /// shows it.
    pub async fn ddl_watch(&self) -> serde_json::Value {
        let status = self.agent.status().await.expect("the agent's /status");
        status["ddl_notices"]["app"].clone()
    }

    /// Waits until the agent's `/status` says `field` of the DDL watch is
    /// `want`.
    pub async fn ddl_watch_shows(&self, field: &str, want: serde_json::Value) {
        crate::eventually(
            std::time::Duration::from_secs(20),
            &format!("/status ddl_notices.app.{field} = {want}"),
            || async { (self.ddl_watch().await[field] == want).then_some(()) },
        )
        .await;
    }

    /// Runs SQL directly on the target as the superuser (the ground truth).
    pub fn target(&self, sql: &str) -> String {
        self.pg.psql("app", sql).trim().to_owned()
    }
}

/// Creates the target: database `app` owned by role `app` (which logs in
/// with [`TARGET_PASSWORD`]), with tables `items` (rows 1 to 500) and
/// `notes`.
pub fn create_target(pg: &Postgres) {
    pg.psql(
        "postgres",
        &format!("CREATE ROLE app LOGIN PASSWORD '{TARGET_PASSWORD}'"),
    );
    pg.psql("postgres", "CREATE DATABASE app OWNER app");
    pg.psql(
        "app",
        "SET ROLE app; CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g; \
         CREATE TABLE notes (id serial PRIMARY KEY, body text);",
    );
}

/// Stores the target's credential and applies the policy granting `devs`
/// resource `app` (on the target at `port`, run by agent `edge`) with
/// `rules`; returns the configuration revision.
pub async fn configure(cp: &mut ControlPlaneProc, port: u16, rules: &str) -> u64 {
    let api = cp.api();
    let (s, v) = api
        .put(
            "/api/v1/credentials/app-db",
            json!({"username": "app", "secret": TARGET_PASSWORD}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = api
        .apply_policy(&policy_document(port, "devs", rules))
        .await;
    assert!(s.is_success(), "policy rejected: {v}");
    v["revision"].as_u64().unwrap_or(0)
}

/// Resource `app` on the target at `port`, and policy `devs-on-app`
/// granting `group` with `rules`.
fn policy_document(port: u16, group: &str, rules: &str) -> String {
    format!(
        r#"resources:
  - name: app
    kind: postgres
    agent: edge
    address: 127.0.0.1:{port}
    database: app
    credential: app-db
policies:
  - name: devs-on-app
    subjects: {{ groups: [{group}] }}
    resources: {{ names: [app] }}
    rules:{rules}"#
    )
}
