//! The Sluice binaries as test fixtures.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{Api, Process, bin, eventually, free_port};

/// A control plane with its own data directory and ports. Restartable
/// (same data, same ports).
pub struct ControlPlaneProc {
    pub http_port: u16,
    pub grpc_port: u16,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    proc: Option<Process>,
    admin_token: Option<String>,
}

impl ControlPlaneProc {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// Starts with extra environment variables (e.g. SLUICE_DATABASE_URL).
    pub async fn start_with(env: Vec<(String, String)>) -> Self {
        crate::init_crypto();
        let dir = tempfile::Builder::new()
            .prefix("sluice-cp-")
            .tempdir()
            .expect("tempdir");
        let mut cp = Self {
            http_port: free_port(),
            grpc_port: free_port(),
            dir,
            env,
            proc: None,
            admin_token: None,
        };
        cp.spawn().await;
        cp
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("sluice-control-plane"));
        cmd.args(args)
            .env_remove("SLUICE_MASTER_KEY")
            .env("SLUICE_DATA_DIR", self.dir.path().join("data"))
            .env("SLUICE_HTTP_ADDR", format!("127.0.0.1:{}", self.http_port))
            .env("SLUICE_GRPC_ADDR", format!("127.0.0.1:{}", self.grpc_port))
            .env("SLUICE_LOG", "info,sluice=debug")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn spawn(&mut self) {
        let cmd = self.command(&["serve"]);
        self.proc = Some(Process::spawn(
            "sluice-control-plane",
            cmd,
            &self.dir.path().join("control-plane.log"),
        ));
        let url = format!("{}/readyz", self.url());
        let http = reqwest::Client::new();
        let logs = self.dir.path().join("control-plane.log");
        eventually(
            Duration::from_secs(30),
            "the control plane to become ready",
            || {
                let http = http.clone();
                let url = url.clone();
                let logs = logs.clone();
                async move {
                    if let Ok(r) = http.get(&url).send().await
                        && r.status().is_success()
                    {
                        return Some(());
                    }
                    let text = std::fs::read_to_string(&logs).unwrap_or_default();
                    // A fatal error is printed as a line of its own
                    // (the log may also hold earlier runs' lines).
                    assert!(
                        !text.lines().any(|l| l.starts_with("error:")),
                        "control plane failed to start:\n{text}"
                    );
                    None
                }
            },
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs an offline `sluice-control-plane` subcommand; returns (success, stdout, stderr).
    pub fn run_offline(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .command(args)
            .output()
            .expect("run sluice-control-plane");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A token with the admin role from the built-in issuer (bootstrap path).
    pub fn admin_token(&mut self) -> String {
        if let Some(t) = &self.admin_token {
            return t.clone();
        }
        let (ok, out, err) = self.run_offline(&[
            "token",
            "issue",
            "--subject",
            "test-admin",
            "--role",
            "admin",
            "--ttl",
            "2h",
        ]);
        assert!(ok, "token issue failed: {err}");
        let t = out.trim().to_owned();
        self.admin_token = Some(t.clone());
        t
    }

    pub fn api(&mut self) -> Api {
        let token = self.admin_token();
        Api::new(&self.url(), Some(token))
    }

    /// A token for a non-admin subject.
    pub async fn user_token(&mut self, subject: &str, groups: &[&str]) -> String {
        let v = self
            .api()
            .post_ok(
                "/api/v1/tokens",
                json!({"subject": subject, "groups": groups, "ttl": "1h"}),
            )
            .await;
        v["token"].as_str().expect("token").to_owned()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control-plane.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// Freezes the control plane (SIGSTOP): its connections stay open,
    /// and nothing it would do happens until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.proc.as_ref().expect("the control plane runs").pid();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill {signal} {pid}");
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub async fn start_again(&mut self) {
        assert!(self.proc.is_none(), "control plane already running");
        self.spawn().await;
    }

    /// Sets (or replaces) an environment variable for the next start, e.g.
    /// `SLUICE_MASTER_KEY_FILE` after a key rotation.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Runs `serve` (while this fixture is stopped) for a start-up that must
    /// fail: waits for the process to exit and returns (success, output).
    /// Output goes to its own log so a later `start_again` does not mistake
    /// this failure for its own. Panics if the server keeps running.
    pub fn serve_until_exit(&self, timeout: Duration) -> (bool, String) {
        assert!(self.proc.is_none(), "stop the control plane first");
        let log = self.dir.path().join("control-plane-failed-start.log");
        let _ = std::fs::remove_file(&log);
        let mut proc = Process::spawn("sluice-control-plane", self.command(&["serve"]), &log);
        let status = proc.wait_exit(timeout);
        let output = proc.logs();
        let Some(status) = status else {
            proc.kill9();
            panic!(
                "the control plane was expected to refuse to start but still runs after {timeout:?}:\n{output}"
            );
        };
        (status.success(), output)
    }

    pub async fn join_token(&mut self, agent: &str) -> String {
        let v = self
            .api()
            .post_ok("/api/v1/join-tokens", json!({"agent": agent, "ttl": "10m"}))
            .await;
        v["token"].as_str().expect("token").to_owned()
    }
}

/// An agent process with its own state directory and ports.
pub struct AgentProc {
    pub name: String,
    pub pg_port: u16,
    pub status_port: u16,
    pub dir: tempfile::TempDir,
    grpc_url: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    proc: Option<Process>,
}

impl AgentProc {
    /// Creates a join token and starts an agent that must enroll and
    /// receive a snapshot.
    pub async fn start(cp: &mut ControlPlaneProc, name: &str) -> Self {
        let token = cp.join_token(name).await;
        let mut agent = Self::spawn_with_token(&cp.grpc_url(), name, Some(&token), Vec::new());
        agent.wait_ready().await;
        agent
    }

    /// Like [`AgentProc::start`], with extra environment variables (e.g.
    /// OTEL_EXPORTER_OTLP_ENDPOINT); they apply to every later start too.
    pub async fn start_with_env(
        cp: &mut ControlPlaneProc,
        name: &str,
        env: Vec<(String, String)>,
    ) -> Self {
        let token = cp.join_token(name).await;
        let dir = tempfile::Builder::new()
            .prefix("sluice-agent-")
            .tempdir()
            .expect("tempdir");
        let mut agent = Self {
            name: name.to_owned(),
            pg_port: free_port(),
            status_port: free_port(),
            dir,
            grpc_url: cp.grpc_url(),
            extra: Vec::new(),
            env,
            proc: None,
        };
        agent.spawn(Some(&token));
        agent.wait_ready().await;
        agent
    }

    /// Spawns without waiting (for enrollment failure tests).
    pub fn spawn_with_token(
        grpc_url: &str,
        name: &str,
        token: Option<&str>,
        extra: Vec<String>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sluice-agent-")
            .tempdir()
            .expect("tempdir");
        let mut agent = Self {
            name: name.to_owned(),
            pg_port: free_port(),
            status_port: free_port(),
            dir,
            grpc_url: grpc_url.to_owned(),
            extra,
            env: Vec::new(),
            proc: None,
        };
        agent.spawn(token);
        agent
    }

    fn spawn(&mut self, token: Option<&str>) {
        let mut cmd = Command::new(bin("sluice-agent"));
        cmd.arg("run")
            .args(["--control-plane", &self.grpc_url])
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--postgres-addr", &format!("127.0.0.1:{}", self.pg_port)])
            .args(["--status-addr", &format!("127.0.0.1:{}", self.status_port)])
            .args(&self.extra)
            .env("SLUICE_LOG", "info,sluice=debug")
            .env("NO_COLOR", "1");
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.proc = Some(Process::spawn(
            "sluice-agent",
            cmd,
            &self.dir.path().join("agent.log"),
        ));
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn snapshot_file(&self) -> PathBuf {
        self.state_dir().join("snapshot.bin")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits for the process to exit (enrollment failures); returns its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> (bool, String) {
        let status = self.proc.as_mut().and_then(|p| p.wait_exit(timeout));
        let exited = status.is_some();
        assert!(
            exited,
            "agent did not exit within {timeout:?}:\n{}",
            self.logs()
        );
        (status.is_some_and(|s| s.success()), self.logs())
    }

    pub async fn status(&self) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/status", self.status_port);
        reqwest::get(&url).await.ok()?.json().await.ok()
    }

    /// Waits until the agent's status endpoint answers.
    pub async fn wait_up(&self) -> Value {
        let logs = self.dir.path().join("agent.log");
        eventually(
            Duration::from_secs(30),
            "the agent's status endpoint",
            || async {
                let s = self.status().await;
                if s.is_none() {
                    let text = std::fs::read_to_string(&logs).unwrap_or_default();
                    assert!(!text.contains("error:"), "agent failed:\n{text}");
                }
                s
            },
        )
        .await
    }

    /// Waits until the agent holds a valid snapshot.
    pub async fn wait_ready(&mut self) -> u64 {
        self.wait_up().await;
        eventually(
            Duration::from_secs(30),
            "the agent to hold a valid snapshot",
            || async {
                let s = self.status().await?;
                (s["snapshot"]["state"] == "valid")
                    .then(|| s["snapshot"]["version"].as_u64().unwrap_or(0))
            },
        )
        .await
    }

    /// Waits until the agent enforces at least `version`.
    pub async fn wait_version(&self, version: u64, timeout: Duration) -> u64 {
        eventually(
            timeout,
            &format!("the agent to enforce snapshot version {version}"),
            || async {
                let s = self.status().await?;
                let v = s["snapshot"]["version"].as_u64()?;
                (s["snapshot"]["state"] == "valid" && v >= version).then_some(v)
            },
        )
        .await
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM, without waiting (see [`AgentProc::wait_exit`]).
    pub fn terminate(&self) {
        if let Some(p) = &self.proc {
            p.terminate();
        }
    }

    /// Starts the (already enrolled) agent again with the same state.
    pub async fn start_again(&mut self) {
        assert!(self.proc.is_none(), "agent already running");
        self.spawn(None);
        self.wait_up().await;
    }

    pub fn state_path(&self, file: &str) -> PathBuf {
        self.state_dir().join(file)
    }
}

/// Writes a file and returns its path (for CLI tests).
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}
