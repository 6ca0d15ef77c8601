//! Where result columns come from, for masking by column origin.
//!
//! A RowDescription names each column's table by OID and attribute number
//! (PostgreSQL follows plain column references through aliases, joins,
//! subqueries, CTEs and RETURNING). The agent turns those into
//! `schema.table.column` with the target's catalog, read on a metadata
//! connection of its own (the resource's vault credential) and cached per
//! resource for `--catalog-max-age`, or until a DDL statement on that
//! resource.
//!
//! Views: a view column's origin is the view. The catalog also records
//! which base columns each view depends on, so a view over a masked column
//! or a sensitive table is treated as such (see `mask.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sluice_proto as pb;

use super::upstream::{self, UpstreamError};

/// How long an older read stands in while the catalog cannot be read
/// again (the target is full, or briefly unreachable); past this, the
/// read fails. A read DDL made out of date never stands in: it would
/// judge and mask by what the DDL changed.
const MAX_STALE: Duration = Duration::from_secs(600);

/// How long after a failed read the next one is tried: sessions waiting
/// for a read get the failure at once meanwhile, rather than each trying
/// for the full timeout in turn.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long before a read reaches `--catalog-max-age` the next one starts,
/// in the background, when a session asks for it: at most this, and a
/// quarter of the maximum age. Sessions of a busy resource then never wait
/// for a read only because the last one aged (about 1.3 s on a database of
/// 15,000 relations, every minute), and none is used past the maximum
/// age. A read taking longer, or one for an idle resource, is waited for.
const READ_AHEAD: Duration = Duration::from_secs(15);

/// What the agent reads from a target's catalog, on a metadata connection
/// of its own.
pub trait FromCatalog: Sized + Send + Sync + 'static {
    /// The queries, run in order in one round of simple queries.
    const QUERIES: &'static [&'static str];

    /// Builds the value from each query's rows (text format), in order.
    fn from_rows(results: &[Vec<Vec<Option<String>>>]) -> Self;

    /// Reads it on a fresh metadata connection.
    fn load(
        resource: &pb::Resource,
        credential: &pb::Credential,
        timeout: Duration,
        max_message: u32,
    ) -> impl std::future::Future<Output = Result<Self, UpstreamError>> + Send {
        async move {
            let mut conn =
                upstream::connect(resource, credential, &[], timeout, max_message).await?;
            let read = async {
                // Joins over whole catalogs (recursive ones, too) are
                // estimated to cost enough for JIT compilation, even on an
                // empty database: half a second of compiling for
                // milliseconds of work. Parallel workers cost more than
                // they save on catalogs of 15,000 relations too, and are
                // the target's to give to its clients' queries. A server
                // too old to know a setting refuses it, which changes
                // nothing else.
                for setting in ["SET jit = off", "SET max_parallel_workers_per_gather = 0"] {
                    match conn.simple_query(setting).await {
                        Ok(_) | Err(UpstreamError::Query(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                // A read the agent gives up on stops on the target too,
                // rather than running on after the connection is gone.
                let millis = timeout.as_millis().min(i32::MAX as u128);
                let limit = format!("SET statement_timeout = {millis}");
                conn.simple_query(&limit).await?;
                let mut results = Vec::with_capacity(Self::QUERIES.len());
                for query in Self::QUERIES {
                    results.push(conn.simple_query(query).await?);
                }
                Ok::<_, UpstreamError>(results)
            };
            let result = tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| UpstreamError::Timeout);
            conn.close().await;
            Ok(Self::from_rows(&result??))
        }
    }
}

/// A text cell of a catalog row (empty when NULL or missing).
pub(crate) fn cell(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// The column's type OID (for binary COPY output).
    pub type_oid: u32,
}

#[derive(Debug, Default)]
pub struct Catalog {
    columns: HashMap<(u32, i16), Column>,
    /// Tables and views by OID: (schema, name, is a view).
    relations: HashMap<u32, (String, String, bool)>,
    /// View OID -> base (table OID, attnum) it depends on.
    view_deps: HashMap<u32, HashSet<(u32, i16)>>,
}

impl Catalog {
    pub fn column(&self, table: u32, attnum: i16) -> Option<&Column> {
        self.columns.get(&(table, attnum))
    }

    /// `(schema, name, is_view)` of a relation.
    pub fn relation(&self, oid: u32) -> Option<(&str, &str, bool)> {
        self.relations
            .get(&oid)
            .map(|(s, n, v)| (s.as_str(), n.as_str(), *v))
    }

    /// Columns of relation `oid`.
    pub fn columns_of(&self, oid: u32) -> impl Iterator<Item = &Column> + '_ {
        self.columns
            .iter()
            .filter(move |((table, _), _)| *table == oid)
            .map(|(_, c)| c)
    }

    /// Base columns a view depends on (empty for tables).
    pub fn view_sources(&self, view: u32) -> impl Iterator<Item = (u32, i16)> + '_ {
        self.view_deps.get(&view).into_iter().flatten().copied()
    }

    /// OIDs of relations named `name` (`table` or `schema.table`).
    pub fn relations_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = u32> + 'a {
        let (schema, table) = match name.rsplit_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name),
        };
        self.relations.iter().filter_map(move |(oid, (s, t, _))| {
            (t.eq_ignore_ascii_case(table)
                && schema.is_none_or(|want| want.eq_ignore_ascii_case(s)))
            .then_some(*oid)
        })
    }
}

impl FromCatalog for Catalog {
    const QUERIES: &'static [&'static str] = &[
        "SELECT c.oid::bigint, a.attnum::int, n.nspname, c.relname, a.attname, c.relkind::text, a.atttypid::bigint \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','v','m','p','f')",
        "SELECT DISTINCT r.ev_class::bigint, d.refobjid::bigint, d.refobjsubid::int \
         FROM pg_catalog.pg_rewrite r \
         JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
         WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class AND d.refobjsubid > 0",
    ];

    fn from_rows(results: &[Vec<Vec<Option<String>>>]) -> Self {
        let (columns, deps) = match results {
            [columns, deps] => (columns.as_slice(), deps.as_slice()),
            _ => (&[][..], &[][..]),
        };
        let mut catalog = Self::default();
        let text = cell;
        for row in columns {
            let (Ok(oid), Ok(attnum)) = (text(row, 0).parse::<u32>(), text(row, 1).parse::<i16>())
            else {
                continue;
            };
            let (schema, table, name) = (text(row, 2), text(row, 3), text(row, 4));
            let is_view = matches!(text(row, 5).as_str(), "v" | "m");
            catalog
                .relations
                .entry(oid)
                .or_insert_with(|| (schema.clone(), table.clone(), is_view));
            let type_oid = text(row, 6).parse::<u32>().unwrap_or(0);
            catalog.columns.insert(
                (oid, attnum),
                Column {
                    schema,
                    table,
                    name,
                    type_oid,
                },
            );
        }
        for row in deps {
            let (Ok(view), Ok(base), Ok(attnum)) = (
                text(row, 0).parse::<u32>(),
                text(row, 1).parse::<u32>(),
                text(row, 2).parse::<i16>(),
            ) else {
                continue;
            };
            catalog
                .view_deps
                .entry(view)
                .or_default()
                .insert((base, attnum));
        }
        catalog
    }
}

/// Catalog reads per resource, shared by the agent's sessions: used for
/// `max_age` and read again shortly before, in the background (see
/// [`READ_AHEAD`]), and read again after a DDL statement on the resource.
/// Where a session has to wait for a read, one session reads and those
/// arriving meanwhile wait for its read.
pub struct CatalogCache<T> {
    max_age: Duration,
    /// How long before `max_age` a read is read again in the background.
    ahead: Duration,
    reads: Arc<Reads<T>>,
}

/// The reads of a [`CatalogCache`], shared with its background reads.
struct Reads<T> {
    entries: Mutex<HashMap<String, Slot<T>>>,
    /// Bumped by every invalidation, so sessions holding a read learn
    /// cheaply that they should ask again.
    generation: AtomicU64,
}

/// A read of a target's catalog, and when it was made.
pub struct Read<T> {
    pub value: Arc<T>,
    pub at: Instant,
    /// The [`CatalogCache::generation`] it is current as of: a holder asks
    /// again once the generation has moved on.
    pub generation: u64,
}

impl<T> Read<T> {
    fn as_of(&self, generation: u64) -> Self {
        Self {
            value: self.value.clone(),
            at: self.at,
            generation,
        }
    }
}

struct Slot<T> {
    read: Option<Read<T>>,
    /// Set by an invalidation: the read is not reused.
    expired: bool,
    /// Set by an invalidation for DDL: the read does not stand in when a
    /// new one fails either.
    changed: bool,
    /// The last failure, and when (see [`RETRY_AFTER`]).
    failed: Option<(Instant, UpstreamError)>,
    /// Counts this resource's invalidations: a read that began before one
    /// is out of date when it ends. (The cache's generation counts every
    /// resource's; a read of one target outlives DDL on another.)
    epoch: u64,
    /// Held by the session, or the background task, reading it.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            read: None,
            expired: false,
            changed: false,
            failed: None,
            epoch: 0,
            reading: Arc::default(),
        }
    }
}

impl<T> CatalogCache<T> {
    pub fn new(max_age: Duration) -> Self {
        Self::reading_ahead(max_age, (max_age / 4).min(READ_AHEAD))
    }

    fn reading_ahead(max_age: Duration, ahead: Duration) -> Self {
        Self {
            max_age,
            ahead,
            reads: Arc::new(Reads {
                entries: Mutex::default(),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// How old a read may get before its holder asks for the resource's
    /// catalog again: then it is read again in the background, or it is
    /// past its maximum age and waited for.
    pub fn ask_again_after(&self) -> Duration {
        self.max_age.saturating_sub(self.ahead)
    }
}

/// What [`CatalogCache::cached`] finds.
enum Cached<T> {
    /// A read to use: one younger than `max_age`, or the last good one
    /// standing in for a failed read; and the lock to read the catalog
    /// again in the background, when that is due and no read is under way.
    Use(Read<T>, Option<tokio::sync::OwnedMutexGuard<()>>),
    Failed(UpstreamError),
    Read(Arc<tokio::sync::Mutex<()>>),
}

impl<T: FromCatalog> CatalogCache<T> {
    /// The resource's catalog: the last read when fresh (read again in the
    /// background when it nears `max_age`), else a new one. When reading
    /// fails, the last good read younger than [`MAX_STALE`] stands in for
    /// it, unless DDL made it out of date, while the next read is tried in
    /// the background every [`RETRY_AFTER`].
    pub async fn get(
        &self,
        resource: &pb::Resource,
        credential: &pb::Credential,
        timeout: Duration,
        max_message: u32,
    ) -> Result<Read<T>, UpstreamError> {
        let reading = match self.cached(&resource.name) {
            Cached::Use(read, reading) => {
                if let Some(reading) = reading {
                    self.read_in_background(reading, resource, credential, timeout, max_message);
                }
                return Ok(read);
            }
            Cached::Failed(e) => return Err(e),
            Cached::Read(reading) => reading,
        };
        let _reading = reading.lock().await;
        // Another session may have read it while this one waited.
        match self.cached(&resource.name) {
            Cached::Use(read, _) => return Ok(read),
            Cached::Failed(e) => return Err(e),
            Cached::Read(_) => {}
        }
        let (epoch, generation) = self.reads.epoch(&resource.name);
        let read = load_within(resource, credential, timeout, max_message).await;
        self.reads.store(&resource.name, epoch, generation, read)
    }

    /// Reads the resource's catalog again while sessions go on with the
    /// last read, holding `reading` so that sessions that must wait for a
    /// read (after DDL, or past `max_age`) wait for this one, and then
    /// tell whether it predates the DDL.
    fn read_in_background(
        &self,
        reading: tokio::sync::OwnedMutexGuard<()>,
        resource: &pb::Resource,
        credential: &pb::Credential,
        timeout: Duration,
        max_message: u32,
    ) {
        let reads = self.reads.clone();
        let (resource, credential) = (resource.clone(), credential.clone());
        let (epoch, generation) = reads.epoch(&resource.name);
        tokio::spawn(async move {
            let _reading = reading;
            let read = load_within(&resource, &credential, timeout, max_message).await;
            if let Err(e) = reads.store(&resource.name, epoch, generation, read) {
                tracing::warn!(resource = %resource.name, error = %e, "cannot read the target's catalog again");
            }
        });
    }

    fn cached(&self, resource: &str) -> Cached<T> {
        let mut entries = self.reads.lock();
        // Bumped under this lock: current as of now for a read not expired.
        let generation = self.generation();
        let slot = entries.entry(resource.to_owned()).or_default();
        let retry_due = slot
            .failed
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= RETRY_AFTER);
        let in_background = |slot: &Slot<T>, due: bool| {
            due.then(|| slot.reading.clone().try_lock_owned().ok())
                .flatten()
        };
        if let Some(read) = &slot.read {
            let age = read.at.elapsed();
            if !slot.expired && age < self.max_age {
                let due = age >= self.max_age.saturating_sub(self.ahead) && retry_due;
                return Cached::Use(read.as_of(generation), in_background(slot, due));
            }
            if slot.failed.is_some() && !slot.changed && age < MAX_STALE {
                return Cached::Use(read.as_of(generation), in_background(slot, retry_due));
            }
        }
        if let Some((at, e)) = &slot.failed
            && at.elapsed() < RETRY_AFTER
        {
            return Cached::Failed(e.clone());
        }
        Cached::Read(slot.reading.clone())
    }

    /// Marks a resource's catalog as out of date (a DDL statement ran
    /// there): the next [`CatalogCache::get`] reads it again, and the
    /// last read does not stand in if that fails.
    pub fn invalidate(&self, resource: &str) {
        self.reads.mark(resource, true);
    }

    /// Asks for a new read of a resource's catalog where DDL may have run
    /// unheard (a DDL watch starting to listen): as
    /// [`CatalogCache::invalidate`], but the last read still stands in if
    /// the new one fails.
    pub fn refresh(&self, resource: &str) {
        self.reads.mark(resource, false);
    }

    /// Changes whenever a catalog is invalidated.
    pub fn generation(&self) -> u64 {
        self.reads.generation.load(Ordering::Relaxed)
    }
}

/// Reads `T`, giving up where the connection, the queries (each within
/// `timeout`) or closing the connection would hold a resource's reading
/// for longer: sessions wait for it.
async fn load_within<T: FromCatalog>(
    resource: &pb::Resource,
    credential: &pb::Credential,
    timeout: Duration,
    max_message: u32,
) -> Result<T, UpstreamError> {
    let bound = timeout
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(1));
    tokio::time::timeout(bound, T::load(resource, credential, timeout, max_message))
        .await
        .unwrap_or(Err(UpstreamError::Timeout))
}

impl<T> Reads<T> {
    /// The resource's epoch and the cache's generation, before a read.
    fn epoch(&self, resource: &str) -> (u64, u64) {
        let mut entries = self.lock();
        let epoch = entries.entry(resource.to_owned()).or_default().epoch;
        (epoch, self.generation.load(Ordering::Relaxed))
    }

    /// Keeps a read begun at `epoch` (and the cache's `generation`), or its
    /// failure; for a failure, the last good read when it may stand in.
    fn store(
        &self,
        resource: &str,
        epoch: u64,
        generation: u64,
        read: Result<T, UpstreamError>,
    ) -> Result<Read<T>, UpstreamError> {
        let mut entries = self.lock();
        let slot = entries.entry(resource.to_owned()).or_default();
        match read {
            Ok(read) => {
                let read = Read {
                    value: Arc::new(read),
                    at: Instant::now(),
                    generation,
                };
                slot.read = Some(read.as_of(generation));
                // Invalidated while it was read: it may predate the DDL
                // (or its commit), so the next caller reads again.
                slot.expired = slot.epoch != epoch;
                slot.changed &= slot.expired;
                slot.failed = None;
                Ok(read)
            }
            Err(e) => {
                slot.failed = Some((Instant::now(), e.clone()));
                match &slot.read {
                    Some(read) if !slot.changed && read.at.elapsed() < MAX_STALE => {
                        tracing::warn!(resource, error = %e, "cannot read the target's catalog again; using the read from {}s ago", read.at.elapsed().as_secs());
                        Ok(read.as_of(self.generation.load(Ordering::Relaxed)))
                    }
                    _ => Err(e),
                }
            }
        }
    }

    fn mark(&self, resource: &str, changed: bool) {
        let mut entries = self.lock();
        if let Some(slot) = entries.get_mut(resource) {
            slot.expired = true;
            slot.changed |= changed;
            slot.failed = None;
            slot.epoch += 1;
        }
        // Under the lock, so that what is read under it is current.
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A catalog from literal rows (tests and the masking benchmark).
pub(crate) fn test_catalog(
    columns: &[(u32, i16, &str, &str, &str, bool)],
    deps: &[(u32, u32, i16)],
) -> Catalog {
    let rows: Vec<Vec<Option<String>>> = columns
        .iter()
        .map(|(oid, att, s, t, c, view)| {
            vec![
                Some(oid.to_string()),
                Some(att.to_string()),
                Some((*s).to_owned()),
                Some((*t).to_owned()),
                Some((*c).to_owned()),
                Some(if *view { "v" } else { "r" }.to_owned()),
                Some("25".to_owned()),
            ]
        })
        .collect();
    let deps: Vec<Vec<Option<String>>> = deps
        .iter()
        .map(|(v, b, a)| {
            vec![
                Some(v.to_string()),
                Some(b.to_string()),
                Some(a.to_string()),
            ]
        })
        .collect();
    Catalog::from_rows(&[rows, deps])
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    static LOADS: AtomicUsize = AtomicUsize::new(0);
    static FAIL: AtomicBool = AtomicBool::new(false);
    /// When set, a read waits for this before it finishes.
    static GATE: Mutex<Option<tokio::sync::oneshot::Receiver<()>>> = Mutex::new(None);

    /// A read that counts itself (its value is its number) and fails while
    /// `FAIL` is set.
    #[derive(Debug)]
    struct Counted(usize);

    impl FromCatalog for Counted {
        const QUERIES: &'static [&'static str] = &[];

        fn from_rows(_: &[Vec<Vec<Option<String>>>]) -> Self {
            Self(0)
        }

        async fn load(
            _: &pb::Resource,
            _: &pb::Credential,
            _: Duration,
            _: u32,
        ) -> Result<Self, UpstreamError> {
            let n = LOADS.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = GATE.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            tokio::task::yield_now().await;
            if FAIL.load(Ordering::SeqCst) {
                Err(UpstreamError::Timeout)
            } else {
                Ok(Self(n))
            }
        }
    }

    fn resource(name: &str) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            ..Default::default()
        }
    }

    async fn get(cache: &CatalogCache<Counted>, name: &str) -> Result<usize, UpstreamError> {
        let credential = pb::Credential::default();
        cache
            .get(
                &resource(name),
                &credential,
                Duration::from_secs(1),
                1 << 20,
            )
            .await
            .map(|read| read.value.0)
    }

    /// One test, as the reads are counted in statics.
    #[tokio::test]
    async fn one_session_reads_the_others_wait_and_failures_stand_in_with_the_last_read() {
        let cache = Arc::new(CatalogCache::<Counted>::new(Duration::from_secs(60)));
        // Sessions arriving together: one read, which all of them get.
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { get(&cache, "db").await.map_err(|e| e.to_string()) })
            })
            .collect();
        for session in waiting {
            assert_eq!(session.await.unwrap(), Ok(1));
        }
        assert_eq!(LOADS.load(Ordering::SeqCst), 1);
        assert_eq!(get(&cache, "db").await.unwrap(), 1, "fresh: reused");

        // After DDL it is read again, and sessions hear of it.
        let generation = cache.generation();
        cache.invalidate("db");
        assert_ne!(cache.generation(), generation);
        assert_eq!(get(&cache, "db").await.unwrap(), 2);

        // Invalidated while being read: that read may predate the DDL, so
        // the next caller reads again.
        let (open, gate) = tokio::sync::oneshot::channel();
        *GATE.lock().unwrap() = Some(gate);
        cache.invalidate("db");
        let reading = {
            let cache = cache.clone();
            tokio::spawn(async move { get(&cache, "db").await.map_err(|e| e.to_string()) })
        };
        while LOADS.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        cache.invalidate("db");
        open.send(()).unwrap();
        assert_eq!(reading.await.unwrap(), Ok(3));
        assert_eq!(get(&cache, "db").await.unwrap(), 4);

        // The target cannot be read: the last read stands in, and the next
        // attempt waits for RETRY_AFTER rather than every caller trying.
        FAIL.store(true, Ordering::SeqCst);
        let aged = Arc::new(CatalogCache::<Counted>::new(Duration::ZERO));
        FAIL.store(false, Ordering::SeqCst);
        assert_eq!(get(&aged, "db").await.unwrap(), 5);
        FAIL.store(true, Ordering::SeqCst);
        assert_eq!(get(&aged, "db").await.unwrap(), 5);
        assert_eq!(get(&aged, "db").await.unwrap(), 5);
        assert_eq!(LOADS.load(Ordering::SeqCst), 6);
        // Asked for again without known DDL, it still stands in.
        cache.refresh("db");
        assert_eq!(get(&cache, "db").await.unwrap(), 4);
        assert_eq!(LOADS.load(Ordering::SeqCst), 7);
        // Not a read DDL made out of date: it would judge by what changed.
        cache.invalidate("db");
        assert!(matches!(
            get(&cache, "db").await,
            Err(UpstreamError::Timeout)
        ));
        assert!(matches!(
            get(&cache, "db").await,
            Err(UpstreamError::Timeout)
        ));
        assert_eq!(LOADS.load(Ordering::SeqCst), 8);
        // With no read to stand in, the failure is the answer.
        assert!(matches!(
            get(&cache, "never-read").await,
            Err(UpstreamError::Timeout)
        ));
    }

    /// Reads of the catalog by resource, counted apart from [`Counted`]'s
    /// (tests run in parallel under `cargo test`), each waiting for its
    /// resource's gate when one is set.
    static AGING_LOADS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static AGING_GATES: Mutex<Vec<(String, tokio::sync::oneshot::Receiver<()>)>> =
        Mutex::new(Vec::new());
    /// Resources whose reads fail.
    static AGING_FAILING: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// A read whose value is its number among its resource's reads.
    #[derive(Debug)]
    struct Aging(usize);

    impl FromCatalog for Aging {
        const QUERIES: &'static [&'static str] = &[];

        fn from_rows(_: &[Vec<Vec<Option<String>>>]) -> Self {
            Self(0)
        }

        async fn load(
            resource: &pb::Resource,
            _: &pb::Credential,
            _: Duration,
            _: u32,
        ) -> Result<Self, UpstreamError> {
            let n = {
                let mut loads = AGING_LOADS.lock().unwrap();
                loads.push(resource.name.clone());
                loads.iter().filter(|name| **name == resource.name).count()
            };
            let gate = {
                let mut gates = AGING_GATES.lock().unwrap();
                let at = gates.iter().position(|(name, _)| *name == resource.name);
                at.map(|at| gates.remove(at).1)
            };
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            if AGING_FAILING.lock().unwrap().contains(&resource.name) {
                return Err(UpstreamError::Timeout);
            }
            Ok(Self(n))
        }
    }

    fn aging_loads(name: &str) -> usize {
        AGING_LOADS
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    /// Sets a gate the resource's next read waits at.
    fn gate(name: &str) -> tokio::sync::oneshot::Sender<()> {
        let (open, gate) = tokio::sync::oneshot::channel();
        AGING_GATES.lock().unwrap().push((name.into(), gate));
        open
    }

    async fn get_aging(cache: &CatalogCache<Aging>, name: &str) -> usize {
        let read = cache
            .get(
                &resource(name),
                &pb::Credential::default(),
                Duration::from_secs(1),
                1 << 20,
            )
            .await
            .unwrap();
        read.value.0
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::task::yield_now().await;
        }
    }

    /// Calls `get_aging` until it returns something other than `old`.
    async fn next_read(cache: &CatalogCache<Aging>, name: &str, old: usize) -> usize {
        loop {
            let read = get_aging(cache, name).await;
            if read != old {
                return read;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Lets other tasks run a while, for what must not happen meanwhile.
    async fn a_while() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_read_nearing_its_age_is_used_while_the_next_is_read_but_not_past_its_age_or_ddl() {
        let within = tokio::time::timeout(Duration::from_secs(20), async {
            // Every read is due to be read again at once, and used for an
            // hour.
            let hour = Duration::from_secs(3600);
            let cache = Arc::new(CatalogCache::<Aging>::reading_ahead(hour, hour));
            assert_eq!(get_aging(&cache, "aging").await, 1, "no read yet: read");

            // Due: sessions go on with it while one read runs in the
            // background, rather than waiting for it.
            let open = gate("aging");
            assert_eq!(get_aging(&cache, "aging").await, 1);
            until(|| aging_loads("aging") == 2).await;
            assert_eq!(get_aging(&cache, "aging").await, 1);
            assert_eq!(aging_loads("aging"), 2, "one background read at a time");
            // Another resource's DDL meanwhile does not make it out of date.
            cache.invalidate("elsewhere");
            open.send(()).unwrap();
            assert_eq!(
                next_read(&cache, "aging", 1).await,
                2,
                "the background read is used once it is in"
            );

            // DDL while a background read runs: that read may predate it,
            // so sessions wait for it to end and then read again.
            assert_eq!(get_aging(&cache, "ddl").await, 1);
            let open = gate("ddl");
            assert_eq!(get_aging(&cache, "ddl").await, 1);
            until(|| aging_loads("ddl") == 2).await;
            cache.invalidate("ddl");
            let waiting = {
                let cache = cache.clone();
                tokio::spawn(async move { get_aging(&cache, "ddl").await })
            };
            a_while().await;
            assert!(!waiting.is_finished(), "DDL: no read stands in meanwhile");
            assert_eq!(aging_loads("ddl"), 2);
            open.send(()).unwrap();
            assert_eq!(waiting.await.unwrap(), 3);

            // A background read that fails: the read, still young, is used,
            // and the next attempt waits for RETRY_AFTER.
            assert_eq!(get_aging(&cache, "failing").await, 1);
            AGING_FAILING.lock().unwrap().push("failing".into());
            assert_eq!(get_aging(&cache, "failing").await, 1);
            until(|| aging_loads("failing") == 2).await;
            a_while().await;
            assert_eq!(get_aging(&cache, "failing").await, 1);
            a_while().await;
            assert_eq!(aging_loads("failing"), 2, "no retry before RETRY_AFTER");

            // Past its age a read is not used, even while the next is read
            // in the background: sessions wait for that read.
            let short = Duration::from_millis(200);
            let cache = Arc::new(CatalogCache::<Aging>::reading_ahead(short, short));
            assert_eq!(get_aging(&cache, "aged").await, 1);
            let open = gate("aged");
            assert_eq!(get_aging(&cache, "aged").await, 1);
            until(|| aging_loads("aged") == 2).await;
            tokio::time::sleep(short).await;
            let waiting = {
                let cache = cache.clone();
                tokio::spawn(async move { get_aging(&cache, "aged").await })
            };
            a_while().await;
            assert!(!waiting.is_finished(), "a read past its age was used");
            open.send(()).unwrap();
            assert_eq!(waiting.await.unwrap(), 2);
            assert_eq!(aging_loads("aged"), 2);
        });
        within
            .await
            .expect("a read was waited for where none should be");
    }
}
