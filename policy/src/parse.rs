//! Parsing a policy document from YAML or JSON text.
//!
//! Everything goes through serde_yaml (JSON is a subset of YAML), wrapped in
//! serde_path_to_error so a type error names the field. Syntax and type
//! errors stop at the first one (serde cannot resume); semantic validation
//! then reports every remaining problem at once.

use crate::error::{PolicyError, PolicyErrors};
use crate::model::Document;
use crate::validate::validate_source;

/// Parses and validates a policy document.
///
/// Errors carry the path of the offending field and its 1-based line.
pub fn parse_document(text: &str) -> Result<Document, PolicyErrors> {
    let doc = deserialize(text)?;
    validate_source(&doc, Some(text))?;
    Ok(doc)
}

fn deserialize(text: &str) -> Result<Document, PolicyErrors> {
    if is_blank(text) {
        // serde_yaml rejects an empty stream; validation says it better.
        return Ok(Document::default());
    }
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = match err.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let inner = err.into_inner();
        let line = inner.location().map(|l| l.line());
        let message = bare_message(&inner, &path);
        PolicyErrors::single(PolicyError {
            path,
            line,
            message,
        })
    })
}

/// Whether the text holds no YAML content (only blanks and comments).
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// serde_yaml's message without the path prefix and position suffix it
/// adds, since [`PolicyError`] carries both separately.
fn bare_message(err: &serde_yaml::Error, path: &str) -> String {
    let mut text = err.to_string();
    if let Some(loc) = err.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(pos) = text.find(&suffix) {
            text.replace_range(pos..pos + suffix.len(), "");
        }
    }
    // The derived name of the root type means nothing to an author.
    let text = text.replace(
        "expected struct Document",
        "expected a mapping with `policies` and/or `resources`",
    );
    // serde_yaml prefixes its own rendering of the path, which matches
    // serde_path_to_error's except in corner cases; strip either.
    if !path.is_empty()
        && let Some(rest) = text.strip_prefix(path).and_then(|r| r.strip_prefix(": "))
    {
        return rest.to_owned();
    }
    if let Some((head, rest)) = text.split_once(": ")
        && !head.is_empty()
        && !head.contains(char::is_whitespace)
        && !head.contains('`')
    {
        return rest.to_owned();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<PolicyError> {
        parse_document(text).expect_err("should fail").into_vec()
    }

    fn one(text: &str) -> PolicyError {
        let mut errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.remove(0)
    }

    const HEAD: &str = "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [r] }\n    rules:\n";

    #[test]
    fn unknown_statement_kind_names_path_and_line() {
        let text = format!(
            "{HEAD}      - allow: {{ sql: {{ statements: [select] }} }}\n      - deny:\n          sql:\n            statements: [drop, dorp]\n"
        );
        let e = one(&text);
        assert_eq!(e.path, "policies[0].rules[1].deny.sql.statements[1]");
        assert_eq!(e.line, Some(9));
        assert!(
            e.message
                .starts_with("unknown statement kind `dorp` (did you mean `drop`?)"),
            "{}",
            e.message
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "line 9: policies[0].rules[1].deny.sql.statements[1]: unknown statement kind `dorp`"
            ),
            "{shown}"
        );
    }

    #[test]
    fn rule_needs_exactly_one_action() {
        let e = one(&format!("{HEAD}      - reason: nothing here\n"));
        assert_eq!(e.path, "policies[0].rules[0]");
        assert_eq!(e.line, Some(6));
        assert_eq!(
            e.message,
            "a rule needs exactly one of allow, deny, approve, mask, limit"
        );

        let e = one(&format!(
            "{HEAD}      - limit: {{ rows: 5 }}\n      - deny: {{}}\n        allow: {{}}\n"
        ));
        assert_eq!(e.path, "policies[0].rules[1]");
        assert_eq!(e.line, Some(7));
        assert!(e.message.starts_with("a rule needs exactly one of allow, deny, approve, mask, limit, but this one has both `deny` and `allow`"), "{}", e.message);
    }

    #[test]
    fn unknown_fields_and_bad_types() {
        let e = one(&format!(
            "{HEAD}      - deny: {{ sql: {{ statement: [drop] }} }}\n"
        ));
        assert_eq!(e.path, "policies[0].rules[0].deny.sql.statement");
        assert_eq!(e.line, Some(6));
        assert!(
            e.message
                .starts_with("unknown field `statement`, expected one of `statements`"),
            "{}",
            e.message
        );

        let e = one(&format!("{HEAD}      - forbid: {{}}\n"));
        assert_eq!(e.path, "policies[0].rules[0]");
        assert!(
            e.message
                .starts_with("unknown field `forbid`, expected one of `allow`"),
            "{}",
            e.message
        );

        let e = one(&format!("{HEAD}      - limit: {{ rows: lots }}\n"));
        assert_eq!(e.path, "policies[0].rules[0].limit.rows");
        assert_eq!(e.line, Some(6));
        assert!(
            e.message
                .starts_with("invalid type: string \"lots\", expected u64"),
            "{}",
            e.message
        );

        let e = one("resources:\n  - name: x\n    kind: mysql\n    agent: a\n    address: h:1\n");
        assert_eq!(e.path, "resources[0].kind");
        assert_eq!(e.line, Some(3));
        assert!(
            e.message
                .starts_with("unknown variant `mysql`, expected one of `postgres`, `ssh`, `http`"),
            "{}",
            e.message
        );

        let e = one(&format!(
            "{HEAD}      - approve: {{ approvers: [dba], timeout: soon }}\n"
        ));
        assert_eq!(e.path, "policies[0].rules[0].approve.timeout");
        assert!(
            e.message.starts_with("invalid duration `soon`"),
            "{}",
            e.message
        );

        let e = one(
            "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [r] }\n    rules:\n      - mask: { as: scramble, detectors: [email] }\n",
        );
        assert_eq!(e.path, "policies[0].rules[0].mask.as");
        assert!(
            e.message.starts_with("unknown variant `scramble`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = one("policies:\n  - name: p\n   subjects: [\n");
        assert!(e.line.is_some(), "{e:?}");
        assert!(!e.message.is_empty());
        let e = one("resources: []\n---\nresources: []\n");
        assert!(
            e.message.contains("more than one document"),
            "{}",
            e.message
        );
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"policies": [{"name": "p", "subjects": {"users": ["u"]}, "resources": {"names": ["*"]},
            "rules": [{"deny": {"sql": {"statements": ["drop"]}}, "reason": "no"}]}]}"#;
        let doc = parse_document(text).expect("valid JSON policy");
        assert_eq!(doc.policies[0].rules[0].reason.as_deref(), Some("no"));
        let e = one(
            r#"{"policies": [{"name": "p", "subjects": {"users": ["u"]}, "resources": {"names": ["*"]},
            "rules": [{"deny": {"sql": {"statements": ["dorp"]}}}]}]}"#,
        );
        assert_eq!(e.path, "policies[0].rules[0].deny.sql.statements[0]");
        assert_eq!(e.line, Some(2));
    }
}
