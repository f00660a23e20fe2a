use crate::PortError;
use async_trait::async_trait;
use choreo_domain::extract::{ExtractUnit, KeyRecord, Tick, UnitState};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What claiming a unit found.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitClaim {
    /// The unit was PENDING (or RUNNING under a lapsed claim): it is ours, RUNNING, until the lease
    /// ends. The unit is returned as it now stands.
    Claimed(ExtractUnit),
    /// Its file is written already: a duplicate message. Nothing to do.
    Done(ExtractUnit),
    /// Another worker holds an unexpired claim.
    Busy(ExtractUnit),
    /// It FAILED and waits for an operator's retry.
    Failed(ExtractUnit),
    /// No such unit (the tick was never fanned out, or the message is forged).
    Missing,
}

/// How a claimed unit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitEnd {
    Extracted {
        object_key: String,
        rows: u64,
    },
    Failed {
        reason: String,
    },
    /// Handed back PENDING after a transient error (the bucket was busy), for the redelivered
    /// message to claim again at once rather than after the claim lapses.
    Released {
        reason: String,
    },
}

/// What a unit's record holds once it ended: its state, and the fields the end sets (the others are
/// cleared). Each store writes these, so the two cannot read an end differently.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedUnit {
    pub state: UnitState,
    pub reason: Option<String>,
    pub object_key: Option<String>,
    pub rows: Option<i64>,
}

impl UnitEnd {
    pub fn record(&self) -> EndedUnit {
        let (state, reason, object_key, rows) = match self {
            UnitEnd::Extracted { object_key, rows } => (
                UnitState::Extracted,
                None,
                Some(object_key.clone()),
                Some(i64::try_from(*rows).unwrap_or(i64::MAX)),
            ),
            UnitEnd::Failed { reason } => (UnitState::Failed, Some(reason.clone()), None, None),
            UnitEnd::Released { reason } => (UnitState::Pending, Some(reason.clone()), None, None),
        };
        EndedUnit {
            state,
            reason,
            object_key,
            rows,
        }
    }
}

/// The keys table and the record of ticks and units: DynamoDB on AWS, SQLite locally.
///
/// Every write that two replicas or two deliveries may race on is conditional, and a lost race is
/// an outcome (`false`, [`UnitClaim::Busy`]), never an error.
#[async_trait]
pub trait ExtractStore: Send + Sync {
    /// Writes a key (creating or replacing it whole). The next tick reads it: no restart.
    async fn put_key(&self, key: &KeyRecord) -> Result<(), PortError>;

    /// Enables or disables a key; `false` when there is no such key.
    async fn set_key_enabled(
        &self,
        extract: &str,
        key: &str,
        enabled: bool,
    ) -> Result<bool, PortError>;

    /// Every key of `extract`, live or not, in key order.
    async fn keys(&self, extract: &str) -> Result<Vec<KeyRecord>, PortError>;

    /// When the scheduler first saw `extract`: written with `now` if absent (put-if-absent), and
    /// returned as stored. Slots before it are never caught up.
    async fn schedule_since(
        &self,
        extract: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PortError>;

    /// Records a tick if its id is new (put-if-absent): `true` when this call wrote it, `false`
    /// when another replica (or an earlier call) did.
    async fn add_tick(&self, tick: &Tick) -> Result<bool, PortError>;

    /// A tick by id.
    async fn tick(&self, tick_id: &str) -> Result<Option<Tick>, PortError>;

    /// The latest scheduled (not manual) tick of `extract`.
    async fn last_scheduled_tick(&self, extract: &str) -> Result<Option<Tick>, PortError>;

    /// The latest ticks, newest first, of one extract or all.
    async fn ticks(&self, extract: Option<&str>, limit: usize) -> Result<Vec<Tick>, PortError>;

    /// Writes a PENDING unit for each key that has none under `tick_id` (put-if-absent each: a
    /// tick fanned out twice writes each unit once), and marks the tick fanned out. Returns the
    /// tick's units as they stand after the write.
    async fn fan_out(
        &self,
        tick_id: &str,
        extract: &str,
        keys: &[String],
    ) -> Result<Vec<ExtractUnit>, PortError>;

    /// The units of a tick, in key order.
    async fn units(&self, tick_id: &str) -> Result<Vec<ExtractUnit>, PortError>;

    /// Claims a unit for `lease` (see [`UnitClaim`]); each claim counts an attempt.
    async fn claim_unit(
        &self,
        tick_id: &str,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<UnitClaim, PortError>;

    /// Ends a unit this `holder` claimed: `false` when the claim was lost meanwhile (it lapsed
    /// and another worker took the unit), in which case nothing is written.
    async fn finish_unit(
        &self,
        tick_id: &str,
        key: &str,
        holder: &str,
        end: &UnitEnd,
    ) -> Result<bool, PortError>;

    /// Makes a FAILED unit PENDING again (an operator's retry): `false` when it is not FAILED.
    async fn reset_unit(&self, tick_id: &str, key: &str) -> Result<bool, PortError>;
}

/// The store of a backend that has no extracts yet: every call fails, permanently, saying so.
pub struct NoExtractStore(pub &'static str);

#[async_trait]
impl ExtractStore for NoExtractStore {
    async fn put_key(&self, _: &KeyRecord) -> Result<(), PortError> {
        Err(self.unsupported())
    }
    async fn set_key_enabled(&self, _: &str, _: &str, _: bool) -> Result<bool, PortError> {
        Err(self.unsupported())
    }
    async fn keys(&self, _: &str) -> Result<Vec<KeyRecord>, PortError> {
        Err(self.unsupported())
    }
    async fn schedule_since(&self, _: &str, _: DateTime<Utc>) -> Result<DateTime<Utc>, PortError> {
        Err(self.unsupported())
    }
    async fn add_tick(&self, _: &Tick) -> Result<bool, PortError> {
        Err(self.unsupported())
    }
    async fn tick(&self, _: &str) -> Result<Option<Tick>, PortError> {
        Err(self.unsupported())
    }
    async fn last_scheduled_tick(&self, _: &str) -> Result<Option<Tick>, PortError> {
        Err(self.unsupported())
    }
    async fn ticks(&self, _: Option<&str>, _: usize) -> Result<Vec<Tick>, PortError> {
        Err(self.unsupported())
    }
    async fn fan_out(&self, _: &str, _: &str, _: &[String]) -> Result<Vec<ExtractUnit>, PortError> {
        Err(self.unsupported())
    }
    async fn units(&self, _: &str) -> Result<Vec<ExtractUnit>, PortError> {
        Err(self.unsupported())
    }
    async fn claim_unit(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Duration,
    ) -> Result<UnitClaim, PortError> {
        Err(self.unsupported())
    }
    async fn finish_unit(&self, _: &str, _: &str, _: &str, _: &UnitEnd) -> Result<bool, PortError> {
        Err(self.unsupported())
    }
    async fn reset_unit(&self, _: &str, _: &str) -> Result<bool, PortError> {
        Err(self.unsupported())
    }
}

impl NoExtractStore {
    fn unsupported(&self) -> PortError {
        PortError::permanent(
            "extracts",
            self.0,
            "scheduled extracts are not available on this backend yet",
        )
    }
}
