//! The SDK clients, built once from the standard chain (region, credentials, `AWS_ENDPOINT_URL`),
//! with S3 path-style addressing when an endpoint is given (emulators serve no virtual hosts), a
//! counter of API calls per service and operation, and a log line for every retry, on every client.
//!
//! Retries are the SDK's standard mode: throttling, 5xx, timeouts and dropped connections are
//! tried again with exponential backoff and jitter, at most `AWS_MAX_ATTEMPTS` attempts in all
//! (3 by default; `AWS_RETRY_MODE` and `AWS_MAX_ATTEMPTS` are the SDK's standard variables), and a
//! client-side quota stops retrying while most calls fail. A retry is only safe for a call that
//! can be repeated: calls that start something (a crawl, a job run) opt out (`glue.rs`), and
//! conditional writes recognise their own earlier attempt (`dynamo/state.rs`).

use crate::cost::{Bill, Ledger};
use aws_sdk_sqs::config::{Credentials, Intercept};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::retry::RetryConfig;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// API calls made, by `(service, operation)`: each attempt that reached the service counts, as
/// each is billed. Once [`CallCounter::price_bodies`] is called, the bodies are also read as they
/// pass and priced (see [`crate::cost`]); a service in production leaves that off, as it copies and
/// parses every request and response.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    ledger: Arc<Mutex<Ledger>>,
    priced: Arc<AtomicBool>,
}

impl CallCounter {
    /// Prices the calls from now on by what they carry (`choreo up`, which prints the bill, and
    /// the tests that read it).
    pub fn price_bodies(&self) {
        self.priced.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.bill().calls
    }

    /// The calls so far with their billed units and the write units per DynamoDB partition key.
    pub fn bill(&self) -> Bill {
        self.ledger.lock().expect("ledger lock").bill()
    }

    pub fn reset(&self) {
        self.ledger.lock().expect("ledger lock").reset();
    }

    /// Tells the ledger that `table`'s index projects keys only, so that a write leaving the
    /// index key alone is not charged an index write.
    pub fn keys_only_index(&self, table: &str) {
        self.ledger
            .lock()
            .expect("ledger lock")
            .keys_only_index(table);
    }
}

/// The request body of the attempt in flight, kept for the ledger until the response is in.
#[derive(Debug, Clone)]
struct RequestBody(Option<Vec<u8>>);

impl Storable for RequestBody {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "ChoreoCallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.priced.load(Ordering::Relaxed) {
            return Ok(());
        }
        // S3 bodies are the data itself and priced per call: only the others are kept.
        let service = cfg.load::<Metadata>().map(|m| m.service().to_string());
        let body = match service.as_deref() {
            Some("S3") | None => None,
            Some(_) => context.request().body().bytes().map(<[u8]>::to_vec),
        };
        cfg.interceptor_state().store_put(RequestBody(body));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(m) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        // An attempt that never reached the service is not billed.
        let Some(response) = context.response() else {
            return Ok(());
        };
        if !self.priced.load(Ordering::Relaxed) {
            self.ledger
                .lock()
                .expect("ledger lock")
                .count(m.service(), m.name());
            return Ok(());
        }
        let request = cfg.load::<RequestBody>().and_then(|b| b.0.as_deref());
        let succeeded = response.status().is_success();
        let body = match m.service() {
            "S3" => None,
            _ => response.body().bytes(),
        };
        self.ledger.lock().expect("ledger lock").record(
            m.service(),
            m.name(),
            request,
            body,
            succeeded,
        );
        Ok(())
    }
}

/// Logs `AwsCallRetried` before every retry of an SDK call — service, operation, attempt, the
/// attempts allowed, and what failed the attempt before — so that retries show in the logs and
/// their bound can be checked there.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryLog;

/// What failed an attempt, kept in the call's config bag for the next attempt's log line.
#[derive(Debug, Clone)]
struct AttemptFailed(String);

impl Storable for AttemptFailed {
    type Storer = StoreReplace<Self>;
}

/// The longest failure text a retry line carries.
const FAILURE_CHARS: usize = 200;

impl Intercept for RetryLog {
    fn name(&self) -> &'static str {
        "ChoreoRetryLog"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(e)) = context.output_or_error() {
            let mut what = aws_smithy_types::error::display::DisplayErrorContext(e).to_string();
            if let Some(r) = context.response() {
                what = format!("HTTP {}: {what}", r.status().as_u16());
            }
            if let Some((cut, _)) = what.char_indices().nth(FAILURE_CHARS) {
                what.truncate(cut);
            }
            cfg.interceptor_state().store_put(AttemptFailed(what));
        }
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        if attempt > 1 {
            let (service, operation) = cfg
                .load::<Metadata>()
                .map(|m| (m.service().to_string(), m.name().to_string()))
                .unwrap_or_default();
            let max_attempts = cfg.load::<RetryConfig>().map(|r| r.max_attempts());
            let after = cfg.load::<AttemptFailed>().map(|f| f.0.as_str());
            choreo_telemetry::events::emit(crate::events::AwsCallRetried {
                service: &service,
                operation: &operation,
                attempt,
                max_attempts,
                after,
            });
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
    /// Bootstrap only: the secret holding the mask salt.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// Bootstrap only: the schedules of scheduled extracts.
    pub scheduler: aws_sdk_scheduler::Client,
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
            .interceptor(RetryLog)
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .interceptor(RetryLog)
            .build();
        let sns = aws_sdk_sns::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .interceptor(RetryLog)
            .build();
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .interceptor(RetryLog)
            .build();
        let glue = aws_sdk_glue::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .interceptor(RetryLog)
            .build();
        let secrets = aws_sdk_secretsmanager::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .interceptor(RetryLog)
            .build();
        let scheduler = aws_sdk_scheduler::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .interceptor(RetryLog)
            .build();
        AwsClients {
            scheduler: aws_sdk_scheduler::Client::from_conf(scheduler),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            glue: aws_sdk_glue::Client::from_conf(glue),
            secrets: aws_sdk_secretsmanager::Client::from_conf(secrets),
            calls,
            endpoint,
        }
    }
}
