//! `phoenix export`: fine-tuning datasets (TRL or OpenAI JSONL, supervised or preference
//! pairs) from the conversations the collector stored.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{Context, parse_when};
use crate::core::privacy::dataset::{self, AtomicFile, Format, Summary};
use crate::core::store::{self, ConversationFilter, ConversationReader, Location};

const AFTER_HELP: &str = "\
Formats (one JSON object per line):
  sft         TRL conversational:  {\"messages\": [...]}
  dpo         TRL preference:      {\"prompt\": [...], \"chosen\": [assistant...], \"rejected\": [assistant...]}
  openai-sft  OpenAI fine-tuning:  {\"messages\": [...]} restricted to what OpenAI accepts (roles
              system/user/assistant/tool, string content, tool_calls); what it would refuse is
              converted or the conversation skipped, and both are counted in the summary
  openai-dpo  OpenAI preference:   {\"input\": {\"messages\": [...]}, \"preferred_output\": [one
              assistant message], \"non_preferred_output\": [one assistant message]}

Preference pairs: the prompt is everything before the final assistant turn (the trailing
assistant messages). Conversations share a prompt when their prompts are identical once each
conversation's pseudonyms are renumbered in order of first appearance (USER_C, USER_A ->
USER_A, USER_B), which every format applies, so a pair's prompt, chosen and rejected agree on
who is who. A is preferred over B when both have a score and A's is higher, else when both
have feedback and A's is better (positive > neutral > negative); equal or missing ratings
make no pair. Rule: in each group the conversation preferred over the most others (ties: the
most recent) is `chosen`, paired with every conversation it is preferred over.

--min-score S keeps only conversations scored S or more: unscored ones are left out (and
counted as `unscored`). The database is opened read-only; exporting while the collector runs
is safe. The summary (lines written, pairs, skipped by reason) goes to stderr; with --json
and --out it is printed on stdout as JSON.

Examples:
  phoenix export --format sft --out sft.jsonl
  phoenix export --format dpo --since 7d --min-score 1 > pairs.jsonl
  phoenix export --format openai-dpo --db /srv/phoenix/telemetrist.db --out dpo.jsonl --json";

/// Dataset format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// TRL conversational language modelling: {"messages": [...]}
    Sft,
    /// TRL conversational preference pairs: {"prompt", "chosen", "rejected"}
    Dpo,
    /// OpenAI supervised fine-tuning lines
    OpenaiSft,
    /// OpenAI preference fine-tuning lines
    OpenaiDpo,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Sft => Format::Sft,
            FormatArg::Dpo => Format::Dpo,
            FormatArg::OpenaiSft => Format::OpenaiSft,
            FormatArg::OpenaiDpo => Format::OpenaiDpo,
        }
    }
}

/// Arguments of `phoenix export`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Dataset format
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// Only conversations completed at or after this time: RFC 3339, Unix seconds, or an age such as 12h or 7d
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<i64>,
    /// Only conversations with a score of at least S (unscored ones are left out)
    #[arg(long, value_name = "S", value_parser = finite_score, allow_negative_numbers = true)]
    pub min_score: Option<f64>,
    /// Write the JSONL to FILE (a temporary file renamed into place when complete) instead of stdout
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Collector database [default: $TELEMETRIST_DB_PATH or <data dir>/telemetrist.db]
    #[arg(long, value_name = "FILE", conflicts_with = "database_url")]
    pub db: Option<PathBuf>,
    /// The collector's PostgreSQL database (postgres://USER:PASSWORD@HOST:PORT/DB) [default: $PHOENIX_DATABASE_URL or [store] url]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

fn finite_score(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a finite number")),
    }
}

/// Exports with fewer conversations than this finish before a progress bar is worth drawing.
const PROGRESS_FROM: u64 = 2_000;

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    out: Option<&'a Path>,
}

/// Runs `phoenix export`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    // --db, then --database-url, then the configured store (store.url, else collector.db_path).
    let location = match (&args.db, &args.database_url) {
        (Some(db), _) => Location::from_path(db),
        (None, Some(url)) => Location::parse(url),
        (None, None) => Location::collector(&ctx.settings),
    }
    .context("the collector's store")?;
    if let Location::Sqlite(path) = &location
        && !path.is_file()
    {
        anyhow::bail!(
            "there is no collector database at {} (give --db FILE, --database-url URL, or set \
             TELEMETRIST_DB_PATH / PHOENIX_DATABASE_URL)",
            path.display()
        );
    }
    let format = Format::from(args.format);
    let filter = ConversationFilter {
        since: args.since,
        min_score: args.min_score,
    };
    let show_progress = ctx.stderr_tty;
    let out = args.out.clone();
    let conversations = store::open_conversations(&location)
        .await
        .with_context(|| format!("opening the collector database {location}"))?;
    let handle = tokio::runtime::Handle::current();
    // The dataset writer is synchronous: it runs on the blocking pool and waits on the store.
    let summary = tokio::task::spawn_blocking(move || {
        let reader = ConversationReader::new(conversations, handle);
        let planned = dataset::planned(&reader, format, &filter)?;
        let bar = progress_bar(show_progress && planned >= PROGRESS_FROM, planned);
        let mut tick = |n: u64| bar.set_position(n);
        let summary = match &out {
            Some(path) => {
                let mut file = AtomicFile::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let summary = dataset::export(&reader, format, &filter, file.writer(), &mut tick)?;
                file.commit()
                    .with_context(|| format!("writing {}", path.display()))?;
                summary
            }
            None => {
                let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
                match dataset::export(&reader, format, &filter, &mut stdout, &mut tick) {
                    // The reader of our output went away (`| head`): not an error of ours.
                    Err(dataset::Error::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        return Err(e.into());
                    }
                    other => other?,
                }
            }
        };
        bar.finish_and_clear();
        anyhow::Ok(summary)
    })
    .await
    .context("the export task failed")??;
    print_summary(ctx, &summary, args.out.as_deref())
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} conversations {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn print_summary(ctx: &Context, summary: &Summary, out: Option<&Path>) -> anyhow::Result<()> {
    let report = Report { summary, out };
    match (ctx.json, out) {
        (true, Some(_)) => crate::output::print_json(&report),
        // stdout holds the dataset: the machine summary goes to stderr, on one line.
        (true, None) => {
            let mut err = std::io::stderr().lock();
            writeln!(err, "{}", serde_json::to_string(&report)?)?;
            Ok(())
        }
        (false, _) => {
            eprintln!("{}", human_summary(summary, out));
            Ok(())
        }
    }
}

fn human_summary(s: &Summary, out: Option<&Path>) -> String {
    let format = serde_json::to_value(s.format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let to = out.map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let pairs = if s.format.is_preference() {
        format!(" ({})", plural(s.pairs, "pair"))
    } else {
        String::new()
    };
    let mut text = format!(
        "{format}: wrote {}{pairs} to {to} from {} of {} stored conversations",
        plural(s.written, "line"),
        s.read,
        s.stored
    );
    let list = |m: &std::collections::BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !s.skipped.is_empty() {
        text.push_str(&format!("\nskipped conversations: {}", list(&s.skipped)));
    }
    if !s.skipped_pairs.is_empty() {
        text.push_str(&format!("\nskipped pairs: {}", list(&s.skipped_pairs)));
    }
    if !s.converted.is_empty() {
        text.push_str(&format!("\nconverted for OpenAI: {}", list(&s.converted)));
    }
    text
}
