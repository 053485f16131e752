//! Charts as SVG built by the server: no script library, nothing fetched by the page.

use std::fmt::Write;

/// Width and height of a chart, in SVG user units (the page scales it).
const W: f64 = 600.0;
const H: f64 = 160.0;
/// Room for the axis labels.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 10.0;

/// A line chart of `values` (oldest first, evenly spaced) with its maximum on the y axis,
/// labelled with `format`; `label` names it for screen readers. The line's points are in
/// the `points` attribute of the `polyline`, so a test can see the chart move.
pub fn line_chart(
    id: &str,
    label: &str,
    values: &[f64],
    x_labels: (&str, &str),
    format: impl Fn(f64) -> String,
) -> String {
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let top = nice_ceiling(max);
    let n = values.len().max(2);
    let step = (W - LEFT) / (n - 1) as f64;
    let y = |v: f64| {
        let plot = H - BOTTOM - TOP;
        TOP + plot - if top > 0.0 { v / top * plot } else { 0.0 }
    };
    let mut points = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            points.push(' ');
        }
        let _ = write!(points, "{:.1},{:.1}", LEFT + i as f64 * step, y(*v));
    }
    let area = format!(
        "{:.1},{:.1} {points} {:.1},{:.1}",
        LEFT,
        y(0.0),
        LEFT + (values.len().max(1) - 1) as f64 * step,
        y(0.0)
    );
    let mut svg = String::with_capacity(1024 + points.len() * 2);
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{label}" preserveAspectRatio="none" data-max="{max}">"#,
        id = escape(id),
        label = escape(label),
    );
    let _ = write!(svg, "<title>{}</title>", escape(label));
    for frac in [0.0, 0.5, 1.0] {
        let v = top * frac;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{W}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{x}" y="{ty:.1}" text-anchor="end">{t}</text>"#,
            y = y(v),
            x = LEFT - 6.0,
            ty = y(v) + 4.0,
            t = escape(&format(v)),
        );
    }
    let _ = write!(
        svg,
        r#"<polygon class="area" points="{area}"/><polyline class="line" points="{points}"/>"#
    );
    let _ = write!(
        svg,
        r#"<text class="axis" x="{LEFT}" y="{yb}">{a}</text><text class="axis" x="{W}" y="{yb}" text-anchor="end">{b}</text></svg>"#,
        yb = H - 4.0,
        a = escape(x_labels.0),
        b = escape(x_labels.1),
    );
    svg
}

/// The smallest of 1, 2, 5 × 10^k at or above `v` (0 for 0).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 0.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v * 0.999_999 {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Escapes text for an attribute or element.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_point_per_value_and_moves_with_them() {
        let a = line_chart("c", "events", &[0.0, 1.0, 3.0], ("-60m", "now"), |v| {
            format!("{v}")
        });
        let b = line_chart("c", "events", &[0.0, 1.0, 4.0], ("-60m", "now"), |v| {
            format!("{v}")
        });
        assert!(a.starts_with("<svg") && a.ends_with("</svg>"));
        let points = |s: &str| {
            let i = s.find("<polyline class=\"line\" points=\"").unwrap() + 31;
            s[i..i + s[i..].find('"').unwrap()].to_owned()
        };
        assert_eq!(points(&a).split(' ').count(), 3);
        assert_ne!(points(&a), points(&b));
        assert!(a.contains("aria-label=\"events\""));
    }

    #[test]
    fn labels_are_escaped_and_the_axis_is_round() {
        let s = line_chart("c", "<b>\"x\"", &[0.0; 60], ("a&b", "now"), |v| {
            format!("{v}")
        });
        assert!(!s.contains("<b>"));
        assert!(s.contains("a&amp;b"));
        assert_eq!(nice_ceiling(0.0), 0.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(0.013), 0.02);
    }
}
