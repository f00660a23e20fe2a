//! EventBridge Scheduler schedules of scheduled extracts: one per extract, in its time zone, whose
//! target is the extract queue. On AWS these replace the local scheduler: at each slot EventBridge
//! sends `{"type": "ExtractTick", "extract": ..., "tick_id": "<extract>@<scheduled time>"}`, and
//! the extractor records a tick it has not seen (the scheduled time makes the id the same for a
//! duplicate delivery, so each key is still extracted once).

use crate::AwsClients;
use crate::error::{code, port_error};
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use choreo_domain::Config;
use choreo_domain::extract::{ExtractConfig, eventbridge_cron};
use choreo_ports::PortError;

/// The schedule's name for an extract.
pub fn schedule_name(extract: &str) -> String {
    format!("choreo-extract-{extract}")
}

/// The tick EventBridge sends for `extract`, with its context attribute for the scheduled time.
pub fn tick_input(extract: &str) -> String {
    serde_json::json!({
        "type": "ExtractTick",
        "extract": extract,
        "tick_id": format!("{extract}@<aws.scheduler.scheduled-time>"),
    })
    .to_string()
}

/// Creates (or updates) the schedule of every extract; returns their names.
pub async fn create_schedules(
    clients: &AwsClients,
    config: &Config,
) -> Result<Vec<String>, PortError> {
    let queue = &config.queues.extract;
    let queue_arn = crate::messaging_setup::queue_arn(&clients.sqs, queue).await?;
    let mut names = Vec::new();
    for e in &config.extracts {
        names.push(ensure_schedule(clients, config, e, &queue_arn).await?);
    }
    Ok(names)
}

async fn ensure_schedule(
    clients: &AwsClients,
    config: &Config,
    e: &ExtractConfig,
    queue_arn: &str,
) -> Result<String, PortError> {
    let name = schedule_name(&e.name);
    let expression = eventbridge_cron(&e.schedule)
        .map_err(|why| PortError::permanent("create_schedule", &name, why))?;
    let window = FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .map_err(|err| PortError::permanent("create_schedule", &name, err))?;
    let target = Target::builder()
        .arn(queue_arn)
        .role_arn(&config.aws.scheduler_role)
        .input(tick_input(&e.name))
        .build()
        .map_err(|err| PortError::permanent("create_schedule", &name, err))?;
    let created = clients
        .scheduler
        .create_schedule()
        .name(&name)
        .schedule_expression(&expression)
        .schedule_expression_timezone(&e.time_zone)
        .flexible_time_window(window.clone())
        .target(target.clone())
        .send()
        .await;
    match created {
        Ok(_) => Ok(name),
        // It exists: make it what the configuration says now.
        Err(err) if code(&err) == Some("ConflictException") => {
            clients
                .scheduler
                .update_schedule()
                .name(&name)
                .schedule_expression(&expression)
                .schedule_expression_timezone(&e.time_zone)
                .flexible_time_window(window)
                .target(target)
                .send()
                .await
                .map_err(|err| port_error("update_schedule", &name, err))?;
            Ok(name)
        }
        Err(err) => Err(port_error("create_schedule", &name, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moto::Moto;

    #[tokio::test]
    async fn bootstrap_schedules_each_extract_in_its_zone_to_the_extract_queue() {
        let moto = Moto::start();
        let clients = AwsClients::emulator(&moto.endpoint).await;
        let mut config = Config::default();
        config.extracts.push(
            serde_json::from_value(serde_json::json!({
                "name": "campaigns", "schedule": "0 3,14 * * *", "time_zone": "Europe/Paris",
                "dataset": "d", "query": "SELECT 1"
            }))
            .unwrap(),
        );
        // Twice: the second run updates what the first created.
        crate::bootstrap::bootstrap(&clients, &config)
            .await
            .unwrap();
        crate::bootstrap::bootstrap(&clients, &config)
            .await
            .unwrap();
        let s = clients
            .scheduler
            .get_schedule()
            .name("choreo-extract-campaigns")
            .send()
            .await
            .unwrap();
        assert_eq!(s.schedule_expression(), Some("cron(0 3,14 * * ? *)"));
        assert_eq!(s.schedule_expression_timezone(), Some("Europe/Paris"));
        let target = s.target().unwrap();
        assert!(
            target.arn().ends_with(":choreo-extract"),
            "{}",
            target.arn()
        );
        let input: serde_json::Value = serde_json::from_str(target.input().unwrap()).unwrap();
        assert_eq!(input["type"], "ExtractTick");
        assert_eq!(input["tick_id"], "campaigns@<aws.scheduler.scheduled-time>");
        // It parses as the extractor's own message.
        let _: choreo_domain::extract::ExtractMessage = serde_json::from_value(input).unwrap();
    }
}
