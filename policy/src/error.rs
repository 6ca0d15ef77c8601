//! Errors reported to policy authors and to snapshot consumers.

use std::fmt;

/// One problem in a policy document, located for the author.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyError {
    /// Where in the document, e.g. `policies[0].rules[2].deny.sql.statements[1]`;
    /// empty for the document as a whole.
    pub path: String,
    /// 1-based line in the source text, when known.
    pub line: Option<usize>,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a document (never empty), so an author fixes them
/// in one round instead of one per attempt.
///
/// Displays one error per line, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", DisplayLines(.0))]
pub struct PolicyErrors(Vec<PolicyError>);

struct DisplayLines<'a>(&'a [PolicyError]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl PolicyErrors {
    /// Wraps a list of errors, sorted by line (errors without a line last,
    /// keeping discovery order among equals). Returns `None` for an empty
    /// list, so a `PolicyErrors` always holds at least one error.
    pub fn from_vec(mut errors: Vec<PolicyError>) -> Option<Self> {
        if errors.is_empty() {
            return None;
        }
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Some(Self(errors))
    }

    /// A single error.
    pub(crate) fn single(error: PolicyError) -> Self {
        Self(vec![error])
    }

    /// The errors, in document order.
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }

    /// Takes the errors out.
    pub fn into_vec(self) -> Vec<PolicyError> {
        self.0
    }
}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Why a compiled snapshot could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a well-formed compiled policy.
    #[error("compiled policy is not valid JSON for {format}: {source}", format = crate::POLICY_FORMAT)]
    Json {
        /// The underlying decoder error.
        #[from]
        source: serde_json::Error,
    },
    /// The snapshot was produced for another format version.
    #[error("compiled policy has format `{found}`, this build understands `{expected}`", expected = crate::POLICY_FORMAT)]
    UnsupportedFormat {
        /// The format the snapshot declares.
        found: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_one_per_line_sorted() {
        let errors = PolicyErrors::from_vec(vec![
            PolicyError {
                path: "policies[1].name".into(),
                line: Some(9),
                message: "b".into(),
            },
            PolicyError {
                path: String::new(),
                line: None,
                message: "c".into(),
            },
            PolicyError {
                path: "policies[0]".into(),
                line: Some(3),
                message: "a".into(),
            },
        ])
        .expect("non-empty");
        assert_eq!(
            errors.to_string(),
            "line 3: policies[0]: a\nline 9: policies[1].name: b\nc"
        );
        assert!(PolicyErrors::from_vec(Vec::new()).is_none());
    }
}
