//! The transform launcher on its own, on the local backend and tokio's paused clock: job-start
//! attempts, failures and lost polls play out in milliseconds.

use choreo_domain::{Batch, BatchState, Event, FileId, FileRecord, FileState, Stage, Transition};
use choreo_ports::Ports;
use choreo_runtime::testkit::{StageRig, ThrottledJobs, dataset};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_secs(30);

fn rig(job: &str, tweak: impl FnOnce(&mut choreo_domain::Config)) -> StageRig {
    let mut sales = dataset("sales");
    sales.job = job.into();
    StageRig::open(vec![sales], |c| {
        c.runtime.poll_interval_secs = POLL.as_secs();
        tweak(c);
    })
}

/// Two files catalogued in one batch, as the crawler poller leaves them, and its announcement.
async fn cataloged(rig: &StageRig, job: &str) -> (Batch, Vec<FileRecord>) {
    let mut files = Vec::new();
    for name in ["a.csv", "b.csv"] {
        files.push(rig.file("sales", name, "id,amount\n1,2\n", true).await);
    }
    let ids: Vec<FileId> = files.iter().map(|f| f.id.clone()).collect();
    let batch = Batch::new(
        "b-1".into(),
        "sales",
        "sales-crawler".into(),
        job.into(),
        BatchState::Cataloged,
        ids.clone(),
    );
    assert!(rig.state().create_batch(&batch).await.unwrap());
    for id in &ids {
        let t = Transition::new(
            id.clone(),
            Stage::Crawler,
            FileState::Valid,
            FileState::Cataloged,
        )
        .unwrap()
        .batch(batch.id.clone());
        rig.state().transition(&t).await.unwrap();
    }
    rig.publish(Event::BatchCataloged {
        batch_id: batch.id.clone(),
        dataset: "sales".into(),
        files: ids,
    })
    .await;
    (batch, files)
}

/// Waits for the batch to end (INGESTED or FAILED) and returns it.
async fn ended(rig: &StageRig, id: &str) -> Batch {
    rig.until("the batch to end", || async {
        match rig.state().get_batch(id).await.unwrap() {
            Some(b) if matches!(b.state, BatchState::Ingested | BatchState::Failed) => Ok(b),
            other => Err(format!("{:?}", other.map(|b| b.state))),
        }
    })
    .await
}

fn throttled(rig: &StageRig, throttle: usize) -> (Ports, Arc<ThrottledJobs>) {
    let mut ports = rig.ports();
    let jobs = ThrottledJobs::new(ports.jobs.clone(), throttle);
    ports.jobs = jobs.clone();
    (ports, jobs)
}

#[tokio::test(start_paused = true)]
async fn a_throttled_start_is_tried_again_at_each_poll_until_the_run_starts() {
    let job = "command:true";
    let mut rig = rig(job, |c| c.runtime.job_start_attempts = 5);
    let (ports, jobs) = throttled(&rig, 3);
    rig.start_with(choreo_transformer::SPEC, ports);
    let began = tokio::time::Instant::now();
    let (batch, files) = cataloged(&rig, job).await;

    let done = ended(&rig, &batch.id).await;
    assert_eq!(done.state, BatchState::Ingested, "{:?}", done.reason);
    assert_eq!(jobs.starts(), 4, "three throttled, one run");
    assert_eq!(done.start_attempts, 3);
    assert!(StageRig::elapsed(began) >= POLL * 3, "a poll apart each");
    for f in &files {
        assert_eq!(rig.record(&f.id).await.state, FileState::Ingested);
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_that_cannot_start_fails_its_batch_after_its_attempts() {
    let job = "command:true";
    let mut rig = rig(job, |c| c.runtime.job_start_attempts = 3);
    let (ports, jobs) = throttled(&rig, usize::MAX);
    rig.start_with(choreo_transformer::SPEC, ports);
    let (batch, files) = cataloged(&rig, job).await;

    let done = ended(&rig, &batch.id).await;
    assert_eq!(done.state, BatchState::Failed);
    assert_eq!(jobs.starts(), 3);
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("throttled"), "{reason}");
    for f in &files {
        let r = rig.record(&f.id).await;
        assert_eq!(r.state, FileState::Failed);
        assert_eq!(r.reason.as_deref(), Some(reason.as_str()));
    }
    let failed: Vec<_> = rig
        .published(&rig.config().queues.audit)
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::BatchFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1, "announced once: {failed:?}");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_run_fails_its_batch_with_the_end_of_its_stderr() {
    let job = "command:echo 'no such table' >&2; exit 3";
    let mut rig = rig(job, |_| {});
    rig.start(choreo_transformer::SPEC);
    let (batch, files) = cataloged(&rig, job).await;

    let done = ended(&rig, &batch.id).await;
    assert_eq!(done.state, BatchState::Failed);
    let reason = done.reason.unwrap_or_default();
    assert!(reason.contains("no such table"), "{reason}");
    for f in &files {
        assert_eq!(rig.record(&f.id).await.state, FileState::Failed);
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_job_poll_is_sent_again_once_the_batch_lease_lapses() {
    let job = "command:true";
    let lease = Duration::from_secs(300);
    let mut rig = rig(job, |c| c.runtime.lease_secs = lease.as_secs());
    // Every start is throttled until the poll is lost, then the run starts.
    let (ports, jobs) = throttled(&rig, usize::MAX);
    let (batch, files) = cataloged(&rig, job).await;
    rig.start_with(choreo_transformer::SPEC, ports.clone());
    rig.until("a first attempt", || async {
        match jobs.starts() {
            0 => Err("no start yet".into()),
            n => Ok(n),
        }
    })
    .await;
    rig.stop().await;
    rig.queue(&rig.config().queues.transform)
        .purge()
        .await
        .unwrap();
    let held = rig
        .state()
        .lease(&format!("job:{}", batch.id))
        .await
        .unwrap()
        .expect("the batch's lease is held");
    jobs.throttle_next(0);

    rig.start_with(choreo_transformer::SPEC, ports);
    let done = ended(&rig, &batch.id).await;
    assert_eq!(done.state, BatchState::Ingested, "{:?}", done.reason);
    assert!(
        choreo_domain::clock::now() >= held.expires_at,
        "the watchdog sent the poll again only once the lease lapsed"
    );
    for f in &files {
        assert_eq!(rig.record(&f.id).await.state, FileState::Ingested);
    }
    rig.stop().await;
}
