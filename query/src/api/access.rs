//! Who may use the API: bearer tokens with roles, per-client rate limits, and TLS.
//!
//! In: the `[monitor.api]` configuration ([`ApiAccessConfig`]) and each request's
//! `Authorization` header and peer address. Out: the request passes on, or a JSON error: 401
//! (no or unknown token, with `WWW-Authenticate`), 403 (a `read` token on a route that changes
//! something), 429 (the client's rate is exceeded, with `Retry-After`).
//!
//! - **Tokens.** Each configured token has a name (for logs), a role and a value read from an
//!   environment variable or a file, never from the configuration text. `read` may use every
//!   `GET` route; `admin` may also create and expire silences and start hop traces (every
//!   non-`GET` route). `/health` and `/ready` stay open for orchestrators' probes. Without any
//!   token configured the API is open, as it was before tokens existed; the monitor logs a
//!   warning when it listens on a non-loopback address that way.
//! - **Comparison.** The presented token and every configured token are hashed (SHA-256) and
//!   the digests compared with `subtle`'s constant-time equality, against every configured token
//!   without an early exit: neither the position of the first differing byte nor the length of a
//!   token shows in the time taken. Token values are never logged or shown in `Debug` output.
//! - **Forms.** `Authorization: Bearer <token>`, or HTTP Basic with any user name and the token as
//!   the password, so that a browser can open the status page (it prompts once).
//! - **Rate limit.** `rate_limit_per_second` requests per second per client address with a burst
//!   of `rate_limit_burst` (governor's GCRA), 0 to turn it off; requests without a known peer
//!   address (in-process tests) share one bucket.
//! - **TLS.** With `tls_cert_file` and `tls_key_file` (PEM) the API serves HTTPS only (rustls,
//!   ring provider), see [`serve`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Routes anyone may call, tokens or not: orchestrators' liveness and readiness probes.
pub const OPEN_ROUTES: [&str; 2] = ["/health", "/ready"];

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every `GET` route.
    Read,
    /// Every route, including silences and hop traces.
    Admin,
}

/// One API token of the configuration: its value comes from `token_env` or `token_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (`grafana`, `oncall`...); shown in logs, never the token itself.
    pub name: String,
    /// `read` or `admin`.
    pub role: Role,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the token (trailing newline ignored), e.g. a mounted secret.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The `[monitor.api]` section: tokens, rate limit and TLS of the query API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiAccessConfig {
    /// API tokens; none: the API is open (loopback use only).
    pub tokens: Vec<TokenConfig>,
    /// Requests per second allowed per client address; 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// Requests a client may make at once above its rate.
    pub rate_limit_burst: u32,
    /// PEM certificate chain: with `tls_key_file`, the API serves HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ApiAccessConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            rate_limit_per_second: 20,
            rate_limit_burst: 40,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ApiAccessConfig {
    /// Every problem with this section, each starting with its key (without `monitor.api.`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (index, token) in self.tokens.iter().enumerate() {
            if token.name.is_empty() {
                problems.push(format!("tokens[{index}].name: must not be empty"));
            }
            if token.token_env.is_some() == token.token_file.is_some() {
                problems.push(format!(
                    "tokens[{index}].token_env: set exactly one of token_env and token_file"
                ));
            }
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            problems
                .push("rate_limit_burst: must be at least 1 when rate_limit_per_second is set".to_owned());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push("tls_cert_file: set both tls_cert_file and tls_key_file, or neither".to_owned());
        }
        problems
    }
}

/// Why the access settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A token's variable is unset or empty.
    #[error("monitor.api.tokens[{index}].token_env: environment variable {variable} is unset or empty")]
    MissingEnv { index: usize, variable: String },
    /// A token's file cannot be read or is empty.
    #[error("monitor.api.tokens[{index}].token_file: {path}: {reason}")]
    BadFile {
        index: usize,
        path: String,
        reason: String,
    },
    /// The TLS certificate or key cannot be loaded.
    #[error("monitor.api.tls_cert_file: {0}")]
    Tls(String),
}

/// One loaded token: the SHA-256 of its value, never the value.
struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
}

type Limiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// The loaded access settings, shared by every request.
#[derive(Clone, Default)]
pub struct Access {
    tokens: Arc<Vec<Token>>,
    limiter: Option<Arc<Limiter>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<(&str, Role)> = self.tokens.iter().map(|t| (t.name.as_str(), t.role)).collect();
        f.debug_struct("Access")
            .field("tokens", &names)
            .field("rate_limited", &self.limiter.is_some())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Access {
    /// Loads the token values from their variables and files.
    pub fn load(config: &ApiAccessConfig) -> Result<Self, AccessError> {
        let mut tokens = Vec::with_capacity(config.tokens.len());
        for (index, token) in config.tokens.iter().enumerate() {
            let value = match (&token.token_env, &token.token_file) {
                (Some(variable), _) => std::env::var(variable)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| AccessError::MissingEnv {
                        index,
                        variable: variable.clone(),
                    })?,
                (None, Some(path)) => {
                    let bad = |reason: String| AccessError::BadFile {
                        index,
                        path: path.display().to_string(),
                        reason,
                    };
                    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                    let value = text.trim_end_matches(['\n', '\r']).to_owned();
                    if value.is_empty() {
                        return Err(bad("empty".to_owned()));
                    }
                    value
                }
                (None, None) => continue,
            };
            tokens.push(Token {
                name: token.name.clone(),
                role: token.role,
                digest: digest(value.as_bytes()),
            });
        }
        let limiter = NonZeroU32::new(config.rate_limit_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rate);
            Arc::new(governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Ok(Self {
            tokens: Arc::new(tokens),
            limiter,
        })
    }

    /// Whether any token is configured (else the API is open).
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token presented in `authorization` (Bearer, or Basic with the token as password),
    /// checked in constant time against every configured token.
    fn authenticate(&self, authorization: Option<&str>) -> Option<(&str, Role)> {
        let presented = authorization.and_then(presented_token)?;
        let presented = digest(presented.as_bytes());
        let mut found: Option<&Token> = None;
        for token in self.tokens.iter() {
            if bool::from(token.digest.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        found.map(|t| (t.name.as_str(), t.role))
    }
}

/// The token of an `Authorization` header value.
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, password)| password.to_owned());
    }
    None
}

/// Standard base64 (RFC 4648, with padding), enough for a Basic credential. Hand-written: a
/// dozen lines do not justify a dependency.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend(&acc.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let headers = response.headers_mut();
        headers.append(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"egress\"".parse().expect("static"),
        );
        headers.append(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"egress\"".parse().expect("static"),
        );
    }
    response
}

/// The middleware: rate limit, then tokens and roles (see the module header).
pub(crate) async fn require(State(access): State<Access>, request: Request, next: Next) -> Response {
    if let Some(limiter) = &access.limiter {
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        if limiter.check_key(&client).is_err() {
            let mut response = refuse(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().expect("static"));
            return response;
        }
    }
    if !access.requires_tokens() || OPEN_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some((name, role)) = access.authenticate(authorization) else {
        return refuse(StatusCode::UNAUTHORIZED, "a valid API token is required");
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && role < Role::Admin {
        tracing::info!(token = name, method = %request.method(), path = request.uri().path(),
            "refused: read-only token on an admin route");
        return refuse(StatusCode::FORBIDDEN, "this token may only read (role read)");
    }
    next.run(request).await
}

/// Serves `router` on `listener` until `shutdown` resolves: HTTPS with the configured
/// certificate when `config` names one, plain HTTP otherwise. The peer address reaches the
/// rate limit through `ConnectInfo`.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    config: &ApiAccessConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AccessError> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    listener
        .set_nonblocking(true)
        .map_err(|e| AccessError::Tls(e.to_string()))?;
    let served = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| AccessError::Tls(format!("{}: {e}", cert.display())))?;
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(app)
                .await
        }
        _ => axum_server::from_tcp(listener).handle(handle).serve(app).await,
    };
    served.map_err(|e| AccessError::Tls(format!("serving: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_credentials_give_the_token() {
        assert_eq!(presented_token("Bearer abc123"), Some("abc123".into()));
        // "oncall:s3cret" in base64.
        assert_eq!(
            presented_token("Basic b25jYWxsOnMzY3JldA=="),
            Some("s3cret".into())
        );
        assert_eq!(presented_token("Basic !!!"), None);
        assert_eq!(presented_token("Digest x"), None);
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("YWJj"), Some(b"abc".to_vec()));
    }

    #[test]
    fn problems_name_the_key() {
        let config = ApiAccessConfig {
            tokens: vec![TokenConfig {
                name: String::new(),
                role: Role::Read,
                token_env: None,
                token_file: None,
            }],
            rate_limit_per_second: 5,
            rate_limit_burst: 0,
            tls_cert_file: Some("cert.pem".into()),
            tls_key_file: None,
        };
        let problems = config.problems().join("\n");
        for key in [
            "tokens[0].name",
            "tokens[0].token_env",
            "rate_limit_burst",
            "tls_cert_file",
        ] {
            assert!(problems.contains(key), "{problems}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "very-secret-token\n").unwrap();
        let access = Access::load(&ApiAccessConfig {
            tokens: vec![TokenConfig {
                name: "oncall".into(),
                role: Role::Admin,
                token_env: None,
                token_file: Some(file),
            }],
            ..ApiAccessConfig::default()
        })
        .unwrap();
        let shown = format!("{access:?}");
        assert!(
            shown.contains("oncall") && !shown.contains("very-secret"),
            "{shown}"
        );
        assert_eq!(
            access.authenticate(Some("Bearer very-secret-token")),
            Some(("oncall", Role::Admin))
        );
        assert_eq!(access.authenticate(Some("Bearer very-secret-toke")), None);
    }
}
