use super::*;
use crate::core::privacy::pii::names::{is_first_name, is_last_name};

#[test]
fn held_out_names_really_are_missing_from_the_gazetteers() {
    for n in HELD_OUT_FIRST {
        assert!(
            !is_first_name(&n.to_lowercase()) && !is_last_name(&n.to_lowercase()),
            "{n}"
        );
    }
    for n in HELD_OUT_LAST {
        assert!(
            !is_first_name(&n.to_lowercase()) && !is_last_name(&n.to_lowercase()),
            "{n}"
        );
    }
}

#[test]
fn generation_is_deterministic_and_labels_are_in_bounds() {
    let a = generate(7, 50);
    let b = generate(7, 50);
    let texts = |c: &[Conversation]| {
        c.iter()
            .flat_map(|c| c.messages.iter().map(|m| m.text.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&a), texts(&b));
    for m in a.iter().flat_map(|c| &c.messages) {
        for s in &m.spans {
            assert!(m.text.is_char_boundary(s.start) && m.text.is_char_boundary(s.end));
            assert!(s.start < s.end);
        }
    }
}

#[test]
fn generated_cards_and_ibans_validate() {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(1),
    };
    for _ in 0..50 {
        assert!(crate::core::privacy::pii::validate::luhn(&g.card()));
        let iban: String = g.iban().chars().filter(|c| *c != ' ').collect();
        assert!(crate::core::privacy::pii::validate::iban(&iban), "{iban}");
    }
}
