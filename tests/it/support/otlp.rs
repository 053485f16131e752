//! Reading OTLP/HTTP error answers the way an exporter does.

use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

use phoenix::core::telemetry::otlp::RpcStatus;

/// Status code and decoded `google.rpc.Status` of an error answer, in either encoding.
pub async fn rpc_status(resp: reqwest::Response) -> (u16, RpcStatus, Option<String>) {
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    let bytes = resp.bytes().await.unwrap();
    let status = if ct == "application/x-protobuf" {
        RpcStatus::decode(bytes.as_ref()).expect("a protobuf google.rpc.Status")
    } else {
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["details"].is_array(), "{v}");
        RpcStatus {
            code: v["code"].as_i64().unwrap() as i32,
            message: v["message"].as_str().unwrap().to_owned(),
            details: vec![],
        }
    };
    (code, status, retry)
}
