//! Who may use the API, through the real router and a real listener: requests without a token,
//! with a wrong one, or with a read-only token on admin routes are refused; tokens come from
//! environment variables and files; Basic credentials work for browsers; `/health` and
//! `/ready` stay open; a client over its rate gets 429; with a certificate the API serves
//! HTTPS, which a client verifies against that certificate (and refuses without it).

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use egress_query::api::{
    self, Access, AlertView, AlertsView, AlertsViewError, ApiAccessConfig, ApiState, NewSilence, Role,
    SilenceState, SilenceView, TokenConfig,
};
use tower::ServiceExt;

/// Silences in memory; no alerts. (The API's ClickHouse routes are not needed here.)
#[derive(Debug, Default)]
struct Silences(Mutex<Vec<SilenceView>>);

impl AlertsView for Silences {
    fn alerts(&self) -> Result<Vec<AlertView>, AlertsViewError> {
        Ok(Vec::new())
    }

    fn silences(&self) -> Result<Vec<SilenceView>, AlertsViewError> {
        Ok(self.0.lock().unwrap().clone())
    }

    fn create_silence(&self, silence: NewSilence) -> Result<String, AlertsViewError> {
        let mut silences = self.0.lock().unwrap();
        let id = format!("s{}", silences.len() + 1);
        silences.push(SilenceView {
            id: id.clone(),
            matchers: silence.matchers,
            starts_at: chrono::Utc::now(),
            ends_at: silence.ends_at,
            created_by: silence.created_by,
            comment: silence.comment,
            state: SilenceState::Active,
        });
        Ok(id)
    }

    fn expire_silence(&self, _id: &str) -> Result<(), AlertsViewError> {
        Ok(())
    }
}

const READ_TOKEN: &str = "read-token-from-the-environment";
const ADMIN_TOKEN: &str = "admin-token-from-a-file";

/// Tokens: `grafana` (read, from `EGRESS_TEST_READ_TOKEN`), `oncall` (admin, from a file).
fn access_config(dir: &Path, rate_limit_per_second: u32) -> ApiAccessConfig {
    // Every test of this file sets the same value, so parallel tests agree.
    std::env::set_var("EGRESS_TEST_READ_TOKEN", READ_TOKEN);
    let file = dir.join("admin-token");
    std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).unwrap();
    ApiAccessConfig {
        tokens: vec![
            TokenConfig {
                name: "grafana".into(),
                role: Role::Read,
                token_env: Some("EGRESS_TEST_READ_TOKEN".into()),
                token_file: None,
            },
            TokenConfig {
                name: "oncall".into(),
                role: Role::Admin,
                token_env: None,
                token_file: Some(file),
            },
        ],
        rate_limit_per_second,
        rate_limit_burst: rate_limit_per_second.max(1),
        ..ApiAccessConfig::default()
    }
}

fn router(config: &ApiAccessConfig) -> Router {
    // No ClickHouse behind this client: the routes used here do not query it.
    let client = clickhouse::Client::default().with_url("http://127.0.0.1:9");
    let state = ApiState::new(
        client,
        "egress",
        Vec::new(),
        Vec::new(),
        Arc::new(Silences::default()),
    )
    .unwrap()
    .with_access(Access::load(config).unwrap());
    api::router(state)
}

async fn call(router: &Router, method: &str, uri: &str, authorization: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = if method == "POST" {
        request = request.header(header::CONTENT_TYPE, "application/json");
        Body::from(
            r#"{"matchers": [{"name": "path", "value": "transit-a"}], "ends_at": "2099-01-01T00:00:00Z",
                "created_by": "noc", "comment": "maintenance"}"#,
        )
    } else {
        Body::empty()
    };
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .count();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(challenge, 2, "a 401 offers Bearer and Basic");
    }
    (status, text)
}

#[tokio::test]
async fn tokens_and_roles_decide_who_may_do_what() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&access_config(dir.path(), 0));
    let bearer = |token: &str| format!("Bearer {token}");
    let read = bearer(READ_TOKEN);
    let admin = bearer(ADMIN_TOKEN);

    // Open for orchestrators' probes.
    assert_eq!(call(&router, "GET", "/health", None).await.0, StatusCode::OK);
    // No token, a wrong one, a near miss, an unknown scheme: 401 with a JSON error.
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(&*bearer(&READ_TOKEN[1..])),
        Some("Token x"),
    ] {
        let (status, body) = call(&router, "GET", "/api/v1/silences", authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    // The status page is refused too, and opens with Basic credentials (a browser's prompt):
    // "anyone:<read token>".
    assert_eq!(
        call(&router, "GET", "/openapi.json", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let basic = format!("Basic {}", base64(&format!("anyone:{READ_TOKEN}")));
    assert_eq!(
        call(&router, "GET", "/openapi.json", Some(&basic)).await.0,
        StatusCode::OK
    );

    // Read: every GET; never a change.
    assert_eq!(
        call(&router, "GET", "/api/v1/silences", Some(&read)).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&router, "POST", "/api/v1/silences", Some(&read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        call(&router, "DELETE", "/api/v1/silences/s1", Some(&read))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&router, "POST", "/api/v1/trace", Some(&read)).await.0,
        StatusCode::FORBIDDEN
    );
    // Admin: changes too.
    let (status, body) = call(&router, "POST", "/api/v1/silences", Some(&admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        call(&router, "DELETE", "/api/v1/silences/s1", Some(&admin))
            .await
            .0,
        StatusCode::OK
    );
    let (_, body) = call(&router, "GET", "/api/v1/silences", Some(&admin)).await;
    assert!(body.contains("maintenance"), "{body}");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(&access_config(dir.path(), 3));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(call(&router, "GET", "/health", None).await.0);
    }
    assert_eq!(&statuses[..3], [StatusCode::OK; 3], "{statuses:?}");
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = egress_testkit::tls::self_signed(dir.path()).expect("a test certificate");
    let config = ApiAccessConfig {
        tls_cert_file: Some(cert.clone()),
        tls_key_file: Some(key),
        ..access_config(dir.path(), 0)
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let stop = tokio_util_free_shutdown();
    let server = tokio::spawn({
        let router = router(&config);
        let config = config.clone();
        let stop = stop.clone();
        async move { api::serve(listener, router, &config, async move { stop.notified().await }).await }
    });

    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}", address.port());
    let mut answered = None;
    let mut last_error = String::new();
    for _ in 0..50 {
        if server.is_finished() {
            break;
        }
        match trusted
            .get(format!("{url}/api/v1/silences"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
        {
            Ok(response) => {
                answered = Some(response.status());
                break;
            }
            Err(error) => {
                last_error = format!("{error:?}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    if server.is_finished() {
        panic!("the server stopped: {:?}", server.await);
    }
    assert_eq!(answered, Some(reqwest::StatusCode::OK), "{last_error}");
    // A client that does not trust the certificate refuses the connection; plain HTTP fails.
    let error = reqwest::Client::new()
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect() || error.is_request(), "{error:?}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", address.port()))
        .send()
        .await;
    assert!(plain
        .map(|r| r.status() != reqwest::StatusCode::OK)
        .unwrap_or(true));
    stop.notify_one();
    server.await.unwrap().unwrap();
}

/// A shutdown signal without extra dependencies.
fn tokio_util_free_shutdown() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

/// Standard base64 with padding (test helper).
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
