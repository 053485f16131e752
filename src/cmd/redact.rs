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

/// Runs `phoenix redact`.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.reveal && args.session.is_none() {
        return Err(UsageError(
            "--reveal needs --session: pseudonyms only mean something within their session"
                .to_owned(),
        )
        .into());
    }
    let input = read_input(&args.input)?;
    let (mut vault, _) = edge::open_vault(&ctx.settings, args.vault.clone(), !args.reveal)?;
    if args.reveal {
        let session = args.session.as_deref().unwrap_or_default();
        let mappings = vault.load_session(session)?;
        return print_reveal(&args, ctx, session, &input, &mappings);
    }
    let session = args.session.clone().unwrap_or_else(new_session_id);
    let docs = match args.format {
        Format::Text => None,
        Format::Messages => Some(parse_documents(&input)?),
    };
    // Pseudonyms are stored in the same transaction that hands them out, before anything is
    // printed: a pseudonym on stdout can always be revealed.
    let (body, report) = vault
        .with_session(&session, |redactor| match docs {
            None => {
                let (text, report) = redactor.redact(&input);
                Ok((Body::Text(text), report))
            }
            Some(docs) => redact_documents(redactor, docs).map(|(d, r)| (Body::Json(d), r)),
        })
        .context("redacting with the session's pseudonyms from the vault")??;
    if ctx.json {
        let (text, messages) = body.parts();
        ctx.printer().document(&RedactOutput {
            session: &session,
            format: args.format,
            text,
            messages: messages.as_ref(),
            replaced: &report.replaced,
            total: report.total(),
            pseudonyms: &report.pseudonyms,
        })?;
    } else {
        body.print();
        eprintln!("{}", summary(&session, &report));
    }
    Ok(())
}

enum Body {
    Text(String),
    /// One document, or one per NDJSON line.
    Json(Documents),
}

enum Documents {
    One(Value),
    Lines(Vec<Value>),
}

impl Body {
    fn parts(&self) -> (Option<&str>, Option<Value>) {
        match self {
            Body::Text(t) => (Some(t), None),
            Body::Json(Documents::One(v)) => (None, Some(v.clone())),
            Body::Json(Documents::Lines(vs)) => (None, Some(Value::Array(vs.clone()))),
        }
    }

    fn print(&self) {
        match self {
            Body::Text(t) => print!("{t}"),
            Body::Json(Documents::One(v)) => {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            }
            Body::Json(Documents::Lines(vs)) => {
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
            (None, Some(Body::Json(doc)))
        }
    };
    if ctx.json {
        let messages = messages.as_ref().and_then(|b| b.parts().1);
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
            (None, Some(body)) => body.print(),
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
