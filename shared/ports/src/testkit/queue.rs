//! [`Queue`]'s contract.
//!
//! Each case takes a fresh queue with its dead-letter queue, so that no case sees another's messages
//! and nothing needs a purge (SQS allows one a minute). Durations are short where the backend
//! allows: SQS rounds a sub-second visibility timeout or delay up to a second, so the cases wait for
//! a message with a long poll rather than a sleep. Depths are asserted exactly: the local queue and
//! moto count exactly, where real SQS's approximate counts would need time to settle.

use crate::{OutgoingMessage, PortError, PortErrorKind, Queue, QueueDepth};
use choreo_domain::event::ATTR_AWS_TRACE_HEADER;
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A queue to test, with its dead-letter queue and redrive policy.
pub struct QueueUnderTest {
    /// An empty queue that moves a message to `dlq` once it has been received `max_receive_count`
    /// times.
    pub queue: Arc<dyn Queue>,
    /// `queue`'s dead-letter queue, empty and without a redrive policy of its own.
    pub dlq: Arc<dyn Queue>,
    /// Small: the suite receives a message that many times.
    pub max_receive_count: u32,
}

/// Documented differences of an emulator from the service it stands for, which the contract
/// tolerates where they show and nowhere else. [`Default`] tolerates none.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmulatorDifferences {
    /// moto's `change_message_visibility` hides any message that ever had the receipt, even one
    /// whose visibility lapsed; SQS leaves a message that is not in flight visible (it answers
    /// `MessageNotInflight`, or nothing: localstack/localstack#9632 checked this against AWS).
    pub hides_messages_not_in_flight: bool,
    /// moto's `delete_message` and `change_message_visibility` answer every receipt they do not
    /// know with `ReceiptHandleIsInvalid` "The input receipt handle is invalid.", also for a
    /// message already gone, so the adapter must take it as stale and cannot tell a malformed
    /// receipt, which SQS calls "... is not a valid receipt handle", from it. moto's batch delete
    /// does tell, so batches are held to the contract on moto too.
    pub malformed_receipts_read_as_stale: bool,
}

impl EmulatorDifferences {
    /// moto's, as of moto 5.2.
    pub const MOTO: EmulatorDifferences = EmulatorDifferences {
        hides_messages_not_in_flight: true,
        malformed_receipts_read_as_stale: true,
    };
}

/// Every case of [`Queue`]'s contract, each on a queue pair `fresh` makes.
pub async fn queue_contract(
    fresh: impl AsyncFn() -> QueueUnderTest,
    differences: EmulatorDifferences,
) {
    a_message_round_trips_and_is_acknowledged_once(fresh().await).await;
    an_unacknowledged_message_comes_back_counted_with_a_new_receipt(fresh().await).await;
    a_delivery_is_handed_back_or_extended_while_in_flight(fresh().await, differences).await;
    a_delay_hides_a_message_until_due(fresh().await).await;
    a_long_poll_returns_when_a_message_arrives(fresh().await).await;
    receives_come_in_batches_of_at_most_ten(fresh().await).await;
    out_of_range_durations_are_clamped(fresh().await).await;
    limits_are_refused_before_sending(fresh().await).await;
    exhausted_messages_move_to_the_dead_letter_queue(fresh().await).await;
    peek_shows_without_taking_and_purge_empties(fresh().await).await;
    oldest_message_age_counts_backlog_not_timers(fresh().await).await;
}

const NO_WAIT: Duration = Duration::ZERO;
/// A long poll for a message that is there or about to be: SQS's short poll samples its servers
/// and may miss one.
const WAIT: Duration = Duration::from_secs(1);
/// Sub-second on the local backend; SQS rounds it up to a second.
const SHORT: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(60);
/// How far apart the test's clock and the backend's stamps may be.
const SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const X_RAY: &str = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: body.to_string(),
        attributes: BTreeMap::from([
            ("event_type".to_string(), "FileRegistered".to_string()),
            ("traceparent".to_string(), TRACEPARENT.to_string()),
            (ATTR_AWS_TRACE_HEADER.to_string(), X_RAY.to_string()),
        ]),
    }
}

fn depth(visible: u64, in_flight: u64, delayed: u64) -> QueueDepth {
    QueueDepth {
        visible,
        in_flight,
        delayed,
    }
}

fn assert_permanent(result: Result<(), PortError>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind, PortErrorKind::Permanent, "{what}: {e}"),
        Ok(()) => panic!("{what}: accepted"),
    }
}

async fn a_message_round_trips_and_is_acknowledged_once(t: QueueUnderTest) {
    let q = &t.queue;
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    assert!(q.receive(10, NO_WAIT, LONG).await.unwrap().is_empty());

    let before = Utc::now() - SLACK;
    q.send(message("{\"n\":1}"), Duration::ZERO).await.unwrap();
    let after = Utc::now() + SLACK;
    assert_eq!(q.depth().await.unwrap(), depth(1, 0, 0));
    let got = q.receive(10, WAIT, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.body, "{\"n\":1}");
    // The X-Ray header too, though SQS carries it apart from the message's attributes.
    assert_eq!(
        m.attributes,
        message("").attributes,
        "attributes round-trip"
    );
    assert_eq!(m.receive_count, 1);
    assert!(before <= m.sent_at && m.sent_at <= after, "{}", m.sent_at);
    let first = m
        .first_received_at
        .expect("first_received_at on a delivery");
    assert!(m.sent_at <= first && first <= Utc::now() + SLACK, "{first}");
    assert_eq!(q.depth().await.unwrap(), depth(0, 1, 0));
    assert!(
        q.receive(10, NO_WAIT, LONG).await.unwrap().is_empty(),
        "invisible while in flight"
    );

    q.delete(&m.receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    // Acknowledging is idempotent, and a delivery that is gone cannot be handed back.
    q.delete(&m.receipt).await.unwrap();
    assert!(
        q.delete_batch(std::slice::from_ref(&m.receipt))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(q.delete_batch(&[]).await.unwrap().is_empty());
    q.change_visibility(&m.receipt, Duration::ZERO)
        .await
        .unwrap();
    assert!(q.receive(10, NO_WAIT, LONG).await.unwrap().is_empty());
}

async fn an_unacknowledged_message_comes_back_counted_with_a_new_receipt(t: QueueUnderTest) {
    let q = &t.queue;
    q.send(message("again"), Duration::ZERO).await.unwrap();
    let received = Instant::now();
    let first = q.receive(10, WAIT, SHORT).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(q.receive(10, NO_WAIT, LONG).await.unwrap().is_empty());

    let second = q.receive(10, Duration::from_secs(3), LONG).await.unwrap();
    assert_eq!(second.len(), 1, "back after the visibility timeout");
    assert!(received.elapsed() >= SHORT, "back too early");
    let (first, second) = (&first[0], &second[0]);
    assert_eq!(second.id, first.id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt, first.receipt);
    assert_eq!(second.first_received_at, first.first_received_at);
    // SQS asks for the latest receipt and may or may not delete by an older one (the port leaves
    // it open); either way it is no error.
    q.delete(&first.receipt).await.unwrap();
    q.delete(&second.receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
}

async fn a_delivery_is_handed_back_or_extended_while_in_flight(
    t: QueueUnderTest,
    differences: EmulatorDifferences,
) {
    let q = &t.queue;
    q.send(message("m"), Duration::ZERO).await.unwrap();
    let got = q.receive(1, WAIT, LONG).await.unwrap();
    assert_eq!(got.len(), 1);

    // Handed back, it is visible at once, to a poll already waiting.
    let (again, ()) = tokio::join!(q.receive(1, Duration::from_secs(5), LONG), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        q.change_visibility(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    });
    let again = again.unwrap();
    assert_eq!(again.len(), 1, "handed back");
    assert_eq!(
        (again[0].id.as_str(), again[0].receive_count),
        (got[0].id.as_str(), 2)
    );

    // Extended, it stays hidden.
    q.change_visibility(&again[0].receipt, LONG).await.unwrap();
    assert!(
        q.receive(1, NO_WAIT, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(q.depth().await.unwrap(), depth(0, 1, 0));

    // A delivery that is over (received with a visibility of zero) is left as it is.
    q.send(message("lapsed"), Duration::ZERO).await.unwrap();
    let over = q.receive(1, WAIT, Duration::ZERO).await.unwrap();
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].body, "lapsed");
    q.change_visibility(&over[0].receipt, LONG).await.unwrap();
    if !differences.hides_messages_not_in_flight {
        let back = q.receive(1, WAIT, LONG).await.unwrap();
        assert_eq!(back.len(), 1, "a lapsed delivery hid the message again");
        assert_eq!(
            (back[0].body.as_str(), back[0].receive_count),
            ("lapsed", 2)
        );
    }

    if !differences.malformed_receipts_read_as_stale {
        assert_permanent(
            q.change_visibility("not-a-receipt", Duration::ZERO).await,
            "a visibility change by a malformed receipt",
        );
        assert_permanent(
            q.delete("not-a-receipt").await,
            "a delete by a malformed receipt",
        );
    }
}

async fn a_delay_hides_a_message_until_due(t: QueueUnderTest) {
    let q = &t.queue;
    let sent = Instant::now();
    q.send(message("timer"), SHORT).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), depth(0, 0, 1));
    assert!(q.receive(10, NO_WAIT, LONG).await.unwrap().is_empty());
    let got = q.receive(10, Duration::from_secs(3), LONG).await.unwrap();
    assert_eq!(got.len(), 1, "a long poll sees the message once due");
    assert!(sent.elapsed() >= SHORT, "delivered before its delay");
    assert_eq!(got[0].receive_count, 1);

    // Beyond SQS's 15 minutes, a delay is clamped, not refused.
    q.send(message("far"), Duration::MAX).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), depth(0, 1, 1));
}

async fn a_long_poll_returns_when_a_message_arrives(t: QueueUnderTest) {
    let q = &t.queue;
    let start = Instant::now();
    let (got, ()) = tokio::join!(q.receive(10, Duration::from_secs(10), LONG), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        q.send(message("late"), Duration::ZERO).await.unwrap();
    });
    assert_eq!(got.unwrap().len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

async fn receives_come_in_batches_of_at_most_ten(t: QueueUnderTest) {
    let q = &t.queue;
    for i in 0..15 {
        q.send(message(&format!("m{i}")), Duration::ZERO)
            .await
            .unwrap();
    }
    // `max` is clamped to 1..=10: SQS would refuse 0 and 100.
    let mut got = q.receive(100, WAIT, LONG).await.unwrap();
    assert!((1..=10).contains(&got.len()), "{} received", got.len());
    let one = q.receive(0, WAIT, LONG).await.unwrap();
    assert_eq!(one.len(), 1);
    got.extend(one);
    let d = q.depth().await.unwrap();
    assert_eq!(d, depth(15 - got.len() as u64, got.len() as u64, 0));
    while got.len() < 15 {
        let more = q.receive(10, WAIT, LONG).await.unwrap();
        assert!(
            (1..=10).contains(&more.len()),
            "{} received after {}",
            more.len(),
            got.len()
        );
        got.extend(more);
    }
    let mut ids: Vec<&str> = got.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 15, "each message once");

    // One malformed receipt in the second ten (SQS deletes ten per call): exactly it fails, and
    // deleting the same receipts again fails it alone.
    let mut receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    receipts.insert(11, "not-a-receipt".to_string());
    for round in ["first", "second"] {
        let failed = q.delete_batch(&receipts).await.unwrap();
        assert_eq!(failed.len(), 1, "{round} delete: {failed:?}");
        assert_eq!(failed[0].0, "not-a-receipt");
        assert_eq!(
            failed[0].1.kind,
            PortErrorKind::Permanent,
            "{}",
            failed[0].1
        );
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }
}

async fn out_of_range_durations_are_clamped(t: QueueUnderTest) {
    let q = &t.queue;
    q.send(message("m"), Duration::ZERO).await.unwrap();
    // A wait beyond SQS's 20 s and a visibility beyond its 12 hours: clamped, not refused.
    let got = q.receive(1, Duration::MAX, Duration::MAX).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(q.depth().await.unwrap(), depth(0, 1, 0));
}

async fn limits_are_refused_before_sending(t: QueueUnderTest) {
    let q = &t.queue;
    let mut many = message("x");
    for i in many.attributes.len()..=OutgoingMessage::MAX_ATTRIBUTES {
        many.attributes.insert(format!("a{i}"), "v".into());
    }
    assert_permanent(q.send(many, Duration::ZERO).await, "11 attributes");
    let mut big = message("");
    big.body = "x".repeat(OutgoingMessage::MAX_BYTES + 1 - big.size());
    assert_permanent(q.send(big, Duration::ZERO).await, "a byte too many");

    // At the limits exactly, it goes.
    let mut full = message("");
    for i in full.attributes.len()..OutgoingMessage::MAX_ATTRIBUTES {
        full.attributes.insert(format!("a{i}"), "v".into());
    }
    full.body = "x".repeat(OutgoingMessage::MAX_BYTES - full.size());
    assert_eq!(full.size(), OutgoingMessage::MAX_BYTES);
    q.send(full.clone(), Duration::ZERO).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        depth(1, 0, 0),
        "only the last was sent"
    );
    let got = q.receive(1, WAIT, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.len(), full.body.len());
    assert_eq!(got[0].attributes, full.attributes);
}

async fn exhausted_messages_move_to_the_dead_letter_queue(t: QueueUnderTest) {
    let (q, dlq, max) = (&t.queue, &t.dlq, t.max_receive_count);
    q.send(message("poison"), Duration::ZERO).await.unwrap();
    let mut last = String::new();
    for n in 1..=max {
        let got = q.receive(1, WAIT, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 1, "receive {n}");
        assert_eq!(got[0].receive_count, n);
        last = got[0].receipt.clone();
    }
    // The next receive finds it at the limit and moves it instead of delivering it.
    let got = q.receive(1, NO_WAIT, Duration::ZERO).await.unwrap();
    assert!(got.is_empty(), "delivered past maxReceiveCount: {got:?}");
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    assert_eq!(dlq.depth().await.unwrap(), depth(1, 0, 0));
    // Its last receipt is stale now: acknowledging by it is still fine.
    q.delete(&last).await.unwrap();

    let dead = dlq.receive(10, WAIT, Duration::ZERO).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(dead[0].attributes, message("").attributes);
    assert_eq!(
        dead[0].receive_count,
        max + 1,
        "counts the source queue's receives"
    );
    // A dead-letter queue has no redrive policy: however often received, the message stays.
    for _ in 0..max {
        assert_eq!(dlq.receive(1, WAIT, Duration::ZERO).await.unwrap().len(), 1);
    }
    assert_eq!(dlq.depth().await.unwrap(), depth(1, 0, 0));
}

async fn peek_shows_without_taking_and_purge_empties(t: QueueUnderTest) {
    let (q, dlq, max) = (&t.queue, &t.dlq, t.max_receive_count);
    assert!(dlq.peek(10).await.unwrap().is_empty());
    // A dead letter sent before a message sent to the DLQ directly, but moved after it: oldest
    // first is by when a message was sent.
    q.send(message("poison"), Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    dlq.send(message("direct"), Duration::ZERO).await.unwrap();
    for _ in 0..max {
        assert_eq!(q.receive(1, WAIT, Duration::ZERO).await.unwrap().len(), 1);
    }
    assert!(
        q.receive(1, NO_WAIT, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(dlq.depth().await.unwrap(), depth(2, 0, 0));

    assert_eq!(dlq.peek(1).await.unwrap().len(), 1);
    let peeked = dlq.peek(10).await.unwrap();
    let bodies: Vec<&str> = peeked.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["poison", "direct"], "each once, oldest first");
    assert_eq!(peeked[0].attributes, message("").attributes);
    assert!(
        peeked[0].receive_count >= max,
        "{}",
        peeked[0].receive_count
    );
    assert!(peeked[0].first_received_at.is_some());
    assert_eq!(
        dlq.depth().await.unwrap(),
        depth(2, 0, 0),
        "peeking took nothing"
    );
    // A receive after the peek counts on from it (more than one on SQS, where peeking receives).
    let got = dlq.receive(10, WAIT, LONG).await.unwrap();
    assert_eq!(got.len(), 2);
    for m in &got {
        let p = peeked.iter().find(|p| p.id == m.id).expect("peeked");
        assert!(
            m.receive_count > p.receive_count,
            "{}: {m:?} after {p:?}",
            m.body
        );
        assert_eq!(m.sent_at, p.sent_at);
    }

    // Purging takes everything: in flight, visible and delayed.
    dlq.send(message("visible"), Duration::ZERO).await.unwrap();
    dlq.send(message("delayed"), LONG).await.unwrap();
    assert_eq!(dlq.depth().await.unwrap(), depth(1, 2, 1));
    assert_eq!(dlq.purge().await.unwrap(), 4);
    assert_eq!(dlq.depth().await.unwrap(), QueueDepth::default());
    assert!(dlq.peek(10).await.unwrap().is_empty());
    // The receipts of purged deliveries are stale: acknowledging by them is fine. (One at a time:
    // moto's batch delete words every receipt it does not know as malformed.)
    for m in &got {
        dlq.delete(&m.receipt).await.unwrap();
    }
}

async fn oldest_message_age_counts_backlog_not_timers(t: QueueUnderTest) {
    let q = &t.queue;
    // SQS has no API for the age: a backend that cannot tell says so every time.
    let Some(empty) = q.oldest_message_age().await.unwrap() else {
        q.send(message("work"), Duration::ZERO).await.unwrap();
        assert_eq!(q.oldest_message_age().await.unwrap(), None);
        return;
    };
    assert_eq!(empty, Duration::ZERO);
    q.send(message("timer"), LONG).await.unwrap();
    assert_eq!(
        q.oldest_message_age().await.unwrap(),
        Some(Duration::ZERO),
        "a delayed message is not backlog"
    );
    q.send(message("work"), Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let age = q.oldest_message_age().await.unwrap().unwrap();
    assert!(age >= Duration::from_millis(100), "{age:?}");
    // In flight, it still counts: it has not been dealt with.
    let got = q.receive(1, WAIT, LONG).await.unwrap();
    assert_eq!(got[0].body, "work");
    assert!(q.oldest_message_age().await.unwrap().unwrap() >= age);
    q.delete(&got[0].receipt).await.unwrap();
    assert_eq!(q.oldest_message_age().await.unwrap(), Some(Duration::ZERO));
}
