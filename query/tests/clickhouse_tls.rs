//! HTTPS to ClickHouse with certificate verification: a ClickHouse 18.16 serving HTTPS with a
//! certificate of its own. The client (the one every Egress component uses,
//! `egress_query::connection::client`, rustls with the system's roots) refuses the server while
//! the certificate is not trusted, and works once it is (here through `SSL_CERT_FILE`, which
//! the system roots honour, as `update-ca-certificates` would make it on a real machine).

use std::process::Command;

use egress_query::connection::{self, ClickHouseConfig};
use egress_testkit::clickhouse::ClickHouseServer;

#[tokio::test]
async fn https_to_clickhouse_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
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
