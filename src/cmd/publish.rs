//! `phoenix publish`: publish hot updates to the distributor, list them, follow their
//! delivery and widen their rollout.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Context, DistributorClientArgs, Targeting, UsageError, audience, publish_request};
use crate::core::updates::UpdateType;
use crate::output::{self, table};

const EXAMPLES: &str = "\
Examples:
  phoenix publish prompt-tweak --prompt \"You are Phoenix, warm and caring.\" --target-prefix code-gen
  phoenix publish model-tweak --model anthropic/claude-3-haiku --rollout-percent 10
  phoenix publish widen <id> --rollout-percent 100
  phoenix publish status <id>
  phoenix publish rollback <id>";

/// Publish subcommands.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum Cmd {
    /// Publish a new default prompt (prompt_tweak)
    PromptTweak(PromptTweakArgs),
    /// Publish a new default model (model_tweak)
    ModelTweak(ModelTweakArgs),
    /// Publish an RFC 6902 patch over {"overrides": {...}, "config": {...}} (json_patch)
    JsonPatch(JsonPatchArgs),
    /// Publish YAML to deep-merge into the agents' config (yaml_graft)
    YamlGraft(YamlGraftArgs),
    /// Publish a message the agents log (notice)
    Notice(NoticeArgs),
    /// Undo an earlier update where it was applied, keeping later updates (rollback)
    Rollback(RollbackArgs),
    /// List the newest updates with their delivery and ack counts
    List(ListArgs),
    /// Show one update: targeted, delivered, applied, rejected, skipped, and the errors
    Status(StatusArgs),
    /// Raise an update's rollout percentage; newly admitted agents receive it at once
    Widen(WidenArgs),
}

/// `phoenix publish prompt-tweak`.
#[derive(Debug, clap::Args)]
pub struct PromptTweakArgs {
    /// The new default prompt
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Targeting.
    #[command(flatten)]
    pub target: Targeting,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish model-tweak`.
#[derive(Debug, clap::Args)]
pub struct ModelTweakArgs {
    /// The new default model, e.g. anthropic/claude-3-haiku
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Targeting.
    #[command(flatten)]
    pub target: Targeting,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish json-patch`.
#[derive(Debug, clap::Args)]
pub struct JsonPatchArgs {
    /// JSON file with the RFC 6902 operations (an array, or {"patch": [...]}); `-` reads stdin
    #[arg(long, value_name = "FILE")]
    pub patch: PathBuf,
    /// Targeting.
    #[command(flatten)]
    pub target: Targeting,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish yaml-graft`.
#[derive(Debug, clap::Args)]
pub struct YamlGraftArgs {
    /// YAML file holding a mapping to merge into the agents' config; `-` reads stdin
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Targeting.
    #[command(flatten)]
    pub target: Targeting,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish notice`.
#[derive(Debug, clap::Args)]
pub struct NoticeArgs {
    /// The message agents log
    #[arg(long, value_name = "TEXT")]
    pub message: String,
    /// Targeting.
    #[command(flatten)]
    pub target: Targeting,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Id (or seq) of the update to undo
    #[arg(value_name = "ID")]
    pub id: String,
    /// Targeting (default: the original update's targeting and tier).
    #[command(flatten)]
    pub target: Targeting,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// How many updates to show, newest first
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Id (or seq) of the update
    #[arg(value_name = "ID")]
    pub id: String,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// `phoenix publish widen`.
#[derive(Debug, clap::Args)]
pub struct WidenArgs {
    /// Id (or seq) of the update
    #[arg(value_name = "ID")]
    pub id: String,
    /// New rollout percentage, above the current one (100 reaches every targeted ORCH); `--percent` is an older name
    #[arg(long, visible_alias = "percent", value_name = "P", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub rollout_percent: u8,
    /// Distributor connection.
    #[command(flatten)]
    pub client: DistributorClientArgs,
}

/// Runs `phoenix publish`.
pub async fn run(cmd: Cmd, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        Cmd::PromptTweak(a) => {
            let payload = json!({ "default_prompt": a.prompt });
            publish(ctx, UpdateType::PromptTweak, payload, &a.target, &a.client).await
        }
        Cmd::ModelTweak(a) => {
            let payload = json!({ "default_model": a.model });
            publish(ctx, UpdateType::ModelTweak, payload, &a.target, &a.client).await
        }
        Cmd::JsonPatch(a) => {
            let text = read_input(&a.patch)?;
            let ops: Value = serde_json::from_str(&text).map_err(|e| {
                UsageError(format!(
                    "--patch {} is not valid JSON: {e}",
                    a.patch.display()
                ))
            })?;
            let payload = match ops {
                Value::Object(o) if o.contains_key("patch") => Value::Object(o),
                ops => json!({ "patch": ops }),
            };
            publish(ctx, UpdateType::JsonPatch, payload, &a.target, &a.client).await
        }
        Cmd::YamlGraft(a) => {
            let payload = json!({ "yaml": read_input(&a.file)? });
            publish(ctx, UpdateType::YamlGraft, payload, &a.target, &a.client).await
        }
        Cmd::Notice(a) => {
            let payload = json!({ "message": a.message });
            publish(ctx, UpdateType::Notice, payload, &a.target, &a.client).await
        }
        Cmd::Rollback(a) => {
            let payload = json!({ "update_id": check_id(&a.id)? });
            publish(ctx, UpdateType::Rollback, payload, &a.target, &a.client).await
        }
        Cmd::List(a) => list(ctx, &a).await,
        Cmd::Status(a) => status(ctx, &a).await,
        Cmd::Widen(a) => widen(ctx, &a).await,
    }
}

/// Reads a file, or stdin for `-`.
fn read_input(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())).into())
}

/// An update id or seq, safe to put in a URL path.
fn check_id(id: &str) -> Result<&str, UsageError> {
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(UsageError(format!(
            "{id:?} is not an update id (a UUID) or seq (a number)"
        )));
    }
    Ok(id)
}

async fn publish(
    ctx: &Context,
    update_type: UpdateType,
    payload: Value,
    target: &Targeting,
    client: &DistributorClientArgs,
) -> anyhow::Result<()> {
    let req = publish_request(update_type, payload, target)?;
    let envelope = client.publish(&ctx.settings, &req).await?;
    if ctx.json {
        return ctx.printer().document(&envelope);
    }
    println!(
        "Published {} {} as seq {} to {} ({} tier{}).",
        envelope.update_type.as_str(),
        envelope.update_id,
        envelope.seq,
        audience(&envelope),
        envelope.tier_required.as_str(),
        match envelope.rollout_percent {
            Some(p) => format!(", rollout {p}%"),
            None => String::new(),
        }
    );
    println!(
        "Follow it with `phoenix publish status {}`.",
        envelope.update_id
    );
    Ok(())
}

fn rollout(p: Option<u8>) -> String {
    p.map(|p| format!("{p}%"))
        .unwrap_or_else(|| "100%".to_owned())
}

async fn list(ctx: &Context, args: &ListArgs) -> anyhow::Result<()> {
    let client = args.client.client(&ctx.settings)?;
    let list = client.list(args.limit).await?;
    if ctx.json {
        return ctx.printer().document(&list);
    }
    if list.updates.is_empty() {
        println!("No updates published yet.");
        return Ok(());
    }
    let mut t = table([
        "seq",
        "id",
        "type",
        "time",
        "audience",
        "tier",
        "rollout",
        "targeted",
        "delivered",
        "applied",
        "rejected",
        "skipped",
    ]);
    for s in &list.updates {
        let u = &s.update;
        t.add_row([
            u.seq.to_string(),
            u.update_id.clone(),
            u.update_type.as_str().to_owned(),
            output::time(u.ts_unix),
            audience(u),
            u.tier_required.as_str().to_owned(),
            rollout(u.rollout_percent),
            s.targeted.to_string(),
            s.counts.delivered.to_string(),
            s.counts.applied.to_string(),
            s.counts.rejected.to_string(),
            s.counts.skipped.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}

async fn status(ctx: &Context, args: &StatusArgs) -> anyhow::Result<()> {
    let client = args.client.client(&ctx.settings)?;
    let s = client.status(check_id(&args.id)?).await?;
    if ctx.json {
        return ctx.printer().document(&s);
    }
    let u = &s.update;
    println!("update    {} (seq {})", u.update_id, u.seq);
    println!("type      {}", u.update_type.as_str());
    println!("published {}", output::time(u.ts_unix));
    println!(
        "audience  {} ({} tier)",
        audience(u),
        u.tier_required.as_str()
    );
    let history: Vec<String> = s
        .widenings
        .iter()
        .map(|w| {
            format!(
                "{} at {}",
                rollout(Some(w.to_percent)),
                output::time(w.ts_unix)
            )
        })
        .collect();
    println!(
        "rollout   {}{}",
        rollout(u.rollout_percent),
        if history.is_empty() {
            String::new()
        } else {
            format!(
                " (from {}; widened to {})",
                rollout(s.initial_rollout_percent),
                history.join(", ")
            )
        }
    );
    if s.payload_withheld {
        println!("payload   (premium: withheld; send the admin token, or the premium key as X402)");
    } else {
        println!(
            "payload   {}",
            output::shorten(&serde_json::to_string(&u.payload)?, 100)
        );
    }
    let c = &s.counts;
    let acked = c.applied + c.rejected + c.skipped;
    println!(
        "targeted {}  delivered {}  applied {}  rejected {}  skipped {}  awaiting ack {}",
        s.targeted,
        c.delivered,
        c.applied,
        c.rejected,
        c.skipped,
        c.delivered.saturating_sub(acked)
    );
    if !s.errors.is_empty() {
        let mut t = table(["orch", "status", "time", "error"]);
        for e in &s.errors {
            t.add_row([
                e.orch_hash.clone(),
                e.status.clone(),
                output::time(e.ts_unix),
                output::shorten(&output::printable(&e.error), 120),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}

async fn widen(ctx: &Context, args: &WidenArgs) -> anyhow::Result<()> {
    let client = args.client.client(&ctx.settings)?;
    let w = client
        .widen(check_id(&args.id)?, args.rollout_percent)
        .await?;
    if ctx.json {
        return ctx.printer().document(&w);
    }
    println!(
        "Widened {} (seq {}) from {} to {}; newly admitted agents receive it now.",
        w.update.update_id,
        w.update.seq,
        rollout(w.previous_rollout_percent),
        rollout(w.update.rollout_percent)
    );
    Ok(())
}
