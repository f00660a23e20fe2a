//! `choreo bootstrap`: every resource the pipeline needs, created idempotently — run it twice and the
//! second run changes nothing. On an emulator (moto) it also makes Glue crawls and job runs take a
//! little time, as they do on AWS (moto's own crawls never finish otherwise).

use crate::AwsClients;
use choreo_domain::Config;
use choreo_ports::PortError;

/// The built-in transform's Glue script, uploaded to the work bucket.
pub const BUILTIN_SCRIPT: &str = include_str!("../../../deploy/glue/choreo_builtin.py");
/// Where the script goes in the work bucket.
pub const BUILTIN_SCRIPT_KEY: &str = "scripts/choreo_builtin.py";

/// What the bootstrap did, for the command's output.
#[derive(Debug, Default)]
pub struct Bootstrapped {
    pub steps: Vec<String>,
}

/// Creates (or confirms) queues and their dead-letter queues, topics and subscriptions, buckets and
/// the input bucket's notifications, the tables, the mask salt's secret (when a salt is set), the
/// Glue database, crawlers and built-in job.
pub async fn bootstrap(clients: &AwsClients, config: &Config) -> Result<Bootstrapped, PortError> {
    let mut done = Bootstrapped::default();
    crate::messaging_setup::create_queues(clients, config).await?;
    done.steps.push(format!(
        "queues: {} with dead-letter queues (maxReceiveCount {})",
        config.running_queues().join(", "),
        config.queues.max_receive_count
    ));
    crate::messaging_setup::create_topics(clients, config).await?;
    done.steps.push(format!(
        "topics: {} (filtered subscriptions, raw delivery), {}",
        config.topics.events, config.topics.alerts
    ));
    crate::messaging_setup::create_buckets(clients, config).await?;
    let b = &config.buckets;
    done.steps.push(format!(
        "buckets: {} (notifying {}), {}, {}, {}",
        b.input, config.queues.ingest, b.failed, b.curated, b.work
    ));
    crate::dynamo::create_tables(clients, &config.aws).await?;
    done.steps.push(format!(
        "tables: {} (index by dataset and state, {} shards), {}",
        config.aws.state_table, config.aws.index_shards, config.aws.audit_table
    ));
    if !config.extracts.is_empty() {
        crate::keys::create_extract_table(clients, &config.aws.extract_table).await?;
        done.steps.push(format!(
            "table: {} (extracts' keys, ticks and units)",
            config.aws.extract_table
        ));
        let schedules = crate::schedules::create_schedules(clients, config).await?;
        done.steps.push(format!(
            "schedules: {} (EventBridge Scheduler, ticks to {})",
            schedules.join(", "),
            config.queues.extract
        ));
    }
    clients
        .s3
        .put_object()
        .bucket(&b.work)
        .key(BUILTIN_SCRIPT_KEY)
        .body(BUILTIN_SCRIPT.as_bytes().to_vec().into())
        .send()
        .await
        .map_err(|e| crate::error::port_error("put_object", BUILTIN_SCRIPT_KEY, e))?;
    let script = format!("s3://{}/{BUILTIN_SCRIPT_KEY}", b.work);
    let salt = crate::secrets::ensure_mask_salt(clients, config).await?;
    if salt != crate::secrets::SaltSecret::NotNeeded {
        done.steps.push(format!(
            "secret: {} (the mask salt, {salt:?}; the Glue job gets its name only)",
            config.aws.mask_salt_secret
        ));
    }
    crate::glue::create_glue(clients, config, &script).await?;
    done.steps.push(format!(
        "glue: database {}, {} crawler(s), job {} ({script})",
        config.aws.glue_database,
        config
            .datasets
            .iter()
            .filter_map(|d| d.crawled_by())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        config.aws.builtin_job
    ));
    if let Some(endpoint) = &clients.endpoint {
        let endpoint = endpoint.clone();
        let moto = tokio::task::spawn_blocking(move || crate::moto::configure(&endpoint, 2))
            .await
            .unwrap_or(false);
        if moto {
            done.steps
                .push("emulator: moto; crawls and job runs take 2 s".into());
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script must at least compile (python3 is needed to test); tests/e2e/glue.rs runs it on a
    /// local Spark against the built-in transform, and its Glue entry point against moto.
    #[test]
    fn the_builtin_script_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("choreo_builtin.py");
        std::fs::write(&path, BUILTIN_SCRIPT).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "py_compile"])
            .arg(&path)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // It writes what the local runner writes, where the local runner writes it.
        assert!(BUILTIN_SCRIPT.contains("dataset={dataset}/ingest_date={day}/"));
        assert!(BUILTIN_SCRIPT.contains("F.sha2(F.concat(F.lit(plan.salt)"));
    }

    #[test]
    fn the_job_gets_the_curated_bucket_and_the_salt_secret_if_a_salt_is_set() {
        let mut c = Config::default();
        let args = crate::glue::job_arguments(&c);
        assert_eq!(args["--curated_bucket"], "choreo-curated");
        assert!(!args.contains_key("--mask_salt_secret"));
        c.transform.mask_salt = "pepper".into();
        let args = crate::glue::job_arguments(&c);
        assert_eq!(args["--mask_salt_secret"], "choreo-mask-salt");
        assert!(!args.values().any(|v| v.contains("pepper")), "{args:?}");
    }

    /// On moto: bootstrap keeps the salt in Secrets Manager, idempotently, and the job's arguments
    /// name the secret without holding the salt.
    #[tokio::test]
    async fn bootstrap_keeps_the_salt_in_a_secret_and_out_of_the_job() {
        use crate::secrets::{SaltSecret, ensure_mask_salt};
        let moto = crate::moto::Moto::start();
        let clients = crate::AwsClients::emulator(&moto.endpoint).await;
        let mut c = Config::default();
        c.transform.mask_salt = "pepper-5bd2".into();
        let done = bootstrap(&clients, &c).await.unwrap();
        assert!(
            done.steps.iter().any(|s| s.contains("choreo-mask-salt")),
            "{done:?}"
        );
        let secret = clients
            .secrets
            .get_secret_value()
            .secret_id("choreo-mask-salt")
            .send()
            .await
            .unwrap();
        assert_eq!(secret.secret_string(), Some("pepper-5bd2"));
        let job = clients
            .glue
            .get_job()
            .job_name(&c.aws.builtin_job)
            .send()
            .await
            .unwrap()
            .job
            .unwrap();
        let args = job.default_arguments().unwrap();
        assert_eq!(args["--mask_salt_secret"], "choreo-mask-salt");
        assert!(!args.contains_key("--mask_salt"), "{args:?}");
        assert!(
            !args.values().any(|v| v.contains("pepper-5bd2")),
            "{args:?}"
        );

        // Again: only read. A new salt in the configuration replaces the secret's value.
        assert_eq!(
            ensure_mask_salt(&clients, &c).await.unwrap(),
            SaltSecret::Unchanged
        );
        c.transform.mask_salt = "pepper-2".into();
        assert_eq!(
            ensure_mask_salt(&clients, &c).await.unwrap(),
            SaltSecret::Updated
        );
        let secret = clients
            .secrets
            .get_secret_value()
            .secret_id("choreo-mask-salt")
            .send()
            .await
            .unwrap();
        assert_eq!(secret.secret_string(), Some("pepper-2"));
    }
}
