//! A transform run's own arguments, as Glue names them (`--name value`): what the launcher passes
//! on every start, and what every job runner and the built-in job read back. The local runner keeps
//! Glue's convention, so one launcher serves both backends; the Glue script asks for the same names
//! (tested against `deploy/glue/choreo_builtin.py` in `choreo_aws::glue`).

use std::collections::BTreeMap;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobArgs {
    /// The batch being transformed. Every run carries it: a launcher that died between starting
    /// a run and recording it finds the run again by it.
    pub batch_id: String,
    /// The batch's dataset (the Glue script names its output by it).
    pub dataset: String,
    /// `<bucket>/<key>` of the batch's [`crate::Manifest`] in the work bucket.
    pub manifest: String,
}

/// An argument [`JobArgs::parse`] needs and did not find.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the job run has no {0} argument")]
pub struct MissingArgument(pub &'static str);

impl JobArgs {
    pub const BATCH_ID: &'static str = "--batch_id";
    pub const DATASET: &'static str = "--dataset";
    pub const MANIFEST: &'static str = "--manifest";
    /// Every name [`JobArgs::to_arguments`] writes.
    pub const NAMES: [&'static str; 3] = [Self::BATCH_ID, Self::DATASET, Self::MANIFEST];

    /// The arguments of a run, by name.
    pub fn to_arguments(&self) -> BTreeMap<String, String> {
        [
            (Self::BATCH_ID, &self.batch_id),
            (Self::DATASET, &self.dataset),
            (Self::MANIFEST, &self.manifest),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }

    /// The run's arguments back from `arguments`, which may hold others too (a Glue job's own,
    /// say). All three are needed, as the Glue script's `getResolvedOptions` needs them.
    pub fn parse(arguments: &BTreeMap<String, String>) -> Result<JobArgs, MissingArgument> {
        let get = |name: &'static str| arguments.get(name).cloned().ok_or(MissingArgument(name));
        Ok(JobArgs {
            batch_id: get(Self::BATCH_ID)?,
            dataset: get(Self::DATASET)?,
            manifest: get(Self::MANIFEST)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> JobArgs {
        JobArgs {
            batch_id: "b-1".into(),
            dataset: "sales".into(),
            manifest: "work/manifests/sales/b-1.json".into(),
        }
    }

    #[test]
    fn arguments_are_glue_style_and_read_back() {
        let a = args().to_arguments();
        assert_eq!(
            a.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            [
                ("--batch_id", "b-1"),
                ("--dataset", "sales"),
                ("--manifest", "work/manifests/sales/b-1.json"),
            ]
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), JobArgs::NAMES);
        let mut with_more = a.clone();
        with_more.insert("--curated_bucket".into(), "out".into());
        assert_eq!(JobArgs::parse(&with_more), Ok(args()));
    }

    #[test]
    fn every_argument_is_needed() {
        for name in JobArgs::NAMES {
            let mut a = args().to_arguments();
            a.remove(name);
            let err = JobArgs::parse(&a).unwrap_err();
            assert_eq!(err, MissingArgument(name));
            assert_eq!(
                err.to_string(),
                format!("the job run has no {name} argument")
            );
        }
    }
}
