//! Which pattern detectors can match in a text, read from its bytes before any regex runs.
//!
//! Chat messages are short, so a regex call costs more to start than to scan, and most
//! patterns match in few messages. Each cue is a necessary condition of one pattern in
//! `detect`, something no match of it can lack (an `@`, a street type after a space, a
//! provider's prefix before its `_`): a pattern whose cue is absent is not run, and where the
//! cue is present the pattern runs as before. So the cues change what is found only if one
//! of them is not in fact necessary; `detect`'s tests check that on a generated corpus. Keep
//! each cue in step with its pattern.
//!
//! The cues are found with memchr (vectorised searches for a byte) and by looking at the
//! few words next to the bytes found, not by walking every byte: reading the cues must cost
//! far less than the regex calls they save.

use std::ops::Range;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use memchr::{memchr, memchr_iter, memchr2_iter, memmem};

/// What a text's bytes say about which patterns can match in it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Cues {
    /// ASCII digits: the number patterns are run only on texts with enough of them.
    pub digits: usize,
    /// `.` bytes: an IPv4 address has three.
    pub dots: usize,
    /// `:` bytes: an IPv6 address has two.
    pub colons: usize,
    /// An `@`: emails and credential URLs have one.
    pub at: bool,
    /// `TOKENS`: a provider's prefix.
    pub token: bool,
    /// `ASSIGNED_SECRET`: a name that says secret.
    pub secret_name: bool,
    /// `ADDRESS_EN`: a street type after a space.
    pub street_en: bool,
    /// `ADDRESS_DE`: a street suffix, or "Am", "Im", "der", "den" and a word, before a space
    /// and a digit.
    pub street_de: bool,
    /// `ADDRESS_FR`: a street type between spaces.
    pub street_fr: bool,
    /// `PO_BOX`: "Box" between spaces, in any case.
    pub po_box: bool,
    /// Where the number patterns can match, read when the text has seven digits or more
    /// and is all ASCII (their `\d` also takes other scripts' digits).
    pub numbers: Option<NumberRuns>,
}

/// Runs of the characters the number patterns are made of. A card, an SSN or a phone
/// number is validated on its ASCII digits, all inside one such run.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct NumberRuns {
    /// Runs of digits, spaces, `.`, `-`, `+`, `(` and `)` with at least 7 digits: the only
    /// places a phone number (7 to 15 digits) can be.
    pub phones: Vec<Range<usize>>,
    /// The most digits in one run of digits, spaces and `-`: a card has 13 or more, an SSN
    /// 9.
    pub grouped_digits: usize,
    /// Two capital letters and two digits, as an IBAN starts.
    pub iban_start: bool,
    /// What an SSN needs: three digits, a dash, two digits, a dash and four digits, or a
    /// word that says SSN ("ssn", "social security", "soc. sec.").
    pub ssn: bool,
}

impl NumberRuns {
    fn of(bytes: &[u8]) -> NumberRuns {
        let mut runs = NumberRuns::default();
        let (mut phone_start, mut phone_digits, mut grouped) = (0, 0, 0);
        for (i, &b) in bytes.iter().enumerate() {
            let digit = b.is_ascii_digit();
            if digit || matches!(b, b' ' | b'-') {
                grouped += usize::from(digit);
                runs.grouped_digits = runs.grouped_digits.max(grouped);
            } else {
                grouped = 0;
            }
            if digit || matches!(b, b' ' | b'-' | b'.' | b'+' | b'(' | b')') {
                phone_digits += usize::from(digit);
            } else {
                if phone_digits >= 7 {
                    runs.phones.push(phone_start..i);
                }
                (phone_start, phone_digits) = (i + 1, 0);
            }
            runs.iban_start = runs.iban_start
                || (digit
                    && i >= 3
                    && bytes[i - 1].is_ascii_digit()
                    && bytes[i - 2].is_ascii_uppercase()
                    && bytes[i - 3].is_ascii_uppercase());
        }
        if phone_digits >= 7 {
            runs.phones.push(phone_start..bytes.len());
        }
        runs.ssn = runs.grouped_digits >= 9 && (has_dashed_ssn(bytes) || has_ssn_word(bytes));
        runs
    }
}

impl Cues {
    /// Reads the cues of `text`. The street cues are read only when it has digits, since
    /// every street pattern needs one (and `detect` runs none without).
    pub fn of(text: &str) -> Cues {
        let bytes = text.as_bytes();
        let ascii = bytes.is_ascii();
        let mut cues = Cues {
            at: memchr(b'@', bytes).is_some(),
            ..Cues::default()
        };
        // Counted without branches into byte-wide sums, which the compiler vectorises.
        for chunk in bytes.chunks(255) {
            let (mut digits, mut dots, mut colons) = (0u8, 0u8, 0u8);
            for &b in chunk {
                digits += u8::from(b.is_ascii_digit());
                dots += u8::from(b == b'.');
                colons += u8::from(b == b':');
            }
            cues.digits += usize::from(digits);
            cues.dots += usize::from(dots);
            cues.colons += usize::from(colons);
        }
        cues.token = has_token_prefix(bytes, cues.colons > 0);
        // Unicode case folding matches `K` (Kelvin sign) and `ſ` (long s) where the
        // case-insensitive patterns say k and s, and the German and French patterns spell
        // streets with letters beyond ASCII: on text that is not all ASCII, the cues of
        // those patterns, which look at ASCII letters, are not necessary, so they are set.
        cues.secret_name = !ascii || has_secret_name(bytes);
        if cues.digits >= 7 && ascii {
            cues.numbers = Some(NumberRuns::of(bytes));
        }
        if cues.digits > 0 {
            cues.streets(bytes);
            if !ascii {
                cues.street_de = true;
                cues.street_fr = true;
                cues.po_box = true;
            }
        }
        cues
    }

    /// The street cues, read at each space: the word after it when a letter follows, the
    /// words before it when a digit does.
    fn streets(&mut self, bytes: &[u8]) {
        for space in memchr_iter(b' ', bytes) {
            match bytes.get(space + 1) {
                Some(b) if b.is_ascii_alphabetic() => {}
                Some(b) if b.is_ascii_digit() => {
                    self.street_de = self.street_de || german_street_before(bytes, space);
                    continue;
                }
                _ => continue,
            }
            let word = letters_from(bytes, space + 1);
            let after = bytes.get(space + 1 + word.len()).copied();
            // ` (?:Street|St|...|Green)\b`.
            self.street_en = self.street_en
                || (!after.is_some_and(|b| b.is_ascii_digit() || b == b'_')
                    && matches!(
                        word,
                        b"Street"
                            | b"St"
                            | b"Avenue"
                            | b"Ave"
                            | b"Road"
                            | b"Rd"
                            | b"Boulevard"
                            | b"Blvd"
                            | b"Lane"
                            | b"Ln"
                            | b"Drive"
                            | b"Dr"
                            | b"Court"
                            | b"Ct"
                            | b"Way"
                            | b"Place"
                            | b"Pl"
                            | b"Terrace"
                            | b"Close"
                            | b"Crescent"
                            | b"Parkway"
                            | b"Pkwy"
                            | b"Highway"
                            | b"Hwy"
                            | b"Square"
                            | b"Sq"
                            | b"Circle"
                            | b"Cir"
                            | b"Trail"
                            | b"Row"
                            | b"Gardens"
                            | b"Mews"
                            | b"Walk"
                            | b"Hill"
                            | b"Green"
                    ));
            // ` (?:rue|avenue|...|cours) ` (allée has a letter beyond ASCII).
            self.street_fr = self.street_fr
                || (after == Some(b' ')
                    && matches!(
                        word,
                        b"rue"
                            | b"avenue"
                            | b"boulevard"
                            | b"bd"
                            | b"place"
                            | b"chemin"
                            | b"impasse"
                            | b"quai"
                            | b"route"
                            | b"cours"
                    ));
            // `(?i)...O\.? Box \d`.
            self.po_box = self.po_box || (after == Some(b' ') && word.eq_ignore_ascii_case(b"box"));
        }
    }
}

/// Whether the text before the space at `space` (a digit follows it) can end a German
/// street: `...(?:strasse|Strasse|weg|platz|allee|gasse|ring|damm|ufer)`, `...str.`, or
/// `(?:Am|An der|Auf der|Im|In der|Unter den) Word` (spellings with ß are beyond ASCII).
fn german_street_before(bytes: &[u8], space: usize) -> bool {
    let before = &bytes[..space];
    let word = letters_until(bytes, space);
    const SUFFIXES: [&[u8]; 9] = [
        b"strasse", b"Strasse", b"weg", b"platz", b"allee", b"gasse", b"ring", b"damm", b"ufer",
    ];
    if before.ends_with(b"str.") || SUFFIXES.iter().any(|s| word.ends_with(s)) {
        return true;
    }
    let word_start = space - word.len();
    !word.is_empty()
        && word_start > 0
        && bytes[word_start - 1] == b' '
        && matches!(
            letters_until(bytes, word_start - 1),
            b"Am" | b"Im" | b"der" | b"den"
        )
}

/// Whether a `TOKENS` alternative can match: `\bgh[pousr]_`, `\bgithub_pat_`,
/// `\b(?:sk|rk|pk)_(?:live|test)_`, `\bwhsec_`, `\bnpm_`, `\bhf_` (a word before `_`);
/// `\bsk-`, `\bxox[abposr]-`, `\bglpat-` (a word before `-`); `-----BEGIN `;
/// `\b(?:AKIA|ASIA|...|ASCA)`, `\bAIza`; `\beyJ`; `https://hooks\.slack\.com/` (which has a
/// colon).
fn has_token_prefix(bytes: &[u8], colon: bool) -> bool {
    let joined = memchr2_iter(b'_', b'-', bytes).any(|i| {
        let word = letters_until(bytes, i);
        if bytes[i] == b'_' {
            matches!(
                word,
                b"ghp"
                    | b"gho"
                    | b"ghu"
                    | b"ghs"
                    | b"ghr"
                    | b"github"
                    | b"sk"
                    | b"rk"
                    | b"pk"
                    | b"whsec"
                    | b"npm"
                    | b"hf"
            )
        } else {
            matches!(
                word,
                b"sk" | b"xoxa" | b"xoxb" | b"xoxp" | b"xoxo" | b"xoxs" | b"xoxr" | b"glpat"
            ) || bytes[i..].starts_with(b"-----BEGIN ")
        }
    });
    joined
        || memchr_iter(b'A', bytes).any(|i| {
            matches!(
                bytes.get(i..i + 4),
                Some(
                    b"AKIA"
                        | b"ASIA"
                        | b"ABIA"
                        | b"ACCA"
                        | b"AGPA"
                        | b"AIDA"
                        | b"AIPA"
                        | b"ANPA"
                        | b"ANVA"
                        | b"APKA"
                        | b"AROA"
                        | b"ASCA"
                        | b"AIza"
                )
            )
        })
        || memchr_iter(b'J', bytes).any(|i| i >= 2 && &bytes[i - 2..i] == b"ey")
        || (colon && memmem::find(bytes, b"hooks.slack.com").is_some())
}

/// A part of every name `ASSIGNED_SECRET` takes for secret: "pass" (password, passwd,
/// passwort, passphrase), "pwd", "secret", "token", "api" (api_key, apikey), "access",
/// "private", "credential", "bearer".
const SECRET_NAME_PARTS: [&str; 9] = [
    "pass",
    "pwd",
    "private",
    "secret",
    "token",
    "api",
    "access",
    "credential",
    "bearer",
];

/// The parts as one automaton: one table look-up per byte and no branch that depends on
/// the text, where comparing at every position mispredicts on every common letter pair.
static SECRET_NAMES: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .kind(Some(AhoCorasickKind::DFA))
        .build(SECRET_NAME_PARTS)
        .expect("literal patterns always build")
});

/// Whether `bytes` holds, in any ASCII case, a part of every name `ASSIGNED_SECRET` takes
/// for secret.
fn has_secret_name(bytes: &[u8]) -> bool {
    SECRET_NAMES.is_match(bytes)
}

/// `\d{3}-\d{2}-\d{4}` somewhere in `bytes`.
fn has_dashed_ssn(bytes: &[u8]) -> bool {
    let digits = |r: std::ops::Range<usize>| {
        bytes
            .get(r)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    memchr_iter(b'-', bytes).any(|i| {
        i >= 3
            && digits(i - 3..i)
            && digits(i + 1..i + 3)
            && bytes.get(i + 3) == Some(&b'-')
            && digits(i + 4..i + 8)
    })
}

/// "ssn" or "soc" (social security, soc. sec.) in any ASCII case.
fn has_ssn_word(bytes: &[u8]) -> bool {
    memchr2_iter(b's', b'S', bytes).any(|i| {
        bytes.get(i + 1..i + 3).is_some_and(|w| {
            let w = [w[0] | 0x20, w[1] | 0x20];
            &w == b"sn" || &w == b"oc"
        })
    })
}

/// The ASCII letters that start at `start`.
fn letters_from(bytes: &[u8], start: usize) -> &[u8] {
    let rest = bytes.get(start..).unwrap_or_default();
    let n = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..n]
}

/// The ASCII letters that end just before `end`.
fn letters_until(bytes: &[u8], end: usize) -> &[u8] {
    let before = &bytes[..end];
    let n = before
        .iter()
        .rev()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(before.len());
    &before[end - n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_find_what_each_pattern_needs() {
        let c = Cues::of("key ghp_abc and sk-proj-x, DB_PASSWORD=x");
        assert!(c.token && c.secret_name && !c.street_en && !c.po_box);
        assert!(Cues::of("AKIAIOSFODNN7EXAMPLE").token);
        assert!(Cues::of("Bearer x.eyJhbGciOiJIUzI1NiJ9").token);
        assert!(Cues::of("-----BEGIN RSA PRIVATE KEY-----").token);
        let plain = Cues::of("the git hash is 4f2a9c1, see you at 10: A-OK");
        assert_eq!(
            plain,
            Cues {
                digits: 6,
                colons: 1,
                ..Cues::default()
            }
        );
        assert!(Cues::of("at 221B Baker Street, London").street_en);
        assert!(!Cues::of("at 221B Baker Streetcar").street_en);
        assert!(Cues::of("Hauptstrasse 5, 10115 Berlin").street_de);
        assert!(Cues::of("Goethestr. 12a").street_de);
        assert!(Cues::of("Am Markt 3").street_de);
        assert!(!Cues::of("Am Markt, 3").street_de);
        assert!(Cues::of("12 rue de la Paix").street_fr);
        assert!(Cues::of("PO BOX 123").po_box);
        assert!(!Cues::of("two boxes 12").po_box);
        assert!(!Cues::of("PO Box").po_box, "no digits, no street");
        // SSNs: the dashed shape, or a word that names one, with nine grouped digits.
        let ssn = |t: &str| Cues::of(t).numbers.is_some_and(|n| n.ssn);
        assert!(ssn("ref 759-12-5044 ok") && ssn("SSN 759 12 5044") && ssn("Soc. Sec. 759125044"));
        assert!(!ssn("order 759125044 shipped") && !ssn("call 415 555 0132 now"));
        assert!(!ssn("ssn 12-34"), "too few digits");
        // Not all ASCII: the patterns with Unicode letters or case folding always run.
        let c = Cues::of("8 Ma\u{df}weg 5 and 203.0.113.9");
        assert!(c.street_de && c.street_fr && c.po_box && c.secret_name && !c.token);
        assert_eq!((c.digits, c.dots), (10, 3));
    }
}
