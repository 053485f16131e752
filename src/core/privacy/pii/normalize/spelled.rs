//! Layer 4 of the scan view: "at" and "dot" spelled out, read as `@` and `.` where they make
//! an address (`john [at] example [dot] com`, `john at example dot com`).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::Edit;
use crate::core::privacy::pii::detect::re;

/// A local part, an "at", a domain label, then labels after "dot"s or dots.
static SPELLED: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?i)\b[a-z0-9][a-z0-9._%+-]*",
        r"(?:[ \t]*[\[({<][ \t]*at[ \t]*[\])}>][ \t]*|[ \t]+at[ \t]+)",
        r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
        r"(?:(?:[ \t]*[\[({<][ \t]*dot[ \t]*[\])}>][ \t]*|[ \t]+dot[ \t]+|\.)[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+\b",
    ))
});
/// The spelled-out separators inside a `SPELLED` match (its other parts have no spaces).
static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)[ \t]*[\[({<][ \t]*(?:at|dot)[ \t]*[\])}>][ \t]*|[ \t]+(?:at|dot)[ \t]+")
});

/// Top-level domains that a plain " at … dot " must end in to be read as an address:
/// without brackets, "look at this dot product" is English.
const COMMON_TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "int", "io", "co", "ai", "app", "dev", "info", "biz",
    "me", "us", "uk", "de", "fr", "es", "it", "nl", "be", "ch", "at", "se", "no", "dk", "fi", "pl",
    "pt", "ie", "ru", "cn", "jp", "kr", "in", "au", "nz", "ca", "br", "mx", "za", "eu", "example",
];

/// The separators to rewrite in `text`, for every spelled-out address in it.
pub(super) fn spelled_edits(text: &str) -> Vec<Edit> {
    let mut edits = Vec::new();
    for m in SPELLED.find_iter(text) {
        let s = m.as_str();
        let tld = s
            .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '-')
            .next();
        let Some(tld) = tld.filter(|t| (2..=24).contains(&t.len())) else {
            continue;
        };
        if !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let separators: Vec<_> = SEPARATOR.find_iter(s).collect();
        let Some(at) = separators.first() else {
            continue;
        };
        let bracketed = at.as_str().contains(['[', '(', '{', '<']);
        let spelled_dot = separators.len() > 1;
        let common = COMMON_TLDS.iter().any(|t| t.eq_ignore_ascii_case(tld));
        let address = bracketed || (spelled_dot && common);
        if !address {
            continue;
        }
        for (k, sep) in separators.iter().enumerate() {
            edits.push(Edit {
                at: m.start() + sep.start()..m.start() + sep.end(),
                with: Cow::Borrowed(if k == 0 { "@" } else { "." }),
            });
        }
    }
    edits
}
