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
//!   row-level-security policy does; writing a table whose rule for that
//!   write does, or reads or writes a relation that does ([`Rules`]:
//!   reading the table runs none of its `ON INSERT`, `ON UPDATE` or `ON
//!   DELETE` rules, and each write only those for it);
//! * a type's own operations: a cast to it, its input and output, a
//!   domain's CHECK, a range's subtype_diff, the comparison functions of
//!   its default operator classes ([`TYPE_FUNCTIONS`]), for statements
//!   naming the type, relations with columns of it, parameters declared
//!   of it and built-ins that make a value of a type given by OID.
//!
//! Foreign tables are found the same way, with the views and partitioned
//! tables that read them: reading one makes the database query another
//! server (kind `foreign_data`). So are views over the catalogs where the
//! database keeps credentials (kind `credential_catalog`,
//! [`CREDENTIAL_VIEWS`]).
//!
//! The agent reads, per resource and at most once a minute (and after DDL
//! there), the names of the functions and operators defined in the
//! database (outside `pg_catalog` and `information_schema`, and not part of
//! an extension: extensions are installed by a superuser, and theirs
//! overload `=` and many built-in names; for field selections, though, the
//! names of extensions' functions of one argument too, which attribute
//! notation calls), and which relations run which
//! functions when read. A statement that may reach one gets the kind
//! `user_function` with its name, as a direct call would. Names are
//! compared without schemas: `t.touch` is flagged when any schema defines
//! a `touch`, which can only flag too much.
//!
//! What is built over a type (domains, arrays, ranges, row types with a
//! column of it) and what reads what (views over views, partitions) are
//! closed over here rather than by recursive queries, so a chain of a
//! thousand domains costs the target no more than a thousand tables.
//!
//! Partitioned tables whose key's operator class or expression runs one
//! count too, with their partitions ([`PARTITION_KEYS`]).
//!
//! For deny and approve rules, which match what a statement reaches
//! however it reaches it, the agent also keeps which relations each view,
//! rule, policy and partitioned table reads, and which functions they
//! call, PostgreSQL's own included ([`CALLS`]), and which functions the
//! CHECKs of domains and the casts created after initdb call
//! ([`TYPE_CALLS`]); and what writing a table calls (its constraints,
//! defaults, index expressions and triggers: [`WRITE_CALLS`]), which
//! tables its foreign keys make a write to it write ([`FOREIGN_KEYS`]),
//! and which of its rules make a write delete or update ([`RULE_WRITES`]).
//!
//! The same read gives the masker how the database's own types are sent
//! in binary ([`TYPE_FORMS`], [`Routines::type_form`]): enums, composites,
//! domains, ranges, multiranges and arrays of them, so detectors read them
//! in results that asyncpg and sqlx ask for in binary.
//!
//! What a table runs when written besides its rules, policies and
//! partition key (triggers, defaults, generated columns, constraints,
//! index expressions) is not `user_function`: allowing the write allows
//! the table's own logic.
//!
//! What the session renamed (a relation, schema or type) reaches under
//! its new name what it did under the old one ([`Routines::reached_by`]'s
//! `renames`), since inside its transaction only the session sees the
//! new name. Moving a table moves its indexes and owned sequences with it
//! ([`MOVED_WITH`]): their renames are added for rules naming them.
//!
//! SQL-standard function bodies (`BEGIN ATOMIC`, `RETURN`), which
//! PostgreSQL stores parsed, are read like views ([`BODIES`],
//! [`Routines::follow_bodies`]): calling one reaches what its body reads
//! and writes, calls what it calls and does what its commands do. Text
//! bodies (PL/pgSQL, SQL in a string) are not read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use sluice_pgwire::binary::Form;
use sluice_policy::{ClassifiedStatement, Rename, SqlKind};

use super::catalog::{FromCatalog, cell};

/// The database's own functions: not `pg_catalog`'s or
/// `information_schema`'s, not an extension's, not written in `internal`
/// (PostgreSQL's own C code, such as a range type's generated
/// constructors).
macro_rules! own {
    () => {
        "WITH own AS ( \
   SELECT p.oid, p.proname FROM pg_catalog.pg_proc p \
   JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
   JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND l.lanname <> 'internal' \
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'))"
    };
}

/// What runs when a relation is read or written: its rewrite rules (a
/// view's or materialized view's query, a table's `ON INSERT`, `ON
/// UPDATE` or `ON DELETE` rules), and its row-level-security policies,
/// enabled or not (a session allowed `alter` may enable them in its
/// transaction) (`rel`, the object whose dependencies say what it
/// calls, reads and casts to, and the event that runs it: `ev_type` of a
/// rule, `1` `ON SELECT`, `2` `ON UPDATE`, `3` `ON INSERT`, `4` `ON
/// DELETE`, or `p` for a policy).
macro_rules! runs {
    () => {
        "WITH runs AS ( \
           SELECT r.ev_class AS rel, 'pg_catalog.pg_rewrite'::regclass AS classid, r.oid AS objid, r.ev_type::text AS event \
           FROM pg_catalog.pg_rewrite r \
           UNION ALL \
           SELECT pol.polrelid, 'pg_catalog.pg_policy'::regclass, pol.oid, 'p' \
           FROM pg_catalog.pg_policy pol) "
    };
}

/// The types whose operations run the database's own functions
/// (`own!()`) directly: (type OID, whether the type is PostgreSQL's own,
/// function). A type runs a function when it is its input, output, send,
/// receive, typmod, analyze or subscript function, a domain CHECK calls
/// it (or an operator it implements), it is a range's canonical or
/// subtype_diff function (the planner calls that for `&&`), a cast to or
/// from the type (`to_json` uses the cast to `json`; only the database's
/// side of a cast between its type and a built-in one counts, both sides
/// of one between two built-in types that an assignment or any expression
/// may run; explicit-only ones are in [`EXPLICIT_CASTS`]), or a member of
/// the type's default operator classes (`ORDER BY`, `DISTINCT`, `=` and
/// hash joins use those).
/// The subscript handler (`typsubscript`, PostgreSQL 14) is found by the
/// dependency PostgreSQL records on it, as on every support function of a
/// type: naming the column would fail on older servers, and reading it
/// through `to_jsonb` of each row took most of the query's time on a
/// database of 15,000 relations.
const TYPE_FUNCTIONS: &str = concat!(
    own!(),
    ", builtin (oid, builtin) AS ( \
   SELECT t.oid, n.nspname IN ('pg_catalog', 'information_schema') FROM pg_catalog.pg_type t \
   JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace), \
 direct (typ, proname) AS ( \
   SELECT io.typ, own.proname FROM ( \
     SELECT t.oid, unnest(ARRAY[t.typinput, t.typoutput, t.typreceive, t.typsend, t.typmodin, t.typmodout, t.typanalyze]::oid[]) \
     FROM pg_catalog.pg_type t) io (typ, f) \
   JOIN own ON own.oid = io.f \
   UNION \
   SELECT d.objid, own.proname FROM pg_catalog.pg_depend d JOIN own ON own.oid = d.refobjid \
   WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.refclassid = 'pg_catalog.pg_proc'::regclass \
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
   JOIN builtin s ON s.oid = c.castsource JOIN builtin t ON t.oid = c.casttarget \
   CROSS JOIN LATERAL (VALUES (c.castsource, s.builtin), (c.casttarget, t.builtin)) x (typ, builtin) \
   WHERE NOT x.builtin OR (s.builtin AND t.builtin AND c.castcontext <> 'e') \
   UNION \
   SELECT oc.opcintype, own.proname FROM pg_catalog.pg_opclass oc \
   JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily \
   JOIN own ON own.oid = ap.amproc WHERE oc.opcdefault \
   UNION \
   SELECT oc.opcintype, own.proname FROM pg_catalog.pg_opclass oc \
   JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily \
   JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr \
   JOIN own ON own.oid = o.oprcode::oid WHERE oc.opcdefault) \
 SELECT direct.typ::bigint, builtin.builtin, direct.proname FROM direct \
 JOIN builtin ON builtin.oid = direct.typ"
);

/// Partitioned tables whose partition key runs the database's functions:
/// a key expression calling one, or an operator class (default or not)
/// whose support functions or operators are its own, which routing rows
/// and pruning partitions call. (relation OID, schema, relation,
/// function); partitions inherit them from their ancestors.
const PARTITION_KEYS: &str = concat!(
    own!(),
    " SELECT DISTINCT c.oid::bigint, n.nspname, c.relname, own.proname \
 FROM pg_catalog.pg_partitioned_table pt \
 JOIN pg_catalog.pg_class c ON c.oid = pt.partrelid \
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 CROSS JOIN LATERAL unnest(pt.partclass::oid[]) k (opclass) \
 JOIN pg_catalog.pg_opclass oc ON oc.oid = k.opclass \
 JOIN ( \
   SELECT ap.amprocfamily AS family, ap.amproc::oid AS f FROM pg_catalog.pg_amproc ap \
   UNION ALL \
   SELECT ao.amopfamily, o.oprcode::oid FROM pg_catalog.pg_amop ao \
   JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr) m ON m.family = oc.opcfamily \
 JOIN own ON own.oid = m.f \
 UNION \
 SELECT c.oid::bigint, n.nspname, c.relname, own.proname \
 FROM pg_catalog.pg_partitioned_table pt \
 JOIN pg_catalog.pg_class c ON c.oid = pt.partrelid \
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = pt.partrelid \
   AND d.refclassid = 'pg_catalog.pg_proc'::regclass \
 JOIN own ON own.oid = d.refobjid"
);

/// What is built over the database's types, as (type, type over it):
/// domains, arrays, ranges and multiranges over a type, and row types
/// with a column of it. Types of `pg_catalog` and `information_schema`
/// are left out as the base: what they run is either PostgreSQL's own or
/// stands for every statement (see [`TYPE_FUNCTIONS`]).
const TYPE_EDGES: &str = "WITH edges (base, derived) AS ( \
   SELECT typbasetype, oid FROM pg_catalog.pg_type WHERE typbasetype <> 0 \
   UNION ALL SELECT oid, typarray FROM pg_catalog.pg_type WHERE typarray <> 0 \
   UNION ALL SELECT rngsubtype, rngtypid FROM pg_catalog.pg_range \
   UNION ALL SELECT r.rngtypid, (to_jsonb(r) ->> 'rngmultitypid')::oid FROM pg_catalog.pg_range r \
   WHERE to_jsonb(r) ? 'rngmultitypid' \
   UNION ALL SELECT a.atttypid, c.reltype FROM pg_catalog.pg_attribute a \
   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.reltype <> 0) \
 SELECT DISTINCT edges.base::bigint, edges.derived::bigint FROM edges \
 JOIN pg_catalog.pg_type t ON t.oid = edges.base \
 JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// The database's types by name, with the relation whose row type each
/// is: (type OID, type, relation OID, schema, relation). The relations
/// also tell whether one named `pg_settings` is outside `pg_catalog`. Types created in
/// `pg_catalog` after initdb are among them, so that every type a Parse
/// may declare is known.
const TYPE_NAMES: &str = "SELECT t.oid::bigint, t.typname, c.oid::bigint, rn.nspname, c.relname \
   FROM pg_catalog.pg_type t \
   JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
   LEFT JOIN pg_catalog.pg_class c ON c.reltype = t.oid AND c.relkind IN ('r', 'v', 'm', 'p', 'f') \
   LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = c.relnamespace \
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') OR t.oid >= 16384";

/// How the values of the types created after initdb are sent in binary,
/// for masking ([`Routines::type_form`]): (type OID, `typtype`,
/// `typelem`, `typbasetype`, range subtype, name of the send function,
/// a multirange's range type). Multiranges came with PostgreSQL 14:
/// their column is read through `to_jsonb` to run on older servers too.
const TYPE_FORMS: &str = "SELECT t.oid::bigint, t.typtype::text, t.typelem::bigint, t.typbasetype::bigint, \
   COALESCE(r.rngsubtype, 0)::bigint, p.proname, COALESCE(m.rngtypid, 0)::bigint \
   FROM pg_catalog.pg_type t \
   LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
   LEFT JOIN pg_catalog.pg_range m ON (to_jsonb(m) ->> 'rngmultitypid')::oid = t.oid \
   LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.typsend \
   WHERE t.oid >= 16384";

/// The stored query trees of what runs when a relation is read or
/// written (as in `runs!()`), as text, and the event that runs it:
/// `trees (rel, tree, event)`, `event` a rule's `pg_rewrite.ev_type` or
/// `p` for a policy, for what PostgreSQL records no dependency on (its
/// bootstrap catalogs and pinned built-in functions). A rule's tree is
/// its commands and its `WHERE` (`ev_qual`), which runs whether or not
/// it then holds; a policy's, its `USING` and `WITH CHECK`.
/// Reading runs a view's query (the `ON SELECT` rule, `ev_type` `1`) and
/// row-level-security policies (any of them: `SELECT ... FOR UPDATE`
/// checks the `UPDATE` ones), not a table's `ON INSERT`, `ON UPDATE` or
/// `ON DELETE` rules.
macro_rules! trees {
    () => {
        "trees (rel, tree, event) AS ( \
           SELECT r.ev_class, concat(r.ev_action::text, ' ', r.ev_qual::text), r.ev_type::text \
           FROM pg_catalog.pg_rewrite r \
           UNION ALL \
           SELECT pol.polrelid, concat(pol.polqual::text, ' ', pol.polwithcheck::text), 'p' \
           FROM pg_catalog.pg_policy pol)"
    };
}

/// What reads the catalogs where the database keeps credentials (kind
/// `credential_catalog`; the classifier finds them by name): (relation
/// OID, schema, relation, the catalog it reads). These are the catalogs
/// themselves and the system views that show their secrets, by name, and
/// the database's own views (`ON SELECT` rules) and row-level-security
/// policies (any
/// created after initdb, whatever their schema) that read `pg_authid`,
/// `pg_user_mapping` or `pg_subscription` (fixed OIDs 1260, 1418 and
/// 6100). PostgreSQL records no dependency on those
/// bootstrap catalogs, so the rules' stored query trees are searched for
/// the range-table entries naming them (rules for writes reach them only
/// when the table is written that way: [`Rules`], through
/// [`CATALOG_READS`]). System views other than these
/// read `pg_authid` for role names only (`pg_roles` shows `********`), so
/// they are left out, and so are system views over the listed ones
/// (`pg_user` over `pg_shadow` shows `********` too). What the database's
/// own relations read is closed over in Rust.
const CREDENTIAL_VIEWS: &str = concat!(
    "WITH secret (oid, name) AS (VALUES \
     (1260, 'pg_catalog.pg_authid'), (1418, 'pg_catalog.pg_user_mapping'), (6100, 'pg_catalog.pg_subscription')), ",
    trees!(),
    " SELECT c.oid::bigint, n.nspname, c.relname, n.nspname || '.' || c.relname FROM pg_catalog.pg_class c \
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE (n.nspname = 'pg_catalog' AND c.relname IN ('pg_authid', 'pg_shadow', 'pg_subscription', 'pg_user_mapping', 'pg_user_mappings')) \
 OR (n.nspname = 'information_schema' AND c.relname IN ('_pg_user_mappings', 'user_mapping_options')) \
 UNION \
 SELECT c.oid::bigint, n.nspname, c.relname, secret.name FROM trees \
 JOIN pg_catalog.pg_class c ON c.oid = trees.rel \
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 JOIN secret ON position(':relid ' || secret.oid || ' ' IN trees.tree) > 0 \
 WHERE c.oid >= 16384 AND trees.event IN ('1', 'p')"
);

/// The nodes of a stored expression tree that call a function: a
/// function call, an aggregate, a window function, and an operator (by
/// its function, or by the operator when the tree does not name it), as
/// a pattern for `regexp_matches` (node, OID).
macro_rules! call_nodes {
    () => {
        "':(funcid|opfuncid|hashfuncid|negfuncid|aggfnoid|winfnoid|opno) ([0-9]+)'"
    };
}

/// Joins `calls (node, id)` (found with [`call_nodes!`]) to the function
/// called, `p` in schema `pn`.
macro_rules! called {
    () => {
        " LEFT JOIN pg_catalog.pg_operator o ON calls.node = 'opno' AND o.oid = calls.id \
 JOIN pg_catalog.pg_proc p ON p.oid = CASE WHEN calls.node = 'opno' THEN o.oprcode::oid ELSE calls.id END \
 JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace"
    };
}

/// The functions what runs when a relation is read or written calls
/// (`runs!()`), PostgreSQL's own included: (relation OID, schema,
/// relation, `schema.function`, what runs it: `pg_rewrite.ev_type` of a
/// rule (`1` a view's `ON SELECT`, `2` `ON UPDATE`, `3` `ON INSERT`, `4`
/// `ON DELETE`) or `p` for a row-level-security policy), for deny and
/// approve rules' `functions:` (a DBA's view over
/// `pg_stat_get_activity(NULL)`) and the kinds of what is called
/// (`query_to_xml` runs SQL). Calls of a table's `ON INSERT`, `ON UPDATE`
/// and `ON DELETE` rules count only when it is written that way: reading
/// `pg_settings` does not run its `ON UPDATE` rule's `set_config`, nor
/// does inserting into it.
/// PostgreSQL records no dependency on its own functions (they are
/// pinned), so the stored query trees are searched for the nodes that
/// call one: a function call, an aggregate, a window function, and an
/// operator (by its function, or by the operator when the tree does not
/// name it).
const CALLS: &str = concat!(
    "WITH ",
    trees!(),
    ", calls (rel, node, id, event) AS ( \
     SELECT trees.rel, m[1], m[2]::oid, trees.event FROM trees \
     CROSS JOIN LATERAL regexp_matches(trees.tree, ",
    call_nodes!(),
    ", 'g') m) \
 SELECT DISTINCT calls.rel::bigint, rn.nspname, rc.relname, pn.nspname || '.' || p.proname, calls.event FROM calls \
 JOIN pg_catalog.pg_class rc ON rc.oid = calls.rel \
 JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace",
    called!()
);

/// The functions a type's own operations call beyond PostgreSQL's,
/// PostgreSQL's own included, for deny and approve rules' `functions:`
/// (a DBA's domain whose CHECK calls `pg_read_file`, a cast created with
/// an extension's function): (type OID, whether the type is PostgreSQL's
/// own, `schema.function`). The CHECK constraints of domains created
/// after initdb are searched like [`CALLS`]'s trees; a cast created after
/// initdb counts as in [`TYPE_FUNCTIONS`] (the database's side of a cast
/// between its type and a built-in one, both sides of one between two
/// built-in types that an assignment or any expression may run, which any
/// statement may run; explicit-only ones are in [`EXPLICIT_CASTS`]).
const TYPE_CALLS: &str = concat!(
    "WITH builtin (oid, builtin) AS ( \
   SELECT t.oid, n.nspname IN ('pg_catalog', 'information_schema') FROM pg_catalog.pg_type t \
   JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace), \
 calls (typ, node, id) AS ( \
   SELECT c.contypid, m[1], m[2]::oid FROM pg_catalog.pg_constraint c \
   CROSS JOIN LATERAL regexp_matches(c.conbin::text, ",
    call_nodes!(),
    ", 'g') m \
   WHERE c.contypid <> 0 AND c.oid >= 16384 \
   UNION ALL \
   SELECT x.typ, 'funcid', c.castfunc FROM pg_catalog.pg_cast c \
   JOIN builtin s ON s.oid = c.castsource JOIN builtin t ON t.oid = c.casttarget \
   CROSS JOIN LATERAL (VALUES (c.castsource, s.builtin), (c.casttarget, t.builtin)) x (typ, builtin) \
   WHERE c.oid >= 16384 AND c.castfunc <> 0 \
   AND (NOT x.builtin OR (s.builtin AND t.builtin AND c.castcontext <> 'e'))) \
 SELECT DISTINCT calls.typ::bigint, builtin.builtin, pn.nspname || '.' || p.proname FROM calls \
 JOIN builtin ON builtin.oid = calls.typ",
    called!()
);

/// Casts created after initdb between two of PostgreSQL's types for
/// explicit use only (`CREATE CAST` without `AS ASSIGNMENT` or `AS
/// IMPLICIT`): only a cast naming the target type runs one (`x::boolean`,
/// `CAST(x AS boolean)`, `x::boolean[]`; PostgreSQL takes `bool(x)` for a
/// call of a function named `bool`), or a cast to a type built on it that
/// PostgreSQL coerces through it (a domain over it, at any depth, a row
/// type with a column of it). As (type name, `schema.function`, function,
/// whether the function is the database's own (`own!()`)).
/// Casts an assignment or any expression may run stand for every
/// statement ([`TYPE_FUNCTIONS`], [`TYPE_CALLS`]).
const EXPLICIT_CASTS: &str = concat!(
    own!(),
    ", builtin (oid, builtin) AS ( \
   SELECT t.oid, n.nspname IN ('pg_catalog', 'information_schema') FROM pg_catalog.pg_type t \
   JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace) \
 SELECT DISTINCT targets.name, pn.nspname || '.' || p.proname, p.proname, own.oid IS NOT NULL FROM ( \
   WITH RECURSIVE targets (typ, name, func) AS ( \
     SELECT c.casttarget, t.typname, c.castfunc FROM pg_catalog.pg_cast c \
     JOIN pg_catalog.pg_type t ON t.oid = c.casttarget \
     JOIN builtin s ON s.oid = c.castsource JOIN builtin bt ON bt.oid = c.casttarget \
     WHERE c.oid >= 16384 AND c.castfunc <> 0 AND c.castcontext = 'e' AND s.builtin AND bt.builtin \
     UNION \
     SELECT x.oid, x.typname, targets.func FROM targets CROSS JOIN LATERAL ( \
       SELECT d.oid, d.typname FROM pg_catalog.pg_type d WHERE d.typbasetype = targets.typ \
       UNION ALL \
       SELECT r.oid, r.typname FROM pg_catalog.pg_attribute a \
       JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
       JOIN pg_catalog.pg_type r ON r.oid = c.reltype \
       WHERE a.atttypid = targets.typ AND a.attnum > 0 AND NOT a.attisdropped) x) \
   SELECT * FROM targets) targets \
 JOIN pg_catalog.pg_proc p ON p.oid = targets.func \
 JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
 LEFT JOIN own ON own.oid = targets.func"
);

/// What writing a relation runs besides its rules and policies (which
/// [`CALLS`] has), PostgreSQL's own functions included, for deny and
/// approve rules' `functions:` (a DBA's `DEFAULT lo_creat(-1)`): (relation
/// OID, schema, relation, `schema.function`). The stored trees of its
/// `CHECK` constraints, column defaults and generated columns, index
/// expressions and predicates, and its triggers' `WHEN` conditions are
/// searched like [`CALLS`]'s, and so are the expressions of its extended
/// statistics (`CREATE STATISTICS ... ON (f(x))`, which `ANALYZE`
/// computes; their column came with PostgreSQL 14, so it is read through
/// `to_jsonb`); its triggers' functions (not PostgreSQL's
/// internal ones for foreign keys), its exclusion constraints' operators,
/// the functions of operator classes created after initdb that its
/// indexes use, and `nextval` for its identity columns (whose sequences
/// no default names) count too, and so do the partition key's expressions
/// and the functions and operators of operator classes created after
/// initdb that it uses, for a partitioned table (routing a row) and each
/// of its partitions at any depth (checking a row written to it
/// directly). Relations created after initdb only.
const WRITE_CALLS: &str = concat!(
    "WITH RECURSIVE keyed (rel, keyed) AS ( \
   SELECT pt.partrelid, pt.partrelid FROM pg_catalog.pg_partitioned_table pt \
   UNION \
   SELECT i.inhrelid, keyed.keyed FROM keyed JOIN pg_catalog.pg_inherits i ON i.inhparent = keyed.rel), \
 calls (rel, node, id) AS ( \
   SELECT k.rel, m[1], m[2]::oid FROM keyed k \
   JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = k.keyed \
   CROSS JOIN LATERAL regexp_matches(COALESCE(pt.partexprs::text, ''), ",
    call_nodes!(),
    ", 'g') m WHERE k.rel >= 16384 \
   UNION ALL \
   SELECT k.rel, m.node, m.id FROM keyed k \
   JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = k.keyed \
   CROSS JOIN LATERAL unnest(pt.partclass::oid[]) c (opc) \
   JOIN pg_catalog.pg_opclass oc ON oc.oid = c.opc \
   JOIN ( \
     SELECT ap.amprocfamily AS family, 'funcid' AS node, ap.amproc::oid AS id FROM pg_catalog.pg_amproc ap \
     UNION ALL \
     SELECT ao.amopfamily, 'opno', ao.amopopr FROM pg_catalog.pg_amop ao) m ON m.family = oc.opcfamily \
   WHERE k.rel >= 16384 AND oc.oid >= 16384 \
   UNION ALL \
   SELECT c.conrelid, m[1], m[2]::oid FROM pg_catalog.pg_constraint c \
   CROSS JOIN LATERAL regexp_matches(c.conbin::text, ",
    call_nodes!(),
    ", 'g') m WHERE c.conrelid >= 16384 \
   UNION ALL \
   SELECT c.conrelid, 'opno', x.op FROM pg_catalog.pg_constraint c \
   CROSS JOIN LATERAL unnest(c.conexclop) x (op) WHERE c.conrelid >= 16384 \
   UNION ALL \
   SELECT d.adrelid, m[1], m[2]::oid FROM pg_catalog.pg_attrdef d \
   CROSS JOIN LATERAL regexp_matches(d.adbin::text, ",
    call_nodes!(),
    ", 'g') m WHERE d.adrelid >= 16384 \
   UNION ALL \
   SELECT i.indrelid, m[1], m[2]::oid FROM pg_catalog.pg_index i \
   CROSS JOIN LATERAL regexp_matches(concat(i.indexprs::text, ' ', i.indpred::text), ",
    call_nodes!(),
    ", 'g') m WHERE i.indrelid >= 16384 \
   UNION ALL \
   SELECT i.indrelid, 'funcid', ap.amproc::oid FROM pg_catalog.pg_index i \
   CROSS JOIN LATERAL unnest(i.indclass::oid[]) k (opc) \
   JOIN pg_catalog.pg_opclass oc ON oc.oid = k.opc \
   JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily \
   WHERE i.indrelid >= 16384 AND oc.oid >= 16384 \
   UNION ALL \
   SELECT a.attrelid, 'funcid', 'pg_catalog.nextval(pg_catalog.regclass)'::pg_catalog.regprocedure::oid \
   FROM pg_catalog.pg_attribute a WHERE a.attrelid >= 16384 AND a.attidentity <> '' AND NOT a.attisdropped \
   UNION ALL \
   SELECT t.tgrelid, 'funcid', t.tgfoid FROM pg_catalog.pg_trigger t \
   WHERE t.tgrelid >= 16384 AND NOT t.tgisinternal \
   UNION ALL \
   SELECT t.tgrelid, m[1], m[2]::oid FROM pg_catalog.pg_trigger t \
   CROSS JOIN LATERAL regexp_matches(t.tgqual::text, ",
    call_nodes!(),
    ", 'g') m WHERE t.tgrelid >= 16384 AND NOT t.tgisinternal \
   UNION ALL \
   SELECT s.stxrelid, m[1], m[2]::oid FROM pg_catalog.pg_statistic_ext s \
   CROSS JOIN LATERAL regexp_matches(COALESCE(to_jsonb(s) ->> 'stxexprs', ''), ",
    call_nodes!(),
    ", 'g') m WHERE s.stxrelid >= 16384) \
 SELECT DISTINCT calls.rel::bigint, rn.nspname, rc.relname, pn.nspname || '.' || p.proname FROM calls \
 JOIN pg_catalog.pg_class rc ON rc.oid = calls.rel \
 JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace",
    called!()
);

/// Foreign keys, for deny and approve rules' `tables:`: deleting or
/// updating rows of the referenced table runs the key's `ON DELETE` or
/// `ON UPDATE` action on the referencing table (`CASCADE` deletes or
/// updates its rows, `SET NULL` and `SET DEFAULT` update them: `DELETE
/// FROM customers` deleting `orders`), and `TRUNCATE ... CASCADE`
/// empties every referencing table. As (referenced OID, schema, table,
/// referencing OID, schema, table, `confdeltype`, `confupdtype`).
const FOREIGN_KEYS: &str = "SELECT c.confrelid::bigint, fn.nspname, f.relname, c.conrelid::bigint, n.nspname, r.relname, \
 c.confdeltype, c.confupdtype \
 FROM pg_catalog.pg_constraint c \
 JOIN pg_catalog.pg_class f ON f.oid = c.confrelid \
 JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace \
 JOIN pg_catalog.pg_class r ON r.oid = c.conrelid \
 JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
 WHERE c.contype = 'f'";

/// Rules that write rows when a relation is written (`CREATE RULE ... ON
/// INSERT TO requests DO INSTEAD DELETE FROM customers ...`): the
/// statement then deletes or updates whatever its event, and the foreign
/// keys and rules of the tables the rule writes follow the rule's
/// commands (an `ON UPDATE` rule that inserts into a table runs that
/// table's `ON INSERT` rules). As (relation OID, schema, relation, event
/// (`pg_rewrite.ev_type`: `2` update, `3` insert, `4` delete), whether a
/// command of the action deletes, whether one updates, whether one
/// inserts).
const RULE_WRITES: &str = "SELECT r.ev_class::bigint, n.nspname, c.relname, r.ev_type::text, \
 bool_or(r.ev_action::text ~ ':commandType 4 '), bool_or(r.ev_action::text ~ ':commandType 2 '), \
 bool_or(r.ev_action::text ~ ':commandType 3 ') \
 FROM pg_catalog.pg_rewrite r \
 JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
 WHERE r.ev_type <> '1' GROUP BY r.ev_class, n.nspname, c.relname, r.ev_type";

/// The catalogs PostgreSQL created at initdb that the database's own
/// views, rules and policies read, as (relation OID, schema, relation,
/// catalog OID, schema, catalog, the event that runs the reader), like
/// the reads from `pg_depend`:
/// PostgreSQL records no dependency on its bootstrap catalogs (`pg_class`,
/// `pg_proc`, ...), so the stored query trees are searched for the
/// range-table entries naming them.
const CATALOG_READS: &str = concat!(
    "WITH ",
    trees!(),
    " SELECT DISTINCT trees.rel::bigint, rn.nspname, rc.relname, tc.oid::bigint, tn.nspname, tc.relname, trees.event \
 FROM trees \
 CROSS JOIN LATERAL regexp_matches(trees.tree, ':relid ([0-9]+) ', 'g') m \
 JOIN pg_catalog.pg_class rc ON rc.oid = trees.rel \
 JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
 JOIN pg_catalog.pg_class tc ON tc.oid = m[1]::oid \
 JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace \
 WHERE trees.rel >= 16384 AND tc.oid < 16384 AND tc.oid <> trees.rel"
);

/// Built-in functions that make a value of any type named by its OID, and
/// so run that type's input and checks: `array_in('{7}', 'my_domain'::regtype, -1)`.
const INPUT_BY_TYPE_OID: &[&str] = &[
    "array_in",
    "array_recv",
    "domain_in",
    "domain_recv",
    "multirange_in",
    "multirange_recv",
    "pg_input_error_info",
    "pg_input_is_valid",
    "range_in",
    "range_recv",
    "record_in",
    "record_recv",
];

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
    /// Names of the extensions' functions that attribute notation can
    /// call (one argument, or one without a default), in any schema, that
    /// are not also a built-in's: `(x).pg_truncate_visibility_map` calls
    /// one. Only field selections are matched against them: a call by
    /// name is `user_function` already when the name is not a built-in's,
    /// and extensions overload `=` and built-in names.
    extension_attributes: HashSet<String>,
    /// Types whose casts and other operations run such functions, by
    /// name: `typname -> functions`.
    types: HashMap<String, Vec<String>>,
    /// The same by OID, for the parameter types of a Parse message.
    type_oids: HashMap<u32, Vec<String>>,
    /// OIDs of every type of the database (outside `pg_catalog` and
    /// `information_schema`, or created after initdb), whether it runs its
    /// functions or not.
    known_types: HashSet<u32>,
    /// Functions any statement may run: casts between two built-in types
    /// that an assignment or any expression may run, or default operator
    /// classes of a built-in type, that the database implements with its
    /// own functions. (Explicit casts between built-in types are among
    /// `types`, by the target's name: [`EXPLICIT_CASTS`].)
    always: Vec<String>,
    /// What the operations of the database's types call, PostgreSQL's
    /// functions included ([`TYPE_CALLS`]), by type name: `typname ->
    /// schema.function`, for deny and approve rules.
    type_calls: HashMap<String, Vec<String>>,
    /// The same by OID, for the parameter types of a Parse message.
    type_call_oids: HashMap<u32, Vec<String>>,
    /// The same for casts created between two built-in types that an
    /// assignment or any expression may run, which any statement may run
    /// (explicit ones are among `type_calls`).
    always_calls: Vec<String>,
    /// Function name (its last part, lowercase) -> the relations (OID,
    /// `schema.relation`) whose reading or writing calls one of the
    /// database's functions of that name (their views, rules, policies,
    /// defaults, constraints, index expressions, triggers: [`CALLS`],
    /// [`WRITE_CALLS`]): a statement replacing or changing the function
    /// changes what they do, and what reads them
    /// ([`sluice_policy::CatalogNames::redefines`]). PostgreSQL's own
    /// functions are left out: only a superuser can replace them.
    callers: HashMap<String, Vec<(u32, String)>>,
    /// Relations whose reading runs such functions, directly or through
    /// the views they read (what writing runs through rules is in
    /// [`Rules`]).
    relations: ByRelation,
    /// Relations whose reading reads foreign tables (`schema.table`):
    /// foreign tables themselves, views over them, and partitioned or
    /// inherited tables with foreign partitions or children.
    foreign: ByRelation,
    /// Relations whose reading reads a catalog holding credentials
    /// (`schema.catalog`): those catalogs and the views over them.
    credentials: ByRelation,
    /// What each view, rule, policy or partitioned table reads and calls,
    /// for the tables and functions a statement reaches through them.
    reads: ReadGraph,
    /// What writing a relation calls, and which tables it writes through
    /// foreign keys and rules.
    writes: WriteGraph,
    /// How the values of the database's own types are sent in binary.
    forms: HashMap<u32, Form>,
    /// The database has a relation named `pg_settings` outside
    /// `pg_catalog` (see [`sluice_policy::CatalogNames::setting_by_name`]).
    settings_shadowed: bool,
    /// What the SQL-standard bodies of the database's functions reach
    /// ([`BODIES`]), closed over the functions they call, by function
    /// name and schema: `r:schema.relation` read or written,
    /// `c:schema.function` called, `w:N` a command of `commandType` N.
    bodies: ByRelation,
    /// What moves to another schema with each relation ([`MOVED_WITH`]):
    /// its indexes and the sequences its columns own, `schema.relation`.
    moves_with: ByRelation,
}

/// What writing a relation runs besides its rules and policies
/// ([`WRITE_CALLS`]), what its rules for writes do ([`Rules`]) and the
/// tables its foreign keys make a write to it write ([`FOREIGN_KEYS`]):
/// the table's own logic, which allowing the write allows, but which deny
/// and approve rules match (`functions:` and `tables:`; a rule's deletes
/// and updates are the statement's kinds too, and so are its calls'
/// kinds).
#[derive(Debug, Default)]
struct WriteGraph {
    /// Relation OID -> the functions writing it calls, `schema.function`.
    calls: HashMap<u32, Vec<String>>,
    /// What its `ON INSERT`, `ON UPDATE` and `ON DELETE` rules do.
    rules: Rules,
    /// Table OID -> the referencing tables deleting its rows writes, and
    /// how.
    on_delete: HashMap<u32, Vec<(u32, Write)>>,
    /// Table OID -> the referencing tables updating its rows updates.
    on_update: HashMap<u32, Vec<u32>>,
    /// Table OID -> every table with a foreign key to it, which `TRUNCATE
    /// ... CASCADE` empties.
    referenced_by: HashMap<u32, Vec<u32>>,
    /// The relations in `calls`, `rules` and `referenced_by` by name:
    /// `relname -> [(schema, OID)]`.
    writers: HashMap<String, Vec<(String, u32)>>,
    /// `schema.table` of the tables `referenced_by` and `rules.reads`
    /// name.
    names: HashMap<u32, String>,
}

/// What a table's rules for writes do, by (relation OID, the event they
/// follow): run only when a statement writes it that way, so reading the
/// table reaches none of it (nor does inserting what only its `ON
/// UPDATE` rule touches).
#[derive(Debug, Default)]
struct Rules {
    /// -> the functions they call, PostgreSQL's own included,
    /// `schema.function` ([`CALLS`], and what the types they cast to
    /// call), for deny and approve rules.
    calls: HashMap<(u32, Write), Vec<String>>,
    /// -> the database's functions they run (kind `user_function`).
    runs: HashMap<(u32, Write), Vec<String>>,
    /// -> the relations they read or write.
    reads: HashMap<(u32, Write), Vec<u32>>,
    /// -> how their commands write ([`RULE_WRITES`]), besides.
    writes: HashMap<(u32, Write), Vec<Write>>,
    /// Relation OID -> what reading each relation in `reads` reaches.
    targets: HashMap<u32, Reaching>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.calls.is_empty()
            && self.runs.is_empty()
            && self.reads.is_empty()
            && self.writes.is_empty()
    }

    /// The relations with rules.
    fn relations(&self) -> impl Iterator<Item = u32> + '_ {
        let ways = self.calls.keys().chain(self.runs.keys());
        let ways = ways.chain(self.reads.keys()).chain(self.writes.keys());
        ways.map(|(rel, _)| *rel)
    }

    /// What the rules of `rel` for any event read or write.
    fn read_by_any(&self, rel: u32) -> impl Iterator<Item = u32> + '_ {
        Write::RULED
            .into_iter()
            .filter_map(move |write| self.reads.get(&(rel, write)))
            .flatten()
            .copied()
    }
}

/// How a statement writes a table, for the foreign keys and rules that
/// follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Write {
    Insert,
    Update,
    Delete,
    Truncate,
    /// Writes it in a way no foreign key and no rule follows (`COPY
    /// FROM`, which runs no rules; DDL; GRANT).
    Other,
}

impl Write {
    /// The writes rules follow.
    const RULED: [Self; 3] = [Self::Update, Self::Insert, Self::Delete];

    /// The writes a rule for the event `ev_type` (`pg_rewrite`) follows;
    /// `None` for what reading runs too (a view's `ON SELECT` rule, `1`;
    /// a policy, `p`).
    fn of_event(ev_type: &str) -> Option<Self> {
        match ev_type {
            "2" => Some(Self::Update),
            "3" => Some(Self::Insert),
            "4" => Some(Self::Delete),
            _ => None,
        }
    }

    /// How `statement` writes the tables it names. `COPY ... FROM STDIN`
    /// (kind `insert` too) runs no rules: it writes as DDL does (`COPY
    /// (INSERT ...) TO` runs the insert's rules, and a `COPY FROM` a file
    /// or program, denied by default, counts as an insert).
    fn of_statement(statement: &ClassifiedStatement) -> Vec<Self> {
        if statement.copy_in {
            return vec![Self::Other];
        }
        Self::of(&statement.facts.kinds)
    }

    /// How a statement with `kinds` writes the tables it names.
    fn of(kinds: &[SqlKind]) -> Vec<Self> {
        let writes: Vec<Self> = kinds
            .iter()
            .filter_map(|kind| match kind {
                SqlKind::Insert => Some(Self::Insert),
                SqlKind::Update => Some(Self::Update),
                SqlKind::Delete => Some(Self::Delete),
                SqlKind::Truncate => Some(Self::Truncate),
                _ => None,
            })
            .collect();
        if writes.is_empty() {
            vec![Self::Other]
        } else {
            writes
        }
    }
}

impl WriteGraph {
    /// `keys`: (referenced, referencing, `confdeltype`, `confupdtype`).
    fn new(
        calls: HashMap<u32, Vec<String>>,
        rules: Rules,
        keys: &[(u32, u32, String, String)],
        names: &HashMap<u32, (String, String)>,
    ) -> Self {
        let mut graph = Self {
            rules,
            ..Self::default()
        };
        for (referenced, referencing, on_delete, on_update) in keys {
            let (referenced, referencing) = (*referenced, *referencing);
            graph
                .referenced_by
                .entry(referenced)
                .or_default()
                .push(referencing);
            let action = |code: &str| match code {
                "c" => Some(Write::Delete),
                "n" | "d" => Some(Write::Update),
                _ => None,
            };
            if let Some(write) = action(on_delete) {
                graph
                    .on_delete
                    .entry(referenced)
                    .or_default()
                    .push((referencing, write));
            }
            if action(on_update).is_some() {
                graph
                    .on_update
                    .entry(referenced)
                    .or_default()
                    .push(referencing);
            }
        }
        let writers: HashSet<u32> = calls
            .keys()
            .chain(graph.referenced_by.keys())
            .copied()
            .chain(graph.rules.relations())
            .collect();
        graph.writers = by_relname(writers, names);
        let referencing = graph.referenced_by.values().flatten().copied();
        let targets = graph.rules.reads.values().flatten().copied();
        qualify(referencing.chain(targets), names, &mut graph.names);
        graph.calls = calls;
        graph
    }

    fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.rules.is_empty() && self.referenced_by.is_empty()
    }

    /// The tables writing `rel` so writes through foreign keys, directly,
    /// and how.
    fn keys_from(&self, rel: u32, write: Write) -> Vec<(u32, Write)> {
        let all = |edges: &HashMap<u32, Vec<u32>>, write: Write| -> Vec<(u32, Write)> {
            edges
                .get(&rel)
                .into_iter()
                .flatten()
                .map(|t| (*t, write))
                .collect()
        };
        match write {
            Write::Insert | Write::Other => Vec::new(),
            Write::Update => all(&self.on_update, Write::Update),
            Write::Delete => self.on_delete.get(&rel).cloned().unwrap_or_default(),
            Write::Truncate => all(&self.referenced_by, Write::Truncate),
        }
    }
}

/// Which relations reading a relation reads (a view's query, its `ON
/// SELECT` rule; a row-level-security policy's; a partitioned or
/// inherited table's partitions and children) and which functions those
/// call; rules for writes are in [`Rules`]. Followed per
/// statement (only when its decision is not cached) rather than closed
/// over here, so a long chain of views costs the agent memory by its
/// length, not its square.
#[derive(Debug, Default)]
struct ReadGraph {
    /// Relation OID -> the relations reading it reads.
    edges: HashMap<u32, Vec<u32>>,
    /// Relation OID -> the functions its view's query and its policies
    /// call, `schema.function`.
    calls: HashMap<u32, Vec<String>>,
    /// Partition or inheritance child OID -> its parents: reading a
    /// partition by its own name reads part of its parent's rows.
    parents: HashMap<u32, Vec<u32>>,
    /// Readers by name: `relname -> [(schema, OID)]`.
    readers: HashMap<String, Vec<(String, u32)>>,
    /// `schema.relation` of every relation in `edges`.
    names: HashMap<u32, String>,
    /// `edges` reversed: relation OID -> the relations reading it reads
    /// it. Built on first use ([`ReadGraph::read_through`]).
    read_by: OnceLock<HashMap<u32, Vec<u32>>>,
}

impl ReadGraph {
    /// `relations` (OID, `schema.relation`) and every relation that reads
    /// one of them, to any depth (views over them, partitioned tables
    /// over their partitions). For the rare statement that replaces a
    /// routine: the reverse graph is built on the first.
    fn read_through<'a>(&self, relations: impl Iterator<Item = &'a (u32, String)>) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut seen: HashSet<u32> = HashSet::new();
        for (oid, name) in relations {
            if seen.insert(*oid) {
                found.push(name.clone());
            }
        }
        if seen.is_empty() {
            return found;
        }
        let readers = self.read_by.get_or_init(|| {
            let mut readers: HashMap<u32, Vec<u32>> = HashMap::new();
            for (reader, sources) in &self.edges {
                for source in sources {
                    readers.entry(*source).or_default().push(*reader);
                }
            }
            readers
        });
        let mut pending: Vec<u32> = seen.iter().copied().collect();
        while let Some(source) = pending.pop() {
            for reader in readers.get(&source).into_iter().flatten() {
                if seen.insert(*reader) {
                    pending.push(*reader);
                    found.extend(self.names.get(reader).cloned());
                }
            }
        }
        found
    }

    fn new(
        edges: HashMap<u32, Vec<u32>>,
        calls: HashMap<u32, Vec<String>>,
        parents: HashMap<u32, Vec<u32>>,
        names: &HashMap<u32, (String, String)>,
    ) -> Self {
        let mut graph = Self::default();
        let readers: HashSet<u32> = edges
            .keys()
            .chain(calls.keys())
            .chain(parents.keys())
            .copied()
            .collect();
        for (rel, others) in edges.iter().chain(&parents) {
            let oids = std::iter::once(rel).chain(others).copied();
            qualify(oids, names, &mut graph.names);
        }
        graph.readers = by_relname(readers, names);
        graph.edges = edges;
        graph.calls = calls;
        graph.parents = parents;
        graph
    }

    /// The relations reading `named` reads, to any depth, and the tables
    /// those are partitions or children of, to any depth, besides those
    /// named (`schema.relation`); and the functions the named and those
    /// they read call (`schema.function`). With `rules`, what the rules
    /// for writes of all those read or write counts as read too.
    fn reached_from<'a>(
        &self,
        named: impl Iterator<Item = &'a String>,
        rules: Option<&WriteGraph>,
    ) -> (Vec<String>, Vec<String>) {
        let mut starts: HashSet<u32> = HashSet::new();
        for name in named {
            starts.extend(oids_named(&self.readers, name));
            if let Some(graph) = rules {
                starts.extend(oids_named(&graph.writers, name));
            }
        }
        self.reached_from_oids(&starts, rules)
    }

    /// [`reached_from`](Self::reached_from) the relations `starts`, which
    /// are left out of the tables reached (not of what calls).
    fn reached_from_oids(
        &self,
        starts: &HashSet<u32>,
        rules: Option<&WriteGraph>,
    ) -> (Vec<String>, Vec<String>) {
        let mut seen = starts.clone();
        let mut pending: Vec<u32> = seen.iter().copied().collect();
        while let Some(rel) = pending.pop() {
            let edges = self.edges.get(&rel).into_iter().flatten().copied();
            let by_rules = rules
                .into_iter()
                .flat_map(|graph| graph.rules.read_by_any(rel));
            for read in edges.chain(by_rules) {
                if seen.insert(read) {
                    pending.push(read);
                }
            }
        }
        // The parents of what is read, not what they read: a parent's
        // other partitions are not read.
        let mut ancestors: HashSet<u32> = HashSet::new();
        let mut pending: Vec<u32> = seen.iter().copied().collect();
        while let Some(rel) = pending.pop() {
            for parent in self.parents.get(&rel).into_iter().flatten() {
                if !seen.contains(parent) && ancestors.insert(*parent) {
                    pending.push(*parent);
                }
            }
        }
        let name = |oid: &u32| {
            let target = rules.and_then(|graph| graph.names.get(oid));
            self.names.get(oid).or(target).cloned()
        };
        let reached = sorted(seen.difference(starts).chain(&ancestors).filter_map(name));
        let called = sorted(
            seen.iter()
                .filter_map(|oid| self.calls.get(oid))
                .flatten()
                .cloned(),
        );
        (reached, called)
    }
}

/// What the SQL-standard bodies (`BEGIN ATOMIC ... END`, `RETURN ...`;
/// PostgreSQL 14 on) of the database's SQL functions do, from their
/// stored query trees (other bodies are text the agent does not read):
/// (`r`: a relation read or written, `schema.relation`; `c`: a function
/// called, `schema.function`, with its OID; `w`: a command of
/// `commandType` 2 `UPDATE`, 3 `INSERT`, 4 `DELETE`, 5 `MERGE`; 2 too for
/// `ON CONFLICT DO UPDATE`, `l` for `FOR UPDATE` and other row locks), with the
/// function's OID, schema and name. The column came with PostgreSQL 14,
/// so it is read through `to_jsonb` of the few rows that can have it: SQL
/// functions created after initdb whose text body is empty.
const BODIES: &str = concat!(
    "WITH bodies (fn, schema, name, tree) AS ( \
       SELECT f.oid, fs.nspname, f.proname, to_jsonb(f) ->> 'prosqlbody' FROM pg_catalog.pg_proc f \
       JOIN pg_catalog.pg_namespace fs ON fs.oid = f.pronamespace \
       WHERE f.oid >= 16384 AND f.prolang = 14 AND f.prosrc = ''), \
     calls (fn, schema, name, node, id) AS ( \
       SELECT bodies.fn, bodies.schema, bodies.name, m[1], m[2]::oid FROM bodies \
       CROSS JOIN LATERAL regexp_matches(bodies.tree, ",
    call_nodes!(),
    ", 'g') m) \
     SELECT 'r', bodies.fn::bigint, bodies.schema, bodies.name, tn.nspname || '.' || tc.relname, NULL::bigint \
     FROM bodies CROSS JOIN LATERAL regexp_matches(bodies.tree, ':relid ([0-9]+) ', 'g') m \
     JOIN pg_catalog.pg_class tc ON tc.oid = m[1]::oid \
     JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace \
     UNION \
     SELECT 'w', bodies.fn::bigint, bodies.schema, bodies.name, m[1], NULL::bigint \
     FROM bodies CROSS JOIN LATERAL regexp_matches(bodies.tree, ':commandType ([2-5]) ', 'g') m \
     UNION \
     SELECT 'w', bodies.fn::bigint, bodies.schema, bodies.name, '2', NULL::bigint FROM bodies \
     WHERE position(':onConflict {ONCONFLICTEXPR :action 2 ' IN bodies.tree) > 0 \
     UNION \
     SELECT 'w', bodies.fn::bigint, bodies.schema, bodies.name, 'l', NULL::bigint FROM bodies \
     WHERE position(':rowMarks ({ROWMARKCLAUSE' IN bodies.tree) > 0 \
     UNION \
     SELECT 'c', calls.fn::bigint, calls.schema, calls.name, pn.nspname || '.' || p.proname, p.oid::bigint FROM calls",
    called!()
);

/// The kind of a stored query's `commandType` (`l`: a row lock).
fn command_kind(command: &str) -> Option<SqlKind> {
    match command {
        "2" => Some(SqlKind::Update),
        "3" => Some(SqlKind::Insert),
        "4" => Some(SqlKind::Delete),
        "5" => Some(SqlKind::Merge),
        "l" => Some(SqlKind::Lock),
        _ => None,
    }
}

/// What SQL-standard bodies reach ([`Routines::follow_bodies`]).
#[derive(Debug, Default)]
struct Bodies {
    /// Relations read or written, and what those reach, `schema.table`.
    tables: Vec<String>,
    /// Functions called, and those the rules of what they write call,
    /// `schema.function`.
    calls: Vec<String>,
    /// What writing the tables they write calls ([`WRITE_CALLS`]).
    write_calls: Vec<String>,
    /// The database's functions called, foreign tables and catalogs
    /// holding credentials reached.
    reach: Reaching,
    /// The kinds of their commands and of their writes' rules.
    kinds: BTreeSet<SqlKind>,
}

/// What moves to another schema with a relation (`ALTER TABLE ... SET
/// SCHEMA`): its indexes, and the sequences its columns own (`serial`,
/// identity columns, `OWNED BY`), which must be in its schema and cannot
/// be moved on their own. Rows: relation OID, schema, relation, the
/// index's or sequence's name.
const MOVED_WITH: &str = "SELECT c.oid::bigint, n.nspname, c.relname, o.relname \
     FROM (SELECT i.indrelid AS rel, i.indexrelid AS moved FROM pg_catalog.pg_index i \
       UNION \
       SELECT d.refobjid, d.objid FROM pg_catalog.pg_depend d \
       WHERE d.classid = 'pg_catalog.pg_class'::regclass \
       AND d.refclassid = 'pg_catalog.pg_class'::regclass \
       AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0) m \
     JOIN pg_catalog.pg_class c ON c.oid = m.rel \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_class o ON o.oid = m.moved AND o.relkind IN ('S', 'i', 'I') \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";

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
         AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_operator'::regclass AND e.objid = o.oid AND e.deptype = 'e') \
         UNION \
         SELECT 'x', p.proname FROM pg_catalog.pg_proc p \
         WHERE p.prokind = 'f' AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 \
         AND EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')",
        // Functions (and operators' functions) outside pg_catalog that a
        // view's definition, a rule or a row-level-security policy calls,
        // whether each is part of an extension, and the event that runs
        // the caller (`runs!()`).
        concat!(
            runs!(),
            "SELECT DISTINCT runs.rel::bigint, rn.nspname, rc.relname, p.proname, \
           EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'), runs.event \
         FROM runs \
         JOIN pg_catalog.pg_class rc ON rc.oid = runs.rel \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
         JOIN pg_catalog.pg_depend d ON d.classid = runs.classid AND d.objid = runs.objid \
         LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid \
         JOIN pg_catalog.pg_proc p ON p.oid = CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass THEN d.refobjid ELSE o.oprcode::oid END \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace \
         WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema')"
        ),
        // Relations a view, rule or such a policy reads (or a rule
        // writes), for views over views and for deny rules naming what a
        // view reads, and the event that runs it.
        concat!(
            runs!(),
            "SELECT DISTINCT runs.rel::bigint, rn.nspname, rc.relname, d.refobjid::bigint, tn.nspname, tc.relname, runs.event \
         FROM runs \
         JOIN pg_catalog.pg_class rc ON rc.oid = runs.rel \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
         JOIN pg_catalog.pg_depend d ON d.classid = runs.classid AND d.objid = runs.objid \
         JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid \
         JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace \
         WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> runs.rel"
        ),
        // Types a view, rule or policy casts to, and the event that runs
        // it.
        concat!(
            runs!(),
            "SELECT DISTINCT runs.rel::bigint, rn.nspname, rc.relname, d.refobjid::bigint, runs.event \
         FROM runs \
         JOIN pg_catalog.pg_class rc ON rc.oid = runs.rel \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
         JOIN pg_catalog.pg_depend d ON d.classid = runs.classid AND d.objid = runs.objid \
         WHERE d.refclassid = 'pg_catalog.pg_type'::regclass"
        ),
        TYPE_FUNCTIONS,
        TYPE_EDGES,
        TYPE_NAMES,
        PARTITION_KEYS,
        // Foreign tables.
        "SELECT c.oid::bigint, n.nspname, c.relname FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'f'",
        // Partitions and inheritance children, which reading their parent
        // reads.
        "SELECT i.inhparent::bigint, n.nspname, c.relname, i.inhrelid::bigint, cn.nspname, cc.relname \
         FROM pg_catalog.pg_inherits i \
         JOIN pg_catalog.pg_class c ON c.oid = i.inhparent \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class cc ON cc.oid = i.inhrelid \
         JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace",
        CREDENTIAL_VIEWS,
        CALLS,
        CATALOG_READS,
        TYPE_CALLS,
        EXPLICIT_CASTS,
        WRITE_CALLS,
        FOREIGN_KEYS,
        RULE_WRITES,
        TYPE_FORMS,
        MOVED_WITH,
        BODIES,
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
                // A built-in's name carries that built-in's kinds already
                // (as a call in the statement itself would).
                "x" if sluice_policy::is_builtin_function(None, &name) => false,
                "x" => routines.extension_attributes.insert(name),
                _ => routines.operators.insert(name),
            };
        }
        // Relation OID -> (schema, name); what reading it runs and reads;
        // what its rules for writes run and read or write, by event (a
        // rule's event is in the last column of each row).
        let mut names: HashMap<u32, (String, String)> = HashMap::new();
        let mut runs: Reaches = HashMap::new();
        let mut reads: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut rule_runs: RuleReaches = HashMap::new();
        let mut rule_reads: HashMap<(u32, Write), Vec<u32>> = HashMap::new();
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
            match Write::of_event(&cell(row, 5)) {
                Some(write) => rule_runs.entry((rel, write)).or_default(),
                None => runs.entry(rel).or_default(),
            }
            .insert(function);
        }
        for row in part(2).iter().chain(part(12)) {
            let (Some(rel), Some(read)) = (oid(row, 0), oid(row, 3)) else {
                continue;
            };
            names.insert(rel, (cell(row, 1), cell(row, 2)));
            if let (Some(Some(schema)), Some(Some(name))) = (row.get(4), row.get(5)) {
                names
                    .entry(read)
                    .or_insert_with(|| (schema.clone(), name.clone()));
            }
            match Write::of_event(&cell(row, 6)) {
                Some(write) => rule_reads.entry((rel, write)).or_default(),
                None => reads.entry(rel).or_default(),
            }
            .push(read);
        }
        // What each type runs, over the types built on it.
        let typed = by_type(part(4), &mut routines.always);
        let mut built_on: HashMap<u32, Vec<u32>> = HashMap::new();
        for row in part(5) {
            if let (Some(base), Some(derived)) = (oid(row, 0), oid(row, 1)) {
                built_on.entry(derived).or_default().push(base);
            }
        }
        let typed = close_over(typed, &built_on);
        // What each type's operations call, PostgreSQL's functions
        // included, over the types built on it; and what reading a
        // relation calls that way (for deny and approve rules).
        let type_called = close_over(by_type(part(13), &mut routines.always_calls), &built_on);
        let mut called_by: Reaches = HashMap::new();
        for row in part(6) {
            let Some(typ) = oid(row, 0) else {
                continue;
            };
            routines.known_types.insert(typ);
            let rel = oid(row, 2);
            routines.settings_shadowed |=
                rel.is_some() && cell(row, 4) == "pg_settings" && cell(row, 3) != "pg_catalog";
            for (reaches, by_name, into) in [
                (&typed, &mut routines.types, &mut runs),
                (&type_called, &mut routines.type_calls, &mut called_by),
            ] {
                let Some(functions) = reaches.get(&typ) else {
                    continue;
                };
                let entry = by_name.entry(cell(row, 1)).or_default();
                entry.extend(functions.iter().cloned());
                entry.sort_unstable();
                entry.dedup();
                if let Some(rel) = rel {
                    names.insert(rel, (cell(row, 3), cell(row, 4)));
                    into.entry(rel)
                        .or_default()
                        .extend(functions.iter().cloned());
                }
            }
        }
        // Explicit casts between PostgreSQL's types: by the names of the
        // types a cast to which runs them.
        for row in part(14) {
            let name = cell(row, 0);
            let add = |by_name: &mut HashMap<String, Vec<String>>, function: String| {
                let entry = by_name.entry(name.clone()).or_default();
                if !entry.contains(&function) {
                    entry.push(function);
                    entry.sort_unstable();
                }
            };
            add(&mut routines.type_calls, cell(row, 1));
            if cell(row, 3) == "t" {
                add(&mut routines.types, cell(row, 2));
            }
        }
        // Casts in a view's query, a rule or a policy.
        let mut rule_called: RuleReaches = HashMap::new();
        for row in part(3) {
            let (Some(rel), Some(typ)) = (oid(row, 0), oid(row, 3)) else {
                continue;
            };
            let event = Write::of_event(&cell(row, 4));
            for (reaches, on_read, on_write) in [
                (&typed, &mut runs, &mut rule_runs),
                (&type_called, &mut called_by, &mut rule_called),
            ] {
                if let Some(functions) = reaches.get(&typ) {
                    names.insert(rel, (cell(row, 1), cell(row, 2)));
                    match event {
                        Some(write) => on_write.entry((rel, write)).or_default(),
                        None => on_read.entry(rel).or_default(),
                    }
                    .extend(functions.iter().cloned());
                }
            }
        }
        routines.type_oids = typed
            .into_iter()
            .map(|(t, functions)| (t, functions.into_iter().collect()))
            .collect();
        routines.type_call_oids = type_called
            .into_iter()
            .map(|(t, functions)| (t, functions.into_iter().collect()))
            .collect();
        // Foreign tables reach themselves; what reads them reaches them.
        let mut foreign: Reaches = HashMap::new();
        for row in part(8) {
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
        let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
        for row in part(9) {
            let (Some(parent), Some(child)) = (oid(row, 0), oid(row, 3)) else {
                continue;
            };
            names.insert(parent, (cell(row, 1), cell(row, 2)));
            names
                .entry(child)
                .or_insert_with(|| (cell(row, 4), cell(row, 5)));
            reads_with_children.entry(parent).or_default().push(child);
            parents.entry(child).or_default().push(parent);
        }
        // A partition key's functions run for the partitioned table
        // (routing rows, pruning partitions) and for its partitions
        // (checking a row written to one directly).
        let keyed = named_reaches(part(7), &mut names);
        for (rel, functions) in close_over(keyed, &parents) {
            runs.entry(rel).or_default().extend(functions);
        }
        // The database's functions reading a relation runs by name only:
        // its types' operations (a default operator class's comparison,
        // a cast), its partition key's.
        let own_calls: Vec<(u32, String)> = runs
            .iter()
            .flat_map(|(rel, functions)| functions.iter().map(|f| (*rel, f.clone())))
            .collect();
        let relations = close_over(runs, &reads);
        let foreign = close_over(foreign, &reads_with_children);
        // Catalogs holding credentials and what reads them directly, then
        // what reads those through the database's own relations only:
        // PostgreSQL's views over them show no secrets (`pg_user`,
        // `user_mappings`).
        let credentials = named_reaches(part(10), &mut names);
        let created_reads: HashMap<u32, Vec<u32>> = reads_with_children
            .iter()
            .filter(|(rel, _)| **rel >= FIRST_NORMAL_OID)
            .map(|(rel, reads)| (*rel, reads.clone()))
            .collect();
        let credentials = close_over(credentials, &created_reads);
        // What reading the relations rules for writes read or write
        // reaches, for the statements that write that way.
        let targets: HashSet<u32> = rule_reads.values().flatten().copied().collect();
        let owned = |reaches: &Reaches, rel: u32| -> Vec<String> {
            reaches
                .get(&rel)
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default()
        };
        let read_by_rules: HashMap<u32, Reaching> = targets
            .into_iter()
            .map(|rel| {
                let reaching = Reaching {
                    functions: owned(&relations, rel),
                    foreign_tables: owned(&foreign, rel),
                    credential_catalogs: owned(&credentials, rel),
                };
                (rel, reaching)
            })
            .filter(|(_, reaching)| !reaching.is_empty())
            .collect();
        routines.relations = by_name(relations, &names);
        routines.foreign = by_name(foreign, &names);
        routines.credentials = by_name(credentials, &names);
        // What reading a relation calls, and what only writing it does
        // (its rules for other events than SELECT).
        let (on_read, on_write): (Vec<_>, Vec<_>) = part(11)
            .iter()
            .partition(|row| matches!(cell(row, 4).as_str(), "1" | "p"));
        for (rel, called) in named_reaches(on_read, &mut names) {
            called_by.entry(rel).or_default().extend(called);
        }
        for write in Write::RULED {
            let rows = on_write
                .iter()
                .copied()
                .filter(|row| Write::of_event(&cell(row, 4)) == Some(write));
            for (rel, called) in named_reaches(rows, &mut names) {
                rule_called.entry((rel, write)).or_default().extend(called);
            }
        }
        let calls: HashMap<u32, Vec<String>> = called_by
            .into_iter()
            .map(|(rel, called)| (rel, called.into_iter().collect()))
            .collect();
        // What writing a relation calls, and which tables its foreign
        // keys' actions write.
        let write_calls: HashMap<u32, Vec<String>> = named_reaches(part(15), &mut names)
            .into_iter()
            .map(|(rel, called)| (rel, called.into_iter().collect()))
            .collect();
        let by_rules = rule_called
            .iter()
            .flat_map(|((rel, _), called)| called.iter().map(|f| (*rel, f)));
        let called = calls
            .iter()
            .chain(&write_calls)
            .flat_map(|(rel, called)| called.iter().map(|f| (*rel, f)));
        routines.callers = callers(called.chain(by_rules), &own_calls, &names);
        let mut keys: Vec<(u32, u32, String, String)> = Vec::new();
        for row in part(16) {
            let (Some(referenced), Some(referencing)) = (oid(row, 0), oid(row, 3)) else {
                continue;
            };
            names.insert(referenced, (cell(row, 1), cell(row, 2)));
            names.insert(referencing, (cell(row, 4), cell(row, 5)));
            keys.push((referenced, referencing, cell(row, 6), cell(row, 7)));
        }
        let mut rule_writes: HashMap<(u32, Write), Vec<Write>> = HashMap::new();
        for row in part(17) {
            let Some(rel) = oid(row, 0) else {
                continue;
            };
            let Some(event) = Write::of_event(&cell(row, 3)) else {
                continue;
            };
            let writes: Vec<Write> = [(4, Write::Delete), (5, Write::Update), (6, Write::Insert)]
                .into_iter()
                .filter(|(i, _)| cell(row, *i) == "t")
                .map(|(_, write)| write)
                .collect();
            if !writes.is_empty() {
                rule_writes.entry((rel, event)).or_default().extend(writes);
                names.insert(rel, (cell(row, 1), cell(row, 2)));
            }
        }
        let vecs = |reaches: RuleReaches| -> HashMap<(u32, Write), Vec<String>> {
            reaches
                .into_iter()
                .map(|(way, reached)| (way, reached.into_iter().collect()))
                .collect()
        };
        let rules = Rules {
            calls: vecs(rule_called),
            runs: vecs(rule_runs),
            reads: rule_reads,
            writes: rule_writes,
            targets: read_by_rules,
        };
        routines.writes = WriteGraph::new(write_calls, rules, &keys, &names);
        routines.reads = ReadGraph::new(reads_with_children, calls, parents, &names);
        routines.forms = part(18)
            .iter()
            .filter_map(|row| Some((oid(row, 0)?, type_form(row)?)))
            .collect();
        let mut moves: Reaches = HashMap::new();
        for row in part(19) {
            let Some(rel) = oid(row, 0) else {
                continue;
            };
            let schema = cell(row, 1);
            moves
                .entry(rel)
                .or_default()
                .insert(format!("{schema}.{}", cell(row, 3)));
            names.insert(rel, (schema, cell(row, 2)));
        }
        routines.moves_with = by_name(moves, &names);
        // SQL-standard bodies, over the functions they call; relations
        // calling a function call what its body calls, for statements
        // replacing one of those.
        let mut functions: HashMap<u32, (String, String)> = HashMap::new();
        let mut bodies: Reaches = HashMap::new();
        let mut body_calls: HashMap<u32, Vec<u32>> = HashMap::new();
        for row in part(20) {
            let Some(function) = oid(row, 1) else {
                continue;
            };
            functions.insert(function, (cell(row, 2), cell(row, 3)));
            let tag = cell(row, 0);
            if let ("c", Some(callee)) = (tag.as_str(), oid(row, 5)) {
                body_calls.entry(function).or_default().push(callee);
            }
            bodies
                .entry(function)
                .or_default()
                .insert(format!("{tag}:{}", cell(row, 4)));
        }
        let bodies = close_over(bodies, &body_calls);
        for (function, reach) in &bodies {
            let Some(relations) = functions
                .get(function)
                .and_then(|(_, name)| routines.callers.get(&name.to_lowercase()))
                .cloned()
            else {
                continue;
            };
            for called in reach.iter().filter_map(|r| r.strip_prefix("c:")) {
                let Some((schema, bare)) = called.split_once('.') else {
                    continue;
                };
                if sluice_policy::is_builtin_function(Some(schema), bare) {
                    continue;
                }
                let callers = routines.callers.entry(bare.to_lowercase()).or_default();
                callers.extend(relations.iter().cloned());
                callers.sort_unstable();
                callers.dedup();
            }
        }
        routines.bodies = by_name(bodies, &functions);
        routines
    }
}

/// What each relation (by OID) reaches when read.
type Reaches = HashMap<u32, BTreeSet<String>>;

/// What the rules of each relation (by OID) for an event reach.
type RuleReaches = HashMap<(u32, Write), BTreeSet<String>>;

/// What reading a relation reaches, as [`Routines`]'s `relations`,
/// `foreign` and `credentials` say of it.
#[derive(Debug, Default)]
struct Reaching {
    /// The database's functions (kind `user_function`).
    functions: Vec<String>,
    /// Foreign tables, `schema.table`.
    foreign_tables: Vec<String>,
    /// Catalogs holding credentials, `schema.catalog`.
    credential_catalogs: Vec<String>,
}

impl Reaching {
    fn is_empty(&self) -> bool {
        self.functions.is_empty()
            && self.foreign_tables.is_empty()
            && self.credential_catalogs.is_empty()
    }
}

/// What writing relations reaches beyond them ([`Routines::written_from`]).
#[derive(Debug, Default)]
struct Written {
    /// The tables written through foreign keys, views and rules, and
    /// those their rules read and the parents of those, `schema.table`.
    tables: Vec<String>,
    /// What writing them calls ([`WRITE_CALLS`]), `schema.function`.
    calls: Vec<String>,
    /// What their rules for writes call ([`CALLS`]), and the views and
    /// policies of what those rules read or write, `schema.function`.
    rule_calls: Vec<String>,
    /// What their rules for writes run, and reading what those rules read
    /// or write reaches ([`Reaching`]).
    rule_reach: Reaching,
    /// The kinds of writes their rules add.
    kinds: Vec<SqlKind>,
}

/// What `by_oid` says the types of OIDs `types` (as a Parse message
/// declares them) reach, sorted, once each.
fn of_types(by_oid: &HashMap<u32, Vec<String>>, types: &[i32]) -> Vec<String> {
    sorted(
        types
            .iter()
            .filter_map(|t| by_oid.get(&t.cast_unsigned()))
            .flatten()
            .cloned(),
    )
}

/// `items` sorted, once each.
fn sorted<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = items.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Rows of (type OID, whether the type is PostgreSQL's own, function) as
/// what each of the database's types reaches; what PostgreSQL's own types
/// reach goes to `always` (any statement may reach it).
fn by_type(rows: &[Vec<Option<String>>], always: &mut Vec<String>) -> Reaches {
    let mut reaches = Reaches::new();
    for row in rows {
        let Ok(typ) = cell(row, 0).parse::<u32>() else {
            continue;
        };
        let function = cell(row, 2);
        if cell(row, 1) == "t" {
            if !always.contains(&function) {
                always.push(function);
            }
        } else {
            reaches.entry(typ).or_default().insert(function);
        }
    }
    reaches
}

/// Rows of (relation OID, schema, relation, what it reaches) as
/// [`Reaches`], noting the relations' names.
fn named_reaches<'a>(
    rows: impl IntoIterator<Item = &'a Vec<Option<String>>>,
    names: &mut HashMap<u32, (String, String)>,
) -> Reaches {
    let mut reaches = Reaches::new();
    for row in rows {
        let Ok(rel) = cell(row, 0).parse::<u32>() else {
            continue;
        };
        names.insert(rel, (cell(row, 1), cell(row, 2)));
        reaches.entry(rel).or_default().insert(cell(row, 3));
    }
    reaches
}

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

/// Function name (last part, lowercase) -> the relations that call one
/// of the database's functions of that name (`called`: relation OID,
/// `schema.function`, PostgreSQL's own left out; `own`: relation OID and
/// the name of one of the database's functions), with their names.
fn callers<'a>(
    called: impl Iterator<Item = (u32, &'a String)>,
    own: &[(u32, String)],
    names: &HashMap<u32, (String, String)>,
) -> HashMap<String, Vec<(u32, String)>> {
    let mut callers: HashMap<String, BTreeSet<(u32, String)>> = HashMap::new();
    let called = called.filter_map(|(rel, function)| {
        let (schema, bare) = match function.split_once('.') {
            Some((schema, bare)) => (Some(schema), bare),
            None => (None, function.as_str()),
        };
        (!sluice_policy::is_builtin_function(schema, bare)).then_some((rel, bare))
    });
    let own = own.iter().map(|(rel, function)| (*rel, function.as_str()));
    for (rel, bare) in called.chain(own) {
        let Some((schema, name)) = names.get(&rel) else {
            continue;
        };
        callers
            .entry(bare.to_lowercase())
            .or_default()
            .insert((rel, format!("{schema}.{name}")));
    }
    callers
        .into_iter()
        .map(|(function, relations)| (function, relations.into_iter().collect()))
        .collect()
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
    /// Catalogs holding credentials, `schema.catalog` (kind
    /// `credential_catalog`).
    pub credential_catalogs: Vec<String>,
    /// The relations the statement reads or writes through the views,
    /// rules, policies and partitioned tables it names, `schema.table`
    /// (what deny and approve rules' `tables:` match too).
    pub tables: Vec<String>,
    /// The functions those views, rules and policies and those of the
    /// relations it names call, PostgreSQL's own included,
    /// `schema.function` (what deny and approve rules' `functions:` match
    /// too).
    pub calls: Vec<String>,
    /// The functions writing the relations it writes calls (their
    /// constraints, defaults, index expressions, triggers: [`WRITE_CALLS`]),
    /// `schema.function`, for deny and approve rules' `functions:` only:
    /// unlike `calls` they add no kinds (every insert into a table with a
    /// `serial` column calls `nextval`, and allowing the write allows the
    /// table's own logic).
    pub write_calls: Vec<String>,
    /// Kinds of writes the rules of the relations it writes make besides
    /// its own (an insert whose rule deletes is a delete too).
    pub write_kinds: Vec<SqlKind>,
    /// The relations that move with those it moves to another schema
    /// (indexes, owned sequences): renames the statement does not
    /// write, for rules naming the old names.
    pub moved: Vec<Rename>,
}

impl Routines {
    /// What `statement` may reach without naming it as such, beyond its
    /// [`user_functions`](sluice_policy::StatementFacts::user_functions):
    /// the database's functions and operators reached by unqualified
    /// calls, attribute notation and syntax an older server reads as a
    /// call, its operators (named, or implied by a construct that
    /// compares), casts to its types, and what the relations the
    /// statement reads and writes run; and the foreign tables those
    /// relations read, and the catalogs holding credentials they read.
    /// `defined` tells names the session itself defined, and `renames`
    /// what it renamed (in its transaction only it sees them): a relation,
    /// schema or type named by a new name reaches what the old one did.
    pub fn reached_by(
        &self,
        statement: &ClassifiedStatement,
        defined: impl Fn(&str) -> bool,
        renames: &[&Rename],
    ) -> Reached {
        let facts = &statement.facts;
        let names = &statement.catalog_names;
        let named: Vec<&String> = facts
            .tables_read
            .iter()
            .chain(&facts.tables_written)
            .collect();
        let earlier = earlier_names(&named, renames, earlier_relation);
        let tables: Vec<&String> = named.iter().copied().chain(&earlier).collect();
        // Types it names, and calls that may be function-style casts
        // (`bool(x)`, `positive(x)`: PostgreSQL reads one as a cast when no
        // function of the name takes the argument).
        let cast_like: Vec<String> = facts
            .functions
            .iter()
            .map(|f| {
                f.rsplit_once('.')
                    .map_or(f.as_str(), |(_, bare)| bare)
                    .to_owned()
            })
            .collect();
        let type_names: Vec<&String> = names.types.iter().chain(&cast_like).collect();
        let earlier_types = earlier_names(&type_names, renames, earlier_type);
        let function = |name: &str| self.functions.contains(name) || defined(name);
        let operator = |symbol: &str| self.operators.contains(symbol) || defined(symbol);
        let mut found: Vec<String> = facts
            .functions
            .iter()
            .filter(|f| !f.contains('.') && function(f))
            .chain(
                names
                    .attributes
                    .iter()
                    .filter(|a| function(a) || self.extension_attributes.contains(*a)),
            )
            .chain(names.calls.iter().filter(|c| function(c)))
            .chain(names.operators.iter().filter(|o| operator(o)))
            .cloned()
            .collect();
        for name in type_names.iter().copied().chain(&earlier_types) {
            match self.types.get(name) {
                Some(functions) => found.extend(functions.iter().cloned()),
                None if defined(name) => found.push(name.clone()),
                None => {}
            }
        }
        // A built-in making a value of a type named by OID may make one of
        // the database's types.
        if !self.type_oids.is_empty() {
            found.extend(
                facts
                    .functions
                    .iter()
                    .filter(|f| {
                        let bare = f.strip_prefix("pg_catalog.").unwrap_or(f);
                        INPUT_BY_TYPE_OID.contains(&bare)
                    })
                    .cloned(),
            );
        }
        found.extend(self.always.iter().cloned());
        let written: Vec<&String> = facts.tables_written.iter().collect();
        let earlier_written = earlier_names(&written, renames, earlier_relation);
        let wrote = self.written_from(
            written.into_iter().chain(&earlier_written),
            &Write::of_statement(statement),
            &facts.kinds,
        );
        // A statement that creates or alters something may define a view
        // or rule over what it reads, through which the session then
        // writes before the agent's catalog shows it (in its transaction,
        // or until the next read): what the rules of what it reads reach
        // counts as if it wrote it, and what they read or write as read.
        let defines = facts
            .kinds
            .iter()
            .any(|kind| matches!(kind, SqlKind::Create | SqlKind::Alter));
        let may_write = defines.then(|| {
            let any_write = [SqlKind::Insert, SqlKind::Update, SqlKind::Delete];
            self.written_from(tables.iter().copied(), &Write::of(&any_write), &facts.kinds)
        });
        let (mut foreign_tables, mut credential_catalogs) = (Vec::new(), Vec::new());
        for table in &tables {
            found.extend(reached_by_reading(&self.relations, table).cloned());
            foreign_tables.extend(reached_by_reading(&self.foreign, table).cloned());
            credential_catalogs.extend(reached_by_reading(&self.credentials, table).cloned());
        }
        for reach in std::iter::once(&wrote)
            .chain(&may_write)
            .map(|w| &w.rule_reach)
        {
            found.extend(reach.functions.iter().cloned());
            foreign_tables.extend(reach.foreign_tables.iter().cloned());
            credential_catalogs.extend(reach.credential_catalogs.iter().cloned());
        }
        let rules = defines.then_some(&self.writes);
        let (mut reached, mut calls) = self.reads.reached_from(tables.iter().copied(), rules);
        // What the types it names call, casts any statement may run, and
        // what the rules of what it writes (or may write so) call.
        let before = calls.len();
        calls.extend(wrote.rule_calls);
        calls.extend(may_write.into_iter().flat_map(|w| w.rule_calls));
        for name in type_names.iter().copied().chain(&earlier_types) {
            calls.extend(self.type_calls.get(name).into_iter().flatten().cloned());
        }
        calls.extend(self.always_calls.iter().cloned());
        // pg_dump's `set_config(name, ...) FROM pg_settings WHERE name =
        // '...'` reads another relation's `name` if a `search_path` puts
        // one first: then it may set anything, as any computed setting.
        if names.setting_by_name && self.settings_shadowed {
            calls.push("pg_catalog.set_config".to_owned());
        }
        // The SQL-standard bodies of the functions it calls, by name or
        // through what it reaches ([`BODIES`]), as if it did what they do;
        // and of those writing what it writes calls, as the table's own
        // logic (their calls and writes' kinds are not the statement's).
        let start: Vec<&String> = facts
            .functions
            .iter()
            .chain(&names.calls)
            .chain(&names.attributes)
            .chain(&calls)
            .chain(&found)
            .collect();
        let own = self.follow_bodies(start);
        let logic = self.follow_bodies(wrote.calls.iter().collect());
        let mut write_calls = wrote.calls;
        for body in [&own, &logic] {
            reached.extend(body.tables.iter().cloned());
            foreign_tables.extend(body.reach.foreign_tables.iter().cloned());
            credential_catalogs.extend(body.reach.credential_catalogs.iter().cloned());
        }
        calls.extend(own.calls);
        found.extend(own.reach.functions);
        write_calls.extend(own.write_calls);
        write_calls.extend(logic.calls);
        write_calls.extend(logic.write_calls);
        write_calls.sort_unstable();
        write_calls.dedup();
        foreign_tables.sort_unstable();
        foreign_tables.dedup();
        credential_catalogs.sort_unstable();
        credential_catalogs.dedup();
        credential_catalogs.retain(|c| !facts.credential_catalogs.contains(c));
        if calls.len() > before {
            calls.sort_unstable();
            calls.dedup();
        }
        // What the relations call in `pg_catalog` that is not PostgreSQL's
        // own (a DBA's function, aggregate or operator placed there) is
        // the database's code like any other schema's.
        found.extend(
            calls
                .iter()
                .filter(|f| {
                    f.split_once('.').is_some_and(|(schema, bare)| {
                        matches!(schema, "pg_catalog" | "information_schema")
                            && !sluice_policy::is_builtin_function(Some(schema), bare)
                    })
                })
                .cloned(),
        );
        found.sort_unstable();
        found.dedup();
        found.retain(|f| !facts.user_functions.contains(f));
        reached.extend(earlier);
        reached.extend(wrote.tables);
        // What calls a routine it replaces or changes.
        if !names.redefines.is_empty() {
            reached.extend(
                self.reads.read_through(
                    names
                        .redefines
                        .iter()
                        .filter_map(|name| self.callers.get(&name.to_lowercase()))
                        .flatten(),
                ),
            );
        }
        reached.sort_unstable();
        reached.dedup();
        Reached {
            functions: found,
            foreign_tables,
            credential_catalogs,
            tables: reached,
            calls,
            write_calls,
            write_kinds: {
                let mut kinds = wrote.kinds;
                for kind in own.kinds {
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                kinds
            },
            moved: self.moved_with(&facts.renames),
        }
    }

    /// What the SQL-standard bodies ([`BODIES`]) of the functions named
    /// `start` do, and those of the functions they reach: the relations
    /// they read or write and what reading those reaches (views, rules,
    /// policies), writing them as their commands do (foreign keys, rules,
    /// what writing runs), the functions they call, and their commands'
    /// kinds.
    fn follow_bodies(&self, start: Vec<&String>) -> Bodies {
        let mut out = Bodies::default();
        if self.bodies.is_empty() {
            return out;
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut pending: Vec<String> = start.into_iter().cloned().collect();
        while !pending.is_empty() {
            let (mut read, mut kinds) = (Vec::new(), Vec::new());
            for name in std::mem::take(&mut pending) {
                if !seen.insert(name.to_lowercase()) {
                    continue;
                }
                for item in reached_by_reading(&self.bodies, &name) {
                    match item.split_once(':') {
                        Some(("r", table)) => read.push(table.to_owned()),
                        Some(("c", function)) => {
                            // The database's functions it calls are
                            // `user_function`, as a view's calls are.
                            if let Some((schema, bare)) = function.split_once('.')
                                && !sluice_policy::is_builtin_function(Some(schema), bare)
                            {
                                out.reach.functions.push(function.to_owned());
                            }
                            out.calls.push(function.to_owned());
                            pending.push(function.to_owned());
                        }
                        Some(("w", command)) => kinds.extend(command_kind(command)),
                        _ => {}
                    }
                }
            }
            for table in &read {
                out.reach
                    .functions
                    .extend(reached_by_reading(&self.relations, table).cloned());
                out.reach
                    .foreign_tables
                    .extend(reached_by_reading(&self.foreign, table).cloned());
                out.reach
                    .credential_catalogs
                    .extend(reached_by_reading(&self.credentials, table).cloned());
            }
            // The tables a body writes are among those it names (which it
            // reads or writes): all count as written its ways.
            let ways = Write::of(&kinds);
            if ways != [Write::Other] {
                let wrote = self.written_from(read.iter(), &ways, &kinds);
                out.tables.extend(wrote.tables);
                out.write_calls.extend(wrote.calls);
                pending.extend(wrote.rule_calls.iter().cloned());
                out.calls.extend(wrote.rule_calls);
                out.reach.functions.extend(wrote.rule_reach.functions);
                out.reach
                    .foreign_tables
                    .extend(wrote.rule_reach.foreign_tables);
                out.reach
                    .credential_catalogs
                    .extend(wrote.rule_reach.credential_catalogs);
                kinds.extend(wrote.kinds);
            }
            let (through, called) = self.reads.reached_from(read.iter(), None);
            pending.extend(called.iter().cloned());
            out.calls.extend(called);
            out.tables.extend(read);
            out.tables.extend(through);
            out.kinds.extend(kinds);
        }
        out
    }

    /// What `ALTER TABLE ... SET SCHEMA` (and moving a materialized view)
    /// moves besides the relation it names: its indexes and the sequences
    /// its columns own go to the new schema with it. An unqualified name
    /// may be any schema's relation of that name.
    fn moved_with(&self, renames: &[Rename]) -> Vec<Rename> {
        let bare = |name: &str| {
            name.rsplit_once('.')
                .map_or(name, |(_, bare)| bare)
                .to_owned()
        };
        let mut moved = Vec::new();
        for rename in renames {
            let Rename::Relation { old, new } = rename else {
                continue;
            };
            // A move keeps the name; a rename keeps the schema.
            let Some((schema, name)) = new.rsplit_once('.') else {
                continue;
            };
            if !bare(old).eq_ignore_ascii_case(name) {
                continue;
            }
            moved.extend(
                reached_by_reading(&self.moves_with, old).map(|with| Rename::Relation {
                    old: with.clone(),
                    new: format!("{schema}.{}", bare(with)),
                }),
            );
        }
        moved.dedup();
        moved
    }

    /// What writing the relations `named` in the `ways` a statement with
    /// `statement_kinds` writes them writes through foreign keys
    /// (`schema.table`) and calls ([`WRITE_CALLS`] and their rules'
    /// calls, `schema.function`), with what it writes through those and
    /// through the views, rules and partitioned tables it names, to any
    /// depth, what the rules for those ways run and what reading what
    /// they read or write reaches, and the kinds of writes their rules
    /// add. What their row-level-security policies read counts as written
    /// too, which can only match more; so does what their rules for those
    /// ways read, written as the statement writes and as the rules'
    /// commands do (an insert whose rule deletes deletes, and follows the
    /// delete actions of what the rule reaches).
    fn written_from<'a>(
        &self,
        named: impl Iterator<Item = &'a String>,
        ways: &[Write],
        statement_kinds: &[SqlKind],
    ) -> Written {
        let writes = &self.writes;
        if writes.is_empty() {
            return Written::default();
        }
        let mut kinds: HashSet<Write> = HashSet::new();
        let mut starts: HashSet<u32> = HashSet::new();
        for name in named {
            starts.extend(oids_named(&self.reads.readers, name));
            starts.extend(oids_named(&writes.writers, name));
        }
        let mut visited: HashSet<(u32, Write)> = starts
            .iter()
            .flat_map(|rel| ways.iter().map(move |write| (*rel, *write)))
            .collect();
        let mut pending: Vec<(u32, Write)> = visited.iter().copied().collect();
        while let Some((rel, write)) = pending.pop() {
            // What it reads or writes through its rules, views, policies
            // and partitions is written as it is, and as its rules write.
            let ruled = writes
                .rules
                .writes
                .get(&(rel, write))
                .map_or(&[][..], Vec::as_slice);
            kinds.extend(ruled);
            let ways: Vec<Write> = std::iter::once(write)
                .chain(ruled.iter().copied())
                .collect();
            let by_rules = writes.rules.reads.get(&(rel, write)).into_iter().flatten();
            let reads = self.reads.edges.get(&rel).into_iter().flatten();
            let through = reads
                .chain(by_rules)
                .flat_map(|next| ways.iter().map(move |way| (*next, *way)));
            for next in through.chain(writes.keys_from(rel, write)) {
                if visited.insert(next) {
                    pending.push(next);
                }
            }
        }
        let seen: HashSet<u32> = visited.iter().map(|(rel, _)| *rel).collect();
        // What the rules for those ways read or write is read as a
        // statement reads it: with what its views and policies call, and
        // the tables it is a partition or child of.
        let targets: HashSet<u32> = visited
            .iter()
            .filter_map(|way| writes.rules.reads.get(way))
            .flatten()
            .copied()
            .collect();
        let (read_by_targets, mut rule_calls) = self.reads.reached_from_oids(&targets, None);
        let tables = sorted(
            seen.difference(&starts)
                .filter_map(|oid| writes.names.get(oid).or_else(|| self.reads.names.get(oid)))
                .cloned()
                .chain(read_by_targets),
        );
        let calls = sorted(
            seen.iter()
                .filter_map(|oid| writes.calls.get(oid))
                .flatten()
                .cloned(),
        );
        let by_rules = |of: &HashMap<(u32, Write), Vec<String>>| {
            sorted(
                visited
                    .iter()
                    .filter_map(|way| of.get(way))
                    .flatten()
                    .cloned(),
            )
        };
        rule_calls.extend(by_rules(&writes.rules.calls));
        let rule_calls = sorted(rule_calls);
        let mut rule_reach = Reaching {
            functions: by_rules(&writes.rules.runs),
            ..Reaching::default()
        };
        for target in targets
            .iter()
            .filter_map(|rel| writes.rules.targets.get(rel))
        {
            rule_reach
                .functions
                .extend(target.functions.iter().cloned());
            rule_reach
                .foreign_tables
                .extend(target.foreign_tables.iter().cloned());
            let catalogs = target.credential_catalogs.iter().cloned();
            rule_reach.credential_catalogs.extend(catalogs);
        }
        let mut kinds: Vec<SqlKind> = kinds
            .into_iter()
            .filter_map(|write| match write {
                Write::Update => Some(SqlKind::Update),
                Write::Delete => Some(SqlKind::Delete),
                Write::Insert | Write::Truncate | Write::Other => None,
            })
            .filter(|kind| !statement_kinds.contains(kind))
            .collect();
        kinds.sort_unstable();
        Written {
            tables,
            calls,
            rule_calls,
            rule_reach,
            kinds,
        }
    }

    /// The database's functions that values of the parameter types a
    /// Parse message declares run (a domain's CHECK on a bound value).
    pub fn run_by_parameter_types(&self, types: &[i32]) -> Vec<String> {
        of_types(&self.type_oids, types)
    }

    /// What values of the parameter types a Parse message declares call
    /// ([`TYPE_CALLS`]: a domain's CHECK), PostgreSQL's functions
    /// included, `schema.function`, for deny and approve rules.
    pub fn called_by_parameter_types(&self, types: &[i32]) -> Vec<String> {
        of_types(&self.type_call_oids, types)
    }

    /// Whether the database defines a function (or aggregate) named
    /// `name` itself, outside `pg_catalog` and extensions.
    pub fn defines_function(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// How values of the database's type `oid` are sent in binary, when it
    /// is one [`sluice_pgwire::binary`] can read by its [`Form`].
    pub fn type_form(&self, oid: u32) -> Option<Form> {
        self.forms.get(&oid).copied()
    }

    /// The parameter types a Parse message declares that this read of
    /// the catalog does not know: OIDs of objects created since
    /// PostgreSQL's own (from 16384 on) that are not the database's
    /// types as read. A type created on the target since could run
    /// anything its creator chose.
    pub fn unknown_parameter_types(&self, types: &[i32]) -> Vec<u32> {
        types
            .iter()
            .map(|t| t.cast_unsigned())
            .filter(|t| *t >= FIRST_NORMAL_OID && !self.known_types.contains(t))
            .collect()
    }
}

/// The first OID PostgreSQL assigns to objects created after initdb
/// (`FirstNormalObjectId`).
const FIRST_NORMAL_OID: u32 = 16384;

/// A [`TYPE_FORMS`] row's form: enums are sent as their label, types
/// whose send function is PostgreSQL's (or `citext`'s) for text as text,
/// composites as records; arrays, domains, ranges and multiranges over
/// their element, base, subtype or range type. Other base types (an
/// extension's own binary format) are not read.
fn type_form(row: &[Option<String>]) -> Option<Form> {
    // OIDs are unsigned; the wire, and so [`Form`], carries them as i32.
    let oid = |i: usize| {
        cell(row, i)
            .parse::<u32>()
            .ok()
            .filter(|t| *t != 0)
            .map(u32::cast_signed)
    };
    Some(match cell(row, 1).as_str() {
        "e" => Form::Text,
        "c" => Form::Record,
        "d" => Form::Domain(oid(3)?),
        "r" => Form::Range(oid(4)?),
        "m" => Form::Multirange(oid(6)?),
        "b" => match cell(row, 5).as_str() {
            "array_send" => Form::Array(oid(2)?),
            "textsend" | "varcharsend" | "bpcharsend" | "citext_send" => Form::Text,
            _ => return None,
        },
        _ => return None,
    })
}

/// The relations `rels` that `names` names, by name: `relname ->
/// [(schema, OID)]` (read with [`oids_named`]).
fn by_relname(
    rels: impl IntoIterator<Item = u32>,
    names: &HashMap<u32, (String, String)>,
) -> HashMap<String, Vec<(String, u32)>> {
    let mut by_name: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for rel in rels {
        if let Some((schema, name)) = names.get(&rel) {
            by_name
                .entry(name.to_lowercase())
                .or_default()
                .push((schema.clone(), rel));
        }
    }
    by_name
}

/// Adds `schema.relation` of each of `oids` that `names` names to `into`.
fn qualify(
    oids: impl IntoIterator<Item = u32>,
    names: &HashMap<u32, (String, String)>,
    into: &mut HashMap<u32, String>,
) {
    for oid in oids {
        if let Some((schema, name)) = names.get(&oid) {
            into.entry(oid)
                .or_insert_with(|| format!("{schema}.{name}"));
        }
    }
}

/// The OIDs of the relations `by_name` holds that `name` (`table` or
/// `schema.table`, as a statement wrote it; any schema's when
/// unqualified) may be, every reading of it as in [`readings`].
fn oids_named<'a>(
    by_name: &'a HashMap<String, Vec<(String, u32)>>,
    name: &'a str,
) -> impl Iterator<Item = u32> + 'a {
    readings(name).flat_map(move |(schema, table)| {
        by_name
            .get(&table.to_lowercase())
            .into_iter()
            .flatten()
            .filter(move |(s, _)| schema.is_none_or(|want: &str| want.eq_ignore_ascii_case(s)))
            .map(|(_, oid)| *oid)
    })
}

/// What reading relation `name` (`table` or `schema.table`, as the
/// statement wrote it; any schema's when unqualified) reaches. Names may
/// contain dots themselves (`"app.v1"` is one name), so every reading of
/// `name` as a schema and a relation counts, and the whole as a relation.
fn reached_by_reading<'a>(
    relations: &'a ByRelation,
    name: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    readings(name).flat_map(move |(schema, table)| {
        relations
            .get(&table.to_lowercase())
            .into_iter()
            .flatten()
            .filter(move |(s, _)| schema.is_none_or(|want: &str| want.eq_ignore_ascii_case(s)))
            .flat_map(|(_, reached)| reached)
    })
}

/// The names `names` had before `renames`, to any number of renames back
/// (`earlier` gives what one rename makes of one name), besides `names`.
fn earlier_names(
    names: &[&String],
    renames: &[&Rename],
    earlier: fn(&str, &Rename) -> Option<String>,
) -> Vec<String> {
    if renames.is_empty() {
        return Vec::new();
    }
    let mut seen: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
    let mut found = Vec::new();
    let mut pending: Vec<String> = names.iter().map(|n| (*n).clone()).collect();
    while let Some(name) = pending.pop() {
        for rename in renames {
            if let Some(old) = earlier(&name, rename)
                && seen.insert(old.to_lowercase())
            {
                found.push(old.clone());
                pending.push(old);
            }
        }
    }
    found
}

/// What relation `name` (as a statement wrote it) was called before
/// `rename`, if it may be the renamed or moved relation, or in the
/// renamed schema, or one of a moved extension's (then from any schema:
/// its bare name). Unqualified names may be in any schema.
fn earlier_relation(name: &str, rename: &Rename) -> Option<String> {
    match rename {
        Rename::Relation { old, new } => readings(name)
            .any(|(schema, relation)| {
                readings(new).any(|(new_schema, new_relation)| {
                    relation.eq_ignore_ascii_case(new_relation)
                        && match (schema, new_schema) {
                            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                            _ => true,
                        }
                })
            })
            .then(|| old.clone()),
        Rename::Schema { old, new } => readings(name)
            .find(|(schema, _)| schema.is_some_and(|s| s.eq_ignore_ascii_case(new)))
            .map(|(_, relation)| format!("{old}.{relation}")),
        Rename::Extension { schema, .. } => readings(name)
            .find(|(s, _)| s.is_some_and(|s| s.eq_ignore_ascii_case(schema)))
            .map(|(_, relation)| relation.to_owned()),
        Rename::Type { .. } | Rename::Column { .. } | Rename::Function { .. } => None,
    }
}

/// What type `name` was called before `rename` (renaming a type renames
/// its array type, `_name`, with it).
fn earlier_type(name: &str, rename: &Rename) -> Option<String> {
    let Rename::Type { old, new } = rename else {
        return None;
    };
    if name.eq_ignore_ascii_case(new) {
        return Some(old.clone());
    }
    let array = name.strip_prefix('_')?;
    array.eq_ignore_ascii_case(new).then(|| format!("_{old}"))
}

/// Every reading of a relation name as the statement wrote it: the whole
/// as a relation in any schema, and each split at a dot as `schema.table`.
fn readings(name: &str) -> impl Iterator<Item = (Option<&str>, &str)> {
    std::iter::once((None, name)).chain(
        name.match_indices('.')
            .map(|(i, _)| (Some(&name[..i]), &name[i + 1..])),
    )
}

/// (OID, schema, relation), for tests.
#[cfg(test)]
pub(crate) type TestRelation<'a> = (u32, &'a str, &'a str);

/// A target's catalog as the queries would return it, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestCatalog<'a> {
    pub functions: &'a [&'a str],
    pub operators: &'a [&'a str],
    /// Names of extensions' functions of one argument.
    pub extension_functions: &'a [&'a str],
    /// (relation OID, schema, relation, function its view or policy
    /// calls, whether that is an extension's)
    pub runs: &'a [(u32, &'a str, &'a str, &'a str, bool)],
    /// (relation OID, schema, relation, the rule's event as
    /// `pg_rewrite.ev_type`, function the rule calls)
    pub rule_runs: &'a [(u32, &'a str, &'a str, &'a str, &'a str)],
    /// (view OID, schema, view, OID of a relation it reads)
    pub reads: &'a [(u32, &'a str, &'a str, u32)],
    /// (relation OID, schema, relation, the rule's event as
    /// `pg_rewrite.ev_type`, OID of a relation the rule reads or writes)
    pub rule_reads: &'a [(u32, &'a str, &'a str, &'a str, u32)],
    /// (relation OID, schema, relation, type OID its view, rule or policy
    /// casts to)
    pub casts: &'a [(u32, &'a str, &'a str, u32)],
    /// (type OID, whether PostgreSQL's own, function its operations run)
    pub type_functions: &'a [(u32, bool, &'a str)],
    /// (type OID, OID of a type built on it)
    pub type_edges: &'a [(u32, u32)],
    /// (type OID, name, the relation whose row type it is)
    pub type_names: &'a [(u32, &'a str, Option<TestRelation<'a>>)],
    /// (OID, schema, foreign table)
    pub foreign: &'a [(u32, &'a str, &'a str)],
    /// (parent OID, schema, parent, OID of a partition or child, its
    /// name in the same schema)
    pub children: &'a [(u32, &'a str, &'a str, u32, &'a str)],
    /// (partitioned table OID, schema, table, function its key runs)
    pub partition_keys: &'a [(u32, &'a str, &'a str, &'a str)],
    /// (relation OID, schema, relation, catalog holding credentials it
    /// is or reads)
    pub credentials: &'a [(u32, &'a str, &'a str, &'a str)],
    /// (relation OID, schema, relation, `schema.function` its view, rule
    /// or policy calls)
    pub calls: &'a [(u32, &'a str, &'a str, &'a str)],
    /// (relation OID, schema, relation, the rule's event as
    /// `pg_rewrite.ev_type`: `2` `ON UPDATE`, `3` `ON INSERT`, `4` `ON
    /// DELETE`, `schema.function` the rule calls)
    pub rule_calls: &'a [(u32, &'a str, &'a str, &'a str, &'a str)],
    /// (relation OID, schema, relation, a PostgreSQL catalog its view,
    /// rule or policy reads)
    pub catalog_reads: &'a [(u32, &'a str, &'a str, TestRelation<'a>)],
    /// Names of relations `reads` reads that are named nowhere else.
    pub named: &'a [TestRelation<'a>],
    /// (relation OID, schema, relation, `schema.function` writing it
    /// calls)
    pub write_calls: &'a [(u32, &'a str, &'a str, &'a str)],
    /// (referenced table, referencing table, `confdeltype`,
    /// `confupdtype`)
    pub foreign_keys: &'a [(TestRelation<'a>, TestRelation<'a>, &'a str, &'a str)],
    /// (relation, rule event `ev_type`, how its commands write:
    /// `delete`, `update`, `insert`)
    pub rule_writes: &'a [(TestRelation<'a>, &'a str, &'a [&'a str])],
    /// (relation OID, schema, relation, an index or owned sequence that
    /// moves with it)
    pub moves_with: &'a [(u32, &'a str, &'a str, &'a str)],
    /// (function OID, schema, function, what its SQL-standard body does:
    /// `r:schema.relation`, `c:schema.function` with the callee's OID,
    /// `w:commandType`)
    pub bodies: &'a [(u32, &'a str, &'a str, &'a str, Option<u32>)],
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
            .chain(self.extension_functions.iter().map(|f| row(&["x", f])))
            .collect();
        let runs = self
            .runs
            .iter()
            .map(|(oid, schema, rel, function, ext)| (oid, schema, rel, function, *ext, "1"))
            .chain(
                self.rule_runs
                    .iter()
                    .map(|(oid, schema, rel, event, function)| {
                        (oid, schema, rel, function, false, *event)
                    }),
            )
            .map(|(oid, schema, rel, function, ext, event)| {
                row(&[
                    &oid.to_string(),
                    schema,
                    rel,
                    function,
                    if ext { "t" } else { "f" },
                    event,
                ])
            })
            .collect();
        let casts = self
            .casts
            .iter()
            .map(|(oid, schema, rel, to)| {
                row(&[&oid.to_string(), schema, rel, &to.to_string(), "1"])
            })
            .collect();
        let type_functions = self
            .type_functions
            .iter()
            .map(|(oid, builtin, function)| {
                row(&[&oid.to_string(), if *builtin { "t" } else { "f" }, function])
            })
            .collect();
        let type_edges = self
            .type_edges
            .iter()
            .map(|(base, derived)| row(&[&base.to_string(), &derived.to_string()]))
            .collect();
        let type_names = self
            .type_names
            .iter()
            .map(|(oid, name, rel)| match rel {
                Some((rel, schema, relname)) => {
                    row(&[&oid.to_string(), name, &rel.to_string(), schema, relname])
                }
                None => row(&[&oid.to_string(), name]),
            })
            .collect();
        let foreign = self
            .foreign
            .iter()
            .map(|(oid, schema, rel)| row(&[&oid.to_string(), schema, rel]))
            .collect();
        Routines::from_rows(&[
            defined,
            runs,
            self.reads
                .iter()
                .map(|(oid, schema, rel, read)| (oid, schema, rel, "1", read))
                .chain(
                    self.rule_reads
                        .iter()
                        .map(|(oid, schema, rel, event, read)| (oid, schema, rel, *event, read)),
                )
                .map(|(oid, schema, rel, event, read)| {
                    let mut row = row(&[&oid.to_string(), schema, rel, &read.to_string()]);
                    match self.named.iter().find(|(o, ..)| o == read) {
                        Some((_, schema, rel)) => {
                            row.extend([Some((*schema).to_owned()), Some((*rel).to_owned())]);
                        }
                        None => row.extend([None, None]),
                    }
                    row.push(Some(event.to_owned()));
                    row
                })
                .collect(),
            casts,
            type_functions,
            type_edges,
            type_names,
            self.partition_keys
                .iter()
                .map(|(oid, schema, rel, function)| row(&[&oid.to_string(), schema, rel, function]))
                .collect(),
            foreign,
            self.children
                .iter()
                .map(|(oid, schema, rel, child, name)| {
                    row(&[
                        &oid.to_string(),
                        schema,
                        rel,
                        &child.to_string(),
                        schema,
                        name,
                    ])
                })
                .collect(),
            self.credentials
                .iter()
                .map(|(oid, schema, rel, catalog)| row(&[&oid.to_string(), schema, rel, catalog]))
                .collect(),
            self.calls
                .iter()
                .map(|(oid, schema, rel, function)| (oid, schema, rel, "1", function))
                .chain(
                    self.rule_calls
                        .iter()
                        .map(|(oid, schema, rel, event, function)| {
                            (oid, schema, rel, *event, function)
                        }),
                )
                .map(|(oid, schema, rel, event, function)| {
                    row(&[&oid.to_string(), schema, rel, function, event])
                })
                .collect(),
            self.catalog_reads
                .iter()
                .map(|(oid, schema, rel, (read, read_schema, read_rel))| {
                    row(&[
                        &oid.to_string(),
                        schema,
                        rel,
                        &read.to_string(),
                        read_schema,
                        read_rel,
                        "1",
                    ])
                })
                .collect(),
            Vec::new(),
            Vec::new(),
            self.write_calls
                .iter()
                .map(|(oid, schema, rel, function)| row(&[&oid.to_string(), schema, rel, function]))
                .collect(),
            self.foreign_keys
                .iter()
                .map(
                    |((oid, schema, rel), (to, to_schema, to_rel), on_delete, on_update)| {
                        row(&[
                            &oid.to_string(),
                            schema,
                            rel,
                            &to.to_string(),
                            to_schema,
                            to_rel,
                            on_delete,
                            on_update,
                        ])
                    },
                )
                .collect(),
            self.rule_writes
                .iter()
                .map(|((oid, schema, rel), event, commands)| {
                    let yes = |c: &str| if commands.contains(&c) { "t" } else { "f" };
                    row(&[
                        &oid.to_string(),
                        schema,
                        rel,
                        event,
                        yes("delete"),
                        yes("update"),
                        yes("insert"),
                    ])
                })
                .collect(),
            Vec::new(),
            self.moves_with
                .iter()
                .map(|(oid, schema, rel, with)| row(&[&oid.to_string(), schema, rel, with]))
                .collect(),
            self.bodies
                .iter()
                .map(|(oid, schema, function, item, callee)| {
                    let (tag, value) = item.split_once(':').expect("tag:value");
                    let callee = callee.map(|c| c.to_string()).unwrap_or_default();
                    row(&[tag, &oid.to_string(), schema, function, value, &callee])
                })
                .collect(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached(routines: &Routines, sql: &str) -> Reached {
        let statements = sluice_policy::classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(statements.len(), 1, "{sql}");
        routines.reached_by(&statements[0], |_| false, &[])
    }

    fn run_by(routines: &Routines, sql: &str) -> Vec<String> {
        reached(routines, sql).functions
    }

    #[test]
    fn an_extensions_function_called_by_field_selection_is_the_database_s_code() {
        // `(x).f` calls `f(x)`: the classifier cannot tell it from a
        // column, and the routines read leaves extensions out otherwise.
        let routines = TestCatalog {
            extension_functions: &["pg_truncate_visibility_map", "upper", "dblink_exec"],
            ..TestCatalog::default()
        }
        .build();
        let found = |sql: &str| run_by(&routines, sql);
        assert_eq!(
            found("SELECT ('items'::regclass).pg_truncate_visibility_map"),
            ["pg_truncate_visibility_map"]
        );
        assert_eq!(
            found("SELECT t.pg_truncate_visibility_map FROM t"),
            ["pg_truncate_visibility_map"]
        );
        // Called by name it is a user function already (its name is not a
        // built-in's); a built-in's name carries the built-in's kinds.
        assert!(found("SELECT pg_truncate_visibility_map('items')").is_empty());
        assert!(found("SELECT (t).upper FROM t").is_empty());
        // dblink's functions are not built-ins either (they carry
        // `dynamic_sql` besides, by name).
        assert_eq!(found("SELECT ('x'::text).dblink_exec"), ["dblink_exec"]);
        assert!(!routines.defines_function("pg_truncate_visibility_map"));
    }

    #[test]
    fn the_binary_form_of_each_kind_of_type_is_read_from_its_catalog_row() {
        let form = |typtype: &str, elem: &str, base: &str, subtype: &str, send: &str| {
            let row: Vec<Option<String>> = ["16400", typtype, elem, base, subtype, send, "16500"]
                .iter()
                .map(|c| Some((*c).to_owned()))
                .collect();
            type_form(&row)
        };
        assert_eq!(form("e", "0", "0", "0", "enum_send"), Some(Form::Text));
        assert_eq!(form("c", "0", "0", "0", "record_send"), Some(Form::Record));
        assert_eq!(
            form("d", "0", "25", "0", "textsend"),
            Some(Form::Domain(25))
        );
        assert_eq!(
            form("r", "0", "0", "25", "range_send"),
            Some(Form::Range(25))
        );
        assert_eq!(
            form("b", "16401", "0", "0", "array_send"),
            Some(Form::Array(16_401))
        );
        assert_eq!(form("b", "0", "0", "0", "citext_send"), Some(Form::Text));
        assert_eq!(
            form("m", "0", "0", "0", "multirange_send"),
            Some(Form::Multirange(16_500))
        );
        // An extension's own binary format, a pseudo-type,
        // a domain or array without its base or element: not read.
        assert_eq!(form("b", "0", "0", "0", "hstore_send"), None);
        assert_eq!(form("p", "0", "0", "0", ""), None);
        assert_eq!(form("d", "0", "0", "0", "textsend"), None);
        assert_eq!(form("b", "0", "0", "0", "array_send"), None);
        // OIDs past 2^31 (a long-lived database's) as the wire carries them.
        assert_eq!(
            form("b", "3000000000", "0", "0", "array_send"),
            Some(Form::Array(3_000_000_000_u32.cast_signed()))
        );
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
        assert!(routines.defines_function("lower") && !routines.defines_function("count"));
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
            routines.reached_by(&statement, |_| false, &[]),
            Reached::default()
        );
        let defined: HashSet<&str> = ["mine", "="].into();
        assert_eq!(
            routines
                .reached_by(&statement, |n| defined.contains(n), &[])
                .functions,
            ["=", "mine"]
        );
    }

    #[test]
    fn types_whose_operations_run_the_database_s_functions_are_found_by_cast_and_column() {
        // positive (100, array 101), mood (102), t_mood's row type (103,
        // relation 30) with a mood column, the view `moods` over t_mood,
        // and a view that casts to `positive` in its query.
        let routines = TestCatalog {
            functions: &["is_positive", "mood_json"],
            type_functions: &[(100, false, "is_positive"), (102, false, "mood_json")],
            type_edges: &[(100, 101), (102, 103)],
            type_names: &[
                (100, "positive", None),
                (101, "_positive", None),
                (102, "mood", None),
                (103, "t_mood", Some((30, "public", "t_mood"))),
                (104, "plain", None),
            ],
            reads: &[(31, "public", "moods", 30)],
            casts: &[
                (32, "public", "casting", 100),
                (33, "public", "plain_view", 104),
            ],
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
        assert_eq!(found("SELECT * FROM casting"), ["is_positive"]);
        assert!(found("SELECT * FROM plain_view").is_empty());
        // A built-in that makes a value of a type given by OID.
        assert_eq!(found("SELECT array_in('{7}', 101, -1)"), ["array_in"]);
        // Parameters a Parse message declares of such types.
        assert_eq!(
            routines.run_by_parameter_types(&[23, 101, 100]),
            ["is_positive"]
        );
        assert!(
            routines
                .run_by_parameter_types(&[23, 25, 104, -1])
                .is_empty()
        );
        // Other types and relations.
        assert!(found("SELECT '5'::int, x::text FROM t").is_empty());
        // A type the session defined runs what it was defined with.
        let statement = sluice_policy::classify("SELECT '5'::mine")
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        assert_eq!(
            routines
                .reached_by(&statement, |n| n == "mine", &[])
                .functions,
            ["mine"]
        );
    }

    #[test]
    fn foreign_tables_are_found_through_views_and_partitioned_tables() {
        let routines = TestCatalog {
            foreign: &[(40, "remote", "orders"), (41, "public", "eu_sales")],
            reads: &[(42, "public", "order_view", 40)],
            children: &[
                (43, "public", "sales", 44, "sales_2026"),
                (44, "public", "sales_2026", 41, "eu_sales"),
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
    fn views_over_catalogs_holding_credentials_reach_them() {
        let routines = TestCatalog {
            credentials: &[
                (
                    12327,
                    "pg_catalog",
                    "pg_user_mappings",
                    "pg_catalog.pg_user_mappings",
                ),
                (16384, "ops", "logins", "pg_catalog.pg_authid"),
                (16390, "public", "guarded", "pg_catalog.pg_subscription"),
            ],
            reads: &[
                (16400, "public", "mappings", 12327),
                (16401, "public", "mappings_again", 16400),
                (16402, "public", "login_names", 16384),
            ],
            ..Default::default()
        }
        .build();
        let found = |sql: &str| reached(&routines, sql).credential_catalogs;
        assert_eq!(
            found("SELECT * FROM mappings_again"),
            ["pg_catalog.pg_user_mappings"]
        );
        assert_eq!(
            found("SELECT count(*) FROM public.login_names JOIN guarded USING (id)"),
            ["pg_catalog.pg_authid", "pg_catalog.pg_subscription"]
        );
        assert_eq!(found("SELECT * FROM ops.logins"), ["pg_catalog.pg_authid"]);
        // Named in the text: the classifier's already.
        assert!(found("SELECT * FROM pg_user_mappings").is_empty());
        assert!(found("SELECT * FROM public.logins").is_empty());
        assert!(found("SELECT * FROM customers").is_empty());
    }

    #[test]
    fn tables_read_through_views_rules_and_partitions_are_reached() {
        let routines = TestCatalog {
            reads: &[
                (100, "public", "sessions", 12000),
                (101, "public", "sessions_again", 100),
                (102, "public", "loop_a", 103),
                (103, "public", "loop_b", 102),
                (102, "public", "loop_a", 104),
                // A read of a relation whose name the catalog did not give.
                (105, "public", "odd", 106),
            ],
            named: &[
                (12000, "pg_catalog", "pg_stat_activity"),
                (104, "secret", "pay"),
            ],
            children: &[
                (110, "public", "ledger", 111, "ledger_2025"),
                (111, "public", "ledger_2025", 112, "ledger_2025_q1"),
            ],
            // A view over a catalog PostgreSQL records no dependency on.
            catalog_reads: &[(120, "public", "classes", (1259, "pg_catalog", "pg_class"))],
            ..Default::default()
        }
        .build();
        let tables = |sql: &str| reached(&routines, sql).tables;
        assert_eq!(tables("SELECT * FROM classes"), ["pg_catalog.pg_class"]);
        // A partition read by its own name reads its parents' rows, not
        // its siblings'.
        assert_eq!(
            tables("SELECT * FROM ledger_2025_q1"),
            ["public.ledger", "public.ledger_2025"]
        );
        assert_eq!(
            tables("SELECT * FROM sessions_again"),
            ["pg_catalog.pg_stat_activity", "public.sessions"]
        );
        assert_eq!(
            tables("SELECT * FROM loop_b"),
            ["public.loop_a", "secret.pay"]
        );
        assert_eq!(
            tables("UPDATE ledger SET id = 2 WHERE id = 1"),
            ["public.ledger_2025", "public.ledger_2025_q1"]
        );
        assert_eq!(
            tables("SELECT * FROM public.sessions"),
            ["pg_catalog.pg_stat_activity"]
        );
        assert!(tables("SELECT * FROM other.sessions").is_empty());
        assert!(tables("SELECT * FROM odd").is_empty());
        assert!(tables("SELECT * FROM items").is_empty());
    }

    #[test]
    fn replacing_a_routine_reaches_what_calls_it_and_what_reads_that() {
        let routines = TestCatalog {
            reads: &[
                (101, "public", "card_view", 100),
                (102, "public", "card_view_view", 101),
            ],
            write_calls: &[
                (100, "secret", "cards", "public.stamp"),
                (100, "secret", "cards", "pg_catalog.now"),
            ],
            calls: &[(103, "public", "tenants", "app.tenant_of")],
            rule_calls: &[(104, "public", "ledger", "3", "app.post")],
            named: &[(100, "secret", "cards")],
            ..Default::default()
        }
        .build();
        let tables = |sql: &str| reached(&routines, sql).tables;
        assert_eq!(
            tables(
                "CREATE OR REPLACE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RETURN NEW; END $$"
            ),
            ["public.card_view", "public.card_view_view", "secret.cards"]
        );
        assert_eq!(
            tables("ALTER FUNCTION Tenant_Of(int) SECURITY DEFINER"),
            ["public.tenants"]
        );
        assert_eq!(
            tables("ALTER FUNCTION app.post() OWNER TO r"),
            ["public.ledger"]
        );
        // PostgreSQL's own functions only a superuser replaces; what
        // nothing calls reaches nothing.
        assert!(tables("CREATE FUNCTION now() RETURNS int LANGUAGE sql AS 'SELECT 1'").is_empty());
        assert!(
            tables("CREATE FUNCTION spare() RETURNS int LANGUAGE sql AS 'SELECT 1'").is_empty()
        );
        // Calling it is not replacing it.
        assert!(tables("SELECT stamp()").is_empty());
    }

    #[test]
    fn replacing_a_partition_key_or_type_function_reaches_the_tables_running_it() {
        let routines = TestCatalog {
            partition_keys: &[(60, "secret", "parted", "bucket")],
            children: &[
                (60, "secret", "parted", 61, "parted_a"),
                (61, "secret", "parted_a", 62, "parted_a1"),
            ],
            // A column of type `mood`, whose default operator class
            // compares with `mood_cmp`: the row type of `secret.moods`.
            type_functions: &[(102, false, "mood_cmp")],
            type_edges: &[(102, 103)],
            type_names: &[
                (102, "mood", None),
                (103, "moods", Some((30, "secret", "moods"))),
            ],
            ..TestCatalog::default()
        }
        .build();
        let tables = |sql: &str| reached(&routines, sql).tables;
        assert_eq!(
            tables(
                "CREATE OR REPLACE FUNCTION public.bucket(int) RETURNS int IMMUTABLE \
                 LANGUAGE sql AS 'SELECT $1 % 4'"
            ),
            ["secret.parted", "secret.parted_a", "secret.parted_a1"]
        );
        assert_eq!(
            tables("ALTER FUNCTION mood_cmp(mood, mood) SECURITY DEFINER"),
            ["secret.moods"]
        );
    }

    #[test]
    fn functions_called_through_views_policies_and_views_of_views() {
        let routines = TestCatalog {
            reads: &[(101, "public", "sessions_again", 100)],
            calls: &[
                (100, "public", "sessions", "pg_catalog.pg_stat_get_activity"),
                (100, "public", "sessions", "pg_catalog.textlike"),
                (101, "public", "sessions_again", "pg_catalog.lower"),
                // A table whose row-level-security policy calls one.
                (102, "public", "notes", "pg_catalog.pg_has_role"),
            ],
            named: &[(100, "public", "sessions")],
            ..Default::default()
        }
        .build();
        let calls = |sql: &str| reached(&routines, sql).calls;
        assert_eq!(
            calls("SELECT * FROM sessions_again"),
            [
                "pg_catalog.lower",
                "pg_catalog.pg_stat_get_activity",
                "pg_catalog.textlike"
            ]
        );
        assert_eq!(
            calls("SELECT * FROM public.sessions"),
            ["pg_catalog.pg_stat_get_activity", "pg_catalog.textlike"]
        );
        assert_eq!(
            calls("UPDATE notes SET body = '' WHERE id = 1"),
            ["pg_catalog.pg_has_role"]
        );
        assert!(calls("SELECT * FROM other.sessions").is_empty());
        assert!(calls("SELECT lower(name) FROM items").is_empty());
        // PostgreSQL's own calls are not the database's functions.
        assert!(
            reached(&routines, "SELECT * FROM sessions_again")
                .functions
                .is_empty()
        );
    }

    #[test]
    fn what_a_table_s_rules_for_writes_call_counts_when_it_is_written_that_way_only() {
        // `pg_settings`' ON UPDATE rule calls `set_config`; `inbox`'s ON
        // INSERT rule reads a file and its ON DELETE rule calls `md5`; a
        // view over it reads it.
        let routines = TestCatalog {
            reads: &[(102, "public", "inbox_view", 101)],
            rule_calls: &[
                (
                    12000,
                    "pg_catalog",
                    "pg_settings",
                    "2",
                    "pg_catalog.set_config",
                ),
                (101, "public", "inbox", "3", "pg_catalog.pg_read_file"),
                (101, "public", "inbox", "4", "pg_catalog.md5"),
            ],
            calls: &[(101, "public", "inbox", "pg_catalog.lower")],
            named: &[(101, "public", "inbox")],
            ..Default::default()
        }
        .build();
        let calls = |sql: &str| reached(&routines, sql).calls;
        assert!(calls("SELECT name, setting FROM pg_settings").is_empty());
        assert!(calls("SELECT * FROM pg_catalog.pg_settings s JOIN items i ON true").is_empty());
        assert_eq!(
            calls("UPDATE pg_settings SET setting = 'x' WHERE name = 'role'"),
            ["pg_catalog.set_config"]
        );
        assert!(calls("DELETE FROM pg_settings WHERE name = 'role'").is_empty());
        assert_eq!(calls("SELECT * FROM inbox_view"), ["pg_catalog.lower"]);
        assert_eq!(
            calls("INSERT INTO inbox VALUES (1)"),
            ["pg_catalog.lower", "pg_catalog.pg_read_file"]
        );
        // COPY (INSERT ...) TO runs the insert's rules.
        assert_eq!(
            calls("COPY (INSERT INTO inbox VALUES (1) RETURNING *) TO STDOUT"),
            ["pg_catalog.lower", "pg_catalog.pg_read_file"]
        );
        assert_eq!(
            calls("COPY (WITH d AS (DELETE FROM inbox RETURNING *) SELECT * FROM d) TO STDOUT"),
            ["pg_catalog.lower", "pg_catalog.md5"]
        );
        // COPY FROM runs no rules; neither do GRANT and TRUNCATE (a
        // statement creating or altering something counts them all, below).
        for sql in [
            "COPY inbox FROM STDIN",
            "GRANT INSERT ON inbox TO PUBLIC",
            "TRUNCATE inbox",
        ] {
            assert_eq!(calls(sql), ["pg_catalog.lower"], "{sql}");
        }
        // Written through a view over it, in a CTE, or under an earlier
        // name the session gave it.
        assert_eq!(
            calls("INSERT INTO inbox_view VALUES (2)"),
            ["pg_catalog.lower", "pg_catalog.pg_read_file"]
        );
        assert_eq!(
            calls("UPDATE inbox_view SET id = 2 WHERE id = 1"),
            ["pg_catalog.lower"]
        );
        assert_eq!(
            calls("WITH w AS (DELETE FROM public.inbox WHERE id = 1 RETURNING id) SELECT * FROM w"),
            ["pg_catalog.lower", "pg_catalog.md5"]
        );
        // A view or rule the session defines over it may be written
        // through, any way, before the catalog shows it: defining one
        // counts every rule's calls.
        assert_eq!(
            calls("CREATE TEMP VIEW s AS SELECT name, setting FROM pg_settings"),
            ["pg_catalog.set_config"]
        );
        assert_eq!(
            calls("CREATE OR REPLACE VIEW v AS SELECT id FROM inbox_view"),
            [
                "pg_catalog.lower",
                "pg_catalog.md5",
                "pg_catalog.pg_read_file"
            ]
        );
        let renamed = Rename::Relation {
            old: "public.inbox".into(),
            new: "public.outbox".into(),
        };
        let statements = sluice_policy::classify("INSERT INTO outbox VALUES (1)").unwrap();
        let reached = routines.reached_by(&statements[0], |_| false, &[&renamed]);
        assert_eq!(
            reached.calls,
            ["pg_catalog.lower", "pg_catalog.pg_read_file"]
        );
    }

    #[test]
    fn a_relation_named_pg_settings_elsewhere_makes_pg_dump_s_set_config_set_anything() {
        let dump = "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'work_mem'";
        let plain = TestCatalog::default().build();
        assert!(reached(&plain, dump).calls.is_empty());
        let shadowed = TestCatalog {
            type_names: &[(50, "pg_settings", Some((60, "public", "pg_settings")))],
            ..Default::default()
        }
        .build();
        assert_eq!(reached(&shadowed, dump).calls, ["pg_catalog.set_config"]);
        // A literal setting is what it names, whatever relations exist.
        assert!(
            reached(&shadowed, "SELECT set_config('work_mem', '1MB', false)")
                .calls
                .is_empty()
        );
    }

    #[test]
    fn a_rule_s_commands_are_followed_as_they_write() {
        // `requests`' ON UPDATE rule inserts into `queue`, whose ON INSERT
        // rule deletes from `customers`, whose rows `orders` reference
        // ON DELETE CASCADE; `queue`'s ON UPDATE rule calls `md5`.
        let customers = (99, "public", "customers");
        let routines = TestCatalog {
            rule_writes: &[
                ((110, "public", "requests"), "2", &["insert"]),
                ((111, "public", "queue"), "3", &["delete"]),
            ],
            rule_calls: &[
                (111, "public", "queue", "2", "pg_catalog.md5"),
                (111, "public", "queue", "3", "pg_catalog.abs"),
            ],
            rule_reads: &[
                (110, "public", "requests", "2", 111),
                (111, "public", "queue", "3", 99),
            ],
            named: &[(111, "public", "queue"), customers],
            foreign_keys: &[(customers, (100, "public", "orders"), "c", "a")],
            ..Default::default()
        }
        .build();
        let updated = reached(&routines, "UPDATE requests SET id = 2 WHERE id = 1");
        assert_eq!(updated.write_kinds, [SqlKind::Delete]);
        assert_eq!(
            updated.tables,
            ["public.customers", "public.orders", "public.queue"]
        );
        // The rules of each way it is written count: `queue` is reached as
        // the update (through `requests`' rule, which reads it) and as the
        // rule's insert.
        assert_eq!(updated.calls, ["pg_catalog.abs", "pg_catalog.md5"]);
        // A COPY of a delete deletes as the delete does.
        let copied = reached(
            &routines,
            "COPY (DELETE FROM customers WHERE id = 1 RETURNING *) TO STDOUT",
        );
        assert_eq!(copied.tables, ["public.orders"]);
        let inserted = reached(&routines, "INSERT INTO queue VALUES (1)");
        assert_eq!(inserted.calls, ["pg_catalog.abs"]);
    }

    #[test]
    fn what_a_table_s_rules_for_writes_read_and_write_is_reached_when_it_is_written_that_way_only()
    {
        // `inbox`'s ON INSERT rule runs `audit_fn`, writes `log` (whose
        // policy runs `stamp`; a partition of `log_all`), reads the
        // foreign table `remote`, `pg_authid` and the view `files`, which
        // calls `pg_read_file`; its ON DELETE rule writes `trash`. A view
        // reads `inbox`.
        let routines = TestCatalog {
            runs: &[(200, "public", "log", "stamp", false)],
            rule_runs: &[(101, "public", "inbox", "3", "audit_fn")],
            reads: &[(102, "public", "inbox_view", 101)],
            rule_reads: &[
                (101, "public", "inbox", "3", 200),
                (101, "public", "inbox", "3", 201),
                (101, "public", "inbox", "3", 1260),
                (101, "public", "inbox", "3", 203),
                (101, "public", "inbox", "4", 202),
            ],
            calls: &[(203, "public", "files", "pg_catalog.pg_read_file")],
            children: &[(210, "public", "log_all", 200, "log")],
            foreign: &[(201, "public", "remote")],
            credentials: &[(1260, "pg_catalog", "pg_authid", "pg_catalog.pg_authid")],
            named: &[
                (101, "public", "inbox"),
                (200, "public", "log"),
                (202, "public", "trash"),
                (203, "public", "files"),
                (1260, "pg_catalog", "pg_authid"),
            ],
            ..Default::default()
        }
        .build();
        for sql in [
            "SELECT * FROM inbox",
            "SELECT * FROM inbox WHERE id = 1 FOR UPDATE",
            "UPDATE inbox SET id = 2 WHERE id = 1",
            "COPY inbox FROM STDIN",
        ] {
            let read = reached(&routines, sql);
            assert!(read.tables.is_empty(), "{sql}: {read:?}");
            assert!(read.functions.is_empty(), "{sql}: {read:?}");
            assert!(read.foreign_tables.is_empty(), "{sql}: {read:?}");
            assert!(read.credential_catalogs.is_empty(), "{sql}: {read:?}");
            assert!(read.calls.is_empty(), "{sql}: {read:?}");
        }
        assert_eq!(
            reached(&routines, "SELECT * FROM inbox_view").tables,
            ["public.inbox"]
        );
        for sql in [
            "INSERT INTO inbox VALUES (1)",
            "INSERT INTO inbox_view VALUES (1)",
        ] {
            let inserted = reached(&routines, sql);
            let tables = [
                "pg_catalog.pg_authid",
                "public.files",
                "public.log",
                "public.log_all",
                "public.remote",
            ];
            for table in tables {
                assert!(
                    inserted.tables.iter().any(|t| t == table),
                    "{sql}: {inserted:?}"
                );
            }
            assert!(
                !inserted.tables.iter().any(|t| t == "public.trash"),
                "{sql}"
            );
            assert_eq!(inserted.functions, ["audit_fn", "stamp"], "{sql}");
            assert_eq!(inserted.calls, ["pg_catalog.pg_read_file"], "{sql}");
            assert_eq!(inserted.foreign_tables, ["public.remote"], "{sql}");
            assert_eq!(
                inserted.credential_catalogs,
                ["pg_catalog.pg_authid"],
                "{sql}"
            );
        }
        let deleted = reached(&routines, "DELETE FROM inbox WHERE id = 1");
        assert_eq!(deleted.tables, ["public.trash"]);
        assert!(deleted.functions.is_empty());
        // A view the session defines over it may be written through
        // before the catalog shows it: every rule's reach counts.
        let defined = reached(&routines, "CREATE VIEW v AS SELECT * FROM inbox");
        assert_eq!(
            defined.tables,
            [
                "pg_catalog.pg_authid",
                "public.files",
                "public.log",
                "public.log_all",
                "public.remote",
                "public.trash"
            ]
        );
        assert_eq!(defined.calls, ["pg_catalog.pg_read_file"]);
        assert_eq!(defined.functions, ["audit_fn", "stamp"]);
        assert_eq!(defined.foreign_tables, ["public.remote"]);
        assert_eq!(defined.credential_catalogs, ["pg_catalog.pg_authid"]);
    }

    #[test]
    fn what_writing_a_table_calls_counts_for_writes_only_and_through_foreign_keys() {
        let customers = (99, "public", "customers");
        let orders = (100, "public", "orders");
        let order_lines = (101, "public", "order_lines");
        let accounts = (106, "public", "accounts");
        let key = |from, to, on_delete, on_update| (from, to, on_delete, on_update);
        let routines = TestCatalog {
            write_calls: &[
                (100, "public", "orders", "pg_catalog.nextval"),
                (100, "public", "orders", "pg_catalog.lo_creat"),
                (101, "public", "order_lines", "public.stamp"),
                (103, "public", "ledger_1", "pg_catalog.abs"),
            ],
            // (`c` cascade, `n` set null, `a` no action)
            foreign_keys: &[
                key(customers, orders, "c", "a"),
                key(orders, order_lines, "c", "a"),
                // A cycle of foreign keys.
                key(order_lines, orders, "c", "a"),
                // Deleting a customer fails while a note references it.
                key(customers, (105, "public", "notes"), "a", "a"),
                // Deleting a customer updates its accounts, which updates
                // their statements and deletes no holds.
                key(customers, accounts, "n", "a"),
                key(accounts, (107, "public", "statements"), "a", "c"),
                key(accounts, (108, "public", "holds"), "c", "a"),
            ],
            // `purge_requests`' ON INSERT rule deletes customers.
            rule_writes: &[((109, "public", "purge_requests"), "3", &["delete"])],
            // A view over orders, and a partitioned table.
            reads: &[
                (102, "public", "open_orders", 100),
                (109, "public", "purge_requests", 99),
            ],
            children: &[(104, "public", "ledger", 103, "ledger_1")],
            ..Default::default()
        }
        .build();
        let writes = |sql: &str| {
            let reached = reached(&routines, sql);
            (reached.tables, reached.write_calls)
        };
        let tables = |sql: &str| writes(sql).0;
        let all = ["pg_catalog.lo_creat", "pg_catalog.nextval", "public.stamp"];
        // An insert writes the table, and no other.
        assert_eq!(
            writes("INSERT INTO orders DEFAULT VALUES"),
            (
                vec![],
                vec!["pg_catalog.lo_creat".into(), "pg_catalog.nextval".into()]
            )
        );
        // Deleting follows the keys' delete actions, around the cycle, and
        // then the actions of how each writes.
        assert_eq!(
            writes("DELETE FROM public.customers WHERE id = 1"),
            (
                vec![
                    "public.accounts".into(),
                    "public.order_lines".into(),
                    "public.orders".into(),
                    "public.statements".into()
                ],
                all.map(String::from).to_vec()
            )
        );
        // Updating, the update actions.
        assert!(tables("UPDATE customers SET id = 2").is_empty());
        assert_eq!(tables("UPDATE accounts SET id = 2"), ["public.statements"]);
        assert_eq!(
            tables("INSERT INTO accounts VALUES (1) ON CONFLICT (id) DO UPDATE SET id = 2"),
            ["public.statements"]
        );
        assert_eq!(
            tables(
                "MERGE INTO accounts a USING customers c ON a.id = c.id WHEN MATCHED THEN DELETE"
            ),
            ["public.holds"]
        );
        // An insert whose rule deletes customers deletes, as deleting
        // them does; updating that table runs no rule.
        let purged = reached(&routines, "INSERT INTO purge_requests VALUES (1)");
        assert_eq!(purged.write_kinds, [SqlKind::Delete]);
        assert_eq!(
            purged.tables,
            [
                "public.accounts",
                "public.customers",
                "public.order_lines",
                "public.orders",
                "public.statements"
            ]
        );
        let updated = reached(&routines, "UPDATE purge_requests SET id = 2");
        assert!(updated.write_kinds.is_empty());
        assert!(!updated.tables.contains(&"public.orders".to_owned()));
        // TRUNCATE ... CASCADE empties every referencing table.
        assert_eq!(
            tables("TRUNCATE customers CASCADE"),
            [
                "public.accounts",
                "public.holds",
                "public.notes",
                "public.order_lines",
                "public.orders",
                "public.statements"
            ]
        );
        // Through a view, and into partitions.
        assert_eq!(
            writes("UPDATE open_orders SET id = 2"),
            (
                vec!["public.orders".into()],
                all[..2].iter().map(|f| (*f).to_owned()).collect()
            )
        );
        assert_eq!(
            writes("INSERT INTO ledger VALUES (1)").1,
            ["pg_catalog.abs"]
        );
        // Reading runs none of it; another schema's table of the name is
        // another table.
        assert_eq!(writes("SELECT * FROM orders"), (vec![], vec![]));
        assert_eq!(
            writes("DELETE FROM other.orders WHERE id = 1"),
            (vec![], vec![])
        );
        // None of it is the database's code for `user_function`.
        let found = reached(&routines, "INSERT INTO order_lines DEFAULT VALUES");
        assert_eq!(found.write_calls, ["public.stamp"]);
        assert!(found.functions.is_empty());
    }

    #[test]
    fn what_a_dba_placed_in_pg_catalog_and_a_view_calls_is_the_database_s() {
        let routines = TestCatalog {
            calls: &[
                (100, "public", "aliased", "pg_catalog.session_text"),
                (100, "public", "aliased", "pg_catalog.upper"),
            ],
            ..Default::default()
        }
        .build();
        let found = reached(&routines, "SELECT * FROM aliased");
        assert_eq!(found.functions, ["pg_catalog.session_text"]);
        assert_eq!(found.calls, ["pg_catalog.session_text", "pg_catalog.upper"]);
    }

    #[test]
    fn parameter_types_are_known_by_oid_past_two_to_the_31() {
        let high: u32 = 3_000_000_000;
        let routines = TestCatalog {
            type_functions: &[(high, false, "checks")],
            type_names: &[(high, "late", None), (16400, "plain", None)],
            ..Default::default()
        }
        .build();
        // The protocol's Int32 carries OIDs past 2^31 as negative numbers.
        let wire = high.cast_signed();
        assert!(wire < 0);
        assert_eq!(routines.run_by_parameter_types(&[wire]), ["checks"]);
        assert!(
            routines
                .unknown_parameter_types(&[wire, 16400, 23, 0])
                .is_empty()
        );
        assert_eq!(
            routines.unknown_parameter_types(&[16401, (high + 1).cast_signed(), 25]),
            [16401, high + 1]
        );
    }

    #[test]
    fn the_credential_views_query_names_every_catalog_the_classifier_does() {
        for catalog in sluice_policy::CREDENTIAL_CATALOGS
            .iter()
            .flat_map(|(schema, names)| names.iter().map(move |n| (schema, n)))
        {
            let (schema, name) = catalog;
            let listed = format!("'{name}'");
            assert!(
                CREDENTIAL_VIEWS.contains(&listed)
                    && CREDENTIAL_VIEWS.contains(&format!("'{schema}'")),
                "{schema}.{name} is not in CREDENTIAL_VIEWS"
            );
        }
    }

    #[test]
    fn a_new_name_reaches_what_the_old_one_did() {
        let routines = TestCatalog {
            foreign: &[(40, "remote", "orders")],
            runs: &[(41, "public", "guarded", "may_see", false)],
            type_functions: &[(50, false, "is_positive")],
            type_names: &[(50, "positive", None)],
            ..Default::default()
        }
        .build();
        let schema = Rename::Schema {
            old: "remote".into(),
            new: "local".into(),
        };
        let again = Rename::Schema {
            old: "local".into(),
            new: "elsewhere".into(),
        };
        let table = Rename::Relation {
            old: "public.guarded".into(),
            new: "public.open".into(),
        };
        let domain = Rename::Type {
            old: "positive".into(),
            new: "harmless".into(),
        };
        let extension = Rename::Extension {
            name: "remote_tables".into(),
            schema: "tools".into(),
        };
        let renames = [&schema, &again, &table, &domain, &extension];
        let reached = |sql: &str| {
            let statements = sluice_policy::classify(sql).unwrap();
            routines.reached_by(&statements[0], |_| false, &renames)
        };
        assert_eq!(
            reached("SELECT * FROM local.orders").foreign_tables,
            ["remote.orders"]
        );
        let twice = reached("SELECT * FROM elsewhere.orders");
        assert_eq!(twice.foreign_tables, ["remote.orders"]);
        // Old names count as reached, for deny rules naming them.
        assert_eq!(twice.tables, ["local.orders", "remote.orders"]);
        assert_eq!(reached("SELECT * FROM open").functions, ["may_see"]);
        assert_eq!(reached("SELECT * FROM public.open").functions, ["may_see"]);
        assert!(reached("SELECT * FROM other.open").functions.is_empty());
        assert_eq!(reached("SELECT '5'::harmless").functions, ["is_positive"]);
        // A moved extension's relation was in any schema.
        assert_eq!(
            reached("SELECT * FROM tools.orders").foreign_tables,
            ["remote.orders"]
        );
        assert_eq!(
            reached("SELECT NULL::HARMLESS[]").functions,
            ["is_positive"]
        );
        // A cycle of renames ends.
        let back = Rename::Schema {
            old: "elsewhere".into(),
            new: "remote".into(),
        };
        let statements = sluice_policy::classify("SELECT * FROM remote.x").unwrap();
        let cycle = routines.reached_by(&statements[0], |_| false, &[&schema, &again, &back]);
        assert_eq!(cycle.tables, ["elsewhere.x", "local.x"]);
    }

    #[test]
    fn calling_a_function_with_a_sql_standard_body_reaches_what_the_body_does() {
        // total() reads payroll and calls helper(), whose body reads the
        // view staff (over secret, calling audit_hook); purge() deletes
        // from payroll and calls pg_read_file; report reads staff.
        let routines = TestCatalog {
            functions: &["total", "helper", "purge", "audit_hook"],
            reads: &[(30, "public", "staff", 31)],
            named: &[(31, "public", "secret")],
            calls: &[
                (30, "public", "staff", "public.audit_hook"),
                (32, "public", "report", "public.total"),
            ],
            runs: &[(32, "public", "report", "total", false)],
            bodies: &[
                (70, "public", "total", "r:public.payroll", None),
                (70, "public", "total", "c:public.helper", Some(71)),
                (71, "public", "helper", "r:public.staff", None),
                (72, "app", "purge", "r:public.payroll", None),
                (72, "app", "purge", "w:4", None),
                (72, "app", "purge", "c:pg_catalog.pg_read_file", Some(3826)),
                (72, "app", "purge", "w:l", None),
                (73, "public", "next_id", "r:public.counters", None),
                (73, "public", "next_id", "w:2", None),
                (73, "public", "next_id", "c:pg_catalog.nextval", Some(1574)),
            ],
            write_calls: &[(80, "public", "orders", "public.next_id")],
            ..Default::default()
        }
        .build();
        let total = reached(&routines, "SELECT total()");
        assert_eq!(
            total.tables,
            ["public.payroll", "public.secret", "public.staff"]
        );
        assert_eq!(total.calls, ["public.audit_hook", "public.helper"]);
        assert!(total.write_kinds.is_empty());
        // The database's functions its body calls are `user_function`, as
        // a view's calls are.
        assert_eq!(total.functions, ["public.helper"]);
        // Qualified, only that schema's; by attribute notation too.
        let purge = reached(&routines, "SELECT app.purge()");
        assert_eq!(purge.tables, ["public.payroll"]);
        assert_eq!(purge.write_kinds, [SqlKind::Delete, SqlKind::Lock]);
        assert_eq!(purge.calls, ["pg_catalog.pg_read_file"]);
        assert!(reached(&routines, "SELECT other.purge()").tables.is_empty());
        assert_eq!(
            reached(&routines, "SELECT (1).purge").write_kinds,
            [SqlKind::Delete, SqlKind::Lock]
        );
        // A default's body is the table's own logic: what it reaches
        // counts for deny rules, what it calls and does is not the
        // statement's.
        let insert = reached(&routines, "INSERT INTO orders VALUES (1)");
        assert!(
            insert.tables.contains(&"public.counters".to_owned()),
            "{insert:?}"
        );
        assert_eq!(insert.write_calls, ["pg_catalog.nextval", "public.next_id"]);
        assert!(
            insert.write_kinds.is_empty() && insert.calls.is_empty(),
            "{insert:?}"
        );
        // Through a relation whose reading calls it.
        let report = reached(&routines, "SELECT * FROM report");
        assert!(
            report.tables.contains(&"public.payroll".to_owned()),
            "{report:?}"
        );
        // Replacing helper() changes what report does.
        let replaced = reached(
            &routines,
            "CREATE OR REPLACE FUNCTION helper() RETURNS int LANGUAGE sql RETURN 1",
        );
        assert!(
            replaced.tables.contains(&"public.report".to_owned()),
            "{replaced:?}"
        );
    }

    #[test]
    fn moving_a_table_moves_its_indexes_and_owned_sequences() {
        let routines = TestCatalog {
            moves_with: &[
                (60, "app", "invoices", "invoices_id_seq"),
                (60, "app", "invoices", "invoices_pkey"),
                (61, "other", "invoices", "invoices_pkey"),
                (62, "app", "notes", "notes_pkey"),
            ],
            ..Default::default()
        }
        .build();
        let moved = |sql: &str| reached(&routines, sql).moved;
        let to = |old: &str, new: &str| Rename::Relation {
            old: old.into(),
            new: new.into(),
        };
        let mut from_app = moved("ALTER TABLE app.invoices SET SCHEMA archive");
        from_app.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(
            from_app,
            [
                to("app.invoices_id_seq", "archive.invoices_id_seq"),
                to("app.invoices_pkey", "archive.invoices_pkey"),
            ]
        );
        // Unqualified, it may be either schema's table.
        assert_eq!(
            moved("ALTER TABLE IF EXISTS Invoices SET SCHEMA archive").len(),
            3
        );
        assert_eq!(
            moved("ALTER MATERIALIZED VIEW app.notes SET SCHEMA archive"),
            [to("app.notes_pkey", "archive.notes_pkey")]
        );
        // A rename keeps its indexes' and sequences' names and schema.
        assert!(moved("ALTER TABLE app.invoices RENAME TO bills").is_empty());
        assert!(moved("ALTER TABLE archive.invoices SET SCHEMA app").is_empty());
        assert!(moved("SELECT * FROM app.invoices").is_empty());
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

    #[test]
    fn what_the_database_adds_to_built_in_types_counts_for_every_statement() {
        let routines = TestCatalog {
            type_functions: &[(114, true, "json_from_int")],
            ..TestCatalog::default()
        }
        .build();
        assert_eq!(
            run_by(&routines, "SELECT json_typeof(5)"),
            ["json_from_int"]
        );
        assert_eq!(run_by(&routines, "SELECT 1"), ["json_from_int"]);
        // Without one, the input-by-OID built-ins are PostgreSQL's own.
        let plain = TestCatalog::default().build();
        assert!(run_by(&plain, "SELECT array_in('{7}', 23, -1)").is_empty());
    }

    #[test]
    fn names_with_dots_in_them_are_matched_as_a_whole_too() {
        let routines = TestCatalog {
            foreign: &[(50, "public", "r5.dot"), (51, "a.b", "c")],
            ..TestCatalog::default()
        }
        .build();
        let foreign = |sql: &str| reached(&routines, sql).foreign_tables;
        assert_eq!(foreign("SELECT * FROM \"r5.dot\""), ["public.r5.dot"]);
        assert_eq!(
            foreign("SELECT * FROM public.\"r5.dot\""),
            ["public.r5.dot"]
        );
        assert_eq!(foreign("SELECT * FROM \"a.b\".c"), ["a.b.c"]);
    }

    #[test]
    fn a_partition_key_s_functions_count_for_the_table_and_its_partitions() {
        let routines = TestCatalog {
            partition_keys: &[(60, "public", "parted", "my_cmp")],
            children: &[
                (60, "public", "parted", 61, "parted_a"),
                (61, "public", "parted_a", 62, "parted_a1"),
            ],
            ..TestCatalog::default()
        }
        .build();
        let found = |sql: &str| run_by(&routines, sql);
        assert_eq!(found("SELECT * FROM parted WHERE id = 5"), ["my_cmp"]);
        assert_eq!(found("INSERT INTO parted_a1 VALUES (5)"), ["my_cmp"]);
        assert!(found("SELECT * FROM other").is_empty());
    }
}
