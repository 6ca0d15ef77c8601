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
                // milliseconds of work. A server too old to know the
                // setting refuses it, which changes nothing else.
                match conn.simple_query("SET jit = off").await {
                    Ok(_) | Err(UpstreamError::Query(_)) => {}
                    Err(e) => return Err(e),
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

/// Catalog reads per resource, shared by the agent's sessions: read once
/// per `max_age` (one session reads, those arriving meanwhile wait for its
/// read), and again after a DDL statement on the resource.
pub struct CatalogCache<T> {
    max_age: Duration,
    entries: Mutex<HashMap<String, Slot<T>>>,
    /// Bumped by every invalidation, so sessions holding a read learn
    /// cheaply that they should ask again.
    generation: AtomicU64,
}

struct Slot<T> {
    read: Option<(Instant, Arc<T>)>,
    /// Set by an invalidation: the read is not reused.
    expired: bool,
    /// Set by an invalidation for DDL: the read does not stand in when a
    /// new one fails either.
    changed: bool,
    /// The last failure, and when (see [`RETRY_AFTER`]).
    failed: Option<(Instant, UpstreamError)>,
    /// Held by the session reading it.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            read: None,
            expired: false,
            changed: false,
            failed: None,
            reading: Arc::default(),
        }
    }
}

impl<T> CatalogCache<T> {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// How long a read is used.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
}

/// What [`CatalogCache::cached`] finds.
enum Cached<T> {
    Fresh(Arc<T>),
    Failed(UpstreamError),
    Read(Arc<tokio::sync::Mutex<()>>),
}

impl<T: FromCatalog> CatalogCache<T> {
    /// The resource's catalog: the last read when fresh, else a new one.
    /// When the new read fails, a read younger than [`MAX_STALE`] stands
    /// in for it.
    pub async fn get(
        &self,
        resource: &pb::Resource,
        credential: &pb::Credential,
        timeout: Duration,
        max_message: u32,
    ) -> Result<Arc<T>, UpstreamError> {
        let reading = match self.cached(&resource.name) {
            Cached::Fresh(read) => return Ok(read),
            Cached::Failed(e) => return self.stand_in(&resource.name, e),
            Cached::Read(reading) => reading,
        };
        let _reading = reading.lock().await;
        // Another session may have read it while this one waited.
        match self.cached(&resource.name) {
            Cached::Fresh(read) => return Ok(read),
            Cached::Failed(e) => return self.stand_in(&resource.name, e),
            Cached::Read(_) => {}
        }
        let generation = self.generation();
        match T::load(resource, credential, timeout, max_message).await {
            Ok(read) => {
                let read = Arc::new(read);
                let mut entries = self.lock();
                let slot = entries.entry(resource.name.clone()).or_default();
                slot.read = Some((Instant::now(), read.clone()));
                // Invalidated while it was read: it may predate the DDL
                // (or its commit), so the next caller reads again.
                slot.expired = self.generation() != generation;
                slot.changed &= slot.expired;
                slot.failed = None;
                Ok(read)
            }
            Err(e) => {
                self.lock().entry(resource.name.clone()).or_default().failed =
                    Some((Instant::now(), e.clone()));
                self.stand_in(&resource.name, e)
            }
        }
    }

    fn cached(&self, resource: &str) -> Cached<T> {
        let mut entries = self.lock();
        let slot = entries.entry(resource.to_owned()).or_default();
        if let Some((at, read)) = &slot.read
            && !slot.expired
            && at.elapsed() < self.max_age
        {
            return Cached::Fresh(read.clone());
        }
        if let Some((at, e)) = &slot.failed
            && at.elapsed() < RETRY_AFTER
        {
            return Cached::Failed(e.clone());
        }
        Cached::Read(slot.reading.clone())
    }

    /// The last read while it is younger than [`MAX_STALE`] and no DDL
    /// made it out of date, else `e`.
    fn stand_in(&self, resource: &str, e: UpstreamError) -> Result<Arc<T>, UpstreamError> {
        let entries = self.lock();
        let Some(slot) = entries.get(resource) else {
            return Err(e);
        };
        match &slot.read {
            Some((at, read)) if !slot.changed && at.elapsed() < MAX_STALE => {
                tracing::warn!(resource, error = %e, "cannot read the target's catalog again; using the read from {}s ago", at.elapsed().as_secs());
                Ok(read.clone())
            }
            _ => Err(e),
        }
    }

    /// Marks a resource's catalog as out of date (a DDL statement ran
    /// there): the next [`CatalogCache::get`] reads it again, and the
    /// last read does not stand in if that fails.
    pub fn invalidate(&self, resource: &str) {
        self.mark(resource, true);
    }

    /// Asks for a new read of a resource's catalog where DDL may have run
    /// unheard (a DDL watch starting to listen): as
    /// [`CatalogCache::invalidate`], but the last read still stands in if
    /// the new one fails.
    pub fn refresh(&self, resource: &str) {
        self.mark(resource, false);
    }

    fn mark(&self, resource: &str, changed: bool) {
        if let Some(slot) = self.lock().get_mut(resource) {
            slot.expired = true;
            slot.changed |= changed;
            slot.failed = None;
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes whenever a catalog is invalidated.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
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
            .map(|read| read.0)
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
}
