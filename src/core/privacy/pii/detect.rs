//! Pattern detectors (emails, phones, cards, IBANs, IPs, SSNs, secrets, credential URLs,
//! street addresses), each regex compiled once, plus the entry point that adds the name and
//! organisation detectors and resolves overlaps.
//!
//! A pattern runs only on texts that have its cue (see `cues`): something no match of it
//! can lack.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::cues::Cues;
use super::validate;
use super::{EntityType, Span, is_pseudonym, names, normalize, resolve};

/// Compiles `pattern` with ASCII word boundaries: Unicode `\b` would stop the regex engine's
/// fast DFA on non-ASCII text, and every boundary here is between ASCII characters anyway.
pub(super) fn re(pattern: &str) -> Regex {
    Regex::new(&pattern.replace(r"\b", r"(?-u:\b)")).expect("PII patterns are valid")
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b",
    )
});
static URL_CREDENTIALS: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s/?#@:]+:[^\s/?#@]+@[^\s<>]+"));
/// Provider token formats: the whole match is the secret.
static TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        r"|\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        r"|\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
        r"|\bsk-(?:ant-(?:api|admin)\d{2}-|proj-|svcacct-|admin-|or-v1-)?[A-Za-z0-9_-]{20,}",
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
        r"|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}",
        r"|\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b",
        r"|\bwhsec_[A-Za-z0-9]{24,}\b",
        r"|\bAIza[0-9A-Za-z_-]{35}",
        r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
        r"|\bglpat-[A-Za-z0-9_-]{20}\b",
        r"|\bnpm_[A-Za-z0-9]{36}\b",
        r"|\bhf_[A-Za-z0-9]{30,}\b",
    ))
});
/// A value assigned to a name that says it is secret: `DB_PASSWORD=...`, `"api_key": "..."`,
/// `my password is ...`. Group 1 is the value, at most `SECRET_VALUE_CHARS` characters of it
/// (see `assigned_secrets`).
static ASSIGNED_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)\b[A-Za-z0-9_.-]*(?:password|passwd|passwort|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?|bearer)[A-Za-z0-9_]*["']?(?:\s*[:=]\s*|\s*=>\s*|\s+(?:is|was|to|of)\s+(?:now\s+)?|\s+)["'`]?([^\s"'`,;<>(){}\[\]]{6,})"#,
    )
});
/// The longest assigned value taken as one secret, in characters.
const SECRET_VALUE_CHARS: usize = 400;
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d(?:[ -]?\d){11,18}\b"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static SSN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(\d{3})-(\d{2})-(\d{4})\b|(?i:\b(?:ssn|social security(?: number)?|soc\.? sec\.?)\b\D{0,20}?\b(\d{3})[ ]?(\d{2})[ ]?(\d{4})\b)",
    )
});
/// Separators between digit groups: one space, dot or hyphen, two or three spaces (mixed
/// spacing), or a slash between area code and number (`089 / 123 456 78`). The number ends at
/// a word boundary or at the `x` of an extension written right after it.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,5}\)[ .-]?)?|\(\d{1,5}\)[ .-]?|\b)\d{1,5}(?:(?:[ .-]| {2,3}| ?/ ?)?(?:\(\d{1,5}\)|\d{1,5})){1,6}(?:\b|[xX])",
    )
});
/// An extension after a phone number: `x13503`, `ext. 12`, `extension 4`, `Durchwahl 12`.
static PHONE_EXTENSION: LazyLock<Regex> =
    LazyLock::new(|| re(r"^,? ?(?i:x|ext\.?|extn\.?|extension|durchwahl|poste)[ .:]?\d{1,6}\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
});
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:[0-9a-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%[0-9a-z]+)?")
});
/// `221B Baker Street, London NW1 6XE`, `1600 Pennsylvania Ave NW, Washington, DC 20500`.
static ADDRESS_EN: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b\d{1,5}[A-Za-z]?,?(?: [A-Za-z][A-Za-z'.-]*){1,4} ",
        r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|Crescent|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Row|Gardens|Mews|Walk|Hill|Green)\b\.?",
        r"(?: (?:N|S|E|W|NE|NW|SE|SW)\b)?",
        r"(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|#)\.? ?[A-Za-z0-9-]+)?",
        r"(?:, [A-Z][a-z][A-Za-z.'-]*(?: [A-Z][a-z][A-Za-z.'-]*){0,2})?",
        r"(?:,? [A-Z]{2} \d{5}(?:-\d{4})?|,? [A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b)?",
    ))
});
/// `Hauptstraße 5, 10115 Berlin`, `Berliner Str. 12a`, `Hans-Josef-Mentzel-Ring 22/65`,
/// `… 41931 Mühldorf am Inn`.
static ADDRESS_DE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:(?:[A-ZÄÖÜ][a-zäöüß]+ )?[A-ZÄÖÜ][a-zäöüß]*(?:-[A-ZÄÖÜ][a-zäöüß]*)*-?(?:straße|strasse|str\.|Straße|Strasse|weg|Weg|platz|Platz|allee|Allee|gasse|Gasse|ring|Ring|damm|Damm|ufer|Ufer)|(?:Am|An der|Auf der|Im|In der|Unter den) [A-ZÄÖÜ][a-zäöüß]+) \d{1,4}[a-z]?(?:[/-]\d{1,4}[a-z]?)?(?:, ?\d{5} [A-ZÄÖÜ][a-zäöüß]+(?:[ -][A-ZÄÖÜ][a-zäöüß]+)?(?: (?:am|an der|im|in der|ob der|bei) [A-ZÄÖÜ][a-zäöüß]+)?)?",
    )
});
/// `12 rue de la Paix, 75002 Paris`, `5, avenue Victor Hugo`.
static ADDRESS_FR: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b\d{1,4}(?: ?(?:bis|ter))?,? (?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|route|cours) (?:(?:de|du|des|la|le|l'|d')\s?)*[A-ZÉÈ][\w'-]*(?: (?:(?:de|du|des|la|le) |d'|l')?[A-ZÉÈ][\w'-]*){0,3}(?:, ?\d{5} [A-Z][\w-]+(?: [A-Z][\w-]+)?)?",
    )
});
/// US street types beyond [`ADDRESS_EN`]'s (the USPS suffixes address generators use), many
/// of them everyday words: only after capitalised words (`742 Evergreen Keys`, `55 Ocean Fort,
/// Tampa`), with the same unit, city and postcode tail.
static ADDRESS_EN_MORE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b\d{1,5}[A-Za-z]?,?(?: [A-Z][a-z'.-]+){1,3} ",
        r"(?:Alley|Bend|Bluffs?|Branch|Bridge|Brooks?|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Cliffs?|Commons?|Corners?|Courts|Coves?|Creek|Crest|Crossing|Crossroad|Curve|Dale|Divide|Drives|Estates?|Expressway|Extensions?|Falls|Ferry|Fields?|Flats?|Fords?|Forest|Forges?|Forks?|Fort|Freeway|Gateway|Glens?|Greens|Groves?|Harbors?|Haven|Heights|Hills|Hollow|Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?|Lakes?|Landing|Lights|Loaf|Locks|Lodge|Loop|Manors?|Meadows?|Mills?|Mission|Motorway|Mount|Mountains?|Neck|Orchard|Oval|Overpass|Parks?|Parkways|Passage|Pike|Pines?|Plains?|Plaza|Points?|Ports?|Prairie|Radial|Ranch|Rapids?|Ridges?|River|Roads|Route|Shoals?|Shores?|Skyway|Springs?|Spurs?|Squares|Station|Stravenue|Stream|Streets|Summit|Throughway|Trace|Track|Trafficway|Tunnel|Turnpike|Underpass|Unions?|Valleys?|Viaduct|Views?|Villages?|Ville|Vista|Walks|Ways|Wells?)\b",
        r"(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|#)\.? ?[A-Za-z0-9-]+)?",
        r"(?:, [A-Z][a-z][A-Za-z.'-]*(?: [A-Z][a-z][A-Za-z.'-]*){0,2})?",
        r"(?:,? [A-Z]{2} \d{5}(?:-\d{4})?)?",
    ))
});
/// `Calle Mayor 5, 28013 Madrid`, `Avenida de la Constitución 21`, `Via Roma 10, 00184 Roma`,
/// `Pasaje de Irene Iglesia 40 Piso 8, Palencia, 09277`:
/// Spanish, Catalan, Italian and Portuguese streets, the type first and the number after.
static ADDRESS_SOUTH: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b(?:Calle|Callejón|Avenida|Avda\.|Paseo|Pasaje|Pasadizo|Plaza|Carrer|Camino|Carretera|Ronda|Rambla|Alameda|Acceso|Cañada|Cuesta|Glorieta|Sendero|Urbanización|Vía|Via|Viale|Piazza|Corso|Largo|Vicolo|Rua|Travessa) ",
        r"(?:(?:de|del|de la|de los|de las|la|el|di|della|delle|dei|degli|da|do|dos) )*",
        r"\p{Lu}[\p{L}'-]*(?: (?:(?:de|del|la|di|della|da|do) )?\p{Lu}[\p{L}'-]*){0,3},? \d{1,4}[A-Za-z]?",
        r"(?: (?:Piso|Puerta|Portal|Escalera|Apt\.|Apartamento) \d{1,4}[A-Za-z]?)*",
        r"(?:, ?\d{5} \p{Lu}[\p{L}-]+(?: \p{Lu}[\p{L}-]+)?|, \p{Lu}[\p{L}-]+(?: \p{Lu}[\p{L}-]+)?, \d{5}\b)?",
    ))
});
/// `6 Kayleigh coves, North Joseph, CO20 7LN`, `Flat 44o, Nicholson crescent, Scottborough,
/// JE3V 0WB`: a British address by its postcode, the street type in any case (people and
/// address generators write `crescent`, `coves`): a house number or a flat, a street of one
/// to four words, one to three words of town, the postcode.
static ADDRESS_UK: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b(?:(?:Flat|Studio|Apartment|Unit|Suite) \d{1,4}[A-Za-z]?, (?:\d{1,5}[A-Za-z]?,? )?|\d{1,5}[A-Za-z]?,? )",
        r"\p{Lu}[\p{L}'.-]*(?: [\p{L}'.-]+){1,3}, ",
        r"(?:\p{Lu}[\p{L}'.-]*)(?: \p{Lu}[\p{L}'.-]*){0,2},? ",
        r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b",
    ))
});
static PO_BOX: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\bP\.? ?O\.? Box \d{1,6}\b"));

/// Every piece of personal data in `text`, non-overlapping, in order. The detectors read the
/// text's scan view (see `normalize`), so an encoded value is found where it is written:
/// the span covers the original characters (`dan&#64;example.com`, a whole base64 run).
///
/// A long text (a piece of `redact --session` input, a large payload) is searched one
/// paragraph at a time, so each detector runs only where its cue is, as on a message of its
/// own, instead of every detector over the whole text because somewhere in it each cue
/// appears. A paragraph ends at a blank line, which no value spans, except inside a PEM
/// block (an encrypted key has one after its headers): that stays whole.
pub fn detect(text: &str) -> Vec<Span> {
    if text.len() < PARAGRAPHS_FROM {
        return detect_within(text, 0);
    }
    let mut found = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = paragraph_end(text, start);
        let paragraph = &text[start..end];
        if !paragraph.trim().is_empty() {
            found.extend(detect_within(paragraph, 0).into_iter().map(|s| Span {
                start: s.start + start,
                end: s.end + start,
                entity: s.entity,
            }));
        }
        start = end + 1;
    }
    found
}

/// Texts at least this long are searched paragraph by paragraph.
const PARAGRAPHS_FROM: usize = 8 * 1024;

/// Where the paragraph starting at `start` ends: after the first line break of the next
/// blank line that is not inside a `-----BEGIN …-----END` block, or at the end of `text`.
fn paragraph_end(text: &str, start: usize) -> usize {
    let mut from = start;
    loop {
        let Some(i) = text[from..].find("\n\n") else {
            return text.len();
        };
        let end = from + i + 1;
        let seen = &text[start..end];
        let open = seen
            .rfind("-----BEGIN ")
            .is_some_and(|b| seen[b..].find("-----END ").is_none());
        if !open {
            return end;
        }
        from = end;
    }
}

/// How deep base64 inside decoded base64 is looked into.
const MAX_DECODE_DEPTH: usize = 2;

fn detect_within(text: &str, depth: usize) -> Vec<Span> {
    let Some(prepared) = normalize::prepare(text) else {
        return detect_as_written(text);
    };
    let mut found = match &prepared.view {
        Some(view) => detect_as_written(view.text())
            .into_iter()
            .map(|s| {
                let at = view.original(s.start..s.end);
                span(at.start, at.end, s.entity)
            })
            .collect(),
        None => detect_as_written(text),
    };
    if depth < MAX_DECODE_DEPTH {
        for (run, decoded) in &prepared.decoded {
            // The run is replaced whole, as the kind of data that matters most in it.
            let inside = detect_within(decoded, depth + 1)
                .into_iter()
                .filter(|s| !is_pseudonym(&decoded[s.start..s.end]))
                .max_by_key(|s| s.entity.priority());
            if let Some(s) = inside {
                found.push(span(run.start, run.end, s.entity));
            }
        }
    }
    // Two spans of the view can stand for one original character (`ﬁ` is `f` and `i`).
    resolve(found)
}

/// The detectors on `text` as it is written.
fn detect_as_written(text: &str) -> Vec<Span> {
    let mut found = Vec::with_capacity(8);
    detect_patterns(text, &mut found);
    names::detect_people_and_orgs(text, &mut found);
    names::signature_orgs(text, &mut found);
    resolve(found)
}

/// The pattern detectors alone (no names), unresolved.
pub(super) fn detect_patterns(text: &str, found: &mut Vec<Span>) {
    let cues = Cues::of(text);
    if cues.at {
        push_all(&EMAIL, text, EntityType::Email, found);
        if text.contains("://") {
            for m in URL_CREDENTIALS.find_iter(text) {
                let end = m.start() + trim_trailing_punct(m.as_str()).len();
                found.push(span(m.start(), end, EntityType::UrlCredentials));
            }
        }
    }
    if cues.token {
        push_all(&TOKENS, text, EntityType::Secret, found);
    }
    if cues.secret_name {
        assigned_secrets(text, found);
    }
    let digits = cues.digits;
    if digits == 0 {
        return;
    }
    let numbers = cues.numbers.as_ref();
    if digits >= 13 && numbers.is_none_or(|n| n.grouped_digits >= 13) {
        cards(text, found);
    }
    if digits >= 10 && numbers.is_none_or(|n| n.iban_start) {
        ibans(text, found);
    }
    if digits >= 9 && numbers.is_none_or(|n| n.ssn) {
        ssns(text, found);
    }
    if digits >= 7 {
        match numbers {
            Some(n) => n.phones.iter().for_each(|r| phones(text, r, found)),
            None => phones(text, &(0..text.len()), found),
        }
    }
    // Three dots between four numbers; two colons at least.
    if digits >= 4 && cues.dots >= 3 {
        ipv4s(text, found);
    }
    if digits >= 4 && cues.colons >= 2 {
        ipv6s(text, found);
    }
    for (r, cue) in [
        (&*ADDRESS_EN, cues.street_en),
        (&*ADDRESS_DE, cues.street_de),
        (&*ADDRESS_FR, cues.street_fr),
        (&*ADDRESS_EN_MORE, cues.street_en_more),
        (&*ADDRESS_SOUTH, cues.digits > 0),
        (&*ADDRESS_UK, cues.digits >= 3),
        (&*PO_BOX, cues.po_box),
    ] {
        if !cue {
            continue;
        }
        for m in r.find_iter(text) {
            let end = m.start() + m.as_str().trim_end_matches([',', ' ']).len();
            found.push(span(m.start(), end, EntityType::Address));
        }
    }
}

fn span(start: usize, end: usize, entity: EntityType) -> Span {
    Span { start, end, entity }
}

fn push_all(r: &Regex, text: &str, entity: EntityType, found: &mut Vec<Span>) {
    found.extend(r.find_iter(text).map(|m| span(m.start(), m.end(), entity)));
}

/// The last `n` bytes of `s` or fewer, cut at a character boundary.
pub(super) fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn trim_trailing_punct(s: &str) -> &str {
    s.trim_end_matches(['.', ',', ';', ':', ')', ']', '!', '?', '"', '\''])
}

/// The pattern's value has no upper bound, so that its automaton stays small: a bounded
/// repetition of a Unicode class compiles to one copy per repetition, and the capture group
/// is resolved on that automaton for every match. Cutting the value at `SECRET_VALUE_CHARS`
/// and searching on from the cut finds what the bounded pattern would.
fn assigned_secrets(text: &str, found: &mut Vec<Span>) {
    let mut locations = ASSIGNED_SECRET.capture_locations();
    let mut at = 0;
    while let Some(m) = ASSIGNED_SECRET.find_at(text, at) {
        let (start, end) = match assigned_value(text, m.start(), m.end()) {
            Some(value) => value,
            None => {
                // The match found is the one that starts there.
                ASSIGNED_SECRET
                    .captures_read_at(&mut locations, text, m.start())
                    .expect("the same search found a match");
                locations.get(1).expect("group 1 always takes part")
            }
        };
        at = push_secret_value(text, start, end, found);
    }
}

/// Adds the assigned value `text[start..end]`, cut at `SECRET_VALUE_CHARS` characters and
/// trailing punctuation, if it looks secret; returns where the cut value ends.
fn push_secret_value(text: &str, start: usize, end: usize, found: &mut Vec<Span>) -> usize {
    let end = text[start..end]
        .char_indices()
        .nth(SECRET_VALUE_CHARS)
        .map_or(end, |(i, _)| start + i);
    let value = text[start..end].trim_end_matches(['.', ',', ';', ':', ')', ']']);
    if validate::looks_secret(value) {
        found.push(span(start, start + value.len(), EntityType::Secret));
    }
    end
}

/// Where group 1 of the `ASSIGNED_SECRET` match `text[start..end]` is, when its bytes say
/// so without the capture engine, which costs several times the search. The group ends the
/// match and is a run of value characters; what comes before it is the name and the
/// separator, and the name has no `:`, `=`, `>`, space or quote.
/// - Some character of the match is no value character (a space, a quote): the group is
///   the run after the last such, unless that run has a `:`, `=` or `>`, which a separator
///   could also have taken.
/// - Every character is a value character: the separator is the first `:` or `=` (no
///   space, so `[:=]` or `=>`, and `[:=]` comes first), and the group starts after it.
///
/// `None` where neither holds; `detect`'s tests check both against the capture engine.
fn assigned_value(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let value_char = |c: char| {
        !c.is_whitespace()
            && !matches!(
                c,
                '"' | '\'' | '`' | ',' | ';' | '<' | '>' | '(' | ')' | '{' | '}' | '[' | ']'
            )
    };
    let m = &text[start..end];
    let run = m
        .char_indices()
        .rev()
        .take_while(|&(_, c)| value_char(c))
        .last()
        .map_or(m.len(), |(i, _)| i);
    if run > 0 {
        let group = &m[run..];
        return (!group.contains([':', '=', '>'])).then_some((start + run, end));
    }
    m.find([':', '=']).map(|sep| (start + sep + 1, end))
}

fn cards(text: &str, found: &mut Vec<Span>) {
    for m in CARD.find_iter(text) {
        let s = m.as_str();
        if s.contains(' ') && s.contains('-') {
            continue;
        }
        // The pattern may have run into a following number ("4111 1111 1111 1111 12/27"):
        // try the longest run of whole groups that is a card.
        let group_ends: Vec<usize> = s
            .char_indices()
            .filter(|&(i, c)| {
                c.is_ascii_digit() && !s[i + 1..].starts_with(|d: char| d.is_ascii_digit())
            })
            .map(|(i, _)| i + 1)
            .collect();
        for &end in group_ends.iter().rev() {
            let digits: String = s[..end].chars().filter(char::is_ascii_digit).collect();
            if digits.len() < 13 {
                break;
            }
            if digits.len() <= 19 && validate::luhn(&digits) && validate::card_network(&digits) {
                found.push(span(m.start(), m.start() + end, EntityType::CreditCard));
                break;
            }
        }
    }
}

fn ibans(text: &str, found: &mut Vec<Span>) {
    for m in IBAN.find_iter(text) {
        let s = m.as_str();
        let Some(len) = validate::iban_length(&s[..2]) else {
            continue;
        };
        // The pattern may have swallowed a following upper-case word: cut at the country's length.
        let mut compact = String::with_capacity(len);
        let mut end = m.start();
        for (i, c) in s.char_indices() {
            if compact.len() == len {
                break;
            }
            if c != ' ' {
                compact.push(c);
                end = m.start() + i + c.len_utf8();
            }
        }
        if validate::iban(&compact) {
            found.push(span(m.start(), end, EntityType::Iban));
        }
    }
}

fn ssns(text: &str, found: &mut Vec<Span>) {
    for c in SSN.captures_iter(text) {
        let (a, g, s) = match (c.get(1), c.get(4)) {
            (Some(a), _) => (a, c.get(2), c.get(3)),
            (None, Some(a)) => (a, c.get(5), c.get(6)),
            _ => continue,
        };
        let (Some(g), Some(s)) = (g, s) else { continue };
        if validate::ssn(a.as_str(), g.as_str(), s.as_str()) {
            found.push(span(a.start(), s.end(), EntityType::Ssn));
        }
    }
}

/// The phone numbers that start in `within`. A match never leaves the run of number
/// characters it starts in, so searching from the start of a run finds what searching the
/// whole text finds there.
fn phones(text: &str, within: &Range<usize>, found: &mut Vec<Span>) {
    let mut at = within.start;
    while let Some(m) = PHONE.find_at(text, at).filter(|m| m.start() < within.end) {
        at = m.end();
        // A match may end in the `x` of an extension written right after it (`…0132x13503`).
        let s = m.as_str().trim_end_matches(['x', 'X']);
        let s = s.trim_end_matches(['.', '-', ' ']);
        // Part of a longer token (an id such as `A-415-555-0132`, a dotted version, a decimal).
        let before = &text[..m.start()];
        let prev = before.chars().next_back();
        let after = &text[m.start() + s.len()..];
        // An extension written right after the number (`415-555-0132x13503`) is no longer
        // token: it is taken with the number below.
        let next = after
            .chars()
            .next()
            .filter(|c| !(matches!(c, 'x' | 'X') && PHONE_EXTENSION.is_match(after)));
        if prev.is_some_and(|c| {
            c.is_alphanumeric() || matches!(c, '.' | '-' | '/' | '_' | '$' | '€' | '£')
        }) || next.is_some_and(|c| c.is_alphanumeric() || matches!(c, '/' | '_' | '%'))
            || (next == Some('.')
                && text[m.start() + s.len() + 1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            continue;
        }
        if validate::phone(s, || validate::number_context(before)) {
            let end = m.start() + s.len();
            // The extension is part of the number: leaving it would leave a piece of it.
            let end = PHONE_EXTENSION
                .find(&text[end..])
                .map_or(end, |x| end + x.end());
            at = at.max(end);
            found.push(span(m.start(), end, EntityType::Phone));
        }
    }
}

fn ipv4s(text: &str, found: &mut Vec<Span>) {
    for m in IPV4.find_iter(text) {
        let before = &text[..m.start()];
        let after = &text[m.end()..];
        let prev = before.chars().next_back();
        let dotted_more =
            after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit());
        let versioned = prev.is_some_and(|c| c == 'v' || c == 'V' || c == '.')
            || tail(before, 16)
                .to_ascii_lowercase()
                .trim_end()
                .ends_with("version");
        if !dotted_more && !versioned {
            found.push(span(m.start(), m.end(), EntityType::IpAddress));
        }
    }
}

fn ipv6s(text: &str, found: &mut Vec<Span>) {
    for m in IPV6.find_iter(text) {
        let s = m.as_str();
        let prev = text[..m.start()].chars().next_back();
        let next = text[m.end()..].chars().next();
        let hex = s.bytes().filter(u8::is_ascii_hexdigit).count();
        if prev.is_some_and(|c| c.is_alphanumeric() || c == ':')
            || next.is_some_and(|c| c.is_alphanumeric())
            || hex < 4
            || s.len() < 6
        {
            continue;
        }
        let addr = s.split('%').next().unwrap_or(s);
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            found.push(span(m.start(), m.end(), EntityType::IpAddress));
        }
    }
}

#[cfg(test)]
mod tests;
