//! The policy document as an admin writes it (YAML or JSON).
//!
//! These types mirror the document one to one so that serde can point at the
//! exact field that is wrong: every struct denies unknown fields, enums are
//! snake_case, and a rule (a mapping with exactly one action key) has a
//! hand-written `Deserialize` instead of an untagged enum, whose errors would
//! only say "data did not match any variant". Defaults the author may omit
//! are resolved at compile time, not here, so a document can be serialized
//! back without gaining fields its author never wrote.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::PolicyDuration;
use crate::kinds::StatementSelector;

/// A whole policy document: resources to register and policies to enforce.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Resources the control plane should upsert. Optional: resources may
    /// also come from the control plane's store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceSpec>,
    /// The policies, in the order they were written (the order only matters
    /// for which rule is reported when several decide alike).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
}

/// A target the gateway proxies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// Unique name; clients select it (for Postgres, as the database name).
    pub name: String,
    /// Which protocol it speaks.
    pub kind: ResourceKind,
    /// Name of the agent that serves it; compilation for an agent keeps only
    /// its own resources, so credentials go nowhere else.
    pub agent: String,
    /// `host:port` of the target, as seen from the agent.
    pub address: String,
    /// Database to connect to upstream (Postgres only, required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Name of the stored credential the agent logs in with. A reference,
    /// never the secret itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Free-form labels that policies select on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// TLS towards the target.
    #[serde(default)]
    pub tls_mode: TlsMode,
    /// PEM of the CA that signed the target's certificate (for
    /// `tls_mode: verify-full`). Public data, not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
    /// What to do when an audit event cannot be spooled.
    #[serde(default)]
    pub audit_mode: AuditMode,
    /// Most client sessions its agent holds on the target at once, over all
    /// subjects; each is one connection to the target, so keep it below the
    /// target's own `max_connections` (less its reserved slots). Unset: only
    /// the agent's own limits apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most of them one subject may hold, so one client cannot take all the
    /// target's connections from the others. Unset: only the agent's
    /// per-subject limit applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_subject: Option<u32>,
}

/// The protocol of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A PostgreSQL server.
    Postgres,
    /// An SSH host.
    Ssh,
    /// An HTTP API.
    Http,
}

impl ResourceKind {
    /// The name used in documents.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Postgres => "postgres",
            ResourceKind::Ssh => "ssh",
            ResourceKind::Http => "http",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS between the agent and the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP (the target is on a trusted segment next to the agent).
    #[default]
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS with certificate and host name verification.
    VerifyFull,
}

/// Whether a statement may run when its audit event cannot be spooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    /// No audit, no statement (the default: audit is not optional).
    #[default]
    FailClosed,
    /// Run anyway and count the loss.
    BestEffort,
}

/// A named grant: who, on what, under which rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name, reported in decisions and audit events.
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who the policy applies to. Must name at least one subject.
    #[serde(default)]
    pub subjects: SubjectSelector,
    /// Which resources it applies to. Must constrain at least one field; use
    /// `names: ["*"]` to mean every resource, so that "everything" is never
    /// an accident of omission.
    #[serde(default)]
    pub resources: ResourceSelector,
    /// The rules, evaluated together (precedence deny > approve > allow, not
    /// order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// Who a policy applies to; a subject matches if any entry matches (globs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSelector {
    /// User ids (the token's subject), for human and AI users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups from the token's group claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Service account ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

impl SubjectSelector {
    /// Whether the selector names nobody (a validation error).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.service_accounts.is_empty()
    }
}

/// Which resources a policy applies to: every given field must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSelector {
    /// Resource name globs; any may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Labels the resource must carry, all of them, with these exact values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Resource kinds; any may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<ResourceKind>>,
}

impl ResourceSelector {
    /// Whether no field is given (a validation error).
    pub fn is_empty(&self) -> bool {
        self.names.is_none() && self.labels.is_none() && self.kinds.is_none()
    }
}

/// One rule of a policy: an action plus an optional name and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name reported in decisions; defaults to `rules[i]`.
    pub name: Option<String>,
    /// Message shown to the client when this rule decides.
    pub reason: Option<String>,
    /// What the rule does.
    pub action: Action,
}

/// The single action of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let matching statements run.
    Allow(MatchRule),
    /// Block matching statements.
    Deny(MatchRule),
    /// Hold matching statements for human approval.
    Approve(ApproveRule),
    /// Mask result columns and values.
    Mask(MaskRule),
    /// Cap the rows a statement may return.
    Limit(LimitRule),
}

/// The action keys, in the order error messages list them.
pub const ACTION_KEYS: [&str; 5] = ["allow", "deny", "approve", "mask", "limit"];

/// The message for a rule without exactly one action key.
pub(crate) const ONE_ACTION: &str = "a rule needs exactly one of allow, deny, approve, mask, limit";

impl Action {
    /// The document key of this action.
    pub const fn keyword(&self) -> &'static str {
        match self {
            Action::Allow(_) => "allow",
            Action::Deny(_) => "deny",
            Action::Approve(_) => "approve",
            Action::Mask(_) => "mask",
            Action::Limit(_) => "limit",
        }
    }
}

/// The body of `allow` and `deny`. Without `sql` the rule matches every
/// classified statement (but not `other`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    /// Which SQL statements the rule is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlMatcher>,
}

/// Which SQL statements a rule matches: every given field must match, any
/// entry within a list may.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlMatcher {
    /// Statement kinds or groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statements: Option<Vec<StatementSelector>>,
    /// `schema.table` globs (a pattern without a dot: any schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Function name globs (optionally `schema.function`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    /// Kinds that match only when the statement has no WHERE clause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbounded: Option<Vec<StatementSelector>>,
}

/// The body of `approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRule {
    /// Which statements need approval; without it, every classified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlMatcher>,
    /// Groups whose members may approve (required, non-empty).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How many distinct approvers must approve.
    #[serde(default = "default_min")]
    pub min: u32,
    /// Hold the statement (`wait`) or fail it and allow one retry (`retry`).
    #[serde(default)]
    pub mode: ApprovalMode,
    /// How long a `wait` holds the statement (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<PolicyDuration>,
    /// How long a `retry` approval stays usable (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<PolicyDuration>,
}

fn default_min() -> u32 {
    1
}

/// Default hold time in `wait` mode.
pub const DEFAULT_APPROVAL_TIMEOUT: PolicyDuration = PolicyDuration::from_secs(5 * 60);
/// Default validity of a `retry` approval.
pub const DEFAULT_APPROVAL_TTL: PolicyDuration = PolicyDuration::from_secs(15 * 60);
/// The longest `timeout` or `ttl` an approval may have: an approval is for
/// one change at hand, not a standing grant.
pub const MAX_APPROVAL_WINDOW: PolicyDuration = PolicyDuration::from_secs(30 * 24 * 60 * 60);

/// How the client experiences an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// The statement stays pending until decided or timed out.
    #[default]
    Wait,
    /// The statement fails at once naming the request; once approved, the
    /// same statement may run once within the TTL.
    Retry,
}

/// The body of `mask`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// Column globs `schema.table.column`, matched from the right.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Value detectors run over every text value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detectors: Vec<Detector>,
    /// How masked values are rewritten.
    #[serde(rename = "as", default)]
    pub strategy: MaskStrategy,
    /// Table globs for strict mode: a statement reading one of them gets
    /// every output column without a known safe origin masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strict_tables: Vec<String>,
    /// Statements strict mode leaves alone, as SQL (constants may differ):
    /// e.g. `SELECT count(*) FROM customers`. Matched by pg_query
    /// fingerprint, so another expression or table is not covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strict_allow: Vec<String>,
}

/// A sensitive-value detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// E-mail addresses.
    Email,
    /// Payment card numbers (Luhn-checked).
    CreditCard,
    /// US social security numbers.
    Ssn,
    /// IBANs (checksum-verified).
    Iban,
    /// Phone numbers.
    Phone,
    /// Cloud provider access keys.
    CloudKey,
    /// JSON Web Tokens.
    Jwt,
    /// PEM private keys.
    PrivateKey,
}

impl Detector {
    /// Every detector.
    pub const ALL: [Detector; 8] = [
        Detector::Email,
        Detector::CreditCard,
        Detector::Ssn,
        Detector::Iban,
        Detector::Phone,
        Detector::CloudKey,
        Detector::Jwt,
        Detector::PrivateKey,
    ];
}

/// How a masked value is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskStrategy {
    /// Replace entirely.
    #[default]
    Redact,
    /// Keep the last 4 characters.
    Partial,
    /// Deterministic hash, so joins on the masked value still work.
    Hash,
    /// SQL NULL.
    Null,
}

/// The body of `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Maximum rows returned per statement (at least 1).
    pub rows: u64,
}

impl Rule {
    /// How decisions refer to this rule: its name, or `rules[i]`.
    pub fn label(&self, index: usize) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("rules[{index}]"),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 1 + usize::from(self.name.is_some()) + usize::from(self.reason.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        let key = self.action.keyword();
        match &self.action {
            Action::Allow(body) | Action::Deny(body) => map.serialize_entry(key, body)?,
            Action::Approve(body) => map.serialize_entry(key, body)?,
            Action::Mask(body) => map.serialize_entry(key, body)?,
            Action::Limit(body) => map.serialize_entry(key, body)?,
        }
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        if let Some(reason) = &self.reason {
            map.serialize_entry("reason", reason)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RuleVisitor)
    }
}

/// Reads a rule key by key so that each action body is deserialized in
/// place: errors inside it keep their path and line.
struct RuleVisitor;

const RULE_FIELDS: &[&str] = &[
    "allow", "deny", "approve", "mask", "limit", "name", "reason",
];

impl<'de> Visitor<'de> for RuleVisitor {
    type Value = Rule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a rule: a mapping with exactly one of allow, deny, approve, mask, limit"
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Rule, A::Error> {
        let mut name: Option<String> = None;
        let mut reason: Option<String> = None;
        let mut action: Option<Action> = None;
        while let Some(key) = map.next_key::<String>()? {
            // Checked before the body is read, so the error points at the rule.
            if let Some(existing) = action
                .as_ref()
                .filter(|_| ACTION_KEYS.contains(&key.as_str()))
            {
                return Err(if existing.keyword() == key {
                    de::Error::custom(format_args!("duplicate field `{key}`"))
                } else {
                    de::Error::custom(format_args!(
                        "{ONE_ACTION}, but this one has both `{}` and `{key}`; split it into two rules",
                        existing.keyword()
                    ))
                });
            }
            action = Some(match key.as_str() {
                "allow" => Action::Allow(map.next_value()?),
                "deny" => Action::Deny(map.next_value()?),
                "approve" => Action::Approve(map.next_value()?),
                "mask" => Action::Mask(map.next_value()?),
                "limit" => Action::Limit(map.next_value()?),
                "name" | "reason" => {
                    let slot = if key == "name" {
                        &mut name
                    } else {
                        &mut reason
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = Some(map.next_value()?);
                    continue;
                }
                other => return Err(de::Error::unknown_field(other, RULE_FIELDS)),
            });
        }
        let action = action.ok_or_else(|| de::Error::custom(ONE_ACTION))?;
        Ok(Rule {
            name,
            reason,
            action,
        })
    }
}
