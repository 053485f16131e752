//! `phoenix completions`: shell completion scripts (committed under `completions/`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::{Generator, Shell};

use crate::cli::Cli;

/// Generate shell completions.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  phoenix completions bash > ~/.local/share/bash-completion/completions/phoenix\n  phoenix completions --out-dir completions/"
)]
pub struct Args {
    /// Shell to print completions for
    #[arg(value_enum, required_unless_present = "out_dir")]
    pub shell: Option<Shell>,
    /// Write the completions of every supported shell into this directory instead
    #[arg(long, value_name = "DIR", conflicts_with = "shell")]
    pub out_dir: Option<PathBuf>,
}

/// Every shell Phoenix ships completions for.
pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::PowerShell,
    Shell::Elvish,
];

/// The completion script of one shell.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "phoenix", &mut buf);
    buf
}

/// `(file name, contents)` of every completion file.
pub fn files() -> Vec<(String, Vec<u8>)> {
    SHELLS
        .iter()
        .map(|s| (s.file_name("phoenix"), script(*s)))
        .collect()
}

/// Runs `phoenix completions`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = args.out_dir {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, body) in files() {
            let path = dir.join(name);
            std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    if let Some(shell) = args.shell {
        use std::io::Write;
        std::io::stdout().write_all(&script(shell))?;
    }
    Ok(())
}
