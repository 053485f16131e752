//! `phoenix redact`: de-identifies text or chat messages with session pseudonyms, keeping the
//! way back in the local vault; `--reveal` maps de-identified text back to the originals.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use super::{Context, UsageError};
use crate::core::privacy::edge;
use crate::core::privacy::pii::{EntityType, Mapping, Redactor, Report, reveal};

const AFTER_HELP: &str = "\
The vault (a local SQLite file; values encrypted with XChaCha20-Poly1305) maps each session's
pseudonyms back to the originals and never leaves this machine. Its key is PHOENIX_VAULT_KEY
(32 bytes as 64 hex characters or base64, e.g. `openssl rand -hex 32`), else the key file
PHOENIX_VAULT_KEY_FILE (default <home>/vault.key, created 0600 on first use).

Examples:
  phoenix redact notes.txt                         # new session; its id is printed on stderr
  phoenix redact --session s1 chat.txt > safe.txt  # same pseudonyms as earlier runs of s1
  phoenix redact --format messages conversation.json
  phoenix redact --reveal --session s1 safe.txt";

/// What the input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Free text.
    Text,
    /// Chat messages as JSON: an array, `{"messages": [...]}`, or NDJSON of those.
    Messages,
}

/// Arguments of `phoenix redact`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// File to read, or `-` for standard input
    #[arg(value_name = "FILE", default_value = "-")]
    pub input: String,
    /// Session whose pseudonyms to reuse [default: a new random session, printed in the summary]
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// What the input holds
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Map de-identified input back to the originals with the vault (needs --session)
    #[arg(long)]
    pub reveal: bool,
    /// Vault file [default: $PHOENIX_VAULT_PATH or <home>/vault.db]
    #[arg(long, value_name = "FILE")]
    pub vault: Option<PathBuf>,
}

#[derive(Serialize)]
struct RedactOutput<'a> {
    session: &'a str,
    format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a Value>,
    /// Occurrences replaced, by type.
    replaced: &'a std::collections::BTreeMap<EntityType, usize>,
    total: usize,
    pseudonyms: &'a std::collections::BTreeMap<String, EntityType>,
}

#[derive(Serialize)]
struct RevealOutput<'a> {
    session: &'a str,
    format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a Value>,
    revealed: usize,
    unknown: &'a [String],
}

/// `phoenix redact` of free text, as a stream: read piece by piece and redacted into a spool
/// file, so time is linear in the input and memory bounded by the session's values. The
/// spool is printed once the session's new pseudonyms are committed to the vault, so a
/// pseudonym on stdout can always be revealed.
fn redact_text(args: &Args, ctx: &Context) -> anyhow::Result<()> {
    let input: Box<dyn std::io::BufRead> = if args.input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(&args.input).with_context(|| format!("reading {}", args.input))?;
        Box::new(std::io::BufReader::with_capacity(256 * 1024, file))
    };
    let (mut vault, _) = edge::open_vault(&ctx.settings, args.vault.clone(), true)?;
    let session = args.session.clone().unwrap_or_else(new_session_id);
    let mut spool = tempfile::tempfile().context("creating a spool file for the redacted text")?;
    let mut report = Report::default();
    vault
        .with_session(&session, |redactor| {
            let out = std::io::BufWriter::with_capacity(256 * 1024, &mut spool);
            redactor.redact_stream(input, out, &mut report)
        })
        .context("redacting with the session's pseudonyms from the vault")?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => anyhow::Error::new(UsageError(format!(
                "{}: the input is not UTF-8 text ({e}); nothing was printed",
                if args.input == "-" {
                    "standard input"
                } else {
                    args.input.as_str()
                }
            ))),
            _ => anyhow::Error::new(e).context(format!("redacting {}", args.input)),
        })?;
    std::io::Seek::rewind(&mut spool).context("reading the spool file back")?;
    if ctx.json {
        let mut text = String::new();
        spool
            .read_to_string(&mut text)
            .context("reading the spool file back")?;
        ctx.printer().document(&RedactOutput {
            session: &session,
            format: args.format,
            text: Some(&text),
            messages: None,
            replaced: &report.replaced,
            total: report.total(),
            pseudonyms: &report.pseudonyms,
        })?;
    } else {
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut spool, &mut stdout).context("writing the redacted text")?;
        std::io::Write::flush(&mut stdout).context("writing the redacted text")?;
        eprintln!("{}", summary(&session, &report));
    }
    Ok(())
}

/// Runs `phoenix redact`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.reveal && args.session.is_none() {
        return Err(UsageError(
            "--reveal needs --session: pseudonyms only mean something within their session"
                .to_owned(),
        )
        .into());
    }
    if !args.reveal && args.format == Format::Text {
        return redact_text(&args, ctx);
    }
    let input = read_input(&args.input)?;
    let (mut vault, _) = edge::open_vault(&ctx.settings, args.vault.clone(), !args.reveal)?;
    if args.reveal {
        let session = args.session.as_deref().unwrap_or_default();
        let mappings = vault.load_session(session)?;
        return print_reveal(&args, ctx, session, &input, &mappings);
    }
    let session = args.session.clone().unwrap_or_else(new_session_id);
    let docs = parse_documents(&input)?;
    // Pseudonyms are stored in the same transaction that hands them out, before anything is
    // printed: a pseudonym on stdout can always be revealed.
    let (docs, report) = vault
        .with_session(&session, |redactor| redact_documents(redactor, docs))
        .context("redacting with the session's pseudonyms from the vault")??;
    if ctx.json {
        ctx.printer().document(&RedactOutput {
            session: &session,
            format: args.format,
            text: None,
            messages: Some(&docs.to_value()),
            replaced: &report.replaced,
            total: report.total(),
            pseudonyms: &report.pseudonyms,
        })?;
    } else {
        docs.print();
        eprintln!("{}", summary(&session, &report));
    }
    Ok(())
}

/// One document, or one per NDJSON line.
enum Documents {
    One(Value),
    Lines(Vec<Value>),
}

impl Documents {
    fn to_value(&self) -> Value {
        match self {
            Documents::One(v) => v.clone(),
            Documents::Lines(vs) => Value::Array(vs.clone()),
        }
    }

    fn print(&self) {
        match self {
            Documents::One(v) => {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            }
            Documents::Lines(vs) => {
                for v in vs {
                    println!("{v}");
                }
            }
        }
    }
}

fn read_input(input: &str) -> anyhow::Result<String> {
    if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(input).with_context(|| format!("reading {input}"))
    }
}

/// Parses the input as one JSON document or as NDJSON.
fn parse_documents(input: &str) -> anyhow::Result<Documents> {
    if let Ok(v) = serde_json::from_str::<Value>(input) {
        return Ok(Documents::One(v));
    }
    let mut docs = Vec::new();
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| {
            UsageError(format!(
                "--format messages: line {} is not JSON ({e}); expected chat messages as JSON or NDJSON",
                i + 1
            ))
        })?;
        docs.push(v);
    }
    Ok(Documents::Lines(docs))
}

fn redact_documents(r: &mut Redactor, mut docs: Documents) -> anyhow::Result<(Documents, Report)> {
    let mut total = Report::default();
    let mut one = |v: &mut Value| -> anyhow::Result<()> {
        let report = r
            .redact_conversation(v)
            .map_err(|e| UsageError(format!("--format messages: {e}")))?;
        for (k, n) in report.replaced {
            *total.replaced.entry(k).or_default() += n;
        }
        total.pseudonyms.extend(report.pseudonyms);
        Ok(())
    };
    match &mut docs {
        Documents::One(v) => one(v)?,
        Documents::Lines(vs) => {
            for v in vs {
                one(v)?;
            }
        }
    }
    Ok((docs, total))
}

fn print_reveal(
    args: &Args,
    ctx: &Context,
    session: &str,
    input: &str,
    mappings: &[Mapping],
) -> anyhow::Result<()> {
    if mappings.is_empty() {
        anyhow::bail!("the vault has no session {session:?}");
    }
    let mut unknown = Vec::new();
    let mut revealed = 0;
    let mut reveal_str = |s: &str| {
        let present = reveal(s, &[]).1.len();
        let (out, missing) = reveal(s, mappings);
        revealed += present - missing.len();
        for m in missing {
            if !unknown.contains(&m) {
                unknown.push(m);
            }
        }
        out
    };
    let (text, messages) = match args.format {
        Format::Text => (Some(reveal_str(input)), None),
        Format::Messages => {
            let mut docs = parse_documents(input)?;
            let mut walk = |v: &mut Value| reveal_json(v, &mut reveal_str);
            let doc = match &mut docs {
                Documents::One(v) => {
                    walk(v);
                    Documents::One(v.take())
                }
                Documents::Lines(vs) => {
                    vs.iter_mut().for_each(&mut walk);
                    Documents::Lines(std::mem::take(vs))
                }
            };
            (None, Some(doc))
        }
    };
    if ctx.json {
        let messages = messages.as_ref().map(Documents::to_value);
        ctx.printer().document(&RevealOutput {
            session,
            format: args.format,
            text: text.as_deref(),
            messages: messages.as_ref(),
            revealed,
            unknown: &unknown,
        })?;
    } else {
        match (text, messages) {
            (Some(t), _) => print!("{t}"),
            (None, Some(docs)) => docs.print(),
            (None, None) => {}
        }
        if !unknown.is_empty() {
            eprintln!(
                "warning: not in session {session}: {} (left as they were)",
                unknown.join(", ")
            );
        }
    }
    Ok(())
}

fn reveal_json(v: &mut Value, f: &mut impl FnMut(&str) -> String) {
    match v {
        Value::String(s) => *s = f(s),
        Value::Array(items) => items.iter_mut().for_each(|i| reveal_json(i, f)),
        Value::Object(map) => map.values_mut().for_each(|i| reveal_json(i, f)),
        _ => {}
    }
}

fn new_session_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("s-{}", &id[..12])
}

/// `session s-1a2b…: replaced 4 (person 2, email 1, phone 1)`.
fn summary(session: &str, report: &Report) -> String {
    let parts: Vec<String> = report
        .replaced
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if parts.is_empty() {
        format!("session {session}: nothing to replace")
    } else {
        format!(
            "session {session}: replaced {} ({})",
            report.total(),
            parts.join(", ")
        )
    }
}
