//! Where the bearer token comes from: `--token` / `$SLUICE_TOKEN` (handled by
//! clap), else the file named by `$SLUICE_TOKEN_FILE`, else the demo admin
//! token that `make run` writes to `./.sluice/admin.token`. Errors name the
//! file, never its contents.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where `make run` leaves the demo admin token, relative to the working directory.
pub const DEMO_TOKEN_FILE: &str = ".sluice/admin.token";

/// Largest token file we are willing to read; real tokens are a few KiB.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Picks the token to use. `None` means no token was found anywhere; the
/// client reports that before contacting the server.
pub fn resolve_token(
    explicit: Option<String>,
    token_file: Option<PathBuf>,
    demo_file: &Path,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = explicit
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    if let Some(path) = token_file.filter(|p| !p.as_os_str().is_empty()) {
        let token = read_token_file(&path)
            .with_context(|| format!("cannot use SLUICE_TOKEN_FILE={}", path.display()))?;
        if token.is_empty() {
            bail!("SLUICE_TOKEN_FILE={} is empty", path.display());
        }
        return Ok(Some(token));
    }
    if demo_file.is_file() {
        let token = read_token_file(demo_file)
            .with_context(|| format!("cannot read {}", demo_file.display()))?;
        return Ok(Some(token).filter(|t| !t.is_empty()));
    }
    Ok(None)
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_TOKEN_BYTES {
        bail!("the file is {len} bytes; a token file should hold just the token");
    }
    let text = std::fs::read_to_string(path)?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).expect("write");
        p
    }

    #[test]
    fn explicit_token_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "f", "from-file\n");
        let demo = write(dir.path(), "demo", "from-demo\n");
        let t = resolve_token(Some("flag".into()), Some(file), &demo).expect("ok");
        assert_eq!(t.as_deref(), Some("flag"));
    }

    #[test]
    fn token_file_then_demo_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "f", "  from-file\n");
        let demo = write(dir.path(), "demo", "from-demo\n");
        let t = resolve_token(None, Some(file), &demo).expect("ok");
        assert_eq!(t.as_deref(), Some("from-file"));
        let t = resolve_token(Some(String::new()), None, &demo).expect("ok");
        assert_eq!(t.as_deref(), Some("from-demo"));
        let t = resolve_token(None, None, &dir.path().join("absent")).expect("ok");
        assert_eq!(t, None);
    }

    #[test]
    fn unreadable_or_empty_token_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err =
            resolve_token(None, Some(missing), &dir.path().join("absent")).expect_err("must fail");
        assert!(format!("{err:#}").contains("SLUICE_TOKEN_FILE="));
        let empty = write(dir.path(), "empty", "\n");
        let err =
            resolve_token(None, Some(empty), &dir.path().join("absent")).expect_err("must fail");
        assert!(err.to_string().contains("is empty"));
    }
}
