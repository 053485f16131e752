//! Forge selection shared by `spawn-agent` and `evolve-playbook`.

use std::time::Duration;

use crate::core::forge::github::{GithubForge, GithubSettings};
use crate::core::forge::local::LocalForge;
use crate::core::shared::config::{ForgeChoice, Settings};

/// Which forge, and how to reach GitHub.
#[derive(Debug, Clone, clap::Args)]
pub struct ForgeArgs {
    /// Where agent repositories live [default: $PHOENIX_FORGE or local]
    #[arg(long, value_name = "FORGE", value_parser = ["local", "github"])]
    pub forge: Option<String>,
    /// GitHub organisation owning the repositories [default: $PHOENIX_GITHUB_ORG, else the $GITHUB_USERNAME account]
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// GitHub REST API root, for GitHub Enterprise [default: $PHOENIX_GITHUB_API_URL or https://api.github.com]
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
}

impl ForgeArgs {
    /// The chosen backend.
    pub fn choice(&self, settings: &Settings) -> ForgeChoice {
        self.forge
            .as_deref()
            .and_then(ForgeChoice::parse)
            .unwrap_or(settings.forge_default)
    }

    /// The local forge under the data directory.
    pub fn local(&self, settings: &Settings) -> LocalForge {
        LocalForge::new(
            settings.data_dir.join("forge"),
            settings.local_ci_command.clone(),
        )
    }
}

impl ForgeArgs {
    /// The GitHub forge for the configured owner.
    pub fn github(&self, settings: &Settings) -> anyhow::Result<GithubForge> {
        let token = settings.github_pat.clone().ok_or_else(|| {
            super::UsageError("the GitHub forge needs a token: set GITHUB_PAT".to_owned())
        })?;
        let org = self.org.clone().or_else(|| settings.github_org.clone());
        if org.is_none() && settings.github_username.is_none() {
            return Err(super::UsageError(
                "the GitHub forge needs an owner: set GITHUB_USERNAME or pass --org".to_owned(),
            )
            .into());
        }
        GithubForge::new(GithubSettings {
            api_url: self
                .api_url
                .clone()
                .unwrap_or_else(|| settings.github_api_url.clone()),
            token,
            username: settings.github_username.clone(),
            org,
            max_rate_wait: Duration::from_secs(120),
            timeout: Duration::from_secs(60),
        })
        .map_err(|e| super::UsageError(e.to_string()).into())
    }
}
