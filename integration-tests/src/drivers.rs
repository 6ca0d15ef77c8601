//! Client drivers other than Rust's, run as real programs through the agent:
//! psycopg, asyncpg, psycopg2 and SQLAlchemy (Python), node-postgres
//! (Node.js). Each test runs a script from `integration-tests/drivers/`
//! that prints what it observed as JSON, and asserts on that.
//!
//! The drivers are installed at pinned versions into `<target>/drivers` by
//! `scripts/ensure-drivers.sh`, which `make test` runs and which every call
//! here runs too (it does nothing once they are installed), so `cargo
//! nextest run` alone works as well. A driver that cannot be installed
//! fails the test, saying why.

use std::{path::PathBuf, process::Command};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `<target>/drivers`, beside the binaries under test.
fn drivers_dir() -> PathBuf {
    crate::bin("sluice-agent")
        .parent()
        .and_then(|debug| debug.parent())
        .expect("target directory")
        .join("drivers")
}

fn ensure() -> PathBuf {
    let dir = drivers_dir();
    let out = Command::new(workspace().join("scripts/ensure-drivers.sh"))
        .env("SLUICE_DRIVERS_DIR", &dir)
        .output()
        .expect("run scripts/ensure-drivers.sh");
    assert!(
        out.status.success(),
        "cannot install the client drivers (scripts/ensure-drivers.sh):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn run(mut cmd: Command, script: &str) -> serde_json::Value {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}"))
}

fn command(program: PathBuf, script: &str, port: u16, token: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg(workspace().join("integration-tests/drivers").join(script))
        .env("SLUICE_PORT", port.to_string())
        .env("SLUICE_TOKEN", token);
    cmd
}

/// Runs `script` (a Python file in `integration-tests/drivers/`) with the
/// drivers' virtual environment against the agent at `port`, logging in
/// with `token`; returns what it printed.
pub fn python(script: &str, port: u16, token: &str) -> serde_json::Value {
    let dir = ensure();
    run(
        command(dir.join("venv/bin/python"), script, port, token),
        script,
    )
}

/// Runs `script` (a Node.js file in `integration-tests/drivers/`) with the
/// installed node-postgres; returns what it printed.
pub fn node(script: &str, port: u16, token: &str) -> serde_json::Value {
    let dir = ensure();
    let mut cmd = command(PathBuf::from("node"), script, port, token);
    cmd.env("SLUICE_NODE_MODULES", dir.join("node/node_modules"));
    run(cmd, script)
}
