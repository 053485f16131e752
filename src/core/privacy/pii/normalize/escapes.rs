//! Layer 2 of the scan view: percent-encoding (`%40`), HTML character references (`&#64;`,
//! `&#x40;`, `&commat;`) and `\uXXXX` / `\xXX` escapes, decoded.

use std::borrow::Cow;

use memchr::memchr3_iter;

use super::Edit;

/// The escapes in `text`, each as the edit that decodes it.
pub(super) fn decode_edits(text: &str) -> Vec<Edit> {
    let bytes = text.as_bytes();
    let mut edits = Vec::new();
    let mut free_from = 0;
    for i in memchr3_iter(b'%', b'&', b'\\', bytes) {
        if i < free_from {
            continue;
        }
        let found = match bytes[i] {
            b'%' => percent(bytes, i),
            b'&' => reference(text, i),
            _ => escape(bytes, i),
        };
        if let Some((end, with)) = found {
            edits.push(Edit {
                at: i..end,
                with: Cow::Owned(with),
            });
            free_from = end;
        }
    }
    edits
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn hex_at(bytes: &[u8], i: usize, n: usize) -> Option<u32> {
    let digits = bytes.get(i..i + n)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + u32::from(hex(b)?)))
}

/// A run of `%XX` from `i`: as much of it as decodes to UTF-8.
fn percent(bytes: &[u8], i: usize) -> Option<(usize, String)> {
    let mut decoded = Vec::new();
    let mut j = i;
    while bytes.get(j) == Some(&b'%') {
        let Some(b) = hex_at(bytes, j + 1, 2) else {
            break;
        };
        decoded.push(b as u8);
        j += 3;
    }
    let valid = match std::str::from_utf8(&decoded) {
        Ok(_) => decoded.len(),
        Err(e) => e.valid_up_to(),
    };
    decoded.truncate(valid);
    let text = String::from_utf8(decoded).ok().filter(|t| !t.is_empty())?;
    Some((i + 3 * valid, text))
}

/// `&#64;`, `&#x40;` (the `;` may be left out) or a named reference such as `&commat;`.
fn reference(text: &str, i: usize) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    if bytes.get(i + 1) == Some(&b'#') {
        let (radix, start) = match bytes.get(i + 2) {
            Some(b'x' | b'X') => (16, i + 3),
            _ => (10, i + 2),
        };
        let len = bytes[start..]
            .iter()
            .take(8)
            .take_while(|b| (**b as char).is_digit(radix))
            .count();
        if len == 0 {
            return None;
        }
        let n = u32::from_str_radix(&text[start..start + len], radix).ok()?;
        let c = char::from_u32(n)?;
        let end = start + len + usize::from(bytes.get(start + len) == Some(&b';'));
        return Some((end, c.to_string()));
    }
    let len = bytes[i + 1..]
        .iter()
        .take(17)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if len == 0 || bytes.get(i + 1 + len) != Some(&b';') {
        return None;
    }
    let name = &text[i + 1..i + 1 + len];
    let c = NAMED_REFERENCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)?;
    Some((i + len + 2, c.to_string()))
}

/// The HTML named character references that stand for ASCII characters (all of them, from
/// the HTML standard's list), and the no-break space and hyphens.
const NAMED_REFERENCES: &[(&str, char)] = &[
    ("Tab", '\t'),
    ("NewLine", '\n'),
    ("excl", '!'),
    ("quot", '"'),
    ("QUOT", '"'),
    ("num", '#'),
    ("dollar", '$'),
    ("percnt", '%'),
    ("amp", '&'),
    ("AMP", '&'),
    ("apos", '\''),
    ("lpar", '('),
    ("rpar", ')'),
    ("ast", '*'),
    ("midast", '*'),
    ("plus", '+'),
    ("comma", ','),
    ("period", '.'),
    ("sol", '/'),
    ("colon", ':'),
    ("semi", ';'),
    ("lt", '<'),
    ("LT", '<'),
    ("equals", '='),
    ("gt", '>'),
    ("GT", '>'),
    ("quest", '?'),
    ("commat", '@'),
    ("lsqb", '['),
    ("lbrack", '['),
    ("bsol", '\\'),
    ("rsqb", ']'),
    ("rbrack", ']'),
    ("Hat", '^'),
    ("lowbar", '_'),
    ("UnderBar", '_'),
    ("grave", '`'),
    ("DiacriticalGrave", '`'),
    ("lcub", '{'),
    ("lbrace", '{'),
    ("verbar", '|'),
    ("vert", '|'),
    ("VerticalLine", '|'),
    ("rcub", '}'),
    ("rbrace", '}'),
    ("nbsp", ' '),
    ("NonBreakingSpace", ' '),
    ("hyphen", '-'),
    ("dash", '-'),
    ("minus", '-'),
];

/// `\uXXXX` (a surrogate pair as two) or `\xXX`.
fn escape(bytes: &[u8], i: usize) -> Option<(usize, String)> {
    let (c, end) = match bytes.get(i + 1)? {
        b'u' => {
            let unit = hex_at(bytes, i + 2, 4)?;
            if (0xD800..0xDC00).contains(&unit) {
                let low = (bytes.get(i + 6..i + 8) == Some(b"\\u"))
                    .then(|| hex_at(bytes, i + 8, 4))
                    .flatten()
                    .filter(|l| (0xDC00..0xE000).contains(l))?;
                let c = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?;
                (c, i + 12)
            } else {
                (char::from_u32(unit)?, i + 6)
            }
        }
        b'x' => (char::from_u32(hex_at(bytes, i + 2, 2)?)?, i + 4),
        _ => return None,
    };
    Some((end, c.to_string()))
}
