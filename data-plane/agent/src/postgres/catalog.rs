//! Where result columns come from, for masking by column origin.
//!
//! A RowDescription names each column's table by OID and attribute number
//! (PostgreSQL follows plain column references through aliases, joins,
//! subqueries, CTEs and RETURNING). The agent turns those into
//! `schema.table.column` with the target's catalog, read on a metadata
//! connection of its own (the resource's vault credential) and cached per
//! resource for [`TTL`], or until a DDL statement on that resource.
//!
//! Views: a view column's origin is the view. The catalog also records
//! which base columns each view depends on, so a view over a masked column
//! or a sensitive table is treated as such (see `mask.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sluice_proto as pb;

use super::upstream::{self, UpstreamError};

/// How long a catalog read is reused.
pub const TTL: Duration = Duration::from_secs(60);

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

    /// Reads the catalog on a fresh metadata connection.
    pub async fn load(
        resource: &pb::Resource,
        credential: &pb::Credential,
        timeout: Duration,
        max_message: u32,
    ) -> Result<Self, UpstreamError> {
        let mut conn = upstream::connect(resource, credential, &[], timeout, max_message).await?;
        let read = async {
            let columns = conn
                .simple_query(
                    "SELECT c.oid::bigint, a.attnum::int, n.nspname, c.relname, a.attname, c.relkind::text, a.atttypid::bigint \
                     FROM pg_catalog.pg_attribute a \
                     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r','v','m','p','f')",
                )
                .await?;
            let deps = conn
                .simple_query(
                    "SELECT DISTINCT r.ev_class::bigint, d.refobjid::bigint, d.refobjsubid::int \
                     FROM pg_catalog.pg_rewrite r \
                     JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
                     WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class AND d.refobjsubid > 0",
                )
                .await?;
            Ok::<_, UpstreamError>((columns, deps))
        };
        let result = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| UpstreamError::Timeout)?;
        conn.close().await;
        let (columns, deps) = result?;
        Ok(Self::from_rows(&columns, &deps))
    }

    fn from_rows(columns: &[Vec<Option<String>>], deps: &[Vec<Option<String>>]) -> Self {
        let mut catalog = Self::default();
        let text =
            |row: &[Option<String>], i: usize| row.get(i).cloned().flatten().unwrap_or_default();
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

/// Catalogs per resource, shared by the agent's sessions.
#[derive(Default)]
pub struct CatalogCache {
    entries: Mutex<HashMap<String, (Instant, Arc<Catalog>)>>,
}

impl CatalogCache {
    /// The resource's catalog, read again when older than [`TTL`] or
    /// invalidated.
    pub async fn get(
        &self,
        resource: &pb::Resource,
        credential: &pb::Credential,
        timeout: Duration,
        max_message: u32,
    ) -> Result<Arc<Catalog>, UpstreamError> {
        if let Some((at, c)) = self.lock().get(&resource.name)
            && at.elapsed() < TTL
        {
            return Ok(c.clone());
        }
        let catalog = Arc::new(Catalog::load(resource, credential, timeout, max_message).await?);
        self.lock()
            .insert(resource.name.clone(), (Instant::now(), catalog.clone()));
        Ok(catalog)
    }

    /// Forgets a resource's catalog (a DDL statement ran there).
    pub fn invalidate(&self, resource: &str) {
        self.lock().remove(resource);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Catalog>)>> {
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
    Catalog::from_rows(&rows, &deps)
}
