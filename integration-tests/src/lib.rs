//! Shared harness for Sluice's end-to-end tests: starts the real binaries
//! (`sluice-control-plane`, `sluice-agent`, `sluice`), a real PostgreSQL
//! (initdb into a temporary directory, free port) and talks to them with
//! real clients. Everything binds to loopback on free ports and is torn
//! down on drop, so tests can run in parallel.
//!
//! A missing prerequisite (binary not built, PostgreSQL not installed) is a
//! test failure with a message saying what to install, never a skip.

pub mod api;
pub mod cli;
pub mod datapath;
pub mod drivers;
pub mod pg;
pub mod process;
pub mod rawpg;
pub mod sluice;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

pub use api::Api;
pub use cli::{CliOutput, SluiceCli};
pub use pg::Postgres;
pub use process::Process;
pub use sluice::{AgentProc, ControlPlaneProc};

/// A port that was free a moment ago on 127.0.0.1, for a process under
/// test to listen on.
///
/// Chosen at random below the kernel's ephemeral range, not with `bind(0)`:
/// a port `bind(0)` hands out is released again before the process under
/// test binds it, and in between any outgoing connection (tests make many:
/// clients, upstream logins, gRPC) may be given it as its local port, which
/// failed tests with "Address already in use". A port below the range can
/// only be taken by another explicit bind. One test process never hands out
/// the same port twice, and test processes running side by side never hand
/// out the same one: each holds a lock on a file named after every port it
/// handed out (in `$TMPDIR/sluice-test-ports`) until it exits, since an
/// agent binds its port only once enrolled, seconds after it was chosen.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeMap<u16, Option<std::fs::File>>> = Mutex::new(BTreeMap::new());
    const LOWEST: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .min(65_536);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if ephemeral_start > LOWEST + 1_000 {
        let span = ephemeral_start - LOWEST;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut x = u64::from(std::process::id()) << 32 | u64::from(nanos) | 1;
        for _ in 0..1_000 {
            // xorshift64: spread concurrent test processes over the range.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let Ok(port) = u16::try_from(LOWEST + (x % u64::from(span)) as u32) else {
                continue;
            };
            if handed_out.contains_key(&port) {
                continue;
            }
            let Some(lock) = reserve(port) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port, Some(lock));
                return port;
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1");
    handed_out.insert(port, None);
    port
}

/// A lock no other test process holds on the file for `port`, which this
/// one then holds until it exits (`None` when another holds it). A
/// directory that cannot be written fails the test rather than let ports
/// collide.
fn reserve(port: u16) -> Option<std::fs::File> {
    let dir = std::env::temp_dir().join("sluice-test-ports");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let path = dir.join(port.to_string());
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.try_lock().ok()?;
    Some(file)
}

/// Path of a workspace binary built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("debug"))
        .or_else(|| {
            // tests run from target/debug/deps/<test>-<hash>
            std::env::current_exe()
                .ok()?
                .parent()?
                .parent()
                .map(PathBuf::from)
        })
        .expect("cannot locate the target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`make test` does: cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Installs the ring crypto provider once (reqwest and tonic need one).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs `psql` against an agent's PostgreSQL listener with `token` as the
/// password; returns (success, stdout, stderr).
pub fn psql_via_agent(port: u16, resource: &str, token: &str, sql: &str) -> (bool, String, String) {
    let out = std::process::Command::new("psql")
        .arg(format!("host=127.0.0.1 port={port} dbname={resource} user=client sslmode=disable connect_timeout=5"))
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .env("PGPASSWORD", token)
        .env_remove("PGSERVICE")
        .output()
        .expect("run psql (install postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `script` through an agent's `app` resource with psql, one
/// statement at a time, going on after errors; (stdout, stderr).
pub fn psql_script(port: u16, token: &str, script: &str) -> (String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=app user=client sslmode=disable connect_timeout=5"
        ))
        .args(["-At", "-f", "-"])
        .env("PGPASSWORD", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run psql (install postgresql-client)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .expect("write the script to psql");
    }
    let out = child.wait_with_output().expect("wait for psql");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A policy document serving one PostgreSQL resource from `agent`, granted
/// to group `group`.
pub fn simple_policy(agent: &str, resource: &str, group: &str, address: &str) -> String {
    format!(
        r#"resources:
  - name: {resource}
    kind: postgres
    agent: {agent}
    address: {address}
    database: app
policies:
  - name: {group}-on-{resource}
    subjects: {{ groups: [{group}] }}
    resources: {{ names: [{resource}] }}
    rules:
      - deny: {{ sql: {{ statements: [ddl] }} }}
      - allow: {{ sql: {{ statements: [read] }} }}
"#
    )
}
