//! The read policy both servers apply to what they show (README "Security").
//!
//! - The admin token (`Authorization: Bearer <PHOENIX_ADMIN_TOKEN>`) sees everything.
//! - Without it, premium content (premium update payloads, premium insights) is withheld
//!   unless the request carries the `X402` premium key.
//! - Off loopback, reads need a token: the servers' auth layers enforce that before a
//!   handler runs; this module only decides what an admitted caller may see.
//!
//! A bearer that is presented must be right: a wrong admin token is refused, never
//! downgraded to an anonymous read.

use axum::http::{HeaderMap, StatusCode};

use crate::core::server::api_error::ApiError;
use crate::core::server::http;
use crate::core::shared::tier::{premium_key_matches, secrets_equal};

/// What one caller of a read endpoint may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Viewer {
    /// Presented the admin token.
    pub admin: bool,
    /// May see premium content (the admin, or the X402 key).
    pub premium: bool,
}

/// The secrets that decide a [`Viewer`].
#[derive(Debug, Clone, Default)]
pub struct ReadPolicy {
    /// The admin token, when one is set.
    pub admin_token: Option<String>,
    /// The X402 premium key, when one is set.
    pub premium_key: Option<String>,
    /// Whether a caller without the admin token is refused (off loopback).
    pub need_admin: bool,
}

impl ReadPolicy {
    /// Who the request's headers say the caller is. `bearer_checked_elsewhere` is true where
    /// an auth layer already admitted the bearer (the collector's ingest tokens), so a bearer
    /// that is not the admin token is not an error here.
    pub fn viewer(
        &self,
        headers: &HeaderMap,
        bearer_checked_elsewhere: bool,
    ) -> Result<Viewer, ApiError> {
        let bearer = http::bearer_token(headers);
        let admin = match (bearer, self.admin_token.as_deref()) {
            (Some(b), Some(t)) if secrets_equal(b, t) => true,
            (Some(_), _) if !bearer_checked_elsewhere => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the bearer token is not this server's admin token",
                ));
            }
            _ => false,
        };
        if self.need_admin && !admin {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "reads on a server bound off loopback need `Authorization: Bearer <PHOENIX_ADMIN_TOKEN>`",
            ));
        }
        let x402 = headers.get("x402").and_then(|v| v.to_str().ok());
        let premium = admin || premium_key_matches(self.premium_key.as_deref(), x402);
        Ok(Viewer { admin, premium })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn admin_sees_all_x402_sees_premium_and_a_wrong_token_is_refused() {
        let policy = ReadPolicy {
            admin_token: Some("admin-secret".into()),
            premium_key: Some("pk".into()),
            need_admin: false,
        };
        let anon = policy.viewer(&headers(&[]), false).unwrap();
        assert_eq!(anon, Viewer::default());
        let premium = policy.viewer(&headers(&[("x402", "pk")]), false).unwrap();
        assert!(premium.premium && !premium.admin);
        assert!(
            !policy
                .viewer(&headers(&[("x402", "nope")]), false)
                .unwrap()
                .premium
        );
        let admin = policy
            .viewer(&headers(&[("authorization", "Bearer admin-secret")]), false)
            .unwrap();
        assert!(admin.admin && admin.premium);
        let wrong = policy
            .viewer(&headers(&[("authorization", "Bearer guess")]), false)
            .unwrap_err();
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        // An ingest token the collector's auth layer admitted is an ordinary reader.
        let reader = policy
            .viewer(&headers(&[("authorization", "Bearer ingest-1")]), true)
            .unwrap();
        assert_eq!(reader, Viewer::default());
    }

    #[test]
    fn off_loopback_reads_need_the_admin_token() {
        let policy = ReadPolicy {
            admin_token: Some("admin-secret".into()),
            premium_key: Some("pk".into()),
            need_admin: true,
        };
        let err = policy
            .viewer(&headers(&[("x402", "pk")]), false)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(
            policy
                .viewer(&headers(&[("authorization", "bearer admin-secret")]), false)
                .unwrap()
                .admin
        );
    }
}
