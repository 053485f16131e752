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

use memchr::{memchr_iter, memchr2_iter, memmem};

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
    /// `ADDRESS_EN_MORE`: one of its capitalised street types after a space.
    pub street_en_more: bool,
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
    /// Runs of digits, spaces, `.`, `-`, `+`, `(`, `)` and `/` with at least 7 digits: the only
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
        // The classes of the last four bytes, four bits each, the latest lowest.
        let mut window = 0u16;
        for (i, &b) in bytes.iter().enumerate() {
            let class = CLASS[usize::from(b)];
            let digit = usize::from(class & DIGIT != 0);
            // Digits, spaces and `-`: the run goes on, or starts again from nothing.
            grouped = (grouped + digit) * usize::from(class & (DIGIT | GROUPS) != 0);
            runs.grouped_digits = runs.grouped_digits.max(grouped);
            if class & (DIGIT | PHONE) != 0 {
                phone_digits += digit;
            } else {
                if phone_digits >= 7 {
                    runs.phones.push(phone_start..i);
                }
                (phone_start, phone_digits) = (i + 1, 0);
            }
            window = (window << 4) | u16::from(class);
            runs.iban_start |= window & IBAN_START == IBAN_START;
        }
        if phone_digits >= 7 {
            runs.phones.push(phone_start..bytes.len());
        }
        runs.ssn = runs.grouped_digits >= 9 && (has_dashed_ssn(bytes) || has_ssn_word(bytes));
        runs
    }
}

// What the number cues need to know of a byte, as bit flags (four bits, see `window`).
const DIGIT: u8 = 1;
/// A space or `-`: what a card's or an SSN's digits may be grouped with.
const GROUPS: u8 = 1 << 1;
/// A space, `-`, `.`, `+`, `(`, `)` or `/`: what a phone number's digits may be grouped with.
const PHONE: u8 = 1 << 2;
const UPPER: u8 = 1 << 3;
/// Two capital letters and two digits in the last four bytes' classes.
const IBAN_START: u16 =
    ((UPPER as u16) << 12) | ((UPPER as u16) << 8) | ((DIGIT as u16) << 4) | DIGIT as u16;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_uppercase() {
            UPPER
        } else if c == b' ' || c == b'-' {
            GROUPS | PHONE
        } else if matches!(c, b'.' | b'+' | b'(' | b')' | b'/') {
            PHONE
        } else {
            0
        };
        b += 1;
    }
    t
};

impl Cues {
    /// Reads the cues of `text`. The street cues are read only when it has digits, since
    /// every street pattern needs one (and `detect` runs none without).
    pub fn of(text: &str) -> Cues {
        let bytes = text.as_bytes();
        let mut cues = Cues::default();
        // Counted without branches into byte-wide sums, which the compiler vectorises: the
        // bytes other cues start from are counted too, so that a text without them is not
        // searched for them.
        let (mut at, mut joins, mut a, mut j, mut high) = (0, 0, 0, 0, 0);
        for chunk in bytes.chunks(255) {
            let mut n = [0u8; 8];
            for &b in chunk {
                n[0] += u8::from(b.is_ascii_digit());
                n[1] += u8::from(b == b'.');
                n[2] += u8::from(b == b':');
                n[3] += u8::from(b == b'@');
                n[4] += u8::from(b == b'_' || b == b'-');
                n[5] += u8::from(b == b'A');
                n[6] += u8::from(b == b'J');
                n[7] += u8::from(b >= 0x80);
            }
            cues.digits += usize::from(n[0]);
            cues.dots += usize::from(n[1]);
            cues.colons += usize::from(n[2]);
            at += usize::from(n[3]);
            joins += usize::from(n[4]);
            a += usize::from(n[5]);
            j += usize::from(n[6]);
            high += usize::from(n[7]);
        }
        let ascii = high == 0;
        cues.at = at > 0;
        cues.token = has_token_prefix(bytes, joins > 0, a > 0, j > 0, cues.colons > 0);
        // Unicode case folding matches `K` (Kelvin sign) and `ſ` (long s) where the
        // case-insensitive patterns say k and s, and the German and French patterns spell
        // streets with letters beyond ASCII: on text that is not all ASCII, the cues of
        // those patterns, which look at ASCII letters, are not necessary, so they are set.
        cues.secret_name = !ascii || SECRET_NAMES.in_text(bytes);
        if cues.digits >= 7 && ascii {
            cues.numbers = Some(NumberRuns::of(bytes));
        }
        if cues.digits > 0 {
            cues.streets(bytes, ascii);
            if !ascii {
                cues.street_de = true;
                cues.street_fr = true;
                cues.street_en_more = true;
                cues.po_box = true;
            }
        }
        cues
    }

    /// The street cues, read at each space: the word after it when a letter follows, the
    /// words before it when a digit does. Every street pattern has a digit after a space or
    /// a street type after a number, so the spaces before the one that comes just before
    /// the first digit are not read (in ASCII text: `\d` takes other scripts' digits too).
    fn streets(&mut self, bytes: &[u8], ascii: bool) {
        let from = match ascii {
            true => bytes.iter().position(u8::is_ascii_digit).unwrap_or(0),
            false => 0,
        };
        let from = from.saturating_sub(1);
        for space in memchr_iter(b' ', &bytes[from..]).map(|i| from + i) {
            match bytes.get(space + 1) {
                Some(b) if b.is_ascii_alphabetic() => {}
                Some(b) if b.is_ascii_digit() => {
                    self.street_de = self.street_de || german_street_before(bytes, space);
                    // `(?i)...O\.? Box \d`.
                    self.po_box =
                        self.po_box || letters_until(bytes, space).eq_ignore_ascii_case(b"box");
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
            self.street_en_more = self.street_en_more
                || (!after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && is_more_street_type(word));
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
        }
    }
}

/// The street types of `ADDRESS_EN_MORE`, as written there.
fn is_more_street_type(word: &[u8]) -> bool {
    matches!(
        word,
        b"Alley"
            | b"Bend"
            | b"Bluff"
            | b"Bluffs"
            | b"Branch"
            | b"Bridge"
            | b"Brook"
            | b"Brooks"
            | b"Burg"
            | b"Burgs"
            | b"Bypass"
            | b"Camp"
            | b"Canyon"
            | b"Cape"
            | b"Causeway"
            | b"Center"
            | b"Centers"
            | b"Cliff"
            | b"Cliffs"
            | b"Common"
            | b"Commons"
            | b"Corner"
            | b"Corners"
            | b"Courts"
            | b"Cove"
            | b"Coves"
            | b"Creek"
            | b"Crest"
            | b"Crossing"
            | b"Crossroad"
            | b"Curve"
            | b"Dale"
            | b"Divide"
            | b"Drives"
            | b"Estate"
            | b"Estates"
            | b"Expressway"
            | b"Extension"
            | b"Extensions"
            | b"Falls"
            | b"Ferry"
            | b"Field"
            | b"Fields"
            | b"Flat"
            | b"Flats"
            | b"Ford"
            | b"Fords"
            | b"Forest"
            | b"Forge"
            | b"Forges"
            | b"Fork"
            | b"Forks"
            | b"Fort"
            | b"Freeway"
            | b"Gateway"
            | b"Glen"
            | b"Glens"
            | b"Greens"
            | b"Grove"
            | b"Groves"
            | b"Harbor"
            | b"Harbors"
            | b"Haven"
            | b"Heights"
            | b"Hills"
            | b"Hollow"
            | b"Inlet"
            | b"Island"
            | b"Islands"
            | b"Isle"
            | b"Junction"
            | b"Junctions"
            | b"Key"
            | b"Keys"
            | b"Knoll"
            | b"Knolls"
            | b"Lake"
            | b"Lakes"
            | b"Landing"
            | b"Lights"
            | b"Loaf"
            | b"Locks"
            | b"Lodge"
            | b"Loop"
            | b"Manor"
            | b"Manors"
            | b"Meadow"
            | b"Meadows"
            | b"Mill"
            | b"Mills"
            | b"Mission"
            | b"Motorway"
            | b"Mount"
            | b"Mountain"
            | b"Mountains"
            | b"Neck"
            | b"Orchard"
            | b"Oval"
            | b"Overpass"
            | b"Park"
            | b"Parks"
            | b"Parkways"
            | b"Passage"
            | b"Pike"
            | b"Pine"
            | b"Pines"
            | b"Plain"
            | b"Plains"
            | b"Plaza"
            | b"Point"
            | b"Points"
            | b"Port"
            | b"Ports"
            | b"Prairie"
            | b"Radial"
            | b"Ranch"
            | b"Rapid"
            | b"Rapids"
            | b"Ridge"
            | b"Ridges"
            | b"River"
            | b"Roads"
            | b"Route"
            | b"Shoal"
            | b"Shoals"
            | b"Shore"
            | b"Shores"
            | b"Skyway"
            | b"Spring"
            | b"Springs"
            | b"Spur"
            | b"Spurs"
            | b"Squares"
            | b"Station"
            | b"Stravenue"
            | b"Stream"
            | b"Streets"
            | b"Summit"
            | b"Throughway"
            | b"Trace"
            | b"Track"
            | b"Trafficway"
            | b"Tunnel"
            | b"Turnpike"
            | b"Underpass"
            | b"Union"
            | b"Unions"
            | b"Valley"
            | b"Valleys"
            | b"Viaduct"
            | b"View"
            | b"Views"
            | b"Village"
            | b"Villages"
            | b"Ville"
            | b"Vista"
            | b"Walks"
            | b"Ways"
            | b"Well"
            | b"Wells"
    )
}

/// Whether the text before the space at `space` (a digit follows it) can end a German
/// street: `...(?:strasse|Strasse|weg|platz|allee|gasse|ring|damm|ufer)`, `...str.`, or
/// `(?:Am|An der|Auf der|Im|In der|Unter den) Word` (spellings with ß are beyond ASCII).
fn german_street_before(bytes: &[u8], space: usize) -> bool {
    let before = &bytes[..space];
    let word = letters_until(bytes, space);
    const SUFFIXES: [&[u8]; 16] = [
        b"strasse", b"Strasse", b"weg", b"platz", b"allee", b"gasse", b"ring", b"damm", b"ufer",
        b"Weg", b"Platz", b"Allee", b"Gasse", b"Ring", b"Damm", b"Ufer",
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
fn has_token_prefix(bytes: &[u8], joins: bool, a: bool, j: bool, colon: bool) -> bool {
    let joined = joins
        && memchr2_iter(b'_', b'-', bytes).any(|i| {
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
        || (a
            && memchr_iter(b'A', bytes).any(|i| {
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
            }))
        || (j && memchr_iter(b'J', bytes).any(|i| i >= 2 && &bytes[i - 2..i] == b"ey"))
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
static SECRET_NAMES: LazyLock<Dfa> = LazyLock::new(|| Dfa::new(&SECRET_NAME_PARTS));

/// A deterministic automaton that tells whether a text holds one of a few lower-case ASCII
/// words, in any ASCII case: a state per prefix of a word and the next state for every byte
/// (Aho-Corasick's, with the failure links followed when it is built). Chat messages are
/// short, so what counts is that a search costs nothing to start, and a look-up a byte.
struct Dfa {
    /// `next[state * 256 + byte]`; `MATCHED` once a word has been read.
    next: Vec<u8>,
}

impl Dfa {
    const MATCHED: u8 = u8::MAX;

    fn new(words: &[&str]) -> Dfa {
        // The trie of the words: children by byte, and which nodes end a word.
        let mut children: Vec<[u8; 256]> = vec![[0; 256]];
        let mut ends = vec![false];
        for w in words {
            let mut node = 0;
            for &b in w.as_bytes() {
                node = match children[node][usize::from(b)] {
                    0 => {
                        children.push([0; 256]);
                        ends.push(false);
                        let new = children.len() - 1;
                        children[node][usize::from(b)] =
                            u8::try_from(new).expect("fewer than 255 states");
                        new
                    }
                    child => usize::from(child),
                };
            }
            ends[node] = true;
        }
        // Breadth first, so that a node's failure state (its longest proper suffix that is
        // a prefix of a word) has its transitions before the node needs them.
        let states = children.len();
        let mut next = vec![0u8; states * 256];
        let mut fail = vec![0usize; states];
        let mut queue = std::collections::VecDeque::from([0usize]);
        while let Some(node) = queue.pop_front() {
            let matched = ends[node] || (node != 0 && ends[fail[node]]);
            ends[node] = matched;
            for b in 0..256usize {
                let child = usize::from(children[node][b]);
                let to = if child != 0 {
                    fail[child] = if node == 0 {
                        0
                    } else {
                        usize::from(next[fail[node] * 256 + b])
                    };
                    queue.push_back(child);
                    child
                } else if node == 0 {
                    0
                } else {
                    usize::from(next[fail[node] * 256 + b])
                };
                next[node * 256 + b] = u8::try_from(to).expect("fewer than 255 states");
            }
        }
        // Reading a word's last byte leads to `MATCHED`; upper-case letters as lower-case.
        let mut dfa = vec![0u8; states * 256];
        for node in 0..states {
            for b in 0..256usize {
                let to =
                    usize::from(next[node * 256 + usize::from((b as u8).to_ascii_lowercase())]);
                dfa[node * 256 + b] = if ends[to] { Self::MATCHED } else { to as u8 };
            }
        }
        Dfa { next: dfa }
    }

    fn in_text(&self, bytes: &[u8]) -> bool {
        let mut state = 0u8;
        for &b in bytes {
            state = self.next[usize::from(state) * 256 + usize::from(b)];
            if state == Self::MATCHED {
                return true;
            }
        }
        false
    }
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

    #[test]
    fn the_secret_name_automaton_finds_what_a_substring_search_finds() {
        let naive = |t: &str| {
            let lower = t.to_ascii_lowercase();
            SECRET_NAME_PARTS.iter().any(|p| lower.contains(p))
        };
        let cases = [
            "",
            "pas",
            "PASS",
            "xpassx",
            "my Pwd",
            "apapi",
            "acces",
            "ACCESS_KEY",
            "credentia",
            "CREDENTIALS",
            "bearebearer",
            "tokeNtoken",
            "secre",
            "s3cret",
            "privat",
            "PRIVATE",
            "ppassword",
            "toke n",
            "aapi_key",
            "accesstoken",
            "p\u{e4}ss",
            "p\u{212a}",
        ];
        let corpus = crate::bench::pii_eval::generate(7, 300);
        let texts = corpus
            .iter()
            .flat_map(|c| c.messages.iter().map(|m| m.text.as_str()))
            .chain(cases);
        for t in texts {
            assert_eq!(SECRET_NAMES.in_text(t.as_bytes()), naive(t), "{t:?}");
        }
    }
}
