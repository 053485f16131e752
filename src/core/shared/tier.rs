//! Access tiers (free / premium) and the constant-time checks that grant them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Records a free-tier analysis may read.
pub const FREE_LIMIT: usize = 200;
/// Records a premium analysis may read.
pub const PREMIUM_LIMIT: usize = 5000;

/// Access tier: of an analysis, of a subscriber, or required by an update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Everyone.
    #[default]
    Free,
    /// Unlocked by the `X402` header (or `x402` in a subscriber's hello).
    Premium,
}

impl Tier {
    /// Most records an analysis at this tier may read.
    pub fn limit(self) -> usize {
        match self {
            Tier::Free => FREE_LIMIT,
            Tier::Premium => PREMIUM_LIMIT,
        }
    }

    /// `free` or `premium`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Premium => "premium",
        }
    }

    /// Parses `free` / `premium` (case-insensitive).
    pub fn parse(s: &str) -> Option<Tier> {
        match s.trim().to_ascii_lowercase().as_str() {
            "free" => Some(Tier::Free),
            "premium" => Some(Tier::Premium),
            _ => None,
        }
    }

    /// The tier a presented `X402` key earns against the configured premium key.
    pub fn from_key(configured: Option<&str>, presented: Option<&str>) -> Tier {
        if premium_key_matches(configured, presented) {
            Tier::Premium
        } else {
            Tier::Free
        }
    }
}

/// Compares two secrets in constant time (digests first, so lengths do not leak either).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes())
        .ct_eq(&Sha256::digest(b.as_bytes()))
        .into()
}

/// Whether the presented `X402` value unlocks the premium tier.
pub fn premium_key_matches(configured: Option<&str>, presented: Option<&str>) -> bool {
    match (configured, presented) {
        (Some(k), Some(p)) if !k.is_empty() => secrets_equal(k, p.trim()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premium_needs_a_configured_matching_key() {
        assert_eq!(Tier::from_key(Some("k1"), Some("k1")), Tier::Premium);
        assert_eq!(Tier::from_key(Some("k1"), Some(" k1 ")), Tier::Premium);
        assert_eq!(Tier::from_key(Some("k1"), Some("k2")), Tier::Free);
        assert_eq!(Tier::from_key(None, Some("k1")), Tier::Free);
        assert_eq!(Tier::from_key(Some(""), Some("")), Tier::Free);
        assert_eq!(Tier::parse("PREMIUM"), Some(Tier::Premium));
        assert_eq!(Tier::parse("gold"), None);
    }
}
