//! Evaluation of a compiled snapshot: may this subject connect, and what
//! happens to this statement.
//!
//! This is the agent's hot path, so it does no parsing, no regex, and
//! allocates only the returned [`Decision`]. Its rules:
//!
//! * **Default deny.** No policy naming both subject and resource: no
//!   connection. No rule allowing a statement: the statement is denied.
//! * **Precedence** deny > approve > allow, across every policy that applies.
//! * **Unclassifiable statements** (no kinds, or `other`) are denied unless a
//!   rule names `other` or `any` explicitly.
//! * **Multi-kind statements** (`EXPLAIN ANALYZE DELETE`): a deny or approve
//!   rule matching any kind triggers; allow needs every kind covered.
//! * **Tables and functions**: deny/approve trigger when any touched name
//!   matches; allow needs every touched name to match (see [`Quantifier`]).
//!
//! The same code produces the explain trace; a tracer that does nothing
//! compiles away on the hot path.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::compile::{
    ApproveSpec, CompiledAction, CompiledGrant, CompiledMatcher, CompiledPolicy, CompiledRule,
    MaskSpec,
};
use crate::glob::{ColumnPattern, QualifiedPattern, Quantifier, glob_match, names_match};
use crate::kinds::{KindSet, SqlKind};
use crate::sql::Rename;

/// Who is asking, as established from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// User id or service account id (the token's subject).
    pub id: String,
    /// Groups from the token's group claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Which `subjects` list the id is matched against.
    pub kind: SubjectKind,
}

/// Whether a subject is a user (human or AI) or a service account; a user
/// id never matches a `service_accounts` entry and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// Matched against `users`.
    User,
    /// Matched against `service_accounts`.
    ServiceAccount,
}

impl Subject {
    /// A user with these groups.
    pub fn user(
        id: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            id: id.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            kind: SubjectKind::User,
        }
    }

    /// A service account with these groups.
    pub fn service_account(
        id: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            id: id.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            kind: SubjectKind::ServiceAccount,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SubjectKind::User => write!(f, "user `{}`", self.id),
            SubjectKind::ServiceAccount => write!(f, "service account `{}`", self.id),
        }
    }
}

/// What the agent's SQL classifier found out about one statement.
///
/// Table and function names should be schema-qualified where the classifier
/// can resolve them (against the session's search_path); an unqualified
/// name is treated as possibly living in any schema.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatementFacts {
    /// Every kind the statement carries; empty if it could not be classified.
    #[serde(default)]
    pub kinds: Vec<SqlKind>,
    /// Tables read, `schema.table`.
    #[serde(default)]
    pub tables_read: Vec<String>,
    /// Tables written, `schema.table`.
    #[serde(default)]
    pub tables_written: Vec<String>,
    /// Functions called, `name` or `schema.name`.
    #[serde(default)]
    pub functions: Vec<String>,
    /// The calls among `functions` that are not PostgreSQL's own, and
    /// operators that are not (by symbol): what gives the statement the
    /// kind `user_function`, and what a rule's `functions:` is matched
    /// against for that kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_functions: Vec<String>,
    /// The foreign tables the statement reads or writes (directly, or
    /// through views and partitioned tables), or defines: what gives it the
    /// kind `foreign_data`, and what a rule's `tables:` is matched against
    /// for that kind. Only the target's catalog knows which tables are
    /// foreign, so the agent fills this in; definitions come from the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_tables: Vec<String>,
    /// The catalogs holding credentials the statement reads (directly, or
    /// through views), `schema.catalog`: what gives it the kind
    /// `credential_catalog`, and what a rule's `tables:` is matched against
    /// for that kind. The classifier finds them by name; the agent adds
    /// those views reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_catalogs: Vec<String>,
    /// The relations the statement reads or writes through the views,
    /// rules, row-level-security policies and partitioned tables it names,
    /// and those foreign keys' actions make its writes write
    /// (`schema.table`). Deny and approve rules' `tables:` match these too:
    /// denying a table denies reading it through a view. Allow rules match
    /// the names the statement uses only. Only the target's catalog knows
    /// them, so the agent fills this in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables_reached: Vec<String>,
    /// The functions the views, rules and row-level-security policies of
    /// the relations it reads or writes call, and those writing the
    /// relations it writes calls (constraints, defaults, index expressions,
    /// triggers), PostgreSQL's own included (`schema.function`). Deny and
    /// approve rules' `functions:` match these too: denying
    /// `pg_stat_get_activity` denies reading a view that calls it. The
    /// agent fills this in from the target's catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions_reached: Vec<String>,
    /// Relations, columns, schemas and types the statement renames or
    /// moves to another schema. Rules name what they cover by name, so a
    /// rename that takes something out of a deny, approve or mask rule is
    /// denied; and inside the session's transaction only it sees the new
    /// names, so the agent judges later statements by what the old ones
    /// reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renames: Vec<Rename>,
    /// Whether every UPDATE and DELETE of the statement (in CTEs and
    /// subqueries too) has a WHERE clause that looks at rows; false when
    /// any lacks one, and for statements with no UPDATE or DELETE.
    #[serde(default)]
    pub has_where: bool,
    /// Whether the statement reaches tables it does not name: what
    /// `CASCADE` drops or changes, a schema's or a role's objects,
    /// privileges on a whole schema, role membership, maintenance of every
    /// table, the planner's statistics, a sequence or large object picked
    /// by a value (the classifier's
    /// `reaches_unnamed_tables` lists them; the agent adds views over the
    /// statistics, what reaches large objects through the catalog, and
    /// FunctionCall messages). A rule's `tables:` cannot vouch for it: deny and
    /// approve rules with `tables:` match it, and allow rules with
    /// `tables:` do not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reaches_unnamed_tables: bool,
}

impl StatementFacts {
    /// Facts for a statement of the given kinds touching nothing in
    /// particular; convenient for tests and explain.
    pub fn of_kinds(kinds: impl IntoIterator<Item = SqlKind>) -> Self {
        Self {
            kinds: kinds.into_iter().collect(),
            ..Self::default()
        }
    }

    fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables_read
            .iter()
            .chain(&self.tables_written)
            .map(String::as_str)
    }
}

/// The verdict on one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Run, block, or hold for approval.
    pub outcome: Outcome,
    /// The policy whose rule decided; `None` for a default deny.
    pub policy: Option<String>,
    /// That rule's name or `rules[i]`; `None` for a default deny.
    pub rule: Option<String>,
    /// Human-readable reason, safe to show the client.
    pub reason: String,
    /// Row cap for the statement (smallest matching `limit`), if any.
    pub row_limit: Option<u64>,
    /// Mask rules of every applicable policy (empty when denied).
    pub masks: Vec<MaskSpec>,
}

/// What happens to a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forward it.
    Allow,
    /// Answer with an error; nothing reaches the target.
    Deny,
    /// Hold it until approved as specified.
    Approve(ApproveSpec),
}

impl Decision {
    /// Whether the statement may run without approval.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// Whether the statement is blocked.
    pub fn is_denied(&self) -> bool {
        self.outcome == Outcome::Deny
    }
}

/// Receives explain lines; the silent one costs nothing.
pub(crate) trait Tracer {
    /// Whether lines are wanted (lets the hot path stop early).
    const ENABLED: bool;
    /// Records a line, built only if wanted.
    fn note(&mut self, line: impl FnOnce() -> String);
}

/// The hot path's tracer.
pub(crate) struct Silent;

impl Tracer for Silent {
    const ENABLED: bool = false;
    fn note(&mut self, _: impl FnOnce() -> String) {}
}

impl Tracer for Vec<String> {
    const ENABLED: bool = true;
    fn note(&mut self, line: impl FnOnce() -> String) {
        self.push(line());
    }
}

/// How a subject matched a policy's `subjects`.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    User(&'a str),
    ServiceAccount(&'a str),
    Group { pattern: &'a str, group: &'a str },
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::User(p) => write!(f, "users entry `{p}`"),
            Via::ServiceAccount(p) => write!(f, "service_accounts entry `{p}`"),
            Via::Group { pattern, group } => {
                write!(f, "groups entry `{pattern}` (group `{group}`)")
            }
        }
    }
}

fn subject_via<'a>(grant: &'a CompiledGrant, subject: &'a Subject) -> Option<Via<'a>> {
    let ids = match subject.kind {
        SubjectKind::User => &grant.subjects.users,
        SubjectKind::ServiceAccount => &grant.subjects.service_accounts,
    };
    if let Some(p) = ids.iter().find(|p| glob_match(p, &subject.id)) {
        return Some(match subject.kind {
            SubjectKind::User => Via::User(p),
            SubjectKind::ServiceAccount => Via::ServiceAccount(p),
        });
    }
    grant.subjects.groups.iter().find_map(|pattern| {
        subject
            .groups
            .iter()
            .find(|g| glob_match(pattern, g))
            .map(|group| Via::Group { pattern, group })
    })
}

/// Whether `grant` applies to (subject, resource), explaining why not.
fn applies<T: Tracer>(grant: &CompiledGrant, subject: &Subject, resource: &str, t: &mut T) -> bool {
    if !grant.resources.iter().any(|r| r == resource) {
        t.note(|| {
            format!(
                "policy `{}` does not apply: resource `{resource}` is not among its resources ({})",
                grant.name,
                grant.resources.join(", ")
            )
        });
        return false;
    }
    match subject_via(grant, subject) {
        Some(via) => {
            t.note(|| {
                format!(
                    "policy `{}` applies: {subject} matches its {via}",
                    grant.name
                )
            });
            true
        }
        None => {
            t.note(|| {
                let groups = if subject.groups.is_empty() {
                    "no groups".to_owned()
                } else {
                    format!("groups {}", subject.groups.join(", "))
                };
                format!(
                    "policy `{}` does not apply: {subject} ({groups}) is not named in its subjects",
                    grant.name
                )
            });
            false
        }
    }
}

/// Why a matcher did not match one kind.
#[derive(Debug, Clone, Copy)]
enum Miss {
    Kind,
    HasWhere,
    Tables,
    Functions,
}

impl CompiledMatcher {
    /// Whether the matcher matches `kind` of the statement.
    fn check(&self, kind: SqlKind, facts: &StatementFacts, q: Quantifier) -> Result<(), Miss> {
        if !self.kinds.contains(kind) {
            return Err(Miss::Kind);
        }
        if let Some(unbounded) = self.unbounded
            && (!unbounded.contains(kind) || facts.has_where)
        {
            return Err(Miss::HasWhere);
        }
        // For `foreign_data`, a rule's tables are the foreign tables:
        // `allow: { statements: [foreign_data], tables: [remote.*] }`; for
        // `credential_catalog`, the catalogs.
        if let Some(tables) = &self.tables {
            let matched = match kind {
                SqlKind::ForeignData => {
                    names_match(tables, facts.foreign_tables.iter().map(String::as_str), q)
                }
                SqlKind::CredentialCatalog => names_match(
                    tables,
                    facts.credential_catalogs.iter().map(String::as_str),
                    q,
                ),
                // Any table at all: one a deny rule names, and one outside
                // an allow rule's.
                _ if facts.reaches_unnamed_tables => q == Quantifier::Any,
                // Deny and approve: a table however it is reached.
                _ if q == Quantifier::Any => names_match(
                    tables,
                    facts
                        .tables()
                        .chain(facts.tables_reached.iter().map(String::as_str)),
                    q,
                ),
                _ => names_match(tables, facts.tables(), q),
            };
            if !matched {
                return Err(Miss::Tables);
            }
        }
        // For `user_function`, a rule's functions are those calls: `allow:
        // { statements: [user_function], functions: [app.*] }` allows
        // calling the application's functions, with built-ins beside them.
        // Deny and approve: a function however it is called.
        let called = if kind == SqlKind::UserFunction {
            &facts.user_functions[..]
        } else {
            &facts.functions[..]
        };
        let reached = if kind != SqlKind::UserFunction && q == Quantifier::Any {
            &facts.functions_reached[..]
        } else {
            &[]
        };
        if let Some(functions) = &self.functions
            && !names_match(
                functions,
                called.iter().chain(reached).map(String::as_str),
                q,
            )
        {
            return Err(Miss::Functions);
        }
        Ok(())
    }

    /// The first of `kinds` the matcher matches, for deny and approve.
    fn first_hit(&self, kinds: &[SqlKind], facts: &StatementFacts) -> Option<SqlKind> {
        kinds
            .iter()
            .copied()
            .find(|&k| self.check(k, facts, Quantifier::Any).is_ok())
    }

    /// Explains a miss on every kind, for the trace.
    fn describe_miss(&self, kinds: &[SqlKind], facts: &StatementFacts, q: Quantifier) -> String {
        let mut parts = Vec::new();
        for &kind in kinds {
            let why = match self.check(kind, facts, q) {
                Ok(()) => continue,
                Err(Miss::Kind) if kind == SqlKind::Other => {
                    "unclassified statements match only `other` or `any`".to_owned()
                }
                Err(Miss::Kind) => format!("not one of [{}]", KindList(self.kinds)),
                Err(Miss::HasWhere) => match self.unbounded {
                    Some(u) if u.contains(kind) => "it has a WHERE clause".to_owned(),
                    _ => "it is not among the `unbounded` kinds".to_owned(),
                },
                Err(Miss::Tables) => match q {
                    Quantifier::Any => "no table it touches matches `tables`".to_owned(),
                    Quantifier::All
                        if facts.reaches_unnamed_tables
                            && !matches!(
                                kind,
                                SqlKind::ForeignData | SqlKind::CredentialCatalog
                            ) =>
                    {
                        format!(
                            "it{UNNAMED_TABLES}, which `tables` cannot vouch for; a rule without `tables` must allow it"
                        )
                    }
                    Quantifier::All => "a table it touches is outside `tables`".to_owned(),
                },
                Err(Miss::Functions) => match q {
                    Quantifier::Any => "no function it calls matches `functions`".to_owned(),
                    Quantifier::All => "a function it calls is outside `functions`".to_owned(),
                },
            };
            parts.push(format!("`{kind}`: {why}"));
        }
        parts.join("; ")
    }
}

/// Kinds as a comma-separated list.
struct KindList(KindSet);

impl fmt::Display for KindList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(kind.as_str())?;
        }
        Ok(())
    }
}

/// Kinds as written in messages: `explain_analyze+delete`.
struct KindsText<'a>(&'a [SqlKind]);

impl fmt::Display for KindsText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(kind.as_str())?;
        }
        Ok(())
    }
}

/// What a statement that reaches tables it does not name does, for
/// messages (after "it").
const UNNAMED_TABLES: &str = " reaches tables it does not name (CASCADE, a whole schema, a role's objects or membership, the planner's statistics, every table's maintenance, a sequence or large object picked by a value, a FunctionCall)";

/// A rule that matched.
#[derive(Clone, Copy)]
struct Hit<'a> {
    grant: &'a CompiledGrant,
    rule: &'a CompiledRule,
    kind: SqlKind,
}

impl Hit<'_> {
    fn decision(self, outcome: Outcome, default_reason: impl FnOnce() -> String) -> Decision {
        Decision {
            outcome,
            policy: Some(self.grant.name.clone()),
            rule: Some(self.rule.label.clone()),
            reason: self.rule.reason.clone().unwrap_or_else(default_reason),
            row_limit: None,
            masks: Vec::new(),
        }
    }
}

fn rule_ref(hit: &Hit<'_>) -> String {
    format!("rule {} of policy `{}`", hit.rule.label, hit.grant.name)
}

impl CompiledPolicy {
    /// Whether `subject` may connect to `resource`: the name of the first
    /// policy that names both, or `None` (default deny).
    pub fn connect(&self, subject: &Subject, resource: &str) -> Option<&str> {
        self.connect_traced(subject, resource, &mut Silent)
    }

    /// Decides one statement of `subject` on `resource`.
    pub fn decide(&self, subject: &Subject, resource: &str, facts: &StatementFacts) -> Decision {
        self.decide_traced(subject, resource, facts, &mut Silent)
    }

    /// Mask rules that apply to every statement of `subject` on `resource`;
    /// they do not depend on the statement, so a session can compute them
    /// once.
    pub fn masks_for(&self, subject: &Subject, resource: &str) -> Vec<&MaskSpec> {
        self.policies()
            .iter()
            .filter(|g| applies(g, subject, resource, &mut Silent))
            .flat_map(|g| &g.rules)
            .filter_map(|r| match &r.action {
                CompiledAction::Mask(spec) => Some(spec),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn connect_traced<T: Tracer>(
        &self,
        subject: &Subject,
        resource: &str,
        t: &mut T,
    ) -> Option<&str> {
        let mut found = None;
        for grant in self.policies() {
            if applies(grant, subject, resource, t) {
                found.get_or_insert(grant.name.as_str());
                if !T::ENABLED {
                    break;
                }
            }
        }
        match found {
            Some(name) => t.note(|| format!("connect: allowed by policy `{name}`")),
            None => t.note(|| {
                format!("connect: denied: no policy names both {subject} and resource `{resource}` (default deny)")
            }),
        }
        found
    }

    pub(crate) fn decide_traced<T: Tracer>(
        &self,
        subject: &Subject,
        resource: &str,
        facts: &StatementFacts,
        t: &mut T,
    ) -> Decision {
        let kinds: &[SqlKind] = if facts.kinds.is_empty() {
            &[SqlKind::Other]
        } else {
            &facts.kinds
        };
        let needed: KindSet = kinds.iter().copied().collect();
        let mut deny: Option<Hit<'_>> = None;
        let mut approve: Option<(Hit<'_>, &ApproveSpec)> = None;
        let mut allow: Option<Hit<'_>> = None;
        let mut covered = KindSet::EMPTY;
        // Kinds some approve rule matches: approval stands in for allow
        // for those only.
        let mut approvable = KindSet::EMPTY;
        let mut row_limit: Option<u64> = None;
        let mut masks: Vec<&MaskSpec> = Vec::new();
        // A rename that takes something out of a rule naming it.
        let mut lost: Option<(&CompiledGrant, &CompiledRule, &Rename)> = None;

        t.note(|| format!("statement `{}`", KindsText(kinds)));
        'policies: for grant in self.policies() {
            // Connect has already explained applicability; do not repeat it.
            if !applies(grant, subject, resource, &mut Silent) {
                continue;
            }
            for rule in &grant.rules {
                let at = || format!("policy `{}` {}", grant.name, rule.label);
                if lost.is_none()
                    && !facts.renames.is_empty()
                    && let Some(rename) = loses(&rule.action, &facts.renames)
                {
                    t.note(|| format!("{}: the statement renames what it names", at()));
                    lost = Some((grant, rule, rename));
                }
                match &rule.action {
                    CompiledAction::Deny(m) => match m.first_hit(kinds, facts) {
                        Some(kind) => {
                            t.note(|| format!("{}: deny matches `{kind}`", at()));
                            deny.get_or_insert(Hit { grant, rule, kind });
                            if !T::ENABLED {
                                break 'policies;
                            }
                        }
                        None => t.note(|| {
                            format!(
                                "{}: deny does not match: {}",
                                at(),
                                m.describe_miss(kinds, facts, Quantifier::Any)
                            )
                        }),
                    },
                    CompiledAction::Approve { matcher, spec } => {
                        match matcher.first_hit(kinds, facts) {
                            Some(kind) => {
                                t.note(|| format!("{}: approve matches `{kind}`", at()));
                                approve.get_or_insert((Hit { grant, rule, kind }, spec));
                                for &k in kinds {
                                    if matcher.check(k, facts, Quantifier::Any).is_ok() {
                                        approvable.insert(k);
                                    }
                                }
                            }
                            None => t.note(|| {
                                format!(
                                    "{}: approve does not match: {}",
                                    at(),
                                    matcher.describe_miss(kinds, facts, Quantifier::Any)
                                )
                            }),
                        }
                    }
                    CompiledAction::Allow(m) => {
                        let mut matched = KindSet::EMPTY;
                        for &kind in kinds {
                            if m.check(kind, facts, Quantifier::All).is_ok() {
                                matched.insert(kind);
                                allow.get_or_insert(Hit { grant, rule, kind });
                            }
                        }
                        covered = covered.union(matched);
                        if matched.is_empty() {
                            t.note(|| {
                                format!(
                                    "{}: allow does not match: {}",
                                    at(),
                                    m.describe_miss(kinds, facts, Quantifier::All)
                                )
                            });
                        } else {
                            t.note(|| format!("{}: allow matches `{matched}`", at()));
                        }
                    }
                    CompiledAction::Mask(spec) => {
                        t.note(|| format!("{}: mask applies", at()));
                        masks.push(spec);
                    }
                    CompiledAction::Limit { rows } => {
                        t.note(|| format!("{}: limit {rows} rows", at()));
                        row_limit = Some(row_limit.map_or(*rows, |r| r.min(*rows)));
                    }
                }
            }
        }

        let text = KindsText(kinds);
        let mut decision = if let Some(hit) = deny {
            let decision = hit.decision(Outcome::Deny, || {
                // Say why a rule naming tables matched one the text does
                // not name (`lo_get(16401)` under `tables: [secret.*]`).
                let unnamed = match &hit.rule.action {
                    CompiledAction::Deny(m)
                        if m.tables.is_some()
                            && facts.reaches_unnamed_tables
                            && !matches!(
                                hit.kind,
                                SqlKind::ForeignData | SqlKind::CredentialCatalog
                            ) =>
                    {
                        format!("; it{UNNAMED_TABLES}, which the rule's `tables` covers")
                    }
                    _ => String::new(),
                };
                format!("`{}` is denied by {}{unnamed}", hit.kind, rule_ref(&hit))
            });
            t.note(|| {
                format!(
                    "decision: deny by {} (deny takes precedence)",
                    rule_ref(&hit)
                )
            });
            return decision;
        } else if let Some((hit, spec)) =
            approve.filter(|_| covered.union(approvable).is_superset(needed))
        {
            t.note(|| {
                format!(
                    "decision: approve by {} (approve takes precedence over allow)",
                    rule_ref(&hit)
                )
            });
            hit.decision(Outcome::Approve(spec.clone()), || {
                format!(
                    "`{text}` needs approval by {} ({})",
                    spec.approvers.join(", "),
                    rule_ref(&hit)
                )
            })
        } else if let Some(hit) = allow.filter(|_| covered.is_superset(needed)) {
            t.note(|| format!("decision: allow by {}", rule_ref(&hit)));
            hit.decision(Outcome::Allow, || {
                format!("`{text}` is allowed by {}", rule_ref(&hit))
            })
        } else {
            let reason = self.default_deny_reason(
                subject,
                resource,
                needed.difference(covered.union(approvable)),
                facts,
            );
            t.note(|| format!("decision: deny: {reason} (default deny)"));
            return Decision {
                outcome: Outcome::Deny,
                policy: None,
                rule: None,
                reason,
                row_limit: None,
                masks: Vec::new(),
            };
        };
        if let Some((grant, rule, rename)) = lost {
            let reason = format!(
                "{} would take it out of rule {} of policy `{}`, which names it: rules match names, so a DBA renames it and updates the policy",
                RenameText(rename),
                rule.label,
                grant.name
            );
            t.note(|| format!("decision: deny: {reason}"));
            return Decision {
                outcome: Outcome::Deny,
                policy: Some(grant.name.clone()),
                rule: Some(rule.label.clone()),
                reason,
                row_limit: None,
                masks: Vec::new(),
            };
        }
        decision.row_limit = row_limit;
        decision.masks = masks.into_iter().cloned().collect();
        decision
    }
}

/// The first of `renames` that takes a table, column or function out of
/// a deny, approve or mask rule's patterns.
fn loses<'a>(action: &CompiledAction, renames: &'a [Rename]) -> Option<&'a Rename> {
    let (tables, functions): (&[QualifiedPattern], &[QualifiedPattern]) = match action {
        CompiledAction::Deny(m) | CompiledAction::Approve { matcher: m, .. } => (
            m.tables.as_deref().unwrap_or_default(),
            m.functions.as_deref().unwrap_or_default(),
        ),
        CompiledAction::Mask(spec) => (&spec.strict_tables, &[]),
        CompiledAction::Allow(_) | CompiledAction::Limit { .. } => return None,
    };
    let columns: &[ColumnPattern] = match action {
        CompiledAction::Mask(spec) => &spec.columns,
        _ => &[],
    };
    let any = |patterns: &[QualifiedPattern], rename| patterns.iter().any(|p| p.loses(rename));
    renames.iter().find(|rename| match rename {
        Rename::Function { .. } => any(functions, rename),
        // A schema's functions move with its tables, and an extension's.
        Rename::Schema { .. } | Rename::Extension { .. } => {
            any(tables, rename) || any(functions, rename) || columns.iter().any(|p| p.loses(rename))
        }
        _ => any(tables, rename) || columns.iter().any(|p| p.loses(rename)),
    })
}

/// A rename as written in messages.
struct RenameText<'a>(&'a Rename);

impl fmt::Display for RenameText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Rename::Relation { old, new } => write!(f, "renaming or moving `{old}` to `{new}`"),
            Rename::Schema { old, new } => write!(f, "renaming schema `{old}` to `{new}`"),
            Rename::Column { relation, old, new } => {
                write!(f, "renaming column `{old}` of `{relation}` to `{new}`")
            }
            Rename::Type { old, new } => write!(f, "renaming type `{old}` to `{new}`"),
            Rename::Function { old, new } => {
                write!(f, "renaming or moving function `{old}` to `{new}`")
            }
            Rename::Extension { name, schema } => {
                write!(f, "moving extension `{name}` to schema `{schema}`")
            }
        }
    }
}

impl CompiledPolicy {
    /// Says why nothing allowed the statement. Off the allow path, so it may
    /// walk the policies again rather than make the hot path collect names.
    fn default_deny_reason(
        &self,
        subject: &Subject,
        resource: &str,
        uncovered: KindSet,
        facts: &StatementFacts,
    ) -> String {
        let applicable: Vec<String> = self
            .policies()
            .iter()
            .filter(|g| applies(g, subject, resource, &mut Silent))
            .map(|g| format!("`{}`", g.name))
            .collect();
        if applicable.is_empty() {
            return format!("no policy grants {subject} access to resource `{resource}`");
        }
        let noun = if applicable.len() == 1 {
            "policy"
        } else {
            "policies"
        };
        let policies = applicable.join(", ");
        if uncovered == KindSet::from_iter([SqlKind::Other]) {
            format!(
                "the statement could not be classified, and no rule of {noun} {policies} allows `other`"
            )
        } else if uncovered.contains(SqlKind::CredentialCatalog)
            && !facts.credential_catalogs.is_empty()
        {
            format!(
                "no rule of {noun} {policies} allows `{uncovered}` (catalogs holding credentials the database logs in to other servers or checks passwords with: {})",
                shown(&facts.credential_catalogs)
            )
        } else if uncovered.contains(SqlKind::ForeignData) && !facts.foreign_tables.is_empty() {
            format!(
                "no rule of {noun} {policies} allows `{uncovered}` (foreign tables, whose rows another server holds: {})",
                shown(&facts.foreign_tables)
            )
        } else if uncovered.contains(SqlKind::UserFunction) && !facts.user_functions.is_empty() {
            // Say which calls: the client may not know which of its
            // functions are the database's own.
            format!(
                "no rule of {noun} {policies} allows `{uncovered}` (functions or operators defined in the database: {})",
                shown(&facts.user_functions)
            )
        } else {
            format!("no rule of {noun} {policies} allows `{uncovered}`")
        }
    }
}

/// The first few of `names`, comma-separated, for a message.
fn shown(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(", ...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::parse::parse_document;

    const DOC: &str = r#"
resources:
  - { name: orders-db, kind: postgres, agent: eu, address: "db:5432", database: orders, labels: { env: prod } }
  - { name: scratch-db, kind: postgres, agent: eu, address: "db2:5432", database: scratch }
policies:
  - name: ai-prod
    subjects: { groups: ["ai-*"] }
    resources: { labels: { env: prod } }
    rules:
      - deny: { sql: { statements: [drop, truncate, alter] } }
        reason: schema changes go through migrations
      - approve: { sql: { statements: [insert] }, approvers: [dba] }
      - approve: { sql: { unbounded: [update, delete] } , approvers: [dba], min: 2 }
      - allow: { sql: { statements: [read, update, delete, explain_analyze], tables: ["public.*"] } }
        name: reads-and-bounded-writes
      - mask: { columns: ["*.email"], detectors: [email] }
      - limit: { rows: 1000 }
  - name: broad
    subjects: { users: [alice], service_accounts: [ci-*] }
    resources: { names: ["*"] }
    rules:
      - allow: { sql: { statements: [write, ddl] } }
      - limit: { rows: 50 }
"#;

    fn policy() -> CompiledPolicy {
        let doc = parse_document(DOC).expect("valid document");
        compile(&doc, &doc.resources, "eu")
    }

    fn facts(kinds: &[SqlKind], tables: &[&str], has_where: bool) -> StatementFacts {
        StatementFacts {
            kinds: kinds.to_vec(),
            tables_read: tables.iter().map(|t| (*t).to_owned()).collect(),
            has_where,
            ..StatementFacts::default()
        }
    }

    /// A policy giving user `bot` resource `db` with `rules` (YAML list
    /// items indented six spaces).
    fn bot_policy(rules: &str) -> CompiledPolicy {
        let doc = parse_document(&format!(
            r#"
resources:
  - {{ name: db, kind: postgres, agent: eu, address: "db:5432", database: d }}
policies:
  - name: p
    subjects: {{ users: [bot] }}
    resources: {{ names: [db] }}
    rules:
{rules}"#
        ))
        .expect("valid document");
        compile(&doc, &doc.resources, "eu")
    }

    fn ai() -> Subject {
        Subject::user("bot-7", ["ai-agents"])
    }

    #[test]
    fn connect_needs_subject_and_resource() {
        let p = policy();
        assert_eq!(p.connect(&ai(), "orders-db"), Some("ai-prod"));
        assert_eq!(
            p.connect(&ai(), "scratch-db"),
            None,
            "resource not selected"
        );
        assert_eq!(p.connect(&ai(), "unknown-db"), None);
        assert_eq!(
            p.connect(&Subject::user("mallory", ["staff"]), "orders-db"),
            None
        );
        assert_eq!(
            p.connect(&Subject::user("alice", Vec::<String>::new()), "scratch-db"),
            Some("broad")
        );
        assert_eq!(
            p.connect(
                &Subject::service_account("ci-bot", Vec::<String>::new()),
                "orders-db"
            ),
            Some("broad")
        );
        // Ids only match their own list.
        assert_eq!(
            p.connect(
                &Subject::service_account("alice", Vec::<String>::new()),
                "orders-db"
            ),
            None
        );
        assert_eq!(
            p.connect(&Subject::user("ci-bot", Vec::<String>::new()), "orders-db"),
            None
        );
        assert_eq!(CompiledPolicy::deny_all().connect(&ai(), "orders-db"), None);
    }

    #[test]
    fn allow_with_limit_and_masks() {
        let d = policy().decide(
            &ai(),
            "orders-db",
            &facts(&[SqlKind::Select], &["public.orders"], false),
        );
        assert!(d.is_allowed(), "{d:?}");
        assert_eq!(d.policy.as_deref(), Some("ai-prod"));
        assert_eq!(d.rule.as_deref(), Some("reads-and-bounded-writes"));
        assert_eq!(d.row_limit, Some(1000));
        assert_eq!(d.masks.len(), 1);
        assert!(
            d.reason
                .contains("allowed by rule reads-and-bounded-writes"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn allow_requires_every_table_to_match() {
        let p = policy();
        let d = p.decide(
            &ai(),
            "orders-db",
            &facts(&[SqlKind::Select], &["public.orders", "secret.keys"], false),
        );
        assert!(d.is_denied());
        assert_eq!(d.policy, None);
        assert_eq!(d.reason, "no rule of policy `ai-prod` allows `select`");
        let d = p.decide(
            &ai(),
            "orders-db",
            &facts(&[SqlKind::Select], &["orders"], false),
        );
        assert!(d.is_denied(), "unqualified names do not satisfy `public.*`");
    }

    #[test]
    fn deny_and_approve_match_tables_reached_through_views_and_allow_does_not() {
        let p = bot_policy(
            r#"
      - deny: { sql: { tables: [pg_stat_activity] } }
        name: no-sessions
      - approve: { sql: { statements: [update], tables: [public.payroll] }, approvers: [dba] }
      - allow: { sql: { statements: [select, update], tables: ["public.*"] } }
"#,
        );
        let bot = Subject::user("bot", Vec::<String>::new());
        let through = |kind, view: &str, reached: &[&str]| StatementFacts {
            tables_reached: reached.iter().map(|t| (*t).to_owned()).collect(),
            ..facts(&[kind], &[view], true)
        };
        let d = p.decide(
            &bot,
            "db",
            &through(
                SqlKind::Select,
                "public.sessions",
                &["pg_catalog.pg_stat_activity"],
            ),
        );
        assert!(d.is_denied());
        assert_eq!(d.rule.as_deref(), Some("no-sessions"));
        let d = p.decide(
            &bot,
            "db",
            &through(SqlKind::Update, "public.staff", &["public.payroll"]),
        );
        assert!(matches!(d.outcome, Outcome::Approve(_)), "{d:?}");
        // Allow looks at the names the statement uses: the view.
        let d = p.decide(
            &bot,
            "db",
            &through(SqlKind::Select, "public.names", &["private.people"]),
        );
        assert!(d.is_allowed(), "{d:?}");
    }

    #[test]
    fn deny_and_approve_match_functions_reached_through_views_and_allow_does_not() {
        let p = bot_policy(
            r#"
      - deny: { sql: { functions: ["pg_stat_get_*"] } }
        name: no-sessions
      - approve: { sql: { functions: [public.pay_raise] }, approvers: [dba] }
      - allow: { sql: { statements: [select], functions: [lower] } }
"#,
        );
        let bot = Subject::user("bot", Vec::<String>::new());
        let through = |reached: &[&str]| StatementFacts {
            functions: vec!["lower".to_owned()],
            functions_reached: reached.iter().map(|f| (*f).to_owned()).collect(),
            ..facts(&[SqlKind::Select], &["public.sessions"], true)
        };
        let d = p.decide(&bot, "db", &through(&["pg_catalog.pg_stat_get_activity"]));
        assert!(d.is_denied());
        assert_eq!(d.rule.as_deref(), Some("no-sessions"));
        let d = p.decide(&bot, "db", &through(&["public.pay_raise"]));
        assert!(matches!(d.outcome, Outcome::Approve(_)), "{d:?}");
        // Allow looks at the calls the statement makes: `lower` only.
        let d = p.decide(&bot, "db", &through(&["pg_catalog.md5"]));
        assert!(d.is_allowed(), "{d:?}");
    }

    #[test]
    fn a_rename_that_takes_something_out_of_a_rule_naming_it_is_denied() {
        let p = bot_policy(
            r#"
      - deny: { sql: { statements: [select], tables: [public.payroll] } }
        name: no-pay
      - approve: { sql: { statements: [update], tables: [ledger] }, approvers: [dba] }
      - mask: { columns: ["public.customers.email", "*.card_number"], as: redact, strict_tables: [hr.people] }
        name: private
      - deny: { sql: { functions: [app.rebuild_ledger, pg_read_file] } }
        name: no-rebuild
      - allow: { sql: { statements: [ddl, select, update] } }
"#,
        );
        let bot = Subject::user("bot", Vec::<String>::new());
        let renaming = |renames: Vec<Rename>| StatementFacts {
            renames,
            ..facts(&[SqlKind::Alter], &["t"], false)
        };
        let relation = |old: &str, new: &str| Rename::Relation {
            old: old.into(),
            new: new.into(),
        };
        let schema = |old: &str, new: &str| Rename::Schema {
            old: old.into(),
            new: new.into(),
        };
        let column = |relation: &str, old: &str, new: &str| Rename::Column {
            relation: relation.into(),
            old: old.into(),
            new: new.into(),
        };
        let function = |old: &str, new: &str| Rename::Function {
            old: old.into(),
            new: new.into(),
        };
        let extension = |schema: &str| Rename::Extension {
            name: "pgcrypto".into(),
            schema: schema.into(),
        };
        for (rename, rule) in [
            (function("app.rebuild_ledger", "app.harmless"), "no-rebuild"),
            (
                function("rebuild_ledger", "public.rebuild_ledger"),
                "no-rebuild",
            ),
            (schema("app", "tools"), "no-rebuild"),
            (relation("payroll", "pay2"), "no-pay"),
            (relation("public.payroll", "hr.payroll"), "no-pay"),
            (schema("public", "old"), "no-pay"),
            (relation("ledger", "books"), "rules[1]"),
            (relation("customers", "clients"), "private"),
            (column("customers", "email", "contact"), "private"),
            (column("orders", "card_number", "cn"), "private"),
            (schema("hr", "staff"), "private"),
            // From wherever they were: `public.payroll` may be among its
            // tables, `hr.people` among them when moved to `public`.
            (extension("tools"), "no-pay"),
            (extension("public"), "private"),
        ] {
            let d = p.decide(&bot, "db", &renaming(vec![rename.clone()]));
            assert!(d.is_denied(), "{rename:?}: {d:?}");
            assert_eq!(d.rule.as_deref(), Some(rule), "{rename:?}");
            assert!(d.reason.contains("a DBA renames it"), "{}", d.reason);
        }
        // Renames every pattern covers as before, or that no rule names.
        for rename in [
            relation("items", "things"),
            relation("orders", "purchases"),
            column("customers", "name", "full_name"),
            column("customers", "contact", "email"),
            schema("sales", "shop"),
            relation("private.payroll", "private.pay2"),
            function("app.other", "app.renamed"),
            function("app.f", "app.pg_read_file"),
            // Function rules are not table rules, nor the other way round.
            relation("app.rebuild_ledger", "app.t"),
            function("public.payroll", "public.pay2"),
        ] {
            let d = p.decide(&bot, "db", &renaming(vec![rename.clone()]));
            assert!(d.is_allowed(), "{rename:?}: {d:?}");
        }
    }

    #[test]
    fn approval_covers_only_the_kinds_its_rule_matches() {
        // An insert that also sets the role (`INSERT ... SELECT
        // set_config('role', ...)`): approve matches `insert`, no rule
        // allows `set_role`, so approvers are not asked; it is denied.
        let d = policy().decide(
            &ai(),
            "orders-db",
            &facts(
                &[SqlKind::Insert, SqlKind::SetRole],
                &["public.orders"],
                false,
            ),
        );
        assert!(d.is_denied(), "{d:?}");
        assert!(
            d.reason.contains("set_role") && !d.reason.contains("insert"),
            "{}",
            d.reason
        );
        // Covered by an allow rule, the other kind does not stand in the way.
        let d = policy().decide(
            &ai(),
            "orders-db",
            &facts(
                &[SqlKind::Insert, SqlKind::Select],
                &["public.orders"],
                false,
            ),
        );
        assert!(matches!(d.outcome, Outcome::Approve(_)), "{d:?}");
    }

    #[test]
    fn deny_beats_approve_beats_allow_across_policies() {
        // alice is in ai-agents too, so both policies apply.
        let alice = Subject::user("alice", ["ai-agents"]);
        let p = policy();
        // `broad` allows truncate, `ai-prod` denies it.
        let d = p.decide(
            &alice,
            "orders-db",
            &facts(&[SqlKind::Truncate], &[], false),
        );
        assert!(d.is_denied());
        assert_eq!(d.policy.as_deref(), Some("ai-prod"));
        assert_eq!(d.rule.as_deref(), Some("rules[0]"));
        assert_eq!(d.reason, "schema changes go through migrations");
        assert!(d.masks.is_empty() && d.row_limit.is_none());
        // `broad` allows insert, `ai-prod` wants approval.
        let d = p.decide(
            &alice,
            "orders-db",
            &facts(&[SqlKind::Insert], &["public.orders"], false),
        );
        match &d.outcome {
            Outcome::Approve(spec) => assert_eq!(spec.approvers, ["dba"]),
            other => panic!("expected approve, got {other:?}"),
        }
        assert_eq!(d.rule.as_deref(), Some("rules[1]"));
        assert_eq!(d.row_limit, Some(50), "smallest limit across policies");
        // Without the ai-prod policy, broad alone allows it.
        let d = p.decide(
            &Subject::user("alice", Vec::<String>::new()),
            "orders-db",
            &facts(&[SqlKind::Insert], &[], false),
        );
        assert!(d.is_allowed());
        assert_eq!(d.policy.as_deref(), Some("broad"));
    }

    #[test]
    fn default_deny_for_statements() {
        let p = policy();
        let d = p.decide(&ai(), "orders-db", &facts(&[SqlKind::Grant], &[], false));
        assert!(d.is_denied());
        assert_eq!(d.reason, "no rule of policy `ai-prod` allows `grant`");
        let d = p.decide(
            &Subject::user("mallory", Vec::<String>::new()),
            "orders-db",
            &facts(&[SqlKind::Select], &[], false),
        );
        assert!(d.is_denied());
        assert_eq!(
            d.reason,
            "no policy grants user `mallory` access to resource `orders-db`"
        );
    }

    #[test]
    fn unclassified_statements_need_an_explicit_rule() {
        let p = policy();
        for f in [
            StatementFacts::default(),
            StatementFacts::of_kinds([SqlKind::Other]),
        ] {
            // `broad` allows write+ddl with no tables: still not `other`.
            let d = p.decide(
                &Subject::user("alice", Vec::<String>::new()),
                "orders-db",
                &f,
            );
            assert!(d.is_denied());
            assert!(d.reason.contains("could not be classified"), "{}", d.reason);
        }
        let doc = parse_document(
            "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [r] }\n    rules:\n      - allow: { sql: { statements: [other] } }\n",
        )
        .expect("valid");
        let p = compile_doc_single(&doc);
        let d = p.decide(
            &Subject::user("u", Vec::<String>::new()),
            "r",
            &StatementFacts::default(),
        );
        assert!(d.is_allowed(), "{d:?}");
    }

    #[test]
    fn unbounded_update_needs_approval() {
        let p = policy();
        let unbounded = facts(&[SqlKind::Update], &["public.orders"], false);
        let d = p.decide(&ai(), "orders-db", &unbounded);
        match &d.outcome {
            Outcome::Approve(spec) => assert_eq!(spec.min, 2),
            other => panic!("expected approve, got {other:?}"),
        }
        assert!(d.reason.contains("needs approval by dba"), "{}", d.reason);
        let bounded = facts(&[SqlKind::Update], &["public.orders"], true);
        assert!(p.decide(&ai(), "orders-db", &bounded).is_allowed());
    }

    #[test]
    fn multi_kind_statement_is_judged_on_every_kind() {
        let p = policy();
        // EXPLAIN ANALYZE DROP ... : the deny on drop wins even though
        // explain_analyze alone would be allowed.
        let d = p.decide(
            &ai(),
            "orders-db",
            &facts(&[SqlKind::ExplainAnalyze, SqlKind::Drop], &[], false),
        );
        assert!(d.is_denied());
        assert_eq!(d.rule.as_deref(), Some("rules[0]"));

        let doc = parse_document(
            "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [r] }\n    rules:\n      - deny: { sql: { statements: [delete] } }\n      - allow: { sql: { statements: [explain_analyze, select] } }\n",
        )
        .expect("valid");
        let compiled = compile_doc_single(&doc);
        let u = Subject::user("u", Vec::<String>::new());
        let d = compiled.decide(
            &u,
            "r",
            &StatementFacts::of_kinds([SqlKind::ExplainAnalyze, SqlKind::Delete]),
        );
        assert!(d.is_denied());
        assert_eq!(d.rule.as_deref(), Some("rules[0]"));
        assert_eq!(
            d.reason,
            "`delete` is denied by rule rules[0] of policy `p`"
        );
        // Allow must cover every kind: explain_analyze alone is not enough.
        let doc = parse_document(
            "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [r] }\n    rules:\n      - allow: { sql: { statements: [explain_analyze] } }\n",
        )
        .expect("valid");
        let d = compile_doc_single(&doc).decide(
            &u,
            "r",
            &StatementFacts::of_kinds([SqlKind::ExplainAnalyze, SqlKind::Delete]),
        );
        assert!(d.is_denied());
        assert_eq!(d.reason, "no rule of policy `p` allows `delete`");
    }

    #[test]
    fn deny_on_any_touched_table_or_function() {
        let doc = parse_document(
            "policies:\n  - name: p\n    subjects: { users: [u] }\n    resources: { names: [r] }\n    rules:\n      - deny: { sql: { tables: [\"secret.*\"] } }\n      - deny: { sql: { functions: [pg_read_file, \"dblink*\"] } }\n      - allow: {}\n",
        )
        .expect("valid");
        let p = compile_doc_single(&doc);
        let u = Subject::user("u", Vec::<String>::new());
        let mut f = facts(&[SqlKind::Select], &["public.a", "secret.keys"], false);
        assert!(p.decide(&u, "r", &f).is_denied());
        f.tables_read = vec!["keys".into()];
        assert!(
            p.decide(&u, "r", &f).is_denied(),
            "unqualified could be secret.keys"
        );
        f.tables_read = vec!["public.a".into()];
        assert!(p.decide(&u, "r", &f).is_allowed());
        f.functions = vec!["pg_catalog.PG_READ_FILE".into()];
        assert!(p.decide(&u, "r", &f).is_denied());
        f.functions = vec!["dblink_exec".into()];
        assert!(p.decide(&u, "r", &f).is_denied());
        f.functions = vec!["lower".into()];
        assert!(p.decide(&u, "r", &f).is_allowed());
    }

    #[test]
    fn masks_for_session() {
        let p = policy();
        assert_eq!(p.masks_for(&ai(), "orders-db").len(), 1);
        assert!(
            p.masks_for(&Subject::user("alice", Vec::<String>::new()), "orders-db")
                .is_empty()
        );
    }

    fn compile_doc_single(doc: &crate::model::Document) -> CompiledPolicy {
        let r = crate::model::ResourceSpec {
            name: "r".into(),
            kind: crate::model::ResourceKind::Postgres,
            agent: "a".into(),
            address: "h:1".into(),
            database: Some("d".into()),
            credential: None,
            labels: Default::default(),
            tls_mode: Default::default(),
            tls_ca: None,
            audit_mode: Default::default(),
            max_connections: None,
            max_connections_per_subject: None,
        };
        compile(doc, &[r], "a")
    }
}
