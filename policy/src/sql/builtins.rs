//! PostgreSQL's own functions and operators, told apart from those defined
//! in the database (kind `user_function`).
//!
//! The function names are read from `pg_proc` by
//! `scripts/builtin-functions.sh` into `builtin_functions.txt`. A name is
//! PostgreSQL's own when it is one of those, unqualified or qualified with
//! `pg_catalog` (information_schema's `_pg_*` helpers too). Names are
//! compared exactly: the parser has already folded unquoted identifiers to
//! lower case, and `"LOWER"(x)` is not `lower(x)` to PostgreSQL either.
//!
//! What a name cannot tell: a function defined in the database with the
//! same name as a built-in one and other argument types (`public.lower
//! (my_type)`), which PostgreSQL picks by the arguments' types. The agent
//! checks those names against the functions the target defines (see
//! [`CatalogNames`](super::CatalogNames)).

use std::{collections::HashSet, sync::OnceLock};

const FUNCTIONS: &str = include_str!("builtin_functions.txt");

/// Operator symbols in `pg_catalog` (PostgreSQL 15, unchanged since).
const OPERATORS: &[&str] = &[
    "!!", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#>", "#>>", "%", "&", "&&", "&<", "&<|",
    "&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-", "->", "->>", "-|-", "/", "<",
    "<->", "<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=", ">", ">=", ">>", ">>=", ">^", "?",
    "?#", "?&", "?-", "?-|", "?|", "?||", "@", "@-@", "@>", "@?", "@@", "@@@", "^", "^@", "|",
    "|&>", "|/", "|>>", "||", "||/", "~", "~*", "~<=~", "~<~", "~=", "~>=~", "~>~", "~~", "~~*",
];

fn functions() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        FUNCTIONS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether `schema.name` (or `name` when `schema` is `None`) calls one of
/// PostgreSQL's own functions.
pub fn is_builtin_function(schema: Option<&str>, name: &str) -> bool {
    match schema {
        None | Some("pg_catalog") => functions().contains(name),
        Some("information_schema") => name.starts_with("_pg_"),
        Some(_) => false,
    }
}

/// Whether the operator `schema.symbol` is one of PostgreSQL's own.
pub(super) fn is_builtin_operator(schema: Option<&str>, symbol: &str) -> bool {
    matches!(schema, None | Some("pg_catalog")) && OPERATORS.contains(&symbol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_read_and_sorted() {
        let names: Vec<&str> = FUNCTIONS
            .lines()
            .take_while(|l| !l.starts_with("# later"))
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(names.len() > 2_500, "{} names", names.len());
        assert!(
            names.is_sorted(),
            "builtin_functions.txt is not in byte order"
        );
        for name in [
            "lower",
            "count",
            "now",
            "pg_read_file",
            "jsonb_path_query",
            "any_value",
        ] {
            assert!(is_builtin_function(None, name), "{name}");
            assert!(is_builtin_function(Some("pg_catalog"), name), "{name}");
        }
        assert!(!is_builtin_function(None, "LOWER"));
        assert!(!is_builtin_function(Some("public"), "lower"));
        assert!(!is_builtin_function(None, "touch"));
        assert!(is_builtin_function(
            Some("information_schema"),
            "_pg_expandarray"
        ));
    }

    #[test]
    fn operators_are_matched_by_symbol_and_schema() {
        assert!(is_builtin_operator(None, "="));
        assert!(is_builtin_operator(Some("pg_catalog"), "||"));
        assert!(!is_builtin_operator(Some("public"), "="));
        assert!(!is_builtin_operator(None, "==="));
        assert!(OPERATORS.is_sorted());
    }
}
