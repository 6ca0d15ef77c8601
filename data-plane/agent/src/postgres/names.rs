//! What the target's named prepared statements and portals hold, as far as
//! the agent can know, so that an Execute is audited and row-limited as the
//! statement the target will actually run.
//!
//! - Additions (Parse, Bind) count once the target confirms them
//!   (ParseComplete, BindComplete, which arrive in order); removals (Close,
//!   `DEALLOCATE`, `DISCARD ALL`) count as soon as they are sent. Where the
//!   agent is unsure, a name is unknown, and a Bind or Execute through an
//!   unknown name is refused: uncertainty fails closed.
//! - A batch is planned against the confirmed state plus everything sent
//!   and not yet answered, assuming it succeeds. When an error ends a sync
//!   cycle, its unanswered additions are dropped.
//! - A Parse or Bind of a name the agent believes taken is refused by the
//!   agent (42P05 / 42P03, as PostgreSQL would) and never sent: the target
//!   may have dropped the name in ways the agent cannot see (a function
//!   that closes a cursor), and a new portal bound there unseen would run
//!   one statement while the agent judged and audited another. Removals
//!   the agent can see are followed: Close, `DEALLOCATE`, `CLOSE`, `DISCARD
//!   ALL`, and portals going with `COMMIT`, `ROLLBACK`, `ROLLBACK TO`.
//! - A portal is resolved to its statement when it is bound, as the target
//!   does, so re-preparing a name later cannot change what it runs.
//! - Statements created with SQL `PREPARE` are opaque: the agent never saw
//!   them through Parse, so binding them is refused.
//! - What a session's named statements and portals hold is bounded
//!   (`--max-prepared-bytes`): the agent's memory is shared by every
//!   session, so a client that prepares without end is refused (54000)
//!   rather than allowed to grow the agent without bound. So are all of
//!   a subject's sessions together (`--max-subject-prepared-bytes`) and all
//!   the agent's (`--max-total-prepared-bytes`). The bound counts
//!   confirmed names and those sent and not yet answered, each by its
//!   text, parameters and a fixed bookkeeping cost; a portal also by the
//!   statement it runs, which it keeps alive after a Close. The unnamed
//!   statement and portal are not counted: there is one of each, replaced
//!   by the next, and their size is bounded by `--max-message-bytes` (a
//!   large value bound through them must not be refused). The parameter
//!   types the target describes for a statement (to record binary
//!   parameters readably) are kept only within the statement's own count
//!   ([`Prepared::describe`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use sluice_policy::PreparedChange;

/// A statement prepared through Parse, as judged when it was parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub text: String,
    pub rule: String,
    pub row_limit: Option<u64>,
    /// What executing it does to the session's prepared statements.
    pub changes: Vec<PreparedChange>,
    /// Set when executing it needs approval (see `judge::Verdict`).
    pub approval: Option<Arc<super::judge::Verdict>>,
    /// Parameter type OIDs given at Parse (to render binary parameters).
    pub param_types: Vec<i32>,
    /// Parameter type OIDs the target described (ParameterDescription), set
    /// once it answers a Describe of the statement: drivers that declare
    /// no types at Parse (asyncpg, tokio-postgres) send binary values of
    /// the types the target inferred. See [`Prepared::describe`].
    pub described_types: OnceLock<Vec<i32>>,
    /// Tables it reads (for masking's strict mode).
    pub tables_read: Vec<String>,
    /// Its `COPY ... TO STDOUT`, if it is one (for masking).
    pub copy_out: Vec<sluice_policy::CopyOut>,
    /// How many `COPY ... FROM STDIN` it has (one at most).
    pub copy_in: usize,
}

/// Longest name of a prepared statement or portal: PostgreSQL keeps only
/// the first 63 bytes (NAMEDATALEN - 1), so two longer names the agent
/// would tell apart are one name on the target.
const MAX_NAME_BYTES: usize = 63;

fn fits_the_target(name: &str) -> Result<(), Refusal> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::name(
            "42622",
            format!(
                "the name \"{}...\" is longer than PostgreSQL's {MAX_NAME_BYTES} bytes; use a shorter name",
                name.chars().take(20).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// Most portal names a session remembers as forgotten (see
/// `Names::forgotten`).
const MAX_FORGOTTEN: usize = 256;

/// What a FETCH or MOVE of a portal name runs.
#[derive(Debug)]
pub enum FetchTarget {
    /// A portal bound through the protocol: its statement.
    Bound(Arc<Prepared>),
    /// A portal bound through the protocol that the agent forgot while the
    /// target may keep it: a statement the agent can no longer name.
    Forgotten,
    /// None the protocol bound: an SQL cursor (its DECLARE was judged), or
    /// nothing.
    Cursor,
}

/// Bytes counted for each name besides the text and parameters it holds:
/// the map entry, the `Prepared` or `Portal` and its allocations.
const NAME_OVERHEAD: usize = 256;

/// What an entry whose name is `name_len` bytes long, holding `weight`
/// bytes, counts against the budget: nothing for the unnamed statement or
/// portal (see the module docs; their weight is not even computed, they
/// are on every statement's path).
fn charge(name_len: usize, weight: impl FnOnce() -> usize) -> usize {
    if name_len == 0 {
        0
    } else {
        name_len + weight()
    }
}

impl Prepared {
    /// Records the parameter types the target described for it. Kept only
    /// when they take no more memory than the statement is charged (they
    /// are not charged themselves: they arrive after the statement is
    /// counted, maybe once it is gone), which a statement whose target
    /// could infer each type always meets: a parameter the statement
    /// references takes at least its `$n` in the text, one it declares
    /// four bytes in `param_types`. So they at most double what a name
    /// holds.
    pub fn describe(&self, types: Vec<i32>) {
        if types.len() * 4 <= self.weight() {
            let _ = self.described_types.set(types);
        }
    }

    /// Each parameter's type, to render binary values in the audit trail:
    /// as the target described them, else as Parse declared them (0 where
    /// unknown).
    pub fn audit_types(&self) -> &[i32] {
        self.described_types.get().unwrap_or(&self.param_types)
    }

    /// Memory it holds, as counted against the session's budget.
    fn weight(&self) -> usize {
        NAME_OVERHEAD
            + self.text.len()
            + self.rule.len()
            + self.param_types.len() * 4
            + self.tables_read.iter().map(String::len).sum::<usize>()
    }
}

/// A bound portal: the statement it runs and its parameters (for the audit
/// trail).
#[derive(Debug, PartialEq, Eq)]
pub struct Portal {
    pub statement: Arc<Prepared>,
    pub params: Vec<String>,
    /// SHA-256 of the parameters exactly as bound (see
    /// `Bind::feed_params_exact`): what a one-time approval is bound to.
    pub params_digest: [u8; 32],
    /// Result format codes the client asked for.
    pub result_formats: Vec<i16>,
}

impl Portal {
    /// Memory it holds, with its statement's (which it keeps alive even
    /// once the statement's name is closed or reused).
    fn weight(&self) -> usize {
        NAME_OVERHEAD
            + self.params.iter().map(String::len).sum::<usize>()
            + self.result_formats.len() * 2
            + self.statement.weight()
    }
}

#[derive(Debug, Clone)]
enum Statement {
    Known(Arc<Prepared>),
    /// Created by SQL `PREPARE`.
    Opaque,
}

impl Statement {
    fn weight(&self) -> usize {
        match self {
            Self::Known(p) => p.weight(),
            Self::Opaque => NAME_OVERHEAD,
        }
    }
}

#[derive(Debug, Clone)]
enum Addition {
    Statement(String, Arc<Prepared>),
    Portal(String, Arc<Portal>),
}

impl Addition {
    fn weight(&self) -> usize {
        match self {
            Self::Statement(name, p) => charge(name.len(), || p.weight()),
            Self::Portal(name, p) => charge(name.len(), || p.weight()),
        }
    }
}

#[derive(Debug)]
struct Pending {
    cycle: u64,
    addition: Addition,
    /// Removed again after it was sent: not applied when confirmed.
    cancelled: bool,
}

/// A change planned by a batch, applied when the batch is forwarded.
#[derive(Debug)]
pub enum Op {
    Add(AdditionOp),
    RemoveStatement(String),
    RemoveAllStatements,
    Opaque(String),
    RemovePortal(String),
    RemoveAllPortals,
}

/// Opaque wrapper so callers cannot build additions by hand.
#[derive(Debug)]
pub struct AdditionOp(Addition);

/// Why a Parse, Bind or Execute cannot be allowed; safe to show the
/// client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// What the name holds (or that it holds nothing) does not allow it;
    /// the SQLSTATE PostgreSQL would answer with.
    Name { sqlstate: &'static str, why: String },
    /// The names `scope` covers would take more than `budget` bytes.
    OverBudget { budget: usize, scope: Scope },
}

/// Whose names a budget covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This session's (`--max-prepared-bytes`).
    Session,
    /// All its subject's sessions' (`--max-subject-prepared-bytes`).
    Subject,
    /// All the agent's sessions' (`--max-total-prepared-bytes`).
    Agent,
}

impl Refusal {
    fn name(sqlstate: &'static str, why: String) -> Self {
        Self::Name { sqlstate, why }
    }

    /// The SQLSTATE the client is answered with.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::Name { sqlstate, .. } => sqlstate,
            Self::OverBudget { .. } => "54000",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name { why, .. } => f.write_str(why),
            Self::OverBudget {
                budget,
                scope: Scope::Session,
            } => write!(
                f,
                "this session's prepared statements and portals would take more than the {budget} bytes of agent memory a session may hold (--max-prepared-bytes)"
            ),
            Self::OverBudget {
                budget,
                scope: Scope::Subject,
            } => write!(
                f,
                "the prepared statements and portals of all this identity's sessions through this agent would take more than the {budget} bytes they may hold together (--max-subject-prepared-bytes); close some, or end idle sessions"
            ),
            Self::OverBudget {
                budget,
                scope: Scope::Agent,
            } => write!(
                f,
                "the prepared statements and portals of all sessions through this agent would take more than the {budget} bytes they may hold together (--max-total-prepared-bytes); try again once others have closed theirs"
            ),
        }
    }
}

#[derive(Debug)]
pub struct Names {
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Arc<Portal>>,
    /// Portals the agent forgot while the target may keep them (`ROLLBACK
    /// TO` drops only those bound after its savepoint; a confirmation that
    /// did not match what was sent), until the transaction ends: a FETCH
    /// through one would run a statement the agent can no longer name. At
    /// most [`MAX_FORGOTTEN`] names (portal names are at most 63 bytes).
    forgotten: HashSet<String>,
    /// More than [`MAX_FORGOTTEN`] were forgotten: every FETCH is refused
    /// until the transaction ends.
    forgot_too_many: bool,
    pending: VecDeque<Pending>,
    /// Bytes `statements` and `portals` hold (see `NAME_OVERHEAD`).
    held: usize,
    /// Bytes the additions in `pending` hold.
    pending_held: usize,
    /// What `held` and `pending_held` together may reach.
    budget: usize,
    /// What the names of the sessions it shares with (all its subject's,
    /// all the agent's) may reach together.
    shared: Vec<Share>,
}

/// One session's part in what many sessions' names hold together.
#[derive(Debug)]
struct Share {
    scope: Scope,
    /// Every session's `held + pending_held`, as last reported.
    used: Arc<AtomicUsize>,
    limit: usize,
    /// This session's part of `used`.
    reported: usize,
}

impl Drop for Names {
    fn drop(&mut self) {
        for s in &self.shared {
            s.used.fetch_sub(s.reported, Ordering::AcqRel);
        }
    }
}

impl Default for Names {
    /// Unbounded.
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl Names {
    /// A session's view, holding at most `budget` bytes of names.
    pub fn new(budget: usize) -> Self {
        Self {
            statements: HashMap::new(),
            portals: HashMap::new(),
            forgotten: HashSet::new(),
            forgot_too_many: false,
            pending: VecDeque::new(),
            held: 0,
            pending_held: 0,
            budget,
            shared: Vec::new(),
        }
    }

    /// Also holds the session to `limit` bytes for the names of all the
    /// sessions `scope` covers together, counted in `used`.
    #[must_use]
    pub fn with_shared_budget(
        mut self,
        scope: Scope,
        used: Arc<AtomicUsize>,
        limit: usize,
    ) -> Self {
        self.shared.push(Share {
            scope,
            used,
            limit,
            reported: 0,
        });
        self
    }

    /// Brings this session's part of the shared counts up to date.
    fn report(&mut self) {
        let now = self.held + self.pending_held;
        for s in self.shared.iter_mut().filter(|s| s.reported != now) {
            if now > s.reported {
                s.used.fetch_add(now - s.reported, Ordering::AcqRel);
            } else {
                s.used.fetch_sub(s.reported - now, Ordering::AcqRel);
            }
            s.reported = now;
        }
    }

    /// Starts planning a batch against the current view.
    pub fn plan(&self) -> Plan<'_> {
        Plan {
            names: self,
            ops: Vec::new(),
            added: 0,
        }
    }

    /// Whether SQL `PREPARE`s (`changes`) leave the session within its
    /// budget.
    pub fn sql_fits(&self, changes: &[PreparedChange]) -> Result<(), Refusal> {
        let added = changes
            .iter()
            .map(|c| match c {
                PreparedChange::Prepare(name) => charge(name.len(), || NAME_OVERHEAD),
                _ => 0,
            })
            .sum();
        self.fits(added)
    }

    fn fits(&self, added: usize) -> Result<(), Refusal> {
        let total = self
            .held
            .saturating_add(self.pending_held)
            .saturating_add(added);
        if total > self.budget {
            return Err(Refusal::OverBudget {
                budget: self.budget,
                scope: Scope::Session,
            });
        }
        for s in &self.shared {
            // A soft limit: sessions planning at once may each pass this
            // check before either reports what it added.
            let others = s.used.load(Ordering::Acquire).saturating_sub(s.reported);
            if others.saturating_add(total) > s.limit {
                return Err(Refusal::OverBudget {
                    budget: s.limit,
                    scope: s.scope,
                });
            }
        }
        Ok(())
    }

    fn insert_statement(&mut self, name: String, statement: Statement) {
        let len = name.len();
        self.held += charge(len, || statement.weight());
        // A replaced entry had the same name.
        if let Some(old) = self.statements.insert(name, statement) {
            self.held -= charge(len, || old.weight());
        }
        self.report();
    }

    fn remove_statement(&mut self, name: &str) {
        if let Some(old) = self.statements.remove(name) {
            self.held -= charge(name.len(), || old.weight());
        }
        self.report();
    }

    fn insert_portal(&mut self, name: String, portal: Arc<Portal>) {
        let len = name.len();
        self.held += charge(len, || portal.weight());
        if let Some(old) = self.portals.insert(name, portal) {
            self.held -= charge(len, || old.weight());
        }
        self.report();
    }

    fn remove_portal(&mut self, name: &str) {
        if let Some(old) = self.portals.remove(name) {
            self.held -= charge(name.len(), || old.weight());
        }
        self.report();
    }

    fn pop_pending(&mut self) -> Option<Pending> {
        let p = self.pending.pop_front()?;
        self.pending_held -= p.addition.weight();
        self.report();
        Some(p)
    }

    /// Applies a forwarded batch's planned changes; its additions belong to
    /// sync cycle `cycle`.
    pub fn apply(&mut self, ops: Vec<Op>, cycle: u64) {
        for op in ops {
            match op {
                Op::Add(AdditionOp(addition)) => {
                    self.pending_held += addition.weight();
                    self.pending.push_back(Pending {
                        cycle,
                        addition,
                        cancelled: false,
                    });
                }
                Op::RemoveStatement(name) => {
                    self.remove_statement(&name);
                    self.cancel(|a| matches!(a, Addition::Statement(n, _) if *n == name));
                }
                Op::RemoveAllStatements => {
                    let freed: usize = self
                        .statements
                        .drain()
                        .map(|(name, s)| charge(name.len(), || s.weight()))
                        .sum();
                    self.held -= freed;
                    self.cancel(|a| matches!(a, Addition::Statement(..)));
                }
                Op::Opaque(name) => {
                    self.cancel(|a| matches!(a, Addition::Statement(n, _) if *n == name));
                    self.insert_statement(name, Statement::Opaque);
                }
                Op::RemovePortal(name) => {
                    // The Close (or `CLOSE`) may never run: after an error
                    // the target skips it, and a savepoint rolled back to
                    // keeps the portal open. Until the transaction ends, a
                    // FETCH through the name is refused rather than read
                    // as a SQL cursor's.
                    let bound = self.portals.contains_key(&name)
                        || self.pending_portals().any(|p| p == name);
                    if bound {
                        self.note_forgotten(vec![name.clone()]);
                    }
                    self.remove_portal(&name);
                    self.cancel(|a| matches!(a, Addition::Portal(n, _) if *n == name));
                }
                Op::RemoveAllPortals => {
                    let pending: Vec<String> = self.pending_portals().collect();
                    self.note_forgotten(pending);
                    self.forget_portals();
                    self.cancel(|a| matches!(a, Addition::Portal(..)));
                }
            }
        }
        self.report();
    }

    fn cancel(&mut self, which: impl Fn(&Addition) -> bool) {
        for p in &mut self.pending {
            if which(&p.addition) {
                p.cancelled = true;
            }
        }
    }

    /// ParseComplete from the target. `false` when it does not match what
    /// was sent (the view is then reset: everything is unknown).
    pub fn parse_complete(&mut self) -> bool {
        match self.pop_pending() {
            Some(Pending {
                addition: Addition::Statement(name, prepared),
                cancelled,
                ..
            }) => {
                if !cancelled {
                    self.insert_statement(name, Statement::Known(prepared));
                }
                true
            }
            _ => {
                self.reset();
                false
            }
        }
    }

    /// BindComplete from the target: the portal it confirms, or `None` when
    /// it does not match what was sent (the view is then reset).
    pub fn bind_complete(&mut self) -> Option<String> {
        match self.pop_pending() {
            Some(Pending {
                addition: Addition::Portal(name, portal),
                cancelled,
                ..
            }) => {
                if !cancelled {
                    self.insert_portal(name.clone(), portal);
                }
                Some(name)
            }
            _ => {
                self.reset();
                None
            }
        }
    }

    /// An error or the end of sync cycle `cycle` at the target: its
    /// unanswered additions were skipped or failed.
    pub fn cycle_ended(&mut self, cycle: u64) {
        let mut dropped = 0;
        self.pending.retain(|p| {
            let keep = p.cycle != cycle;
            if !keep {
                dropped += p.addition.weight();
            }
            keep
        });
        self.pending_held -= dropped;
        self.report();
    }

    /// Cycle numbers after `cycle` move down by one (a Sync the target
    /// ignored was counted).
    pub fn shift_cycles_after(&mut self, cycle: u64) {
        for p in self.pending.iter_mut().filter(|p| p.cycle > cycle) {
            p.cycle -= 1;
        }
    }

    /// Forgets confirmed portals: the transaction ended, so the target has
    /// none either.
    pub fn clear_portals(&mut self) {
        self.forget_portals();
        self.forgotten.clear();
        self.forgot_too_many = false;
    }

    /// Forgets confirmed portals, which the target may have dropped, or
    /// may not.
    fn forget_portals(&mut self) {
        let names: Vec<String> = self.portals.keys().cloned().collect();
        self.note_forgotten(names);
        let freed: usize = self
            .portals
            .drain()
            .map(|(name, p)| charge(name.len(), || p.weight()))
            .sum();
        self.held -= freed;
        self.report();
    }

    /// Names of portals sent and not yet confirmed.
    fn pending_portals(&self) -> impl Iterator<Item = String> + '_ {
        self.pending.iter().filter_map(|p| match &p.addition {
            Addition::Portal(name, _) => Some(name.clone()),
            Addition::Statement(..) => None,
        })
    }

    fn note_forgotten(&mut self, names: Vec<String>) {
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            if self.forgotten.len() >= MAX_FORGOTTEN {
                self.forgot_too_many = true;
                return;
            }
            self.forgotten.insert(name);
        }
    }

    /// Forgets everything: every name is unknown until parsed again.
    pub fn reset(&mut self) {
        let pending: Vec<String> = self.pending_portals().collect();
        self.note_forgotten(pending);
        let portals: Vec<String> = self.portals.keys().cloned().collect();
        self.note_forgotten(portals);
        self.statements.clear();
        self.portals.clear();
        self.pending.clear();
        self.held = 0;
        self.pending_held = 0;
        self.report();
    }

    fn statement(&self, name: &str) -> Option<Statement> {
        for p in self.pending.iter().rev() {
            if let Addition::Statement(n, s) = &p.addition
                && n == name
                && !p.cancelled
            {
                return Some(Statement::Known(s.clone()));
            }
        }
        self.statements.get(name).cloned()
    }

    fn portal(&self, name: &str) -> Option<Arc<Portal>> {
        for p in self.pending.iter().rev() {
            if let Addition::Portal(n, portal) = &p.addition
                && n == name
                && !p.cancelled
            {
                return Some(portal.clone());
            }
        }
        self.portals.get(name).cloned()
    }
}

/// The changes one batch would make, checked against the view as it
/// would be after each message.
pub struct Plan<'a> {
    names: &'a Names,
    ops: Vec<Op>,
    /// Bytes its additions hold.
    added: usize,
}

impl Plan<'_> {
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Refused when the name is taken (see the module docs) or the session
    /// would hold more than its budget.
    pub fn parse(&mut self, name: &str, prepared: Arc<Prepared>) -> Result<(), Refusal> {
        fits_the_target(name)?;
        if !name.is_empty() && self.statement(name).is_some() {
            return Err(Refusal::name(
                "42P05",
                format!("prepared statement \"{name}\" already exists; Close it first"),
            ));
        }
        self.add(Addition::Statement(name.to_owned(), prepared))
    }

    /// Plans `addition` if the session stays within its budget. Removals
    /// planned in the same batch are not credited: the budget may refuse a
    /// batch that would just fit.
    fn add(&mut self, addition: Addition) -> Result<(), Refusal> {
        let weight = addition.weight();
        self.names.fits(self.added.saturating_add(weight))?;
        self.added += weight;
        self.ops.push(Op::Add(AdditionOp(addition)));
        Ok(())
    }

    /// `params` renders the Bind's parameters given the statement's
    /// parameter types. Gives the statement bound.
    pub fn bind(
        &mut self,
        portal: &str,
        statement: &str,
        params: impl FnOnce(&[i32]) -> Vec<String>,
        params_digest: [u8; 32],
        result_formats: Vec<i16>,
    ) -> Result<Arc<Prepared>, Refusal> {
        fits_the_target(portal)?;
        fits_the_target(statement)?;
        let prepared = match self.statement(statement) {
            Some(Statement::Known(p)) => p,
            Some(Statement::Opaque) => {
                return Err(Refusal::name(
                    "42501",
                    format!(
                        "prepared statement \"{statement}\" was created with SQL PREPARE, which sluice cannot judge at Bind; prepare it with the protocol's Parse or run EXECUTE"
                    ),
                ));
            }
            None => {
                return Err(Refusal::name(
                    "26000",
                    format!(
                        "prepared statement \"{statement}\" does not exist on this session as far as sluice knows; prepare it with Parse"
                    ),
                ));
            }
        };
        if !portal.is_empty() && self.portal(portal).is_some() {
            return Err(Refusal::name(
                "42P03",
                format!("portal \"{portal}\" already exists; Close it first"),
            ));
        }
        let addition = Addition::Portal(
            portal.to_owned(),
            Arc::new(Portal {
                params: params(prepared.audit_types()),
                params_digest,
                statement: prepared.clone(),
                result_formats,
            }),
        );
        self.add(addition)?;
        Ok(prepared)
    }

    /// The portal an Execute runs; applies what running it does to the
    /// session's prepared statements.
    pub fn execute(&mut self, portal: &str) -> Result<Arc<Portal>, Refusal> {
        fits_the_target(portal)?;
        let found = self.portal(portal).ok_or_else(|| {
            Refusal::name("34000", format!(
                "portal \"{portal}\" was not bound through this session's protocol; use Bind (or FETCH for cursors)"
            ))
        })?;
        self.sql(&found.statement.changes);
        Ok(found)
    }

    pub fn close(&mut self, kind: u8, name: &str) {
        self.ops.push(if kind == b'S' {
            Op::RemoveStatement(name.to_owned())
        } else {
            Op::RemovePortal(name.to_owned())
        });
    }

    /// Applies what SQL statements do to the session's prepared statements.
    pub fn sql(&mut self, changes: &[PreparedChange]) {
        for change in changes {
            let op = match change {
                PreparedChange::Prepare(name) => Op::Opaque(name.clone()),
                PreparedChange::Deallocate(name) => Op::RemoveStatement(name.clone()),
                PreparedChange::DeallocateAll => Op::RemoveAllStatements,
                PreparedChange::ClosePortal(name) => Op::RemovePortal(name.clone()),
                PreparedChange::CloseAllPortals => Op::RemoveAllPortals,
                PreparedChange::DiscardAll => {
                    self.ops.push(Op::RemoveAllStatements);
                    Op::RemoveAllPortals
                }
            };
            self.ops.push(op);
        }
    }

    /// The statement a Describe of statement `name` describes, if the
    /// agent knows it.
    pub fn statement_described(&self, name: &str) -> Option<Arc<Prepared>> {
        match self.statement(name)? {
            Statement::Known(p) => Some(p),
            Statement::Opaque => None,
        }
    }

    /// What a FETCH or MOVE through portal `name` runs.
    pub fn fetch_target(&self, name: &str) -> FetchTarget {
        match self.portal(name) {
            Some(p) => FetchTarget::Bound(p.statement.clone()),
            None if self.names.forgot_too_many || self.names.forgotten.contains(name) => {
                FetchTarget::Forgotten
            }
            None => FetchTarget::Cursor,
        }
    }

    fn statement(&self, name: &str) -> Option<Statement> {
        for op in self.ops.iter().rev() {
            match op {
                Op::Add(AdditionOp(Addition::Statement(n, p))) if n == name => {
                    return Some(Statement::Known(p.clone()));
                }
                Op::RemoveStatement(n) if n == name => return None,
                Op::RemoveAllStatements => return None,
                Op::Opaque(n) if n == name => return Some(Statement::Opaque),
                _ => {}
            }
        }
        self.names.statement(name)
    }

    fn portal(&self, name: &str) -> Option<Arc<Portal>> {
        for op in self.ops.iter().rev() {
            match op {
                Op::Add(AdditionOp(Addition::Portal(n, p))) if n == name => {
                    return Some(p.clone());
                }
                Op::RemovePortal(n) if n == name => return None,
                Op::RemoveAllPortals => return None,
                _ => {}
            }
        }
        self.names.portal(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(text: &str) -> Arc<Prepared> {
        Arc::new(Prepared {
            text: text.into(),
            rule: "p/r".into(),
            row_limit: None,
            changes: Vec::new(),
            approval: None,
            param_types: Vec::new(),
            described_types: OnceLock::new(),
            tables_read: Vec::new(),
            copy_out: Vec::new(),
            copy_in: 0,
        })
    }

    /// Plans and forwards one batch: Parse `name`=`text`, Bind portal "" to it.
    fn parse_bind(names: &mut Names, name: &str, text: &str, cycle: u64) {
        let mut plan = names.plan();
        plan.parse(name, stmt(text)).unwrap();
        plan.bind("", name, |_| Vec::new(), [0; 32], Vec::new())
            .unwrap();
        let ops = plan.into_ops();
        names.apply(ops, cycle);
    }

    #[test]
    fn described_parameter_types_are_kept_within_the_statement_s_count() {
        let p = stmt("select $1, $2");
        assert!(p.audit_types().is_empty());
        p.describe(vec![23, 25]);
        assert_eq!(p.audit_types(), [23, 25]);
        // Its description does not change.
        p.describe(vec![20, 20]);
        assert_eq!(p.audit_types(), [23, 25]);
        // More than the statement is counted for is not kept.
        let small = stmt("select $1");
        small.describe(vec![23; 10_000]);
        assert!(small.audit_types().is_empty());
    }

    #[test]
    fn a_portal_runs_what_was_bound_even_if_the_name_is_reparsed() {
        let mut names = Names::default();
        parse_bind(&mut names, "", "select 1", 0);
        assert!(names.parse_complete());
        assert_eq!(names.bind_complete().as_deref(), Some(""));
        // Re-parse the unnamed statement without binding again.
        let mut plan = names.plan();
        plan.parse("", stmt("select 2")).unwrap();
        let p = plan.execute("").unwrap();
        assert_eq!(p.statement.text, "select 1");
    }

    #[test]
    fn additions_count_only_once_confirmed_and_errors_drop_them() {
        let mut names = Names::default();
        let mut plan = names.plan();
        plan.parse("s1", stmt("select 1")).unwrap();
        let ops = plan.into_ops();
        names.apply(ops, 0);
        // The target reports an error for cycle 0: no ParseComplete.
        names.cycle_ended(0);
        let mut plan = names.plan();
        assert!(
            plan.bind("", "s1", |_| Vec::new(), [0; 32], Vec::new())
                .is_err()
        );
    }

    /// Parses and confirms `name`, then binds and confirms `portal`.
    fn bound(names: &mut Names, name: &str, text: &str, portal: &str) {
        let mut plan = names.plan();
        plan.parse(name, stmt(text)).unwrap();
        plan.bind(portal, name, |_| Vec::new(), [0; 32], Vec::new())
            .unwrap();
        let ops = plan.into_ops();
        names.apply(ops, 0);
        assert!(names.parse_complete());
        assert_eq!(names.bind_complete().as_deref(), Some(portal));
    }

    #[test]
    fn a_name_believed_taken_is_refused_not_sent() {
        let mut names = Names::default();
        bound(&mut names, "s1", "select 1", "p");
        let mut plan = names.plan();
        let err = plan.parse("s1", stmt("select 2")).unwrap_err();
        assert_eq!(err.sqlstate(), "42P05");
        // The target may have dropped portal p unseen (a function closing
        // it as a cursor): binding p again must not reach it, or p would
        // run one statement while the agent judged another.
        let mut plan = names.plan();
        plan.parse("s2", stmt("delete from t")).unwrap();
        let err = plan
            .bind("p", "s2", |_| Vec::new(), [0; 32], Vec::new())
            .unwrap_err();
        assert_eq!(err.sqlstate(), "42P03");
        assert_eq!(plan.execute("p").unwrap().statement.text, "select 1");
        // The unnamed ones are replaced, as on the target.
        let mut plan = names.plan();
        plan.parse("", stmt("select 3")).unwrap();
        plan.parse("", stmt("select 4")).unwrap();
        plan.bind("", "", |_| Vec::new(), [0; 32], Vec::new())
            .unwrap();
        plan.bind("", "", |_| Vec::new(), [0; 32], Vec::new())
            .unwrap();
        assert_eq!(plan.execute("").unwrap().statement.text, "select 4");
        let err = plan.execute("nowhere").unwrap_err();
        assert_eq!(err.sqlstate(), "34000");
    }

    #[test]
    fn sql_close_and_the_end_of_a_transaction_forget_portals() {
        for change in [
            PreparedChange::ClosePortal("p".into()),
            PreparedChange::CloseAllPortals,
            PreparedChange::DiscardAll,
        ] {
            let mut names = Names::default();
            bound(&mut names, "s1", "select 1", "p");
            let mut plan = names.plan();
            plan.sql(std::slice::from_ref(&change));
            assert!(plan.execute("p").is_err(), "{change:?}");
            let ops = plan.into_ops();
            names.apply(ops, 1);
            // Gone from the agent's view: p may be bound again, and what
            // it runs is what the agent judges.
            let mut plan = names.plan();
            plan.parse("s2", stmt("select 2")).unwrap();
            plan.bind("p", "s2", |_| Vec::new(), [0; 32], Vec::new())
                .unwrap();
            assert_eq!(plan.execute("p").unwrap().statement.text, "select 2");
            assert!(
                matches!(plan.fetch_target("p"), FetchTarget::Bound(s) if s.text == "select 2")
            );
        }
    }

    #[test]
    fn a_closed_portal_is_not_fetched_as_a_cursor_until_the_transaction_ends() {
        // The Close may not have run (skipped after an error) and a
        // rolled-back savepoint keeps the portal: FETCH p must not be read
        // as a SQL cursor's, which is judged as a plain fetch.
        let change = PreparedChange::ClosePortal("p".into());
        let mut names = Names::default();
        bound(&mut names, "s1", "delete from t", "p");
        let mut plan = names.plan();
        plan.sql(std::slice::from_ref(&change));
        let ops = plan.into_ops();
        names.apply(ops, 1);
        let plan = names.plan();
        assert!(matches!(plan.fetch_target("p"), FetchTarget::Forgotten));
        // A name never bound through the protocol is a cursor's.
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::ClosePortal("c".into())]);
        let ops = plan.into_ops();
        names.apply(ops, 2);
        assert!(matches!(
            names.plan().fetch_target("c"),
            FetchTarget::Cursor
        ));
        names.clear_portals();
        assert!(matches!(
            names.plan().fetch_target("p"),
            FetchTarget::Cursor
        ));
    }

    #[test]
    fn a_portal_forgotten_while_the_target_may_keep_it_is_never_fetched_unjudged() {
        let mut names = Names::default();
        bound(&mut names, "s1", "delete from t", "p");
        // ROLLBACK TO: the agent cannot tell whether p was bound before the
        // savepoint (kept) or after it (dropped).
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::CloseAllPortals]);
        let ops = plan.into_ops();
        names.apply(ops, 1);
        let plan = names.plan();
        assert!(matches!(plan.fetch_target("p"), FetchTarget::Forgotten));
        assert!(matches!(plan.fetch_target("c"), FetchTarget::Cursor));
        // The transaction ended: the target has no portals either.
        names.clear_portals();
        assert!(matches!(
            names.plan().fetch_target("p"),
            FetchTarget::Cursor
        ));
        // Forgetting is bounded: past the limit, every name counts.
        for i in 0..=MAX_FORGOTTEN {
            names.note_forgotten(vec![format!("p{i}")]);
        }
        assert!(matches!(
            names.plan().fetch_target("never-bound"),
            FetchTarget::Forgotten
        ));
        assert!(names.forgotten.len() <= MAX_FORGOTTEN);
    }

    #[test]
    fn sql_deallocate_and_discard_forget_names_at_once() {
        let mut names = Names::default();
        for (i, n) in ["a", "b"].into_iter().enumerate() {
            let mut plan = names.plan();
            plan.parse(n, stmt("select 1")).unwrap();
            let ops = plan.into_ops();
            names.apply(ops, i as u64);
            assert!(names.parse_complete());
        }
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::Deallocate("a".into())]);
        let ops = plan.into_ops();
        names.apply(ops, 2);
        let mut plan = names.plan();
        assert!(
            plan.bind("", "a", |_| Vec::new(), [0; 32], Vec::new())
                .is_err()
        );
        assert!(
            plan.bind("", "b", |_| Vec::new(), [0; 32], Vec::new())
                .is_ok()
        );
        // After DEALLOCATE a, Parse a with a new text is planned.
        plan.parse("a", stmt("select 2")).unwrap();
        plan.bind("x", "a", |_| Vec::new(), [0; 32], Vec::new())
            .unwrap();
        assert_eq!(plan.execute("x").unwrap().statement.text, "select 2");
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::DeallocateAll]);
        assert!(
            plan.bind("", "b", |_| Vec::new(), [0; 32], Vec::new())
                .is_err()
        );
    }

    #[test]
    fn sql_prepare_makes_the_name_opaque() {
        let mut names = Names::default();
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::Prepare("s1".into())]);
        let ops = plan.into_ops();
        names.apply(ops, 0);
        let mut plan = names.plan();
        // s1 exists on the target: Parse s1 is refused, and the opaque
        // statement cannot be bound.
        assert_eq!(
            plan.parse("s1", stmt("select 1")).unwrap_err().sqlstate(),
            "42P05"
        );
        let err = plan
            .bind("", "s1", |_| Vec::new(), [0; 32], Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("SQL PREPARE"), "{err}");
    }

    #[test]
    fn close_cancels_an_unconfirmed_parse() {
        let mut names = Names::default();
        let mut plan = names.plan();
        plan.parse("s1", stmt("select 1")).unwrap();
        plan.close(b'S', "s1");
        let ops = plan.into_ops();
        names.apply(ops, 0);
        assert!(names.parse_complete());
        let mut plan = names.plan();
        assert!(
            plan.bind("", "s1", |_| Vec::new(), [0; 32], Vec::new())
                .is_err()
        );
    }

    #[test]
    fn a_confirmation_that_does_not_match_resets_the_view() {
        let mut names = Names::default();
        parse_bind(&mut names, "s1", "select 1", 0);
        assert!(names.parse_complete());
        assert!(names.bind_complete().is_some());
        assert!(!names.parse_complete());
        let mut plan = names.plan();
        assert!(
            plan.bind("", "s1", |_| Vec::new(), [0; 32], Vec::new())
                .is_err()
        );
        assert!(plan.execute("").is_err());
    }

    /// `held` and `pending_held` as recounted from scratch.
    fn recount(names: &Names) -> (usize, usize) {
        let held = names
            .statements
            .iter()
            .map(|(n, s)| charge(n.len(), || s.weight()))
            .chain(
                names
                    .portals
                    .iter()
                    .map(|(n, p)| charge(n.len(), || p.weight())),
            )
            .sum();
        let pending = names.pending.iter().map(|p| p.addition.weight()).sum();
        (held, pending)
    }

    #[test]
    fn what_a_session_holds_is_counted_through_every_change() {
        let mut names = Names::default();
        let check = |names: &Names| assert_eq!((names.held, names.pending_held), recount(names));
        parse_bind(&mut names, "s1", "select 1", 0);
        check(&names);
        assert!(names.parse_complete());
        assert!(names.bind_complete().is_some());
        check(&names);
        // The unnamed statement and portal are replaced, not added to.
        for cycle in 1..4 {
            parse_bind(&mut names, "", "select 2", cycle);
            assert!(names.parse_complete());
            assert!(names.bind_complete().is_some());
            check(&names);
        }
        let mut plan = names.plan();
        // SQL PREPARE over a name replaces what it held.
        plan.sql(&[PreparedChange::Prepare("s1".into())]);
        let ops = plan.into_ops();
        names.apply(ops, 4);
        check(&names);
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::Prepare("opaque".into())]);
        plan.close(b'S', "s1");
        let ops = plan.into_ops();
        names.apply(ops, 4);
        check(&names);
        parse_bind(&mut names, "s2", "select 3", 5);
        check(&names);
        names.cycle_ended(5);
        check(&names);
        names.clear_portals();
        check(&names);
        let mut plan = names.plan();
        plan.sql(&[PreparedChange::DeallocateAll]);
        let ops = plan.into_ops();
        names.apply(ops, 6);
        assert_eq!((names.held, names.pending_held), (0, 0));
    }

    #[test]
    fn a_session_over_its_budget_is_refused_until_it_closes_names() {
        let text = "x".repeat(1000);
        let one = "s0".len() + stmt(&text).weight();
        let mut names = Names::new(3 * one);
        for (cycle, name) in ["s0", "s1", "s2"].into_iter().enumerate() {
            let mut plan = names.plan();
            plan.parse(name, stmt(&text)).unwrap();
            let ops = plan.into_ops();
            names.apply(ops, cycle as u64);
        }
        // Sent and not yet answered counts as held.
        let mut plan = names.plan();
        assert_eq!(
            plan.parse("s3", stmt(&text)),
            Err(Refusal::OverBudget {
                budget: 3 * one,
                scope: Scope::Session
            })
        );
        // Nothing was planned, so nothing is refused by the target either.
        assert!(plan.into_ops().is_empty());
        for _ in 0..3 {
            assert!(names.parse_complete());
        }
        let mut plan = names.plan();
        assert!(plan.parse("s3", stmt(&text)).is_err());
        // A named portal counts too.
        assert!(matches!(
            plan.bind("p", "s0", |_| Vec::new(), [0; 32], Vec::new()),
            Err(Refusal::OverBudget { .. })
        ));
        let mut plan = names.plan();
        assert!(matches!(
            names.sql_fits(&[PreparedChange::Prepare("p".into())]),
            Err(Refusal::OverBudget { .. })
        ));
        plan.close(b'S', "s0");
        let ops = plan.into_ops();
        names.apply(ops, 3);
        let mut plan = names.plan();
        plan.parse("s3", stmt(&text)).unwrap();
    }

    /// Parses and sends `name` as `text`, as a session does.
    fn parse_named(names: &mut Names, name: &str, text: &str) -> Result<(), Refusal> {
        let mut plan = names.plan();
        plan.parse(name, stmt(text))?;
        let ops = plan.into_ops();
        names.apply(ops, 0);
        Ok(())
    }

    #[test]
    fn sessions_of_one_subject_share_a_budget_for_their_names() {
        let text = "x".repeat(1000);
        let one = "s0".len() + stmt(&text).weight();
        let used = Arc::new(AtomicUsize::new(0));
        let session =
            || Names::new(10 * one).with_shared_budget(Scope::Subject, Arc::clone(&used), 3 * one);
        let parse = |names: &mut Names, name: &str| parse_named(names, name, &text);
        let (mut a, mut b) = (session(), session());
        parse(&mut a, "s0").unwrap();
        parse(&mut a, "s1").unwrap();
        assert!(a.parse_complete() && a.parse_complete());
        parse(&mut b, "s0").unwrap();
        assert_eq!(used.load(Ordering::Acquire), 3 * one, "sent counts too");
        // Within its own budget, but not its subject's.
        assert_eq!(
            parse(&mut a, "s2"),
            Err(Refusal::OverBudget {
                budget: 3 * one,
                scope: Scope::Subject
            })
        );
        assert!(parse(&mut b, "s1").is_err());
        // What a session frees, and a session that ends, make room.
        a.cycle_ended(0);
        let mut plan = a.plan();
        plan.close(b'S', "s0");
        let ops = plan.into_ops();
        a.apply(ops, 1);
        parse(&mut b, "s1").unwrap();
        drop(a);
        assert_eq!(used.load(Ordering::Acquire), 2 * one);
        b.reset();
        assert_eq!(used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn sessions_of_every_subject_share_the_agents_budget_for_their_names() {
        let text = "x".repeat(1000);
        let one = "s0".len() + stmt(&text).weight();
        let all = Arc::new(AtomicUsize::new(0));
        let session = |subject: &Arc<AtomicUsize>| {
            Names::new(10 * one)
                .with_shared_budget(Scope::Subject, Arc::clone(subject), 2 * one)
                .with_shared_budget(Scope::Agent, Arc::clone(&all), 3 * one)
        };
        let parse = |names: &mut Names, name: &str| parse_named(names, name, &text);
        let (alice, bob) = (Arc::default(), Arc::default());
        let (mut a, mut b) = (session(&alice), session(&bob));
        parse(&mut a, "s0").unwrap();
        parse(&mut a, "s1").unwrap();
        parse(&mut b, "s0").unwrap();
        assert_eq!(all.load(Ordering::Acquire), 3 * one);
        // Within bob's share, but not the agent's.
        assert_eq!(
            parse(&mut b, "s1"),
            Err(Refusal::OverBudget {
                budget: 3 * one,
                scope: Scope::Agent
            })
        );
        assert!(
            Refusal::OverBudget {
                budget: 3 * one,
                scope: Scope::Agent
            }
            .to_string()
            .contains("--max-total-prepared-bytes")
        );
        // A session that ends makes room for everyone.
        drop(a);
        assert_eq!(
            (alice.load(Ordering::Acquire), all.load(Ordering::Acquire)),
            (0, one)
        );
        parse(&mut b, "s1").unwrap();
        assert_eq!(bob.load(Ordering::Acquire), 2 * one);
    }

    #[test]
    fn the_unnamed_statement_and_portal_are_never_refused_for_size() {
        // One of each, replaced by the next: a large value bound through
        // them (an upload, say) must not be refused.
        let mut names = Names::new(4096);
        let big = "v".repeat(64 * 1024);
        for cycle in 0..3 {
            let mut plan = names.plan();
            plan.parse("", stmt(&big)).unwrap();
            plan.bind("", "", |_| vec![big.clone()], [0; 32], Vec::new())
                .unwrap();
            let ops = plan.into_ops();
            names.apply(ops, cycle);
            assert!(names.parse_complete());
            assert!(names.bind_complete().is_some());
        }
        assert_eq!((names.held, names.pending_held), (0, 0));
    }

    #[test]
    fn a_named_portal_counts_the_statement_it_keeps_alive() {
        let text = "x".repeat(1000);
        let mut names = Names::default();
        parse_bind(&mut names, "s", &text, 0);
        assert!(names.parse_complete());
        assert!(names.bind_complete().is_some());
        let mut plan = names.plan();
        plan.bind("p", "s", |_| Vec::new(), [0; 32], Vec::new())
            .unwrap();
        plan.close(b'S', "s");
        let ops = plan.into_ops();
        names.apply(ops, 1);
        assert_eq!(names.bind_complete().as_deref(), Some("p"));
        // The statement's name is gone; its text lives on in the portal,
        // and is still counted.
        assert!(names.held > text.len(), "{}", names.held);
        assert_eq!((names.held, names.pending_held), recount(&names));
        names.clear_portals();
        assert_eq!(names.held, 0);
    }
}
