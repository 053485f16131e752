//! Checks that turn a pattern match into a detection: Luhn, IBAN mod-97, phone plausibility,
//! SSN ranges, and whether an assigned value looks like a secret rather than a word.

/// Luhn checksum of the digits in `s` (other characters ignored).
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 2 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a Luhn-valid digit string has a length and prefix a card network issues.
pub fn card_network(digits: &str) -> bool {
    let n = digits.len();
    let p = |k: usize| {
        digits
            .get(..k)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (digits.starts_with('4') && (n == 13 || n == 16 || n == 19))
        || ((51..=55).contains(&p(2)) && n == 16)
        || ((2221..=2720).contains(&p(4)) && n == 16)
        || ((p(2) == 34 || p(2) == 37) && n == 15)
        || ((p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3))) && (16..=19).contains(&n))
        || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
        || ((p(2) == 36 || p(2) == 38 || (300..=305).contains(&p(3))) && (14..=19).contains(&n))
        || ((p(2) == 62) && (16..=19).contains(&n))
        || ((p(2) == 50 || (56..=69).contains(&p(2))) && (12..=19).contains(&n))
}

/// IBAN lengths by country (SWIFT registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// The registered IBAN length of a country code.
pub fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, n)| *n)
}

/// ISO 13616 check: country length and mod 97 == 1 over the rearranged digits.
pub fn iban(compact: &str) -> bool {
    let b = compact.as_bytes();
    if b.len() < 15 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    if iban_length(&compact[..2]) != Some(b.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub fn ssn(area: &str, group: &str, serial: &str) -> bool {
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}

/// E.164 country calling codes (1–3 digits) that are assigned.
fn country_code_len(digits: &str) -> Option<usize> {
    const ONE: &[&str] = &["1", "7"];
    const TWO: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    if ONE.iter().any(|c| digits.starts_with(c)) {
        return Some(1);
    }
    if TWO.iter().any(|c| digits.starts_with(c)) {
        return Some(2);
    }
    // Three-digit codes live in the 2xx, 3xx, 4xx, 5xx, 6xx, 8xx and 9xx blocks not taken above.
    match digits.as_bytes().first() {
        Some(b'2' | b'3' | b'4' | b'5' | b'6' | b'8' | b'9') if digits.len() > 3 => Some(3),
        _ => None,
    }
}

/// What the words before a number say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberContext {
    /// "call", "phone", "tel", "mobile", ...
    Phone,
    /// "order", "invoice", "ticket", "version", "#", ...
    NotPhone,
    /// Nothing either way.
    Neutral,
}

/// Reads the ~32 bytes before a number for words that say what it is.
pub fn number_context(before: &str) -> NumberContext {
    let mut start = before.len().saturating_sub(32);
    while !before.is_char_boundary(start) {
        start += 1;
    }
    let tail = before[start..].to_ascii_lowercase();
    // The nearest cue wins ("order 123, call me on ..." is a phone); cues are whole words
    // ("Ingrid" is no "id"), read from the number backwards.
    let mut words = tail
        .split(|c: char| !(c.is_alphanumeric() || c == '#'))
        .filter(|w| !w.is_empty())
        .rev();
    let mut after: Option<&str> = None;
    for w in words.by_ref() {
        let w = w.trim_start_matches(|c: char| c != '#' && !c.is_alphanumeric());
        if w.ends_with('#') || w.starts_with('#') {
            return NumberContext::NotPhone;
        }
        if matches!(
            w,
            "phone"
                | "phones"
                | "telephone"
                | "tel"
                | "call"
                | "calling"
                | "mobile"
                | "cell"
                | "cellphone"
                | "fax"
                | "whatsapp"
                | "sms"
                | "reach"
                | "ring"
                | "dial"
                | "contact"
                | "landline"
                | "hotline"
                | "mob"
                // German, French, Spanish and Italian cues.
                | "telefon"
                | "telefonnummer"
                | "handy"
                | "handynummer"
                | "mobil"
                | "mobilnummer"
                | "festnetz"
                | "anrufen"
                | "ruf"
                | "rufen"
                | "erreichbar"
                | "téléphone"
                | "tél"
                | "portable"
                | "appelez"
                | "appeler"
                | "appelle"
                | "joindre"
                | "teléfono"
                | "telefono"
                | "llame"
                | "llamar"
                | "llámame"
                | "llamame"
                | "móvil"
                | "movil"
                | "celular"
                | "cellulare"
                | "chiamare"
                | "chiamami"
        ) || (w == "text" && after == Some("me"))
        {
            return NumberContext::Phone;
        }
        if matches!(
            w,
            "order"
                | "orders"
                | "invoice"
                | "ticket"
                | "tracking"
                | "ref"
                | "reference"
                | "account"
                | "acct"
                | "serial"
                | "id"
                | "nr"
                | "version"
                | "build"
                | "isbn"
                | "case"
                | "transaction"
                | "confirmation"
                | "booking"
                | "po"
                | "sku"
                | "part"
                | "batch"
                | "zip"
                | "postcode"
                | "amount"
                | "total"
        ) {
            return NumberContext::NotPhone;
        }
        after = Some(w);
    }
    NumberContext::Neutral
}

/// Whether a candidate such as `+44 20 7946 0958`, `(415) 555-0132` or `030 1234567` is a
/// phone number rather than a date, version, amount or order number.
/// The context is read only for candidates that have a phone's shape: reading it is the
/// costly part, and most digit runs in text (counts, years, ids) fail on shape alone.
pub fn phone(candidate: &str, context: impl FnOnce() -> NumberContext) -> bool {
    // Most candidates (years, counts, short ids) fail on their digit count: count before
    // collecting.
    let n = candidate.bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&n) {
        return false;
    }
    let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
    let seps = candidate
        .chars()
        .filter(|c| matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .count();
    let dots = candidate.matches('.').count();
    // Dates, versions and dotted quads.
    if looks_like_date(candidate)
        || (dots >= 2 && !is_dotted_nanp(candidate) && !is_dotted_pairs(candidate))
    {
        return false;
    }
    // A trunk zero in brackets (`+33 (0)2 …`, `+44(0)161 …`) is no group of its own.
    let without_trunk = candidate.replace("(0)", "");
    let groups: Vec<&str> = without_trunk
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    // Long single-digit groups ("1 2 3 4 5 6 7") are lists, not numbers.
    if groups.iter().filter(|g| g.len() == 1).count() > 1 {
        return false;
    }
    let context = context();
    if context == NumberContext::NotPhone {
        return false;
    }
    let context_ok = context == NumberContext::Phone;
    if let Some(rest) = candidate.strip_prefix('+') {
        let rest_digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        return match country_code_len(&rest_digits) {
            Some(cc) => {
                (6..=13).contains(&(rest_digits.len() - cc)) && (seps > 0 || context_ok || n >= 10)
            }
            None => false,
        };
    }
    if let Some(intl) = digits.strip_prefix("00") {
        return country_code_len(intl).is_some() && n >= 10 && (seps > 0 || context_ok);
    }
    if is_nanp(&digits) {
        // Written without separators too (`4155550132`): a NANP shape (area and exchange
        // codes 2–9) that no word before calls an order, ticket or version.
        return true;
    }
    if digits.starts_with('0') && (9..=12).contains(&n) {
        // Trunk-prefixed national numbers (UK, DE, FR, AU, ...), grouped as people write them,
        // or as ten or eleven digits in one run (`01514960173`, `0249459954`).
        let one_run = seps == 0 && (10..=11).contains(&n) && digits.as_bytes()[1] != b'0';
        return (seps > 0 && groups.iter().all(|g| g.len() >= 2)) || one_run || context_ok;
    }
    // Indian mobiles: 98765 43210.
    if n == 10 && matches!(digits.as_bytes()[0], b'6'..=b'9') && groups.len() == 2 {
        return groups[0].len() == 5;
    }
    context_ok && n >= 8
}

/// `(415) 555-0132`, `415-555-0132`, `1 415 555 0132`: area and exchange codes start 2–9.
fn is_nanp(digits: &str) -> bool {
    let d = match digits.len() {
        10 => digits,
        11 if digits.starts_with('1') => &digits[1..],
        _ => return false,
    };
    let b = d.as_bytes();
    (b'2'..=b'9').contains(&b[0]) && (b'2'..=b'9').contains(&b[3])
}

/// `01.23.45.67.89`: a French national number written in dotted pairs.
fn is_dotted_pairs(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 5 && parts.iter().all(|p| p.len() == 2) && s.starts_with('0')
}

fn is_dotted_nanp(s: &str) -> bool {
    let parts: Vec<&str> = s.trim_start_matches('+').split('.').collect();
    let lens: Vec<usize> = parts.iter().map(|p| p.trim().len()).collect();
    lens == [3, 3, 4] || lens == [1, 3, 3, 4]
}

fn looks_like_date(s: &str) -> bool {
    let parts: Vec<&str> = s
        .split(['-', '/', '.', ' '])
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 3 || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let num = |i: usize| parts[i].parse::<u32>().unwrap_or(99);
    match lens.as_slice() {
        [4, 2, 2] | [4, 1, 1] | [4, 1, 2] | [4, 2, 1] => (1..=12).contains(&num(1)),
        [1 | 2, 1 | 2, 4] | [1 | 2, 1 | 2, 2] => num(0) <= 31 && num(1) <= 31,
        _ => false,
    }
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// Whether a value assigned to `password`/`token`/... is a real secret, not a placeholder,
/// a number or a plain word ("the token is expired").
pub fn looks_secret(v: &str) -> bool {
    if v.len() < 6 || v.len() > 400 {
        return false;
    }
    let lower = v.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "none",
        "null",
        "true",
        "false",
        "redacted",
        "required",
        "optional",
        "undefined",
        "example",
        "your",
        "xxxx",
        "****",
        "changeit",
        "placeholder",
        "expired",
        "invalid",
        "missing",
        "provided",
        "correct",
        "incorrect",
        "wrong",
    ];
    if v.starts_with(['<', '{', '$', '%', '[', '('])
        || PLACEHOLDERS.iter().any(|p| lower.contains(p))
    {
        return false;
    }
    if is_pseudonym(v) {
        return false;
    }
    let lowers = v.bytes().any(|b| b.is_ascii_lowercase());
    let uppers = v.bytes().any(|b| b.is_ascii_uppercase());
    let digits = v.bytes().any(|b| b.is_ascii_digit());
    let symbols = v.bytes().any(|b| !b.is_ascii_alphanumeric());
    let classes = [lowers, uppers, digits, symbols]
        .iter()
        .filter(|&&x| x)
        .count();
    let h = entropy(v);
    if !lowers && !uppers {
        // Numbers and dates ("tokens: 4096") are counts, not secrets.
        return false;
    }
    (classes >= 2 && h >= 2.5) || (v.len() >= 16 && h >= 3.0)
}

/// Whether `s` is one of Phoenix's own pseudonyms (so redacting twice changes nothing).
pub fn is_pseudonym(s: &str) -> bool {
    super::redactor::is_pseudonym(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_networks() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(card_network("4111111111111111"));
        assert!(card_network("5555555555554444"));
        assert!(card_network("378282246310005"));
        assert!(
            !card_network("1234567812345670"),
            "no network starts with 1"
        );
    }

    #[test]
    fn iban_mod97_and_length() {
        assert!(iban("DE89370400440532013000"));
        assert!(iban("GB82WEST12345698765432"));
        assert!(iban("FR1420041010050500013M02606"));
        assert!(!iban("DE89370400440532013001"), "bad check digits");
        assert!(!iban("DE8937040044053201300"), "too short for DE");
        assert!(!iban("QQ89370400440532013000"), "unknown country");
    }

    #[test]
    fn phones_are_validated_not_any_digit_run() {
        let n = NumberContext::Neutral;
        for ok in [
            "+1 415 555 0132",
            "(415) 555-0132",
            "415-555-0132",
            "415.555.0132",
            "+44 20 7946 0958",
            "020 7946 0958",
            "07700 900123",
            "+49 30 12345678",
            "030 12345678",
            "+33 1 23 45 67 89",
            "01 23 45 67 89",
            "+91 98765 43210",
            "0412 345 678",
            "0044 20 7946 0958",
            "+33 (0)2 32 72 85 14",
            "+44(0)161 496 0911",
            "4155550132",
            "01514960173",
            "0249459954",
        ] {
            assert!(phone(ok, || n), "{ok} is a phone");
        }
        for not in [
            "2024-03-15",
            "15.03.2024",
            "03 15 2024",
            "1.2.3.4",
            "10.0.0.12",
            "1796169600",
            "0000012345",
            "12345678",
            "1 2 3 4 5 6 7",
            "123-4567",
            "+999 1234",
        ] {
            assert!(!phone(not, || n), "{not} is not a phone");
        }
        assert!(
            phone("4155550132", || NumberContext::Phone),
            "bare digits after 'call'"
        );
        assert!(!phone("415-555-0132", || number_context(
            "your order number is "
        )));
        assert_eq!(
            number_context("order 12, call me on "),
            NumberContext::Phone
        );
        assert_eq!(
            number_context("Call Ingrid Kim on "),
            NumberContext::Phone,
            "'id ' inside a name is no cue"
        );
    }

    #[test]
    fn ssn_ranges() {
        assert!(ssn("123", "45", "6789"));
        assert!(!ssn("000", "45", "6789"));
        assert!(!ssn("666", "45", "6789"));
        assert!(!ssn("912", "45", "6789"));
        assert!(!ssn("123", "00", "6789"));
    }

    #[test]
    fn secrets_are_not_words_or_numbers() {
        assert!(looks_secret("hunter2!"));
        assert!(looks_secret("Tr0ub4dor&3"));
        assert!(looks_secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9KEY"));
        assert!(!looks_secret("expired"));
        assert!(!looks_secret("4096"));
        assert!(!looks_secret("<your-api-key>"));
        assert!(!looks_secret("${GITHUB_TOKEN}"));
        assert!(!looks_secret("SECRET_1"));
    }
}
