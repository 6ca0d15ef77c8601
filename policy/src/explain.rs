//! "Would identity X be allowed statement S on resource R, and which rule
//! decided?" — the answer behind `sluice policy explain` and the API's
//! `POST /api/v1/policies/explain`.
//!
//! It runs the very evaluator the agent runs, with a tracer that records a
//! line per policy and rule, so the explanation cannot drift from
//! enforcement.

use serde::{Deserialize, Serialize};

use crate::compile::CompiledPolicy;
use crate::eval::{Decision, StatementFacts, Subject};

/// The result of an explain query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Whether the subject may connect to the resource.
    pub connect: bool,
    /// The policy that grants the connection.
    pub connect_policy: Option<String>,
    /// The statement's decision, when a statement was given.
    pub decision: Option<Decision>,
    /// Human-readable lines: which policies applied and why, what each rule
    /// made of the statement, and the final verdict.
    pub trace: Vec<String>,
}

impl CompiledPolicy {
    /// Explains connection and, if `facts` is given, the statement decision
    /// for `subject` on `resource`. The decision is exactly what
    /// [`CompiledPolicy::decide`] returns.
    pub fn explain(
        &self,
        subject: &Subject,
        resource: &str,
        facts: Option<&StatementFacts>,
    ) -> Explanation {
        let mut trace = Vec::new();
        let connect_policy = self
            .connect_traced(subject, resource, &mut trace)
            .map(str::to_owned);
        let decision = facts.map(|f| self.decide_traced(subject, resource, f, &mut trace));
        if connect_policy.is_some() {
            self.explain_masks(subject, resource, facts, &mut trace);
        }
        Explanation {
            connect: connect_policy.is_some(),
            connect_policy,
            decision,
            trace,
        }
    }
}

impl CompiledPolicy {
    /// Which result columns and values the session's mask rules rewrite,
    /// and whether the statement runs in strict mode.
    fn explain_masks(
        &self,
        subject: &Subject,
        resource: &str,
        facts: Option<&StatementFacts>,
        trace: &mut Vec<String>,
    ) {
        let specs = self.masks_for(subject, resource);
        if specs.is_empty() {
            trace.push("masking: no mask rule applies; results are returned as they are".into());
            return;
        }
        for spec in specs {
            let strategy = format!("{:?}", spec.strategy).to_lowercase();
            let who = format!("{}/{}", spec.policy, spec.rule);
            if !spec.columns.is_empty() {
                let cols: Vec<String> = spec.columns.iter().map(ToString::to_string).collect();
                trace.push(format!(
                    "masking {who}: result columns whose origin (also through aliases, joins, subqueries, CTEs, RETURNING and views) is {} are masked as {strategy}",
                    cols.join(", ")
                ));
            }
            if !spec.detectors.is_empty() {
                let names: Vec<String> = spec
                    .detectors
                    .iter()
                    .map(|d| format!("{d:?}").to_lowercase())
                    .collect();
                trace.push(format!(
                    "masking {who}: values found by {} in any text value, notice or error are masked as {strategy}",
                    names.join(", ")
                ));
            }
            if !spec.strict_tables.is_empty() {
                let tables: Vec<String> =
                    spec.strict_tables.iter().map(ToString::to_string).collect();
                let reads: Vec<&String> = facts
                    .map(|f| {
                        f.tables_read
                            .iter()
                            .filter(|t| spec.is_strict_table(t))
                            .collect()
                    })
                    .unwrap_or_default();
                if reads.is_empty() {
                    trace.push(format!(
                        "masking {who}: statements reading {} run in strict mode{}",
                        tables.join(", "),
                        if facts.is_some() {
                            " (this one does not)"
                        } else {
                            ""
                        }
                    ));
                } else {
                    trace.push(format!(
                        "masking {who}: this statement reads {} (sensitive): every result column without a known, unmasked origin (expressions, casts, aggregates other than a select list's count(...), to_json, whole-row references) is masked as {strategy}",
                        reads.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
}

/// Free-function form of [`CompiledPolicy::explain`].
pub fn explain(
    policy: &CompiledPolicy,
    subject: &Subject,
    resource: &str,
    facts: Option<&StatementFacts>,
) -> Explanation {
    policy.explain(subject, resource, facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_all;
    use crate::kinds::SqlKind;
    use crate::parse::parse_document;

    const DOC: &str = r#"
resources:
  - { name: orders-db, kind: postgres, agent: eu, address: "db:5432", database: orders, labels: { env: prod } }
policies:
  - name: readers
    subjects: { groups: [analysts] }
    resources: { kinds: [postgres] }
    rules:
      - allow: { sql: { statements: [read] } }
  - name: guard
    subjects: { groups: ["*"] }
    resources: { labels: { env: prod } }
    rules:
      - deny: { sql: { statements: [delete], unbounded: [delete] } }
        name: no-unbounded-delete
        reason: add a WHERE clause
      - limit: { rows: 10 }
  - name: ops
    subjects: { users: [root] }
    resources: { names: [orders-db] }
"#;

    #[test]
    fn explains_matches_and_misses() {
        let doc = parse_document(DOC).expect("valid");
        let policy = compile_all(&doc, &doc.resources);
        let subject = Subject::user("ann", ["analysts"]);
        let facts = StatementFacts::of_kinds([SqlKind::Delete]);
        let ex = explain(&policy, &subject, "orders-db", Some(&facts));
        assert!(ex.connect);
        assert_eq!(ex.connect_policy.as_deref(), Some("readers"));
        let decision = ex.decision.clone().expect("decision");
        assert_eq!(decision, policy.decide(&subject, "orders-db", &facts));
        assert!(decision.is_denied());
        assert_eq!(decision.rule.as_deref(), Some("no-unbounded-delete"));
        assert_eq!(decision.reason, "add a WHERE clause");
        let trace = ex.trace.join("\n");
        for needle in [
            "policy `readers` applies: user `ann` matches its groups entry `analysts` (group `analysts`)",
            "policy `guard` applies: user `ann` matches its groups entry `*` (group `analysts`)",
            "policy `ops` does not apply: user `ann` (groups analysts) is not named in its subjects",
            "connect: allowed by policy `readers`",
            "statement `delete`",
            "policy `readers` rules[0]: allow does not match: `delete`: not one of [select, show, explain, declare_cursor, fetch, close_cursor]",
            "policy `guard` no-unbounded-delete: deny matches `delete`",
            "policy `guard` rules[1]: limit 10 rows",
            "decision: deny by rule no-unbounded-delete of policy `guard` (deny takes precedence)",
        ] {
            assert!(trace.contains(needle), "missing {needle:?} in\n{trace}");
        }

        let bounded = StatementFacts {
            has_where: true,
            ..facts
        };
        let ex = policy.explain(&subject, "orders-db", Some(&bounded));
        let trace = ex.trace.join("\n");
        assert!(
            trace.contains("deny does not match: `delete`: it has a WHERE clause"),
            "{trace}"
        );
        assert!(trace.contains("decision: deny: no rule of policies `readers`, `guard` allows `delete` (default deny)"), "{trace}");
    }

    #[test]
    fn explains_which_columns_and_values_are_masked() {
        let doc = parse_document(
            r#"
resources:
  - { name: crm, kind: postgres, agent: eu, address: "db:5432", database: crm }
policies:
  - name: support
    subjects: { groups: [support] }
    resources: { names: [crm] }
    rules:
      - allow: { sql: { statements: [read] } }
      - mask: { columns: ["public.customers.ssn"], detectors: [email], as: partial, strict_tables: ["public.customers"] }
        name: pii
"#,
        )
        .expect("valid");
        let policy = compile_all(&doc, &doc.resources);
        let subject = Subject::user("sam", ["support"]);
        let facts = StatementFacts {
            tables_read: vec!["public.customers".into()],
            ..StatementFacts::of_kinds([SqlKind::Select])
        };
        let trace = policy
            .explain(&subject, "crm", Some(&facts))
            .trace
            .join("\n");
        for needle in [
            "masking support/pii: result columns whose origin",
            "public.customers.ssn are masked as partial",
            "values found by email in any text value",
            "this statement reads public.customers (sensitive): every result column without a known, unmasked origin",
        ] {
            assert!(trace.contains(needle), "missing {needle:?} in\n{trace}");
        }
        let other = StatementFacts::of_kinds([SqlKind::Select]);
        let trace = policy
            .explain(&subject, "crm", Some(&other))
            .trace
            .join("\n");
        assert!(
            trace.contains("run in strict mode (this one does not)"),
            "{trace}"
        );
    }

    #[test]
    fn explains_connect_denial() {
        let doc = parse_document(DOC).expect("valid");
        let policy = compile_all(&doc, &doc.resources);
        let ex = policy.explain(
            &Subject::service_account("x", Vec::<String>::new()),
            "nope",
            None,
        );
        assert!(!ex.connect && ex.decision.is_none());
        assert!(ex.trace.iter().any(|l| {
            l.contains("does not apply: resource `nope` is not among its resources (orders-db)")
        }));
        assert_eq!(
            ex.trace.last().map(String::as_str),
            Some(
                "connect: denied: no policy names both service account `x` and resource `nope` (default deny)"
            )
        );
    }
}
