//! The extractor as a service of its own (one ECS service; its ticks come from EventBridge
//! Scheduler on AWS, from its own scheduler on the local backend).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    choreo_backend::serve(choreo_extractor::SPEC).await
}
