//! Glue crawlers and job runs, and the Glue resources they need.
//!
//! Both adapters read Glue's own state on every poll and keep none: a crawl's outcome is the
//! crawler's `LastCrawl`, a run's is its `JobRunState`. A run is found again by its `--batch_id`
//! argument (GetJobRuns returns each run's arguments), which is what lets a launcher that died
//! between starting a run and recording it pick the run up instead of starting a second one.
//!
//! Starts are never retried by the SDK ([`once`]): a start whose answer was lost (the connection
//! dropped after Glue took it) may have started, and a blind retry would start a second crawl or a
//! second run. The failure goes to the caller as transient, and the caller's own next try first
//! looks for what the lost one started: the launcher's `find_run`, the crawler poller's attempt
//! mark on the batch (a crawler found running after an attempt is that attempt's crawl).

use crate::client::AwsClients;
use crate::error::{code, port_error};
use async_trait::async_trait;
use aws_sdk_glue::Client;
use aws_sdk_glue::types::{
    CrawlerTargets, DatabaseInput, ExecutionProperty, Job, JobCommand, JobUpdate, S3Target,
    WorkerType,
};
use choreo_domain::config::DatasetConfig;
use choreo_domain::{Config, JobArgs};
use choreo_ports::{
    CrawlStart, CrawlStatus, Crawler, JobRunner, JobStart, JobStatus, PortError, PortErrorKind,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The port's name for the built-in transform, whatever its Glue job is called.
const BUILTIN: &str = "builtin";
/// GetJobRuns page size (Glue's maximum).
const RUNS_PAGE: i32 = 200;

/// The built-in job's definition: Spark (`glueetl`) on Glue 5.0 (Spark 3.5, Python 3.11), two G.1X workers —
/// the smallest Spark job, as one batch is minutes of files. No Glue-side retries: a failed run
/// fails its batch, and an operator retry starts a new run. Several batches (of different
/// datasets) may transform at once; beyond `MAX_CONCURRENT_RUNS` a start is `Throttled` and the
/// launcher tries again later.
const JOB_COMMAND: &str = "glueetl";
const PYTHON_VERSION: &str = "3";
const GLUE_VERSION: &str = "5.0";
/// Glue's Python has no zstd: the built-in script decompresses `.zst` inputs with this module,
/// which Glue installs from PyPI at the start of a run (the version tests/glue/agreement.py runs).
pub const ZSTANDARD: &str = "zstandard==0.25.0";
const WORKERS: i32 = 2;
const MAX_CONCURRENT_RUNS: i32 = 4;
const JOB_TIMEOUT_MINUTES: i32 = 120;

/// An SDK configuration override for a call that must be made at most once: no SDK retry.
fn once() -> aws_sdk_glue::config::Builder {
    aws_sdk_glue::config::Builder::default()
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
}

/// The [`Crawler`] on Glue crawlers.
#[derive(Debug, Clone)]
pub struct GlueCrawler {
    client: Client,
}

impl GlueCrawler {
    /// Crawlers are named per call; the client is all the adapter holds.
    pub fn new(client: Client) -> Self {
        GlueCrawler { client }
    }
}

#[async_trait]
impl Crawler for GlueCrawler {
    /// StartCrawler, without SDK retries (see the module documentation); a crawler already running
    /// (`CrawlerRunningException`) is `AlreadyRunning`.
    async fn start_crawl(&self, crawler: &str) -> Result<CrawlStart, PortError> {
        let start = self.client.start_crawler().name(crawler).customize();
        match start.config_override(once()).send().await {
            Ok(_) => Ok(CrawlStart::Started),
            Err(e) if code(&e) == Some("CrawlerRunningException") => Ok(CrawlStart::AlreadyRunning),
            Err(e) => Err(port_error("start_crawl", crawler, e)),
        }
    }

    /// GetCrawler: RUNNING or STOPPING is `Running`; READY is the outcome of the last crawl.
    async fn crawl_status(&self, crawler: &str) -> Result<CrawlStatus, PortError> {
        let out = self
            .client
            .get_crawler()
            .name(crawler)
            .send()
            .await
            .map_err(|e| port_error("crawl_status", crawler, e))?;
        let c = out.crawler.ok_or_else(|| {
            PortError::permanent("crawl_status", crawler, "GetCrawler returned no crawler")
        })?;
        let last = c.last_crawl().map(|l| {
            (
                l.status().map(|s| s.as_str()).unwrap_or(""),
                l.error_message(),
            )
        });
        Ok(crawl_status_of(
            crawler,
            c.state().map(|s| s.as_str()),
            last,
        ))
    }
}

/// A crawler's state and its last crawl's `(status, error message)` as a [`CrawlStatus`].
fn crawl_status_of(
    crawler: &str,
    state: Option<&str>,
    last: Option<(&str, Option<&str>)>,
) -> CrawlStatus {
    match state {
        Some("READY") => {}
        Some("RUNNING" | "STOPPING") => return CrawlStatus::Running,
        other => {
            // A state added to Glue after this build: keep polling; a crawl that never ends is
            // what the auditor's stuck sweeps are for.
            choreo_telemetry::events::emit(crate::events::GlueCrawlerStateUnknown {
                crawler,
                state: other,
            });
            return CrawlStatus::Running;
        }
    }
    let Some((status, error)) = last else {
        return CrawlStatus::Failed("crawler has not run".into());
    };
    let message = |what: &str| {
        error
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("crawl {what}"))
    };
    match status {
        "SUCCEEDED" => CrawlStatus::Succeeded,
        // moto 5.2 reports a finished crawl as COMPLETED, which AWS never sends
        // (LastCrawlInfo.Status is SUCCEEDED, CANCELLED or FAILED).
        "COMPLETED" => CrawlStatus::Succeeded,
        "FAILED" | "CANCELLED" => CrawlStatus::Failed(message(status)),
        other => CrawlStatus::Failed(message(&format!("ended with status {other:?}"))),
    }
}

/// The [`JobRunner`] on Glue jobs. The port's job `builtin` is the Glue job `aws.builtin_job`;
/// any other name is a Glue job name.
#[derive(Debug, Clone)]
pub struct GlueJobRunner {
    client: Client,
    builtin_job: String,
}

impl GlueJobRunner {
    /// `builtin_job` is the Glue job that the port's job `builtin` names (`aws.builtin_job`).
    pub fn new(client: Client, builtin_job: &str) -> Self {
        GlueJobRunner {
            client,
            builtin_job: builtin_job.to_string(),
        }
    }

    fn glue_job<'a>(&'a self, job: &'a str) -> &'a str {
        if job == BUILTIN {
            &self.builtin_job
        } else {
            job
        }
    }
}

fn job_status(state: &str, error: Option<&str>) -> JobStatus {
    match state {
        "STARTING" | "RUNNING" | "STOPPING" | "WAITING" => JobStatus::Running,
        "SUCCEEDED" => JobStatus::Succeeded,
        "FAILED" | "ERROR" | "TIMEOUT" | "STOPPED" | "EXPIRED" => JobStatus::Failed {
            state: state.to_string(),
            reason: error.filter(|m| !m.is_empty()).unwrap_or(state).to_string(),
        },
        other => {
            // A state added to Glue after this build: keep polling (see `crawl_status`).
            choreo_telemetry::events::emit(crate::events::GlueJobRunStateUnknown { state: other });
            JobStatus::Running
        }
    }
}

#[async_trait]
impl JobRunner for GlueJobRunner {
    /// Pages through GetJobRuns for the run whose `--batch_id` is `batch_id`. A job that does not
    /// exist has no run (`None`; starting it says why). The cost grows with the job's run history
    /// (Glue keeps 90 days, 200 runs a page): AWS returns the newest runs first, so a run started
    /// moments ago is found on the first page, but a batch with no run reads the whole history.
    /// (moto 5.2 returns the oldest first; the result is the same, only the cost differs.)
    async fn find_run(&self, job: &str, batch_id: &str) -> Result<Option<String>, PortError> {
        let glue_job = self.glue_job(job);
        let mut pages = self
            .client
            .get_job_runs()
            .job_name(glue_job)
            .max_results(RUNS_PAGE)
            .into_paginator()
            .send();
        loop {
            let page = match pages.try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(None),
                Err(e) if code(&e) == Some("EntityNotFoundException") => return Ok(None),
                Err(e) => return Err(port_error("find_run", glue_job, e)),
            };
            let found = page.job_runs().iter().find(|run| {
                run.arguments()
                    .and_then(|a| a.get(JobArgs::BATCH_ID))
                    .is_some_and(|b| b == batch_id)
            });
            if let Some(run) = found {
                return Ok(run.id().map(str::to_string));
            }
        }
    }

    /// StartJobRun, without SDK retries (see the module documentation). Too many runs at once (`ConcurrentRunsExceededException`, or the account's
    /// `ResourceNumberLimitExceededException` on concurrent runs) is `Throttled`; a job that does
    /// not exist is a permanent error, so its batch fails with that reason.
    async fn start_run(
        &self,
        job: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<JobStart, PortError> {
        let glue_job = self.glue_job(job);
        if !arguments.contains_key(JobArgs::BATCH_ID) {
            return Err(PortError::permanent(
                "start_run",
                glue_job,
                format!("the arguments must include {}", JobArgs::BATCH_ID),
            ));
        }
        let args: HashMap<String, String> = arguments
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let started = self
            .client
            .start_job_run()
            .job_name(glue_job)
            .set_arguments(Some(args))
            .customize()
            .config_override(once())
            .send()
            .await;
        match started {
            Ok(out) => match out.job_run_id {
                Some(run_id) => Ok(JobStart::Started { run_id }),
                None => Err(PortError::permanent(
                    "start_run",
                    glue_job,
                    "StartJobRun returned no run id",
                )),
            },
            Err(e) => match code(&e) {
                Some(
                    "ConcurrentRunsExceededException" | "ResourceNumberLimitExceededException",
                ) => Ok(JobStart::Throttled),
                Some("EntityNotFoundException") => {
                    let mut err = port_error("start_run", glue_job, e);
                    err.kind = PortErrorKind::Permanent;
                    Err(err)
                }
                _ => Err(port_error("start_run", glue_job, e)),
            },
        }
    }

    /// GetJobRun: STARTING, RUNNING, STOPPING and WAITING are `Running`; FAILED, ERROR, TIMEOUT,
    /// STOPPED and EXPIRED are `Failed` with Glue's error message (or the state).
    async fn run_status(&self, job: &str, run_id: &str) -> Result<JobStatus, PortError> {
        let glue_job = self.glue_job(job);
        let out = self
            .client
            .get_job_run()
            .job_name(glue_job)
            .run_id(run_id)
            .send()
            .await
            .map_err(|e| port_error("run_status", run_id, e))?;
        let run = out.job_run.ok_or_else(|| {
            PortError::permanent("run_status", run_id, "GetJobRun returned no run")
        })?;
        let state = run.job_run_state().map(|s| s.as_str()).unwrap_or("");
        Ok(job_status(state, run.error_message()))
    }
}

// ---------------------------------------------------------------------------------------------
// Resources.

/// The folder a dataset's crawler crawls: `s3://<bucket>/<folder>`, where the folder is
/// [`DatasetConfig::folder`], that of the dataset's literal key prefix. Glue include paths name
/// folders (or single objects), so a prefix that ends inside a name (`daily/2026-`) is widened to
/// its folder (`daily/`).
pub fn crawl_path(bucket: &str, dataset: &DatasetConfig) -> String {
    format!("s3://{bucket}/{}", dataset.folder())
}

/// Creates, if missing, the Glue database `aws.glue_database`, one crawler per distinct
/// [`DatasetConfig::crawled_by`] (S3 targets: the folders of its datasets, see [`crawl_path`];
/// role `aws.glue_role`; a dataset catalogued directly needs none, only the database), and the
/// built-in job `aws.builtin_job` running the script at
/// `script_location`. An existing crawler or job whose role, database, targets or script differ is
/// updated; one that matches is left alone.
pub async fn create_glue(
    clients: &AwsClients,
    config: &Config,
    script_location: &str,
) -> Result<(), PortError> {
    let glue = &clients.glue;
    let aws = &config.aws;
    create_database(glue, &aws.glue_database).await?;
    let mut crawlers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &config.datasets {
        if let Some(crawler) = d.crawled_by() {
            crawlers
                .entry(crawler)
                .or_default()
                .insert(crawl_path(&config.buckets.input, d));
        }
    }
    for (name, paths) in &crawlers {
        ensure_crawler(glue, name, &aws.glue_role, &aws.glue_database, paths).await?;
    }
    let job = JobSpec {
        name: &aws.builtin_job,
        role: &aws.glue_role,
        script_location,
        arguments: job_arguments(config),
    };
    ensure_job(glue, &job).await
}

/// The built-in job's default arguments, which every run gets besides its own: where its output
/// goes, the Python module the script reads zstd inputs with ([`ZSTANDARD`]), and, when a salt is
/// configured, the name of the secret holding it ([`crate::secrets`]): never the salt, which
/// `GetJob` would show to anyone allowed to call it.
pub fn job_arguments(config: &Config) -> HashMap<String, String> {
    let mut args = HashMap::from([
        (
            "--curated_bucket".to_string(),
            config.buckets.curated.clone(),
        ),
        (
            "--additional-python-modules".to_string(),
            ZSTANDARD.to_string(),
        ),
    ]);
    if !config.transform.mask_salt.is_empty() {
        args.insert(
            "--mask_salt_secret".into(),
            config.aws.mask_salt_secret.clone(),
        );
    }
    args
}

/// What `ensure_job` makes the built-in job.
struct JobSpec<'a> {
    name: &'a str,
    role: &'a str,
    script_location: &'a str,
    arguments: HashMap<String, String>,
}

async fn create_database(glue: &Client, name: &str) -> Result<(), PortError> {
    let input = DatabaseInput::builder()
        .name(name)
        .description("Tables of the datasets Choreo ingests, written by its crawlers.")
        .build()
        .map_err(|e| PortError::permanent("create_glue", name, e))?;
    match glue.create_database().database_input(input).send().await {
        Ok(_) => {
            choreo_telemetry::events::emit(crate::events::GlueDatabaseCreated { database: name });
            Ok(())
        }
        Err(e) if code(&e) == Some("AlreadyExistsException") => Ok(()),
        Err(e) => Err(port_error("create_glue", name, e)),
    }
}

fn crawler_targets(paths: &BTreeSet<String>) -> CrawlerTargets {
    paths
        .iter()
        .fold(CrawlerTargets::builder(), |b, p| {
            b.s3_targets(S3Target::builder().path(p).build())
        })
        .build()
}

async fn ensure_crawler(
    glue: &Client,
    name: &str,
    role: &str,
    database: &str,
    paths: &BTreeSet<String>,
) -> Result<(), PortError> {
    let existing = match glue.get_crawler().name(name).send().await {
        Ok(out) => out.crawler,
        Err(e) if code(&e) == Some("EntityNotFoundException") => None,
        Err(e) => return Err(port_error("create_glue", name, e)),
    };
    let Some(existing) = existing else {
        let created = glue
            .create_crawler()
            .name(name)
            .role(role)
            .database_name(database)
            .targets(crawler_targets(paths))
            .send()
            .await;
        return match created {
            Ok(_) => {
                choreo_telemetry::events::emit(crate::events::GlueCrawlerCreated {
                    crawler: name,
                    paths: &format!("{paths:?}"),
                });
                Ok(())
            }
            // Created by someone else meanwhile.
            Err(e) if code(&e) == Some("AlreadyExistsException") => Ok(()),
            Err(e) => Err(port_error("create_glue", name, e)),
        };
    };
    let current: BTreeSet<String> = existing
        .targets()
        .map(|t| {
            t.s3_targets()
                .iter()
                .filter_map(|s| s.path().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if existing.role() == Some(role)
        && existing.database_name() == Some(database)
        && &current == paths
    {
        return Ok(());
    }
    // moto 5.2 has no UpdateCrawler (nor UpdateJob): this path is untested against it.
    glue.update_crawler()
        .name(name)
        .role(role)
        .database_name(database)
        .targets(crawler_targets(paths))
        .send()
        .await
        .map_err(|e| port_error("create_glue", name, e))?;
    choreo_telemetry::events::emit(crate::events::GlueCrawlerUpdated {
        crawler: name,
        paths: &format!("{paths:?}"),
    });
    Ok(())
}

fn job_command(script_location: &str) -> JobCommand {
    JobCommand::builder()
        .name(JOB_COMMAND)
        .python_version(PYTHON_VERSION)
        .script_location(script_location)
        .build()
}

/// Whether an existing job is the one `ensure_job` would create.
fn job_matches(job: &Job, spec: &JobSpec<'_>) -> bool {
    let command = job.command();
    let arguments = job.default_arguments().cloned().unwrap_or_default();
    job.role() == Some(spec.role)
        && job.glue_version() == Some(GLUE_VERSION)
        && command.and_then(|c| c.name()) == Some(JOB_COMMAND)
        && command.and_then(|c| c.script_location()) == Some(spec.script_location)
        && arguments == spec.arguments
}

async fn ensure_job(glue: &Client, spec: &JobSpec<'_>) -> Result<(), PortError> {
    let name = spec.name;
    // Read first: CreateJob on an existing name is not an error everywhere (moto replaces the job).
    let existing = match glue.get_job().job_name(name).send().await {
        Ok(out) => out.job,
        Err(e) if code(&e) == Some("EntityNotFoundException") => None,
        Err(e) => return Err(port_error("create_glue", name, e)),
    };
    let execution = ExecutionProperty::builder()
        .max_concurrent_runs(MAX_CONCURRENT_RUNS)
        .build();
    match existing {
        None => {
            let created = glue
                .create_job()
                .name(name)
                .description("Choreo's built-in transform: a batch's files, cleaned, to Parquet.")
                .role(spec.role)
                .command(job_command(spec.script_location))
                .set_default_arguments(Some(spec.arguments.clone()))
                .glue_version(GLUE_VERSION)
                .worker_type(WorkerType::G1X)
                .number_of_workers(WORKERS)
                .execution_property(execution)
                .max_retries(0)
                .timeout(JOB_TIMEOUT_MINUTES)
                .send()
                .await;
            match created {
                Ok(_) => {
                    choreo_telemetry::events::emit(crate::events::GlueJobCreated { job: name });
                    Ok(())
                }
                Err(e) if code(&e) == Some("AlreadyExistsException") => Ok(()),
                Err(e) => Err(port_error("create_glue", name, e)),
            }
        }
        Some(job) if job_matches(&job, spec) => Ok(()),
        Some(_) => {
            let update = JobUpdate::builder()
                .role(spec.role)
                .command(job_command(spec.script_location))
                .set_default_arguments(Some(spec.arguments.clone()))
                .glue_version(GLUE_VERSION)
                .worker_type(WorkerType::G1X)
                .number_of_workers(WORKERS)
                .execution_property(execution)
                .max_retries(0)
                .timeout(JOB_TIMEOUT_MINUTES)
                .build();
            glue.update_job()
                .job_name(name)
                .job_update(update)
                .send()
                .await
                .map_err(|e| port_error("create_glue", name, e))?;
            choreo_telemetry::events::emit(crate::events::GlueJobUpdated { job: name });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moto::Moto;
    use choreo_domain::config::{
        CompressionSetting, CsvOptions, FileFormat, KeyMatch, SchemaSource,
    };

    fn dataset(
        name: &str,
        prefix: Option<&str>,
        pattern: Option<&str>,
        crawler: Option<&str>,
    ) -> DatasetConfig {
        DatasetConfig {
            name: name.into(),
            key_match: KeyMatch {
                prefix: prefix.map(Into::into),
                pattern: pattern.map(Into::into),
            },
            format: FileFormat::Csv,
            compression: CompressionSetting::Auto,
            csv: CsvOptions::default(),
            schema: SchemaSource::Path("s.json".into()),
            catalog: Default::default(),
            crawler: crawler.map(Into::into),
            job: "builtin".into(),
            personal_data: Vec::new(),
            batch_window_secs: 1,
            batch_max_files: 10,
        }
    }

    fn config() -> Config {
        Config {
            datasets: vec![
                dataset("daily", Some("daily/"), None, None),
                dataset(
                    "monthly",
                    None,
                    Some("monthly/**/*.jsonl.gz"),
                    Some("shared-crawler"),
                ),
                dataset("events", Some("events/2026-"), None, Some("shared-crawler")),
                DatasetConfig {
                    catalog: choreo_domain::config::CatalogMode::Direct,
                    ..dataset("sales", Some("sales/"), None, None)
                },
            ],
            ..Config::default()
        }
    }

    const SCRIPT: &str = "s3://choreo-work/scripts/builtin.py";

    /// The argument names the built-in script's `main` asks `getResolvedOptions` for: those it
    /// always asks for, and those it asks for only when the run has them.
    fn script_arguments() -> (BTreeSet<String>, BTreeSet<String>) {
        let script = crate::bootstrap::BUILTIN_SCRIPT;
        let main = &script[script.find("\ndef main(").expect("the script has a main")..];
        assert!(main.contains("getResolvedOptions(sys.argv, wanted)"));
        let line = |start: &str| {
            let line = main.lines().map(str::trim).find(|l| l.starts_with(start));
            line.unwrap_or_else(|| panic!("no `{start}` in the script's main"))
        };
        let names = |text: &str| -> BTreeSet<String> {
            let names = text.split('"').skip(1).step_by(2);
            names.map(|n| format!("--{n}")).collect()
        };
        let always = line("wanted = [");
        let optional = line("wanted += [");
        let optional = &optional[optional.find(" in (").unwrap()..optional.find(")").unwrap()];
        (names(always), names(optional))
    }

    /// What the launcher passes ([`JobArgs`]) and what bootstrap sets on the job
    /// ([`job_arguments`]) are what the script asks for. Glue's own arguments are Glue's.
    #[test]
    fn the_script_asks_for_the_arguments_a_run_has() {
        let (always, optional) = script_arguments();
        let run = JobArgs {
            batch_id: "b".into(),
            dataset: "d".into(),
            manifest: "w/m.json".into(),
        };
        let glue_own = |k: &String| k != "--additional-python-modules";
        let mut config = config();
        let mut passed: BTreeSet<String> = run.to_arguments().into_keys().collect();
        passed.extend(job_arguments(&config).into_keys().filter(&glue_own));
        assert_eq!(passed, always);
        config.transform.mask_salt = "salt".into();
        let with_salt: BTreeSet<String> = job_arguments(&config)
            .into_keys()
            .filter(&glue_own)
            .collect();
        let when_set: BTreeSet<String> = with_salt.difference(&passed).cloned().collect();
        assert_eq!(when_set, BTreeSet::from(["--mask_salt_secret".to_string()]));
        // An operator's knob, which Choreo never passes: the script's default holds.
        let knobs = BTreeSet::from(["--max_input_bytes".to_string()]);
        assert_eq!(optional, &when_set | &knobs);
    }

    fn args(batch: &str) -> BTreeMap<String, String> {
        JobArgs {
            batch_id: batch.to_string(),
            dataset: "daily".into(),
            manifest: format!("choreo-work/m/{batch}.json"),
        }
        .to_arguments()
    }

    #[test]
    fn glue_crawl_paths_are_the_datasets_folders() {
        let path = |prefix, pattern| crawl_path("in-bucket", &dataset("d", prefix, pattern, None));
        assert_eq!(path(Some("daily/"), None), "s3://in-bucket/daily/");
        assert_eq!(path(Some("daily/2026-"), None), "s3://in-bucket/daily/");
        assert_eq!(path(Some("a/b/"), Some("a/b/*.csv")), "s3://in-bucket/a/b/");
        assert_eq!(
            path(None, Some("monthly/**/*.gz")),
            "s3://in-bucket/monthly/"
        );
        assert_eq!(path(None, Some("logs/20?? /x")), "s3://in-bucket/logs/");
        assert_eq!(path(None, Some("*.csv")), "s3://in-bucket/");
        assert_eq!(path(None, Some("exact/key.csv")), "s3://in-bucket/exact/");
    }

    #[test]
    fn glue_states_map_to_outcomes() {
        let failed = |state: &str, reason: &str| JobStatus::Failed {
            state: state.into(),
            reason: reason.into(),
        };
        for s in ["STARTING", "RUNNING", "STOPPING", "WAITING"] {
            assert_eq!(job_status(s, None), JobStatus::Running, "{s}");
        }
        assert_eq!(job_status("SUCCEEDED", None), JobStatus::Succeeded);
        assert_eq!(job_status("FAILED", Some("boom")), failed("FAILED", "boom"));
        for s in ["ERROR", "TIMEOUT", "STOPPED", "EXPIRED"] {
            assert_eq!(job_status(s, None), failed(s, s));
            assert_eq!(job_status(s, Some("")), failed(s, s));
        }

        let c = |state, last| crawl_status_of("c", state, last);
        assert_eq!(c(Some("RUNNING"), None), CrawlStatus::Running);
        assert_eq!(
            c(Some("STOPPING"), Some(("SUCCEEDED", None))),
            CrawlStatus::Running
        );
        assert_eq!(
            c(Some("READY"), None),
            CrawlStatus::Failed("crawler has not run".into())
        );
        assert_eq!(
            c(Some("READY"), Some(("SUCCEEDED", None))),
            CrawlStatus::Succeeded
        );
        assert_eq!(
            c(Some("READY"), Some(("FAILED", Some("no access to s3://x")))),
            CrawlStatus::Failed("no access to s3://x".into())
        );
        assert_eq!(
            c(Some("READY"), Some(("CANCELLED", None))),
            CrawlStatus::Failed("crawl CANCELLED".into())
        );
    }

    /// A crawler's S3 target paths, checking its role and database.
    async fn targets(glue: &Client, c: &Config, name: &str) -> Vec<String> {
        let crawler = glue
            .get_crawler()
            .name(name)
            .send()
            .await
            .unwrap()
            .crawler
            .unwrap();
        assert_eq!(crawler.role(), Some(c.aws.glue_role.as_str()));
        assert_eq!(crawler.database_name(), Some(c.aws.glue_database.as_str()));
        crawler
            .targets()
            .unwrap()
            .s3_targets()
            .iter()
            .map(|t| t.path().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn glue_resources_are_created_once() {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let c = config();
        create_glue(&clients, &c, SCRIPT).await.unwrap();
        let glue = &clients.glue;
        glue.get_database().name("choreo").send().await.unwrap();
        assert_eq!(
            targets(glue, &c, "daily-crawler").await,
            ["s3://choreo-input/daily/"]
        );
        assert_eq!(
            targets(glue, &c, "shared-crawler").await,
            ["s3://choreo-input/events/", "s3://choreo-input/monthly/"]
        );
        // The direct dataset has none.
        let crawlers = glue.list_crawlers().send().await.unwrap();
        assert_eq!(
            crawlers.crawler_names(),
            ["daily-crawler", "shared-crawler"]
        );
        let job = glue
            .get_job()
            .job_name("choreo-builtin")
            .send()
            .await
            .unwrap()
            .job
            .unwrap();
        let spec = JobSpec {
            name: "choreo-builtin",
            role: &c.aws.glue_role,
            script_location: SCRIPT,
            arguments: job_arguments(&c),
        };
        assert!(job_matches(&job, &spec));
        assert_eq!(
            job.default_arguments().unwrap()["--curated_bucket"],
            "choreo-curated"
        );
        // No salt configured: none shown.
        assert!(!job.default_arguments().unwrap().contains_key("--mask_salt"));
        assert_eq!(job.command().unwrap().python_version(), Some("3"));
        assert_eq!(
            job.execution_property().unwrap().max_concurrent_runs(),
            MAX_CONCURRENT_RUNS
        );

        // Again: everything is there and as wanted, so only reads.
        clients.calls.reset();
        create_glue(&clients, &c, SCRIPT).await.unwrap();
        let ops: Vec<String> = clients
            .calls
            .snapshot()
            .into_keys()
            .map(|(_, op)| op)
            .collect();
        assert_eq!(ops, ["CreateDatabase", "GetCrawler", "GetJob"]);
    }

    /// The port's contract (`choreo_ports::testkit`), on Glue (moto, whose crawls run a second).
    #[tokio::test]
    async fn the_crawler_keeps_the_ports_contract() {
        let moto = Moto::start();
        moto.set_transition_seconds("glue::crawl", 1);
        let clients = AwsClients::emulator(&moto.endpoint).await;
        create_glue(&clients, &config(), SCRIPT).await.unwrap();
        let crawler = GlueCrawler::new(clients.glue.clone());
        // Before its first crawl, Glue's crawler has no last crawl to report.
        assert_eq!(
            crawler.crawl_status("daily-crawler").await.unwrap(),
            CrawlStatus::Failed("crawler has not run".into())
        );
        choreo_ports::testkit::crawler_contract(&crawler, "daily-crawler").await;
    }

    #[tokio::test]
    async fn the_job_runner_keeps_the_ports_contract() {
        let moto = Moto::start();
        moto.set_transition_seconds("glue::job_run", 1);
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let c = config();
        create_glue(&clients, &c, SCRIPT).await.unwrap();
        let jobs = GlueJobRunner::new(clients.glue.clone(), &c.aws.builtin_job);
        choreo_ports::testkit::job_runner_contract(&jobs, "builtin").await;

        // The port's "builtin" is the Glue job `aws.builtin_job`, by either name.
        let run = jobs.find_run("builtin", "b-1").await.unwrap();
        assert!(run.is_some());
        assert_eq!(jobs.find_run(&c.aws.builtin_job, "b-1").await.unwrap(), run);
        // A job Glue does not have cannot start: a permanent error naming it.
        let err = jobs
            .start_run("nightly-etl", &args("b-1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, PortErrorKind::Permanent, "{err}");
        assert!(err.to_string().contains("nightly-etl"), "{err}");
        assert_eq!(jobs.find_run("nightly-etl", "b-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn glue_too_many_runs_are_throttled() {
        let moto = Moto::start();
        moto.set_transition_seconds("glue::job_run", 60);
        let clients = AwsClients::emulator(&moto.endpoint).await;
        clients
            .glue
            .create_job()
            .name("nightly-etl")
            .role("arn:aws:iam::123456789012:role/r")
            .command(job_command(SCRIPT))
            .execution_property(ExecutionProperty::builder().max_concurrent_runs(1).build())
            .send()
            .await
            .unwrap();
        let jobs = GlueJobRunner::new(clients.glue.clone(), "choreo-builtin");
        assert!(matches!(
            jobs.start_run("nightly-etl", &args("b-1")).await.unwrap(),
            JobStart::Started { .. }
        ));
        assert_eq!(
            jobs.start_run("nightly-etl", &args("b-2")).await.unwrap(),
            JobStart::Throttled
        );
    }
}
