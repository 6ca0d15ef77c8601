//! Reading credential secrets from stdin, an environment variable or a file.
//! There is deliberately no way to pass a secret as an argument: arguments are
//! visible in `ps` and saved in shell history.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, bail};

use crate::cli::SecretSource;

/// Secrets are passwords and keys; anything larger is a mistake (wrong file).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

pub fn read_secret(source: &SecretSource) -> anyhow::Result<String> {
    let secret = if source.secret_stdin {
        if std::io::stdin().is_terminal() {
            eprintln!(
                "reading the secret from stdin; type it and press Ctrl-D (it will be echoed)"
            );
        }
        let raw =
            read_limited(std::io::stdin().lock()).context("cannot read the secret from stdin")?;
        strip_one_newline(raw)
    } else if let Some(var) = &source.secret_env {
        match std::env::var(var) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                bail!(
                    "environment variable {var} is not set (--secret-env names the variable holding the secret)"
                )
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("environment variable {var} is not valid UTF-8")
            }
        }
    } else if let Some(path) = &source.secret_file {
        let raw = read_file(path)
            .with_context(|| format!("cannot read the secret from {}", path.display()))?;
        strip_one_newline(raw)
    } else {
        // clap's argument group makes one source mandatory.
        bail!("give the secret with --secret-stdin, --secret-env VAR or --secret-file PATH");
    };
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    Ok(secret)
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    read_limited(std::fs::File::open(path)?)
}

fn read_limited(reader: impl Read) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    reader.take(MAX_SECRET_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_SECRET_BYTES {
        bail!("the secret is longer than {MAX_SECRET_BYTES} bytes");
    }
    String::from_utf8(buf).map_err(|_| anyhow::anyhow!("the secret is not valid UTF-8"))
}

/// `echo secret | sluice ...` and editors add a final newline that is not
/// part of the secret; strip exactly one (`\n` or `\r\n`), nothing more.
pub fn strip_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_exactly_one_trailing_newline() {
        assert_eq!(strip_one_newline("pw\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_one_newline("pw\n\n".into()), "pw\n");
        assert_eq!(strip_one_newline("pw ".into()), "pw ");
        assert_eq!(strip_one_newline("pw".into()), "pw");
    }

    #[test]
    fn reads_a_file_and_rejects_empty_or_huge_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s");
        std::fs::write(&p, "hunter2\n").expect("write");
        let src = SecretSource {
            secret_stdin: false,
            secret_env: None,
            secret_file: Some(p.clone()),
        };
        assert_eq!(read_secret(&src).expect("ok"), "hunter2");

        std::fs::write(&p, "\n").expect("write");
        assert!(
            read_secret(&src)
                .expect_err("must fail")
                .to_string()
                .contains("empty")
        );

        std::fs::write(&p, vec![b'x'; (MAX_SECRET_BYTES + 1) as usize]).expect("write");
        assert!(read_secret(&src).is_err());

        let missing = SecretSource {
            secret_stdin: false,
            secret_env: None,
            secret_file: Some(dir.path().join("absent")),
        };
        let err = format!("{:#}", read_secret(&missing).expect_err("must fail"));
        assert!(err.contains("absent"), "{err}");
    }

    #[test]
    fn missing_env_var_is_explained() {
        let src = SecretSource {
            secret_stdin: false,
            secret_env: Some("SLUICE_TEST_SURELY_UNSET_VAR".into()),
            secret_file: None,
        };
        assert!(
            read_secret(&src)
                .expect_err("must fail")
                .to_string()
                .contains("is not set")
        );
    }
}
