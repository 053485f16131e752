//! Agent credentials: one token per ORCH, derived from a server secret so none need storing.
//!
//! A token is `phx_agent_` + base64url(HMAC-SHA256(key, "phoenix agent token v1\n" + orch_id)).
//! The operator issues it with `phoenix agents token ORCH_ID`; the ORCH sends it in its
//! WebSocket `hello` (`token`) and as the bearer of its heartbeats. Whoever holds the key
//! file can mint a token for any ORCH, so it lives beside the orch-hash key (0600) and is
//! shared by the collector and the distributor of one installation. Rotating the key
//! revokes every token at once.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Every agent token starts with this, so logs and the collector can tell one apart.
pub const PREFIX: &str = "phx_agent_";
/// Domain separation: the key must never produce anything but agent tokens.
const CONTEXT: &[u8] = b"phoenix agent token v1\n";

/// Why the agent key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or creating the key file failed.
    #[error("agent token key file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file does not hold a 32-byte hex key.
    #[error(
        "agent token key file {path} is corrupt (expected 64 hex characters); restore it from backup or delete it to revoke every agent token"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
    },
}

/// Mints and checks agent tokens.
#[derive(Clone)]
pub struct AgentKeys {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentKeys(..)")
    }
}

impl AgentKeys {
    /// Keys from raw key bytes.
    pub fn from_key(key: &[u8]) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        AgentKeys { keyed }
    }

    /// Loads the key at `path`, creating it (0600, atomically) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        let text =
            crate::core::shared::keyfile::read_or_create(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
        let corrupt = || Error::Corrupt {
            path: path.to_owned(),
        };
        let key = hex::decode(text.trim()).map_err(|_| corrupt())?;
        if key.len() != 32 {
            return Err(corrupt());
        }
        Ok(Self::from_key(&key))
    }

    /// The token of `orch_id` (the raw id, exactly as the ORCH sends it).
    pub fn token(&self, orch_id: &str) -> String {
        let tag = self.tag(orch_id);
        let mut out = String::with_capacity(PREFIX.len() + 43);
        out.push_str(PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Whether `token` is the token of `orch_id`, compared in constant time.
    pub fn verify(&self, orch_id: &str, token: &str) -> bool {
        let Some(encoded) = token.trim().strip_prefix(PREFIX) else {
            return false;
        };
        let Ok(presented) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
            return false;
        };
        let expected = self.tag(orch_id);
        presented.len() == expected.len() && bool::from(presented.ct_eq(&expected))
    }

    fn tag(&self, orch_id: &str) -> [u8; 32] {
        self.keyed
            .clone()
            .chain_update(CONTEXT)
            .chain_update(orch_id.as_bytes())
            .finalize()
            .into_bytes()
            .into()
    }
}

/// Whether `s` has the shape of an agent token (not whether it is valid).
pub fn looks_like_token(s: &str) -> bool {
    s.trim().starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_orch_per_key_and_checked_exactly() {
        let keys = AgentKeys::from_key(&[7; 32]);
        let t = keys.token("orch-7");
        assert!(t.starts_with(PREFIX) && t.len() == PREFIX.len() + 43, "{t}");
        assert!(keys.verify("orch-7", &t));
        assert!(keys.verify("orch-7", &format!(" {t} ")));
        assert!(!keys.verify("orch-8", &t));
        assert!(!AgentKeys::from_key(&[8; 32]).verify("orch-7", &t));
        assert!(!keys.verify("orch-7", &t[..t.len() - 1]));
        assert!(!keys.verify("orch-7", &t.replacen(PREFIX, "", 1)));
        assert!(!keys.verify("orch-7", "phx_agent_!!!"));
        assert!(!keys.verify("orch-7", ""));
        // The orch hash is a different id: its token is not the victim's.
        assert_ne!(keys.token("orch_0123456789abcdef"), t);
    }

    #[test]
    fn the_key_file_is_shared_by_every_loader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent_token.key");
        let a = AgentKeys::load_or_create(&path).unwrap().token("x");
        let b = AgentKeys::load_or_create(&path).unwrap().token("x");
        assert_eq!(a, b);
        std::fs::write(&path, "nope").unwrap();
        assert!(matches!(
            AgentKeys::load_or_create(&path),
            Err(Error::Corrupt { .. })
        ));
    }
}
