//! `phoenix evolve-playbook`: change an agent's playbook through a pull request, CI and
//! approval; `approve` and `status` act on such a pull request.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::{Context, ForgeArgs, UsageError};
use crate::core::collector::client::CollectorClient;
use crate::core::collector::insight::Insight;
use crate::core::forge::evolve::{self, EvolveReport, EvolveRequest, Status};
use crate::core::forge::playbook::Playbook;
use crate::core::forge::{Approval, CiReport, Forge, PullRequest};
use crate::core::shared::client::{ApiClient, ClientOptions};
use crate::core::shared::config::ForgeChoice;

/// Evolve an agent's playbook.yaml through a pull request.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "\
Creates branch playbook/v<N+1> from main, bumps `version`, appends --note to `updates`, merges
the metrics into `telemetry`, opens a pull request, then waits for CI (MANDATE_GITHUB_CI=true)
and for an approval of the head commit (REQUIRE_HUMAN_PR_APPROVAL=true, the default) before
merging. On the local forge, approve with `phoenix evolve-playbook approve`, or answer the
prompt on a terminal. Running the same command again continues the same pull request.

Unknown keys of playbook.yaml are kept; comments are kept only at the top of the file (YAML
libraries drop the others).

Examples:
  phoenix evolve-playbook --repo rust-code-reviewer --note \"Prefer clippy hints\" --metric accuracy=0.93
  phoenix evolve-playbook --repo rust-code-reviewer --note \"Retune\" --metrics-from-collector --no-wait --json
  phoenix evolve-playbook approve --repo rust-code-reviewer 3
  phoenix evolve-playbook status --repo rust-code-reviewer 3"
)]
pub struct Args {
    /// Act on an existing evolution pull request.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Agent repository
    #[arg(long, value_name = "NAME", required = true)]
    pub repo: Option<String>,
    /// What changes and why; appended to the playbook's `updates`
    #[arg(long, value_name = "TEXT", required = true)]
    pub note: Option<String>,
    /// A telemetry metric to record in the playbook (repeatable)
    #[arg(long = "metric", value_name = "KEY=VALUE", value_parser = parse_metric)]
    pub metrics: Vec<(String, f64)>,
    /// Also record the agent's figures from the collector's analysis (records, error rate,
    /// mean and p95 of numeric fields)
    #[arg(long)]
    pub metrics_from_collector: bool,
    /// Collector for --metrics-from-collector [default: $TELEMETRIST_URL]
    #[arg(long, value_name = "URL")]
    pub collector_url: Option<String>,
    /// Open (or find) the pull request and return without waiting for CI or approval
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for CI, approval and the merge after this long
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// First poll interval while waiting; doubles up to 1 minute
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Forge selection.
    #[command(flatten)]
    pub forge: ForgeArgs,
}

/// Actions on an evolution pull request.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Approve a pull request's current head commit (local forge)
    Approve(PrArgs),
    /// Show a pull request: state, CI of its head, approvals
    Status(PrArgs),
}

/// Names a pull request.
#[derive(Debug, clap::Args)]
pub struct PrArgs {
    /// Agent repository
    #[arg(long, value_name = "NAME")]
    pub repo: String,
    /// Pull request number
    pub pr: u64,
    /// Who approves (recorded with the approval)
    #[arg(long, value_name = "NAME", default_value = "operator")]
    pub by: String,
    /// Forge selection.
    #[command(flatten)]
    pub forge: ForgeArgs,
}

fn parse_metric(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the value must be a number"))?;
    if !v.is_finite() {
        return Err(format!("{s:?}: the value must be finite"));
    }
    Ok((k.to_owned(), v))
}

/// Runs `phoenix evolve-playbook`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    match args.action {
        Some(Action::Approve(a)) => return approve(a, ctx).await,
        Some(Action::Status(a)) => return status(a, ctx).await,
        None => {}
    }
    let (Some(repo), Some(note)) = (args.repo.clone(), args.note.clone()) else {
        return Err(UsageError("--repo and --note are required".to_owned()).into());
    };
    if note.trim().is_empty() {
        return Err(UsageError("--note must not be empty".to_owned()).into());
    }
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    if args.metrics_from_collector {
        metrics.extend(collector_metrics(&args, &repo, ctx).await?);
    }
    metrics.extend(args.metrics.iter().cloned());
    let req = EvolveRequest {
        repo,
        note: note.trim().to_owned(),
        metrics,
        require_ci: ctx.settings.mandate_github_ci,
        require_approval: ctx.settings.require_human_pr_approval,
        wait: !args.no_wait,
        timeout: args.timeout,
        poll_initial: args.poll.max(Duration::from_millis(10)),
        poll_max: Duration::from_secs(60),
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let report = match args.forge.choice(&ctx.settings) {
        ForgeChoice::Local => execute(&args.forge.local(&ctx.settings), &req, interactive).await?,
        // GitHub approvals come from people on GitHub; Phoenix only waits for them.
        ForgeChoice::Github => execute(&args.forge.github(&ctx.settings)?, &req, false).await?,
    };
    ctx.printer().result(&report, render)
}

async fn execute<F: Forge>(
    forge: &F,
    req: &EvolveRequest,
    interactive: bool,
) -> anyhow::Result<EvolveReport> {
    let ask = |pr: &PullRequest, head: &Playbook| confirm(pr, head);
    let approver: evolve::Approver<'_> = if interactive { Some(&ask) } else { None };
    evolve::evolve(forge, req, approver, &|step| eprintln!("{step}…"))
        .await
        .with_context(|| format!("evolving the playbook of {}", req.repo))
}

/// Asks on the terminal; anything but y/yes declines.
fn confirm(pr: &PullRequest, head: &Playbook) -> bool {
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "Pull request #{} {} sets playbook version {}:\n  note: {}\n  telemetry: {:?}",
        pr.number,
        pr.head_branch,
        head.version(),
        head.last_update().unwrap_or_default(),
        head.telemetry()
    );
    let _ = write!(
        err,
        "Approve and merge {}? [y/N] ",
        &pr.head_sha[..pr.head_sha.len().min(10)]
    );
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

async fn collector_metrics(
    args: &Args,
    repo: &str,
    ctx: &Context,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let client = ApiClient::new(&ClientOptions {
        base_url: args
            .collector_url
            .clone()
            .unwrap_or_else(|| ctx.settings.collector.url.clone()),
        token: ctx.settings.collector.token.clone(),
        ca_cert: ctx.settings.collector.ca_cert.clone(),
        timeout: Duration::from_secs(60),
    })
    .map(CollectorClient::new)
    .context("setting up the collector client")?;
    let body = serde_json::json!({"focus": "playbook", "agent_prefix": repo});
    let key = ctx.settings.x402_premium_key.clone();
    let insight = client
        .analyze(&body, key.as_deref())
        .await
        .context("reading the agent's figures from the collector (--metrics-from-collector)")?;
    Ok(metrics_of(&insight))
}

/// The agent's figures from an analysis filtered to it.
pub fn metrics_of(insight: &Insight) -> BTreeMap<String, f64> {
    let s = &insight.stats;
    let mut out = BTreeMap::from([
        ("records".to_owned(), s.records as f64),
        (
            "error_rate".to_owned(),
            (s.error_rate * 10_000.0).round() / 10_000.0,
        ),
    ]);
    for f in &s.fields {
        out.insert(format!("{}_mean", f.field), round(f.overall.mean));
        out.insert(format!("{}_p95", f.field), round(f.overall.p95));
    }
    out
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn render(r: &EvolveReport) {
    let pr = &r.pull_request;
    let what = match r.status {
        Status::Merged => format!(
            "Merged pull request #{} into main: playbook v{} → v{}",
            pr.number, r.from_version, r.to_version
        ),
        Status::AwaitingCi => format!("Pull request #{} is open, waiting for CI", pr.number),
        Status::AwaitingApproval => format!(
            "Pull request #{} is open, waiting for an approval (phoenix evolve-playbook approve --repo {} {})",
            pr.number, r.repo, pr.number
        ),
        Status::Ready => format!("Pull request #{} is open and ready to merge", pr.number),
    };
    println!("{what}");
    println!("  repository  {}", r.repo);
    println!(
        "  branch      {} @ {}",
        pr.head_branch,
        &pr.head_sha[..pr.head_sha.len().min(12)]
    );
    println!("  url         {}", pr.url);
    if r.resumed {
        println!("  resumed     continued the pull request of an earlier run");
    }
    if !r.superseded.is_empty() {
        let list: Vec<String> = r.superseded.iter().map(|n| format!("#{n}")).collect();
        println!(
            "  superseded  {} (main moved; rebuilt on it)",
            list.join(", ")
        );
    }
    if let Some(ci) = &r.ci {
        println!(
            "  CI          {:?}: {}",
            ci.state,
            ci.summary.lines().next().unwrap_or("")
        );
    }
    if let Some(a) = &r.approval {
        println!("  approved by {}", a.approved_by.join(", "));
    }
    if let Some(sha) = &r.merge_sha {
        println!("  merge       {}", &sha[..sha.len().min(12)]);
    }
}

#[derive(Serialize)]
struct PrStatus {
    repo: String,
    pull_request: PullRequest,
    version: Option<u32>,
    note: Option<String>,
    ci: Option<CiReport>,
    approval: Approval,
}

async fn approve(a: PrArgs, ctx: &Context) -> anyhow::Result<()> {
    if a.forge.choice(&ctx.settings) == ForgeChoice::Github {
        return Err(UsageError(
            "on GitHub, approve the pull request on GitHub (a review by a person); `approve` is for the local forge"
                .to_owned(),
        )
        .into());
    }
    let forge = a.forge.local(&ctx.settings);
    let repo = forge
        .repo(&a.repo)
        .await?
        .with_context(|| format!("repository {} not found on the local forge", a.repo))?;
    let pr = forge
        .approve(&repo, a.pr, &a.by)
        .await
        .with_context(|| format!("approving pull request #{} of {}", a.pr, a.repo))?;
    if ctx.json {
        ctx.printer()
            .document(&serde_json::json!({"repo": a.repo, "approved": pr, "by": a.by}))
    } else {
        println!(
            "Approved pull request #{} of {} at {} (by {})",
            pr.number,
            a.repo,
            &pr.head_sha[..pr.head_sha.len().min(12)],
            a.by
        );
        println!(
            "Run the same `phoenix evolve-playbook --repo {} --note ...` again to merge it.",
            a.repo
        );
        Ok(())
    }
}

async fn status(a: PrArgs, ctx: &Context) -> anyhow::Result<()> {
    let status = match a.forge.choice(&ctx.settings) {
        ForgeChoice::Local => {
            let forge = a.forge.local(&ctx.settings);
            let s = pr_status(&forge, &a.repo, a.pr, false).await?;
            // The local forge runs CI when asked; status only reports what was recorded.
            PrStatus {
                ci: forge.recorded_ci(&a.repo, &s.pull_request.head_sha),
                ..s
            }
        }
        ForgeChoice::Github => {
            pr_status(&a.forge.github(&ctx.settings)?, &a.repo, a.pr, true).await?
        }
    };
    if ctx.json {
        return ctx.printer().document(&status);
    }
    let pr = &status.pull_request;
    println!(
        "Pull request #{} of {}: {:?}",
        pr.number, status.repo, pr.state
    );
    println!("  title       {}", pr.title);
    println!(
        "  branch      {} @ {}",
        pr.head_branch,
        &pr.head_sha[..pr.head_sha.len().min(12)]
    );
    if let (Some(v), Some(n)) = (status.version, &status.note) {
        println!("  playbook    v{v}: {n}");
    }
    match &status.ci {
        Some(ci) => println!(
            "  CI          {:?}: {}",
            ci.state,
            ci.summary.lines().next().unwrap_or("")
        ),
        None => println!("  CI          no result for this commit yet"),
    }
    let a = &status.approval;
    println!(
        "  approvals   {}{}",
        if a.approved_by.is_empty() {
            "none for the head commit".to_owned()
        } else {
            a.approved_by.join(", ")
        },
        if a.stale.is_empty() {
            String::new()
        } else {
            format!(" (stale, for an older commit: {})", a.stale.join(", "))
        }
    );
    println!("  url         {}", pr.url);
    Ok(())
}

async fn pr_status<F: Forge>(
    forge: &F,
    name: &str,
    number: u64,
    live_ci: bool,
) -> anyhow::Result<PrStatus> {
    let repo = forge
        .repo(name)
        .await?
        .with_context(|| format!("repository {name} not found"))?;
    let pr = forge.pr(&repo, number).await?;
    let head = match forge
        .read_file(&repo, &pr.head_sha, evolve::PLAYBOOK_PATH)
        .await?
    {
        Some(text) => Playbook::parse(&text).ok(),
        None => None,
    };
    let ci = if live_ci {
        Some(forge.ci(&repo, &pr, Duration::from_secs(30)).await?)
    } else {
        None
    };
    let approval = forge.approval(&repo, &pr).await?;
    Ok(PrStatus {
        repo: name.to_owned(),
        version: head.as_ref().map(Playbook::version),
        note: head.as_ref().and_then(Playbook::last_update),
        pull_request: pr,
        ci,
        approval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_as_key_equals_number() {
        assert_eq!(
            parse_metric("latency_ms=12.5").unwrap(),
            ("latency_ms".to_owned(), 12.5)
        );
        assert!(parse_metric("latency").is_err());
        assert!(parse_metric("=3").is_err());
        assert!(parse_metric("a=fast").is_err());
        assert!(parse_metric("a=NaN").is_err());
    }
}
