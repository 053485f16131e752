//! The Synaptic Pulse distributor over real WebSocket connections: publishing and its
//! validation, targeting and tiers on the server, replay and reconnects (also across a
//! restart), acks, gradual rollout, protocol violations, stalled and lagging subscribers,
//! shutdown, and the `phoenix publish` / `phoenix serve distributor` commands.

use std::time::Duration;

use phoenix::core::distributor::DistributorConfig;
use phoenix::core::distributor::metrics::{CodeLabel, StatusLabel};
use phoenix::core::updates::protocol::MAX_FRAME_BYTES;
use phoenix::core::updates::rollout_bucket;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::distributor::{
    GUARD, Subscriber, TestDistributor, eventually, expect_error, metric_value, status_and_json,
};

fn seqs(updates: &[Value]) -> Vec<u64> {
    updates.iter().map(|u| u["seq"].as_u64().unwrap()).collect()
}

fn id(update: &Value) -> &str {
    update["update_id"].as_str().unwrap()
}

fn acks_seen(d: &TestDistributor) -> u64 {
    ["applied", "rejected", "skipped"]
        .into_iter()
        .map(|status| {
            d.state
                .metrics
                .acks
                .get_or_create(&StatusLabel { status })
                .get()
        })
        .sum()
}

#[tokio::test]
async fn the_seeds_curl_examples_are_accepted_as_written() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    // (Content-Type, body): the seed's examples; those without -H go out form-encoded.
    let examples = [
        (
            "application/json",
            r#"{
    "update_type": "prompt_tweak",
    "tier_required": "free",
    "payload": {
      "default_prompt": "Updated prompt text..."
    }
  }"#,
        ),
        (
            "application/json",
            r#"{
    "update_type": "model_tweak",
    "tier_required": "free",
    "payload": {
      "default_model": "anthropic/claude-3.5-sonnet"
    }
  }"#,
        ),
        (
            "application/json",
            r#"{
    "update_type": "json_patch",
    "tier_required": "free",
    "payload": {
      "patch": [
        {
          "op": "replace",
          "path": "/overrides/default_prompt",
          "value": "New prompt"
        }
      ]
    }
  }"#,
        ),
        (
            "application/json",
            r#"{
       "update_type": "model_tweak",
       "payload": {
         "default_model": "anthropic/claude-3-haiku"
       }
     }"#,
        ),
        (
            "application/x-www-form-urlencoded",
            r#"{
       "update_type": "prompt_tweak",
       "payload": {
         "default_prompt": "You are Phoenix, a warm and caring AI... [enhanced prompt]"
       }
     }"#,
        ),
        (
            "application/x-www-form-urlencoded",
            r#"{
       "update_type": "prompt_tweak",
       "target_agent_prefix": "code-gen",
       "payload": {
         "default_prompt": "You are a code generation specialist..."
       }
     }"#,
        ),
    ];
    for (i, (content_type, body)) in examples.into_iter().enumerate() {
        let resp = d
            .client()
            .post(d.endpoint("/publish"))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, envelope) = status_and_json(resp).await;
        assert_eq!(status, 200, "{body}: {envelope}");
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(envelope["seq"], i as u64 + 1, "{envelope}");
        assert!(uuid::Uuid::parse_str(id(&envelope)).is_ok(), "{envelope}");
        assert!(envelope["ts_unix"].as_i64().unwrap() > 1_600_000_000);
        assert_eq!(envelope["update_type"], sent["update_type"]);
        assert_eq!(envelope["payload"], sent["payload"]);
        assert_eq!(envelope["cascade"], true);
        assert_eq!(envelope["tier_required"], "free");
    }
    let list = d.get_json("/updates?limit=10").await;
    assert_eq!(list["count"], 6);
    assert_eq!(list["server_seq"], 6);
    assert_eq!(
        list["updates"][0]["target_agent_prefix"], "code-gen",
        "newest first"
    );
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_names_the_field() {
    let d = TestDistributor::start(DistributorConfig {
        max_body_bytes: 512 * 1024,
        ..DistributorConfig::default()
    })
    .await;
    let original = d.notice("to roll back").await;
    let rollback = d
        .publish_ok(&json!({"update_type": "rollback", "payload": {"update_id": id(&original)}}))
        .await;

    let invalid = [
        (json!({"payload": {"message": "m"}}), "update_type"),
        (
            json!({"update_type": "teleport", "payload": {}}),
            "update_type",
        ),
        (json!({"update_type": 7, "payload": {}}), "update_type"),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "paylod": 1}),
            "paylod",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "seq": 9}),
            "seq",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "tier_required": "gold"}),
            "tier_required",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "rollout_percent": 0}),
            "rollout_percent",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "rollout_percent": 101}),
            "rollout_percent",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "cascade": "no"}),
            "cascade",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "target_orch": " "}),
            "target_orch",
        ),
        (
            json!({"update_type": "notice", "payload": {"message": "m"}, "target_agent_prefix": "a//b"}),
            "target_agent_prefix",
        ),
        (json!({"update_type": "notice"}), "payload"),
        (json!({"update_type": "notice", "payload": "m"}), "payload"),
        (
            json!({"update_type": "notice", "payload": {"message": "x".repeat(300 * 1024)}}),
            "payload",
        ),
        (
            json!({"update_type": "prompt_tweak", "payload": {"default_prompt": ""}}),
            "payload.default_prompt",
        ),
        (
            json!({"update_type": "model_tweak", "payload": {"default_model": "has space"}}),
            "payload.default_model",
        ),
        (
            json!({"update_type": "json_patch", "payload": {"patch": [{"op": "jump", "path": "/config/a"}]}}),
            "payload.patch",
        ),
        (
            json!({"update_type": "json_patch", "payload": {"patch": [{"op": "add", "path": "/etc", "value": 1}]}}),
            "payload.patch",
        ),
        (
            json!({"update_type": "yaml_graft", "payload": {"yaml": "- not\n- a mapping\n"}}),
            "payload.yaml",
        ),
        (
            json!({"update_type": "yaml_graft", "payload": {"yaml": "a: [unclosed"}}),
            "payload.yaml",
        ),
        (
            json!({"update_type": "rollback", "payload": {"update_id": "no-such-update"}}),
            "payload.update_id",
        ),
        (
            json!({"update_type": "rollback", "payload": {"update_id": id(&rollback)}}),
            "payload.update_id",
        ),
    ];
    for (body, field) in invalid {
        let got = d.publish(&body).await;
        let detail = expect_error(&got, 400, "invalid_update");
        assert!(
            detail.contains(&format!("field `{field}`")),
            "{body} → {detail}"
        );
    }

    let raw = |body: Vec<u8>, headers: Vec<(&'static str, &'static str)>| {
        let mut req = d.client().post(d.endpoint("/publish")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { status_and_json(req.send().await.unwrap()).await }
    };
    expect_error(
        &raw(b"{\"update_type\": ".to_vec(), vec![]).await,
        400,
        "invalid_json",
    );
    expect_error(&raw(b"[1, 2]".to_vec(), vec![]).await, 400, "invalid_json");
    expect_error(&raw(Vec::new(), vec![]).await, 400, "empty_body");
    expect_error(&raw(vec![b' '; 600 * 1024], vec![]).await, 413, "too_large");
    expect_error(
        &raw(b"{}".to_vec(), vec![("content-encoding", "br")]).await,
        415,
        "unsupported_encoding",
    );

    // Widening: unknown update, bad percentages, nothing to widen.
    let ten = d
        .publish_ok(
            &json!({"update_type": "notice", "payload": {"message": "m"}, "rollout_percent": 10}),
        )
        .await;
    expect_error(
        &d.widen("no-such-update", json!(50)).await,
        404,
        "not_found",
    );
    for bad in [json!(0), json!(101), json!("half"), json!(10), json!(5)] {
        let detail = expect_error(
            &d.widen(id(&ten), bad.clone()).await,
            400,
            "invalid_request",
        );
        assert!(detail.contains("`rollout_percent`"), "{bad}: {detail}");
    }
    expect_error(
        &d.widen(id(&original), json!(50)).await,
        400,
        "invalid_request",
    );

    // Everything else: JSON errors too.
    let get = |path: &'static str| {
        let req = d.client().get(d.endpoint(path));
        async move { status_and_json(req.send().await.unwrap()).await }
    };
    expect_error(&get("/updates/no-such-update").await, 404, "not_found");
    expect_error(&get("/updates/999").await, 404, "not_found");
    expect_error(&get("/updates?limit=0").await, 400, "invalid_request");
    expect_error(&get("/nowhere").await, 404, "not_found");
    expect_error(&get("/subscribe").await, 426, "websocket_required");
    expect_error(&get("/publish").await, 405, "method_not_allowed");

    // Nothing refused reached the log.
    assert_eq!(d.get_json("/updates").await["count"], 3);
}

#[tokio::test]
async fn publishing_and_widening_need_the_admin_token_when_one_is_set() {
    let d = TestDistributor::start(DistributorConfig {
        admin_token: Some("s3cret-admin".into()),
        ..DistributorConfig::default()
    })
    .await;
    let body = json!({"update_type": "notice", "payload": {"message": "m"}, "rollout_percent": 10});
    let post = |path: String, auth: Option<&'static str>, body: Value| {
        let mut req = d.client().post(d.endpoint(&path)).json(&body);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        async move { status_and_json(req.send().await.unwrap()).await }
    };
    expect_error(
        &post("/publish".into(), None, body.clone()).await,
        401,
        "unauthorized",
    );
    expect_error(
        &post("/publish".into(), Some("Bearer nope"), body.clone()).await,
        403,
        "forbidden",
    );
    expect_error(
        &post("/publish".into(), Some("Basic s3cret-admin"), body.clone()).await,
        401,
        "unauthorized",
    );
    let (status, envelope) = post("/publish".into(), Some("bearer s3cret-admin"), body).await;
    assert_eq!(status, 200, "{envelope}");
    let widen = format!("/updates/{}/widen", id(&envelope));
    expect_error(
        &post(widen.clone(), None, json!({"percent": 50})).await,
        401,
        "unauthorized",
    );
    expect_error(
        &post(widen.clone(), Some("Bearer nope"), json!({"percent": 50})).await,
        403,
        "forbidden",
    );
    let (status, widened) = post(widen, Some("Bearer s3cret-admin"), json!({"percent": 50})).await;
    assert_eq!(status, 200, "{widened}");
    assert_eq!(widened["rollout_percent"], 50);
    assert_eq!(widened["previous_rollout_percent"], 10);
    // Reading and subscribing stay open.
    assert_eq!(d.get_json("/updates").await["count"], 1);
    let (_sub, ack) = d.subscribe("orch-1", "root", 0).await;
    assert_eq!(ack["server_seq"], 1);
}

#[tokio::test]
async fn hello_gets_hello_ack_then_the_replay_in_order_then_live_updates() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let published = [
        d.notice("one").await,
        d.notice("two").await,
        d.notice("three").await,
    ];
    let (mut sub, ack) = d.subscribe("orch-1", "root", 0).await;
    assert_eq!(ack["orch_hash"], d.orch_hash("orch-1"));
    assert_eq!(ack["tier"], "free");
    assert_eq!(ack["server_seq"], 3);
    assert_eq!(ack["replay"], 3);
    let replayed = sub.updates(3).await;
    assert_eq!(
        replayed, published,
        "the replay is the published envelopes, in seq order"
    );
    let live = d.notice("four").await;
    assert_eq!(sub.next_update().await, live);

    let (mut late, ack) = d.subscribe("orch-2", "root", 2).await;
    assert_eq!(
        (ack["server_seq"].as_u64(), ack["replay"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(seqs(&late.updates(2).await), [3, 4]);
    assert!(
        late.close_and_expect_reply().await.is_some(),
        "a client's close is answered"
    );
    eventually("the closed connection is gone", || async {
        d.state.connected() == 1
    })
    .await;
}

#[tokio::test]
async fn joining_while_updates_are_published_misses_nothing_and_repeats_nothing() {
    let d = std::sync::Arc::new(TestDistributor::start(DistributorConfig::default()).await);
    let (halfway_tx, halfway) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn({
        let d = d.clone();
        async move {
            let mut halfway_tx = Some(halfway_tx);
            for i in 0..40 {
                d.notice(&format!("n{i}")).await;
                if i == 15 {
                    let _ = halfway_tx.take().unwrap().send(());
                }
            }
        }
    });
    halfway.await.unwrap();
    let (mut sub, ack) = d.subscribe("orch-1", "root", 0).await;
    let replay = ack["replay"].as_u64().unwrap();
    assert!((16..=40).contains(&replay), "{ack}");
    publisher.await.unwrap();
    let got = sub.updates(40).await;
    assert_eq!(seqs(&got), (1..=40).collect::<Vec<_>>());
    // Nothing further was queued for it: the next frame is the next update.
    d.notice("after").await;
    assert_eq!(sub.next_update().await["seq"], 41);
}

#[tokio::test]
async fn use_case_5_targeting_is_applied_on_the_server() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let (mut rust, _) = d.subscribe("orch-rust", "code-gen/rust", 0).await;
    let (mut python, _) = d.subscribe("orch-python", "code-gen/python", 0).await;
    let (mut emotional, _) = d.subscribe("orch-emotional", "emotional-support", 0).await;
    let (mut generator, _) = d.subscribe("orch-generator", "code-generator", 0).await;

    let code_gen = d
        .publish_ok(&json!({
            "update_type": "prompt_tweak",
            "target_agent_prefix": "code-gen",
            "payload": {"default_prompt": "You are a code generation specialist..."}
        }))
        .await;
    assert_eq!(rust.next_update().await, code_gen);
    assert_eq!(python.next_update().await, code_gen);
    let everyone = d.notice("everyone").await;
    // The first thing the others receive is the later broadcast: the targeted one never came.
    for sub in [&mut rust, &mut python, &mut emotional, &mut generator] {
        assert_eq!(sub.next_update().await, everyone);
    }

    let exact = d
        .publish_ok(&json!({"update_type": "notice", "target_agent_prefix": "code-gen/rust", "cascade": false, "payload": {"message": "exact"}}))
        .await;
    let by_raw_id = d
        .publish_ok(&json!({"update_type": "notice", "target_orch": "orch-python", "payload": {"message": "raw"}}))
        .await;
    let by_hash = d
        .publish_ok(&json!({"update_type": "notice", "target_orch": d.orch_hash("orch-emotional"), "payload": {"message": "hash"}}))
        .await;
    let parent_only = d
        .publish_ok(&json!({"update_type": "notice", "target_agent_prefix": "code-gen", "cascade": false, "payload": {"message": "parent"}}))
        .await;
    let last = d.notice("last").await;
    assert_eq!(rust.updates(2).await, [exact.clone(), last.clone()]);
    assert_eq!(python.updates(2).await, [by_raw_id.clone(), last.clone()]);
    assert_eq!(emotional.updates(2).await, [by_hash.clone(), last.clone()]);
    assert_eq!(generator.next_update().await, last);

    // A reconnect replays with the same filter.
    let (mut again, ack) = d.subscribe("orch-rust", "code-gen/rust", 0).await;
    assert_eq!(ack["replay"], 4);
    assert_eq!(seqs(&again.updates(4).await), [1, 2, 3, 7]);

    // `targeted` counts the known subscribers each update goes to.
    assert_eq!(d.status(id(&code_gen)).await["targeted"], 2);
    assert_eq!(d.status(id(&by_raw_id)).await["targeted"], 1);
    assert_eq!(d.status(id(&by_hash)).await["targeted"], 1);
    assert_eq!(d.status(id(&parent_only)).await["targeted"], 0);
    assert_eq!(d.status(id(&everyone)).await["targeted"], 4);
}

#[tokio::test]
async fn premium_updates_reach_only_premium_subscribers() {
    let d = TestDistributor::start(DistributorConfig {
        premium_key: Some("premium-key".into()),
        ..DistributorConfig::default()
    })
    .await;
    let mut by_hello = d.connect().await;
    let ack = by_hello
        .hello("orch-p1", "root", 0, Some("premium-key"))
        .await;
    assert_eq!(ack["tier"], "premium");
    let mut by_header = Subscriber::connect(&d.ws_url, Some("premium-key"), None).await;
    assert_eq!(
        by_header.hello("orch-p2", "root", 0, None).await["tier"],
        "premium"
    );
    let mut wrong_key = d.connect().await;
    assert_eq!(
        wrong_key.hello("orch-f1", "root", 0, Some("guess")).await["tier"],
        "free"
    );
    let (mut free, ack) = d.subscribe("orch-f2", "root", 0).await;
    assert_eq!(ack["tier"], "free");

    let premium = d
        .publish_ok(&json!({"update_type": "notice", "tier_required": "premium", "payload": {"message": "p"}}))
        .await;
    assert_eq!(by_hello.next_update().await, premium);
    assert_eq!(by_header.next_update().await, premium);
    let everyone = d.notice("everyone").await;
    for sub in [&mut by_hello, &mut by_header, &mut wrong_key, &mut free] {
        assert_eq!(sub.next_update().await, everyone);
    }
    // Replays respect the tier too.
    let (_, ack) = d.subscribe("orch-f3", "root", 0).await;
    assert_eq!(ack["replay"], 1);
    let mut premium_late = d.connect().await;
    assert_eq!(
        premium_late
            .hello("orch-p3", "root", 0, Some("premium-key"))
            .await["replay"],
        2
    );
}

#[tokio::test]
async fn reconnecting_with_last_seq_gets_exactly_what_was_missed_even_after_a_restart() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let (mut sub, _) = d.subscribe("orch-r", "code-gen/rust", 0).await;
    for u in [d.notice("1").await, d.notice("2").await] {
        assert_eq!(sub.next_update().await, u);
        sub.ack(&u, "applied", None).await;
    }
    sub.close().await;

    let missed_a = d.notice("3").await;
    d.publish_ok(&json!({"update_type": "notice", "target_agent_prefix": "emotional-support", "payload": {"message": "4"}}))
        .await;
    let missed_b = d
        .publish_ok(&json!({"update_type": "notice", "target_agent_prefix": "code-gen", "payload": {"message": "5"}}))
        .await;
    let (mut sub, ack) = d.subscribe("orch-r", "code-gen/rust", 2).await;
    assert_eq!(
        (ack["server_seq"].as_u64(), ack["replay"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(sub.updates(2).await, [missed_a, missed_b]);
    let live = d.notice("6").await;
    assert_eq!(sub.next_update().await, live, "no duplicate at the seam");
    sub.close().await;

    // Restart on the same database: the log, its seqs and the orch hashes survive.
    let dir = d.stop().await;
    let d = TestDistributor::start_in(dir, DistributorConfig::default()).await;
    let after_restart = d.notice("7").await;
    assert_eq!(after_restart["seq"], 7);
    let (mut sub, ack) = d.subscribe("orch-r", "code-gen/rust", 6).await;
    assert_eq!(ack["orch_hash"], d.orch_hash("orch-r"));
    assert_eq!(
        (ack["server_seq"].as_u64(), ack["replay"].as_u64()),
        (Some(7), Some(1))
    );
    assert_eq!(sub.next_update().await, after_restart);
    let (mut fresh, ack) = d.subscribe("orch-new", "code-gen/rust", 0).await;
    assert_eq!(
        ack["replay"], 6,
        "everything but the emotional-support update"
    );
    assert_eq!(seqs(&fresh.updates(6).await), [1, 2, 3, 5, 6, 7]);
}

#[tokio::test]
async fn acks_are_counted_per_update_with_the_rejection_errors() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let (mut a, _) = d.subscribe("orch-a", "root", 0).await;
    let (mut b, _) = d.subscribe("orch-b", "root", 0).await;
    let (mut c, _) = d.subscribe("orch-c", "root", 0).await;
    let (_idle, _) = d.subscribe("orch-idle", "other", 0).await;
    let u = d
        .publish_ok(&json!({"update_type": "json_patch", "payload": {"patch": [{"op": "test", "path": "/config/x", "value": 1}]}}))
        .await;
    for sub in [&mut a, &mut b, &mut c] {
        assert_eq!(sub.next_update().await, u);
    }
    a.ack(&u, "applied", None).await;
    b.ack(
        &u,
        "rejected",
        Some("json_patch failed: /config/x does not exist"),
    )
    .await;
    c.ack(&u, "skipped", Some("already applied")).await;
    // A later duplicate `skipped` does not hide an outcome; acks of unknown updates are ignored.
    a.ack(&u, "skipped", Some("duplicate")).await;
    a.ack(
        &json!({"update_id": "no-such-update", "seq": 99}),
        "applied",
        None,
    )
    .await;
    eventually("the server read every ack", || async { acks_seen(&d) >= 5 }).await;
    let status = d.status(id(&u)).await;
    assert_eq!(status["update_id"], u["update_id"]);
    assert_eq!(status["payload"], u["payload"]);
    for (key, n) in [
        ("targeted", 4),
        ("delivered", 4),
        ("applied", 1),
        ("rejected", 1),
        ("skipped", 1),
    ] {
        assert_eq!(status[key], n, "{key}: {status}");
    }
    let errors = status["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{status}");
    assert_eq!(errors[0]["orch_hash"], d.orch_hash("orch-b"));
    assert_eq!(errors[0]["status"], "rejected");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    let list = d.get_json("/updates").await;
    assert_eq!(list["updates"][0]["applied"], 1);
    assert_eq!(list["updates"][0]["rejected"], 1);
    assert_eq!(list["updates"][0]["delivered"], 4);
    let text = d.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "phoenix_distributor_acks_total",
            r#"status="applied""#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "phoenix_distributor_acks_total",
            r#"status="rejected""#
        ),
        Some(1.0)
    );
}

/// Orch ids whose rollout bucket for `update_id` is below (`admitted`) or at/above 10.
fn orchs_by_bucket(d: &TestDistributor, update_id: &str, admitted: bool, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("orch-{i}"))
        .filter(|o| (rollout_bucket(update_id, &d.orch_hash(o)) < 10) == admitted)
        .take(n)
        .collect()
}

#[tokio::test]
async fn widening_a_rollout_reaches_newly_admitted_subscribers_at_once_and_only_once() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let u = d
        .publish_ok(&json!({"update_type": "model_tweak", "rollout_percent": 10, "payload": {"default_model": "m/fast"}}))
        .await;
    let broadcast = d.notice("everyone").await;
    let inside = orchs_by_bucket(&d, id(&u), true, 2);
    let outside = orchs_by_bucket(&d, id(&u), false, 3);

    let mut admitted = Vec::new();
    for o in &inside {
        let (mut s, ack) = d.subscribe(o, "root", 0).await;
        assert_eq!(ack["replay"], 2);
        let got = s.updates(2).await;
        assert_eq!(got[0]["rollout_percent"], 10);
        assert_eq!(got, [u.clone(), broadcast.clone()]);
        s.ack(&got[0], "applied", None).await;
        admitted.push(s);
    }
    let mut waiting = Vec::new();
    for o in &outside[..2] {
        let (mut s, ack) = d.subscribe(o, "root", 0).await;
        assert_eq!(ack["replay"], 1);
        assert_eq!(s.next_update().await, broadcast);
        waiting.push(s);
    }
    // One more outside orch saw seq 2 and went away before the widening.
    let (mut away, _) = d.subscribe(&outside[2], "root", 0).await;
    away.next_update().await;
    away.close().await;
    eventually("both admitted acks are read", || async {
        acks_seen(&d) >= 2
    })
    .await;
    assert_eq!(d.status(id(&u)).await["targeted"], 2);

    let (status, widened) = d.widen(id(&u), json!(100)).await;
    assert_eq!(status, 200, "{widened}");
    assert_eq!(widened["previous_rollout_percent"], 10);
    for s in &mut waiting {
        let got = s.next_update().await;
        assert_eq!(got["update_id"], u["update_id"]);
        assert_eq!(got["rollout_percent"], 100);
    }
    let next = d.notice("after widening").await;
    for s in admitted.iter_mut().chain(waiting.iter_mut()) {
        assert_eq!(
            s.next_update().await,
            next,
            "already-admitted subscribers get no duplicate"
        );
    }

    // Offline during the widening: the reconnect (last_seq past it) still brings the update.
    let (mut away, ack) = d.subscribe(&outside[2], "root", 2).await;
    assert_eq!(ack["replay"], 2);
    let got = away.updates(2).await;
    assert_eq!(
        (
            got[0]["update_id"].clone(),
            got[0]["rollout_percent"].clone()
        ),
        (u["update_id"].clone(), json!(100))
    );
    assert_eq!(got[1], next);
    // An admitted orch that acked it does not get it again.
    let (_, ack) = d.subscribe(&inside[0], "root", 3).await;
    assert_eq!(ack["replay"], 0);

    let status = d.status(id(&u)).await;
    assert_eq!(status["rollout_percent"], 100);
    assert_eq!(status["initial_rollout_percent"], 10);
    assert_eq!(status["widenings"][0]["from_percent"], 10);
    assert_eq!(status["widenings"][0]["to_percent"], 100);
    assert_eq!(status["targeted"], 5);
    assert_eq!(status["delivered"], 5);
}

#[tokio::test]
async fn a_rollback_inherits_the_original_targeting_unless_given_its_own() {
    let d = TestDistributor::start(DistributorConfig {
        premium_key: Some("k".into()),
        ..DistributorConfig::default()
    })
    .await;
    let mut rust = d.connect().await;
    rust.hello("orch-rust", "code-gen/rust", 0, Some("k")).await;
    let (mut other, _) = d.subscribe("orch-other", "emotional-support", 0).await;
    let original = d
        .publish_ok(&json!({"update_type": "prompt_tweak", "target_agent_prefix": "code-gen", "tier_required": "premium", "payload": {"default_prompt": "p"}}))
        .await;
    // Referenced by seq: the envelope carries the id subscribers know.
    let inherited = d
        .publish_ok(&json!({"update_type": "rollback", "payload": {"update_id": original["seq"].to_string()}}))
        .await;
    assert_eq!(inherited["payload"]["update_id"], original["update_id"]);
    assert_eq!(inherited["target_agent_prefix"], "code-gen");
    assert_eq!(inherited["tier_required"], "premium");
    let own = d
        .publish_ok(&json!({"update_type": "rollback", "target_agent_prefix": "code-gen/python", "payload": {"update_id": id(&original)}}))
        .await;
    assert_eq!(own["target_agent_prefix"], "code-gen/python");
    assert_eq!(own["tier_required"], "premium");
    let last = d.notice("last").await;
    assert_eq!(rust.updates(3).await, [original, inherited, last.clone()]);
    assert_eq!(other.next_update().await, last);
}

#[tokio::test]
async fn protocol_violations_get_an_error_frame_and_a_close_and_disturb_no_one_else() {
    let d = TestDistributor::start(DistributorConfig {
        hello_timeout: Duration::from_millis(300),
        ..DistributorConfig::default()
    })
    .await;
    let (mut healthy, _) = d.subscribe("orch-ok", "root", 0).await;

    let mut v = d.connect().await;
    v.send_text("this is not json").await;
    v.expect_error_and_close("invalid_frame").await;

    let mut v = d.connect().await;
    v.send_json(&json!({"type": "subscribe", "topic": "all"}))
        .await;
    v.expect_error_and_close("invalid_frame").await;

    let mut v = d.connect().await;
    v.send_message(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    v.expect_error_and_close("invalid_frame").await;

    let mut v = d.connect().await;
    v.send_json(&json!({"type": "ack", "update_id": "u", "seq": 1, "status": "applied"}))
        .await;
    v.expect_error_and_close("expected_hello").await;

    let mut v = d.connect().await;
    v.send_json(&json!({"type": "hello", "orch_id": "o", "agent_path": "a//b", "last_seq": 0}))
        .await;
    assert!(
        v.expect_error_and_close("invalid_hello")
            .await
            .contains("agent_path")
    );

    let mut v = d.connect().await;
    v.send_text("x".repeat(MAX_FRAME_BYTES + 1)).await;
    v.expect_error_and_close("frame_too_large").await;

    let mut v = d.connect().await;
    let started = tokio::time::Instant::now();
    v.expect_error_and_close("hello_timeout").await;
    assert!(started.elapsed() >= Duration::from_millis(250));

    let (mut v, _) = d.subscribe("orch-twice", "root", 0).await;
    v.send_json(&json!({"type": "hello", "orch_id": "o", "agent_path": "root"}))
        .await;
    v.expect_error_and_close("unexpected_hello").await;

    let (mut v, _) = d.subscribe("orch-garbled", "root", 0).await;
    v.send_text("{\"type\": \"ack\", ").await;
    v.expect_error_and_close("invalid_frame").await;

    // Far beyond any limit: the connection ends (with an error frame when the peer still
    // reads), and the server carries on.
    let mut v = d.connect().await;
    let _ = v
        .send_message(Message::text("y".repeat(4 * MAX_FRAME_BYTES)))
        .await;
    loop {
        match v.next_message().await {
            Some(Ok(Message::Text(t))) => assert!(t.as_str().contains("frame_too_large"), "{t}"),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }

    let u = d.notice("still here").await;
    assert_eq!(healthy.next_update().await, u);
    eventually("the violators are gone", || async {
        d.state.connected() == 1
    })
    .await;
    let text = d.metrics_text().await;
    let errors = |code| {
        metric_value(
            &text,
            "phoenix_distributor_protocol_errors_total",
            &format!("code=\"{code}\""),
        )
    };
    assert_eq!(errors("invalid_frame"), Some(4.0));
    assert_eq!(errors("hello_timeout"), Some(1.0));
    assert_eq!(errors("frame_too_large"), Some(2.0));
    assert_eq!(d.get_json("/health").await["subscribers"], 1);
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_delay_the_others() {
    // A send timeout far beyond the guard: were deliveries serialised behind the stalled
    // subscriber, the healthy ones would time out.
    let d = TestDistributor::start(DistributorConfig {
        send_timeout: GUARD * 4,
        ..DistributorConfig::default()
    })
    .await;
    let mut stalled = Subscriber::connect(&d.ws_url, None, Some(8 * 1024)).await;
    stalled.hello("orch-stalled", "root", 0, None).await;
    let (mut a, _) = d.subscribe("orch-a", "root", 0).await;
    let (mut b, _) = d.subscribe("orch-b", "code-gen/rust", 0).await;
    // 8 MB: more than the kernel buffers between the server and the stalled reader hold.
    let big = "x".repeat(200 * 1024);
    for i in 0..40 {
        d.notice(&format!("{i} {big}")).await;
    }
    for sub in [&mut a, &mut b] {
        assert_eq!(seqs(&sub.updates(40).await), (1..=40).collect::<Vec<_>>());
    }
    let health = d.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["subscribers"], 3,
        "the stalled one is still connected, still behind"
    );
    assert!(
        d.state.metrics.deliveries.get() < 120,
        "the stalled subscriber has not taken everything"
    );
    drop(stalled);
    d.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_after_the_send_timeout() {
    let d = TestDistributor::start(DistributorConfig {
        send_timeout: Duration::from_millis(300),
        ..DistributorConfig::default()
    })
    .await;
    let mut stalled = Subscriber::connect(&d.ws_url, None, Some(8 * 1024)).await;
    stalled.hello("orch-stalled", "root", 0, None).await;
    let big = "x".repeat(200 * 1024);
    for i in 0..40 {
        d.notice(&format!("{i} {big}")).await;
    }
    eventually("the stalled subscriber is closed", || async {
        d.state.metrics.send_timeouts.get() == 1
    })
    .await;
    eventually("it is no longer counted", || async {
        d.state.connected() == 0
    })
    .await;
    assert_eq!(d.get_json("/health").await["status"], "ok");
    // It resumes where it left off when it reconnects.
    drop(stalled);
    let (mut back, ack) = d.subscribe("orch-stalled", "root", 40).await;
    assert_eq!(ack["replay"], 0);
    let u = d.notice("after").await;
    assert_eq!(back.next_update().await, u);
}

#[tokio::test]
async fn a_subscriber_that_lags_behind_the_live_channel_is_caught_up_from_the_log() {
    let d = TestDistributor::start(DistributorConfig {
        live_capacity: 2,
        send_timeout: GUARD * 4,
        ..DistributorConfig::default()
    })
    .await;
    let mut slow = Subscriber::connect(&d.ws_url, None, Some(8 * 1024)).await;
    slow.hello("orch-slow", "root", 0, None).await;
    let (mut fast, _) = d.subscribe("orch-fast", "root", 0).await;
    // The slow reader's connection blocks mid-send; meanwhile far more than two items pass.
    let big = "x".repeat(200 * 1024);
    for i in 0..40 {
        d.notice(&format!("{i} {big}")).await;
    }
    fast.updates(40).await;
    for i in 40..50 {
        d.notice(&format!("{i}")).await;
    }
    fast.updates(10).await;
    let all = slow.updates(50).await;
    assert_eq!(
        seqs(&all),
        (1..=50).collect::<Vec<_>>(),
        "everything, in order, once"
    );
    assert!(
        d.state.metrics.lag_catchups.get() >= 1,
        "the slow subscriber lagged"
    );
    let u = d.notice("live again").await;
    assert_eq!(slow.next_update().await, u);
    assert_eq!(fast.next_update().await, u);
}

#[tokio::test]
async fn idle_connections_are_pinged_and_silent_ones_reaped() {
    let d = TestDistributor::start(DistributorConfig {
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_secs(1),
        ..DistributorConfig::default()
    })
    .await;
    let (silent, _) = d.subscribe("orch-silent", "root", 0).await;
    let (mut live, _) = d.subscribe("orch-live", "root", 0).await;
    // Reading answers pings.
    let reader = tokio::spawn(async move {
        let u = live.next_update().await;
        (live, u)
    });
    eventually("the silent subscriber is reaped", || async {
        d.state.metrics.reaped.get() == 1
    })
    .await;
    let u = d.notice("after reaping").await;
    let (_live, got) = reader.await.unwrap();
    assert_eq!(got, u);
    assert_eq!(
        d.state.metrics.reaped.get(),
        1,
        "the answering subscriber stays"
    );
    assert_eq!(d.state.connected(), 1);
    drop(silent);
}

#[tokio::test]
async fn shutdown_closes_subscribers_with_a_close_frame_and_commits_their_acks() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let (mut sub, _) = d.subscribe("orch-1", "root", 0).await;
    let u = d.notice("n").await;
    assert_eq!(sub.next_update().await, u);
    sub.ack(&u, "applied", None).await;
    eventually("the ack is read", || async { acks_seen(&d) == 1 }).await;
    let stopping = tokio::spawn(d.stop());
    let close = sub.expect_close().await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Away);
    let dir = stopping.await.unwrap();

    let d = TestDistributor::start_in(dir, DistributorConfig::default()).await;
    let status = d.status(id(&u)).await;
    assert_eq!(
        (status["delivered"].as_u64(), status["applied"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(status["targeted"], 1);
}

#[tokio::test]
async fn health_and_metrics_report_subscribers_publishes_and_deliveries() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let (mut a, _) = d.subscribe("orch-a", "root", 0).await;
    let (mut b, _) = d.subscribe("orch-b", "root", 0).await;
    d.notice("n").await;
    d.publish_ok(&json!({"update_type": "prompt_tweak", "payload": {"default_prompt": "p"}}))
        .await;
    a.updates(2).await;
    b.updates(2).await;
    d.publish(&json!({"update_type": "nope"})).await;
    let health = d.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "distributor");
    assert_eq!(health["subscribers"], 2);
    assert_eq!(health["server_seq"], 2);
    let text = d.metrics_text().await;
    let m = |name: &str, labels: &str| metric_value(&text, name, labels);
    assert_eq!(m("phoenix_distributor_subscribers", ""), Some(2.0));
    assert_eq!(
        m(
            "phoenix_distributor_publishes_total",
            r#"update_type="notice""#
        ),
        Some(1.0)
    );
    assert_eq!(
        m(
            "phoenix_distributor_publishes_total",
            r#"update_type="prompt_tweak""#
        ),
        Some(1.0)
    );
    assert_eq!(m("phoenix_distributor_deliveries_total", ""), Some(4.0));
    assert_eq!(m("phoenix_distributor_lag_catchups_total", ""), Some(0.0));
    assert_eq!(
        m(
            "phoenix_distributor_rejected_requests_total",
            r#"code="invalid_update""#
        ),
        Some(1.0)
    );
    assert!(
        d.state
            .metrics
            .protocol_errors
            .get_or_create(&CodeLabel {
                code: "invalid_frame"
            })
            .get()
            == 0
    );
}

#[tokio::test]
async fn a_key_given_twice_is_refused_not_last_one_wins() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let post = |body: &'static str| {
        let req = d.client().post(d.endpoint("/publish")).body(body);
        async move { status_and_json(req.send().await.unwrap()).await }
    };
    let detail = expect_error(
        &post(r#"{"update_type":"notice","payload":{"message":"a"},"tier_required":"premium","tier_required":"free"}"#).await,
        400,
        "invalid_json",
    );
    assert!(detail.contains("duplicate key `tier_required`"), "{detail}");
    let detail = expect_error(
        &post(r#"{"update_type":"json_patch","payload":{"patch":[{"op":"add","op":"remove","path":"/config/a","value":1}]}}"#).await,
        400,
        "invalid_json",
    );
    assert!(detail.contains("duplicate key `op`"), "{detail}");
    assert_eq!(d.get_json("/updates").await["count"], 0);
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    use std::io::Write;
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"update_type":"notice","payload":{"message":"zipped"}}"#)
        .unwrap();
    let resp = d
        .client()
        .post(d.endpoint("/publish"))
        .header(CONTENT_ENCODING, "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    let (status, envelope) = status_and_json(resp).await;
    assert_eq!(status, 200, "{envelope}");
    assert_eq!(envelope["payload"]["message"], "zipped");
}

mod access;
mod cli;
