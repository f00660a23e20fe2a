//! [`ExtractStore`]'s contract.

use crate::{ExtractStore, UnitClaim, UnitEnd};
use choreo_domain::extract::{KeyRecord, Tick, UnitState};
use chrono::Utc;
use std::collections::BTreeMap;
use std::time::Duration;

fn key(name: &str) -> KeyRecord {
    KeyRecord {
        extract: "campaigns".into(),
        key: name.into(),
        valid_from: Some("2026-03-01".parse().expect("a date")),
        valid_to: None,
        enabled: true,
        params: BTreeMap::from([("campaign".into(), name.to_uppercase())]),
        updated_at: Utc::now(),
    }
}

/// Every case of [`ExtractStore`]'s contract, on an empty store.
pub async fn extract_store_contract(s: &dyn ExtractStore) {
    keys_are_put_listed_and_disabled(s).await;
    a_tick_is_written_once_and_fanned_out_once_per_key(s).await;
    a_lapsed_claim_is_taken_over_and_a_failed_unit_waits_for_a_retry(s).await;
}

async fn keys_are_put_listed_and_disabled(s: &dyn ExtractStore) {
    s.put_key(&key("spring")).await.unwrap();
    s.put_key(&key("autumn")).await.unwrap();
    let keys = s.keys("campaigns").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key, "autumn");
    assert_eq!(keys[1].params["campaign"], "SPRING");
    assert_eq!(keys[1].valid_from, key("spring").valid_from);
    assert!(
        s.set_key_enabled("campaigns", "spring", false)
            .await
            .unwrap()
    );
    assert!(
        !s.set_key_enabled("campaigns", "winter", false)
            .await
            .unwrap()
    );
    let keys = s.keys("campaigns").await.unwrap();
    assert!(keys[0].enabled && !keys[1].enabled);
    assert!(s.keys("other").await.unwrap().is_empty());
}

async fn a_tick_is_written_once_and_fanned_out_once_per_key(s: &dyn ExtractStore) {
    let since = s.schedule_since("campaigns", Utc::now()).await.unwrap();
    let later = since + chrono::Duration::hours(1);
    assert_eq!(
        s.schedule_since("campaigns", later)
            .await
            .unwrap()
            .timestamp_millis(),
        since.timestamp_millis()
    );
    let tick = Tick::scheduled("campaigns", later);
    assert!(s.add_tick(&tick).await.unwrap());
    assert!(
        !s.add_tick(&Tick::scheduled("campaigns", later))
            .await
            .unwrap()
    );
    assert!(s.add_tick(&Tick::manual("campaigns", later)).await.unwrap());
    assert_eq!(
        s.last_scheduled_tick("campaigns")
            .await
            .unwrap()
            .unwrap()
            .id,
        tick.id
    );
    assert_eq!(s.ticks(None, 10).await.unwrap().len(), 2);
    let keys = ["a".to_string(), "b".to_string()];
    let units = s.fan_out(&tick.id, "campaigns", &keys).await.unwrap();
    assert_eq!(units.len(), 2);
    // Claimed and extracted once; the duplicate fan-out changes nothing.
    let lease = Duration::from_secs(60);
    assert!(matches!(
        s.claim_unit(&tick.id, "a", "w1", lease).await.unwrap(),
        UnitClaim::Claimed(_)
    ));
    assert!(matches!(
        s.claim_unit(&tick.id, "a", "w2", lease).await.unwrap(),
        UnitClaim::Busy(_)
    ));
    let end = UnitEnd::Extracted {
        object_key: "k".into(),
        rows: 3,
    };
    assert!(!s.finish_unit(&tick.id, "a", "w2", &end).await.unwrap());
    assert!(s.finish_unit(&tick.id, "a", "w1", &end).await.unwrap());
    let units = s.fan_out(&tick.id, "campaigns", &keys).await.unwrap();
    assert_eq!(units[0].state, UnitState::Extracted);
    assert_eq!(units[0].rows, Some(3));
    assert_eq!(units[1].state, UnitState::Pending);
    assert!(matches!(
        s.claim_unit(&tick.id, "a", "w3", lease).await.unwrap(),
        UnitClaim::Done(_)
    ));
    assert!(
        s.tick(&tick.id)
            .await
            .unwrap()
            .unwrap()
            .fanned_out_at
            .is_some()
    );
    // A failed unit waits for a retry, and is claimed again after a reset.
    s.claim_unit(&tick.id, "b", "w1", lease).await.unwrap();
    let failed = UnitEnd::Failed {
        reason: "MySQL is down".into(),
    };
    assert!(s.finish_unit(&tick.id, "b", "w1", &failed).await.unwrap());
    assert!(matches!(
        s.claim_unit(&tick.id, "b", "w1", lease).await.unwrap(),
        UnitClaim::Failed(u) if u.reason.as_deref() == Some("MySQL is down")
    ));
    assert!(s.reset_unit(&tick.id, "b").await.unwrap());
    assert!(!s.reset_unit(&tick.id, "b").await.unwrap());
    assert!(matches!(
        s.claim_unit(&tick.id, "b", "w1", lease).await.unwrap(),
        UnitClaim::Claimed(u) if u.attempts == 2
    ));
    assert_eq!(
        s.claim_unit(&tick.id, "zzz", "w3", lease).await.unwrap(),
        UnitClaim::Missing
    );
}

async fn a_lapsed_claim_is_taken_over_and_a_failed_unit_waits_for_a_retry(s: &dyn ExtractStore) {
    let tick = Tick::manual("retries", Utc::now());
    s.add_tick(&tick).await.unwrap();
    s.fan_out(&tick.id, "retries", &["a".into()]).await.unwrap();
    s.claim_unit(&tick.id, "a", "dead", Duration::ZERO)
        .await
        .unwrap();
    let UnitClaim::Claimed(u) = s
        .claim_unit(&tick.id, "a", "w", Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("a lapsed claim is taken over")
    };
    assert_eq!(u.attempts, 2);
    let failed = UnitEnd::Failed {
        reason: "MySQL is down".into(),
    };
    assert!(s.finish_unit(&tick.id, "a", "w", &failed).await.unwrap());
    assert!(matches!(
        s.claim_unit(&tick.id, "a", "w", Duration::from_secs(60)).await.unwrap(),
        UnitClaim::Failed(u) if u.reason.as_deref() == Some("MySQL is down")
    ));
    assert!(s.reset_unit(&tick.id, "a").await.unwrap());
    assert!(!s.reset_unit(&tick.id, "a").await.unwrap());
    assert!(matches!(
        s.claim_unit(&tick.id, "a", "w", Duration::from_secs(60))
            .await
            .unwrap(),
        UnitClaim::Claimed(_)
    ));
}
