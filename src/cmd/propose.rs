//! `phoenix propose`: the hive. A queen runs N workers that each ask the LLM for an
//! improvement proposal, then (optionally) ranks them and publishes the best as a hot update.

mod render;
mod terminal;

use render::{ContextInfo, Output, Published};

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde_json::json;
use tokio::sync::watch;

use self::render::{render_hive, render_publish};
use self::terminal::{LiveProgress, confirm, log_progress, question, spinner};
use super::{
    CollectorClientArgs, Context, DistributorClientArgs, PartialFailure, Targeting, UsageError,
    publish_request,
};
use crate::core::collector::insight::Insight;
use crate::core::hive::{self, Brief, HiveConfig, HiveReport, Progress};
use crate::core::shared::llm::LlmClient;
use crate::core::updates::UpdateType;

/// Most workers one run may start: beyond this a run is a load test of the provider.
pub const MAX_WORKERS: u16 = 64;

const EXAMPLES: &str = "\
Examples:
  phoenix propose \"Improve memory retrieval speed\" --n 5
  phoenix propose \"Cut response times\" --context-from-insights --rank
  phoenix propose \"Cut response times\" --context-from-insights --publish-best model-tweak --yes
  phoenix propose \"Warmer answers\" --n 8 --concurrency 4 --timeout 30s --retries 2 --json

Each worker gets its own perspective and temperature; the queen gives every attempt its own
deadline, retries failed workers (--retries; errors that cannot succeed on retry, such as a
rejected API key, are not retried), and drops exact and near-duplicate proposals, naming the
worker each one repeats. HTTP 429/5xx answers are retried inside an attempt, honouring
Retry-After, per PHOENIX_LLM_MAX_RETRIES. Ctrl-C stops the workers and prints what came back.

Exit status: 0 all workers succeeded, 5 some failed (or the ranking failed), 1 all failed.";

/// Ask N concurrent LLM workers for improvement proposals, supervised by a queen.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// What to improve, e.g. "Improve memory retrieval speed"
    #[arg(value_name = "SEED")]
    pub seed: String,
    /// Number of workers, each asking the LLM for one proposal
    #[arg(short = 'n', long = "n", value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS as i64))]
    pub n: u16,
    /// Most workers asking the LLM at the same time [default: N, at most 8]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS as i64))]
    pub concurrency: Option<u16>,
    /// Deadline of one attempt of one worker (also of the ranking)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Extra attempts for a worker that errors, times out, panics or answers garbage
    #[arg(long, value_name = "R", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=5))]
    pub retries: u32,
    /// LLM model the workers and the ranking use [default: $PHOENIX_LLM_MODEL]
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Ground the seed in the collector's latest insight (GET /insights)
    #[arg(long)]
    pub context_from_insights: bool,
    /// Collector to read the insight from [default: $TELEMETRIST_URL or http://127.0.0.1:5002]
    #[arg(long, value_name = "URL", requires = "context_from_insights")]
    pub collector_url: Option<String>,
    /// Ask the LLM for a ranked synthesis of the distinct proposals, with reasons
    #[arg(long)]
    pub rank: bool,
    /// Publish the best proposal carrying this update type through the distributor (implies --rank unless --pick)
    #[arg(long, value_name = "TYPE", value_enum)]
    pub publish_best: Option<PublishAs>,
    /// Publish this worker's proposal instead of the best-ranked one
    #[arg(long, value_name = "WORKER", requires = "publish_best")]
    pub pick: Option<usize>,
    /// Publish without asking for confirmation (required when stdin is not a terminal)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Distributor to publish to [default: derived from $PULSE_DISTRIBUTOR_URL: http://127.0.0.1:5003]
    #[arg(long, value_name = "URL", requires = "publish_best")]
    pub distributor_url: Option<String>,
    /// Admin token the distributor requires for publishing [default: $PHOENIX_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN", requires = "publish_best")]
    pub admin_token: Option<String>,
    /// Who receives the published update.
    #[command(flatten)]
    pub target: Targeting,
}

/// The update types a proposal can be published as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishAs {
    /// A new default prompt (prompt_tweak)
    PromptTweak,
    /// A new default model (model_tweak)
    ModelTweak,
}

impl PublishAs {
    fn update_type(self) -> UpdateType {
        match self {
            PublishAs::PromptTweak => UpdateType::PromptTweak,
            PublishAs::ModelTweak => UpdateType::ModelTweak,
        }
    }
}

/// What the invocation asks for, checked before any LLM call.
struct Plan {
    seed: String,
    publish_as: Option<UpdateType>,
    /// Ask before publishing (a terminal, no `--yes`).
    confirm: bool,
    distributor: DistributorClientArgs,
    llm: Arc<LlmClient>,
    model: String,
}

impl Plan {
    /// Refuses everything that can be wrong with the invocation (exit 2) before any work.
    fn check(args: &Args, ctx: &Context) -> anyhow::Result<Plan> {
        let seed = args.seed.trim().to_owned();
        if seed.is_empty() {
            return Err(UsageError("the seed must not be empty".to_owned()).into());
        }
        if args.timeout.is_zero() {
            return Err(UsageError("--timeout must be above zero".to_owned()).into());
        }
        let t = &args.target;
        let targeted = t.target_orch.is_some()
            || t.target_prefix.is_some()
            || t.tier.is_some()
            || t.rollout_percent.is_some();
        let publish_as = args.publish_best.map(PublishAs::update_type);
        if targeted && publish_as.is_none() {
            return Err(
                UsageError("targeting flags only apply with --publish-best".to_owned()).into(),
            );
        }
        if let Some(pick) = args.pick
            && (pick == 0 || pick > usize::from(args.n))
        {
            return Err(
                UsageError(format!("--pick {pick} is not a worker (1 to {})", args.n)).into(),
            );
        }
        let confirm = publish_as.is_some() && !args.yes;
        if confirm && !(std::io::stdin().is_terminal() && ctx.stderr_tty) {
            return Err(UsageError(
                "--publish-best asks for confirmation and stdin is not a terminal: pass --yes"
                    .to_owned(),
            )
            .into());
        }
        let distributor = DistributorClientArgs {
            url: args.distributor_url.clone(),
            token: args.admin_token.clone(),
            ca_cert: None,
            timeout: Duration::from_secs(30),
        };
        if let Some(t) = publish_as {
            // The targeting and the distributor URL are checked now, not after the LLM work.
            let placeholder = match t {
                UpdateType::ModelTweak => json!({"default_model": "check/model"}),
                _ => json!({"default_prompt": "check"}),
            };
            publish_request(t, placeholder, &args.target)?;
            distributor.client(&ctx.settings)?;
        }
        let mut llm_config = ctx.settings.llm.clone();
        if let Some(m) = &args.model {
            llm_config.model = Some(m.clone());
        }
        // The client keeps its own per-request timeout: the queen aborts an attempt (and its
        // HTTP request) at the worker's deadline anyway.
        let llm_settings = llm_config
            .client_settings()
            .map_err(|m| UsageError(format!("no LLM to ask: {m}")))?;
        let model = llm_settings.model.clone();
        let llm = LlmClient::new(llm_settings).map_err(|e| UsageError(e.to_string()))?;
        Ok(Plan {
            seed,
            publish_as,
            confirm,
            distributor,
            llm: Arc::new(llm),
            model,
        })
    }
}

/// Runs `phoenix propose`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let plan = Plan::check(&args, ctx)?;
    let insight = if args.context_from_insights {
        Some(latest_insight(&args, ctx).await?)
    } else {
        None
    };
    let brief = Brief {
        seed: plan.seed.clone(),
        context: insight.as_ref().map(hive::prompts::insight_context),
        publish_as: plan.publish_as,
    };
    let n = usize::from(args.n);
    let config = HiveConfig {
        concurrency: usize::from(args.concurrency.unwrap_or(args.n.min(8))),
        timeout: args.timeout,
        retries: args.retries,
        ..HiveConfig::new(n)
    };

    let (cancel_tx, cancel) = watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Ctrl-C: stopping the workers");
            let _ = cancel_tx.send(true);
        }
    });
    let interactive = ctx.stderr_tty && !ctx.json;

    let live = interactive.then(|| LiveProgress::new(n));
    let on_progress = |p: Progress| match &live {
        Some(live) => live.show(&p),
        None => log_progress(&p),
    };
    let report = hive::run(
        plan.llm.clone(),
        &brief,
        &config,
        cancel.clone(),
        &on_progress,
    )
    .await;
    if let Some(live) = live {
        live.clear();
    }

    let mut ranking = None;
    let mut ranking_error = None;
    let wants_ranking = args.rank || (plan.publish_as.is_some() && args.pick.is_none());
    if wants_ranking && !report.cancelled && report.counts.ok > 0 {
        let spinner = interactive.then(|| spinner("queen: ranking the proposals"));
        match hive::rank(plan.llm.clone(), &brief, &report, &config, cancel.clone()).await {
            Ok(r) => ranking = Some(r),
            Err(e) => ranking_error = Some(e.to_string()),
        }
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
    }

    let mut output = Output {
        model: &plan.model,
        context: insight.as_ref().map(|i| ContextInfo {
            insight_id: i.id.clone(),
            focus: i.focus.clone(),
            records_analyzed: i.records_analyzed,
            ts_unix: i.ts_unix,
        }),
        hive: &report,
        ranking,
        ranking_error,
        published: None,
        publish_error: None,
    };
    if !ctx.json {
        // People see the proposals and the ranking before they are asked to publish.
        render_hive(&output, ctx.stdout_tty);
    }
    let mut publish_error = None;
    let mut declined = false;
    if let Some(update_type) = plan.publish_as
        && !report.cancelled
        && report.succeeded() > 0
    {
        match publish_best(&args, ctx, &plan, &output, update_type, cancel.clone()).await {
            Ok(Some(p)) => output.published = Some(p),
            Ok(None) => declined = true,
            Err(e) => publish_error = Some(e),
        }
    }
    ctrl_c.abort();
    output.publish_error = publish_error.as_ref().map(|e| format!("{e:#}"));
    ctx.printer()
        .result(&output, |o| render_publish(o, declined))?;

    if let Some(e) = publish_error {
        return Err(e);
    }
    outcome(&report, output.ranking_error.as_deref())
}

/// Chooses the proposal, asks on a terminal, and publishes it; `None` when declined.
async fn publish_best(
    args: &Args,
    ctx: &Context,
    plan: &Plan,
    output: &Output<'_>,
    update_type: UpdateType,
    mut cancel: watch::Receiver<bool>,
) -> anyhow::Result<Option<Published>> {
    let chosen =
        hive::choose_for_publishing(output.hive, output.ranking.as_ref(), update_type, args.pick)
            .map_err(|why| match &output.ranking_error {
            Some(e) if output.ranking.is_none() => {
                anyhow!("nothing published: {why} (the ranking failed: {e})")
            }
            _ => anyhow!("nothing published: {why}"),
        })?;
    let update = chosen
        .proposal
        .as_ref()
        .and_then(|p| p.update.as_ref())
        .context("the chosen proposal carries no update")?;
    if plan.confirm && !confirm(&question(chosen, &args.target), &mut cancel).await? {
        return Ok(None);
    }
    let req = publish_request(update_type, update.payload(), &args.target)?;
    let envelope = plan
        .distributor
        .publish(&ctx.settings, &req)
        .await
        .context("publishing the chosen proposal")?;
    Ok(Some(Published {
        worker: chosen.worker,
        update: envelope,
    }))
}

/// Exit status from the workers: all succeeded (0), some failed or were cancelled or the
/// ranking failed (5), none brought a proposal back (1).
fn outcome(report: &HiveReport, ranking_error: Option<&str>) -> anyhow::Result<()> {
    let c = &report.counts;
    let n = report.workers;
    if report.succeeded() == 0 {
        return Err(if report.cancelled {
            anyhow!("cancelled before any proposal came back")
        } else {
            anyhow!("all {n} workers failed")
        });
    }
    let mut parts = Vec::new();
    if c.failed > 0 {
        parts.push(format!("{} of {n} workers failed", c.failed));
    }
    if c.cancelled > 0 {
        parts.push(format!("{} of {n} workers were cancelled", c.cancelled));
    }
    if let Some(e) = ranking_error {
        parts.push(format!("the ranking failed: {e}"));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(PartialFailure(parts.join("; ")).into())
    }
}

async fn latest_insight(args: &Args, ctx: &Context) -> anyhow::Result<Insight> {
    let collector = CollectorClientArgs {
        url: args.collector_url.clone(),
        token: None,
        ca_cert: None,
        timeout: Duration::from_secs(30),
    }
    .client(&ctx.settings)?;
    let list = collector
        .insights(1)
        .await
        .context("reading the latest insight for --context-from-insights")?;
    list.insights.into_iter().next().ok_or_else(|| {
        anyhow!(
            "the collector at {} has no insight yet: run `phoenix analyze` first",
            collector.base_url()
        )
    })
}
