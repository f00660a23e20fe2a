//! The [`StateStore`] on the state table: files, batches and leases. The table's layout is told in
//! `mod.rs`.

use super::items::{
    ACTIVE, Attrs, BatchItem, FileItem, HistoryMap, Lease, PHASES, WRITE_TOKEN, batch_index_pk,
    batch_pk, file_index_pk, file_index_sk, file_pk, from_ms, lease_pk, phase, shard_of,
};
use super::{ABSENT, GSI1PK, GSI1SK, Item, PK, STATE_INDEX, build_error, n, s};
use crate::error::{code, condition_held, port_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use choreo_domain::clock;
use choreo_domain::{
    Batch, BatchState, FileId, FileRecord, FileState, NewFile, SweepMark, Transition,
};
use choreo_ports::{
    BatchOutcome, FileQuery, LeaseInfo, LeaseOutcome, Page, PortError, Registered, StateStore,
    TransitionOutcome,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::task::JoinSet;

/// Page size when a query asks for 0, as the local backend.
const DEFAULT_LIMIT: usize = 100;
/// The largest page served, whatever the query asks.
const MAX_LIMIT: usize = 10_000;
/// How many index queries `list` runs at once.
const QUERY_CONCURRENCY: usize = 16;
/// The most keys one `BatchGetItem` takes.
const BATCH_GET_MAX: usize = 100;
/// Calls of one `BatchGetItem` chunk before unprocessed keys are an error (throttling).
const UNPROCESSED_ATTEMPTS: u32 = 5;

// Conditions, by name. `#pk`, `#state` and `#holder` are bound by every request that uses them.
/// A transition applies only from its `from` state.
const STATE_IS: &str = "#state = :from";
/// A batch update applies only from the expected state (false for a missing batch).
const BATCH_STATE_IS: &str = "#state = :expected AND #version = :version";
/// The same for a batch read at version 0, which records written before versions lack.
const BATCH_STATE_IS_FIRST: &str =
    "#state = :expected AND (attribute_not_exists(#version) OR #version = :version)";
/// A lease is taken if it is free, expired, or already the holder's (a renewal).
const LEASE_FREE: &str = "attribute_not_exists(#pk) OR #expires_at <= :now OR #holder = :holder";
/// Only the holder releases a lease.
const HELD_BY: &str = "#holder = :holder";

/// The [`StateStore`] on one DynamoDB table (its layout: `mod.rs`).
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
    index_shards: u32,
}

/// The `want` files with the smallest ids after `after`: how pages are cut from several shards.
struct Smallest {
    want: usize,
    after: Option<String>,
    items: BTreeMap<String, FileRecord>,
}

impl Smallest {
    fn new(want: usize, after: Option<String>) -> Self {
        Smallest {
            want,
            after,
            items: BTreeMap::new(),
        }
    }

    fn offer(&mut self, rec: FileRecord) {
        if self.after.as_deref().is_some_and(|a| rec.id.as_str() <= a) {
            return;
        }
        self.items.insert(rec.id.0.clone(), rec);
        if self.items.len() > self.want {
            self.items.pop_last();
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.want
    }

    /// A page of `limit` (`want` is `limit + 1`: one more tells whether another page exists).
    fn into_page(self, limit: usize) -> Page<FileRecord> {
        let more = self.items.len() > limit;
        let items: Vec<FileRecord> = self.items.into_values().take(limit).collect();
        let next = if more {
            items.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Page { items, next }
    }
}

/// One index query of `list`: a partition, and the dataset's key range in it if there is one.
struct IndexQuery {
    pk: String,
    /// The dataset whose files are wanted; within one dataset the index is in id order.
    dataset: Option<String>,
}

impl DynamoStateStore {
    /// A state store on `table`, spreading each state's index entries over `index_shards`
    /// partitions (`aws.index_shards`; 0 counts as 1). Every process must use the same shard count:
    /// a file's shard is computed at each write, and `list` queries shards `0..index_shards`.
    pub fn new(client: Client, table: &str, index_shards: u32) -> Self {
        DynamoStateStore {
            client,
            table: table.to_string(),
            index_shards: index_shards.max(1),
        }
    }

    /// The whole item of a file record, index keys included.
    fn file_item(&self, rec: &FileRecord) -> Item {
        let mut item = FileItem::from(rec).0;
        let shard = shard_of(rec.id.as_str(), self.index_shards);
        item.insert(GSI1PK.into(), s(file_index_pk(rec.state, shard)));
        item.insert(
            GSI1SK.into(),
            s(file_index_sk(&rec.dataset, rec.id.as_str())),
        );
        item
    }

    /// A consistent read of one item.
    async fn get_item(&self, op: &'static str, pk: String) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(op, &pk, e))?;
        Ok(out.item)
    }

    async fn get_file(&self, op: &'static str, id: &str) -> Result<Option<FileRecord>, PortError> {
        self.get_item(op, file_pk(id))
            .await?
            .map(|i| FileRecord::try_from(FileItem(i)))
            .transpose()
    }

    /// The ids in one index partition (or in one dataset's range of it) after `after`, in id order
    /// within a dataset. With `limit`, at most that many: the smallest.
    async fn index_ids(
        client: Client,
        table: String,
        q: IndexQuery,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<BTreeSet<String>, PortError> {
        let mut req = client
            .query()
            .table_name(&table)
            .index_name(STATE_INDEX)
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(&q.pk));
        let ordered = q.dataset.is_some();
        if let Some(d) = &q.dataset {
            // `<dataset>#<id>` sorts by id within the dataset; `<dataset>$` is just past the
            // range, as '$' follows '#' and dataset names hold neither.
            let lo = format!("{d}#{}", after.as_deref().unwrap_or(""));
            req = req
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#sk", GSI1SK)
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(format!("{d}$")));
            if let Some(n) = limit {
                req = req.limit(i32::try_from(n + 1).unwrap_or(i32::MAX).min(1000));
            }
        } else {
            req = req.key_condition_expression("#pk = :pk");
        }
        let mut pages = req.into_paginator().send();
        let mut ids = BTreeSet::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("list", &q.pk, e))?
        {
            for item in page.items.unwrap_or_default() {
                let pk = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "(no pk)",
                };
                let id = Attrs::new(pk, &item).key_after("F#")?;
                if after.as_deref().is_none_or(|a| id > a) {
                    ids.insert(id.to_string());
                }
            }
            if let Some(n) = limit {
                while ids.len() > n {
                    ids.pop_last();
                }
                // In id order, the first `n` found are the smallest.
                if ordered && ids.len() >= n {
                    break;
                }
            }
        }
        Ok(ids)
    }

    /// Every file, by a paginated Scan of the whole table: each page reads the table once.
    async fn scan_files(&self, mut found: Smallest) -> Result<Smallest, PortError> {
        let mut req = self
            .client
            .scan()
            .table_name(&self.table)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":f", s("F#"));
        req = match &found.after {
            Some(after) => req
                .filter_expression("begins_with(#pk, :f) AND #pk > :after")
                .expression_attribute_values(":after", s(file_pk(after))),
            None => req.filter_expression("begins_with(#pk, :f)"),
        };
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("list", &self.table, e))?
        {
            for item in page.items.unwrap_or_default() {
                found.offer(FileRecord::try_from(FileItem(item))?);
            }
        }
        Ok(found)
    }

    /// Runs index queries a few at a time and merges the ids they found.
    async fn query_ids(
        &self,
        queries: Vec<IndexQuery>,
        after: Option<String>,
        limit: Option<usize>,
    ) -> Result<BTreeSet<String>, PortError> {
        let mut all = BTreeSet::new();
        let mut queries = queries.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < QUERY_CONCURRENCY {
                let Some(q) = queries.next() else { break };
                running.spawn(Self::index_ids(
                    self.client.clone(),
                    self.table.clone(),
                    q,
                    after.clone(),
                    limit,
                ));
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let ids = done.map_err(|e| {
                PortError::transient("list", &self.table, format!("query task: {e}"))
            })??;
            all.extend(ids);
            if let Some(n) = limit {
                while all.len() > n {
                    all.pop_last();
                }
            }
        }
        Ok(all)
    }

    /// The files found through the index partitions of `phases` (in `dataset`'s range if given)
    /// that are in `state` (any if `None`): their ids from the keys-only index, then the records,
    /// read in id order a hundred at a time until `want` match. Only `ACTIVE` holds several
    /// states, so only there are more records read than kept: the files in flight.
    async fn list_in(
        &self,
        phases: &[&str],
        state: Option<FileState>,
        dataset: Option<&str>,
        want: usize,
        after: Option<String>,
    ) -> Result<Smallest, PortError> {
        let filtered = state.is_some_and(|s| phase(s) == ACTIVE);
        let queries = phases
            .iter()
            .flat_map(|phase| {
                (0..self.index_shards).map(move |shard| IndexQuery {
                    pk: format!("F#{phase}#{shard}"),
                    dataset: dataset.map(str::to_string),
                })
            })
            .collect();
        let ids = self
            .query_ids(queries, after.clone(), (!filtered).then_some(want))
            .await?;
        let ids: Vec<String> = ids.into_iter().map(|id| file_pk(&id)).collect();
        let mut found = Smallest::new(want, after);
        for chunk in ids.chunks(BATCH_GET_MAX) {
            for item in self.batch_get("list", chunk).await? {
                let rec = FileRecord::try_from(FileItem(item))?;
                if state.is_none_or(|s| rec.state == s) && dataset.is_none_or(|d| rec.dataset == d)
                {
                    found.offer(rec);
                }
            }
            // Chunks come in id order: a full page cannot gain a smaller id from the next.
            if found.is_full() {
                break;
            }
        }
        Ok(found)
    }

    /// The items of `pks` (eventually consistent, like the index that named them), in no order;
    /// items deleted meanwhile are left out. At most [`BATCH_GET_MAX`] keys a call; keys DynamoDB
    /// leaves unprocessed (throttling) are asked again after a pause.
    async fn batch_get(&self, op: &'static str, pks: &[String]) -> Result<Vec<Item>, PortError> {
        let mut out = Vec::with_capacity(pks.len());
        for chunk in pks.chunks(BATCH_GET_MAX) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|pk| Item::from([(PK.to_string(), s(pk))]))
                .collect();
            for attempt in 0.. {
                if keys.is_empty() {
                    break;
                }
                if attempt == UNPROCESSED_ATTEMPTS {
                    return Err(PortError::transient(
                        op,
                        &self.table,
                        format!("{} keys left unprocessed", keys.len()),
                    ));
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .build()
                    .map_err(|e| build_error(op, &self.table, e))?;
                let got = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, wanted)
                    .send()
                    .await
                    .map_err(|e| port_error(op, &self.table, e))?;
                out.extend(
                    got.responses
                        .and_then(|mut r| r.remove(&self.table))
                        .unwrap_or_default(),
                );
                keys = got
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn register(&self, file: NewFile) -> Result<Registered, PortError> {
        let rec = file.into_record(clock::now());
        let pk = file_pk(rec.id.as_str());
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.file_item(&rec)))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Registered::Created(rec)),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                // The item as it stood when the condition failed; an emulator that does not return
                // it costs a read.
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let existing = match old {
                    Some(item) => Some(FileRecord::try_from(FileItem(item))?),
                    None => self.get_file("register", rec.id.as_str()).await?,
                };
                existing.map(Registered::Exists).ok_or_else(|| {
                    PortError::transient("register", pk, "exists, then vanished: try again")
                })
            }
            Err(e) => Err(port_error("register", pk, e)),
        }
    }

    async fn get(&self, id: &FileId) -> Result<Option<FileRecord>, PortError> {
        self.get_file("get", id.as_str()).await
    }

    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, PortError> {
        let at = clock::now();
        let pk = file_pk(t.file.as_str());
        let shard = shard_of(t.file.as_str(), self.index_shards);
        // What `Transition::apply_to` does, as one update expression.
        let mut sets = vec!["#state = :to", "#history = list_append(#history, :entry)"];
        let mut names = HashMap::from([
            ("#state".to_string(), "state".to_string()),
            ("#updated_at".to_string(), "updated_at".to_string()),
            ("#history".to_string(), "history".to_string()),
            ("#sweep".to_string(), "sweep".to_string()),
        ]);
        let mut values = Item::from([
            (":from".to_string(), s(t.from.as_str())),
            (":to".to_string(), s(t.to.as_str())),
            (
                ":entry".to_string(),
                AttributeValue::L(vec![HistoryMap::from(&t.history_entry(at)).0]),
            ),
        ]);
        // The index entry moves only between phases: within one, the keys-only index is not
        // written at all.
        if phase(t.from) != phase(t.to) {
            sets.push("#gsi1pk = :gsi1pk");
            names.insert("#gsi1pk".into(), GSI1PK.into());
            values.insert(":gsi1pk".into(), s(file_index_pk(t.to, shard)));
        }
        // The sweep's note is about the state being left. The record's update time is the new
        // entry's (`items.rs`): one written before that rule goes.
        let mut remove = vec!["#sweep", "#updated_at"];
        // A move to FAILED without a reason keeps the reason the file had; any other move sets it
        // (or clears it).
        match &t.reason {
            Some(r) => {
                sets.push("#reason = :reason");
                values.insert(":reason".into(), s(r));
            }
            None if t.to != FileState::Failed => remove.push("#reason"),
            None => {}
        }
        if t.reason.is_some() || remove.contains(&"#reason") {
            names.insert("#reason".into(), "reason".into());
        }
        if let Some(b) = &t.batch_id {
            sets.push("#batch_id = :batch_id");
            names.insert("#batch_id".into(), "batch_id".into());
            values.insert(":batch_id".into(), s(b));
        }
        if let Some(v) = &t.validation {
            sets.push("#validation = :validation");
            names.insert("#validation".into(), "validation".into());
            values.insert(":validation".into(), s(v));
        }
        let update = format!("SET {} REMOVE {}", sets.join(", "), remove.join(", "));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .update_expression(update)
            .condition_expression(STATE_IS)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| {
                    PortError::permanent("transition", &pk, "no attributes returned")
                })?;
                Ok(TransitionOutcome::Applied(FileRecord::try_from(FileItem(
                    item,
                ))?))
            }
            // A failed condition is an outcome: the file is elsewhere, or is not there at all.
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                let old = match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let current = match old {
                    Some(item) => Some(FileRecord::try_from(FileItem(item))?),
                    None => self.get_file("transition", t.file.as_str()).await?,
                };
                Ok(match current {
                    Some(r) => TransitionOutcome::Conflict(r),
                    None => TransitionOutcome::NotFound,
                })
            }
            Err(e) => Err(port_error("transition", pk, e)),
        }
    }

    /// Dataset and state: one Query per shard of the state's phase. A dataset only: that for every
    /// phase. A state only: every shard of its phase, read whole (the index is in dataset order, the
    /// page in id order). Then the page's records (see `list_in`). Neither: a Scan of the whole
    /// table per page — for the command line, not for handlers.
    async fn list(&self, query: &FileQuery) -> Result<Page<FileRecord>, PortError> {
        let limit = if query.limit == 0 {
            DEFAULT_LIMIT
        } else {
            query.limit.min(MAX_LIMIT)
        };
        let want = limit + 1;
        let after = query.after.clone();
        let dataset = query.dataset.as_deref();
        let found = match (dataset, query.state) {
            (_, Some(state)) => {
                self.list_in(&[phase(state)], Some(state), dataset, want, after)
                    .await?
            }
            (Some(_), None) => self.list_in(&PHASES, None, dataset, want, after).await?,
            (None, None) => self.scan_files(Smallest::new(want, after)).await?,
        };
        Ok(found.into_page(limit))
    }

    /// A paginated Scan of the whole table projecting dataset and state: it reads every item, so
    /// it costs about one read unit per 8 KB of table per call. For the command line.
    async fn counts(&self) -> Result<Vec<(String, FileState, u64)>, PortError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(#pk, :f)")
            .projection_expression("#pk, #dataset, #state")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#dataset", "dataset")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":f", s("F#"))
            .into_paginator()
            .send();
        let mut counts: BTreeMap<(String, FileState), u64> = BTreeMap::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("counts", &self.table, e))?
        {
            for item in page.items.unwrap_or_default() {
                let pk = match item.get(PK) {
                    Some(AttributeValue::S(pk)) => pk.as_str(),
                    _ => "(no pk)",
                };
                let a = Attrs::new(pk, &item);
                *counts
                    .entry((a.s("dataset")?.to_string(), a.parse("state")?))
                    .or_default() += 1;
            }
        }
        Ok(counts.into_iter().map(|((d, st), c)| (d, st, c)).collect())
    }

    async fn create_batch(&self, batch: &Batch) -> Result<bool, PortError> {
        let pk = batch_pk(&batch.id);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(BatchItem::try_from(batch)?.0))
            .condition_expression(ABSENT)
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held("create_batch", pk, put)
    }

    async fn get_batch(&self, id: &str) -> Result<Option<Batch>, PortError> {
        self.get_item("get_batch", batch_pk(id))
            .await?
            .map(|i| Batch::try_from(BatchItem(i)))
            .transpose()
    }

    /// A put conditional on the stored state, carrying a token of its own ([`WRITE_TOKEN`]): when
    /// the condition fails against an item bearing that token, this very write was applied by an
    /// earlier attempt whose answer was lost, and the outcome is `Applied`.
    async fn update_batch(
        &self,
        batch: &mut Batch,
        expected: BatchState,
    ) -> Result<BatchOutcome, PortError> {
        let pk = batch_pk(&batch.id);
        let token = uuid::Uuid::new_v4().to_string();
        let read_at = batch.version;
        let next = Batch {
            version: read_at + 1,
            ..batch.clone()
        };
        let mut item = BatchItem::try_from(&next)?.0;
        item.insert(WRITE_TOKEN.to_string(), s(&token));
        let condition = if read_at == 0 {
            BATCH_STATE_IS_FIRST
        } else {
            BATCH_STATE_IS
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", s(expected.as_str()))
            .expression_attribute_values(":version", n(read_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => {
                batch.version = next.version;
                Ok(BatchOutcome::Applied)
            }
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                };
                let current = match old {
                    Some(item) => Some(item),
                    None => self.get_item("update_batch", pk.clone()).await?,
                };
                if current
                    .as_ref()
                    .and_then(|item| item.get(WRITE_TOKEN))
                    .is_some_and(|t| *t == s(&token))
                {
                    choreo_telemetry::events::emit(crate::events::BatchWriteAnswerLost {
                        batch_id: &batch.id,
                    });
                    batch.version = next.version;
                    return Ok(BatchOutcome::Applied);
                }
                let current = current.map(|i| Batch::try_from(BatchItem(i))).transpose()?;
                Ok(BatchOutcome::Conflict(current.map(Box::new)))
            }
            Err(e) => Err(port_error("update_batch", pk, e)),
        }
    }

    /// A Query of the index partition of `state` (eventually consistent; keys only), then the
    /// batches' items, oldest first. A batch that left `state` between the two is left out.
    async fn batches_in(&self, state: BatchState) -> Result<Vec<Batch>, PortError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(STATE_INDEX)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", s(batch_index_pk(state)))
            .into_paginator()
            .send();
        let mut pks = Vec::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| port_error("batches_in", state.as_str(), e))?
        {
            for item in page.items.unwrap_or_default() {
                if let Some(AttributeValue::S(pk)) = item.get(PK) {
                    pks.push(pk.clone());
                }
            }
        }
        let mut batches = Vec::with_capacity(pks.len());
        for item in self.batch_get("batches_in", &pks).await? {
            let batch = Batch::try_from(BatchItem(item))?;
            if batch.state == state {
                batches.push(batch);
            }
        }
        batches.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(batches)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, PortError> {
        let pk = lease_pk(name);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        // A lease released between our failed put and our read is free again: try again.
        for _ in 0..3 {
            let now = clock::now().timestamp_millis();
            let expires_at = now.saturating_add(ttl_ms);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(PK, s(&pk))
                .item("holder", s(holder))
                .item("expires_at", n(expires_at))
                .condition_expression(LEASE_FREE)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":holder", s(holder))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match put {
                Ok(_) => {
                    return Ok(LeaseOutcome::Acquired {
                        expires_at: from_ms(expires_at),
                    });
                }
                Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                    let old = match e.into_service_error() {
                        PutItemError::ConditionalCheckFailedException(c) => c.item,
                        _ => None,
                    };
                    let current = match old {
                        Some(item) => Some(item),
                        None => self.get_item("acquire_lease", pk.clone()).await?,
                    };
                    if let Some(item) = current {
                        let lease = Lease::try_from(&item)?;
                        return Ok(LeaseOutcome::Held {
                            holder: lease.holder,
                            expires_at: from_ms(lease.expires_at_ms),
                        });
                    }
                }
                Err(e) => return Err(port_error("acquire_lease", pk, e)),
            }
        }
        Err(PortError::transient(
            "acquire_lease",
            pk,
            "the lease changed hands during every attempt",
        ))
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>, PortError> {
        let Some(item) = self.get_item("lease", lease_pk(name)).await? else {
            return Ok(None);
        };
        let lease = Lease::try_from(&item)?;
        Ok(Some(LeaseInfo {
            holder: lease.holder,
            expires_at: from_ms(lease.expires_at_ms),
        }))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), PortError> {
        let pk = lease_pk(name);
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .condition_expression(HELD_BY)
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        // Not ours (or gone): nothing to do.
        condition_held("release_lease", pk, deleted).map(|_| ())
    }

    async fn mark_sweep(
        &self,
        id: &FileId,
        history_len: usize,
        mark: &SweepMark,
    ) -> Result<bool, PortError> {
        let pk = file_pk(id.as_str());
        let body = serde_json::to_string(mark).expect("sweep marks always serialize");
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(&pk))
            .update_expression("SET #sweep = :sweep")
            .condition_expression("#state = :state AND size(#history) = :len")
            .expression_attribute_names("#sweep", "sweep")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#history", "history")
            .expression_attribute_values(":sweep", s(body))
            .expression_attribute_values(":state", s(mark.state.as_str()))
            .expression_attribute_values(":len", n(history_len as u64))
            .send()
            .await;
        condition_held("mark_sweep", pk, updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AwsClients;
    use crate::dynamo::create_tables;
    use crate::dynamo::testutil::{calls, fixture, one};
    use choreo_domain::config::AwsSettings;
    use std::time::Instant;

    use choreo_ports::testkit::{new_file, validate};

    #[tokio::test]
    async fn the_state_store_keeps_the_ports_contract() {
        // The contract's listing (files `f-00`..`f-11`) spreads over several index partitions.
        let shards: BTreeSet<u32> = (0..12).map(|i| shard_of(&format!("f-{i:02}"), 4)).collect();
        assert!(shards.len() > 1, "{shards:?}");
        let f = fixture(4).await;
        choreo_ports::testkit::state_store_contract(&f.state()).await;
    }

    /// A moto that serves one request at a time, as DynamoDB serializes the writes to one item.
    /// `moto_server` runs threaded and its DynamoDB checks a condition and writes without a lock,
    /// so two racing conditional writes can both succeed there; DynamoDB never lets them.
    struct SerialMoto {
        child: std::process::Child,
        endpoint: String,
    }

    impl SerialMoto {
        fn start() -> SerialMoto {
            let python = match std::env::var_os("CHOREO_MOTO_SERVER") {
                Some(server) => std::path::Path::new(&server).with_file_name("python"),
                None => std::path::PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../.venv/bin/python"
                )),
            };
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let script = "import sys, moto.server as m\n\
                          run = m.run_simple\n\
                          m.run_simple = lambda *a, **k: run(*a, **{**k, 'threaded': False})\n\
                          m.main(['-H', '127.0.0.1', '-p', sys.argv[1]])";
            let child = std::process::Command::new(&python)
                .args(["-c", script, &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
            let mut moto = SerialMoto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = moto.child.try_wait() {
                    panic!("serial moto exited at start ({status})");
                }
                assert!(Instant::now() < deadline, "moto did not answer within 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
            moto
        }
    }

    impl Drop for SerialMoto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_transitions_apply_exactly_once() {
        let moto = SerialMoto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        create_tables(&clients, &AwsSettings::default())
            .await
            .unwrap();
        let s = DynamoStateStore::new(clients.dynamodb.clone(), "choreo-state", 4);
        s.register(new_file("f-1", "d")).await.unwrap();
        let mut tasks = JoinSet::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.spawn(async move { s.transition(&validate("f-1")).await.unwrap() });
        }
        let mut applied = 0;
        while let Some(outcome) = tasks.join_next().await {
            match outcome.unwrap() {
                TransitionOutcome::Applied(_) => applied += 1,
                TransitionOutcome::Conflict(r) => assert_eq!(r.state, FileState::Valid),
                TransitionOutcome::NotFound => panic!("not found"),
            }
        }
        assert_eq!(applied, 1);
        let rec = s.get(&FileId::from("f-1")).await.unwrap().unwrap();
        assert_eq!(
            rec.history.len(),
            2,
            "one history entry per applied transition"
        );
        drop(clients);
    }

    #[tokio::test]
    async fn each_outcome_costs_one_call() {
        let f = fixture(4).await;
        let s = f.state();
        s.register(new_file("f-1", "d")).await.unwrap();
        calls(&f);
        // A duplicate registration and a conflicting transition read the item from the failed
        // condition itself (ReturnValuesOnConditionCheckFailure), not with a second request.
        assert!(matches!(
            s.register(new_file("f-1", "d")).await.unwrap(),
            Registered::Exists(_)
        ));
        assert_eq!(calls(&f), one("PutItem"));
        assert!(matches!(
            s.transition(&validate("f-1")).await.unwrap(),
            TransitionOutcome::Applied(_)
        ));
        assert_eq!(calls(&f), one("UpdateItem"));
        assert!(matches!(
            s.transition(&validate("f-1")).await.unwrap(),
            TransitionOutcome::Conflict(_)
        ));
        assert_eq!(calls(&f), one("UpdateItem"));
        // Only a missing file costs the read that tells NotFound from a race.
        s.transition(&validate("f-2")).await.unwrap();
        assert_eq!(
            calls(&f),
            vec![("GetItem".to_string(), 1), ("UpdateItem".to_string(), 1)]
        );
        // Dataset and state: one Query per shard of the phase, then one read of the records found,
        // no Scan.
        s.list(&FileQuery {
            dataset: Some("d".into()),
            state: Some(FileState::Valid),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(
            calls(&f),
            vec![("BatchGetItem".to_string(), 1), ("Query".to_string(), 4)]
        );
        s.list(&FileQuery::default()).await.unwrap();
        assert_eq!(calls(&f), one("Scan"));
        let b = batch("b-1", 0);
        s.create_batch(&b).await.unwrap();
        calls(&f);
        let mut stale = b.clone();
        stale.state = BatchState::Failed;
        s.update_batch(&mut stale, BatchState::Cataloged)
            .await
            .unwrap();
        assert_eq!(calls(&f), one("PutItem"));
        s.batches_in(BatchState::Crawling).await.unwrap();
        assert_eq!(
            calls(&f),
            vec![("BatchGetItem".to_string(), 1), ("Query".to_string(), 1)]
        );
        s.acquire_lease("l", "a", Duration::from_secs(60))
            .await
            .unwrap();
        calls(&f);
        s.acquire_lease("l", "b", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(calls(&f), one("PutItem"));
    }

    fn batch(id: &str, at_offset_ms: i64) -> Batch {
        let at = clock::now() + chrono::Duration::milliseconds(at_offset_ms);
        Batch {
            files: vec![FileId::from("f-1")],
            created_at: at,
            updated_at: at,
            ..Batch::new(
                id.into(),
                "d",
                "d-crawler".into(),
                "builtin".into(),
                BatchState::Crawling,
                Vec::new(),
            )
        }
    }
}
