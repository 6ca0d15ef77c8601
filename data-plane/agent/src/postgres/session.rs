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
//!   bound or executed. After an error the agent discards messages until
//!   `Sync`, exactly as PostgreSQL does, so the session stays usable.
//!   What each Execute runs is tracked by [`super::names`].
//! - A denial while the target holds unsynced work (a batch that ended in
//!   Flush) is played through the target: the agent sends an Execute of a
//!   portal that cannot exist, so the target fails the cycle exactly as it
//!   would have failed the statement (the implicit transaction rolls back,
//!   responses stay in order) and the agent replaces that error with its own.
//! - `FunctionCall` is judged as kind `function_call`; COPY data flows only
//!   while the target is in COPY IN state.
//! - Every request is written to the audit spool before it is forwarded;
//!   if that fails, the request is refused.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf as _, BytesMut};
use sluice_pgwire::{Frame, FrameReader, messages};
use sluice_proto as pb;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::watch,
};

use super::{
    capture::{self, Capture},
    io::Stream,
    judge::{Judge, Verdict},
    names::{Names, Prepared},
    upstream::{Upstream, scrub},
};
use crate::{Agent, audit::SessionTrail};

/// Stop reading from one side while this much is queued for the other.
const HIGH_WATER: usize = 4 * 1024 * 1024;
/// Largest extended-protocol batch buffered before a Sync/Flush.
const MAX_BATCH: usize = 64 * 1024 * 1024;

pub struct Context {
    pub agent: Arc<Agent>,
    pub session_id: String,
    pub subject: sluice_policy::Subject,
    pub resource: String,
    pub client_addr: String,
    pub credential: pb::Credential,
    pub idle_timeout: Duration,
    /// The resource's `audit_mode: best_effort`: run statements even when
    /// their audit event cannot be spooled (default: refuse them).
    pub audit_best_effort: bool,
    /// The session's chained audit trail.
    pub trail: SessionTrail,
    /// Set when the session must end (admin kill, revoked grant).
    pub ended: watch::Receiver<Option<String>>,
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
    statement_id: String,
    statement: String,
    parameters: Vec<String>,
    rule: String,
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
}

/// A statement about to be forwarded (an Execute, a Query, a FunctionCall).
struct PlannedExecute {
    id: String,
    portal: Option<String>,
    text: String,
    params: Vec<String>,
    rule: String,
    limit: Option<u64>,
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
    /// Responses made up by the agent, released once `cycles_done` reaches
    /// the number given.
    held: VecDeque<(u64, BytesMut)>,
    /// Errors to show instead of the target's error for the never-existing
    /// portal `denial_portal`, by cycle.
    substitutes: VecDeque<(u64, BytesMut)>,
    denial_portal: String,
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
    #[error("this session was ended: {0}")]
    Ended(String),
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
    let mut judge = Judge::new(ctx.subject.clone(), ctx.resource.clone());
    if let Some((_, v)) = upstream
        .parameters
        .iter()
        .find(|(k, _)| k == "standard_conforming_strings")
    {
        judge.set_standard_conforming_strings(v == "on");
    }
    let args = &ctx.agent.args;
    let record_limits = capture::Limits {
        rows: args.record_rows,
        statement_bytes: args.record_statement_bytes,
    };
    let record_left = args.record_session_bytes;
    let mut relay = Relay {
        ctx,
        judge,
        to_client: BytesMut::with_capacity(16 * 1024),
        to_server: BytesMut::with_capacity(16 * 1024),
        cycles_sent: 0,
        cycles_done: 0,
        unsynced: false,
        held: VecDeque::new(),
        substitutes: VecDeque::new(),
        denial_portal: format!("sluice-denied-{}", uuid::Uuid::new_v4().simple()),
        held_bytes: 0,
        tx_status,
        batch: Vec::new(),
        batch_bytes: 0,
        skip_until_sync: false,
        copy_in: false,
        names: Names::default(),
        portal_rows: HashMap::new(),
        units: VecDeque::new(),
        record_limits,
        record_left,
        totals: Totals::default(),
        terminate: false,
    };
    let idle = relay.ctx.idle_timeout;
    let mut ended = relay.ctx.ended.clone();
    let err = loop {
        // After the client's Terminate, keep relaying until the target has
        // answered everything it was sent and closes the connection.
        let idle_sleep = tokio::time::sleep(idle);
        tokio::select! {
            r = client_r.read_buf(client_reader.buffer()), if relay.to_server.len() < HIGH_WATER && relay.to_client.len() + relay.held_bytes < HIGH_WATER && !relay.terminate => {
                match r {
                    Ok(0) => break None,
                    Ok(_) => {
                        if let Err(e) = relay.on_client_bytes(&mut client_reader).await {
                            break Some(e);
                        }
                    }
                    Err(e) => break Some(e.into()),
                }
            }
            r = server_r.read_buf(server_reader.buffer()), if relay.to_client.len() < HIGH_WATER => {
                match r {
                    Ok(0) => break None,
                    Ok(_) => {
                        if let Err(e) = relay.on_server_bytes(&mut server_reader) {
                            break Some(e);
                        }
                    }
                    Err(e) => break Some(e.into()),
                }
            }
            r = client_w.write(&relay.to_client), if !relay.to_client.is_empty() => {
                match r {
                    Ok(n) => relay.to_client.advance(n),
                    Err(e) => break Some(e.into()),
                }
            }
            r = server_w.write(&relay.to_server), if !relay.to_server.is_empty() => {
                match r {
                    Ok(n) => relay.to_server.advance(n),
                    Err(e) => break Some(e.into()),
                }
            }
            _ = idle_sleep, if relay.inflight() == 0 && relay.units.is_empty() && !relay.unsynced => {
                break Some(SessionError::Idle(idle));
            }
            r = ended.changed() => {
                let why = match r {
                    Ok(()) => ended.borrow_and_update().clone(),
                    Err(_) => Some("the agent is shutting down".into()),
                };
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
        | SessionError::Ended(_)
        | SessionError::Upstream(_)),
    ) = &err
    {
        let code = match e {
            SessionError::Idle(_) => "57P05",
            SessionError::Ended(_) => "57P01",
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
    let _ = client_w.shutdown().await;
    relay.finish_all("session ended");
    (relay.totals, err, relay.ctx.trail)
}

impl Relay {
    async fn on_client_bytes(&mut self, reader: &mut FrameReader) -> Result<(), SessionError> {
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| SessionError::Protocol(e.to_string()))?
        {
            self.on_client_frame(frame).await?;
            if self.terminate {
                break;
            }
        }
        Ok(())
    }

    async fn on_client_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
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
            b'Q' => self.on_query(frame).await,
            b'P' | b'B' | b'E' | b'D' | b'C' => {
                self.batch_bytes += frame.raw.len();
                if self.batch_bytes > MAX_BATCH {
                    return Err(SessionError::Protocol(format!(
                        "more than {MAX_BATCH} bytes of extended-protocol messages without Sync"
                    )));
                }
                self.batch.push(frame);
                Ok(())
            }
            b'S' | b'H' => {
                self.batch.push(frame);
                self.on_batch().await
            }
            b'F' => self.on_function_call(frame).await,
            b'd' | b'c' | b'f' => {
                if !self.copy_in {
                    return Err(SessionError::Protocol("COPY data outside of COPY".into()));
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
        let snapshot = self.snapshot();
        let verdict = self.judge.sql(snapshot.as_ref(), &sql);
        let statement_id = uuid::Uuid::now_v7().to_string();
        if let Err(e) = self
            .audit_decision(&statement_id, &sql, Vec::new(), &verdict)
            .await
        {
            self.refuse_unaudited(&e.to_string(), true);
            return Ok(());
        }
        if !verdict.allowed {
            self.deny(&verdict, true);
            return Ok(());
        }
        if !verdict.prepared.is_empty() {
            let mut plan = self.names.plan();
            plan.sql(&verdict.prepared);
            let ops = plan.into_ops();
            self.names.apply(ops, self.cycles_sent);
        }
        let unit = self.unit(
            UnitKind::Simple,
            PlannedExecute {
                id: statement_id,
                portal: None,
                text: sql,
                params: Vec::new(),
                rule: verdict.rule.clone(),
                limit: verdict.row_limit,
            },
        );
        self.units.push_back(unit);
        self.to_server.extend_from_slice(&frame.raw);
        self.cycle_sent();
        Ok(())
    }

    async fn on_function_call(&mut self, frame: Frame) -> Result<(), SessionError> {
        if !self.batch.is_empty() {
            // Forwarding it now would reorder it ahead of the buffered messages.
            return Err(SessionError::Protocol("a Query or FunctionCall arrived inside an extended-protocol batch; send Sync first".into()));
        }
        let snapshot = self.snapshot();
        let verdict = self.judge.function_call(snapshot.as_ref());
        let statement_id = uuid::Uuid::now_v7().to_string();
        if let Err(e) = self
            .audit_decision(&statement_id, "<FunctionCall>", Vec::new(), &verdict)
            .await
        {
            self.refuse_unaudited(&e.to_string(), true);
            return Ok(());
        }
        if !verdict.allowed {
            self.deny(&verdict, true);
            return Ok(());
        }
        self.units.push_back(self.unit(
            UnitKind::Simple,
            PlannedExecute {
                id: statement_id,
                portal: None,
                text: "<FunctionCall>".into(),
                params: Vec::new(),
                rule: verdict.rule.clone(),
                limit: None,
            },
        ));
        self.to_server.extend_from_slice(&frame.raw);
        self.cycle_sent();
        Ok(())
    }

    /// Requests forwarded whose ReadyForQuery has not arrived yet.
    fn inflight(&self) -> u64 {
        self.cycles_sent - self.cycles_done
    }

    /// A Sync, Query or FunctionCall went to the target.
    fn cycle_sent(&mut self) {
        self.cycles_sent += 1;
        self.unsynced = false;
    }

    fn unit(&self, kind: UnitKind, x: PlannedExecute) -> Unit {
        Unit {
            kind,
            cycle: self.cycles_sent,
            statement_id: x.id,
            statement: x.text,
            parameters: x.params,
            rule: x.rule,
            started: Instant::now(),
            rows: 0,
            stmt_rows: 0,
            portal: x.portal,
            base: None,
            limit: x.limit,
            withheld: 0,
            error: String::new(),
            capture: Capture::default(),
        }
    }

    /// Judges a buffered extended-protocol batch ending in Sync or Flush.
    async fn on_batch(&mut self) -> Result<(), SessionError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let ends_with_sync = batch.last().is_some_and(|f| f.tag == b'S');
        let snapshot = self.snapshot();
        // First pass: decisions and what each Execute will run, without
        // touching session state until the whole batch is known to pass.
        let mut plan = self.names.plan();
        let mut executes: Vec<PlannedExecute> = Vec::new();
        let mut denial: Option<(Arc<Verdict>, String)> = None;
        let refused = |reason: String| {
            Arc::new(Verdict {
                reason,
                ..Verdict::default()
            })
        };
        for frame in &batch {
            let bad = |e: sluice_pgwire::ProtocolError| SessionError::Protocol(e.to_string());
            match frame.tag {
                b'P' => {
                    let p = messages::parse_parse(frame.body()).map_err(bad)?;
                    let verdict = self.judge.sql(snapshot.as_ref(), p.query);
                    if !verdict.allowed {
                        denial = Some((verdict, p.query.to_owned()));
                        break;
                    }
                    plan.parse(
                        p.statement,
                        Arc::new(Prepared {
                            text: p.query.to_owned(),
                            rule: verdict.rule.clone(),
                            row_limit: verdict.row_limit,
                            changes: verdict.prepared.clone(),
                        }),
                    );
                }
                b'B' => {
                    let b = messages::parse_bind(frame.body()).map_err(bad)?;
                    if let Err(reason) = plan.bind(b.portal, b.statement, b.params_for_audit()) {
                        denial = Some((refused(reason), format!("<bind {}>", b.statement)));
                        break;
                    }
                }
                b'E' => {
                    let (portal, _) = messages::parse_execute(frame.body()).map_err(bad)?;
                    match plan.execute(portal) {
                        Ok(p) => executes.push(PlannedExecute {
                            id: uuid::Uuid::now_v7().to_string(),
                            portal: Some(portal.to_owned()),
                            text: p.statement.text.clone(),
                            params: p.params.clone(),
                            rule: p.statement.rule.clone(),
                            limit: p.statement.row_limit,
                        }),
                        Err(reason) => {
                            denial = Some((refused(reason), format!("<execute portal {portal}>")));
                            break;
                        }
                    }
                }
                b'C' => {
                    let (kind, name) = messages::parse_target(frame.body()).map_err(bad)?;
                    plan.close(kind, name);
                }
                _ => {}
            }
        }
        let ops = plan.into_ops();

        if let Some((verdict, text)) = denial {
            let statement_id = uuid::Uuid::now_v7().to_string();
            if let Err(e) = self
                .audit_decision(&statement_id, &text, Vec::new(), &verdict)
                .await
            {
                // Denied either way; only the record of the denial is missing.
                tracing::error!(error = %e, "cannot audit a denied statement");
            }
            self.deny(&verdict, ends_with_sync);
            return Ok(());
        }

        // Audit every execution before anything is forwarded.
        let records = executes.iter().map(|x| {
            let verdict = Verdict {
                allowed: true,
                rule: x.rule.clone(),
                ..Verdict::default()
            };
            self.decision_event(&x.id, &x.text, x.params.clone(), &verdict)
        });
        let records: Vec<pb::AuditEvent> = records.collect();
        let trail = &mut self.ctx.trail;
        if let Err(e) = records
            .into_iter()
            .try_for_each(|e| trail.record(e).map(drop))
        {
            if !self.ctx.audit_best_effort {
                self.refuse_unaudited(&e.to_string(), ends_with_sync);
                return Ok(());
            }
            tracing::error!(error = %e, "audit events lost (resource is best_effort); running the statements anyway");
        }
        self.totals.statements += executes.len() as u64;

        self.names.apply(ops, self.cycles_sent);
        for x in executes {
            let unit = self.unit(UnitKind::Extended, x);
            self.units.push_back(unit);
        }
        for frame in &batch {
            self.to_server.extend_from_slice(&frame.raw);
        }
        if ends_with_sync {
            self.cycle_sent();
        } else {
            self.unsynced = true;
        }
        Ok(())
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
            attributes_json:
                serde_json::json!({ "statement_id": statement_id, "kinds": verdict.kinds })
                    .to_string(),
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

    /// Answers a denied request with 42501 (and ReadyForQuery when the
    /// request ends a cycle), in order behind outstanding responses.
    fn deny(&mut self, verdict: &Verdict, with_rfq: bool) {
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
        if self.unsynced {
            // The target holds unsynced work: fail its cycle the way the
            // statement would have (see the module docs).
            self.to_server
                .extend_from_slice(&messages::execute(&self.denial_portal, 0).raw);
            self.substitutes.push_back((self.cycles_sent, error));
            if ends_cycle {
                self.to_server.extend_from_slice(&messages::sync().raw);
                self.cycle_sent();
            } else {
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
        while let Some(frame) = reader
            .next_frame()
            .map_err(|e| SessionError::Upstream(e.to_string()))?
        {
            self.on_server_frame(frame);
        }
        Ok(())
    }

    fn on_server_frame(&mut self, frame: Frame) {
        match frame.tag {
            b'D' => {
                let base = self.front_base();
                if let Some(u) = self.units.front_mut() {
                    u.stmt_rows += 1;
                    if u.limit.is_some_and(|l| base + u.stmt_rows > l) {
                        u.withheld += 1;
                        return;
                    }
                    u.capture
                        .row(frame.body(), self.record_limits, &mut self.record_left);
                }
            }
            b'T' => {
                if let Some(u) = self.units.front_mut() {
                    u.capture.columns(frame.body());
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
                    if self.is_denial_echo(&fields) {
                        if let Some((_, error)) = self.substitutes.pop_front() {
                            self.to_client.extend_from_slice(&error);
                        }
                        return;
                    }
                }
                let scrubbed: Vec<(u8, String)> = fields
                    .iter()
                    .map(|(c, v)| (*c, scrub(v, &self.ctx.credential)))
                    .collect();
                if frame.tag == b'E' {
                    self.copy_in = false;
                    if let Some(u) = self.units.front_mut() {
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
            b'G' => self.copy_in = true,
            b'S' => {
                if let Ok(("standard_conforming_strings", value)) =
                    messages::parse_parameter_status(frame.body())
                {
                    self.judge.set_standard_conforming_strings(value == "on");
                }
            }
            b'Z' => {
                self.names.cycle_ended(self.cycles_done);
                // A substitute whose Execute was skipped after an earlier error.
                while self
                    .substitutes
                    .front()
                    .is_some_and(|(c, _)| *c <= self.cycles_done)
                {
                    self.substitutes.pop_front();
                }
                self.tx_status = messages::ready_status(frame.body()).unwrap_or(b'I');
                self.to_client.extend_from_slice(&frame.raw);
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

    fn finish_front(&mut self) {
        if let Some(u) = self.units.pop_front() {
            self.totals.rows += u.rows;
            let event = pb::AuditEvent {
                kind: "statement.result".into(),
                session_id: self.ctx.session_id.clone(),
                subject: self.ctx.subject.id.clone(),
                groups: self.ctx.subject.groups.clone(),
                resource: self.ctx.resource.clone(),
                decision: if u.error.is_empty() {
                    "allow".into()
                } else {
                    "error".into()
                },
                rule: u.rule,
                statement: u.statement,
                parameters: u.parameters,
                duration_us: i64::try_from(u.started.elapsed().as_micros()).unwrap_or(i64::MAX),
                rows: i64::try_from(u.rows).unwrap_or(i64::MAX),
                error: u.error,
                client_addr: self.ctx.client_addr.clone(),
                attributes_json: if u.capture.is_empty() {
                    serde_json::json!({ "statement_id": u.statement_id })
                } else {
                    serde_json::json!({ "statement_id": u.statement_id, "result": u.capture })
                }
                .to_string(),
                ..Default::default()
            };
            self.ctx.trail.record_detached(event);
        }
    }

    fn finish_all(&mut self, _why: &str) {
        while !self.units.is_empty() {
            self.finish_front();
        }
    }
}
