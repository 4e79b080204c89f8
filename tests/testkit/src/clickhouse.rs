//! A real ClickHouse server for tests: Debian's `clickhouse-server` (18.16) on loopback, with its
//! data, temporary files and logs in a temporary directory.
//!
//! [`ClickHouseServer::start`] writes the configuration from the same templates as
//! `deploy/local/clickhouse.sh` (`deploy/clickhouse/config.xml` and `users.xml`), on free ports,
//! and waits until `GET /ping` answers ([`ClickHouseServer::start_in`]: with extra configuration,
//! optionally in a directory that is kept). [`ClickHouseServer::stop`] and
//! [`ClickHouseServer::restart`] stop and start it on the same ports and data (for outage tests).
//! Dropping the value kills the server and removes the directory (unless it was given).
//!
//! The binary is `$EGRESS_CLICKHOUSE_SERVER` if set, else `clickhouse-server`, else
//! `clickhouse server` (newer packages ship one multi-call binary).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The configuration template shared with `deploy/local/clickhouse.sh`.
const CONFIG_TEMPLATE: &str = include_str!("../../../deploy/clickhouse/config.xml");
/// The users file shared with `deploy/local/clickhouse.sh`.
const USERS: &str = include_str!("../../../deploy/clickhouse/users.xml");
/// How long a start may take before the test fails with the server's log.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped, see [`ClickHouseServer::stop`]) ClickHouse server owned by a test.
#[derive(Debug)]
pub struct ClickHouseServer {
    dir: PathBuf,
    /// The directory's owner when it is temporary (removed on drop); `None` for a directory
    /// given to [`ClickHouseServer::start_in`], which is kept.
    _temporary: Option<tempfile::TempDir>,
    http_port: u16,
    tcp_port: u16,
    child: Option<Child>,
}

impl ClickHouseServer {
    /// Starts a server on free loopback ports and waits until it answers `/ping`.
    pub fn start() -> anyhow::Result<Self> {
        retry_on_port_race(|| Self::start_with(free_port()?, free_port()?, ""))
    }

    /// Starts `shards` servers on loopback as the shards (one replica each) of a cluster named
    /// `cluster` in every server's `remote_servers`. No keeper: Egress runs its DDL on each
    /// node (`clickhouse.cluster_nodes`).
    pub fn start_cluster(cluster: &str, shards: usize) -> anyhow::Result<Vec<Self>> {
        retry_on_port_race(|| {
            let ports: Vec<(u16, u16)> = (0..shards)
                .map(|_| Ok((free_port()?, free_port()?)))
                .collect::<anyhow::Result<_>>()?;
            let shard_list: String = ports
                .iter()
                .map(|(_, tcp)| {
                    format!("<shard><replica><host>127.0.0.1</host><port>{tcp}</port></replica></shard>")
                })
                .collect();
            let remote_servers =
                format!("<remote_servers><{cluster}>{shard_list}</{cluster}></remote_servers>");
            ports
                .into_iter()
                .map(|(http, tcp)| Self::start_with(http, tcp, &remote_servers))
                .collect()
        })
    }

    /// Starts a server that also serves HTTPS on a free port with the PEM certificate `cert`
    /// and key `key`; returns it with the HTTPS port.
    pub fn start_with_tls(cert: &Path, key: &Path) -> anyhow::Result<(Self, u16)> {
        let https_port = free_port()?;
        let extra = format!(
            "<https_port>{https_port}</https_port>\n    <openSSL><server>\
             <certificateFile>{}</certificateFile><privateKeyFile>{}</privateKeyFile>\
             <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>\
             <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols>\
             <preferServerCiphers>true</preferServerCiphers></server></openSSL>",
            cert.display(),
            key.display()
        );
        let server = retry_on_port_race(|| Self::start_with(free_port()?, free_port()?, &extra))?;
        Ok((server, https_port))
    }

    /// Starts a server with `extra` XML inside the root element (e.g. a `<query_log>`
    /// section), its data in `dir` when given (created if missing, kept after the server stops,
    /// and reused by the next start in the same directory), else in a temporary directory.
    pub fn start_in(dir: Option<&Path>, extra: &str) -> anyhow::Result<Self> {
        retry_on_port_race(|| match dir {
            Some(dir) => Self::start_at(dir.to_path_buf(), None, free_port()?, free_port()?, extra),
            None => Self::start_with(free_port()?, free_port()?, extra),
        })
    }

    /// Starts a server on the given ports with `extra` XML inside the root element.
    fn start_with(http_port: u16, tcp_port: u16, extra: &str) -> anyhow::Result<Self> {
        let temporary = tempfile::Builder::new().prefix("egress-clickhouse-").tempdir()?;
        Self::start_at(
            temporary.path().to_path_buf(),
            Some(temporary),
            http_port,
            tcp_port,
            extra,
        )
    }

    /// Starts a server in `dir` (owned by `temporary` when temporary) on the given ports.
    fn start_at(
        dir: PathBuf,
        temporary: Option<tempfile::TempDir>,
        http_port: u16,
        tcp_port: u16,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let config =
            render_config(&dir, http_port, tcp_port).replace("</yandex>", &format!("    {extra}\n</yandex>"));
        for sub in ["log", "data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("config.xml"), config)?;
        std::fs::write(dir.join("users.xml"), USERS)?;
        let mut server = Self {
            dir,
            _temporary: temporary,
            http_port,
            tcp_port,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Base URL of the HTTP interface, e.g. `http://127.0.0.1:38123`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The native protocol port (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// The directory holding the configuration, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client for this server, validation off (see `egress_query::connection::client`).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(self.http_url())
            .with_validation(false)
    }

    /// Runs `sql` over HTTP and returns the body with the trailing newline removed: for queries
    /// with one value, the value (`SELECT count() FROM t` gives `"42"`). Fails on any error.
    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn query_scalar(&self, sql: &str) -> anyhow::Result<String> {
        let (status, body) = http(self.http_port, "POST", "/", sql.as_bytes())?;
        if status != 200 {
            bail!("ClickHouse answered {status} to {sql:?}: {}", body.trim());
        }
        Ok(body.trim_end_matches('\n').to_owned())
    }

    /// Stops the server gracefully (SIGTERM; killed after 30 s). Data stays for [`Self::restart`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the server again on the same ports and data; a no-op when it is running.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but nothing is
    /// answered, as with a server overloaded to a standstill, until [`Self::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the server is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("config.xml");
        let stdout = std::fs::File::create(self.dir.join("log/stdout.log"))?;
        let stderr = std::fs::File::create(self.dir.join("log/stderr.log"))?;
        let (program, args) = server_command();
        let child = Command::new(&program)
            .args(&args)
            .arg(format!("--config-file={}", config.display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot run {}", program.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, body)) = http(self.http_port, "GET", "/ping", b"") {
                if body.starts_with("Ok.") {
                    return Ok(());
                }
            }
            if !self.is_running() {
                bail!("clickhouse-server exited during start-up:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                let _ = self.stop();
                bail!("clickhouse-server did not answer /ping within {START_TIMEOUT:?}:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        [
            "log/stderr.log",
            "log/clickhouse-server.err.log",
            "log/clickhouse-server.log",
        ]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("--- {name}\n{tail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration template with the directory and ports filled in.
pub fn render_config(dir: &Path, http_port: u16, tcp_port: u16) -> String {
    CONFIG_TEMPLATE
        .replace("@DIR@", &dir.display().to_string())
        .replace("@HTTP_PORT@", &http_port.to_string())
        .replace("@TCP_PORT@", &tcp_port.to_string())
}

/// The server program and its leading arguments.
fn server_command() -> (PathBuf, Vec<String>) {
    if let Some(program) = std::env::var_os("EGRESS_CLICKHOUSE_SERVER") {
        return (PathBuf::from(program), Vec::new());
    }
    for candidate in ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"] {
        if Path::new(candidate).exists() {
            return (PathBuf::from(candidate), Vec::new());
        }
    }
    (PathBuf::from("clickhouse"), vec!["server".to_owned()])
}

/// Runs `start` again (at most five times) when a server failed because a port that was free a
/// moment ago was taken by someone else before the server bound it (tests run in parallel).
fn retry_on_port_race<T>(mut start: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(error) if attempt < 5 && format!("{error:#}").contains("Address already in use") => {
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; returns the status and the body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("HTTP response without a status")?;
    Ok((status, body.to_owned()))
}
