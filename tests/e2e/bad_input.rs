//! Bad input loses nothing and crashes nothing.

use crate::helpers::TestApp;
use choreo_domain::FileState;
use choreo_domain::config::Queues;
use choreo_ports::OutgoingMessage;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_reach_the_dead_letter_queue_and_the_pipeline_goes_on() {
    let mut app = TestApp::new(|c| c.queues.max_receive_count = 2).await;
    app.start();
    let config = app.pipeline.settings.config.clone();
    let backend = app.pipeline.backend.clone();
    let poison = [
        (config.queues.ingest.clone(), "this is not a notification"),
        (
            config.queues.ingest.clone(),
            r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#,
        ),
        (
            config.queues.validate.clone(),
            r#"{"version":1,"id":"x","occurred_at":"2026-11-26T00:00:00Z","event":{"type":"Nonsense"}}"#,
        ),
        (
            config.queues.crawl.clone(),
            r#"{"version":99,"id":"x","occurred_at":"2026-11-26T00:00:00Z","event":{"type":"CrawlPoll","batch_id":"b"}}"#,
        ),
    ];
    for (queue, body) in &poison {
        backend
            .queue(queue)
            .send(
                OutgoingMessage {
                    body: body.to_string(),
                    ..Default::default()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
    }
    // A good file goes through meanwhile.
    app.put("daily/2026-11-20.csv", b"order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-20,Ada,ada@example.com,3.50,EUR,1\n").await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut dead = 0;
        for q in [
            &config.queues.ingest,
            &config.queues.validate,
            &config.queues.crawl,
        ] {
            dead += backend
                .queue(&Queues::dlq_of(q))
                .depth()
                .await
                .unwrap()
                .total();
        }
        if dead == poison.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{dead} of {} poison messages dead-lettered",
            poison.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records["daily/2026-11-20.csv"].state, FileState::Ingested);
    let ingest_dlq = backend.queue(&Queues::dlq_of(&config.queues.ingest));
    let dead = ingest_dlq
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    let bodies: Vec<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    assert!(bodies.contains(&"this is not a notification"), "{bodies:?}");
    assert!(dead.iter().all(|m| m.receive_count >= 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_dropped_into_the_input_directory_is_ingested() {
    let mut app = TestApp::new(|_| {}).await;
    app.start();
    // Written straight into the bucket's directory, as a user or another program would.
    let dir = app
        .pipeline
        .settings
        .config
        .data_dir
        .join("buckets")
        .join(&app.pipeline.settings.config.buckets.input)
        .join("daily");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dropped in.csv"),
        "order_id,order_date,customer,email,amount,currency,quantity\n1,2026-11-21,Bruno,bruno@example.com,9.99,USD,2\n",
    )
    .unwrap();
    app.settle().await;
    let records = app.by_key().await;
    app.stop().await;
    let r = &records["daily/dropped in.csv"];
    assert_eq!(r.state, FileState::Ingested, "{r:#?}");
    assert_eq!(records.len(), 1, "{records:#?}");
}
