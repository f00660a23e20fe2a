//! The file state machine: the one table of legal moves, and how a stage reads a file's state.
//!
//! ```text
//! NEW ─▶ VALID ─▶ CATALOGED ─▶ TRANSFORMING ─▶ INGESTED
//!   └──▶ INVALID ─▶ QUARANTINED      │                 └──▶ FAILED ──(operator retry)──▶ VALID | CATALOGED
//!                   VALID ──▶ FAILED ┘
//! ```
//!
//! Both backends enforce the table with a conditional write: a transition applies only when the stored
//! state is the expected `from`. Nothing here does I/O.

use serde::{Deserialize, Serialize};

/// Where a file is in the pipeline. Its names (`as_str`, `Display`, `FromStr`, which also takes
/// them in lower case) are derived, like serde's.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(
    serialize_all = "SCREAMING_SNAKE_CASE",
    ascii_case_insensitive,
    parse_err_ty = UnknownState,
    parse_err_fn = UnknownState::of
)]
pub enum FileState {
    New,
    Valid,
    Invalid,
    Quarantined,
    Cataloged,
    Transforming,
    Ingested,
    Failed,
}

use FileState::*;

/// Every legal move, and the stage that makes it. The retry edges out of FAILED belong to the operator.
const TRANSITIONS: &[(FileState, FileState, Stage)] = &[
    (New, Valid, Stage::Validator),
    (New, Invalid, Stage::Validator),
    (Invalid, Quarantined, Stage::Quarantine),
    (Valid, Cataloged, Stage::Crawler),
    (Valid, Failed, Stage::Crawler),
    (Cataloged, Transforming, Stage::Transformer),
    (Transforming, Ingested, Stage::Transformer),
    (Transforming, Failed, Stage::Transformer),
    (Failed, Valid, Stage::Operator),
    (Failed, Cataloged, Stage::Operator),
];

impl FileState {
    /// Every state, in the pipeline's order.
    pub const ALL: &'static [FileState] = <FileState as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// A terminal file needs nothing more from the pipeline (FAILED waits for an operator).
    pub fn is_terminal(self) -> bool {
        matches!(self, Quarantined | Ingested | Failed)
    }

    /// Whether `self → to` is in the table (for any stage).
    pub fn can_move_to(self, to: FileState) -> bool {
        TRANSITIONS.iter().any(|&(f, t, _)| f == self && t == to)
    }

    /// The stage allowed to make `self → to`, if the move is legal.
    pub fn mover(self, to: FileState) -> Option<Stage> {
        TRANSITIONS
            .iter()
            .find(|&&(f, t, _)| f == self && t == to)
            .map(|&(_, _, s)| s)
    }

    /// The stage that moves a file out of `self` (the one a file in `self` waits for), if any: none
    /// for terminal states, the operator for FAILED.
    pub fn waits_for(self) -> Option<Stage> {
        TRANSITIONS
            .iter()
            .find(|&&(f, _, _)| f == self)
            .map(|&(_, _, s)| s)
    }

    /// Whether `later` can be reached from `self` by forward moves (operator retries excluded, so the
    /// relation has no cycles). A state does not reach itself.
    pub fn reaches(self, later: FileState) -> bool {
        let mut frontier = vec![self];
        let mut seen = Vec::new();
        while let Some(s) = frontier.pop() {
            for &(f, t, stage) in TRANSITIONS {
                if f == s && stage != Stage::Operator && !seen.contains(&t) {
                    if t == later {
                        return true;
                    }
                    seen.push(t);
                    frontier.push(t);
                }
            }
        }
        false
    }

    /// Where an operator retry resumes a FAILED file, given the state it failed from.
    pub fn retry_target(failed_from: FileState) -> Option<FileState> {
        match failed_from {
            Valid => Some(Valid),
            Transforming | Cataloged => Some(Cataloged),
            _ => None,
        }
    }

    /// How a stage that moves files out of `expected` into one of `targets` should treat a file it finds
    /// in `self`. This is what makes duplicate and reordered messages harmless.
    pub fn progress(self, expected: FileState, targets: &[FileState]) -> Progress {
        if self == expected {
            Progress::Ready
        } else if targets.contains(&self) {
            Progress::AlreadyThere(self)
        } else if targets.iter().any(|t| t.reaches(self)) {
            Progress::Beyond(self)
        } else {
            Progress::Behind(self)
        }
    }
}

/// A stage's reading of a file's current state, from [`FileState::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The file is where this stage expects it: do the work.
    Ready,
    /// The file is already in one of this stage's target states. This is the outbox case: a worker
    /// wrote the transition and died before publishing, so publish the event again and acknowledge.
    AlreadyThere(FileState),
    /// The file has moved past this stage: a duplicate message, acknowledge it.
    Beyond(FileState),
    /// The file has not reached this stage (a stale message, or one older than an operator retry):
    /// acknowledge it; the event that moves the file here will come on its own.
    Behind(FileState),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown file state {0:?} (expected one of NEW, VALID, INVALID, QUARANTINED, CATALOGED, TRANSFORMING, INGESTED, FAILED)"
)]
pub struct UnknownState(pub String);

impl UnknownState {
    fn of(s: &str) -> UnknownState {
        UnknownState(s.to_string())
    }
}

/// A transition the table does not allow, or one asked for by the wrong stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} may not move a file from {from} to {to}")]
pub struct IllegalTransition {
    pub stage: Stage,
    pub from: FileState,
    pub to: FileState,
}

/// Who moved a file: one of the six services, or an operator through the command line.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(
    serialize_all = "snake_case",
    parse_err_ty = String,
    parse_err_fn = unknown_stage
)]
pub enum Stage {
    Ingestor,
    Validator,
    Quarantine,
    Crawler,
    Transformer,
    Auditor,
    /// The scheduled extracts' service: it moves no file (its files enter through the ingestor), so
    /// it is not among [`Stage::SERVICES`], the file pipeline's six.
    Extractor,
    Operator,
}

impl Stage {
    pub const SERVICES: [Stage; 6] = [
        Stage::Ingestor,
        Stage::Validator,
        Stage::Quarantine,
        Stage::Crawler,
        Stage::Transformer,
        Stage::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn check(self, from: FileState, to: FileState) -> Result<(), IllegalTransition> {
        match from.mover(to) {
            Some(s) if s == self => Ok(()),
            _ => Err(IllegalTransition {
                stage: self,
                from,
                to,
            }),
        }
    }
}

fn unknown_stage(s: &str) -> String {
    format!("unknown stage {s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_transition_is_allowed_for_its_stage_only() {
        let allowed = [
            (New, Valid, Stage::Validator),
            (New, Invalid, Stage::Validator),
            (Invalid, Quarantined, Stage::Quarantine),
            (Valid, Cataloged, Stage::Crawler),
            (Valid, Failed, Stage::Crawler),
            (Cataloged, Transforming, Stage::Transformer),
            (Transforming, Ingested, Stage::Transformer),
            (Transforming, Failed, Stage::Transformer),
            (Failed, Valid, Stage::Operator),
            (Failed, Cataloged, Stage::Operator),
        ];
        for (from, to, stage) in allowed {
            assert!(from.can_move_to(to), "{from} -> {to}");
            assert_eq!(stage.check(from, to), Ok(()));
            for other in Stage::SERVICES.into_iter().chain([Stage::Operator]) {
                if other != stage {
                    assert!(
                        other.check(from, to).is_err(),
                        "{other} made {from} -> {to}"
                    );
                }
            }
        }
        let count = FileState::ALL
            .iter()
            .flat_map(|f| FileState::ALL.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f.can_move_to(*t))
            .count();
        assert_eq!(
            count,
            allowed.len(),
            "the table holds exactly the listed moves"
        );
    }

    #[test]
    fn forbidden_transitions_are_refused() {
        let forbidden = [
            (New, Cataloged),
            (New, Quarantined),
            (New, Ingested),
            (New, New),
            (Valid, Invalid),
            (Valid, Ingested),
            (Invalid, Valid),
            (Invalid, Failed),
            (Quarantined, New),
            (Quarantined, Valid),
            (Cataloged, Ingested),
            (Cataloged, Valid),
            (Transforming, Cataloged),
            (Ingested, Failed),
            (Ingested, New),
            (Failed, Ingested),
            (Failed, Transforming),
            (Failed, New),
        ];
        for (from, to) in forbidden {
            assert!(!from.can_move_to(to), "{from} -> {to} must be forbidden");
            for stage in Stage::SERVICES.into_iter().chain([Stage::Operator]) {
                assert!(stage.check(from, to).is_err());
            }
        }
    }

    #[test]
    fn terminal_states_have_no_forward_moves() {
        for s in [Quarantined, Ingested] {
            assert!(s.is_terminal());
            assert!(FileState::ALL.iter().all(|t| !s.can_move_to(*t)));
        }
        assert!(Failed.is_terminal());
        for s in [New, Valid, Invalid, Cataloged, Transforming] {
            assert!(!s.is_terminal(), "{s}");
        }
    }

    #[test]
    fn reachability_follows_forward_moves() {
        assert!(New.reaches(Ingested));
        assert!(New.reaches(Quarantined));
        assert!(Valid.reaches(Failed));
        assert!(!Valid.reaches(Quarantined));
        assert!(!Invalid.reaches(Ingested));
        assert!(!Failed.reaches(Valid), "retries do not count as progress");
        assert!(!Ingested.reaches(Ingested));
    }

    #[test]
    fn progress_tells_duplicates_from_work() {
        // The validator moves NEW to VALID or INVALID.
        let v = [Valid, Invalid];
        assert_eq!(New.progress(New, &v), Progress::Ready);
        assert_eq!(Valid.progress(New, &v), Progress::AlreadyThere(Valid));
        assert_eq!(Invalid.progress(New, &v), Progress::AlreadyThere(Invalid));
        assert_eq!(Quarantined.progress(New, &v), Progress::Beyond(Quarantined));
        assert_eq!(Ingested.progress(New, &v), Progress::Beyond(Ingested));
        // The crawler moves VALID to CATALOGED; a file still NEW is behind it.
        assert_eq!(New.progress(Valid, &[Cataloged]), Progress::Behind(New));
        assert_eq!(
            Transforming.progress(Valid, &[Cataloged]),
            Progress::Beyond(Transforming)
        );
        assert_eq!(
            Failed.progress(Valid, &[Cataloged, Failed]),
            Progress::AlreadyThere(Failed)
        );
    }

    #[test]
    fn retry_resumes_before_the_failed_step() {
        assert_eq!(FileState::retry_target(Valid), Some(Valid));
        assert_eq!(FileState::retry_target(Transforming), Some(Cataloged));
        assert_eq!(FileState::retry_target(New), None);
    }

    #[test]
    fn states_parse_and_print() {
        for &s in FileState::ALL {
            assert_eq!(s.as_str().parse::<FileState>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!("ingested".parse::<FileState>().unwrap(), Ingested);
        assert!("DONE".parse::<FileState>().is_err());
    }
}
