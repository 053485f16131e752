//! Text helpers of the pseudonymiser: occurrence search, case folding, the normal form of a
//! value per entity type, organisation bases and pseudonym letters.

use super::*;

/// Where `needle` (not empty) occurs in `haystack`, left to right and not overlapping, as
/// memmem's `find_iter` has it: a memchr for its first byte, then a comparison. Forms are
/// short and texts are chat messages, so this beats building a substring finder per form.
pub(super) fn occurrences<'a>(
    haystack: &'a [u8],
    needle: &'a [u8],
) -> impl Iterator<Item = usize> + 'a {
    let mut free_from = 0;
    memchr_iter(needle[0], haystack).filter(move |&i| {
        let found = i >= free_from && haystack[i..].starts_with(needle);
        if found {
            free_from = i + needle.len();
        }
        found
    })
}

/// `map`, with room for a session's usual number of values if it has none yet.
pub(super) fn reserve<K: Eq + std::hash::Hash, V>(map: &mut FastMap<K, V>) -> &mut FastMap<K, V> {
    if map.capacity() == 0 {
        map.reserve(SESSION_VALUES);
    }
    map
}

/// `s` lower-cased into `buf`, reusing its allocation.
pub(super) fn lower_into<'a>(buf: &'a mut String, s: &str) -> &'a str {
    buf.clear();
    // Room for most values at once, rather than growing with each longer one.
    buf.reserve(s.len().max(SCRATCH));
    if s.is_ascii() {
        buf.push_str(s);
        buf.make_ascii_lowercase();
    } else {
        buf.push_str(&s.to_lowercase());
    }
    buf
}

/// Whether `s` lower-cased is `lower` (`s.to_lowercase() == lower`, without allocating for
/// ASCII).
pub(super) fn lower_eq(s: &str, lower: &str) -> bool {
    if s.is_ascii() {
        s.len() == lower.len()
            && s.bytes()
                .zip(lower.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        s.to_lowercase() == lower
    }
}

/// Lower-case name words without titles: "Dr. Dan Johnson" → ["dan", "johnson"].
pub(super) fn name_words(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_alphabetic() || c == '\'' || c == '-' || c == '’'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| {
            !matches!(
                w.as_str(),
                "mr" | "mrs" | "ms" | "miss" | "dr" | "prof" | "sir"
            )
        })
        .collect()
}

/// Two mentions are one person when the shorter's words are all in the longer, and two
/// full names agree on the first word ("Dan" ~ "Dan Johnson"; "Dan Smith" ≁ "Dan Johnson").
pub(super) fn same_person(a: &[String], b: &[String]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.iter().all(|w| long.contains(w)) && (short.len() < 2 || short[0] == long[0])
}

/// The key that makes two spellings of one value one pseudonym: read through the scan view
/// first, so `dan%40example.com` is `dan@example.com` and fullwidth digits are digits.
pub(super) fn normalise(entity: EntityType, value: &str) -> String {
    let value = &*scan_text(value);
    let mut out = String::with_capacity(value.len());
    match entity {
        EntityType::Phone => {
            out.extend(value.chars().filter(char::is_ascii_digit));
            // The national part: `+1 415 555 0132` and `(415) 555-0132` are one number.
            out.drain(..out.len().saturating_sub(9));
        }
        EntityType::CreditCard | EntityType::Ssn => {
            out.extend(value.chars().filter(char::is_ascii_digit));
        }
        EntityType::Iban => {
            out.extend(value.chars().filter(|c| !c.is_whitespace()));
            out = upper(out);
        }
        EntityType::Organization => out = org_base(value).to_lowercase(),
        _ => {
            for w in value.split_whitespace() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(w);
            }
            out = lower(out);
        }
    }
    out
}

/// `s` lower-cased, in place when it is ASCII.
pub(super) fn lower(mut s: String) -> String {
    match s.is_ascii() {
        true => {
            s.make_ascii_lowercase();
            s
        }
        false => s.to_lowercase(),
    }
}

/// `s` upper-cased, in place when it is ASCII.
pub(super) fn upper(mut s: String) -> String {
    match s.is_ascii() {
        true => {
            s.make_ascii_uppercase();
            s
        }
        false => s.to_uppercase(),
    }
}

/// "Acme Corp." → "Acme".
pub(super) fn org_base(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    let suffix = |w: &str| {
        let w = w.trim_end_matches('.').to_lowercase();
        matches!(
            w.as_str(),
            "inc"
                | "llc"
                | "ltd"
                | "limited"
                | "gmbh"
                | "ag"
                | "sa"
                | "sas"
                | "plc"
                | "corp"
                | "corporation"
                | "co"
                | "llp"
                | "bv"
                | "nv"
                | "group"
                | "holdings"
        )
    };
    let keep = words.len() - words.iter().rev().take_while(|w| suffix(w)).count();
    words[..keep.max(1)]
        .join(" ")
        .trim_end_matches(',')
        .to_owned()
}

pub(super) fn title_case(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// 0 → A, 25 → Z, 26 → AA.
pub(crate) fn letters(n: usize) -> String {
    let mut out = String::new();
    push_letters(&mut out, n);
    out
}

/// Appends `letters(n)` to `out`.
pub(super) fn push_letters(out: &mut String, mut n: usize) {
    // Bijective base 26, least significant first; a usize has at most 14 such digits.
    let mut digits = [0u8; 16];
    let mut len = 0;
    loop {
        digits[len] = b'A' + (n % 26) as u8;
        len += 1;
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.extend(digits[..len].iter().rev().map(|&d| char::from(d)));
}

pub(crate) fn letters_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some(
        s.bytes()
            .fold(0usize, |acc, b| acc * 26 + (b - b'A' + 1) as usize)
            - 1,
    )
}
