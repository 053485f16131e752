//! The agent spawner: render a new agent into a temporary directory, generate and check its
//! code, run its tests, and only then create the repository and push.

use std::path::Path;

use serde::Serialize;

use crate::core::forge::codegen::{self, TestRun};
use crate::core::forge::git::{self, RefSpec};
use crate::core::forge::scaffold::{
    self, AgentManifest, AgentTier, Generated, InvalidName, ScaffoldInput, TEMPLATE_VERSION,
};
use crate::core::forge::{self, Forge, ForgeKind, NewPr, NewRepo, PullRequest, Repo};
use crate::core::shared::llm::LlmClient;

/// Branch that holds the scaffold when it goes through a pull request.
pub const SCAFFOLD_BRANCH: &str = "phoenix/scaffold";

/// What to spawn.
pub struct SpawnRequest {
    /// Repository and crate name.
    pub name: String,
    /// What the agent does; the LLM's brief.
    pub description: String,
    /// Decides the repository's visibility.
    pub tier: AgentTier,
    /// Replace the main branch of an existing repository.
    pub force: bool,
    /// Push to a branch and open a pull request instead of pushing to main.
    pub pr: bool,
    /// Run the agent's tests before pushing (always done for generated code).
    pub testing_mandatory: bool,
    /// The LLM and the number of repairs allowed; `None` scaffolds the placeholder.
    pub codegen: Option<(LlmClient, u32)>,
}

/// What was spawned.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnReport {
    /// Agent name.
    pub name: String,
    /// Backend.
    pub forge: ForgeKind,
    /// The repository.
    pub repo: Repo,
    /// Tier.
    pub tier: AgentTier,
    /// Whether an existing repository's main branch was replaced.
    pub replaced: bool,
    /// Branch the scaffold was pushed to.
    pub branch: String,
    /// The scaffold commit.
    pub commit: String,
    /// The pull request, with `--pr`.
    pub pull_request: Option<PullRequest>,
    /// How `src/generated.rs` was produced.
    pub generated: Generated,
    /// The files of the scaffold.
    pub files: Vec<String>,
    /// The last test run, when tests ran.
    pub tests: Option<TestRun>,
}

/// Why spawning stopped; nothing was pushed in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad name.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// `--pr` into an existing repository whose history the scaffold does not share.
    #[error(
        "{name} exists: --force replaces its main branch and cannot be combined with --pr (a pull request needs history in common)"
    )]
    ForcePr {
        /// Name.
        name: String,
    },
    /// Code generation failed.
    #[error(transparent)]
    Codegen(#[from] codegen::Error),
    /// The scaffold's tests failed (placeholder code).
    #[error("the agent's tests failed ({}); nothing was pushed:\n{}", .0.summary, .0.output)]
    TestsFailed(TestRun),
    /// The forge.
    #[error(transparent)]
    Forge(#[from] forge::Error),
    /// Writing the scaffold.
    #[error("writing the scaffold in {dir}: {source}")]
    Io {
        /// Directory.
        dir: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Committing the scaffold.
    #[error("committing the scaffold: {0}")]
    Git(#[from] git2::Error),
}

fn io_err(dir: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        dir: dir.display().to_string(),
        source,
    }
}

fn write_scaffold(
    dir: &Path,
    manifest: &AgentManifest,
    code: Option<&str>,
) -> Result<Vec<String>, Error> {
    let files = scaffold::render(&ScaffoldInput {
        manifest,
        generated_code: code,
    })
    .map_err(|e| io_err(dir)(std::io::Error::other(e)))?;
    scaffold::write(dir, &files).map_err(io_err(dir))?;
    Ok(files.iter().map(|f| f.path.to_owned()).collect())
}

/// Spawns an agent; `progress` hears about each step.
pub async fn spawn<F: Forge>(
    forge: &F,
    req: SpawnRequest,
    progress: &dyn Fn(&str),
) -> Result<SpawnReport, Error> {
    scaffold::validate_name(&req.name)?;
    let existing = forge.repo(&req.name).await?;
    if existing.is_some() {
        if !req.force {
            return Err(forge::Error::RepoExists { name: req.name }.into());
        }
        if req.pr {
            return Err(Error::ForcePr { name: req.name });
        }
    }

    let work = tempfile::Builder::new()
        .prefix(&format!("phoenix-spawn-{}-", req.name))
        .tempdir()
        .map_err(io_err(Path::new("the temporary directory")))?;
    let dir = work.path();
    let mut manifest = AgentManifest {
        name: req.name.clone(),
        description: req.description.trim().to_owned(),
        tier: req.tier,
        template_version: TEMPLATE_VERSION.to_owned(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        generated: Generated::Placeholder,
        test_command: "cargo test --offline".to_owned(),
    };

    let (files, tests) = match &req.codegen {
        Some((llm, max_repairs)) => {
            let files = std::cell::RefCell::new(Vec::new());
            let generation = codegen::generate(
                llm,
                &req.name,
                &req.description,
                *max_repairs,
                async |code: &str, model: &str, attempts: u32| {
                    let mut m = manifest.clone();
                    m.generated = Generated::Llm {
                        model: model.to_owned(),
                        attempts,
                    };
                    let written =
                        write_scaffold(dir, &m, Some(code)).map_err(|e| codegen::Error::Cargo {
                            dir: dir.display().to_string(),
                            source: std::io::Error::other(e.to_string()),
                        })?;
                    *files.borrow_mut() = written;
                    codegen::cargo_test(dir, codegen::TEST_TIMEOUT).await
                },
                progress,
            )
            .await?;
            manifest.generated = Generated::Llm {
                model: generation.model.clone(),
                attempts: generation.attempts,
            };
            (files.into_inner(), Some(generation.tests))
        }
        None => {
            let files = write_scaffold(dir, &manifest, None)?;
            let tests = if req.testing_mandatory {
                progress("running the agent's tests (TESTING_MANDATORY)");
                let run = codegen::cargo_test(dir, codegen::TEST_TIMEOUT).await?;
                if !run.passed {
                    return Err(Error::TestsFailed(run));
                }
                Some(run)
            } else {
                None
            };
            (files, tests)
        }
    };

    let local = git::init(dir, false)?;
    let message = format!(
        "Scaffold {} from Phoenix template v{TEMPLATE_VERSION}",
        req.name
    );
    let (branch, commit) = if req.pr {
        let readme = format!(
            "# {}\n\n{}\n\nThe agent's scaffold is in the pull request from `{SCAFFOLD_BRANCH}`.\n",
            req.name, manifest.description
        );
        let base = git::commit_files(&local, "main", &[("README.md", &readme)], "Initial commit")?;
        let commit = git::commit_worktree(&local, SCAFFOLD_BRANCH, &[base], &message)?;
        (SCAFFOLD_BRANCH.to_owned(), commit)
    } else {
        (
            "main".to_owned(),
            git::commit_worktree(&local, "main", &[], &message)?,
        )
    };

    let replaced = existing.is_some();
    let repo = match existing {
        Some(r) => r,
        None => {
            progress("creating the repository");
            forge
                .create_repo(&NewRepo {
                    name: req.name.clone(),
                    description: manifest.description.clone(),
                    private: req.tier.is_private(),
                })
                .await?
        }
    };
    let mut specs = vec![RefSpec {
        src: "refs/heads/main".into(),
        dst: "refs/heads/main".into(),
        force: replaced,
    }];
    if req.pr {
        specs.push(RefSpec {
            src: format!("refs/heads/{SCAFFOLD_BRANCH}"),
            dst: format!("refs/heads/{SCAFFOLD_BRANCH}"),
            force: false,
        });
    }
    progress(&format!("pushing to {}", repo.url));
    forge.push(&repo, dir, &specs).await?;
    let pull_request = if req.pr {
        Some(
            forge
                .open_pr(
                    &repo,
                    &NewPr {
                        title: format!("Scaffold {}", req.name),
                        body: format!(
                            "{}\n\nScaffolded by `phoenix spawn-agent` (template v{TEMPLATE_VERSION}).",
                            manifest.description
                        ),
                        head: SCAFFOLD_BRANCH.to_owned(),
                        base: "main".to_owned(),
                    },
                )
                .await?,
        )
    } else {
        None
    };
    Ok(SpawnReport {
        name: req.name,
        forge: forge.kind(),
        repo,
        tier: req.tier,
        replaced,
        branch,
        commit: commit.to_string(),
        pull_request,
        generated: manifest.generated,
        files,
        tests,
    })
}
