//! `phoenix config show`: the effective configuration and where each value came from.

use serde::Serialize;

use super::Context;
use crate::core::shared::config::Entry;
use crate::output::table;

/// Configuration subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print every setting, its value (secrets masked) and its source
    Show,
}

#[derive(Serialize)]
struct Shown<'a> {
    config_file: Option<String>,
    data_dir: String,
    settings: &'a [Entry],
}

/// Runs `phoenix config`.
pub fn run(cmd: Cmd, ctx: &Context) -> anyhow::Result<()> {
    let Cmd::Show = cmd;
    let s = &ctx.settings;
    if ctx.json {
        return ctx.printer().document(&Shown {
            config_file: s.config_file.as_ref().map(|p| p.display().to_string()),
            data_dir: s.data_dir.display().to_string(),
            settings: s.entries(),
        });
    }
    match &s.config_file {
        Some(p) => println!("config file: {}", p.display()),
        None => println!("config file: none (defaults and environment only)"),
    }
    let mut t = table(["key", "value", "source", "environment"]);
    for e in s.entries() {
        t.add_row([
            e.key.to_owned(),
            e.value.clone().unwrap_or_else(|| "(unset)".to_owned()),
            e.source.to_string(),
            e.env.to_owned(),
        ]);
    }
    println!("{t}");
    Ok(())
}
