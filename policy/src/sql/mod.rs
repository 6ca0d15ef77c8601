//! SQL classification with PostgreSQL's own parser (libpg_query through
//! the `pg_query` crate): SQL text in, one [`StatementFacts`] per statement
//! out, ready for [`CompiledPolicy::decide`].
//!
//! This is the only place SQL text is interpreted; there are no regular
//! expressions. It owns three rules the rest of the gateway relies on:
//!
//! * **Every statement is judged.** A multi-statement text yields one
//!   [`ClassifiedStatement`] per statement, with its own text, and the
//!   walk of each statement visits every node of its tree, so a DELETE in a
//!   CTE or a `pg_read_file` call in a DEFAULT is found.
//! * **Fail closed.** Text the parser rejects, text over [`MAX_SQL_LEN`]
//!   and trees nested too deeply ([`DECODE_MAX_DEPTH`], [`MAX_DEPTH`]) are
//!   errors, and a statement the classifier cannot place carries the kind
//!   `other`, which only a rule naming `other` or `any` allows. When in
//!   doubt a statement gets more kinds, never fewer.
//! * **Pure and panic-free.** No I/O, no unwrap or indexing on parser
//!   output, and no recursion as deep as the client's nesting, whatever the
//!   client sends.
//!
//! The classifier must read SQL text exactly as the server will. Where a
//! session setting changes that (`standard_conforming_strings`), the agent
//! passes the session's value in [`ClassifyOptions`]; statements that
//! change such settings carry the kind `other`, so they need an explicit
//! rule.
//!
//! What it cannot see: the bodies of `DO` blocks and functions (a call
//! of a function or operator that is not PostgreSQL's own carries the kind
//! `user_function`, which only a rule naming it allows; see `builtins`; what
//! only the database's catalog can place is reported in
//! [`ClassifiedStatement::catalog_names`] for the agent to check), what a
//! prepared statement named by `EXECUTE` contains (the agent classifies
//! `PREPARE` when it happens), SQL passed as text to functions that run it
//! (`dblink`, `query_to_xml`, `ts_stat`: reported by name, for policy to
//! deny), and tables hidden behind views and functions.
//!
//! [`StatementFacts`]: crate::StatementFacts
//! [`CompiledPolicy::decide`]: crate::CompiledPolicy::decide

mod builtins;
mod children;
mod classify;

pub use classify::{
    CREDENTIAL_CATALOGS, CatalogNames, ClassifiedStatement, ClassifyError, ClassifyOptions,
    CopyFormat, CopyOut, DECODE_MAX_DEPTH, MAX_DEPTH, MAX_SQL_LEN, PreparedChange, Rename,
    SQL_EXECUTE_ALONE, STATISTICS, classify, classify_with, execute_needs_approval, fingerprint,
    is_large_object_data, is_statistics, kinds_of_call, large_object_access, normalize,
    prepared_body, runs_unread_execute,
};

pub use builtins::is_builtin_function;

#[cfg(test)]
mod tests;
