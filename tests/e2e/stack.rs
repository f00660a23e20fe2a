//! The CloudFormation stacks (`deploy/cloudformation/`) against moto: the data plane deployed with
//! `aws cloudformation deploy` runs the demo without `choreo bootstrap`, declares what bootstrap
//! creates, and each stage's task role in `services.yaml` allows what that stage calls, and no
//! more than it may call. docs/deploy.md explains the choices.
//!
//! moto's CloudFormation skips some resource types (subscriptions, queue and bucket policies,
//! Glue, secrets) and some bucket properties; `cfn_moto.py` makes them from the same template, and
//! each test checks that nothing but the alarms went unmade.

use crate::aws::choreo_on;
use crate::helpers::{assert_demo_outcome, demo_settings, ok, venv_bin};
use choreo::app::SERVICES;
use choreo::demo;
use choreo_aws::moto::Moto;
use choreo_aws::{AwsBackend, AwsClients};
use choreo_domain::Config;
use choreo_domain::FileRecord;
use choreo_domain::config::{BackendKind, Queues};
use choreo_ports::{FileQuery, Ports};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const STACK: &str = "choreo-data";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn template(name: &str) -> PathBuf {
    repo().join("deploy/cloudformation").join(name)
}

/// `python cfn_moto.py ARGS...` with the workspace's venv (boto3 and PyYAML come with moto).
fn cfn_moto(args: &[&str]) -> Value {
    let out = Command::new(venv_bin("python"))
        .arg(repo().join("tests/e2e/cfn_moto.py"))
        .args(args)
        .output()
        .expect("python from .venv (scripts/test installs it)");
    serde_json::from_str(&ok(out)).expect("cfn_moto.py prints JSON")
}

/// Deploys the data plane (with the demo's crawlers) into `moto` as an operator would, then
/// makes what moto's CloudFormation skips. Only the alarms stay unmade.
fn deploy_data_plane(moto: &Moto) {
    let out = Command::new(venv_bin("aws"))
        .args(["--endpoint-url", &moto.endpoint, "cloudformation", "deploy"])
        .args(["--stack-name", STACK, "--template-file"])
        .arg(template("data-plane.yaml"))
        .args(["--capabilities", "CAPABILITY_NAMED_IAM"])
        .args(["--parameter-overrides", "DemoDatasets=true"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("the aws command line from .venv (scripts/test installs it)");
    ok(out);
    let data_plane = template("data-plane.yaml");
    let filled = cfn_moto(&["fill", &moto.endpoint, STACK, data_plane.to_str().unwrap()]);
    assert_eq!(
        filled["not_emulated"],
        json!(["AWS::CloudWatch::Alarm"]),
        "{filled}"
    );
    // Every bucket refuses requests without TLS; moto serves plain HTTP, so those statements stay out.
    assert_eq!(
        filled["tls_only"],
        json!([
            "choreo-curated",
            "choreo-failed",
            "choreo-input",
            "choreo-work"
        ]),
        "{filled}"
    );
    // Glue crawls and job runs take a second (moto's never end otherwise); bootstrap would set this.
    moto.set_transition_seconds("glue::crawl", 1);
    moto.set_transition_seconds("glue::job_run", 1);
}

#[test]
fn the_demo_runs_on_the_data_plane_stack_without_bootstrap() {
    let moto = Moto::start();
    deploy_data_plane(&moto);
    let dir = tempfile::tempdir().unwrap();
    demo::write_config(dir.path(), demo::CONFIG_FILE).unwrap();
    let put = |file: &Path, key: &str| {
        ok(choreo_on(&moto)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["put", "--key", key])
            .arg(file)
            .output()
            .unwrap());
    };
    let samples = demo::samples();
    for (i, s) in samples.iter().enumerate() {
        let file = dir.path().join(format!("sample-{i}"));
        std::fs::write(&file, &s.body).unwrap();
        put(&file, &s.key);
    }
    let stdout = ok(choreo_on(&moto)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "--exit-when-idle"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap());
    assert!(stdout.contains("INGESTED"), "{stdout}");
    assert_demo_outcome(&crate::aws::files(&moto, dir.path()));
}

/// What a configuration's resources look like from the outside: names and the shapes the pipeline
/// relies on, read through the APIs. Both sides are read by this one function, and every name
/// comes from `config`, through the code bootstrap uses (`Config::all_queues`, `Queues::dlq_of`,
/// `Config::subscriptions`, `DatasetConfig::crawled_by`).
async fn inventory(clients: &AwsClients, config: &Config) -> Value {
    let mut out = serde_json::Map::new();
    let sqs = &clients.sqs;
    for name in config.all_queues() {
        for queue in [name.to_string(), Queues::dlq_of(name)] {
            let url = sqs
                .get_queue_url()
                .queue_name(&queue)
                .send()
                .await
                .unwrap_or_else(|e| panic!("queue {queue}: {e:?}"))
                .queue_url
                .unwrap();
            let attrs = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names("All".into())
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap_or_default();
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|(n, _)| n.as_str() == k)
                    .map(|(_, v)| v.clone())
            };
            let redrive = get("RedrivePolicy").map(|r| {
                let r: Value = serde_json::from_str(&r).unwrap();
                let target = r["deadLetterTargetArn"].as_str().unwrap();
                json!({
                    "dlq": target.rsplit(':').next(),
                    "maxReceiveCount": r["maxReceiveCount"].to_string().trim_matches('"'),
                })
            });
            out.insert(
                format!("queue {queue}"),
                json!({
                    "visibility": get("VisibilityTimeout"),
                    "wait": get("ReceiveMessageWaitTimeSeconds"),
                    "retention": get("MessageRetentionPeriod"),
                    "redrive": redrive,
                }),
            );
        }
    }
    let topics = clients.sns.list_topics().send().await.unwrap();
    let topic_arn = |name: &str| {
        topics
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|a| a.rsplit(':').next() == Some(name))
            .unwrap_or_else(|| panic!("no topic {name}"))
            .to_string()
    };
    topic_arn(&config.topics.alerts);
    let events = topic_arn(&config.topics.events);
    let subs = clients
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&events)
        .send()
        .await
        .unwrap();
    let mut routes = BTreeMap::new();
    for s in subs.subscriptions() {
        let arn = s.subscription_arn().unwrap();
        let attrs = clients
            .sns
            .get_subscription_attributes()
            .subscription_arn(arn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let mut filter: Value =
            serde_json::from_str(attrs.get("FilterPolicy").map_or("null", |s| s)).unwrap();
        if let Some(kinds) = filter["event_type"].as_array_mut() {
            kinds.sort_by_key(|k| k.to_string());
        }
        let queue = s
            .endpoint()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        routes.insert(
            queue,
            json!({
                "protocol": s.protocol(),
                "raw": attrs.get("RawMessageDelivery"),
                "scope": attrs.get("FilterPolicyScope").map_or("MessageAttributes", |s| s),
                "filter": filter,
            }),
        );
    }
    // Every subscription bootstrap makes, named from the same code.
    let expected: BTreeSet<String> = config.subscriptions().into_iter().map(|s| s.0).collect();
    assert_eq!(routes.keys().cloned().collect::<BTreeSet<_>>(), expected);
    out.insert("subscriptions".into(), json!(routes));
    let b = &config.buckets;
    for bucket in [&b.input, &b.failed, &b.curated, &b.work] {
        clients
            .s3
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("bucket {bucket}: {e:?}"));
    }
    let notification = clients
        .s3
        .get_bucket_notification_configuration()
        .bucket(&b.input)
        .send()
        .await
        .unwrap();
    let notified: Vec<Value> = notification
        .queue_configurations()
        .iter()
        .map(|q| {
            json!({
                "queue": q.queue_arn().rsplit(':').next(),
                "events": q.events().iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    out.insert(format!("notifications of {}", b.input), json!(notified));
    // Versioned: reads pin the version a notification names.
    let versioning = clients
        .s3
        .get_bucket_versioning()
        .bucket(&b.input)
        .send()
        .await
        .unwrap();
    out.insert(
        format!("versioning of {}", b.input),
        json!(versioning.status().map(|s| s.as_str())),
    );
    for table in [&config.aws.state_table, &config.aws.audit_table] {
        let t = clients
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        // A key schema as "name HASH", "name RANGE".
        macro_rules! keys {
            ($schema:expr) => {
                $schema
                    .iter()
                    .map(|e| format!("{} {}", e.attribute_name(), e.key_type().as_str()))
                    .collect::<Vec<_>>()
            };
        }
        let mut attributes: Vec<String> = t
            .attribute_definitions()
            .iter()
            .map(|a| format!("{} {}", a.attribute_name(), a.attribute_type().as_str()))
            .collect();
        attributes.sort();
        let indexes: BTreeMap<&str, Value> = t
            .global_secondary_indexes()
            .iter()
            .map(|g| {
                (
                    g.index_name().unwrap(),
                    json!({
                        "keys": keys!(g.key_schema()),
                        "projection": g.projection().and_then(|p| p.projection_type()).map(|p| p.as_str()),
                    }),
                )
            })
            .collect();
        out.insert(
            format!("table {table}"),
            json!({
                "keys": keys!(t.key_schema()),
                "attributes": attributes,
                "indexes": indexes,
                "billing": t.billing_mode_summary().and_then(|b| b.billing_mode()).map(|b| b.as_str()),
            }),
        );
    }
    let glue = &clients.glue;
    glue.get_database()
        .name(&config.aws.glue_database)
        .send()
        .await
        .unwrap_or_else(|e| panic!("database {}: {e:?}", config.aws.glue_database));
    let crawlers: BTreeSet<String> = config
        .datasets
        .iter()
        .filter_map(|d| d.crawled_by())
        .collect();
    for name in crawlers {
        let c = glue
            .get_crawler()
            .name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("crawler {name}: {e:?}"))
            .crawler
            .unwrap();
        let paths: Vec<&str> = c
            .targets()
            .map(|t| t.s3_targets().iter().filter_map(|s| s.path()).collect())
            .unwrap_or_default();
        out.insert(
            format!("crawler {name}"),
            json!({"database": c.database_name(), "paths": paths}),
        );
    }
    let job = glue
        .get_job()
        .job_name(&config.aws.builtin_job)
        .send()
        .await
        .unwrap()
        .job
        .unwrap();
    let command = job.command().unwrap();
    out.insert(
        format!("job {}", config.aws.builtin_job),
        json!({
            "command": command.name(),
            "python": command.python_version(),
            "script": command.script_location(),
            "glue": job.glue_version(),
            "workers": job.number_of_workers(),
            "worker_type": job.worker_type().map(|w| w.as_str()),
            "timeout": job.timeout(),
            "max_retries": job.max_retries(),
            "concurrent_runs": job.execution_property().map(|e| e.max_concurrent_runs()),
            "curated_bucket": job.default_arguments().and_then(|a| a.get("--curated_bucket")),
            "python_modules": job
                .default_arguments()
                .and_then(|a| a.get("--additional-python-modules")),
        }),
    );
    Value::Object(out)
}

/// The demo's configuration on the aws backend at `moto`.
fn demo_config(dir: &Path, moto: &Moto) -> choreo_runtime::Settings {
    demo_settings(dir, |c| {
        c.backend = BackendKind::Aws;
        c.aws.endpoint_url = Some(moto.endpoint.clone());
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_plane_declares_what_bootstrap_creates() {
    let dir = tempfile::tempdir().unwrap();
    let stacked = Moto::start();
    let booted = Moto::start();
    tokio::task::block_in_place(|| deploy_data_plane(&stacked));
    let config = demo_config(dir.path(), &booted).config;
    let boot_clients = AwsClients::emulator(&booted.endpoint).await;
    AwsBackend::with_clients(boot_clients.clone(), &config)
        .bootstrap()
        .await
        .unwrap();
    let from_bootstrap = inventory(&boot_clients, &config).await;
    let from_stack = inventory(&AwsClients::emulator(&stacked.endpoint).await, &config).await;
    // Compared entry by entry, so a failure names the resource that differs.
    let (b, s) = (
        from_bootstrap.as_object().unwrap(),
        from_stack.as_object().unwrap(),
    );
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        s.keys().collect::<Vec<_>>(),
        "the same resources"
    );
    for (name, shape) in b {
        assert_eq!(Some(shape), s.get(name), "{name}: bootstrap vs the stack");
    }
}

/// Waits until every sample has a record in a terminal state and the work queues are empty (twice
/// in a row, a second apart); returns the records by key.
async fn settled(ports: &Ports, config: &Config) -> BTreeMap<String, FileRecord> {
    let samples = demo::samples().len();
    let mut idle = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let query = FileQuery {
            dataset: None,
            state: None,
            limit: 500,
            after: None,
        };
        let records = ports.state.list_all(query).await.unwrap();
        let mut empty = true;
        for q in config.all_queues() {
            empty &= ports.queues.queue(q).depth().await.unwrap().total() == 0;
        }
        let done = records.len() == samples && records.iter().all(|r| r.state.is_terminal());
        idle = if done && empty { idle + 1 } else { 0 };
        if idle == 2 {
            return records.into_iter().map(|r| (r.key.clone(), r)).collect();
        }
    }
}

/// The IAM actions an SDK operation needs, where they are not simply `service:Operation`.
fn iam_actions(service: &str, op: &str) -> Vec<String> {
    let service = service.to_lowercase();
    let same = |a: &str| vec![format!("{service}:{a}")];
    match (service.as_str(), op) {
        ("s3", "HeadObject") => same("GetObject"),
        ("s3", "ListObjectsV2") | ("s3", "HeadBucket") => same("ListBucket"),
        ("s3", "ListObjectVersions") => same("ListBucketVersions"),
        ("s3", "DeleteObjects") => same("DeleteObject"),
        // Reads its source, writes its destination.
        ("s3", "CopyObject") => vec!["s3:GetObject".into(), "s3:PutObject".into()],
        ("sqs", "DeleteMessageBatch") => same("DeleteMessage"),
        ("sqs", "SendMessageBatch") => same("SendMessage"),
        ("sqs", "ChangeMessageVisibilityBatch") => same("ChangeMessageVisibility"),
        // SNS authorises a batch as the publishes it holds.
        ("sns", "PublishBatch") => same("Publish"),
        _ => same(op),
    }
}

/// Allowed in a task role though the demo does not call it, and why. Anything else a policy allows
/// beyond what its stage called fails the test: least privilege is checked both ways.
const NOT_IN_THE_DEMO: &[(&str, &str, &str)] = &[
    // Implicit: SQS, SNS and S3 call KMS on the caller's behalf for the encrypted resources.
    ("*", "kms:Decrypt", "encrypted queues, topics and objects"),
    (
        "*",
        "kms:GenerateDataKey",
        "encrypted queues, topics and objects",
    ),
    (
        "*",
        "sqs:ChangeMessageVisibility",
        "extends a message held longer than half its visibility",
    ),
    // The counter sees GetObject, CopyObject and DeleteObject whether or not they name a version;
    // on the versioned input bucket every read, copy and delete of a file names its pinned version.
    (
        "validator",
        "s3:GetObjectVersion",
        "reads pinned to the registered version",
    ),
    (
        "quarantine",
        "s3:GetObjectVersion",
        "copies pinned to the registered version",
    ),
    (
        "quarantine",
        "s3:DeleteObjectVersion",
        "deletes pinned to the registered version",
    ),
    ("crawler", "glue:GetTable", "catalog = \"direct\" datasets"),
    (
        "crawler",
        "glue:CreateTable",
        "catalog = \"direct\" datasets",
    ),
    (
        "crawler",
        "glue:UpdateTable",
        "catalog = \"direct\" datasets",
    ),
    (
        "crawler",
        "glue:BatchCreatePartition",
        "catalog = \"direct\" datasets",
    ),
    (
        "auditor",
        "sqs:GetQueueAttributes",
        "queue depths for the API and dashboard",
    ),
    (
        "auditor",
        "sqs:SendMessage",
        "dead-letter redrives, and the sweep's timers for stuck files",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn each_task_role_allows_what_its_stage_calls_and_no_more() {
    choreo_telemetry::init_for_tests();
    let services = template("services.yaml");
    let allowed: BTreeMap<String, BTreeSet<String>> =
        serde_json::from_value(cfn_moto(&["policies", services.to_str().unwrap()])).unwrap();

    let moto = Moto::start();
    tokio::task::block_in_place(|| deploy_data_plane(&moto));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = demo_config(dir.path(), &moto);
    // The background loops' paths too: each stage's watchdog and the auditor's sweep and alert
    // flushes look every second or two instead of every few minutes.
    settings.config.runtime.lease_secs = 6;
    settings.config.operations.sweep.interval_secs = 1;
    settings.config.operations.alerts.flush_interval_secs = 1;
    // With an ops endpoint configured the auditor keeps its gauges (every queue's depth; no Scan
    // on AWS), whose calls its role must allow.
    settings.config.telemetry.listen = Some("127.0.0.1:0".into());
    let settings = Arc::new(settings);
    let config = &settings.config;

    // Each stage on clients of its own, as each ECS task has its own role: its calls are its own.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let mut counters = Vec::new();
    for spec in SERVICES {
        let backend = AwsBackend::with_clients(AwsClients::emulator(&moto.endpoint).await, config);
        counters.push((spec.stage.as_str().to_string(), backend.calls().clone()));
        let queue = backend.queue((spec.queue)(config));
        // What each task's /ready asks, on the task's own clients.
        let readiness = choreo_runtime::ops::Readiness {
            queues: vec![queue.clone()],
            state: backend.ports().state,
        };
        readiness
            .check()
            .await
            .unwrap_or_else(|e| panic!("{}: not ready: {e}", spec.stage));
        tasks.spawn(spec.run(settings.clone(), backend.ports(), queue, shutdown.clone()));
    }
    tasks.close();
    // The test's own connection feeds and watches, so the stages' counters hold theirs alone.
    let monitor =
        AwsBackend::with_clients(AwsClients::emulator(&moto.endpoint).await, config).ports();
    for s in demo::samples() {
        monitor
            .objects
            .put(&config.buckets.input, &s.key, s.body.clone())
            .await
            .unwrap();
    }
    let records = tokio::time::timeout(Duration::from_secs(180), settled(&monitor, config))
        .await
        .expect("the demo settles in 180 s");
    shutdown.cancel();
    tasks.wait().await;
    assert_demo_outcome(&records);

    let (mut report, mut wrong) = (String::new(), false);
    for (stage, calls) in counters {
        let used: BTreeSet<String> = calls
            .snapshot()
            .keys()
            .flat_map(|(service, op)| iam_actions(service, op))
            .collect();
        let policy = allowed
            .get(&stage)
            .unwrap_or_else(|| panic!("no task role runs choreo-{stage}: {allowed:?}"));
        let missing: Vec<_> = used.difference(policy).collect();
        let excused = |a: &str| {
            NOT_IN_THE_DEMO
                .iter()
                .any(|(s, action, _)| (*s == "*" || *s == stage) && *action == a)
        };
        let unused: Vec<_> = policy.difference(&used).filter(|a| !excused(a)).collect();
        report.push_str(&format!(
            "{stage}: calls {used:?}\n  missing from its role: {missing:?}\n  allowed, never called: {unused:?}\n"
        ));
        wrong |= !missing.is_empty() || !unused.is_empty();
    }
    println!("{report}");
    assert!(
        !wrong,
        "task roles that do not match their stage's calls:\n{report}"
    );
}

/// Each task definition's container, with the template's defaults for its parameters: its command,
/// environment and health check. Read with cfn_moto.py's loader (CloudFormation's short tags).
fn containers() -> Vec<Value> {
    let script = r#"
import json, re, sys
sys.path.insert(0, sys.argv[1])
import cfn_moto
t = cfn_moto.load_template(sys.argv[2])
params = {k: str(v.get("Default", "")) for k, v in t["Parameters"].items()}
params["AWS::Region"] = cfn_moto.REGION
def value(v):
    if isinstance(v, dict) and "Ref" in v:
        return params[v["Ref"]]
    if isinstance(v, dict) and "Fn::Sub" in v:
        return re.sub(r"\$\{([^}]+)\}", lambda m: params[m.group(1)], v["Fn::Sub"])
    return v
out = []
for r in t["Resources"].values():
    if r["Type"] == "AWS::ECS::TaskDefinition":
        (c,) = r["Properties"]["ContainerDefinitions"]
        out.append({
            "command": c["Command"],
            "environment": {e["Name"]: value(e["Value"]) for e in c.get("Environment", [])},
            "secrets": [s["Name"] for s in c.get("Secrets", [])],
            "ports": [p["ContainerPort"] for p in c.get("PortMappings", [])],
            "health": c.get("HealthCheck", {}).get("Command"),
        })
json.dump(out, sys.stdout)
"#;
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(repo().join("tests/e2e"))
        .arg(template("services.yaml"))
        .output()
        .expect("python from .venv (scripts/test installs it)");
    serde_json::from_str(&ok(out)).unwrap()
}

/// A free loopback port, for what the containers each serve on the same port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Every task of services.yaml serves its ops endpoint and passes its container health check: each
/// task's command runs here as a local process with the task's environment (the image's paths and
/// ports mapped to this machine's), against the data plane deployed into moto; its `HealthCheck`
/// command, as ECS runs it, succeeds, and `/ready` answers 200 (its queue and the state table
/// exist). SIGTERM then stops each cleanly.
#[test]
fn each_task_passes_its_health_check_on_the_data_plane() {
    let moto = Moto::start();
    deploy_data_plane(&moto);
    let bin = Path::new(env!("CARGO_BIN_EXE_choreo")).parent().unwrap();
    let work = tempfile::tempdir().unwrap();
    struct Task {
        name: String,
        child: std::process::Child,
        health: Vec<String>,
        ops: u16,
    }
    struct Tasks(Vec<Task>);
    impl Drop for Tasks {
        fn drop(&mut self) {
            for t in &mut self.0 {
                let _ = t.child.kill();
                let _ = t.child.wait();
            }
        }
    }
    let mut tasks = Tasks(Vec::new());
    for c in containers() {
        let program = c["command"][0].as_str().unwrap().to_string();
        let env = c["environment"].as_object().unwrap();
        let listen = env
            .get("CHOREO_TELEMETRY__LISTEN")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{program}: no CHOREO_TELEMETRY__LISTEN"));
        let port = listen.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let ports: Vec<u64> = serde_json::from_value(c["ports"].clone()).unwrap();
        assert!(
            ports.contains(&u64::from(port)),
            "{program}: {port} is not mapped"
        );
        let health: Vec<String> = serde_json::from_value(c["health"].clone())
            .unwrap_or_else(|_| panic!("{program}: no health check"));
        assert_eq!(health[0], "CMD", "{program}: {health:?}");
        assert!(
            health.last().unwrap().ends_with(&format!(":{port}/health")),
            "{program}: {health:?}"
        );

        let ops = free_port();
        let mut cmd = Command::new(bin.join(&program));
        cmd.current_dir(work.path()).env_clear();
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (key, value) in env {
            let value = value.as_str().unwrap();
            let value = match key.as_str() {
                // The image's configuration is deploy/config (the Dockerfile copies it there).
                "CHOREO_CONFIG" => repo()
                    .join("deploy/config")
                    .join(value.strip_prefix("/etc/choreo/").unwrap())
                    .display()
                    .to_string(),
                "CHOREO_TELEMETRY__LISTEN" => format!("127.0.0.1:{ops}"),
                "CHOREO_OPERATIONS__LISTEN" => format!("127.0.0.1:{}", free_port()),
                _ => value.to_string(),
            };
            cmd.env(key, value);
        }
        // What ECS hands over from Secrets Manager, and the task role's credentials.
        for secret in c["secrets"].as_array().unwrap() {
            cmd.env(secret.as_str().unwrap(), "from-secrets-manager");
        }
        cmd.env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{program}: {e} (run scripts/test, or cargo build --workspace --bins first)")
        });
        let health = health[1..]
            .iter()
            .map(|a| a.replace(&format!(":{port}/"), &format!(":{ops}/")))
            .collect();
        tasks.0.push(Task {
            name: program,
            child,
            health,
            ops,
        });
    }
    let names: BTreeSet<String> = tasks.0.iter().map(|t| t.name.clone()).collect();
    let stages: BTreeSet<String> = SERVICES
        .iter()
        .map(|s| format!("choreo-{}", s.stage.as_str()))
        .collect();
    assert_eq!(names, stages, "one task per stage");

    for t in &mut tasks.0 {
        // As the health check's start period allows: a few seconds to start listening.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let check = Command::new(&t.health[0])
                .args(&t.health[1..])
                .output()
                .unwrap();
            if check.status.success() {
                break;
            }
            assert!(
                t.child.try_wait().unwrap().is_none(),
                "{} exited before answering its health check",
                t.name
            );
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {:?}: {check:?}",
                t.name,
                t.health
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let ready_url = format!("http://127.0.0.1:{}/ready", t.ops);
        let ready = Command::new("curl")
            .args(["-sS", "-w", "%{http_code}", &ready_url])
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&ready.stdout);
        assert!(answer.ends_with("200"), "{}: {ready_url}: {answer}", t.name);
    }

    for t in &mut tasks.0 {
        crate::compose::stop_cleanly(&t.name, &mut t.child);
    }
}

/// `aws cloudformation deploy --template-file` passes a template inline up to CloudFormation's
/// 51,200 bytes; beyond, it needs an S3 bucket, which docs/deploy.md promises the services stack
/// does not.
#[test]
fn the_services_template_deploys_inline() {
    let bytes = std::fs::metadata(template("services.yaml")).unwrap().len();
    assert!(bytes <= 51_200, "services.yaml is {bytes} bytes");
}
