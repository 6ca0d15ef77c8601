//! Judging statements: PostgreSQL's own parser (via `sluice_policy::classify_with`)
//! plus the compiled policy. Classification is cached process-wide by
//! statement text; decisions are cached per session and snapshot version,
//! so a repeated statement costs one hash lookup.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use sluice_policy::{
    ClassifiedStatement, Outcome, PreparedChange, SqlKind, StatementFacts, Subject,
};

use crate::snapshot::Active;

/// The verdict on one protocol-level request (a Query string, a Parse, a
/// FunctionCall), covering every statement it contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// `policy/rule` that decided, when one did.
    pub rule: String,
    /// Safe to show the client.
    pub reason: String,
    pub row_limit: Option<u64>,
    pub kinds: Vec<String>,
    /// Changes the text makes to the session's named prepared statements.
    pub prepared: Vec<PreparedChange>,
    /// Set when policy sends the text to approval (then `allowed` is false
    /// and `rule`/`reason` are the approve rule's).
    pub approval: Option<Arc<ApprovalNeed>>,
    /// What the text was classified as (its statements, for
    /// [`Verdict::fingerprint`]) and with which string syntax.
    pub(crate) classified: Option<(Classified, bool)>,
    /// pg_query fingerprints of its statements, `;`-joined, computed on
    /// first use (it parses every statement again, and most verdicts never
    /// need it).
    pub(crate) fingerprint: OnceLock<String>,
    /// Tables its statements read (for masking's strict mode).
    pub tables_read: Vec<String>,
    /// Its `COPY ... TO STDOUT` statements, in order (for masking).
    pub copy_out: Vec<sluice_policy::CopyOut>,
}

/// What an approve rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeed {
    pub approvers: Vec<String>,
    pub min: u32,
    pub wait: bool,
    pub timeout: std::time::Duration,
    pub ttl: std::time::Duration,
}

impl Verdict {
    /// pg_query fingerprints of its statements, `;`-joined (empty when the
    /// text did not parse, which matches no configured fingerprint).
    pub fn fingerprint(&self) -> &str {
        self.fingerprint.get_or_init(|| {
            let Some((classified, scs)) = &self.classified else {
                return String::new();
            };
            let Ok(statements) = classified.as_ref() else {
                return String::new();
            };
            let options = sluice_policy::ClassifyOptions {
                standard_conforming_strings: *scs,
                skip_fingerprint: false,
            };
            let prints: Option<Vec<String>> = statements
                .iter()
                .map(|s| sluice_policy::fingerprint(&s.text, options).ok())
                .collect();
            prints.map(|p| p.join(";")).unwrap_or_default()
        })
    }

    /// Denied (0), needs approval (1), allowed (2): the stricter of two
    /// readings of a text wins.
    fn rank(&self) -> u8 {
        match (self.allowed, &self.approval) {
            (true, _) => 2,
            (false, Some(_)) => 1,
            (false, None) => 0,
        }
    }

    fn deny(reason: String, rule: String, kinds: Vec<String>) -> Self {
        Self {
            allowed: false,
            rule,
            reason,
            kinds,
            ..Self::default()
        }
    }
}

/// Process-wide cache of classifications. Bounded: when full it is cleared
/// (classification is cheap to redo; this only keeps memory bounded under
/// an adversary sending unique statements).
const MAX_CLASSIFIED: usize = 16_384;
/// Longest statement whose classification or decision is cached.
const MAX_CACHED_TEXT: usize = 8 * 1024;

pub(crate) type Classified = Arc<Result<Vec<ClassifiedStatement>, String>>;

/// Keyed by (standard_conforming_strings, text): the same bytes split into
/// different statements depending on that setting.
#[derive(Default)]
struct ClassificationCache {
    entries: HashMap<(bool, String), Classified>,
    /// Approximate memory held: texts plus classification results.
    bytes: usize,
}

/// Memory bound of the classification cache.
const MAX_CLASSIFIED_BYTES: usize = 8 * 1024 * 1024;

fn classification_cache() -> &'static Mutex<ClassificationCache> {
    static CACHE: OnceLock<Mutex<ClassificationCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(ClassificationCache::default()))
}

/// Rough size of a classification, for the cache's memory bound.
fn footprint(sql: &str, result: &Result<Vec<ClassifiedStatement>, String>) -> usize {
    let per_statement = |st: &ClassifiedStatement| {
        st.text.len()
            + st.fingerprint.len()
            + st.facts
                .tables_read
                .iter()
                .chain(&st.facts.tables_written)
                .chain(&st.facts.functions)
                .map(|t| t.len() + 24)
                .sum::<usize>()
            + 128
    };
    sql.len()
        + 64
        + result
            .as_ref()
            .map(|v| v.iter().map(per_statement).sum())
            .unwrap_or(64)
}

pub fn classify(sql: &str, standard_conforming_strings: bool) -> Classified {
    let cacheable = sql.len() <= MAX_CACHED_TEXT;
    let key = (standard_conforming_strings, sql.to_owned());
    if cacheable
        && let Some(hit) = classification_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .get(&key)
    {
        return hit.clone();
    }
    let options = sluice_policy::ClassifyOptions {
        standard_conforming_strings,
        skip_fingerprint: true,
    };
    let result = Arc::new(sluice_policy::classify_with(sql, options).map_err(|e| e.to_string()));
    if cacheable {
        let size = footprint(sql, &result);
        let mut cache = classification_cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Cleared wholesale when full: classification is cheap to redo, and
        // this keeps memory bounded when every text is new (inlined
        // constants, or an adversary).
        if cache.entries.len() >= MAX_CLASSIFIED || cache.bytes + size > MAX_CLASSIFIED_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        cache.bytes += size;
        cache.entries.insert(key, result.clone());
    }
    result
}

/// Per-session decisions.
pub struct Judge {
    subject: Subject,
    resource: String,
    version: u64,
    /// The target session's `standard_conforming_strings`, as last reported.
    standard_conforming_strings: bool,
    decided: HashMap<String, Arc<Verdict>>,
}

const MAX_DECIDED: usize = 1024;

impl Judge {
    pub fn new(subject: Subject, resource: String) -> Self {
        Self {
            subject,
            resource,
            version: 0,
            standard_conforming_strings: true,
            decided: HashMap::new(),
        }
    }

    /// Follows the target's ParameterStatus for standard_conforming_strings.
    pub fn set_standard_conforming_strings(&mut self, on: bool) {
        if on != self.standard_conforming_strings {
            self.standard_conforming_strings = on;
            self.decided.clear();
        }
    }

    /// Judges a SQL string (possibly several statements) under `snapshot`.
    pub fn sql(&mut self, snapshot: Option<&Arc<Active>>, sql: &str) -> Arc<Verdict> {
        let Some(active) = snapshot else {
            return Arc::new(no_snapshot());
        };
        if active.version != self.version {
            self.decided.clear();
            self.version = active.version;
        }
        if let Some(v) = self.decided.get(sql) {
            return v.clone();
        }
        let verdict = Arc::new(self.decide_sql(active, sql));
        if sql.len() <= MAX_CACHED_TEXT {
            if self.decided.len() >= MAX_DECIDED {
                self.decided.clear();
            }
            self.decided.insert(sql.to_owned(), verdict.clone());
        }
        verdict
    }

    fn decide_sql(&self, active: &Active, sql: &str) -> Verdict {
        let verdict = self.decide_sql_with(active, sql, self.standard_conforming_strings);
        // The agent learns standard_conforming_strings from the target only
        // after a SET has run, so a client could change it and pipeline the
        // next query before the agent knows. When a backslash could make the
        // two string syntaxes split the text differently, the text must be
        // allowed under both.
        if verdict.rank() == 0 || !sql.contains('\\') {
            return verdict;
        }
        let other = self.decide_sql_with(active, sql, !self.standard_conforming_strings);
        if other.rank() < verdict.rank() {
            other
        } else {
            verdict
        }
    }

    fn decide_sql_with(
        &self,
        active: &Active,
        sql: &str,
        standard_conforming_strings: bool,
    ) -> Verdict {
        let classified = classify(sql, standard_conforming_strings);
        let statements = match classified.as_ref() {
            Ok(s) => s,
            Err(e) => {
                return Verdict::deny(
                    format!("statement could not be parsed, so it is not allowed: {e}"),
                    String::new(),
                    Vec::new(),
                );
            }
        };
        let mut kinds = Vec::new();
        let mut row_limit: Option<u64> = None;
        let mut rule = String::new();
        let mut prepared = Vec::new();
        let mut approval: Option<Verdict> = None;
        let tables_read: Vec<String> = statements
            .iter()
            .flat_map(|s| s.facts.tables_read.iter().cloned())
            .collect();
        let copy_out: Vec<sluice_policy::CopyOut> = statements
            .iter()
            .filter_map(|s| s.copy_out.clone())
            .collect();
        let fingerprinted = Some((classified.clone(), standard_conforming_strings));
        for st in statements {
            prepared.extend(st.prepared.iter().cloned());
            kinds.extend(st.facts.kinds.iter().map(|k| k.as_str().to_owned()));
            let verdict = self.decide_facts(active, &st.facts);
            if verdict.approval.is_some() {
                // The whole text needs approval, unless another of its
                // statements is denied outright.
                approval.get_or_insert(verdict);
                continue;
            }
            if !verdict.allowed {
                let reason = if statements.len() > 1 {
                    format!("{} (in: {})", verdict.reason, abbreviate(&st.text))
                } else {
                    verdict.reason
                };
                return Verdict {
                    kinds,
                    reason,
                    ..verdict
                };
            }
            row_limit = match (row_limit, verdict.row_limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if rule.is_empty() {
                rule = verdict.rule;
            }
        }
        if let Some(needs) = approval {
            return Verdict {
                kinds,
                prepared,
                row_limit,
                classified: fingerprinted,
                fingerprint: OnceLock::new(),
                tables_read,
                copy_out,
                ..needs
            };
        }
        Verdict {
            allowed: true,
            rule,
            reason: String::new(),
            row_limit,
            kinds,
            prepared,
            classified: fingerprinted,
            fingerprint: OnceLock::new(),
            approval: None,
            tables_read,
            copy_out,
        }
    }

    fn decide_facts(&self, active: &Active, facts: &StatementFacts) -> Verdict {
        let d = active.policy.decide(&self.subject, &self.resource, facts);
        let rule = match (&d.policy, &d.rule) {
            (Some(p), Some(r)) => format!("{p}/{r}"),
            (Some(p), None) => p.clone(),
            _ => String::new(),
        };
        let kinds = facts.kinds.iter().map(|k| k.as_str().to_owned()).collect();
        match d.outcome {
            Outcome::Allow => Verdict {
                allowed: true,
                rule,
                row_limit: d.row_limit,
                kinds,
                ..Verdict::default()
            },
            Outcome::Deny => Verdict::deny(d.reason, rule, kinds),
            Outcome::Approve(spec) => Verdict {
                rule,
                reason: d.reason,
                row_limit: d.row_limit,
                kinds,
                approval: Some(Arc::new(ApprovalNeed {
                    approvers: spec.approvers.clone(),
                    min: spec.min,
                    wait: spec.mode == sluice_policy::ApprovalMode::Wait,
                    timeout: spec.timeout.to_std(),
                    ttl: spec.ttl.to_std(),
                })),
                ..Verdict::default()
            },
        }
    }

    /// Judges a protocol-level FunctionCall message.
    pub fn function_call(&mut self, snapshot: Option<&Arc<Active>>) -> Verdict {
        match snapshot {
            None => no_snapshot(),
            Some(active) => self.decide_facts(
                active,
                &StatementFacts {
                    kinds: vec![SqlKind::FunctionCall],
                    ..Default::default()
                },
            ),
        }
    }
}

fn no_snapshot() -> Verdict {
    Verdict::deny(
        "the agent has no valid policy snapshot; nothing is allowed until it has one".into(),
        String::new(),
        Vec::new(),
    )
}

/// First line of a statement, shortened, for error messages.
pub fn abbreviate(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or_default();
    if line.chars().count() > 80 {
        format!("{}...", line.chars().take(77).collect::<String>())
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_computed_on_demand_match_the_classifier_s() {
        for (sql, scs) in [
            ("SELECT count(*) FROM customers WHERE plan = 'x'", true),
            ("select 1; SELECT a FROM t WHERE b = $1", true),
            ("SELECT 'a\\'; DROP TABLE t; --'", false),
        ] {
            let verdict = Verdict {
                classified: Some((classify(sql, scs), scs)),
                ..Verdict::default()
            };
            let options = sluice_policy::ClassifyOptions {
                standard_conforming_strings: scs,
                skip_fingerprint: false,
            };
            let expected = sluice_policy::classify_with(sql, options)
                .unwrap()
                .iter()
                .map(|s| s.fingerprint.clone())
                .collect::<Vec<_>>()
                .join(";");
            assert!(!expected.is_empty());
            assert_eq!(verdict.fingerprint(), expected, "{sql}");
        }
        let unparsable = Verdict {
            classified: Some((classify("SELEC nonsense", true), true)),
            ..Verdict::default()
        };
        assert_eq!(unparsable.fingerprint(), "");
    }
}
