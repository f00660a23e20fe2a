//! Creates the state and audit tables with their indexes.

use super::{GSI1PK, GSI1SK, PK, STATE_INDEX, TIME_INDEX, build_error};
use crate::client::AwsClients;
use crate::error::{code, port_error};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType, TableStatus,
};
use choreo_domain::config::AwsSettings;
use choreo_ports::PortError;
use std::time::{Duration, Instant};

/// How long `create_tables` waits for a table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates the state and audit tables with their indexes, if they do not exist, and waits until
/// they are ACTIVE; then enables point-in-time recovery on both (an emulator that refuses is
/// logged at debug level and ignored). An existing table without its index is an error: the
/// adapters cannot work without it.
pub async fn create_tables(clients: &AwsClients, settings: &AwsSettings) -> Result<(), PortError> {
    let emulated = clients.endpoint.is_some();
    // The state index is keys only, so that moves within a phase do not write it; the audit
    // trail's carries whole events, which `recent` reads straight from it.
    for (table, index, projection) in [
        (&settings.state_table, STATE_INDEX, ProjectionType::KeysOnly),
        (&settings.audit_table, TIME_INDEX, ProjectionType::All),
    ] {
        create_table(&clients.dynamodb, table, index, projection).await?;
        wait_active(&clients.dynamodb, table, index).await?;
        enable_pitr(&clients.dynamodb, table, emulated).await?;
    }
    Ok(())
}

async fn create_table(
    client: &Client,
    table: &str,
    index: &str,
    projection: ProjectionType,
) -> Result<(), PortError> {
    let op = "create_table";
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error(op, table, e))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| build_error(op, table, e))
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(index)
        .key_schema(key(GSI1PK, KeyType::Hash)?)
        .key_schema(key(GSI1SK, KeyType::Range)?)
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .map_err(|e| build_error(op, table, e))?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(GSI1PK)?)
        .attribute_definitions(attr(GSI1SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .global_secondary_indexes(gsi)
        .send()
        .await;
    match created {
        Ok(_) => {
            choreo_telemetry::events::emit(crate::events::TableCreated { table });
            Ok(())
        }
        Err(e) if code(&e) == Some("ResourceInUseException") => {
            tracing::debug!(table, "table exists");
            Ok(())
        }
        Err(e) => Err(port_error(op, table, e)),
    }
}

async fn wait_active(client: &Client, table: &str, index: &str) -> Result<(), PortError> {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| port_error("create_tables", table, e))?;
        let desc = out.table.ok_or_else(|| {
            PortError::permanent("create_tables", table, "DescribeTable returned no table")
        })?;
        let gsi = desc
            .global_secondary_indexes()
            .iter()
            .find(|g| g.index_name() == Some(index));
        let Some(gsi) = gsi else {
            return Err(PortError::permanent(
                "create_tables",
                table,
                format!("the table exists without the index {index}: add it, or use another table"),
            ));
        };
        let table_active = desc.table_status() == Some(&TableStatus::Active);
        let index_active = gsi.index_status().is_none_or(|s| *s == IndexStatus::Active);
        if table_active && index_active {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PortError::transient(
                "create_tables",
                table,
                format!("not ACTIVE after {} s", ACTIVE_TIMEOUT.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn enable_pitr(client: &Client, table: &str, emulated: bool) -> Result<(), PortError> {
    let spec = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .map_err(|e| build_error("create_tables", table, e))?;
    // Right after creation AWS may answer ContinuousBackupsUnavailableException for a while.
    for _ in 0..20 {
        let updated = client
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(spec.clone())
            .send()
            .await;
        match updated {
            Ok(_) => return Ok(()),
            Err(e) if code(&e) == Some("ContinuousBackupsUnavailableException") => {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Err(e) if emulated => {
                let e = port_error("create_tables", table, e);
                tracing::debug!(table, error = %e, "the emulator refused point-in-time recovery");
                return Ok(());
            }
            Err(e) => return Err(port_error("create_tables", table, e)),
        }
    }
    Err(PortError::transient(
        "create_tables",
        table,
        "continuous backups stayed unavailable: enable point-in-time recovery later",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamo::testutil::fixture;

    #[tokio::test]
    async fn create_tables_is_idempotent_and_enables_recovery() {
        let f = fixture(4).await;
        create_tables(&f.clients, &f.settings).await.unwrap();
        for table in [&f.settings.state_table, &f.settings.audit_table] {
            let out = f
                .clients
                .dynamodb
                .describe_continuous_backups()
                .table_name(table)
                .send()
                .await
                .unwrap();
            let pitr = out
                .continuous_backups_description
                .and_then(|d| d.point_in_time_recovery_description)
                .and_then(|p| p.point_in_time_recovery_status)
                .map(|s| s.as_str().to_string());
            assert_eq!(pitr.as_deref(), Some("ENABLED"), "{table}");
        }
    }
}
