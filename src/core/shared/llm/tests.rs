use super::*;
use serde_json::json;

#[test]
fn retry_after_accepts_seconds_and_rejects_dates() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-3"), None);
    assert_eq!(parse_retry_after(""), None);
}

#[test]
fn retry_after_ms_header_wins_over_seconds() {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(5)));
    headers.insert("retry-after-ms", HeaderValue::from_static("250"));
    assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

#[test]
fn content_may_be_a_string_or_text_parts() {
    assert_eq!(extract_content(&json!("hello")).as_deref(), Some("hello"));
    let parts = json!([
        {"type": "text", "text": "a "},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "b"}
    ]);
    assert_eq!(extract_content(&parts).as_deref(), Some("a b"));
    assert_eq!(extract_content(&Value::Null).as_deref(), Some(""));
    assert_eq!(extract_content(&json!(42)), None);
}

#[test]
fn completion_is_parsed_with_usage_and_model_fallback() {
    let body = json!({
        "choices": [{"message": {"role": "assistant", "content": "- bullet"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    });
    let response = parse_completion(&body.to_string(), "asked/model").unwrap();
    assert_eq!(response.content, "- bullet");
    assert_eq!(response.model, "asked/model");
    assert_eq!(response.usage.unwrap().total_tokens, 5);
}

#[test]
fn bad_completions_map_to_typed_errors() {
    let parse = |body: Value| parse_completion(&body.to_string(), "m").unwrap_err();
    assert!(matches!(
        parse_completion("<html>oops</html>", "m"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(parse(json!({"id": "x"})), Error::Malformed { .. }));
    assert!(matches!(parse(json!({"choices": []})), Error::Empty));
    assert!(matches!(
        parse(json!({"choices": [{"message": {"content": "  \n"}}]})),
        Error::Empty
    ));
    assert!(matches!(
        parse(json!({"choices": [{"message": {"content": null}}]})),
        Error::Empty
    ));
    let api = parse(json!({"error": {"code": 502, "message": "upstream died"}}));
    assert!(
        matches!(&api, Error::Api { code: Some(c), message } if c == "502" && message == "upstream died")
    );
    assert!(api.is_retryable());
    let api = parse(json!({"error": {"code": "invalid_prompt", "message": "no"}}));
    assert!(!api.is_retryable());
}

#[test]
fn provider_detail_prefers_the_json_message_and_truncates() {
    assert_eq!(
        provider_detail(r#"{"error":{"message":"No credits","code":402}}"#),
        "No credits"
    );
    assert_eq!(provider_detail(r#"{"error":"bad key"}"#), "bad key");
    assert_eq!(provider_detail("  plain\n text "), "plain text");
    assert_eq!(provider_detail(""), "no details given");
    let long = provider_detail(&"x".repeat(1000));
    assert_eq!(long.chars().count(), DETAIL_LIMIT + 1);
    assert!(long.ends_with('…'));
}

#[test]
fn settings_are_validated_and_the_key_is_not_logged() {
    let mut settings = LlmSettings::new("ftp://example.com", "m");
    assert!(matches!(
        LlmClient::new(settings.clone()),
        Err(Error::Config(_))
    ));
    settings.base_url = "http://example.com/v1/".into();
    settings.api_key = Some("sk-secret".into());
    assert!(!format!("{settings:?}").contains("sk-secret"));
    let client = LlmClient::new(settings.clone()).unwrap();
    assert_eq!(
        client.inner.endpoint,
        "http://example.com/v1/chat/completions"
    );
    assert_eq!(client.model(), "m");
    settings.ca_cert = Some(PathBuf::from("/nonexistent/ca.pem"));
    let err = LlmClient::new(settings).err().unwrap();
    assert_eq!(err.kind(), "config");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn extra_ca_must_hold_a_pem_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["llm.internal".into()]).unwrap();
    std::fs::write(&good, cert.cert.pem()).unwrap();
    let bad = dir.path().join("not-a-cert.pem");
    std::fs::write(&bad, "hello").unwrap();

    let mut settings = LlmSettings::new("https://llm.internal/v1", "m");
    settings.ca_cert = Some(good);
    LlmClient::new(settings.clone()).expect("valid CA accepted");
    settings.ca_cert = Some(bad);
    let err = LlmClient::new(settings).err().unwrap();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}

#[test]
fn display_names_the_status_and_attempts() {
    let err = Error::Server {
        status: 502,
        detail: "bad gateway".into(),
        attempts: 3,
    };
    assert_eq!(
        err.to_string(),
        "LLM endpoint failed with HTTP 502 after 3 HTTP requests: bad gateway"
    );
    let err = Error::RateLimited {
        retry_after: Some(Duration::from_secs(2)),
        attempts: 1,
    };
    assert_eq!(
        err.to_string(),
        "LLM endpoint is rate limiting requests (429) after 1 HTTP request; server asked to wait 2s"
    );
    let err = Error::Api {
        code: Some("429".into()),
        message: "slow down".into(),
    };
    assert_eq!(
        err.to_string(),
        "LLM provider reported an error (429): slow down"
    );
}
