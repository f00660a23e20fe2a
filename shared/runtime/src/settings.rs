//! Loading the configuration: built-in defaults, then the TOML file, then `CHOREO_*` environment
//! variables (`__` separates levels: `CHOREO_BUCKETS__INPUT=my-bucket`). Unknown keys are errors.
//! Relative paths in the file (`data_dir`, schema paths) are relative to the file's directory.

use choreo_domain::Config;
use choreo_domain::config::{ConfigError, KeyRouter, SchemaSource};
use choreo_validation::SchemaCheck;
use choreo_validation::TableSchema;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A loaded configuration with each dataset's schema parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    /// Dataset name → its Table Schema.
    pub schemas: BTreeMap<String, TableSchema>,
    /// Key → dataset routing, compiled once.
    pub router: KeyRouter,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {0}")]
    Invalid(#[from] ConfigError),
    #[error("dataset {dataset:?}: cannot read schema {path}: {error}")]
    SchemaFile {
        dataset: String,
        path: PathBuf,
        error: String,
    },
    #[error("dataset {dataset:?}: bad Table Schema: {error}")]
    Schema { dataset: String, error: String },
}

/// Environment variables that are not configuration keys (they steer the command line or logging).
const NOT_CONFIG: &[&str] = &["config", "log_format"];

impl Settings {
    /// Loads from `file` (if given) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(SettingsError::Parse(format!(
                    "config file {} does not exist",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig.merge(
            Env::prefixed("CHOREO_")
                // Keys come as they are spelt in the environment (`CHOREO_LOG_FORMAT`).
                .filter(|k| {
                    !NOT_CONFIG
                        .iter()
                        .any(|n| k.as_str().eq_ignore_ascii_case(n))
                })
                .split("__"),
        );
        let mut config: Config = fig
            .extract()
            .map_err(|e| SettingsError::Parse(e.to_string()))?;
        let base = file
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if file.is_some()
            && config.data_dir.is_relative()
            && std::env::var_os("CHOREO_DATA_DIR").is_none()
        {
            config.data_dir = base.join(&config.data_dir);
        }
        Self::from_config(config, &base, file.map(Path::to_path_buf))
    }

    /// Checks `config` and reads its schemas; relative schema paths are resolved against `base`.
    pub fn from_config(
        config: Config,
        base: &Path,
        source: Option<PathBuf>,
    ) -> Result<Settings, SettingsError> {
        config.check()?;
        let mut schemas = BTreeMap::new();
        for d in &config.datasets {
            let schema = match &d.schema {
                SchemaSource::Path(p) => {
                    let path = base.join(p);
                    let text =
                        std::fs::read_to_string(&path).map_err(|e| SettingsError::SchemaFile {
                            dataset: d.name.clone(),
                            path: path.clone(),
                            error: e.to_string(),
                        })?;
                    TableSchema::from_json(&text)
                }
                SchemaSource::Inline(v) => TableSchema::from_json(&v.to_string()),
            }
            .map_err(|e| SettingsError::Schema {
                dataset: d.name.clone(),
                error: e.to_string(),
            })?;
            if let Some(name) = d.personal_data.iter().find(|n| schema.field(n).is_none()) {
                return Err(SettingsError::Schema {
                    dataset: d.name.clone(),
                    error: format!("personal_data names {name:?}, which is not a field"),
                });
            }
            schemas.insert(d.name.clone(), schema);
        }
        let router = KeyRouter::new(&config.datasets)?;
        Ok(Settings {
            config,
            schemas,
            router,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"fields":[{"name":"id","type":"integer"}]}"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    // Environment overrides are global to the process; one test covers them to avoid races.
    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "s.json", SCHEMA);
        let file = write(
            dir.path(),
            "choreo.toml",
            r#"
data_dir = "data"
[buckets]
input = "landing"
[[datasets]]
name = "daily"
match = { prefix = "daily/" }
format = "csv"
schema = "s.json"
batch_window_secs = 5
"#,
        );
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.config.buckets.input, "landing");
        assert_eq!(s.config.buckets.failed, "choreo-failed");
        assert_eq!(s.config.data_dir, dir.path().join("data"));
        assert_eq!(s.config.datasets[0].batch_window_secs, 5);
        assert_eq!(s.schemas["daily"].fields.len(), 1);
        assert_eq!(s.router.route("daily/x.csv"), Some("daily"));

        // SAFETY: this is the only test in this binary that touches the environment.
        unsafe {
            std::env::set_var("CHOREO_BUCKETS__INPUT", "from-env");
            std::env::set_var("CHOREO_TRANSFORM__MASK_SALT", "salt-from-env");
            // Steers logging, not the configuration: never an unknown key.
            std::env::set_var("CHOREO_LOG_FORMAT", "json");
        }
        let s = Settings::load(Some(&file)).unwrap();
        unsafe {
            std::env::remove_var("CHOREO_BUCKETS__INPUT");
            std::env::remove_var("CHOREO_TRANSFORM__MASK_SALT");
            std::env::remove_var("CHOREO_LOG_FORMAT");
        }
        assert_eq!(s.config.buckets.input, "from-env");
        assert_eq!(s.config.transform.mask_salt.expose(), "salt-from-env");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "c.toml", "[buckets]\ninptu = \"x\"\n");
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("inptu"), "{err}");
    }

    #[test]
    fn bad_schemas_name_their_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "c.toml",
            "[[datasets]]\nname = \"d\"\nmatch = { prefix = \"d/\" }\nformat = \"csv\"\nschema = \"missing.json\"\n",
        );
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("\"d\"") && err.contains("missing.json"),
            "{err}"
        );
    }

    #[test]
    fn personal_data_names_schema_fields() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "s.json", SCHEMA);
        let config = |columns: &str| {
            format!(
                "[transform]\nmask_salt = \"s\"\n[[datasets]]\nname = \"d\"\nmatch = {{ prefix = \"d/\" }}\n\
                 format = \"csv\"\nschema = \"s.json\"\npersonal_data = [{columns}]\n"
            )
        };
        let file = write(dir.path(), "ok.toml", &config("\"id\""));
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.config.datasets[0].personal_data, ["id"]);
        assert_eq!(s.config.transform.mask_salt.expose(), "s");
        let file = write(dir.path(), "bad.toml", &config("\"email\""));
        let err = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("\"email\""), "{err}");
    }
}
