//! Base64-looking runs that decode to text: what they say is scanned on its own (see
//! `detect`), since a token must still read as the token in the view.

use std::ops::Range;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::MIN_BASE64_RUN;

/// How many characters of a run are decoded to tell text from binary.
const BASE64_HEAD: usize = 64;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
static STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
static URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// The text a base64 run decodes to, and which part of the run that is: the whole run, or
/// what comes after or before one of its first four `/`, `+`, `-` and `_` (`path/ZGFu…`,
/// `ZGFu…-v2`).
pub(super) fn decode_run(run: &str) -> Option<(Range<usize>, String)> {
    if let Some(text) = decode_text(run) {
        return Some((0..run.len(), text));
    }
    for (cut, _) in run.match_indices(['/', '+', '-', '_']).take(4) {
        for at in [cut + 1..run.len(), 0..cut] {
            if at.len() >= MIN_BASE64_RUN
                && let Some(text) = decode_text(&run[at.clone()])
            {
                return Some((at, text));
            }
        }
    }
    None
}

fn decode_text(run: &str) -> Option<String> {
    let s = run.trim_end_matches('=');
    let url_safe = s.contains(['-', '_']);
    if url_safe && s.contains(['+', '/']) {
        return None;
    }
    let engine = if url_safe { &URL_SAFE } else { &STANDARD };
    // A lone character after the last group of four carries no byte.
    let s = &s[..s.len() - usize::from(s.len() % 4 == 1)];
    // Most runs are ids, hashes and images: look at the start before decoding it all, on
    // the stack.
    let head = &s[..s.len().min(BASE64_HEAD)];
    let mut buf = [0u8; BASE64_HEAD / 4 * 3];
    let n = engine.decode_slice(head, &mut buf).ok()?;
    if !is_text(&buf[..n], head.len() < s.len()) {
        return None;
    }
    let bytes = match head.len() == s.len() {
        true => buf[..n].to_vec(),
        false => engine.decode(s).ok()?,
    };
    let text = String::from_utf8(bytes).ok()?;
    is_text(text.as_bytes(), false).then_some(text)
}

/// Whether decoded bytes are text: UTF-8 (possibly cut inside a character at the end when
/// `partial`), no control characters but line breaks and tabs, nearly all letters, digits,
/// punctuation and spaces, and some ASCII letter or digit.
fn is_text(bytes: &[u8], partial: bool) -> bool {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) if partial && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to here")
        }
        Err(_) => return false,
    };
    let (mut chars, mut plain) = (0usize, 0usize);
    for c in text.chars() {
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
            return false;
        }
        chars += 1;
        plain += usize::from(c.is_ascii_graphic() || c == ' ' || c.is_alphanumeric());
    }
    chars >= 4 && plain * 10 >= chars * 9 && text.bytes().any(|b| b.is_ascii_alphanumeric())
}
