//! `phoenix agents token ORCH_ID`: issue an ORCH's agent credential.

use anyhow::Context as _;
use serde::Serialize;

use super::{Context, UsageError};
use crate::core::shared::agent_token::AgentKeys;
use crate::core::shared::anonymize::Anonymizer;

const TOKEN_HELP: &str = "\
The token is derived from the installation's agent key ($PHOENIX_AGENT_KEY_FILE, default
<data dir>/agent_token.key, created on first use), so nothing is stored per ORCH: run this
where the distributor and collector read that key (or copy the key file to them). Give the
token to the ORCH as PHOENIX_AGENT_TOKEN (or `phoenix subscribe --token`); it goes in the
WebSocket hello and as the bearer of the ORCH's heartbeats. A distributor bound off loopback
refuses subscribers without one. Replacing the key file revokes every token at once.

Example:
  PHOENIX_AGENT_TOKEN=$(phoenix agents token orch-7) phoenix subscribe --orch-id orch-7 --agent-path code-gen/rust";

/// Agent credential subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print the agent token of an ORCH (sent in its hello and on its heartbeats)
    #[command(after_help = TOKEN_HELP)]
    Token(TokenArgs),
}

/// Arguments of `phoenix agents token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The ORCH's raw id, exactly as it sends it (`--orch-id` of `phoenix subscribe`)
    pub orch_id: String,
}

#[derive(Serialize)]
struct Issued<'a> {
    orch_id: &'a str,
    orch_hash: String,
    token: String,
}

/// Runs `phoenix agents`.
pub fn run(cmd: Cmd, ctx: &Context) -> anyhow::Result<()> {
    let Cmd::Token(args) = cmd;
    let orch_id = args.orch_id.as_str();
    if orch_id.trim().is_empty() || orch_id.len() > 256 {
        return Err(UsageError("ORCH_ID must be 1 to 256 bytes".to_owned()).into());
    }
    let settings = &ctx.settings;
    let key_file = &settings.distributor.agent_key_file;
    let keys = AgentKeys::load_or_create(key_file)
        .with_context(|| format!("loading the agent key at {}", key_file.display()))?;
    let token = keys.token(orch_id);
    if ctx.json {
        let hashes = Anonymizer::load_or_create(&settings.collector.hash_key_file)
            .context("loading the orch hash key")?;
        return ctx.printer().document(&Issued {
            orch_id,
            orch_hash: hashes.orch_hash(orch_id),
            token,
        });
    }
    println!("{token}");
    Ok(())
}
