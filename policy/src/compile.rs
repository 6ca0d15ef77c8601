//! Compilation of a validated [`Document`] into the snapshot an agent
//! enforces.
//!
//! Compiling resolves everything that does not depend on the statement:
//! resource selectors become concrete resource names, statement groups
//! become bitsets, patterns are lower-cased and split, and approval defaults
//! are filled in. A snapshot for one agent contains only that agent's
//! resources, so nothing about other segments (addresses, credential names)
//! reaches it.

use serde::{Deserialize, Serialize};

use crate::duration::PolicyDuration;
use crate::error::SnapshotError;
use crate::glob::{ColumnPattern, QualifiedPattern, Quantifier, glob_match};
use crate::kinds::{KindSet, StatementSelector};
use crate::model::{
    Action, ApprovalMode, DEFAULT_APPROVAL_TIMEOUT, DEFAULT_APPROVAL_TTL, Detector, Document,
    MaskStrategy, ResourceSelector, ResourceSpec, SqlMatcher, SubjectSelector,
};

/// Media type and version of the compiled snapshot; carried inside the JSON
/// as `format` and checked on decode, so an agent never half-understands a
/// snapshot from a newer control plane.
pub const POLICY_FORMAT: &str = "sluice.policy.v1+json";

/// What an agent (or the control plane's explain) evaluates against.
///
/// The empty snapshot ([`CompiledPolicy::deny_all`], also `Default`) denies
/// every connection: it is what an agent should enforce when it has no valid
/// snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompiledPolicy {
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    resources: Vec<ResourceSpec>,
    policies: Vec<CompiledGrant>,
}

/// One policy, reduced to the resources it actually covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompiledGrant {
    /// The policy's name.
    pub name: String,
    /// Who it applies to (globs, as written).
    pub subjects: SubjectSelector,
    /// The resource names its selector resolved to.
    pub resources: Vec<String>,
    /// Its rules, in document order.
    pub rules: Vec<CompiledRule>,
}

/// One rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompiledRule {
    /// The rule's name, or `rules[i]`.
    pub label: String,
    /// The author's reason, shown to clients when this rule decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it does.
    pub action: CompiledAction,
}

/// A rule's action with its matcher compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CompiledAction {
    /// Let matching statements run.
    Allow(CompiledMatcher),
    /// Block matching statements.
    Deny(CompiledMatcher),
    /// Hold matching statements for approval.
    Approve {
        /// Which statements.
        matcher: CompiledMatcher,
        /// Who approves and how.
        spec: ApproveSpec,
    },
    /// Mask results.
    Mask(MaskSpec),
    /// Cap returned rows.
    Limit {
        /// The cap.
        rows: u64,
    },
}

/// A compiled SQL matcher. Every present constraint must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompiledMatcher {
    /// Kinds matched (groups expanded; without `statements` in the source,
    /// every kind except `other`).
    pub kinds: KindSet,
    /// Kinds that match only without a WHERE clause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbounded: Option<KindSet>,
    /// Table patterns, if the rule constrains tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<QualifiedPattern>>,
    /// Function patterns, if the rule constrains functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<QualifiedPattern>>,
}

/// Who must approve a held statement, and how the client waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveSpec {
    /// Groups whose members may approve (never the requester themself).
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    pub min: u32,
    /// Wait or retry.
    pub mode: ApprovalMode,
    /// How long a `wait` holds the statement.
    pub timeout: PolicyDuration,
    /// How long a `retry` approval stays usable.
    pub ttl: PolicyDuration,
}

/// A mask rule as the agent applies it to result rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// The policy the rule came from (for audit).
    pub policy: String,
    /// The rule's label (for audit).
    pub rule: String,
    /// Columns masked by origin.
    pub columns: Vec<ColumnPattern>,
    /// Detectors run over every text value.
    pub detectors: Vec<Detector>,
    /// How values are rewritten.
    #[serde(rename = "as")]
    pub strategy: MaskStrategy,
    /// Sensitive tables for strict mode.
    pub strict_tables: Vec<QualifiedPattern>,
    /// Fingerprints of statements strict mode leaves alone.
    #[serde(default)]
    pub strict_allow: Vec<String>,
}

impl MaskSpec {
    /// Whether a result column with this origin is masked by name. `schema`
    /// and `table` are `None` when the origin is unknown (computed columns).
    pub fn masks_column(&self, schema: Option<&str>, table: Option<&str>, column: &str) -> bool {
        self.columns
            .iter()
            .any(|p| p.matches(schema, table, column))
    }

    /// Whether reading `table` (`schema.table`) puts the statement in strict
    /// mode. An unqualified name counts if its table part matches: it might
    /// be the sensitive one.
    pub fn is_strict_table(&self, table: &str) -> bool {
        self.strict_tables
            .iter()
            .any(|p| p.matches(table, Quantifier::Any))
    }
}

impl Default for CompiledPolicy {
    fn default() -> Self {
        Self::deny_all()
    }
}

impl CompiledPolicy {
    /// A snapshot with no resources and no policies: every connection and
    /// statement is denied.
    pub fn deny_all() -> Self {
        Self {
            format: POLICY_FORMAT.to_owned(),
            agent: None,
            resources: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// The agent this snapshot was compiled for; `None` from [`compile_all`].
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// The resources in the snapshot (what the agent serves).
    pub fn resources(&self) -> &[ResourceSpec] {
        &self.resources
    }

    /// A resource by name.
    pub fn resource(&self, name: &str) -> Option<&ResourceSpec> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The policies that cover at least one of the snapshot's resources.
    pub fn policies(&self) -> &[CompiledGrant] {
        &self.policies
    }

    /// Encodes the snapshot as [`POLICY_FORMAT`] JSON.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Decodes a [`POLICY_FORMAT`] snapshot, rejecting other formats and
    /// unknown fields (a newer rule type must not be silently ignored).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let policy: Self = serde_json::from_slice(bytes)?;
        if policy.format != POLICY_FORMAT {
            return Err(SnapshotError::UnsupportedFormat {
                found: policy.format,
            });
        }
        Ok(policy)
    }
}

/// Compiles `doc` for the agent named `agent`.
///
/// `resources` is the full resource list (the control plane merges its
/// stored resources with the document's; on duplicate names the first
/// wins). The snapshot keeps the resources served by `agent`, and the
/// policies that select at least one of them. `doc` should have been
/// validated ([`crate::parse_document`] does that); compilation itself
/// never fails.
pub fn compile(doc: &Document, resources: &[ResourceSpec], agent: &str) -> CompiledPolicy {
    compile_filtered(doc, resources, Some(agent))
}

/// Compiles `doc` against every resource regardless of agent, for the
/// control plane's explain and for previews.
pub fn compile_all(doc: &Document, resources: &[ResourceSpec]) -> CompiledPolicy {
    compile_filtered(doc, resources, None)
}

fn compile_filtered(
    doc: &Document,
    resources: &[ResourceSpec],
    agent: Option<&str>,
) -> CompiledPolicy {
    let mut kept: Vec<ResourceSpec> = Vec::new();
    for resource in resources {
        let served = agent.is_none_or(|a| resource.agent == a);
        if served && !kept.iter().any(|r| r.name == resource.name) {
            kept.push(resource.clone());
        }
    }
    let policies = doc
        .policies
        .iter()
        .filter_map(|policy| {
            let names: Vec<String> = kept
                .iter()
                .filter(|r| selects(&policy.resources, r))
                .map(|r| r.name.clone())
                .collect();
            if names.is_empty() {
                return None;
            }
            let rules = policy
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let label = rule.label(i);
                    let action = compile_action(&rule.action, &policy.name, &label);
                    CompiledRule {
                        label,
                        reason: rule.reason.clone(),
                        action,
                    }
                })
                .collect();
            Some(CompiledGrant {
                name: policy.name.clone(),
                subjects: policy.subjects.clone(),
                resources: names,
                rules,
            })
        })
        .collect();
    CompiledPolicy {
        format: POLICY_FORMAT.to_owned(),
        agent: agent.map(str::to_owned),
        resources: kept,
        policies,
    }
}

/// Whether a resource selector picks `resource`. An empty selector picks
/// nothing (validation rejects it; compiling it must not mean "all").
pub fn selects(selector: &ResourceSelector, resource: &ResourceSpec) -> bool {
    if selector.is_empty() {
        return false;
    }
    let names_ok = selector
        .names
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| glob_match(n, &resource.name)));
    let labels_ok = selector.labels.as_ref().is_none_or(|labels| {
        labels
            .iter()
            .all(|(k, v)| resource.labels.get(k) == Some(v))
    });
    let kinds_ok = selector
        .kinds
        .as_ref()
        .is_none_or(|kinds| kinds.contains(&resource.kind));
    names_ok && labels_ok && kinds_ok
}

fn compile_action(action: &Action, policy: &str, label: &str) -> CompiledAction {
    match action {
        Action::Allow(body) => CompiledAction::Allow(compile_matcher(body.sql.as_ref())),
        Action::Deny(body) => CompiledAction::Deny(compile_matcher(body.sql.as_ref())),
        Action::Approve(body) => CompiledAction::Approve {
            matcher: compile_matcher(body.sql.as_ref()),
            spec: ApproveSpec {
                approvers: body.approvers.clone(),
                min: body.min,
                mode: body.mode,
                timeout: body.timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT),
                ttl: body.ttl.unwrap_or(DEFAULT_APPROVAL_TTL),
            },
        },
        Action::Mask(body) => CompiledAction::Mask(MaskSpec {
            policy: policy.to_owned(),
            rule: label.to_owned(),
            columns: body
                .columns
                .iter()
                .map(|c| ColumnPattern::parse(c))
                .collect(),
            detectors: body.detectors.clone(),
            strategy: body.strategy,
            strict_tables: body
                .strict_tables
                .iter()
                .map(|t| QualifiedPattern::parse(t))
                .collect(),
            strict_allow: body
                .strict_allow
                .iter()
                .filter_map(|sql| crate::sql::classify(sql).ok())
                .filter_map(|s| s.into_iter().next().map(|s| s.fingerprint))
                .collect(),
        }),
        Action::Limit(body) => CompiledAction::Limit { rows: body.rows },
    }
}

/// Expands a statement list into a kind set.
pub(crate) fn kind_set(list: &[StatementSelector]) -> KindSet {
    list.iter()
        .fold(KindSet::EMPTY, |set, s| set.union(s.kinds()))
}

fn compile_matcher(sql: Option<&SqlMatcher>) -> CompiledMatcher {
    let patterns = |list: &Option<Vec<String>>| {
        list.as_ref()
            .map(|l| l.iter().map(|p| QualifiedPattern::parse(p)).collect())
    };
    match sql {
        None => CompiledMatcher {
            kinds: KindSet::classified(),
            unbounded: None,
            tables: None,
            functions: None,
        },
        Some(sql) => CompiledMatcher {
            kinds: sql
                .statements
                .as_deref()
                .map_or_else(KindSet::classified, kind_set),
            unbounded: sql.unbounded.as_deref().map(kind_set),
            tables: patterns(&sql.tables),
            functions: patterns(&sql.functions),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::SqlKind;
    use crate::parse::parse_document;

    const DOC: &str = r#"
resources:
  - { name: orders-db, kind: postgres, agent: eu-west, address: "10.0.3.7:5432", database: orders, labels: { env: prod } }
  - { name: billing-db, kind: postgres, agent: us-east, address: "10.9.0.2:5432", database: billing, labels: { env: prod } }
  - { name: staging-db, kind: postgres, agent: eu-west, address: "10.0.3.8:5432", database: orders, labels: { env: staging } }
policies:
  - name: prod
    subjects: { groups: [ai-agents] }
    resources: { labels: { env: prod } }
    rules:
      - allow: { sql: { statements: [read] } }
      - approve: { sql: { statements: [write] }, approvers: [dba], mode: retry }
      - mask: { columns: ["*.email"], as: hash }
  - name: billing-only
    subjects: { users: [bob] }
    resources: { names: ["billing-*"] }
    rules:
      - allow: {}
"#;

    #[test]
    fn compile_filters_by_agent() {
        let doc = parse_document(DOC).expect("valid");
        let eu = compile(&doc, &doc.resources, "eu-west");
        assert_eq!(eu.agent(), Some("eu-west"));
        let names: Vec<&str> = eu.resources().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["orders-db", "staging-db"]);
        assert_eq!(
            eu.policies().len(),
            1,
            "billing-only selects nothing on eu-west"
        );
        let prod = &eu.policies()[0];
        assert_eq!(prod.name, "prod");
        assert_eq!(prod.resources, ["orders-db"]);
        assert!(eu.resource("billing-db").is_none());

        let us = compile(&doc, &doc.resources, "us-east");
        let names: Vec<&str> = us.policies().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["prod", "billing-only"]);

        let nowhere = compile(&doc, &doc.resources, "ap-south");
        assert!(nowhere.resources().is_empty() && nowhere.policies().is_empty());

        let all = compile_all(&doc, &doc.resources);
        assert_eq!(all.agent(), None);
        assert_eq!(all.resources().len(), 3);
        assert_eq!(all.policies()[0].resources, ["orders-db", "billing-db"]);
    }

    #[test]
    fn duplicate_resources_first_wins() {
        let doc = parse_document(DOC).expect("valid");
        let mut merged = doc.resources.clone();
        let mut shadow = merged[0].clone();
        shadow.address = "192.0.2.1:5432".into();
        merged.push(shadow);
        let eu = compile(&doc, &merged, "eu-west");
        assert_eq!(eu.resources().len(), 2);
        assert_eq!(
            eu.resource("orders-db").map(|r| r.address.as_str()),
            Some("10.0.3.7:5432")
        );
    }

    #[test]
    fn defaults_are_resolved() {
        let doc = parse_document(DOC).expect("valid");
        let eu = compile(&doc, &doc.resources, "eu-west");
        let rules = &eu.policies()[0].rules;
        match &rules[1].action {
            CompiledAction::Approve { matcher, spec } => {
                assert!(matcher.kinds.contains(SqlKind::Truncate));
                assert!(!matcher.kinds.contains(SqlKind::Select));
                assert_eq!(spec.min, 1);
                assert_eq!(spec.mode, ApprovalMode::Retry);
                assert_eq!(spec.ttl.as_secs(), 900);
                assert_eq!(spec.timeout.as_secs(), 300);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(rules[1].label, "rules[1]");
        match &rules[2].action {
            CompiledAction::Mask(mask) => {
                assert_eq!(
                    (mask.policy.as_str(), mask.rule.as_str()),
                    ("prod", "rules[2]")
                );
                assert!(mask.masks_column(Some("public"), Some("users"), "Email"));
                assert_eq!(mask.strategy, MaskStrategy::Hash);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_round_trip() {
        let doc = parse_document(DOC).expect("valid");
        let compiled = compile(&doc, &doc.resources, "us-east");
        let bytes = compiled.to_json_bytes().expect("encode");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(
            text.contains(r#""format":"sluice.policy.v1+json""#),
            "{text}"
        );
        assert!(
            text.contains(
                r#""kinds":["select","show","explain","declare_cursor","fetch","close_cursor"]"#
            ),
            "{text}"
        );
        let back = CompiledPolicy::from_json_bytes(&bytes).expect("decode");
        assert_eq!(back, compiled);

        let other = text.replace(POLICY_FORMAT, "sluice.policy.v2+json");
        match CompiledPolicy::from_json_bytes(other.as_bytes()) {
            Err(SnapshotError::UnsupportedFormat { found }) => {
                assert_eq!(found, "sluice.policy.v2+json")
            }
            other => panic!("expected a format error, got {other:?}"),
        }
        let unknown = text.replacen(r#""policies""#, r#""future":1,"policies""#, 1);
        assert!(matches!(
            CompiledPolicy::from_json_bytes(unknown.as_bytes()),
            Err(SnapshotError::Json { .. })
        ));
        assert!(CompiledPolicy::from_json_bytes(b"not json").is_err());

        let empty = CompiledPolicy::deny_all();
        let bytes = empty.to_json_bytes().expect("encode");
        assert_eq!(
            CompiledPolicy::from_json_bytes(&bytes).expect("decode"),
            empty
        );
    }
}
