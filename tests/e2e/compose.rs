//! `docker-compose.yml`'s contract, without a Docker engine: every service of the file runs its own
//! command with its own environment as a local process, the AWS emulator's service is a moto on a
//! free port, and the demo files reach their terminal states. The file is read here, not copied, so
//! the two cannot drift: a service added, a variable renamed or a command changed is what runs.

use crate::helpers::{assert_demo_outcome, ok, venv_bin};
use choreo::demo;
use choreo_aws::moto::Moto;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// docker-compose.yml as JSON: anchors and merge keys resolved by PyYAML (it comes with the aws
/// command line in .venv).
fn compose_file() -> Value {
    yaml_file(&repo().join("docker-compose.yml"))
}

fn yaml_file(path: &Path) -> Value {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python from .venv (scripts/test installs it)");
    serde_json::from_str(&ok(out)).unwrap()
}

/// Where the service binaries the compose file runs are: beside `choreo`. The workspace's test
/// build makes only `choreo`; `scripts/test` builds them first (`cargo build --workspace --bins`).
fn binaries() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_choreo")).parent().unwrap();
    for stage in [
        "ingestor",
        "validator",
        "quarantine",
        "crawler",
        "transformer",
        "auditor",
    ] {
        let bin = dir.join(format!("choreo-{stage}"));
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test, or cargo build --workspace --bins first",
            bin.display()
        );
    }
    dir.to_path_buf()
}

/// A value as compose reads it: `${NAME:-default}` is the shell's `NAME`, else `default` (the one
/// form of interpolation the file uses).
fn interpolate(value: &str) -> String {
    match value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
    {
        Some((name, default)) => std::env::var(name).unwrap_or_else(|_| default.to_string()),
        None => value.to_string(),
    }
}

/// A service's environment: its `environment` map (or list of `K=V`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => interpolate(s),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The host path behind a container path, from the service's `volumes` (`./host:/container[:ro]`).
fn host_path(service: &Value, path: &str) -> Option<PathBuf> {
    service["volumes"].as_array()?.iter().find_map(|v| {
        let mut parts = v.as_str()?.split(':');
        let (host, container) = (parts.next()?, parts.next()?);
        let rest = path.strip_prefix(container)?.trim_start_matches('/');
        // A file mounted as itself has no rest: joining "" would add a trailing slash.
        let host = repo().join(host);
        Some(if rest.is_empty() {
            host
        } else {
            host.join(rest)
        })
    })
}

struct Running(Vec<(String, Child)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM, as `docker compose stop` and ECS do, and requires an exit with code 0 within
/// 60 s: the service drained and stopped.
pub fn stop_cleanly(name: &str, child: &mut Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{name} ignored SIGTERM for 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{name} exited with {status}");
}

#[test]
fn the_compose_services_run_the_demo_as_local_processes() {
    let compose = compose_file();
    let services = compose["services"].as_object().expect("services");
    let bin = binaries();
    let moto = Moto::start();

    // The emulator's service, and the address the others reach it by.
    let (emulator, spec) = services
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("motoserver/moto"))
        })
        .expect("an emulator service running moto's image");
    let port = spec["ports"][0]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let address = format!("http://{emulator}:{port}");

    // The auditor's API on a free port of this machine instead of the container's 8080, and each
    // service's ops endpoint on one of its own instead of every container's 9464.
    let free_port = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
            .to_string()
    };
    let api_port = free_port();
    let ops_ports: BTreeMap<&str, String> = services
        .keys()
        .map(|name| (name.as_str(), free_port()))
        .collect();

    // How a compose service becomes a process here: its command from `bin`, its environment with
    // the emulator's address and the container's paths replaced by this machine's.
    let work = tempfile::tempdir().unwrap();
    let with_environment = |name: &str, service: &Value, program: &str| -> Command {
        let mut cmd = Command::new(bin.join(program));
        cmd.current_dir(work.path()).env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (key, value) in environment(service) {
            let value = if value.starts_with('/') {
                host_path(service, &value)
                    .unwrap_or_else(|| panic!("{name}: {key}={value} is in no volume"))
                    .display()
                    .to_string()
            } else {
                value
                    .replace(&address, &moto.endpoint)
                    .replace("0.0.0.0:8080", &format!("127.0.0.1:{api_port}"))
                    .replace("0.0.0.0:9464", &format!("127.0.0.1:{}", ops_ports[name]))
            };
            cmd.env(key, value);
        }
        cmd.env("RUST_LOG", "warn");
        cmd
    };
    let process = |name: &str, service: &Value| -> Command {
        let command: Vec<&str> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: a command in exec form"))
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let mut cmd = with_environment(name, service, command[0]);
        cmd.args(&command[1..]);
        cmd
    };
    // The command line as `docker compose run bootstrap choreo ARGS` would run it.
    let cli = |args: &[&str]| -> Command {
        let mut cmd = with_environment("bootstrap", &services["bootstrap"], "choreo");
        cmd.args(args);
        cmd
    };

    // The one-shot bootstrap first (the services depend on its success), then every long-running
    // service that runs a Choreo binary.
    let bootstrap = &services["bootstrap"];
    let out = process("bootstrap", bootstrap).output().unwrap();
    let stdout = ok(out);
    assert!(stdout.contains("queues"), "{stdout}");
    let mut running = Running(Vec::new());
    for (name, service) in services {
        let runs_choreo = service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("choreo"));
        let long_running = service["restart"].as_str() != Some("no");
        if runs_choreo && long_running {
            let child = process(name, service)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            running.0.push((name.clone(), child));
        }
    }
    let started: Vec<&str> = running.0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        started,
        [
            "auditor",
            "crawler",
            "ingestor",
            "quarantine",
            "transformer",
            "validator"
        ],
        "one service per stage"
    );

    // The demo's files, uploaded as a user would, with the bootstrap's environment.
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in demo::samples().iter().enumerate() {
        let file = dir.path().join(format!("sample-{i}"));
        std::fs::write(&file, &s.body).unwrap();
        ok(cli(&["put", "--key", &s.key]).arg(&file).output().unwrap());
    }
    let files = || {
        let out = cli(&["files", "list", "--json"]).output().unwrap();
        let records: Vec<choreo_domain::FileRecord> = serde_json::from_str(&ok(out)).unwrap();
        records
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect::<BTreeMap<_, _>>()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let records = loop {
        let records = files();
        if records.len() == demo::samples().len() && records.values().all(|r| r.state.is_terminal())
        {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in 180 s: {records:#?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_demo_outcome(&records);

    // Every service's health check, as compose runs it, against where that service listens here;
    // and its readiness, which the check leaves out (see the compose file).
    for (name, _) in &running.0 {
        let check: Vec<String> = services[name]["healthcheck"]["test"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no health check"))
            .iter()
            .skip(1) // "CMD"
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("9464", &ops_ports[name.as_str()])
            })
            .collect();
        assert!(check.iter().any(|a| a.ends_with("/health")), "{check:?}");
        let health = Command::new(&check[0]).args(&check[1..]).output().unwrap();
        assert!(health.status.success(), "{name}: {check:?}: {health:?}");
        let ready_url = format!("http://127.0.0.1:{}/ready", ops_ports[name.as_str()]);
        let ready = Command::new("curl")
            .args(["-fsS", &ready_url])
            .output()
            .unwrap();
        assert!(ready.status.success(), "{name}: {ready_url}: {ready:?}");
    }

    // SIGTERM, as `docker compose stop` sends: every service drains and exits cleanly.
    for (name, child) in &mut running.0 {
        stop_cleanly(name, child);
    }
}

/// The image's configuration (deploy/config, which compose mounts and the Dockerfile copies) has
/// the demo's datasets and schemas, so the demo's outcomes hold for it, and loads once given the
/// mask salt that deployments pass in the environment.
#[test]
fn the_image_configuration_has_the_demo_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let demo_file = demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let shipped_dir = repo().join("deploy/config");
    let read = |file: &Path| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    };
    let (demo, shipped) = (read(&demo_file), read(&shipped_dir.join("choreo.toml")));
    assert_eq!(shipped["datasets"], demo["datasets"]);
    assert_eq!(shipped["backend"].as_str(), Some("aws"));
    for d in demo["datasets"].as_array().unwrap() {
        let schema = d["schema"].as_str().unwrap();
        assert_eq!(
            std::fs::read_to_string(shipped_dir.join(schema)).unwrap(),
            std::fs::read_to_string(dir.path().join(schema)).unwrap(),
            "{schema}"
        );
    }
    let mut config: choreo_domain::Config = shipped.try_into().unwrap();
    config.transform.mask_salt = "from the environment".into();
    choreo_runtime::Settings::from_config(config, &shipped_dir, None).unwrap();
}

/// The observability profile's Prometheus scrapes every service that serves `/metrics`, on the port
/// it serves them: its configuration (mounted from deploy/prometheus) is one Prometheus accepts
/// (`promtool`, from the package `scripts/test` installs), and its discovery names exactly the
/// long-running services with `CHOREO_TELEMETRY__LISTEN`. Grafana's mounts exist.
#[test]
fn the_observability_profile_scrapes_every_service() {
    let compose = compose_file();
    let services = compose["services"].as_object().unwrap();
    let config = host_path(&services["prometheus"], "/etc/prometheus/prometheus.yml")
        .expect("the Prometheus configuration is mounted from the repository");
    ok(Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool (Debian's prometheus package, which scripts/test installs)"));
    let mut serving = BTreeMap::new();
    for (name, service) in services {
        let long_running = service["restart"].as_str() != Some("no");
        if let Some(listen) = environment(service).get("CHOREO_TELEMETRY__LISTEN")
            && long_running
        {
            serving.insert(name.clone(), listen.rsplit(':').next().unwrap().to_string());
        }
    }
    assert_eq!(serving.len(), 6, "{serving:?}");
    let scrape = &yaml_file(&config)["scrape_configs"][0]["dns_sd_configs"][0];
    let names: BTreeMap<String, String> = scrape["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n.as_str().unwrap().to_string(), scrape["port"].to_string()))
        .collect();
    assert_eq!(names, serving);

    for volume in services["grafana"]["volumes"].as_array().unwrap() {
        let host = volume.as_str().unwrap().split(':').next().unwrap();
        assert!(repo().join(host).exists(), "{host}");
    }
}
