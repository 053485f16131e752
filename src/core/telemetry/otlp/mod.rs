//! OTLP/HTTP as OpenTelemetry SDKs send it: request decoding (protobuf, or OTLP's JSON
//! mapping with hex ids and enum numbers or names), the answers, and the one mapping from a
//! span or a log record to a telemetry envelope ([`map`]).
//!
//! The message types are `opentelemetry-proto`'s (prost + serde); only `google.rpc.Status`,
//! which that crate does not carry, is declared here.

pub mod map;
#[cfg(test)]
mod tests;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use map::{Mapped, map_logs, map_traces};

/// `Content-Type` of OTLP protobuf bodies.
pub const PROTOBUF: &str = "application/x-protobuf";
/// `Content-Type` of OTLP JSON bodies.
pub const JSON: &str = "application/json";

/// How an OTLP body is encoded; the answer uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// The OTLP JSON mapping of protobuf.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names (parameters ignored), `None` for any other type.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            PROTOBUF | "application/protobuf" => Some(Encoding::Protobuf),
            JSON => Some(Encoding::Json),
            _ => None,
        }
    }

    /// The `Content-Type` of an answer in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// A body that is not an OTLP export request; the message says where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Decodes a `POST /v1/traces` body.
pub fn decode_traces(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportTraceServiceRequest, DecodeError> {
    decode(body, encoding, "ExportTraceServiceRequest")
}

/// Decodes a `POST /v1/logs` body.
pub fn decode_logs(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportLogsServiceRequest, DecodeError> {
    decode(body, encoding, "ExportLogsServiceRequest")
}

fn decode<M: prost::Message + Default + DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
    name: &str,
) -> Result<M, DecodeError> {
    match encoding {
        Encoding::Protobuf => M::decode(body)
            .map_err(|e| DecodeError(format!("the body is not a protobuf {name}: {e}"))),
        Encoding::Json => {
            let mut value: Value = serde_json::from_slice(body).map_err(|e| {
                DecodeError(format!(
                    "the body is not JSON: {}",
                    super::strip_position(&e.to_string())
                ))
            })?;
            if !value.is_object() {
                return Err(DecodeError(format!(
                    "the body must be a JSON {name} object"
                )));
            }
            normalize_json(&mut value, &mut String::new())?;
            serde_path_to_error::deserialize(value).map_err(|e| {
                let at = e.path().to_string();
                let inner = super::without_values(&e.inner().to_string());
                DecodeError(format!("{name}: at `{at}`: {inner}"))
            })
        }
    }
}

/// Brings OTLP JSON to the shape the serde derives read: `null` members dropped (proto3
/// JSON treats them as absent), and the enums that may be sent by name (`kind`, `status.code`,
/// `severityNumber`) turned into their numbers. `path` is kept for the error message.
fn normalize_json(value: &mut Value, path: &mut String) -> Result<(), DecodeError> {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for (key, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if let Value::String(name) = v {
                    let number = match key.as_str() {
                        "kind" => Some(SpanKind::from_str_name(name).map(|k| k as i32)),
                        "code" => Some(StatusCode::from_str_name(name).map(|c| c as i32)),
                        "severityNumber" => {
                            Some(SeverityNumber::from_str_name(name).map(|s| s as i32))
                        }
                        _ => None,
                    };
                    match number {
                        Some(Some(n)) => *v = Value::from(n),
                        // A number sent as a string is read as the number it says.
                        Some(None) if name.parse::<i32>().is_ok() => {
                            *v = Value::from(name.parse::<i32>().unwrap_or_default());
                        }
                        Some(None) => {
                            return Err(DecodeError(format!(
                                "at `{path}`: not a value of this enum"
                            )));
                        }
                        None => {}
                    }
                } else {
                    normalize_json(v, path)?;
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                normalize_json(item, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Encodes an answer (export response or status) in `encoding`.
pub fn encode<M: prost::Message + Serialize>(message: &M, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => {
            // proto3 JSON leaves unset fields out: `{}`, not `{"partialSuccess":null}`.
            let mut value = serde_json::to_value(message).expect("OTLP messages serialize");
            if let Value::Object(map) = &mut value {
                map.retain(|_, v| !v.is_null());
            }
            serde_json::to_vec(&value).expect("JSON values serialize")
        }
    }
}

/// The answer to an export request: a partial success when something was refused or
/// dropped, else empty (which OTLP reads as full success).
pub fn trace_response(rejected: usize, message: Option<String>) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: message.map(|error_message| ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message,
        }),
    }
}

/// The logs counterpart of [`trace_response`].
pub fn logs_response(rejected: usize, message: Option<String>) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: message.map(|error_message| ExportLogsPartialSuccess {
            rejected_log_records: rejected as i64,
            error_message,
        }),
    }
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct RpcStatus {
    /// A `google.rpc.Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong, in a sentence.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Always empty: Phoenix says everything in `message`.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`, for [`RpcStatus::details`].
#[derive(Clone, PartialEq, prost::Message, Serialize)]
pub struct Any {
    /// Type URL.
    #[prost(string, tag = "1")]
    #[serde(rename = "@type")]
    pub type_url: String,
    /// Encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The `google.rpc.Code` that goes with an HTTP error status.
pub fn rpc_code(http_status: u16) -> i32 {
    match http_status {
        400 | 415 => 3,  // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 5,        // NOT_FOUND
        405 | 501 => 12, // UNIMPLEMENTED
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        503 => 14,       // UNAVAILABLE
        _ => 13,         // INTERNAL
    }
}
