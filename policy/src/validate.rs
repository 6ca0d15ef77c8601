//! Semantic validation of a deserialized [`Document`].
//!
//! Serde has already checked shapes and types; this checks what types cannot
//! say (names, uniqueness, non-empty lists, address syntax, rules that could
//! never match) and collects every problem rather than stopping at the
//! first. Each error names its field path; when the source text is known, a
//! line is found by re-reading the text (see the private `locate` module).

use std::collections::HashMap;

use crate::compile::kind_set;
use crate::error::{PolicyError, PolicyErrors};
use crate::locate::{FieldPath, line_of};
use crate::model::{
    Action, ApproveRule, Document, MaskRule, Policy, ResourceKind, ResourceSelector, ResourceSpec,
    SqlMatcher, SubjectSelector,
};

/// Validates a document built in code or decoded elsewhere. Errors carry
/// paths but no lines; [`crate::parse_document`] validates with lines.
pub fn validate(doc: &Document) -> Result<(), PolicyErrors> {
    validate_source(doc, None)
}

pub(crate) fn validate_source(doc: &Document, source: Option<&str>) -> Result<(), PolicyErrors> {
    let mut v = Validator::default();
    v.document(doc);
    let errors = v
        .errors
        .into_iter()
        .map(|(path, message)| PolicyError {
            line: source.and_then(|text| line_of(text, &path)),
            path: path.to_string(),
            message,
        })
        .collect();
    match PolicyErrors::from_vec(errors) {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<(FieldPath, String)>,
}

/// Whether `name` matches `[a-z0-9][a-z0-9._-]{0,62}`: safe in URLs, file
/// names, log lines and Postgres database names without quoting.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    let lower_or_digit = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.len() <= 63
        && lower_or_digit(first)
        && rest
            .iter()
            .all(|&b| lower_or_digit(b) || b"._-".contains(&b))
}

const EMPTY_LIST: &str = "an empty list matches nothing; remove the field or add an entry";

impl Validator {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push((path, message.into()));
    }

    fn document(&mut self, doc: &Document) {
        let root = FieldPath::root();
        if doc.resources.is_empty() && doc.policies.is_empty() {
            self.error(
                root.clone(),
                "the document is empty: it defines no policies and no resources",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, resource) in doc.resources.iter().enumerate() {
            let path = root.key("resources").index(i);
            if let Some(first) = seen.insert(&resource.name, i) {
                self.error(
                    path.key("name"),
                    format!(
                        "duplicate resource name `{}` (also resources[{first}])",
                        resource.name
                    ),
                );
            }
            self.resource(&path, resource);
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, policy) in doc.policies.iter().enumerate() {
            let path = root.key("policies").index(i);
            if let Some(first) = seen.insert(&policy.name, i) {
                self.error(
                    path.key("name"),
                    format!(
                        "duplicate policy name `{}` (also policies[{first}])",
                        policy.name
                    ),
                );
            }
            self.policy(&path, policy);
        }
    }

    fn name(&mut self, path: FieldPath, what: &str, name: &str) {
        if !is_valid_name(name) {
            self.error(
                path,
                format!(
                    "`{name}` is not a valid {what} name: use 1 to 63 characters from a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
                ),
            );
        }
    }

    fn resource(&mut self, path: &FieldPath, r: &ResourceSpec) {
        self.name(path.key("name"), "resource", &r.name);
        self.name(path.key("agent"), "agent", &r.agent);
        if let Err(why) = check_address(&r.address) {
            self.error(
                path.key("address"),
                format!("address `{}` must look like host:port (e.g. 10.0.3.7:5432 or [::1]:5432): {why}", r.address),
            );
        }
        match (&r.kind, &r.database) {
            (ResourceKind::Postgres, None) => self.error(
                path.clone(),
                "a postgres resource needs `database`: the database the agent connects to upstream",
            ),
            (ResourceKind::Postgres, Some(db)) if db.trim().is_empty() => {
                self.error(path.key("database"), "`database` must not be empty")
            }
            (kind @ (ResourceKind::Ssh | ResourceKind::Http), Some(_)) => self.error(
                path.key("database"),
                format!("`database` applies only to postgres resources, not {kind}"),
            ),
            _ => {}
        }
        let has_ca = r
            .tls_ca
            .as_deref()
            .is_some_and(|c| c.contains("-----BEGIN CERTIFICATE-----"));
        if r.tls_mode == crate::model::TlsMode::VerifyFull && !has_ca {
            self.error(
                path.key("tls_ca"),
                "`tls_mode: verify-full` needs `tls_ca`: the PEM certificate of the CA that signed the target's certificate",
            );
        } else if r.tls_ca.is_some() && !has_ca {
            self.error(
                path.key("tls_ca"),
                "`tls_ca` must hold a PEM certificate (-----BEGIN CERTIFICATE-----)",
            );
        }
        if r.credential.as_deref().is_some_and(|c| c.trim().is_empty()) {
            self.error(
                path.key("credential"),
                "`credential` must name a stored credential; omit it for none",
            );
        }
        for key in r.labels.keys() {
            if key.trim().is_empty() {
                self.error(path.key("labels"), "label keys must not be empty");
            }
        }
        for (key, limit) in [
            ("max_connections", r.max_connections),
            ("max_connections_per_subject", r.max_connections_per_subject),
        ] {
            if limit == Some(0) {
                self.error(
                    path.key(key),
                    format!(
                        "`{key}` must be at least 1; omit it for no limit of the resource's own"
                    ),
                );
            }
        }
        if let (Some(all), Some(each)) = (r.max_connections, r.max_connections_per_subject)
            && each > all
        {
            self.error(
                path.key("max_connections_per_subject"),
                format!("`max_connections_per_subject` ({each}) cannot be more than `max_connections` ({all})"),
            );
        }
    }

    fn policy(&mut self, path: &FieldPath, p: &Policy) {
        self.name(path.key("name"), "policy", &p.name);
        self.subjects(&path.key("subjects"), &p.subjects);
        self.resource_selector(&path.key("resources"), &p.resources);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in p.rules.iter().enumerate() {
            let path = path.key("rules").index(i);
            if let Some(name) = &rule.name {
                self.name(path.key("name"), "rule", name);
                if let Some(first) = seen.insert(name, i) {
                    self.error(
                        path.key("name"),
                        format!(
                            "duplicate rule name `{name}` in this policy (also rules[{first}])"
                        ),
                    );
                }
            }
            let body = path.key(rule.action.keyword());
            match &rule.action {
                Action::Allow(m) | Action::Deny(m) => {
                    if let Some(sql) = &m.sql {
                        self.sql(&body.key("sql"), sql);
                    }
                }
                Action::Approve(a) => self.approve(&body, a),
                Action::Mask(m) => self.mask(&body, m),
                Action::Limit(l) => {
                    if l.rows == 0 {
                        self.error(body.key("rows"), "`rows` must be at least 1");
                    }
                }
            }
        }
    }

    fn subjects(&mut self, path: &FieldPath, s: &SubjectSelector) {
        if s.is_empty() {
            self.error(
                path.clone(),
                "a policy must name at least one subject in `users`, `groups` or `service_accounts` (\"*\" means everyone in that list)",
            );
        }
        for (key, list) in [
            ("users", &s.users),
            ("groups", &s.groups),
            ("service_accounts", &s.service_accounts),
        ] {
            self.non_blank_entries(&path.key(key), list);
        }
    }

    fn non_blank_entries(&mut self, path: &FieldPath, list: &[String]) {
        for (i, entry) in list.iter().enumerate() {
            if entry.trim().is_empty() {
                self.error(path.index(i), "entries must not be empty");
            }
        }
    }

    fn resource_selector(&mut self, path: &FieldPath, s: &ResourceSelector) {
        if s.is_empty() {
            self.error(
                path.clone(),
                "a policy must select resources by `names`, `labels` or `kinds` (use `names: [\"*\"]` for every resource)",
            );
        }
        if let Some(names) = &s.names {
            if names.is_empty() {
                self.error(path.key("names"), EMPTY_LIST);
            }
            self.non_blank_entries(&path.key("names"), names);
        }
        if s.labels.as_ref().is_some_and(|l| l.is_empty()) {
            self.error(
                path.key("labels"),
                "empty `labels` constrain nothing; remove the field or add a label",
            );
        }
        if s.kinds.as_ref().is_some_and(|k| k.is_empty()) {
            self.error(path.key("kinds"), EMPTY_LIST);
        }
    }

    fn sql(&mut self, path: &FieldPath, m: &SqlMatcher) {
        for (key, empty) in [
            (
                "statements",
                m.statements.as_ref().is_some_and(Vec::is_empty),
            ),
            ("tables", m.tables.as_ref().is_some_and(Vec::is_empty)),
            ("functions", m.functions.as_ref().is_some_and(Vec::is_empty)),
            ("unbounded", m.unbounded.as_ref().is_some_and(Vec::is_empty)),
        ] {
            if empty {
                self.error(path.key(key), EMPTY_LIST);
            }
        }
        if let (Some(statements), Some(unbounded)) = (&m.statements, &m.unbounded)
            && !statements.is_empty()
            && !unbounded.is_empty()
            && kind_set(statements)
                .intersection(kind_set(unbounded))
                .is_empty()
        {
            self.error(
                path.key("unbounded"),
                "no kind is in both `statements` and `unbounded`, so the rule can never match",
            );
        }
        for (key, what) in [("tables", "table"), ("functions", "function")] {
            let list = if key == "tables" {
                &m.tables
            } else {
                &m.functions
            };
            for (i, pattern) in list.iter().flatten().enumerate() {
                if !pattern_shape_ok(pattern, 2) {
                    self.error(
                        path.key(key).index(i),
                        format!("{what} pattern `{pattern}` must be `schema.{what}` or `{what}` (globs * and ? allowed)"),
                    );
                }
            }
        }
    }

    fn approve(&mut self, path: &FieldPath, a: &ApproveRule) {
        if let Some(sql) = &a.sql {
            self.sql(&path.key("sql"), sql);
        }
        if a.approvers.is_empty() {
            self.error(
                path.key("approvers"),
                "approve needs at least one approver group in `approvers`",
            );
        }
        self.non_blank_entries(&path.key("approvers"), &a.approvers);
        if a.min == 0 {
            self.error(
                path.key("min"),
                "`min` must be at least 1: an approval nobody gives is no approval",
            );
        }
        // Both `timeout` and `ttl` may be given whatever the mode, so that
        // switching `mode` is a one-word edit; each is used by its mode only.
        for (key, value) in [("timeout", a.timeout), ("ttl", a.ttl)] {
            if value.is_some_and(|d| d.as_secs() == 0) {
                self.error(path.key(key), format!("`{key}` must be longer than 0s"));
            }
            if value.is_some_and(|d| d.as_secs() > crate::MAX_APPROVAL_WINDOW.as_secs()) {
                self.error(
                    path.key(key),
                    format!(
                        "`{key}` must be at most {}: an approval is for the change at hand, not a standing grant",
                        crate::MAX_APPROVAL_WINDOW
                    ),
                );
            }
        }
    }

    fn mask(&mut self, path: &FieldPath, m: &MaskRule) {
        if m.columns.is_empty() && m.detectors.is_empty() {
            self.error(
                path.clone(),
                "mask needs `columns` or `detectors` (or both)",
            );
        }
        for (i, pattern) in m.columns.iter().enumerate() {
            if !pattern_shape_ok(pattern, 3) {
                self.error(
                    path.key("columns").index(i),
                    format!("column pattern `{pattern}` must be `schema.table.column`, `table.column` or `column`"),
                );
            }
        }
        for (i, pattern) in m.strict_tables.iter().enumerate() {
            if !pattern_shape_ok(pattern, 2) {
                self.error(
                    path.key("strict_tables").index(i),
                    format!("table pattern `{pattern}` must be `schema.table` or `table`"),
                );
            }
        }
        for (i, sql) in m.strict_allow.iter().enumerate() {
            match crate::sql::classify(sql) {
                Ok(statements) if statements.len() == 1 => {}
                Ok(_) => self.error(
                    path.key("strict_allow").index(i),
                    format!("`{sql}` must be exactly one SQL statement"),
                ),
                Err(e) => self.error(path.key("strict_allow").index(i), format!("`{sql}`: {e}")),
            }
        }
    }
}

/// At most `max_parts` dot-separated parts, none empty.
fn pattern_shape_ok(pattern: &str, max_parts: usize) -> bool {
    let parts = pattern.split('.');
    parts.clone().count() <= max_parts && parts.into_iter().all(|p| !p.trim().is_empty())
}

/// Checks `host:port`, with IPv6 hosts in brackets.
fn check_address(address: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or("a bracketed IPv6 host must be followed by `:port`")?;
        if !host.contains(':') {
            return Err("brackets are only for IPv6 addresses");
        }
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or("the port is missing")?;
        if host.contains(':') {
            return Err("put an IPv6 address in brackets");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
        return Err("the host must be a name or an IP address, not a URL");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_document;

    /// (line, path, start of message) of every error.
    fn errors(text: &str) -> Vec<(Option<usize>, String, String)> {
        parse_document(text)
            .expect_err("should be invalid")
            .into_iter()
            .map(|e| (e.line, e.path, e.message))
            .collect()
    }

    fn assert_errors(text: &str, expected: &[(usize, &str, &str)]) {
        let got = errors(text);
        assert_eq!(got.len(), expected.len(), "got {got:#?}");
        for ((line, path, message), (want_line, want_path, want_start)) in got.iter().zip(expected)
        {
            assert_eq!(
                (*line, path.as_str()),
                (Some(*want_line), *want_path),
                "{message}"
            );
            assert!(
                message.starts_with(want_start),
                "{path}: {message:?} should start with {want_start:?}"
            );
        }
    }

    #[test]
    fn empty_document() {
        for text in [
            "",
            "# only a comment\n",
            "{}",
            "resources: []\npolicies: []\n",
        ] {
            let got = errors(text);
            assert_eq!(got.len(), 1, "{text:?}: {got:?}");
            assert_eq!(got[0].1, "");
            assert!(
                got[0].2.starts_with("the document is empty"),
                "{:?}",
                got[0]
            );
        }
    }

    #[test]
    fn names_and_duplicates() {
        let text = "\
resources:
  - name: db
    kind: ssh
    agent: eu
    address: host:22
  - name: db
    kind: ssh
    agent: EU West
    address: host:22
policies:
  - name: Bad_Name
    subjects: { users: [u] }
    resources: { names: [db] }
  - name: p
    subjects: { users: [u] }
    resources: { names: [db] }
    rules:
      - limit: { rows: 1 }
        name: cap
      - limit: { rows: 2 }
        name: cap
  - name: p
    subjects: { users: [u] }
    resources: { names: [db] }
";
        assert_errors(
            text,
            &[
                (
                    6,
                    "resources[1].name",
                    "duplicate resource name `db` (also resources[0])",
                ),
                (
                    8,
                    "resources[1].agent",
                    "`EU West` is not a valid agent name",
                ),
                (
                    11,
                    "policies[0].name",
                    "`Bad_Name` is not a valid policy name",
                ),
                (
                    21,
                    "policies[1].rules[1].name",
                    "duplicate rule name `cap` in this policy (also rules[0])",
                ),
                (
                    22,
                    "policies[2].name",
                    "duplicate policy name `p` (also policies[1])",
                ),
            ],
        );
        assert!(is_valid_name("orders-db.v2_x"));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name("-x") && !is_valid_name("") && !is_valid_name("é"));
    }

    #[test]
    fn subjects_and_resource_selectors() {
        let text = "\
policies:
  - name: nobody
    resources: { names: [\"*\"] }
  - name: nothing
    subjects: { groups: [ops, \"\"] }
    resources: {}
  - name: empties
    subjects: { users: [u] }
    resources:
      names: []
      labels: {}
      kinds: []
";
        assert_errors(
            text,
            &[
                (
                    2,
                    "policies[0].subjects",
                    "a policy must name at least one subject",
                ),
                (
                    5,
                    "policies[1].subjects.groups[1]",
                    "entries must not be empty",
                ),
                (6, "policies[1].resources", "a policy must select resources"),
                (
                    10,
                    "policies[2].resources.names",
                    "an empty list matches nothing",
                ),
                (
                    11,
                    "policies[2].resources.labels",
                    "empty `labels` constrain nothing",
                ),
                (
                    12,
                    "policies[2].resources.kinds",
                    "an empty list matches nothing",
                ),
            ],
        );
    }

    #[test]
    fn rule_bodies() {
        let text = "\
policies:
  - name: p
    subjects: { users: [u] }
    resources: { names: [\"*\"] }
    rules:
      - approve: { sql: { statements: [update] } }
      - approve:
          approvers: [dba]
          min: 0
          ttl: 10m
          timeout: 0s
      - approve: { approvers: [dba], mode: retry, ttl: 0s, timeout: 18446744073709551615s }
      - limit: { rows: 0 }
      - mask: { as: hash }
      - mask: { columns: [a.b.c.d, \"x..y\"], strict_tables: [a.b.c], strict_allow: [\"SELECT 1; SELECT 2\", \"SELEC oops\"] }
      - deny: { sql: { statements: [], tables: [a.b.c], functions: [\"\"] } }
      - allow: { sql: { statements: [insert], unbounded: [delete] } }
";
        assert_errors(
            text,
            &[
                (
                    6,
                    "policies[0].rules[0].approve.approvers",
                    "approve needs at least one approver group",
                ),
                (
                    9,
                    "policies[0].rules[1].approve.min",
                    "`min` must be at least 1",
                ),
                (
                    11,
                    "policies[0].rules[1].approve.timeout",
                    "`timeout` must be longer than 0s",
                ),
                (
                    12,
                    "policies[0].rules[2].approve.timeout",
                    "`timeout` must be at most 30d",
                ),
                (
                    12,
                    "policies[0].rules[2].approve.ttl",
                    "`ttl` must be longer than 0s",
                ),
                (
                    13,
                    "policies[0].rules[3].limit.rows",
                    "`rows` must be at least 1",
                ),
                (
                    14,
                    "policies[0].rules[4].mask",
                    "mask needs `columns` or `detectors`",
                ),
                (
                    15,
                    "policies[0].rules[5].mask.columns[0]",
                    "column pattern `a.b.c.d` must be",
                ),
                (
                    15,
                    "policies[0].rules[5].mask.columns[1]",
                    "column pattern `x..y` must be",
                ),
                (
                    15,
                    "policies[0].rules[5].mask.strict_tables[0]",
                    "table pattern `a.b.c` must be",
                ),
                (
                    15,
                    "policies[0].rules[5].mask.strict_allow[0]",
                    "`SELECT 1; SELECT 2` must be exactly one SQL statement",
                ),
                (
                    15,
                    "policies[0].rules[5].mask.strict_allow[1]",
                    "`SELEC oops`: could not parse SQL",
                ),
                (
                    16,
                    "policies[0].rules[6].deny.sql.statements",
                    "an empty list matches nothing",
                ),
                (
                    16,
                    "policies[0].rules[6].deny.sql.tables[0]",
                    "table pattern `a.b.c` must be",
                ),
                (
                    16,
                    "policies[0].rules[6].deny.sql.functions[0]",
                    "function pattern `` must be",
                ),
                (
                    17,
                    "policies[0].rules[7].allow.sql.unbounded",
                    "no kind is in both `statements` and `unbounded`",
                ),
            ],
        );
    }

    #[test]
    fn resources() {
        let text = "\
resources:
  - { name: a, kind: postgres, agent: eu, address: \"10.0.0.1:5432\" }
  - { name: b, kind: ssh, agent: eu, address: \"h:22\", database: x }
  - { name: c, kind: http, agent: eu, address: \"10.0.0.1\" }
  - { name: d, kind: http, agent: eu, address: \"::1:80\" }
  - { name: e, kind: http, agent: eu, address: \"[::1]:80\", credential: \"\" }
  - { name: f, kind: http, agent: eu, address: \"host:99999\" }
  - { name: g, kind: http, agent: eu, address: \"https://x:443\" }
  - { name: h, kind: postgres, agent: eu, address: \"[::1]:5432\", database: orders, tls_mode: verify-full, tls_ca: \"-----BEGIN CERTIFICATE-----\", audit_mode: best_effort }
  - { name: i, kind: postgres, agent: eu, address: \"h:5432\", database: orders, tls_mode: verify-full }
  - { name: j, kind: postgres, agent: eu, address: \"h:5432\", database: o, max_connections: 0, max_connections_per_subject: 0 }
  - { name: k, kind: postgres, agent: eu, address: \"h:5432\", database: o, max_connections: 10, max_connections_per_subject: 11 }
  - { name: l, kind: postgres, agent: eu, address: \"h:5432\", database: o, max_connections: 10, max_connections_per_subject: 10 }
";
        assert_errors(
            text,
            &[
                (2, "resources[0]", "a postgres resource needs `database`"),
                (
                    3,
                    "resources[1].database",
                    "`database` applies only to postgres resources, not ssh",
                ),
                (
                    4,
                    "resources[2].address",
                    "address `10.0.0.1` must look like host:port (e.g. 10.0.3.7:5432 or [::1]:5432): the port is missing",
                ),
                (
                    5,
                    "resources[3].address",
                    "address `::1:80` must look like host:port",
                ),
                (
                    6,
                    "resources[4].credential",
                    "`credential` must name a stored credential",
                ),
                (
                    7,
                    "resources[5].address",
                    "address `host:99999` must look like host:port",
                ),
                (
                    8,
                    "resources[6].address",
                    "address `https://x:443` must look like host:port",
                ),
                (
                    10,
                    "resources[8].tls_ca",
                    "`tls_mode: verify-full` needs `tls_ca`",
                ),
                (
                    11,
                    "resources[9].max_connections",
                    "`max_connections` must be at least 1; omit it for no limit",
                ),
                (
                    11,
                    "resources[9].max_connections_per_subject",
                    "`max_connections_per_subject` must be at least 1",
                ),
                (
                    12,
                    "resources[10].max_connections_per_subject",
                    "`max_connections_per_subject` (11) cannot be more than `max_connections` (10)",
                ),
            ],
        );
    }

    #[test]
    fn validate_without_source_has_paths_but_no_lines() {
        let doc = Document {
            policies: vec![Policy {
                name: "p".into(),
                description: None,
                subjects: SubjectSelector::default(),
                resources: ResourceSelector {
                    names: Some(vec!["*".into()]),
                    ..ResourceSelector::default()
                },
                rules: Vec::new(),
            }],
            ..Document::default()
        };
        let errors = validate(&doc).expect_err("no subjects").into_vec();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "policies[0].subjects");
        assert_eq!(errors[0].line, None);
        assert_eq!(
            errors[0].to_string(),
            format!("policies[0].subjects: {}", errors[0].message)
        );
    }
}
