//! `phoenix man`: man pages for phoenix and every subcommand (committed under `man/`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::Cli;

/// Generate man pages.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write phoenix.1 and one page per subcommand into this directory instead of printing phoenix.1
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `(file name, contents)` of every man page.
pub fn files() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    pages(&cmd, "", &mut out)?;
    Ok(out)
}

fn pages(
    cmd: &clap::Command,
    parent: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let name = if parent.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{parent}-{}", cmd.get_name())
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.clone())).render(&mut buf)?;
    out.push((format!("{name}.1"), buf));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        pages(sub, &name, out)?;
    }
    Ok(())
}

/// Runs `phoenix man`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let files = files()?;
    match args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, body) in files {
                let path = dir.join(name);
                std::fs::write(&path, body)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            use std::io::Write;
            if let Some((_, body)) = files.first() {
                std::io::stdout().write_all(body)?;
            }
        }
    }
    Ok(())
}
