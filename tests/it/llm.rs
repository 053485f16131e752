//! The LLM client against a scripted fake endpoint: retries, typed errors, headers, body.

use std::time::{Duration, Instant};

use phoenix::core::shared::llm::{ChatRequest, Error, LlmClient, Message};
use serde_json::json;

use crate::support::fake_llm::{FakeLlm, Reply};

fn client(fake: &FakeLlm) -> LlmClient {
    LlmClient::new(fake.settings()).expect("client for fake LLM")
}

#[tokio::test]
async fn success_returns_content_usage_and_sends_headers_and_body() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text("- disk is filling up"));
    let mut settings = fake.settings();
    settings.referer = Some("https://phoenix.example".into());
    settings.title = Some("Phoenix".into());
    let client = LlmClient::new(settings).unwrap();

    let request = ChatRequest::new(vec![
        Message::system("be brief"),
        Message::user("summarise"),
    ])
    .with_temperature(0.5)
    .with_max_tokens(64);
    let response = client.chat(request).await.unwrap();

    assert_eq!(response.content, "- disk is filling up");
    assert_eq!(response.model, "fake/model");
    assert_eq!(response.attempts, 1);
    let usage = response.usage.expect("usage reported");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (11, 7, 18)
    );

    let headers = &fake.request_headers()[0];
    assert_eq!(headers["authorization"], "Bearer test-key");
    assert_eq!(headers["http-referer"], "https://phoenix.example");
    assert_eq!(headers["x-title"], "Phoenix");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    let body = &fake.requests()[0];
    assert_eq!(body["model"], "fake/model");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "summarise"}])
    );
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 64);
}

#[tokio::test]
async fn complete_omits_unset_options_and_request_model_overrides_default() {
    let fake = FakeLlm::start().await;
    let client = client(&fake);

    let response = client.complete("", "hello").await.unwrap();
    assert_eq!(response.content, "- default bullet");
    let body = &fake.requests()[0];
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    assert!(
        body.get("temperature").is_none() && body.get("max_tokens").is_none(),
        "{body}"
    );

    let request = ChatRequest::new(vec![Message::user("hi")]).with_model("other/model");
    let response = client.chat(request).await.unwrap();
    assert_eq!(fake.requests()[1]["model"], "other/model");
    assert_eq!(response.model, "other/model");

    // No Authorization header at all when no key is configured.
    let mut settings = fake.settings();
    settings.api_key = None;
    LlmClient::new(settings)
        .unwrap()
        .complete("sys", "hi")
        .await
        .unwrap();
    assert!(fake.request_headers()[2].get("authorization").is_none());
}

#[tokio::test]
async fn rate_limit_honours_retry_after_capped_then_succeeds() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Status {
        status: 429,
        body: r#"{"error":{"message":"slow down","code":429}}"#.into(),
        retry_after: Some(30),
    });
    let started = Instant::now();
    let response = client(&fake).complete("s", "u").await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(response.attempts, 2);
    assert_eq!(fake.hits(), 2);
    // Retry-After: 30 is capped at max_backoff (200 ms), and is not replaced by the 10 ms backoff.
    assert!(
        elapsed >= Duration::from_millis(190),
        "retried too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "Retry-After not capped: {elapsed:?}"
    );
}

#[tokio::test]
async fn rate_limit_forever_reports_retry_after_and_attempts() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::Status {
        status: 429,
        body: String::new(),
        retry_after: Some(0),
    });
    let err = client(&fake).complete("s", "u").await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), attempts: 3 } if d.is_zero()),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.kind(), "rate_limited");
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(500, "boom"));
    fake.push(Reply::error(502, "bad gateway"));
    let response = client(&fake).complete("s", "u").await.unwrap();
    assert_eq!(response.attempts, 3);
    assert_eq!(response.content, "- default bullet");
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn server_error_forever_gives_up_after_max_retries() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::error(500, "internal meltdown"));
    let err = client(&fake).complete("s", "u").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Server {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.hits(), 3);
    let message = err.to_string();
    assert!(
        message.contains("internal meltdown") && message.contains("3 HTTP requests"),
        "{message}"
    );
}

#[tokio::test]
async fn client_errors_fail_at_once_with_the_provider_message() {
    let fake = FakeLlm::start().await;
    let client = client(&fake);
    type IsExpected = fn(&Error) -> bool;
    let cases: [(u16, &str, IsExpected); 5] = [
        (401, "unauthorized", |e| {
            matches!(e, Error::Unauthorized { .. })
        }),
        (402, "payment_required", |e| {
            matches!(e, Error::PaymentRequired { .. })
        }),
        (403, "forbidden", |e| matches!(e, Error::Forbidden { .. })),
        (404, "not_found", |e| matches!(e, Error::NotFound { .. })),
        (400, "bad_request", |e| {
            matches!(e, Error::BadRequest { status: 400, .. })
        }),
    ];
    for (expected_hits, (status, kind, is_expected)) in (1..).zip(cases) {
        let provider_message = format!("provider says no ({status})");
        fake.push(Reply::error(status, &provider_message));
        let err = client.complete("s", "u").await.unwrap_err();
        assert!(is_expected(&err), "HTTP {status} gave {err:?}");
        assert_eq!(err.kind(), kind);
        assert!(!err.is_retryable());
        assert_eq!(fake.hits(), expected_hits, "HTTP {status} was retried");
        let display = err.to_string();
        assert!(display.contains(&provider_message), "{display}");
        assert!(
            !display.contains("{\"error\""),
            "raw JSON leaked into: {display}"
        );
    }
}

#[tokio::test]
async fn hung_server_times_out_after_retries() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::Hang);
    let mut settings = fake.settings();
    settings.timeout = Duration::from_millis(200);
    settings.max_retries = 1;
    let started = Instant::now();
    let err = LlmClient::new(settings)
        .unwrap()
        .complete("s", "u")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { attempts: 2, after } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn slow_answer_within_timeout_succeeds() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::text("late but fine")),
    ));
    let response = client(&fake).complete("s", "u").await.unwrap();
    assert_eq!(
        (response.content.as_str(), response.attempts),
        ("late but fine", 1)
    );
}

#[tokio::test]
async fn garbage_body_is_malformed_and_not_retried() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Garbage("<html>gateway page</html>".into()));
    let err = client(&fake).complete("s", "u").await.unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { detail } if detail.contains("gateway page")),
        "{err:?}"
    );
    assert_eq!(fake.hits(), 1);

    fake.push(Reply::Garbage(
        r#"{"id":"x","object":"chat.completion"}"#.into(),
    ));
    let err = client(&fake).complete("s", "u").await.unwrap_err();
    assert_eq!(err.kind(), "malformed");
}

#[tokio::test]
async fn error_in_success_body_is_api_error_and_retried_when_transient() {
    let fake = FakeLlm::start().await;
    let client = client(&fake);

    fake.push(Reply::ErrorInBody {
        code: json!("invalid_prompt"),
        message: "prompt rejected".into(),
    });
    let err = client.complete("s", "u").await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { code: Some(c), message } if c == "invalid_prompt" && message == "prompt rejected"),
        "{err:?}"
    );
    assert!(err.to_string().contains("prompt rejected"));
    assert_eq!(fake.hits(), 1);

    fake.push(Reply::ErrorInBody {
        code: json!(502),
        message: "upstream provider error".into(),
    });
    let response = client.complete("s", "u").await.unwrap();
    assert_eq!(response.attempts, 2);
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn empty_content_is_an_error() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Empty);
    let err = client(&fake).complete("s", "u").await.unwrap_err();
    assert!(matches!(err, Error::Empty), "{err:?}");
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn unreachable_endpoint_is_connect_error_after_retries() {
    // Bind then drop to get a port that nothing listens on.
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let fake = FakeLlm::start().await;
    let mut settings = fake.settings();
    settings.base_url = format!("http://127.0.0.1:{port}/v1/");
    let err = LlmClient::new(settings)
        .unwrap()
        .complete("s", "u")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { attempts: 3, .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(fake.hits(), 0);
}

#[tokio::test]
async fn responder_sees_the_request_and_clones_share_the_client() {
    let fake = FakeLlm::start().await;
    fake.set_responder(|body| {
        let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
        Reply::text(format!("- answer to {prompt}"))
    });
    let client = client(&fake);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.complete("role", &format!("q{i}")).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.content, format!("- answer to q{i}"));
    }
    assert_eq!(fake.hits(), 4);
}
