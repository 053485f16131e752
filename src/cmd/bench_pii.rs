//! `phoenix bench pii`: scores PII redaction on the generated corpus (precision, recall and
//! F2 per entity type) and measures its single-threaded throughput, against the targets.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::Context;
use crate::bench::pii_eval::{self as eval, EvalOptions, EvalReport, PiiTarget};
use crate::bench::{Bound, TargetCheck};
use crate::core::privacy::pii::EntityType;
use crate::output::{self, num, pct};

/// Options of `phoenix bench pii`.
#[derive(Debug, Clone, clap::Args)]
pub struct PiiArgs {
    /// Seed of the generated corpus (the same seed gives the same corpus)
    #[arg(long, value_name = "N", default_value_t = 2024)]
    pub seed: u64,
    /// Conversations in the corpus (2–5 messages each)
    #[arg(long, value_name = "N", default_value_t = 3000)]
    pub conversations: usize,
    /// Keep redacting the corpus for at least this long to measure throughput
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub min_time: Duration,
    /// Also write the corpus with its labels as JSON lines to this file
    #[arg(long, value_name = "FILE")]
    pub dump_corpus: Option<PathBuf>,
    /// Print examples of misses and false positives
    #[arg(long)]
    pub examples: bool,
    /// Also redact texts of these sizes (MB) in one session each, for throughput on long input (`--session-mb ''` skips it)
    #[arg(
        long,
        value_name = "MB,...",
        value_delimiter = ',',
        default_value = "1,8,64"
    )]
    pub session_mb: Vec<String>,
    /// Conversations of the multi-locale corpus (en_US, en_GB, de_DE, fr_FR, es_ES), scored on its tuning and its held-out values (0 skips it)
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub locale_conversations: usize,
}

/// Runs `phoenix bench pii`.
pub async fn run_pii(args: PiiArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.conversations == 0 {
        return Err(super::UsageError("--conversations must be at least 1".to_owned()).into());
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this phoenix is built without optimisations; its throughput says little. \
             Run `cargo run --release -- bench pii`."
        );
    }
    let mut session_mb = Vec::new();
    for size in args.session_mb.iter().filter(|s| !s.trim().is_empty()) {
        match size.trim().parse::<f64>() {
            Ok(mb) if mb > 0.0 && mb.is_finite() => session_mb.push(mb),
            _ => {
                return Err(super::UsageError(format!(
                    "--session-mb: {size:?} is not a size in MB (a positive number)"
                ))
                .into());
            }
        }
    }
    session_mb.sort_by(f64::total_cmp);
    let opts = EvalOptions {
        seed: args.seed,
        conversations: args.conversations,
        min_time: args.min_time,
        session_mb,
        locale_conversations: args.locale_conversations,
    };
    if let Some(path) = &args.dump_corpus {
        let mut out = String::new();
        for c in eval::generate(opts.seed, opts.conversations) {
            out.push_str(&serde_json::to_string(&c)?);
            out.push('\n');
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    let report = tokio::task::spawn_blocking(move || eval::run(&opts))
        .await
        .context("the evaluation thread failed")?
        .context("writing the long sessions' texts to a scratch directory")?;
    ctx.printer()
        .result(&report, |r| print_report(r, args.examples))
}

fn print_report(r: &EvalReport, examples: bool) {
    let check = |t: PiiTarget| r.targets.iter().find(|c| c.target == t);
    let f = |v: f64| format!("{v:.3}");
    let mut table = output::table([
        "entity",
        "gold",
        "found",
        "precision",
        "recall",
        "F2",
        "target",
        "pass",
    ]);
    let recall_target = |e: EntityType| match e {
        EntityType::Email => Some(PiiTarget::EmailRecall),
        EntityType::CreditCard => Some(PiiTarget::CardRecall),
        EntityType::Iban => Some(PiiTarget::IbanRecall),
        EntityType::IpAddress => Some(PiiTarget::IpRecall),
        EntityType::Secret => Some(PiiTarget::SecretRecall),
        EntityType::Person => Some(PiiTarget::PersonF2),
        _ => None,
    };
    for (entity, s) in &r.by_type {
        let c = recall_target(*entity).and_then(check);
        let (goal, pass) = target_cells(c);
        table.add_row(vec![
            entity.to_string(),
            s.gold.to_string(),
            s.predicted.to_string(),
            f(s.precision),
            f(s.recall),
            f(s.f2),
            goal,
            pass,
        ]);
    }
    let (goal, pass) = target_cells(check(PiiTarget::OverallF2));
    let o = &r.overall;
    table.add_row(vec![
        "all (micro)".to_owned(),
        o.gold.to_string(),
        o.predicted.to_string(),
        f(o.precision),
        f(o.recall),
        f(o.f2),
        goal,
        pass,
    ]);
    println!("{table}");
    let t = &r.throughput;
    let (goal, pass) = target_cells(check(PiiTarget::Throughput));
    println!(
        "throughput: {} MB/s on one thread (median of {} passes over {} KB; {} MB/s over all \
         {} s); target {goal}: {pass}",
        num((t.mb_per_sec * 10.0).round() / 10.0),
        t.passes,
        num((r.bytes as f64 / 1e3).round()),
        num((t.mean_mb_per_sec * 10.0).round() / 10.0),
        num((t.seconds * 100.0).round() / 100.0),
    );
    for (i, s) in r.long_sessions.iter().enumerate() {
        let last = i + 1 == r.long_sessions.len() && r.long_sessions.len() > 1;
        let verdict = if last {
            let (goal, pass) = target_cells(check(PiiTarget::LongSessionThroughput));
            let (steady_goal, steady) = target_cells(check(PiiTarget::LongSessionSteadiness));
            format!("; target {goal}: {pass}, and {steady_goal} of the shortest: {steady}")
        } else {
            String::new()
        };
        println!(
            "one session over {} MB: {} MB/s ({} values learned, RSS {} MiB more){verdict}",
            num(s.megabytes),
            num((s.mb_per_sec * 10.0).round() / 10.0),
            s.distinct_values,
            s.rss_growth_kib.map_or("?".to_owned(), |k| num(
                (k as f64 / 1024.0 * 10.0).round() / 10.0
            )),
        );
    }
    print_locales(r, examples, &check);
    let m = &r.machine;
    println!(
        "corpus: seed {}, {} conversations, {} messages; {} build, {} CPUs ({}/{}); \
         span match: same type and any overlap",
        r.options.seed, r.options.conversations, r.messages, m.profile, m.cpus, m.os, m.arch
    );
    if examples {
        print_examples(&r.examples, "");
    }
    let met = r.targets.iter().filter(|c| c.pass).count();
    println!(
        "targets met: {met}/{} ({})",
        r.targets.len(),
        pct(met as f64 / r.targets.len() as f64)
    );
}

/// The multi-locale corpus: a row per type with both pools side by side (targets on the
/// held-out one), then per locale; examples from the tuning pool only.
fn print_locales<'a>(
    r: &'a EvalReport,
    examples: bool,
    check: &dyn Fn(PiiTarget) -> Option<&'a TargetCheck<PiiTarget>>,
) {
    let [tuning, held] = r.locales.as_slice() else {
        return;
    };
    let f = |v: f64| format!("{v:.3}");
    let target_of = |e: Option<EntityType>| match e {
        Some(EntityType::Person) => Some(PiiTarget::HeldOutPersonRecall),
        Some(EntityType::Phone) => Some(PiiTarget::HeldOutPhoneRecall),
        Some(EntityType::Organization) => Some(PiiTarget::HeldOutOrganizationRecall),
        Some(EntityType::Address) => Some(PiiTarget::HeldOutAddressRecall),
        Some(EntityType::Email) => Some(PiiTarget::HeldOutEmailRecall),
        Some(EntityType::Iban) => Some(PiiTarget::HeldOutIbanRecall),
        Some(_) => None,
        None => Some(PiiTarget::HeldOutF2),
    };
    let mut table = output::table([
        "multi-locale",
        "gold",
        "tuning P / R",
        "held-out P / R",
        "held-out F2",
        "target",
        "pass",
    ]);
    let mut row = |name: String, e: Option<EntityType>, t: &eval::Score, h: &eval::Score| {
        let (goal, pass) = target_cells(target_of(e).and_then(check));
        table.add_row(vec![
            name,
            h.gold.to_string(),
            format!("{} / {}", f(t.precision), f(t.recall)),
            format!("{} / {}", f(h.precision), f(h.recall)),
            f(h.f2),
            goal,
            pass,
        ]);
    };
    let empty = eval::Score::default();
    for (entity, h) in &held.by_type {
        let t = tuning.by_type.get(entity).unwrap_or(&empty);
        row(entity.to_string(), Some(*entity), t, h);
    }
    row(
        "all (micro)".to_owned(),
        None,
        &tuning.overall,
        &held.overall,
    );
    let (goal, pass) = target_cells(check(PiiTarget::HeldOutKept));
    table.add_row(vec![
        "messages without PII kept".to_owned(),
        held.negatives.to_string(),
        f(tuning.kept),
        f(held.kept),
        "-".to_owned(),
        goal,
        pass,
    ]);
    println!("{table}");
    let per_locale: Vec<String> = held
        .by_locale
        .iter()
        .map(|(l, s)| {
            let t = tuning.by_locale.get(l).map_or(f64::NAN, |t| t.f2);
            format!("{l} {} ({})", f(s.f2), f(t))
        })
        .collect();
    println!(
        "multi-locale corpus: {} conversations per pool, values from Python Faker {} (tools/pii-locale-values.py); F2 by locale, held-out (tuning): {}",
        held.conversations,
        r.faker,
        per_locale.join(", ")
    );
    if examples {
        print_examples(&r.locale_examples, " (tuning pool)");
    }
}

/// One line per miss or false positive, `suffix` after each.
fn print_examples(examples: &[eval::Example], suffix: &str) {
    for e in examples {
        println!(
            "{:>14} {:<15} {:?} in {:?}{suffix}",
            e.kind,
            e.entity.to_string(),
            e.span,
            e.message
        );
    }
}

/// `≥ 0.85` and `pass`/`FAIL`, or dashes for a figure without a target.
fn target_cells(c: Option<&TargetCheck<PiiTarget>>) -> (String, String) {
    match c {
        Some(c) => {
            let op = match c.bound {
                Bound::AtLeast => "≥",
                Bound::Below => "<",
                Bound::AtMost => "≤",
            };
            let what = match c.target {
                PiiTarget::OverallF2 | PiiTarget::PersonF2 => "F2",
                PiiTarget::Throughput | PiiTarget::LongSessionThroughput => "MB/s",
                PiiTarget::LongSessionSteadiness | PiiTarget::HeldOutKept => "ratio",
                PiiTarget::HeldOutF2 => "F2",
                _ => "recall",
            };
            (
                format!("{what} {op} {}", num(c.threshold)),
                if c.pass { "pass" } else { "FAIL" }.to_owned(),
            )
        }
        None => ("-".to_owned(), "-".to_owned()),
    }
}
