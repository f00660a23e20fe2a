//! The keys table of scheduled extracts, with their ticks and units, on DynamoDB.
//!
//! One table (`aws.extract_table`), keyed `pk`/`sk`, strings:
//!
//! | item | pk | sk |
//! |---|---|---|
//! | a key | `key#<extract>` | key |
//! | when the scheduler first saw an extract | `since#<extract>` | `-` |
//! | a tick | `tick#<extract>` | tick id (sorts by time) |
//! | a unit | `unit#<tick id>` | key |
//!
//! Ticks and units are written with `attribute_not_exists(pk)`; a unit's claim and end are
//! conditional on the state (and attempts) read, so two workers never both run one unit; a failed
//! condition is an outcome. The table stays small (a few ticks a day, a unit per key each), and
//! people edit keys by hand, which is why it is a table of its own rather than items in the
//! state table.

use crate::client::AwsClients;
use crate::error::{code, condition_held, port_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use choreo_domain::clock;
use choreo_domain::extract::{ExtractUnit, KeyRecord, Tick, UnitState};
use choreo_ports::{EndedUnit, ExtractStore, PortError, UnitClaim, UnitEnd};
use chrono::{DateTime, TimeZone, Utc};
use std::collections::HashMap;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

const ABSENT: &str = "attribute_not_exists(pk)";

/// The extract store of the AWS backend.
pub struct DynamoExtractStore {
    client: Client,
    table: String,
}

impl DynamoExtractStore {
    pub fn new(client: Client, table: &str) -> Self {
        DynamoExtractStore {
            client,
            table: table.to_string(),
        }
    }

    async fn query_all(&self, pk: &str, newest_first: bool) -> Result<Vec<Item>, PortError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .scan_index_forward(!newest_first)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| port_error("query", pk, e))?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, PortError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error("get_item", pk, e))?
            .item)
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn get_bool(item: &Item, name: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().unwrap_or_default()
}

fn bad(op: &'static str, target: &str, what: &str) -> PortError {
    PortError::permanent(op, target, format!("malformed item: {what}"))
}

fn key_of(item: &Item) -> Result<KeyRecord, PortError> {
    let extract = get_s(item, "extract").unwrap_or_default();
    let key = get_s(item, "sk").unwrap_or_default();
    let date = |name: &str| {
        get_s(item, name)
            .map(|d| d.parse().map_err(|_| bad("keys", &key, name)))
            .transpose()
    };
    let params = item
        .get("params")
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    Ok(KeyRecord {
        valid_from: date("valid_from")?,
        valid_to: date("valid_to")?,
        enabled: get_bool(item, "enabled"),
        params,
        updated_at: ms(get_n(item, "updated_at").unwrap_or_default()),
        extract,
        key,
    })
}

fn tick_of(item: &Item) -> Tick {
    Tick {
        id: get_s(item, "sk").unwrap_or_default(),
        extract: get_s(item, "extract").unwrap_or_default(),
        slot: ms(get_n(item, "slot").unwrap_or_default()),
        manual: get_bool(item, "manual"),
        created_at: ms(get_n(item, "created_at").unwrap_or_default()),
        fanned_out_at: get_n(item, "fanned_out_at").map(ms),
    }
}

fn unit_of(item: &Item) -> ExtractUnit {
    ExtractUnit {
        tick_id: get_s(item, "tick_id").unwrap_or_default(),
        extract: get_s(item, "extract").unwrap_or_default(),
        key: get_s(item, "sk").unwrap_or_default(),
        state: get_s(item, "state")
            .and_then(|st| UnitState::parse(&st))
            .unwrap_or(UnitState::Failed),
        attempts: get_n(item, "attempts").unwrap_or_default().max(0) as u32,
        reason: get_s(item, "reason"),
        object_key: get_s(item, "object_key"),
        rows: get_n(item, "rows").map(|r| r.max(0) as u64),
        updated_at: ms(get_n(item, "updated_at").unwrap_or_default()),
    }
}

/// The extract whose tick this is (ids are `<extract>@...`).
fn extract_of(tick_id: &str) -> &str {
    tick_id.split_once('@').map_or(tick_id, |(e, _)| e)
}

#[async_trait]
impl ExtractStore for DynamoExtractStore {
    async fn put_key(&self, key: &KeyRecord) -> Result<(), PortError> {
        let params = key
            .params
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect::<HashMap<_, _>>();
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("key#{}", key.extract)))
            .item("sk", s(&key.key))
            .item("extract", s(&key.extract))
            .item("enabled", AttributeValue::Bool(key.enabled))
            .item("params", AttributeValue::M(params))
            .item("updated_at", n(key.updated_at.timestamp_millis()));
        if let Some(d) = key.valid_from {
            req = req.item("valid_from", s(d.to_string()));
        }
        if let Some(d) = key.valid_to {
            req = req.item("valid_to", s(d.to_string()));
        }
        req.send()
            .await
            .map_err(|e| port_error("put_item", &key.key, e))?;
        Ok(())
    }

    async fn set_key_enabled(
        &self,
        extract: &str,
        key: &str,
        enabled: bool,
    ) -> Result<bool, PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("key#{extract}")))
            .key("sk", s(key))
            .update_expression("SET enabled = :e, updated_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":e", AttributeValue::Bool(enabled))
            .expression_attribute_values(":t", n(clock::now().timestamp_millis()))
            .send()
            .await;
        condition_held("update_item", key, result)
    }

    async fn keys(&self, extract: &str) -> Result<Vec<KeyRecord>, PortError> {
        self.query_all(&format!("key#{extract}"), false)
            .await?
            .iter()
            .map(key_of)
            .collect()
    }

    async fn schedule_since(
        &self,
        extract: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, PortError> {
        let pk = format!("since#{extract}");
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s("-"))
            .item("since", n(now.timestamp_millis()))
            .condition_expression(ABSENT)
            .send()
            .await;
        if condition_held("put_item", &pk, result)? {
            return Ok(now);
        }
        let item = self
            .get(&pk, "-")
            .await?
            .ok_or_else(|| bad("schedule_since", &pk, "vanished"))?;
        Ok(ms(get_n(&item, "since").unwrap_or_default()))
    }

    async fn add_tick(&self, tick: &Tick) -> Result<bool, PortError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("tick#{}", tick.extract)))
            .item("sk", s(&tick.id))
            .item("extract", s(&tick.extract))
            .item("slot", n(tick.slot.timestamp_millis()))
            .item("manual", AttributeValue::Bool(tick.manual))
            .item("created_at", n(tick.created_at.timestamp_millis()))
            .condition_expression(ABSENT);
        if let Some(f) = tick.fanned_out_at {
            req = req.item("fanned_out_at", n(f.timestamp_millis()));
        }
        condition_held("put_item", &tick.id, req.send().await)
    }

    async fn tick(&self, tick_id: &str) -> Result<Option<Tick>, PortError> {
        let pk = format!("tick#{}", extract_of(tick_id));
        Ok(self.get(&pk, tick_id).await?.as_ref().map(tick_of))
    }

    async fn last_scheduled_tick(&self, extract: &str) -> Result<Option<Tick>, PortError> {
        Ok(self
            .query_all(&format!("tick#{extract}"), true)
            .await?
            .iter()
            .map(tick_of)
            .find(|t| !t.manual))
    }

    async fn ticks(&self, extract: Option<&str>, limit: usize) -> Result<Vec<Tick>, PortError> {
        let mut ticks: Vec<Tick> = match extract {
            Some(e) => self
                .query_all(&format!("tick#{e}"), true)
                .await?
                .iter()
                .map(tick_of)
                .collect(),
            // Every extract's: a scan of a table of a few items a day per extract.
            None => {
                let mut items = Vec::new();
                let mut start = None;
                loop {
                    let page = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .filter_expression("begins_with(pk, :t)")
                        .expression_attribute_values(":t", s("tick#"))
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .map_err(|e| port_error("scan", &self.table, e))?;
                    items.extend(page.items.unwrap_or_default());
                    start = page.last_evaluated_key;
                    if start.is_none() {
                        break;
                    }
                }
                items.iter().map(tick_of).collect()
            }
        };
        ticks.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        ticks.truncate(limit);
        Ok(ticks)
    }

    async fn fan_out(
        &self,
        tick_id: &str,
        extract: &str,
        keys: &[String],
    ) -> Result<Vec<ExtractUnit>, PortError> {
        let now = n(clock::now().timestamp_millis());
        for key in keys {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("unit#{tick_id}")))
                .item("sk", s(key))
                .item("tick_id", s(tick_id))
                .item("extract", s(extract))
                .item("state", s(UnitState::Pending.as_str()))
                .item("attempts", n(0))
                .item("updated_at", now.clone())
                .condition_expression(ABSENT)
                .send()
                .await;
            condition_held("put_item", key, result)?;
        }
        let marked = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("tick#{extract}")))
            .key("sk", s(tick_id))
            .update_expression("SET fanned_out_at = if_not_exists(fanned_out_at, :t)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", now)
            .send()
            .await;
        condition_held("update_item", tick_id, marked)?;
        self.units(tick_id).await
    }

    async fn units(&self, tick_id: &str) -> Result<Vec<ExtractUnit>, PortError> {
        Ok(self
            .query_all(&format!("unit#{tick_id}"), false)
            .await?
            .iter()
            .map(unit_of)
            .collect())
    }

    async fn claim_unit(
        &self,
        tick_id: &str,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<UnitClaim, PortError> {
        let pk = format!("unit#{tick_id}");
        let Some(item) = self.get(&pk, key).await? else {
            return Ok(UnitClaim::Missing);
        };
        let unit = unit_of(&item);
        let now = clock::now().timestamp_millis();
        match unit.state {
            UnitState::Extracted => return Ok(UnitClaim::Done(unit)),
            UnitState::Failed => return Ok(UnitClaim::Failed(unit)),
            UnitState::Running if get_n(&item, "claimed_until").is_some_and(|u| u > now) => {
                return Ok(UnitClaim::Busy(unit));
            }
            UnitState::Running | UnitState::Pending => {}
        }
        // Conditional on what was read: a worker that claimed it meanwhile changed the attempts.
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(key))
            .update_expression(
                "SET #state = :running, attempts = attempts + :one, holder = :holder, \
                 claimed_until = :until, updated_at = :now",
            )
            .condition_expression("#state = :seen AND attempts = :attempts")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":running", s(UnitState::Running.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":seen", s(unit.state.as_str()))
            .expression_attribute_values(":attempts", n(i64::from(unit.attempts)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(UnitClaim::Claimed(ExtractUnit {
                state: UnitState::Running,
                attempts: unit.attempts + 1,
                updated_at: ms(now),
                ..unit
            })),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                Ok(UnitClaim::Busy(unit))
            }
            Err(e) => Err(port_error("update_item", key, e)),
        }
    }

    async fn finish_unit(
        &self,
        tick_id: &str,
        key: &str,
        holder: &str,
        end: &UnitEnd,
    ) -> Result<bool, PortError> {
        let EndedUnit {
            state,
            reason,
            object_key,
            rows,
        } = end.record();
        let mut set = vec!["#state = :state", "updated_at = :now"];
        let mut remove = vec!["holder", "claimed_until"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("unit#{tick_id}")))
            .key("sk", s(key))
            .condition_expression("#state = :running AND holder = :holder")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state.as_str()))
            .expression_attribute_values(":now", n(clock::now().timestamp_millis()))
            .expression_attribute_values(":running", s(UnitState::Running.as_str()))
            .expression_attribute_values(":holder", s(holder));
        match reason {
            Some(r) => {
                set.push("reason = :reason");
                req = req.expression_attribute_values(":reason", s(r));
            }
            None => remove.push("reason"),
        }
        if let Some(o) = object_key {
            set.push("object_key = :object");
            req = req.expression_attribute_values(":object", s(o));
        }
        if let Some(r) = rows {
            set.push("#rows = :rows");
            req = req
                .expression_attribute_names("#rows", "rows")
                .expression_attribute_values(":rows", n(r));
        }
        let expr = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        condition_held("update_item", key, req.update_expression(expr).send().await)
    }

    async fn reset_unit(&self, tick_id: &str, key: &str) -> Result<bool, PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("unit#{tick_id}")))
            .key("sk", s(key))
            .update_expression("SET #state = :pending, updated_at = :now")
            .condition_expression("#state = :failed")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(UnitState::Pending.as_str()))
            .expression_attribute_values(":failed", s(UnitState::Failed.as_str()))
            .expression_attribute_values(":now", n(clock::now().timestamp_millis()))
            .send()
            .await;
        condition_held("update_item", key, result)
    }
}

/// Creates the extract table (pay per request) if it does not exist.
pub async fn create_extract_table(clients: &AwsClients, table: &str) -> Result<(), PortError> {
    let op = "create_table";
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| PortError::permanent(op, table, e))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| PortError::permanent(op, table, e))
    };
    let created = clients
        .dynamodb
        .create_table()
        .table_name(table)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceInUseException") => Ok(()),
        Err(e) => Err(port_error(op, table, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moto::Moto;

    #[tokio::test]
    async fn bootstrap_makes_the_extract_table_and_queue_with_extracts() {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let mut config = choreo_domain::Config::default();
        config.extracts.push(
            serde_json::from_value(serde_json::json!({
                "name": "c", "schedule": "0 3 * * *", "dataset": "d", "query": "SELECT 1"
            }))
            .unwrap(),
        );
        let done = crate::bootstrap::bootstrap(&clients, &config)
            .await
            .unwrap();
        assert!(
            done.steps.iter().any(|s| s.contains("choreo-extracts")),
            "{:?}",
            done.steps
        );
        clients
            .dynamodb
            .describe_table()
            .table_name("choreo-extracts")
            .send()
            .await
            .unwrap();
        for q in ["choreo-extract", "choreo-extract-dlq"] {
            clients
                .sqs
                .get_queue_url()
                .queue_name(q)
                .send()
                .await
                .unwrap();
        }
    }

    /// The port's contract (`choreo_ports::testkit`), on DynamoDB (moto).
    #[tokio::test]
    async fn the_extract_store_keeps_the_ports_contract() {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        create_extract_table(&clients, "extracts").await.unwrap();
        create_extract_table(&clients, "extracts").await.unwrap();
        let store = DynamoExtractStore::new(clients.dynamodb.clone(), "extracts");
        choreo_ports::testkit::extract_store_contract(&store).await;
    }
}
