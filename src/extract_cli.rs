//! `choreo extract` and `choreo keys`: scheduled extracts from the command line.
//!
//! Both read and write the same store the extractor uses (the keys table and its ticks and units),
//! so a key put here is live at the next tick, with no restart.

use crate::app::Pipeline;
use crate::terminal::escape;
use anyhow::{Context, bail};
use choreo_domain::extract::{KeyRecord, is_key_name};
use chrono::{NaiveDate, Utc};
use clap::Subcommand;
use std::collections::BTreeMap;

#[derive(Debug, Subcommand)]
pub enum ExtractCommand {
    /// Every configured extract: schedule, time zone, dataset, warehouse, and its latest tick.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Tick an extract now, by hand: one unit per key live today.
    Run { name: String },
    /// The latest ticks (of one extract, or all) with their units: per key, its state, rows and
    /// reason.
    Ticks {
        name: Option<String>,
        /// How many ticks.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// Resume the FAILED units of a tick (each extracted again; the others are left alone).
    Retry { tick_id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The keys of an extract, live or not.
    List {
        extract: String,
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a key (enabled).
    Put {
        extract: String,
        key: String,
        /// First live day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last live day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: Option<NaiveDate>,
        /// A query parameter, NAME=VALUE (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Disable a key: the next ticks skip it.
    Disable { extract: String, key: String },
    /// Enable a disabled key again.
    Enable { extract: String, key: String },
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn configured(pipeline: &Pipeline, name: &str) -> anyhow::Result<()> {
    if pipeline.settings.config.extract(name).is_none() {
        bail!("no extract named {:?} is configured", escape(name));
    }
    Ok(())
}

pub async fn extract(pipeline: &Pipeline, cmd: ExtractCommand) -> anyhow::Result<i32> {
    let ports = pipeline.monitor.ports();
    let store = ports.extracts.as_ref();
    let config = &pipeline.settings.config;
    let queue = pipeline.monitor.queue(&config.queues.extract);
    match cmd {
        ExtractCommand::List { json } => {
            let mut rows = Vec::new();
            for e in &config.extracts {
                let last = store.ticks(Some(&e.name), 1).await?.into_iter().next();
                rows.push(serde_json::json!({
                    "name": e.name,
                    "schedule": e.schedule,
                    "time_zone": e.time_zone,
                    "dataset": e.dataset,
                    "warehouse": e.warehouse.as_ref().map(|w| format!("{} ({})", w.table, w.mode.as_str())),
                    "keys": store.keys(&e.name).await?.len(),
                    "last_tick": last.map(|t| t.id),
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(0);
            }
            println!(
                "{:<20} {:<18} {:<16} {:<20} {:>5}  LAST TICK",
                "EXTRACT", "SCHEDULE", "TIME ZONE", "DATASET", "KEYS"
            );
            for r in &rows {
                println!(
                    "{:<20} {:<18} {:<16} {:<20} {:>5}  {}",
                    r["name"].as_str().unwrap_or_default(),
                    r["schedule"].as_str().unwrap_or_default(),
                    r["time_zone"].as_str().unwrap_or_default(),
                    r["dataset"].as_str().unwrap_or_default(),
                    r["keys"],
                    r["last_tick"].as_str().unwrap_or("-"),
                );
            }
            Ok(0)
        }
        ExtractCommand::Run { name } => {
            configured(pipeline, &name)?;
            let tick = choreo_extractor::run_now(store, queue.as_ref(), &name).await?;
            println!("{}", tick.id);
            Ok(0)
        }
        ExtractCommand::Ticks { name, n, json } => {
            let ticks = store.ticks(name.as_deref(), n).await?;
            let mut out = Vec::new();
            for t in ticks {
                let units = store.units(&t.id).await?;
                out.push((t, units));
            }
            if json {
                let v: Vec<_> = out
                    .iter()
                    .map(|(t, u)| serde_json::json!({"tick": t, "units": u}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            for (t, units) in &out {
                println!(
                    "{}  {}  {} unit(s){}",
                    t.id,
                    if t.manual { "manual" } else { "scheduled" },
                    units.len(),
                    if t.fanned_out_at.is_none() {
                        "  (not fanned out yet)"
                    } else {
                        ""
                    }
                );
                for u in units {
                    println!(
                        "  {:<24} {:<10} {:>8}  {}",
                        u.key,
                        u.state.as_str(),
                        u.rows.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
                        escape(
                            u.reason
                                .as_deref()
                                .or(u.object_key.as_deref())
                                .unwrap_or("")
                        )
                    );
                }
            }
            Ok(0)
        }
        ExtractCommand::Retry { tick_id } => {
            let keys = choreo_extractor::retry(store, queue.as_ref(), &tick_id).await?;
            for k in &keys {
                println!("{tick_id} {k}  FAILED -> PENDING");
            }
            println!("{} unit(s) resumed", keys.len());
            Ok(if keys.is_empty() { 1 } else { 0 })
        }
    }
}

pub async fn keys(pipeline: &Pipeline, cmd: KeysCommand) -> anyhow::Result<i32> {
    let ports = pipeline.monitor.ports();
    let store = ports.extracts.as_ref();
    match cmd {
        KeysCommand::List { extract, json } => {
            configured(pipeline, &extract)?;
            let keys = store.keys(&extract).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(0);
            }
            let today = Utc::now().date_naive();
            println!(
                "{:<24} {:<8} {:<5} {:<10} {:<10}  PARAMS",
                "KEY", "ENABLED", "LIVE", "FROM", "TO"
            );
            for k in keys {
                let params: Vec<String> =
                    k.params.iter().map(|(n, v)| format!("{n}={v}")).collect();
                println!(
                    "{:<24} {:<8} {:<5} {:<10} {:<10}  {}",
                    k.key,
                    k.enabled,
                    k.is_live(today),
                    k.valid_from
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                    k.valid_to
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                    escape(&params.join(" "))
                );
            }
            Ok(0)
        }
        KeysCommand::Put {
            extract,
            key,
            from,
            to,
            params,
        } => {
            configured(pipeline, &extract)?;
            if !is_key_name(&key) {
                bail!(
                    "key {:?} must be letters, digits, '_', '-' or '.' (it names a folder)",
                    escape(&key)
                );
            }
            let record = KeyRecord {
                extract,
                key,
                valid_from: from,
                valid_to: to,
                enabled: true,
                params: params.into_iter().collect::<BTreeMap<_, _>>(),
                updated_at: Utc::now(),
            };
            store.put_key(&record).await.context("writing the key")?;
            println!("{}/{} put", record.extract, record.key);
            Ok(0)
        }
        KeysCommand::Disable { extract, key } | KeysCommand::Enable { extract, key }
            if !store.keys(&extract).await?.iter().any(|k| k.key == key) =>
        {
            eprintln!("no key {} in extract {}", escape(&key), escape(&extract));
            Ok(1)
        }
        KeysCommand::Disable { extract, key } => {
            store.set_key_enabled(&extract, &key, false).await?;
            println!("{extract}/{key} disabled");
            Ok(0)
        }
        KeysCommand::Enable { extract, key } => {
            store.set_key_enabled(&extract, &key, true).await?;
            println!("{extract}/{key} enabled");
            Ok(0)
        }
    }
}
