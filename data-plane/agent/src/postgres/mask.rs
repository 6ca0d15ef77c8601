//! Masking of result values, in the agent, row by row.
//!
//! A session's mask rules (`mask:` in policy, for its subject and
//! resource) act in three ways:
//! - **by column origin**: a result column whose origin (from the
//!   RowDescription, resolved with the target's catalog) matches a
//!   `columns` pattern is masked whole with the rule's strategy; a view
//!   column counts as the base column of the same name it depends on;
//! - **strict mode**: when a statement reads a `strict_tables` table (or a
//!   view over one), every column without a known origin (expressions,
//!   casts, `to_json(row)`, aggregates, whole-row references, view columns
//!   over the table) is masked too, but for row counts (a select list's
//!   `count(...)`, [`Masker::plan_counting`]);
//! - **by value**: the rule's detectors run over every text value of every
//!   other column, and over notices, errors and notification payloads.
//!
//! `COPY ... TO STDOUT` is masked row by row (text, CSV and binary; fields
//! placed by the table's columns and types; a query's fields have no
//! origin and are masked whole under column rules). A binary COPY whose
//! fields the detectors would have to read without their types is refused
//! before it runs ([`Masker::copy_unreadable`]).
//!
//! Binary-format values of a masked column become NULL (a client cannot
//! decode masked text as an integer); binary values of text types are
//! masked as text; binary numbers, arrays, records, ranges and the
//! database's own enums, composites and domains (their form read with the
//! target's functions, [`Routines::type_form`]) are read as their text
//! form (`sluice_pgwire::binary`) and become NULL when a detector matches,
//! as do binary values of types the agent cannot read that could hold
//! text. `bytea` values are read as their bytes (their text form is hex,
//! which no detector reads) in results, in COPY where the agent knows the
//! columns' types (a table's COPY under column rules), and in text COPY
//! fields of unknown type spelled as `bytea`.
//!
//! Uncertainty masks: a column of a table the catalog does not know
//! (created after it was read) is masked whole, and rows that arrive
//! without a description are masked column by column.

use std::{borrow::Cow, sync::Arc};

use bytes::{BufMut as _, BytesMut};
use sluice_pgwire::{binary::Form, messages};
use sluice_policy::{CopyFormat, CopyOut, MaskSpec, MaskStrategy};

use super::{catalog::Catalog, routines::Routines};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Detectors only.
    Pass,
    /// The whole value, with this strategy.
    Whole(MaskStrategy),
}

/// What to do with each column of one result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// (action, type OID, binary per the description)
    cols: Vec<(Action, u32, bool)>,
}

pub struct Masker {
    specs: Vec<MaskSpec>,
    key: Vec<u8>,
    catalog: Option<Arc<Catalog>>,
    /// The session's read of the target's functions and types, for the
    /// binary form of the database's own types.
    routines: Option<Arc<Routines>>,
}

/// Binary types that cannot hold a detectable value (dates, times,
/// intervals, money, network addresses, geometry, uuid, and arrays of
/// them).
fn is_textless(oid: u32) -> bool {
    matches!(
        oid,
        18 | 1002
            | 1182
            | 1183
            | 1115
            | 1185
            | 1187
            | 1270
            | 791
            | 1041
            | 651
            | 1040
            | 1017
            | 600
            | 603
            | 650
            | 718
            | 774
            | 790
            | 829
            | 869
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 2950
    )
}

/// `bytea`.
const BYTEA: u32 = 17;

/// Type OIDs whose binary form is the text itself.
fn is_text_type(oid: u32) -> bool {
    matches!(oid, 25 | 1043 | 1042 | 19 | 705 | 114)
}

/// Type OIDs any text is a valid value of, so a driver decodes a masked
/// one (`[REDACTED]` is not valid `json`).
fn holds_any_text(oid: u32) -> bool {
    matches!(oid, 25 | 1043 | 1042 | 19 | 705)
}

/// The strategy for a value that is not exactly a masked table column (an
/// expression, a view's column, a whole row, an unknown origin): `partial`
/// keeps every character but letters and digits, and the last four, which
/// shows a reformatted value (`translate(card, '0123456789', ...)`) whole,
/// so such values are redacted instead.
fn whole(strategy: MaskStrategy) -> MaskStrategy {
    match strategy {
        MaskStrategy::Partial => MaskStrategy::Redact,
        other => other,
    }
}

impl Masker {
    /// `catalog` must be given when any spec masks by column or strict
    /// table ([`Masker::needs_catalog`]).
    pub fn new(specs: Vec<MaskSpec>, key: Vec<u8>, catalog: Option<Arc<Catalog>>) -> Self {
        Self {
            specs,
            key,
            catalog,
            routines: None,
        }
    }

    /// Reads the database's own types in binary results as `routines`
    /// (the session's read of the target) says they are sent.
    pub fn set_routines(&mut self, routines: Arc<Routines>) {
        self.routines = Some(routines);
    }

    pub fn needs_catalog(specs: &[MaskSpec]) -> bool {
        specs
            .iter()
            .any(|s| !s.columns.is_empty() || !s.strict_tables.is_empty())
    }

    pub fn specs(&self) -> &[MaskSpec] {
        &self.specs
    }

    /// Whether this masker resolves column origins (needs the catalog).
    pub fn uses_catalog(&self) -> bool {
        self.catalog.is_some()
    }

    /// Uses a fresh read of the catalog (after DDL).
    pub fn set_catalog(&mut self, catalog: Arc<Catalog>) {
        self.catalog = Some(catalog);
    }

    pub fn masks_by_origin(&self) -> bool {
        Self::needs_catalog(&self.specs)
    }

    fn fallback(&self) -> MaskStrategy {
        self.specs
            .iter()
            .find(|s| !s.columns.is_empty() || !s.strict_tables.is_empty())
            .map_or(MaskStrategy::Redact, |s| whole(s.strategy))
    }

    fn column_rule(&self, schema: &str, table: &str, column: &str) -> Option<MaskStrategy> {
        self.specs
            .iter()
            .find(|s| s.masks_column(Some(schema), Some(table), column))
            .map(|s| s.strategy)
    }

    fn strict_rule(&self, schema: &str, table: &str) -> Option<MaskStrategy> {
        let name = format!("{schema}.{table}");
        self.specs
            .iter()
            .find(|s| s.is_strict_table(&name))
            .map(|s| whole(s.strategy))
    }

    /// Strict mode for a statement that reads `tables` (as the classifier
    /// reports them): the strategy of the rule that makes it strict.
    #[cfg(test)]
    pub fn strict_for(&self, tables: &[String]) -> Option<MaskStrategy> {
        self.strict_for_fingerprint(tables, "")
    }

    /// [`Masker::strict_for`], except for rules whose `strict_allow` lists
    /// the statement (by fingerprint).
    fn strict_for_fingerprint(&self, tables: &[String], fingerprint: &str) -> Option<MaskStrategy> {
        let allowed = |s: &&MaskSpec| {
            !fingerprint.is_empty() && s.strict_allow.iter().any(|f| f == fingerprint)
        };
        for t in tables {
            if let Some(s) = self
                .specs
                .iter()
                .find(|s| s.is_strict_table(t) && !allowed(s))
            {
                return Some(s.strategy);
            }
            // A view over a sensitive table is sensitive.
            if let Some(catalog) = &self.catalog {
                for oid in catalog.relations_named(t) {
                    for (base, _) in catalog.view_sources(oid) {
                        if let Some((schema, table, _)) = catalog.relation(base)
                            && let Some(s) = self.strict_rule(schema, table)
                        {
                            return Some(s);
                        }
                    }
                }
            }
        }
        None
    }

    /// Whether a statement that reads `tables` (as the classifier reports
    /// them) with `kinds` may see masked data: it reads a strict table, a
    /// table or a view over one with a masked column, or rows from where
    /// the agent cannot see (`FETCH`, `EXECUTE`). Without the catalog,
    /// whenever a rule masks columns (fail closed). Not on every
    /// statement's path: asked when the target sends an error or notice,
    /// and for a statement that sets a parameter.
    pub fn reads_masked(&self, tables: &[String], kinds: &[String]) -> bool {
        if self.strict_for_statement(tables, kinds, "").is_some() {
            return true;
        }
        if !self.specs.iter().any(|s| !s.columns.is_empty()) {
            return false;
        }
        let Some(catalog) = &self.catalog else {
            return true;
        };
        if kinds.iter().any(|k| k == "fetch" || k == "execute") {
            return true;
        }
        let masked = |oid: u32| {
            catalog
                .columns_of(oid)
                .any(|c| self.column_rule(&c.schema, &c.table, &c.name).is_some())
        };
        tables.iter().any(|t| {
            let mut named = catalog.relations_named(t).peekable();
            // A table the catalog does not know (created since): assume so.
            named.peek().is_none()
                || named.any(|oid| {
                    masked(oid)
                        || catalog.view_sources(oid).any(|(base, attnum)| {
                            catalog.column(base, attnum).is_some_and(|c| {
                                self.column_rule(&c.schema, &c.table, &c.name).is_some()
                            })
                        })
                })
        })
    }

    /// Strict mode for a statement: by the tables it reads, and for
    /// statements whose rows come from elsewhere (`FETCH` from a cursor,
    /// `EXECUTE` of a prepared statement), whenever any rule has strict
    /// tables: the agent cannot see what they read (fail closed).
    pub fn strict_for_statement(
        &self,
        tables: &[String],
        kinds: &[String],
        fingerprint: &str,
    ) -> Option<MaskStrategy> {
        if let Some(s) = self.strict_for_fingerprint(tables, fingerprint) {
            return Some(s);
        }
        if kinds.iter().any(|k| k == "fetch" || k == "execute") {
            return self
                .specs
                .iter()
                .find(|s| !s.strict_tables.is_empty())
                .map(|s| s.strategy);
        }
        None
    }

    /// The plan for a RowDescription, under strict mode `strict`.
    pub fn plan(&self, row_description: &[u8], strict: Option<MaskStrategy>) -> Plan {
        self.plan_counting(row_description, strict, &[])
    }

    /// [`Masker::plan`], leaving readable in strict mode the columns
    /// (0-based) that are PostgreSQL's own `count` (see `Verdict::counts`):
    /// a row count tells nothing the number of rows of a query the same
    /// rules allow does not, so masking it (to NULL, as a number) would
    /// only give a wrong answer.
    pub fn plan_counting(
        &self,
        row_description: &[u8],
        strict: Option<MaskStrategy>,
        counts: &[usize],
    ) -> Plan {
        let Ok(columns) = messages::parse_row_columns(row_description) else {
            return Plan { cols: Vec::new() };
        };
        let cols = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let action = if c.table_oid == 0 && counts.contains(&i) {
                    Action::Pass
                } else {
                    self.action(c.table_oid, c.attnum, strict)
                };
                (action, c.type_oid, c.format == 1)
            })
            .collect();
        Plan { cols }
    }

    fn action(&self, table: u32, attnum: i16, strict: Option<MaskStrategy>) -> Action {
        let strict = strict.map(whole);
        let unknown = || strict.map_or(Action::Pass, Action::Whole);
        if table == 0 || !self.masks_by_origin() {
            return unknown();
        }
        let Some(catalog) = &self.catalog else {
            return Action::Whole(self.fallback());
        };
        let Some((schema, relname, is_view)) = catalog.relation(table) else {
            // A relation newer than the catalog: fail closed.
            return Action::Whole(self.fallback());
        };
        if attnum <= 0 {
            // Whole-row reference (or a system column): masked when the
            // relation holds anything masked or is sensitive.
            if let Some(s) = self.strict_rule(schema, relname) {
                return Action::Whole(s);
            }
            let masked = (1..=1600).find_map(|a| {
                catalog
                    .column(table, a)
                    .and_then(|c| self.column_rule(&c.schema, &c.table, &c.name))
                    .map(whole)
            });
            return masked.map_or_else(unknown, Action::Whole);
        }
        let Some(column) = catalog.column(table, attnum).map(|c| c.name.as_str()) else {
            // A column newer than the catalog: fail closed.
            return Action::Whole(self.fallback());
        };
        if let Some(s) = self.column_rule(schema, relname, column) {
            // A view's column may be computed: only a table's own column
            // keeps a strategy that shows part of the value.
            return Action::Whole(if is_view { whole(s) } else { s });
        }
        if is_view {
            // The catalog says which base columns a view depends on, not
            // which view column shows which: a view column is safe only when
            // it has the name of an unmasked column the view depends on.
            let mut masked_dep = None;
            let mut safe_namesake = false;
            for (base, batt) in catalog.view_sources(table) {
                let Some(bc) = catalog.column(base, batt) else {
                    continue;
                };
                if let Some(s) = self.strict_rule(&bc.schema, &bc.table) {
                    // A view over a sensitive table: no origin to vouch for.
                    return Action::Whole(strict.unwrap_or(s));
                }
                match self.column_rule(&bc.schema, &bc.table, &bc.name).map(whole) {
                    Some(s) if bc.name.eq_ignore_ascii_case(column) => return Action::Whole(s),
                    Some(s) => masked_dep = masked_dep.or(Some(s)),
                    None if bc.name.eq_ignore_ascii_case(column) => safe_namesake = true,
                    None => {}
                }
            }
            if let (Some(s), false) = (masked_dep, safe_namesake) {
                return Action::Whole(s);
            }
        }
        Action::Pass
    }

    /// Rewrites a DataRow body; `None` when nothing changed. `formats` are
    /// the result format codes the client asked for (Bind), empty for text.
    pub fn rewrite_row(
        &self,
        plan: Option<&Plan>,
        formats: &[i16],
        body: &[u8],
    ) -> Result<Option<BytesMut>, String> {
        let values = messages::parse_data_row(body).map_err(|e| e.to_string())?;
        let mut out: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(values.len());
        let mut changed = false;
        for (i, value) in values.into_iter().enumerate() {
            let (action, type_oid, described_binary) = match plan.and_then(|p| p.cols.get(i)) {
                Some(c) => *c,
                // No description: nothing is known about the column.
                None if self.masks_by_origin() => (Action::Whole(self.fallback()), 0, false),
                None => (Action::Pass, 0, false),
            };
            // Binary if the client asked for it (Bind) or the description
            // says so (a portal Describe, a BINARY cursor's FETCH).
            let binary = described_binary
                || match formats.len() {
                    0 => false,
                    1 => formats[0] == 1,
                    _ => formats.get(i).is_some_and(|f| *f == 1),
                };
            let new = match value {
                None => None,
                Some(v) => self.mask_value(action, binary, type_oid, v),
            };
            match new {
                Some(replacement) => {
                    changed = true;
                    out.push(replacement.map(|s| Cow::Owned(s.into_bytes())));
                }
                None => out.push(value.map(Cow::Borrowed)),
            }
        }
        if !changed {
            return Ok(None);
        }
        let mut row = BytesMut::with_capacity(body.len() + 32);
        row.put_i16(i16::try_from(out.len()).map_err(|_| "too many columns".to_owned())?);
        for v in &out {
            match v {
                None => row.put_i32(-1),
                Some(b) => {
                    row.put_i32(i32::try_from(b.len()).map_err(|_| "value too large".to_owned())?);
                    row.put_slice(b);
                }
            }
        }
        Ok(Some(row))
    }

    /// `None`: unchanged; `Some(None)`: SQL NULL; `Some(Some(text))`. A
    /// masked value of a type other than text becomes NULL: `[REDACTED]`
    /// or `***6789` in an `int4`, `timestamptz` or `json` column would
    /// break every driver that decodes the column by the type
    /// RowDescription gives.
    fn mask_value(
        &self,
        action: Action,
        binary: bool,
        type_oid: u32,
        v: &[u8],
    ) -> Option<Option<String>> {
        match self.mask_value_as_text(action, binary, type_oid, v) {
            Some(Some(_)) if !holds_any_text(type_oid) => Some(None),
            masked => masked,
        }
    }

    fn mask_value_as_text(
        &self,
        action: Action,
        binary: bool,
        type_oid: u32,
        v: &[u8],
    ) -> Option<Option<String>> {
        match action {
            Action::Whole(strategy) => {
                if binary && !is_text_type(type_oid) {
                    return Some(None);
                }
                match strategy {
                    MaskStrategy::Redact => Some(Some(sluice_policy::mask::REDACTED.to_owned())),
                    MaskStrategy::Null => Some(None),
                    s => Some(sluice_policy::mask::apply(
                        s,
                        &String::from_utf8_lossy(v),
                        &self.key,
                    )),
                }
            }
            Action::Pass => {
                if type_oid == BYTEA {
                    return self.detect_in_bytes(binary, v);
                }
                if binary && !is_text_type(type_oid) {
                    if !self.specs.iter().any(|s| !s.detectors.is_empty()) {
                        return None;
                    }
                    // Numbers, arrays, records and the database's own types
                    // in binary: read as their text form to run the
                    // detectors; a hit cannot be re-encoded, so it becomes
                    // NULL. Values that cannot hold text are not read (a
                    // date in a record); a type the agent cannot read (an
                    // extension's, geometry, ...) may hold text: NULL.
                    let forms = |oid: i32| {
                        let oid = oid.cast_unsigned();
                        if is_textless(oid) {
                            return Some(Form::Opaque);
                        }
                        self.routines.as_ref()?.type_form(oid)
                    };
                    let oid = type_oid.cast_signed();
                    let Some(text) = sluice_pgwire::binary::text_of_with(oid, v, &forms) else {
                        return Some(None);
                    };
                    return match self.mask_str(&text) {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(_) => Some(None),
                    };
                }
                // Not UTF-8 (the session's encoding should rule that out):
                // read leniently, so a stray byte cannot hide a value from
                // the detectors.
                let mut current = String::from_utf8_lossy(v);
                let mut changed = false;
                for spec in self.specs.iter().filter(|s| !s.detectors.is_empty()) {
                    match sluice_policy::mask_text(
                        &spec.detectors,
                        spec.strategy,
                        &current,
                        &self.key,
                    ) {
                        None => return Some(None),
                        Some(Cow::Owned(s)) => {
                            current = Cow::Owned(s);
                            changed = true;
                        }
                        Some(Cow::Borrowed(_)) => {}
                    }
                }
                changed.then(|| Some(current.into_owned()))
            }
        }
    }

    /// Detectors over a `bytea` value's bytes (its text form, `\x` and hex,
    /// hides them from any detector): a hit becomes NULL.
    fn detect_in_bytes(&self, binary: bool, v: &[u8]) -> Option<Option<String>> {
        if self.specs.iter().all(|s| s.detectors.is_empty()) {
            return None;
        }
        // Text results spell the bytes in hex (`\x...`), or, under
        // `bytea_output = escape`, printable bytes as they are: read as is.
        let decoded = if binary {
            None
        } else {
            v.strip_prefix(b"\\x").and_then(|h| hex::decode(h).ok())
        };
        let text = String::from_utf8_lossy(decoded.as_deref().unwrap_or(v));
        match self.mask_str(&text) {
            Cow::Borrowed(_) => None,
            Cow::Owned(_) => Some(None),
        }
    }

    /// How to mask the output of a `COPY ... TO STDOUT`; `None` when it
    /// cannot be masked (a multi-byte delimiter, quote or escape) and must
    /// be withheld.
    pub fn copy_plan(&self, copy: &CopyOut, strict: Option<MaskStrategy>) -> Option<CopyPlan> {
        let single = |s: &Option<String>, default: u8| -> Option<u8> {
            match s.as_deref() {
                None => Some(default),
                Some(t) if t.len() == 1 => t.bytes().next(),
                Some(_) => None,
            }
        };
        let syntax = match copy.format {
            CopyFormat::Binary => CopySyntax::Binary {
                header_pending: true,
            },
            CopyFormat::Text => CopySyntax::Text {
                delimiter: single(&copy.delimiter, b'\t')?,
            },
            CopyFormat::Csv => {
                let quote = single(&copy.quote, b'"')?;
                CopySyntax::Csv {
                    delimiter: single(&copy.delimiter, b',')?,
                    quote,
                    escape: single(&copy.escape, quote)?,
                }
            }
        };
        let unknown = if self.masks_by_origin() {
            Action::Whole(strict.map_or_else(|| self.fallback(), whole))
        } else {
            Action::Pass
        };
        let fields = match (&copy.table, &self.catalog) {
            (Some(table), Some(catalog)) => match only_one(catalog.relations_named(table)) {
                Some(oid) => {
                    let columns: Vec<(i16, String)> = if copy.columns.is_empty() {
                        (1..=1600)
                            .filter_map(|a| catalog.column(oid, a).map(|c| (a, c.name.clone())))
                            .collect()
                    } else {
                        copy.columns
                            .iter()
                            .map(|name| {
                                let attnum = (1..=1600)
                                    .find(|a| {
                                        catalog.column(oid, *a).is_some_and(|c| c.name == *name)
                                    })
                                    .unwrap_or(-1);
                                (attnum, name.clone())
                            })
                            .collect()
                    };
                    columns
                        .iter()
                        .map(|(attnum, _)| {
                            if *attnum <= 0 {
                                (unknown, 0)
                            } else {
                                let ty = catalog.column(oid, *attnum).map_or(0, |c| c.type_oid);
                                (self.action(oid, *attnum, strict), ty)
                            }
                        })
                        .collect()
                }
                None => Vec::new(),
            },
            // A query's columns have no origin the agent can see.
            (None, _) => Vec::new(),
            (Some(_), None) => Vec::new(),
        };
        // Fields the agent cannot place (a query's, or beyond the table's
        // columns): masked whole when any rule masks by origin.
        let rest = (unknown, 0);
        Some(CopyPlan {
            fields,
            rest,
            syntax,
            header: copy.header && copy.format == CopyFormat::Csv,
        })
    }

    /// Whether a `COPY ... TO STDOUT` is in binary and has fields the
    /// detectors must read whose types the agent does not know (a query's
    /// output, or a table's while no column rule has the catalog read):
    /// each would become NULL, so such a COPY is refused before it runs
    /// rather than sent as NULLs. Fields masked whole by origin (a
    /// query's, under column rules) are NULL by design, as in results.
    pub fn copy_unreadable(&self, copy: &CopyOut) -> bool {
        if copy.format != CopyFormat::Binary || self.specs.iter().all(|s| s.detectors.is_empty()) {
            return false;
        }
        self.copy_plan(copy, None).is_some_and(|plan| {
            let unread = |(action, ty): &(Action, u32)| *action == Action::Pass && *ty == 0;
            plan.fields.iter().any(unread) || (plan.fields.is_empty() && unread(&plan.rest))
        })
    }

    /// Masks one row of COPY output (one CopyData message); `None` when
    /// unchanged, `Err` when it cannot be parsed (withhold it).
    pub fn copy_row(&self, plan: &mut CopyPlan, row: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if plan.header {
            plan.header = false;
            return Ok(None);
        }
        if let CopySyntax::Binary { header_pending } = &mut plan.syntax {
            let skip_header = std::mem::take(header_pending);
            return self.copy_binary_row(&plan.fields, plan.rest, skip_header, row);
        }
        let text = std::str::from_utf8(row).map_err(|_| "COPY row is not UTF-8".to_owned())?;
        let body = text.strip_suffix('\n').unwrap_or(text);
        let body = body.strip_suffix('\r').unwrap_or(body);
        let fields = match plan.syntax {
            CopySyntax::Text { delimiter } => split_text(body, delimiter)?,
            CopySyntax::Csv {
                delimiter,
                quote,
                escape,
            } => split_csv(body, delimiter, quote, escape)?,
            CopySyntax::Binary { .. } => return Err("binary COPY row in text form".into()),
        };
        let mut changed = false;
        let mut out: Vec<Option<String>> = Vec::with_capacity(fields.len());
        for (i, field) in fields.into_iter().enumerate() {
            let (action, ty) = plan.fields.get(i).copied().unwrap_or(plan.rest);
            // Fields are text (a hit is redacted in place); a `bytea`
            // column's are read as the bytes they spell, and so is a field
            // of unknown type spelled as `bytea` is (`\x` and hex: a
            // query's `convert_to(email, ...)`), besides as text.
            let masked = match &field {
                None => None,
                Some(v) if ty == BYTEA => self.mask_value(action, false, BYTEA, v.as_bytes()),
                Some(v) if ty == 0 && action == Action::Pass && spelled_as_bytea(v) => self
                    .mask_value(action, false, BYTEA, v.as_bytes())
                    .or_else(|| self.mask_value(action, false, 25, v.as_bytes())),
                Some(v) => self.mask_value(action, false, 25, v.as_bytes()),
            };
            match masked {
                Some(m) => {
                    changed = true;
                    out.push(m);
                }
                None => out.push(field),
            }
        }
        if !changed {
            return Ok(None);
        }
        let line = match plan.syntax {
            CopySyntax::Text { delimiter } => join_text(&out, delimiter),
            CopySyntax::Csv {
                delimiter,
                quote,
                escape,
            } => join_csv(&out, delimiter, quote, escape),
            CopySyntax::Binary { .. } => return Err("binary COPY row in text form".into()),
        };
        Ok(Some(format!("{line}\n").into_bytes()))
    }

    /// A binary-format COPY message: the file header (first message), then
    /// tuples (field count, then length-prefixed values; -1 ends the data).
    /// Masked values of non-text types become NULL, as in binary results.
    fn copy_binary_row(
        &self,
        fields: &[(Action, u32)],
        rest: (Action, u32),
        header: bool,
        row: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
        let bad = || "malformed binary COPY data".to_owned();
        let mut out = Vec::with_capacity(row.len());
        let mut i = 0;
        if header {
            if !row.starts_with(SIGNATURE) {
                return Err(bad());
            }
            let ext = row
                .get(15..19)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(bad)?;
            i = 19usize.checked_add(ext as usize).ok_or_else(bad)?;
            out.extend_from_slice(row.get(..i).ok_or_else(bad)?);
        }
        let mut changed = false;
        while i < row.len() {
            let count = i16::from_be_bytes(
                row.get(i..i + 2)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(bad)?,
            );
            out.extend_from_slice(&count.to_be_bytes());
            i += 2;
            if count == -1 {
                break; // the trailer
            }
            for k in 0..usize::try_from(count).map_err(|_| bad())? {
                let len = i32::from_be_bytes(
                    row.get(i..i + 4)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(bad)?,
                );
                i += 4;
                let Ok(len) = usize::try_from(len) else {
                    out.extend_from_slice(&(-1i32).to_be_bytes());
                    continue;
                };
                let value = row.get(i..i + len).ok_or_else(bad)?;
                i += len;
                let (action, ty) = fields.get(k).copied().unwrap_or(rest);
                match self.mask_value(action, true, ty, value) {
                    None => {
                        out.extend_from_slice(
                            &i32::try_from(len).map_err(|_| bad())?.to_be_bytes(),
                        );
                        out.extend_from_slice(value);
                    }
                    Some(None) => {
                        changed = true;
                        out.extend_from_slice(&(-1i32).to_be_bytes());
                    }
                    Some(Some(text)) => {
                        changed = true;
                        out.extend_from_slice(
                            &i32::try_from(text.len()).map_err(|_| bad())?.to_be_bytes(),
                        );
                        out.extend_from_slice(text.as_bytes());
                    }
                }
            }
        }
        if i != row.len() {
            return Err(bad());
        }
        Ok(changed.then_some(out))
    }

    /// Runs every detector over free text (notices, errors, payloads); a
    /// match that would become NULL is redacted instead.
    pub fn mask_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut current = Cow::Borrowed(text);
        for spec in self.specs.iter().filter(|s| !s.detectors.is_empty()) {
            let strategy = match spec.strategy {
                MaskStrategy::Null => MaskStrategy::Redact,
                s => s,
            };
            if let Some(Cow::Owned(s)) =
                sluice_policy::mask_text(&spec.detectors, strategy, &current, &self.key)
            {
                current = Cow::Owned(s);
            }
        }
        current
    }
}

/// Whether a text field spells a `bytea` value in hex: `\x` and an even
/// number of hex digits.
fn spelled_as_bytea(v: &str) -> bool {
    v.strip_prefix("\\x")
        .is_some_and(|h| h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The only item, or `None` when there are none or several (an
/// unqualified name two schemas share).
fn only_one<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

/// How one `COPY ... TO STDOUT`'s rows are masked.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    /// Per field, in order: the action and the column's type OID (0 when
    /// unknown).
    fields: Vec<(Action, u32)>,
    /// For fields beyond `fields` (or all, when the origin is unknown).
    rest: (Action, u32),
    syntax: CopySyntax,
    /// The next row is the CSV header.
    header: bool,
}

#[derive(Debug, Clone, Copy)]
enum CopySyntax {
    Text {
        delimiter: u8,
    },
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
    },
    /// The next message starts with the file header.
    Binary {
        header_pending: bool,
    },
}

/// Fields of a text-format COPY row, unescaped; `None` is `\N`.
fn split_text(row: &str, delimiter: u8) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    for raw in row.split(char::from(delimiter)) {
        if raw == "\\N" {
            fields.push(None);
            continue;
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('v') => out.push('\u{b}'),
                Some(other) => out.push(other),
                None => return Err("COPY row ends in a backslash".into()),
            }
        }
        fields.push(Some(out));
    }
    Ok(fields)
}

fn join_text(fields: &[Option<String>], delimiter: u8) -> String {
    let d = char::from(delimiter);
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(d);
        }
        match f {
            None => out.push_str("\\N"),
            Some(v) => {
                for c in v.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if c == d => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out
}

/// Fields of a CSV COPY row; an unquoted empty field is NULL.
fn split_csv(
    row: &str,
    delimiter: u8,
    quote: u8,
    escape: u8,
) -> Result<Vec<Option<String>>, String> {
    let (d, q, e) = (char::from(delimiter), char::from(quote), char::from(escape));
    let mut fields = Vec::new();
    let mut chars = row.chars().peekable();
    loop {
        let mut value = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&q) {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted CSV field".into()),
                    Some(c)
                        if c == e
                            && e != q
                            && matches!(chars.peek(), Some(n) if *n == q || *n == e) =>
                    {
                        value.extend(chars.next());
                    }
                    Some(c) if c == q => {
                        if e == q && chars.peek() == Some(&q) {
                            chars.next();
                            value.push(q);
                        } else {
                            break;
                        }
                    }
                    Some(c) => value.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == d {
                break;
            }
            if quoted {
                return Err("text after a quoted CSV field".into());
            }
            value.push(c);
            chars.next();
        }
        fields.push(if value.is_empty() && !quoted {
            None
        } else {
            Some(value)
        });
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

fn join_csv(fields: &[Option<String>], delimiter: u8, quote: u8, escape: u8) -> String {
    let (d, q, e) = (char::from(delimiter), char::from(quote), char::from(escape));
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(d);
        }
        let Some(v) = f else { continue };
        // Always quoted: an empty string must not read as NULL.
        out.push(q);
        for c in v.chars() {
            if c == q || (c == e && e != q) {
                out.push(e);
            }
            out.push(c);
        }
        out.push(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::catalog::test_catalog;
    use crate::postgres::testing::data_row;
    use sluice_policy::{ColumnPattern, Detector, QualifiedPattern};

    fn spec(
        columns: &[&str],
        detectors: &[Detector],
        strict: &[&str],
        strategy: MaskStrategy,
    ) -> MaskSpec {
        MaskSpec {
            policy: "p".into(),
            rule: "r".into(),
            columns: columns.iter().map(|c| ColumnPattern::parse(c)).collect(),
            detectors: detectors.to_vec(),
            strategy,
            strict_tables: strict.iter().map(|t| QualifiedPattern::parse(t)).collect(),
            strict_allow: Vec::new(),
        }
    }

    fn row_description(cols: &[(&str, u32, i16, u32)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(i16::try_from(cols.len()).unwrap());
        for (name, table, att, ty) in cols {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_u32(*table);
            b.put_i16(*att);
            b.put_u32(*ty);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        b.to_vec()
    }

    fn values(body: &[u8]) -> Vec<Option<String>> {
        messages::parse_data_row(body)
            .unwrap()
            .into_iter()
            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    const CUSTOMERS: u32 = 1000;
    const VIEW: u32 = 2000;

    fn masker(specs: Vec<MaskSpec>) -> Masker {
        let catalog = test_catalog(
            &[
                (CUSTOMERS, 1, "public", "customers", "id", false),
                (CUSTOMERS, 2, "public", "customers", "name", false),
                (CUSTOMERS, 3, "public", "customers", "ssn", false),
                (VIEW, 1, "public", "customer_view", "name", true),
                (VIEW, 2, "public", "customer_view", "id", true),
            ],
            &[(VIEW, CUSTOMERS, 2), (VIEW, CUSTOMERS, 1)],
        );
        Masker::new(specs, b"key".to_vec(), Some(Arc::new(catalog)))
    }

    #[test]
    fn columns_are_masked_by_origin_whatever_their_alias_or_view() {
        let m = masker(vec![spec(
            &["public.customers.name"],
            &[],
            &[],
            MaskStrategy::Redact,
        )]);
        // An alias of the base column, and the view column showing it.
        for description in [
            row_description(&[("who", CUSTOMERS, 2, 25), ("id", CUSTOMERS, 1, 23)]),
            row_description(&[("name", VIEW, 1, 25), ("id", VIEW, 2, 23)]),
        ] {
            let plan = m.plan(&description, None);
            let row = m
                .rewrite_row(
                    Some(&plan),
                    &[],
                    &data_row(&[Some(b"Alice Canary"), Some(b"7")]),
                )
                .unwrap()
                .unwrap();
            assert_eq!(values(&row), [Some("[REDACTED]".into()), Some("7".into())]);
        }
    }

    #[test]
    fn a_renamed_view_column_over_a_masked_column_is_masked() {
        // CREATE VIEW v AS SELECT id, name AS who FROM customers; with the
        // name masked: `who` has no unmasked namesake, `id` has.
        let catalog = test_catalog(
            &[
                (CUSTOMERS, 1, "public", "customers", "id", false),
                (CUSTOMERS, 2, "public", "customers", "name", false),
                (VIEW, 1, "public", "v", "id", true),
                (VIEW, 2, "public", "v", "who", true),
            ],
            &[(VIEW, CUSTOMERS, 1), (VIEW, CUSTOMERS, 2)],
        );
        let m = Masker::new(
            vec![spec(
                &["public.customers.name"],
                &[],
                &[],
                MaskStrategy::Redact,
            )],
            b"k".to_vec(),
            Some(Arc::new(catalog)),
        );
        let plan = m.plan(
            &row_description(&[("id", VIEW, 1, 23), ("who", VIEW, 2, 25)]),
            None,
        );
        let row = m
            .rewrite_row(Some(&plan), &[], &data_row(&[Some(b"7"), Some(b"Alice")]))
            .unwrap()
            .unwrap();
        assert_eq!(values(&row), [Some("7".into()), Some("[REDACTED]".into())]);
        // A column the catalog does not know yet is masked.
        let plan = m.plan(&row_description(&[("x", CUSTOMERS, 9, 25)]), None);
        let row = m
            .rewrite_row(Some(&plan), &[], &data_row(&[Some(b"v")]))
            .unwrap()
            .unwrap();
        assert_eq!(values(&row), [Some("[REDACTED]".into())]);
    }

    #[test]
    fn binary_values_are_read_for_detectors_and_null_when_unreadable_or_hit() {
        let m = Masker::new(
            vec![spec(
                &[],
                &[Detector::Email, Detector::CreditCard],
                &[],
                MaskStrategy::Redact,
            )],
            b"k".to_vec(),
            None,
        );
        // numeric 1.5 and 4111111111111111, int4[] {1,2}, text[] {a@b.example},
        // then an unreadable numeric, a type the agent does not read
        // (a database's own, OID 16500) and a timestamp (kept: no text in it).
        let plan = m.plan(
            &row_description(&[
                ("n", 0, 0, 1700),
                ("card", 0, 0, 1700),
                ("ints", 0, 0, 1007),
                ("emails", 0, 0, 1009),
                ("bad", 0, 0, 1700),
                ("own", 0, 0, 16500),
                ("t", 0, 0, 1114),
            ]),
            None,
        );
        let numeric = |weight: i16, dscale: u16, digits: &[u16]| {
            let mut v = u16::try_from(digits.len()).unwrap().to_be_bytes().to_vec();
            v.extend_from_slice(&weight.to_be_bytes());
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&dscale.to_be_bytes());
            digits
                .iter()
                .for_each(|d| v.extend_from_slice(&d.to_be_bytes()));
            v
        };
        let array = |element: i32, items: &[&[u8]]| {
            let mut v = [1i32, 0, element, i32::try_from(items.len()).unwrap(), 1]
                .iter()
                .flat_map(|n| n.to_be_bytes())
                .collect::<Vec<u8>>();
            for item in items {
                v.extend_from_slice(&i32::try_from(item.len()).unwrap().to_be_bytes());
                v.extend_from_slice(item);
            }
            v
        };
        let (one, two) = (1i32.to_be_bytes(), 2i32.to_be_bytes());
        let row = m
            .rewrite_row(
                Some(&plan),
                &[1],
                &data_row(&[
                    Some(&numeric(0, 1, &[1, 5000])),
                    Some(&numeric(3, 0, &[4111, 1111, 1111, 1111])),
                    Some(&array(23, &[&one, &two])),
                    Some(&array(25, &[b"a@b.example"])),
                    Some(&[0, 1]),
                    Some(b"a@b.example"),
                    Some(&[0; 8]),
                ]),
            )
            .unwrap()
            .unwrap();
        let v = messages::parse_data_row(&row).unwrap();
        assert!(v[0].is_some() && v[2].is_some() && v[6].is_some(), "{v:?}");
        assert_eq!((v[1], v[3], v[4], v[5]), (None, None, None, None));
    }

    #[test]
    fn strict_mode_masks_what_has_no_known_origin() {
        let m = masker(vec![spec(
            &["*.ssn"],
            &[],
            &["public.customers"],
            MaskStrategy::Redact,
        )]);
        assert_eq!(
            m.strict_for(&["customers".into()]),
            Some(MaskStrategy::Redact)
        );
        assert_eq!(
            m.strict_for(&["public.customer_view".into()]),
            Some(MaskStrategy::Redact)
        );
        assert_eq!(m.strict_for(&["orders".into()]), None);
        let strict = m.strict_for(&["customers".into()]);
        // An expression, a whole-row reference, and a plain safe column.
        let plan = m.plan(
            &row_description(&[
                ("concat", 0, 0, 25),
                ("c", CUSTOMERS, 0, 2249),
                ("id", CUSTOMERS, 1, 23),
            ]),
            strict,
        );
        let row = m
            .rewrite_row(
                Some(&plan),
                &[],
                &data_row(&[Some(b"Alice/123-45-6789"), Some(b"(1,Alice)"), Some(b"1")]),
            )
            .unwrap()
            .unwrap();
        // The row is not text: masked, it is NULL, which a driver decoding
        // a record can read.
        assert_eq!(
            values(&row),
            [Some("[REDACTED]".into()), None, Some("1".into())]
        );
    }

    #[test]
    fn partial_keeps_its_shape_only_on_the_masked_column_itself() {
        let m = masker(vec![spec(
            &["*.ssn"],
            &[],
            &["public.customers"],
            MaskStrategy::Partial,
        )]);
        let strict = m.strict_for(&["customers".into()]);
        // The column, then the column reformatted by an expression.
        let plan = m.plan(
            &row_description(&[("ssn", CUSTOMERS, 3, 25), ("translate", 0, 0, 25)]),
            strict,
        );
        let row = m
            .rewrite_row(
                Some(&plan),
                &[],
                &data_row(&[Some(b"123-45-6789"), Some(b"!#$-%^-&*()")]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            values(&row),
            [Some("***-**-6789".into()), Some("[REDACTED]".into())]
        );
    }

    #[test]
    fn a_value_that_is_not_utf8_cannot_hide_from_the_detectors() {
        let m = Masker::new(
            vec![spec(&[], &[Detector::Email], &[], MaskStrategy::Redact)],
            b"k".to_vec(),
            None,
        );
        let plan = m.plan(&row_description(&[("note", 0, 0, 25)]), None);
        // A LATIN1 byte after the address (a session whose encoding was
        // changed under the agent).
        let row = m
            .rewrite_row(Some(&plan), &[], &data_row(&[Some(b"ada@example.com\xe9")]))
            .unwrap()
            .unwrap();
        let v = values(&row);
        assert!(
            !v[0].as_deref().unwrap().contains("ada@example.com"),
            "{v:?}"
        );
        // Nothing found: left as it was.
        assert!(
            m.rewrite_row(Some(&plan), &[], &data_row(&[Some(b"caf\xe9")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn detectors_mask_values_in_any_column_and_binary_hits_become_null() {
        let m = Masker::new(
            vec![spec(
                &[],
                &[Detector::Email, Detector::CreditCard],
                &[],
                MaskStrategy::Partial,
            )],
            b"k".to_vec(),
            None,
        );
        let plan = m.plan(
            &row_description(&[("note", 0, 0, 25), ("card", 0, 0, 20)]),
            None,
        );
        let text = m
            .rewrite_row(
                Some(&plan),
                &[],
                &data_row(&[Some(b"mail ann@example.com"), Some(b"4111111111111111")]),
            )
            .unwrap()
            .unwrap();
        let v = values(&text);
        assert!(
            !v[0].as_deref().unwrap().contains("ann@example.com"),
            "{v:?}"
        );
        // A number the detector finds cannot hold its masked text: NULL,
        // as in binary format.
        assert_eq!(v[1], None);
        let card = 4_111_111_111_111_111_i64.to_be_bytes();
        let binary = m
            .rewrite_row(
                Some(&plan),
                &[1],
                &data_row(&[Some(b"no secrets"), Some(&card)]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(values(&binary), [Some("no secrets".into()), None]);
        // An order id that fails Luhn stays.
        let ok = 4_111_111_111_111_112_i64.to_be_bytes();
        assert!(
            m.rewrite_row(Some(&plan), &[1], &data_row(&[None, Some(&ok)]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn detectors_read_the_bytes_of_bytea_values() {
        let m = Masker::new(
            vec![spec(&[], &[Detector::Email], &[], MaskStrategy::Redact)],
            b"k".to_vec(),
            None,
        );
        let plan = m.plan(&row_description(&[("blob", 0, 0, 17)]), None);
        let row =
            |formats: &[i16], v: &[u8]| m.rewrite_row(Some(&plan), formats, &data_row(&[Some(v)]));
        let email = b"to ann@example.com";
        // Text results spell bytea in hex; binary ones send the bytes.
        let hex = format!("\\x{}", hex::encode(email));
        let masked = row(&[], hex.as_bytes()).unwrap().unwrap();
        assert_eq!(values(&masked), [None]);
        assert_eq!(values(&row(&[1], email).unwrap().unwrap()), [None]);
        // Bytes with no hit pass in both forms, binary ones too (they were
        // NULL before the bytes were read).
        let image = [0x89, b'P', b'N', b'G', 0, 0xff, 0xfe];
        assert!(row(&[1], &image).unwrap().is_none());
        let hex = format!("\\x{}", hex::encode(image));
        assert!(row(&[], hex.as_bytes()).unwrap().is_none());
        // `bytea_output = escape` prints the text as is.
        assert_eq!(values(&row(&[], email).unwrap().unwrap()), [None]);
    }

    #[test]
    fn copy_under_detectors_alone_reads_hex_fields_and_knows_binary_it_cannot_read() {
        let m = Masker::new(
            vec![spec(&[], &[Detector::Email], &[], MaskStrategy::Redact)],
            b"k".to_vec(),
            None,
        );
        let query = CopyOut::default();
        let mut plan = m.copy_plan(&query, None).unwrap();
        // A field of unknown type spelled as bytea is read as its bytes
        // too; one that only looks like hex text passes.
        let hex = format!("1\t\\\\x{}\t\\\\xabc\n", hex::encode("ann@example.com"));
        let row = m.copy_row(&mut plan, hex.as_bytes()).unwrap().unwrap();
        assert_eq!(String::from_utf8(row).unwrap(), "1\t\\N\t\\\\xabc\n");
        assert!(m.copy_row(&mut plan, b"2\t\\\\x6e6f\n").unwrap().is_none());
        // Binary: a query's and a table's (no catalog) are unreadable; text
        // is not.
        let binary = |table: Option<&str>| CopyOut {
            table: table.map(str::to_owned),
            format: CopyFormat::Binary,
            ..CopyOut::default()
        };
        assert!(m.copy_unreadable(&binary(None)));
        assert!(m.copy_unreadable(&binary(Some("customers"))));
        assert!(!m.copy_unreadable(&query));
        // Without detectors nothing needs reading.
        let origin = masker(vec![spec(
            &["public.customers.ssn"],
            &[],
            &[],
            MaskStrategy::Redact,
        )]);
        assert!(!origin.copy_unreadable(&binary(None)));
    }

    #[test]
    fn copy_rows_are_masked_field_by_field_in_text_and_csv() {
        let m = masker(vec![spec(
            &["public.customers.ssn"],
            &[Detector::Email],
            &[],
            MaskStrategy::Redact,
        )]);
        let copy = CopyOut {
            table: Some("customers".into()),
            ..CopyOut::default()
        };
        let mut plan = m.copy_plan(&copy, None).unwrap();
        let row = m
            .copy_row(&mut plan, b"1\tAnn\\tab\t219-09-9999\n")
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8(row).unwrap(), "1\tAnn\\tab\t[REDACTED]\n");
        assert!(
            m.copy_row(&mut plan, b"2\tBo\t\\N\n").unwrap().is_none(),
            "NULL stays"
        );

        let csv = CopyOut {
            table: Some("public.customers".into()),
            columns: vec!["name".into(), "ssn".into()],
            format: CopyFormat::Csv,
            header: true,
            ..CopyOut::default()
        };
        let mut plan = m.copy_plan(&csv, None).unwrap();
        assert!(
            m.copy_row(&mut plan, b"name,ssn\n").unwrap().is_none(),
            "header"
        );
        let row = m
            .copy_row(&mut plan, b"\"Ann, \"\"A\"\" a@b.example\",219-09-9999\n")
            .unwrap()
            .unwrap();
        let text = String::from_utf8(row).unwrap();
        assert!(
            !text.contains("219-09-9999") && !text.contains("a@b.example"),
            "{text}"
        );
        assert!(text.contains("\"\"A\"\""), "quotes survive: {text}");
        // A query's fields have no origin: masked whole, since rules here
        // mask by origin.
        let query = CopyOut::default();
        let mut plan = m.copy_plan(&query, None).unwrap();
        assert!(m.copy_row(&mut plan, b"anything\n").unwrap().is_some());
        let mut strict = m.copy_plan(&query, Some(MaskStrategy::Redact)).unwrap();
        assert!(m.copy_row(&mut strict, b"anything\n").unwrap().is_some());
        // Binary COPY: header, one tuple (id, name, ssn), trailer.
        let binary = CopyOut {
            table: Some("customers".into()),
            format: CopyFormat::Binary,
            ..CopyOut::default()
        };
        let mut plan = m.copy_plan(&binary, None).unwrap();
        let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        data.extend_from_slice(&3i16.to_be_bytes());
        for v in [&b"\0\0\0\x01"[..], b"Ann", b"219-09-9999"] {
            data.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
            data.extend_from_slice(v);
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let out = m.copy_row(&mut plan, &data).unwrap().unwrap();
        assert!(!out.windows(11).any(|w| w == b"219-09-9999"), "ssn masked");
        assert!(out.windows(3).any(|w| w == b"Ann"), "name kept");
        assert!(out.starts_with(b"PGCOPY"), "header kept");
        assert!(m.copy_row(&mut plan, b"\x00").is_err(), "malformed");
    }

    #[test]
    fn masked_values_of_types_the_mask_is_no_value_of_are_null() {
        let m = masker(vec![spec(&["*.ssn"], &[], &[], MaskStrategy::Redact)]);
        // Columns of a relation the agent does not know: all masked.
        let plan = m.plan(
            &row_description(&[
                ("t", 4242, 1, 25),
                ("j", 4242, 2, 114),
                ("i", 4242, 3, 23),
                ("v", 4242, 4, 1043),
            ]),
            None,
        );
        let row = m
            .rewrite_row(
                Some(&plan),
                &[],
                &data_row(&[Some(b"a"), Some(b"{}"), Some(b"7"), Some(b"b")]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            values(&row),
            [
                Some("[REDACTED]".into()),
                None,
                None,
                Some("[REDACTED]".into())
            ]
        );
    }

    #[test]
    fn unknown_relations_and_missing_descriptions_fail_closed() {
        let m = masker(vec![spec(&["*.ssn"], &[], &[], MaskStrategy::Redact)]);
        let plan = m.plan(&row_description(&[("x", 4242, 1, 25)]), None);
        let row = m
            .rewrite_row(Some(&plan), &[], &data_row(&[Some(b"v")]))
            .unwrap()
            .unwrap();
        assert_eq!(values(&row), [Some("[REDACTED]".into())]);
        // With no description the type is unknown too: NULL.
        let row = m
            .rewrite_row(None, &[], &data_row(&[Some(b"v")]))
            .unwrap()
            .unwrap();
        assert_eq!(values(&row), [None]);
        assert!(m.rewrite_row(None, &[], b"\x00\x01\xff").is_err());
    }
}
