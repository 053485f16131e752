//! The pages, as server-rendered HTML. Each page is a list of fragments, each an element
//! with an id; the live stream sends the same fragments again when they change, so the
//! first render and every update come from one function.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::fleet::{Fleet, Group, format_ms};
use super::svg;
use crate::core::collector::insight::Insight;
use crate::core::distributor::{UpdateList, UpdateStatus, UpdateSummary};
use crate::core::store::TelemetryFilter;
use crate::core::telemetry::StoredTelemetry;

/// A piece of a page the live stream may replace: `(element id, inner HTML)`.
pub type Fragment = (&'static str, String);

/// Which tab is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// `/`.
    Fleet,
    /// `/ui/insights`.
    Insights,
    /// `/ui/updates`.
    Updates,
    /// `/ui/privacy`.
    Privacy,
}

/// What every page shares.
pub struct Frame<'a> {
    /// `<title>` and heading.
    pub title: &'a str,
    /// Current tab.
    pub tab: Tab,
    /// The live stream's URL, when the page is live.
    pub stream: Option<String>,
    /// Show the log-out button (a session cookie is in use) with this CSRF token.
    pub logout_csrf: Option<String>,
}

/// A whole page: the frame around `body`.
pub fn page(frame: &Frame<'_>, body: Markup) -> String {
    let tabs = [
        (Tab::Fleet, "/", "Fleet"),
        (Tab::Insights, "/ui/insights", "Insights"),
        (Tab::Updates, "/ui/updates", "Updates"),
        (Tab::Privacy, "/ui/privacy", "Privacy"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " · Phoenix" }
                link rel="stylesheet" href="/ui/assets/app.css";
                link rel="icon" href="data:,";
                script src="/ui/assets/app.js" defer {}
            }
            body data-stream=[frame.stream.as_deref()] {
                header {
                    span.brand { "Phoenix" }
                    nav {
                        @for (tab, href, name) in tabs {
                            a href=(href) class=[(tab == frame.tab).then_some("current")] { (name) }
                        }
                    }
                    span #live-status .status { @if frame.stream.is_some() { "connecting…" } }
                    @if let Some(csrf) = &frame.logout_csrf {
                        form.logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (frame.title) }
                    (body)
                }
            }
        }
    }
    .into_string()
}

/// The fragments laid out, each in its element.
pub fn sections(fragments: &[Fragment]) -> Markup {
    html! {
        @for (id, inner) in fragments {
            section id=(id) { (PreEscaped(inner)) }
        }
    }
}

fn pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn time(ts: i64) -> String {
    match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(ts.max(0) as u64)) {
        Some(t) => humantime::format_rfc3339_seconds(t)
            .to_string()
            .replace('T', " ")
            .replace('Z', " UTC"),
        None => ts.to_string(),
    }
}

/// A short form of an ORCH hash for tables (the whole hash in the title).
fn orch(hash: &str) -> Markup {
    let short: String = hash.chars().take(14).collect();
    html! { code title=(hash) { (short) @if hash.len() > 14 { "…" } } }
}

fn name_or_none(name: &str) -> &str {
    if name.is_empty() { "(none)" } else { name }
}

fn group_table(caption: &str, first: &str, groups: &[Group], limit: usize) -> Markup {
    html! {
        h2 { (caption) }
        @if groups.is_empty() {
            p.empty { "Nothing in the last hour." }
        } @else {
            table {
                thead { tr {
                    th { (first) } th.num { "events" } th.num { "error rate" }
                    th.num { "p50" } th.num { "p95" } th.num { "tokens in" } th.num { "tokens out" }
                } }
                tbody {
                    @for g in groups.iter().take(limit) {
                        tr {
                            td { (name_or_none(&g.name)) }
                            td.num { (count(g.cell.records)) }
                            td.num { (pct(g.error_rate())) }
                            td.num { (format_ms(g.latency(0.5))) }
                            td.num { (format_ms(g.latency(0.95))) }
                            td.num { (count(g.cell.tokens_in)) }
                            td.num { (count(g.cell.tokens_out)) }
                        }
                    }
                }
            }
        }
    }
}

/// The Fleet page's fragments.
pub fn fleet(f: &Fleet, events: &[StoredTelemetry], filter: &TelemetryFilter) -> Vec<Fragment> {
    let per_second: Vec<f64> = f.minutes.iter().map(|m| m.per_second()).collect();
    let error_rate: Vec<f64> = f.minutes.iter().map(|m| m.error_rate() * 100.0).collect();
    let stats = html! {
        div.cards {
            div.card { span.label { "events, last hour" } span.value #events-hour { (count(f.records)) } }
            div.card { span.label { "events/s, last 5 min" } span.value #events-rate { (format!("{:.2}", f.recent_rate())) } }
            div.card { span.label { "error rate, last hour" } span.value #error-rate { (pct(f.error_rate())) } }
            div.card { span.label { "ORCHs seen" } span.value #orchs-seen { (count(f.orch_total.seen)) } }
            div.card { span.label { "healthy" } span.value.good #orchs-healthy { (count(f.orch_total.healthy)) } }
            div.card { span.label { "stale" } span.value.bad #orchs-stale { (count(f.orch_total.stale)) } }
        }
    };
    let charts = html! {
        div.charts {
            figure {
                figcaption { "Events per second, last 60 minutes" }
                (PreEscaped(svg::line_chart("chart-events", "events per second, last 60 minutes", &per_second, ("−60 min", "now"), |v| format!("{v:.2}"))))
            }
            figure {
                figcaption { "Error rate (%), last 60 minutes" }
                (PreEscaped(svg::line_chart("chart-errors", "error rate in percent, last 60 minutes", &error_rate, ("−60 min", "now"), |v| format!("{v:.0}%"))))
            }
        }
    };
    let orchs = html! {
        h2 { "ORCHs by agent path" }
        @if f.orchs.is_empty() {
            p.empty { "No heartbeat received yet." }
        } @else {
            table {
                thead { tr { th { "agent path" } th.num { "seen" } th.num { "healthy" } th.num { "stale" } } }
                tbody {
                    @for g in f.orchs.iter().take(50) {
                        tr {
                            td { (name_or_none(&g.agent_path)) }
                            td.num { (count(g.seen)) }
                            td.num.good { (count(g.healthy)) }
                            td.num.bad { (count(g.stale)) }
                        }
                    }
                }
            }
        }
    };
    let kinds = html! {
        h2 { "Top kinds, last hour" }
        @if f.kinds.is_empty() {
            p.empty { "Nothing in the last hour." }
        } @else {
            table {
                thead { tr { th { "kind" } th.num { "events" } th.num { "errors" } } }
                tbody {
                    @for k in f.kinds.iter().take(10) {
                        tr { td { (k.name) } td.num { (count(k.cell.records)) } td.num { (count(k.cell.errors)) } }
                    }
                }
            }
        }
    };
    let last = html! {
        h2 { "Last events" }
        (filter_form(filter))
        @if events.is_empty() {
            p.empty { "No event matches." }
        } @else {
            table #events-table {
                thead { tr {
                    th { "time" } th { "kind" } th { "level" } th { "agent path" } th { "ORCH" }
                    th { "model" } th.num { "latency" } th.num { "tokens" }
                } }
                tbody {
                    @for e in events {
                        tr {
                            td { (time(e.ts_unix)) }
                            td { (e.kind) }
                            td class=(level_class(e.level.as_deref())) { (e.level.as_deref().unwrap_or("")) }
                            td { (e.agent_path.as_deref().unwrap_or("")) }
                            td { @if let Some(o) = &e.orch_hash { (orch(o)) } }
                            td { (e.payload.get("model").and_then(|m| m.as_str()).unwrap_or("")) }
                            td.num { (format_ms(e.payload.get("response_time").and_then(|v| v.as_f64()))) }
                            td.num { (tokens(&e.payload)) }
                        }
                    }
                }
            }
        }
    };
    vec![
        ("fleet-stats", stats.into_string()),
        ("fleet-charts", charts.into_string()),
        ("fleet-orchs", orchs.into_string()),
        ("fleet-kinds", kinds.into_string()),
        (
            "fleet-agents",
            group_table("By agent path, last hour", "agent path", &f.agents, 25).into_string(),
        ),
        (
            "fleet-models",
            group_table("By model, last hour", "model", &f.models, 25).into_string(),
        ),
        ("fleet-events", last.into_string()),
    ]
}

fn tokens(payload: &serde_json::Value) -> String {
    let t = payload.get("tokens");
    let get = |a: &str, b: &str| {
        t.and_then(|t| t.get(a).or_else(|| t.get(b)))
            .and_then(|v| v.as_u64())
    };
    match (get("input", "prompt"), get("output", "completion")) {
        (None, None) => String::new(),
        (i, o) => format!("{} / {}", i.unwrap_or(0), o.unwrap_or(0)),
    }
}

fn level_class(level: Option<&str>) -> &'static str {
    match level {
        Some("error" | "critical" | "fatal") => "bad",
        Some("warn") => "warn",
        _ => "",
    }
}

fn filter_form(filter: &TelemetryFilter) -> Markup {
    html! {
        form.filters method="get" action="/" {
            label { "kind " input type="text" name="kind" value=[filter.kind.as_deref()]; }
            label { "level " input type="text" name="level" value=[filter.level.as_deref()]; }
            label { "agent path " input type="text" name="agent_prefix" value=[filter.agent_prefix.as_deref()]; }
            label { "ORCH " input type="text" name="orch" value=[filter.orch_hash.as_deref()]; }
            button type="submit" { "Filter" }
            " " a href="/" { "clear" }
        }
    }
}

/// The Insights page's list, newest first, with the insight `highlight` marked.
pub fn insights(list: &[Insight], withheld: usize, highlight: Option<&str>) -> Vec<Fragment> {
    let body = html! {
        h2 { "Stored insights" }
        @if withheld > 0 {
            p.note { (withheld) " premium insight(s) withheld: log in with the admin token to see them." }
        }
        @if list.is_empty() {
            p.empty { "No insight yet: run one with the form above." }
        }
        @for i in list {
            article id=(format!("insight-{}", i.id)) class=(if highlight == Some(i.id.as_str()) { "insight highlight" } else { "insight" }) {
                header {
                    strong { (time(i.ts_unix)) }
                    " · " span.tag { (i.tier.as_str()) }
                    " · focus " em { (i.focus) }
                    " · " (i.source.as_str())
                    @if let Some(m) = &i.model { " (" (m) ")" }
                    " · " (count(i.records_analyzed as u64)) " records"
                }
                ul.bullets { @for b in &i.bullets { li { (b) } } }
                details {
                    summary { "Statistics" }
                    table {
                        tbody {
                            tr { th { "records" } td.num { (count(i.stats.records as u64)) } }
                            tr { th { "errors" } td.num { (count(i.stats.errors as u64)) } }
                            tr { th { "error rate" } td.num { (pct(i.stats.error_rate)) } }
                            @for m in &i.stats.models {
                                tr { th { "model " (m.model) } td.num { (count(m.records as u64)) " records" } }
                            }
                            @for a in i.stats.agents.iter().take(10) {
                                tr { th { "agent " (a.agent_path) } td.num { (count(a.records as u64)) " records, " (pct(a.error_rate)) " errors" } }
                            }
                        }
                    }
                }
            }
        }
    };
    vec![("insights-list", body.into_string())]
}

/// The "Analyze now" form.
pub fn analyze_form(csrf: &str, premium_possible: bool, error: Option<&str>) -> Markup {
    html! {
        form.analyze method="post" action="/ui/analyze" {
            input type="hidden" name="csrf" value=(csrf);
            label { "last N " input type="number" name="last_n" min="1" value="500"; }
            label { "focus " input type="text" name="focus" placeholder="general" maxlength="200"; }
            label { "tier "
                select name="tier" {
                    option value="free" selected { "free" }
                    @if premium_possible { option value="premium" { "premium" } }
                }
            }
            @if premium_possible {
                label { "X402 key (premium) " input type="password" name="x402" autocomplete="off"; }
            }
            button type="submit" { "Analyze now" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
        }
    }
}

fn rollout(u: &UpdateSummary) -> String {
    match u.update.rollout_percent {
        Some(p) => format!("{p}%"),
        None => "100%".to_owned(),
    }
}

fn target(u: &crate::core::updates::UpdateEnvelope, hash: &dyn Fn(&str) -> String) -> Markup {
    html! {
        @match (&u.target_orch, &u.target_agent_prefix) {
            (Some(o), _) => { "ORCH " (orch(&hash(o))) }
            (None, Some(p)) => { (p) @if u.cascade { "/…" } }
            (None, None) => { "every ORCH" }
        }
    }
}

/// The Updates page's list. `hash` turns a target ORCH id into its hash (never shown raw).
pub fn updates(list: &UpdateList, hash: &dyn Fn(&str) -> String) -> Vec<Fragment> {
    let body = html! {
        @if list.updates.is_empty() {
            p.empty { "No update published yet." }
        } @else {
            table #updates-table {
                thead { tr {
                    th { "seq" } th { "time" } th { "type" } th { "target" } th { "tier" } th.num { "rollout" }
                    th.num { "targeted" } th.num { "delivered" } th.num { "applied" } th.num { "failed" }
                } }
                tbody {
                    @for u in &list.updates {
                        tr data-update=(u.update.update_id) {
                            td { a href=(format!("/ui/updates/{}", u.update.update_id)) { (u.update.seq) } }
                            td { (time(u.update.ts_unix)) }
                            td { (u.update.update_type.as_str()) }
                            td { (target(&u.update, hash)) }
                            td { (u.update.tier_required.as_str()) }
                            td.num { (rollout(u)) }
                            td.num { (count(u.targeted)) }
                            td.num.delivered { (count(u.counts.delivered)) }
                            td.num.applied.good { (count(u.counts.applied)) }
                            td.num.failed.bad { (count(u.counts.rejected)) }
                        }
                    }
                }
            }
        }
    };
    vec![("updates-list", body.into_string())]
}

/// One update's page: payload, history, convergence and the failing ORCHs' errors.
/// `rollbacks` are the updates that roll this one back.
pub fn update(
    s: &UpdateStatus,
    rollbacks: &[&UpdateSummary],
    hash: &dyn Fn(&str) -> String,
) -> Vec<Fragment> {
    let u = &s.update;
    let payload = if s.payload_withheld {
        "(premium payload withheld: log in with the admin token to see it)".to_owned()
    } else {
        serde_json::to_string_pretty(&u.payload).unwrap_or_default()
    };
    let summary = html! {
        table.kv {
            tbody {
                tr { th { "id" } td { code { (u.update_id) } } }
                tr { th { "seq" } td { (u.seq) } }
                tr { th { "published" } td { (time(u.ts_unix)) } }
                tr { th { "type" } td { (u.update_type.as_str()) } }
                tr { th { "target" } td { (target(u, hash)) } }
                tr { th { "tier" } td { (u.tier_required.as_str()) } }
                tr { th { "rollout" } td { (u.rollout_percent.map_or("100%".to_owned(), |p| format!("{p}%"))) } }
            }
        }
        h2 { "Payload" }
        pre.payload { (payload) }
    };
    let convergence = html! {
        h2 { "Convergence" }
        div.cards {
            div.card { span.label { "targeted" } span.value #count-targeted { (count(s.targeted)) } }
            div.card { span.label { "delivered" } span.value #count-delivered { (count(s.counts.delivered)) } }
            div.card { span.label { "applied" } span.value.good #count-applied { (count(s.counts.applied)) } }
            div.card { span.label { "failed" } span.value.bad #count-failed { (count(s.counts.rejected)) } }
            div.card { span.label { "skipped" } span.value #count-skipped { (count(s.counts.skipped)) } }
        }
        h2 { "Errors" }
        @if s.errors.is_empty() {
            p.empty { "No ORCH reported an error." }
        } @else {
            table {
                thead { tr { th { "time" } th { "ORCH" } th { "status" } th { "error" } } }
                tbody {
                    @for e in &s.errors {
                        tr { td { (time(e.ts_unix)) } td { (orch(&e.orch_hash)) } td.bad { (e.status) } td { (e.error) } }
                    }
                }
            }
        }
    };
    let history = html! {
        h2 { "History" }
        ul.history {
            li { (time(u.ts_unix)) " published at " (s.initial_rollout_percent.map_or("100%".to_owned(), |p| format!("{p}%"))) }
            @for w in &s.widenings {
                li { (time(w.ts_unix)) " widened from " (w.from_percent.map_or("100%".to_owned(), |p| format!("{p}%"))) " to " (w.to_percent) "%" }
            }
            @for r in rollbacks {
                li.bad { (time(r.update.ts_unix)) " rolled back by " a href=(format!("/ui/updates/{}", r.update.update_id)) { "update " (r.update.seq) } }
            }
        }
    };
    vec![
        ("update-summary", summary.into_string()),
        ("update-convergence", convergence.into_string()),
        ("update-history", history.into_string()),
    ]
}

/// The Privacy page's figures.
pub struct PrivacyFigures {
    /// Conversations stored.
    pub stored: u64,
    /// Conversations an SFT export would give.
    pub exportable_sft: u64,
    /// Conversations in prompt groups (preference pairs).
    pub exportable_pairs: u64,
    /// Conversations refused because they held personal data (since start).
    pub rejected_pii: u64,
    /// PII findings by kind (since start), never values.
    pub by_type: Vec<(&'static str, u64)>,
    /// OTLP strings left out by the PII guard (since start).
    pub otlp_dropped: u64,
}

/// The Privacy page.
pub fn privacy(p: &PrivacyFigures) -> Vec<Fragment> {
    let body = html! {
        div.cards {
            div.card { span.label { "conversations stored" } span.value #conversations-stored { (count(p.stored)) } }
            div.card { span.label { "exportable (SFT)" } span.value { (count(p.exportable_sft)) } }
            div.card { span.label { "in prompt groups (preference pairs)" } span.value { (count(p.exportable_pairs)) } }
            div.card { span.label { "refused: held personal data" } span.value.bad #conversations-refused { (count(p.rejected_pii)) } }
            div.card { span.label { "OTLP strings left out" } span.value { (count(p.otlp_dropped)) } }
        }
        h2 { "Personal data found by the guard, by type (since this collector started)" }
        p.note { "Only the kind of data is counted; values are never stored or shown." }
        table #pii-types {
            thead { tr { th { "type" } th.num { "findings" } } }
            tbody {
                @for (kind, n) in &p.by_type {
                    tr { td { (kind) } td.num { (count(*n)) } }
                }
            }
        }
        p.note { "Export with " code { "phoenix export" } " (see README, \"Fine-tuning datasets\")." }
    };
    vec![("privacy-figures", body.into_string())]
}

/// The login page.
pub fn login(csrf: &str, next: &str, error: Option<&str>) -> String {
    let body = html! {
        form.login method="post" action="/ui/login" {
            p { "This dashboard needs the same token as the collector's API." }
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="next" value=(next);
            label { "Token " input #token type="password" name="token" autocomplete="current-password" required autofocus; }
            button #login type="submit" { "Log in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
        }
    };
    page(
        &Frame {
            title: "Log in",
            tab: Tab::Fleet,
            stream: None,
            logout_csrf: None,
        },
        body,
    )
}

/// A page that says what went wrong.
pub fn problem(title: &str, message: &str) -> String {
    page(
        &Frame {
            title,
            tab: Tab::Fleet,
            stream: None,
            logout_csrf: None,
        },
        html! { p.error role="alert" { (message) } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_and_times_are_utc() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn values_in_a_page_are_escaped() {
        let f = Fleet::compute(0, &[], &[]);
        let filter = TelemetryFilter {
            kind: Some("<script>alert(1)</script>".into()),
            ..TelemetryFilter::default()
        };
        let html: String = fleet(&f, &[], &filter)
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
