//! A local stand-in for Glue jobs: runs recorded in `job_runs`, executed when polled.
//!
//! Starting a run records it RUNNING (its `--batch_id` argument in a column of its own, which is how
//! `find_run` finds it again). Polling a RUNNING run executes it there and then and records the end:
//! `builtin` is the built-in transform ([`crate::transform`]) in a child process (`worker.rs`);
//! `command:<shell>` runs `sh -c <shell>` with `CHOREO_BATCH_ID`, `CHOREO_MANIFEST` (a local copy of
//! the manifest, each file with the `path` of the bytes its pin names — read those, not the key's
//! current file), `CHOREO_DATA_DIR` and `CHOREO_ARGUMENTS` (all arguments, as JSON) in its
//! environment, and fails with the end of its stderr; `warehouse` loads the batch into the
//! warehouse of the extract that writes the dataset (`choreo_warehouse`, in this process: it
//! streams, so it needs no memory limit of its own); any other name fails with state ERROR. Both
//! kinds of child start with `[local] job_memory_mb` as their memory limit: a job that runs out of
//! memory fails its run (and so its batch) with that reason, and the pipeline goes on. A poller
//! claims the run first (a claim that expires
//! unless its holder's heartbeat renews it), so two pollers — in two processes — never execute one
//! run at once; the other sees `Running`, and a claim left by a dead process lapses within a minute.

use crate::db::{Db, ms, now_ms};
use crate::events::{
    BuiltinTransformDroppedRows, BuiltinTransformWritten, JobCommandSucceeded,
    JobRunClaimRenewError, WarehouseLoaded,
};
use crate::objects::LocalObjectStore;
use crate::transform::{BuiltinJob, split_location};
use crate::worker::{
    STDERR_TAIL, WorkerAnswer, WorkerRequest, crash_reason, limit_memory, run_in_worker, tail,
};
use async_trait::async_trait;
use choreo_domain::{Config, JobArgs};
use choreo_ports::{JobRunner, JobStart, JobStatus, PortError, PortErrorKind};
use choreo_telemetry::events::emit;
use choreo_transform::KEY_INDEX_BYTES;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// The job that loads a batch of an extract's files into the warehouse (`choreo_warehouse`).
pub const WAREHOUSE_JOB: &str = "warehouse";

/// How long a claim on a run lasts without a heartbeat.
const CLAIM_TTL: Duration = Duration::from_secs(60);

/// The job runner of the local backend.
pub struct LocalJobRunner {
    db: Arc<Db>,
    objects: Arc<LocalObjectStore>,
    config: Arc<Config>,
    data_dir: PathBuf,
    /// The program that runs the built-in transform as `<it> job-worker`.
    worker: PathBuf,
    /// Every job's memory limit, MiB (`[local] job_memory_mb`; none when 0).
    memory_mib: Option<u64>,
}

/// How a run ended: (state, error).
type Ending = (&'static str, Option<String>);

/// Aborts the heartbeat when the poll ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn status_of(state: &str, error: Option<String>) -> JobStatus {
    match state {
        "RUNNING" => JobStatus::Running,
        "SUCCEEDED" => JobStatus::Succeeded,
        other => JobStatus::Failed {
            state: other.to_string(),
            reason: error.unwrap_or_default(),
        },
    }
}

impl LocalJobRunner {
    pub(crate) fn new(
        db: Arc<Db>,
        objects: Arc<LocalObjectStore>,
        config: Arc<Config>,
        data_dir: PathBuf,
    ) -> Self {
        let worker = config
            .local
            .job_worker
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("choreo"));
        let memory_mib = Some(config.local.job_memory_mb).filter(|&m| m > 0);
        LocalJobRunner {
            db,
            objects,
            config,
            data_dir,
            worker,
            memory_mib,
        }
    }

    /// Executes a run. Never an error: every failure is the run's.
    async fn execute(&self, job: &str, run_id: &str, args: &BTreeMap<String, String>) -> Ending {
        if job == "builtin" {
            return self.run_builtin(run_id, args).await;
        }
        if let Some(command) = job.strip_prefix("command:") {
            return self.run_command(command, run_id, args).await;
        }
        if job == WAREHOUSE_JOB {
            return self.run_warehouse(run_id, args).await;
        }
        ("ERROR", Some(format!("no such job: {job}")))
    }

    /// Runs the built-in transform in a worker child (see `worker.rs`).
    async fn run_builtin(&self, run_id: &str, args: &BTreeMap<String, String>) -> Ending {
        let request = WorkerRequest {
            data_dir: std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone()),
            sync: self.config.local.durability == choreo_domain::config::Durability::Power,
            job: BuiltinJob::of(&self.config),
            arguments: args.clone(),
            key_index_bytes: KEY_INDEX_BYTES,
        };
        match run_in_worker(&self.worker, self.memory_mib, &request).await {
            Ok(WorkerAnswer {
                result: Ok(s),
                peak_rss_kib,
            }) => {
                emit(BuiltinTransformWritten {
                    run_id,
                    read: s.read,
                    dropped: s.dropped,
                    duplicates: s.duplicates,
                    written: s.written,
                    key_runs: s.key_runs,
                    peak_rss_mib: peak_rss_kib.unwrap_or(0) >> 10,
                    key: &s.key,
                });
                if let Some(why) = &s.first_drop {
                    emit(BuiltinTransformDroppedRows {
                        run_id,
                        dropped: s.dropped,
                        first: why,
                    });
                }
                ("SUCCEEDED", None)
            }
            Ok(WorkerAnswer {
                result: Err(reason),
                ..
            })
            | Err(reason) => ("FAILED", Some(reason)),
        }
    }

    /// Loads the batch into the warehouse (`choreo_warehouse`): the files its manifest pins, by the
    /// warehouse target of the extract that writes the dataset.
    async fn run_warehouse(&self, run_id: &str, args: &BTreeMap<String, String>) -> Ending {
        let started = std::time::Instant::now();
        let failed = |reason: String| ("FAILED", Some(reason));
        let location = match JobArgs::parse(args) {
            Ok(a) => a.manifest,
            Err(e) => return failed(format!("the warehouse job: {e}")),
        };
        let Some((bucket, key)) = split_location(&location) else {
            return failed(format!(
                "{} {location:?} is not <bucket>/<key>",
                JobArgs::MANIFEST
            ));
        };
        let manifest: choreo_domain::Manifest = match self
            .objects
            .path_of(bucket, key)
            .map_err(|e| e.to_string())
            .and_then(|p| std::fs::read(p).map_err(|e| e.to_string()))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => return failed(format!("reading the manifest {location}: {e}")),
        };
        let Some(extract) = self.config.warehouse_of(&manifest.dataset) else {
            return failed(format!(
                "no extract with a warehouse target writes dataset {:?}",
                manifest.dataset
            ));
        };
        let Some(dataset) = self.config.dataset(&manifest.dataset) else {
            return failed(format!("dataset {:?} is not configured", manifest.dataset));
        };
        let target = extract.warehouse.as_ref().expect("warehouse_of has one");
        let mut files = Vec::with_capacity(manifest.files.len());
        for f in &manifest.files {
            match self
                .objects
                .path_of_version(&f.bucket, &f.key, f.pin.as_ref())
            {
                Ok(path) => files.push((f.key.clone(), path)),
                Err(e) => return failed(format!("{}: {}", f.key, e.message)),
            }
        }
        let url = self.config.extract.warehouse_url.expose();
        if url.is_empty() {
            return failed(
                "extract.warehouse_url is not set (CHOREO_EXTRACT__WAREHOUSE_URL)".into(),
            );
        }
        let loaded = match choreo_warehouse::plan(target, dataset.folder(), files) {
            Ok(plan) => choreo_warehouse::postgres::load(url, &plan).await,
            Err(e) => Err(e),
        };
        match loaded {
            Ok(report) => {
                emit(WarehouseLoaded {
                    run_id,
                    table: &target.table,
                    mode: target.mode.as_str(),
                    files: report.files,
                    deleted: report.deleted,
                    copied: report.copied,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                ("SUCCEEDED", None)
            }
            Err(e) => failed(e.to_string()),
        }
    }

    async fn run_command(
        &self,
        command: &str,
        run_id: &str,
        args: &BTreeMap<String, String>,
    ) -> Ending {
        // A command takes whatever arguments its run was given: each is read if it is there.
        let manifest = match args.get(JobArgs::MANIFEST) {
            Some(location) => {
                let Some((bucket, key)) = split_location(location) else {
                    return (
                        "FAILED",
                        Some(format!(
                            "{} {location:?} is not <bucket>/<key>",
                            JobArgs::MANIFEST
                        )),
                    );
                };
                let src = match self.objects.path_of(bucket, key) {
                    Ok(p) => p,
                    Err(e) => return ("FAILED", Some(e.to_string())),
                };
                let copy = self
                    .objects
                    .tmp_dir()
                    .join(format!("manifest-{run_id}.json"));
                let written = match with_paths(&self.objects, &src) {
                    Ok(body) => tokio::fs::write(&copy, body)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    return (
                        "FAILED",
                        Some(format!("reading the manifest {location}: {e}")),
                    );
                }
                Some(copy)
            }
            None => None,
        };
        let data_dir =
            std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env(
                "CHOREO_BATCH_ID",
                args.get(JobArgs::BATCH_ID).cloned().unwrap_or_default(),
            )
            .env("CHOREO_DATA_DIR", &data_dir)
            .env(
                "CHOREO_ARGUMENTS",
                serde_json::to_string(args).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        limit_memory(&mut cmd, self.memory_mib.map(|m| m << 20));
        if let Some(m) = &manifest {
            cmd.env("CHOREO_MANIFEST", m);
        }
        let output = cmd.output().await;
        if let Some(m) = &manifest {
            let _ = tokio::fs::remove_file(m).await;
        }
        match output {
            Ok(out) if out.status.success() => {
                emit(JobCommandSucceeded {
                    run_id,
                    command,
                    stdout: &tail(&out.stdout, STDERR_TAIL),
                });
                ("SUCCEEDED", None)
            }
            Ok(out) => {
                let stderr = tail(&out.stderr, STDERR_TAIL);
                let reason = crash_reason("the command", out.status, &stderr, self.memory_mib);
                // A plain failure reads as the command's own words.
                let plain = out.status.code().is_some() && !reason.contains("out of memory");
                let reason = if plain && !stderr.is_empty() {
                    stderr
                } else {
                    reason
                };
                ("FAILED", Some(reason))
            }
            Err(e) => ("FAILED", Some(format!("could not run sh: {e}"))),
        }
    }
}

/// The manifest at `src` with each file's `path`: where the bytes its pin names are on disk (the
/// pinned link when the key was rewritten since), so a command reads the validated version, never
/// whatever the key holds now. A file whose version is gone gets no path and a `gone` reason.
fn with_paths(objects: &LocalObjectStore, src: &std::path::Path) -> Result<Vec<u8>, String> {
    let body = std::fs::read(src).map_err(|e| e.to_string())?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if let Some(files) = manifest.get_mut("files").and_then(|f| f.as_array_mut()) {
        for file in files {
            let entry: choreo_domain::ManifestFile =
                serde_json::from_value(file.clone()).map_err(|e| e.to_string())?;
            let resolved = objects.path_of_version(&entry.bucket, &entry.key, entry.pin.as_ref());
            let slot = match resolved {
                Ok(path) => ("path", serde_json::json!(path)),
                Err(e) => ("gone", serde_json::json!(e.message)),
            };
            if let Some(obj) = file.as_object_mut() {
                obj.insert(slot.0.to_string(), slot.1);
            }
        }
    }
    serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())
}

#[async_trait]
impl JobRunner for LocalJobRunner {
    async fn find_run(&self, job: &str, batch_id: &str) -> Result<Option<String>, PortError> {
        let (job, batch_id) = (job.to_string(), batch_id.to_string());
        self.db
            .call("find_run", batch_id.clone(), move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT run_id FROM job_runs WHERE job = ?1 AND batch_id = ?2
                         ORDER BY started_at DESC, rowid DESC LIMIT 1",
                    )?
                    .query_row(params![job, batch_id], |r| r.get(0))
                    .optional()?)
            })
            .await
    }

    async fn start_run(
        &self,
        job: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<JobStart, PortError> {
        // The port's one requirement of any job's arguments: `find_run` finds the run by it.
        let Some(batch_id) = arguments.get(JobArgs::BATCH_ID).cloned() else {
            return Err(PortError::permanent(
                "start_run",
                job,
                format!("the arguments must include {}", JobArgs::BATCH_ID),
            ));
        };
        let run_id = format!("jr-{}", uuid::Uuid::new_v4().simple());
        let args = serde_json::to_string(arguments)
            .map_err(|e| PortError::permanent("start_run", job, e))?;
        let (job, id) = (job.to_string(), run_id.clone());
        self.db
            .write("start_run", job.clone(), move |tx| {
                tx.prepare_cached(
                    "INSERT INTO job_runs (run_id, job, batch_id, arguments, state, started_at)
                     VALUES (?1, ?2, ?3, ?4, 'RUNNING', ?5)",
                )?
                .execute(params![id, job, batch_id, args, now_ms()])?;
                Ok(())
            })
            .await?;
        Ok(JobStart::Started { run_id })
    }

    async fn run_status(&self, job: &str, run_id: &str) -> Result<JobStatus, PortError> {
        let claim = uuid::Uuid::new_v4().to_string();
        let (id, j, c) = (run_id.to_string(), job.to_string(), claim.clone());
        let ttl = ms(CLAIM_TTL);
        // Read the run and, if it is RUNNING and unclaimed, claim it — in one transaction.
        let (state, error, args, claimed): (String, Option<String>, String, bool) = self
            .db
            .write("run_status", run_id, move |tx| {
                let row: Option<(String, String, Option<String>, String, Option<i64>)> = tx
                    .prepare_cached(
                        "SELECT job, state, error, arguments, claimed_until FROM job_runs
                         WHERE run_id = ?1",
                    )?
                    .query_row(params![id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()?;
                let Some((_, state, error, args, claimed_until)) = row.filter(|r| r.0 == j) else {
                    return Err(PortError::new(
                        PortErrorKind::NotFound,
                        "run_status",
                        id.clone(),
                        format!("no run {id} of job {j}"),
                    )
                    .into());
                };
                let now = now_ms();
                let free = claimed_until.is_none_or(|u| u <= now);
                if state == "RUNNING" && free {
                    tx.prepare_cached(
                        "UPDATE job_runs SET claim = ?2, claimed_until = ?3 WHERE run_id = ?1",
                    )?
                    .execute(params![id, c, now + ttl])?;
                    return Ok((state, error, args, true));
                }
                Ok((state, error, args, false))
            })
            .await?;
        if !claimed {
            return Ok(status_of(&state, error));
        }
        let args: BTreeMap<String, String> = serde_json::from_str(&args)
            .map_err(|e| PortError::permanent("run_status", run_id, e))?;

        let heartbeat = {
            let db = Arc::clone(&self.db);
            let (id, c) = (run_id.to_string(), claim.clone());
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CLAIM_TTL / 3).await;
                    let (id, c) = (id.clone(), c.clone());
                    let renewed = db
                        .write("run_status", id.clone(), move |tx| {
                            Ok(tx
                                .prepare_cached(
                                    "UPDATE job_runs SET claimed_until = ?3
                                 WHERE run_id = ?1 AND claim = ?2",
                                )?
                                .execute(params![id, c, now_ms() + ttl])?)
                        })
                        .await;
                    if let Err(e) = renewed {
                        emit(JobRunClaimRenewError { error: &e });
                    }
                }
            }))
        };
        let (end_state, end_error) = self.execute(job, run_id, &args).await;
        drop(heartbeat);

        let (id, c) = (run_id.to_string(), claim);
        let end_error_db = end_error.clone();
        let recorded = self
            .db
            .write("run_status", run_id, move |tx| {
                let changed = tx.prepare_cached("UPDATE job_runs SET state = ?3, error = ?4, finished_at = ?5, claim = NULL,
                         claimed_until = NULL
                     WHERE run_id = ?1 AND claim = ?2 AND state = 'RUNNING'")?
            .execute(
                    params![id, c, end_state, end_error_db, now_ms()],
                )?;
                if changed == 1 {
                    return Ok(None);
                }
                // The claim lapsed and another poller finished the run: report its ending.
                let row: (String, Option<String>) = tx.prepare_cached("SELECT state, error FROM job_runs WHERE run_id = ?1")?
            .query_row(
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Ok(Some(row))
            })
            .await?;
        Ok(match recorded {
            None => status_of(end_state, end_error),
            Some((state, error)) => status_of(&state, error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::tail;
    use crate::testutil::backend;
    use choreo_domain::JobArgs;
    use choreo_ports::{JobRunner, JobStart, JobStatus, ObjectStore, PortErrorKind};
    use std::collections::BTreeMap;

    fn args(batch: &str, manifest: Option<&str>) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(JobArgs::BATCH_ID.to_string(), batch.to_string());
        if let Some(m) = manifest {
            a.insert(JobArgs::MANIFEST.to_string(), m.to_string());
        }
        a
    }

    async fn start(jobs: &dyn JobRunner, job: &str, a: &BTreeMap<String, String>) -> String {
        match jobs.start_run(job, a).await.unwrap() {
            JobStart::Started { run_id } => run_id,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_job_runner_keeps_the_ports_contract() {
        let (_dir, b) = backend();
        choreo_ports::testkit::job_runner_contract(&*b.ports().jobs, "command:true").await;
    }

    #[tokio::test]
    async fn failures_are_reported_as_the_run_state() {
        let (_dir, b) = backend();
        let jobs = b.ports().jobs;
        let run = start(&*jobs, "command:false", &args("b-1", None)).await;
        match jobs.run_status("command:false", &run).await.unwrap() {
            JobStatus::Failed { state, .. } => assert_eq!(state, "FAILED"),
            other => panic!("{other:?}"),
        }
        let cmd = "command:echo \"bad $CHOREO_BATCH_ID\" >&2; exit 3";
        let run = start(&*jobs, cmd, &args("b-7", None)).await;
        assert_eq!(
            jobs.run_status(cmd, &run).await.unwrap(),
            JobStatus::Failed {
                state: "FAILED".into(),
                reason: "bad b-7".into()
            }
        );
        let run = start(&*jobs, "nightly-etl", &args("b-1", None)).await;
        let failed = JobStatus::Failed {
            state: "ERROR".into(),
            reason: "no such job: nightly-etl".into(),
        };
        assert_eq!(jobs.run_status("nightly-etl", &run).await.unwrap(), failed);
        assert_eq!(jobs.run_status("nightly-etl", &run).await.unwrap(), failed);
        // The built-in transform runs in a choreo program's `job-worker`: tests/e2e/transform.rs.
        let err = jobs
            .start_run("builtin", &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind, PortErrorKind::Permanent);
        let err = jobs.run_status("builtin", "jr-none").await.unwrap_err();
        assert_eq!(err.kind, PortErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_command_sees_its_batch_and_manifest_with_the_pinned_bytes_paths() {
        let (dir, b) = backend();
        let c = b.config().clone();
        let s = b.objects();
        s.put(&c.buckets.input, "daily/a.csv", b"validated".to_vec())
            .await
            .unwrap();
        let pinned = s
            .pin_sync(&c.buckets.input, "daily/a.csv")
            .unwrap()
            .unwrap();
        // Rewritten since: the command must still be shown the validated bytes.
        let path = s.path_of(&c.buckets.input, "daily/a.csv").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(path.with_extension("new"), b"rewritten").unwrap();
        std::fs::rename(path.with_extension("new"), &path).unwrap();
        let manifest = serde_json::json!({"batch_id": "b-3", "files": [
            {"file_id": "f-1", "bucket": c.buckets.input, "key": "daily/a.csv", "pin": pinned.pin},
            {"file_id": "f-2", "bucket": c.buckets.input, "key": "daily/gone.csv",
             "pin": {"version_id": "0-0"}}]});
        s.put(
            &c.buckets.work,
            "m/b-3.json",
            manifest.to_string().into_bytes(),
        )
        .await
        .unwrap();
        let out = dir.path().join("seen.txt");
        let seen = dir.path().join("manifest.json");
        let cmd = format!(
            "command:printf '%s' \"$CHOREO_BATCH_ID\" > {out} && cat \"$CHOREO_MANIFEST\" > {seen} && test -d \"$CHOREO_DATA_DIR\"",
            out = out.display(),
            seen = seen.display()
        );
        let jobs = b.ports().jobs;
        let run = start(
            &*jobs,
            &cmd,
            &args("b-3", Some(&format!("{}/m/b-3.json", c.buckets.work))),
        )
        .await;
        assert_eq!(
            jobs.run_status(&cmd, &run).await.unwrap(),
            JobStatus::Succeeded
        );
        assert_eq!(std::fs::read_to_string(out).unwrap(), "b-3");
        let seen: serde_json::Value =
            serde_json::from_slice(&std::fs::read(seen).unwrap()).unwrap();
        let first = seen["files"][0]["path"].as_str().unwrap();
        assert_eq!(std::fs::read(first).unwrap(), b"validated");
        assert!(seen["files"][1]["path"].is_null());
        assert!(seen["files"][1]["gone"].as_str().unwrap().contains("gone"));
    }

    #[tokio::test]
    async fn a_command_out_of_memory_fails_its_run_with_the_limit() {
        let (_dir, b) = backend();
        let mut config = b.config().clone();
        config.local.job_memory_mb = 64;
        let b = crate::LocalBackend::open(&config).unwrap();
        let jobs = b.ports().jobs;
        // 256 MiB in one allocation: Python raises MemoryError under the 64 MiB limit.
        let cmd = "command:python3 -c 'b = bytearray(256 << 20); print(len(b))'";
        let run = start(&*jobs, cmd, &args("b-9", None)).await;
        match jobs.run_status(cmd, &run).await.unwrap() {
            JobStatus::Failed { state, reason } => {
                assert_eq!(state, "FAILED");
                assert!(
                    reason.starts_with(
                        "the command ran out of memory (limit 64 MiB, [local] job_memory_mb) \
                         and exited with code 1: "
                    ) && reason.ends_with("MemoryError"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The same command without the limit succeeds.
        config.local.job_memory_mb = 0;
        let b = crate::LocalBackend::open(&config).unwrap();
        let jobs = b.ports().jobs;
        let run = start(&*jobs, cmd, &args("b-10", None)).await;
        assert_eq!(
            jobs.run_status(cmd, &run).await.unwrap(),
            JobStatus::Succeeded
        );
    }

    #[test]
    fn stderr_tails_start_on_a_character() {
        let s = "é".repeat(300);
        let t = tail(s.as_bytes(), 501);
        assert!(t.chars().all(|c| c == 'é'));
        assert_eq!(tail(b"  oops \n", 500), "oops");
    }
}
