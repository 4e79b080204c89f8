//! The deployment files against the binary they deploy.
//!
//! In: the `Dockerfile`, `deploy/compose/`, `deploy/kubernetes/` (base and overlays),
//! `deploy/systemd/` and the Egress configuration files they mount, generate or install. Out:
//! failures naming the file and what disagrees. Checked without Docker, Kubernetes or systemd:
//!
//! - every YAML file under `deploy/` parses (all documents of a multi-document file);
//! - every file a kustomization, a Compose file, the Dockerfile or a unit names exists (the
//!   dashboards mounted by Compose are skipped, with a message, only while `dashboards/` does
//!   not exist at all);
//! - every Egress configuration they use loads through the binary's own loader
//!   (`egress_collector::config::Config::load`, with the `EGRESS__*` variables each service
//!   sets) and through the built binary (`egress migrate --config FILE --print-ddl`, which loads
//!   and validates the configuration without a server);
//! - every port they publish, probe or route is the port that configuration listens on (UDP
//!   listeners, the collector's metrics and health endpoint, the monitor's API), and the health
//!   endpoints they probe are served by the built binary;
//! - the Dockerfile has several stages, builds the `egress` binary, runs as a non-root user and
//!   exposes exactly the container configuration's ports;
//! - the systemd units have their sections and start `egress` subcommands and flags that the
//!   CLI accepts (checked with `egress <subcommand> --help`), with the state directory the
//!   configuration writes to and CAP_NET_RAW exactly where ICMP probes need it.
//!
//! Where `kubectl` (its built-in kustomize) or `amtool` are installed, the kustomizations are
//! also rendered and the Alertmanager configuration checked by them; otherwise that extra check
//! says it is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_collector::config::Config;
use serde_yaml_ng::Value;

/// The repository root (the `egress` package's directory).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn is_yaml(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Every document of a YAML file (separated by `---` lines), with `<<` merge keys applied.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut sources = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            sources.push(String::new());
        } else if let Some(source) = sources.last_mut() {
            source.push_str(line);
            source.push('\n');
        }
    }
    let mut documents = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        let mut value: Value = serde_yaml_ng::from_str(source).unwrap_or_else(|e| {
            panic!(
                "{} (document {}) is not valid YAML: {e}",
                path.display(),
                index + 1
            )
        });
        value
            .apply_merge()
            .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
        if !value.is_null() {
            documents.push(value);
        }
    }
    documents
}

fn yaml_one(path: &Path) -> Value {
    let mut documents = yaml_documents(path);
    assert_eq!(
        documents.len(),
        1,
        "{}: expected one YAML document",
        path.display()
    );
    documents.remove(0)
}

fn as_str(value: &Value) -> Option<&str> {
    value.as_str()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => panic!("expected a string, found {other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn port_number(value: &Value) -> Option<u16> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An Egress configuration as a service of a deployment runs it: the file and the `EGRESS__*`
/// variables (and other environment) the deployment sets for it.
#[derive(Debug, Clone)]
struct ServiceConfig {
    /// Where it comes from, for messages: `compose service monitor`.
    origin: String,
    /// `collector` or `monitor`.
    subcommand: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl ServiceConfig {
    /// Loads it the way the binary does.
    fn load(&self) -> Config {
        Config::load(Some(&self.file), self.env.clone(), &[]).unwrap_or_else(|e| {
            panic!(
                "{} ({}): the binary would refuse its configuration: {e}",
                self.origin,
                self.file.display()
            )
        })
    }
}

/// The ports a configuration listens on.
#[derive(Debug, PartialEq, Eq)]
struct Listening {
    udp: BTreeSet<u16>,
    metrics: Option<u16>,
    api: u16,
}

fn listening(config: &Config) -> Listening {
    let api: SocketAddr = config.monitor.listen.parse().expect("validated monitor.listen");
    Listening {
        udp: config.collector.listen.iter().map(SocketAddr::port).collect(),
        metrics: config.collector.metrics_listen.map(|a| a.port()),
        api: api.port(),
    }
}

/// Whether the monitor of `config` opens raw sockets (ICMP echo) or binds probes to a device:
/// both need CAP_NET_RAW.
fn needs_net_raw(config: &Config) -> bool {
    config
        .probes
        .paths
        .iter()
        .any(|p| p.icmp || p.bind_device.is_some())
}

// ---------------------------------------------------------------------------------------------
// The built binary

fn egress() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egress"))
}

/// Loads and validates `config` in the built binary: `egress migrate --print-ddl` reads the
/// configuration exactly as `collector` and `monitor` do, and needs no server.
fn binary_accepts(config: &ServiceConfig) {
    let output = egress()
        .env_clear()
        .envs(config.env.iter().cloned())
        .args(["migrate", "--print-ddl", "25.3", "--config"])
        .arg(&config.file)
        .output()
        .expect("run egress");
    assert!(
        output.status.success(),
        "{} ({}): `egress migrate --config` refuses it:\n{}",
        config.origin,
        config.file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `--help` text of `egress <subcommand>`; panics when the CLI has no such subcommand.
fn subcommand_help(subcommand: &str) -> String {
    let output = egress()
        .args([subcommand, "--help"])
        .output()
        .expect("run egress");
    assert!(
        output.status.success(),
        "`egress {subcommand} --help` failed: the CLI has no `{subcommand}` subcommand:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Checks that `args` (after the binary name) name a subcommand and flags that the CLI accepts.
fn assert_cli_accepts(origin: &str, args: &[String]) -> String {
    let subcommand = args
        .first()
        .unwrap_or_else(|| panic!("{origin}: no egress subcommand"));
    let help = subcommand_help(subcommand);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{origin}: `egress {subcommand}` has no flag {flag}"
        );
    }
    subcommand.clone()
}

/// The value of `--config` in `args`.
fn config_flag(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_owned))
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The HTTP status of `GET path` on `port`, retried until the server answers (10 s).
fn http_status(port: u16, path: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<u16> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            response
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))
        })();
        match attempt {
            Ok(status) => return status,
            Err(error) if Instant::now() > deadline => panic!("GET {path} on port {port}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Starts `egress <subcommand>` on free loopback ports with no ClickHouse; returns the process
/// and the port of its HTTP endpoint (metrics for the collector, the API for the monitor).
fn start_binary(subcommand: &str, state: &Path) -> (Running, u16) {
    let http = free_port();
    let mut command = egress();
    command.arg(subcommand);
    match subcommand {
        "collector" => {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("free UDP port");
            command
                .env(
                    "EGRESS__COLLECTOR__STATE_PATH",
                    state.join("collector-state.json"),
                )
                .args(["--sink", "null", "--listen", &udp.to_string()])
                .args(["--metrics-listen", &format!("127.0.0.1:{http}")]);
        }
        "monitor" => {
            command
                .args(["--set", &format!("monitor.listen=\"127.0.0.1:{http}\"")])
                .args([
                    "--set",
                    &format!(
                        "monitor.alert_state_path=\"{}\"",
                        state.join("alerts.json").display()
                    ),
                ]);
        }
        other => panic!("no HTTP endpoint for `egress {other}`"),
    }
    // ClickHouse is unreachable on a free port: the endpoints must answer anyway.
    let clickhouse = format!("http://127.0.0.1:{}", free_port());
    let child = command
        .args(["--clickhouse-url", &clickhouse])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start egress");
    (Running(child), http)
}

// ---------------------------------------------------------------------------------------------
// What the deploy files say

/// One container of a Kubernetes workload, with its kustomization.
#[derive(Debug)]
struct K8sContainer {
    origin: String,
    workload: String,
    pod_spec: Value,
    container: Value,
}

/// The Egress containers of the base's workloads.
fn kubernetes_containers(base: &Path) -> Vec<K8sContainer> {
    let kustomization = yaml_one(&base.join("kustomization.yaml"));
    let mut containers = Vec::new();
    for resource in strings(&kustomization["resources"]) {
        let path = base.join(&resource);
        for document in yaml_documents(&path) {
            if !matches!(
                as_str(&document["kind"]),
                Some("Deployment" | "DaemonSet" | "StatefulSet")
            ) {
                continue;
            }
            let workload = as_str(&document["metadata"]["name"])
                .expect("workload name")
                .to_owned();
            let pod_spec = document["spec"]["template"]["spec"].clone();
            for container in seq(&pod_spec["containers"]) {
                containers.push(K8sContainer {
                    origin: format!("{} {workload}", path.display()),
                    workload: workload.clone(),
                    pod_spec: pod_spec.clone(),
                    container: container.clone(),
                });
            }
        }
    }
    containers
}

/// The literal `env` of a Kubernetes container (variables from Secrets are not literal).
fn k8s_env(container: &Value) -> Vec<(String, String)> {
    seq(&container["env"])
        .iter()
        .filter_map(|e| Some((as_str(&e["name"])?.to_owned(), as_str(&e["value"])?.to_owned())))
        .collect()
}

/// The files a kustomization's `configMapGenerator` entry named `name` takes, as paths.
fn generated_files(dir: &Path, kustomization: &Value, name: &str) -> Vec<PathBuf> {
    seq(&kustomization["configMapGenerator"])
        .iter()
        .filter(|g| as_str(&g["name"]) == Some(name))
        .flat_map(|g| strings(&g["files"]))
        .map(|f| dir.join(f.split_once('=').map(|(_, p)| p.to_owned()).unwrap_or(f)))
        .collect()
}

/// Every kustomization directory under deploy/kubernetes.
fn kustomizations() -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = files_under(&repo().join("deploy/kubernetes"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    assert!(!dirs.is_empty(), "no kustomization under deploy/kubernetes");
    dirs
}

/// The base a kustomization builds on (itself for the base).
fn base_of(dir: &Path) -> PathBuf {
    let kustomization = yaml_one(&dir.join("kustomization.yaml"));
    for resource in strings(&kustomization["resources"]) {
        let path = dir.join(&resource);
        if path.join("kustomization.yaml").is_file() {
            return base_of(&path);
        }
    }
    dir.to_path_buf()
}

/// The documents of a kustomization's patches.
fn kustomization_patches(dir: &Path) -> Vec<Value> {
    let kustomization = yaml_one(&dir.join("kustomization.yaml"));
    let mut paths: Vec<String> = seq(&kustomization["patches"])
        .iter()
        .filter_map(|p| as_str(&p["path"]).map(str::to_owned))
        .collect();
    paths.extend(strings(&kustomization["patchesStrategicMerge"]));
    paths.iter().flat_map(|p| yaml_documents(&dir.join(p))).collect()
}

/// The Egress services of a kustomization: one per Egress container, with the configuration
/// it generates and each container's literal environment.
fn kubernetes_services(dir: &Path) -> Vec<(ServiceConfig, K8sContainer)> {
    let kustomization = yaml_one(&dir.join("kustomization.yaml"));
    let base = base_of(dir);
    let mut services = Vec::new();
    for container in kubernetes_containers(&base) {
        let args = strings(&container.container["args"]);
        let Some(config_path) = config_flag(&args) else {
            continue;
        };
        // The volume mounted at the directory of --config must be the generated ConfigMap.
        let mount = seq(&container.container["volumeMounts"])
            .iter()
            .find(|m| as_str(&m["mountPath"]).is_some_and(|p| Path::new(&config_path).starts_with(p)))
            .unwrap_or_else(|| panic!("{}: nothing mounted at {config_path}", container.origin));
        let volume_name = as_str(&mount["name"]).expect("mount name");
        let volume = seq(&container.pod_spec["volumes"])
            .iter()
            .find(|v| as_str(&v["name"]) == Some(volume_name))
            .unwrap_or_else(|| panic!("{}: no volume {volume_name}", container.origin));
        let config_map = as_str(&volume["configMap"]["name"])
            .unwrap_or_else(|| panic!("{}: {config_path} is not from a ConfigMap", container.origin));
        let file_name = Path::new(&config_path).file_name().expect("config file name");
        let files = generated_files(dir, &kustomization, config_map);
        let files = if files.is_empty() {
            generated_files(&base, &yaml_one(&base.join("kustomization.yaml")), config_map)
        } else {
            files
        };
        let file = files
            .into_iter()
            .find(|f| f.file_name() == Some(file_name))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no generated {config_path} in {}",
                    container.origin,
                    dir.display()
                )
            });
        services.push((
            ServiceConfig {
                origin: format!("{} ({})", container.origin, dir.display()),
                subcommand: args.first().cloned().unwrap_or_default(),
                file,
                env: k8s_env(&container.container),
            },
            container,
        ));
    }
    assert!(
        services.iter().any(|(s, _)| s.subcommand == "collector")
            && services.iter().any(|(s, _)| s.subcommand == "monitor"),
        "{}: expected a collector and a monitor",
        dir.display()
    );
    services
}

fn compose_file() -> PathBuf {
    repo().join("deploy/compose/compose.yaml")
}

/// A Compose port mapping: the container port and its protocol.
fn compose_container_port(mapping: &str) -> (u16, String) {
    let (ports, protocol) = mapping.split_once('/').unwrap_or((mapping, "tcp"));
    let container = ports.rsplit(':').next().unwrap_or(ports);
    let port = container
        .parse()
        .unwrap_or_else(|_| panic!("compose port {mapping:?}: container port is not a number"));
    (port, protocol.to_owned())
}

/// The host side of a Compose volume (`./x:/y:ro`), when it is a path rather than a named volume.
fn compose_bind(volume: &str) -> Option<(String, String)> {
    let mut parts = volume.split(':');
    let source = parts.next()?;
    let target = parts.next()?;
    (source.starts_with('.') || source.starts_with('/')).then(|| (source.to_owned(), target.to_owned()))
}

/// The literal environment of a Compose service (interpolations stay as written).
fn compose_env(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k.as_str()?.to_owned(), value))
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| {
                i.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The Egress services of the Compose file, with the configuration each mounts.
fn compose_services() -> Vec<(ServiceConfig, Value)> {
    let compose = yaml_one(&compose_file());
    let dir = repo().join("deploy/compose");
    let mut services = Vec::new();
    for (name, service) in compose["services"].as_mapping().expect("services") {
        let name = name.as_str().expect("service name");
        let args = strings(&service["command"]);
        let Some(config_path) = config_flag(&args) else {
            continue;
        };
        let source = seq(&service["volumes"])
            .iter()
            .filter_map(|v| compose_bind(v.as_str()?))
            .find(|(_, target)| *target == config_path)
            .map(|(source, _)| dir.join(source))
            .unwrap_or_else(|| panic!("compose service {name}: nothing mounted at {config_path}"));
        services.push((
            ServiceConfig {
                origin: format!("compose service {name}"),
                subcommand: args.first().cloned().unwrap_or_default(),
                file: source,
                env: compose_env(service),
            },
            service.clone(),
        ));
    }
    services
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read(&repo().join("Dockerfile"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        if let Some((keyword, rest)) = current.trim().split_once(char::is_whitespace) {
            instructions.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        }
        current.clear();
    }
    instructions
}

/// A JSON-array (exec form) instruction argument, e.g. `["egress"]`.
fn exec_form(argument: &str) -> Vec<String> {
    serde_json::from_str(argument).unwrap_or_else(|e| panic!("Dockerfile: {argument} is not exec form: {e}"))
}

/// The image's configuration: the file the Dockerfile copies to the path its CMD passes to --config.
fn image_service() -> ServiceConfig {
    let instructions = dockerfile_instructions();
    let cmd = instructions
        .iter()
        .rev()
        .find(|(k, _)| k == "CMD")
        .map(|(_, a)| exec_form(a))
        .expect("Dockerfile: CMD");
    let config_path = config_flag(&cmd).expect("Dockerfile: CMD passes --config");
    let source = instructions
        .iter()
        .filter(|(k, a)| k == "COPY" && !a.starts_with("--from"))
        .find_map(|(_, a)| {
            let parts: Vec<&str> = a.split_whitespace().collect();
            (parts.len() == 2 && parts[1] == config_path).then(|| parts[0].to_owned())
        })
        .unwrap_or_else(|| panic!("Dockerfile: nothing copied to {config_path}"));
    ServiceConfig {
        origin: "the image (Dockerfile)".to_owned(),
        subcommand: cmd.first().cloned().unwrap_or_default(),
        file: repo().join(source),
        env: Vec::new(),
    }
}

/// A parsed systemd unit: section name to its (key, value) lines in order.
type Unit = BTreeMap<String, Vec<(String, String)>>;

/// Parses a systemd unit file, failing on anything that is not a section header, a comment or
/// `Key=value`.
fn systemd_unit(path: &Path) -> Unit {
    let mut sections: Unit = BTreeMap::new();
    let mut current: Option<String> = None;
    for (number, line) in read(path).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let section = current
            .as_ref()
            .unwrap_or_else(|| panic!("{}:{}: a key before any [section]", path.display(), number + 1));
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not `Key=value`: {line}", path.display(), number + 1));
        assert!(
            !key.trim().is_empty() && key.trim().chars().all(|c| c.is_ascii_alphanumeric()),
            "{}:{}: bad key {key:?}",
            path.display(),
            number + 1
        );
        sections
            .get_mut(section)
            .expect("section")
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    sections
}

/// The values of `key` in `[section]`, in order (a key may repeat).
fn unit_values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section)
        .map(|lines| {
            lines
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// The Egress units and, for each, the repository file its header installs at the --config path.
fn systemd_services() -> Vec<(ServiceConfig, Unit)> {
    let dir = repo().join("deploy/systemd");
    let units: Vec<PathBuf> = files_under(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    assert!(
        units.len() >= 2,
        "deploy/systemd: expected the collector and monitor units"
    );
    // `install ... SOURCE DEST` lines of the units' headers: how the files get to their places.
    let mut installed: BTreeMap<String, String> = BTreeMap::new();
    for unit in &units {
        for line in read(unit).lines() {
            let Some(command) = line.trim_start_matches('#').trim().strip_prefix("install ") else {
                continue;
            };
            let command = command.split("&&").next().unwrap_or(command);
            let command = command.split('#').next().unwrap_or(command);
            let words: Vec<&str> = command
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .collect();
            let words: Vec<&str> = words.into_iter().filter(|w| w.parse::<u32>().is_err()).collect();
            if let [source, dest] = words.as_slice() {
                installed.insert((*dest).to_owned(), (*source).to_owned());
            }
        }
    }
    for (dest, source) in &installed {
        if source.starts_with('/') || source.starts_with("target/") {
            continue;
        }
        let exists = if source.contains('*') {
            let (dir_part, file_part) = source.rsplit_once('/').unwrap_or((".", source));
            files_under(&repo().join(dir_part)).iter().any(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| glob(file_part, n))
            })
        } else {
            repo().join(source).is_file()
        };
        assert!(
            exists,
            "deploy/systemd: `install {source} {dest}`: {source} does not exist"
        );
    }
    let mut services = Vec::new();
    for path in units {
        let unit = systemd_unit(&path);
        for section in ["Unit", "Service", "Install"] {
            assert!(
                unit.contains_key(section),
                "{}: no [{section}] section",
                path.display()
            );
        }
        let exec = unit_values(&unit, "Service", "ExecStart");
        assert_eq!(exec.len(), 1, "{}: one ExecStart", path.display());
        let words: Vec<String> = exec[0].split_whitespace().map(str::to_owned).collect();
        let binary = words.first().expect("ExecStart binary");
        assert!(
            Path::new(binary).file_name().is_some_and(|n| n == "egress"),
            "{}: ExecStart runs {binary}, not egress",
            path.display()
        );
        let origin = path.display().to_string();
        let subcommand = assert_cli_accepts(&origin, &words[1..]);
        let config_path = config_flag(&words).unwrap_or_else(|| panic!("{origin}: no --config"));
        let source = installed.get(&config_path).unwrap_or_else(|| {
            panic!("{origin}: no `install SOURCE {config_path}` line says what goes there")
        });
        assert!(
            !source.starts_with('/'),
            "{origin}: {config_path} is installed from {source}, not from the repository"
        );
        let env = unit_values(&unit, "Service", "Environment")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        services.push((
            ServiceConfig {
                origin,
                subcommand,
                file: repo().join(source),
                env,
            },
            unit,
        ));
    }
    services
}

/// Every Egress service of every deployment variant.
fn every_service() -> Vec<ServiceConfig> {
    let mut services = vec![image_service()];
    services.extend(compose_services().into_iter().map(|(s, _)| s));
    for dir in kustomizations() {
        services.extend(kubernetes_services(&dir).into_iter().map(|(s, _)| s));
    }
    services.extend(systemd_services().into_iter().map(|(s, _)| s));
    services
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files: Vec<PathBuf> = files_under(&repo().join("deploy"))
        .into_iter()
        .filter(|p| is_yaml(p))
        .collect();
    assert!(
        files.len() >= 8,
        "expected the compose and kubernetes files, found {files:?}"
    );
    for file in &files {
        let documents = yaml_documents(file);
        assert!(!documents.is_empty(), "{}: no YAML document", file.display());
        for document in &documents {
            assert!(
                document.is_mapping(),
                "{}: a document is not a mapping",
                file.display()
            );
        }
    }
}

#[test]
fn every_deployment_configuration_is_accepted_by_the_binary() {
    let services = every_service();
    let files: BTreeSet<&Path> = services.iter().map(|s| s.file.as_path()).collect();
    assert!(
        files.len() >= 4,
        "expected container, compose, kubernetes and systemd configs: {files:?}"
    );
    for service in &services {
        assert!(
            matches!(service.subcommand.as_str(), "collector" | "monitor"),
            "{}: runs `egress {}`",
            service.origin,
            service.subcommand
        );
        let config = service.load();
        binary_accepts(service);
        if service.subcommand == "monitor" {
            // The state directory must be absolute: the deployments mount a volume there.
            assert!(
                Path::new(&config.monitor.alert_state_path).is_absolute(),
                "{}: monitor.alert_state_path {:?} is relative",
                service.origin,
                config.monitor.alert_state_path
            );
        }
    }
    // Beside the collector, a monitor waits for the collector's migrations instead of racing them.
    for service in services.iter().filter(|s| s.subcommand == "monitor") {
        if service.origin.starts_with("the image") {
            continue;
        }
        assert!(
            !service.load().collector.migrate_on_start,
            "{}: the monitor should leave migrations to the collector (EGRESS__COLLECTOR__MIGRATE_ON_START=false)",
            service.origin
        );
    }
}

#[test]
fn kustomizations_name_files_that_exist() {
    for dir in kustomizations() {
        let kustomization = yaml_one(&dir.join("kustomization.yaml"));
        let resources = strings(&kustomization["resources"]);
        assert!(!resources.is_empty(), "{}: no resources", dir.display());
        for resource in resources {
            let path = dir.join(&resource);
            assert!(
                path.is_file() || path.join("kustomization.yaml").is_file(),
                "{}: resource {resource} does not exist",
                dir.display()
            );
        }
        for generator in seq(&kustomization["configMapGenerator"]) {
            for file in strings(&generator["files"]) {
                let file = file.split_once('=').map(|(_, p)| p.to_owned()).unwrap_or(file);
                assert!(
                    dir.join(&file).is_file(),
                    "{}: generator file {file} missing",
                    dir.display()
                );
            }
        }
        let mut patches: Vec<String> = seq(&kustomization["patches"])
            .iter()
            .filter_map(|p| as_str(&p["path"]).map(str::to_owned))
            .collect();
        patches.extend(strings(&kustomization["patchesStrategicMerge"]));
        for patch in patches {
            assert!(
                dir.join(&patch).is_file(),
                "{}: patch {patch} missing",
                dir.display()
            );
        }
        render_with_kubectl(&dir);
    }
}

/// Renders a kustomization with `kubectl kustomize` where kubectl is installed.
fn render_with_kubectl(dir: &Path) {
    match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => assert!(
            output.status.success(),
            "kubectl kustomize {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!(
            "kubectl not installed: {} not rendered (file checks done)",
            dir.display()
        ),
    }
}

#[test]
fn kubernetes_ports_probes_and_security_match_the_configuration() {
    for dir in kustomizations() {
        let patches = kustomization_patches(&dir);
        for (service, k8s) in kubernetes_services(&dir) {
            let origin = &service.origin;
            let config = service.load();
            let listening = listening(&config);
            let container = &k8s.container;
            let args = strings(&container["args"]);
            assert_cli_accepts(origin, &args);
            let ports: Vec<(String, u16, String)> = seq(&container["ports"])
                .iter()
                .map(|p| {
                    (
                        as_str(&p["name"]).unwrap_or_default().to_owned(),
                        port_number(&p["containerPort"]).expect("containerPort"),
                        as_str(&p["protocol"]).unwrap_or("TCP").to_owned(),
                    )
                })
                .collect();
            let udp: BTreeSet<u16> = ports.iter().filter(|p| p.2 == "UDP").map(|p| p.1).collect();
            let tcp: BTreeSet<u16> = ports.iter().filter(|p| p.2 == "TCP").map(|p| p.1).collect();
            let expected_tcp: BTreeSet<u16> = match service.subcommand.as_str() {
                "collector" => {
                    assert_eq!(
                        udp, listening.udp,
                        "{origin}: UDP container ports vs collector.listen"
                    );
                    listening.metrics.into_iter().collect()
                }
                _ => {
                    assert!(udp.is_empty(), "{origin}: the monitor receives no UDP");
                    BTreeSet::from([listening.api])
                }
            };
            assert_eq!(
                tcp, expected_tcp,
                "{origin}: TCP container ports vs the configuration"
            );
            let resolve = |port: &Value| -> u16 {
                match port {
                    Value::String(name) if name.parse::<u16>().is_err() => ports
                        .iter()
                        .find(|p| &p.0 == name)
                        .map(|p| p.1)
                        .unwrap_or_else(|| panic!("{origin}: no container port named {name}")),
                    other => port_number(other).expect("port"),
                }
            };
            for probe in ["livenessProbe", "readinessProbe"] {
                let get = &container[probe]["httpGet"];
                assert!(get.is_mapping(), "{origin}: no {probe}.httpGet");
                let port = resolve(&get["port"]);
                assert!(
                    expected_tcp.contains(&port),
                    "{origin}: {probe} on port {port}, not an HTTP port of the configuration"
                );
                let path = as_str(&get["path"]).expect("probe path");
                assert!(
                    served_health_paths(&service.subcommand).contains(&path),
                    "{origin}: {probe} asks {path}, which `egress {}` does not serve",
                    service.subcommand
                );
            }
            for key in ["requests", "limits"] {
                assert!(
                    container["resources"][key].is_mapping(),
                    "{origin}: no resources.{key}"
                );
            }
            // Non-root, read-only, no capabilities except NET_RAW for a monitor whose probes need it.
            let pod = &k8s.pod_spec["securityContext"];
            let security = &container["securityContext"];
            assert_eq!(
                pod["runAsNonRoot"].as_bool(),
                Some(true),
                "{origin}: runAsNonRoot"
            );
            assert_eq!(
                port_number(&pod["runAsUser"]),
                Some(10001),
                "{origin}: runAsUser 10001"
            );
            assert_eq!(
                security["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{origin}: read-only root"
            );
            assert_eq!(
                strings(&security["capabilities"]["drop"]),
                ["ALL"],
                "{origin}: drop ALL capabilities"
            );
            let net_raw_patch = patches.iter().any(|p| {
                as_str(&p["metadata"]["name"]) == Some(k8s.workload.as_str())
                    && seq(&p["spec"]["template"]["spec"]["containers"]).iter().any(|c| {
                        strings(&c["securityContext"]["capabilities"]["add"]).contains(&"NET_RAW".to_owned())
                            && strings(&c["command"]).first().map(String::as_str) == Some("egress-netraw")
                    })
            });
            let base_adds = strings(&security["capabilities"]["add"]);
            assert!(
                base_adds.is_empty(),
                "{origin}: the base adds capabilities {base_adds:?}"
            );
            if service.subcommand == "monitor" {
                assert_eq!(
                    net_raw_patch,
                    needs_net_raw(&config),
                    "{origin}: NET_RAW (through egress-netraw) exactly when [probes] uses ICMP or bind_device"
                );
                // The alert state is on a writable volume, not on the read-only root.
                let state_dir = Path::new(&config.monitor.alert_state_path)
                    .parent()
                    .expect("state dir");
                let mount = seq(&container["volumeMounts"])
                    .iter()
                    .find(|m| as_str(&m["mountPath"]).is_some_and(|p| state_dir.starts_with(p)))
                    .unwrap_or_else(|| panic!("{origin}: no volume at {}", state_dir.display()));
                assert_ne!(
                    mount["readOnly"].as_bool(),
                    Some(true),
                    "{origin}: state volume read-only"
                );
                let volume = seq(&k8s.pod_spec["volumes"])
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .expect("state volume");
                assert!(
                    volume["persistentVolumeClaim"].is_mapping() || volume["emptyDir"].is_mapping(),
                    "{origin}: the state volume is neither a PVC nor an emptyDir"
                );
            } else {
                assert!(!net_raw_patch, "{origin}: the collector needs no NET_RAW");
            }
        }
        kubernetes_services_route_to_container_ports(&dir);
    }
}

/// Services' target ports name ports of the containers they select, with the same protocol.
fn kubernetes_services_route_to_container_ports(dir: &Path) {
    let base = base_of(dir);
    let containers = kubernetes_containers(&base);
    let kustomization = yaml_one(&base.join("kustomization.yaml"));
    let mut checked = 0;
    for resource in strings(&kustomization["resources"]) {
        for document in yaml_documents(&base.join(&resource)) {
            if as_str(&document["kind"]) != Some("Service") {
                continue;
            }
            let name = as_str(&document["metadata"]["name"]).unwrap_or_default();
            let selector = document["spec"]["selector"]
                .as_mapping()
                .expect("Service selector");
            let selected: Vec<&K8sContainer> = containers
                .iter()
                .filter(|c| {
                    selector.iter().all(|(k, v)| {
                        workload_labels(&base, &c.workload)
                            .get(k.as_str().unwrap_or_default())
                            .is_some_and(|l| Some(l.as_str()) == v.as_str())
                    })
                })
                .collect();
            assert!(
                !selected.is_empty(),
                "{}: Service {name} selects no workload",
                base.display()
            );
            for port in seq(&document["spec"]["ports"]) {
                let protocol = as_str(&port["protocol"]).unwrap_or("TCP");
                let target = &port["targetPort"];
                let found = selected.iter().any(|c| {
                    seq(&c.container["ports"]).iter().any(|p| {
                        as_str(&p["protocol"]).unwrap_or("TCP") == protocol
                            && match target {
                                Value::String(t) => as_str(&p["name"]) == Some(t.as_str()),
                                other => port_number(&p["containerPort"]) == port_number(other),
                            }
                    })
                });
                assert!(
                    found,
                    "{}: Service {name} port {:?} targets {target:?}/{protocol}, which no selected container has",
                    base.display(),
                    port["name"]
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 5,
        "{}: expected the UDP, metrics and API Service ports",
        base.display()
    );
}

/// The pod template labels of a workload.
fn workload_labels(base: &Path, workload: &str) -> BTreeMap<String, String> {
    let kustomization = yaml_one(&base.join("kustomization.yaml"));
    for resource in strings(&kustomization["resources"]) {
        for document in yaml_documents(&base.join(&resource)) {
            if as_str(&document["metadata"]["name"]) == Some(workload)
                && document["spec"]["template"].is_mapping()
            {
                return document["spec"]["template"]["metadata"]["labels"]
                    .as_mapping()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
    }
    BTreeMap::new()
}

/// The health paths `egress <subcommand>` serves, as the deploy files may probe them.
fn served_health_paths(subcommand: &str) -> &'static [&'static str] {
    match subcommand {
        "collector" => &["/health", "/metrics"],
        "monitor" => &["/health", "/ready", "/metrics"],
        _ => &[],
    }
}

#[test]
fn the_probed_health_endpoints_are_served_by_the_binary() {
    let state = tempfile::tempdir().expect("tempdir");
    for subcommand in ["collector", "monitor"] {
        let (_process, port) = start_binary(subcommand, state.path());
        assert_eq!(
            http_status(port, "/health"),
            200,
            "egress {subcommand}: GET /health"
        );
        for path in served_health_paths(subcommand) {
            let status = http_status(port, path);
            // /ready answers 503 here (no ClickHouse): served, but not ready.
            assert!(
                status == 200 || (*path == "/ready" && status == 503),
                "egress {subcommand}: GET {path} answered {status}"
            );
        }
        assert_eq!(
            http_status(port, "/no-such-endpoint"),
            404,
            "egress {subcommand}: a 404 is a 404"
        );
    }
}

#[test]
fn compose_ports_healthchecks_and_mounts_match_the_configuration() {
    let compose = yaml_one(&compose_file());
    let dir = repo().join("deploy/compose");
    let services = compose_services();
    assert!(
        services.iter().any(|(s, _)| s.subcommand == "collector")
            && services.iter().any(|(s, _)| s.subcommand == "monitor"),
        "compose: expected a collector and a monitor"
    );
    for (service, definition) in &services {
        let origin = &service.origin;
        assert_cli_accepts(origin, &strings(&definition["command"]));
        let config = service.load();
        let listening = listening(&config);
        let published: Vec<(u16, String)> = strings(&definition["ports"])
            .iter()
            .map(|p| compose_container_port(p))
            .collect();
        let udp: BTreeSet<u16> = published.iter().filter(|p| p.1 == "udp").map(|p| p.0).collect();
        let tcp: BTreeSet<u16> = published.iter().filter(|p| p.1 == "tcp").map(|p| p.0).collect();
        let http_port = if service.subcommand == "collector" {
            assert_eq!(
                udp, listening.udp,
                "{origin}: published UDP ports vs collector.listen"
            );
            listening
                .metrics
                .expect("collector.metrics_listen (the healthcheck needs it)")
        } else {
            assert!(udp.is_empty(), "{origin}: the monitor receives no UDP");
            listening.api
        };
        assert_eq!(
            tcp,
            BTreeSet::from([http_port]),
            "{origin}: published TCP ports vs the configuration"
        );
        let healthcheck = strings(&definition["healthcheck"]["test"]).join(" ");
        let expected = format!("/dev/tcp/127.0.0.1/{http_port}");
        assert!(
            healthcheck.contains(&expected),
            "{origin}: healthcheck {healthcheck:?} does not ask port {http_port}"
        );
        assert!(
            healthcheck.contains("GET /health "),
            "{origin}: healthcheck does not ask /health"
        );
        assert_eq!(
            definition["user"].as_str(),
            Some("10001:10001"),
            "{origin}: runs as the image's user"
        );
        assert_eq!(
            definition["read_only"].as_bool(),
            Some(true),
            "{origin}: read-only root"
        );
        if service.subcommand == "monitor" {
            let state_dir = Path::new(&config.monitor.alert_state_path)
                .parent()
                .expect("state dir");
            assert!(
                strings(&definition["volumes"]).iter().any(|v| v
                    .split(':')
                    .nth(1)
                    .is_some_and(|t| Path::new(t) == state_dir)
                    && !v.ends_with(":ro")),
                "{origin}: no writable volume at {}",
                state_dir.display()
            );
            assert_eq!(
                needs_net_raw(&config),
                strings(&definition["cap_add"]).contains(&"NET_RAW".to_owned()),
                "{origin}: NET_RAW exactly when [probes] uses ICMP or bind_device"
            );
        }
        // Every service the configuration talks to is in the Compose file, on that port.
        let mut peers = vec![config.clickhouse.url.clone()];
        if service.subcommand == "monitor" {
            peers.extend(config.alerting.receivers.iter().filter_map(|r| r.url.clone()));
        }
        for url in peers {
            let authority = url
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .expect("url authority");
            let (host, port) = authority.rsplit_once(':').expect("url port");
            let peer = &compose["services"][host];
            assert!(peer.is_mapping(), "{origin}: {url}: no compose service {host}");
            let probe = strings(&peer["healthcheck"]["test"]).join(" ");
            assert!(
                probe.contains(&format!(":{port}/")),
                "{origin}: {url}: service {host} is not checked on port {port}"
            );
            assert_eq!(
                as_str(&definition["depends_on"][host]["condition"]),
                Some("service_healthy"),
                "{origin}: does not wait for {host} to be healthy"
            );
        }
    }
    // Every bind-mounted path exists; the dashboards only once dashboards/ exists.
    let dashboards = repo().join("dashboards");
    for (name, service) in compose["services"].as_mapping().expect("services") {
        for volume in strings(&service["volumes"]) {
            let Some((source, _)) = compose_bind(&volume) else {
                continue;
            };
            let path = dir.join(&source);
            let normalised = normalise(&path);
            if normalised.starts_with(&dashboards) && !dashboards.exists() {
                eprintln!("dashboards/ does not exist yet: compose mount {source} not checked");
                continue;
            }
            assert!(
                path.exists(),
                "compose service {name:?}: mounted {source} does not exist"
            );
        }
    }
    let build = &compose["x-egress"]["build"];
    let context = dir.join(as_str(&build["context"]).expect("build context"));
    assert!(
        context
            .join(as_str(&build["dockerfile"]).expect("dockerfile"))
            .is_file(),
        "compose: Dockerfile"
    );
    assert_eq!(
        normalise(&context),
        repo(),
        "compose: the build context is the repository"
    );
}

#[test]
fn compose_grafana_provisions_the_egress_dashboards() {
    let compose = yaml_one(&compose_file());
    let grafana = &compose["services"]["grafana"];
    let env: BTreeMap<String, String> = compose_env(grafana).into_iter().collect();
    assert_eq!(
        env.get("GF_INSTALL_PLUGINS").map(String::as_str),
        Some("grafana-clickhouse-datasource")
    );
    let mounts: BTreeSet<(String, String)> = strings(&grafana["volumes"])
        .iter()
        .filter_map(|v| compose_bind(v))
        .collect();
    for (source, target) in [
        (
            "../../dashboards/provisioning/datasources",
            "/etc/grafana/provisioning/datasources",
        ),
        (
            "../../dashboards/provisioning/dashboards",
            "/etc/grafana/provisioning/dashboards",
        ),
        ("../../dashboards", "/var/lib/grafana/dashboards/egress"),
    ] {
        assert!(
            mounts.contains(&(source.to_owned(), target.to_owned())),
            "grafana: mount {source} -> {target}"
        );
    }
    // The datasource reaches the `clickhouse` service on the port of its protocol.
    assert_eq!(
        env.get("EGRESS_CLICKHOUSE_HOST").map(String::as_str),
        Some("clickhouse")
    );
    for name in [
        "EGRESS_CLICKHOUSE_PORT",
        "EGRESS_CLICKHOUSE_USER",
        "EGRESS_CLICKHOUSE_PASSWORD",
    ] {
        assert!(env.contains_key(name), "grafana: {name} not set");
    }
    let collector = compose_services()
        .into_iter()
        .find(|(s, _)| s.subcommand == "collector")
        .expect("collector")
        .0
        .load();
    assert_eq!(
        env.get("EGRESS_CLICKHOUSE_USER"),
        Some(&collector.clickhouse.user),
        "grafana and egress use the same ClickHouse user"
    );
    let datasources = repo().join("dashboards/provisioning/datasources");
    if !datasources.exists() {
        eprintln!("dashboards/provisioning/datasources does not exist yet: datasource variables not checked");
        return;
    }
    let mut uid_found = false;
    for file in files_under(&datasources).into_iter().filter(|p| is_yaml(p)) {
        let text = read(&file);
        uid_found |= text.contains("egress-clickhouse");
        // Every EGRESS_* variable the datasource reads is set for Grafana.
        for part in text.split('$').skip(1) {
            let name: String = part
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with("EGRESS_") {
                assert!(
                    env.contains_key(&name),
                    "{}: reads {name}, which compose does not set",
                    file.display()
                );
            }
        }
        for document in yaml_documents(&file) {
            for source in seq(&document["datasources"]) {
                let expected = match as_str(&source["jsonData"]["protocol"]) {
                    Some("http") => "8123",
                    Some("native") => "9000",
                    _ => continue,
                };
                assert_eq!(
                    env.get("EGRESS_CLICKHOUSE_PORT").map(String::as_str),
                    Some(expected),
                    "{}: protocol {:?} needs that port",
                    file.display(),
                    source["jsonData"]["protocol"]
                );
            }
        }
    }
    assert!(uid_found, "no provisioned datasource with uid egress-clickhouse");
}

#[test]
fn compose_alertmanager_configuration_is_valid() {
    let path = repo().join("deploy/compose/alertmanager.yml");
    let config = yaml_one(&path);
    assert!(
        config["route"]["receiver"].is_string(),
        "alertmanager.yml: route.receiver"
    );
    let receivers: BTreeSet<&str> = seq(&config["receivers"])
        .iter()
        .filter_map(|r| as_str(&r["name"]))
        .collect();
    assert!(receivers.contains(config["route"]["receiver"].as_str().unwrap_or_default()));
    match Command::new("amtool").arg("check-config").arg(&path).output() {
        Ok(output) => assert!(
            output.status.success(),
            "amtool check-config:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!("amtool not installed: alertmanager.yml checked as YAML only"),
    }
}

/// `path` with `..` and `.` resolved lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn dockerfile_builds_egress_in_stages_and_runs_it_as_non_root() {
    let instructions = dockerfile_instructions();
    let stages: Vec<&String> = instructions
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert!(
        stages.len() >= 2,
        "Dockerfile: a multi-stage build, found {stages:?}"
    );
    assert!(
        stages[0].starts_with("rust:"),
        "Dockerfile: the builder is a rust image"
    );
    assert!(
        stages
            .last()
            .is_some_and(|s| s.starts_with("debian:") && s.contains("slim")),
        "Dockerfile: the runtime is a slim Debian"
    );
    let runs: Vec<&String> = instructions
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, a)| a)
        .collect();
    assert!(
        runs.iter().any(|r| r.contains("cargo build")
            && r.contains("--release")
            && r.contains("-p egress")
            && r.contains("--locked")),
        "Dockerfile: no `cargo build --release --locked -p egress`"
    );
    let last_stage = instructions.iter().rposition(|(k, _)| k == "FROM").expect("FROM");
    let runtime = &instructions[last_stage..];
    assert!(
        runtime.iter().any(|(k, a)| k == "COPY"
            && a.starts_with("--from=builder")
            && a.ends_with("/usr/local/bin/egress")),
        "Dockerfile: the runtime stage copies the built egress to /usr/local/bin/egress"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .expect("Dockerfile: USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid != "0" && uid != "root", "Dockerfile: USER {user} is root");
    assert_eq!(uid, "10001", "Dockerfile: the documented uid");
    let entrypoint = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| exec_form(a));
    assert_eq!(
        entrypoint,
        Some(vec!["egress".to_owned()]),
        "Dockerfile: ENTRYPOINT [\"egress\"]"
    );
    let cmd: Vec<String> = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "CMD")
        .map(|(_, a)| exec_form(a))
        .expect("CMD");
    assert_cli_accepts("Dockerfile CMD", &cmd);
    // Every file the build copies from the context exists and is not excluded by .dockerignore.
    let ignore = read(&repo().join(".dockerignore"));
    for (_, argument) in instructions
        .iter()
        .filter(|(k, a)| k == "COPY" && !a.starts_with("--from"))
    {
        let parts: Vec<&str> = argument.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "Dockerfile: COPY {source}: no such file"
            );
            assert!(
                !docker_ignores(&ignore, source),
                "Dockerfile: COPY {source} is excluded by .dockerignore"
            );
        }
    }
    // EXPOSE is what the image's configuration listens on.
    let exposed: BTreeSet<String> = runtime
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|p| if p.contains('/') { p } else { format!("{p}/tcp") })
        .collect();
    let image = image_service();
    let config = image.load();
    let listening = listening(&config);
    let mut expected: BTreeSet<String> = listening.udp.iter().map(|p| format!("{p}/udp")).collect();
    expected.extend(listening.metrics.map(|p| format!("{p}/tcp")));
    expected.insert(format!("{}/tcp", listening.api));
    assert_eq!(
        exposed,
        expected,
        "Dockerfile: EXPOSE vs {}",
        image.file.display()
    );
    for address in config
        .collector
        .listen
        .iter()
        .chain(config.collector.metrics_listen.iter())
    {
        assert!(
            address.ip().is_unspecified(),
            "{}: {address} is unreachable from outside a container",
            image.file.display()
        );
    }
    let api: SocketAddr = config.monitor.listen.parse().expect("monitor.listen");
    assert!(
        api.ip().is_unspecified(),
        "{}: monitor.listen {api} is unreachable from outside",
        image.file.display()
    );
    assert!(
        config.monitor.alert_state_path.starts_with("/var/lib/egress/"),
        "{}: the alert state belongs in the image's state directory",
        image.file.display()
    );
}

/// Whether `.dockerignore` (top-level patterns and `!` exceptions, last match wins) excludes `path`.
fn docker_ignores(ignore: &str, path: &str) -> bool {
    let mut excluded = false;
    for line in ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        if docker_pattern_matches(pattern, path) {
            excluded = !negated;
        }
    }
    excluded
}

/// A `.dockerignore` pattern against a path or one of its parents (`*` within one component,
/// `**` across components).
fn docker_pattern_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    (1..=path.len()).any(|n| components_match(&pattern, &path[..n]))
}

fn components_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            components_match(&pattern[1..], path)
                || (!path.is_empty() && components_match(pattern, &path[1..]))
        }
        (Some(p), Some(c)) => glob(p, c) && components_match(&pattern[1..], &path[1..]),
        _ => false,
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            text.starts_with(prefix)
                && (0..=text.len() - prefix.len()).any(|i| glob(rest, &text[prefix.len() + i..]))
        }
    }
}

#[test]
fn dockerignore_patterns_behave_as_docker_reads_them() {
    let ignore = "target*\ndeploy/*\n!deploy/container\ntests/*\n!tests/testkit\n";
    assert!(docker_ignores(ignore, "target-deploy/x"));
    assert!(docker_ignores(ignore, "deploy/compose/compose.yaml"));
    assert!(!docker_ignores(ignore, "deploy/container/egress.toml"));
    assert!(docker_ignores(ignore, "tests/deploy.rs"));
    assert!(!docker_ignores(ignore, "tests/testkit/Cargo.toml"));
    assert!(!docker_ignores(ignore, "collector/src"));
}

#[test]
fn systemd_units_run_egress_with_the_state_and_capabilities_they_need() {
    let services = systemd_services();
    let subcommands: BTreeSet<&str> = services.iter().map(|(s, _)| s.subcommand.as_str()).collect();
    assert_eq!(
        subcommands,
        BTreeSet::from(["collector", "monitor"]),
        "deploy/systemd: one unit per service"
    );
    for (service, unit) in &services {
        let origin = &service.origin;
        let config = service.load();
        let state = unit_values(unit, "Service", "StateDirectory");
        assert_eq!(state.len(), 1, "{origin}: StateDirectory");
        let state_dir = Path::new("/var/lib").join(state[0]);
        for key in ["ProtectSystem", "NoNewPrivileges", "User"] {
            assert!(
                !unit_values(unit, "Service", key).is_empty(),
                "{origin}: no {key}="
            );
        }
        assert_eq!(
            unit_values(unit, "Service", "ProtectSystem"),
            ["strict"],
            "{origin}: ProtectSystem=strict"
        );
        assert!(
            unit_values(unit, "Service", "EnvironmentFile")
                .iter()
                .any(|f| f.contains("/etc/egress/")),
            "{origin}: secrets come from an EnvironmentFile under /etc/egress"
        );
        let ambient: Vec<&str> = unit_values(unit, "Service", "AmbientCapabilities")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .collect();
        if service.subcommand == "monitor" {
            assert!(
                Path::new(&config.monitor.alert_state_path).starts_with(&state_dir),
                "{origin}: monitor.alert_state_path {} is outside StateDirectory {} (read-only under ProtectSystem=strict)",
                config.monitor.alert_state_path,
                state_dir.display()
            );
            assert_eq!(
                ambient.contains(&"CAP_NET_RAW"),
                needs_net_raw(&config),
                "{origin}: CAP_NET_RAW exactly when [probes] of {} uses ICMP or bind_device",
                service.file.display()
            );
            assert!(
                !config.collector.migrate_on_start,
                "{origin}: the monitor leaves migrations to the collector"
            );
        } else {
            assert!(
                ambient.is_empty(),
                "{origin}: the collector needs no capability, has {ambient:?}"
            );
            let privileged: Vec<u16> = config
                .collector
                .listen
                .iter()
                .chain(config.collector.metrics_listen.iter())
                .map(SocketAddr::port)
                .filter(|p| *p < 1024)
                .collect();
            assert!(
                privileged.is_empty(),
                "{origin}: ports {privileged:?} need CAP_NET_BIND_SERVICE"
            );
        }
    }
    let sysusers = read(&repo().join("deploy/systemd/egress.sysusers"));
    for (service, unit) in &services {
        let user = unit_values(unit, "Service", "User");
        assert!(
            sysusers
                .lines()
                .any(|l| l.split_whitespace().take(2).eq(["u", user[0]])),
            "{}: User={} is not created by egress.sysusers",
            service.origin,
            user[0]
        );
    }
}

#[test]
fn deploy_readme_documents_every_section_key_and_links_files_that_exist() {
    let path = repo().join("deploy/README.md");
    let readme = read(&path);
    // Every key of every section, as the binary serialises its defaults.
    let defaults = serde_json::to_value(Config::default()).expect("config as JSON");
    let sections = defaults.as_object().expect("sections");
    let mut keys = 0;
    for (section, value) in sections {
        assert!(readme.contains(&format!("`[{section}]`")) || readme.contains(&format!("`[[{section}]]`")));
        for key in value
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                readme.contains(&format!("`{key}`"))
                    || readme.contains(&format!("`{key}[]"))
                    || readme.contains(&format!("`{section}.{key}`")),
                "deploy/README.md does not document {section}.{key}"
            );
            keys += 1;
        }
    }
    assert!(keys >= 30, "expected the keys of every section, found {keys}");
    // Relative links name files of the repository (the dashboards once they exist).
    let dashboards = repo().join("dashboards");
    for link in readme
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
    {
        if link.contains("://") || link.starts_with('#') {
            continue;
        }
        let target = normalise(&repo().join("deploy").join(link.split('#').next().unwrap_or(link)));
        if target.starts_with(&dashboards) && !dashboards.exists() {
            eprintln!("dashboards/ does not exist yet: link {link} not checked");
            continue;
        }
        assert!(
            target.exists(),
            "deploy/README.md links {link}, which does not exist"
        );
    }
}
