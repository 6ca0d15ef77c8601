//! The `sluice` command-line client as a test fixture.
//!
//! Each run gets a clean environment: `SLUICE_URL` and `SLUICE_TOKEN` only as
//! given, no `SLUICE_TOKEN_FILE`, and a private empty working directory so
//! the CLI cannot fall back to a `./.sluice/admin.token` lying around in the
//! workspace.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use crate::bin;

/// What a finished `sluice` invocation produced.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything the CLI printed unless it exited 0.
    pub fn ok(self) -> Self {
        assert!(
            self.success(),
            "sluice failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

pub struct SluiceCli {
    url: String,
    token: Option<String>,
    cwd: tempfile::TempDir,
}

impl SluiceCli {
    pub fn new(url: &str, token: Option<&str>) -> Self {
        let cwd = tempfile::Builder::new()
            .prefix("sluice-cli-")
            .tempdir()
            .expect("tempdir");
        Self {
            url: url.to_owned(),
            token: token.map(str::to_owned),
            cwd,
        }
    }

    /// The same CLI with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self::new(&self.url, token)
    }

    /// The working directory the CLI runs in (for files it should read).
    pub fn dir(&self) -> &std::path::Path {
        self.cwd.path()
    }

    /// Ids of `subject`'s sessions with `status`, newest first, as
    /// `sluice sessions list` shows them.
    pub fn sessions(&self, subject: &str, status: &str) -> Vec<String> {
        let out = self
            .run(&["sessions", "list", "--subject", subject, "--json"])
            .ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        v["sessions"]
            .as_array()
            .expect("a list of sessions")
            .iter()
            .filter(|s| s["status"] == status)
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until `subject` has `n` sessions with `status`; their ids.
    pub async fn wait_sessions(&self, subject: &str, status: &str, n: usize) -> Vec<String> {
        crate::eventually(
            std::time::Duration::from_secs(30),
            &format!("{n} {status} sessions of {subject}"),
            || async {
                let ids = self.sessions(subject, status);
                (ids.len() >= n).then_some(ids)
            },
        )
        .await
    }

    pub fn run(&self, args: &[&str]) -> CliOutput {
        self.run_with_stdin(args, None)
    }

    /// Runs `sluice ARGS`, feeding `stdin` (or nothing) to standard input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut cmd = Command::new(bin("sluice"));
        cmd.args(args)
            .current_dir(self.cwd.path())
            .env("SLUICE_URL", &self.url)
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_TOKEN_FILE")
            .env("NO_COLOR", "1")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = &self.token {
            cmd.env("SLUICE_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("start sluice");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for sluice");
        CliOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
