//! The command line grammar: every command, flag and help text lives here, so
//! `sluice --help` and the parser cannot drift apart. Parsing only; nothing in
//! this module talks to the network or reads secrets.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Command-line client for the Sluice control plane",
    long_about = "Command-line client for the Sluice control plane.\n\n\
        Manages resources, credentials, policy, agents and audit through the \
        control plane's REST API. Output is aligned tables for people; pass \
        --json to get the server's JSON for scripts.\n\n\
        The token is taken from --token, else $SLUICE_TOKEN, else the file named \
        by $SLUICE_TOKEN_FILE, else ./.sluice/admin.token (written by `make run`).",
    after_help = "Examples:\n  \
        sluice whoami\n  \
        sluice resources list\n  \
        sluice policy apply policy.yaml --comment 'allow analysts to read orders'\n  \
        sluice audit tail --follow\n  \
        sluice sessions list --outcome live\n  \
        sluice audit verify SESSION_ID"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Base URL of the control plane's REST API.
    #[arg(
        long,
        global = true,
        env = "SLUICE_URL",
        hide_env_values = true,
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    pub url: String,

    /// Bearer token (else the file named by $SLUICE_TOKEN_FILE, else ./.sluice/admin.token).
    ///
    /// Prefer the environment variable or a token file over this flag: values
    /// on the command line are visible to other users in `ps` and end up in
    /// shell history.
    #[arg(
        long,
        global = true,
        env = "SLUICE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Print the server's JSON (pretty) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show who the current token belongs to.
    Whoami,

    /// Issue tokens for people and service accounts.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Manage protected resources (databases, hosts, APIs). Alone: list them.
    Resources {
        #[command(subcommand)]
        command: Option<ResourcesCommand>,
    },

    /// Manage the credentials agents use to reach resources.
    ///
    /// Secrets go to the control plane's vault and are never printed back.
    #[command(subcommand)]
    Credentials(CredentialsCommand),

    /// Apply, inspect, diff and explain the access policy.
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Show data-plane agents. Alone: list them.
    Agents {
        #[command(subcommand)]
        command: Option<AgentsCommand>,
    },

    /// Create one-time tokens that enroll a new agent.
    #[command(subcommand, name = "join-token")]
    JoinToken(JoinTokenCommand),

    /// Read the audit log, verify recorded sessions, export for a SIEM.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Recorded sessions: list, read a transcript, end a live one.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Just-in-time approvals: list requests, approve or deny them.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approval requests, newest first.
    List {
        /// Only requests with this status.
        #[arg(long, value_enum, value_name = "STATUS")]
        status: Option<ApprovalStatus>,
    },
    /// Show a request: who asked, the statement and parameters, the votes.
    Show {
        /// Request id.
        id: String,
    },
    /// Approve a request (you must be in one of its approver groups, and
    /// not the requester).
    Approve {
        /// Request id.
        id: String,
        /// Why; recorded and shown to the requester.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Deny a request.
    Deny {
        /// Request id.
        id: String,
        /// Why; recorded and shown to the requester.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved (retry mode: not used yet).
    Approved,
    Denied,
    /// The client cancelled the held statement.
    Withdrawn,
    /// Not decided in time, or a retry approval not used in time.
    Expired,
    /// A retry approval that was spent.
    Used,
}

impl ApprovalStatus {
    pub fn as_api(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::Used => "used",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it on stdout (so `$(sluice token issue ...)` works).
    Issue(TokenIssueArgs),
}

#[derive(Debug, Args)]
pub struct TokenIssueArgs {
    /// Who the token identifies, e.g. alice@example.com or ci-reporting.
    #[arg(long, value_name = "S")]
    pub subject: String,

    /// Group the subject belongs to (repeatable); policies match on groups.
    #[arg(long = "group", value_name = "G")]
    pub groups: Vec<String>,

    /// Role granted to the token (repeatable); `admin` allows using this API.
    #[arg(long = "role", value_name = "R")]
    pub roles: Vec<String>,

    /// How long the token is valid, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl, value_name = "DURATION")]
    pub ttl: String,

    /// Issue the token for a service account (a workload) rather than a person.
    #[arg(long)]
    pub service_account: bool,
}

#[derive(Debug, Subcommand)]
pub enum ResourcesCommand {
    /// List resources.
    List,
    /// Show one resource.
    Show {
        /// Resource name.
        name: String,
    },
    /// Create or replace a resource.
    Create(ResourceCreateArgs),
    /// Delete a resource.
    Delete {
        /// Resource name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ResourceCreateArgs {
    /// Resource name, used in policy and by clients to pick a target.
    pub name: String,

    /// What kind of service sits behind the resource.
    #[arg(long, value_enum, default_value_t = ResourceKind::Postgres)]
    pub kind: ResourceKind,

    /// Name of the agent that proxies connections to this resource.
    #[arg(long, value_name = "A")]
    pub agent: String,

    /// Where the agent reaches the service, as HOST:PORT.
    #[arg(long, value_parser = parse_address, value_name = "HOST:PORT")]
    pub address: String,

    /// Database to connect to (postgres).
    #[arg(long, value_name = "D")]
    pub database: Option<String>,

    /// Name of the credential the agent logs in with (see `sluice credentials`).
    #[arg(long, value_name = "C")]
    pub credential: Option<String>,

    /// Label to attach, as KEY=VALUE (repeatable); policies can match on labels.
    #[arg(long = "label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,

    /// TLS between the agent and the service.
    #[arg(long, value_enum, value_name = "MODE")]
    pub tls_mode: Option<TlsMode>,

    /// What the agent does when it cannot record audit events.
    #[arg(long, value_enum, value_name = "MODE")]
    pub audit_mode: Option<AuditMode>,

    /// Most client sessions the agent holds on the service at once, each one
    /// connection to it: keep it below the service's own limit (PostgreSQL's
    /// `max_connections`, less its reserved slots).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Most of those one subject may hold, so no one client can take them all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_subject: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResourceKind {
    Postgres,
    Ssh,
    Http,
}

impl ResourceKind {
    pub fn as_api(self) -> &'static str {
        match self {
            ResourceKind::Postgres => "postgres",
            ResourceKind::Ssh => "ssh",
            ResourceKind::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS without certificate verification.
    Require,
    /// TLS with certificate and host name verification.
    VerifyFull,
}

impl TlsMode {
    pub fn as_api(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditMode {
    /// Refuse statements when audit cannot be recorded.
    #[value(name = "fail_closed", alias = "fail-closed")]
    FailClosed,
    /// Keep serving and record audit when possible.
    #[value(name = "best_effort", alias = "best-effort")]
    BestEffort,
}

impl AuditMode {
    pub fn as_api(self) -> &'static str {
        match self {
            AuditMode::FailClosed => "fail_closed",
            AuditMode::BestEffort => "best_effort",
        }
    }
}

const SECRET_HELP: &str = "The secret is never accepted as a plain command-line argument: \
    arguments are visible to other users in `ps` and are saved in shell history. \
    Give it on stdin, in an environment variable, or in a file; one trailing \
    newline is stripped from stdin and file input.";

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List credentials (names, usernames and versions; never secrets).
    List,
    /// Create or replace a credential.
    #[command(after_help = SECRET_HELP)]
    Set {
        /// Credential name, referenced by resources.
        name: String,
        /// User name the agent logs in as.
        #[arg(long, value_name = "U")]
        username: String,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Replace the secret of an existing credential (and optionally its user name).
    #[command(after_help = SECRET_HELP)]
    Rotate {
        /// Credential name.
        name: String,
        /// New user name (default: keep the current one).
        #[arg(long, value_name = "U")]
        username: Option<String>,
        #[command(flatten)]
        secret: SecretSource,
    },
}

/// Where to read a secret from; exactly one is required.
#[derive(Debug, Args)]
#[command(next_help_heading = "Secret source (exactly one)")]
#[command(group(
    ArgGroup::new("secret_source")
        .required(true)
        .multiple(false)
        .args(["secret_stdin", "secret_env", "secret_file"])
))]
pub struct SecretSource {
    /// Read the secret from standard input.
    #[arg(long)]
    pub secret_stdin: bool,
    /// Read the secret from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Read the secret from this file.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate and apply a policy document (YAML or JSON) as a new version.
    ///
    /// If the control plane rejects the document, each problem is printed as
    /// FILE:LINE: PATH: MESSAGE and nothing is applied.
    Apply {
        /// Policy file; `-` reads standard input.
        file: PathBuf,
        /// Why this version exists; stored with it and shown in `policy list`.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// List policy versions.
    List,
    /// Print a policy version's document as it was applied.
    Show {
        /// Version number, or `current`.
        #[arg(default_value = "current", value_parser = parse_policy_ref, value_name = "VERSION")]
        policy_version: String,
    },
    /// Show what changed between two policy versions (unified diff).
    Diff {
        /// Older version number.
        #[arg(value_parser = parse_policy_ref)]
        from: String,
        /// Newer version number [default: current].
        #[arg(value_parser = parse_policy_ref)]
        to: Option<String>,
    },
    /// Ask the current policy what it would decide for a subject, resource and statement.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Subject to evaluate as.
    #[arg(long, value_name = "S")]
    pub subject: String,
    /// Group of the subject (repeatable).
    #[arg(long = "group", value_name = "G")]
    pub groups: Vec<String>,
    /// Evaluate as a service account rather than a person.
    #[arg(long)]
    pub service_account: bool,
    /// Resource the subject connects to.
    #[arg(long, value_name = "R")]
    pub resource: String,
    /// SQL statement to judge; without it only the connection is evaluated.
    #[arg(long, value_name = "SQL")]
    pub statement: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents with their connection state and policy snapshot.
    List,
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Create a join token for an agent and print it on stdout.
    Create {
        /// Name the agent will be enrolled under.
        #[arg(long, value_name = "NAME")]
        agent: String,
        /// How long the token can be used, e.g. 15m, 1h.
        #[arg(long, default_value = "1h", value_parser = parse_ttl, value_name = "DURATION")]
        ttl: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the most recent audit events; with --follow, keep printing new ones.
    Tail(AuditTailArgs),
    /// Check a session's record against its hash chain and the control plane's seal.
    ///
    /// Prints OK, or each problem found (which event was altered, removed,
    /// reordered or is missing at the end). Exits non-zero unless the
    /// session verifies; a session that never ended (still live, or its
    /// agent died) is incomplete and never verifies.
    Verify {
        /// Session id (see `sluice sessions list`).
        session: String,
    },
    /// Write audit events as JSON lines to stdout, oldest first (for a SIEM).
    ///
    /// Each line carries its `cursor`; pass the last one as --after to resume.
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Only events at or after this time: RFC 3339, or a duration ago such as 24h.
    #[arg(long, value_parser = parse_since, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events at or before this time: RFC 3339, or a duration ago.
    #[arg(long, value_parser = parse_since, value_name = "TIME")]
    pub until: Option<String>,
    /// Only events ingested after this cursor.
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<u64>,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List recorded sessions, most recent last.
    List(SessionsListArgs),
    /// Print a session's summary and transcript: each statement and its outcome.
    Show {
        /// Session id.
        id: String,
    },
    /// End a live session: the agent closes the client's connection with the reason.
    Kill {
        /// Session id.
        id: String,
        /// Told to the client and recorded [default: ended by administrator <you>].
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionOutcome {
    /// Still running.
    Live,
    /// Ended normally or by an administrator.
    Ended,
    /// Never ended and its agent went away: cannot be verified.
    Incomplete,
    /// The connection was refused.
    Denied,
}

impl SessionOutcome {
    pub fn as_api(self) -> &'static str {
        match self {
            SessionOutcome::Live => "live",
            SessionOutcome::Ended => "ended",
            SessionOutcome::Incomplete => "incomplete",
            SessionOutcome::Denied => "denied",
        }
    }
}

#[derive(Debug, Args)]
pub struct SessionsListArgs {
    /// Only sessions of this subject.
    #[arg(long, value_name = "S")]
    pub subject: Option<String>,
    /// Only sessions on this resource.
    #[arg(long, value_name = "R")]
    pub resource: Option<String>,
    /// Only sessions that started at or after this time: RFC 3339, or a duration ago such as 1h.
    #[arg(long, value_parser = parse_since, value_name = "TIME")]
    pub since: Option<String>,
    /// Only sessions that started at or before this time.
    #[arg(long, value_parser = parse_since, value_name = "TIME")]
    pub until: Option<String>,
    /// Only sessions with this status.
    #[arg(long, value_enum, value_name = "OUTCOME")]
    pub outcome: Option<SessionOutcome>,
    /// How many of the most recent sessions to list (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// Only events for this subject.
    #[arg(long, value_name = "S")]
    pub subject: Option<String>,
    /// Only events for this resource.
    #[arg(long, value_name = "R")]
    pub resource: Option<String>,
    /// Only events with this outcome (e.g. allow, deny).
    #[arg(long, value_name = "O")]
    pub outcome: Option<String>,
    /// Only events of this kind (e.g. session.start, statement, approval.request, session.end).
    #[arg(long, value_name = "K")]
    pub kind: Option<String>,
    /// How many recent events to print first (1-1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub limit: u32,
    /// Keep polling every second and print new events until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

fn parse_ttl(s: &str) -> Result<String, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the duration must be longer than zero".to_owned()),
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!("{e} (expected a duration such as 90s, 15m or 1h)")),
    }
}

/// A point in time for the API: RFC 3339 as given, or a duration such as
/// `90m` meaning that long ago.
pub fn parse_since(s: &str) -> Result<String, String> {
    if humantime::parse_rfc3339_weak(s).is_ok() {
        return Ok(s.to_owned());
    }
    match humantime::parse_duration(s) {
        Ok(d) => {
            let at = std::time::SystemTime::now()
                .checked_sub(d)
                .ok_or_else(|| "that is too long ago".to_owned())?;
            Ok(humantime::format_rfc3339_seconds(at).to_string())
        }
        Err(_) => Err(
            "expected an RFC 3339 time such as 2026-01-31T12:00:00Z, or a duration ago such as 1h"
                .to_owned(),
        ),
    }
}

fn parse_address(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT, e.g. db.internal:5432".to_owned())?;
    if host.is_empty() {
        return Err("the host part is empty (expected HOST:PORT)".to_owned());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(s.to_owned()),
        _ => Err(format!(
            "`{port}` is not a port number (expected HOST:PORT)"
        )),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE, e.g. env=prod".to_owned()),
    }
}

fn parse_policy_ref(s: &str) -> Result<String, String> {
    if s == "current" || s.parse::<u64>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err("expected a version number or `current`".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&[
            "whoami",
            "--json",
            "--url",
            "http://cp:9000",
            "--token",
            "t",
        ])
        .expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.url, "http://cp:9000");
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        assert!(matches!(cli.command, Command::Whoami));
    }

    #[test]
    fn token_issue_collects_repeated_flags() {
        let cli = parse(&[
            "token",
            "issue",
            "--subject",
            "alice",
            "--group",
            "analysts",
            "--group",
            "oncall",
            "--role",
            "admin",
            "--ttl",
            "15m",
            "--service-account",
        ])
        .expect("parses");
        let Command::Token(TokenCommand::Issue(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.subject, "alice");
        assert_eq!(args.groups, ["analysts", "oncall"]);
        assert_eq!(args.roles, ["admin"]);
        assert_eq!(args.ttl, "15m");
        assert!(args.service_account);
    }

    #[test]
    fn token_issue_defaults_and_rejects_bad_ttl() {
        let cli = parse(&["token", "issue", "--subject", "bob"]).expect("parses");
        let Command::Token(TokenCommand::Issue(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.ttl, "1h");
        assert!(!args.service_account);
        let err =
            parse(&["token", "issue", "--subject", "bob", "--ttl", "soon"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(parse(&["token", "issue"]).is_err(), "subject is required");
    }

    #[test]
    fn resources_alone_means_list() {
        let cli = parse(&["resources"]).expect("parses");
        assert!(matches!(cli.command, Command::Resources { command: None }));
        let cli = parse(&["agents"]).expect("parses");
        assert!(matches!(cli.command, Command::Agents { command: None }));
    }

    #[test]
    fn resources_create_parses_everything() {
        let cli = parse(&[
            "resources",
            "create",
            "orders-db",
            "--kind",
            "postgres",
            "--agent",
            "agent-1",
            "--address",
            "10.0.0.5:5432",
            "--database",
            "orders",
            "--credential",
            "orders-ro",
            "--label",
            "env=prod",
            "--label",
            "team=payments",
            "--tls-mode",
            "verify-full",
            "--audit-mode",
            "best_effort",
            "--max-connections",
            "90",
            "--max-connections-per-subject",
            "10",
        ])
        .expect("parses");
        let Command::Resources {
            command: Some(ResourcesCommand::Create(args)),
        } = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!(args.name, "orders-db");
        assert_eq!(args.kind, ResourceKind::Postgres);
        assert_eq!(args.address, "10.0.0.5:5432");
        assert_eq!(
            args.labels,
            [
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "payments".to_owned())
            ]
        );
        assert_eq!(args.tls_mode, Some(TlsMode::VerifyFull));
        assert_eq!(args.audit_mode, Some(AuditMode::BestEffort));
        assert_eq!(
            (args.max_connections, args.max_connections_per_subject),
            (Some(90), Some(10))
        );
    }

    #[test]
    fn resources_create_validates_values() {
        let base = ["resources", "create", "db", "--agent", "a"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(with(&["--address", "db:5432"]).is_ok());
        assert!(with(&["--address", "[::1]:5432"]).is_ok());
        assert!(with(&["--address", "db"]).is_err());
        assert!(with(&["--address", "db:port"]).is_err());
        assert!(with(&["--address", ":5432"]).is_err());
        assert!(with(&["--address", "db:1", "--label", "novalue"]).is_err());
        assert!(with(&["--address", "db:1", "--label", "=x"]).is_err());
        assert!(with(&["--address", "db:1", "--tls-mode", "maybe"]).is_err());
        assert!(with(&["--address", "db:1", "--max-connections", "0"]).is_err());
        assert!(with(&["--address", "db:1", "--max-connections-per-subject", "-1"]).is_err());
        assert!(with(&[]).is_err(), "address is required");
    }

    #[test]
    fn credentials_need_exactly_one_secret_source() {
        let ok = parse(&[
            "credentials",
            "set",
            "c",
            "--username",
            "u",
            "--secret-stdin",
        ]);
        assert!(ok.is_ok());
        let ok = parse(&["credentials", "rotate", "c", "--secret-env", "PGPASS"]).expect("parses");
        let Command::Credentials(CredentialsCommand::Rotate {
            username, secret, ..
        }) = ok.command
        else {
            panic!("wrong command");
        };
        assert_eq!(username, None);
        assert_eq!(secret.secret_env.as_deref(), Some("PGPASS"));

        let none = parse(&["credentials", "set", "c", "--username", "u"]).expect_err("must fail");
        assert_eq!(none.kind(), ErrorKind::MissingRequiredArgument);
        let two = parse(&[
            "credentials",
            "rotate",
            "c",
            "--secret-stdin",
            "--secret-file",
            "/tmp/s",
        ])
        .expect_err("must fail");
        assert_eq!(two.kind(), ErrorKind::ArgumentConflict);
        // There is deliberately no way to pass the secret itself.
        assert!(
            parse(&[
                "credentials",
                "set",
                "c",
                "--username",
                "u",
                "--secret",
                "x"
            ])
            .is_err()
        );
        assert!(parse(&["credentials", "set", "c", "hunter2", "--username", "u"]).is_err());
    }

    #[test]
    fn policy_commands() {
        let cli = parse(&["policy", "apply", "p.yaml", "--comment", "why"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Policy(PolicyCommand::Apply { ref file, comment: Some(ref c) })
                if file.as_os_str() == "p.yaml" && c == "why"
        ));
        let cli = parse(&["policy", "show"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Policy(PolicyCommand::Show { ref policy_version }) if policy_version == "current"
        ));
        assert!(parse(&["policy", "show", "7"]).is_ok());
        assert!(parse(&["policy", "show", "latest"]).is_err());
        let cli = parse(&["policy", "diff", "3"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Policy(PolicyCommand::Diff { ref from, to: None }) if from == "3"
        ));
        assert!(parse(&["policy", "diff"]).is_err());
        let cli = parse(&[
            "policy",
            "explain",
            "--subject",
            "alice",
            "--group",
            "analysts",
            "--resource",
            "orders-db",
            "--statement",
            "DELETE FROM orders",
        ])
        .expect("parses");
        let Command::Policy(PolicyCommand::Explain(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.groups, ["analysts"]);
        assert_eq!(args.statement.as_deref(), Some("DELETE FROM orders"));
        assert!(!args.service_account);
    }

    #[test]
    fn join_token_and_audit() {
        let cli = parse(&["join-token", "create", "--agent", "edge-1"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::JoinToken(JoinTokenCommand::Create { ref agent, ref ttl })
                if agent == "edge-1" && ttl == "1h"
        ));
        let cli = parse(&["audit", "tail"]).expect("parses");
        let Command::Audit(AuditCommand::Tail(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.limit, 20);
        assert!(!args.follow);
        let cli = parse(&[
            "audit",
            "tail",
            "--subject",
            "a",
            "--outcome",
            "deny",
            "--limit",
            "5",
            "-f",
        ])
        .expect("parses");
        let Command::Audit(AuditCommand::Tail(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.limit, 5);
        assert!(args.follow);
        assert!(parse(&["audit", "tail", "--limit", "0"]).is_err());
        assert!(parse(&["audit", "tail", "--limit", "5000"]).is_err());
    }

    #[test]
    fn sessions_and_audit_verify_export() {
        let cli =
            parse(&["sessions", "list", "--outcome", "live", "--since", "2h"]).expect("parses");
        let Command::Sessions(SessionsCommand::List(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.outcome, Some(SessionOutcome::Live));
        assert!(args.since.as_deref().is_some_and(|s| s.ends_with('Z')));
        assert_eq!(args.limit, 50);
        assert!(parse(&["sessions", "list", "--outcome", "gone"]).is_err());
        assert!(parse(&["sessions", "list", "--since", "yesterday"]).is_err());
        let cli = parse(&["sessions", "list", "--since", "2026-01-31T12:00:00Z"]).expect("parses");
        let Command::Sessions(SessionsCommand::List(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(args.since.as_deref(), Some("2026-01-31T12:00:00Z"));

        let cli = parse(&["sessions", "kill", "s1", "--reason", "leaving"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Sessions(SessionsCommand::Kill { ref id, reason: Some(ref r) }) if id == "s1" && r == "leaving"
        ));
        assert!(parse(&["sessions", "show"]).is_err(), "id is required");
        let cli = parse(&["audit", "verify", "s1"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Audit(AuditCommand::Verify { ref session }) if session == "s1")
        );
        let cli = parse(&["audit", "export", "--after", "42", "--limit", "10"]).expect("parses");
        let Command::Audit(AuditCommand::Export(args)) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!((args.after, args.limit), (Some(42), Some(10)));
        assert!(parse(&["audit", "export", "--limit", "0"]).is_err());
    }

    #[test]
    fn help_never_shows_the_token_from_the_environment() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("SLUICE_TOKEN"));
        assert!(help.contains("SLUICE_URL"));
        // hide_env_values keeps `[env: SLUICE_TOKEN=<value>]` out of the help.
        assert!(!help.contains("SLUICE_TOKEN="));
    }
}
