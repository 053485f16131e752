//! Duplicate proposals: the same words after normalisation, or nearly the same set of words.
//!
//! Workers sample the same model with the same seed, so two of them can land on one idea in
//! slightly different words. The queen keeps the earliest worker's copy and says which later
//! ones repeat it, rather than handing the operator N copies of one idea.

use std::collections::BTreeSet;

use serde::Serialize;

/// Token-set Jaccard similarity at or above which two proposals count as the same idea.
pub const DEFAULT_THRESHOLD: f64 = 0.8;

/// A proposal that repeats an earlier worker's (serialised as `duplicate_of`,
/// `duplicate_kind` and `similarity`, to sit flat in a worker's report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Duplicate {
    /// The worker (1-based) whose proposal it repeats.
    #[serde(rename = "duplicate_of")]
    pub of: usize,
    /// `exact` (same words once case and punctuation are ignored) or `near`.
    #[serde(rename = "duplicate_kind")]
    pub kind: DuplicateKind,
    /// Jaccard similarity of the two word sets (1 for exact duplicates).
    pub similarity: f64,
}

/// How close a duplicate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateKind {
    /// Identical after normalisation.
    Exact,
    /// Similarity at or above the threshold.
    Near,
}

impl DuplicateKind {
    /// `exact` or `near`.
    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateKind::Exact => "exact",
            DuplicateKind::Near => "near",
        }
    }
}

/// Lowercase words, punctuation dropped, whitespace collapsed.
pub fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Jaccard similarity of the word sets of two normalised texts (1 when both are empty).
pub fn jaccard(a: &str, b: &str) -> f64 {
    let a: BTreeSet<&str> = a.split(' ').filter(|w| !w.is_empty()).collect();
    let b: BTreeSet<&str> = b.split(' ').filter(|w| !w.is_empty()).collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// For each text (in worker order; `None` for workers without a proposal), the earlier
/// text it repeats. A text is compared only with earlier texts that are not themselves
/// duplicates, so every duplicate points at a proposal the queen keeps.
pub fn find_duplicates(texts: &[Option<String>], threshold: f64) -> Vec<Option<Duplicate>> {
    let normalized: Vec<Option<String>> =
        texts.iter().map(|t| t.as_deref().map(normalize)).collect();
    let mut kept: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(texts.len());
    for (i, text) in normalized.iter().enumerate() {
        let Some(text) = text else {
            out.push(None);
            continue;
        };
        let mut best: Option<Duplicate> = None;
        for &j in &kept {
            let other = normalized[j].as_deref().unwrap_or_default();
            let duplicate = if other == text {
                Some(Duplicate {
                    of: j + 1,
                    kind: DuplicateKind::Exact,
                    similarity: 1.0,
                })
            } else {
                let similarity = jaccard(other, text);
                (similarity >= threshold).then_some(Duplicate {
                    of: j + 1,
                    kind: DuplicateKind::Near,
                    similarity,
                })
            };
            if let Some(d) = duplicate
                && best.as_ref().is_none_or(|b| d.similarity > b.similarity)
            {
                best = Some(d);
            }
        }
        if best.is_none() {
            kept.push(i);
        }
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(texts: &[&str]) -> Vec<Option<String>> {
        texts.iter().map(|t| Some((*t).to_owned())).collect()
    }

    #[test]
    fn normalisation_ignores_case_and_punctuation() {
        assert_eq!(
            normalize("  Add a CACHING layer!!  (LRU, 10k entries) "),
            "add a caching layer lru 10k entries"
        );
        assert_eq!(normalize("Überprüfen—jetzt"), "überprüfen jetzt");
    }

    #[test]
    fn jaccard_of_word_sets() {
        assert_eq!(jaccard("a b c", "a b c"), 1.0);
        assert_eq!(jaccard("a b", "c d"), 0.0);
        assert!((jaccard("a b c d", "a b c e") - 0.6).abs() < 1e-9);
        assert_eq!(jaccard("", ""), 1.0);
    }

    #[test]
    fn exact_and_near_duplicates_point_at_the_earliest_kept_worker() {
        let texts = some(&[
            "Add a caching layer in front of the vector store: repeated queries skip the embedding call.",
            "Use vector similarity search instead of keyword scans.",
            "add a caching layer in front of the vector store - repeated queries skip the embedding call",
            "Add a caching layer in front of the vector store: repeated queries skip the embedding call entirely.",
            "Compress old memories into summaries.",
        ]);
        let mut with_gap = texts.clone();
        with_gap.insert(1, None);
        let d = find_duplicates(&with_gap, DEFAULT_THRESHOLD);
        assert_eq!(d[0], None);
        assert_eq!(d[1], None, "a failed worker is never a duplicate");
        assert_eq!(d[2], None);
        let exact = d[3].as_ref().unwrap();
        assert_eq!((exact.of, exact.kind), (1, DuplicateKind::Exact));
        let near = d[4].as_ref().unwrap();
        assert_eq!((near.of, near.kind), (1, DuplicateKind::Near));
        assert!(near.similarity >= DEFAULT_THRESHOLD && near.similarity < 1.0);
        assert_eq!(d[5], None);
    }

    #[test]
    fn distinct_ideas_on_the_same_topic_are_kept() {
        let texts = some(&[
            "Implement a caching layer for memory retrieval",
            "Add a caching layer to memory retrieval",
        ]);
        assert_eq!(find_duplicates(&texts, DEFAULT_THRESHOLD), vec![None, None]);
    }
}
