//! A TLS server certificate for tests: self-signed, for `localhost` and 127.0.0.1, made by
//! Debian's `openssl` (installed by `scripts/install-deps.sh`).
//!
//! It is a server certificate (`CA:FALSE`, `serverAuth`), not a CA: rustls (webpki) refuses a
//! CA certificate as the end entity, so a client trusts it by adding it as its own root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Writes `cert.pem` and `key.pem` into `dir`; returns their paths (certificate, key).
pub fn self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
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
        .context("running openssl")?;
    if !made.status.success() {
        bail!("openssl: {}", String::from_utf8_lossy(&made.stderr));
    }
    Ok((cert, key))
}
