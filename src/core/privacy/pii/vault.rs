//! The local vault: a SQLite file mapping each session's pseudonyms back to the originals.
//! Values are encrypted one by one with XChaCha20-Poly1305 (random 24-byte nonce, the session
//! and pseudonym as associated data, so a row cannot be moved to another pseudonym). The
//! vault never leaves the machine; only pseudonyms do.
//!
//! The 32-byte key comes from `PHOENIX_VAULT_KEY` (64 hex characters, or base64) or from a
//! key file created on first use with mode 0600. A check value encrypted at creation tells a
//! wrong key apart from a damaged file.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OptionalExtension, params};

use super::{EntityType, Mapping, Redactor};
use crate::core::shared::config::PiiSettings;

const KEY_CHECK_PLAINTEXT: &[u8] = b"phoenix vault key check v1";
const SCHEMA_VERSION: i64 = 1;

/// Why the vault could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `PHOENIX_VAULT_KEY` is not 32 bytes in hex or base64.
    #[error(
        "the vault key is not 32 bytes written as 64 hex characters or base64 (e.g. `openssl rand -hex 32`)"
    )]
    BadKey,
    /// The key file exists but does not hold a key.
    #[error(
        "vault key file {path} is corrupt (expected 64 hex characters); restore it from backup — without it the vault cannot be read"
    )]
    CorruptKeyFile {
        /// File.
        path: PathBuf,
    },
    /// Reading or creating the key file failed.
    #[error("vault key file {path}: {source}")]
    KeyFile {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key does not open this vault.
    #[error("the vault key does not match the one this vault was created with ({path})")]
    WrongKey {
        /// Vault file.
        path: PathBuf,
    },
    /// A row does not decrypt although the key is right: the file was tampered with or damaged.
    #[error(
        "vault {path}: the entry for {pseudonym} in session {session} does not decrypt (damaged or altered)"
    )]
    Damaged {
        /// Vault file.
        path: PathBuf,
        /// Session.
        session: String,
        /// Pseudonym.
        pseudonym: String,
    },
    /// SQLite failed.
    #[error("vault {path}: {source}")]
    Sqlite {
        /// Vault file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
    /// Reading an existing vault needs its key, and the key file is not there.
    #[error(
        "the vault key file {path} does not exist (set PHOENIX_VAULT_KEY or PHOENIX_VAULT_KEY_FILE to the vault's key)"
    )]
    MissingKeyFile {
        /// File.
        path: PathBuf,
    },
    /// The vault directory could not be created.
    #[error("vault directory {path}: {source}")]
    Dir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The vault's 32-byte key.
#[derive(Clone)]
pub struct VaultKey([u8; 32]);

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey(..)")
    }
}

impl VaultKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        VaultKey(bytes)
    }

    /// Parses 64 hex characters or base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let t = text.trim();
        let decoded = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).ok()
        } else {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|e| e.decode(t).ok())
        };
        decoded
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .map(VaultKey)
            .ok_or(Error::BadKey)
    }

    /// Loads the key file, creating it (0600, atomically) with a random key on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::KeyFile {
            path: path.to_owned(),
            source,
        };
        let corrupt = || Error::CorruptKeyFile {
            path: path.to_owned(),
        };
        let text = crate::core::shared::keyfile::read_or_create(path).map_err(io)?;
        Self::parse(&text).map_err(|_| corrupt())
    }

    /// The configured key: `pii.vault_key` (PHOENIX_VAULT_KEY), else the key file, which is
    /// created on first use only when `create` (reading an existing vault needs its key).
    pub fn from_settings(pii: &PiiSettings, create: bool) -> Result<Self, Error> {
        if let Some(text) = &pii.vault_key {
            return Self::parse(text);
        }
        let path = &pii.vault_key_file;
        if !create && !path.exists() {
            return Err(Error::MissingKeyFile { path: path.clone() });
        }
        Self::load_or_create(path)
    }
}

/// An open vault.
pub struct Vault {
    conn: Connection,
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).finish()
    }
}

/// One stored session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub session: String,
    /// Pseudonyms in it.
    pub pseudonyms: usize,
}

impl Vault {
    /// Opens (creating it on first use) the vault at `path` with `key`.
    pub fn open(path: &Path, key: &VaultKey) -> Result<Vault, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let sql = |source| Error::Sqlite {
            path: path.to_owned(),
            source,
        };
        let existed = path.exists();
        let conn = Connection::open(path).map_err(sql)?;
        #[cfg(unix)]
        if !existed {
            // Values are encrypted, but which sessions and pseudonyms exist is nobody else's business.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS vault_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS vault_entries (
                 session TEXT NOT NULL,
                 pseudonym TEXT NOT NULL,
                 entity TEXT NOT NULL,
                 canonical INTEGER NOT NULL,
                 nonce BLOB NOT NULL,
                 ciphertext BLOB NOT NULL,
                 created_unix INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS vault_entries_session ON vault_entries (session, pseudonym);",
        )
        .map_err(sql)?;
        let mut vault = Vault {
            conn,
            cipher: XChaCha20Poly1305::new(&key.0.into()),
            path: path.to_owned(),
        };
        vault.check_key()?;
        Ok(vault)
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Verifies the key against the stored check value, or stores one in a new vault.
    fn check_key(&mut self) -> Result<(), Error> {
        let stored: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM vault_meta WHERE name = 'key_check'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        match stored {
            Some(blob) => {
                let ok = blob.len() > 24
                    && self
                        .decrypt(&blob[..24], &blob[24..], b"key_check")
                        .is_some_and(|p| p == KEY_CHECK_PLAINTEXT);
                if ok {
                    Ok(())
                } else {
                    Err(Error::WrongKey {
                        path: self.path.clone(),
                    })
                }
            }
            None => {
                let (nonce, ct) = self.encrypt(KEY_CHECK_PLAINTEXT, b"key_check");
                let blob = [nonce.as_slice(), &ct].concat();
                self.conn
                    .execute(
                        "INSERT OR IGNORE INTO vault_meta (name, value) VALUES ('key_check', ?1), ('schema_version', ?2)",
                        params![blob, SCHEMA_VERSION.to_string().into_bytes()],
                    )
                    .map_err(self.sql())?;
                Ok(())
            }
        }
    }

    fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> ([u8; 24], Vec<u8>) {
        let nonce: [u8; 24] = rand::random();
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        (nonce, ct)
    }

    fn decrypt(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if nonce.len() != 24 {
            return None;
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }

    fn aad(session: &str, pseudonym: &str, canonical: bool) -> Vec<u8> {
        format!("{session}\0{pseudonym}\0{}", u8::from(canonical)).into_bytes()
    }

    /// Stores new mappings of `session` in one transaction; a new canonical value replaces
    /// the old one ("Dan" grown into "Dan Johnson").
    pub fn save(&mut self, session: &str, mappings: &[Mapping]) -> Result<(), Error> {
        if mappings.is_empty() {
            return Ok(());
        }
        self.in_write_transaction(|v| v.insert(session, mappings))
    }

    /// Runs `f` with the session's redactor while holding the vault's write lock, then stores
    /// what it learned, all in one transaction: two processes redacting in the same session
    /// wait for each other instead of handing out one pseudonym for two different values.
    pub fn with_session<T>(
        &mut self,
        session: &str,
        f: impl FnOnce(&mut Redactor) -> T,
    ) -> Result<T, Error> {
        self.in_write_transaction(|v| {
            let mut redactor = Redactor::from_mappings(v.load_session(session)?);
            let out = f(&mut redactor);
            v.insert(session, &redactor.take_new_mappings())?;
            Ok(out)
        })
    }

    /// `with_session` for many items in one transaction: `f(i, redactor)` runs for each
    /// `sessions[i]` in order with that session's redactor (consecutive items of one session
    /// share it), and every mapping handed out is stored before the commit.
    pub fn with_sessions<T>(
        &mut self,
        sessions: &[String],
        mut f: impl FnMut(usize, &mut Redactor) -> T,
    ) -> Result<Vec<T>, Error> {
        self.in_write_transaction(|v| {
            let mut out = Vec::with_capacity(sessions.len());
            for run in sessions.chunk_by(|a, b| a == b) {
                let mut redactor = Redactor::from_mappings(v.load_session(&run[0])?);
                for _ in run {
                    out.push(f(out.len(), &mut redactor));
                }
                v.insert(&run[0], &redactor.take_new_mappings())?;
            }
            Ok(out)
        })
    }

    fn in_write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Vault) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.sql())?;
        match f(self) {
            Ok(out) => {
                self.conn.execute_batch("COMMIT").map_err(self.sql())?;
                Ok(out)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn insert(&self, session: &str, mappings: &[Mapping]) -> Result<(), Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let rows: Vec<_> = mappings
            .iter()
            .map(|m| {
                let aad = Self::aad(session, &m.pseudonym, m.canonical);
                let (nonce, ct) = self.encrypt(m.value.as_bytes(), &aad);
                (m, nonce, ct)
            })
            .collect();
        let path = self.path.clone();
        let sql = |source| Error::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = &self.conn;
        for (m, nonce, ct) in rows {
            if m.canonical {
                tx.execute(
                    "DELETE FROM vault_entries WHERE session = ?1 AND pseudonym = ?2 AND canonical = 1",
                    params![session, m.pseudonym],
                )
                .map_err(sql)?;
            }
            tx.execute(
                "INSERT INTO vault_entries (session, pseudonym, entity, canonical, nonce, ciphertext, created_unix)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![session, m.pseudonym, m.entity.as_str(), m.canonical, nonce.as_slice(), ct, now],
            )
            .map_err(sql)?;
        }
        Ok(())
    }

    /// Every mapping of `session`, decrypted, canonical ones first.
    pub fn load_session(&self, session: &str) -> Result<Vec<Mapping>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT pseudonym, entity, canonical, nonce, ciphertext FROM vault_entries
                 WHERE session = ?1 ORDER BY canonical DESC, rowid",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![session], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (pseudonym, entity, canonical, nonce, ct) = row.map_err(self.sql())?;
            let damaged = || Error::Damaged {
                path: self.path.clone(),
                session: session.to_owned(),
                pseudonym: pseudonym.clone(),
            };
            let plain = self
                .decrypt(&nonce, &ct, &Self::aad(session, &pseudonym, canonical))
                .ok_or_else(damaged)?;
            let value = String::from_utf8(plain).map_err(|_| damaged())?;
            let entity = EntityType::parse(&entity).ok_or_else(damaged)?;
            out.push(Mapping {
                pseudonym,
                entity,
                value,
                canonical,
            });
        }
        Ok(out)
    }

    /// Sessions in the vault with their number of pseudonyms.
    pub fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT session, COUNT(*) FROM vault_entries WHERE canonical = 1 GROUP BY session ORDER BY MIN(rowid)",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SessionInfo {
                    session: r.get(0)?,
                    pseudonyms: r.get::<_, i64>(1)? as usize,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::privacy::pii::Redactor;

    #[test]
    fn keys_parse_from_hex_and_base64_only_at_32_bytes() {
        let hex_key = "00".repeat(32);
        assert!(VaultKey::parse(&hex_key).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(VaultKey::parse(&b64).unwrap().0, [7u8; 32]);
        assert!(matches!(VaultKey::parse("abcd"), Err(Error::BadKey)));
        assert!(matches!(
            VaultKey::parse(&"00".repeat(16)),
            Err(Error::BadKey)
        ));
    }

    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/vault.key");
        let a = VaultKey::load_or_create(&path).unwrap();
        let b = VaultKey::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            VaultKey::load_or_create(&path),
            Err(Error::CorruptKeyFile { .. })
        ));
    }

    #[test]
    fn round_trip_values_are_encrypted_and_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let key = VaultKey::from_bytes([1; 32]);
        let mut r = Redactor::new();
        let (red, _) = r.redact("Dan Johnson, card 4111 1111 1111 1111");
        {
            let mut v = Vault::open(&path, &key).unwrap();
            v.save("s1", &r.take_new_mappings()).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("vault.db-wal")).unwrap_or_default();
        for needle in [&b"Johnson"[..], b"4111 1111"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle));
            assert!(!wal.windows(needle.len()).any(|w| w == needle));
        }
        let v = Vault::open(&path, &key).unwrap();
        let mappings = v.load_session("s1").unwrap();
        let (back, _) = crate::core::privacy::pii::reveal(&red, &mappings);
        assert_eq!(back, "Dan Johnson, card 4111 1111 1111 1111");
        assert!(v.load_session("other").unwrap().is_empty());
        assert_eq!(v.sessions().unwrap()[0].session, "s1");
        drop(v);

        let err = Vault::open(&path, &VaultKey::from_bytes([2; 32])).unwrap_err();
        assert!(matches!(err, Error::WrongKey { .. }));
        assert!(
            err.to_string()
                .contains("does not match the one this vault was created with")
        );
    }

    #[test]
    fn sessions_continue_under_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let key = VaultKey::from_bytes([4; 32]);
        let mut a = Vault::open(&path, &key).unwrap();
        let first = a
            .with_session("s", |r| r.redact("Dan Johnson here").0)
            .unwrap();
        assert_eq!(first, "USER_A here");
        let mut b = Vault::open(&path, &key).unwrap();
        let second = b
            .with_session("s", |r| r.redact("dan and Priya Patel").0)
            .unwrap();
        assert_eq!(second, "USER_A and USER_B");
        let third = a.with_session("t", |r| r.redact("Priya Patel").0).unwrap();
        assert_eq!(third, "USER_A", "another session starts again");
    }

    #[test]
    fn many_sessions_in_one_transaction_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let key = VaultKey::from_bytes([5; 32]);
        let mut v = Vault::open(&dir.path().join("vault.db"), &key).unwrap();
        let texts = ["Dan Johnson", "Priya Patel", "Priya again", "Priya Patel"];
        let sessions: Vec<String> = ["a", "b", "b", "a"].map(String::from).to_vec();
        let out = v
            .with_sessions(&sessions, |i, r| r.redact(texts[i]).0)
            .unwrap();
        assert_eq!(out, ["USER_A", "USER_A", "USER_A again", "USER_B"]);
        let a = v.load_session("a").unwrap();
        assert_eq!(
            crate::core::privacy::pii::reveal("USER_A USER_B", &a).0,
            "Dan Johnson Priya Patel"
        );
    }

    #[test]
    fn a_row_moved_to_another_pseudonym_does_not_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let key = VaultKey::from_bytes([3; 32]);
        let mut v = Vault::open(&path, &key).unwrap();
        let m = |p: &str, val: &str| Mapping {
            pseudonym: p.into(),
            entity: EntityType::Email,
            value: val.into(),
            canonical: true,
        };
        v.save(
            "s",
            &[m("EMAIL_1", "a@x.example"), m("EMAIL_2", "b@x.example")],
        )
        .unwrap();
        v.conn
            .execute(
                "UPDATE vault_entries SET pseudonym = 'EMAIL_9' WHERE pseudonym = 'EMAIL_1'",
                [],
            )
            .unwrap();
        assert!(matches!(v.load_session("s"), Err(Error::Damaged { .. })));
    }
}
