//! DynamoDB adapter: one table for everything the control plane owns.
//!
//! Keys: `pk` / `sk` (strings) on the table, `gsi1pk` / `gsi1sk` and `gsi2pk` /
//! `gsi2sk` on two overloaded global secondary indexes, `ttl` (epoch seconds) for
//! items that expire. The access patterns are written down in docs/dynamodb.md.

use aws_sdk_dynamodb::error::DisplayErrorContext;
use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use crate::store::{HealthStore, Hit, Index, Item, ItemStore, Put, Query, StoreError};

/// The DynamoDB-backed store.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn unavailable(e: impl std::error::Error) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

impl DynamoStore {
    /// Builds a client from the standard AWS environment (region, credentials and
    /// `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local).
    pub async fn from_env(table: impl Into<String>) -> Self {
        let conf = aws_config::load_from_env().await;
        Self::new(Client::new(&conf), table)
    }

    /// A client for DynamoDB Local (or any endpoint) with dummy credentials: tests.
    pub fn local(endpoint: &str, table: impl Into<String>) -> Self {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "local"))
            .build();
        Self::new(Client::from_conf(conf), table)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Creates the table, its indexes and TTL if the table does not exist yet.
    /// Idempotent and safe when two processes race to create it.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(unavailable)
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)
        };
        let gsi = |n: &str| -> Result<GlobalSecondaryIndex, StoreError> {
            GlobalSecondaryIndex::builder()
                .index_name(n)
                .key_schema(key(&format!("{n}pk"), KeyType::Hash)?)
                .key_schema(key(&format!("{n}sk"), KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(unavailable)
        };
        let mut create = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(gsi("gsi1")?)
            .global_secondary_indexes(gsi("gsi2")?);
        for a in ["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"] {
            create = create.attribute_definitions(attr(a)?);
        }
        match create.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.wait_active().await?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("ttl")
            .build()
            .map_err(unavailable)?;
        match self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already enabled by a concurrent creator.
            Err(e)
                if DisplayErrorContext(&e)
                    .to_string()
                    .contains("already enabled") =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn wait_active(&self) -> Result<(), StoreError> {
        for _ in 0..100 {
            if self.ping().await? == TableStatus::Active.as_str() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StoreError::Unavailable(format!(
            "table {} did not become ACTIVE",
            self.table
        )))
    }
}

impl HealthStore for DynamoStore {
    async fn ping(&self) -> Result<String, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out
            .table()
            .and_then(|t| t.table_status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "UNKNOWN".into()))
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn to_attrs(item: &Item) -> HashMap<String, AttributeValue> {
    let mut m = HashMap::new();
    m.insert("pk".to_owned(), s(&item.pk));
    m.insert("sk".to_owned(), s(&item.sk));
    if let Some((pk, sk)) = &item.gsi1 {
        m.insert("gsi1pk".to_owned(), s(pk));
        m.insert("gsi1sk".to_owned(), s(sk));
    }
    if let Some((pk, sk)) = &item.gsi2 {
        m.insert("gsi2pk".to_owned(), s(pk));
        m.insert("gsi2sk".to_owned(), s(sk));
    }
    if let Some(ttl) = item.ttl {
        m.insert("ttl".to_owned(), AttributeValue::N(ttl.to_string()));
    }
    if let Some(v) = item.version {
        m.insert("ver".to_owned(), AttributeValue::N(v.to_string()));
    }
    m.insert("data".to_owned(), s(&item.data));
    m
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num_attr(m: &HashMap<String, AttributeValue>, k: &str) -> Result<Option<u64>, StoreError> {
    match m.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_n()
            .ok()
            .and_then(|x| x.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("{k} is not a number"))),
    }
}

/// The condition expression (and its values) of a put mode, if any.
fn condition(mode: Put) -> Option<(&'static str, Option<AttributeValue>)> {
    match mode {
        Put::Upsert => None,
        Put::IfAbsent => Some(("attribute_not_exists(pk)", None)),
        Put::IfVersion(0) => Some(("attribute_not_exists(ver) OR ver = :expected", Some(n(0)))),
        Put::IfVersion(v) => Some(("ver = :expected", Some(n(v)))),
    }
}

fn from_attrs(m: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let get = |k: &str| -> Option<String> { m.get(k).and_then(|v| v.as_s().ok()).cloned() };
    let pair = |a: &str, b: &str| get(a).zip(get(b));
    let ttl = num_attr(m, "ttl")?;
    let version = num_attr(m, "ver")?;
    Ok(Item {
        pk: get("pk").ok_or_else(|| StoreError::Corrupt("missing pk".into()))?,
        sk: get("sk").ok_or_else(|| StoreError::Corrupt("missing sk".into()))?,
        gsi1: pair("gsi1pk", "gsi1sk"),
        gsi2: pair("gsi2pk", "gsi2sk"),
        ttl,
        version,
        data: get("data").unwrap_or_default(),
    })
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

impl ItemStore for DynamoStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(from_attrs).transpose()
    }

    async fn put(&self, item: Item, mode: Put) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_attrs(&item)));
        if let Some((cond, value)) = condition(mode) {
            req = req.condition_expression(cond);
            if let Some(v) = value {
                req = req.expression_attribute_values(":expected", v);
            }
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn put_all(&self, items: Vec<(Item, Put)>) -> Result<(), StoreError> {
        let mut req = self.client.transact_write_items();
        for (item, mode) in &items {
            let mut put = aws_sdk_dynamodb::types::Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_attrs(item)));
            if let Some((cond, value)) = condition(*mode) {
                put = put.condition_expression(cond);
                if let Some(v) = value {
                    put = put.expression_attribute_values(":expected", v);
                }
            }
            req = req.transact_items(
                TransactWriteItem::builder()
                    .put(put.build().map_err(unavailable)?)
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_transaction_canceled_exception()) =>
            {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => out.attributes().map(from_attrs).transpose(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn query(&self, q: Query) -> Result<Vec<Item>, StoreError> {
        let (pk_name, sk_name) = match q.index {
            None => ("pk", "sk"),
            Some(Index::Gsi1) => ("gsi1pk", "gsi1sk"),
            Some(Index::Gsi2) => ("gsi2pk", "gsi2sk"),
        };
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(q.index.map(|i| i.name().to_owned()))
                .expression_attribute_names("#p", pk_name)
                .expression_attribute_values(":p", s(&q.pk))
                .scan_index_forward(!q.descending)
                .set_exclusive_start_key(start.take());
            req = if q.sk_prefix.is_empty() {
                req.key_condition_expression("#p = :p")
            } else {
                req.key_condition_expression("#p = :p AND begins_with(#s, :s)")
                    .expression_attribute_names("#s", sk_name)
                    .expression_attribute_values(":s", s(&q.sk_prefix))
            };
            let page = req.send().await.map_err(unavailable)?;
            for it in page.items() {
                if out.len() >= q.limit {
                    return Ok(out);
                }
                out.push(from_attrs(it)?);
            }
            match page.last_evaluated_key() {
                Some(k) if out.len() < q.limit => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn hit(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        window_secs: u64,
        now: u64,
    ) -> Result<Hit, StoreError> {
        let fresh_until = now.saturating_add(window_secs);
        // A few rounds at most: each lost race means another caller made progress.
        for _ in 0..4 {
            // One conditional ADD: counted only while the live window is below the limit.
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(pk, sk)))
                .update_expression(
                    "ADD #n :one SET #t = if_not_exists(#t, :until), #d = if_not_exists(#d, :empty)",
                )
                .condition_expression("attribute_not_exists(pk) OR (#t > :now AND #n < :limit)")
                .expression_attribute_names("#n", "n")
                .expression_attribute_names("#t", "ttl")
                .expression_attribute_names("#d", "data")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":until", n(fresh_until))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":limit", n(limit))
                .expression_attribute_values(":empty", s("{}"))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await;
            match res {
                Ok(out) => {
                    let count = out
                        .attributes()
                        .map(|a| num_attr(a, "n"))
                        .transpose()?
                        .flatten()
                        .unwrap_or(1);
                    if count > limit {
                        // Only possible with limit 0 on a new item.
                        return Ok(Hit::Refused { until: fresh_until });
                    }
                    return Ok(Hit::Counted { count });
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(unavailable(e)),
            }
            let stored = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(pk, sk)))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            let Some(item) = stored.item() else { continue };
            let until = num_attr(item, "ttl")?.unwrap_or(0);
            if until > now {
                return Ok(Hit::Refused { until });
            }
            // The window is over (DynamoDB deletes expired items lazily): start a new
            // one, unless another caller already did.
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(HashMap::from([
                    ("pk".to_owned(), s(pk)),
                    ("sk".to_owned(), s(sk)),
                    ("n".to_owned(), n(1)),
                    ("ttl".to_owned(), n(fresh_until)),
                    ("data".to_owned(), s("{}")),
                ])))
                .condition_expression("#t = :old")
                .expression_attribute_names("#t", "ttl")
                .expression_attribute_values(":old", n(until))
                .send()
                .await;
            match res {
                Ok(_) if limit > 0 => return Ok(Hit::Counted { count: 1 }),
                Ok(_) => return Ok(Hit::Refused { until: fresh_until }),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "attempt counter is contended".into(),
        ))
    }
}
