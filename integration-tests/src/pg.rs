//! A real, throwaway PostgreSQL server: initdb into a temporary directory,
//! started on a free port, destroyed on drop. PostgreSQL refuses to run as
//! root, so as root the server runs as the `postgres` system user.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{Process, free_port};

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Process>,
}

/// Finds a PostgreSQL server binary (Debian keeps them off PATH).
pub fn pg_bin(name: &str) -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL `{name}` not found: install the `postgresql` package (make deps does)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs as `postgres` when we are root.
fn pg_command(bin: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl Postgres {
    /// initdb + start; trust authentication for the `postgres` superuser on
    /// loopback and SCRAM for everyone else.
    pub fn start() -> Self {
        Self::start_at_oid(None)
    }

    /// [`Postgres::start`], with the server's next OID set to `next_oid`
    /// (`pg_resetwal -o`) before it starts, when given: a database whose
    /// OID counter has passed 2^31, as a long-lived one's does, without
    /// creating two billion objects.
    pub fn start_at_oid(next_oid: Option<u32>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir data");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "cannot chown the PostgreSQL directory to `postgres`"
            );
        }
        let out = pg_command(pg_bin("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(oid) = next_oid {
            let out = pg_command(pg_bin("pg_resetwal"))
                .args(["-o", &oid.to_string(), "-D"])
                .arg(&data)
                .output()
                .expect("run pg_resetwal");
            assert!(
                out.status.success(),
                "pg_resetwal failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let hba = "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let port = free_port();
        let mut cmd = pg_command(pg_bin("postgres"));
        cmd.arg("-D").arg(&data).args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",
            "-c",
            "log_statement=all",
            "-c",
            "password_encryption=scram-sha-256",
        ]);
        let log = dir.path().join("postgres.log");
        let proc = Process::spawn("postgres", cmd, &log);
        let pg = Self {
            port,
            dir,
            proc: Some(proc),
        };
        pg.wait_ready();
        pg
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let ok = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-Atc",
                    "select 1",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "PostgreSQL did not start:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (superuser, trust auth).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL as the superuser with psql; panics on error; returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The data directory (owned by `postgres` when running as root).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Puts `line` first in pg_hba.conf and reloads the configuration.
    pub fn prepend_hba(&self, line: &str) {
        let path = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{line}\n{old}")).expect("write pg_hba.conf");
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.interrupt();
        }
    }
}
