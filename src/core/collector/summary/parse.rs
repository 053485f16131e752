//! Parsing an LLM's answer back into insight bullets, and rendering bullets as Markdown.

use super::*;

/// Bullets out of an LLM's answer, at most [`MAX_BULLETS`].
///
/// Lines marked `-`, `*`, `•` or `1.` / `1)` are bullets (markers and surrounding `**` are
/// stripped); indented lines after a bullet continue it. Blank lines, headings (`#`), code
/// fences and preamble lines ending with `:` are ignored. An answer without any marked line
/// gives one bullet per remaining line.
pub fn parse_bullets(text: &str) -> Vec<String> {
    let mut marked: Vec<String> = Vec::new();
    // Indentation of the bullet being built, while continuation lines may still join it.
    let mut open: Option<usize> = None;
    let mut plain: Vec<String> = Vec::new();

    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with("```") {
            open = None;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        match strip_marker(trimmed) {
            Some(body) => {
                let body = clean(body);
                match open {
                    // A nested bullet belongs to its parent.
                    Some(parent) if indent > parent => append(marked.last_mut(), &body),
                    _ => {
                        marked.push(body);
                        open = Some(indent);
                    }
                }
            }
            None => match open {
                Some(parent) if indent > parent => append(marked.last_mut(), &clean(trimmed)),
                _ => {
                    open = None;
                    let body = clean(trimmed);
                    if !body.ends_with(':') {
                        plain.push(body);
                    }
                }
            },
        }
    }

    let bullets = if marked.iter().any(|b| !b.is_empty()) {
        marked
    } else {
        plain
    };
    bullets
        .into_iter()
        .filter(|b| !b.is_empty())
        .take(MAX_BULLETS)
        .collect()
}

pub(super) fn append(bullet: Option<&mut String>, more: &str) {
    if let Some(bullet) = bullet {
        if more.is_empty() {
            return;
        }
        if !bullet.is_empty() {
            bullet.push(' ');
        }
        bullet.push_str(more);
    }
}

/// The text after a list marker, if the line starts with one.
pub(super) fn strip_marker(line: &str) -> Option<&str> {
    for marker in ["-", "*", "•", "–", "+"] {
        if let Some(rest) = line.strip_prefix(marker) {
            // `**bold**` and `---` are not markers; a marker is followed by a space.
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                return Some(rest);
            }
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=3).contains(&digits) {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(')'))
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            return Some(rest);
        }
    }
    None
}

/// Trims a bullet and removes bold wrapping the whole of it.
pub(super) fn clean(text: &str) -> String {
    let mut text = text.trim();
    while let Some(inner) = text.strip_prefix("**").and_then(|t| t.strip_suffix("**")) {
        text = inner.trim();
    }
    if let Some(inner) = text.strip_prefix("**").and_then(|t| t.strip_suffix("**:")) {
        return format!("{}:", inner.trim());
    }
    text.to_owned()
}

/// Bullets as a Markdown list: `- a\n- b`.
pub fn render_summary(bullets: &[String]) -> String {
    let mut out = String::new();
    for (i, bullet) in bullets.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str("- ");
        out.push_str(bullet);
    }
    out
}
