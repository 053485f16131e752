//! Who may see the dashboard: when the collector's API needs a token, so does the
//! dashboard. A login form takes the token once and sets a signed session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS); every form carries a CSRF token
//! derived from the session. The API's `Authorization: Bearer` works too (scripts).
//!
//! Nothing is stored server-side: the cookie is `v1.<expiry>.<role>.<mac>`, the MAC a
//! HMAC-SHA256 under a key derived from the configured tokens, so sessions survive a
//! restart and end when the tokens change.

use axum::http::HeaderMap;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::core::server::http;
use crate::core::shared::tier::secrets_equal;

/// The session cookie.
pub const SESSION_COOKIE: &str = "phoenix_session";
/// The login form's own cookie (its CSRF token is derived from it).
pub const LOGIN_COOKIE: &str = "phoenix_login";
/// How long a session lasts, seconds.
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Logged in with the admin token (sees premium content).
    pub admin: bool,
    /// The session cookie's value, when there is one (CSRF tokens derive from it).
    cookie: Option<[u8; 32]>,
}

/// The dashboard's credentials and keys.
#[derive(Clone)]
pub struct Access {
    /// Tokens are configured: log in first.
    pub required: bool,
    tokens: Vec<String>,
    admin: Option<String>,
    key: [u8; 32],
    /// Set `Secure` on cookies (served over TLS).
    pub secure: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("required", &self.required)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Access {
    /// Access for a collector that accepts `tokens` (and `admin`); without ingest tokens the
    /// dashboard is open, like the API (the collector then listens on loopback, or the
    /// operator said so), and the admin token, presented as a bearer, still shows premium.
    pub fn new(tokens: &[String], admin: Option<&str>, secure: bool) -> Access {
        // As the API: open without ingest tokens (loopback, or the operator's choice).
        let required = !tokens.is_empty();
        let key: [u8; 32] = if required {
            let mut h = Sha256::new();
            h.update(b"phoenix-dashboard-session-v1");
            let mut all: Vec<&str> = tokens.iter().map(String::as_str).collect();
            all.sort_unstable();
            for t in all {
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            if let Some(a) = admin {
                h.update(b"admin");
                h.update(a.as_bytes());
            }
            h.finalize().into()
        } else {
            rand::random()
        };
        Access {
            required,
            tokens: tokens.to_vec(),
            admin: admin.map(str::to_owned),
            key,
            secure,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_le_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Whether `token` is one the API accepts, and whether it is the admin's. Every
    /// configured token is compared, so timing does not tell which matched.
    pub fn check_token(&self, token: &str) -> Option<bool> {
        let admin = self
            .admin
            .as_deref()
            .is_some_and(|a| secrets_equal(token, a));
        let any = self
            .tokens
            .iter()
            .fold(admin, |acc, t| acc | secrets_equal(token, t));
        any.then_some(admin)
    }

    /// A session cookie value for a login now.
    pub fn new_session(&self, admin: bool, now: i64) -> String {
        let exp = (now + SESSION_SECONDS).to_string();
        let role = if admin { "admin" } else { "api" };
        let mac = self.mac(&[b"session", exp.as_bytes(), role.as_bytes()]);
        format!("v1.{exp}.{role}.{}", hex::encode(mac))
    }

    fn verify_session(&self, value: &str, now: i64) -> Option<Session> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(exp), Some(role), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let expected = hex::encode(self.mac(&[b"session", exp.as_bytes(), role.as_bytes()]));
        if !secrets_equal(mac, &expected) {
            return None;
        }
        if exp.parse::<i64>().ok()? < now || !matches!(role, "admin" | "api") {
            return None;
        }
        Some(Session {
            admin: role == "admin",
            cookie: Some(Sha256::digest(value.as_bytes()).into()),
        })
    }

    /// The caller's session: from the session cookie or a bearer token; without tokens
    /// configured, everybody has an anonymous one. `None`: log in first.
    pub fn session(&self, headers: &HeaderMap, now: i64) -> Option<Session> {
        if let Some(token) = http::bearer_token(headers) {
            match self.check_token(token) {
                Some(admin) => {
                    return Some(Session {
                        admin,
                        cookie: Some(Sha256::digest(token.as_bytes()).into()),
                    });
                }
                None if self.required => return None,
                None => {}
            }
        }
        if !self.required {
            return Some(Session {
                admin: false,
                cookie: None,
            });
        }
        cookie(headers, SESSION_COOKIE).and_then(|v| self.verify_session(v, now))
    }

    /// The CSRF token of a session's forms.
    pub fn csrf(&self, session: &Session) -> String {
        let cookie = session.cookie.unwrap_or([0; 32]);
        hex::encode(self.mac(&[b"csrf", &cookie]))
    }

    /// Whether a form's CSRF token is the session's.
    pub fn check_csrf(&self, session: &Session, presented: &str) -> bool {
        secrets_equal(presented, &self.csrf(session))
    }

    /// The login form's CSRF token for the nonce in its cookie.
    pub fn login_csrf(&self, nonce: &str) -> String {
        hex::encode(self.mac(&[b"login", nonce.as_bytes()]))
    }

    /// A `Set-Cookie` value.
    pub fn set_cookie(&self, name: &str, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// False when a form post comes from another site: its `Origin` names a host other than
/// this request's `Host` (a browser always sends `Origin` on a cross-site POST).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
        _ => false,
    }
}

/// A `next` target that stays on this site: a path (not `//host`, not a URL), printable
/// ASCII only (it goes into a `Location` header), at most 2 KiB; anything else is `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= 2048
                && n.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_session_cookie_is_accepted_until_it_expires_or_is_altered() {
        let a = Access::new(&["tok".into()], Some("adm"), false);
        assert!(a.required);
        assert_eq!(a.check_token("tok"), Some(false));
        assert_eq!(a.check_token("adm"), Some(true));
        assert_eq!(a.check_token("nope"), None);
        let s = a.new_session(true, 1000);
        let got = a
            .session(&with_cookie(&format!("x=1; {SESSION_COOKIE}={s}")), 1000)
            .unwrap();
        assert!(got.admin);
        assert!(
            a.session(
                &with_cookie(&format!("{SESSION_COOKIE}={s}")),
                1000 + SESSION_SECONDS + 1
            )
            .is_none()
        );
        let forged = s.replace(".admin.", ".api.");
        assert!(
            a.session(&with_cookie(&format!("{SESSION_COOKIE}={forged}")), 1000)
                .is_none()
        );
        assert!(a.session(&HeaderMap::new(), 1000).is_none());
        // Another token set signs differently.
        let b = Access::new(&["other".into()], Some("adm"), false);
        assert!(
            b.session(&with_cookie(&format!("{SESSION_COOKIE}={s}")), 1000)
                .is_none()
        );
        // Same tokens, another process: the same key.
        let c = Access::new(&["tok".into()], Some("adm"), false);
        assert!(
            c.session(&with_cookie(&format!("{SESSION_COOKIE}={s}")), 1000)
                .is_some()
        );
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let a = Access::new(&["tok".into()], None, true);
        let s1 = a
            .session(
                &with_cookie(&format!("{SESSION_COOKIE}={}", a.new_session(false, 5))),
                5,
            )
            .unwrap();
        let s2 = a
            .session(
                &with_cookie(&format!("{SESSION_COOKIE}={}", a.new_session(false, 6))),
                6,
            )
            .unwrap();
        let t1 = a.csrf(&s1);
        assert!(a.check_csrf(&s1, &t1));
        assert!(!a.check_csrf(&s2, &t1));
        assert!(
            a.set_cookie("n", "v", 10)
                .contains("HttpOnly; SameSite=Strict")
        );
        assert!(a.set_cookie("n", "v", 10).ends_with("; Secure"));
    }

    #[test]
    fn next_targets_stay_on_the_site_and_cross_site_posts_are_told_apart() {
        assert_eq!(safe_next(Some("/ui/updates?x=1")), "/ui/updates?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/x\r\nSet-Cookie: a=b")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("/caf\u{e9}")), "/");
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
    }
}
