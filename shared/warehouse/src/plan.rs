//! What a batch loads: pure.

use crate::LoadError;
use choreo_domain::extract::{LoadMode, WarehouseTarget, key_of_object};
use std::path::PathBuf;

/// One file to load.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFile {
    /// The business key whose rows it holds.
    pub key: String,
    /// Its object key (for messages, and for Redshift its S3 location).
    pub object_key: String,
    /// Where its bytes are, locally (empty for Redshift, which reads S3).
    pub path: PathBuf,
}

/// A batch's load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    pub table: String,
    pub mode: LoadMode,
    pub key_column: Option<String>,
    pub primary_key: Vec<String>,
    /// One per business key, in the batch's order.
    pub files: Vec<PlanFile>,
}

impl LoadPlan {
    /// The business keys loaded, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.key.as_str()).collect()
    }
}

/// The plan for a batch's `files` (object key, local path) of a dataset whose folder is `folder`.
/// Files come oldest first (the manifest's order); of several files of one key the last wins,
/// taking the place of the first so the order of keys is stable.
pub fn plan(
    target: &WarehouseTarget,
    folder: &str,
    files: impl IntoIterator<Item = (String, PathBuf)>,
) -> Result<LoadPlan, LoadError> {
    let mut planned: Vec<PlanFile> = Vec::new();
    for (object_key, path) in files {
        let key = key_of_object(folder, &object_key)
            .ok_or_else(|| {
                LoadError::Plan(format!(
                    "{object_key} is not an extract's file (<folder><key>/<tick>.csv.gz under {folder:?})"
                ))
            })?
            .to_string();
        let file = PlanFile {
            key,
            object_key,
            path,
        };
        match planned.iter_mut().find(|p| p.key == file.key) {
            Some(slot) => *slot = file,
            None => planned.push(file),
        }
    }
    if target.mode == LoadMode::Replace && target.key_column.is_none() {
        return Err(LoadError::Plan(
            "mode replace needs warehouse.key_column".into(),
        ));
    }
    if target.mode == LoadMode::Upsert && target.primary_key.is_empty() {
        return Err(LoadError::Plan(
            "mode upsert needs warehouse.primary_key".into(),
        ));
    }
    Ok(LoadPlan {
        table: target.table.clone(),
        mode: target.mode,
        key_column: target.key_column.clone(),
        primary_key: target.primary_key.clone(),
        files: planned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_file_of_each_key_is_loaded_once() {
        let target = WarehouseTarget {
            table: "t".into(),
            mode: LoadMode::Replace,
            key_column: Some("campaign".into()),
            primary_key: vec![],
        };
        let f = |k: &str| (format!("c/{k}"), PathBuf::from(k));
        let p = plan(
            &target,
            "c/",
            [f("a/t1.csv.gz"), f("b/t1.csv.gz"), f("a/t2.csv.gz")],
        )
        .unwrap();
        assert_eq!(p.keys(), ["a", "b"]);
        assert_eq!(p.files[0].object_key, "c/a/t2.csv.gz");
        assert!(plan(&target, "c/", [f("loose.csv.gz")]).is_err());
    }
}
