//! The scan view of a text: what the detectors read, so that an encoding cannot hide
//! personal data from them. `dan＠example．com`, `dan%40example.com`, `dan&#64;example.com`,
//! `d\u{200b}an@example.com`, `dan [at] example [dot] com` and a card number in fullwidth or
//! Arabic-Indic digits all read as the plain ASCII the patterns are written for.
//!
//! Depends on nothing outside `pii`.
//!
//! The view is built in layers, each a list of edits to the layer below, and every byte of
//! it remembers which bytes of the original it stands for, so that a span found in the view
//! names the original characters to replace:
//! 1. base64 runs too long to be a token that decode to binary (an image in a data URL) read
//!    as one space, so that their digits are not taken for a phone or a card;
//! 2. percent-encoding, HTML character references and `\uXXXX` / `\xXX` escapes are decoded,
//!    up to three times (`%2540`, `&amp;#64;`) (`escapes`);
//! 3. format and other default-ignorable characters (zero-width spaces and joiners, soft
//!    hyphens, BOMs, bidi controls, variation selectors) go; each other character becomes its
//!    NFKC form (fullwidth and small forms, ligatures, circled digits); decimal digits of
//!    every script become ASCII digits; the ideographic full stops IDNA reads as dots are dots;
//! 4. "at" and "dot" spelled out become `@` and `.` where they make an address
//!    (`john [at] example [dot] com`, `john at example dot com`) (`spelled`).
//!
//! Base64-looking runs that decode to text are not part of the view (a token must still read
//! as the token): `Prepared::decoded` hands them to `detect` to scan on their own
//! (`base64_runs`).
//!
//! Most texts need none of this: plain ASCII with no `%`, `&` or `\`, no spelled-out
//! address and no base64-looking run gets no view at all (`prepare` returns `None` after one
//! pass over the bytes, `survey`), and the detectors read it as it is.

use std::borrow::Cow;
use std::ops::Range;

use unicode_normalization::{IsNormalized, UnicodeNormalization as _, is_nfkc_quick};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

mod base64_runs;
mod escapes;
mod spelled;

use base64_runs::decode_run;
use escapes::decode_edits;
use spelled::spelled_edits;

/// The shortest run of base64 characters looked into: 12 bytes decoded, less than any
/// address with a domain.
const MIN_BASE64_RUN: usize = 16;
/// Base64 runs at least this long that do not decode to text are binary data, not a token
/// (the longest token signatures are a few hundred characters).
const BINARY_RUN: usize = 1024;
/// Decoding rounds for nested encodings.
const DECODE_ROUNDS: usize = 3;

/// What the detectors read for one text, when that is not the text itself.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The normalised text, when it differs from the original.
    pub view: Option<View>,
    /// Base64 runs of the original that decode to text: where they are, and the text.
    pub decoded: Vec<(Range<usize>, String)>,
}

/// A normalised text and, for each of its bytes, the bytes of the original it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct View {
    text: String,
    /// `origin[i]`: the original bytes `start..end` that byte `i` of `text` came from. A
    /// byte of a replacement stands for everything it replaced.
    origin: Vec<(u32, u32)>,
}

impl View {
    /// The normalised text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The original bytes that `self.text()[range]` stands for: whole characters, and every
    /// character dropped between its first and last byte (a zero-width space inside it).
    pub fn original(&self, range: Range<usize>) -> Range<usize> {
        if range.start >= range.end {
            let at = self
                .origin
                .get(range.start)
                .map_or_else(|| self.origin.last().map_or(0, |o| o.1), |o| o.0);
            return at as usize..at as usize;
        }
        self.origin[range.start].0 as usize..self.origin[range.end - 1].1 as usize
    }
}

/// A replacement of `at` (byte offsets into the layer it edits) by `with`.
#[derive(Debug)]
struct Edit {
    at: Range<usize>,
    with: Cow<'static, str>,
}

/// The scan view of `text` and the base64 runs in it that decode to text; `None` when the
/// detectors should read `text` as it is.
pub(super) fn prepare(text: &str) -> Option<Prepared> {
    let Survey {
        escapes,
        non_ascii,
        spelled,
        runs,
    } = survey(text.as_bytes());
    // Texts are limited far below 4 GiB; the offsets are kept in 32 bits.
    if (!escapes && !non_ascii && !spelled && runs.is_empty()) || text.len() > u32::MAX as usize {
        return None;
    }
    let mut decoded = Vec::new();
    let mut binary = Vec::new();
    for run in runs {
        let found = decode_run(&text[run.clone()]);
        match found {
            Some((at, t)) => decoded.push((run.start + at.start..run.start + at.end, t)),
            None if run.len() >= BINARY_RUN => binary.push(Edit {
                at: run,
                with: Cow::Borrowed(" "),
            }),
            None => {}
        }
    }
    let mut view = None;
    apply(&mut view, text, binary);
    if escapes {
        for _ in 0..DECODE_ROUNDS {
            let edits = decode_edits(current(&view, text));
            if edits.is_empty() {
                break;
            }
            apply(&mut view, text, edits);
        }
    }
    if non_ascii || view.is_some() {
        let edits = char_edits(current(&view, text));
        apply(&mut view, text, edits);
    }
    if spelled
        || view
            .as_ref()
            .is_some_and(|v| survey(v.text.as_bytes()).spelled)
    {
        let edits = spelled_edits(current(&view, text));
        apply(&mut view, text, edits);
    }
    (view.is_some() || !decoded.is_empty()).then_some(Prepared { view, decoded })
}

/// `text` as the detectors read it (without what its base64 runs decode to).
pub(super) fn scan_text(text: &str) -> Cow<'_, str> {
    match prepare(text).and_then(|p| p.view) {
        Some(view) => Cow::Owned(view.text),
        None => Cow::Borrowed(text),
    }
}

fn current<'a>(view: &'a Option<View>, original: &'a str) -> &'a str {
    view.as_ref().map_or(original, |v| v.text.as_str())
}

/// Applies `edits` (sorted, not overlapping) to the current layer.
fn apply(view: &mut Option<View>, original: &str, edits: Vec<Edit>) {
    if edits.is_empty() {
        return;
    }
    let (input, origin) = match view.as_ref() {
        Some(v) => (v.text.as_str(), Some(v.origin.as_slice())),
        None => (original, None),
    };
    let from = |i: usize| origin.map_or((i as u32, i as u32 + 1), |o| o[i]);
    let mut text = String::with_capacity(input.len());
    let mut map = Vec::with_capacity(input.len());
    let mut at = 0;
    for e in &edits {
        text.push_str(&input[at..e.at.start]);
        map.extend((at..e.at.start).map(from));
        if e.at.start < e.at.end {
            let covers = (from(e.at.start).0, from(e.at.end - 1).1);
            text.push_str(&e.with);
            map.extend(std::iter::repeat_n(covers, e.with.len()));
        }
        at = e.at.end;
    }
    text.push_str(&input[at..]);
    map.extend((at..input.len()).map(from));
    *view = Some(View { text, origin: map });
}

// ---- Layer 3: characters ----

fn char_edits(text: &str) -> Vec<Edit> {
    let mut edits = Vec::new();
    if text.is_ascii() {
        return edits;
    }
    for (i, c) in text.char_indices() {
        if c.is_ascii() {
            continue;
        }
        if let Some(with) = scan_form(c) {
            edits.push(Edit {
                at: i..i + c.len_utf8(),
                with: Cow::Owned(with),
            });
        }
    }
    edits
}

/// What `c` reads as in the view, when that is not `c` itself.
fn scan_form(c: char) -> Option<String> {
    match c.general_category() {
        GeneralCategory::Format => return Some(String::new()),
        GeneralCategory::DecimalNumber => {
            return Some(char::from(b'0' + digit_value(c)).to_string());
        }
        _ => {}
    }
    if is_other_ignorable(c) {
        return Some(String::new());
    }
    // The ideographic full stops that IDNA reads as label separators.
    if matches!(c, '\u{3002}' | '\u{FF61}') {
        return Some(".".to_owned());
    }
    if is_nfkc_quick(std::iter::once(c)) != IsNormalized::No {
        return None;
    }
    Some(
        std::iter::once(c)
            .nfkc()
            .filter(|c| !is_ignorable(*c))
            .map(|c| decimal_digit(c).map_or(c, |d| char::from(b'0' + d)))
            .collect(),
    )
}

/// Characters that are not shown and change nothing a reader sees: every format character
/// (general category Cf: zero-width space, joiners, soft hyphen, BOM, bidi controls, tags)
/// and the other default-ignorable code points of the Unicode standard.
fn is_ignorable(c: char) -> bool {
    c.general_category() == GeneralCategory::Format || is_other_ignorable(c)
}

/// The default-ignorable code points that are not format characters: combining grapheme
/// joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation selectors,
/// and the unassigned ones reserved as ignorable.
fn is_other_ignorable(c: char) -> bool {
    matches!(c,
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{2065}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{E0000}'..='\u{E0FFF}')
}

/// The value of a decimal digit of any script other than ASCII.
fn decimal_digit(c: char) -> Option<u8> {
    (!c.is_ascii() && c.general_category() == GeneralCategory::DecimalNumber)
        .then(|| digit_value(c))
}

/// The value of `c`, a decimal digit (general category Nd). Unicode encodes decimal digits
/// only in runs of ten, from 0 to 9 (a stability guarantee), so the value is the distance
/// from the start of the run of Nd characters, modulo ten.
fn digit_value(c: char) -> u8 {
    let mut zero = c as u32;
    while let Some(before) = zero.checked_sub(1).and_then(char::from_u32) {
        if before.general_category() != GeneralCategory::DecimalNumber {
            break;
        }
        zero -= 1;
    }
    ((c as u32 - zero) % 10) as u8
}

// ---- The survey: which layers a text needs ----

const UPPER: u8 = 1;
const LOWER: u8 = 2;
const DIGIT: u8 = 4;
const SYMBOL: u8 = 8;
/// The base64 alphabets (standard and URL-safe together).
const BASE64: u8 = UPPER | LOWER | DIGIT | SYMBOL;
/// `%`, `&` and `\`, which start an escape.
const ESCAPE: u8 = 16;
/// Bytes of non-ASCII characters.
const HIGH: u8 = 32;
/// Opening brackets, before a spelled-out "at".
const OPEN: u8 = 64;

/// What each byte is to `survey`.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'A'..=b'Z' => UPPER,
            b'a'..=b'z' => LOWER,
            b'0'..=b'9' => DIGIT,
            b'+' | b'/' | b'-' | b'_' => SYMBOL,
            b'%' | b'&' | b'\\' => ESCAPE,
            b'[' | b'(' | b'{' | b'<' => OPEN,
            0x80..=0xFF => HIGH,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// What one pass over a text's bytes says about the layers it needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Survey {
    /// A `%`, `&` or `\`: maybe an escape.
    escapes: bool,
    /// Maybe a character that reads otherwise.
    non_ascii: bool,
    /// Something a spelled-out address cannot lack (see `spelled`): "dot", or the word "at"
    /// after an opening bracket, in any case.
    spelled: bool,
    /// Runs of base64 characters (and their `=` padding) long enough to hold an address
    /// and with at least two of capitals, small letters and digits, as encoded text has: a
    /// long lower-case word or a path is no candidate.
    runs: Vec<Range<usize>>,
}

/// Reads `text` once, a byte and a table look-up at a time, without a branch that depends
/// on the byte: a branch at every word boundary would cost more than the rest of the loop.
/// Only a text with a run long enough or an opening bracket is then read word by word.
fn survey(bytes: &[u8]) -> Survey {
    const DOT: u32 = u32::from_be_bytes([0, b'd', b'o', b't']);
    let (mut seen, mut run, mut longest, mut window, mut dot) = (0u8, 0usize, 0usize, 0u32, false);
    for &b in bytes {
        let class = CLASS[b as usize];
        seen |= class;
        run = (run + 1) * usize::from(class & BASE64 != 0);
        longest = longest.max(run);
        // The last three bytes, ASCII letters in lower case (no other byte becomes one).
        window = (window << 8 | u32::from(b | 0x20)) & 0xFF_FFFF;
        dot |= window == DOT;
    }
    let mut found = Survey {
        escapes: seen & ESCAPE != 0,
        non_ascii: seen & HIGH != 0,
        // "dot" inside a word ("anecdote") is a cue too: the pattern then finds nothing.
        spelled: dot,
        runs: Vec::new(),
    };
    if longest >= MIN_BASE64_RUN || seen & OPEN != 0 {
        let mut kinds = 0;
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let class = CLASS[b as usize];
            if class & BASE64 != 0 {
                kinds |= class;
                continue;
            }
            if i > start + 1 {
                word(bytes, start..i, kinds, &mut found);
            }
            start = i + 1;
            kinds = 0;
        }
        if bytes.len() > start + 1 {
            word(bytes, start..bytes.len(), kinds, &mut found);
        }
    }
    found
}

/// Notes what the run of base64 characters `bytes[at]` (of the given kinds) says.
fn word(bytes: &[u8], at: Range<usize>, kinds: u8, found: &mut Survey) {
    let w = &bytes[at.clone()];
    match w.len() {
        2 if w.eq_ignore_ascii_case(b"at") => {
            let before = bytes[..at.start]
                .iter()
                .rev()
                .find(|b| !matches!(b, b' ' | b'\t'));
            found.spelled |= before.is_some_and(|b| CLASS[*b as usize] == OPEN);
        }
        n if n >= MIN_BASE64_RUN && (kinds & (UPPER | LOWER | DIGIT)).count_ones() >= 2 => {
            let pad = bytes[at.end..]
                .iter()
                .take(2)
                .take_while(|b| **b == b'=')
                .count();
            found.runs.push(at.start..at.end + pad);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn view(text: &str) -> String {
        scan_text(text).into_owned()
    }

    #[test]
    fn plain_ascii_needs_no_view() {
        for text in [
            "Hi, I'm Dan Johnson; mail dan@example.com or call +1 415 555 0132.",
            "we met at the station at noon",
            "internationalization and state-of-the-art-approaches",
            "",
        ] {
            assert!(prepare(text).is_none(), "{text}");
        }
    }

    #[test]
    fn encodings_read_as_plain_text() {
        let cases = [
            ("dan\u{FF20}example\u{FF0E}com", "dan@example.com"),
            ("dan\u{FE6B}example.com", "dan@example.com"),
            (
                "d\u{200B}an\u{200C}@\u{200D}exa\u{00AD}mple.c\u{FEFF}om",
                "dan@example.com",
            ),
            ("dan\u{2060}@example\u{180E}.com\u{202E}", "dan@example.com"),
            ("\u{FF14}\u{FF11}\u{FF11}\u{FF11} 1111", "4111 1111"),
            (
                "\u{0664}\u{0661}\u{0661}\u{0661} \u{0967}\u{0967}",
                "4111 11",
            ),
            ("\u{1D7D2}\u{1D7FF} \u{2460}", "49 1"),
            ("dan%40example.com", "dan@example.com"),
            ("dan%2540example.com", "dan@example.com"),
            ("%64%61%6E%40x.org", "dan@x.org"),
            ("dan&#64;example&#x2E;com", "dan@example.com"),
            ("dan&commat;example&period;com", "dan@example.com"),
            ("dan&amp;#64;example.com", "dan@example.com"),
            ("dan\\u0040example.com", "dan@example.com"),
            ("dan&#xFF20;example.com", "dan@example.com"),
            ("caf%C3%A9 &#233;", "café é"),
            ("john [at] example [dot] com", "john@example.com"),
            ("john(at)example(dot)co(dot)uk", "john@example.co.uk"),
            ("john {at} example.com", "john@example.com"),
            ("John AT Example DOT com", "John@Example.com"),
            ("john at example dot com", "john@example.com"),
            (
                "write to john\u{3002}doe [ at ] example\u{3002}org",
                "write to john.doe@example.org",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(view(text), want, "{text:?}");
        }
    }

    #[test]
    fn what_is_not_an_encoding_stays() {
        for text in [
            "look at this dot product",
            "we met at the cafe dot com era",
            "20% off & free: AT&T, 100%",
            "C:\\users\\dan",
            "Jürgen Müller, Hauptstraße 5, 10115 Berlin — “quoted” 👍",
            "a dot at the end.",
        ] {
            assert_eq!(view(text), text, "{text:?}");
        }
    }

    #[test]
    fn spans_of_the_view_map_back_to_whole_original_characters() {
        let text = "Mail: d\u{200B}an\u{FF20}ex%61mple.com, ok";
        let prepared = prepare(text).unwrap();
        let v = prepared.view.unwrap();
        assert_eq!(v.text(), "Mail: dan@example.com, ok");
        let at = v.text().find("dan@").unwrap();
        let end = at + "dan@example.com".len();
        let original = v.original(at..end);
        assert_eq!(&text[original], "d\u{200B}an\u{FF20}ex%61mple.com");
        // Inside one replacement: the whole of it.
        let v2 = prepare("x john [at] example [dot] com y")
            .unwrap()
            .view
            .unwrap();
        let at = v2.text().find('@').unwrap();
        assert_eq!(v2.original(at..at + 1), 6..12);
        assert_eq!(v2.original(at..at), 6..6);
        // Every mapped range starts and ends on a character boundary.
        let text = "\u{FF21}\u{FF22}\u{200B}\u{FB01}&amp;\u{0661}";
        let v3 = prepare(text).unwrap().view.unwrap();
        assert_eq!(v3.text(), "ABfi&1");
        for i in 0..v3.text().len() {
            let r = v3.original(i..i + 1);
            assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        }
        assert_eq!(&text[v3.original(2..4)], "\u{FB01}");
        assert_eq!(&text[v3.original(0..6)], text);
    }

    #[test]
    fn base64_runs_that_decode_to_text_are_handed_over() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("dan.johnson@example.com");
        let url =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("card 4111 1111 1111 1111?");
        let text = format!("blob {b64} and path/{url}. done");
        let prepared = prepare(&text).unwrap();
        assert!(prepared.view.is_none());
        let found: Vec<(&str, &str)> = prepared
            .decoded
            .iter()
            .map(|(r, t)| (&text[r.clone()], t.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (b64.as_str(), "dan.johnson@example.com"),
                (url.as_str(), "card 4111 1111 1111 1111?")
            ]
        );
        // Ids, hashes and keys decode to bytes, not text.
        for text in [
            "call_Ab3dEf6hIj9kLm2nOp5qRs8t",
            "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "uuid 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "InternationalizationOfThings",
        ] {
            assert!(prepare(text).is_none_or(|p| p.decoded.is_empty()), "{text}");
        }
    }

    /// The survey finds the runs that reading them one by one finds.
    #[test]
    fn the_survey_finds_every_base64_run() {
        fn every_byte(bytes: &[u8]) -> Vec<Range<usize>> {
            let mut runs = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                let start = i;
                let mut kinds = 0;
                while i < bytes.len() && CLASS[bytes[i] as usize] & BASE64 != 0 {
                    kinds |= CLASS[bytes[i] as usize];
                    i += 1;
                }
                if i - start >= MIN_BASE64_RUN && (kinds & 7).count_ones() >= 2 {
                    let pad = bytes[i..]
                        .iter()
                        .take(2)
                        .take_while(|b| **b == b'=')
                        .count();
                    runs.push(start..i + pad);
                }
                i = i.max(start + 1);
            }
            runs
        }
        let edge_cases = [
            "ZGFuQGV4YW1wbGUuY29t",
            "a ZGFuQGV4YW1wbGUuY29t b ZGFuQGV4YW1wbGUuY29t==",
            "0123456789abcdef 0123456789abcde 0123456789ABCDEFG",
            "xxxxxxxxxxxxxxx.ZGFuQGV4YW1wbGUuY29t.yyyyyyyyyyyyyyyy",
        ];
        let corpus = crate::bench::pii_eval::generate(7, 1500);
        let texts = corpus
            .iter()
            .flat_map(|c| c.messages.iter().map(|m| m.text.as_str()))
            .chain(edge_cases);
        for text in texts {
            assert_eq!(
                survey(text.as_bytes()).runs,
                every_byte(text.as_bytes()),
                "{text:?}"
            );
        }
    }

    /// Whatever mix of encodings a text holds, the spans found in it are whole characters of
    /// it, and the redactor can replace them.
    #[test]
    fn spans_in_mixed_texts_are_whole_characters() {
        let pieces = [
            "dan\u{FF20}ex",
            "%40",
            "&#64;",
            "&amp;",
            "\u{200B}",
            "\u{FB01}",
            "\u{0664}\u{0661}",
            " [at] ",
            " dot ",
            "example.org",
            "ZGFuQGV4YW1wbGUuY29t",
            "4111",
            "\u{00AD}",
            "&#xFF20;",
            "\\u0040",
            "%C3%A9",
            "\u{1F468}\u{200D}",
            "Dan Johnson",
            " ",
            "é",
        ];
        let mut redactor = crate::core::privacy::pii::Redactor::new();
        let mut state = 7u64;
        for _ in 0..500 {
            let mut text = String::new();
            for _ in 0..8 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
            }
            for span in crate::core::privacy::pii::detect(&text) {
                assert!(
                    text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
                    "{text:?} {span:?}"
                );
            }
            redactor.redact(&text);
        }
    }

    #[test]
    fn long_binary_base64_reads_as_a_space() {
        let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let image = base64::engine::general_purpose::STANDARD.encode(bytes);
        let text = format!("data:image/png;base64,{image}");
        let v = prepare(&text).unwrap().view.unwrap();
        assert_eq!(v.text(), "data:image/png;base64, ");
    }

    #[test]
    fn digits_of_every_script_have_their_value() {
        let mut zeros = 0;
        for c in (0x80..=0x10FFFF).filter_map(char::from_u32) {
            if let Some(d) = decimal_digit(c) {
                zeros += usize::from(d == 0);
                if d == 0 {
                    let nine = char::from_u32(c as u32 + 9).unwrap();
                    assert_eq!(decimal_digit(nine), Some(9), "{c:?}");
                }
            }
        }
        // Unicode 14 has 65 scripts' sets of digits beyond ASCII; later versions add more.
        assert!(zeros >= 65, "{zeros}");
        assert_eq!(decimal_digit('\u{0669}'), Some(9));
        assert_eq!(decimal_digit('\u{1D7CE}'), Some(0));
        assert_eq!(decimal_digit('\u{1D7D8}'), Some(0));
        assert_eq!(decimal_digit('\u{FF15}'), Some(5));
        assert_eq!(decimal_digit('5'), None);
        assert_eq!(decimal_digit('\u{00B2}'), None);
    }
}
