//! Who may read what and who may subscribe as whom: the read policy (admin token, X402,
//! off-loopback reads), targeting by hash alone, and per-ORCH agent tokens — on the
//! distributor and, for heartbeats, on the collector.

use phoenix::core::collector::CollectorConfig;
use phoenix::core::distributor::DistributorConfig;
use phoenix::core::shared::agent_token::AgentKeys;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::support::bin::phoenix;
use crate::support::collector::TestCollector;
use crate::support::distributor::{TestDistributor, expect_error, status_and_json};

const ADMIN: &str = "admin-token-0123456789";
const PREMIUM: &str = "premium-key-0123456789";

async fn get(d: &TestDistributor, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = d.client().get(d.endpoint(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    status_and_json(req.send().await.unwrap()).await
}

async fn publish_as_admin(d: &TestDistributor, body: Value) -> Value {
    let resp = d
        .client()
        .post(d.endpoint("/publish"))
        .header(AUTHORIZATION, format!("Bearer {ADMIN}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, envelope) = status_and_json(resp).await;
    assert_eq!(status, 200, "{envelope}");
    envelope
}

#[tokio::test]
async fn premium_payloads_are_withheld_without_the_x402_key_or_the_admin_token() {
    let d = TestDistributor::start(DistributorConfig {
        admin_token: Some(ADMIN.into()),
        premium_key: Some(PREMIUM.into()),
        ..DistributorConfig::default()
    })
    .await;
    let secret_prompt = "the premium prompt nobody may read for free";
    let premium = publish_as_admin(
        &d,
        json!({"update_type": "prompt_tweak", "tier_required": "premium",
               "payload": {"default_prompt": secret_prompt}}),
    )
    .await;
    let free = publish_as_admin(
        &d,
        json!({"update_type": "notice", "payload": {"message": "for everyone"}}),
    )
    .await;
    let one = format!("/updates/{}", premium["update_id"].as_str().unwrap());

    // Anonymous: the premium payload is gone from the list and from the status page, the
    // free one is shown, and the envelope says why.
    for (status, body) in [get(&d, "/updates", &[]).await, get(&d, &one, &[]).await] {
        assert_eq!(status, 200, "{body}");
        assert!(!body.to_string().contains(secret_prompt), "{body}");
    }
    let (_, list) = get(&d, "/updates", &[]).await;
    let rows = list["updates"].as_array().unwrap();
    assert_eq!(rows[0]["update_id"], free["update_id"]);
    assert_eq!(rows[0]["payload"]["message"], "for everyone");
    assert!(rows[0].get("payload_withheld").is_none(), "{}", rows[0]);
    assert_eq!(rows[1]["payload"], Value::Null);
    assert_eq!(rows[1]["payload_withheld"], true);
    let (_, status) = get(&d, &one, &[]).await;
    assert_eq!(status["payload_withheld"], true);
    assert_eq!(status["update_type"], "prompt_tweak");

    // The X402 key or the admin token shows it; a wrong key is just a free reader; a wrong
    // bearer is refused rather than downgraded.
    let (_, with_key) = get(&d, &one, &[("x402", PREMIUM)]).await;
    assert_eq!(with_key["payload"]["default_prompt"], secret_prompt);
    let (_, with_admin) = get(
        &d,
        "/updates",
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(
        with_admin["updates"][1]["payload"]["default_prompt"],
        secret_prompt
    );
    let (_, wrong_key) = get(&d, &one, &[("x402", "guess")]).await;
    assert_eq!(wrong_key["payload_withheld"], true);
    expect_error(
        &get(&d, &one, &[("authorization", "Bearer guess")]).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn off_loopback_reads_need_the_admin_token() {
    let d = TestDistributor::start(DistributorConfig {
        admin_token: Some(ADMIN.into()),
        reads_need_token: true,
        ..DistributorConfig::default()
    })
    .await;
    let bearer = format!("Bearer {ADMIN}");
    for path in ["/updates", "/updates/1", "/metrics"] {
        expect_error(&get(&d, path, &[]).await, 401, "unauthorized");
        expect_error(
            &get(&d, path, &[("authorization", "Bearer nope")]).await,
            403,
            "forbidden",
        );
    }
    assert_eq!(
        get(&d, "/updates", &[("authorization", &bearer)]).await.0,
        200
    );
    let resp = d
        .client()
        .get(d.endpoint("/metrics"))
        .header(AUTHORIZATION, &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Liveness stays open for load balancers.
    assert_eq!(get(&d, "/health", &[]).await.0, 200);
}

#[tokio::test]
async fn a_hello_with_a_victims_hash_as_its_orch_id_does_not_receive_the_victims_updates() {
    let d = TestDistributor::start(DistributorConfig::default()).await;
    let victim_hash = d.orch_hash("orch-victim");
    let (mut victim, ack) = d.subscribe("orch-victim", "root", 0).await;
    assert_eq!(ack["orch_hash"], victim_hash);
    // The attacker read the hash from /updates or /telemetry and presents it as its id.
    let (mut attacker, ack) = d.subscribe(&victim_hash, "root", 0).await;
    assert_ne!(
        ack["orch_hash"], victim_hash,
        "a hash-looking id is hashed like any id"
    );

    let by_hash = d
        .publish_ok(&json!({"update_type": "notice", "target_orch": victim_hash,
                            "payload": {"message": "for the victim only"}}))
        .await;
    let by_raw = d
        .publish_ok(
            &json!({"update_type": "notice", "target_orch": "orch-victim",
                            "payload": {"message": "also for the victim only"}}),
        )
        .await;
    let everyone = d.notice("everyone").await;
    assert_eq!(
        victim.updates(3).await,
        vec![by_hash, by_raw, everyone.clone()]
    );
    // The attacker's first update is the broadcast: nothing targeted reached it.
    assert_eq!(attacker.next_update().await, everyone);
    // Nor does a replay from seq 0 give it anything targeted.
    let (mut late, ack) = d.subscribe(&victim_hash, "root", 0).await;
    assert_eq!(ack["replay"], 1);
    assert_eq!(late.next_update().await, everyone);
}

fn keyed(keys: &AgentKeys, required: bool) -> DistributorConfig {
    DistributorConfig {
        agent_keys: Some(keys.clone()),
        require_agent_tokens: required,
        ..DistributorConfig::default()
    }
}

async fn hello_with_token(d: &TestDistributor, orch_id: &str, token: Option<&str>) -> Value {
    let mut sub = d.connect().await;
    let mut hello =
        json!({"type": "hello", "orch_id": orch_id, "agent_path": "root", "last_seq": 0});
    if let Some(t) = token {
        hello["token"] = t.into();
    }
    sub.send_json(&hello).await;
    sub.next_frame().await
}

#[tokio::test]
async fn where_agent_tokens_are_required_only_the_orchs_own_token_subscribes() {
    let keys = AgentKeys::from_key(&[42; 32]);
    let d = TestDistributor::start(keyed(&keys, true)).await;
    let token = keys.token("orch-7");

    let ack = hello_with_token(&d, "orch-7", Some(&token)).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");

    let mut missing = d.connect().await;
    missing
        .send_json(&json!({"type": "hello", "orch_id": "orch-7", "agent_path": "root"}))
        .await;
    let detail = missing.expect_error_and_close("unauthorized").await;
    assert!(detail.contains("phoenix agents token"), "{detail}");

    // Another ORCH's token, a token from another installation, garbage: refused and closed.
    for wrong in [
        keys.token("orch-8"),
        AgentKeys::from_key(&[1; 32]).token("orch-7"),
        "phx_agent_garbage".to_owned(),
    ] {
        let mut sub = d.connect().await;
        sub.send_json(
            &json!({"type": "hello", "orch_id": "orch-7", "agent_path": "root", "token": wrong}),
        )
        .await;
        sub.expect_error_and_close("forbidden").await;
    }
    // The token of a victim's hash is not the victim's token.
    let hash = d.orch_hash("orch-7");
    let mut sub = d.connect().await;
    sub.send_json(&json!({"type": "hello", "orch_id": hash, "agent_path": "root", "token": token}))
        .await;
    sub.expect_error_and_close("forbidden").await;
}

#[tokio::test]
async fn on_loopback_tokens_are_optional_but_a_wrong_one_is_still_refused() {
    let keys = AgentKeys::from_key(&[42; 32]);
    let d = TestDistributor::start(keyed(&keys, false)).await;
    assert_eq!(
        hello_with_token(&d, "orch-1", None).await["type"],
        "hello_ack"
    );
    assert_eq!(
        hello_with_token(&d, "orch-1", Some(&keys.token("orch-1"))).await["type"],
        "hello_ack"
    );
    let mut sub = d.connect().await;
    sub.send_json(
        &json!({"type": "hello", "orch_id": "orch-1", "agent_path": "root",
                          "token": keys.token("orch-2")}),
    )
    .await;
    sub.expect_error_and_close("forbidden").await;
}

#[tokio::test]
async fn the_cli_issues_tokens_the_servers_accept() {
    let home = tempfile::tempdir().unwrap();
    let out = phoenix(home.path())
        .args(["agents", "token", "orch-42"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let again = phoenix(home.path())
        .args(["--json", "agents", "token", "orch-42"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(doc["token"], token, "derived, so the same every time");
    assert_eq!(doc["orch_id"], "orch-42");
    assert!(doc["orch_hash"].as_str().unwrap().starts_with("orch_"));

    // The servers read the same key file (<data dir>/agent_token.key).
    let keys = AgentKeys::load_or_create(&home.path().join("data/agent_token.key")).unwrap();
    assert!(keys.verify("orch-42", &token));
    let d = TestDistributor::start(keyed(&keys, true)).await;
    assert_eq!(
        hello_with_token(&d, "orch-42", Some(&token)).await["type"],
        "hello_ack"
    );
}

#[tokio::test]
async fn heartbeats_with_an_agent_token_are_accepted_for_that_orch_only() {
    let keys = AgentKeys::from_key(&[9; 32]);
    let c = TestCollector::start(CollectorConfig {
        ingest_tokens: vec!["ingest-token-123456".into()],
        agent_keys: Some(keys.clone()),
        ..CollectorConfig::default()
    })
    .await;
    let post = |token: String, body: Value| {
        let req = c
            .client()
            .post(c.endpoint("/ingest"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&body);
        async move { status_and_json(req.send().await.unwrap()).await }
    };
    let beat =
        |orch: &str| json!({"orch_id": orch, "agent_path": "root", "kind": "orch_heartbeat"});
    let (status, body) = post(keys.token("orch-1"), beat("orch-1")).await;
    assert_eq!(status, 200, "{body}");

    // Speaking for another ORCH, or for none, is refused and nothing of the batch is kept.
    let mixed = json!([beat("orch-1"), beat("orch-2")]);
    let detail = expect_error(&post(keys.token("orch-1"), mixed).await, 403, "forbidden");
    assert!(detail.contains("record 1"), "{detail}");
    expect_error(
        &post(keys.token("orch-1"), json!({"kind": "x"})).await,
        403,
        "forbidden",
    );
    expect_error(
        &post(
            AgentKeys::from_key(&[1; 32]).token("orch-1"),
            beat("orch-1"),
        )
        .await,
        403,
        "forbidden",
    );
    // An agent token opens nothing but ingest.
    let resp = c
        .client()
        .get(c.endpoint("/telemetry"))
        .header(AUTHORIZATION, format!("Bearer {}", keys.token("orch-1")))
        .send()
        .await
        .unwrap();
    expect_error(&status_and_json(resp).await, 403, "forbidden");
    let resp = c
        .client()
        .get(c.endpoint("/telemetry?limit=10"))
        .header(AUTHORIZATION, "Bearer ingest-token-123456")
        .send()
        .await
        .unwrap();
    let (_, stored) = status_and_json(resp).await;
    assert_eq!(
        stored["count"], 1,
        "only the first heartbeat was stored: {stored}"
    );
}

#[tokio::test]
async fn premium_insights_are_withheld_from_free_readers() {
    let c = TestCollector::start(CollectorConfig {
        premium_key: Some(PREMIUM.into()),
        admin_token: Some(ADMIN.into()),
        ..CollectorConfig::default()
    })
    .await;
    c.ingest_ok(&json!({"kind": "skill_execution", "payload": {"response_time": 10}}))
        .await;
    assert_eq!(
        c.analyze(&json!({"last_n": 10}), Some(PREMIUM)).await.0,
        200
    );
    assert_eq!(c.analyze(&json!({"last_n": 10}), None).await.0, 200);
    let list = |headers: Vec<(&'static str, String)>| {
        let mut req = c.client().get(c.endpoint("/insights"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { status_and_json(req.send().await.unwrap()).await.1 }
    };
    let free = list(vec![]).await;
    assert_eq!(free["count"], 1, "{free}");
    assert_eq!(free["withheld"], 1);
    assert_eq!(free["insights"][0]["tier"], "free");
    let premium = list(vec![("x402", PREMIUM.to_owned())]).await;
    assert_eq!(premium["count"], 2);
    assert!(premium.get("withheld").is_none());
    let admin = list(vec![("authorization", format!("Bearer {ADMIN}"))]).await;
    assert_eq!(admin["count"], 2);
}
