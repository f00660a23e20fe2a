//! [`EventBus`]'s contract.
//!
//! The bus comes with the queues subscribed to it and the event types each one's filter accepts,
//! all empty. Deliveries are awaited with a long poll: SNS delivers to SQS after `publish` returns.

use crate::{EventBus, OutgoingMessage, PortErrorKind, Queue};
use choreo_domain::event::{ATTR_EVENT_TYPE, ATTR_TRACEPARENT};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A queue subscribed to the bus, and the event types its filter accepts.
pub type Subscriber = (Arc<dyn Queue>, Vec<String>);

/// Every case of [`EventBus`]'s contract: `subscribers` are every queue subscribed to `bus`.
pub async fn event_bus_contract(bus: Arc<dyn EventBus>, subscribers: &[Subscriber]) {
    each_event_reaches_exactly_the_queues_that_accept_it(&bus, subscribers).await;
    a_message_without_an_event_type_is_refused(&*bus, subscribers).await;
    an_event_nobody_accepts_goes_nowhere(&*bus, subscribers).await;
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);

fn event(event_type: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: format!(r#"{{"event":{{"type":"{event_type}"}}}}"#),
        attributes: BTreeMap::from([
            (ATTR_EVENT_TYPE.to_string(), event_type.to_string()),
            (ATTR_TRACEPARENT.to_string(), TRACEPARENT.to_string()),
        ]),
    }
}

/// The event types `q` holds (taking them), once `expected` have come or a poll comes back empty.
async fn drain(q: &dyn Queue, expected: usize) -> Vec<String> {
    let mut types = Vec::new();
    while types.len() < expected {
        let got = q.receive(10, WAIT, LONG).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            let t = m.attributes[ATTR_EVENT_TYPE].clone();
            assert_eq!(m.body, event(&t).body, "the body arrives raw, not wrapped");
            assert_eq!(
                m.attributes[ATTR_TRACEPARENT], TRACEPARENT,
                "attributes travel"
            );
            q.delete(&m.receipt).await.unwrap();
            types.push(t);
        }
    }
    types.sort();
    types
}

async fn nothing_left(subscribers: &[Subscriber]) {
    for (q, _) in subscribers {
        let got = q.receive(10, Duration::ZERO, LONG).await.unwrap();
        assert!(got.is_empty(), "{got:?}");
    }
}

async fn each_event_reaches_exactly_the_queues_that_accept_it(
    bus: &Arc<dyn EventBus>,
    subscribers: &[Subscriber],
) {
    let mut all: Vec<String> = subscribers.iter().flat_map(|(_, t)| t.clone()).collect();
    all.sort();
    all.dedup();
    assert!(!all.is_empty(), "a subscriber accepts something");
    // Published together, as the stages do (an adapter may batch them); each is told its outcome.
    let mut published = tokio::task::JoinSet::new();
    for t in all {
        let bus = Arc::clone(bus);
        published.spawn(async move { bus.publish(event(&t)).await });
    }
    for outcome in published.join_all().await {
        outcome.unwrap();
    }
    for (q, accepts) in subscribers {
        let mut expected = accepts.clone();
        expected.sort();
        assert_eq!(drain(&**q, expected.len()).await, expected);
    }
    nothing_left(subscribers).await;
}

async fn a_message_without_an_event_type_is_refused(
    bus: &dyn EventBus,
    subscribers: &[Subscriber],
) {
    let mut message = event("FileRegistered");
    message.attributes.remove(ATTR_EVENT_TYPE);
    let err = bus.publish(message).await.unwrap_err();
    assert_eq!(err.kind, PortErrorKind::Permanent, "{err}");
    nothing_left(subscribers).await;
}

async fn an_event_nobody_accepts_goes_nowhere(bus: &dyn EventBus, subscribers: &[Subscriber]) {
    assert!(
        subscribers
            .iter()
            .all(|(_, t)| !t.iter().any(|t| t == "NobodyListens"))
    );
    bus.publish(event("NobodyListens")).await.unwrap();
    nothing_left(subscribers).await;
}
