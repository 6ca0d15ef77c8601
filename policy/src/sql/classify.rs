//! The classifier proper: one parse of the text by libpg_query, then one walk
//! of each statement's tree collecting [`StatementFacts`].
//!
//! The walk visits every node (see `children.rs`), so a data-modifying
//! statement or a function call counts wherever it hides: in a CTE, a
//! subquery, a DEFAULT, the body of `EXPLAIN`, `PREPARE`, `DECLARE` or
//! `COPY (...)`. When a construct is ambiguous the classifier reports more
//! kinds rather than fewer, because an extra kind can only make policy
//! stricter.

use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pg_query::protobuf::{
    self, AExprKind, CmdType, DiscardMode, FuncCall, ImportForeignSchemaType, JsonExprOp,
    ObjectType, OnConflictAction, RangeVar, SetOperation, SubLinkType, TransactionStmtKind,
    VariableSetKind, WithClause, a_const,
};
use pg_query::{FingerprintOptions, NodeEnum, NodeRef, ParserOptions};
use serde::{Deserialize, Serialize};

use super::builtins;
use super::children::for_each_child;
use crate::eval::StatementFacts;
use crate::kinds::{KindSet, SqlKind};

/// Longest SQL text [`classify`] accepts, in bytes (1 MiB). Longer text is
/// refused before parsing so that a client cannot make the agent spend
/// unbounded time and memory on one message.
pub const MAX_SQL_LEN: usize = 1024 * 1024;

/// Deepest parse-tree nesting the walk follows. The walk keeps its own
/// stack, so this bounds work rather than saves the thread's stack; in
/// practice [`DECODE_MAX_DEPTH`] is reached first.
pub const MAX_DEPTH: usize = 256;

/// How deep pg_query's protobuf decoder (prost) follows nested messages
/// before it gives up, which is where deeply nested SQL fails in practice:
/// around 45 chained operators or nested function calls, or 15 nested
/// scalar subqueries. The limit protects the thread's stack, since the
/// decoder recurses, so it is kept.
pub const DECODE_MAX_DEPTH: usize = 100;

/// Fingerprints keep schema and full relation names and ignore aliases, so
/// statements on different tables never share one (pg_query's default, the
/// PostgreSQL 18 query id, would let `public.t x` and `secret.t x` collide).
fn fingerprint_options() -> FingerprintOptions {
    FingerprintOptions::RANGEVAR_IGNORE_ALIASES
        | FingerprintOptions::RANGEVAR_INCLUDE_SCHEMA
        | FingerprintOptions::FULL_RELNAME
}

/// Session settings that change how PostgreSQL splits and reads SQL text.
///
/// The classifier must lex exactly as the server will: with
/// `standard_conforming_strings = off`, `'a\'; DROP TABLE t; --'` is one
/// string literal to the server but two statements to a parser that
/// assumes `on`, and the reverse trick exists too. The agent passes the
/// session's current value (from the server's `ParameterStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifyOptions {
    /// The session's `standard_conforming_strings` (PostgreSQL's default,
    /// and this type's, is `true`).
    pub standard_conforming_strings: bool,
    /// Leave [`ClassifiedStatement::fingerprint`] empty: fingerprinting
    /// parses each statement again, so a caller that rarely needs it (the
    /// agent, on every statement) computes it with [`fingerprint`] when it
    /// does.
    #[serde(default)]
    pub skip_fingerprint: bool,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
            skip_fingerprint: false,
        }
    }
}

impl ClassifyOptions {
    fn parser(self) -> ParserOptions {
        if self.standard_conforming_strings {
            ParserOptions::DEFAULT
        } else {
            ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
        }
    }
}

/// One statement of a (possibly multi-statement) SQL text, judged alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifiedStatement {
    /// The statement's own source text, without the separating `;` and
    /// surrounding whitespace (comments inside it are kept).
    pub text: String,
    /// What policy evaluates.
    pub facts: StatementFacts,
    /// pg_query's fingerprint of `text` (16 hex digits): equal for texts
    /// that differ only in formatting, comments, case of keywords or the
    /// values of constants. Not an identity for approvals on its own,
    /// since `... WHERE id = 1` and `... WHERE id = 2` share it.
    pub fingerprint: String,
    /// How the statement changes the session's named prepared statements
    /// (which it shares with the protocol's Parse), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PreparedChange>,
    /// For `COPY ... TO STDOUT`: what it copies and how (the agent masks
    /// its output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_out: Option<CopyOut>,
    /// `COPY ... FROM STDIN`: the target waits for the client's data
    /// (CopyData, then CopyDone or CopyFail), ignoring any Sync meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_in: bool,
    /// For `FETCH` and `MOVE`: the portal (cursor) they run. It may be one
    /// the protocol bound, whose statement the agent judged at Parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetches: Option<String>,
    /// Names PostgreSQL resolves in the database's catalog, which the text
    /// alone cannot place (see [`CatalogNames`]).
    #[serde(default, skip_serializing_if = "CatalogNames::is_empty")]
    pub catalog_names: CatalogNames,
    /// For a plain `SELECT`: the result columns (0-based) that are a call
    /// of `count` (`count(*)`, `count(x)`, `count(DISTINCT x)`, with a
    /// FILTER or OVER), whose values are row counts only. Empty when the
    /// columns cannot be placed by the text (a `*` anywhere in the select
    /// list, a set operation) and for every other statement. A `count`
    /// the database defines itself is for the agent to rule out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<usize>,
    /// For `EXECUTE name(...)` whose arguments are all plain constants:
    /// the prepared statement's name, for the agent to judge the EXECUTE
    /// as the statement the target holds under that name (see
    /// [`prepared_body`]). `None` for any other statement, and for an
    /// EXECUTE whose arguments compute anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executes: Option<String>,
}

/// Names in a statement whose meaning depends on what the database
/// defines, for the agent to check against the functions and operators
/// defined there (its `routines` catalog). Unqualified function calls are
/// in [`StatementFacts::functions`] already.
///
/// * `t.touch` and `(t).touch` select a field of a row value, or call
///   `touch(t)` when there is no such field (PostgreSQL's attribute
///   notation); the text cannot tell which.
/// * `a = b` runs a database's own `=` for its own types, and so do
///   constructs that compare without naming an operator (`CASE x WHEN`,
///   `JOIN ... USING`, `BETWEEN`, `IN (SELECT ...)`, `ORDER BY`, `GROUP
///   BY`, `DISTINCT`, `UNION`, `GREATEST`).
/// * SQL syntax newer than the target's PostgreSQL (`JSON_VALUE(...)`,
///   `merge_action()`, this parser's grammar is PostgreSQL 18's) is a
///   plain call of a function by that name to an older server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CatalogNames {
    /// Field names selected from a row value (`t.touch`, `(t).touch`,
    /// `s.t.touch`): the last name of a qualified column reference, and
    /// names after an indirection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
    /// Unqualified operator symbols that are also PostgreSQL's own (those
    /// that are not already make the statement `user_function`), named or
    /// implied by a construct that compares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<String>,
    /// Names a server may resolve among the database's functions although
    /// the classifier reads them as PostgreSQL's own: SQL syntax that an
    /// older server reads as a call (`json_value`, `json_object`,
    /// `merge_action`), and calls the grammar qualifies with `pg_catalog`
    /// itself (`json_object(...)` in PostgreSQL 18, a plain call in 15).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
    /// Types the statement names: casts (`'x'::mood`, `CAST(x AS mood)`,
    /// `mood 'x'`), column definitions (`json_to_record(...) AS x(m
    /// mood)`, `XMLTABLE` and `JSON_TABLE` columns, `CREATE TABLE`) and
    /// signatures. Making a value of the type runs its input or cast
    /// function and a domain's CHECK, which may be the database's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Functions, aggregates, operators and types the statement creates or
    /// renames to (`CREATE FUNCTION touch`, `ALTER FUNCTION f RENAME TO
    /// touch`, `CREATE OPERATOR ===`, `CREATE DOMAIN positive`, `CREATE
    /// CAST (int AS mood)`): later statements of the session see them
    /// before the catalog does (inside its transaction, only it can).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defines: Vec<String>,
    /// Routines the statement creates, replaces or changes, by their last
    /// name (`CREATE OR REPLACE FUNCTION audit`, `CREATE AGGREGATE`,
    /// `ALTER FUNCTION audit SECURITY DEFINER`, `ALTER PROCEDURE p OWNER
    /// TO r`): what reading or writing a relation whose trigger, default,
    /// view or policy calls one does changes with it (a new function may
    /// also take the name's place on a `search_path`). The agent counts
    /// those relations as reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redefines: Vec<String>,
    /// The statement sets the parameter a row of `pg_settings` names
    /// (pg_dump's shape, read as setting that parameter only): a relation
    /// of that name outside `pg_catalog`, which a `search_path` may put
    /// first, could hold any `name`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setting_by_name: bool,
}

impl CatalogNames {
    pub fn is_empty(&self) -> bool {
        !self.setting_by_name
            && self.attributes.is_empty()
            && self.operators.is_empty()
            && self.calls.is_empty()
            && self.types.is_empty()
            && self.defines.is_empty()
            && self.redefines.is_empty()
    }
}

/// An object renamed or moved to another schema, by its old and new
/// names as statements name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "of", rename_all = "snake_case")]
pub enum Rename {
    /// A table, view, materialized view, foreign table, sequence or
    /// index: `schema.relation` or `relation`, as written (a rename keeps
    /// the schema).
    Relation { old: String, new: String },
    /// A schema: every relation in it has a new qualified name.
    Schema { old: String, new: String },
    /// A type or domain, by its last name.
    Type { old: String, new: String },
    /// A function, procedure or aggregate: `schema.function` or
    /// `function`, as written (a rename keeps the schema).
    Function { old: String, new: String },
    /// A column of a relation (`schema.relation` or `relation`, as
    /// written).
    Column {
        relation: String,
        old: String,
        new: String,
    },
    /// An extension moved to another schema (`ALTER EXTENSION e SET
    /// SCHEMA s`): its functions, types and tables, from whatever schema
    /// they were in, are in `schema` now.
    Extension { name: String, schema: String },
}

/// A `COPY ... TO STDOUT`: its source and output format.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CopyOut {
    /// The table copied (`schema.table` or `table`); `None` for
    /// `COPY (query) TO`.
    pub table: Option<String>,
    /// Columns listed after the table; empty means all of them.
    pub columns: Vec<String>,
    pub format: CopyFormat,
    /// Options as given (`None`: PostgreSQL's default for the format).
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFormat {
    #[default]
    Text,
    Csv,
    Binary,
}

/// A change a SQL statement makes to the session's named prepared
/// statements and portals (which SQL cursors share their names with). The
/// agent follows these so that what it believes a name refers to never
/// outlives it on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreparedChange {
    /// `PREPARE name AS ...`
    Prepare(String),
    /// `DEALLOCATE [PREPARE] name`
    Deallocate(String),
    /// `DEALLOCATE ALL`
    DeallocateAll,
    /// `CLOSE name`
    ClosePortal(String),
    /// `CLOSE ALL`, and what ends a transaction or rolls back to a
    /// savepoint (`COMMIT`, `ROLLBACK`, `PREPARE TRANSACTION`, `ROLLBACK
    /// TO`), which drops portals with it.
    CloseAllPortals,
    /// `DISCARD ALL`: every prepared statement and portal.
    DiscardAll,
}

fn copy_out(node: NodeRef<'_>) -> Option<CopyOut> {
    let NodeRef::CopyStmt(c) = node else {
        return None;
    };
    if c.is_from || c.is_program || !c.filename.is_empty() {
        return None;
    }
    let table = if c.query.is_some() {
        None
    } else {
        c.relation.as_ref().map(|r| {
            if r.schemaname.is_empty() {
                r.relname.clone()
            } else {
                format!("{}.{}", r.schemaname, r.relname)
            }
        })
    };
    let columns = c
        .attlist
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect();
    let mut out = CopyOut {
        table,
        columns,
        ..CopyOut::default()
    };
    let text_arg = |arg: Option<&protobuf::Node>| match arg.and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    };
    for option in &c.options {
        let Some(NodeEnum::DefElem(d)) = &option.node else {
            continue;
        };
        match d.defname.to_ascii_lowercase().as_str() {
            "format" => {
                out.format = match text_arg(d.arg.as_deref()).as_deref() {
                    Some(f) if f.eq_ignore_ascii_case("csv") => CopyFormat::Csv,
                    Some(f) if f.eq_ignore_ascii_case("binary") => CopyFormat::Binary,
                    Some(f) if f.eq_ignore_ascii_case("text") => CopyFormat::Text,
                    // Unknown to us: the agent treats it as unmaskable.
                    _ => CopyFormat::Binary,
                };
            }
            // Old syntax: `COPY t TO STDOUT CSV` / `BINARY`.
            "csv" => out.format = CopyFormat::Csv,
            "binary" => out.format = CopyFormat::Binary,
            "delimiter" => out.delimiter = text_arg(d.arg.as_deref()),
            "quote" => out.quote = text_arg(d.arg.as_deref()),
            "escape" => out.escape = text_arg(d.arg.as_deref()),
            "header" => out.header = option_on(d.arg.as_deref()),
            _ => {}
        }
    }
    Some(out)
}

fn prepared_change(node: NodeRef<'_>) -> Option<PreparedChange> {
    match node {
        NodeRef::PrepareStmt(p) => Some(PreparedChange::Prepare(p.name.clone())),
        NodeRef::DeallocateStmt(d) if d.isall || d.name.is_empty() => {
            Some(PreparedChange::DeallocateAll)
        }
        NodeRef::DeallocateStmt(d) => Some(PreparedChange::Deallocate(d.name.clone())),
        NodeRef::DiscardStmt(d) if d.target() == DiscardMode::DiscardAll => {
            Some(PreparedChange::DiscardAll)
        }
        NodeRef::ClosePortalStmt(c) if c.portalname.is_empty() => {
            Some(PreparedChange::CloseAllPortals)
        }
        NodeRef::ClosePortalStmt(c) => Some(PreparedChange::ClosePortal(c.portalname.clone())),
        NodeRef::TransactionStmt(t) => match t.kind() {
            TransactionStmtKind::TransStmtCommit
            | TransactionStmtKind::TransStmtRollback
            | TransactionStmtKind::TransStmtPrepare
            | TransactionStmtKind::TransStmtRollbackTo => Some(PreparedChange::CloseAllPortals),
            _ => None,
        },
        _ => None,
    }
}

/// Why a SQL text could not be classified. Every variant means "deny":
/// nothing of the text may reach the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// PostgreSQL's parser rejects the text.
    #[error("could not parse SQL: {message}{}", at_position(*.position))]
    Parse {
        /// The parser's message, e.g. `syntax error at or near "FROM"`.
        message: String,
        /// Byte offset of the problem in the text, when known.
        position: Option<usize>,
    },
    /// The text is longer than [`MAX_SQL_LEN`].
    #[error(
        "SQL text is {len} bytes, more than the {max} bytes the gateway accepts in one message; send smaller statements"
    )]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The statement nests deeper than [`MAX_DEPTH`] nodes, or than
    /// [`DECODE_MAX_DEPTH`] parser messages.
    #[error(
        "SQL nests too deeply for the gateway to classify (more than {max} levels); simplify the statement"
    )]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The parser library failed in a way that says nothing about the text.
    #[error("the SQL parser failed: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

fn at_position(position: Option<usize>) -> String {
    position.map_or_else(String::new, |p| format!(" (at byte {p})"))
}

/// Classifies every statement of `sql`, assuming PostgreSQL's default
/// session settings; see [`classify_with`].
///
/// Empty text, or text of only comments and semicolons, gives no
/// statements. Any error means the whole text must be refused.
pub fn classify(sql: &str) -> Result<Vec<ClassifiedStatement>, ClassifyError> {
    classify_with(sql, ClassifyOptions::default())
}

/// Classifies every statement of `sql` as a session with `options` would
/// read it.
pub fn classify_with(
    sql: &str,
    options: ClassifyOptions,
) -> Result<Vec<ClassifiedStatement>, ClassifyError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(ClassifyError::TooLong {
            len: sql.len(),
            max: MAX_SQL_LEN,
        });
    }
    // The parser takes a C string; the wire protocol cannot carry a NUL
    // inside a query either, so this text did not come from a real client.
    if let Some(position) = sql.find('\0') {
        return Err(ClassifyError::Parse {
            message: "SQL text contains a NUL byte".to_owned(),
            position: Some(position),
        });
    }
    let parser = options.parser();
    let parsed = guarded(|| pg_query::parse(sql, parser))?;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let text = statement_text(sql, raw)?;
        let root = raw
            .stmt
            .as_deref()
            .and_then(|n| n.node.as_ref())
            .ok_or_else(|| internal("a statement without a parse tree"))?;
        let (facts, catalog_names) = facts_of(root.to_ref())?;
        let fingerprint = if options.skip_fingerprint {
            String::new()
        } else {
            fingerprint(text, options)?
        };
        statements.push(ClassifiedStatement {
            text: text.to_owned(),
            facts,
            fingerprint,
            prepared: prepared_change(root.to_ref()),
            copy_out: copy_out(root.to_ref()),
            copy_in: matches!(root.to_ref(), NodeRef::CopyStmt(c)
                if c.is_from && !c.is_program && c.filename.is_empty()),
            fetches: match root.to_ref() {
                NodeRef::FetchStmt(f) => Some(f.portalname.clone()),
                _ => None,
            },
            catalog_names,
            counts: count_columns(root.to_ref()),
            executes: executes(root.to_ref()),
        });
    }
    Ok(statements)
}

/// See [`ClassifiedStatement::executes`].
fn executes(node: NodeRef<'_>) -> Option<String> {
    let NodeRef::ExecuteStmt(e) = node else {
        return None;
    };
    e.params
        .iter()
        .all(|p| matches!(p.node, Some(NodeEnum::AConst(_))))
        .then(|| e.name.clone())
}

/// Why an `EXECUTE` that cannot be judged by the statement it runs is
/// refused (0A000): see [`runs_unread_execute`].
pub const SQL_EXECUTE_ALONE: &str = "EXECUTE runs a statement prepared earlier, which sluice judges again before it runs by reading it from the target; it does so only for an EXECUTE sent on its own in a simple Query, with constant arguments: send it so, or send the statement itself";

/// Why a lone `EXECUTE name` an approve rule matches is refused: an
/// approver would see only the EXECUTE, and an approval is for one run of
/// the statement with the values it shows. `reason` is the approve rule's.
pub fn execute_needs_approval(name: &str, reason: &str) -> String {
    format!(
        "EXECUTE \"{name}\" is judged as the statement it runs, and EXECUTE needs approval ({reason}), which sluice asks for only of the statement itself: send it as it is, with its values"
    )
}

/// Whether a text's statements hold an `EXECUTE` the agent cannot judge by
/// the statement it runs: one in a text of several statements, inside
/// `EXPLAIN` or `CREATE TABLE AS`, or with computed arguments. Only a lone
/// EXECUTE with constant arguments ([`ClassifiedStatement::executes`]) is
/// read from the target and judged as what it runs; the others are refused
/// with [`SQL_EXECUTE_ALONE`].
pub fn runs_unread_execute(statements: &[ClassifiedStatement]) -> bool {
    !matches!(statements, [only] if only.executes.is_some())
        && statements
            .iter()
            .any(|s| s.facts.kinds.contains(&SqlKind::Execute))
}

/// The statement a SQL `PREPARE name AS ...` in `source` prepares, as text
/// (deparsed from the parse tree), for judging an `EXECUTE name`: `source`
/// is what the target's `pg_prepared_statements` gives for a statement
/// prepared with SQL, the whole text the `PREPARE` came in.
///
/// The text must hold exactly one `PREPARE` of that name, read the same
/// whether `standard_conforming_strings` is on or off (the agent does not
/// know which was in force when the target read it): otherwise the
/// error says why, and the EXECUTE is to be refused.
pub fn prepared_body(source: &str, name: &str) -> Result<String, String> {
    let read = |options: ClassifyOptions| -> Result<String, String> {
        if source.len() > MAX_SQL_LEN || source.contains('\0') {
            return Err("its text is too long or holds a NUL byte".into());
        }
        let parsed =
            guarded(|| pg_query::parse(source, options.parser())).map_err(|e| e.to_string())?;
        let mut bodies = parsed.protobuf.stmts.iter().filter_map(|raw| {
            match raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                Some(NodeEnum::PrepareStmt(p)) if p.name == name => Some(p),
                _ => None,
            }
        });
        let (Some(prepare), None) = (bodies.next(), bodies.next()) else {
            return Err(format!(
                "its text does not hold exactly one PREPARE of \"{name}\""
            ));
        };
        let query = prepare
            .query
            .as_deref()
            .and_then(|n| n.node.as_ref())
            .ok_or_else(|| "its PREPARE has no statement".to_owned())?;
        guarded(|| query.to_ref().deparse(pg_query::DeparseOptions::default()))
            .map_err(|e| e.to_string())
    };
    let on = read(ClassifyOptions::default())?;
    let off = read(ClassifyOptions {
        standard_conforming_strings: false,
        ..ClassifyOptions::default()
    })?;
    if on != off {
        return Err(
            "its text reads differently with standard_conforming_strings on and off".into(),
        );
    }
    Ok(on)
}

/// See [`ClassifiedStatement::counts`].
fn count_columns(node: NodeRef<'_>) -> Vec<usize> {
    let NodeRef::SelectStmt(s) = node else {
        return Vec::new();
    };
    if s.op() != SetOperation::SetopNone || !s.values_lists.is_empty() {
        return Vec::new();
    }
    let mut counts = Vec::new();
    for (i, target) in s.target_list.iter().enumerate() {
        let Some(NodeEnum::ResTarget(t)) = &target.node else {
            return Vec::new();
        };
        match t.val.as_deref().and_then(|v| v.node.as_ref()) {
            // A star expands to columns the text does not count.
            Some(NodeEnum::ColumnRef(c))
                if c.fields
                    .iter()
                    .any(|f| matches!(f.node, Some(NodeEnum::AStar(_)))) =>
            {
                return Vec::new();
            }
            Some(NodeEnum::AIndirection(a))
                if a.indirection
                    .iter()
                    .any(|f| matches!(f.node, Some(NodeEnum::AStar(_)))) =>
            {
                return Vec::new();
            }
            Some(NodeEnum::FuncCall(call)) if is_count(call) => counts.push(i),
            _ => {}
        }
    }
    counts
}

/// A call of PostgreSQL's own `count` (unqualified or `pg_catalog.`), by
/// name.
fn is_count(call: &FuncCall) -> bool {
    let names: Vec<&str> = call
        .funcname
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    names.len() == call.funcname.len()
        && matches!(names.as_slice(), ["count"] | ["pg_catalog", "count"])
        && !call.func_variadic
}

/// pg_query's fingerprint of one statement's text (see
/// [`ClassifiedStatement::fingerprint`]), read with `options`' string
/// syntax.
pub fn fingerprint(text: &str, options: ClassifyOptions) -> Result<String, ClassifyError> {
    let parser = options.parser();
    Ok(guarded(|| pg_query::fingerprint(text, parser, fingerprint_options()))?.hex)
}

/// `text` with every constant replaced by a `$n` placeholder, as
/// PostgreSQL's parser finds them (pg_query's normalization, the text
/// `pg_stat_statements` shows); everything else is kept byte for byte.
/// Strings are read as under `standard_conforming_strings = on`, the only
/// syntax the normalizer has. Integer constants in `GROUP BY` and
/// `ORDER BY` and type modifiers are kept, since they are not values.
pub fn normalize(text: &str) -> Result<String, ClassifyError> {
    if text.len() > MAX_SQL_LEN {
        return Err(ClassifyError::TooLong {
            len: text.len(),
            max: MAX_SQL_LEN,
        });
    }
    guarded(|| pg_query::normalize(text))
}

/// Runs a pg_query call, turning its errors, and any panic in its Rust
/// post-processing (which indexes into parser output), into our errors.
fn guarded<T>(call: impl FnOnce() -> pg_query::Result<T>) -> Result<T, ClassifyError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(pg_query::Error::Parse(message))) => Err(ClassifyError::Parse {
            message,
            position: None,
        }),
        // The only way a tree from libpg_query fails to decode.
        Ok(Err(pg_query::Error::Decode(_))) => Err(ClassifyError::TooDeep {
            max: DECODE_MAX_DEPTH,
        }),
        Ok(Err(other)) => Err(internal(&other.to_string())),
        Err(_) => Err(internal("the parser panicked")),
    }
}

fn internal(message: &str) -> ClassifyError {
    ClassifyError::Internal {
        message: message.to_owned(),
    }
}

/// The statement's text, from the byte range the parser reports.
fn statement_text<'s>(sql: &'s str, raw: &protobuf::RawStmt) -> Result<&'s str, ClassifyError> {
    let start = usize::try_from(raw.stmt_location).ok();
    let len = usize::try_from(raw.stmt_len).ok();
    let text = match (start, len) {
        // A length of 0 means "to the end of the text".
        (Some(start), Some(0)) => sql.get(start..),
        (Some(start), Some(len)) => start.checked_add(len).and_then(|end| sql.get(start..end)),
        _ => None,
    };
    text.map(|t| t.trim_matches(|c: char| c.is_whitespace() || c == ';'))
        .ok_or_else(|| internal("statement location outside the text"))
}

/// Facts about one statement, and the names in it only the database's
/// catalog can place.
fn facts_of(root: NodeRef<'_>) -> Result<(StatementFacts, CatalogNames), ClassifyError> {
    let mut walker = Walker::default();
    if statement_kinds(root).is_none() {
        walker.add(SqlKind::Other);
    }
    if let NodeRef::SelectStmt(select) = root {
        walker.pinned_setting = pinned_setting(select);
    }
    walker.walk(root)?;
    if walker.kinds.is_empty() {
        walker.add(SqlKind::Other);
    }
    // A relation renamed to `pg_settings` is as one created so (see
    // `Walker::table`).
    let to_settings = |new: &str| {
        new.rsplit('.')
            .next()
            .is_some_and(|bare| bare.eq_ignore_ascii_case("pg_settings"))
    };
    if walker
        .renames
        .iter()
        .any(|r| matches!(r, Rename::Relation { new, .. } if to_settings(new)))
    {
        walker.add(SqlKind::Set);
        walker.add_all(SETS_ANYTHING.iter().copied().collect());
    }
    let Walker {
        kinds,
        mut tables_read,
        mut tables_written,
        mut functions,
        mut user_functions,
        mut foreign_tables,
        mut credential_catalogs,
        mut catalog_names,
        mut attribute_calls,
        renames,
        rows_modified,
        unbounded,
        reaches_unnamed_tables,
        ..
    } = walker;
    for names in [
        &mut tables_read,
        &mut tables_written,
        &mut functions,
        &mut user_functions,
        &mut foreign_tables,
        &mut credential_catalogs,
        &mut catalog_names.attributes,
        &mut catalog_names.operators,
        &mut catalog_names.calls,
        &mut catalog_names.types,
        &mut catalog_names.defines,
        &mut catalog_names.redefines,
        &mut attribute_calls,
    ] {
        names.sort_unstable();
        names.dedup();
    }
    let facts = StatementFacts {
        kinds,
        tables_read,
        tables_written,
        functions,
        user_functions,
        foreign_tables,
        credential_catalogs,
        tables_reached: Vec::new(),
        functions_reached: attribute_calls,
        renames,
        has_where: rows_modified && !unbounded,
        reaches_unnamed_tables,
    };
    Ok((facts, catalog_names))
}

/// A relation's name as policies match it, `schema.table` or `table`. A
/// catalog (database) part is dropped: PostgreSQL rejects any but the
/// current database, and `db.secret.t` must still match `secret.*`.
fn relation_text(rv: &RangeVar) -> String {
    if rv.schemaname.is_empty() {
        rv.relname.clone()
    } else {
        format!("{}.{}", rv.schemaname, rv.relname)
    }
}

/// The catalogs where the database keeps credentials (kind
/// `credential_catalog`), by schema: role password hashes, user mappings'
/// options (the passwords `postgres_fdw` and `dblink` log in with) and
/// subscriptions' connection strings. Views over them are found from the
/// target's catalog by the agent (whose query names these too).
pub const CREDENTIAL_CATALOGS: &[(&str, &[&str])] = &[
    (
        "pg_catalog",
        &[
            "pg_authid",
            "pg_shadow",
            "pg_subscription",
            "pg_user_mapping",
            "pg_user_mappings",
        ],
    ),
    (
        "information_schema",
        &["_pg_user_mappings", "user_mapping_options"],
    ),
];

/// Relations that hold samples of column values (most common values,
/// histogram bounds) gathered by ANALYZE, from every table, naming none of
/// them: reading one reaches tables it does not name (see
/// [`StatementFacts::reaches_unnamed_tables`]), and masks cannot follow
/// their values. `pg_statistic_ext` is not among them: it holds extended
/// statistics' definitions (psql's `\d` reads it), their values being in
/// `pg_statistic_ext_data` since PostgreSQL 12.
pub const STATISTICS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
];

/// Whether `name` (`schema.relation` or `relation`) is one of
/// [`STATISTICS`], in any schema: at worst another schema's relation of
/// that name needs a rule too.
pub fn is_statistics(name: &str) -> bool {
    let bare = name.rsplit('.').next().unwrap_or(name);
    STATISTICS.iter().any(|s| bare.eq_ignore_ascii_case(s))
}

/// Whether `name` (`schema.relation` or `relation`) is `pg_largeobject`,
/// which holds every large object's contents (see
/// [`large_object_access`]), in any schema.
pub fn is_large_object_data(name: &str) -> bool {
    let bare = name.rsplit('.').next().unwrap_or(name);
    bare.eq_ignore_ascii_case("pg_largeobject")
}

/// The catalog holding credentials `rv` names, `schema.catalog`. An
/// unqualified name counts whatever the `search_path` (`pg_catalog` is
/// searched first unless the path says otherwise): at worst another
/// schema's table of that name needs the rule too.
fn credential_catalog(rv: &RangeVar) -> Option<String> {
    CREDENTIAL_CATALOGS.iter().find_map(|(schema, names)| {
        let in_schema = rv.schemaname.is_empty() || rv.schemaname.eq_ignore_ascii_case(schema);
        let name = names
            .iter()
            .find(|n| in_schema && n.eq_ignore_ascii_case(&rv.relname))?;
        Some(format!("{schema}.{name}"))
    })
}

/// Whether a table reference is read or written where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Write,
}

/// What the walk knows about the position of a node.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// How a table named here is used.
    role: Role,
    /// Whether a SELECT here is what the statement runs (top level, or the
    /// query of EXPLAIN, PREPARE, DECLARE, COPY, CREATE TABLE AS) rather
    /// than a subquery of something else, so that `INSERT ... VALUES` or
    /// `DELETE ... WHERE id IN (SELECT ...)` is not also a `select`.
    query_is_statement: bool,
}

#[derive(Default)]
struct Walker<'a> {
    kinds: Vec<SqlKind>,
    seen: KindSet,
    tables_read: Vec<String>,
    tables_written: Vec<String>,
    functions: Vec<String>,
    /// Calls of functions and operators that are not PostgreSQL's own.
    user_functions: Vec<String>,
    /// Foreign tables the statement defines.
    foreign_tables: Vec<String>,
    /// Catalogs holding credentials the statement names.
    credential_catalogs: Vec<String>,
    catalog_names: CatalogNames,
    /// Built-in functions a field selection may call (see
    /// [`Walker::attribute`]).
    attribute_calls: Vec<String>,
    /// Relations, columns, schemas and types renamed or moved.
    renames: Vec<Rename>,
    /// Names of the CTEs visible at the current point of the walk; an
    /// unqualified table reference with one of these names is the CTE.
    ctes: Vec<&'a str>,
    /// Saw an UPDATE or DELETE (or a MERGE action doing one).
    rows_modified: bool,
    /// Saw one whose WHERE is missing or does not look at any column.
    unbounded: bool,
    /// Saw a statement that reaches tables it does not name (see
    /// [`reaches_unnamed_tables`]).
    reaches_unnamed_tables: bool,
    /// The location of a `set_config` call whose first argument is a
    /// row's `name` and the parameter every such row names
    /// ([`pinned_setting`]).
    pinned_setting: Option<(i32, String)>,
}

impl<'a> Walker<'a> {
    fn add(&mut self, kind: SqlKind) {
        if !self.seen.contains(kind) {
            self.seen.insert(kind);
            self.kinds.push(kind);
        }
    }

    fn add_all(&mut self, kinds: KindSet) {
        for kind in kinds.iter() {
            self.add(kind);
        }
    }

    /// Walks the tree under `root` with an explicit stack: recursion
    /// would put the depth of client-controlled nesting on the thread's
    /// stack.
    fn walk(&mut self, root: NodeRef<'a>) -> Result<(), ClassifyError> {
        let mut stack = vec![Task::Visit {
            node: root,
            cx: Context {
                role: Role::Read,
                query_is_statement: true,
            },
            depth: 0,
        }];
        // The tasks for one node's subtree, in walk order.
        let mut plan = Vec::new();
        while let Some(task) = stack.pop() {
            let (node, cx, depth) = match task {
                Task::Bind(name) => {
                    self.ctes.push(name);
                    continue;
                }
                Task::Unbind(len) => {
                    self.ctes.truncate(len);
                    continue;
                }
                Task::Visit { node, cx, depth } => (node, cx, depth),
            };
            if depth >= MAX_DEPTH {
                return Err(ClassifyError::TooDeep { max: MAX_DEPTH });
            }
            let kinds = statement_kinds(node);
            match (node, kinds) {
                // A subquery's SELECT adds nothing its statement does not say.
                (NodeRef::SelectStmt(s), _) => {
                    if cx.query_is_statement {
                        self.add(SqlKind::Select);
                    }
                    // FOR UPDATE / SHARE: row locks, held to the end of
                    // the transaction (PostgreSQL asks for UPDATE rights).
                    if !s.locking_clause.is_empty() {
                        self.add(SqlKind::Lock);
                    }
                    if s.into_clause.is_some() {
                        self.add(SqlKind::Create);
                    }
                }
                (_, Some(kinds)) => self.add_all(kinds),
                (_, None) => {}
            }
            self.note(node, cx)?;

            let depth = depth + 1;
            let with = with_clause(node);
            if let Some(with) = with {
                plan_with(with, depth, &mut plan);
            }
            let Ok(()) = for_each_child(node, &mut |field, child| {
                if !(field == "with_clause" && with.is_some()) {
                    plan.push(Task::Visit {
                        node: child,
                        cx: child_context(node, kinds, field, cx),
                        depth,
                    });
                }
                Ok::<(), Infallible>(())
            });
            if with.is_some() {
                plan.push(Task::Unbind(self.ctes.len()));
            }
            stack.extend(plan.drain(..).rev());
        }
        Ok(())
    }

    /// Records what a node itself says (tables, functions, WHERE clauses,
    /// kinds carried by clauses rather than statements).
    fn note(&mut self, node: NodeRef<'a>, cx: Context) -> Result<(), ClassifyError> {
        self.reaches_unnamed_tables |= reaches_unnamed_tables(node);
        match node {
            NodeRef::RangeVar(rv) => self.table(rv, cx.role),
            NodeRef::FuncCall(call) => self.function(call),
            // The function a trigger will run on every write of its table
            // (or on DDL, for an event trigger): named here, called later,
            // so it counts as called by the statement that sets it up.
            NodeRef::CreateTrigStmt(t) => self.named_call(&t.funcname),
            NodeRef::CreateEventTrigStmt(t) => self.named_call(&t.funcname),
            // BETWEEN's name is the keyword; PostgreSQL rewrites it into
            // comparisons whose operators the other forms name too.
            NodeRef::AExpr(e)
                if !matches!(
                    e.kind(),
                    AExprKind::AexprBetween
                        | AExprKind::AexprNotBetween
                        | AExprKind::AexprBetweenSym
                        | AExprKind::AexprNotBetweenSym
                ) =>
            {
                self.operator(&e.name);
            }
            // BETWEEN's comparisons.
            NodeRef::AExpr(_) => self.implies(&["<", "<=", ">", ">="]),
            // `x IN (SELECT ...)` compares with `=` without naming it.
            NodeRef::SubLink(l)
                if l.oper_name.is_empty() && l.sub_link_type() == SubLinkType::AnySublink =>
            {
                self.implies(&["="]);
            }
            NodeRef::SubLink(l) => self.operator(&l.oper_name),
            NodeRef::SortBy(b) if b.use_op.is_empty() => self.implies(&["<", ">"]),
            NodeRef::SortBy(b) => self.operator(&b.use_op),
            // `t.touch`: a field, or `touch(t)`.
            NodeRef::ColumnRef(c) if c.fields.len() >= 2 => {
                if let Some(Some(NodeEnum::String(s))) = c.fields.last().map(|f| &f.node) {
                    self.attribute(&s.sval);
                }
            }
            // `(t).touch`, `(f(x)).touch`, `(t).a.touch`.
            NodeRef::AIndirection(i) => {
                for field in &i.indirection {
                    if let Some(NodeEnum::String(s)) = &field.node {
                        self.attribute(&s.sval);
                    }
                }
            }
            NodeRef::TypeName(t) => {
                if let Some(Some(NodeEnum::String(s))) = t.names.last().map(|n| &n.node) {
                    self.catalog_names.types.push(s.sval.clone());
                }
            }
            NodeRef::CreateFunctionStmt(f) => {
                self.defines(&f.funcname);
                self.redefines(&f.funcname);
            }
            NodeRef::AlterFunctionStmt(a) => {
                if let Some(f) = &a.func {
                    self.redefines(&f.objname);
                }
            }
            NodeRef::AlterOwnerStmt(a) if is_routine(a.object_type()) => {
                if let Some(Some(NodeEnum::ObjectWithArgs(f))) =
                    a.object.as_deref().map(|o| &o.node)
                {
                    self.redefines(&f.objname);
                }
            }
            // Types whose casts, input or comparisons may run the
            // database's functions.
            NodeRef::CreateDomainStmt(d) => self.defines(&d.domainname),
            NodeRef::CreateRangeStmt(r) => self.defines(&r.type_name),
            NodeRef::DefineStmt(d) if d.kind() == ObjectType::ObjectType => {
                self.defines(&d.defnames);
            }
            NodeRef::CreateCastStmt(c) => {
                for t in [&c.sourcetype, &c.targettype].into_iter().flatten() {
                    self.defines(&t.names);
                }
            }
            NodeRef::CreateOpClassStmt(c) => {
                if let Some(t) = &c.datatype {
                    self.defines(&t.names);
                }
            }
            // Foreign tables the statement creates (for the rule's
            // `tables:`; which existing ones it reads only the catalog
            // knows).
            NodeRef::CreateForeignTableStmt(f) => {
                if let Some(rv) = f.base_stmt.as_ref().and_then(|b| b.relation.as_ref()) {
                    self.foreign_tables.push(relation_text(rv));
                }
            }
            NodeRef::ImportForeignSchemaStmt(i) => {
                let tables = i.table_list.iter().filter_map(|t| match &t.node {
                    Some(NodeEnum::RangeVar(rv)) => Some(rv.relname.as_str()),
                    _ => None,
                });
                let limited = i.list_type() == ImportForeignSchemaType::FdwImportSchemaLimitTo;
                if limited {
                    self.foreign_tables
                        .extend(tables.map(|t| format!("{}.{t}", i.local_schema)));
                } else {
                    self.foreign_tables.push(format!("{}.*", i.local_schema));
                }
            }
            NodeRef::DefineStmt(d) if d.kind() == ObjectType::ObjectAggregate => {
                self.defines(&d.defnames);
                self.redefines(&d.defnames);
            }
            NodeRef::DefineStmt(d) if d.kind() == ObjectType::ObjectOperator => {
                self.defines(&d.defnames);
            }
            // A routine under a new name is a definition for the agent's
            // catalog of the database's functions, and a rename for rules
            // naming the old one; it changes what calls the old name (a
            // replacement under the new one, in the same transaction,
            // would replace what the catalog still knows by the old).
            NodeRef::RenameStmt(r) if is_routine(r.rename_type()) => {
                self.catalog_names.defines.push(r.newname.clone());
                if let Some(Some(NodeEnum::ObjectWithArgs(f))) =
                    r.object.as_deref().map(|o| &o.node)
                {
                    self.redefines(&f.objname);
                }
                if let Some(old) = r.object.as_deref().and_then(routine_name) {
                    let new = match old.rsplit_once('.') {
                        Some((schema, _)) => format!("{schema}.{}", r.newname),
                        None => r.newname.clone(),
                    };
                    self.renames.push(Rename::Function { old, new });
                }
            }
            NodeRef::RenameStmt(r) => {
                if let Some(rename) = rename_of(r) {
                    self.renames.push(rename);
                }
            }
            // `VALIDATE CONSTRAINT` (and adding one) runs the domain's
            // CHECK over stored values: what the type runs.
            NodeRef::AlterDomainStmt(d) => {
                if let Some(Some(NodeEnum::String(s))) = d.type_name.last().map(|n| &n.node) {
                    self.catalog_names.types.push(s.sval.clone());
                }
            }
            NodeRef::AlterObjectSchemaStmt(a) => {
                if let Some(rename) = move_of(a) {
                    self.renames.push(rename);
                }
            }
            // Constructs that compare with the types' `=` and `<`.
            NodeRef::SelectStmt(s)
                if !s.distinct_clause.is_empty()
                    || !s.group_clause.is_empty()
                    || (s.op() != SetOperation::SetopNone && !s.all) =>
            {
                self.implies(&["<", "="]);
            }
            NodeRef::WindowDef(w) if !w.partition_clause.is_empty() => self.implies(&["="]),
            NodeRef::CaseExpr(c) if c.arg.is_some() => self.implies(&["="]),
            NodeRef::JoinExpr(j) if j.is_natural || !j.using_clause.is_empty() => {
                self.implies(&["="]);
            }
            NodeRef::MinMaxExpr(_) => self.implies(&["<", ">"]),
            // SQL/JSON and MERGE syntax of newer servers: a plain call of a
            // function by that name to an older one.
            NodeRef::JsonFuncExpr(f) => self.syntax_call(match f.op() {
                JsonExprOp::JsonExistsOp => "json_exists",
                JsonExprOp::JsonQueryOp => "json_query",
                JsonExprOp::JsonTableOp => "json_table",
                _ => "json_value",
            }),
            NodeRef::JsonTable(_) => self.syntax_call("json_table"),
            NodeRef::JsonScalarExpr(_) => self.syntax_call("json_scalar"),
            NodeRef::JsonSerializeExpr(_) => self.syntax_call("json_serialize"),
            NodeRef::JsonParseExpr(_) => self.syntax_call("json"),
            NodeRef::JsonArrayConstructor(_) | NodeRef::JsonArrayQueryConstructor(_) => {
                self.syntax_call("json_array");
            }
            NodeRef::JsonArrayAgg(_) => self.syntax_call("json_arrayagg"),
            NodeRef::JsonObjectConstructor(_) => self.syntax_call("json_object"),
            NodeRef::JsonObjectAgg(_) => self.syntax_call("json_objectagg"),
            NodeRef::MergeSupportFunc(_) => self.syntax_call("merge_action"),
            NodeRef::UpdateStmt(s) => self.modifies_rows(s.where_clause.as_deref())?,
            NodeRef::DeleteStmt(s) => self.modifies_rows(s.where_clause.as_deref())?,
            // These name relations, and objects of relations, by name
            // lists, not RangeVars.
            NodeRef::DropStmt(s) => {
                let kind = s.remove_type();
                self.tables_written
                    .extend(s.objects.iter().filter_map(|o| object_relation(kind, o)));
            }
            NodeRef::CommentStmt(s) => {
                let object = s.object.as_deref();
                self.tables_written
                    .extend(object.and_then(|o| object_relation(s.objtype(), o)));
            }
            NodeRef::SecLabelStmt(s) => {
                let object = s.object.as_deref();
                self.tables_written
                    .extend(object.and_then(|o| object_relation(s.objtype(), o)));
            }
            // `ALTER EXTENSION e ADD TABLE t`: `DROP EXTENSION e` then
            // drops it.
            NodeRef::AlterExtensionContentsStmt(s) => {
                let object = s.object.as_deref();
                self.tables_written
                    .extend(object.and_then(|o| object_relation(s.objtype(), o)));
            }
            // INSERT ... ON CONFLICT DO UPDATE updates the conflicting row;
            // each inserted row bounds it, so it counts as having a WHERE.
            NodeRef::OnConflictClause(c) if c.action() == OnConflictAction::OnconflictUpdate => {
                self.add(SqlKind::Update);
                self.rows_modified = true;
            }
            // MERGE's actions are as good as the ON condition, which can be
            // `ON true`: its UPDATE and DELETE count as unbounded.
            NodeRef::MergeWhenClause(c) => match c.command_type() {
                CmdType::CmdUpdate => {
                    self.add(SqlKind::Update);
                    self.rows_modified = true;
                    self.unbounded = true;
                }
                CmdType::CmdDelete => {
                    self.add(SqlKind::Delete);
                    self.rows_modified = true;
                    self.unbounded = true;
                }
                CmdType::CmdInsert => self.add(SqlKind::Insert),
                CmdType::CmdNothing => {}
                _ => self.add(SqlKind::Other),
            },
            _ => {}
        }
        Ok(())
    }

    fn table(&mut self, rv: &'a RangeVar, role: Role) {
        if rv.relname.is_empty() {
            return;
        }
        // Only an unqualified name can mean a CTE, and never as a target.
        if role == Role::Read
            && rv.schemaname.is_empty()
            && rv.catalogname.is_empty()
            && self.ctes.contains(&rv.relname.as_str())
        {
            return;
        }
        let name = relation_text(rv);
        // Writing the `pg_settings` view sets parameters, as `set_config`
        // does (`UPDATE pg_settings SET setting = ... WHERE name = 'role'`);
        // which ones is data, so assume the worst. In any schema: creating
        // or writing a relation of that name (a temporary one is found
        // before the catalog's) could make pg_dump's shape of `set_config`
        // ([`pinned_setting`]) set another parameter than it names.
        if role == Role::Write && rv.relname.eq_ignore_ascii_case("pg_settings") {
            self.add(SqlKind::Set);
            self.add_all(SETS_ANYTHING.iter().copied().collect());
        }
        // Samples of every table's values, which name none of them; every
        // large object's contents.
        if (role == Role::Read && is_statistics(&rv.relname)) || is_large_object_data(&rv.relname) {
            self.reaches_unnamed_tables = true;
        }
        if let Some(catalog) = credential_catalog(rv) {
            self.add(SqlKind::CredentialCatalog);
            self.credential_catalogs.push(catalog);
        }
        match role {
            Role::Read => self.tables_read.push(name),
            Role::Write => self.tables_written.push(name),
        }
    }

    /// `x.name` or `(x).name`: a field of a row value, or PostgreSQL's
    /// attribute notation for the call `name(x)`, which works for any
    /// function of one argument, PostgreSQL's own included:
    /// `('/etc/passwd'::text).pg_read_file` reads a server file,
    /// `(pid).pg_terminate_backend` ends a session. The text cannot tell
    /// which, so a name that is a built-in function's counts as calling it
    /// for what the call does beyond computing a value (its kind) and for
    /// deny and approve rules that name it (`attribute_calls`, matched as
    /// functions reached); the agent checks the database's own functions
    /// against `catalog_names.attributes`.
    fn attribute(&mut self, name: &str) {
        self.catalog_names.attributes.push(name.to_owned());
        // `('secret.seq'::regclass).nextval`: which sequence is a value;
        // `(16401::oid).lo_get` reads a large object.
        if sequence_access(name).is_some() || large_object_access(name) {
            self.reaches_unnamed_tables = true;
        }
        if let Some(kind) = function_kind(name) {
            self.add(kind);
        }
        if builtins::is_builtin_function(None, name) {
            self.attribute_calls.push(name.to_owned());
        }
    }

    fn function(&mut self, call: &FuncCall) {
        let Some(name) = self.call_kinds(&call.funcname) else {
            return;
        };
        let bare = name
            .rsplit_once('.')
            .map_or(name.as_str(), |(_, bare)| bare);
        if call.agg_distinct {
            self.implies(&["<", "="]);
        }
        if let Some(role) = sequence_access(&name) {
            self.sequence(call, role);
        }
        if large_object_access(&name) {
            self.reaches_unnamed_tables = true;
        }
        if bare.eq_ignore_ascii_case("set_config") {
            self.add(SqlKind::Set);
            let pinned = self
                .pinned_setting
                .as_ref()
                .filter(|(at, _)| *at == call.location)
                .map(|(_, setting)| setting.as_str());
            let literal = literal_setting(call);
            let by_name = literal.is_none() && pinned.is_some();
            let kinds = literal.or(pinned).map(setting_kinds);
            self.catalog_names.setting_by_name |= by_name;
            match kinds {
                Some(kinds) => self.add_all(kinds),
                // The setting is computed: assume the worst.
                None => {
                    for &kind in SETS_ANYTHING {
                        self.add(kind);
                    }
                }
            }
        }
        self.functions.push(name);
    }

    /// The sequence a `nextval`, `setval` or `currval` call names in its
    /// first argument, a string (`'secret.invoice_seq'`, a `regclass`):
    /// read or written like a table the statement names. A computed
    /// argument may name any sequence.
    fn sequence(&mut self, call: &FuncCall, role: Role) {
        let named = call
            .args
            .first()
            .and_then(regclass_literal)
            .and_then(name_in_string);
        match (named, role) {
            (Some(name), Role::Read) => self.tables_read.push(name),
            (Some(name), Role::Write) => self.tables_written.push(name),
            (None, _) => self.reaches_unnamed_tables = true,
        }
    }

    /// A function the statement names to be called (by a trigger it
    /// creates) rather than calls in an expression.
    fn named_call(&mut self, funcname: &[protobuf::Node]) {
        if let Some(name) = self.call_kinds(funcname) {
            self.functions.push(name);
        }
    }

    /// Adds the kinds a call of `funcname` gives the statement and returns
    /// the function's name.
    fn call_kinds(&mut self, funcname: &[protobuf::Node]) -> Option<String> {
        let Some(name) = qualified_name(funcname) else {
            // The grammar only builds names from strings; if that ever
            // changes, an unnamed call must not pass an allow list.
            self.add(SqlKind::Other);
            return None;
        };
        let (schema, bare) = match name.rsplit_once('.') {
            Some((schema, bare)) => (Some(schema), bare),
            None => (None, name.as_str()),
        };
        if let Some(kind) = function_kind(bare) {
            self.add(kind);
        }
        // `"pg_catalog.lower"(x)` is one quoted name with a dot in it, not
        // `pg_catalog.lower`.
        let dotted = funcname
            .iter()
            .any(|part| matches!(&part.node, Some(NodeEnum::String(s)) if s.sval.contains('.')));
        if dotted || !builtins::is_builtin_function(schema, bare) {
            self.add(SqlKind::UserFunction);
            self.user_functions.push(name.clone());
        } else if schema.is_some() {
            // Qualified by the grammar itself, perhaps, for syntax an older
            // server reads as a plain call.
            self.catalog_names.calls.push(bare.to_owned());
        }
        Some(name)
    }

    /// An operator named in an expression (`a === b`, `x OPERATOR(app.+)
    /// y`, `ORDER BY x USING ~<~`): one not PostgreSQL's own runs a
    /// function defined in the database.
    fn operator(&mut self, name: &[protobuf::Node]) {
        if name.is_empty() {
            return;
        }
        let Some(name) = qualified_name(name) else {
            self.add(SqlKind::Other);
            return;
        };
        let (schema, symbol) = match name.rsplit_once('.') {
            Some((schema, symbol)) => (Some(schema), symbol),
            None => (None, name.as_str()),
        };
        if !builtins::is_builtin_operator(schema, symbol) {
            self.add(SqlKind::UserFunction);
            self.user_functions.push(name);
        } else if schema.is_none() {
            // The database may define it for its own types.
            self.catalog_names.operators.push(name);
        }
    }

    /// Operators a construct compares with without naming them.
    fn implies(&mut self, symbols: &[&str]) {
        self.catalog_names
            .operators
            .extend(symbols.iter().map(|s| (*s).to_owned()));
    }

    /// SQL syntax a server older than this parser's grammar reads as a call
    /// of the function `name`.
    fn syntax_call(&mut self, name: &str) {
        self.catalog_names.calls.push(name.to_owned());
    }

    /// The last part of a name a statement creates.
    fn defines(&mut self, name: &[protobuf::Node]) {
        if let Some(Some(NodeEnum::String(s))) = name.last().map(|n| &n.node) {
            self.catalog_names.defines.push(s.sval.clone());
        }
    }

    /// A routine the statement creates, replaces or changes
    /// ([`CatalogNames::redefines`]).
    fn redefines(&mut self, name: &[protobuf::Node]) {
        if let Some(Some(NodeEnum::String(s))) = name.last().map(|n| &n.node) {
            self.catalog_names.redefines.push(s.sval.clone());
        }
    }

    fn modifies_rows(
        &mut self,
        where_clause: Option<&protobuf::Node>,
    ) -> Result<(), ClassifyError> {
        self.rows_modified = true;
        let bounded = match where_clause.and_then(|w| w.node.as_ref()) {
            Some(w) => looks_at_rows(w.to_ref())?,
            None => false,
        };
        if !bounded {
            self.unbounded = true;
        }
        Ok(())
    }
}

/// One step of the walk.
enum Task<'a> {
    /// Classify a node and plan its children.
    Visit {
        node: NodeRef<'a>,
        cx: Context,
        depth: usize,
    },
    /// Make a CTE name visible (once its own body has been walked).
    Bind(&'a str),
    /// End the scope of the CTE names bound since the list had this length.
    Unbind(usize),
}

/// Plans the CTEs of a WITH clause so each name is visible where
/// PostgreSQL makes it visible: to the CTEs after it and to the statement
/// body, or, under RECURSIVE, to every CTE as well. The caller plans the
/// `Unbind` after the body.
fn plan_with<'a>(with: &'a WithClause, depth: usize, plan: &mut Vec<Task<'a>>) {
    let cx = Context {
        role: Role::Read,
        query_is_statement: false,
    };
    if with.recursive {
        plan.extend(with.ctes.iter().filter_map(cte_name).map(Task::Bind));
    }
    for cte in &with.ctes {
        if let Some(node) = cte.node.as_ref() {
            plan.push(Task::Visit {
                node: node.to_ref(),
                cx,
                depth,
            });
        }
        if !with.recursive {
            plan.extend(cte_name(cte).map(Task::Bind));
        }
    }
}

/// Whether a WHERE clause can tell rows apart: it mentions a column, or is
/// `WHERE CURRENT OF`. `WHERE true` or `WHERE 1 = 1` cannot, and counts as
/// no WHERE at all.
fn looks_at_rows(root: NodeRef<'_>) -> Result<bool, ClassifyError> {
    let mut stack = vec![(root, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth >= MAX_DEPTH {
            return Err(ClassifyError::TooDeep { max: MAX_DEPTH });
        }
        if matches!(node, NodeRef::ColumnRef(_) | NodeRef::CurrentOfExpr(_)) {
            return Ok(true);
        }
        let Ok(()) = for_each_child(node, &mut |_, child| {
            stack.push((child, depth + 1));
            Ok::<(), Infallible>(())
        });
    }
    Ok(false)
}

/// How the children of `node` are placed.
fn child_context(node: NodeRef<'_>, kinds: Option<KindSet>, field: &str, cx: Context) -> Context {
    let role = match node {
        NodeRef::SelectStmt(_) => role_if(field == "into_clause"),
        NodeRef::InsertStmt(_)
        | NodeRef::UpdateStmt(_)
        | NodeRef::DeleteStmt(_)
        | NodeRef::MergeStmt(_) => role_if(field == "relation"),
        NodeRef::CopyStmt(c) => role_if(field == "relation" && c.is_from),
        NodeRef::CreateTableAsStmt(_) => role_if(field == "into"),
        // `VACUUM FULL` rewrites the tables it names and rebuilds their
        // indexes, `ANALYZE` computes their index and extended statistics'
        // expressions over sampled rows: they count as writing them, so
        // the agent adds what writing them calls (more than they run: no
        // trigger, default or CHECK).
        NodeRef::VacuumStmt(_) => Role::Write,
        // DDL acts on the relations it names; queries inside reset this.
        _ if kinds.is_some_and(|k| !k.intersection(ddl_kinds()).is_empty()) => Role::Write,
        _ if kinds.is_some() => Role::Read,
        _ => cx.role,
    };
    let query_is_statement = match node {
        NodeRef::ExplainStmt(_)
        | NodeRef::PrepareStmt(_)
        | NodeRef::DeclareCursorStmt(_)
        | NodeRef::CopyStmt(_)
        | NodeRef::CreateTableAsStmt(_) => true,
        _ if kinds.is_some() => false,
        _ => cx.query_is_statement,
    };
    Context {
        role,
        query_is_statement,
    }
}

fn role_if(write: bool) -> Role {
    if write { Role::Write } else { Role::Read }
}

fn ddl_kinds() -> KindSet {
    use SqlKind as K;
    KindSet::from_iter([
        K::Create,
        K::Alter,
        K::Drop,
        K::Truncate,
        K::Comment,
        K::Grant,
        K::Revoke,
    ])
}

fn with_clause(node: NodeRef<'_>) -> Option<&WithClause> {
    match node {
        NodeRef::SelectStmt(s) => s.with_clause.as_ref(),
        NodeRef::InsertStmt(s) => s.with_clause.as_ref(),
        NodeRef::UpdateStmt(s) => s.with_clause.as_ref(),
        NodeRef::DeleteStmt(s) => s.with_clause.as_ref(),
        NodeRef::MergeStmt(s) => s.with_clause.as_ref(),
        _ => None,
    }
}

fn cte_name(node: &protobuf::Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.as_str()),
        _ => None,
    }
}

/// `schema.name` (or `name`) from a parser name list; a leading catalog
/// part is dropped as for tables. `None` if the list holds anything but
/// strings.
fn qualified_name(parts: &[protobuf::Node]) -> Option<String> {
    let mut names = Vec::with_capacity(parts.len());
    for part in parts {
        match &part.node {
            Some(NodeEnum::String(s)) => names.push(s.sval.as_str()),
            _ => return None,
        }
    }
    let keep = names.len().saturating_sub(2);
    let tail = names.get(keep..)?;
    (!tail.is_empty()).then(|| tail.join("."))
}

/// What an `ALTER ... RENAME TO` renames, when it is a relation, a schema,
/// a type or a column (constraints and the rest do not change what a name
/// reaches or what a rule names; functions count as definitions).
fn rename_of(r: &protobuf::RenameStmt) -> Option<Rename> {
    let new = r.newname.clone();
    match r.rename_type() {
        ObjectType::ObjectTable
        | ObjectType::ObjectView
        | ObjectType::ObjectMatview
        | ObjectType::ObjectForeignTable
        | ObjectType::ObjectSequence
        | ObjectType::ObjectIndex => {
            let rv = r.relation.as_ref()?;
            let new = if rv.schemaname.is_empty() {
                new
            } else {
                format!("{}.{new}", rv.schemaname)
            };
            Some(Rename::Relation {
                old: relation_text(rv),
                new,
            })
        }
        ObjectType::ObjectSchema => Some(Rename::Schema {
            old: r.subname.clone(),
            new,
        }),
        ObjectType::ObjectType | ObjectType::ObjectDomain => Some(Rename::Type {
            old: last_name(r.object.as_deref()?)?,
            new,
        }),
        ObjectType::ObjectColumn => Some(Rename::Column {
            relation: relation_text(r.relation.as_ref()?),
            old: r.subname.clone(),
            new,
        }),
        _ => None,
    }
}

/// Object types of `ALTER FUNCTION`, `ALTER PROCEDURE`, `ALTER ROUTINE`
/// and `ALTER AGGREGATE`.
fn is_routine(object: ObjectType) -> bool {
    matches!(
        object,
        ObjectType::ObjectFunction
            | ObjectType::ObjectProcedure
            | ObjectType::ObjectRoutine
            | ObjectType::ObjectAggregate
    )
}

/// The name of a routine an `ALTER` names (`schema.function` or
/// `function`).
fn routine_name(object: &protobuf::Node) -> Option<String> {
    match &object.node {
        Some(NodeEnum::ObjectWithArgs(o)) => qualified_name(&o.objname),
        _ => None,
    }
}

/// What an `ALTER ... SET SCHEMA` moves, when it is a relation, a
/// routine, an operator (which `functions:` patterns match by its
/// qualified name) or an extension (a type keeps its last name, which is
/// what statements are matched by).
fn move_of(a: &protobuf::AlterObjectSchemaStmt) -> Option<Rename> {
    if is_routine(a.object_type()) || a.object_type() == ObjectType::ObjectOperator {
        let old = routine_name(a.object.as_deref()?)?;
        let bare = old.rsplit_once('.').map_or(old.as_str(), |(_, bare)| bare);
        let new = format!("{}.{bare}", a.newschema);
        return Some(Rename::Function { old, new });
    }
    match a.object_type() {
        ObjectType::ObjectExtension => match a.object.as_deref().and_then(|o| o.node.as_ref()) {
            Some(NodeEnum::String(name)) => Some(Rename::Extension {
                name: name.sval.clone(),
                schema: a.newschema.clone(),
            }),
            _ => None,
        },
        ObjectType::ObjectTable
        | ObjectType::ObjectView
        | ObjectType::ObjectMatview
        | ObjectType::ObjectForeignTable
        | ObjectType::ObjectSequence => {
            let rv = a.relation.as_ref()?;
            Some(Rename::Relation {
                old: relation_text(rv),
                new: format!("{}.{}", a.newschema, rv.relname),
            })
        }
        _ => None,
    }
}

/// The last name of a name list (`any_name`).
fn last_name(object: &protobuf::Node) -> Option<String> {
    match &object.node {
        Some(NodeEnum::List(list)) => match list.items.last().map(|n| &n.node) {
            Some(Some(NodeEnum::String(s))) => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The relation named by a `DROP` or `COMMENT` object (a name list).
fn relation_name(object: &protobuf::Node) -> Option<String> {
    match &object.node {
        Some(NodeEnum::List(list)) => qualified_name(&list.items),
        _ => None,
    }
}

/// Object types that are relations (reported as tables when dropped,
/// commented on, labelled, or added to or dropped from an extension).
fn names_relation(object: ObjectType) -> bool {
    matches!(
        object,
        ObjectType::ObjectTable
            | ObjectType::ObjectView
            | ObjectType::ObjectMatview
            | ObjectType::ObjectIndex
            | ObjectType::ObjectSequence
            | ObjectType::ObjectForeignTable
    )
}

/// Object types named by their table and their own name (`DROP POLICY p
/// ON t`, `COMMENT ON COLUMN t.c`, `COMMENT ON CONSTRAINT c ON t`).
fn names_object_on_relation(object: ObjectType) -> bool {
    matches!(
        object,
        ObjectType::ObjectPolicy
            | ObjectType::ObjectTrigger
            | ObjectType::ObjectRule
            | ObjectType::ObjectColumn
            | ObjectType::ObjectTabconstraint
    )
}

/// The relation a `DROP`, `COMMENT`, `SECURITY LABEL` or `ALTER EXTENSION
/// ADD|DROP` object of type `kind` is, or belongs to.
fn object_relation(kind: ObjectType, object: &protobuf::Node) -> Option<String> {
    if names_relation(kind) {
        relation_name(object)
    } else if names_object_on_relation(kind) {
        owning_relation_name(object)
    } else {
        None
    }
}

/// The table of a policy, trigger, rule, column or table constraint named
/// by a name list whose last part is the object's own name.
fn owning_relation_name(object: &protobuf::Node) -> Option<String> {
    match &object.node {
        Some(NodeEnum::List(list)) => match list.items.split_last() {
            Some((_, table)) if !table.is_empty() => qualified_name(table),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the statement reaches tables it does not name: what `CASCADE`
/// drops or changes along with the objects named (views, columns of a
/// dropped type, a schema's tables, tables referencing a truncated one), an
/// extension's member tables, a role's objects (`DROP OWNED`, `REASSIGN
/// OWNED`) or privileges (role membership), privileges on a whole schema or
/// on tables yet to be created, a schema renamed or given a new owner (who
/// may drop anything in it), a database's new owner, publications of
/// whole schemas, privileges on a large object or its new owner, and
/// maintenance of every table (a bare `VACUUM`,
/// `ANALYZE` or `CLUSTER`, `REINDEX SCHEMA` and wider, which run the
/// tables' index expressions). A rule's `tables:` cannot vouch for such a
/// statement.
fn reaches_unnamed_tables(node: NodeRef<'_>) -> bool {
    use protobuf::{DropBehavior, GrantTargetType, PublicationObjSpecType, ReindexObjectType};
    let cascade = |behavior: DropBehavior| behavior == DropBehavior::DropCascade;
    match node {
        NodeRef::DropStmt(s) => {
            cascade(s.behavior()) || s.remove_type() == ObjectType::ObjectExtension
        }
        NodeRef::TruncateStmt(s) => cascade(s.behavior()),
        NodeRef::AlterTableCmd(c) => cascade(c.behavior()),
        NodeRef::AlterDomainStmt(d) => cascade(d.behavior()),
        NodeRef::RenameStmt(r) => {
            cascade(r.behavior()) || r.rename_type() == ObjectType::ObjectSchema
        }
        NodeRef::AlterObjectSchemaStmt(a) => a.object_type() == ObjectType::ObjectExtension,
        NodeRef::DropOwnedStmt(_)
        | NodeRef::ReassignOwnedStmt(_)
        | NodeRef::AlterDefaultPrivilegesStmt(_)
        | NodeRef::AlterTableMoveAllStmt(_)
        | NodeRef::GrantRoleStmt(_)
        | NodeRef::DropdbStmt(_) => true,
        NodeRef::AlterRoleStmt(a) => changes_membership(&a.options),
        NodeRef::CreateRoleStmt(c) => changes_membership(&c.options),
        // `REVOKE ... CASCADE` reaches other grantees of the same objects
        // only.
        // Privileges on a large object, or a new owner, open its contents
        // to others.
        NodeRef::GrantStmt(g) => {
            g.targtype() != GrantTargetType::AclTargetObject
                || matches!(
                    g.objtype(),
                    ObjectType::ObjectSchema | ObjectType::ObjectLargeobject
                )
        }
        NodeRef::AlterOwnerStmt(a) => matches!(
            a.object_type(),
            ObjectType::ObjectSchema | ObjectType::ObjectDatabase | ObjectType::ObjectLargeobject
        ),
        NodeRef::CreatePublicationStmt(p) => p.for_all_tables,
        NodeRef::AlterPublicationStmt(p) => p.for_all_tables,
        NodeRef::PublicationObjSpec(p) => {
            p.pubobjtype() != PublicationObjSpecType::PublicationobjTable
        }
        NodeRef::VacuumStmt(v) => v.rels.is_empty(),
        NodeRef::ClusterStmt(c) => c.relation.is_none(),
        NodeRef::ReindexStmt(r) => !matches!(
            r.kind(),
            ReindexObjectType::ReindexObjectIndex | ReindexObjectType::ReindexObjectTable
        ),
        _ => false,
    }
}

/// The kinds a call of `name` (`schema.function` or `function`) gives a
/// statement that does not make it in its text: a call in a view, rule or
/// policy the statement reaches, whose arguments the agent does not read
/// (so `set_config` counts as setting anything).
pub fn kinds_of_call(name: &str) -> Vec<SqlKind> {
    let bare = name.rsplit_once('.').map_or(name, |(_, bare)| bare);
    let mut kinds: Vec<SqlKind> = function_kind(bare).into_iter().collect();
    if bare.eq_ignore_ascii_case("set_config") {
        kinds.push(SqlKind::Set);
        kinds.extend(SETS_ANYTHING);
    }
    kinds
}

/// What a `set_config` call whose setting is not a plain literal may do
/// besides `set`.
const SETS_ANYTHING: &[SqlKind] = &[
    SqlKind::SetRole,
    SqlKind::SetSessionAuthorization,
    SqlKind::Other,
];

/// What calling the built-in function `bare` (its name without schema) does
/// beyond computing a value, when it does more; matched case-insensitively,
/// so a function of the same name in another schema gets the kind too
/// (more kinds, never fewer).
fn function_kind(bare: &str) -> Option<SqlKind> {
    const DYNAMIC_SQL: &[&str] = &[
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        // Fetch from a portal named by a value, like FETCH.
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "ts_stat",
        "ts_rewrite",
        // Contrib modules: tablefunc runs the SQL it is given (read-only,
        // but unseen: `crosstab('select ... from pg_stat_activity')`), xml2's
        // xpath_table pastes its arguments into a query it runs read-write.
        "crosstab",
        "crosstab2",
        "crosstab3",
        "crosstab4",
        "connectby",
        "xpath_table",
    ];
    const SERVER: &[&str] = &[
        "pg_read_file",
        "pg_read_file_old",
        "pg_read_binary_file",
        // The server's configuration files, read as rows.
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_show_all_file_settings",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
        "lo_import",
        "lo_export",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_rotate_logfile_old",
        "pg_promote",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_log_backend_memory_contexts",
        "pg_logical_emit_message",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        "pg_import_system_collations",
        // Contrib modules acting on the server: pg_stat_statements (other
        // clients' statements; its reset), pg_prewarm (writes a file into
        // the data directory, loads relations into shared memory).
        "pg_stat_statements",
        "pg_stat_statements_info",
        "pg_stat_statements_reset",
        "pg_prewarm",
        "autoprewarm_dump_now",
        "autoprewarm_start_worker",
    ];
    const SERVER_PREFIXES: &[&str] = &[
        "pg_stat_reset",
        "pg_replication_origin_",
        "pg_logical_slot_",
    ];
    const WRITE: &[&str] = &[
        "nextval",
        "setval",
        "lo_create",
        "lo_creat",
        "lo_unlink",
        "lo_put",
        "lo_from_bytea",
        "lo_truncate",
        "lo_truncate64",
        "lowrite",
        // Index maintenance: they change the index.
        "brin_summarize_new_values",
        "brin_summarize_range",
        "brin_desummarize_range",
        "gin_clean_pending_list",
        // Assign the transaction an id (a write to the commit log; each
        // call burns one towards wraparound).
        "txid_current",
        "pg_current_xact_id",
    ];
    let name = bare.to_ascii_lowercase();
    let is = |list: &[&str]| list.contains(&name.as_str());
    if is(DYNAMIC_SQL) || name.starts_with("dblink") {
        Some(SqlKind::DynamicSql)
    } else if is(SERVER)
        || SERVER_PREFIXES.iter().any(|p| name.starts_with(p))
        || name.contains("replication_slot")
    {
        Some(SqlKind::ServerFunction)
    } else if is(WRITE) {
        Some(SqlKind::FunctionWrite)
    } else if name == "pg_notify" {
        Some(SqlKind::Notify)
    } else if name.starts_with("pg_advisory_unlock") {
        // Releases only the session's own locks (asyncpg's pool calls
        // pg_advisory_unlock_all() on every release): no kind of its own.
        None
    } else if name.starts_with("pg_advisory_") || name.starts_with("pg_try_advisory_") {
        Some(SqlKind::Lock)
    } else {
        None
    }
}

/// The first argument of a `set_config` call if it is a plain string
/// literal; `None` for anything computed, named or variadic.
fn literal_setting(call: &FuncCall) -> Option<&str> {
    if call.func_variadic {
        return None;
    }
    call.args.first().and_then(string_constant)
}

/// How a call of `name` (`schema.function` or `function`) uses the
/// sequence its first argument names: PostgreSQL's `nextval` and `setval`
/// write it, `currval` reads it.
fn sequence_access(name: &str) -> Option<Role> {
    match builtin_call(name)?.to_ascii_lowercase().as_str() {
        "nextval" | "setval" => Some(Role::Write),
        "currval" => Some(Role::Read),
        _ => None,
    }
}

/// Whether a call of `name` (`schema.function` or `function`) reads or
/// writes the contents of a large object: data in `pg_largeobject`, which
/// an OID (a value) picks and no table name covers. `loread` and `lowrite`
/// act on what an earlier `lo_open` opened; closing, seeking or creating
/// an empty one touch no contents.
pub fn large_object_access(name: &str) -> bool {
    const CONTENTS: &[&str] = &[
        "lo_get",
        "lo_put",
        "lo_open",
        "loread",
        "lowrite",
        "lo_import",
        "lo_export",
        "lo_from_bytea",
        "lo_truncate",
        "lo_truncate64",
        "lo_unlink",
    ];
    builtin_call(name).is_some_and(|bare| CONTENTS.iter().any(|f| bare.eq_ignore_ascii_case(f)))
}

/// The function name of a call of `name` that may be PostgreSQL's own:
/// unqualified, in `pg_catalog`, or in `db.pg_catalog` (PostgreSQL takes
/// the current database's name as a first part). `None` for another
/// schema's function.
fn builtin_call(name: &str) -> Option<&str> {
    let mut parts = name.rsplitn(3, '.');
    let bare = parts.next()?;
    match parts.next() {
        None => Some(bare),
        Some(schema) if schema.eq_ignore_ascii_case("pg_catalog") => Some(bare),
        Some(_) => None,
    }
}

/// A string constant, or one cast to `regclass` (`'s.t'::regclass`, as
/// pg_dump writes a sequence's default).
fn regclass_literal(node: &protobuf::Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::TypeCast(c)) => {
            let type_name = c.type_name.as_ref()?;
            let Some(Some(NodeEnum::String(t))) = type_name.names.last().map(|n| &n.node) else {
                return None;
            };
            if !t.sval.eq_ignore_ascii_case("regclass") || !type_name.array_bounds.is_empty() {
                return None;
            }
            string_constant(c.arg.as_deref()?)
        }
        _ => string_constant(node),
    }
}

/// The relation a string names as `regclass` input reads it
/// (`'Secret."Seq"'` is `secret.Seq`), `schema.relation` or `relation`
/// with a catalog part dropped, as [`relation_text`] gives it; `None` for
/// an OID and anything but one to three identifiers separated by dots.
fn name_in_string(text: &str) -> Option<String> {
    // PostgreSQL's `scanner_isspace` (`\v` since 17; counting it earlier
    // can only split where the server would not, and fail).
    let space = |c: &char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c');
    // A number is an OID.
    if text
        .chars()
        .filter(|c| !space(c))
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(space).is_some() {}
        let mut part = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' if chars.next_if_eq(&'"').is_some() => part.push('"'),
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.' && !space(c)) {
                if c == '"' {
                    return None;
                }
                part.push(c.to_ascii_lowercase());
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(truncate_identifier(part));
        while chars.next_if(space).is_some() {}
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(_) => return None,
        }
    }
    if parts.len() > 3 {
        return None;
    }
    let keep = parts.len().saturating_sub(2);
    Some(parts[keep..].join("."))
}

/// An identifier cut to PostgreSQL's 63 bytes, at a character boundary,
/// as the server cuts it.
fn truncate_identifier(mut name: String) -> String {
    const MAX: usize = 63;
    if name.len() > MAX {
        let mut end = MAX;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// A plain string constant's value.
fn string_constant(node: &protobuf::Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// The parameter the one `set_config` call of `SELECT set_config(name,
/// ...) FROM pg_settings WHERE name = '...'` sets, with the call's
/// location: every row the call runs for has that `name` (pg_dump sets a
/// parameter older servers lack this way). Only that shape, exactly: one
/// target, one relation, the WHERE one `=` of the column and a string,
/// nothing else that could hold another `name`; anything else is left to
/// the general rule (a computed setting may be any). The `name` of
/// `pg_catalog.pg_settings` is text: `=` is identity. A relation of the
/// same name the session creates or renames (a temporary one is found
/// first, and its `name` could be `char(4)`, where `'role '` equals
/// `'role'`) carries every setting's kinds when created (see
/// `Walker::table`); one the database has is for the agent to rule out
/// ([`CatalogNames::setting_by_name`]).
fn pinned_setting(select: &protobuf::SelectStmt) -> Option<(i32, String)> {
    let plain = select.larg.is_none()
        && select.rarg.is_none()
        && select.with_clause.is_none()
        && select.into_clause.is_none()
        && select.values_lists.is_empty();
    let ([from], [target], true) = (
        select.from_clause.as_slice(),
        select.target_list.as_slice(),
        plain,
    ) else {
        return None;
    };
    let Some(NodeEnum::RangeVar(relation)) = &from.node else {
        return None;
    };
    if relation.relname != "pg_settings"
        || !matches!(relation.schemaname.as_str(), "" | "pg_catalog")
        || !relation.catalogname.is_empty()
    {
        return None;
    }
    let qualifier = relation
        .alias
        .as_ref()
        .map_or("pg_settings", |alias| alias.aliasname.as_str());
    let is_name = |node: &protobuf::Node| {
        let Some(NodeEnum::ColumnRef(column)) = &node.node else {
            return false;
        };
        let parts: Vec<Option<&str>> = column
            .fields
            .iter()
            .map(|field| match &field.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect();
        matches!(parts.as_slice(), [Some("name")])
            || matches!(parts.as_slice(), [Some(q), Some("name")] if *q == qualifier)
    };
    let Some(NodeEnum::AExpr(condition)) = select.where_clause.as_ref()?.node.as_ref() else {
        return None;
    };
    let equals = matches!(condition.name.as_slice(), [op] if matches!(&op.node, Some(NodeEnum::String(s)) if s.sval == "="));
    if condition.kind() != AExprKind::AexprOp || !equals {
        return None;
    }
    let (left, right) = (condition.lexpr.as_deref()?, condition.rexpr.as_deref()?);
    let setting = match (is_name(left), is_name(right)) {
        (true, false) => string_constant(right)?,
        (false, true) => string_constant(left)?,
        _ => return None,
    };
    let Some(NodeEnum::ResTarget(target)) = &target.node else {
        return None;
    };
    let Some(NodeEnum::FuncCall(call)) = target.val.as_deref()?.node.as_ref() else {
        return None;
    };
    let set_config = matches!(
        qualified_name(&call.funcname).as_deref(),
        Some("set_config" | "pg_catalog.set_config")
    );
    (set_config && !call.func_variadic && call.args.first().is_some_and(is_name))
        .then(|| (call.location, setting.to_owned()))
}

/// Extra kinds for setting the parameter `name`, beyond `set`/`reset`.
fn setting_kinds(name: &str) -> KindSet {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    let mut kinds = KindSet::EMPTY;
    if is("role") {
        kinds.insert(SqlKind::SetRole);
    } else if is("session_authorization") {
        kinds.insert(SqlKind::SetSessionAuthorization);
    } else if is("standard_conforming_strings") || is("backslash_quote") || is("client_encoding") {
        // These change how the server reads later SQL text, which this
        // classifier must match (see `ClassifyOptions`): only a rule that
        // names `other` may allow them.
        kinds.insert(SqlKind::Other);
    }
    kinds
}

/// Whether an `analyze` option is on: anything but an explicit false.
fn option_on(arg: Option<&protobuf::Node>) -> bool {
    match arg.and_then(|a| a.node.as_ref()) {
        None => true,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival != 0,
        Some(NodeEnum::String(s)) => {
            !(s.sval.eq_ignore_ascii_case("false") || s.sval.eq_ignore_ascii_case("off"))
        }
        Some(_) => true,
    }
}

/// Whether an option list (EXPLAIN, VACUUM) turns `analyze` on.
fn analyzes(options: &[protobuf::Node]) -> bool {
    options.iter().any(|o| match &o.node {
        Some(NodeEnum::DefElem(d)) => {
            d.defname.eq_ignore_ascii_case("analyze") && option_on(d.arg.as_deref())
        }
        _ => false,
    })
}

/// Whether role options add or remove role members (`rolemembers`,
/// `addroleto`, `adminmembers`).
fn changes_membership(options: &[protobuf::Node]) -> bool {
    options.iter().any(|o| {
        matches!(&o.node, Some(NodeEnum::DefElem(d))
            if matches!(d.defname.as_str(), "rolemembers" | "addroleto" | "adminmembers"))
    })
}

/// The kinds a statement node carries by itself (its nested statements add
/// theirs during the walk). `None` for nodes that are not statements.
fn statement_kinds(node: NodeRef<'_>) -> Option<KindSet> {
    use SqlKind as K;
    let kinds = |list: &[SqlKind]| Some(list.iter().copied().collect::<KindSet>());
    let grant = |is_grant: bool| kinds(&[if is_grant { K::Grant } else { K::Revoke }]);
    match node {
        // `ALTER GROUP g ADD USER u`, `CREATE ROLE r IN ROLE g`: role
        // membership, as `GRANT g TO u` gives.
        NodeRef::AlterRoleStmt(a) if changes_membership(&a.options) => {
            kinds(&[K::Alter, if a.action < 0 { K::Revoke } else { K::Grant }])
        }
        NodeRef::CreateRoleStmt(c) if changes_membership(&c.options) => {
            kinds(&[K::Create, K::Grant])
        }
        NodeRef::SelectStmt(_) | NodeRef::SetOperationStmt(_) => kinds(&[K::Select]),
        NodeRef::InsertStmt(_) => kinds(&[K::Insert]),
        NodeRef::UpdateStmt(_) => kinds(&[K::Update]),
        NodeRef::DeleteStmt(_) => kinds(&[K::Delete]),
        NodeRef::MergeStmt(_) => kinds(&[K::Merge]),
        NodeRef::CopyStmt(c) => {
            let transport = if c.is_program {
                K::CopyProgram
            } else if c.filename.is_empty() {
                K::Copy
            } else {
                K::CopyFile
            };
            // COPY FROM inserts rows; COPY table TO reads them.
            if c.is_from {
                kinds(&[transport, K::Insert])
            } else if c.relation.is_some() {
                kinds(&[transport, K::Select])
            } else {
                kinds(&[transport])
            }
        }

        NodeRef::CreateStmt(_)
        | NodeRef::CreateTableAsStmt(_)
        | NodeRef::ViewStmt(_)
        | NodeRef::IndexStmt(_)
        | NodeRef::CreateFunctionStmt(_)
        | NodeRef::CreateExtensionStmt(_)
        | NodeRef::CreateSchemaStmt(_)
        | NodeRef::CreateSeqStmt(_)
        | NodeRef::CreateTrigStmt(_)
        | NodeRef::RuleStmt(_)
        | NodeRef::CreateRoleStmt(_)
        | NodeRef::CreatedbStmt(_)
        | NodeRef::CreateDomainStmt(_)
        | NodeRef::DefineStmt(_)
        | NodeRef::CompositeTypeStmt(_)
        | NodeRef::CreateEnumStmt(_)
        | NodeRef::CreateRangeStmt(_)
        | NodeRef::CreatePolicyStmt(_)
        | NodeRef::CreateAmStmt(_)
        | NodeRef::CreatePlangStmt(_)
        | NodeRef::CreateTableSpaceStmt(_)
        | NodeRef::CreateCastStmt(_)
        | NodeRef::CreateConversionStmt(_)
        | NodeRef::CreateOpClassStmt(_)
        | NodeRef::CreateOpFamilyStmt(_)
        | NodeRef::CreateTransformStmt(_)
        | NodeRef::CreatePublicationStmt(_)
        | NodeRef::CreateSubscriptionStmt(_)
        | NodeRef::CreateStatsStmt(_)
        | NodeRef::CreateEventTrigStmt(_) => kinds(&[K::Create]),
        // Foreign tables and what they reach other servers with.
        NodeRef::CreateFdwStmt(_)
        | NodeRef::CreateForeignServerStmt(_)
        | NodeRef::CreateForeignTableStmt(_)
        | NodeRef::CreateUserMappingStmt(_)
        | NodeRef::ImportForeignSchemaStmt(_) => kinds(&[K::Create, K::ForeignData]),
        NodeRef::AlterFdwStmt(_)
        | NodeRef::AlterForeignServerStmt(_)
        | NodeRef::AlterUserMappingStmt(_) => kinds(&[K::Alter, K::ForeignData]),

        NodeRef::AlterTableStmt(_)
        | NodeRef::AlterDomainStmt(_)
        | NodeRef::AlterFunctionStmt(_)
        | NodeRef::RenameStmt(_)
        | NodeRef::AlterSeqStmt(_)
        | NodeRef::AlterRoleStmt(_)
        | NodeRef::AlterRoleSetStmt(_)
        | NodeRef::AlterDatabaseStmt(_)
        | NodeRef::AlterDatabaseSetStmt(_)
        | NodeRef::AlterDatabaseRefreshCollStmt(_)
        | NodeRef::AlterOpFamilyStmt(_)
        | NodeRef::AlterObjectDependsStmt(_)
        | NodeRef::AlterObjectSchemaStmt(_)
        | NodeRef::AlterOwnerStmt(_)
        | NodeRef::AlterOperatorStmt(_)
        | NodeRef::AlterTypeStmt(_)
        | NodeRef::AlterEnumStmt(_)
        | NodeRef::AlterTsdictionaryStmt(_)
        | NodeRef::AlterTsconfigurationStmt(_)
        | NodeRef::AlterTableSpaceOptionsStmt(_)
        | NodeRef::AlterTableMoveAllStmt(_)
        | NodeRef::AlterExtensionStmt(_)
        | NodeRef::AlterExtensionContentsStmt(_)
        | NodeRef::AlterEventTrigStmt(_)
        | NodeRef::AlterSystemStmt(_)
        | NodeRef::AlterPolicyStmt(_)
        | NodeRef::AlterPublicationStmt(_)
        | NodeRef::AlterSubscriptionStmt(_)
        | NodeRef::AlterCollationStmt(_)
        | NodeRef::AlterStatsStmt(_)
        // Its GRANT or REVOKE is a child and adds its own kind.
        | NodeRef::AlterDefaultPrivilegesStmt(_)
        | NodeRef::SecLabelStmt(_)
        | NodeRef::RefreshMatViewStmt(_)
        | NodeRef::ReplicaIdentityStmt(_)
        | NodeRef::ReindexStmt(_)
        | NodeRef::ClusterStmt(_)
        | NodeRef::ReassignOwnedStmt(_) => kinds(&[K::Alter]),

        NodeRef::DropStmt(_)
        | NodeRef::DropRoleStmt(_)
        | NodeRef::DropdbStmt(_)
        | NodeRef::DropOwnedStmt(_)
        | NodeRef::DropTableSpaceStmt(_)
        | NodeRef::DropUserMappingStmt(_)
        | NodeRef::DropSubscriptionStmt(_) => kinds(&[K::Drop]),

        NodeRef::TruncateStmt(_) => kinds(&[K::Truncate]),
        NodeRef::CommentStmt(_) => kinds(&[K::Comment]),
        NodeRef::GrantStmt(g) => grant(g.is_grant),
        NodeRef::GrantRoleStmt(g) => grant(g.is_grant),

        NodeRef::DoStmt(_) => kinds(&[K::DoBlock]),
        NodeRef::CallStmt(_) => kinds(&[K::Call]),
        NodeRef::ExecuteStmt(_) => kinds(&[K::Execute]),
        NodeRef::PrepareStmt(_) => kinds(&[K::Prepare]),
        NodeRef::DeallocateStmt(_) => kinds(&[K::Deallocate]),

        NodeRef::VariableSetStmt(s) => {
            let mut set = setting_kinds(&s.name);
            match s.kind() {
                VariableSetKind::VarResetAll => set.insert(K::ResetAll),
                VariableSetKind::VarReset => set.insert(K::Reset),
                VariableSetKind::VarSetValue
                | VariableSetKind::VarSetDefault
                | VariableSetKind::VarSetCurrent
                | VariableSetKind::VarSetMulti => set.insert(K::Set),
                VariableSetKind::Undefined => set.insert(K::Other),
            }
            // `SET ROLE` is `set_role`, not also an ordinary `set` that a
            // session rule would allow.
            if set.contains(K::SetRole) || set.contains(K::SetSessionAuthorization) {
                set = set.difference(KindSet::from_iter([K::Set, K::Reset]));
            }
            Some(set)
        }
        NodeRef::ConstraintsSetStmt(_) => kinds(&[K::Set]),
        NodeRef::VariableShowStmt(_) => kinds(&[K::Show]),
        // DISCARD ALL runs SET SESSION AUTHORIZATION DEFAULT and RESET ALL.
        NodeRef::DiscardStmt(d) => match d.target() {
            DiscardMode::DiscardAll => kinds(&[
                K::Discard,
                K::SetSessionAuthorization,
                K::ResetAll,
            ]),
            DiscardMode::DiscardPlans | DiscardMode::DiscardSequences | DiscardMode::DiscardTemp => {
                kinds(&[K::Discard])
            }
            DiscardMode::Undefined => kinds(&[K::Discard, K::Other]),
        },

        NodeRef::TransactionStmt(t) => match t.kind() {
            TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart => {
                kinds(&[K::Begin])
            }
            TransactionStmtKind::TransStmtCommit => kinds(&[K::Commit]),
            TransactionStmtKind::TransStmtRollback => kinds(&[K::Rollback]),
            TransactionStmtKind::TransStmtSavepoint
            | TransactionStmtKind::TransStmtRelease
            | TransactionStmtKind::TransStmtRollbackTo => kinds(&[K::Savepoint]),
            // Two-phase commit leaves a transaction (and its locks) behind
            // the session: only a rule naming `other` allows it.
            TransactionStmtKind::TransStmtPrepare
            | TransactionStmtKind::TransStmtCommitPrepared => kinds(&[K::Commit, K::Other]),
            TransactionStmtKind::TransStmtRollbackPrepared => kinds(&[K::Rollback, K::Other]),
            TransactionStmtKind::Undefined => kinds(&[K::Other]),
        },

        NodeRef::ExplainStmt(e) => {
            if analyzes(&e.options) {
                kinds(&[K::ExplainAnalyze])
            } else {
                kinds(&[K::Explain])
            }
        }
        NodeRef::ListenStmt(_) => kinds(&[K::Listen]),
        NodeRef::NotifyStmt(_) => kinds(&[K::Notify]),
        NodeRef::UnlistenStmt(_) => kinds(&[K::Unlisten]),
        NodeRef::VacuumStmt(v) => {
            if !v.is_vacuumcmd {
                kinds(&[K::Analyze])
            } else if analyzes(&v.options) {
                kinds(&[K::Vacuum, K::Analyze])
            } else {
                kinds(&[K::Vacuum])
            }
        }
        NodeRef::LockStmt(_) => kinds(&[K::Lock]),
        NodeRef::DeclareCursorStmt(_) => kinds(&[K::DeclareCursor]),
        NodeRef::FetchStmt(_) => kinds(&[K::Fetch]),
        NodeRef::ClosePortalStmt(_) => kinds(&[K::CloseCursor]),
        NodeRef::CheckPointStmt(_) => kinds(&[K::Checkpoint]),

        // LOAD loads a shared library into the server process.
        NodeRef::LoadStmt(_) | NodeRef::PlassignStmt(_) => kinds(&[K::Other]),
        // `RETURN expr` exists only inside a function body; its expression
        // is walked like any other.
        NodeRef::ReturnStmt(_) => Some(KindSet::EMPTY),
        _ => None,
    }
}
