//! Judging statements: PostgreSQL's own parser (via `sluice_policy::classify_with`)
//! plus the compiled policy. Classification is cached process-wide by
//! statement text; decisions are cached per session and snapshot version,
//! so a repeated statement costs one hash lookup.
//!
//! Clients that inline their values (`... WHERE id = 42`, the simple
//! protocol) send a new text every time, so each session also keeps
//! decisions by the text's *shape*: the text with its constants replaced
//! by placeholders, as PostgreSQL's own parser finds them
//! (`sluice_policy::normalize`, a fifth of the cost of a full
//! classification). Only decisions that cannot depend on a constant's
//! value are kept that way (see [`shape_shareable`]).

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
};

use sluice_policy::{
    ClassifiedStatement, MAX_APPROVAL_WINDOW, Outcome, PreparedChange, Rename, SqlKind,
    StatementFacts, Subject,
};

use super::routines::{Reached, Routines};
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
    /// Tables its statements read or write, by the names they use and
    /// through the database's views (for masking: a write reads its
    /// target).
    pub tables_read: Vec<String>,
    /// Its `COPY ... TO STDOUT` statements, in order (for masking).
    pub copy_out: Vec<sluice_policy::CopyOut>,
    /// How many `COPY ... FROM STDIN` it has: the target ignores Syncs
    /// while it waits for their data.
    pub copy_in: usize,
    /// Portals its `FETCH` and `MOVE` statements run (one bound through the
    /// protocol runs the statement the agent judged at its Parse).
    pub fetches: Vec<String>,
    /// Refused for a reason other than policy: the SQLSTATE to answer with
    /// (`reason` says why).
    pub refusal: Option<&'static str>,
    /// Result columns that are PostgreSQL's own `count` (for a text of one
    /// plain `SELECT`, see `ClassifiedStatement::counts`): row counts,
    /// which strict masking leaves readable.
    pub counts: Vec<usize>,
    /// For a text that is one `EXECUTE` with constant arguments, which
    /// policy lets run: the prepared statement's name. The EXECUTE runs
    /// whatever statement the target holds under it, which may have been
    /// prepared under an older policy, with approval for other values, or
    /// by code the agent never saw; the session reads it from the target
    /// and judges that instead (see [`SQL_EXECUTE_ALONE`] for every other
    /// EXECUTE).
    pub executes: Option<String>,
}

pub use sluice_policy::SQL_EXECUTE_ALONE;

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
    /// Decisions by shape (see the module docs and [`shape_shareable`]).
    by_shape: HashMap<String, Arc<Verdict>>,
    /// Bytes of text the two maps hold as keys.
    decided_bytes: usize,
    shape_bytes: usize,
    /// The target's functions and operators (or why they cannot be read:
    /// then every statement is denied).
    routines: Result<Arc<Routines>, String>,
    /// Names of functions and operators this session's statements define
    /// (see [`sluice_policy::CatalogNames::defines`]).
    defined: HashSet<String>,
    /// It defined more than [`MAX_DEFINED`]: every name counts as defined.
    defined_everything: bool,
    /// Relations, schemas and types this session's statements renamed: a
    /// new name reaches what the old one did (the catalog shows the new
    /// names only once the transaction commits). Kept for the session,
    /// since a prepared rename may run in any later transaction.
    renamed: Vec<Rename>,
    /// It renamed more than [`MAX_DEFINED`]: statements naming relations
    /// or types are refused.
    renamed_too_much: bool,
}

/// SQLSTATE for a Parse declaring a parameter type the agent's read of
/// the catalog does not know (`undefined_object`): not a policy decision,
/// and retrying after the next read can succeed.
pub const UNKNOWN_TYPE: &str = "42704";

/// How many defined names a session keeps track of.
const MAX_DEFINED: usize = 1024;

/// Bounds of a session's decision caches, in entries and in bytes of text
/// (each map is cleared when an insertion would pass either): one client
/// holding many sessions full of long unique statements must not be able
/// to take the agent's memory from everyone else.
const MAX_DECIDED: usize = 1024;
const MAX_DECIDED_BYTES: usize = 256 * 1024;
const MAX_SHAPES: usize = 256;
const MAX_SHAPE_BYTES: usize = 64 * 1024;

impl Judge {
    pub fn new(subject: Subject, resource: String, routines: Arc<Routines>) -> Self {
        Self {
            subject,
            resource,
            version: 0,
            standard_conforming_strings: true,
            decided: HashMap::new(),
            by_shape: HashMap::new(),
            decided_bytes: 0,
            shape_bytes: 0,
            routines: Ok(routines),
            defined: HashSet::new(),
            defined_everything: false,
            renamed: Vec::new(),
            renamed_too_much: false,
        }
    }

    /// The session's read of the target's functions and types, if it
    /// could be taken.
    pub fn routines(&self) -> Option<&Routines> {
        self.routines.as_deref().ok()
    }

    /// Judges from now on with a new read of the target's functions, or
    /// denies everything when it could not be read.
    pub fn set_routines(&mut self, routines: Result<Arc<Routines>, String>) {
        let same = match (&self.routines, &routines) {
            (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        if !same {
            self.routines = routines;
            self.forget();
        }
    }

    /// Remembers the functions and operators `classified` defines.
    fn note_definitions(&mut self, classified: &Classified) {
        let Ok(statements) = classified.as_ref() else {
            return;
        };
        let mut added = false;
        for name in statements.iter().flat_map(|s| &s.catalog_names.defines) {
            if self.defined.len() >= MAX_DEFINED {
                self.defined_everything = true;
            } else {
                added |= self.defined.insert(name.clone());
            }
        }
        for rename in statements.iter().flat_map(|s| &s.facts.renames) {
            // A routine's new name is among its definitions; the rename
            // itself is for rules naming the old one.
            if matches!(rename, Rename::Function { .. }) || self.renamed.contains(rename) {
                continue;
            }
            if self.renamed.len() >= MAX_DEFINED {
                self.renamed_too_much = true;
            } else {
                self.renamed.push(rename.clone());
            }
            added = true;
        }
        if added || self.defined_everything {
            self.forget();
        }
    }

    fn forget(&mut self) {
        self.decided.clear();
        self.by_shape.clear();
        self.decided_bytes = 0;
        self.shape_bytes = 0;
    }

    /// Follows the target's ParameterStatus for standard_conforming_strings.
    pub fn set_standard_conforming_strings(&mut self, on: bool) {
        if on != self.standard_conforming_strings {
            self.standard_conforming_strings = on;
            self.forget();
        }
    }

    /// Judges a SQL string (possibly several statements) under `snapshot`.
    pub fn sql(&mut self, snapshot: Option<&Arc<Active>>, sql: &str) -> Arc<Verdict> {
        let Some(active) = snapshot else {
            return Arc::new(no_snapshot());
        };
        if active.version != self.version {
            self.forget();
            self.version = active.version;
        }
        if let Some(v) = self.decided.get(sql) {
            return v.clone();
        }
        let shape = shape_of(sql, self.standard_conforming_strings);
        if let Some(v) = shape.as_ref().and_then(|s| self.by_shape.get(s)) {
            // Not remembered by its text as well: texts with inlined values
            // rarely repeat, and they would push out those that do.
            return v.clone();
        }
        let verdict = Arc::new(self.decide_sql(active, sql));
        if verdict.allowed || verdict.approval.is_some() {
            // Later statements may call what this one defines (the
            // decisions made so far are forgotten when it does).
            self.note_definitions(&classify(sql, self.standard_conforming_strings));
        }
        if sql.len() <= MAX_CACHED_TEXT {
            if self.decided.len() >= MAX_DECIDED
                || self.decided_bytes + sql.len() > MAX_DECIDED_BYTES
            {
                self.decided.clear();
                self.decided_bytes = 0;
            }
            self.decided_bytes += sql.len();
            self.decided.insert(sql.to_owned(), verdict.clone());
        }
        if let Some(shape) = shape
            && shape_shareable(&verdict)
        {
            if self.by_shape.len() >= MAX_SHAPES || self.shape_bytes + shape.len() > MAX_SHAPE_BYTES
            {
                self.by_shape.clear();
                self.shape_bytes = 0;
            }
            self.shape_bytes += shape.len();
            self.by_shape.insert(shape, verdict.clone());
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
        // A write reads its target too: its SET, WHERE and RETURNING, and
        // the errors of its constraints, indexes and casts (`ALTER TABLE
        // ... TYPE int USING email::int`) quote the target's values.
        let mut tables_read: Vec<String> = statements
            .iter()
            .flat_map(|s| {
                s.facts
                    .tables_read
                    .iter()
                    .chain(&s.facts.tables_written)
                    .cloned()
            })
            .collect();
        let copy_out: Vec<sluice_policy::CopyOut> = statements
            .iter()
            .filter_map(|s| s.copy_out.clone())
            .collect();
        let fetches: Vec<String> = statements
            .iter()
            .filter_map(|s| s.fetches.clone())
            .collect();
        let copy_in = statements.iter().filter(|s| s.copy_in).count();
        let fingerprinted = Some((classified.clone(), standard_conforming_strings));
        let routines = match &self.routines {
            Ok(r) => r,
            Err(e) => {
                return Verdict {
                    refusal: Some("58000"),
                    ..Verdict::deny(
                        format!(
                            "cannot read the functions defined in the target database, which it needs to judge statements ({e}); try again shortly"
                        ),
                        String::new(),
                        Vec::new(),
                    )
                };
            }
        };
        // What earlier statements of this text define and rename.
        let mut defined_here: Vec<&str> = Vec::new();
        let mut renamed: Vec<&Rename> = self.renamed.iter().collect();
        for st in statements {
            if self.renamed_too_much
                && !(st.facts.tables_read.is_empty()
                    && st.facts.tables_written.is_empty()
                    && st.catalog_names.types.is_empty())
            {
                return Verdict {
                    refusal: Some("54000"),
                    ..Verdict::deny(
                        format!(
                            "this session renamed more than {MAX_DEFINED} relations, schemas or types, and the agent follows no more of them: statements naming relations or types need a new session"
                        ),
                        String::new(),
                        Vec::new(),
                    )
                };
            }
            prepared.extend(st.prepared.iter().cloned());
            let defined = |name: &str| {
                self.defined_everything
                    || self.defined.contains(name)
                    || defined_here.contains(&name)
            };
            let facts = with_routines(st, routines, defined, &renamed);
            tables_read.extend(facts.tables_reached.iter().cloned());
            defined_here.extend(st.catalog_names.defines.iter().map(String::as_str));
            renamed.extend(&st.facts.renames);
            kinds.extend(facts.kinds.iter().map(|k| k.as_str().to_owned()));
            let verdict = self.decide_facts(active, &facts);
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
        // An EXECUTE is judged by the statement it runs, which the session
        // reads from the target; only a lone one with constant arguments.
        if sluice_policy::runs_unread_execute(statements) {
            return Verdict {
                kinds,
                refusal: Some("0A000"),
                ..Verdict::deny(SQL_EXECUTE_ALONE.into(), String::new(), Vec::new())
            };
        }
        let executes = match statements.as_slice() {
            [only] => only.executes.clone(),
            _ => None,
        };
        // Row counts, unless `count` may be the database's own function.
        let counts = match statements.as_slice() {
            [only]
                if !(routines.defines_function("count")
                    || self.defined_everything
                    || self.defined.contains("count")
                    || defined_here.contains(&"count")) =>
            {
                only.counts.clone()
            }
            _ => Vec::new(),
        };
        if let Some(needs) = approval {
            return Verdict {
                kinds,
                prepared,
                row_limit,
                classified: fingerprinted,
                fingerprint: OnceLock::new(),
                tables_read,
                copy_out,
                copy_in,
                fetches,
                counts,
                executes,
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
            copy_in,
            fetches,
            refusal: None,
            counts,
            executes,
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
                    // Validated at most this long; clamped here too, so a
                    // snapshot that is not cannot overflow a deadline.
                    timeout: spec.timeout.to_std().min(MAX_APPROVAL_WINDOW.to_std()),
                    ttl: spec.ttl.to_std().min(MAX_APPROVAL_WINDOW.to_std()),
                })),
                ..Verdict::default()
            },
        }
    }

    /// Judges the parameter types a Parse message declares: a value bound
    /// to a parameter of one of the database's types runs what that type
    /// runs (a domain's CHECK), which needs a rule naming it like any
    /// other `user_function`. A type the last read of the catalog does not
    /// know is refused with [`UNKNOWN_TYPE`] (the session then reads the
    /// catalog again). What such a value calls besides (a domain's CHECK
    /// calling `lo_creat`) is judged with the statement (`statement`, its
    /// verdict) as if it made the calls: refused when that is denied.
    /// `None` when nothing more is needed (or the statement itself was
    /// refused already).
    pub fn parameter_types(
        &mut self,
        snapshot: Option<&Arc<Active>>,
        types: &[i32],
        statement: &Verdict,
    ) -> Option<Verdict> {
        let (Some(active), Ok(routines)) = (snapshot, &self.routines) else {
            return None;
        };
        let unknown = routines.unknown_parameter_types(types);
        if !unknown.is_empty() {
            let oids: Vec<String> = unknown.iter().map(u32::to_string).collect();
            return Some(Verdict {
                refusal: Some(UNKNOWN_TYPE),
                ..Verdict::deny(
                    format!(
                        "parameter types: the agent's last read of the target's catalog has no type with OID {}; it reads the catalog again (at most once a second), so retry it shortly",
                        oids.join(", ")
                    ),
                    String::new(),
                    vec![SqlKind::UserFunction.as_str().to_owned()],
                )
            });
        }
        let calls = routines.called_by_parameter_types(types);
        let functions = routines.run_by_parameter_types(types);
        if let Some(refused) = self.parameter_calls(active, &calls, statement) {
            return Some(refused);
        }
        if functions.is_empty() {
            return None;
        }
        let verdict = self.decide_facts(
            active,
            &StatementFacts {
                kinds: vec![SqlKind::UserFunction],
                user_functions: functions,
                ..Default::default()
            },
        );
        if verdict.allowed {
            return None;
        }
        let reason = format!("parameter types: {}", verdict.reason);
        Some(Verdict::deny(reason, verdict.rule, verdict.kinds))
    }

    /// The statement judged again with `calls` (what its parameters'
    /// types call) added to what it reaches: the refusal, when that is
    /// denied. (An approval it would need for them alone is not asked.)
    fn parameter_calls(
        &self,
        active: &Active,
        calls: &[String],
        statement: &Verdict,
    ) -> Option<Verdict> {
        if calls.is_empty() {
            return None;
        }
        let Some((classified, _)) = &statement.classified else {
            return None;
        };
        let Ok(statements) = classified.as_ref() else {
            return None;
        };
        for s in statements {
            let mut facts = s.facts.clone();
            for kind in calls.iter().flat_map(|f| sluice_policy::kinds_of_call(f)) {
                if !facts.kinds.contains(&kind) {
                    facts.kinds.push(kind);
                }
            }
            facts.functions_reached.extend(calls.iter().cloned());
            let verdict = self.decide_facts(active, &facts);
            if !verdict.allowed && verdict.approval.is_none() {
                let reason = format!("parameter types: {}", verdict.reason);
                return Some(Verdict::deny(reason, verdict.rule, verdict.kinds));
            }
        }
        None
    }

    /// Judges a protocol-level FunctionCall message.
    pub fn function_call(&mut self, snapshot: Option<&Arc<Active>>) -> Verdict {
        match snapshot {
            None => no_snapshot(),
            // The function is picked by OID: it may read or write any
            // table (libpq's large-object calls come this way).
            Some(active) => self.decide_facts(
                active,
                &StatementFacts {
                    kinds: vec![SqlKind::FunctionCall],
                    reaches_unnamed_tables: true,
                    ..Default::default()
                },
            ),
        }
    }
}

/// A statement's facts with what the target's catalog adds: the kind
/// `user_function` for functions and operators of the database it reaches
/// without naming them as such, `foreign_data` for the foreign tables it
/// reads or writes, `credential_catalog` for the catalogs holding
/// credentials its views read, the tables it reaches and functions it
/// calls through views, and the tables and functions writing the tables it
/// writes reaches (foreign keys, rules, constraints, defaults, triggers;
/// see `routines.rs`), and the renames of the indexes and sequences that
/// move with a table it moves.
fn with_routines<'a>(
    statement: &'a sluice_policy::ClassifiedStatement,
    routines: &Routines,
    defined: impl Fn(&str) -> bool,
    renamed: &[&Rename],
) -> Cow<'a, StatementFacts> {
    let reached = routines.reached_by(statement, defined, renamed);
    if reached == Reached::default() {
        return Cow::Borrowed(&statement.facts);
    }
    let mut facts = statement.facts.clone();
    facts.tables_reached = reached.tables;
    // Moving a table moves its indexes and owned sequences, which rules
    // may name.
    facts.renames.extend(reached.moved);
    // A view over the planner's statistics reads every table's samples;
    // one over `pg_largeobject`, or calling `lo_get`, reads the large
    // objects its rows pick, and so does writing a table whose default,
    // CHECK or trigger condition calls one.
    facts.reaches_unnamed_tables |= facts
        .tables_reached
        .iter()
        .any(|t| sluice_policy::is_statistics(t) || sluice_policy::is_large_object_data(t))
        || reached
            .calls
            .iter()
            .chain(&reached.write_calls)
            .any(|f| sluice_policy::large_object_access(f));
    // What the views' calls do beyond computing a value (`query_to_xml`
    // runs the SQL text it is given, `pg_read_file` reads the server's
    // files): as if the statement made them.
    for kind in reached
        .calls
        .iter()
        .flat_map(|f| sluice_policy::kinds_of_call(f))
    {
        if !facts.kinds.contains(&kind) {
            facts.kinds.push(kind);
        }
    }
    // Rules of what it writes that delete or update: as if it did.
    for kind in reached.write_kinds {
        if !facts.kinds.contains(&kind) {
            facts.kinds.push(kind);
        }
    }
    // Beside the built-ins a field selection may call (from the text).
    facts.functions_reached.extend(reached.calls);
    facts.functions_reached.extend(reached.write_calls);
    facts.functions_reached.sort_unstable();
    facts.functions_reached.dedup();
    for (kind, names, found) in [
        (
            SqlKind::UserFunction,
            &mut facts.user_functions,
            reached.functions,
        ),
        (
            SqlKind::ForeignData,
            &mut facts.foreign_tables,
            reached.foreign_tables,
        ),
        (
            SqlKind::CredentialCatalog,
            &mut facts.credential_catalogs,
            reached.credential_catalogs,
        ),
    ] {
        if found.is_empty() {
            continue;
        }
        if !facts.kinds.contains(&kind) {
            facts.kinds.push(kind);
        }
        names.extend(found);
        names.sort_unstable();
        names.dedup();
    }
    Cow::Owned(facts)
}

/// The shape of `sql`: its text with every constant replaced by a `$n`
/// placeholder, found by PostgreSQL's own parser (`sluice_policy::normalize`;
/// what is not a constant is kept byte for byte, comments included). Two
/// texts of one shape differ in the values of constants only.
///
/// `None` (judge the text itself) for text the shape could misread or
/// that cannot be shared anyway: longer than the caches keep, not a plain
/// query by its first word (a cheap filter; [`shape_shareable`] decides),
/// under `standard_conforming_strings = off` (the normalizer lexes strings
/// as `on` only), with a backslash (whose reading depends on that
/// setting), or that does not parse.
fn shape_of(sql: &str, standard_conforming_strings: bool) -> Option<String> {
    if sql.len() > MAX_CACHED_TEXT || !standard_conforming_strings || sql.contains('\\') {
        return None;
    }
    let first = sql.trim_start().get(..6)?;
    if !["select", "insert", "update", "delete"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
    {
        return None;
    }
    sluice_policy::normalize(sql).ok()
}

/// Whether a verdict holds for every text of its text's shape: a single
/// plain `SELECT`, `INSERT`, `UPDATE` or `DELETE` that calls no function
/// and is allowed outright. The classifier reads constants' values only
/// in function arguments (`set_config`), statement options (`EXPLAIN`,
/// `COPY`) and utility statements, all of which this leaves out; an
/// approval is never shared, since its approvers must see the real values.
fn shape_shareable(verdict: &Verdict) -> bool {
    let Some((classified, true)) = &verdict.classified else {
        return false;
    };
    let Ok([statement]) = classified.as_ref().as_deref() else {
        return false;
    };
    verdict.allowed
        && verdict.approval.is_none()
        && statement.prepared.is_none()
        && statement.copy_out.is_none()
        && statement.facts.functions.is_empty()
        && !statement.facts.kinds.is_empty()
        && statement.facts.kinds.iter().all(|k| {
            matches!(
                k,
                SqlKind::Select | SqlKind::Insert | SqlKind::Update | SqlKind::Delete
            )
        })
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

    const DOC: &str = r#"
resources:
  - { name: db, kind: postgres, agent: a, address: "h:1", database: d }
policies:
  - name: p
    subjects: { users: [bot] }
    resources: { names: [db] }
    rules:
      - approve: { sql: { statements: [insert], tables: ["public.payments"] }, approvers: [dba] }
      - deny: { sql: { unbounded: [update, delete] } }
        name: bounded
      - allow: { sql: { statements: [read, write, set] } }
        name: work
"#;

    fn snapshot(version: u64) -> Arc<Active> {
        snapshot_of(DOC, version)
    }

    fn snapshot_of(doc: &str, version: u64) -> Arc<Active> {
        Arc::new(crate::snapshot::test_active(doc, version))
    }

    /// A document whose one policy gives user `bot` resource `db` with
    /// `rules` (YAML list items indented six spaces).
    fn bot_doc(rules: &str) -> String {
        format!(
            r#"
resources:
  - {{ name: db, kind: postgres, agent: a, address: "h:1", database: d }}
policies:
  - name: p
    subjects: {{ users: [bot] }}
    resources: {{ names: [db] }}
    rules:
{rules}
"#
        )
    }

    fn judge() -> (Judge, Arc<Active>) {
        let subject = Subject::user("bot", Vec::<String>::new());
        (
            Judge::new(subject, "db".into(), Arc::default()),
            snapshot(1),
        )
    }

    /// Whether `sql` was ever classified (parsed) in this process.
    fn parsed(sql: &str) -> bool {
        classification_cache()
            .lock()
            .unwrap()
            .entries
            .contains_key(&(true, sql.to_owned()))
    }

    /// Pairs of texts that differ only in their constants' values (and
    /// types), in ways a client could choose.
    const SAME_SHAPE: &[(&str, &str)] = &[
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 90017",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 'x'",
        ),
        (
            "select * from public.customers where email = 'a@b.c' and id > -5 limit 10",
            "select * from public.customers where email = $$d$$ and id > 1.5e3 limit 99999",
        ),
        (
            "SELECT c.oid FROM pg_class c WHERE c.oid = 'pg_authid'::regclass",
            "SELECT c.oid FROM pg_class c WHERE c.oid = 'customers'::regclass",
        ),
        (
            "SELECT * FROM t WHERE d > DATE '2020-01-01' AND b = B'101' OR x = X'1F'",
            "SELECT * FROM t WHERE d > DATE 'epoch' AND b = 7 OR x = 'y'",
        ),
        (
            "INSERT INTO orders (id, note) VALUES (1, 'first'), (2, NULL)",
            "INSERT INTO orders (id, note) VALUES (3, 'x''; DROP TABLE orders; --'), (4, 5)",
        ),
        (
            "UPDATE orders SET note = U&'n' UESCAPE '!' WHERE id IN (SELECT id FROM t WHERE k = 1)",
            "UPDATE orders SET note = U&'d!0061t!+000061' UESCAPE '!' WHERE id IN (SELECT id FROM t WHERE k = 2)",
        ),
        (
            "DELETE FROM orders WHERE id = 1 RETURNING id, 'gone'",
            "DELETE FROM orders WHERE id = 2 RETURNING id, 3",
        ),
    ];

    #[test]
    fn row_counts_are_placed_only_while_count_is_postgresql_s_own() {
        let active = snapshot_of(
            &bot_doc("      - allow: { sql: { statements: [any] } }\n"),
            1,
        );
        let mut judge = Judge::new(
            Subject::user("bot", Vec::<String>::new()),
            "db".into(),
            Arc::default(),
        );
        let counts = |judge: &mut Judge, sql: &str| judge.sql(Some(&active), sql).counts.clone();
        assert_eq!(
            counts(&mut judge, "SELECT id, count(*) FROM t GROUP BY id"),
            [1]
        );
        // Not for a text of several statements (which result is whose).
        assert!(counts(&mut judge, "SELECT 1; SELECT count(*) FROM t").is_empty());
        // Once the session defines a `count` of its own, a call may be it.
        let defined = judge.sql(
            Some(&active),
            "CREATE FUNCTION count(text) RETURNS text LANGUAGE sql AS 'SELECT $1'",
        );
        assert!(defined.allowed, "{defined:?}");
        assert!(counts(&mut judge, "SELECT id, count(*) FROM t GROUP BY id").is_empty());
    }

    #[test]
    fn texts_that_differ_only_in_constants_share_one_decision_without_a_parse() {
        for (first, second) in SAME_SHAPE {
            let (mut judge, active) = judge();
            let decided = judge.sql(Some(&active), first);
            assert!(decided.allowed, "{first}: {decided:?}");
            assert!(parsed(first));
            let shared = judge.sql(Some(&active), second);
            assert!(Arc::ptr_eq(&decided, &shared), "{second}");
            assert!(!parsed(second), "{second} was parsed");
        }
    }

    #[test]
    fn texts_of_one_shape_classify_alike() {
        // What sharing a decision rests on: the classifier does not read
        // these constants, whatever their values and types.
        let options = sluice_policy::ClassifyOptions {
            standard_conforming_strings: true,
            skip_fingerprint: false,
        };
        for (first, second) in SAME_SHAPE {
            assert_eq!(
                shape_of(first, true),
                shape_of(second, true),
                "{first} / {second}"
            );
            assert!(shape_of(first, true).is_some(), "{first}");
            let a = sluice_policy::classify_with(first, options).unwrap();
            let b = sluice_policy::classify_with(second, options).unwrap();
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].facts, b[0].facts, "{first} / {second}");
            assert_eq!(a[0].fingerprint, b[0].fingerprint, "{first} / {second}");
        }
    }

    #[test]
    fn a_decision_that_could_depend_on_a_constant_is_never_shared() {
        // (first, second, whether the second is allowed): each pair has one
        // shape, and the first is decided before the second.
        let cases = [
            // set_config reads its first argument's value.
            (
                "SELECT set_config('application_name', 'x', false)",
                "SELECT set_config('role', 'postgres', false)",
                false,
            ),
            // Approvers must see the real values.
            (
                "INSERT INTO payments VALUES (1, 100)",
                "INSERT INTO payments VALUES (2, 1000000)",
                false,
            ),
            // Two statements.
            ("SELECT 1; SELECT 2", "SELECT 3; SELECT 4", true),
            // A denial is judged per text (it is not the hot path).
            (
                "DELETE FROM t WHERE 1 = 1",
                "DELETE FROM t WHERE 2 = 3",
                false,
            ),
        ];
        for (first, second, allowed) in cases {
            assert_eq!(shape_of(first, true), shape_of(second, true), "{first}");
            let (mut judge, active) = judge();
            let decided = judge.sql(Some(&active), first);
            let judged = judge.sql(Some(&active), second);
            assert!(
                !Arc::ptr_eq(&decided, &judged),
                "{second} shared a decision"
            );
            assert!(parsed(second), "{second} was not parsed");
            assert_eq!(judged.allowed, allowed, "{second}: {judged:?}");
            if first.contains("set_config") {
                assert!(decided.allowed, "{decided:?}");
                assert!(judged.kinds.iter().any(|k| k == "set_role"), "{judged:?}");
            }
        }
    }

    #[test]
    fn only_text_the_normalizer_reads_as_the_server_does_has_a_shape() {
        assert!(shape_of("SELECT * FROM t WHERE a = 'x'", true).is_some());
        // The normalizer assumes standard_conforming_strings = on, and a
        // backslash reads differently under the two settings.
        assert_eq!(shape_of("SELECT * FROM t WHERE a = 'x'", false), None);
        assert_eq!(shape_of("SELECT * FROM t WHERE a = E'x\\'", true), None);
        assert_eq!(shape_of("DROP TABLE t", true), None);
        assert_eq!(shape_of("SELEC nonsense", true), None);
        assert_eq!(shape_of("SELECT 'a\0b'", true), None);
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_TEXT));
        assert_eq!(shape_of(&long, true), None);
        // Under standard_conforming_strings = off nothing is shared.
        let (mut judge, active) = judge();
        judge.set_standard_conforming_strings(false);
        let first = judge.sql(Some(&active), "SELECT a FROM t WHERE b = 1");
        let second = judge.sql(Some(&active), "SELECT a FROM t WHERE b = 2");
        assert!(first.allowed && !Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn a_session_s_decision_caches_stay_within_their_memory_bounds() {
        let (mut judge, active) = judge();
        let long_where = "b = 1 AND ".repeat(MAX_CACHED_TEXT / 12);
        for i in 0..60 {
            // Long texts, each its own shape (the column name differs).
            let sql = format!("SELECT c{i} FROM t WHERE {long_where}true");
            assert!(sql.len() <= MAX_CACHED_TEXT);
            assert!(judge.sql(Some(&active), &sql).allowed);
            let text: usize = judge.decided.keys().map(String::len).sum();
            let shapes: usize = judge.by_shape.keys().map(String::len).sum();
            assert_eq!((text, shapes), (judge.decided_bytes, judge.shape_bytes));
            assert!(text <= MAX_DECIDED_BYTES, "{text} bytes of decided text");
            assert!(shapes <= MAX_SHAPE_BYTES, "{shapes} bytes of shapes");
        }
        assert!(!judge.by_shape.is_empty(), "shapes were kept at all");
    }

    #[test]
    fn functions_the_database_or_the_session_defines_are_user_functions_however_reached() {
        let active = snapshot_of(
            &bot_doc("      - allow: { sql: { statements: [read, create] } }"),
            1,
        );
        let subject = Subject::user("bot", Vec::<String>::new());
        let routines = super::super::routines::TestCatalog {
            functions: &["touch"],
            runs: &[(10, "public", "touched", "touch", false)],
            foreign: &[(11, "remote", "orders")],
            ..Default::default()
        }
        .build();
        let mut judge = Judge::new(subject, "db".into(), Arc::new(routines));
        for sql in [
            "SELECT t.touch FROM t",
            "SELECT * FROM touched",
            "SELECT 1 FROM t WHERE (t).touch > 0",
        ] {
            let verdict = judge.sql(Some(&active), sql);
            assert!(!verdict.allowed, "{sql}");
            assert!(verdict.kinds.contains(&"user_function".to_owned()), "{sql}");
            assert!(
                verdict.reason.contains("defined in the database: touch)"),
                "{sql}: {}",
                verdict.reason
            );
        }
        // A foreign table: its own kind, named in the reason.
        let verdict = judge.sql(Some(&active), "SELECT * FROM orders");
        assert!(!verdict.allowed);
        assert_eq!(verdict.kinds, ["select", "foreign_data"]);
        assert!(
            verdict
                .reason
                .contains("allows `foreign_data` (foreign tables, whose rows another server holds: remote.orders)"),
            "{}",
            verdict.reason
        );
        // Decided before the session defines `mine`, and again after.
        let later = "SELECT t.mine FROM t";
        assert!(judge.sql(Some(&active), later).allowed);
        let create = "CREATE FUNCTION mine(t) RETURNS int LANGUAGE sql AS 'SELECT 1'";
        assert!(judge.sql(Some(&active), create).allowed);
        let verdict = judge.sql(Some(&active), later);
        assert!(!verdict.allowed, "{verdict:?}");
        assert!(verdict.reason.contains("mine"), "{}", verdict.reason);

        // Defined earlier in the same text.
        let verdict = judge.sql(
            Some(&active),
            "CREATE FUNCTION ours(t) RETURNS int LANGUAGE sql AS 'SELECT 1'; SELECT t.ours FROM t",
        );
        assert!(!verdict.allowed, "{verdict:?}");
        assert!(verdict.reason.contains("ours"), "{}", verdict.reason);

        // Without a read of the target's functions nothing is allowed.
        judge.set_routines(Err("the target database did not answer in time".into()));
        let verdict = judge.sql(Some(&active), "SELECT 1");
        assert!(!verdict.allowed);
        assert_eq!(verdict.refusal, Some("58000"), "not a policy decision");
        assert!(
            verdict
                .reason
                .contains("cannot read the functions defined in the target database"),
            "{}",
            verdict.reason
        );
        judge.set_routines(Ok(Arc::default()));
        assert!(judge.sql(Some(&active), "SELECT 1").allowed);
    }

    #[test]
    fn catalogs_holding_credentials_need_a_rule_naming_them() {
        let doc = |extra: &str| {
            bot_doc(&format!(
                "      - allow: {{ sql: {{ statements: [read] }} }}{extra}"
            ))
        };
        let subject = Subject::user("bot", Vec::<String>::new());
        let routines = super::super::routines::TestCatalog {
            credentials: &[(
                12327,
                "pg_catalog",
                "pg_user_mappings",
                "pg_catalog.pg_user_mappings",
            )],
            reads: &[(16400, "public", "mappings", 12327)],
            ..Default::default()
        }
        .build();
        let mut judge = Judge::new(subject, "db".into(), Arc::new(routines));
        let read_only = snapshot_of(&doc(""), 1);
        for (sql, catalog) in [
            (
                "SELECT umoptions FROM pg_user_mappings",
                "pg_catalog.pg_user_mappings",
            ),
            ("SELECT * FROM mappings", "pg_catalog.pg_user_mappings"),
            ("SELECT rolpassword FROM pg_authid", "pg_catalog.pg_authid"),
        ] {
            let verdict = judge.sql(Some(&read_only), sql);
            assert!(!verdict.allowed, "{sql}");
            assert_eq!(verdict.kinds, ["select", "credential_catalog"], "{sql}");
            assert!(
                verdict.reason.contains(&format!(
                    "allows `credential_catalog` (catalogs holding credentials the database logs in to other servers or checks passwords with: {catalog})"
                )),
                "{sql}: {}",
                verdict.reason
            );
        }
        assert!(
            judge
                .sql(Some(&read_only), "SELECT * FROM pg_roles")
                .allowed
        );
        // A rule naming the kind allows the catalogs its `tables:` names.
        let mappings = snapshot_of(
            &doc(
                "\n      - allow: { sql: { statements: [credential_catalog], tables: [pg_catalog.pg_user_mappings] } }",
            ),
            2,
        );
        assert!(judge.sql(Some(&mappings), "SELECT * FROM mappings").allowed);
        assert!(!judge.sql(Some(&mappings), "TABLE pg_authid").allowed);
    }

    #[test]
    fn past_the_renames_a_session_is_followed_for_statements_naming_relations_are_refused() {
        let active = snapshot_of(
            &bot_doc("      - allow: { sql: { statements: [read, alter] } }"),
            1,
        );
        let subject = Subject::user("bot", Vec::<String>::new());
        let mut judge = Judge::new(subject, "db".into(), Arc::default());
        for i in 0..=MAX_DEFINED {
            let rename = format!("ALTER SCHEMA s{i} RENAME TO t{i}");
            assert!(judge.sql(Some(&active), &rename).allowed, "{rename}");
        }
        let verdict = judge.sql(Some(&active), "SELECT * FROM t1.items");
        assert!(!verdict.allowed);
        assert_eq!(verdict.refusal, Some("54000"));
        assert!(
            verdict.reason.contains("need a new session"),
            "{}",
            verdict.reason
        );
        assert!(judge.sql(Some(&active), "SELECT 1").allowed);
    }

    #[test]
    fn a_new_snapshot_forgets_shared_decisions() {
        let (mut judge, active) = judge();
        let first = judge.sql(Some(&active), "SELECT a FROM t WHERE b = 1");
        let second = judge.sql(Some(&snapshot(2)), "SELECT a FROM t WHERE b = 2");
        assert!(first.allowed && !Arc::ptr_eq(&first, &second));
    }

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

    #[test]
    fn an_execute_is_left_to_be_judged_by_what_it_runs_or_refused() {
        let subject = || Subject::user("bot", Vec::<String>::new());
        let allowing = snapshot_of(
            &bot_doc(
                "      - allow: { sql: { statements: [read, execute, explain, explain_analyze, create] } }",
            ),
            1,
        );
        let mut judge = Judge::new(subject(), "db".into(), Arc::default());
        for (sql, name) in [("EXECUTE p", "p"), ("EXECUTE \"Q\"(1, 'x', NULL)", "Q")] {
            let verdict = judge.sql(Some(&allowing), sql);
            assert!(verdict.allowed, "{sql}: {}", verdict.reason);
            assert_eq!(verdict.executes.as_deref(), Some(name), "{sql}");
        }
        // One the session cannot read before it runs is refused, not
        // allowed as an `execute`.
        for sql in [
            "SELECT 1; EXECUTE p",
            "EXECUTE p; SELECT 1",
            "EXECUTE p(1 + 1)",
            "EXPLAIN ANALYZE EXECUTE p",
            "EXPLAIN EXECUTE p",
            "CREATE TABLE x AS EXECUTE p",
        ] {
            let verdict = judge.sql(Some(&allowing), sql);
            assert!(!verdict.allowed && verdict.approval.is_none(), "{sql}");
            assert_eq!(verdict.refusal, Some("0A000"), "{sql}");
            assert_eq!(verdict.reason, SQL_EXECUTE_ALONE, "{sql}");
            assert_eq!(verdict.executes, None, "{sql}");
        }
        // Other statements name nothing to read.
        assert_eq!(judge.sql(Some(&allowing), "SELECT 1").executes, None);
        // Denied by policy, it is denied as it is: nothing to read.
        let reading = snapshot_of(
            &bot_doc("      - allow: { sql: { statements: [read] } }"),
            2,
        );
        let verdict = judge.sql(Some(&reading), "EXECUTE p");
        assert!(!verdict.allowed);
        assert_eq!((verdict.refusal, verdict.executes.clone()), (None, None));
        // Sent to approval, it is read too (and the session refuses it).
        let approving = snapshot_of(
            &bot_doc("      - approve: { sql: { statements: [execute] }, approvers: [dba] }"),
            3,
        );
        let verdict = judge.sql(Some(&approving), "EXECUTE p");
        assert!(verdict.approval.is_some());
        assert_eq!(verdict.executes.as_deref(), Some("p"));
    }

    /// A snapshot that was not validated (an older control plane) cannot
    /// give an approval a window that overflows a session's deadline.
    #[test]
    fn an_approval_window_is_clamped_to_the_longest_a_policy_may_give() {
        let (mut judge, _) = judge();
        let valid = snapshot_of(
            &bot_doc(
                "      - approve: { sql: { statements: [update] }, approvers: [dba], timeout: 7m, ttl: 11m }",
            ),
            2,
        );
        let json = String::from_utf8(valid.policy.to_json_bytes().unwrap()).unwrap();
        assert!(
            json.contains("\"7m\"") && json.contains("\"11m\""),
            "{json}"
        );
        let json = json
            .replace("\"7m\"", "\"18446744073709551615s\"")
            .replace("\"11m\"", "\"99999d\"");
        let approving = Arc::new(Active {
            policy: sluice_policy::CompiledPolicy::from_json_bytes(json.as_bytes()).unwrap(),
            verifier: sluice_identity::Verifier::default(),
            resources: HashMap::new(),
            credentials: HashMap::new(),
            ..*valid
        });
        let verdict = judge.sql(Some(&approving), "UPDATE t SET a = 1 WHERE id = 1");
        let need = verdict.approval.as_ref().expect("sent to approval");
        assert_eq!(need.timeout, MAX_APPROVAL_WINDOW.to_std());
        assert_eq!(need.ttl, MAX_APPROVAL_WINDOW.to_std());
        assert!(
            tokio::time::Instant::now()
                .checked_add(need.timeout)
                .is_some()
        );
    }
}
