//! The crawler poller on its own, on the local backend and tokio's paused clock: windows, shared
//! crawls, the crawler's lease and lost timers play out in milliseconds.

use choreo_domain::{BatchState, Event, FileId, FileState};
use choreo_runtime::testkit::{StageRig, dataset};
use std::time::Duration;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(300);

fn validated(file: &FileId) -> Event {
    Event::FileValidated {
        file_id: file.clone(),
        dataset: "sales".into(),
    }
}

fn rig(crawl_min: Duration, tweak: impl FnOnce(&mut choreo_domain::Config)) -> StageRig {
    let mut sales = dataset("sales");
    sales.batch_window_secs = WINDOW.as_secs();
    StageRig::open(vec![sales], |c| {
        c.local.crawl_min_secs = crawl_min.as_secs();
        tweak(c);
    })
}

/// The batches the transform launcher was told of, with their files.
async fn cataloged(rig: &StageRig) -> Vec<(String, Vec<FileId>)> {
    rig.published(&rig.config().queues.transform)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::BatchCataloged {
                batch_id, files, ..
            } => Some((batch_id, files)),
            _ => None,
        })
        .collect()
}

async fn cataloged_count(rig: &StageRig, n: usize) -> Result<Vec<(String, Vec<FileId>)>, String> {
    let seen = cataloged(rig).await;
    if seen.len() >= n {
        Ok(seen)
    } else {
        Err(format!("{} batches catalogued", seen.len()))
    }
}

#[tokio::test(start_paused = true)]
async fn files_wait_for_their_window_and_one_crawl_catalogues_them_all() {
    let mut rig = rig(Duration::ZERO, |_| {});
    rig.start(choreo_crawler::SPEC);
    let opened = Instant::now();
    let mut ids = Vec::new();
    for (i, gap) in [0, 100, 100].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(gap)).await;
        let f = rig
            .file("sales", &format!("{i}.csv"), "id,amount\n1,2.5\n", true)
            .await;
        rig.publish(validated(&f.id)).await;
        ids.push(f.id);
    }
    // Just before the window closes, nothing is cut.
    tokio::time::sleep_until(opened + WINDOW - Duration::from_secs(5)).await;
    assert!(cataloged(&rig).await.is_empty());
    assert!(rig.backend.crawler().history().unwrap().is_empty());

    let batches = rig.until("one batch", || cataloged_count(&rig, 1)).await;
    let waited = StageRig::elapsed(opened);
    assert!(waited >= WINDOW, "catalogued after {waited:?}");
    assert!(waited < WINDOW + Duration::from_secs(30), "{waited:?}");
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].1, ids, "one batch, files in the order they came");
    assert_eq!(rig.backend.crawler().history().unwrap().len(), 1);
    for id in &ids {
        let r = rig.record(id).await;
        assert_eq!(r.state, FileState::Cataloged);
        assert_eq!(r.batch_id.as_deref(), Some(batches[0].0.as_str()));
    }
    // The crawler is free and the window closed: no lease is left held.
    for lease in ["window:sales", "crawler:sales-crawler"] {
        let held = rig.state().lease(lease).await.unwrap();
        assert!(
            held.as_ref()
                .is_none_or(|l| l.expires_at <= choreo_domain::clock::now()),
            "{lease}: {held:?}"
        );
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_file_valid_during_a_crawl_waits_for_it_and_is_cut_as_it_ends() {
    let crawl = Duration::from_secs(240);
    let mut rig = rig(crawl, |_| {});
    rig.start(choreo_crawler::SPEC);
    let first = rig.file("sales", "a.csv", "id,amount\n1,2\n", true).await;
    rig.publish(validated(&first.id)).await;
    // The window closes and the crawl starts.
    let started = rig
        .until("a crawl", || async {
            match rig.backend.crawler().history().unwrap().first() {
                Some(run) => Ok(run.started_at),
                None => Err("no crawl".into()),
            }
        })
        .await;
    let late = rig.file("sales", "b.csv", "id,amount\n2,3\n", true).await;
    rig.publish(validated(&late.id)).await;

    let batches = rig.until("two batches", || cataloged_count(&rig, 2)).await;
    assert_eq!(batches[0].1, vec![first.id.clone()]);
    assert_eq!(batches[1].1, vec![late.id.clone()]);
    let runs = rig.backend.crawler().history().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let first_end = runs[0].finished_at.expect("the first crawl ended");
    assert!(first_end - started >= chrono::Duration::from_std(crawl).unwrap());
    // The late file did not wait a window of its own after the crawl: it was cut as it ended.
    let second = rig.state().get_batch(&batches[1].0).await.unwrap().unwrap();
    let lag = (second.created_at - first_end).to_std().unwrap_or_default();
    assert!(lag < Duration::from_secs(30), "cut {lag:?} after the crawl");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_crawl_poll_is_sent_again_once_the_crawler_lease_lapses() {
    let lease = Duration::from_secs(120);
    let mut rig = rig(Duration::from_secs(60), |c| {
        c.runtime.lease_secs = lease.as_secs();
        c.runtime.poll_interval_secs = 10;
    });
    let queue = rig.queue(&rig.config().queues.crawl);
    let f = rig.file("sales", "a.csv", "id,amount\n1,2\n", true).await;
    rig.publish(validated(&f.id)).await;
    rig.start(choreo_crawler::SPEC);
    // The cut is made and its lead's first poll goes out; then the stage stops and the timer is
    // lost, as a purged queue would lose it.
    let lead = rig
        .until("a crawling batch", || async {
            match rig
                .state()
                .batches_in(BatchState::Crawling)
                .await
                .unwrap()
                .pop()
            {
                Some(b) => Ok(b),
                None => Err("none".into()),
            }
        })
        .await;
    rig.stop().await;
    queue.purge().await.unwrap();
    let held = rig
        .state()
        .lease("crawler:sales-crawler")
        .await
        .unwrap()
        .expect("the cut holds the crawler");

    rig.start(choreo_crawler::SPEC);
    let batches = rig.until("the batch", || cataloged_count(&rig, 1)).await;
    assert_eq!(batches[0].0, lead.id);
    assert!(
        choreo_domain::clock::now() >= held.expires_at,
        "the watchdog sent the poll again only once the lease lapsed"
    );
    assert_eq!(rig.record(&f.id).await.state, FileState::Cataloged);
    assert_eq!(
        rig.backend.crawler().history().unwrap().len(),
        1,
        "one crawl"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_window_timer_is_sent_again_once_the_window_lease_lapses() {
    let mut rig = rig(Duration::ZERO, |_| {});
    let queue = rig.queue(&rig.config().queues.crawl);
    let f = rig.file("sales", "a.csv", "id,amount\n1,2\n", true).await;
    rig.publish(validated(&f.id)).await;
    rig.start(choreo_crawler::SPEC);
    // The window opens (its lease taken, its timer sent); then the timer is lost.
    let window = rig
        .until("the window", || async {
            match rig.state().lease("window:sales").await.unwrap() {
                Some(l) => Ok(l),
                None => Err("no window".into()),
            }
        })
        .await;
    rig.stop().await;
    queue.purge().await.unwrap();

    rig.start(choreo_crawler::SPEC);
    let batches = rig.until("the batch", || cataloged_count(&rig, 1)).await;
    assert_eq!(batches[0].1, vec![f.id.clone()]);
    assert!(
        choreo_domain::clock::now() >= window.expires_at,
        "the watchdog opened a window again only once the lease lapsed"
    );
    assert_eq!(rig.record(&f.id).await.state, FileState::Cataloged);
    rig.stop().await;
}
