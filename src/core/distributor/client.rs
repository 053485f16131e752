//! The distributor's HTTP API as typed calls: publish (rollbacks included), list, status and
//! widen. The command line's only way to the distributor's HTTP side.

use serde_json::json;

use super::{UpdateList, UpdateStatus, Widened};
use crate::core::shared::client::{self, ApiClient};
use crate::core::updates::{PublishRequest, UpdateEnvelope};

/// Where agents subscribe (the WebSocket upgrade), below the distributor's base URL.
pub const SUBSCRIBE_PATH: &str = "/subscribe";

/// A client of one distributor.
#[derive(Debug, Clone)]
pub struct DistributorClient {
    api: ApiClient,
}

impl DistributorClient {
    /// Talks to the distributor through `api` (built on [`http_base`] of its URL).
    pub fn new(api: ApiClient) -> Self {
        DistributorClient { api }
    }

    /// `POST /publish`: the envelope the distributor stored.
    pub async fn publish(&self, req: &PublishRequest) -> Result<UpdateEnvelope, client::Error> {
        self.api.post_json("/publish", req, &[]).await
    }

    /// The `limit` newest updates with their counts.
    pub async fn list(&self, limit: u32) -> Result<UpdateList, client::Error> {
        self.api.get_json(&format!("/updates?limit={limit}")).await
    }

    /// One update's delivery; `id` is an update id or seq, already checked to be URL-safe.
    pub async fn status(&self, id: &str) -> Result<UpdateStatus, client::Error> {
        self.api.get_json(&format!("/updates/{id}")).await
    }

    /// Raises an update's rollout to `rollout_percent`.
    pub async fn widen(&self, id: &str, rollout_percent: u8) -> Result<Widened, client::Error> {
        let body = json!({ "rollout_percent": rollout_percent });
        self.api
            .post_json(&format!("/updates/{id}/widen"), &body, &[])
            .await
    }
}

/// The HTTP base of a distributor URL: `ws://h:p/subscribe` → `http://h:p`. A URL that
/// cannot be one is a [`client::Error::Config`].
pub fn http_base(url: &str) -> Result<String, client::Error> {
    let mut parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| client::Error::Config(format!("invalid distributor URL {url:?}: {e}")))?;
    let scheme = match parsed.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => {
            return Err(client::Error::Config(format!(
                "distributor URL {url:?} has scheme {other:?}; use ws://, wss://, http:// or https://"
            )));
        }
    };
    parsed
        .set_scheme(scheme)
        .map_err(|()| client::Error::Config(format!("cannot use distributor URL {url:?}")))?;
    let path = parsed.path().trim_end_matches('/').to_owned();
    parsed.set_path(path.strip_suffix(SUBSCRIBE_PATH).unwrap_or(&path));
    parsed.set_query(None);
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_base_comes_from_the_websocket_url() {
        assert_eq!(
            http_base("ws://127.0.0.1:5003/subscribe").unwrap(),
            "http://127.0.0.1:5003"
        );
        assert_eq!(
            http_base("wss://pulse.example.com/fleet/subscribe/").unwrap(),
            "https://pulse.example.com/fleet"
        );
        assert_eq!(
            http_base("http://127.0.0.1:5003").unwrap(),
            "http://127.0.0.1:5003"
        );
        assert!(http_base("ftp://x").is_err());
    }
}
