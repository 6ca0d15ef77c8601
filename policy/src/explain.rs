//! "Would identity X be allowed statement S on resource R, and which rule
//! decided?" — the answer behind `sluice policy explain` and the console's
//! explain view.
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
        Explanation {
            connect: connect_policy.is_some(),
            connect_policy,
            decision,
            trace,
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
