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
//!   row-level-security policy does.
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
//! Not seen: functions the database runs for its own types without any
//! name in the text (casts, a domain's CHECK, the comparison functions of a
//! type's operator classes used by `ORDER BY` or an index).

use std::collections::{BTreeSet, HashMap, HashSet};

use sluice_policy::ClassifiedStatement;

use super::catalog::{FromCatalog, cell};

/// How many rounds the view closure runs (views over views over ...);
/// deeper nesting than this is not followed further.
const MAX_VIEW_DEPTH: usize = 64;

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

#[derive(Debug, Default)]
pub struct Routines {
    /// Names of the functions, procedures and aggregates defined in the
    /// database.
    functions: HashSet<String>,
    /// Symbols of the operators defined in the database.
    operators: HashSet<String>,
    /// Relations whose reading runs such functions, directly or through
    /// the views they read, by name: `relname -> [(schema, functions)]`.
    relations: HashMap<String, Vec<(String, Vec<String>)>>,
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
    ];

    fn from_rows(results: &[Vec<Vec<Option<String>>>]) -> Self {
        let empty = Vec::new();
        let part = |i: usize| results.get(i).unwrap_or(&empty);
        let mut routines = Self::default();
        for row in part(0) {
            let name = cell(row, 1);
            match cell(row, 0).as_str() {
                "f" => routines.functions.insert(name),
                _ => routines.operators.insert(name),
            };
        }
        // Relation OID -> (schema, name), what it calls, what it reads.
        let mut names: HashMap<u32, (String, String)> = HashMap::new();
        let mut runs: HashMap<u32, BTreeSet<String>> = HashMap::new();
        let mut reads: HashMap<u32, Vec<u32>> = HashMap::new();
        for row in part(1) {
            let Ok(rel) = cell(row, 0).parse::<u32>() else {
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
            let (Ok(rel), Ok(read)) = (cell(row, 0).parse::<u32>(), cell(row, 3).parse::<u32>())
            else {
                continue;
            };
            names.insert(rel, (cell(row, 1), cell(row, 2)));
            reads.entry(rel).or_default().push(read);
        }
        // What a relation runs includes what the relations it reads run.
        for _ in 0..MAX_VIEW_DEPTH {
            let mut changed = false;
            for (rel, sources) in &reads {
                let inherited: Vec<String> = sources
                    .iter()
                    .filter_map(|s| runs.get(s))
                    .flatten()
                    .cloned()
                    .collect();
                let own = runs.entry(*rel).or_default();
                for function in inherited {
                    changed |= own.insert(function);
                }
            }
            if !changed {
                break;
            }
        }
        for (rel, functions) in runs {
            if functions.is_empty() {
                continue;
            }
            let Some((schema, name)) = names.remove(&rel) else {
                continue;
            };
            routines
                .relations
                .entry(name.to_lowercase())
                .or_default()
                .push((schema, functions.into_iter().collect()));
        }
        routines
    }
}

impl Routines {
    /// The functions and operators defined in the database that
    /// `statement` may run without naming them as such, beyond its
    /// [`user_functions`](sluice_policy::StatementFacts::user_functions):
    /// unqualified calls, attribute notation and syntax an older server
    /// reads as a call naming a function of the database, its operators
    /// (named, or implied by a construct that compares), and what the relations it reads and
    /// writes run. `defined` tells names the session itself defined (in
    /// its transaction only it sees them).
    pub fn run_by(
        &self,
        statement: &ClassifiedStatement,
        defined: impl Fn(&str) -> bool,
    ) -> Vec<String> {
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
        for table in facts.tables_read.iter().chain(&facts.tables_written) {
            found.extend(self.run_by_reading(table).cloned());
        }
        found.sort_unstable();
        found.dedup();
        found.retain(|f| !facts.user_functions.contains(f));
        found
    }

    /// What reading relation `name` (`table` or `schema.table`, as the
    /// statement wrote it; any schema's when unqualified) runs.
    fn run_by_reading<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let (schema, table) = match name.rsplit_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name),
        };
        self.relations
            .get(&table.to_lowercase())
            .into_iter()
            .flatten()
            .filter(move |(s, _)| schema.is_none_or(|want| want.eq_ignore_ascii_case(s)))
            .flat_map(|(_, functions)| functions)
    }
}

#[cfg(test)]
pub(crate) fn test_routines(
    functions: &[&str],
    operators: &[&str],
    runs: &[(u32, &str, &str, &str, bool)],
    reads: &[(u32, &str, &str, u32)],
) -> Routines {
    let text = |s: &str| Some(s.to_owned());
    let defined = functions
        .iter()
        .map(|f| vec![text("f"), text(f)])
        .chain(operators.iter().map(|o| vec![text("o"), text(o)]))
        .collect();
    let runs = runs
        .iter()
        .map(|(oid, schema, rel, function, ext)| {
            vec![
                Some(oid.to_string()),
                text(schema),
                text(rel),
                text(function),
                text(if *ext { "t" } else { "f" }),
            ]
        })
        .collect();
    let reads = reads
        .iter()
        .map(|(oid, schema, rel, read)| {
            vec![
                Some(oid.to_string()),
                text(schema),
                text(rel),
                Some(read.to_string()),
            ]
        })
        .collect();
    Routines::from_rows(&[defined, runs, reads])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_by(routines: &Routines, sql: &str) -> Vec<String> {
        let statements = sluice_policy::classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(statements.len(), 1, "{sql}");
        routines.run_by(&statements[0], |_| false)
    }

    #[test]
    fn names_the_database_defines_are_found_wherever_the_text_reaches_them() {
        let routines = test_routines(
            &["touch", "lower", "get_orders"],
            &["="],
            &[
                (10, "public", "touched", "touch", false),
                (11, "public", "hashed", "digest", true),
                (12, "public", "cased", "replace", true),
                (13, "app", "guarded", "may_see", false),
            ],
            &[
                (20, "public", "outer_view", 10),
                (21, "public", "plain", 30),
            ],
        );
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
        let routines = test_routines(&[], &[], &[], &[]);
        let statement = sluice_policy::classify("SELECT t.mine, 1 === 2, a = b FROM t")
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        assert!(routines.run_by(&statement, |_| false).is_empty());
        let defined: HashSet<&str> = ["mine", "="].into();
        assert_eq!(
            routines.run_by(&statement, |n| defined.contains(n)),
            ["=", "mine"]
        );
    }
}
