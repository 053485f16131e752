//! `phoenix spawn-agent`: scaffold a new agent repository on a forge.

use anyhow::Context as _;

use super::{Context, ForgeArgs, UsageError};
use crate::core::forge::Forge;
use crate::core::forge::scaffold::{AgentTier, Generated};
use crate::core::forge::spawn::{self, SpawnReport, SpawnRequest};
use crate::core::shared::config::ForgeChoice;
use crate::core::shared::llm::LlmClient;

/// Create an agent repository from Phoenix's template.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The agent is rendered and tested in a temporary directory; the repository is created and
pushed only when everything succeeded. Its behaviour (src/generated.rs) is written by the LLM
from --description and must pass the crate's `cargo test`; compiler errors go back to the LLM
for up to --max-repairs corrections. TESTING_MANDATORY=false skips the tests of --no-llm
placeholders (generated code is always tested).

Examples:
  phoenix spawn-agent rust-code-reviewer --description \"Reviews Rust code for safety\"
  phoenix spawn-agent notes-bot --description \"Summarises notes\" --no-llm --tier paid --json
  phoenix spawn-agent notes-bot --description \"...\" --forge github --org my-org --pr")]
pub struct Args {
    /// Agent name: repository and crate name (lowercase letters, digits, `-`, `_`)
    pub name: String,
    /// What the agent does; the LLM writes its code from this
    #[arg(long, short = 'd', value_name = "TEXT")]
    pub description: String,
    /// free = public repository; paid and enterprise = private
    #[arg(long, value_enum, default_value = "free")]
    pub tier: TierArg,
    /// Scaffold a documented placeholder instead of asking the LLM (marked in agent.json)
    #[arg(long)]
    pub no_llm: bool,
    /// Corrections the LLM may make after compiler or test errors
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_repairs: u32,
    /// Replace the main branch of an existing repository of that name
    #[arg(long)]
    pub force: bool,
    /// Push the scaffold to a branch and open a pull request instead of pushing to main
    #[arg(long)]
    pub pr: bool,
    /// Forge selection.
    #[command(flatten)]
    pub forge: ForgeArgs,
}

/// `--tier`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TierArg {
    /// Public repository.
    Free,
    /// Private repository.
    Paid,
    /// Private repository.
    Enterprise,
}

impl From<TierArg> for AgentTier {
    fn from(t: TierArg) -> AgentTier {
        match t {
            TierArg::Free => AgentTier::Free,
            TierArg::Paid => AgentTier::Paid,
            TierArg::Enterprise => AgentTier::Enterprise,
        }
    }
}

/// Runs `phoenix spawn-agent`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.description.trim().is_empty() {
        return Err(UsageError("--description must not be empty".to_owned()).into());
    }
    let codegen = if args.no_llm {
        None
    } else {
        let settings =
            ctx.settings.llm.client_settings().map_err(|e| {
                UsageError(format!("{e}; or pass --no-llm to scaffold a placeholder"))
            })?;
        let client = LlmClient::new(settings).context("setting up the LLM client")?;
        Some((client, args.max_repairs))
    };
    let req = SpawnRequest {
        name: args.name.clone(),
        description: args.description.clone(),
        tier: args.tier.into(),
        force: args.force,
        pr: args.pr,
        testing_mandatory: ctx.settings.testing_mandatory,
        codegen,
    };
    let report = match args.forge.choice(&ctx.settings) {
        ForgeChoice::Local => execute(&args.forge.local(&ctx.settings), req).await?,
        ForgeChoice::Github => execute(&args.forge.github(&ctx.settings)?, req).await?,
    };
    if ctx.json {
        ctx.printer().document(&report)
    } else {
        render(&report);
        Ok(())
    }
}

async fn execute<F: Forge>(forge: &F, req: SpawnRequest) -> anyhow::Result<SpawnReport> {
    let name = req.name.clone();
    spawn::spawn(forge, req, &|step| eprintln!("{step}…"))
        .await
        .with_context(|| format!("spawning agent {name}"))
}

fn render(r: &SpawnReport) {
    println!(
        "Spawned {} on the {} forge{}",
        r.name,
        match r.forge {
            crate::core::forge::ForgeKind::Local => "local",
            crate::core::forge::ForgeKind::Github => "GitHub",
        },
        if r.replaced {
            " (replaced the existing main branch)"
        } else {
            ""
        }
    );
    println!(
        "  repository  {} ({}, {} tier)",
        r.repo.url,
        if r.repo.private { "private" } else { "public" },
        r.tier.as_str()
    );
    println!(
        "  branch      {} @ {}",
        r.branch,
        &r.commit[..r.commit.len().min(12)]
    );
    if let Some(pr) = &r.pull_request {
        println!("  pull request #{} {}", pr.number, pr.url);
    }
    match &r.generated {
        Generated::Llm { model, attempts } => println!(
            "  code        src/generated.rs by {model}, {attempts} generation(s){}",
            if *attempts > 1 {
                " (repaired from compiler/test errors)"
            } else {
                ""
            }
        ),
        Generated::Placeholder => {
            println!(
                "  code        src/generated.rs is a PLACEHOLDER (--no-llm; marked in agent.json)"
            )
        }
    }
    match &r.tests {
        Some(t) => println!(
            "  tests       {} in {:.1}s: {}",
            if t.passed { "passed" } else { "FAILED" },
            t.duration_ms as f64 / 1000.0,
            t.summary
        ),
        None => println!("  tests       not run (TESTING_MANDATORY=false)"),
    }
    println!("  files       {}", r.files.join(", "));
}
