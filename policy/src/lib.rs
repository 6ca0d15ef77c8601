//! Sluice policy: the model of a policy document, its validation, its
//! compilation into per-agent snapshots, and the evaluator that decides
//! connections and SQL statements.
//!
//! Both planes use this crate, so the control plane validates and explains
//! exactly what agents enforce:
//!
//! * control plane: [`parse_document`] (YAML or JSON, errors with field path
//!   and line), [`compile()`] per agent, [`CompiledPolicy::to_json_bytes`],
//!   and [`compile_all()`] + [`CompiledPolicy::explain`] for
//!   `sluice policy explain`;
//! * agent: [`CompiledPolicy::from_json_bytes`], then
//!   [`CompiledPolicy::connect`] at connection time, [`classify`] on each
//!   SQL text (PostgreSQL's own parser, one [`ClassifiedStatement`] per
//!   statement) and [`CompiledPolicy::decide`] on each statement's
//!   [`StatementFacts`].
//!
//! Invariants owned here: **default deny** (no policy, no connection; no
//! rule, no statement; unclassifiable statements need an explicit `other`
//! rule), **deny > approve > allow** whatever policy a rule comes from, and
//! an empty snapshot ([`CompiledPolicy::deny_all`]) denies everything.
//!
//! This crate must never do I/O: no files, sockets, clocks, environment,
//! async runtime or logging. It takes text and values and returns values,
//! which keeps it deterministic, testable, and safe on the agent's hot path
//! (evaluation uses no regex and allocates only the returned decision). SQL
//! is classified here too ([`sql`]), with libpg_query linked in as a
//! library: parsing is computation, not I/O, and keeping it next to the
//! evaluator means the control plane's `explain` classifies exactly as the
//! agent does.
//!
//! Masking by value lives here too ([`mask`]): hand-written detectors (no
//! regex) that the agent runs over every text value of every result row, and
//! the strategies that rewrite what they find.

pub mod compile;
pub mod duration;
pub mod error;
pub mod eval;
pub mod explain;
pub mod glob;
pub mod kinds;
mod locate;
pub mod mask;
pub mod model;
pub mod parse;
pub mod sql;
pub mod validate;

pub use compile::{
    ApproveSpec, CompiledAction, CompiledGrant, CompiledMatcher, CompiledPolicy, CompiledRule,
    MaskSpec, POLICY_FORMAT, compile, compile_all,
};
pub use duration::{DurationError, PolicyDuration};
pub use error::{PolicyError, PolicyErrors, SnapshotError};
pub use eval::{Decision, Outcome, StatementFacts, Subject, SubjectKind};
pub use explain::{Explanation, explain};
pub use glob::{ColumnPattern, QualifiedPattern, Quantifier, glob_match, glob_match_ci};
pub use kinds::{KindSet, SqlGroup, SqlKind, StatementSelector, UnknownStatement};
pub use mask::{Match, find, mask_text};
pub use model::{
    Action, ApprovalMode, ApproveRule, AuditMode, Detector, Document, LimitRule,
    MAX_APPROVAL_WINDOW, MaskRule, MaskStrategy, MatchRule, Policy, ResourceKind, ResourceSelector,
    ResourceSpec, Rule, SqlMatcher, SubjectSelector, TlsMode,
};
pub use parse::parse_document;
pub use sql::{
    CREDENTIAL_CATALOGS, CatalogNames, ClassifiedStatement, ClassifyError, ClassifyOptions,
    CopyFormat, CopyOut, PreparedChange, Rename, SQL_EXECUTE_ALONE, STATISTICS, classify,
    classify_with, execute_needs_approval, fingerprint, is_builtin_function, is_large_object_data,
    is_statistics, kinds_of_call, large_object_access, normalize, prepared_body,
    runs_unread_execute,
};
pub use validate::{is_valid_name, validate};

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the policy brief. Its second `approve` rule names no
    /// approvers, which validation rejects; see `brief_example_verbatim`.
    const EXAMPLE: &str = r#"
resources:            # optional; the control plane upserts these
  - name: orders-db
    kind: postgres    # postgres | ssh | http
    agent: eu-west    # which agent serves it
    address: 10.0.3.7:5432
    database: orders  # postgres only
    credential: orders-db-readonly
    labels: { env: prod, team: payments }
    tls_mode: disable # disable | require | verify-full (default disable)
    audit_mode: fail_closed  # fail_closed (default) | best_effort
policies:
  - name: ai-agents-on-prod
    description: optional text
    subjects: { users: [alice], groups: [ai-agents], service_accounts: [ci-bot] }   # at least one entry overall; "*" allowed as a glob
    resources: { names: ["orders-*"], labels: { env: prod }, kinds: [postgres] }     # all given fields must match (AND); names are globs
    rules:
      - deny:  { sql: { statements: [drop, truncate, alter, grant, revoke, copy_program, do_block] } }
        reason: "schema changes go through migrations"
      - approve: { sql: { statements: [update, delete, insert] }, approvers: [dba], min: 1, mode: wait, timeout: 5m, ttl: 10m }
      - approve: { sql: { unbounded: [update, delete] } }      # UPDATE/DELETE without WHERE
      - mask:  { columns: ["public.customers.email", "*.ssn"], detectors: [credit_card, email, ssn], as: partial, strict_tables: ["public.customers"] }
      - limit: { rows: 1000 }
      - allow: { sql: { statements: [select, read] , tables: ["public.*"], functions: ["lower", "count"] } }
        name: optional-rule-name
"#;

    /// The example made valid: approvers on the unbounded rule.
    fn example() -> String {
        EXAMPLE.replace(
            "{ sql: { unbounded: [update, delete] } }",
            "{ sql: { unbounded: [update, delete] }, approvers: [dba] }",
        )
    }

    #[test]
    fn brief_example_parses() {
        let doc = parse_document(&example()).unwrap_or_else(|e| panic!("{e}"));
        let r = &doc.resources[0];
        assert_eq!(
            (r.name.as_str(), r.kind, r.address.as_str()),
            ("orders-db", ResourceKind::Postgres, "10.0.3.7:5432")
        );
        assert_eq!(r.database.as_deref(), Some("orders"));
        assert_eq!(r.labels.get("team").map(String::as_str), Some("payments"));
        assert_eq!(
            (r.tls_mode, r.audit_mode),
            (TlsMode::Disable, AuditMode::FailClosed)
        );
        assert_eq!(
            (r.max_connections, r.max_connections_per_subject),
            (None, None),
            "no limits of the resource's own unless it sets them"
        );
        let p = &doc.policies[0];
        assert_eq!(p.subjects.service_accounts, ["ci-bot"]);
        assert_eq!(p.rules.len(), 6);
        assert_eq!(
            p.rules[0].reason.as_deref(),
            Some("schema changes go through migrations")
        );
        match &p.rules[1].action {
            Action::Approve(a) => {
                assert_eq!(a.timeout.map(PolicyDuration::as_secs), Some(300));
                assert_eq!(a.mode, ApprovalMode::Wait);
                assert_eq!(a.ttl.map(PolicyDuration::as_secs), Some(600));
            }
            other => panic!("{other:?}"),
        }
        match &p.rules[3].action {
            Action::Mask(m) => {
                assert_eq!(m.strategy, MaskStrategy::Partial);
                assert_eq!(
                    m.detectors,
                    [Detector::CreditCard, Detector::Email, Detector::Ssn]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.rules[5].name.as_deref(), Some("optional-rule-name"));

        // The document serializes back to an equivalent document.
        let yaml = serde_yaml::to_string(&doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            parse_document(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")),
            doc
        );

        // And it does what it says, end to end.
        let compiled = compile(&doc, &doc.resources, "eu-west");
        let bytes = compiled.to_json_bytes().unwrap_or_else(|e| panic!("{e}"));
        let agent_side = CompiledPolicy::from_json_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let bot = Subject::service_account("ci-bot", Vec::<String>::new());
        assert_eq!(
            agent_side.connect(&bot, "orders-db"),
            Some("ai-agents-on-prod")
        );
        let select = StatementFacts {
            kinds: vec![SqlKind::Select],
            tables_read: vec!["public.customers".into()],
            functions: vec!["lower".into()],
            ..StatementFacts::default()
        };
        let d = agent_side.decide(&bot, "orders-db", &select);
        assert!(d.is_allowed(), "{d:?}");
        assert_eq!(d.rule.as_deref(), Some("optional-rule-name"));
        assert_eq!(d.row_limit, Some(1000));
        assert!(d.masks[0].masks_column(Some("public"), Some("customers"), "email"));
        assert!(d.masks[0].is_strict_table("public.customers"));
        let drop = StatementFacts::of_kinds([SqlKind::Drop]);
        assert_eq!(
            agent_side.decide(&bot, "orders-db", &drop).reason,
            "schema changes go through migrations"
        );
        let delete_all = StatementFacts::of_kinds([SqlKind::Delete]);
        assert!(matches!(
            agent_side.decide(&bot, "orders-db", &delete_all).outcome,
            Outcome::Approve(_)
        ));
    }

    #[test]
    fn resource_connection_limits_parse() {
        let doc = parse_document(&example().replace(
            "    audit_mode: fail_closed",
            "    max_connections: 90\n    max_connections_per_subject: 20\n    audit_mode: fail_closed",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &doc.resources[0];
        assert_eq!(
            (r.max_connections, r.max_connections_per_subject),
            (Some(90), Some(20))
        );
    }

    #[test]
    fn brief_example_verbatim() {
        let errors = parse_document(EXAMPLE)
            .expect_err("approvers missing")
            .into_vec();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 21: policies[0].rules[2].approve.approvers: approve needs at least one approver group in `approvers`",
            ]
        );
    }

    #[test]
    fn design_sketch_points_at_its_unknown_field() {
        // design.md section 4 writes `wait: 5m`; the model spells it
        // `mode: wait, timeout: 5m`.
        let sketch = "policies:\n  - name: p\n    subjects: { groups: [ai-agents] }\n    resources: { labels: { env: prod } }\n    rules:\n      - approve: { sql: { statements: [update, delete, insert] }, approvers: [dba], min: 1, wait: 5m }\n";
        let errors = parse_document(sketch)
            .expect_err("unknown field")
            .into_vec();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "policies[0].rules[0].approve.wait");
        assert_eq!(errors[0].line, Some(6));
        assert!(
            errors[0].message.starts_with("unknown field `wait`"),
            "{}",
            errors[0].message
        );
    }
}
