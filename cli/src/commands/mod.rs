//! One module per top-level command. Each turns parsed arguments into API
//! calls through [`Client`] and prints either the server's JSON (`--json`) or
//! a view for people.

mod agents;
mod approvals;
mod audit;
mod credentials;
mod join_token;
mod policy;
mod resources;
mod sessions;
mod token;
mod whoami;

use std::path::Path;

use crate::auth;
use crate::cli::{AgentsCommand, Cli, Command, ResourcesCommand};
use crate::client::Client;

/// What every command needs: the API client and the output mode.
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = auth::resolve_token(
        cli.global.token,
        std::env::var_os("SLUICE_TOKEN_FILE").map(Into::into),
        Path::new(auth::DEMO_TOKEN_FILE),
    )?;
    let ctx = Ctx {
        client: Client::new(&cli.global.url, token)?,
        json: cli.global.json,
    };
    match cli.command {
        Command::Whoami => whoami::run(&ctx).await,
        Command::Token(cmd) => token::run(&ctx, cmd).await,
        Command::Resources { command } => {
            resources::run(&ctx, command.unwrap_or(ResourcesCommand::List)).await
        }
        Command::Credentials(cmd) => credentials::run(&ctx, cmd).await,
        Command::Policy(cmd) => policy::run(&ctx, cmd).await,
        Command::Agents { command } => match command.unwrap_or(AgentsCommand::List) {
            AgentsCommand::List => agents::list(&ctx).await,
        },
        Command::JoinToken(cmd) => join_token::run(&ctx, cmd).await,
        Command::Audit(cmd) => audit::run(&ctx, cmd).await,
        Command::Sessions(cmd) => sessions::run(&ctx, cmd).await,
        Command::Approvals(cmd) => approvals::run(&ctx, cmd).await,
    }
}
