//! An authorised PostgreSQL session: the relay between client and target
//! that judges every request before it reaches the target.
//!
//! One task owns both connections and both outgoing buffers, so ordering
//! is simple to reason about: responses the agent makes up (a denial) are
//! queued behind whatever the target still owes the client.
//!
//! - Simple `Query`: every statement in the string is classified; any
//!   denial blocks the whole string, nothing is forwarded.
//! - Extended protocol: messages are buffered up to `Sync`/`Flush` and the
//!   batch is judged as a whole at its `Parse` messages; a batch with a
//!   denied `Parse` is never forwarded, so a denied statement can never be
//!   bound or executed. Each `Bind` (with the parameter types its `Parse`
//!   declared) and `Execute` is judged again under the current policy (a
//!   statement prepared earlier may have been denied since; binding plans,
//!   and planning runs stable and immutable functions; a bound value of a
//!   domain runs its CHECK). After an error the agent discards messages until
//!   `Sync`, exactly as PostgreSQL does, so the session stays usable.
//!   What each Execute runs is tracked by [`super::names`]. A statement
//!   that needs approval is put to approvers at its Execute, the batch
//!   held meanwhile; binding it in a batch that does not execute it is
//!   refused, since Bind plans and planning runs the stable and immutable
//!   functions it calls.
//! - A denial is played through the target whenever the agent could not
//!   answer exactly as PostgreSQL would on its own: the target holds
//!   unsynced work (a batch that ended in Flush), the session is inside a
//!   transaction block, or earlier requests are still being answered. The
//!   agent sends an Execute of a portal that cannot exist, so the target
//!   fails the cycle exactly as it would have failed the statement (an
//!   implicit transaction rolls back, an explicit one is aborted, responses
//!   stay in order, ReadyForQuery carries the true status) and the agent
//!   replaces that error with its own. Only an idle session outside a
//!   transaction gets its denial straight from the agent.
//! - `FunctionCall` is judged as kind `function_call`; COPY messages are
//!   passed on in order (the target ignores them outside COPY IN, as when
//!   the client's data is still arriving after the target failed the
//!   COPY), but never ahead of extended-protocol messages held for their
//!   Sync.
//! - Encoding: the agent reads SQL as UTF-8, the target in the session's
//!   `client_encoding`, which a statement may change (through a function the
//!   agent cannot see into) and which the target reports only with that
//!   request's ReadyForQuery, when the session then ends. Text read by the
//!   target before that report would be read differently from how it was
//!   judged, except ASCII, which reads alike in every client encoding
//!   PostgreSQL allows. So a Query or batch whose text or names are not
//!   ASCII waits until the target has answered everything before it, and
//!   one that would follow a statement run in the same unsynced cycle (where
//!   no report can come first) is refused with 0A000 ([`reads_alike`]).
//! - Every request is written to the audit spool before it is forwarded;
//!   if that fails, the request is refused.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use bytes::{Buf as _, BytesMut};
use sluice_pgwire::{Frame, FrameReader, messages};
use sluice_proto as pb;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::watch,
};
use tokio_stream::{StreamExt as _, wrappers::WatchStream};

use super::{
    capture::{self, Capture},
    io::Stream,
    judge::{Judge, Verdict},
    names::{FetchTarget, Names, Prepared, Scope},
    upstream::{Upstream, scrub},
};
use crate::{
    Agent,
    approvals::{Filing, GrantKey, Retried},
    audit::{IntentToken, SessionTrail},
};

/// Stop reading from one side while this much is queued for the other.
const HIGH_WATER: usize = 4 * 1024 * 1024;
/// While a statement is held for approval, the client is still read (to
/// notice it leaving) up to this many bytes, unparsed.
const HOLD_READ_LIMIT: usize = 1024 * 1024;
/// Most Executes in one extended-protocol batch.
const MAX_EXECUTES: usize = 10_000;
/// Statements forwarded and not yet answered, beyond which the client is
/// not read until some are (each holds its audit event and write-ahead
/// record in memory): a client that pipelines without reading results
/// meets backpressure here, not only when the socket buffers fill. The
/// same for denials sent through the target, whose errors wait meanwhile.
const MAX_IN_FLIGHT: usize = MAX_EXECUTES;
/// Largest extended-protocol batch buffered before a Sync/Flush.
const MAX_BATCH: usize = 64 * 1024 * 1024;
/// Why a request whose text is not ASCII is refused after a statement run
/// in the same unsynced cycle (see the module docs).
const ENCODING_RACE: &str = "SQL text or names that are not ASCII cannot follow an Execute before Sync: a statement run in the same cycle may change the session's client_encoding, which the database reports only at Sync. Send Sync first";

/// Why a Query or FunctionCall after a batch ended in Flush is refused: an
/// error in that batch makes the target discard everything up to Sync
/// (the Query too, answering nothing for it), and the agent cannot know
/// yet whether one came. Counted as answered, every later result would be
/// paired with the statement before it (masked, limited and audited as
/// that one).
const AFTER_FLUSH: &str = "a Query or FunctionCall cannot follow extended-protocol messages ended by Flush: the database discards it after an error in them, which sluice cannot know of yet. Send Sync first";

/// Largest statement, text and parameters together, put to approvers.
const MAX_APPROVAL_BYTES: usize = 1024 * 1024;
/// How long a retry-mode statement's answer waits for the control plane to
/// confirm it has stored the approval request.
const FILED_WAIT: Duration = Duration::from_secs(3);

/// Why a session ends when the agent drains.
pub const SHUTTING_DOWN: &str =
    "the agent is shutting down; connect again (to this agent once it is back, or another)";

/// How long a retry-mode statement sent again while its request is pending
/// waits for the decision (which may be on its way) before the client is
/// told the request is still undecided.
const DECISION_WAIT: Duration = Duration::from_secs(1);

pub struct Context {
    pub agent: Arc<Agent>,
    pub session_id: String,
    pub subject: sluice_policy::Subject,
    pub resource: String,
    pub client_addr: String,
    pub credential: pb::Credential,
    pub idle_timeout: Duration,
    /// When the client's token stops being valid (Unix seconds): the
    /// session ends then, as a new login with it would be refused.
    pub token_valid_until: u64,
    /// The resource's `audit_mode: best_effort`: run statements even when
    /// their audit event cannot be spooled (default: refuse them).
    pub audit_best_effort: bool,
    /// The session's chained audit trail.
    pub trail: SessionTrail,
    /// Set when the session must end (admin kill, revoked grant).
    pub ended: watch::Receiver<Option<String>>,
    /// Becomes `true` when the agent shuts down: the session ends at its
    /// next point between transactions.
    pub draining: watch::Receiver<bool>,
    /// Changes when the client sends a CancelRequest for this session.
    pub cancels: watch::Receiver<u64>,
    /// Mask rules for this session, if any apply.
    pub masker: Option<super::mask::Masker>,
    /// The target's own functions and operators, as read at the start.
    pub routines: super::catalog::Read<super::routines::Routines>,
    /// The resource (to re-read its catalog after DDL).
    pub target: pb::Resource,
    /// This session's share of its subject's and the agent's allowances
    /// for large messages still arriving: from its client, and from the
    /// target (a result row the client asked for); and for an
    /// extended-protocol batch held until its Sync once it is over
    /// [`crate::LARGE_MESSAGE`] (many small messages are as large as one).
    pub receiving: crate::ReceiveCharge,
    pub receiving_results: crate::ReceiveCharge,
    pub batching: crate::ReceiveCharge,
    /// What all the subject's sessions' prepared statements and portals
    /// hold (against `--max-subject-prepared-bytes`).
    pub prepared: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub statements: u64,
    pub denied: u64,
    pub rows: u64,
}

enum UnitKind {
    Simple,
    Extended,
}

/// A forwarded request whose results are being counted.
struct Unit {
    kind: UnitKind,
    /// The sync cycle it belongs to.
    cycle: u64,
    /// The statement's audit event, recorded with its outcome when the
    /// unit finishes (its write-ahead record, `intent`, stands until then).
    event: pb::AuditEvent,
    intent: Option<IntentToken>,
    started: Instant,
    /// Rows of all completed statements.
    rows: u64,
    /// Rows of the statement being received by this Execute.
    stmt_rows: u64,
    /// The portal an Execute runs: the row limit applies across all
    /// Executes of one portal (`max_rows` fetches).
    portal: Option<String>,
    /// Rows earlier Executes of the portal returned (set at first use).
    base: Option<u64>,
    limit: Option<u64>,
    withheld: u64,
    error: String,
    /// What the client received, as recorded.
    capture: Capture,
    strict: Option<sluice_policy::MaskStrategy>,
    judged: Option<Arc<Verdict>>,
    formats: Vec<i16>,
    /// Masking plan of the current result set.
    plan: Option<super::mask::Plan>,
    /// The agent added a Describe for this Execute: its answer is not the
    /// client's.
    /// Rows withheld because they could not be masked.
    unmaskable: u64,
    /// COPY output withheld (masking cannot vouch for it).
    copy_withheld: bool,
    /// Its `COPY ... FROM STDIN`s the target may still wait for data for
    /// (see [`Relay::copy_pending`]).
    copies_left: usize,
    /// Its batch's Sync went to the target behind it while its COPY was
    /// still to come: the target reads that Sync during copy-in and
    /// ignores it.
    sync_ignored: bool,
    /// How each of its COPY outputs is masked, in order (`None`: withheld).
    copy_plans: VecDeque<Option<super::mask::CopyPlan>>,
    /// The COPY output being masked.
    copy_active: Option<super::mask::CopyPlan>,
    /// Whether each of its COPY outputs starts with a header line, in
    /// order (the row limit does not count it).
    copy_headers: VecDeque<bool>,
    /// Which messages of the COPY output being received are rows.
    copy_rows: Option<CopyRows>,
}

/// Which CopyData messages of a `COPY ... TO STDOUT` are rows, for the row
/// limit. PostgreSQL sends one message per row; a text or CSV header line
/// is a message of its own; in binary format the file header rides on the
/// first message (with the first row, or with the trailer when there are
/// none) and the trailer (-1 as a 16-bit field count) is a message of its
/// own. Headers and trailers always pass, so what the client receives
/// stays a well-formed COPY stream.
#[derive(Debug, Clone, Copy)]
struct CopyRows {
    /// No message received yet.
    first: bool,
    /// A header line comes first (text and CSV).
    header: bool,
    /// Binary format, as the target's CopyOutResponse says.
    binary: bool,
}

impl CopyRows {
    /// The binary file header: signature, flags, extension length.
    const BINARY_HEADER: usize = 19;

    /// Whether `body`, the output's next CopyData, is a row.
    fn is_row(&mut self, body: &[u8]) -> bool {
        let first = std::mem::replace(&mut self.first, false);
        if self.binary {
            let trailer = body == b"\xff\xff"
                || (first && body.len() == Self::BINARY_HEADER + 2 && body.ends_with(b"\xff\xff"));
            !trailer
        } else {
            !(first && self.header)
        }
    }
}

/// A statement about to be forwarded (an Execute, a Query, a FunctionCall).
struct PlannedExecute {
    id: String,
    portal: Option<String>,
    text: String,
    params: Vec<String>,
    /// SHA-256 of the parameters exactly as bound (of none, for a Query).
    params_digest: [u8; 32],
    rule: String,
    limit: Option<u64>,
    /// The approve rule's verdict, when it may only run once approved.
    approval: Option<Arc<Verdict>>,
    /// Masking's strict mode for this statement (the strategy).
    strict: Option<sluice_policy::MaskStrategy>,
    /// Its verdict, kept when mask rules apply: whether it reads masked
    /// data decides what its errors and notices may say.
    judged: Option<Arc<Verdict>>,
    /// Result format codes (Bind), empty for text.
    formats: Vec<i16>,
    /// Its `COPY ... TO STDOUT` statements (for masking).
    copy_out: Vec<sluice_policy::CopyOut>,
    /// How many `COPY ... FROM STDIN` it has.
    copy_in: usize,
}

/// A request that passed policy (or is held until approved), ready to be
/// audited and forwarded.
enum Ready {
    Query {
        frame: Frame,
        x: Box<PlannedExecute>,
        changes: Vec<sluice_policy::PreparedChange>,
    },
    Batch {
        batch: Vec<Frame>,
        ends_with_sync: bool,
        ops: Vec<super::names::Op>,
        executes: Vec<PlannedExecute>,
        /// The statement each Describe in `batch` describes, in order
        /// (`None` for a portal's, or one the agent does not know).
        described: Vec<Option<Arc<Prepared>>>,
    },
}

impl Ready {
    fn ends_cycle(&self) -> bool {
        match self {
            Self::Query { .. } => true,
            Self::Batch { ends_with_sync, .. } => *ends_with_sync,
        }
    }
}

/// A Describe sent to the target and not yet answered.
struct Describe {
    /// The sync cycle it belongs to.
    cycle: u64,
    /// Added by the agent (its answer is not the client's).
    ours: bool,
    /// The statement it describes, if the agent knows it.
    statement: Option<Arc<Prepared>>,
}

/// A statement held in wait mode until its approval is decided.
struct Holding {
    request_id: String,
    statement_id: String,
    text: String,
    params: Vec<String>,
    rule: String,
    timeout: Duration,
    decision: tokio::sync::oneshot::Receiver<pb::ApprovalDecision>,
    deadline: tokio::time::Instant,
    ready: Ready,
    /// Cancels counted when the hold began; a later one withdraws it.
    cancel_mark: u64,
}

/// A request with non-ASCII text waiting for the target to answer those
/// before it (see the module docs).
enum Deferred {
    Query(Frame),
    /// `Relay::batch`, ended by its Sync or Flush.
    Batch,
}

/// The agent's own query on the session's connection, answered before the
/// client's request that waits for it (as `Relay::deferred`): which
/// statement an `EXECUTE` runs, read from the target's
/// `pg_prepared_statements` with nothing sent between the read and the
/// EXECUTE, so code the agent never saw (a function, a `DO` block) cannot
/// have prepared it differently since.
struct Lookup {
    /// The sync cycle of the agent's query.
    cycle: u64,
    /// The prepared statement's name.
    name: String,
    /// Its rows: the text the statement came in, whether SQL prepared it,
    /// its parameter types (OIDs, as an array literal).
    rows: Vec<Vec<Option<String>>>,
    /// The target's error, if the read failed.
    error: Option<String>,
    /// The error was a cancel (57014).
    cancelled: bool,
    /// Its ReadyForQuery arrived.
    done: bool,
}

enum HeldOutcome {
    Decided(pb::ApprovalDecision),
    TimedOut,
    Withdrawn,
}

struct Relay {
    ctx: Context,
    judge: Judge,
    to_client: BytesMut,
    to_server: BytesMut,
    /// Sync cycles (Sync, Query, FunctionCall) sent to the target, and
    /// ReadyForQuery received from it: the target is working on cycle
    /// `cycles_done`.
    cycles_sent: u64,
    cycles_done: u64,
    /// Extended-protocol messages were sent since the last Sync (a batch
    /// ended in Flush): the target has an open sync cycle.
    unsynced: bool,
    /// In that open cycle a statement ran (an Execute went to the target):
    /// a client_encoding change it made is not reported until the cycle
    /// ends.
    ran_unsynced: bool,
    /// A request waiting for everything before it to be answered.
    deferred: Option<Deferred>,
    /// Responses made up by the agent, released once `cycles_done` reaches
    /// the number given.
    held: VecDeque<(u64, BytesMut)>,
    /// Errors to show instead of the target's error for the never-existing
    /// portal `denial_portal`, by cycle.
    substitutes: VecDeque<(u64, BytesMut)>,
    denial_portal: String,
    /// A statement waiting for approval; the client is not read meanwhile.
    holding: Option<Holding>,
    /// The agent's own read of what an EXECUTE runs.
    lookup: Option<Lookup>,
    /// The target's `server_encoding` is UTF8, in which it truncates and
    /// lowercases identifiers as the agent's parser does (in a single-byte
    /// encoding it keeps more characters of a long non-ASCII name, and
    /// lowercases letters outside ASCII).
    server_utf8: bool,
    /// A DDL statement was sent, or a transaction that sent one ended:
    /// re-read the catalogs before judging or masking more.
    catalog_stale: bool,
    /// A DDL statement was sent in the current transaction (what it
    /// defines is seen by other connections once it commits).
    ddl_in_transaction: bool,
    /// When the session's read of the target's functions was made, and
    /// the cache generation it is current as of ([`super::catalog::Read`]).
    routines_read: (Instant, u64),
    /// The same for the masker's read of the target's catalog.
    masks_read: (Instant, u64),
    /// A result row could not be masked (it was withheld): why.
    unmaskable: Option<String>,
    /// Set when the target's session changed in a way the agent cannot
    /// follow: the session ends.
    fault: Option<String>,
    /// Describes sent and not yet answered.
    describes: VecDeque<Describe>,
    held_bytes: usize,
    tx_status: u8,
    batch: Vec<Frame>,
    batch_bytes: usize,
    skip_until_sync: bool,
    copy_in: bool,
    names: Names,
    /// Rows returned so far by portals suspended at `max_rows`.
    portal_rows: HashMap<String, u64>,
    units: VecDeque<Unit>,
    record_limits: capture::Limits,
    /// Bytes of results the session record may still take.
    record_left: usize,
    totals: Totals,
    terminate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client protocol violation: {0}")]
    Protocol(String),
    #[error("the target database sent an invalid message: {0}")]
    Upstream(String),
    #[error("audit spool unavailable: {0}")]
    Audit(String),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client idle for longer than {0:?}")]
    Idle(Duration),
    #[error("the client read nothing of what was sent to it for longer than {0:?}")]
    Stalled(Duration),
    #[error("this session was ended: {0}")]
    Ended(String),
    #[error("a result row could not be masked, so it was not sent and the session is ended: {0}")]
    Unmaskable(String),
    #[error("{0}")]
    TooMuchArriving(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Runs the relay until either side closes. Returns the session totals.
pub async fn run(
    ctx: Context,
    client: Stream,
    mut client_reader: FrameReader,
    upstream: Upstream,
) -> (Totals, Option<SessionError>, SessionTrail) {
    let Upstream {
        stream: server,
        reader: mut server_reader,
        tx_status,
        ..
    } = upstream;
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut server_r, mut server_w) = tokio::io::split(server);
    let mut judge = Judge::new(
        ctx.subject.clone(),
        ctx.resource.clone(),
        ctx.routines.value.clone(),
    );
    let routines_read = (ctx.routines.at, ctx.routines.generation);
    if let Some((_, v)) = upstream
        .parameters
        .iter()
        .find(|(k, _)| k == "standard_conforming_strings")
    {
        judge.set_standard_conforming_strings(v == "on");
    }
    let server_utf8 = upstream
        .parameters
        .iter()
        .any(|(k, v)| k == "server_encoding" && v.eq_ignore_ascii_case("UTF8"));
    let args = &ctx.agent.args;
    let record_limits = capture::Limits {
        rows: args.record_rows,
        statement_bytes: args.record_statement_bytes,
    };
    let record_left = args.record_session_bytes;
    let names = Names::new(args.max_prepared_bytes)
        .with_shared_budget(
            Scope::Subject,
            ctx.prepared.clone(),
            args.max_subject_prepared_bytes,
        )
        .with_shared_budget(
            Scope::Agent,
            ctx.agent.prepared(),
            args.max_total_prepared_bytes,
        );
    let mut relay = Relay {
        ctx,
        judge,
        to_client: BytesMut::with_capacity(16 * 1024),
        to_server: BytesMut::with_capacity(16 * 1024),
        cycles_sent: 0,
        cycles_done: 0,
        unsynced: false,
        ran_unsynced: false,
        deferred: None,
        held: VecDeque::new(),
        substitutes: VecDeque::new(),
        holding: None,
        lookup: None,
        server_utf8,
        catalog_stale: false,
        ddl_in_transaction: false,
        routines_read,
        // Read when the masker was built, at a generation not known here:
        // compared before the first statement.
        masks_read: (Instant::now(), u64::MAX),
        unmaskable: None,
        fault: None,
        describes: VecDeque::new(),
        denial_portal: format!("sluice-denied-{}", uuid::Uuid::new_v4().simple()),
        held_bytes: 0,
        tx_status,
        batch: Vec::new(),
        batch_bytes: 0,
        skip_until_sync: false,
        copy_in: false,
        names,
        portal_rows: HashMap::new(),
        units: VecDeque::new(),
        record_limits,
        record_left,
        totals: Totals::default(),
        terminate: false,
    };
    let idle = relay.ctx.idle_timeout;
    // Streams, not `changed()` per loop turn: each turn would register
    // with (and unregister from) the agent-wide channels every session
    // shares.
    let mut ended = WatchStream::from_changes(relay.ctx.ended.clone());
    let mut draining = relay.ctx.draining.clone();
    let mut drain = *draining.borrow_and_update();
    let mut draining = WatchStream::from_changes(draining);
    let mut cancels = relay.ctx.cancels.clone();
    // One timer for the whole session, moved only when it fires: creating a
    // timer per loop turn costs more than the statement's judgement.
    let idle_sleep = tokio::time::sleep(idle);
    tokio::pin!(idle_sleep);
    let token_expiry = tokio::time::sleep(token_left(relay.ctx.token_valid_until));
    tokio::pin!(token_expiry);
    let mut last_activity = tokio::time::Instant::now();
    let err = loop {
        if drain && relay.between_transactions(&client_reader) {
            break Some(SessionError::Ended(SHUTTING_DOWN.into()));
        }
        // After the client's Terminate, keep relaying until the target has
        // answered everything it was sent and closes the connection.
        tokio::select! {
            r = client_r.read_buf(client_reader.buffer()), if relay.to_server.len() < HIGH_WATER && relay.to_client.len() + relay.held_bytes < HIGH_WATER && relay.units.len() < MAX_IN_FLIGHT && relay.substitutes.len() < MAX_IN_FLIGHT && !relay.terminate && (relay.holding.is_none() && relay.deferred.is_none() || client_reader.buffer().len() < HOLD_READ_LIMIT) => {
                last_activity = tokio::time::Instant::now();
                match r {
                    Ok(0) => break None,
                    Ok(_) => {
                        if let Err(e) = relay.on_client_bytes(&mut client_reader).await {
                            break Some(e);
                        }
                        if let Err(e) = relay.count_arriving(&client_reader, false) {
                            break Some(e);
                        }
                    }
                    Err(e) => break Some(e.into()),
                }
            }
            r = server_r.read_buf(server_reader.buffer()), if relay.to_client.len() < HIGH_WATER => {
                last_activity = tokio::time::Instant::now();
                match r {
                    Ok(0) => break None,
                    Ok(_) => {
                        if let Err(e) = relay.on_server_bytes(&mut server_reader) {
                            break Some(e);
                        }
                        if let Err(e) = relay.count_arriving(&server_reader, true) {
                            break Some(e);
                        }
                        if relay.deferred.is_some() && relay.inflight() == 0 {
                            if let Err(e) = relay.resume_deferred().await {
                                break Some(e);
                            }
                            if let Err(e) = relay.on_client_bytes(&mut client_reader).await {
                                break Some(e);
                            }
                        }
                    }
                    Err(e) => break Some(e.into()),
                }
            }
            r = client_w.write(&relay.to_client), if !relay.to_client.is_empty() => {
                match r {
                    Ok(n) => {
                        let queued = relay.to_client.len() > HIGH_WATER;
                        relay.to_client.advance(n);
                        if !relay.to_client.is_empty() {
                            // A client reading slowly is not stalled.
                            last_activity = tokio::time::Instant::now();
                        }
                        if queued {
                            // Less of the target's answer is held: release
                            // it (it is counted again at the next read).
                            let _ = relay.count_arriving(&server_reader, true);
                        }
                    }
                    Err(e) => break Some(e.into()),
                }
            }
            r = server_w.write(&relay.to_server), if !relay.to_server.is_empty() => {
                match r {
                    Ok(n) => relay.to_server.advance(n),
                    Err(e) => break Some(e.into()),
                }
            }
            outcome = held_outcome(&mut relay.holding), if relay.holding.is_some() => {
                if let Err(e) = relay.on_held(outcome).await {
                    break Some(e);
                }
                // Messages that arrived while the statement was held.
                if let Err(e) = relay.on_client_bytes(&mut client_reader).await {
                    break Some(e);
                }
            }
            r = cancels.changed(), if relay.holding.is_some() => {
                let count = *cancels.borrow_and_update();
                if r.is_ok() && relay.holding.as_ref().is_some_and(|h| count > h.cancel_mark) {
                    if let Err(e) = relay.on_held(HeldOutcome::Withdrawn).await {
                        break Some(e);
                    }
                    if let Err(e) = relay.on_client_bytes(&mut client_reader).await {
                        break Some(e);
                    }
                }
            }
            // A batch that ended in Flush leaves the target's transaction
            // open (and its locks held): idle all the same. So is a session
            // whose client reads nothing of what it was sent (the relay
            // stops reading the target then, with statements in flight),
            // and one whose target waits for COPY data the client does not
            // send (in a transaction, holding its locks).
            () = &mut idle_sleep, if relay.inflight() == 0 && relay.units.is_empty() && relay.holding.is_none() && relay.deferred.is_none() || !relay.to_client.is_empty() || relay.copy_in && relay.copy_pending() => {
                let deadline = last_activity + idle;
                if tokio::time::Instant::now() >= deadline {
                    break Some(if relay.to_client.is_empty() {
                        SessionError::Idle(idle)
                    } else {
                        SessionError::Stalled(idle)
                    });
                }
                idle_sleep.as_mut().reset(deadline);
            }
            () = &mut token_expiry => {
                break Some(SessionError::Ended(
                    "your token has expired; connect again with a fresh one".into(),
                ));
            }
            d = draining.next(), if !drain => {
                drain = d.unwrap_or(true);
            }
            why = ended.next() => {
                let why = why.unwrap_or_else(|| Some("the agent is shutting down".into()));
                if let Some(why) = why {
                    break Some(SessionError::Ended(why));
                }
            }
        }
    };
    // Say why, in the client's protocol, when it is our decision to end.
    if let Some(
        e @ (SessionError::Protocol(_)
        | SessionError::Audit(_)
        | SessionError::Idle(_)
        | SessionError::Stalled(_)
        | SessionError::Ended(_)
        | SessionError::Unmaskable(_)
        | SessionError::TooMuchArriving(_)
        | SessionError::Unsupported(_)
        | SessionError::Upstream(_)),
    ) = &err
    {
        let code = match e {
            SessionError::TooMuchArriving(_) => "53200",
            SessionError::Unsupported(_) => "0A000",
            SessionError::Idle(_) | SessionError::Stalled(_) => "57P05",
            SessionError::Ended(_) => "57P01",
            SessionError::Unmaskable(_) => "XX000",
            SessionError::Audit(_) => "57P03",
            SessionError::Upstream(_) => "08006",
            _ => "08P01",
        };
        relay.to_client.extend_from_slice(
            &messages::Notice::fatal(code, format!("sluice: {e}"))
                .to_error()
                .raw,
        );
    }
    if !relay.to_client.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), client_w.write_all(&relay.to_client))
            .await;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        server_w.write_all(&messages::terminate().raw),
    )
    .await;
    // Bounded as the writes above: a TLS close waits for the client to
    // read, and the session's end must be recorded whatever it does.
    let _ = tokio::time::timeout(Duration::from_secs(2), client_w.shutdown()).await;
    let why = err
        .as_ref()
        .map_or_else(|| "the connection closed".to_owned(), ToString::to_string);
    relay.finish_all(&why);
    if let Some(h) = relay.holding.take() {
        // The client left (or the session was ended) while it waited: the
        // session's record says so, as for a cancel, before it ends.
        let event = relay.approval_event(
            "approval.withdrawn",
            "deny",
            &h.request_id,
            &h.statement_id,
            &h.text,
            &h.params,
            &h.rule,
            &format!(
                "the session ended while the statement waited for approval ({why}); it did not run"
            ),
            serde_json::json!({}),
        );
        relay.ctx.trail.record_closing(event);
        relay
            .ctx
            .agent
            .approvals
            .abandon(&h.request_id, "withdrawn");
    }
    (relay.totals, err, relay.ctx.trail)
}

/// Waits for the held statement's decision or its deadline.
async fn held_outcome(holding: &mut Option<Holding>) -> HeldOutcome {
    let Some(h) = holding.as_mut() else {
        return std::future::pending().await;
    };
    tokio::select! {
        d = &mut h.decision => match d {
            Ok(d) => HeldOutcome::Decided(d),
            // The agent dropped the request (shutting down).
            Err(_) => HeldOutcome::TimedOut,
        },
        () = tokio::time::sleep_until(h.deadline) => HeldOutcome::TimedOut,
    }
}

/// How long a token valid until `valid_until` (Unix seconds) has left.
fn token_left(valid_until: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Far-future tokens: a year is as good as forever, and keeps the
    // timer's deadline representable.
    Duration::from_secs(valid_until)
        .saturating_sub(now)
        .min(Duration::from_secs(365 * 24 * 3600))
}

/// What a receive charge counts (see [`Relay::hold_receiving`]).
#[derive(Debug, Clone, Copy)]
enum Arriving {
    /// A large client message, while it arrives.
    Message,
    /// A large row or message from the target, while it arrives.
    Result,
    /// Extended-protocol messages held until their Sync.
    Batch,
}

impl Relay {
    /// Counts a large message still arriving, from the client or (`result`)
    /// from the target, against the subject's allowance (see
    /// [`crate::LARGE_MESSAGE`]); ends the session if it does not fit,
    /// before the rest of it is read. For the target's answers, what waits
    /// for the client past [`HIGH_WATER`] counts too.
    fn count_arriving(&mut self, reader: &FrameReader, result: bool) -> Result<(), SessionError> {
        let mut arriving = reader
            .incomplete_len()
            .filter(|&n| n > crate::LARGE_MESSAGE)
            .unwrap_or(0);
        if result {
            // A large answer read in full waits for the client past the
            // high-water mark: it counts until the client has read it, so
            // a client that stops reading holds no more than its share.
            arriving += self.to_client.len().saturating_sub(HIGH_WATER);
        }
        let kind = if result {
            Arriving::Result
        } else {
            Arriving::Message
        };
        self.hold_receiving(kind, arriving)
    }

    /// Holds `bytes` of what `kind` counts against the subject's and the
    /// agent's receive allowances; ends the session (53200) when they
    /// would pass either.
    fn hold_receiving(&mut self, kind: Arriving, bytes: usize) -> Result<(), SessionError> {
        let ctx = &mut self.ctx;
        let (charge, what, advice, agent_advice) = match kind {
            Arriving::Message => (
                &mut ctx.receiving,
                "this message",
                "send it when they are done, or in smaller statements",
                "send smaller statements",
            ),
            Arriving::Result => (
                &mut ctx.receiving_results,
                "the target's answer",
                "ask for smaller rows",
                "ask for smaller rows",
            ),
            Arriving::Batch => (
                &mut ctx.batching,
                "this batch of extended-protocol messages without Sync",
                "send Sync more often",
                "send Sync more often",
            ),
        };
        charge.hold(bytes).map_err(|over| {
            SessionError::TooMuchArriving(match over {
                crate::OverLimit::Subject { others, limit } => format!(
                    "\"{}\"'s sessions are already receiving {others} bytes of large messages through this agent, and {what} ({bytes} bytes) would pass their limit of {limit} bytes (--max-subject-receive-bytes); {advice}",
                    ctx.subject.id,
                ),
                crate::OverLimit::Agent { others, limit } => format!(
                    "this agent's sessions are already receiving {others} bytes of large messages, and {what} ({bytes} bytes) would pass the agent's limit of {limit} bytes (--max-receive-bytes); try again shortly, or {agent_advice}",
                ),
            })
        })
    }

    async fn on_client_bytes(&mut self, reader: &mut FrameReader) -> Result<(), SessionError> {
        while self.holding.is_none()
            && self.deferred.is_none()
            && let Some(frame) = reader
                .next_frame()
                .map_err(|e| SessionError::Protocol(e.to_string()))?
        {
            // The message is in: what was held for it while it arrived is
            // given back before it is held as part of a batch (the next
            // message still arriving is counted after this loop).
            let _ = self.ctx.receiving.hold(0);
            self.on_client_frame(frame).await?;
            if self.terminate {
                break;
            }
        }
        Ok(())
    }

    async fn on_client_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        if frame.tag == b'S' && self.copy_pending() {
            return Err(SessionError::Protocol(
                "a Sync arrived while the target may be waiting for COPY data, when it would ignore it; send CopyDone or CopyFail first, then Sync".into(),
            ));
        }
        // Anything else that would reach the target before the COPY's data
        // ends would break the COPY (PostgreSQL ends the session), or on
        // older servers be read as part of it, leaving every later answer
        // one request off.
        let flushes = frame.tag == b'H' && !self.batch.is_empty();
        if (matches!(frame.tag, b'Q' | b'F') || flushes) && self.copy_pending() {
            let what = match frame.tag {
                b'Q' => "a Query",
                b'F' => "a FunctionCall",
                _ => "a Flush of extended-protocol messages",
            };
            return Err(SessionError::Protocol(format!(
                "{what} arrived where the COPY's data belongs; after COPY ... FROM STDIN, send CopyData and CopyDone (or CopyFail) once CopyInResponse arrives"
            )));
        }
        if self.skip_until_sync {
            if frame.tag == b'S' {
                self.skip_until_sync = false;
                if self.unsynced {
                    // The target has an open cycle: it must see the Sync.
                    self.to_server.extend_from_slice(&frame.raw);
                    self.cycle_sent();
                } else {
                    let rfq = messages::ready_for_query(self.tx_status);
                    self.emit_synthetic(BytesMut::from(&rfq.raw[..]));
                }
            }
            return Ok(());
        }
        match frame.tag {
            b'Q' if self.inflight() > 0 && !reads_alike(&frame) => {
                self.deferred = Some(Deferred::Query(frame));
                Ok(())
            }
            b'Q' => self.on_query(frame).await,
            b'P' | b'B' | b'E' | b'D' | b'C' => {
                self.batch_bytes += frame.raw.len();
                if self.batch_bytes > MAX_BATCH {
                    return Err(SessionError::Protocol(format!(
                        "more than {MAX_BATCH} bytes of extended-protocol messages without Sync"
                    )));
                }
                if self.batch_bytes > crate::LARGE_MESSAGE {
                    self.hold_receiving(Arriving::Batch, self.batch_bytes)?;
                }
                self.batch.push(frame);
                Ok(())
            }
            b'S' | b'H' => {
                self.batch.push(frame);
                if self.inflight() > 0 && !self.batch.iter().all(reads_alike) {
                    self.deferred = Some(Deferred::Batch);
                    return Ok(());
                }
                self.on_batch().await
            }
            b'F' => self.on_function_call(frame).await,
            b'd' | b'c' | b'f' => {
                // Outside copy-in they are passed on in order, and the
                // target ignores them as the protocol says: the rest of a
                // client's data still arrives after the target failed its
                // COPY. Passed before extended-protocol messages still held
                // for their Sync, they would jump ahead of the COPY they
                // are meant for.
                if !self.copy_in && !self.batch.is_empty() {
                    return Err(SessionError::Protocol(
                        "COPY data before the Sync of the extended-protocol messages it follows; send the data after CopyInResponse".into(),
                    ));
                }
                // The target leaves copy-in when it reads CopyDone or
                // CopyFail: that COPY waits no longer.
                if frame.tag != b'd'
                    && let Some(u) = self.units.iter_mut().find(|u| u.copies_left > 0)
                {
                    u.copies_left -= 1;
                }
                self.to_server.extend_from_slice(&frame.raw);
                Ok(())
            }
            b'X' => {
                self.to_server.extend_from_slice(&frame.raw);
                self.terminate = true;
                Ok(())
            }
            other => Err(SessionError::Protocol(format!(
                "unexpected message type `{}`",
                char::from(other).escape_default()
            ))),
        }
    }

    /// Judges the deferred request, now that nothing before it is in flight.
    async fn resume_deferred(&mut self) -> Result<(), SessionError> {
        match self.deferred.take() {
            Some(Deferred::Query(frame)) => self.on_query(frame).await,
            Some(Deferred::Batch) => self.on_batch().await,
            None => Ok(()),
        }
    }

    fn snapshot(&self) -> Option<Arc<crate::snapshot::Active>> {
        self.ctx.agent.snapshot_rx.borrow().clone()
    }

    async fn on_query(&mut self, frame: Frame) -> Result<(), SessionError> {
        if !self.batch.is_empty() {
            // Forwarding it now would reorder it ahead of the buffered messages.
            return Err(SessionError::Protocol("a Query or FunctionCall arrived inside an extended-protocol batch; send Sync first".into()));
        }
        let sql = messages::parse_query(frame.body())
            .map_err(|e| SessionError::Protocol(e.to_string()))?
            .to_owned();
        if self.ran_unsynced && !sql.is_ascii() {
            let refusal = Verdict {
                reason: ENCODING_RACE.into(),
                ..Verdict::default()
            };
            let id = uuid::Uuid::now_v7().to_string();
            if let Err(e) = self.audit_decision(&id, &sql, Vec::new(), &refusal).await {
                self.refuse_unaudited(&e.to_string(), true);
                return Ok(());
            }
            self.refuse_name("0A000", ENCODING_RACE, true);
            return Ok(());
        }
        if self.unsynced {
            let refusal = after_flush();
            let id = uuid::Uuid::now_v7().to_string();
            if let Err(e) = self.audit_decision(&id, &sql, Vec::new(), &refusal).await {
                self.refuse_unaudited(&e.to_string(), true);
                return Ok(());
            }
            self.deny(&refusal, true);
            return Ok(());
        }
        self.refresh_catalog().await?;
        let snapshot = self.snapshot();
        let mut verdict = self.judge.sql(snapshot.as_ref(), &sql);
        // A read is for the Query it was made for, which comes next (the
        // client is not read meanwhile) whatever it is judged to be now:
        // never kept for a later EXECUTE.
        let read = match &self.lookup {
            Some(l) if l.done => self.lookup.take(),
            _ => None,
        };
        if let Some(name) = verdict.executes.clone() {
            match read {
                Some(read) if read.name == name => {
                    verdict = Arc::new(self.execute_verdict(snapshot.as_ref(), &verdict, read));
                }
                // The read goes out once nothing else is on its way, so
                // nothing runs between it and the EXECUTE.
                _ if self.inflight() > 0 => {
                    self.deferred = Some(Deferred::Query(frame));
                    return Ok(());
                }
                // The name the target reads may not be the one the agent
                // read.
                _ if !(name.is_ascii() || self.server_utf8) => {
                    verdict = Arc::new(Verdict {
                        reason: "sluice reads the name of a prepared statement as the target does only when it is ASCII or the target's server_encoding is UTF8; EXECUTE a statement with an ASCII name".into(),
                        kinds: verdict.kinds.clone(),
                        refusal: Some("0A000"),
                        ..Verdict::default()
                    });
                }
                // Between CopyInResponse and the client's CopyDone the
                // target reads no query (the read would fail the COPY, and
                // its answers would be taken for the COPY's).
                _ if self.copy_in || self.copy_pending() || !self.units.is_empty() => {
                    return Err(SessionError::Protocol(
                        "an EXECUTE arrived where the COPY's data belongs; after COPY ... FROM STDIN, send CopyData and CopyDone (or CopyFail) once CopyInResponse arrives".into(),
                    ));
                }
                // The read would fail in a failed transaction, as the
                // EXECUTE would.
                _ if self.tx_status == b'E' => {
                    verdict = Arc::new(Verdict {
                        reason: "current transaction is aborted, and sluice cannot read in it which statement EXECUTE runs; ROLLBACK first".into(),
                        kinds: verdict.kinds.clone(),
                        refusal: Some("25P02"),
                        ..Verdict::default()
                    });
                }
                _ => {
                    self.send_lookup(name);
                    self.deferred = Some(Deferred::Query(frame));
                    return Ok(());
                }
            }
        }
        let bound = fetch_targets(&verdict, |n| self.names.plan().fetch_target(n));
        if let Some(refused) = fetch_refusal(&mut self.judge, snapshot.as_ref(), &verdict, &bound)
            .or_else(|| masking_refusal(self.ctx.masker.as_ref(), &verdict))
        {
            verdict = refused;
        }
        self.note_ddl(&verdict);
        let x = PlannedExecute {
            id: uuid::Uuid::now_v7().to_string(),
            portal: None,
            text: sql,
            params: Vec::new(),
            params_digest: NO_PARAMS,
            rule: verdict.rule.clone(),
            limit: verdict.row_limit,
            approval: verdict.approval.is_some().then(|| verdict.clone()),
            strict: self.ctx.masker.as_ref().and_then(|m| {
                m.strict_for_statement(&verdict.tables_read, &verdict.kinds, verdict.fingerprint())
            }),
            judged: self.ctx.masker.is_some().then(|| verdict.clone()),
            formats: Vec::new(),
            copy_out: verdict.copy_out.clone(),
            copy_in: verdict.copy_in,
        };
        if !verdict.allowed && verdict.approval.is_none() {
            if let Err(e) = self
                .audit_decision(&x.id, &x.text, Vec::new(), &verdict)
                .await
            {
                self.refuse_unaudited(&e.to_string(), true);
                return Ok(());
            }
            self.deny(&verdict, true);
            return Ok(());
        }
        if let Err(refusal) = self.names.sql_fits(&verdict.prepared) {
            let refusal = Verdict {
                reason: refusal.to_string(),
                ..Verdict::default()
            };
            if let Err(e) = self
                .audit_decision(&x.id, &x.text, Vec::new(), &refusal)
                .await
            {
                self.refuse_unaudited(&e.to_string(), true);
                return Ok(());
            }
            self.refuse_over_budget(&refusal.reason, true);
            return Ok(());
        }
        let ready = Ready::Query {
            frame,
            x: Box::new(x),
            changes: verdict.prepared.clone(),
        };
        if verdict.approval.is_some() {
            self.seek_approval(ready).await
        } else {
            self.release(ready, None).await
        }
    }

    /// Asks the target which statement the prepared statement `name` is
    /// (see [`Lookup`]).
    fn send_lookup(&mut self, name: String) {
        let query = format!(
            "SELECT statement, from_sql, parameter_types::pg_catalog.oid[]::pg_catalog.text FROM pg_catalog.pg_prepared_statements WHERE name OPERATOR(pg_catalog.=) {}",
            escaped_literal(&name)
        );
        self.to_server
            .extend_from_slice(&messages::query(&query).raw);
        self.lookup = Some(Lookup {
            cycle: self.cycles_sent,
            name,
            rows: Vec::new(),
            error: None,
            cancelled: false,
            done: false,
        });
        self.cycle_sent();
    }

    /// The verdict on an `EXECUTE` policy lets run (`own`): the verdict on
    /// the statement the target holds under its name (`read`), which it
    /// runs with the EXECUTE's constant arguments. One that needs approval,
    /// or whose EXECUTE does, is refused: an approver would see only the
    /// EXECUTE, and an approval is for one run with the values it shows.
    fn execute_verdict(
        &mut self,
        snapshot: Option<&Arc<crate::snapshot::Active>>,
        own: &Verdict,
        read: Lookup,
    ) -> Verdict {
        let name = &read.name;
        let refuse = |why: String, refusal: Option<&'static str>| Verdict {
            reason: format!("EXECUTE \"{name}\" is judged as the statement it runs, and {why}"),
            kinds: own.kinds.clone(),
            refusal,
            ..Verdict::default()
        };
        if own.approval.is_some() {
            return Verdict {
                rule: own.rule.clone(),
                reason: sluice_policy::execute_needs_approval(name, &own.reason),
                ..refuse(String::new(), None)
            };
        }
        if let Some(e) = read.error {
            return refuse(
                format!("sluice could not read which statement that is: {e}"),
                read.cancelled.then_some("57014"),
            );
        }
        let [row] = read.rows.as_slice() else {
            return refuse(
                "the target has no prepared statement of that name".into(),
                Some("26000"),
            );
        };
        let (Some(Some(text)), Some(Some(from_sql)), Some(Some(types))) =
            (row.first(), row.get(1), row.get(2))
        else {
            return refuse("the target's answer was not readable".into(), None);
        };
        let body = if from_sql == "t" {
            match sluice_policy::prepared_body(text, name) {
                Ok(body) => body,
                Err(e) => return refuse(format!("sluice cannot read it: {e}"), None),
            }
        } else {
            text.clone()
        };
        let Some(types) = types
            .trim_start_matches('{')
            .trim_end_matches('}')
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<u32>().ok().map(u32::cast_signed))
            .collect::<Option<Vec<i32>>>()
        else {
            return refuse("the target's answer was not readable".into(), None);
        };
        let verdict = self.judge.sql(snapshot, &body);
        // Neither PREPARE nor Parse (refused) can hold one, but an
        // EXECUTE in it would run what no one read.
        if verdict.executes.is_some()
            || verdict
                .kinds
                .iter()
                .any(|k| k == sluice_policy::SqlKind::Execute.as_str())
        {
            return refuse("it runs another EXECUTE".into(), Some("0A000"));
        }
        if let Some(refused) = self.judge.parameter_types(snapshot, &types, &verdict) {
            return refused;
        }
        if verdict.approval.is_some() {
            return Verdict {
                rule: verdict.rule.clone(),
                ..refuse(
                    format!(
                        "that statement needs approval ({}), which only the statement itself can ask for: send it as it is, with its values",
                        verdict.reason
                    ),
                    None,
                )
            };
        }
        if !verdict.allowed {
            return Verdict {
                rule: verdict.rule.clone(),
                refusal: verdict.refusal,
                ..refuse(
                    format!("that statement is denied: {}", verdict.reason),
                    None,
                )
            };
        }
        // Its kinds and tables are the statement's: masking is as strict
        // as for the statement sent itself (not as for an EXECUTE of a
        // statement unknown).
        Verdict {
            // The stricter of the two rules' row limits.
            row_limit: match (own.row_limit, verdict.row_limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            executes: None,
            ..Verdict::clone(&verdict)
        }
    }

    /// Audits and forwards a request that may run (approved, when it needed
    /// approval, as `approval`).
    async fn release(
        &mut self,
        ready: Ready,
        approval: Option<String>,
    ) -> Result<(), SessionError> {
        self.try_release(ready, approval).await.map(drop)
    }

    /// [`Relay::release`]; whether the request went on its way (false:
    /// refused, since it could not be put on record).
    async fn try_release(
        &mut self,
        ready: Ready,
        approval: Option<String>,
    ) -> Result<bool, SessionError> {
        let ends_cycle = ready.ends_cycle();
        let executes = match &ready {
            Ready::Query { x, .. } => std::slice::from_ref(x.as_ref()),
            Ready::Batch { executes, .. } => executes.as_slice(),
        };
        // Every execution is on record before anything is forwarded: its
        // write-ahead record now, its event once its outcome is known.
        let mut events: Vec<pb::AuditEvent> = executes
            .iter()
            .map(|x| {
                let verdict = Verdict {
                    allowed: true,
                    rule: x.rule.clone(),
                    ..Verdict::default()
                };
                let mut event = self.decision_event(&x.id, &x.text, x.params.clone(), &verdict);
                if let (Some(id), Some(_)) = (&approval, &x.approval) {
                    push_attribute(&mut event.attributes_json, "approval_id", id);
                }
                event
            })
            .collect();
        let n = events.len() as u64;
        let intents: Vec<Option<IntentToken>> = match self.ctx.trail.intend(&mut events) {
            Ok(tokens) => tokens.into_iter().map(Some).collect(),
            Err(e) => {
                if !self.ctx.audit_best_effort {
                    self.refuse_unaudited(&e.to_string(), ends_cycle);
                    return Ok(false);
                }
                tracing::error!(error = %e, "audit events lost (resource is best_effort); running the statements anyway");
                events.iter().map(|_| None).collect()
            }
        };
        self.ctx.agent.metrics.audit_events.inc_by(n);
        self.totals.statements += n;
        let mut audit = events.into_iter().zip(intents);
        match ready {
            Ready::Query { frame, x, changes } => {
                if !changes.is_empty() {
                    let mut plan = self.names.plan();
                    plan.sql(&changes);
                    let ops = plan.into_ops();
                    self.names.apply(ops, self.cycles_sent);
                }
                let (event, intent) = audit.next().unwrap_or_default();
                let unit = self.unit(UnitKind::Simple, *x, event, intent);
                self.units.push_back(unit);
                self.to_server.extend_from_slice(&frame.raw);
                self.cycle_sent();
            }
            Ready::Batch {
                batch,
                ends_with_sync,
                ops,
                executes,
                described,
            } => {
                self.names.apply(ops, self.cycles_sent);
                let masking = self.ctx.masker.is_some();
                let cycle = self.cycles_sent;
                let mut previous: Option<&Frame> = None;
                let mut described = described.into_iter();
                for frame in &batch {
                    if frame.tag == b'D' {
                        // Answered by one RowDescription or NoData, in
                        // order; a statement's, after its
                        // ParameterDescription.
                        self.describes.push_back(Describe {
                            cycle,
                            ours: false,
                            statement: described.next().flatten(),
                        });
                    }
                    if masking && frame.tag == b'E' {
                        // The agent needs the columns' origins to mask; ask
                        // for them when the client did not.
                        let portal = messages::parse_execute(frame.body())
                            .map(|(p, _)| p.to_owned())
                            .unwrap_or_default();
                        let described = previous.is_some_and(|p| {
                            p.tag == b'D'
                                && messages::parse_target(p.body())
                                    .is_ok_and(|(k, n)| k == b'P' && n == portal)
                        });
                        if !described {
                            self.to_server
                                .extend_from_slice(&messages::describe_portal(&portal).raw);
                            self.describes.push_back(Describe {
                                cycle,
                                ours: true,
                                statement: None,
                            });
                        }
                    }
                    self.to_server.extend_from_slice(&frame.raw);
                    previous = Some(frame);
                }
                let ran = !executes.is_empty();
                for (x, (event, intent)) in executes.into_iter().zip(audit) {
                    let unit = self.unit(UnitKind::Extended, x, event, intent);
                    self.units.push_back(unit);
                }
                if ends_with_sync {
                    self.cycle_sent();
                } else if batch.iter().any(|f| f.tag != b'H') {
                    // A Flush alone (psycopg's pipeline sends one after
                    // Sync) opens no cycle on the target.
                    self.unsynced = true;
                    self.ran_unsynced |= ran;
                }
            }
        }
        Ok(true)
    }

    /// A statement an approve rule covers: runs at once on a matching
    /// one-time grant (retry mode), else files a request and either holds
    /// the statement (wait) or tells the client to retry once approved.
    async fn seek_approval(&mut self, ready: Ready) -> Result<(), SessionError> {
        let ends_cycle = ready.ends_cycle();
        let x = match &ready {
            Ready::Query { x, .. } => x.as_ref(),
            Ready::Batch { executes, .. } => match executes.iter().find(|x| x.approval.is_some()) {
                Some(x) => x,
                None => return self.release(ready, None).await,
            },
        };
        let Some(verdict) = x.approval.clone() else {
            return self.release(ready, None).await;
        };
        let Some(need) = verdict.approval.clone() else {
            return self.release(ready, None).await;
        };
        let (text, params, statement_id) = (x.text.clone(), x.params.clone(), x.id.clone());
        let now = i64::try_from(crate::snapshot::now_ms()).unwrap_or(i64::MAX);
        let key = GrantKey {
            subject: self.ctx.subject.id.clone(),
            resource: self.ctx.resource.clone(),
            statement: text.clone(),
            parameters: x.params_digest,
        };
        let approvers = need.approvers.join(", ");
        // Only retry-mode requests are pointed at again (a held statement
        // is its request); a grant is taken whatever the mode.
        let wait = if need.wait {
            Duration::ZERO
        } else {
            DECISION_WAIT
        };
        match self.ctx.agent.approvals.on_retry(&key, wait).await {
            Retried::Grant(request_id) => {
                tracing::info!(request = %request_id, "running a statement on its one-time approval");
                let released = self.try_release(ready, Some(request_id.clone())).await;
                let approvals = &self.ctx.agent.approvals;
                if matches!(released, Ok(true)) {
                    approvals.spend_grant(&key, &request_id);
                } else {
                    // Not run (the spool refused it): the approval still holds.
                    approvals.return_grant(&key, &request_id);
                }
                return released.map(drop);
            }
            Retried::Pending(pending) if !need.wait => {
                // Sent again before its request was decided: recorded, not
                // run, and not filed again.
                let event = self.approval_event(
                    "approval.pending",
                    "approve",
                    &pending.request_id,
                    &statement_id,
                    &text,
                    &params,
                    &verdict.rule,
                    &verdict.reason,
                    serde_json::json!({ "mode": "retry" }),
                );
                if !self.recorded(event, ends_cycle) {
                    return Ok(());
                }
                let state = if pending.confirmed {
                    "is still awaiting a decision (it was not filed again)"
                } else {
                    UNCONFIRMED
                };
                let notice =
                    retry_notice(&approvers, &verdict, &pending.request_id, state, need.ttl);
                self.reject(BytesMut::from(&notice.to_error().raw[..]), ends_cycle);
                return Ok(());
            }
            Retried::Denied(denied) if !need.wait => {
                // Denied, and sent again before its request would have
                // expired: recorded, not run, and not put to approvers again.
                let event = self.approval_event(
                    "approval.denied",
                    "deny",
                    &denied.request_id,
                    &statement_id,
                    &text,
                    &params,
                    &verdict.rule,
                    &denied.reason,
                    serde_json::json!({
                        "mode": "retry", "approvers": denied.approvers,
                        "until_ms": denied.until_ms,
                    }),
                );
                if !self.recorded(event, ends_cycle) {
                    return Ok(());
                }
                let left = Duration::from_secs(
                    u64::try_from(denied.until_ms.saturating_sub(now)).unwrap_or(0) / 1000 + 1,
                );
                let notice = messages::Notice::error(
                    "42501",
                    format!(
                        "sluice: approval request {} for exactly this statement was denied by {}: {}; it was not filed again, and the statement did not run",
                        denied.request_id,
                        decided_by(&denied.approvers),
                        reason_or_none(&denied.reason),
                    ),
                )
                .detail(format!("request id: {}", denied.request_id))
                .hint(format!(
                    "the same statement can be put to approvers again in {} (when the denied request would have expired)",
                    humantime::format_duration(left)
                ));
                self.reject(BytesMut::from(&notice.to_error().raw[..]), ends_cycle);
                return Ok(());
            }
            Retried::Pending(_) | Retried::Denied(_) | Retried::Nothing => {}
        }
        let size = text.len() + params.iter().map(String::len).sum::<usize>();
        if size > MAX_APPROVAL_BYTES {
            // Nobody can review it, and the request must fit the control
            // link's messages.
            let verdict = Verdict {
                rule: verdict.rule.clone(),
                reason: format!(
                    "this statement needs approval, but at {size} bytes of text and parameters it is too large to put to approvers (at most {MAX_APPROVAL_BYTES})"
                ),
                ..Verdict::default()
            };
            if let Err(e) = self
                .audit_decision(&statement_id, &text, params, &verdict)
                .await
            {
                self.refuse_unaudited(&e.to_string(), ends_cycle);
                return Ok(());
            }
            self.deny(&verdict, ends_cycle);
            return Ok(());
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        let window = if need.wait { need.timeout } else { need.ttl };
        let request = pb::ApprovalRequest {
            request_id: request_id.clone(),
            session_id: self.ctx.session_id.clone(),
            subject: self.ctx.subject.id.clone(),
            groups: self.ctx.subject.groups.clone(),
            resource: self.ctx.resource.clone(),
            statement: text.clone(),
            fingerprint: verdict.fingerprint().to_owned(),
            parameters: params.clone(),
            rule: verdict.rule.clone(),
            reason: verdict.reason.clone(),
            mode: if need.wait { "wait" } else { "retry" }.into(),
            expires_at_unix_ms: now
                .saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX)),
            state: "pending".into(),
            statement_id: statement_id.clone(),
            approvers: need.approvers.clone(),
            min_approvals: need.min,
            ttl_ms: i64::try_from(need.ttl.as_millis()).unwrap_or(i64::MAX),
        };
        let event = self.approval_event(
            "approval.request",
            "approve",
            &request_id,
            &statement_id,
            &text,
            &params,
            &verdict.rule,
            &verdict.reason,
            serde_json::json!({
                "mode": request.mode, "approvers": need.approvers, "min": need.min,
                "expires_at_ms": request.expires_at_unix_ms,
            }),
        );
        // The request is on record before anyone can act on it.
        if !self.recorded(event, ends_cycle) {
            return Ok(());
        }
        match self.ctx.agent.approvals.request(request, key, need.wait) {
            Err(e) => {
                let verdict = Verdict {
                    rule: verdict.rule.clone(),
                    reason: e.to_string(),
                    ..Verdict::default()
                };
                self.deny(&verdict, ends_cycle);
            }
            Ok(Filing::Retry(filed)) => {
                // Whoever reads the request id from the error may approve
                // it at once: tell the client once the control plane has
                // it, unless the link is down or it does not say so soon.
                let stored = self.ctx.agent.status.connected()
                    && tokio::time::timeout(FILED_WAIT, filed).await.is_ok();
                let sent = if stored { "was sent" } else { UNCONFIRMED };
                let notice = retry_notice(&approvers, &verdict, &request_id, sent, need.ttl);
                self.reject(BytesMut::from(&notice.to_error().raw[..]), ends_cycle);
            }
            Ok(Filing::Wait(decision)) => {
                let notice = messages::Notice {
                    severity: "NOTICE".into(),
                    code: "01000".into(),
                    message: format!(
                        "sluice: waiting up to {} for approval by {approvers}; request id {request_id}",
                        humantime::format_duration(need.timeout)
                    ),
                    ..Default::default()
                };
                self.to_client.extend_from_slice(&notice.to_notice().raw);
                // Only cancels from now on withdraw the request.
                let cancel_mark = *self.ctx.cancels.borrow();
                self.holding = Some(Holding {
                    cancel_mark,
                    request_id,
                    statement_id,
                    text,
                    params,
                    rule: verdict.rule.clone(),
                    timeout: need.timeout,
                    decision,
                    deadline: tokio::time::Instant::now() + need.timeout,
                    ready,
                });
            }
        }
        Ok(())
    }

    /// The held statement's fate: run it, or tell the client why not.
    async fn on_held(&mut self, outcome: HeldOutcome) -> Result<(), SessionError> {
        let Some(h) = self.holding.take() else {
            return Ok(());
        };
        // The control plane expires a request it saw lapse: same as here.
        let outcome = match outcome {
            HeldOutcome::Decided(d) if d.outcome == "expired" => HeldOutcome::TimedOut,
            other => other,
        };
        let ends_cycle = h.ready.ends_cycle();
        let (kind, decision, why, attrs) = match &outcome {
            HeldOutcome::Decided(d) => (
                "approval.decision",
                if d.outcome == "approved" {
                    "approve"
                } else {
                    "deny"
                },
                d.reason.clone(),
                serde_json::json!({"outcome": d.outcome, "approvers": d.approvers}),
            ),
            HeldOutcome::TimedOut => (
                "approval.expired",
                "deny",
                format!(
                    "not decided within {}",
                    humantime::format_duration(h.timeout)
                ),
                serde_json::json!({}),
            ),
            HeldOutcome::Withdrawn => (
                "approval.withdrawn",
                "deny",
                "the client cancelled the statement".to_owned(),
                serde_json::json!({}),
            ),
        };
        let event = self.approval_event(
            kind,
            decision,
            &h.request_id,
            &h.statement_id,
            &h.text,
            &h.params,
            &h.rule,
            &why,
            attrs,
        );
        self.ctx.trail.record_detached(event);
        let id = &h.request_id;
        let error = match outcome {
            HeldOutcome::Decided(d) if d.outcome == "approved" => {
                return self.release(h.ready, Some(h.request_id)).await;
            }
            HeldOutcome::Decided(d) => messages::Notice::error(
                "42501",
                format!(
                    "sluice: approval request {id} was {} by {}: {}; the statement did not run",
                    d.outcome,
                    decided_by(&d.approvers),
                    reason_or_none(&d.reason),
                ),
            ),
            HeldOutcome::TimedOut => {
                self.ctx.agent.approvals.abandon(id, "expired");
                messages::Notice::error(
                    "42501",
                    format!(
                        "sluice: approval request {id} was not decided within {}; the statement did not run",
                        humantime::format_duration(h.timeout)
                    ),
                )
            }
            HeldOutcome::Withdrawn => {
                self.ctx.agent.approvals.abandon(id, "withdrawn");
                messages::Notice::error(
                    "57014",
                    format!(
                        "canceling statement due to user request (sluice approval request {id} withdrawn)"
                    ),
                )
            }
        };
        self.totals.denied += 1;
        self.reject(BytesMut::from(&error.to_error().raw[..]), ends_cycle);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn approval_event(
        &self,
        kind: &str,
        decision: &str,
        request_id: &str,
        statement_id: &str,
        text: &str,
        params: &[String],
        rule: &str,
        why: &str,
        mut attrs: serde_json::Value,
    ) -> pb::AuditEvent {
        attrs["request_id"] = request_id.into();
        attrs["statement_id"] = statement_id.into();
        pb::AuditEvent {
            kind: kind.into(),
            session_id: self.ctx.session_id.clone(),
            subject: self.ctx.subject.id.clone(),
            groups: self.ctx.subject.groups.clone(),
            resource: self.ctx.resource.clone(),
            decision: decision.into(),
            rule: rule.into(),
            statement: text.into(),
            parameters: params.to_vec(),
            error: why.into(),
            client_addr: self.ctx.client_addr.clone(),
            attributes_json: attrs.to_string(),
            ..Default::default()
        }
    }

    async fn on_function_call(&mut self, frame: Frame) -> Result<(), SessionError> {
        if !self.batch.is_empty() {
            // Forwarding it now would reorder it ahead of the buffered messages.
            return Err(SessionError::Protocol("a Query or FunctionCall arrived inside an extended-protocol batch; send Sync first".into()));
        }
        let snapshot = self.snapshot();
        let mut verdict = self.judge.function_call(snapshot.as_ref());
        if self.unsynced {
            verdict = after_flush();
        }
        if verdict.allowed && self.ctx.masker.is_some() {
            // Its result (FunctionCallResponse) has no columns to mask by.
            verdict = Verdict {
                rule: verdict.rule,
                reason: "FunctionCall results cannot be masked, and mask rules apply to this session; call the function with SELECT".into(),
                ..Verdict::default()
            };
        }
        if verdict.approval.is_some() {
            // Approvers judge a statement's text; a FunctionCall has none.
            verdict = Verdict {
                rule: verdict.rule,
                reason: "a rule asks for approval, and a FunctionCall message cannot wait for one (it has no statement text for approvers to judge); call the function with SELECT".into(),
                kinds: verdict.kinds,
                ..Verdict::default()
            };
        }
        let statement_id = uuid::Uuid::now_v7().to_string();
        if !verdict.allowed {
            if let Err(e) = self
                .audit_decision(&statement_id, "<FunctionCall>", Vec::new(), &verdict)
                .await
            {
                self.refuse_unaudited(&e.to_string(), true);
                return Ok(());
            }
            self.deny(&verdict, true);
            return Ok(());
        }
        let mut events =
            [self.decision_event(&statement_id, "<FunctionCall>", Vec::new(), &verdict)];
        let intent = match self.ctx.trail.intend(&mut events) {
            Ok(mut tokens) => tokens.pop(),
            Err(e) if !self.ctx.audit_best_effort => {
                self.refuse_unaudited(&e.to_string(), true);
                return Ok(());
            }
            Err(e) => {
                tracing::error!(error = %e, "audit event lost (resource is best_effort); running the call anyway");
                None
            }
        };
        self.ctx.agent.metrics.audit_events.inc();
        self.totals.statements += 1;
        let [event] = events;
        self.units.push_back(self.unit(
            UnitKind::Simple,
            PlannedExecute {
                id: statement_id,
                portal: None,
                text: "<FunctionCall>".into(),
                params: Vec::new(),
                params_digest: NO_PARAMS,
                rule: verdict.rule.clone(),
                limit: None,
                approval: None,
                strict: None,
                judged: None,
                formats: Vec::new(),
                copy_out: Vec::new(),
                copy_in: 0,
            },
            event,
            intent,
        ));
        self.to_server.extend_from_slice(&frame.raw);
        self.cycle_sent();
        Ok(())
    }

    fn note_ddl(&mut self, verdict: &Verdict) {
        if verdict.kinds.iter().any(|k| is_ddl(k)) {
            self.catalog_stale = true;
            self.ddl_in_transaction = true;
        }
    }

    /// Before judging: a fresh read of the target's functions, and of the
    /// catalog masking resolves columns with, when the session's nears
    /// `--catalog-max-age` (the agent then reads it again in the background
    /// and the session goes on with it until the new read is in), another
    /// session's DDL (or the target's notice of DDL) made it out of date,
    /// or this session sent DDL. A view
    /// redefined over a masked column must not be read with the old
    /// definition's columns.
    async fn refresh_catalog(&mut self) -> Result<(), SessionError> {
        let stale = std::mem::take(&mut self.catalog_stale);
        let routines = &self.ctx.agent.pg_routines;
        if stale {
            routines.invalidate(&self.ctx.target.name);
        }
        if stale
            || self.routines_read.0.elapsed() >= routines.ask_again_after()
            || routines.generation() != self.routines_read.1
        {
            let generation = routines.generation();
            let read = routines
                .get(
                    &self.ctx.target,
                    &self.ctx.credential,
                    Duration::from_secs(10),
                    self.ctx.agent.args.max_message_bytes,
                )
                .await;
            match read {
                Ok(read) => {
                    if let Some(masker) = self.ctx.masker.as_mut() {
                        masker.set_routines(read.value.clone());
                    }
                    self.judge.set_routines(Ok(read.value));
                    // An aged read (another is being read) is asked for
                    // again at the next statement.
                    self.routines_read = (read.at, read.generation);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the target's functions; denying statements until it can");
                    self.judge.set_routines(Err(e.to_string()));
                    self.routines_read = (Instant::now(), generation);
                }
            }
        }
        let Some(masker) = self.ctx.masker.as_mut() else {
            return Ok(());
        };
        if !masker.uses_catalog() {
            return Ok(());
        }
        let agent = &self.ctx.agent;
        if stale {
            agent.pg_catalogs.invalidate(&self.ctx.target.name);
        }
        if !stale
            && self.masks_read.0.elapsed() < agent.pg_catalogs.ask_again_after()
            && agent.pg_catalogs.generation() == self.masks_read.1
        {
            return Ok(());
        }
        match agent
            .pg_catalogs
            .get(
                &self.ctx.target,
                &self.ctx.credential,
                Duration::from_secs(10),
                agent.args.max_message_bytes,
            )
            .await
        {
            Ok(read) => {
                masker.set_catalog(read.value);
                self.masks_read = (read.at, read.generation);
            }
            // No read stands in (DDL made the last one out of date, or it
            // is too old): masking by it could pass a redefined view's
            // column in clear.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the target's catalog again for masking; ending the session");
                return Err(SessionError::Ended(format!(
                    "the target's catalog changed and sluice could not read it again to mask results ({e}); connect again shortly"
                )));
            }
        }
        Ok(())
    }

    /// Takes back the count of cycle `cycle`'s Sync (it will not be
    /// answered): every later cycle moves down by one.
    fn uncount_cycle(&mut self, cycle: u64) {
        self.cycles_sent = self.cycles_sent.saturating_sub(1).max(self.cycles_done);
        for u in self.units.iter_mut().filter(|u| u.cycle > cycle) {
            u.cycle -= 1;
        }
        for h in self.held.iter_mut().filter(|h| h.0 > cycle) {
            h.0 -= 1;
        }
        for s in self.substitutes.iter_mut().filter(|s| s.0 > cycle) {
            s.0 -= 1;
        }
        for d in self.describes.iter_mut().filter(|d| d.cycle > cycle) {
            d.cycle -= 1;
        }
        self.names.shift_cycles_after(cycle);
    }

    /// Whether the target may be waiting, or be about to wait, for the
    /// data of a `COPY ... FROM STDIN` this session forwarded: from the
    /// forwarding until the client's CopyDone or CopyFail for it, its error,
    /// or its end. The target ignores a Sync meanwhile; counted, it would
    /// leave the agent expecting one ReadyForQuery too many and pairing
    /// every later result with the statement before it (masking and row
    /// limits by the wrong statement), so the client may send none.
    /// (libpq's Sync with the COPY's Execute is in its batch, forwarded
    /// with it, and uncounted when CopyInResponse arrives.)
    fn copy_pending(&self) -> bool {
        self.units.iter().any(|u| u.copies_left > 0)
    }

    /// Requests forwarded whose ReadyForQuery has not arrived yet.
    fn inflight(&self) -> u64 {
        self.cycles_sent - self.cycles_done
    }

    /// Nothing is under way: no transaction block open on the target, no
    /// request in flight or held for approval, no batch or message partly
    /// received, nothing left for the client. Ending the session here
    /// loses nothing the client sent.
    fn between_transactions(&self, client_reader: &FrameReader) -> bool {
        self.tx_status == b'I'
            && self.inflight() == 0
            && self.units.is_empty()
            && !self.unsynced
            && self.holding.is_none()
            && self.deferred.is_none()
            && self.batch.is_empty()
            && !self.copy_in
            && !self.terminate
            && self.to_client.is_empty()
            && self.to_server.is_empty()
            && self.held.is_empty()
            && client_reader.pending() == 0
    }

    /// A Sync, Query or FunctionCall went to the target.
    fn cycle_sent(&mut self) {
        let cycle = self.cycles_sent;
        if let Some(u) = self
            .units
            .iter_mut()
            .find(|u| u.cycle == cycle && u.copies_left > 0 && matches!(u.kind, UnitKind::Extended))
        {
            u.sync_ignored = true;
        }
        self.cycles_sent += 1;
        self.unsynced = false;
        self.ran_unsynced = false;
    }

    fn unit(
        &self,
        kind: UnitKind,
        x: PlannedExecute,
        event: pb::AuditEvent,
        intent: Option<IntentToken>,
    ) -> Unit {
        let copy_plans = match &self.ctx.masker {
            Some(m) => x
                .copy_out
                .iter()
                .map(|c| m.copy_plan(c, x.strict))
                .collect(),
            None => VecDeque::new(),
        };
        Unit {
            kind,
            cycle: self.cycles_sent,
            event,
            intent,
            started: Instant::now(),
            rows: 0,
            stmt_rows: 0,
            portal: x.portal,
            base: None,
            limit: x.limit,
            withheld: 0,
            error: String::new(),
            capture: Capture::default(),
            strict: x.strict,
            judged: x.judged,
            formats: x.formats,
            plan: None,
            unmaskable: 0,
            copy_withheld: false,
            copies_left: x.copy_in,
            sync_ignored: false,
            copy_plans,
            copy_active: None,
            copy_headers: x.copy_out.iter().map(|c| c.header).collect(),
            copy_rows: None,
        }
    }

    /// Judges a buffered extended-protocol batch ending in Sync or Flush.
    async fn on_batch(&mut self) -> Result<(), SessionError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        // The batch is judged and sent on now; what stays is held by the
        // prepared-statement allowance.
        let _ = self.ctx.batching.hold(0);
        let ends_with_sync = batch.last().is_some_and(|f| f.tag == b'S');
        self.refresh_catalog().await?;
        let snapshot = self.snapshot();
        // First pass: decisions and what each Execute will run, without
        // touching session state until the whole batch is known to pass.
        let mut plan = self.names.plan();
        let mut executes: Vec<PlannedExecute> = Vec::new();
        let mut denial: Option<(Arc<Verdict>, String)> = None;
        // Refused for what the names hold, with PostgreSQL's SQLSTATE for
        // it (54000 for the budget), not denied by policy.
        let mut refused_as: Option<&'static str> = None;
        let refused = |reason: String| {
            Arc::new(Verdict {
                reason,
                ..Verdict::default()
            })
        };
        // A statement ran before this message in the target's open cycle.
        let mut ran = self.ran_unsynced;
        // Portals bound in this batch to a statement that needs approval
        // and not yet executed in it (see the Bind arm).
        let mut awaiting_execute: Vec<String> = Vec::new();
        // What each Describe describes: a statement the agent knows, whose
        // parameter types the target's answer gives.
        let mut described: Vec<Option<Arc<Prepared>>> = Vec::new();
        for frame in &batch {
            let bad = |e: sluice_pgwire::ProtocolError| SessionError::Protocol(e.to_string());
            if ran && !reads_alike(frame) {
                refused_as = Some("0A000");
                let text = messages::parse_parse(frame.body()).map_or_else(
                    |_| format!("<{}>", char::from(frame.tag)),
                    |p| p.query.to_owned(),
                );
                denial = Some((refused(ENCODING_RACE.into()), text));
                break;
            }
            match frame.tag {
                b'P' => {
                    let p = messages::parse_parse(frame.body()).map_err(bad)?;
                    let verdict = self.judge.sql(snapshot.as_ref(), p.query);
                    if !verdict.allowed && verdict.approval.is_none() {
                        denial = Some((verdict, p.query.to_owned()));
                        break;
                    }
                    // Read from the target only for a simple Query.
                    if verdict.executes.is_some() {
                        refused_as = Some("0A000");
                        denial = Some((
                            refused(super::judge::SQL_EXECUTE_ALONE.into()),
                            p.query.to_owned(),
                        ));
                        break;
                    }
                    if let Some(refused) =
                        self.judge
                            .parameter_types(snapshot.as_ref(), &p.param_types, &verdict)
                    {
                        // At most once a second: a client must not make
                        // the agent read the catalog at will.
                        if refused.refusal == Some(super::judge::UNKNOWN_TYPE)
                            && self.routines_read.0.elapsed() >= Duration::from_secs(1)
                        {
                            self.catalog_stale = true;
                        }
                        denial = Some((Arc::new(refused), p.query.to_owned()));
                        break;
                    }
                    if verdict.kinds.iter().any(|k| is_ddl(k)) {
                        self.catalog_stale = true;
                        self.ddl_in_transaction = true;
                    }
                    let planned = plan.parse(
                        p.statement,
                        Arc::new(Prepared {
                            text: p.query.to_owned(),
                            rule: verdict.rule.clone(),
                            row_limit: verdict.row_limit,
                            changes: verdict.prepared.clone(),
                            approval: verdict.approval.is_some().then(|| verdict.clone()),
                            param_types: p.param_types.clone(),
                            described_types: OnceLock::new(),
                            tables_read: verdict.tables_read.clone(),
                            copy_out: verdict.copy_out.clone(),
                            copy_in: verdict.copy_in,
                        }),
                    );
                    if let Err(refusal) = planned {
                        refused_as = Some(refusal.sqlstate());
                        denial = Some((refused(refusal.to_string()), p.query.to_owned()));
                        break;
                    }
                }
                b'B' => {
                    let b = messages::parse_bind(frame.body()).map_err(bad)?;
                    // Binary values of the database's own types (enums,
                    // composites, ...) are read as the target's catalog
                    // describes them.
                    let routines = self.judge.routines();
                    let forms = |oid: i32| routines?.type_form(oid.cast_unsigned());
                    match plan.bind(
                        b.portal,
                        b.statement,
                        |types| b.params_for_audit(types, &forms),
                        params_digest(&b),
                        b.result_formats.clone(),
                    ) {
                        Err(reason) => {
                            refused_as = Some(reason.sqlstate());
                            denial = Some((
                                refused(reason.to_string()),
                                format!("<bind {}>", b.statement),
                            ));
                            break;
                        }
                        // Binding plans the statement, and planning runs
                        // the stable and immutable functions it calls with
                        // constant arguments: it is judged again under the
                        // current policy (one prepared earlier may have
                        // been denied since), and one that needs approval
                        // is bound only with its Execute, for which the
                        // whole batch waits.
                        Ok(prepared) => {
                            let verdict = self.judge.sql(snapshot.as_ref(), &prepared.text);
                            if !verdict.allowed && verdict.approval.is_none() {
                                denial = Some((verdict, prepared.text.clone()));
                                break;
                            }
                            // Binding also makes values of the parameter
                            // types the Parse declared (a domain's CHECK).
                            if let Some(refused) = self.judge.parameter_types(
                                snapshot.as_ref(),
                                &prepared.param_types,
                                &verdict,
                            ) {
                                denial = Some((Arc::new(refused), prepared.text.clone()));
                                break;
                            }
                            awaiting_execute.retain(|p| p != b.portal);
                            if verdict.approval.is_some() {
                                awaiting_execute.push(b.portal.to_owned());
                            }
                        }
                    }
                }
                b'E' => {
                    let (portal, _) = messages::parse_execute(frame.body()).map_err(bad)?;
                    if executes.len() >= MAX_EXECUTES {
                        return Err(SessionError::Protocol(format!(
                            "more than {MAX_EXECUTES} Executes in one batch; send Sync"
                        )));
                    }
                    ran = true;
                    awaiting_execute.retain(|p| p != portal);
                    let p = match plan.execute(portal) {
                        Ok(p) => p,
                        Err(reason) => {
                            refused_as = Some(reason.sqlstate());
                            denial = Some((
                                refused(reason.to_string()),
                                format!("<execute portal {portal}>"),
                            ));
                            break;
                        }
                    };
                    // Judged again under the current policy: a statement
                    // prepared earlier may have been denied since (cached
                    // per snapshot, so this is a lookup).
                    let mut verdict = self.judge.sql(snapshot.as_ref(), &p.statement.text);
                    let bound = fetch_targets(&verdict, |n| plan.fetch_target(n));
                    if let Some(refused) =
                        fetch_refusal(&mut self.judge, snapshot.as_ref(), &verdict, &bound)
                            .or_else(|| masking_refusal(self.ctx.masker.as_ref(), &verdict))
                    {
                        verdict = refused;
                    }
                    if !verdict.allowed && verdict.approval.is_none() {
                        denial = Some((verdict, p.statement.text.clone()));
                        break;
                    }
                    executes.push(PlannedExecute {
                        id: uuid::Uuid::now_v7().to_string(),
                        portal: Some(portal.to_owned()),
                        text: p.statement.text.clone(),
                        params: p.params.clone(),
                        params_digest: p.params_digest,
                        rule: verdict.rule.clone(),
                        limit: verdict.row_limit,
                        approval: verdict.approval.is_some().then(|| verdict.clone()),
                        strict: self.ctx.masker.as_ref().and_then(|m| {
                            m.strict_for_statement(
                                &verdict.tables_read,
                                &verdict.kinds,
                                verdict.fingerprint(),
                            )
                        }),
                        judged: self.ctx.masker.is_some().then(|| verdict.clone()),
                        formats: p.result_formats.clone(),
                        copy_out: p.statement.copy_out.clone(),
                        copy_in: p.statement.copy_in,
                    });
                }
                b'C' => {
                    let (kind, name) = messages::parse_target(frame.body()).map_err(bad)?;
                    plan.close(kind, name);
                }
                b'D' => {
                    let (kind, name) = messages::parse_target(frame.body()).map_err(bad)?;
                    described.push(
                        (kind == b'S')
                            .then(|| plan.statement_described(name))
                            .flatten(),
                    );
                }
                _ => {}
            }
        }
        let ops = plan.into_ops();
        if denial.is_none()
            && let Some(portal) = awaiting_execute.first()
        {
            refused_as = Some("0A000");
            let which = if portal.is_empty() {
                "the unnamed portal".to_owned()
            } else {
                format!("portal \"{portal}\"")
            };
            denial = Some((
                refused(format!(
                    "{which} binds a statement that needs approval without executing it before Sync or Flush, and binding runs functions the statement calls; send its Bind and Execute together"
                )),
                format!("<bind portal {portal}>"),
            ));
        }

        if let Some((verdict, text)) = denial {
            let statement_id = uuid::Uuid::now_v7().to_string();
            if let Err(e) = self
                .audit_decision(&statement_id, &text, Vec::new(), &verdict)
                .await
            {
                // Denied either way; only the record of the denial is missing.
                tracing::error!(error = %e, "cannot audit a denied statement");
            }
            match refused_as {
                Some("54000") => self.refuse_over_budget(&verdict.reason, ends_with_sync),
                Some(code) => self.refuse_name(code, &verdict.reason, ends_with_sync),
                None => self.deny(&verdict, ends_with_sync),
            }
            return Ok(());
        }

        if executes.iter().filter(|x| x.approval.is_some()).count() > 1 {
            let verdict = Verdict {
                reason: "more than one statement that needs approval in one Sync; send them one at a time".into(),
                ..Verdict::default()
            };
            self.deny(&verdict, ends_with_sync);
            return Ok(());
        }
        let needs_approval = executes.iter().any(|x| x.approval.is_some());
        let ready = Ready::Batch {
            batch,
            ends_with_sync,
            ops,
            executes,
            described,
        };
        if needs_approval {
            self.seek_approval(ready).await
        } else {
            self.release(ready, None).await
        }
    }

    fn decision_event(
        &self,
        statement_id: &str,
        text: &str,
        parameters: Vec<String>,
        verdict: &Verdict,
    ) -> pb::AuditEvent {
        pb::AuditEvent {
            kind: "statement".into(),
            session_id: self.ctx.session_id.clone(),
            subject: self.ctx.subject.id.clone(),
            groups: self.ctx.subject.groups.clone(),
            resource: self.ctx.resource.clone(),
            decision: if verdict.allowed {
                "allow".into()
            } else {
                "deny".into()
            },
            rule: verdict.rule.clone(),
            statement: text.to_owned(),
            parameters,
            error: verdict.reason.clone(),
            client_addr: self.ctx.client_addr.clone(),
            attributes_json: statement_attributes(statement_id, "kinds", &verdict.kinds),
            ..Default::default()
        }
    }

    async fn audit_decision(
        &mut self,
        statement_id: &str,
        text: &str,
        parameters: Vec<String>,
        verdict: &Verdict,
    ) -> Result<(), SessionError> {
        let event = self.decision_event(statement_id, text, parameters, verdict);
        if let Err(e) = self.ctx.trail.record(event) {
            if !self.ctx.audit_best_effort {
                return Err(SessionError::Audit(e.to_string()));
            }
            tracing::error!(error = %e, "audit event lost (resource is best_effort); running the statement anyway");
        }
        self.ctx.agent.metrics.audit_events.inc();
        if verdict.allowed {
            self.totals.statements += 1;
        } else {
            self.totals.denied += 1;
        }
        Ok(())
    }

    /// Refuses a request whose audit event could not be spooled: nothing
    /// was forwarded. The session stays usable; the next request tries again.
    fn refuse_unaudited(&mut self, why: &str, with_rfq: bool) {
        self.ctx.agent.metrics.audit_failures.inc();
        let mut out = BytesMut::new();
        let notice = messages::Notice::error("57P03", format!("sluice could not record this statement in its audit log, so it was not run: {why}"))
            .hint("the agent's audit spool is full or unwritable; it recovers once the control plane acknowledges events or the disk accepts writes");
        out.extend_from_slice(&notice.to_error().raw);
        self.reject(out, with_rfq);
    }

    /// Answers a request refused for the session's budget of prepared
    /// statements and portals with 54000, as [`Relay::deny`] does.
    fn refuse_over_budget(&mut self, why: &str, with_rfq: bool) {
        let mut out = BytesMut::new();
        let notice = messages::Notice::error("54000", format!("sluice: {why}; it was not sent to the database"))
            .hint("close prepared statements and portals the session no longer needs (Close, DEALLOCATE), or ask the operator to raise the agent limit named above");
        out.extend_from_slice(&notice.to_error().raw);
        self.reject(out, with_rfq);
    }

    /// Records `event` on the session's trail; when it cannot be (and the
    /// resource does not run unaudited), refuses the request and says
    /// `false`.
    fn recorded(&mut self, event: pb::AuditEvent, ends_cycle: bool) -> bool {
        match self.ctx.trail.record(event) {
            Err(e) if !self.ctx.audit_best_effort => {
                self.refuse_unaudited(&e.to_string(), ends_cycle);
                false
            }
            _ => true,
        }
    }

    /// Answers a request whose prepared statement or portal names do not
    /// allow it, with the SQLSTATE PostgreSQL would use.
    fn refuse_name(&mut self, code: &str, why: &str, with_rfq: bool) {
        let mut out = BytesMut::new();
        let notice = messages::Notice::error(
            code,
            format!("sluice: {why}; it was not sent to the database"),
        );
        out.extend_from_slice(&notice.to_error().raw);
        self.reject(out, with_rfq);
    }

    /// Answers a denied request with 42501 (and ReadyForQuery when the
    /// request ends a cycle), in order behind outstanding responses; one
    /// refused for another reason with its own SQLSTATE.
    fn deny(&mut self, verdict: &Verdict, with_rfq: bool) {
        if let Some(code) = verdict.refusal {
            self.refuse_name(code, &verdict.reason, with_rfq);
            return;
        }
        let mut out = BytesMut::new();
        let who = if verdict.rule.is_empty() {
            "sluice policy".to_owned()
        } else {
            format!("sluice policy rule \"{}\"", verdict.rule)
        };
        let notice = messages::Notice::error("42501", format!("{who} denied this statement: {}", verdict.reason))
            .hint("the statement did not reach the database; `sluice policy explain` shows which rule decides");
        out.extend_from_slice(&notice.to_error().raw);
        self.reject(out, with_rfq);
    }

    /// Answers a request that was not forwarded with `error`: then
    /// ReadyForQuery when the request ends the client's cycle (Sync, Query),
    /// else messages are discarded until Sync, as PostgreSQL does.
    fn reject(&mut self, error: BytesMut, ends_cycle: bool) {
        if self.unsynced || self.tx_status != b'I' || self.inflight() > 0 {
            // Fail the target's cycle the way the statement would have (see
            // the module docs): unsynced work rolls back, a transaction
            // block is aborted, and the status is the target's.
            self.to_server
                .extend_from_slice(&messages::execute(&self.denial_portal, 0).raw);
            self.substitutes.push_back((self.cycles_sent, error));
            if ends_cycle {
                self.to_server.extend_from_slice(&messages::sync().raw);
                self.cycle_sent();
            } else {
                // The client ended its batch with Flush: it expects the error
                // now, and its Sync goes to the target.
                self.to_server.extend_from_slice(&messages::flush().raw);
                self.unsynced = true;
                self.skip_until_sync = true;
            }
            return;
        }
        let mut out = error;
        if ends_cycle {
            out.extend_from_slice(&messages::ready_for_query(self.tx_status).raw);
        } else {
            self.skip_until_sync = true;
        }
        self.emit_synthetic(out);
    }

    fn emit_synthetic(&mut self, bytes: BytesMut) {
        if self.inflight() == 0 && self.held.is_empty() {
            self.to_client.extend_from_slice(&bytes);
        } else {
            self.held_bytes += bytes.len();
            self.held.push_back((self.cycles_sent, bytes));
        }
    }

    fn on_server_bytes(&mut self, reader: &mut FrameReader) -> Result<(), SessionError> {
        while let Some(frame) = reader.next_frame().map_err(|e| match e {
            // A well-formed message the agent will not buffer (a huge row).
            sluice_pgwire::FrameError::BadLength { len, max } if len > max => {
                SessionError::TooMuchArriving(format!(
                    "a message from the target of {len} bytes (a result row or notice) is larger than this agent accepts (--max-message-bytes, {max} bytes); the session is ended"
                ))
            }
            e => SessionError::Upstream(e.to_string()),
        })? {
            self.on_server_frame(frame);
            if let Some(why) = self.fault.take() {
                return Err(SessionError::Unsupported(why));
            }
            if self.copy_in && self.deferred.is_some() {
                // The target waits for the COPY's data, which the client
                // sends, if ever, after what waits here: neither would move.
                return Err(SessionError::Protocol(
                    "a Query or extended-protocol messages arrived where the COPY's data belongs; after COPY ... FROM STDIN, send CopyData and CopyDone (or CopyFail) once CopyInResponse arrives".into(),
                ));
            }
            if let Some(why) = self.unmaskable.take() {
                // The row was not sent; the rest of the result cannot be
                // trusted to line up either: end with an error that says so.
                return Err(SessionError::Unmaskable(why));
            }
        }
        Ok(())
    }

    fn on_server_frame(&mut self, frame: Frame) {
        let current = self.cycles_done;
        if let Some(read) = self
            .lookup
            .as_mut()
            .filter(|l| !l.done && l.cycle == current)
        {
            // The agent's own query: nothing of its answer is the client's
            // but what the target sends unasked (notifications, parameter
            // changes).
            match frame.tag {
                b'D' => {
                    let row = messages::parse_data_row(frame.body())
                        .map(|values| {
                            values
                                .into_iter()
                                .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    read.rows.push(row);
                    return;
                }
                b'E' => {
                    let fields = messages::parse_fields(frame.body()).unwrap_or_default();
                    let field = |code: u8| {
                        fields
                            .iter()
                            .find(|(c, _)| *c == code)
                            .map(|(_, v)| v.as_str())
                    };
                    // The session's end (an idle timeout, a terminated
                    // backend) is the client's to hear of, as it is.
                    if !matches!(field(b'V').or(field(b'S')), Some("FATAL" | "PANIC")) {
                        let message =
                            scrub(field(b'M').unwrap_or("an error"), &self.ctx.credential);
                        read.error = Some(format!("the target answered: {message}"));
                        // A cancel (the client's CancelRequest, or
                        // statement_timeout) is answered as one.
                        read.cancelled = field(b'C') == Some("57014");
                        return;
                    }
                }
                // Ends the agent's cycle as any other, but is not the
                // client's to see.
                b'Z' => read.done = true,
                b'A' | b'S' => {}
                _ => return,
            }
        }
        match frame.tag {
            b'D' if self.ctx.masker.is_some()
                && self
                    .units
                    .front()
                    .is_none_or(|u| u.cycle != self.cycles_done) =>
            {
                // Rows the agent cannot place (no statement of this cycle
                // it forwarded): under masking, never sent unmasked.
                tracing::warn!(session = %self.ctx.session_id, "withholding a row that belongs to no forwarded statement");
                return;
            }
            b'D' => {
                let base = self.front_base();
                if let Some(u) = self.units.front_mut() {
                    u.stmt_rows += 1;
                    if u.limit.is_some_and(|l| base + u.stmt_rows > l) {
                        u.withheld += 1;
                        return;
                    }
                    if let Some(masker) = &self.ctx.masker {
                        let body = frame.body();
                        match off_worker(body.len(), || {
                            masker.rewrite_row(u.plan.as_ref(), &u.formats, body)
                        }) {
                            Ok(None) => {}
                            Ok(Some(body)) => {
                                let masked = Frame::new(b'D', &body);
                                u.capture.row(
                                    masked.body(),
                                    self.record_limits,
                                    &mut self.record_left,
                                );
                                self.to_client.extend_from_slice(&masked.raw);
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(session = %self.ctx.session_id, error = %e, "withholding a row that cannot be masked");
                                u.unmaskable += 1;
                                self.unmaskable.get_or_insert(e);
                                return;
                            }
                        }
                    }
                    u.capture
                        .row(frame.body(), self.record_limits, &mut self.record_left);
                }
            }
            b't' => {
                // The parameter types of the statement the front Describe
                // describes (its RowDescription or NoData follows).
                if let Some(d) = self.describes.front()
                    && d.cycle == self.cycles_done
                    && let Some(statement) = &d.statement
                    && let Ok(types) = messages::parse_parameter_description(frame.body())
                {
                    statement.describe(types);
                }
            }
            b'T' | b'n' => {
                // In an extended cycle a description answers a Describe:
                // the client's, or one the agent added for itself.
                let ours = match self.describes.front() {
                    Some(d) if d.cycle == self.cycles_done => {
                        let ours = d.ours;
                        self.describes.pop_front();
                        ours
                    }
                    _ => false,
                };
                let current = self.cycles_done;
                if frame.tag == b'T'
                    && let Some(u) = self.units.front_mut().filter(|u| u.cycle == current)
                {
                    if let Some(masker) = &self.ctx.masker {
                        let counts = u.judged.as_ref().map_or(&[][..], |v| v.counts.as_slice());
                        u.plan = Some(masker.plan_counting(frame.body(), u.strict, counts));
                    }
                    u.capture.columns(frame.body());
                }
                if ours {
                    return;
                }
            }
            b'H' => {
                if let Some(u) = self.units.front_mut() {
                    // A COPY the agent did not classify (none is expected)
                    // has its header line, if any, counted as a row.
                    u.copy_rows = Some(CopyRows {
                        first: true,
                        header: u.copy_headers.pop_front().unwrap_or(false),
                        binary: frame.body().first() == Some(&1),
                    });
                    if self.ctx.masker.is_some() {
                        // Text, CSV and binary are masked field by field; a
                        // COPY whose options or place the agent cannot read
                        // is withheld.
                        u.copy_active = u.copy_plans.pop_front().flatten();
                        u.copy_withheld = u.copy_active.is_none();
                    }
                }
            }
            b'd' => {
                let base = self.front_base();
                if let Some(u) = self.units.front_mut()
                    && let Some(shape) = u.copy_rows.as_mut()
                    && shape.is_row(frame.body())
                {
                    u.stmt_rows += 1;
                    if u.limit.is_some_and(|l| base + u.stmt_rows > l) {
                        u.withheld += 1;
                        return;
                    }
                }
                if self.units.front().is_some_and(|u| u.copy_withheld) {
                    return;
                }
                if let (Some(masker), Some(u)) = (&self.ctx.masker, self.units.front_mut())
                    && let Some(plan) = u.copy_active.as_mut()
                {
                    let body = frame.body();
                    match off_worker(body.len(), || masker.copy_row(plan, body)) {
                        Ok(None) => {}
                        Ok(Some(row)) => {
                            self.to_client
                                .extend_from_slice(&Frame::new(b'd', &row).raw);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(session = %self.ctx.session_id, error = %e, "withholding a COPY row that cannot be masked");
                            u.unmaskable += 1;
                            self.unmaskable.get_or_insert(e);
                            return;
                        }
                    }
                }
            }
            b'A' => {
                if let Some(masker) = &self.ctx.masker
                    && let Some(masked) = mask_notification(masker, frame.body())
                {
                    self.to_client.extend_from_slice(&masked.raw);
                    return;
                }
            }
            b'1' if !self.names.parse_complete() => {
                tracing::warn!(session = %self.ctx.session_id, "ParseComplete did not match a sent Parse; every prepared statement is now unknown");
            }
            b'2' => match self.names.bind_complete() {
                Some(portal) => {
                    self.portal_rows.remove(&portal);
                }
                None => {
                    tracing::warn!(session = %self.ctx.session_id, "BindComplete did not match a sent Bind; every portal is now unknown");
                    self.portal_rows.clear();
                }
            },
            b'C' => {
                self.copy_in = false;
                let Some(u) = self.units.front_mut() else {
                    self.to_client.extend_from_slice(&frame.raw);
                    return;
                };
                for note in [
                    (u.unmaskable > 0).then(|| format!("sluice: {} rows withheld: they could not be masked", u.unmaskable)),
                    u.copy_withheld.then(|| "sluice: COPY output withheld: mask rules apply to this session and this COPY's output cannot be masked (the agent cannot read its delimiter, quote or escape, or which statement it belongs to); use the default options, or SELECT".to_owned()),
                ]
                .into_iter()
                .flatten()
                {
                    let notice = messages::Notice {
                        severity: "WARNING".into(),
                        code: "01000".into(),
                        message: note,
                        ..Default::default()
                    };
                    self.to_client.extend_from_slice(&notice.to_notice().raw);
                }
                u.unmaskable = 0;
                u.copy_withheld = false;
                u.copy_active = None;
                u.copy_rows = None;
                let rewritten = if u.withheld > 0 {
                    let shown = u.stmt_rows - u.withheld;
                    let notice = messages::Notice {
                        severity: "WARNING".into(),
                        code: "01000".into(),
                        message: format!(
                            "sluice: result limited to {shown} rows by policy; {} more rows withheld",
                            u.withheld
                        ),
                        ..Default::default()
                    };
                    self.to_client.extend_from_slice(&notice.to_notice().raw);
                    let tag = std::str::from_utf8(
                        frame.body().split(|b| *b == 0).next().unwrap_or_default(),
                    )
                    .unwrap_or("SELECT");
                    let verb = tag.rsplit_once(' ').map(|(v, _)| v).unwrap_or(tag);
                    self.to_client.extend_from_slice(
                        &messages::command_complete(&format!("{verb} {shown}")).raw,
                    );
                    u.rows += shown;
                    true
                } else {
                    u.rows += messages::command_rows(frame.body()).unwrap_or(u.stmt_rows);
                    false
                };
                u.stmt_rows = 0;
                u.withheld = 0;
                let extended = matches!(u.kind, UnitKind::Extended);
                if let Some(portal) = &u.portal {
                    self.portal_rows.remove(portal);
                }
                if extended {
                    self.finish_front();
                }
                if rewritten {
                    return;
                }
            }
            b's' if self
                .units
                .front()
                .is_some_and(|u| matches!(u.kind, UnitKind::Extended)) =>
            {
                // Suspended at max_rows: the portal's later Executes continue
                // its row count.
                let base = self.front_base();
                if let Some(u) = self.units.front_mut() {
                    if let Some(portal) = u.portal.clone() {
                        self.portal_rows.insert(portal, base + u.stmt_rows);
                    }
                    if u.withheld > 0 {
                        let notice = messages::Notice {
                            severity: "WARNING".into(),
                            code: "01000".into(),
                            message: format!(
                                "sluice: result limited by policy; {} rows of this fetch withheld",
                                u.withheld
                            ),
                            ..Default::default()
                        };
                        self.to_client.extend_from_slice(&notice.to_notice().raw);
                    }
                    u.rows += u.stmt_rows - u.withheld;
                }
                self.finish_front();
            }
            b'I' if self
                .units
                .front()
                .is_some_and(|u| matches!(u.kind, UnitKind::Extended)) =>
            {
                self.finish_front();
            }
            b'E' | b'N' => {
                let fields = messages::parse_fields(frame.body()).unwrap_or_default();
                if frame.tag == b'E' {
                    // Whatever this cycle still had unanswered was skipped.
                    self.names.cycle_ended(self.cycles_done);
                    let current = self.cycles_done;
                    self.describes.retain(|d| d.cycle != current);
                    if self.is_denial_echo(&fields) {
                        if let Some((_, error)) = self.substitutes.pop_front() {
                            self.to_client.extend_from_slice(&error);
                        }
                        return;
                    }
                }
                // With column masks, the text of an error or notice from a
                // statement that reads masked data may quote a masked value
                // (a failed cast, a constraint, `current_setting(email)`,
                // `email::regclass`, RAISE in a function): withheld, unless
                // its SQLSTATE's message never carries data.
                let current = self.cycles_done;
                let quotes_values = self.ctx.masker.as_ref().is_some_and(|m| {
                    let judged = self
                        .units
                        .front()
                        .filter(|u| u.cycle == current)
                        .and_then(|u| u.judged.as_deref());
                    m.masks_by_origin()
                        && judged.is_none_or(|v| m.reads_masked(&v.tables_read, &v.kinds))
                        && !message_never_quotes_data(&fields)
                });
                let scrubbed: Vec<(u8, String)> = fields
                    .iter()
                    .filter(|(c, _)| !(quotes_values && matches!(*c, b'D' | b'W' | b'H' | b'P' | b'p' | b'q')))
                    .map(|(c, v)| {
                        if quotes_values && *c == b'M' {
                            return (
                                *c,
                                "sluice: the target's message is withheld: this statement reads masked data, which it may quote (the SQLSTATE is the target's)".to_owned(),
                            );
                        }
                        let v = scrub(v, &self.ctx.credential);
                        let v = match (&self.ctx.masker, *c) {
                            // Severity and code are not free text.
                            (Some(m), c) if !matches!(c, b'S' | b'V' | b'C') => {
                                m.mask_str(&v).into_owned()
                            }
                            _ => v,
                        };
                        (*c, v)
                    })
                    .collect();
                if frame.tag == b'E' {
                    // The statement failed (its COPY, at its start or in its
                    // data, or one before it in its Query): the target waits
                    // for no more data for it.
                    let current = self.cycles_done;
                    if let Some(u) = self.units.front_mut().filter(|u| u.cycle == current) {
                        u.copies_left = 0;
                    }
                    self.copy_in = false;
                    let current = self.cycles_done;
                    if let Some(u) = self.units.front_mut().filter(|u| u.cycle == current) {
                        u.error = scrubbed
                            .iter()
                            .find(|(c, _)| *c == b'M')
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        if matches!(u.kind, UnitKind::Extended) {
                            self.finish_front();
                        }
                    }
                }
                if scrubbed != fields {
                    self.to_client
                        .extend_from_slice(&messages::encode_fields(frame.tag, &scrubbed).raw);
                    return;
                }
            }
            b'G' => {
                self.copy_in = true;
                // COPY FROM STDIN through Execute: PostgreSQL ignores a Sync
                // that arrives during copy-in (libpq sends one with the
                // Execute, then another after CopyDone), so the Sync already
                // counted for this cycle will not be answered.
                // Only that Sync: one sent after the client's CopyDone (a
                // batch ended in Flush, its data, then Sync) is answered.
                if let Some(u) = self.units.front_mut()
                    && std::mem::take(&mut u.sync_ignored)
                {
                    let after = u.cycle;
                    self.uncount_cycle(after);
                }
            }
            b'S' => {
                if let Ok((name, value)) = messages::parse_parameter_status(frame.body()) {
                    if name == "standard_conforming_strings" {
                        self.judge.set_standard_conforming_strings(value == "on");
                    }
                    if name.eq_ignore_ascii_case("client_encoding")
                        && !value.eq_ignore_ascii_case("UTF8")
                    {
                        // Statements are judged as UTF-8; in SJIS, BIG5 or
                        // GBK a quote can hide inside a multi-byte
                        // character, so the target would split the next
                        // text differently. Whatever changed it (a function
                        // the classifier cannot see into), the session
                        // cannot go on.
                        tracing::warn!(session = %self.ctx.session_id, encoding = %value, "the target's client_encoding changed; ending the session");
                        self.fault.get_or_insert(format!(
                            "the session's client_encoding was changed to {value}; sluice reads SQL as UTF8 only, so the session is ended"
                        ));
                        return;
                    }
                    // `set_config('application_name', (SELECT email ...))`
                    // would echo a value back in a form no detector knows:
                    // with column masks it is not relayed (drivers do not
                    // need it; the other reported settings are validated).
                    if name.eq_ignore_ascii_case("application_name")
                        && self
                            .ctx
                            .masker
                            .as_ref()
                            .is_some_and(|m| m.masks_by_origin())
                    {
                        return;
                    }
                    // A setting can carry a value (set_config(..., email)).
                    if let Some(masker) = &self.ctx.masker
                        && let std::borrow::Cow::Owned(masked) = masker.mask_str(value)
                    {
                        let masked = messages::parameter_status(name, &masked);
                        self.to_client.extend_from_slice(&masked.raw);
                        return;
                    }
                }
            }
            b'Z' => {
                self.names.cycle_ended(self.cycles_done);
                let current = self.cycles_done;
                self.describes.retain(|d| d.cycle > current);
                if messages::ready_status(frame.body()) == Some(b'I') {
                    // Out of any transaction: PostgreSQL has dropped every
                    // portal (holdable cursors aside, which are SQL-level).
                    self.names.clear_portals();
                    self.portal_rows.clear();
                    // What its DDL defined is now committed (or gone):
                    // every connection's read of the catalog may differ.
                    // Other sessions read again before their next
                    // statement, not when this one sends its next.
                    if std::mem::take(&mut self.ddl_in_transaction) {
                        self.catalog_stale = true;
                        let agent = &self.ctx.agent;
                        agent.pg_routines.invalidate(&self.ctx.target.name);
                        agent.pg_catalogs.invalidate(&self.ctx.target.name);
                    }
                }
                // A substitute whose Execute was skipped after an earlier error.
                while self
                    .substitutes
                    .front()
                    .is_some_and(|(c, _)| *c <= self.cycles_done)
                {
                    self.substitutes.pop_front();
                }
                self.tx_status = messages::ready_status(frame.body()).unwrap_or(b'I');
                if self.lookup.as_ref().is_none_or(|l| l.cycle != current) {
                    self.to_client.extend_from_slice(&frame.raw);
                }
                self.on_ready();
                return;
            }
            // Never show the target's own cancel key to the client.
            b'K' => return,
            _ => {}
        }
        self.to_client.extend_from_slice(&frame.raw);
    }

    fn on_ready(&mut self) {
        // Everything of the finished cycle is done (Executes skipped after
        // an error never produce results).
        while self
            .units
            .front()
            .is_some_and(|u| u.cycle <= self.cycles_done)
        {
            self.finish_front();
        }
        self.cycles_done = (self.cycles_done + 1).min(self.cycles_sent);
        while self.held.front().is_some_and(|h| h.0 <= self.cycles_done) {
            if let Some((_, bytes)) = self.held.pop_front() {
                self.held_bytes = self.held_bytes.saturating_sub(bytes.len());
                self.to_client.extend_from_slice(&bytes);
            }
        }
    }

    /// Rows earlier Executes of the front unit's portal returned.
    fn front_base(&mut self) -> u64 {
        let Some(u) = self.units.front_mut() else {
            return 0;
        };
        *u.base.get_or_insert_with(|| {
            u.portal
                .as_ref()
                .and_then(|p| self.portal_rows.get(p))
                .copied()
                .unwrap_or(0)
        })
    }

    /// The target's error for the Execute of `denial_portal` (see `reject`).
    fn is_denial_echo(&self, fields: &[(u8, String)]) -> bool {
        self.substitutes
            .front()
            .is_some_and(|(c, _)| *c == self.cycles_done)
            && fields.iter().any(|(c, v)| *c == b'C' && v == "34000")
            && fields
                .iter()
                .any(|(c, v)| *c == b'M' && v.contains(&self.denial_portal))
    }

    /// Records the front unit's statement with its outcome.
    fn finish_front(&mut self) {
        self.finish_front_ended(None);
    }

    /// Records the front unit's statement: with its outcome or, when the
    /// session `ended` (why) before an answer or error came, with its
    /// outcome unknown.
    fn finish_front_ended(&mut self, ended: Option<&str>) {
        if let Some(u) = self.units.pop_front() {
            self.totals.rows += u.rows;
            let mut event = u.event;
            if !u.error.is_empty() {
                event.decision = "error".into();
            }
            event.duration_us = i64::try_from(u.started.elapsed().as_micros()).unwrap_or(i64::MAX);
            event.rows = i64::try_from(u.rows).unwrap_or(i64::MAX);
            event.error = u.error;
            if !u.capture.is_empty() {
                push_attribute(&mut event.attributes_json, "result", &u.capture);
            }
            if let Some(why) = ended
                && event.error.is_empty()
            {
                // Sent to the target, never answered in full: it may have
                // run, committed or not.
                event.error = format!(
                    "the session ended before this statement's outcome was known ({why}); it may or may not have run"
                );
                push_attribute(&mut event.attributes_json, "outcome", &"unknown");
            }
            self.ctx.trail.finish(event, u.intent);
        }
    }

    /// Records the statements the session ends with unanswered.
    fn finish_all(&mut self, why: &str) {
        while !self.units.is_empty() {
            self.finish_front_ended(Some(why));
        }
    }
}

/// A NotificationResponse with its payload masked; `None` when unchanged.
fn mask_notification(masker: &super::mask::Masker, body: &[u8]) -> Option<Frame> {
    let (pid, rest) = body.split_at_checked(4)?;
    let mut parts = rest.splitn(3, |b| *b == 0);
    let channel = std::str::from_utf8(parts.next()?).ok()?;
    let payload = std::str::from_utf8(parts.next()?).ok()?;
    let masked = masker.mask_str(payload);
    if matches!(masked, std::borrow::Cow::Borrowed(_)) {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 16);
    out.extend_from_slice(pid);
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(masked.as_bytes());
    out.extend_from_slice(&[0]);
    Some(Frame::new(b'A', &out))
}

/// `{"statement_id": id, field: value}` (no `field` when it is empty),
/// serialized straight to text: this runs for every statement, and
/// building a JSON tree first costs more than the rest of the event.
fn statement_attributes(statement_id: &str, field: &str, value: &impl serde::Serialize) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"statement_id\":");
    out.push_str(&serde_json::to_string(statement_id).unwrap_or_else(|_| "\"\"".into()));
    out.push('}');
    if !field.is_empty() {
        push_attribute(&mut out, field, value);
    }
    out
}

/// Adds `field: value` to `attrs`, a JSON object written by
/// `statement_attributes` (or empty: then it starts one).
fn push_attribute(attrs: &mut String, field: &str, value: &impl serde::Serialize) {
    if attrs.pop() != Some('}') {
        *attrs = "{".into();
    }
    if attrs.len() > 1 {
        attrs.push(',');
    }
    attrs.push_str(&serde_json::to_string(field).unwrap_or_else(|_| "\"\"".into()));
    attrs.push(':');
    attrs.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
    attrs.push('}');
}

/// SHA-256 of the Bind's parameters exactly as sent (see
/// `Bind::feed_params_exact`).
fn params_digest(bind: &messages::Bind<'_>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    bind.feed_params_exact(|piece| ctx.update(piece));
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The parameter digest of a request without parameters (a Query, a
/// FunctionCall): SHA-256 of nothing, as `params_digest` of a Bind without
/// parameters gives.
/// How a retry-mode request the control plane has not confirmed reads.
const UNCONFIRMED: &str =
    "is queued: the control plane has not confirmed it yet, and it cannot be approved until it has";

/// The portals `verdict`'s FETCH and MOVE statements name that were bound
/// through the protocol (what they run, as far as the agent knows); SQL
/// cursors are left out, their DECLARE was judged.
fn fetch_targets(
    verdict: &Verdict,
    target: impl Fn(&str) -> FetchTarget,
) -> Vec<(String, FetchTarget)> {
    verdict
        .fetches
        .iter()
        .map(|name| (name.clone(), target(name)))
        .filter(|(_, t)| !matches!(t, FetchTarget::Cursor))
        .collect()
}

/// A FETCH or MOVE through a portal bound with the protocol runs the
/// statement bound there: refused (as a denial) unless that statement is
/// allowed outright now. One that needs approval may run only through an
/// Execute, which is what an approval covers; one denied since its Parse
/// may not run at all.
fn fetch_refusal(
    judge: &mut Judge,
    snapshot: Option<&Arc<crate::snapshot::Active>>,
    verdict: &Verdict,
    bound: &[(String, FetchTarget)],
) -> Option<Arc<Verdict>> {
    for (name, target) in bound {
        let FetchTarget::Bound(statement) = target else {
            return Some(Arc::new(Verdict {
                reason: format!(
                    "FETCH or MOVE would run portal \"{name}\", which was bound through the protocol in this transaction and may still be on the target (kept by ROLLBACK TO, or by a Close it skipped after an error) running a statement sluice can no longer name; bind it again, or fetch once the transaction has ended"
                ),
                kinds: verdict.kinds.clone(),
                ..Verdict::default()
            }));
        };
        let runs = judge.sql(snapshot, &statement.text);
        if runs.allowed {
            continue;
        }
        let why = if runs.approval.is_some() {
            format!(
                "needs approval ({}), which only an Execute of the portal can carry",
                runs.reason
            )
        } else {
            format!("is denied: {}", runs.reason)
        };
        return Some(Arc::new(Verdict {
            rule: runs.rule.clone(),
            reason: format!("FETCH or MOVE would run portal \"{name}\", whose statement {why}"),
            kinds: verdict.kinds.clone(),
            ..Verdict::default()
        }));
    }
    None
}

/// A statement that would carry masked data past the masks: one that reads
/// the planner's statistics (samples of every column's values,
/// [`sluice_policy::STATISTICS`]) in a session with mask rules, or sets a
/// parameter from masked data (a later statement that reads no table would
/// read it back: `SHOW`, `current_setting`, or other sessions'
/// `application_name` in `pg_stat_activity`).
fn masking_refusal(
    masker: Option<&super::mask::Masker>,
    verdict: &Verdict,
) -> Option<Arc<Verdict>> {
    let m = masker?;
    let statistics = verdict
        .tables_read
        .iter()
        .any(|t| sluice_policy::is_statistics(t));
    if statistics {
        return Some(Arc::new(Verdict {
            reason: format!(
                "{} hold samples of column values from every table, including data that is masked for you",
                sluice_policy::STATISTICS.join(", ")
            ),
            kinds: verdict.kinds.clone(),
            ..Verdict::default()
        }));
    }
    if verdict.copy_out.iter().any(|c| m.copy_unreadable(c)) {
        return Some(Arc::new(Verdict {
            reason: "binary COPY output is read by this session's value detectors, which need each column's type, and the agent does not know them for this COPY (a query's output, or a table's without a column mask rule); use FORMAT text or csv, or SELECT".into(),
            kinds: verdict.kinds.clone(),
            ..Verdict::default()
        }));
    }
    let m = Some(m).filter(|m| m.masks_by_origin())?;
    let sets = verdict.kinds.iter().any(|k| k == "set");
    (sets && m.reads_masked(&verdict.tables_read, &verdict.kinds)).then(|| {
        Arc::new(Verdict {
            reason: "this statement sets a parameter from data that is masked for you, which would carry it past the masks".into(),
            kinds: verdict.kinds.clone(),
            ..Verdict::default()
        })
    })
}

/// Rows at least this large are masked off the runtime's worker (see
/// [`off_worker`]).
const LARGE_ROW: usize = 256 * 1024;

/// Runs `mask` on a row of `len` bytes. Masking scans every byte for the
/// detectors (a large row takes a while): a large one runs
/// [`crate::off_worker`].
fn off_worker<T>(len: usize, mask: impl FnOnce() -> T) -> T {
    if len >= LARGE_ROW {
        crate::off_worker(mask)
    } else {
        mask()
    }
}

/// Whether an error or notice (its `fields`) cannot carry a value the
/// statement read: its SQLSTATE's messages are fixed texts or name objects
/// of the plan, or it is a class 42 error pointing into the client's own
/// text (a position, and no internal query), raised while the text was
/// analysed, before any data was read. Not 42703 as such: `has_column_privilege(t,
/// email, ...)` raises it at run time with the value as the column name.
fn message_never_quotes_data(fields: &[(u8, String)]) -> bool {
    let has = |code: u8| fields.iter().any(|(c, _)| *c == code);
    let fixed = fields.iter().any(|(c, v)| {
        *c == b'C'
            && (matches!(
                v.as_str(),
                "25P02" | "57014" | "40001" | "40P01" | "42501" | "55P03" | "25006"
            ) || ["08", "53", "57P"].iter().any(|class| v.starts_with(class)))
    });
    let analysis = fields
        .iter()
        .any(|(c, v)| *c == b'C' && v.starts_with("42"));
    fixed || (analysis && has(b'P') && !has(b'q'))
}

/// The error a retry-mode statement gets: approval request `request_id`
/// (which `state` describes) must be approved before the statement is sent
/// again, within `ttl`.
/// Who decided a request, for a client's error.
fn decided_by(approvers: &[String]) -> String {
    if approvers.is_empty() {
        "the control plane".to_owned()
    } else {
        approvers.join(", ")
    }
}

fn reason_or_none(reason: &str) -> &str {
    if reason.is_empty() {
        "no reason given"
    } else {
        reason
    }
}

fn retry_notice(
    approvers: &str,
    verdict: &Verdict,
    request_id: &str,
    state: &str,
    ttl: Duration,
) -> messages::Notice {
    messages::Notice::error(
        "42501",
        format!(
            "sluice: this statement needs approval by {approvers} ({}); approval request {request_id} {state}",
            verdict.reason
        ),
    )
    .detail(format!("request id: {request_id}"))
    .hint(format!(
        "once approved (`sluice approvals approve {request_id}`), run exactly the same statement again within {}",
        humantime::format_duration(ttl)
    ))
}

const NO_PARAMS: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `text` as a string constant that reads the same whatever
/// `standard_conforming_strings` and `backslash_quote` are: an escape
/// string, its backslashes doubled and its quotes doubled (`\'` is refused
/// under `backslash_quote = off`).
fn escaped_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        if c == '\\' || c == '\'' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The refusal of a Query or FunctionCall that follows a batch ended in
/// Flush ([`AFTER_FLUSH`]).
fn after_flush() -> Verdict {
    Verdict {
        reason: AFTER_FLUSH.into(),
        refusal: Some("0A000"),
        ..Verdict::default()
    }
}

/// Whether the target reads this message's SQL text and names as the agent
/// does whatever the session's client_encoding: ASCII reads alike in every
/// encoding PostgreSQL accepts from clients. Parameter values are not
/// judged, so they do not count. A malformed message counts as alike: it is
/// refused when it is judged.
fn reads_alike(frame: &Frame) -> bool {
    let body = frame.body();
    if body.is_ascii() {
        // The common case, without parsing the message.
        return true;
    }
    match frame.tag {
        b'Q' => body.is_ascii(),
        b'P' => messages::parse_parse(body)
            .map_or(true, |p| p.statement.is_ascii() && p.query.is_ascii()),
        b'B' => messages::parse_bind(body)
            .map_or(true, |b| b.portal.is_ascii() && b.statement.is_ascii()),
        b'E' => messages::parse_execute(body).map_or(true, |(portal, _)| portal.is_ascii()),
        b'C' | b'D' => messages::parse_target(body).map_or(true, |(_, name)| name.is_ascii()),
        _ => true,
    }
}

fn is_ddl(kind: &str) -> bool {
    matches!(kind, "create" | "alter" | "drop" | "comment")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_headers_and_binary_trailers_are_not_rows() {
        let shape = |header, binary| CopyRows {
            first: true,
            header,
            binary,
        };
        let mut text = shape(true, false);
        assert!(!text.is_row(b"id\tname\n"));
        assert!(text.is_row(b"1\titem 1\n"));
        let mut text = shape(false, false);
        assert!(text.is_row(b"1\titem 1\n"));
        // Binary: the header comes with the first row, or alone with the
        // trailer when there are no rows.
        let header = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
        let mut binary = shape(false, true);
        let first = [&header[..], b"\0\x01\0\0\0\x04\0\0\0\x01"].concat();
        assert!(binary.is_row(&first));
        assert!(binary.is_row(b"\0\x01\0\0\0\x04\0\0\0\x02"));
        assert!(!binary.is_row(b"\xff\xff"));
        let mut empty = shape(false, true);
        assert!(!empty.is_row(&[&header[..], b"\xff\xff"].concat()));
    }

    #[test]
    fn no_params_is_the_digest_of_a_bind_without_parameters() {
        let empty = ring::digest::digest(&ring::digest::SHA256, b"");
        assert_eq!(NO_PARAMS.as_slice(), empty.as_ref());
    }

    #[test]
    fn statement_attributes_are_the_json_object_they_describe() {
        let parse = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap();
        assert_eq!(
            parse(statement_attributes("id-1", "", &())),
            serde_json::json!({ "statement_id": "id-1" })
        );
        let kinds = vec!["select".to_owned(), "we\"ird\n".to_owned()];
        assert_eq!(
            parse(statement_attributes("id \"2\"", "kinds", &kinds)),
            serde_json::json!({ "statement_id": "id \"2\"", "kinds": kinds })
        );
        // Fields added later (an approval, a recorded result) keep it one object.
        let mut attrs = statement_attributes("id-3", "", &());
        push_attribute(&mut attrs, "approval_id", &"r-1");
        push_attribute(&mut attrs, "result", &serde_json::json!({"sets": []}));
        assert_eq!(
            parse(attrs),
            serde_json::json!({ "statement_id": "id-3", "approval_id": "r-1", "result": {"sets": []} })
        );
        let mut empty = String::new();
        push_attribute(&mut empty, "a", &1);
        assert_eq!(parse(empty), serde_json::json!({ "a": 1 }));
    }
}
