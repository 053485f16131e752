//! `POST /publish` and `POST /updates/{id}/widen`: HTTP adapters that parse the body and hand
//! it to the [`Service`](super::service::Service), which validates, commits to the log, then
//! announces.
//!
//! Bodies are read as JSON whatever `Content-Type` says (`curl -d` sends form encoding and
//! the seed's examples rely on it); errors name the field at fault.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use super::service::ServiceError;
use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::shared::json;
use crate::core::shared::tier::secrets_equal;
use crate::core::updates::{PublishRequest, UpdateEnvelope};

/// Fields a publish body may carry.
const PUBLISH_FIELDS: [&str; 7] = [
    "update_type",
    "payload",
    "target_orch",
    "target_agent_prefix",
    "cascade",
    "tier_required",
    "rollout_percent",
];

/// Body of `POST /updates/{id}/widen` (`percent` is still read, as an older name).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WidenRequest {
    /// New rollout percentage: above the current one, at most 100.
    #[serde(alias = "percent")]
    pub rollout_percent: u8,
}

/// Answer of `POST /updates/{id}/widen`: the envelope at its new percentage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Widened {
    /// The update, `rollout_percent` as widened.
    #[serde(flatten)]
    pub update: UpdateEnvelope,
    /// The percentage before.
    pub previous_rollout_percent: Option<u8>,
}

/// Rejects publishing requests without the admin token; passes everything when none is set.
pub(super) async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = state.config.admin_token.as_deref() else {
        return next.run(req).await;
    };
    let presented = http::bearer_token(req.headers());
    let Some(presented) = presented else {
        state.metrics.reject("unauthorized");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "publishing needs an `Authorization: Bearer <PHOENIX_ADMIN_TOKEN>` header",
        )
        .into_response();
    };
    if !secrets_equal(presented, token) {
        state.metrics.reject("forbidden");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bearer token is not this distributor's admin token",
        )
        .into_response();
    }
    next.run(req).await
}

pub(super) async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UpdateEnvelope>, ApiError> {
    let result = accept_publish(&state, &headers, body).await;
    if let Err(e) = &result {
        state.metrics.reject(e.code);
    }
    result.map(Json)
}

async fn accept_publish(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<UpdateEnvelope, ApiError> {
    let bytes = read_body(state, headers, body).await?;
    let req = parse_publish(&bytes)?;
    Ok(state.service.publish(req).await?)
}

pub(super) async fn widen(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Widened>, ApiError> {
    let result = accept_widen(&state, &id, &headers, body).await;
    if let Err(e) = &result {
        state.metrics.reject(e.code);
    }
    result.map(Json)
}

async fn accept_widen(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Widened, ApiError> {
    let bytes = read_body(state, headers, body).await?;
    let percent = parse_widen(&bytes)?;
    Ok(state.service.widen(id, percent).await?)
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidUpdate(e) => {
                ApiError::bad_request("invalid_update", e.to_string())
            }
            ServiceError::InvalidRequest(e) => {
                ApiError::bad_request("invalid_request", e.to_string())
            }
            ServiceError::Log(e) => e.into(),
        }
    }
}

/// Reads the body up to the limit, undoing gzip (decoded, also up to the limit); any
/// `Content-Type` is read as JSON.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    crate::core::server::http::read_body(
        headers,
        body,
        limit,
        limit,
        &state.config.server.decode_budget,
    )
    .await
}

/// Parses a JSON object body (duplicate keys refused), or says why it is not one.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    json::parse_object(bytes).map_err(|e| {
        let code = match e {
            json::ObjectError::Empty => "empty_body",
            _ => "invalid_json",
        };
        ApiError::bad_request(code, e.to_string())
    })
}

/// Parses a publish body, naming the field of any unknown or mistyped entry.
pub(super) fn parse_publish(bytes: &[u8]) -> Result<PublishRequest, ApiError> {
    let map = json_object(bytes)?;
    if let Some(unknown) = map.keys().find(|k| !PUBLISH_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_update",
            format!(
                "field `{unknown}`: unknown field; an update has {}",
                PUBLISH_FIELDS.join(", ")
            ),
        ));
    }
    serde_json::from_value(Value::Object(map.clone())).map_err(|_| {
        // Find the entry that does not fit, to name it.
        let culprit = map.iter().find_map(|(k, v)| {
            let one = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
            serde_json::from_value::<PublishRequest>(one)
                .err()
                .map(|e| (k.clone(), e))
        });
        let detail = match culprit {
            Some((k, e)) => format!("field `{k}`: {e}"),
            None => "the body does not match an update envelope".to_owned(),
        };
        ApiError::bad_request("invalid_update", detail)
    })
}

fn parse_widen(bytes: &[u8]) -> Result<u8, ApiError> {
    let map = json_object(bytes)?;
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "rollout_percent" | "percent"))
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("field `{unknown}`: unknown field; send {{\"rollout_percent\": P}}"),
        ));
    }
    if map.len() > 1 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "field `rollout_percent`: given twice (as `rollout_percent` and `percent`)",
        ));
    }
    match map.get("rollout_percent").or_else(|| map.get("percent")) {
        None => Err(ApiError::bad_request(
            "invalid_request",
            "field `rollout_percent`: is required",
        )),
        Some(v) => v
            .as_u64()
            .filter(|p| (1..=100).contains(p))
            .map(|p| p as u8)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!("field `rollout_percent`: {v} is not an integer from 1 to 100"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_errors_name_the_field() {
        let detail = |body: &str| parse_publish(body.as_bytes()).unwrap_err().detail;
        assert!(detail(r#"{"update_type":"notice","paylod":{}}"#).starts_with("field `paylod`"));
        assert!(detail(r#"{"update_type":5,"payload":{}}"#).starts_with("field `update_type`"));
        assert!(
            detail(r#"{"update_type":"notice","cascade":"yes"}"#).starts_with("field `cascade`")
        );
        assert_eq!(parse_publish(b"{nope").unwrap_err().code, "invalid_json");
        assert_eq!(parse_publish(b"[1]").unwrap_err().code, "invalid_json");
        assert_eq!(parse_publish(b"  ").unwrap_err().code, "empty_body");
        assert!(parse_publish(br#"{"update_type":"notice","payload":{"message":"m"}}"#).is_ok());
    }

    #[test]
    fn widen_percent_must_be_1_to_100() {
        assert_eq!(parse_widen(br#"{"rollout_percent": 50}"#).unwrap(), 50);
        assert_eq!(parse_widen(br#"{"percent": 50}"#).unwrap(), 50);
        let e = parse_widen(br#"{"rollout_percent": 0}"#).unwrap_err();
        assert!(
            e.detail.starts_with("field `rollout_percent`"),
            "{}",
            e.detail
        );
        for bad in [
            r#"{"percent": 0}"#,
            r#"{"percent": 101}"#,
            r#"{"percent": "x"}"#,
            r#"{}"#,
            r#"{"percent":5,"x":1}"#,
            r#"{"percent":5,"rollout_percent":6}"#,
        ] {
            assert_eq!(
                parse_widen(bad.as_bytes()).unwrap_err().code,
                "invalid_request",
                "{bad}"
            );
        }
    }
}
