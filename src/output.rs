//! Printing for the commands: the [`Printer`] of the command context, JSON documents,
//! tables, numbers and times.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::bench::{Bound, TargetCheck};
use crate::core::privacy::telemetrist::Report;

static DOCUMENT_PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints one pretty JSON document on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    DOCUMENT_PRINTED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Where a command's output goes, uv-style: results on stdout (one JSON document with
/// `--json`), notes and progress on stderr, with what each stream is attached to. Made by
/// [`Context::printer`](super::Context::printer); commands print through it, never `core`.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    json: bool,
    stdout_tty: bool,
    stderr_tty: bool,
}

impl Printer {
    /// A printer for `--json` (or not) and the given terminals.
    pub fn new(json: bool, stdout_tty: bool, stderr_tty: bool) -> Self {
        Printer {
            json,
            stdout_tty,
            stderr_tty,
        }
    }

    /// `--json`: stdout carries JSON documents only.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Whether stdout is a terminal (tables and colours).
    pub fn stdout_tty(&self) -> bool {
        self.stdout_tty
    }

    /// Whether stderr is a terminal (progress bars) and this is not a `--json` run.
    pub fn progress(&self) -> bool {
        self.stderr_tty && !self.json
    }

    /// The command's result: with `--json` the value as its one pretty document, otherwise
    /// what `human` prints of it.
    pub fn result<T: Serialize>(&self, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
        if self.json {
            return print_json(value);
        }
        human(value);
        Ok(())
    }

    /// One JSON event line on stdout for a long-running command (`serve`), flushed at once.
    /// A reader that took the line it wanted and closed the pipe must not stop the server:
    /// a failed write is ignored.
    pub fn event(&self, event: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{event}").and_then(|()| out.flush());
    }

    /// The command's JSON document on stdout (for a result printed whatever follows).
    pub fn document(&self, value: &impl Serialize) -> anyhow::Result<()> {
        print_json(value)
    }
}

/// Whether the command already printed its JSON document (a partial success reports
/// itself there), so a failure must not add a second one.
pub fn document_printed() -> bool {
    DOCUMENT_PRINTED.load(Ordering::Relaxed)
}

/// Text that came from a server or an agent, safe to print on a terminal: control
/// characters (escape sequences, newlines, carriage returns) are shown escaped, never
/// interpreted.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A table with Phoenix's look and the given header.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    t
}

/// A number with at most three decimals and no trailing zeros.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        return "-".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A percentage with one decimal.
pub fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// A Unix time as RFC 3339 (UTC, seconds).
pub fn time(ts: i64) -> String {
    if ts < 0 {
        return ts.to_string();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(ts as u64)).to_string()
}

/// An age in seconds as `3h12m`.
pub fn age(secs: i64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0) as u64)).to_string()
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The human summary of a conversation run (`phoenix telemetrist`, `phoenix ingest
/// --conversations`).
pub fn conversation_report(r: &Report) {
    for e in &r.errors {
        eprintln!("skipped: {e}");
    }
    if r.invalid > r.errors.len() {
        eprintln!("(only the first {} problems are listed)", r.errors.len());
    }
    println!(
        "read {} conversation(s); {} invalid, {} already sent, {} already spooled, {} already quarantined",
        r.read, r.invalid, r.already_sent, r.already_spooled, r.already_quarantined
    );
    let by_type: Vec<String> = r.redacted.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if by_type.is_empty() {
        println!("redacted nothing");
    } else {
        println!("redacted {} ({})", r.redacted_total(), by_type.join(", "));
    }
    println!(
        "spooled {}, sent {}, duplicates {} in {} request(s)",
        r.spooled, r.delivery.sent, r.delivery.duplicates, r.delivery.requests
    );
    for q in &r.delivery.quarantined {
        println!(
            "quarantined {}: {} {}: {}",
            q.conversation_id, q.status, q.error, q.detail
        );
    }
    println!(
        "spool {}: {} pending, {} quarantined",
        r.spool, r.pending, r.quarantine_total
    );
}

/// A 1-minute load average from which other work visibly skews the figures.
const BUSY_LOAD: f64 = 0.5;

/// Warns on stderr when this binary is a debug build: its figures say little.
pub fn warn_if_unoptimised(benchmark: &str) {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this phoenix is built without optimisations; its figures say little. \
             Run `cargo run --release -- bench {benchmark}`."
        );
    }
}

/// Warns on stderr when the machine was busy as the benchmark started.
pub fn warn_if_busy(load_before: Option<f64>) {
    if let Some(load) = load_before.filter(|l| *l >= BUSY_LOAD) {
        eprintln!(
            "warning: the load average was {load:.2} when the benchmark started; other work \
             shares these CPUs, so the figures understate this machine"
        );
    }
}

/// `≥ 20000`, `< 50`, `≤ 32`, the threshold written by `value`.
pub fn goal<T>(c: &TargetCheck<T>, value: impl Fn(f64) -> String) -> String {
    let op = match c.bound {
        Bound::AtLeast => "≥",
        Bound::Below => "<",
        Bound::AtMost => "≤",
    };
    format!("{op} {}", value(c.threshold))
}

/// `812ms`, `1.25s`.
pub fn seconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(pct(0.0512), "5.1%");
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }
}
