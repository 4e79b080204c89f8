//! HTTPS to ClickHouse with certificate verification: a ClickHouse 18.16 serving HTTPS with a
//! certificate of its own. The client (the one every Egress component uses,
//! `egress_query::connection::client`, rustls with the system's roots) refuses the server while
//! the certificate is not trusted, and works once it is (here through `SSL_CERT_FILE`, which
//! the system roots honour, as `update-ca-certificates` would make it on a real machine).

use egress_query::connection::{self, ClickHouseConfig};
use egress_testkit::clickhouse::ClickHouseServer;

#[tokio::test]
async fn https_to_clickhouse_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = egress_testkit::tls::self_signed(dir.path()).expect("a test certificate");
    let (server, https_port) = ClickHouseServer::start_with_tls(&cert, &key).expect("ClickHouse with TLS");
    let config = ClickHouseConfig {
        url: format!("https://localhost:{https_port}"),
        database: "default".into(),
        ..ClickHouseConfig::default()
    };

    // Not trusted: only an unrelated certificate in the trust store.
    let untrusted = dir.path().join("other.pem");
    std::fs::write(&untrusted, "").unwrap();
    std::env::set_var("SSL_CERT_FILE", &untrusted);
    let refused = connection::server_version(&connection::client(&config).unwrap()).await;
    assert!(
        refused.is_err(),
        "an untrusted certificate must be refused: {refused:?}"
    );

    // Trusted: the same request succeeds over HTTPS.
    std::env::set_var("SSL_CERT_FILE", &cert);
    let version = connection::server_version(&connection::client(&config).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    assert_eq!(version.major, 18);
}
