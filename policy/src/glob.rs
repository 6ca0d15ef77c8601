//! Glob matching and the name patterns built on it (tables, functions,
//! columns).
//!
//! Policies match names with shell-like globs: `*` matches any run of
//! characters (including none) and `?` exactly one character. There are no
//! character classes and no escapes, so every pattern is valid and matching
//! never allocates. SQL object names are compared ASCII-case-insensitively,
//! the way PostgreSQL folds unquoted identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sql::Rename;

/// Whether `text` matches the glob `pattern`, case-sensitively.
///
/// Used for subjects (user ids, groups, service accounts) and resource names,
/// where identity providers define the spelling.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes(), false)
}

/// Whether `text` matches the glob `pattern`, ignoring ASCII case.
///
/// Used for SQL identifiers, which PostgreSQL folds to lower case unless
/// quoted; the classifier may report either spelling.
pub fn glob_match_ci(pattern: &str, text: &str) -> bool {
    matches(pattern.as_bytes(), text.as_bytes(), true)
}

/// Iterative wildcard matching with single-star backtracking: linear in
/// practice, no recursion, no allocation. Works on bytes; `?` consumes one
/// whole UTF-8 character so that it means "one character" to the author.
fn matches(p: &[u8], t: &[u8], ci: bool) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position in the pattern just after the last `*`, and the text position
    // that star currently stops at.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&tc) = t.get(ti) {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => {
                pi += 1;
                ti += utf8_len(tc);
                continue;
            }
            Some(&pc) if byte_eq(pc, tc, ci) => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last star swallow one more character.
        match star {
            Some((sp, st)) => {
                let next = st + t.get(st).map_or(1, |&b| utf8_len(b));
                star = Some((sp, next));
                pi = sp;
                ti = next;
            }
            None => return false,
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

fn byte_eq(a: u8, b: u8, ci: bool) -> bool {
    if ci {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

/// Length of the UTF-8 sequence that starts with `first`.
fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        // A continuation byte cannot start a character of a valid `str`;
        // advance by one so the loop still terminates.
        _ => 1,
    }
}

/// Whether a glob pattern is made only of `*`, i.e. matches anything.
fn is_match_all(pattern: &str) -> bool {
    !pattern.is_empty() && pattern.bytes().all(|b| b == b'*')
}

/// Splits a reported SQL name into (qualifier, last part). A three-part name
/// `db.schema.table` keeps its last two parts: PostgreSQL only accepts the
/// current database there, so the database part carries no information.
fn split_sql_name(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once('.') {
        None => (None, name),
        Some((qualifier, last)) => {
            let schema = qualifier.rsplit_once('.').map_or(qualifier, |(_, s)| s);
            (Some(schema), last)
        }
    }
}

/// How a pattern list is applied to the names a statement touches.
///
/// Restrictive rules (deny, approve) match when ANY touched name matches, so
/// one sensitive table is enough to trigger them. Permissive rules (allow)
/// match only when EVERY touched name matches, so joining an allowed table
/// with a forbidden one is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// At least one name must match (deny, approve).
    Any,
    /// Every name must match (allow).
    All,
}

/// A `schema.name` glob for a table or function; a pattern without a dot
/// matches that name in any schema.
///
/// Stored lower-cased; serialized as the pattern text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub struct QualifiedPattern {
    schema: Option<String>,
    name: String,
}

impl QualifiedPattern {
    /// Parses a pattern. Never fails: shape problems (too many dots, empty
    /// parts) are reported by validation, and a malformed pattern simply
    /// matches nothing sensible.
    pub fn parse(text: &str) -> Self {
        let lower = text.to_ascii_lowercase();
        match lower.split_once('.') {
            Some((schema, name)) => Self {
                schema: Some(schema.to_owned()),
                name: name.to_owned(),
            },
            None => Self {
                schema: None,
                name: lower,
            },
        }
    }

    /// Whether a reported name (`schema.table`, or an unqualified `table`)
    /// matches, with the caution `quantifier` calls for.
    ///
    /// An unqualified name could live in any schema on the search path, so
    /// for restrictive rules it matches on the last part alone (fail towards
    /// deny/approve), while for allow rules it matches a qualified pattern
    /// only when the pattern's schema part is `*` (fail towards deny too).
    pub fn matches(&self, reported: &str, quantifier: Quantifier) -> bool {
        let (schema, name) = split_sql_name(reported);
        if !glob_match_ci(&self.name, name) {
            return false;
        }
        match (&self.schema, schema) {
            (None, _) => true,
            (Some(pattern), Some(schema)) => glob_match_ci(pattern, schema),
            (Some(pattern), None) => match quantifier {
                Quantifier::Any => true,
                Quantifier::All => is_match_all(pattern),
            },
        }
    }
}

impl QualifiedPattern {
    /// Whether `rename` takes a relation or a routine out of this
    /// pattern: one it may match under the old name and not under the new.
    /// (A later statement naming the new name would escape a rule the old
    /// name was under.) The caller passes relations' renames to table
    /// patterns and routines' to function patterns.
    pub fn loses(&self, rename: &Rename) -> bool {
        match rename {
            Rename::Relation { old, new } | Rename::Function { old, new } => {
                self.matches(old, Quantifier::Any) && !self.matches(new, Quantifier::Any)
            }
            Rename::Schema { old, new } => self
                .schema
                .as_deref()
                .is_some_and(|p| glob_match_ci(p, old) && !glob_match_ci(p, new)),
            // From any schema: one the pattern names may be among them.
            Rename::Extension { schema, .. } => self
                .schema
                .as_deref()
                .is_some_and(|p| !glob_match_ci(p, schema)),
            Rename::Type { .. } | Rename::Column { .. } => false,
        }
    }
}

impl From<String> for QualifiedPattern {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl From<QualifiedPattern> for String {
    fn from(p: QualifiedPattern) -> Self {
        p.to_string()
    }
}

impl fmt::Display for QualifiedPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Applies a pattern list to the names a statement touches.
///
/// With [`Quantifier::All`] an empty list of names matches (nothing touched
/// is outside the allowed set); with [`Quantifier::Any`] it does not.
pub fn names_match<'a>(
    patterns: &[QualifiedPattern],
    names: impl IntoIterator<Item = &'a str>,
    quantifier: Quantifier,
) -> bool {
    let mut names = names.into_iter();
    let one = |name: &str| patterns.iter().any(|p| p.matches(name, quantifier));
    match quantifier {
        Quantifier::Any => names.any(one),
        Quantifier::All => names.all(one),
    }
}

/// A column glob `schema.table.column`; a pattern with fewer parts matches
/// from the right (`*.ssn` is any table's `ssn` column, `email` any `email`
/// column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub struct ColumnPattern {
    schema: Option<String>,
    table: Option<String>,
    column: String,
}

impl ColumnPattern {
    /// Parses a pattern; like [`QualifiedPattern::parse`] it never fails and
    /// leaves shape errors to validation.
    pub fn parse(text: &str) -> Self {
        let lower = text.to_ascii_lowercase();
        let mut parts = lower.rsplitn(3, '.');
        let column = parts.next().unwrap_or_default().to_owned();
        let table = parts.next().map(str::to_owned);
        let schema = parts.next().map(str::to_owned);
        Self {
            schema,
            table,
            column,
        }
    }

    /// Whether a result column with this origin matches. `schema` and
    /// `table` are `None` when the agent could not resolve the column's
    /// origin; a pattern that names a table then does not match (detectors
    /// and strict tables cover such columns).
    pub fn matches(&self, schema: Option<&str>, table: Option<&str>, column: &str) -> bool {
        if !glob_match_ci(&self.column, column) {
            return false;
        }
        let part_matches = |pattern: &Option<String>, actual: Option<&str>| match pattern {
            None => true,
            Some(p) => actual.is_some_and(|a| glob_match_ci(p, a)),
        };
        part_matches(&self.table, table) && part_matches(&self.schema, schema)
    }
}

impl ColumnPattern {
    /// Whether `rename` takes a column out of this pattern: one it may
    /// match under the old names (an unqualified relation may be in any
    /// schema) and not under the new.
    pub fn loses(&self, rename: &Rename) -> bool {
        let relation_may_match = |relation: &str| {
            let (schema, table) = split_sql_name(relation);
            self.table
                .as_deref()
                .is_none_or(|p| glob_match_ci(p, table))
                && match (&self.schema, schema) {
                    (Some(p), Some(s)) => glob_match_ci(p, s),
                    _ => true,
                }
        };
        match rename {
            Rename::Relation { old, new } => relation_may_match(old) && !relation_may_match(new),
            Rename::Schema { old, new } => self
                .schema
                .as_deref()
                .is_some_and(|p| glob_match_ci(p, old) && !glob_match_ci(p, new)),
            Rename::Column { relation, old, new } => {
                relation_may_match(relation)
                    && glob_match_ci(&self.column, old)
                    && !glob_match_ci(&self.column, new)
            }
            Rename::Extension { schema, .. } => self
                .schema
                .as_deref()
                .is_some_and(|p| !glob_match_ci(p, schema)),
            Rename::Type { .. } | Rename::Function { .. } => false,
        }
    }
}

impl From<String> for ColumnPattern {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl From<ColumnPattern> for String {
    fn from(p: ColumnPattern) -> Self {
        p.to_string()
    }
}

impl fmt::Display for ColumnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in [&self.schema, &self.table].into_iter().flatten() {
            write!(f, "{part}.")?;
        }
        f.write_str(&self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_question_mark() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("orders-*", "orders-db"));
        assert!(glob_match("orders-*", "orders-"));
        assert!(!glob_match("orders-*", "order-db"));
        assert!(glob_match("*-db", "orders-db"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("a?c", "aéc"), "? is one character, not one byte");
        assert!(glob_match("*é", "café"));
        assert!(glob_match("**", "x"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
        assert!(glob_match("*a*a*a", "aaaaaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!glob_match("*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn case_sensitivity() {
        assert!(!glob_match("Alice", "alice"));
        assert!(glob_match_ci("Public.*", "public.Orders"));
    }

    #[test]
    fn table_patterns() {
        let any = Quantifier::Any;
        let all = Quantifier::All;
        let p = QualifiedPattern::parse("public.*");
        assert!(p.matches("public.orders", all));
        assert!(p.matches("PUBLIC.Orders", all));
        assert!(!p.matches("secret.orders", any));
        assert!(
            p.matches("mydb.public.orders", all),
            "database part ignored"
        );
        // Unqualified names: conservative in both directions.
        assert!(p.matches("orders", any));
        assert!(!p.matches("orders", all));
        let star = QualifiedPattern::parse("*.orders");
        assert!(star.matches("orders", all));

        let bare = QualifiedPattern::parse("customers");
        assert!(bare.matches("public.customers", all));
        assert!(bare.matches("crm.customers", any));
        assert!(bare.matches("customers", all));
        assert!(!bare.matches("public.customers_old", any));
        assert_eq!(
            QualifiedPattern::parse("Public.Orders").to_string(),
            "public.orders"
        );
    }

    #[test]
    fn pattern_lists() {
        let pats = [QualifiedPattern::parse("public.*")];
        let names = ["public.a", "secret.b"];
        assert!(names_match(&pats, names, Quantifier::Any));
        assert!(!names_match(&pats, names, Quantifier::All));
        assert!(names_match(&pats, [], Quantifier::All));
        assert!(!names_match(&pats, [], Quantifier::Any));
    }

    #[test]
    fn column_patterns_match_from_the_right() {
        let ssn = ColumnPattern::parse("*.ssn");
        assert!(ssn.matches(Some("public"), Some("people"), "ssn"));
        assert!(ssn.matches(Some("hr"), Some("staff"), "SSN"));
        assert!(!ssn.matches(None, None, "ssn"), "needs a known table");
        let email = ColumnPattern::parse("public.customers.email");
        assert!(email.matches(Some("public"), Some("customers"), "email"));
        assert!(!email.matches(Some("crm"), Some("customers"), "email"));
        assert!(!email.matches(Some("public"), Some("customers"), "name"));
        let bare = ColumnPattern::parse("email");
        assert!(bare.matches(None, None, "email"));
        assert_eq!(email.to_string(), "public.customers.email");
        assert_eq!(bare.to_string(), "email");
    }
}
