//! Functions and operators defined in the target database, for what the
//! classifier cannot place from the text alone (kind `user_function`).
//!
//! The classifier marks a call `user_function` when its name is not one
//! of PostgreSQL's own. The database can still run its own code where the
//! text names none:
//!
//! * attribute notation: `SELECT t.touch FROM t` is `touch(t)` when `t`
//!   has no column `touch`;
//! * a function or operator that shares a built-in's name, chosen by its
//!   argument types (`lower(my_type)`, `a = b` on a type of the database)
//!   or by a `search_path` that puts its schema before `pg_catalog`;
//! * reading a view whose definition calls one, or a table whose
//!   row-level-security policy does;
//! * a type's own operations: a cast to it, its input and output, a
//!   domain's CHECK, a range's subtype_diff, the comparison functions of
//!   its default operator classes ([`TYPE_QUERY`]), for casts to the type
//!   and relations with columns of it.
//!
//! Foreign tables are found the same way, with the views and partitioned
//! tables that read them: reading one makes the database query another
//! server (kind `foreign_data`).
//!
//! The agent reads, per resource and at most once a minute (and after DDL
//! there), the names of the functions and operators defined in the
//! database (outside `pg_catalog` and `information_schema`, and not part of
//! an extension: extensions are installed by a superuser, and theirs
//! overload `=` and many built-in names), and which relations run which
//! functions when read. A statement that may reach one gets the kind
//! `user_function` with its name, as a direct call would. Names are
//! compared without schemas: `t.touch` is flagged when any schema defines
//! a `touch`, which can only flag too much.
//!
//! Not seen: casts between two of PostgreSQL's own types, and what a
//! table runs when written (triggers, defaults, constraints, index
//! expressions): allowing the write allows the table's own logic.

use std::collections::{BTreeSet, HashMap, HashSet};

use sluice_policy::ClassifiedStatement;

use super::catalog::{FromCatalog, cell};

/// What runs when a relation is read: a view's rewrite rule, and the
/// policies of a table with row-level security enabled (`rel`, and the
/// object whose dependencies say what it calls and reads).
macro_rules! runs {
    () => {
        "WITH runs AS ( \
           SELECT r.ev_class AS rel, 'pg_catalog.pg_rewrite'::regclass AS classid, r.oid AS objid \
           FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE c.relkind = 'v' \
           UNION ALL \
           SELECT pol.polrelid, 'pg_catalog.pg_policy'::regclass, pol.oid \
           FROM pg_catalog.pg_policy pol JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid WHERE c.relrowsecurity) "
    };
}

/// The database's own functions (not `pg_catalog`'s, not an extension's,
/// not written in `internal`, which is PostgreSQL's own C code such as a
/// range type's generated constructors): the types whose operations run
/// them, and the relations with columns of those types, as rows (`'t'`,
/// NULL, NULL, type, function) and (`'r'`, OID, schema, relation,
/// function). A type runs a function when it is its input, output, send,
/// receive, typmod, analyze or subscript function, a domain CHECK calls it (or an
/// operator it implements), it is a range's canonical or subtype_diff
/// function (the planner calls that for `&&`), a cast to or from the type
/// (`to_json` uses the cast to `json`), or a member of the type's default
/// operator classes (`ORDER BY`, `DISTINCT`, `=` and hash joins use
/// those). Arrays, domains, ranges and multiranges over such a type, and
/// row types with a column of it, run the same. Types in `pg_catalog` are
/// left out: a cast the database adds between two built-in types is not
/// seen. Columns newer servers added (`typsubscript`, `rngmultitypid`,
/// PostgreSQL 14) are read through `to_jsonb`, so older ones answer too.
const TYPE_QUERY: &str = "WITH RECURSIVE own AS ( \
   SELECT p.oid, p.proname FROM pg_catalog.pg_proc p \
   JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
   JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND l.lanname <> 'internal' \
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')), \
 direct (typ, proname) AS ( \
   SELECT io.typ, own.proname FROM ( \
     SELECT t.oid, unnest(ARRAY[t.typinput, t.typoutput, t.typreceive, t.typsend, t.typmodin, t.typmodout, t.typanalyze, \
       COALESCE((to_jsonb(t) ->> 'typsubscript')::regproc, 0)]::oid[]) FROM pg_catalog.pg_type t) io (typ, f) \
   JOIN own ON own.oid = io.f \
   UNION \
   SELECT c.contypid, own.proname FROM pg_catalog.pg_constraint c \
   JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = c.oid \
   LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid \
   JOIN own ON own.oid = CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass THEN d.refobjid ELSE o.oprcode::oid END \
   WHERE c.contypid <> 0 \
   UNION \
   SELECT r.rngtypid, own.proname FROM pg_catalog.pg_range r JOIN own ON own.oid IN (r.rngcanonical, r.rngsubdiff) \
   UNION \
   SELECT x.typ, own.proname FROM pg_catalog.pg_cast c JOIN own ON own.oid = c.castfunc \
   CROSS JOIN LATERAL (VALUES (c.castsource), (c.casttarget)) x (typ) \
   UNION \
   SELECT oc.opcintype, own.proname FROM pg_catalog.pg_opclass oc \
   JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily \
   JOIN own ON own.oid = ap.amproc WHERE oc.opcdefault \
   UNION \
   SELECT oc.opcintype, own.proname FROM pg_catalog.pg_opclass oc \
   JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily \
   JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr \
   JOIN own ON own.oid = o.oprcode::oid WHERE oc.opcdefault), \
 derives (base, derived) AS ( \
   SELECT typbasetype, oid FROM pg_catalog.pg_type WHERE typbasetype <> 0 \
   UNION ALL SELECT oid, typarray FROM pg_catalog.pg_type WHERE typarray <> 0 \
   UNION ALL SELECT rngsubtype, rngtypid FROM pg_catalog.pg_range \
   UNION ALL SELECT r.rngtypid, (to_jsonb(r) ->> 'rngmultitypid')::oid FROM pg_catalog.pg_range r \
   WHERE to_jsonb(r) ? 'rngmultitypid' \
   UNION ALL SELECT a.atttypid, c.reltype FROM pg_catalog.pg_attribute a \
   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.reltype <> 0), \
 typed (typ, proname) AS ( \
   SELECT d.typ, d.proname FROM direct d \
   JOIN pg_catalog.pg_type t ON t.oid = d.typ \
   JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
   UNION \
   SELECT e.derived, typed.proname FROM typed JOIN derives e ON e.base = typed.typ) \
 SELECT 't', NULL::bigint, NULL::name, t.typname, typed.proname \
 FROM typed JOIN pg_catalog.pg_type t ON t.oid = typed.typ \
 UNION ALL \
 SELECT 'r', c.oid::bigint, n.nspname, c.relname, typed.proname FROM typed \
 JOIN pg_catalog.pg_class c ON c.reltype = typed.typ \
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')";

/// Relations by name, each with its schemas and what reading it reaches:
/// `relname -> [(schema, names)]`.
type ByRelation = HashMap<String, Vec<(String, Vec<String>)>>;

#[derive(Debug, Default)]
pub struct Routines {
    /// Names of the functions, procedures and aggregates defined in the
    /// database.
    functions: HashSet<String>,
    /// Symbols of the operators defined in the database.
    operators: HashSet<String>,
    /// Types whose casts and other operations run such functions, by
    /// name: `typname -> functions`.
    types: HashMap<String, Vec<String>>,
    /// Relations whose reading or writing runs such functions, directly
    /// or through the views they read.
    relations: ByRelation,
    /// Relations whose reading reads foreign tables (`schema.table`):
    /// foreign tables themselves, views over them, and partitioned or
    /// inherited tables with foreign partitions or children.
    foreign: ByRelation,
}

impl FromCatalog for Routines {
    const QUERIES: &'static [&'static str] = &[
        // Functions and operators of the database, not of an extension.
        "SELECT 'f', p.proname FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e') \
         UNION \
         SELECT 'o', o.oprname FROM pg_catalog.pg_operator o \
         JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_operator'::regclass AND e.objid = o.oid AND e.deptype = 'e')",
        // Functions (and operators' functions) outside pg_catalog that a
        // view's definition or an enabled row-level-security policy calls,
        // and whether each is part of an extension.
        concat!(
            runs!(),
            "SELECT DISTINCT runs.rel::bigint, rn.nspname, rc.relname, p.proname, \
           EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e') \
         FROM runs \
         JOIN pg_catalog.pg_class rc ON rc.oid = runs.rel \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
         JOIN pg_catalog.pg_depend d ON d.classid = runs.classid AND d.objid = runs.objid \
         LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid \
         JOIN pg_catalog.pg_proc p ON p.oid = CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass THEN d.refobjid ELSE o.oprcode::oid END \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
         WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema')"
        ),
        // Relations a view or such a policy reads, for views over views.
        concat!(
            runs!(),
            "SELECT DISTINCT runs.rel::bigint, rn.nspname, rc.relname, d.refobjid::bigint \
         FROM runs \
         JOIN pg_catalog.pg_class rc ON rc.oid = runs.rel \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
         JOIN pg_catalog.pg_depend d ON d.classid = runs.classid AND d.objid = runs.objid \
         WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> runs.rel"
        ),
        TYPE_QUERY,
        // Foreign tables.
        "SELECT c.oid::bigint, n.nspname, c.relname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'f'",
        // Partitions and inheritance children, which reading their parent
        // reads.
        "SELECT i.inhparent::bigint, n.nspname, c.relname, i.inhrelid::bigint \
         FROM pg_catalog.pg_inherits i \
         JOIN pg_catalog.pg_class c ON c.oid = i.inhparent \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
    ];

    fn from_rows(results: &[Vec<Vec<Option<String>>>]) -> Self {
        let empty = Vec::new();
        let part = |i: usize| results.get(i).unwrap_or(&empty);
        let oid = |row: &[Option<String>], i: usize| cell(row, i).parse::<u32>().ok();
        let mut routines = Self::default();
        for row in part(0) {
            let name = cell(row, 1);
            match cell(row, 0).as_str() {
                "f" => routines.functions.insert(name),
                _ => routines.operators.insert(name),
            };
        }
        // Relation OID -> (schema, name); what it runs; what it reads.
        let mut names: HashMap<u32, (String, String)> = HashMap::new();
        let mut runs: Reaches = HashMap::new();
        let mut reads: HashMap<u32, Vec<u32>> = HashMap::new();
        for row in part(1) {
            let Some(rel) = oid(row, 0) else {
                continue;
            };
            let function = cell(row, 3);
            let of_extension = cell(row, 4) == "t";
            // Called by name, would it be the database's own code? An
            // extension's function only when its name is not also a
            // built-in's (as for a call in the statement itself).
            if of_extension
                && !routines.functions.contains(&function)
                && sluice_policy::is_builtin_function(None, &function)
            {
                continue;
            }
            names.insert(rel, (cell(row, 1), cell(row, 2)));
            runs.entry(rel).or_default().insert(function);
        }
        for row in part(2) {
            let (Some(rel), Some(read)) = (oid(row, 0), oid(row, 3)) else {
                continue;
            };
            names.insert(rel, (cell(row, 1), cell(row, 2)));
            reads.entry(rel).or_default().push(read);
        }
        for row in part(3) {
            let function = cell(row, 4);
            if cell(row, 0) == "t" {
                let functions = routines.types.entry(cell(row, 3)).or_default();
                if !functions.contains(&function) {
                    functions.push(function);
                }
            } else if let Some(rel) = oid(row, 1) {
                names.insert(rel, (cell(row, 2), cell(row, 3)));
                runs.entry(rel).or_default().insert(function);
            }
        }
        // Foreign tables reach themselves; what reads them reaches them.
        let mut foreign: Reaches = HashMap::new();
        for row in part(4) {
            let Some(rel) = oid(row, 0) else {
                continue;
            };
            let (schema, name) = (cell(row, 1), cell(row, 2));
            foreign
                .entry(rel)
                .or_default()
                .insert(format!("{schema}.{name}"));
            names.insert(rel, (schema, name));
        }
        let mut reads_with_children = reads.clone();
        for row in part(5) {
            let (Some(parent), Some(child)) = (oid(row, 0), oid(row, 3)) else {
                continue;
            };
            names.insert(parent, (cell(row, 1), cell(row, 2)));
            reads_with_children.entry(parent).or_default().push(child);
        }
        routines.relations = by_name(close_over(runs, &reads), &names);
        routines.foreign = by_name(close_over(foreign, &reads_with_children), &names);
        routines
    }
}

/// What each relation (by OID) reaches when read.
type Reaches = HashMap<u32, BTreeSet<String>>;

/// Adds to what each relation reaches what the relations it reads reach,
/// through views over views and policies reading tables with policies, to
/// any depth and around cycles: a relation whose set grows passes the
/// growth on to its readers until nothing grows.
fn close_over(mut reaches: Reaches, reads: &HashMap<u32, Vec<u32>>) -> Reaches {
    let mut readers: HashMap<u32, Vec<u32>> = HashMap::new();
    for (rel, sources) in reads {
        for source in sources {
            readers.entry(*source).or_default().push(*rel);
        }
    }
    let mut pending: Vec<u32> = reaches.keys().copied().collect();
    while let Some(source) = pending.pop() {
        let Some(readers) = readers.get(&source) else {
            continue;
        };
        let reached: Vec<String> = reaches
            .get(&source)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        for reader in readers {
            let own = reaches.entry(*reader).or_default();
            let before = own.len();
            own.extend(reached.iter().cloned());
            if own.len() > before {
                pending.push(*reader);
            }
        }
    }
    reaches
}

/// `reaches` keyed by relation name (lowercase) and schema.
fn by_name(reaches: Reaches, names: &HashMap<u32, (String, String)>) -> ByRelation {
    let mut relations = ByRelation::new();
    for (rel, reached) in reaches {
        if reached.is_empty() {
            continue;
        }
        let Some((schema, name)) = names.get(&rel) else {
            continue;
        };
        relations
            .entry(name.to_lowercase())
            .or_default()
            .push((schema.clone(), reached.into_iter().collect()));
    }
    relations
}

/// What a statement reaches in the database beyond what its text says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// Functions and operators of the database (kind `user_function`).
    pub functions: Vec<String>,
    /// Foreign tables, `schema.table` (kind `foreign_data`).
    pub foreign_tables: Vec<String>,
}

impl Routines {
    /// What `statement` may reach without naming it as such, beyond its
    /// [`user_functions`](sluice_policy::StatementFacts::user_functions):
    /// the database's functions and operators reached by unqualified
    /// calls, attribute notation and syntax an older server reads as a
    /// call, its operators (named, or implied by a construct that
    /// compares), casts to its types, and what the relations the
    /// statement reads and writes run; and the foreign tables those
    /// relations read. `defined` tells names the session itself defined
    /// (in its transaction only it sees them).
    pub fn reached_by(
        &self,
        statement: &ClassifiedStatement,
        defined: impl Fn(&str) -> bool,
    ) -> Reached {
        let facts = &statement.facts;
        let names = &statement.catalog_names;
        let function = |name: &str| self.functions.contains(name) || defined(name);
        let operator = |symbol: &str| self.operators.contains(symbol) || defined(symbol);
        let mut found: Vec<String> = facts
            .functions
            .iter()
            .filter(|f| !f.contains('.') && function(f))
            .chain(names.attributes.iter().filter(|a| function(a)))
            .chain(names.calls.iter().filter(|c| function(c)))
            .chain(names.operators.iter().filter(|o| operator(o)))
            .cloned()
            .collect();
        for name in &names.types {
            match self.types.get(name) {
                Some(functions) => found.extend(functions.iter().cloned()),
                None if defined(name) => found.push(name.clone()),
                None => {}
            }
        }
        let mut foreign_tables = Vec::new();
        for table in facts.tables_read.iter().chain(&facts.tables_written) {
            found.extend(reached_by_reading(&self.relations, table).cloned());
            foreign_tables.extend(reached_by_reading(&self.foreign, table).cloned());
        }
        found.sort_unstable();
        found.dedup();
        found.retain(|f| !facts.user_functions.contains(f));
        foreign_tables.sort_unstable();
        foreign_tables.dedup();
        Reached {
            functions: found,
            foreign_tables,
        }
    }
}

/// What reading relation `name` (`table` or `schema.table`, as the
/// statement wrote it; any schema's when unqualified) reaches.
fn reached_by_reading<'a>(
    relations: &'a ByRelation,
    name: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    let (schema, table) = match name.rsplit_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, name),
    };
    relations
        .get(&table.to_lowercase())
        .into_iter()
        .flatten()
        .filter(move |(s, _)| schema.is_none_or(|want| want.eq_ignore_ascii_case(s)))
        .flat_map(|(_, reached)| reached)
}

/// A target's catalog as the queries would return it, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestCatalog<'a> {
    pub functions: &'a [&'a str],
    pub operators: &'a [&'a str],
    /// (relation OID, schema, relation, function its view or policy
    /// calls, whether that is an extension's)
    pub runs: &'a [(u32, &'a str, &'a str, &'a str, bool)],
    /// (view OID, schema, view, OID of a relation it reads)
    pub reads: &'a [(u32, &'a str, &'a str, u32)],
    /// (type, function its operations run)
    pub types: &'a [(&'a str, &'a str)],
    /// (relation OID, schema, relation, function a column's type runs)
    pub typed: &'a [(u32, &'a str, &'a str, &'a str)],
    /// (OID, schema, foreign table)
    pub foreign: &'a [(u32, &'a str, &'a str)],
    /// (parent OID, schema, parent, OID of a partition or child)
    pub children: &'a [(u32, &'a str, &'a str, u32)],
}

#[cfg(test)]
impl TestCatalog<'_> {
    pub fn build(&self) -> Routines {
        let row = |cells: &[&str]| -> Vec<Option<String>> {
            cells
                .iter()
                .map(|c| (!c.is_empty()).then(|| (*c).to_owned()))
                .collect()
        };
        let defined = self
            .functions
            .iter()
            .map(|f| row(&["f", f]))
            .chain(self.operators.iter().map(|o| row(&["o", o])))
            .collect();
        let runs = self
            .runs
            .iter()
            .map(|(oid, schema, rel, function, ext)| {
                row(&[
                    &oid.to_string(),
                    schema,
                    rel,
                    function,
                    if *ext { "t" } else { "f" },
                ])
            })
            .collect();
        let edges = |edges: &[(u32, &str, &str, u32)]| -> Vec<Vec<Option<String>>> {
            edges
                .iter()
                .map(|(oid, schema, rel, to)| {
                    row(&[&oid.to_string(), schema, rel, &to.to_string()])
                })
                .collect()
        };
        let types = self
            .types
            .iter()
            .map(|(name, function)| row(&["t", "", "", name, function]))
            .chain(self.typed.iter().map(|(oid, schema, rel, function)| {
                row(&["r", &oid.to_string(), schema, rel, function])
            }))
            .collect();
        let foreign = self
            .foreign
            .iter()
            .map(|(oid, schema, rel)| row(&[&oid.to_string(), schema, rel]))
            .collect();
        Routines::from_rows(&[
            defined,
            runs,
            edges(self.reads),
            types,
            foreign,
            edges(self.children),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached(routines: &Routines, sql: &str) -> Reached {
        let statements = sluice_policy::classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(statements.len(), 1, "{sql}");
        routines.reached_by(&statements[0], |_| false)
    }

    fn run_by(routines: &Routines, sql: &str) -> Vec<String> {
        reached(routines, sql).functions
    }

    #[test]
    fn names_the_database_defines_are_found_wherever_the_text_reaches_them() {
        let routines = TestCatalog {
            functions: &["touch", "lower", "get_orders"],
            operators: &["="],
            runs: &[
                (10, "public", "touched", "touch", false),
                (11, "public", "hashed", "digest", true),
                (12, "public", "cased", "replace", true),
                (13, "app", "guarded", "may_see", false),
            ],
            reads: &[
                (20, "public", "outer_view", 10),
                (21, "public", "plain", 30),
            ],
            ..TestCatalog::default()
        }
        .build();
        let found = |sql: &str| run_by(&routines, sql);
        // Attribute notation and unqualified calls of a database's name.
        assert_eq!(found("SELECT t.touch FROM t"), ["touch"]);
        assert_eq!(found("SELECT (t).touch FROM t"), ["touch"]);
        assert_eq!(found("SELECT lower(x) FROM t"), ["lower"]);
        // Its operators, by symbol.
        assert_eq!(found("SELECT 1 FROM t WHERE a = b"), ["="]);
        assert!(found("SELECT 1 FROM t WHERE a < b").is_empty());
        // A call qualified with `pg_catalog` may be one the grammar
        // qualified itself (`json_object(...)`), a plain call to an older
        // server: it counts too.
        assert_eq!(found("SELECT pg_catalog.lower(x) FROM t"), ["lower"]);
        assert!(found("SELECT pg_catalog.upper(x) FROM t").is_empty());
        // Already a user function by its name: not reported twice.
        assert!(found("SELECT touch(t) FROM t").is_empty());
        // Views and policies that call them, through other views too, read
        // or written, qualified or not.
        assert_eq!(found("SELECT * FROM touched"), ["touch"]);
        assert_eq!(found("SELECT * FROM public.outer_view"), ["touch"]);
        assert_eq!(
            found("UPDATE app.guarded SET x = 1 WHERE id < 2"),
            ["may_see"]
        );
        assert!(found("SELECT * FROM other.touched").is_empty());
        assert!(found("SELECT * FROM plain").is_empty());
        // An extension's function counts unless its name is a built-in's.
        assert_eq!(found("SELECT * FROM hashed"), ["digest"]);
        assert!(found("SELECT * FROM cased").is_empty());
        // A column that is no function of the database.
        assert!(found("SELECT t.id FROM t").is_empty());
    }

    #[test]
    fn what_the_session_defined_counts_before_the_catalog_shows_it() {
        let routines = TestCatalog::default().build();
        let statement = sluice_policy::classify("SELECT t.mine, 1 === 2, a = b FROM t")
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        assert_eq!(
            routines.reached_by(&statement, |_| false),
            Reached::default()
        );
        let defined: HashSet<&str> = ["mine", "="].into();
        assert_eq!(
            routines
                .reached_by(&statement, |n| defined.contains(n))
                .functions,
            ["=", "mine"]
        );
    }

    #[test]
    fn types_whose_operations_run_the_database_s_functions_are_found_by_cast_and_column() {
        let routines = TestCatalog {
            functions: &["is_positive", "mood_json"],
            types: &[
                ("positive", "is_positive"),
                ("_positive", "is_positive"),
                ("mood", "mood_json"),
                ("t_mood", "mood_json"),
            ],
            typed: &[(30, "public", "t_mood", "mood_json")],
            reads: &[(31, "public", "moods", 30)],
            ..TestCatalog::default()
        }
        .build();
        let found = |sql: &str| run_by(&routines, sql);
        // Casts, in each spelling, and to arrays of the type.
        assert_eq!(found("SELECT '5'::positive"), ["is_positive"]);
        assert_eq!(
            found("SELECT CAST(x AS app.positive) FROM t"),
            ["is_positive"]
        );
        assert_eq!(found("SELECT positive '5'"), ["is_positive"]);
        assert_eq!(found("SELECT '{5}'::positive[]"), ["is_positive"]);
        assert_eq!(found("SELECT ROW(1)::t_mood"), ["mood_json"]);
        // Relations with a column of such a type, and views over them.
        assert_eq!(found("SELECT to_json(m) FROM t_mood"), ["mood_json"]);
        assert_eq!(
            found("INSERT INTO public.t_mood VALUES (NULL)"),
            ["mood_json"]
        );
        assert_eq!(found("SELECT * FROM moods"), ["mood_json"]);
        // Other types and relations.
        assert!(found("SELECT '5'::int, x::text FROM t").is_empty());
        // A type the session defined runs what it was defined with.
        let statement = sluice_policy::classify("SELECT '5'::mine")
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        assert_eq!(
            routines.reached_by(&statement, |n| n == "mine").functions,
            ["mine"]
        );
    }

    #[test]
    fn foreign_tables_are_found_through_views_and_partitioned_tables() {
        let routines = TestCatalog {
            foreign: &[(40, "remote", "orders"), (41, "public", "eu_sales")],
            reads: &[(42, "public", "order_view", 40)],
            children: &[
                (43, "public", "sales", 44),
                (44, "public", "sales_2026", 41),
            ],
            ..TestCatalog::default()
        }
        .build();
        let foreign = |sql: &str| reached(&routines, sql).foreign_tables;
        assert_eq!(foreign("SELECT * FROM remote.orders"), ["remote.orders"]);
        assert_eq!(foreign("SELECT * FROM orders"), ["remote.orders"]);
        assert_eq!(
            foreign("DELETE FROM orders WHERE id = 1"),
            ["remote.orders"]
        );
        assert_eq!(foreign("SELECT * FROM order_view"), ["remote.orders"]);
        // Two levels of partitions down.
        assert_eq!(foreign("SELECT sum(x) FROM sales"), ["public.eu_sales"]);
        assert_eq!(
            foreign("SELECT * FROM sales JOIN order_view USING (id)"),
            ["public.eu_sales", "remote.orders"]
        );
        // Another schema's table of the same name, and local tables.
        assert!(foreign("SELECT * FROM public.orders").is_empty());
        assert!(foreign("SELECT * FROM customers").is_empty());
        assert!(
            reached(&routines, "SELECT * FROM sales")
                .functions
                .is_empty()
        );
    }

    #[test]
    fn what_a_relation_reaches_is_followed_to_any_depth_and_around_cycles() {
        // v1 reads the view calling `touch`, v2 reads v1, ... v500.
        let names: Vec<String> = (0..=500).map(|i| format!("v{i}")).collect();
        let chain: Vec<(u32, &str, &str, u32)> = (1..=500u32)
            .map(|i| (1000 + i, "public", names[i as usize].as_str(), 999 + i))
            .collect();
        // Two tables whose policies read each other; only one calls `see`.
        let mut reads = chain.clone();
        reads.extend([(10, "public", "a", 11), (11, "public", "b", 10)]);
        let routines = TestCatalog {
            functions: &["touch", "see"],
            runs: &[
                (1000, "public", "v0", "touch", false),
                (10, "public", "a", "see", false),
            ],
            reads: &reads,
            ..TestCatalog::default()
        }
        .build();
        assert_eq!(run_by(&routines, "SELECT * FROM v500"), ["touch"]);
        assert_eq!(run_by(&routines, "SELECT * FROM b"), ["see"]);
    }
}
