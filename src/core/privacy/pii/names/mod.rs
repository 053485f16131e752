//! Person and organisation detection: gazetteers of first and last names shipped in the
//! binary, capitalisation, titles, and context ("my name is", greetings, sign-offs, "my
//! colleague", "I work at", legal suffixes such as Ltd or GmbH).
//!
//! Depends on nothing outside `pii`; the gazetteers are embedded at build time.
//!
//! A name that is also a common word ("Will", "May", "Mark", "can") needs more than its
//! capital letter: a surname after it, a title before it, or a context that names people.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use super::{EntityType, Span};

mod lexicon;

use lexicon::*;
pub use lexicon::{is_common_word, is_dictionary_word, is_first_name, is_last_name};

/// Longer than any word `cue_before`, `person_at` and `orgs` compare a word with.
const CUE_WORD_MAX: usize = 16;

/// One word of the text.
#[derive(Debug)]
struct Tok<'a> {
    start: usize,
    end: usize,
    text: &'a str,
    /// `text` lower-cased, kept only when it is not all ASCII (see `lower`).
    unicode_lower: Option<Box<str>>,
    /// Starts with an upper-case letter and is not all capitals (acronyms are not names).
    cap: bool,
    /// The text between the previous word and this one.
    gap: &'a str,
    /// `lexicon` flags, looked up once per word; an identifier is no name and counts as a
    /// common word (it needs evidence nothing gives).
    role: u16,
    org_suffix: bool,
}

impl Tok<'_> {
    fn first(&self) -> bool {
        self.role & FIRST != 0
    }
    fn last(&self) -> bool {
        self.role & LAST != 0
    }
    fn common(&self) -> bool {
        self.role & COMMON != 0
    }
    /// The word lower-cased, for comparing with the cue words. Only the few words next to a
    /// candidate name are compared, so ASCII words are lower-cased here, when asked, rather
    /// than all of them up front, and into `buf`, not a new string. No cue word is longer
    /// than `buf`: a longer word comes back as written, which equals none of them.
    fn lower<'b>(&'b self, buf: &'b mut [u8; CUE_WORD_MAX]) -> &'b str {
        let b = self.text.as_bytes();
        match &self.unicode_lower {
            Some(lower) => lower,
            None if b.len() <= CUE_WORD_MAX && b.iter().any(u8::is_ascii_uppercase) => {
                let buf = &mut buf[..b.len()];
                buf.copy_from_slice(b);
                buf.make_ascii_lowercase();
                // Without a Unicode lower case the word is ASCII.
                std::str::from_utf8(buf).unwrap_or(self.text)
            }
            None => self.text,
        }
    }
}

// What the tokenizer needs to know of a byte, as bit flags.
/// `[A-Za-z0-9_]`: goes on with a word ("USER_A", "dan_johnson" and "v2beta" are one word).
const B_WORD: u8 = 1;
/// An ASCII letter: starts a word.
const B_LETTER: u8 = 1 << 1;
const B_UPPER: u8 = 1 << 2;
const B_LOWER: u8 = 1 << 3;
/// A digit or `_`: the word is an identifier, no name.
const B_IDENT: u8 = 1 << 4;
/// Not ASCII: decoded as a character.
const B_HIGH: u8 = 1 << 5;

static BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_uppercase() {
            B_WORD | B_LETTER | B_UPPER
        } else if b.is_ascii_lowercase() {
            B_WORD | B_LETTER | B_LOWER
        } else if b.is_ascii_digit() || b == b'_' {
            B_WORD | B_IDENT
        } else if b >= 0x80 {
            B_HIGH
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Splits `text` into words and looks each up in the lexicon. ASCII is read a byte class
/// at a time; other characters are decoded.
fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let bytes = text.as_bytes();
    let mut toks = Vec::with_capacity(bytes.len() / 4);
    let mut prev_end = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let class = BYTE_CLASS[usize::from(b)];
        if class & B_LETTER == 0 {
            if class & B_HIGH == 0 {
                i += 1;
                continue;
            }
            let c = char_at(text, i).expect("a character starts here");
            if !c.is_alphabetic() {
                i += c.len_utf8();
                continue;
            }
        }
        let start = i;
        let mut end = i + char_at(text, i).map_or(1, char::len_utf8);
        loop {
            while bytes
                .get(end)
                .is_some_and(|&b| BYTE_CLASS[usize::from(b)] & B_WORD != 0)
            {
                end += 1;
            }
            let Some(c) = char_at(text, end) else { break };
            let joined = matches!(c, '\'' | '’' | '-')
                && char_at(text, end + c.len_utf8()).is_some_and(char::is_alphabetic);
            if c.is_alphabetic() || joined {
                end += c.len_utf8();
            } else {
                break;
            }
        }
        i = end;
        let mut word = &text[start..end];
        // Possessives: "Dan's" is Dan.
        if word.ends_with(['s', 'S']) {
            for s in ["'s", "’s", "'S"] {
                if word.len() > s.len() + 1 && word.ends_with(s) {
                    word = &word[..word.len() - s.len()];
                }
            }
        }
        let end = start + word.len();
        let w = word.as_bytes();
        // The classes of the word's bytes after the first, in one pass.
        let rest = w[1..]
            .iter()
            .fold(0, |acc, &b| acc | BYTE_CLASS[usize::from(b)]);
        let (first_upper, rest_lower, one_letter, unicode_lower, mut role) =
            if (BYTE_CLASS[usize::from(w[0])] | rest) & B_HIGH == 0 {
                (
                    w[0].is_ascii_uppercase(),
                    rest & B_LOWER != 0,
                    w.len() == 1,
                    None,
                    LEXICON.get_ascii(word),
                )
            } else {
                let lower = word.to_lowercase();
                // "María", "José", "François": the lexicons also hold names without their
                // accents, so a word not found as written is looked up folded.
                let role = match lexicon(&lower) {
                    0 => fold_accents(&lower).map_or(0, |folded| lexicon(&folded)),
                    role => role,
                };
                (
                    word.chars().next().is_some_and(char::is_uppercase),
                    word.chars().skip(1).any(char::is_lowercase),
                    word.chars().count() == 1,
                    Some(lower.into_boxed_str()),
                    role,
                )
            };
        // The first byte is a letter.
        let ident = rest & B_IDENT != 0;
        if ident {
            role = (role & !(FIRST | LAST)) | COMMON;
        }
        toks.push(Tok {
            start,
            end,
            text: word,
            unicode_lower,
            cap: !ident && first_upper && (rest_lower || one_letter),
            gap: &text[prev_end..start],
            org_suffix: role & ORG_SUFFIX != 0 && ORG_SUFFIXES.contains(&word),
            role,
        });
        prev_end = end;
    }
    toks
}

/// The character that starts at byte `i` of `text` (a character boundary), decoded only
/// when it is not ASCII.
/// `word` with the accents of Latin letters taken off, when it has any.
fn fold_accents(word: &str) -> Option<String> {
    let mut folded = String::with_capacity(word.len());
    let mut changed = false;
    for c in word.chars() {
        let plain = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            'ß' => {
                folded.push_str("ss");
                changed = true;
                continue;
            }
            c => {
                folded.push(c);
                continue;
            }
        };
        folded.push(plain);
        changed = true;
    }
    changed.then_some(folded)
}

fn char_at(text: &str, i: usize) -> Option<char> {
    match text.as_bytes().get(i) {
        Some(&b) if b.is_ascii() => Some(char::from(b)),
        Some(_) => text[i..].chars().next(),
        None => None,
    }
}

/// How the words before a candidate name say it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cue {
    /// "my name is", "call me", "signed": any non-word.
    Strong,
    /// "Dear", "Hi", "Thanks,", "Regards,\n": a capitalised non-word or a known name, so
    /// "Thanks, noted." keeps its "noted".
    Greeting,
    /// "my colleague": a capitalised word is enough.
    Relation,
    /// "I'm", "ask", "with", "cc": only a known name.
    Weak,
    /// "Mr.", "Dr": a capitalised word.
    Title,
    None,
}

fn cue_before(toks: &[Tok<'_>], i: usize) -> Cue {
    let Some(prev) = i.checked_sub(1).map(|p| &toks[p]) else {
        return Cue::None;
    };
    // The lexicon said what the word before is; most words are no cue at all.
    let role = prev.role;
    if role & CUE == 0 {
        return Cue::None;
    }
    let gap = toks[i].gap;
    // Only spaces, a comma or a line break between the cue and the name.
    if !gap
        .chars()
        .all(|c| matches!(c, ' ' | ',' | '\n' | '\r' | '\t' | '.' | ':' | '-'))
    {
        return Cue::None;
    }
    if role & TITLE != 0 && prev.cap {
        return Cue::Title;
    }
    // The word before and the one before that, lower-cased, for the pairs.
    let (mut b2, mut b1) = ([0; CUE_WORD_MAX], [0; CUE_WORD_MAX]);
    let w2 = i.checked_sub(2).map_or("", |k| toks[k].lower(&mut b2));
    let p = prev.lower(&mut b1);
    if (w2 == "name" && p == "is")
        || (w2 == "call" && p == "me")
        || p == "named"
        || (p == "name" && gap.contains(':'))
        || (p == "signed" && gap.contains(['\n', ',', ':']))
    {
        return Cue::Strong;
    }
    if role & GREETING != 0
        || (role & SIGN_OFF != 0 && gap.contains(['\n', ',']))
        || (w2 == "thank" && p == "you")
    {
        return Cue::Greeting;
    }
    // "my colleague Dan", "unser Kunde Senol Rädel", "le client Thibaut", "el cliente
    // Bautista"; "Customer Senol Rädel says" at the start of a sentence; "account holder".
    let sentence_start = i < 2 || prev.gap.contains(['\n', '.', '!', '?', ':']);
    if role & RELATION != 0
        && (matches!(
            w2,
            "my" | "our"
                | "your"
                | "his"
                | "her"
                | "their"
                | "the"
                | "der"
                | "die"
                | "den"
                | "dem"
                | "unser"
                | "unsere"
                | "unserem"
                | "unseren"
                | "mein"
                | "meine"
                | "le"
                | "la"
                | "les"
                | "notre"
                | "mon"
                | "ma"
                | "el"
                | "los"
                | "nuestro"
                | "nuestra"
                | "mi"
                | "account"
        ) || (prev.cap && sentence_start))
    {
        return Cue::Relation;
    }
    if role & PERSON_VERB != 0 {
        return Cue::Relation;
    }
    // The Spanish personal "a" and the French "à" after a verb that takes a person:
    // "llamar a Hernando", "pregúntale a Marcia", "demande à Lucie"; "frag mal Gino".
    if (p == "a"
        && matches!(
            w2,
            "llamar"
                | "llame"
                | "llama"
                | "llamen"
                | "pregúntale"
                | "pregunta"
                | "pregunte"
                | "escribe"
                | "escriba"
                | "avisa"
                | "avise"
                | "dile"
                | "contacta"
                | "contacte"
        ))
        || (p == "mal" && matches!(w2, "frag" | "fragt" | "ruf" | "schreib"))
        || (p == "à"
            && matches!(
                w2,
                "demande" | "demandez" | "écris" | "écrivez" | "parle" | "parlez" | "dis" | "dites"
            ))
    {
        return Cue::Relation;
    }
    if role & WEAK_CUE != 0
        || (w2 == "i" && p == "am")
        || (w2 == "this" && p == "is")
        || (w2 == "it" && p == "is")
        || (w2 == "hier" && p == "ist")
        || (w2 == "ich" && p == "bin")
        || (w2 == "je" && p == "suis")
        || p == "soy"
        || p == "ici"
    {
        return Cue::Weak;
    }
    Cue::None
}

/// How many words after `i` continue a name (middle names, initials, particles, surnames).
fn continuation(toks: &[Tok<'_>], i: usize, lowercase_ok: bool) -> usize {
    let mut n = 0;
    let mut j = i + 1;
    while j < toks.len() && n < 3 {
        let t = &toks[j];
        let gap = t.gap;
        let initial_gap = gap == ". " && toks[j - 1].text.chars().count() == 1;
        if gap != " " && !initial_gap {
            break;
        }
        // A letter with a dot and more letters after it is a degree ("B.Sc."), no initial.
        if t.text.chars().count() == 1 && toks.get(j + 1).is_some_and(|nx| nx.gap == ".") {
            break;
        }
        // One or two particles before a capitalised word: "van der Berg", "de la Cruz".
        let particles = (0..2)
            .take_while(|&k| {
                toks.get(j + k)
                    .is_some_and(|p| p.role & PARTICLE != 0 && (k == 0 || p.gap == " "))
            })
            .count();
        let particle = particles > 0
            && toks
                .get(j + particles)
                .is_some_and(|nx| nx.cap && nx.gap == " ");
        let cap_part = t.cap && (t.last() || t.first() || !t.common());
        let low_part = lowercase_ok && !t.cap && t.last() && !t.common();
        if particle {
            n += particles + 1;
            j += particles + 1;
            continue;
        }
        if !(cap_part || low_part) {
            break;
        }
        n += 1;
        j += 1;
    }
    n
}

/// Adds person and organisation spans found in `text` to `found`.
pub fn detect_people_and_orgs(text: &str, found: &mut Vec<Span>) {
    let toks = tokenize(text);
    orgs(text, &toks, found);
    firms_named_after_partners(&toks, found);
    let mut i = 0;
    while i < toks.len() {
        match person_at(&toks, i) {
            Some(last) => {
                found.push(Span {
                    start: toks[i].start,
                    end: toks[last].end,
                    entity: EntityType::Person,
                });
                i = last + 1;
            }
            None => i += 1,
        }
    }
}

/// If a name starts at word `i`, the index of its last word.
fn person_at(toks: &[Tok<'_>], i: usize) -> Option<usize> {
    let t = &toks[i];
    if t.role & TITLE != 0 || t.text.len() < 2 {
        return None;
    }
    // A relation noun ("Kunde", "Client" at a sentence start) is the cue, never the name.
    if t.role & RELATION != 0 && t.role & (FIRST | LAST) == 0 {
        return None;
    }
    // Most words are lower-case common words that are no known name: no cue below takes
    // one, and no name starts with one.
    if !t.cap && t.common() && !t.first() && !t.last() {
        return None;
    }
    let cue = cue_before(toks, i);
    let (first, common) = (t.first(), t.common());
    let known = first || t.last();
    let take = |lowercase_ok: bool| Some(i + continuation(toks, i, lowercase_ok));
    match cue {
        Cue::Title if t.cap => return take(false),
        Cue::Strong if (!common || (known && t.cap)) && t.text.chars().all(char::is_alphabetic) => {
            return take(true);
        }
        Cue::Greeting
            if ((t.cap && !common) || (known && (t.cap || !common)))
                && t.text.chars().all(char::is_alphabetic) =>
        {
            return take(true);
        }
        Cue::Relation if !common && (t.cap || known) => return take(true),
        // "ask claudius bruder", "tell maximiano del calvet": after a verb that takes a
        // person, two lower-case words that are no English words (particles between).
        Cue::Relation if !common && !t.cap && toks[i - 1].role & PERSON_VERB != 0 => {
            if let Some(last) = unlisted_lowercase_pair(toks, i) {
                return Some(last);
            }
        }
        // "hier ist Senol Rädel von …", "soy Teresita Solana de …", "ici Suzanne Sauvage
        // de …": capitalised words between a self-introduction and where they are from.
        Cue::Weak if t.cap && !common => {
            // The name ends before the first "from" word (which may also be read as a
            // particle: `von`, `de`).
            let n = continuation(toks, i, false);
            let introduced = matches!(
                toks[i - 1].lower(&mut [0; CUE_WORD_MAX]),
                "i'm" | "im" | "am" | "is" | "ist" | "bin" | "suis" | "soy" | "ici"
            );
            let from = (0..=n).find(|k| {
                toks.get(i + k + 1).is_some_and(|f| {
                    f.gap == " "
                        && matches!(
                            f.lower(&mut [0; CUE_WORD_MAX]),
                            "from" | "von" | "vom" | "de" | "du" | "del" | "at" | "bei" | "chez"
                        )
                })
            });
            if let Some(k) = from.filter(|_| introduced) {
                return Some(i + k);
            }
            if known {
                return take(false);
            }
        }
        Cue::Weak if known && !common => return take(!t.cap),
        // "this is sjoerd from support", "I'm aoife from billing": in lower case (the
        // capitalised forms are taken above).
        Cue::Weak
            if !common
                && toks
                    .get(i + 1)
                    .is_some_and(|n| n.lower(&mut [0; CUE_WORD_MAX]) == "from" && n.gap == " ")
                && matches!(
                    toks[i - 1].lower(&mut [0; CUE_WORD_MAX]),
                    "i'm" | "im" | "am" | "is"
                ) =>
        {
            return Some(i);
        }
        _ => {}
    }
    // Without a cue, a name starts with a known first name, or with an unknown capitalised
    // word before a surname.
    if !first && (common || !t.cap) {
        return None;
    }
    let next = continuation(toks, i, !t.cap);
    let surname_follows = (1..=next).any(|k| toks[i + k].last() && !toks[i + k].common());
    if t.cap {
        if first && !common {
            return Some(i + next);
        }
        if first && common && surname_follows {
            return Some(i + next);
        }
        // An unknown capitalised word before a known surname: "Zephyrine Johnson".
        let surname_next =
            next > 0 && toks[i + 1].cap && toks[i + 1].last() && !toks[i + 1].common();
        if !common && !first && surname_next {
            return Some(i + next);
        }
        return None;
    }
    // Lower case: a known first name followed by a known surname ("dan johnson").
    if first && !common && next > 0 && surname_follows {
        return Some(i + next);
    }
    None
}

/// A legal form written with dots ("S.L.", "S.A.", "B.V."): the letters after the first,
/// each one a word of its own after a dot.
fn dotted_legal_form(toks: &[Tok<'_>], i: usize) -> bool {
    let (Some(prev), t) = (i.checked_sub(1).map(|p| &toks[p]), &toks[i]) else {
        return false;
    };
    let after_dot = toks.get(i + 1).is_none_or(|n| n.gap.starts_with('.'));
    t.gap == "."
        && after_dot
        && matches!(
            (prev.text, t.text),
            ("S", "L" | "A" | "Com" | "Coop") | ("B" | "N" | "e", "V") | ("S", "p") | ("S", "r")
        )
}

/// The sign-offs after which a signature block starts (lower case, without the comma).
const SIGN_OFF_LINES: &[&str] = &[
    "thanks",
    "thank you",
    "regards",
    "best regards",
    "kind regards",
    "best",
    "cheers",
    "sincerely",
    "mit freundlichen grüßen",
    "freundliche grüße",
    "viele grüße",
    "beste grüße",
    "grüße",
    "cordialement",
    "bien cordialement",
    "bien à vous",
    "salutations",
    "saludos",
    "un saludo",
    "atentamente",
    "cordiales saludos",
];

/// The company line of a signature block: after a sign-off line and a line holding a
/// person found in `found`, a short capitalised line without digits, `@` or sentence
/// punctuation, with a word that is neither a common nor a dictionary word (or is a family
/// name): `Thanks,\nHannah Krause\nHarloff\nTel. …`. Added only where nothing else was found.
pub fn signature_orgs(text: &str, found: &mut Vec<Span>) {
    if !text.contains('\n') {
        return;
    }
    let mut lines = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        lines.push((at, body));
        at += line.len();
    }
    let overlaps = |found: &[Span], start: usize, end: usize| {
        found.iter().any(|s| s.start < end && start < s.end)
    };
    for k in 0..lines.len().saturating_sub(2) {
        let sign_off = lines[k].1.trim().trim_end_matches([',', '!']);
        // The longest sign-off is 24 bytes: most lines are rejected before lower-casing.
        if sign_off.len() > 32 {
            continue;
        }
        let sign_off = sign_off.to_lowercase();
        if !SIGN_OFF_LINES.contains(&sign_off.as_str()) {
            continue;
        }
        let (name_at, name) = lines[k + 1];
        let has_person = found.iter().any(|s| {
            s.entity == EntityType::Person && s.start >= name_at && s.end <= name_at + name.len()
        });
        let (line_at, line) = lines[k + 2];
        let trimmed = line.trim();
        let start = line_at + (line.len() - line.trim_start().len());
        let end = start + trimmed.len();
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let plausible = has_person
            && (2..=60).contains(&trimmed.chars().count())
            && (1..=6).contains(&words.len())
            && trimmed.starts_with(char::is_uppercase)
            && !trimmed
                .contains(|c: char| c.is_ascii_digit() || matches!(c, '@' | ':' | '?' | '!'))
            && !trimmed.ends_with('.')
            && words.iter().any(|w| {
                let w = w
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase();
                !w.is_empty()
                    && (lexicon::is_last_name(&w)
                        || (!lexicon::is_common_word(&w) && !is_dictionary_word(&w)))
            });
        if plausible && !overlaps(found, start, end) {
            found.push(Span {
                start,
                end,
                entity: EntityType::Organization,
            });
        }
    }
}

/// Firms named after their partners: `Young, Harris and Kelly`, `Baker, Lee & Ortiz`,
/// `Pellicer, Vidal y Catalán` (three capitalised words, a comma list closed by a joining
/// word, each a known family name or neither a common nor a dictionary word, two of them
/// known family names), and
/// `Morton-Ryan` (two names joined by a hyphen, one a known family name and not both given
/// names as in `Anne-Marie`, standing alone: not after a given
/// name or a title, where it is a person's double-barrelled surname).
fn firms_named_after_partners(toks: &[Tok<'_>], found: &mut Vec<Span>) {
    let name = |t: &Tok<'_>| {
        t.cap && (t.last() || (!t.common() && !is_dictionary_word(t.lower(&mut [0; CUE_WORD_MAX]))))
    };
    let covered = |found: &[Span], start: usize, end: usize| {
        found
            .iter()
            .any(|s| s.entity == EntityType::Organization && s.start <= start && s.end >= end)
    };
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        // A comma list: `A, B and C` / `A, B & C`.
        if let (Some(b), Some(j)) = (toks.get(i + 1), toks.get(i + 2)) {
            let (c, joined) = if j.gap == " & " {
                (Some(j), true)
            } else {
                let joiner = j.gap == " "
                    && matches!(
                        j.lower(&mut [0; CUE_WORD_MAX]),
                        "and" | "und" | "et" | "y" | "e"
                    );
                (toks.get(i + 3).filter(|c| c.gap == " "), joiner)
            };
            if let Some(c) = c.filter(|_| joined && b.gap == ", ")
                && name(t)
                && name(b)
                && name(c)
                && [t, b, c].iter().filter(|w| w.last()).count() >= 2
                && !covered(found, t.start, c.end)
            {
                found.push(Span {
                    start: t.start,
                    end: c.end,
                    entity: EntityType::Organization,
                });
                i += 3;
                continue;
            }
        }
        // `Morton-Ryan`, alone (one token: the tokenizer keeps a hyphenated word whole).
        if let Some((x, y)) = t.text.split_once('-')
            && t.cap
            && !y.contains('-')
            && y.starts_with(char::is_uppercase)
        {
            let role = |w: &str| lexicon::lexicon(&w.to_lowercase());
            let (rx, ry) = (role(x), role(y));
            let plain = |w: &str, r: u16| {
                r & LAST != 0 || (r & COMMON == 0 && !is_dictionary_word(&w.to_lowercase()))
            };
            let family = (rx | ry) & LAST != 0 && !(rx & FIRST != 0 && ry & FIRST != 0);
            let after_name = i > 0 && {
                let p = &toks[i - 1];
                (p.cap && t.gap == " ") || p.role & TITLE != 0
            };
            let before_name = toks.get(i + 1).is_some_and(|n| n.cap && n.gap == " ");
            if family
                && plain(x, rx)
                && plain(y, ry)
                && !after_name
                && !before_name
                && !covered(found, t.start, t.end)
            {
                found.push(Span {
                    start: t.start,
                    end: t.end,
                    entity: EntityType::Organization,
                });
            }
        }
        i += 1;
    }
}

/// The index of the second word when word `i` and the next one (after up to two particles)
/// are lower-case letters only and neither a common nor a dictionary word.
fn unlisted_lowercase_pair(toks: &[Tok<'_>], i: usize) -> Option<usize> {
    let unlisted = |t: &Tok<'_>| {
        !t.cap
            && !t.common()
            && t.text.chars().count() >= 3
            && t.text.chars().all(char::is_alphabetic)
            && !is_dictionary_word(t.lower(&mut [0; CUE_WORD_MAX]))
    };
    if !unlisted(&toks[i]) {
        return None;
    }
    let mut j = i + 1;
    while toks
        .get(j)
        .is_some_and(|p| p.role & PARTICLE != 0 && p.gap == " ")
        && j - i <= 2
    {
        j += 1;
    }
    let last = toks.get(j)?;
    (last.gap == " " && unlisted(last)).then_some(j)
}

fn orgs(text: &str, toks: &[Tok<'_>], found: &mut Vec<Span>) {
    for (i, t) in toks.iter().enumerate() {
        let dotted = dotted_legal_form(toks, i);
        // Where the legal form starts: its first letter when written with dots.
        let form = if dotted { i - 1 } else { i };
        // `INC-2291`, `SA-17`: a ticket or item key, not a legal form.
        let keyed = text[t.end..]
            .strip_prefix('-')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
        let legal = !keyed && (dotted || t.org_suffix || (t.role & LEGAL != 0 && t.text.len() > 1));
        if legal
            && form > 0
            && toks[form]
                .gap
                .trim_matches(|c: char| c == ' ' || c == ',')
                .is_empty()
        {
            // Walk back over the name: capitalised words joined by spaces, "&", "and", "of".
            let lower_ok = t.role & LEGAL != 0;
            let mut k = form;
            let mut words = 0;
            while k > 0 && words < 4 {
                let p = &toks[k - 1];
                let joined = matches!(toks[k].gap, " " | " & " | ", " | "-");
                if !joined {
                    break;
                }
                // Common words may be part of a name ("Blue Sun GmbH") but not start it.
                let ok = p.cap || (lower_ok && !p.common() && words == 0);
                // "Hayes and Armstrong LLC", "Barnes und Noble GmbH": a joining word between
                // two capitalised ones.
                let joins = !p.cap
                    && k >= 2
                    && toks[k - 2].cap
                    && p.gap == " "
                    && matches!(
                        p.lower(&mut [0; CUE_WORD_MAX]),
                        "and" | "und" | "et" | "y" | "of"
                    );
                if joins {
                    k -= 2;
                    words += 2;
                    continue;
                }
                if !ok {
                    break;
                }
                k -= 1;
                words += 1;
            }
            while words > 0 && toks[k].cap && toks[k].common() {
                k += 1;
                words -= 1;
            }
            if words > 0 {
                found.push(Span {
                    start: toks[k].start,
                    end: t.end,
                    entity: EntityType::Organization,
                });
            }
        }
        // "I work at Initech", "employed by Globex".
        if !t.cap || t.common() || t.first() || t.gap != " " {
            continue;
        }
        let (mut b1, mut b2) = ([0; CUE_WORD_MAX], [0; CUE_WORD_MAX]);
        let p = i.checked_sub(1).map_or("", |k| toks[k].lower(&mut b1));
        let pp = i.checked_sub(2).map_or("", |k| toks[k].lower(&mut b2));
        let cue = matches!(p, "at" | "for" | "by")
            && matches!(
                pp,
                "work"
                    | "works"
                    | "working"
                    | "worked"
                    | "employed"
                    | "job"
                    | "intern"
                    | "interning"
                    | "contractor"
                    | "engineer"
                    | "manager"
                    | "consultant"
            )
            || matches!(p, "joined" | "employer" | "company")
            || (pp == "company" && matches!(p, "called" | "named" | "is"));
        if cue {
            let mut last = i;
            while last + 1 < toks.len()
                && last - i < 2
                && toks[last + 1].cap
                && !toks[last + 1].common()
                && toks[last + 1].gap == " "
            {
                last += 1;
            }
            found.push(Span {
                start: t.start,
                end: toks[last].end,
                entity: EntityType::Organization,
            });
        }
    }
}

/// Name words in an email's local part (`dan.johnson`, `j_smith`), lower-cased.
pub fn name_parts_of_local(local: &str) -> Vec<String> {
    local
        .split(|c: char| !c.is_alphabetic())
        .filter(|p| p.len() >= 2)
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests;
