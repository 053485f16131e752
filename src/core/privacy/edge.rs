//! Opening the edge's local state from the settings: the pseudonym vault (with its key) and
//! the Telemetrist's spool. Shared by every command that redacts, reveals or spools.

use std::path::PathBuf;

use crate::core::privacy::pii::vault::{Error as VaultError, Vault, VaultKey};
use crate::core::privacy::telemetrist::otlp::{OtlpEdge, OtlpOptions};
use crate::core::privacy::telemetrist::spool::{self, Spool};
use crate::core::privacy::telemetrist::{Edge, SessionPolicy};
use crate::core::shared::config::Settings;

/// Why the vault or the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `create` was off and there is no vault.
    #[error("there is no vault at {}", .0.display())]
    NoVault(PathBuf),
    /// The configured key is not a vault key.
    #[error("PHOENIX_VAULT_KEY (pii.vault_key)")]
    BadKey(#[source] VaultError),
    /// The key could not be read or made.
    #[error(transparent)]
    Key(VaultError),
    /// The vault file.
    #[error("opening the vault at {}", path.display())]
    Vault {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: VaultError,
    },
    /// The spool file.
    #[error("opening the spool")]
    Spool(#[source] spool::Error),
}

/// Opens the configured vault (`path` overrides `pii.vault_path`) with the configured key;
/// `create` makes the key file and the vault on first use, otherwise both must exist.
/// Returns the vault and its path.
pub fn open_vault(
    settings: &Settings,
    path: Option<PathBuf>,
    create: bool,
) -> Result<(Vault, PathBuf), OpenError> {
    let path = path.unwrap_or_else(|| settings.pii.vault_path.clone());
    if !create && !path.exists() {
        return Err(OpenError::NoVault(path));
    }
    let key = VaultKey::from_settings(&settings.pii, create).map_err(|e| match e {
        VaultError::BadKey => OpenError::BadKey(e),
        e => OpenError::Key(e),
    })?;
    match Vault::open(&path, &key) {
        Ok(vault) => Ok((vault, path)),
        Err(source) => Err(OpenError::Vault { path, source }),
    }
}

/// The vault and the spool the settings name, redacting in `session` when given.
pub fn open_edge(settings: &Settings, session: Option<String>) -> Result<Edge, OpenError> {
    let (vault, _) = open_vault(settings, None, true)?;
    let spool = Spool::open(&settings.telemetrist.spool_path).map_err(OpenError::Spool)?;
    let policy = session.map_or(SessionPolicy::PerConversation, SessionPolicy::Shared);
    Ok(Edge::new(vault, spool, policy))
}

/// The OTLP proxy's own connections to the vault and the spool the settings name.
pub fn open_otlp_edge(settings: &Settings, options: OtlpOptions) -> Result<OtlpEdge, OpenError> {
    let (vault, _) = open_vault(settings, None, true)?;
    let spool = Spool::open(&settings.telemetrist.spool_path).map_err(OpenError::Spool)?;
    Ok(OtlpEdge::new(vault, spool, options))
}
