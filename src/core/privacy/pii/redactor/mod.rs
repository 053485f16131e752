//! The session pseudonymiser: replaces detected spans with pseudonyms that stay the same for
//! the whole session, links a person's aliases ("Dan", "Dan Johnson", `dan.johnson@…`), and
//! replaces every later occurrence of a known value even where the detectors would miss it.
//!
//! Depends on nothing outside `pii`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use memchr::memchr_iter;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::detect::re;
use super::names::{self, is_common_word, is_first_name, is_last_name};
use super::normalize::scan_text;
use super::{EntityType, Span, detect, resolve_with};

mod stream;
mod text;

pub(super) use text::letters;
use text::*;

/// Phoenix's pseudonyms, so that reveal finds them and redaction leaves them alone.
pub(super) static PSEUDONYM: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:USER_[A-Z]{1,3}(?:_EMAIL(?:_\d+)?)?|ORG_ID_[A-Z]{1,3}|(?:EMAIL|PHONE|CARD|IBAN|IP|SSN|SECRET|URL|ADDRESS)_\d+)\b",
    )
});

/// Whether `s` is exactly one of Phoenix's pseudonyms.
pub fn is_pseudonym(s: &str) -> bool {
    // Every pseudonym starts with a capital letter and has an underscore: most detected
    // values are ruled out without running the pattern.
    s.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
        && s.contains('_')
        && PSEUDONYM
            .find(s)
            .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

/// One pseudonym and a value it stands for: what the vault stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// `USER_A`, `EMAIL_1`, ...
    pub pseudonym: String,
    /// What kind of value it is.
    pub entity: EntityType,
    /// The original text.
    pub value: String,
    /// The value reveal gives back (`Dan Johnson`); other rows are aliases (`Dan`).
    pub canonical: bool,
}

/// What one redaction replaced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Occurrences replaced, by type.
    pub replaced: BTreeMap<EntityType, usize>,
    /// Each pseudonym used, with its type.
    pub pseudonyms: BTreeMap<String, EntityType>,
}

impl Report {
    /// Occurrences replaced, all types.
    pub fn total(&self) -> usize {
        self.replaced.values().sum()
    }

    fn record(&mut self, entity: EntityType, pseudonym: &str) {
        *self.replaced.entry(entity).or_default() += 1;
        // A pseudonym recurs in a conversation: copy it only the first time.
        match self.pseudonyms.get_mut(pseudonym) {
            Some(e) => *e = entity,
            None => {
                self.pseudonyms.insert(pseudonym.to_owned(), entity);
            }
        }
    }
}

/// A pseudonym, shared by the session's maps and forms that stand for it: cloning one is
/// cheap, and a text with a dozen spans clones a few dozen.
type Pseudonym = Arc<str>;

#[derive(Debug, Clone)]
struct Person {
    pseudonym: Pseudonym,
    /// Lower-case name words of the longest form seen.
    words: Vec<String>,
    emails: usize,
}

/// Known surface forms. A session usually knows a handful, and they change with every
/// message that reveals a new one, so they are searched one by one (see `occurrences`).
/// From [`AUTOMATON_FROM`] on they are found through an index instead: the text's tokens
/// are walked once, and where a token is the first of some known form, the forms of the
/// token counts that start with it are looked up whole. Adding a form is O(1), and a search
/// costs the same whether a session knows fifty values or half a million; an automaton
/// rebuilt as forms are learned made a long session quadratic.
#[derive(Debug, Default)]
struct KnownMatcher {
    /// ASCII-lower-cased forms matched ignoring ASCII case.
    folded: Forms,
    /// Names that are also common words ("Will", "May") and very short ones: as written.
    exact: Forms,
    /// First token of a folded form, lower-cased → bit `k - 1` set when a form of `k`
    /// tokens starts with it.
    folded_first: FastMap<Box<str>, u64>,
    /// The same for exact forms, as written.
    exact_first: FastMap<Box<str>, u64>,
    /// Exact forms, as written.
    exact_forms: FastMap<Box<str>, ()>,
    /// Forms of more tokens than a mask holds, searched one by one: (folded, text).
    long: Vec<(bool, Box<str>)>,
}

/// The tokens of `s`: runs of alphanumeric characters, and every other character that is not
/// white space, as byte ranges.
fn tokens(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = s.char_indices().peekable();
    std::iter::from_fn(move || {
        loop {
            let (start, c) = chars.next()?;
            if c.is_whitespace() {
                continue;
            }
            if !c.is_alphanumeric() {
                return Some((start, start + c.len_utf8()));
            }
            let mut end = start + c.len_utf8();
            while let Some(&(i, c)) = chars.peek() {
                if !c.is_alphanumeric() {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            return Some((start, end));
        }
    })
}

/// Whether a learned one-word form of a name that is also an everyday word ("Port" of
/// "Sarah Port", "May" of "May Chen") is used here as the word: before a number ("Port 443",
/// "May 3") or after an article or determiner ("The Port team"). `lower` is the form
/// lower-cased.
fn used_as_a_word(text: &str, start: usize, end: usize, lower: &str) -> bool {
    if lower.contains(' ') || !(is_common_word(lower) || names::is_dictionary_word(lower)) {
        return false;
    }
    let after = text[end..].trim_start_matches([' ', '\u{a0}']);
    if after.len() < text.len() - end && after.starts_with(|c: char| c.is_ascii_digit()) {
        return true;
    }
    let before = text[..start].trim_end_matches(' ');
    if before.len() == start {
        return false;
    }
    let word_start = before.rfind(|c: char| !c.is_alphabetic()).map_or(0, |i| {
        i + before[i..].chars().next().map_or(1, char::len_utf8)
    });
    matches!(
        before[word_start..].to_ascii_lowercase().as_str(),
        "the" | "a" | "an" | "this" | "that" | "these" | "those" | "our" | "your" | "their"
    )
}

/// Byte strings kept end to end in one buffer: a form costs no allocation of its own.
#[derive(Debug, Default)]
struct Forms {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KnownMatcher {
    /// Adds a form, `lower` being `surface` lower-cased: names that are also common words,
    /// very short forms and those said `as_written` match as written, others in any ASCII
    /// case (the text searched is ASCII-lower-cased the same way).
    fn add(&mut self, surface: &str, lower: &str, as_written: bool) {
        let exact = as_written || lower.chars().count() < 3 || is_common_word(lower);
        if exact {
            self.exact.push(surface.as_bytes());
        } else {
            let at = self.folded.bytes.len();
            self.folded.push(surface.as_bytes());
            self.folded.bytes[at..].make_ascii_lowercase();
        }
        let mut toks = tokens(surface);
        let Some((start, end)) = toks.next() else {
            return;
        };
        let count = 1 + toks.count();
        if count > u64::BITS as usize {
            self.long.push((!exact, surface.into()));
            return;
        }
        let bit = 1u64 << (count - 1);
        let first = &surface[start..end];
        if exact {
            *self.exact_first.entry(first.into()).or_default() |= bit;
            self.exact_forms.insert(surface.into(), ());
        } else {
            let mut buf = String::new();
            *self
                .folded_first
                .entry(lower_into(&mut buf, first).into())
                .or_default() |= bit;
        }
    }

    /// Whether searches go through the token index rather than form by form.
    fn indexed(&self) -> bool {
        self.folded.len() + self.exact.len() >= AUTOMATON_FROM
    }

    /// Pushes to `hits` the ranges of `text` that may be known forms, through the index:
    /// every folded candidate (the caller checks it against the known values) and the exact
    /// forms found as written. `toks` and `lower` are scratch space.
    fn index_hits(
        &self,
        text: &str,
        toks: &mut Vec<(usize, usize)>,
        lower: &mut String,
        hits: &mut Vec<(usize, usize)>,
    ) {
        toks.clear();
        toks.extend(tokens(text));
        // An ASCII token lower-cased is its place in the text lower-cased once: no copy a token.
        let ascii = text.is_ascii();
        if ascii {
            lower.clear();
            lower.push_str(text);
            lower.make_ascii_lowercase();
        }
        let mut token_lower = String::new();
        for (i, &(start, end)) in toks.iter().enumerate() {
            let first = &text[start..end];
            let first_lower = if ascii {
                &lower[start..end]
            } else {
                lower_into(&mut token_lower, first)
            };
            let folded = self.folded_first.get(first_lower).copied().unwrap_or(0);
            let exact = self.exact_first.get(first).copied().unwrap_or(0);
            let mut counts = folded | exact;
            while counts != 0 {
                let k = counts.trailing_zeros() as usize + 1;
                counts &= counts - 1;
                let Some(&(_, last_end)) = toks.get(i + k - 1) else {
                    break;
                };
                let bit = 1u64 << (k - 1);
                let candidate = &text[start..last_end];
                if folded & bit != 0
                    || (exact & bit != 0 && self.exact_forms.contains_key(candidate))
                {
                    hits.push((start, last_end));
                }
            }
        }
        for (folded, form) in &self.long {
            let found: Vec<(usize, usize)> = if *folded {
                let haystack = text.to_ascii_lowercase();
                let needle = form.to_ascii_lowercase();
                occurrences(haystack.as_bytes(), needle.as_bytes())
                    .map(|i| (i, i + needle.len()))
                    .collect()
            } else {
                occurrences(text.as_bytes(), form.as_bytes())
                    .map(|i| (i, i + form.len()))
                    .collect()
            };
            hits.extend(found);
        }
    }
}

impl Forms {
    fn push(&mut self, form: &[u8]) {
        if self.ends.is_empty() {
            self.bytes.reserve(SCRATCH * 4);
            self.ends.reserve(SESSION_VALUES);
        }
        self.bytes.extend_from_slice(form);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The forms from the `from`th on.
    fn iter_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        self.iter_range(from..self.ends.len())
    }

    /// The forms in `range`.
    fn iter_range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &[u8]> {
        let start = |i: usize| if i == 0 { 0 } else { self.ends[i - 1] };
        range.map(move |i| &self.bytes[start(i)..self.ends[i]])
    }
}

/// The room a session's scratch buffers and maps start with when first used: enough for
/// most sessions, so that they are allocated once rather than grown step by step.
const SCRATCH: usize = 64;
const SESSION_VALUES: usize = 16;

/// From this many known forms, the token index beats one search per form.
const AUTOMATON_FROM: usize = 48;

/// Maps looked up for every span and known form found; keys are this session's own values,
/// so a hash that reads eight bytes a step serves, not one resistant to chosen keys.
type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Pseudonymises text for one session. Build it from the vault's mappings to continue a
/// session; `take_new_mappings` gives what the vault must store afterwards.
#[derive(Debug, Default)]
pub struct Redactor {
    persons: Vec<Person>,
    /// Name word → the persons whose words include it (some may have it no longer: checked).
    person_words: FastMap<Box<str>, Vec<usize>>,
    /// Pseudonym → its person.
    person_at: FastMap<Pseudonym, usize>,
    /// Lower-cased surface form → pseudonym and type.
    known: FastMap<Box<str>, (EntityType, Pseudonym)>,
    /// (type, normalised value) → pseudonym: `+1 415 555 0132` and `(415) 555-0132` are one.
    normalised: FastMap<(EntityType, String), Pseudonym>,
    /// Pseudonym → canonical value.
    canonical: FastMap<Pseudonym, (EntityType, String)>,
    /// Pseudonyms handed out, by type (indexed by `EntityType as usize`).
    counters: [usize; EntityType::ALL.len()],
    pending: Vec<Mapping>,
    matcher: KnownMatcher,
    dirty: bool,
    /// The known forms' spans in the text being redacted, from the search `spans` made
    /// before the text's own values were learned: the search after it needs only the new
    /// forms (see `redact_with_spans`).
    known_hits: Vec<Span>,
    /// Scratch space for lower-casing, kept to save an allocation per look-up.
    lower: String,
    /// Scratch space for lower-casing a form to remember.
    remember_buf: String,
    /// Scratch space for a text's ASCII-lower-cased copy.
    folded_text: String,
    /// Scratch space for the places known forms occur.
    hits: Vec<(usize, usize)>,
    /// Scratch space for a text's tokens.
    toks: Vec<(usize, usize)>,
    /// Scratch space for a new pseudonym, before it is shared.
    pseudonym_buf: String,
}

impl Redactor {
    /// A redactor for a new session.
    pub fn new() -> Self {
        Self::default()
    }

    /// A redactor that continues a session from its stored mappings.
    pub fn from_mappings(mappings: impl IntoIterator<Item = Mapping>) -> Self {
        let mut r = Self::new();
        let mut aliases = Vec::new();
        for m in mappings {
            if !m.canonical {
                aliases.push(m);
                continue;
            }
            r.bump_counter_past(&m.pseudonym, m.entity);
            let pseudonym: Pseudonym = m.pseudonym.as_str().into();
            match m.entity {
                EntityType::Person => {
                    let words = name_words(&m.value);
                    r.remember_name_words(&words, &pseudonym);
                    r.add_person(Person {
                        pseudonym: pseudonym.clone(),
                        words,
                        emails: 0,
                    });
                }
                EntityType::Email => {
                    if let Some(owner) = m
                        .pseudonym
                        .split("_EMAIL")
                        .next()
                        .filter(|_| m.pseudonym.contains("_EMAIL"))
                        && let Some(&i) = r.person_at.get(owner)
                        && let Some(p) = r.persons.get_mut(i)
                    {
                        p.emails += 1;
                    }
                }
                _ => {}
            }
            r.normalised
                .insert((m.entity, normalise(m.entity, &m.value)), pseudonym.clone());
            r.remember(&m.value, m.entity, &pseudonym);
            r.canonical.insert(pseudonym, (m.entity, m.value));
        }
        for a in aliases {
            r.remember(&a.value, a.entity, &a.pseudonym.as_str().into());
        }
        r.pending.clear();
        r
    }

    /// Mappings created since the last call, for the vault.
    pub fn take_new_mappings(&mut self) -> Vec<Mapping> {
        // A pseudonym's canonical value may have grown ("Dan" → "Dan Johnson"): keep the last.
        let pending = std::mem::take(&mut self.pending);
        let mut seen = FastMap::<&str, ()>::default();
        let mut keep: Vec<bool> = pending
            .iter()
            .rev()
            .map(|m| !m.canonical || seen.insert(&m.pseudonym, ()).is_none())
            .collect();
        drop(seen);
        keep.reverse();
        pending
            .into_iter()
            .zip(keep)
            .filter_map(|(m, keep)| keep.then_some(m))
            .collect()
    }

    /// Every canonical mapping of the session so far.
    pub fn mappings(&self) -> Vec<Mapping> {
        let mut out: Vec<Mapping> = self
            .canonical
            .iter()
            .map(|(p, (e, v))| Mapping {
                pseudonym: p.to_string(),
                entity: *e,
                value: v.clone(),
                canonical: true,
            })
            .collect();
        out.sort_by(|a, b| a.pseudonym.cmp(&b.pseudonym));
        out
    }

    /// Redacts `text`, returning the new text and what was replaced.
    pub fn redact(&mut self, text: &str) -> (String, Report) {
        let mut report = Report::default();
        let out = self.redact_into(text, &mut report);
        (out, report)
    }

    /// Redacts `text`, adding what was replaced to `report`.
    pub fn redact_into(&mut self, text: &str, report: &mut Report) -> String {
        self.redact_with_spans(text, report).0
    }

    /// Redacts `text` and also returns the spans of `text` it replaced.
    pub fn redact_with_spans(&mut self, text: &str, report: &mut Report) -> (String, Vec<Span>) {
        let mut spans = self.spans(text);
        if spans.is_empty() {
            return (text.to_owned(), spans);
        }
        // Learn this text's values first, so that a later mention in the same text which
        // the detectors miss ("Dan Johnson ... dan said") is replaced too.
        let (folded_from, exact_from) = (self.matcher.folded.len(), self.matcher.exact.len());
        let learned: Vec<Pseudonym> = spans
            .iter()
            .map(|s| self.pseudonym_for(s.entity, &text[s.start..s.end]))
            .collect();
        let mut resolved = false;
        if self.dirty {
            // The forms known before this text were searched by `spans`; what they found
            // (before overlaps were resolved) is in `known_hits`. One search of the new forms
            // and those hits give what searching every form again would.
            let mut hits = std::mem::take(&mut self.known_hits);
            if self.matcher.indexed() {
                // Through the index, one search of every form costs what one of the new
                // forms would.
                hits.clear();
                self.known_spans(text, None, &mut hits);
            } else {
                self.known_spans(text, Some((folded_from, exact_from)), &mut hits);
            }
            // Mostly the new forms are found only where they were learned.
            resolved = resolve_with(&mut spans, &hits);
            self.known_hits = hits;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (k, s) in spans.iter().enumerate() {
            out.push_str(&text[at..s.start]);
            // Unless known forms changed the spans, each has its pseudonym from above.
            let pseudonym = match resolved {
                false => learned[k].clone(),
                true => self.pseudonym_for(s.entity, &text[s.start..s.end]),
            };
            report.record(s.entity, &pseudonym);
            out.push_str(&pseudonym);
            at = s.end;
        }
        out.push_str(&text[at..]);
        (out, spans)
    }

    /// Replaces all of `value` as one `entity` (a JSON field named `phone` or `password`).
    pub fn redact_as(&mut self, entity: EntityType, value: &str, report: &mut Report) -> String {
        let trimmed = value.trim();
        if trimmed.is_empty() || is_pseudonym(trimmed) {
            return value.to_owned();
        }
        let pseudonym = self.pseudonym_for(entity, trimmed);
        report.record(entity, &pseudonym);
        pseudonym.to_string()
    }

    /// What would be replaced in `text`: the detectors' spans plus known values.
    pub fn spans(&mut self, text: &str) -> Vec<Span> {
        let mut found = detect(text);
        self.known_hits.clear();
        if !self.known.is_empty() {
            self.dirty = false;
            let mut hits = std::mem::take(&mut self.known_hits);
            self.known_spans(text, None, &mut hits);
            resolve_with(&mut found, &hits);
            self.known_hits = hits;
        }
        found.retain(|s| !is_pseudonym(&text[s.start..s.end]));
        found
    }

    /// Adds to `found` the places where known forms occur as whole words: every form
    /// (`None`), or only the folded and exact forms from the given indexes on (forms learned
    /// from the text being redacted, while the session knows few).
    fn known_spans(&mut self, text: &str, from: Option<(usize, usize)>, found: &mut Vec<Span>) {
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        let from = match from {
            Some(from) => from,
            None if self.matcher.indexed() => {
                let mut toks = std::mem::take(&mut self.toks);
                self.matcher
                    .index_hits(text, &mut toks, &mut self.lower, &mut hits);
                self.toks = toks;
                (self.matcher.folded.len(), self.matcher.exact.len())
            }
            None => (0, 0),
        };
        if self.matcher.folded.len() > from.0 {
            // ASCII lower-casing keeps byte offsets.
            let lower = &mut self.folded_text;
            lower.clear();
            lower.push_str(text);
            lower.make_ascii_lowercase();
            for f in self.matcher.folded.iter_from(from.0) {
                hits.extend(occurrences(lower.as_bytes(), f).map(|i| (i, i + f.len())));
            }
        }
        for f in self.matcher.exact.iter_from(from.1) {
            hits.extend(occurrences(text.as_bytes(), f).map(|i| (i, i + f.len())));
        }
        for &(start, end) in &hits {
            let s = &text[start..end];
            let prev = text[..start].chars().next_back();
            let next = text[end..].chars().next();
            let word_start = s.starts_with(char::is_alphanumeric);
            let word_end = s.ends_with(char::is_alphanumeric);
            if (word_start && prev.is_some_and(char::is_alphanumeric))
                || (word_end && next.is_some_and(char::is_alphanumeric))
            {
                continue;
            }
            if let Some((entity, _)) = self.known.get(lower_into(&mut self.lower, s)) {
                if *entity == EntityType::Person && used_as_a_word(text, start, end, &self.lower) {
                    continue;
                }
                found.push(Span {
                    start,
                    end,
                    entity: *entity,
                });
            }
        }
        self.hits = hits;
    }

    /// Records that `surface` stands for `pseudonym` from now on.
    fn remember(&mut self, surface: &str, entity: EntityType, pseudonym: &Pseudonym) {
        self.remember_matching(surface, entity, pseudonym, false);
    }

    /// `remember`; `as_written` makes later occurrences match only in the same case.
    fn remember_matching(
        &mut self,
        surface: &str,
        entity: EntityType,
        pseudonym: &Pseudonym,
        as_written: bool,
    ) {
        let mut lower = std::mem::take(&mut self.remember_buf);
        lower_into(&mut lower, surface);
        self.remember_lower(surface, &lower, entity, pseudonym, as_written);
        self.remember_buf = lower;
    }

    /// `remember_matching`, given `surface` lower-cased.
    fn remember_lower(
        &mut self,
        surface: &str,
        lower: &str,
        entity: EntityType,
        pseudonym: &Pseudonym,
        as_written: bool,
    ) {
        if lower.trim().chars().nth(1).is_none() || self.known.contains_key(lower) {
            return;
        }
        reserve(&mut self.known).insert(lower.into(), (entity, pseudonym.clone()));
        self.matcher.add(surface, lower, as_written);
        self.dirty = true;
    }

    /// Records an alias the vault must keep (not derivable from the canonical value);
    /// `lower` is `surface` lower-cased.
    fn learn(&mut self, surface: &str, lower: &str, entity: EntityType, pseudonym: &Pseudonym) {
        if self.known.contains_key(lower) {
            return;
        }
        let is_canonical = self
            .canonical
            .get(&**pseudonym)
            .is_some_and(|(_, v)| lower_eq(v, lower));
        if !is_canonical {
            self.pending.push(Mapping {
                pseudonym: pseudonym.to_string(),
                entity,
                value: surface.to_owned(),
                canonical: false,
            });
        }
        self.remember_lower(surface, lower, entity, pseudonym, false);
    }

    fn pseudonym_for(&mut self, entity: EntityType, surface: &str) -> Pseudonym {
        if let Some((_, p)) = self.known.get(lower_into(&mut self.lower, surface)) {
            return p.clone();
        }
        // `lower` holds `surface` lower-cased; borrowed for the call, so that the look-ups
        // below can use the scratch space.
        let lower = std::mem::take(&mut self.lower);
        let pseudonym = match entity {
            EntityType::Person => self.person(surface),
            EntityType::Email => self.email(surface),
            _ => {
                let key = (entity, normalise(entity, surface));
                match self.normalised.get(&key) {
                    Some(p) => p.clone(),
                    None => {
                        let p = self.next_pseudonym(entity);
                        reserve(&mut self.normalised).insert(key, p.clone());
                        self.set_canonical(&p, entity, surface);
                        if entity == EntityType::Organization {
                            // "Acme" alone later is the same organisation as "Acme Corp".
                            let base = org_base(surface);
                            if base.len() >= 3 && base.len() < surface.len() {
                                self.remember(&base, entity, &p);
                            }
                        }
                        p
                    }
                }
            }
        };
        self.learn(surface, &lower, entity, &pseudonym);
        self.lower = lower;
        pseudonym
    }

    fn set_canonical(&mut self, pseudonym: &Pseudonym, entity: EntityType, value: &str) {
        reserve(&mut self.canonical).insert(pseudonym.clone(), (entity, value.to_owned()));
        self.pending.push(Mapping {
            pseudonym: pseudonym.to_string(),
            entity,
            value: value.to_owned(),
            canonical: true,
        });
        self.remember(value, entity, pseudonym);
    }

    fn next_pseudonym(&mut self, entity: EntityType) -> Pseudonym {
        let n = &mut self.counters[entity as usize];
        *n += 1;
        let p = &mut self.pseudonym_buf;
        p.clear();
        p.push_str(entity.pseudonym_prefix());
        p.push('_');
        match entity {
            EntityType::Person | EntityType::Organization => push_letters(p, *n - 1),
            _ => {
                use std::fmt::Write as _;
                write!(p, "{n}").expect("writing to a String cannot fail");
            }
        }
        Pseudonym::from(p.as_str())
    }

    fn bump_counter_past(&mut self, pseudonym: &str, entity: EntityType) {
        if pseudonym.contains("_EMAIL") {
            return;
        }
        let tail = pseudonym.rsplit('_').next().unwrap_or("");
        let n = match entity {
            EntityType::Person | EntityType::Organization => letters_index(tail).map(|i| i + 1),
            _ => tail.parse().ok(),
        };
        if let Some(n) = n {
            let c = &mut self.counters[entity as usize];
            *c = (*c).max(n);
        }
    }

    /// The person `surface` names: an earlier one whose name words it shares, or a new one.
    fn person(&mut self, surface: &str) -> Pseudonym {
        let words = name_words(surface);
        if words.is_empty() {
            return self.next_pseudonym(EntityType::Person);
        }
        // Anyone the same has a word of this name, so only those are compared.
        let found = self
            .person_candidates(&words)
            .find(|&i| same_person(&self.persons[i].words, &words));
        match found {
            Some(i) => {
                let p = self.persons[i].pseudonym.clone();
                if words.len() > self.persons[i].words.len() {
                    self.persons[i].words = words.clone();
                    self.index_person_words(i);
                    self.set_canonical(&p, EntityType::Person, surface);
                }
                self.remember_name_words(&words, &p);
                p
            }
            None => self.new_person(surface, words),
        }
    }

    fn new_person(&mut self, canonical: &str, words: Vec<String>) -> Pseudonym {
        let p = self.next_pseudonym(EntityType::Person);
        self.set_canonical(&p, EntityType::Person, canonical);
        self.remember_name_words(&words, &p);
        self.add_person(Person {
            pseudonym: p.clone(),
            words,
            emails: 0,
        });
        p
    }

    fn add_person(&mut self, person: Person) {
        let i = self.persons.len();
        self.person_at.insert(person.pseudonym.clone(), i);
        self.persons.push(person);
        self.index_person_words(i);
    }

    /// Lists person `i` under each of its words.
    fn index_person_words(&mut self, i: usize) {
        for w in &self.persons[i].words {
            let list = self.person_words.entry(w.as_str().into()).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }

    /// The persons that have one of `words`, first made first (the order a scan of every
    /// person would find them in).
    fn person_candidates(&self, words: &[String]) -> impl Iterator<Item = usize> {
        let mut candidates: Vec<usize> = words
            .iter()
            .filter_map(|w| self.person_words.get(w.as_str()))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        candidates.into_iter()
    }

    /// "Dan Johnson" makes "Dan" and "Johnson" known too.
    fn remember_name_words(&mut self, words: &[String], pseudonym: &Pseudonym) {
        if words.len() < 2 {
            return;
        }
        for w in words {
            if w.chars().nth(2).is_some() {
                let shown = title_case(w);
                // A word of a name that is an everyday word and no known given or family name
                // ("Port" of "Sarah Port") stands for the person only capitalised: in lower
                // case it is the word ("port 8080").
                let as_written =
                    names::is_dictionary_word(w) && !(is_first_name(w) || is_last_name(w));
                self.remember_matching(&shown, EntityType::Person, pseudonym, as_written);
            }
        }
    }

    /// An email whose local part names a known person becomes `USER_A_EMAIL`; one that names
    /// a new person (`first.last@`) creates that person.
    fn email(&mut self, surface: &str) -> Pseudonym {
        let key = (EntityType::Email, normalise(EntityType::Email, surface));
        if let Some(p) = self.normalised.get(&key) {
            return p.clone();
        }
        let plain = scan_text(surface);
        let local = plain.split('@').next().unwrap_or("");
        let parts = names::name_parts_of_local(local);
        let owner = self.person_candidates(&parts).find(|&i| {
            let p = &self.persons[i];
            !parts.is_empty()
                && (parts.iter().all(|w| p.words.contains(w))
                    && (parts.len() >= 2 || parts[0].len() >= 3))
        });
        let owner = match owner {
            Some(i) => Some(i),
            None if parts.len() >= 2
                && is_first_name(&parts[0])
                && is_last_name(&parts[parts.len() - 1]) =>
            {
                let name = parts
                    .iter()
                    .map(|w| title_case(w))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.new_person(&name, parts.clone());
                Some(self.persons.len() - 1)
            }
            None => None,
        };
        let p: Pseudonym = match owner {
            Some(i) => {
                let person = &mut self.persons[i];
                person.emails += 1;
                match person.emails {
                    1 => format!("{}_EMAIL", person.pseudonym),
                    n => format!("{}_EMAIL_{n}", person.pseudonym),
                }
                .into()
            }
            None => self.next_pseudonym(EntityType::Email),
        };
        reserve(&mut self.normalised).insert(key, p.clone());
        self.set_canonical(&p, EntityType::Email, surface);
        p
    }
}

/// Replaces the pseudonyms in `text` with the canonical values in `mappings`; returns the
/// text and the pseudonyms that had no mapping.
pub fn reveal(text: &str, mappings: &[Mapping]) -> (String, Vec<String>) {
    let canonical: HashMap<&str, &str> = mappings
        .iter()
        .filter(|m| m.canonical)
        .map(|m| (m.pseudonym.as_str(), m.value.as_str()))
        .collect();
    let mut unknown = Vec::new();
    let out = PSEUDONYM.replace_all(text, |c: &regex::Captures<'_>| {
        let p = &c[0];
        match canonical.get(p) {
            Some(v) => (*v).to_owned(),
            None => {
                if !unknown.iter().any(|u| u == p) {
                    unknown.push(p.to_owned());
                }
                p.to_owned()
            }
        }
    });
    (out.into_owned(), unknown)
}

#[cfg(test)]
mod tests;
