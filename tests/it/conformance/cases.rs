//! The cases: each takes a fresh [`Backend`] and asserts what every backend must do.

use std::collections::HashMap;

use phoenix::core::collector::analysis::{self, AnalysisOptions};
use phoenix::core::collector::insight::{Insight, SummarySource, Tier};
use phoenix::core::store::{
    ConversationFilter, ConversationStore, Error, FilterCounts, ReadOrder, TelemetryFilter,
    TelemetryStore,
};
use phoenix::core::telemetry::conversation::{Feedback, NewConversation};
use phoenix::core::telemetry::{HEARTBEAT_KIND, NewRecord, StoredTelemetry};

use super::Backend;

/// Record `i`: id `id-i`, the given kind, agent, orch and time.
pub fn record(i: usize, kind: &str, agent: Option<&str>, orch: Option<&str>, ts: i64) -> NewRecord {
    NewRecord {
        id: format!("id-{i}"),
        ts_unix: ts,
        received_unix: ts + 1,
        kind: kind.to_owned(),
        level: Some(if i.is_multiple_of(2) { "info" } else { "error" }.to_owned()),
        orch_hash: orch.map(str::to_owned),
        agent_path: agent.map(str::to_owned),
        tags_json: i.is_multiple_of(3).then(|| format!("[\"t{i}\",\"all\"]")),
        payload_json: format!("{{\"n\":{i},\"nested\":{{\"ok\":true}}}}"),
    }
}

async fn put(store: &dyn TelemetryStore, records: Vec<NewRecord>) {
    store.submit(records).unwrap().wait().await.unwrap();
}

fn ids(records: &[StoredTelemetry]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

async fn all(store: &dyn TelemetryStore, filter: &TelemetryFilter) -> Vec<String> {
    let page = store.query(filter, 10_000, None).await.unwrap();
    assert_eq!(page.next_cursor, None);
    page.records.into_iter().map(|r| r.id).collect()
}

pub async fn round_trip(b: Backend) {
    let s = b.store.as_ref();
    let sent = vec![
        record(0, "skill", Some("support/triage"), Some("orch_a"), 1000),
        record(1, "error", None, None, 1001),
        record(2, "skill", Some("code"), Some("orch_b"), 999),
    ];
    put(s, sent.clone()).await;
    let page = s
        .query(&TelemetryFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.next_cursor, None);
    // Newest first is by arrival, not by event time.
    assert_eq!(ids(&page.records), ["id-2", "id-1", "id-0"]);
    for (got, want) in page.records.iter().rev().zip(&sent) {
        assert_eq!(got.id, want.id);
        assert_eq!(got.ts_unix, want.ts_unix);
        assert_eq!(got.received_unix, want.received_unix);
        assert_eq!(got.kind, want.kind);
        assert_eq!(got.level, want.level);
        assert_eq!(got.orch_hash, want.orch_hash);
        assert_eq!(got.agent_path, want.agent_path);
        let tags: Vec<String> = want
            .tags_json
            .as_deref()
            .map(|t| serde_json::from_str(t).unwrap())
            .unwrap_or_default();
        assert_eq!(got.tags, tags);
        let payload: serde_json::Value = serde_json::from_str(&want.payload_json).unwrap();
        assert_eq!(got.payload, payload);
    }
    b.store.shutdown().await;
}

pub async fn filters(b: Backend) {
    let s = b.store.as_ref();
    put(
        s,
        vec![
            record(0, "skill", Some("a"), Some("orch_1"), 100),
            record(1, "skill", Some("a/b"), Some("orch_2"), 200),
            record(2, "error", Some("c"), Some("orch_1"), 300),
            record(3, "error", None, None, 400),
            record(4, "skill", Some("a"), Some("orch_2"), 500),
        ],
    )
    .await;
    let f = |f: TelemetryFilter| f;
    let by_kind = f(TelemetryFilter {
        kind: Some("error".into()),
        ..Default::default()
    });
    assert_eq!(all(s, &by_kind).await, ["id-3", "id-2"]);
    let by_level = f(TelemetryFilter {
        level: Some("error".into()),
        ..Default::default()
    });
    assert_eq!(all(s, &by_level).await, ["id-3", "id-1"]);
    let by_orch = f(TelemetryFilter {
        orch_hash: Some("orch_1".into()),
        ..Default::default()
    });
    assert_eq!(all(s, &by_orch).await, ["id-2", "id-0"]);
    let unknown_orch = f(TelemetryFilter {
        orch_hash: Some("orch_none".into()),
        ..Default::default()
    });
    assert!(all(s, &unknown_orch).await.is_empty());
    // `since` is inclusive, `until` exclusive.
    let window = f(TelemetryFilter {
        since: Some(200),
        until: Some(400),
        ..Default::default()
    });
    assert_eq!(all(s, &window).await, ["id-2", "id-1"]);
    let combined = f(TelemetryFilter {
        kind: Some("skill".into()),
        agent_prefix: Some("a".into()),
        orch_hash: Some("orch_2".into()),
        since: Some(150),
        ..Default::default()
    });
    assert_eq!(all(s, &combined).await, ["id-4", "id-1"]);
    b.store.shutdown().await;
}

pub async fn agent_prefix_is_segment_wise(b: Backend) {
    let s = b.store.as_ref();
    let agents = [
        Some("support"),
        Some("support/x"),
        Some("supporter"),
        Some("support/x/y"),
        Some("supportx/y"),
        None,
        Some("other/support"),
    ];
    let records = agents
        .iter()
        .enumerate()
        .map(|(i, a)| record(i, "k", *a, None, 10))
        .collect();
    put(s, records).await;
    let under = |p: &str| TelemetryFilter {
        agent_prefix: Some(p.to_owned()),
        ..Default::default()
    };
    assert_eq!(all(s, &under("support")).await, ["id-3", "id-1", "id-0"]);
    assert_eq!(all(s, &under("support/")).await, ["id-3", "id-1", "id-0"]);
    assert_eq!(all(s, &under("support/x")).await, ["id-3", "id-1"]);
    assert_eq!(all(s, &under("supporter")).await, ["id-2"]);
    assert!(all(s, &under("supp")).await.is_empty());
    b.store.shutdown().await;
}

pub async fn newest_first_paging_has_no_gaps_or_duplicates(b: Backend) {
    let s = b.store.as_ref();
    // Several commits, so backends that keep recent rows apart are paged across both.
    for chunk in 0..5 {
        let records = (chunk * 11..(chunk + 1) * 11)
            .map(|i| record(i, if i % 4 == 0 { "hb" } else { "k" }, None, None, i as i64))
            .collect();
        put(s, records).await;
    }
    let total = 55;
    for (filter, expected) in [
        (
            TelemetryFilter::default(),
            (0..total).rev().collect::<Vec<_>>(),
        ),
        (
            TelemetryFilter {
                kind: Some("hb".into()),
                ..Default::default()
            },
            (0..total).rev().filter(|i| i % 4 == 0).collect(),
        ),
    ] {
        for size in [1, 7, 14, expected.len(), expected.len() + 1] {
            let mut seen = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                let page = s.query(&filter, size, cursor).await.unwrap();
                assert!(page.records.len() <= size);
                pages += 1;
                seen.extend(page.records.into_iter().map(|r| r.id));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let want: Vec<String> = expected.iter().map(|i| format!("id-{i}")).collect();
            assert_eq!(seen, want, "page size {size}");
            assert_eq!(pages, expected.len().div_ceil(size), "page size {size}");
        }
    }
    // A page that ends exactly at the last record has no cursor.
    let page = s
        .query(&TelemetryFilter::default(), total, None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), total);
    assert_eq!(page.next_cursor, None);
    b.store.shutdown().await;
}

pub async fn last_heartbeats(b: Backend) {
    let s = b.store.as_ref();
    for (i, (orch, ts)) in [
        ("orch_a", 300),
        ("orch_a", 500),
        ("orch_b", 100),
        ("orch_a", 400),
    ]
    .into_iter()
    .enumerate()
    {
        put(s, vec![record(i, HEARTBEAT_KIND, None, Some(orch), ts)]).await;
    }
    // Not heartbeats: never count.
    put(
        s,
        vec![
            record(10, "skill", None, Some("orch_a"), 900),
            record(11, "skill", None, Some("orch_c"), 900),
        ],
    )
    .await;
    let asked = ["orch_a", "orch_b", "orch_c", "orch_none"].map(str::to_owned);
    let hb = s.last_heartbeats(&asked).await.unwrap();
    let want: HashMap<String, i64> = [("orch_a".to_owned(), 500), ("orch_b".to_owned(), 100)]
        .into_iter()
        .collect();
    assert_eq!(hb, want);
    let only_b = s.last_heartbeats(&["orch_b".to_owned()]).await.unwrap();
    assert_eq!(only_b.len(), 1);
    assert!(s.last_heartbeats(&[]).await.unwrap().is_empty());
    b.store.shutdown().await;
}

fn insight(n: usize) -> Insight {
    let stats = analysis::analyze(&[], &HashMap::new(), &AnalysisOptions::default());
    Insight {
        id: format!("insight-{n}"),
        ts_unix: 1000 + n as i64,
        tier: if n.is_multiple_of(2) {
            Tier::Free
        } else {
            Tier::Premium
        },
        focus: "general".to_owned(),
        source: SummarySource::Heuristic,
        model: None,
        fallback_reason: Some("no LLM configured".to_owned()),
        summary: format!("- bullet {n}"),
        bullets: vec![format!("bullet {n}")],
        requested_last_n: 100,
        last_n: 100,
        tier_limit: 1000,
        clamped: false,
        records_analyzed: n,
        filters: TelemetryFilter {
            kind: Some("skill".to_owned()),
            ..Default::default()
        },
        stats,
        analysis_ms: 1.5,
        llm_ms: None,
    }
}

pub async fn insights_newest_first(b: Backend) {
    let s = b.store.as_ref();
    assert!(s.insights(10).await.unwrap().is_empty());
    let saved: Vec<Insight> = (0..4).map(insight).collect();
    for i in &saved {
        s.save_insight(i.to_record().unwrap())
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let got = s.insights(3).await.unwrap();
    let decoded: Vec<Insight> = got
        .iter()
        .map(|r| Insight::from_record(r).unwrap())
        .collect();
    assert_eq!(
        decoded,
        vec![saved[3].clone(), saved[2].clone(), saved[1].clone()]
    );
    // The indexed columns come back as they were saved.
    assert_eq!(got[0], saved[3].to_record().unwrap());
    assert_eq!(
        (
            got[0].tier.as_str(),
            got[1].tier.as_str(),
            got[0].source.as_str()
        ),
        ("premium", "free", "heuristic")
    );
    assert_eq!(s.insights(100).await.unwrap().len(), 4);
    b.store.shutdown().await;
}

pub async fn purge_before_respects_its_limit(b: Backend) {
    let s = b.store.as_ref();
    // Ten old records in two commits, then five new ones.
    put(s, (0..6).map(|i| record(i, "k", None, None, 100)).collect()).await;
    put(
        s,
        (6..10).map(|i| record(i, "k", None, None, 199)).collect(),
    )
    .await;
    put(
        s,
        (10..15).map(|i| record(i, "k", None, None, 200)).collect(),
    )
    .await;
    let mut purged = Vec::new();
    for _ in 0..4 {
        purged.push(s.purge_before(200, 4).unwrap().wait().await.unwrap());
    }
    assert_eq!(purged, [4, 4, 2, 0]);
    assert_eq!(s.count().await.unwrap(), 5);
    assert_eq!(
        all(s, &TelemetryFilter::default()).await,
        ["id-14", "id-13", "id-12", "id-11", "id-10"]
    );
    assert_eq!(
        s.purge_before(i64::MAX, 0).unwrap().wait().await.unwrap(),
        0
    );
    b.store.shutdown().await;
}

pub async fn counts(b: Backend) {
    let s = b.store.as_ref();
    assert_eq!(s.count().await.unwrap(), 0);
    put(s, (0..3).map(|i| record(i, "k", None, None, 1)).collect()).await;
    assert_eq!(s.count().await.unwrap(), 3);
    put(s, (3..10).map(|i| record(i, "k", None, None, 1)).collect()).await;
    assert_eq!(s.count().await.unwrap(), 10);
    assert_eq!(s.queue_depth(), 0, "nothing waits once every commit is in");
    b.store.shutdown().await;
}

fn conversation(id: &str, ts: i64, score: Option<f64>, key: Option<&str>) -> NewConversation {
    NewConversation {
        conversation_id: id.to_owned(),
        ts_unix: ts,
        received_unix: ts + 1,
        orch_hash: Some("orch_a".to_owned()),
        agent_path: Some("support".to_owned()),
        feedback: Some(Feedback::Positive),
        score,
        messages_json: format!(r#"[{{"role":"user","content":"{id}"}}]"#),
        prompt_key: key.map(str::to_owned),
    }
}

async fn stored_ids(
    s: &dyn ConversationStore,
    filter: ConversationFilter,
    order: ReadOrder,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut rows = s.read_conversations(&filter, order).await.unwrap();
    while let Some(c) = rows.next().await {
        out.push(c.unwrap().conversation_id);
    }
    assert_eq!(
        s.count_conversations(&filter, order).await.unwrap(),
        out.len() as u64
    );
    out
}

async fn put_conversations(s: &dyn TelemetryStore, rows: Vec<NewConversation>) -> Vec<bool> {
    s.submit_conversations(rows).unwrap().wait().await.unwrap()
}

pub async fn conversations_refuse_duplicate_ids(b: Backend) {
    let s = b.store.as_ref();
    let first = put_conversations(
        s,
        vec![
            conversation("a", 100, Some(1.0), None),
            conversation("b", 200, None, None),
            conversation("a", 999, None, None),
        ],
    )
    .await;
    assert_eq!(first, [true, true, false]);
    let again = put_conversations(
        s,
        vec![
            conversation("b", 200, None, None),
            conversation("c", 300, None, None),
        ],
    )
    .await;
    assert_eq!(again, [false, true]);
    let all = ConversationFilter::default();
    assert_eq!(stored_ids(s, all, ReadOrder::Stored).await, ["a", "b", "c"]);
    // The first copy of `a` is the one kept.
    let mut rows = s.read_conversations(&all, ReadOrder::Stored).await.unwrap();
    let a = rows.next().await.unwrap().unwrap();
    assert_eq!((a.ts_unix, a.received_unix, a.score), (100, 101, Some(1.0)));
    assert_eq!(a.feedback, Some(Feedback::Positive));
    assert_eq!(a.orch_hash.as_deref(), Some("orch_a"));
    assert_eq!(a.agent_path.as_deref(), Some("support"));
    assert_eq!(
        a.messages,
        vec![serde_json::json!({"role": "user", "content": "a"})]
    );
    drop(rows);
    b.store.shutdown().await;
}

pub async fn conversation_filters_and_counts(b: Backend) {
    let s = b.store.as_ref();
    put_conversations(
        s,
        vec![
            conversation("old", 100, Some(5.0), Some("k1")),
            conversation("unscored", 200, None, Some("k1")),
            conversation("low", 300, Some(1.0), None),
            conversation("high", 400, Some(3.0), Some("k2")),
            conversation("edge", 500, Some(2.0), Some("k2")),
        ],
    )
    .await;
    let recent = ConversationFilter {
        since: Some(200),
        min_score: Some(2.0),
    };
    assert_eq!(
        stored_ids(s, recent, ReadOrder::Stored).await,
        ["high", "edge"]
    );
    assert_eq!(
        s.filter_counts(&recent).await.unwrap(),
        FilterCounts {
            stored: 5,
            before_since: 1,
            unscored: 1,
            below_min_score: 1
        }
    );
    let since_only = ConversationFilter {
        since: Some(300),
        min_score: None,
    };
    assert_eq!(
        stored_ids(s, since_only, ReadOrder::Stored).await,
        ["low", "high", "edge"]
    );
    assert_eq!(
        s.filter_counts(&since_only).await.unwrap(),
        FilterCounts {
            stored: 5,
            before_since: 2,
            unscored: 0,
            below_min_score: 0
        }
    );
    assert_eq!(
        s.filter_counts(&ConversationFilter::default())
            .await
            .unwrap(),
        FilterCounts {
            stored: 5,
            ..FilterCounts::default()
        }
    );
    b.store.shutdown().await;
}

pub async fn conversation_export_order(b: Backend) {
    let s = b.store.as_ref();
    put_conversations(
        s,
        vec![
            conversation("a", 100, Some(5.0), Some("k2")),
            conversation("b", 200, None, Some("k1")),
            conversation("c", 300, Some(1.0), None),
        ],
    )
    .await;
    put_conversations(s, vec![conversation("d", 400, Some(3.0), Some("k2"))]).await;
    let all = ConversationFilter::default();
    assert_eq!(
        stored_ids(s, all, ReadOrder::Stored).await,
        ["a", "b", "c", "d"]
    );
    // Grouped by prompt key, stored order within; no key: not read.
    assert_eq!(
        stored_ids(s, all, ReadOrder::ByPrompt).await,
        ["b", "a", "d"]
    );
    // The read-only view an export opens reads the same.
    if let Some(view) = &b.export_view {
        let v = view();
        assert_eq!(
            stored_ids(v.as_ref(), all, ReadOrder::Stored).await,
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            stored_ids(v.as_ref(), all, ReadOrder::ByPrompt).await,
            ["b", "a", "d"]
        );
        assert_eq!(
            v.filter_counts(&all).await.unwrap(),
            s.filter_counts(&all).await.unwrap()
        );
    }
    b.store.shutdown().await;
}

pub async fn conversation_purge(b: Backend) {
    let s = b.store.as_ref();
    put_conversations(
        s,
        (0..5)
            .map(|i| conversation(&format!("c{i}"), 100 * (i + 1), None, None))
            .collect(),
    )
    .await;
    let mut purged = Vec::new();
    for _ in 0..3 {
        purged.push(
            s.purge_conversations_before(350, 2)
                .unwrap()
                .wait()
                .await
                .unwrap(),
        );
    }
    assert_eq!(purged, [2, 1, 0]);
    assert_eq!(
        stored_ids(s, ConversationFilter::default(), ReadOrder::Stored).await,
        ["c3", "c4"]
    );
    // Telemetry is untouched by a conversation purge, and the other way round.
    put(s, vec![record(0, "k", None, None, 1)]).await;
    assert_eq!(
        s.purge_conversations_before(i64::MAX, 10)
            .unwrap()
            .wait()
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.count().await.unwrap(), 1);
    b.store.shutdown().await;
}

pub async fn shutdown_commits_what_was_queued(b: Backend) {
    let s = b.store.as_ref();
    let records = s
        .submit((0..50).map(|i| record(i, "k", None, None, 1)).collect())
        .unwrap();
    let conversations = s
        .submit_conversations(vec![conversation("late", 1, None, None)])
        .unwrap();
    s.shutdown().await;
    records.wait().await.unwrap();
    assert_eq!(conversations.wait().await.unwrap(), [true]);
    assert_eq!(s.count().await.unwrap(), 50);
    assert_eq!(
        stored_ids(s, ConversationFilter::default(), ReadOrder::Stored).await,
        ["late"]
    );
}

pub async fn closed_after_shutdown(b: Backend) {
    let s = b.store.as_ref();
    s.shutdown().await;
    assert!(matches!(
        s.submit(vec![record(0, "k", None, None, 1)]),
        Err(Error::Closed)
    ));
    assert!(matches!(
        s.submit_conversations(vec![conversation("x", 1, None, None)]),
        Err(Error::Closed)
    ));
    assert!(matches!(
        s.save_insight(insight(0).to_record().unwrap()),
        Err(Error::Closed)
    ));
    assert!(matches!(s.purge_before(1, 1), Err(Error::Closed)));
    assert!(matches!(
        s.purge_conversations_before(1, 1),
        Err(Error::Closed)
    ));
    // Reads still answer.
    assert_eq!(s.count().await.unwrap(), 0);
}

pub async fn an_open_stream_does_not_block_other_reads(b: Backend) {
    let s = b.store.as_ref();
    put_conversations(
        s,
        (0..200)
            .map(|i| conversation(&format!("c{i}"), i, None, None))
            .collect(),
    )
    .await;
    let all = ConversationFilter::default();
    let mut views: Vec<std::sync::Arc<dyn ConversationStore>> = Vec::new();
    if let Some(view) = &b.export_view {
        views.push(view());
    }
    let mut readers: Vec<&dyn ConversationStore> = vec![s];
    readers.extend(views.iter().map(|v| v.as_ref()));
    for r in readers {
        let mut rows = r.read_conversations(&all, ReadOrder::Stored).await.unwrap();
        let first = rows.next().await.unwrap().unwrap();
        assert_eq!(first.conversation_id, "c0");
        // Half-read, the stream holds its snapshot; other reads go on meanwhile.
        assert_eq!(
            r.count_conversations(&all, ReadOrder::Stored)
                .await
                .unwrap(),
            200
        );
        assert_eq!(r.filter_counts(&all).await.unwrap().stored, 200);
        let mut n = 1;
        while let Some(c) = rows.next().await {
            c.unwrap();
            n += 1;
        }
        assert_eq!(n, 200);
    }
    b.store.shutdown().await;
}
