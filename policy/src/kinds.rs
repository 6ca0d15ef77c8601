//! SQL statement kinds, the group aliases policies may use for them, and a
//! compact set type the evaluator tests membership against.
//!
//! The agent's SQL classifier (PostgreSQL's own parser) maps every statement
//! to one or more [`SqlKind`]s; policies name kinds or groups. Groups are
//! expanded at compile time, so evaluation is a bit test.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! sql_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )+) => {
        /// What a SQL statement (or protocol message) does, as far as policy
        /// is concerned. A statement may carry several kinds, e.g.
        /// `EXPLAIN ANALYZE DELETE ...` is both `explain_analyze` and `delete`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum SqlKind {
            $( $(#[$doc])* $variant, )+
        }

        impl SqlKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [SqlKind] = &[$(SqlKind::$variant),+];

            /// The snake_case name used in policy documents.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(SqlKind::$variant => $name,)+
                }
            }

            /// Looks a kind up by its policy name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(SqlKind::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

sql_kinds! {
    /// `SELECT`, `VALUES`, `TABLE` (a read without side effects as far as the
    /// parser can tell; functions called are reported separately).
    Select = "select",
    /// `INSERT`.
    Insert = "insert",
    /// `UPDATE`.
    Update = "update",
    /// `DELETE`.
    Delete = "delete",
    /// `MERGE`.
    Merge = "merge",
    /// `COPY ... FROM STDIN` / `COPY ... TO STDOUT` (data through the client).
    Copy = "copy",
    /// `COPY ... PROGRAM` (runs a shell command on the database host).
    CopyProgram = "copy_program",
    /// `COPY` to or from a server-side file.
    CopyFile = "copy_file",
    /// `CREATE ...`.
    Create = "create",
    /// `ALTER ...`.
    Alter = "alter",
    /// `DROP ...`.
    Drop = "drop",
    /// `TRUNCATE`.
    Truncate = "truncate",
    /// `GRANT`.
    Grant = "grant",
    /// `REVOKE`.
    Revoke = "revoke",
    /// `COMMENT ON`.
    Comment = "comment",
    /// `DO $$ ... $$` (anonymous code block: dynamic SQL).
    DoBlock = "do_block",
    /// `CALL procedure(...)`.
    Call = "call",
    /// `EXECUTE prepared_statement`.
    Execute = "execute",
    /// `PREPARE`.
    Prepare = "prepare",
    /// `DEALLOCATE`.
    Deallocate = "deallocate",
    /// `SET` of an ordinary setting.
    Set = "set",
    /// `SET ROLE` (changes privileges, hence its own kind).
    SetRole = "set_role",
    /// `SET SESSION AUTHORIZATION`.
    SetSessionAuthorization = "set_session_authorization",
    /// `RESET setting`.
    Reset = "reset",
    /// `RESET ALL`.
    ResetAll = "reset_all",
    /// `SHOW`.
    Show = "show",
    /// `BEGIN` / `START TRANSACTION`.
    Begin = "begin",
    /// `COMMIT` / `END`.
    Commit = "commit",
    /// `ROLLBACK`.
    Rollback = "rollback",
    /// `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`.
    Savepoint = "savepoint",
    /// `EXPLAIN` without `ANALYZE` (does not run the statement).
    Explain = "explain",
    /// `EXPLAIN ANALYZE` (runs the statement; reported with its kinds).
    ExplainAnalyze = "explain_analyze",
    /// `LISTEN`.
    Listen = "listen",
    /// `NOTIFY`.
    Notify = "notify",
    /// `UNLISTEN`.
    Unlisten = "unlisten",
    /// `VACUUM`.
    Vacuum = "vacuum",
    /// `ANALYZE`.
    Analyze = "analyze",
    /// `LOCK`.
    Lock = "lock",
    /// `DISCARD`.
    Discard = "discard",
    /// The protocol-level `FunctionCall` message.
    FunctionCall = "function_call",
    /// `DECLARE ... CURSOR`.
    DeclareCursor = "declare_cursor",
    /// `FETCH` / `MOVE`.
    Fetch = "fetch",
    /// `CLOSE` cursor.
    CloseCursor = "close_cursor",
    /// `CHECKPOINT`.
    Checkpoint = "checkpoint",
    /// Anything the classifier could not place. Only rules that name `other`
    /// (or `any`) explicitly match it.
    Other = "other",
    // Kinds below were added after `other`; their bits are appended, so
    // compiled policies from older control planes keep their meaning.
    /// A call of a function that runs SQL given to it as text, or reads
    /// tables or cursors named by a value (`query_to_xml`, `table_to_xml`,
    /// `cursor_to_xml`, `ts_stat`, `dblink`, ...): what it runs is out of
    /// the classifier's sight.
    DynamicSql = "dynamic_sql",
    /// A call of a function that acts on the server beyond the statement:
    /// files (`pg_read_file`, `lo_import`), other sessions
    /// (`pg_terminate_backend`, `pg_cancel_backend`), configuration, WAL
    /// and replication slots.
    ServerFunction = "server_function",
    /// A call of a function that changes data outside the tables the
    /// statement names: sequences (`nextval`, `setval`) and large objects
    /// (`lo_create`, `lo_put`, `lo_unlink`, ...).
    FunctionWrite = "function_write",
    /// A call of a function or operator that is not PostgreSQL's own: one
    /// defined in the database (an application's function, an extension's,
    /// a procedure's body). What it does is out of the classifier's sight,
    /// so only a rule naming this kind allows it; such a rule's
    /// `functions:` is matched against these calls alone.
    UserFunction = "user_function",
    /// Reading or writing a foreign table, whose rows the database fetches
    /// from or sends to another server (`postgres_fdw` reaches other
    /// databases with credentials stored in the database), and creating or
    /// changing foreign tables, servers, wrappers and user mappings. Only a
    /// rule naming this kind allows it; such a rule's `tables:` is matched
    /// against the foreign tables alone.
    ForeignData = "foreign_data",
    /// Reading a catalog where the database keeps credentials: role
    /// password hashes (`pg_authid`, `pg_shadow`), user mappings' options,
    /// which hold the passwords `postgres_fdw` and `dblink` log in to other
    /// servers with (`pg_user_mapping`, `pg_user_mappings`,
    /// `information_schema.user_mapping_options`), and subscriptions'
    /// connection strings (`pg_subscription`), directly or through views.
    /// Every session of a resource logs in as its one role, so what that
    /// role may read of them every client could. In no group but `any`:
    /// only a rule naming it allows it; such a rule's `tables:` is matched
    /// against these catalogs alone.
    CredentialCatalog = "credential_catalog",
}

// KindSet is a u64 bitset.
const _: () = assert!(SqlKind::ALL.len() <= 64);

impl SqlKind {
    const fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

impl fmt::Display for SqlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SqlKind {
    type Err = UnknownStatement;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| UnknownStatement::new(s))
    }
}

impl Serialize for SqlKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SqlKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor::<SqlKind>::new())
    }
}

/// Named groups of kinds, so a policy can say `read` instead of listing six
/// kinds. `any` includes `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlGroup {
    /// select, show, explain, fetch, declare_cursor, close_cursor.
    Read,
    /// insert, update, delete, merge, truncate, copy, function_write.
    Write,
    /// create, alter, drop, truncate, comment.
    Ddl,
    /// grant, revoke.
    Dcl,
    /// begin, commit, rollback, savepoint.
    Transaction,
    /// set, reset, reset_all, show, discard, deallocate, unlisten: what
    /// drivers and their pools send to tidy a session (psycopg deallocates
    /// its prepared statements after a failed transaction; asyncpg's pool
    /// sends `CLOSE ALL; UNLISTEN *; RESET ALL` on release). `RESET ALL`
    /// resets neither `role` nor `session_authorization`. Deliberately not
    /// `set_role` or `set_session_authorization`, which change privileges.
    Session,
    /// do_block, call, copy_program, copy_file, dynamic_sql,
    /// server_function, user_function, foreign_data: carriers of arbitrary
    /// or server-side effects. Not `execute`: an `EXECUTE` is judged as
    /// the statement it runs, which the agent reads first (in no group,
    /// like `prepare`).
    Dynamic,
    /// Every kind, including `other`.
    Any,
}

impl SqlGroup {
    /// Every group.
    pub const ALL: &'static [SqlGroup] = &[
        SqlGroup::Read,
        SqlGroup::Write,
        SqlGroup::Ddl,
        SqlGroup::Dcl,
        SqlGroup::Transaction,
        SqlGroup::Session,
        SqlGroup::Dynamic,
        SqlGroup::Any,
    ];

    /// The name used in policy documents.
    pub const fn as_str(self) -> &'static str {
        match self {
            SqlGroup::Read => "read",
            SqlGroup::Write => "write",
            SqlGroup::Ddl => "ddl",
            SqlGroup::Dcl => "dcl",
            SqlGroup::Transaction => "transaction",
            SqlGroup::Session => "session",
            SqlGroup::Dynamic => "dynamic",
            SqlGroup::Any => "any",
        }
    }

    /// The kinds the group stands for.
    pub fn kinds(self) -> KindSet {
        use SqlKind as K;
        let list: &[SqlKind] = match self {
            SqlGroup::Read => &[
                K::Select,
                K::Show,
                K::Explain,
                K::Fetch,
                K::DeclareCursor,
                K::CloseCursor,
            ],
            SqlGroup::Write => &[
                K::Insert,
                K::Update,
                K::Delete,
                K::Merge,
                K::Truncate,
                K::Copy,
                K::FunctionWrite,
            ],
            SqlGroup::Ddl => &[K::Create, K::Alter, K::Drop, K::Truncate, K::Comment],
            SqlGroup::Dcl => &[K::Grant, K::Revoke],
            SqlGroup::Transaction => &[K::Begin, K::Commit, K::Rollback, K::Savepoint],
            SqlGroup::Session => &[
                K::Set,
                K::Reset,
                K::ResetAll,
                K::Show,
                K::Discard,
                K::Deallocate,
                K::Unlisten,
            ],
            SqlGroup::Dynamic => &[
                K::DoBlock,
                K::Call,
                K::CopyProgram,
                K::CopyFile,
                K::DynamicSql,
                K::ServerFunction,
                K::UserFunction,
                K::ForeignData,
            ],
            SqlGroup::Any => SqlKind::ALL,
        };
        list.iter().copied().collect()
    }
}

/// One entry of a `statements:` or `unbounded:` list: a kind or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementSelector {
    /// A single kind, e.g. `drop`.
    Kind(SqlKind),
    /// A group alias, e.g. `write`.
    Group(SqlGroup),
}

impl StatementSelector {
    /// The name as written in a policy.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatementSelector::Kind(k) => k.as_str(),
            StatementSelector::Group(g) => g.as_str(),
        }
    }

    /// The kinds this entry stands for.
    pub fn kinds(self) -> KindSet {
        match self {
            StatementSelector::Kind(k) => KindSet::from_iter([k]),
            StatementSelector::Group(g) => g.kinds(),
        }
    }
}

impl fmt::Display for StatementSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A statement kind name that is neither a kind nor a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown statement kind `{name}`{suggestion}; use a kind such as select, update, drop, or a group: read, write, ddl, dcl, transaction, session, dynamic, any"
)]
pub struct UnknownStatement {
    name: String,
    suggestion: String,
}

impl UnknownStatement {
    fn new(name: &str) -> Self {
        let names = SqlKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(SqlGroup::ALL.iter().map(|g| g.as_str()));
        let suggestion = closest(name, names)
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default();
        Self {
            name: name.to_owned(),
            suggestion,
        }
    }
}

/// The candidate within edit distance 2 of `name`, if any: typos such as
/// `dorp` deserve a hint.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let delete = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = row.get(j).copied().unwrap_or(0) + 1;
            row.push(substitute.min(delete).min(insert));
        }
        prev = row;
    }
    prev.last().copied().unwrap_or(0)
}

impl FromStr for StatementSelector {
    type Err = UnknownStatement;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = SqlKind::from_name(s) {
            return Ok(StatementSelector::Kind(kind));
        }
        SqlGroup::ALL
            .iter()
            .find(|g| g.as_str() == s)
            .map(|&g| StatementSelector::Group(g))
            .ok_or_else(|| UnknownStatement::new(s))
    }
}

impl Serialize for StatementSelector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StatementSelector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor::<StatementSelector>::new())
    }
}

/// Deserializes any `FromStr` type whose error reads well on its own.
struct StrVisitor<T>(std::marker::PhantomData<T>);

impl<T> StrVisitor<T> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Visitor<'_> for StrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a statement kind or group name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// A set of [`SqlKind`]s as a bitset: membership is one AND.
///
/// Serializes as a list of kind names so compiled snapshots stay readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "Vec<SqlKind>", from = "Vec<SqlKind>")]
pub struct KindSet(u64);

impl KindSet {
    /// The empty set.
    pub const EMPTY: KindSet = KindSet(0);

    /// Every kind except `other`: what a matcher without a `statements`
    /// field covers, so that unclassifiable statements stay denied unless a
    /// rule names `other` or `any`.
    pub fn classified() -> KindSet {
        let mut set = SqlGroup::Any.kinds();
        set.0 &= !SqlKind::Other.bit();
        set
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: SqlKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: SqlKind) {
        self.0 |= kind.bit();
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every kind of `other` is also in `self`.
    pub const fn is_superset(self, other: KindSet) -> bool {
        other.0 & !self.0 == 0
    }

    /// The union of two sets.
    pub const fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    /// The kinds in both sets.
    pub const fn intersection(self, other: KindSet) -> KindSet {
        KindSet(self.0 & other.0)
    }

    /// The kinds of `self` not in `other`.
    pub const fn difference(self, other: KindSet) -> KindSet {
        KindSet(self.0 & !other.0)
    }

    /// The kinds in declaration order.
    pub fn iter(self) -> impl Iterator<Item = SqlKind> {
        SqlKind::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<SqlKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = SqlKind>>(iter: I) -> Self {
        let mut set = KindSet::EMPTY;
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

impl From<Vec<SqlKind>> for KindSet {
    fn from(kinds: Vec<SqlKind>) -> Self {
        kinds.into_iter().collect()
    }
}

impl From<KindSet> for Vec<SqlKind> {
    fn from(set: KindSet) -> Self {
        set.iter().collect()
    }
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(SqlKind::as_str))
            .finish()
    }
}

impl fmt::Display for KindSet {
    /// Kinds joined with `+`, the way a multi-kind statement is described.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(kind.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &kind in SqlKind::ALL {
            assert_eq!(SqlKind::from_name(kind.as_str()), Some(kind));
            let sel: StatementSelector = kind.as_str().parse().expect("kind");
            assert_eq!(sel, StatementSelector::Kind(kind));
        }
        for &group in SqlGroup::ALL {
            let sel: StatementSelector = group.as_str().parse().expect("group");
            assert_eq!(sel, StatementSelector::Group(group));
        }
    }

    #[test]
    fn groups_expand() {
        let read = SqlGroup::Read.kinds();
        assert!(read.contains(SqlKind::Select) && read.contains(SqlKind::Fetch));
        assert!(!read.contains(SqlKind::Update));
        assert!(SqlGroup::Write.kinds().contains(SqlKind::Truncate));
        assert!(SqlGroup::Ddl.kinds().contains(SqlKind::Truncate));
        assert!(!SqlGroup::Session.kinds().contains(SqlKind::SetRole));
        assert!(
            !SqlGroup::Session
                .kinds()
                .contains(SqlKind::SetSessionAuthorization)
        );
        for tidy in [SqlKind::Deallocate, SqlKind::ResetAll, SqlKind::Unlisten] {
            assert!(SqlGroup::Session.kinds().contains(tidy), "{tidy}");
        }
        assert!(SqlGroup::Any.kinds().contains(SqlKind::Other));
        assert!(!KindSet::classified().contains(SqlKind::Other));
        assert!(KindSet::classified().contains(SqlKind::Checkpoint));
    }

    #[test]
    fn unknown_kind_suggests() {
        let err = "dorp".parse::<StatementSelector>().expect_err("unknown");
        let text = err.to_string();
        assert!(
            text.starts_with("unknown statement kind `dorp` (did you mean `drop`?)"),
            "{text}"
        );
        let err = "zzzzzzzz"
            .parse::<StatementSelector>()
            .expect_err("unknown");
        assert!(!err.to_string().contains("did you mean"));
    }

    #[test]
    fn set_operations_and_serde() {
        let set: KindSet = [SqlKind::Delete, SqlKind::ExplainAnalyze]
            .into_iter()
            .collect();
        assert_eq!(set.to_string(), "delete+explain_analyze");
        assert!(SqlGroup::Any.kinds().is_superset(set));
        assert_eq!(
            set.difference(SqlGroup::Write.kinds()).to_string(),
            "explain_analyze"
        );
        let json = serde_json::to_string(&set).expect("serialize");
        assert_eq!(json, r#"["delete","explain_analyze"]"#);
        assert_eq!(
            serde_json::from_str::<KindSet>(&json).expect("deserialize"),
            set
        );
    }
}
