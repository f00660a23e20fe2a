//! The SDK clients, built once from the standard chain (region, credentials, `AWS_ENDPOINT_URL`),
//! with S3 path-style addressing when an endpoint is given (emulators serve no virtual hosts), and a
//! counter of API calls per service and operation on every client.

use aws_sdk_sqs::config::{Credentials, Intercept};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// API calls made, by `(service, operation)`. Each attempt counts, as each is billed.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    calls: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

impl CallCounter {
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.calls.lock().expect("counter lock").clone()
    }

    pub fn reset(&self) {
        self.calls.lock().expect("counter lock").clear();
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "ChoreoCallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            let key = (m.service().to_string(), m.name().to_string());
            *self
                .calls
                .lock()
                .expect("counter lock")
                .entry(key)
                .or_default() += 1;
        }
        Ok(())
    }
}

/// One client per service, sharing one SDK configuration and one call counter.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub glue: aws_sdk_glue::Client,
    pub calls: CallCounter,
    /// The endpoint override in force (config or `AWS_ENDPOINT_URL`), if any.
    pub endpoint: Option<String>,
}

impl AwsClients {
    /// Clients from the SDK's standard chain. `endpoint` (from the configuration) overrides
    /// `AWS_ENDPOINT_URL`, which the SDK reads by itself.
    pub async fn from_env(endpoint: Option<&str>) -> AwsClients {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        Self::build(&sdk, endpoint)
    }

    /// Clients for an emulator at `endpoint`, with fixed test credentials and region: no environment
    /// is read, so tests in one process can each talk to their own emulator.
    pub async fn emulator(endpoint: &str) -> AwsClients {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
            .load()
            .await;
        Self::build(&sdk, Some(endpoint.to_string()))
    }

    fn build(sdk: &aws_config::SdkConfig, endpoint: Option<String>) -> AwsClients {
        let calls = CallCounter::default();
        let s3 = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(endpoint.is_some())
            .interceptor(calls.clone())
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        let glue = aws_sdk_glue::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .build();
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            glue: aws_sdk_glue::Client::from_conf(glue),
            calls,
            endpoint,
        }
    }
}
