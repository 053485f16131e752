//! ORCH anonymisation: a keyed HMAC-SHA256 of the raw orch id, with a per-installation key.
//!
//! An unkeyed hash of a guessable id (hostnames, sequence numbers) is reversible by
//! enumeration, so the hash is keyed with a secret created on first start and kept in a file
//! of its own (0600), away from the database: a leaked database alone does not reveal who
//! sent what. The same key gives the same hash across restarts, so correlation still works.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why the anonymisation key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or creating the key file failed.
    #[error("orch hash key file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file exists but does not hold a 32-byte hex key.
    #[error(
        "orch hash key file {path} is corrupt (expected 64 hex characters); restore it from backup — a new key would break correlation with stored hashes"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
    },
}

/// Turns raw orch ids into `orch_` + 16 hex characters.
#[derive(Clone)]
pub struct Anonymizer {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Anonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Anonymizer(..)")
    }
}

impl Anonymizer {
    /// An anonymiser keyed with `key`.
    pub fn from_key(key: &[u8]) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        Anonymizer { keyed }
    }

    /// Loads the key at `path`, creating it (0600, atomically) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let text = crate::core::shared::keyfile::read_or_create(path).map_err(io)?;
        Self::from_file_text(path, &text)
    }

    fn from_file_text(path: &Path, text: &str) -> Result<Self, Error> {
        let key = hex::decode(text.trim()).map_err(|_| Error::Corrupt {
            path: path.to_owned(),
        })?;
        if key.len() != 32 {
            return Err(Error::Corrupt {
                path: path.to_owned(),
            });
        }
        Ok(Self::from_key(&key))
    }

    /// `orch_` + the first 8 bytes of HMAC-SHA256(key, orch_id), hex.
    pub fn orch_hash(&self, orch_id: &str) -> String {
        let tag = self
            .keyed
            .clone()
            .chain_update(orch_id.as_bytes())
            .finalize()
            .into_bytes();
        let mut out = String::with_capacity(21);
        out.push_str("orch_");
        out.push_str(&hex::encode(&tag[..8]));
        out
    }
}

/// True when `s` already looks like an orch hash (so filters accept either form).
pub fn is_orch_hash(s: &str) -> bool {
    s.len() == 21
        && s.starts_with("orch_")
        && s[5..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_shape_is_deterministic_and_keyed() {
        let a = Anonymizer::from_key(b"k1");
        let h = a.orch_hash("orch-7");
        assert!(is_orch_hash(&h), "{h}");
        assert_eq!(h, a.orch_hash("orch-7"));
        assert_ne!(h, a.orch_hash("orch-8"));
        assert_ne!(h, Anonymizer::from_key(b"k2").orch_hash("orch-7"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/orch_hash.key");
        let first = Anonymizer::load_or_create(&path).unwrap().orch_hash("x");
        let second = Anonymizer::load_or_create(&path).unwrap().orch_hash("x");
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, "zz").unwrap();
        assert!(matches!(
            Anonymizer::load_or_create(&path),
            Err(Error::Corrupt { .. })
        ));
    }
}
