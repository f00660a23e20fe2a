//! The transformer as a service of its own (one ECS service per stage).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    choreo_backend::serve(choreo_transformer::SPEC).await
}
