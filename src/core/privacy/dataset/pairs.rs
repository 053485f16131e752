//! Preference pairs among conversations that share a prompt.
//!
//! Preference: A is preferred over B when both have a `score` and A's is higher; otherwise
//! when both have `feedback` and A's is better (positive > neutral > negative); otherwise
//! (equal, or nothing to compare) there is no preference and no pair.
//!
//! Pairing rule, "best against each worse one": in a group, the conversation preferred over
//! the most others is `chosen` (ties: the most recent, then the last stored); it is paired
//! with every conversation it is preferred over, so a prompt with n conversations gives at
//! most n − 1 pairs and every pair has the group's best answer as `chosen`.

use std::cmp::Ordering;

use crate::core::telemetry::conversation::Feedback;

/// What a conversation is ranked by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Numeric score.
    pub score: Option<f64>,
    /// Thumbs.
    pub feedback: Option<Feedback>,
    /// Completion time, for ties.
    pub ts_unix: i64,
    /// Storage order, for ties.
    pub seq: i64,
}

impl Rating {
    /// Whether the conversation can be compared at all.
    pub fn is_rated(&self) -> bool {
        self.score.is_some() || self.feedback.is_some()
    }
}

/// `Greater` when `a` is preferred over `b`; `None` when there is nothing to compare.
pub fn preference(a: &Rating, b: &Rating) -> Option<Ordering> {
    match (a.score, b.score, a.feedback, b.feedback) {
        (Some(x), Some(y), _, _) => x.partial_cmp(&y),
        (_, _, Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => None,
    }
}

/// Why a conversation of a group is in no pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unpaired {
    /// No other stored conversation has its prompt.
    OnlyOneWithPrompt,
    /// It has neither score nor feedback.
    Unrated,
    /// It is not ranked below the group's best (equal, or not comparable).
    NoPreference,
}

impl Unpaired {
    /// The name in export summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Unpaired::OnlyOneWithPrompt => "only_one_with_its_prompt",
            Unpaired::Unrated => "unrated",
            Unpaired::NoPreference => "no_preference_in_group",
        }
    }
}

/// The pairs of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    /// `(chosen, rejected)` indices into the group, in group order of the rejected ones.
    pub pairs: Vec<(usize, usize)>,
    /// Every index in no pair, with the reason.
    pub unpaired: Vec<(usize, Unpaired)>,
}

/// Pairs one group of conversations sharing a prompt by the rule above.
pub fn best_against_worse(group: &[Rating]) -> Pairing {
    if group.len() < 2 {
        return Pairing {
            pairs: Vec::new(),
            unpaired: (0..group.len())
                .map(|i| (i, Unpaired::OnlyOneWithPrompt))
                .collect(),
        };
    }
    let beats = |i: usize| {
        (0..group.len())
            .filter(|&j| j != i && preference(&group[i], &group[j]) == Some(Ordering::Greater))
            .collect::<Vec<_>>()
    };
    let best = (0..group.len())
        .max_by_key(|&i| (beats(i).len(), group[i].ts_unix, group[i].seq))
        .expect("a group is not empty");
    let worse = beats(best);
    let pairs: Vec<(usize, usize)> = worse.iter().map(|&j| (best, j)).collect();
    let unpaired = (0..group.len())
        .filter(|&i| !worse.contains(&i) && (i != best || pairs.is_empty()))
        .map(|i| {
            let why = if group[i].is_rated() {
                Unpaired::NoPreference
            } else {
                Unpaired::Unrated
            };
            (i, why)
        })
        .collect();
    Pairing { pairs, unpaired }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(score: Option<f64>, feedback: Option<Feedback>, seq: i64) -> Rating {
        Rating {
            score,
            feedback,
            ts_unix: 100,
            seq,
        }
    }

    use Feedback::{Negative, Neutral, Positive};

    #[test]
    fn scores_rank_before_feedback_and_equal_is_no_preference() {
        let a = r(Some(4.0), Some(Negative), 1);
        let b = r(Some(2.0), Some(Positive), 2);
        assert_eq!(preference(&a, &b), Some(Ordering::Greater), "scores win");
        let c = r(None, Some(Neutral), 3);
        assert_eq!(preference(&c, &a), Some(Ordering::Greater), "feedback only");
        assert_eq!(
            preference(&a, &r(Some(4.0), Some(Positive), 4)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            preference(&r(Some(1.0), None, 5), &r(None, Some(Positive), 6)),
            None
        );
    }

    #[test]
    fn the_best_is_paired_with_each_worse_one() {
        let group = [
            r(None, Some(Negative), 1),
            r(None, Some(Positive), 2),
            r(None, Some(Neutral), 3),
            r(None, Some(Positive), 4),
            r(None, None, 5),
        ];
        let Pairing { pairs, unpaired } = best_against_worse(&group);
        // Two positives tie; the last stored is chosen, the other positive is no worse.
        assert_eq!(pairs, [(3, 0), (3, 2)]);
        assert_eq!(
            unpaired,
            [(1, Unpaired::NoPreference), (4, Unpaired::Unrated)]
        );
    }

    #[test]
    fn equal_or_lonely_conversations_make_no_pair() {
        let Pairing { pairs, unpaired } =
            best_against_worse(&[r(Some(3.0), None, 1), r(Some(3.0), None, 2)]);
        assert!(pairs.is_empty());
        assert_eq!(
            unpaired,
            [(0, Unpaired::NoPreference), (1, Unpaired::NoPreference)]
        );
        let Pairing { pairs, unpaired } = best_against_worse(&[r(Some(5.0), None, 1)]);
        assert!(pairs.is_empty());
        assert_eq!(unpaired, [(0, Unpaired::OnlyOneWithPrompt)]);
    }
}
