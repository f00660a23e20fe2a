//! The built-in transform on the local backend: the job runner's side of `choreo_transform`, which
//! holds what the transform does to the data.
//!
//! The job's `--manifest` argument names (`<bucket>/<key>`) a [`Manifest`] in the work bucket.
//! [`run_builtin`] reads it, finds its dataset's configuration, compiles the [`Batch`], finds each
//! file's bytes — the version its pin names, in the local buckets — and runs the transform on a
//! blocking thread into a temporary file in the data directory's `tmp/`, where the key index
//! spills too. The file is then moved to [`output_key`] in the curated bucket, so readers never see
//! half of it.
//!
//! The job runner runs all this in a child process with a memory limit (`jobs.rs`, `worker.rs`).

use crate::objects::LocalObjectStore;
use choreo_domain::config::DatasetConfig;
use choreo_domain::{JobArgs, Manifest};
use choreo_ports::ObjectStore;
use choreo_transform::{Batch, BuiltinSummary, output_key};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use tokio::io::AsyncReadExt;

/// Splits `bucket/key`.
pub(crate) fn split_location(location: &str) -> Option<(&str, &str)> {
    location
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
}

/// Reads the manifest named by a `bucket/key` location.
pub(crate) async fn read_manifest(
    objects: &LocalObjectStore,
    location: &str,
) -> Result<Manifest, String> {
    let (bucket, key) = split_location(location)
        .ok_or_else(|| format!("{} {location:?} is not <bucket>/<key>", JobArgs::MANIFEST))?;
    let mut body = Vec::new();
    objects
        .get(bucket, key, None)
        .await
        .map_err(|e| format!("reading the manifest: {e}"))?
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("reading the manifest {location}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("manifest {location}: {e}"))
}

/// What the built-in transform needs of the configuration: the datasets (the manifest names one),
/// the curated bucket and the mask salt.
#[derive(Clone, Serialize, Deserialize)]
pub struct BuiltinJob {
    pub datasets: Vec<DatasetConfig>,
    pub curated: String,
    pub mask_salt: String,
}

impl fmt::Debug for BuiltinJob {
    // The salt is a secret: never in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinJob")
            .field("datasets", &self.datasets.len())
            .field("curated", &self.curated)
            .finish_non_exhaustive()
    }
}

impl BuiltinJob {
    pub fn of(config: &choreo_domain::Config) -> Self {
        BuiltinJob {
            datasets: config.datasets.clone(),
            curated: config.buckets.curated.clone(),
            mask_salt: config.transform.mask_salt.expose().to_string(),
        }
    }
}

/// Runs the built-in transform with the job run's arguments. Returns what it did, or why the run
/// failed.
pub async fn run_builtin(
    objects: &LocalObjectStore,
    job: &BuiltinJob,
    arguments: &BTreeMap<String, String>,
    key_index_bytes: usize,
) -> Result<BuiltinSummary, String> {
    let args = JobArgs::parse(arguments).map_err(|e| format!("the builtin transform: {e}"))?;
    let manifest = read_manifest(objects, &args.manifest).await?;
    if args.batch_id != manifest.batch_id {
        choreo_telemetry::events::emit(crate::events::ManifestBatchMismatch {
            argument: &args.batch_id,
            manifest: &manifest.batch_id,
        });
    }
    let dataset = job
        .datasets
        .iter()
        .find(|d| d.name == manifest.dataset)
        .ok_or_else(|| format!("unknown dataset {:?}", manifest.dataset))?;
    let batch = Batch::new(&manifest, dataset, &job.mask_salt)?;
    // Where each file's pinned version is: the one place the transform finds an input's bytes.
    let inputs = manifest
        .files
        .iter()
        .map(|f| {
            objects
                .path_of_version(&f.bucket, &f.key, f.pin.as_ref())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tmp = objects.tmp_path("transform");
    let (tmp_in_task, tmp_dir) = (tmp.clone(), objects.tmp_dir().to_path_buf());
    let written = tokio::task::spawn_blocking(move || -> Result<BuiltinSummary, String> {
        let out = File::create(&tmp_in_task).map_err(|e| format!("temporary output: {e}"))?;
        let open = |n: usize, _: &_| -> std::io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(File::open(&inputs[n])?))
        };
        let (out, summary) = batch.run(open, &tmp_dir, key_index_bytes, out)?;
        out.sync_all().map_err(|e| format!("writing output: {e}"))?;
        Ok(summary)
    })
    .await
    .map_err(|e| format!("transform task failed: {e}"));
    let result = match written.and_then(|r| r) {
        Ok(mut summary) => {
            let key = output_key(&manifest.dataset, &manifest.batch_id);
            match objects.put_file(&job.curated, &key, &tmp).await {
                Ok(()) => {
                    summary.key = key;
                    Ok(summary)
                }
                Err(e) => Err(format!("writing {}/{key}: {e}", job.curated)),
            }
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_split_at_the_first_slash() {
        assert_eq!(split_location("work/m/b.json"), Some(("work", "m/b.json")));
        assert_eq!(split_location("work"), None);
        assert_eq!(split_location("/x"), None);
    }
}
