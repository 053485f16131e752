//! PII detection and session pseudonymisation, for conversations that leave the machine.
//!
//! Depends only on `shared` (config, key files); performance-critical (`phoenix bench pii`).
//!
//! `detect` finds spans of personal data in free text, read through `normalize`'s scan view
//! so that an encoding does not hide them; `Redactor` replaces them with pseudonyms that are
//! stable within a session (`USER_A`, `ORG_ID_A`, `EMAIL_1`, ...) and remembers what it
//! replaced so that later mentions are replaced too; `messages` walks OpenAI/TRL chat
//! messages, tool calls included; `scan` is the collector's guard over the same fields;
//! `vault` keeps the mapping back to the originals, encrypted, on this machine; `eval`
//! measures all of it on a generated corpus.

mod cues;
mod detect;
mod messages;
pub(crate) mod names;
mod normalize;
mod redactor;
mod renumber;
mod scan;
pub(crate) mod validate;
pub mod vault;

use serde::{Deserialize, Serialize};

pub use detect::detect;
pub use messages::ConversationShape;
pub use redactor::{Mapping, Redactor, Report, is_pseudonym, reveal};
pub use renumber::Renumbering;
pub use scan::{Finding, scan_messages, scan_text};

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    /// A person's name.
    Person,
    /// A company or other organisation.
    Organization,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number (Luhn-valid).
    CreditCard,
    /// An IBAN (mod-97-valid).
    Iban,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A US social security number.
    Ssn,
    /// An API key, token, password or private key.
    Secret,
    /// A URL with a user and password in it.
    UrlCredentials,
    /// A street address.
    Address,
}

impl EntityType {
    /// Every type, in report order.
    pub const ALL: [EntityType; 11] = [
        EntityType::Person,
        EntityType::Organization,
        EntityType::Email,
        EntityType::Phone,
        EntityType::CreditCard,
        EntityType::Iban,
        EntityType::IpAddress,
        EntityType::Ssn,
        EntityType::Secret,
        EntityType::UrlCredentials,
        EntityType::Address,
    ];

    /// The snake_case name used in JSON and the vault.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Person => "person",
            EntityType::Organization => "organization",
            EntityType::Email => "email",
            EntityType::Phone => "phone",
            EntityType::CreditCard => "credit_card",
            EntityType::Iban => "iban",
            EntityType::IpAddress => "ip_address",
            EntityType::Ssn => "ssn",
            EntityType::Secret => "secret",
            EntityType::UrlCredentials => "url_credentials",
            EntityType::Address => "address",
        }
    }

    /// The inverse of `as_str`.
    pub fn parse(s: &str) -> Option<EntityType> {
        EntityType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// What pseudonyms of this type start with (`EMAIL` → `EMAIL_1`).
    pub fn pseudonym_prefix(self) -> &'static str {
        match self {
            EntityType::Person => "USER",
            EntityType::Organization => "ORG_ID",
            EntityType::Email => "EMAIL",
            EntityType::Phone => "PHONE",
            EntityType::CreditCard => "CARD",
            EntityType::Iban => "IBAN",
            EntityType::IpAddress => "IP",
            EntityType::Ssn => "SSN",
            EntityType::Secret => "SECRET",
            EntityType::UrlCredentials => "URL",
            EntityType::Address => "ADDRESS",
        }
    }

    /// Which detection wins when two overlap: validated, specific formats beat guesses.
    fn priority(self) -> u8 {
        match self {
            EntityType::Secret => 10,
            EntityType::UrlCredentials => 9,
            EntityType::Email => 8,
            EntityType::CreditCard | EntityType::Iban => 7,
            EntityType::Ssn => 6,
            EntityType::IpAddress | EntityType::Phone => 5,
            EntityType::Address => 4,
            EntityType::Organization => 3,
            EntityType::Person => 2,
        }
    }
}

impl std::fmt::Display for EntityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detected piece of personal data: `text[start..end]`, byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// What it is.
    pub entity: EntityType,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// The kinds of personal data in `text`, each once, in report order: what the collector's
/// guard needs to refuse a payload that was not redacted. Phoenix's own pseudonyms are not
/// personal data, whatever a detector makes of them.
pub fn contains_pii(text: &str) -> Vec<EntityType> {
    let mut kinds: Vec<EntityType> = detect(text)
        .into_iter()
        .filter(|s| !is_pseudonym(&text[s.start..s.end]))
        .map(|s| s.entity)
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// The order `resolve` considers candidates in: higher priority, then longer, then earlier.
fn resolve_order(a: &Span, b: &Span) -> std::cmp::Ordering {
    b.entity
        .priority()
        .cmp(&a.entity.priority())
        .then((b.end - b.start).cmp(&(a.end - a.start)))
        .then(a.start.cmp(&b.start))
}

/// Keeps the best of overlapping candidates: higher priority, then longer, then earlier.
fn resolve(mut candidates: Vec<Span>) -> Vec<Span> {
    candidates.sort_by(resolve_order);
    // Kept spans never overlap, so a candidate overlaps one of them exactly when it overlaps
    // the kept span that starts last before the candidate ends: one binary search, not a
    // scan. A message has a handful of spans, so a sorted vector beats a tree; a long text
    // has thousands, where inserting into the vector would make this quadratic.
    if candidates.len() > RESOLVE_IN_A_VECTOR {
        return resolve_many(candidates);
    }
    let mut kept: Vec<Span> = Vec::with_capacity(candidates.len());
    for c in candidates {
        let at = kept.partition_point(|k| k.start < c.end);
        let clashes = at > 0 && kept[at - 1].overlaps(&c);
        if c.start < c.end && !clashes {
            // No kept span starts in `c`, so `c` goes right before the first after it.
            kept.insert(at, c);
        }
    }
    kept
}

/// Above this many candidates [`resolve`] keeps its spans in a tree.
const RESOLVE_IN_A_VECTOR: usize = 256;

/// [`resolve`] for candidates already in its order, kept in a tree by start: O(n log n).
fn resolve_many(candidates: Vec<Span>) -> Vec<Span> {
    let mut kept: std::collections::BTreeMap<usize, Span> = std::collections::BTreeMap::new();
    for c in candidates {
        let clashes = kept
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, k)| k.overlaps(&c));
        if c.start < c.end && !clashes {
            kept.insert(c.start, c);
        }
    }
    kept.into_values().collect()
}

/// Adds `more` to `kept`, spans that `resolve` returned, and resolves again: unless each of
/// `more` lies inside a kept span that outranks it (a known name inside the full name it was
/// learned from). `resolve` would drop all of those and keep `kept` as it is, so then
/// nothing is done and `false` says the spans are unchanged.
fn resolve_with(kept: &mut Vec<Span>, more: &[Span]) -> bool {
    let outranked = |c: &Span| {
        let at = kept.partition_point(|k| k.start <= c.start);
        // Inside `k` with no higher priority, so no longer either: `k` comes first in
        // `resolve`'s order (or is the same span), is kept, and `c` overlaps it.
        at > 0 && {
            let k = &kept[at - 1];
            c.end <= k.end && k.entity.priority() >= c.entity.priority()
        }
    };
    if more.iter().all(outranked) {
        return false;
    }
    let mut all = std::mem::take(kept);
    all.extend_from_slice(more);
    *kept = resolve(all);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_spans_keep_the_specific_one() {
        let spans = resolve(vec![
            Span {
                start: 0,
                end: 3,
                entity: EntityType::Person,
            },
            Span {
                start: 0,
                end: 20,
                entity: EntityType::Email,
            },
            Span {
                start: 25,
                end: 30,
                entity: EntityType::Phone,
            },
        ]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].entity, EntityType::Email);
        assert_eq!(spans[1].entity, EntityType::Phone);
    }

    #[test]
    fn many_candidates_are_resolved_as_a_few_are() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let kinds = [
            EntityType::Person,
            EntityType::Email,
            EntityType::Phone,
            EntityType::Address,
        ];
        for round in 0..20 {
            let candidates: Vec<Span> = (0..600 + round * 50)
                .map(|_| {
                    let start = rng.random_range(0..20_000);
                    Span {
                        start,
                        end: start + rng.random_range(0..40),
                        entity: kinds[rng.random_range(0..kinds.len())],
                    }
                })
                .collect();
            // The vector path, one slice at a time, is the reference.
            let mut sorted = candidates.clone();
            sorted.sort_by(resolve_order);
            let mut reference: Vec<Span> = Vec::new();
            for c in sorted {
                let at = reference.partition_point(|k| k.start < c.end);
                if c.start < c.end && !(at > 0 && reference[at - 1].overlaps(&c)) {
                    reference.insert(at, c);
                }
            }
            assert!(candidates.len() > RESOLVE_IN_A_VECTOR);
            assert_eq!(resolve(candidates), reference, "round {round}");
        }
    }

    #[test]
    fn resolving_more_spans_is_resolving_them_all() {
        let span = |start, end, entity| Span { start, end, entity };
        let kept = resolve(vec![
            span(0, 11, EntityType::Person),
            span(20, 40, EntityType::Email),
            span(50, 55, EntityType::Organization),
        ]);
        // Each case, and whether it can change the kept spans.
        let cases = [
            // Inside a span that outranks them: resolved without another pass.
            (
                vec![
                    span(0, 3, EntityType::Person),
                    span(4, 11, EntityType::Person),
                ],
                false,
            ),
            (
                vec![
                    span(0, 11, EntityType::Person),
                    span(20, 25, EntityType::Person),
                ],
                false,
            ),
            (vec![], false),
            // Inside but of higher priority, across a boundary, outside, empty.
            (vec![span(52, 55, EntityType::Phone)], true),
            (vec![span(8, 14, EntityType::Person)], true),
            (
                vec![
                    span(12, 18, EntityType::Person),
                    span(0, 3, EntityType::Person),
                ],
                true,
            ),
            (vec![span(45, 60, EntityType::Organization)], true),
            (vec![span(15, 15, EntityType::Person)], true),
        ];
        for (more, can_change) in cases {
            let mut with = kept.clone();
            let changed = resolve_with(&mut with, &more);
            let all = resolve(kept.iter().chain(&more).copied().collect());
            assert_eq!(with, all, "{more:?}");
            assert_eq!(changed, can_change, "{more:?}");
            if !changed {
                assert_eq!(with, kept);
            }
        }
    }

    #[test]
    fn entity_names_round_trip() {
        for t in EntityType::ALL {
            assert_eq!(EntityType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn contains_pii_lists_kinds_once() {
        let kinds = contains_pii("mail a@example.com or b@example.org, card 4111 1111 1111 1111");
        assert_eq!(kinds, vec![EntityType::Email, EntityType::CreditCard]);
        assert!(contains_pii("the build 1.2.3 passed on 2024-05-01").is_empty());
    }
}
