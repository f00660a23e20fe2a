//! A fault-injecting reverse proxy for the AWS path. `choreo --backend aws` takes it as its
//! `AWS_ENDPOINT_URL` and it forwards every call to moto — except a seeded share of them, which it
//! fails as AWS would:
//!
//! - a bare `503 Service Unavailable`;
//! - the protocol's own throttling error: S3 (REST-XML) `503 SlowDown`; SQS (awsJson1_0 in
//!   query-compatible mode: the code rides in `x-amzn-query-error` too) `ThrottlingException`;
//!   DynamoDB (awsJson1_0) `ProvisionedThroughputExceededException` or `ThrottlingException`;
//!   Glue (awsJson1_1) `ThrottlingException`; SNS (awsQuery, an XML `ErrorResponse`) `Throttling`;
//! - a connection reset *before* forwarding (the call never reached AWS), or *after* it (the call
//!   took effect and its answer is lost — the case that makes a retried conditional write fail
//!   against its own first attempt, and a retried start start twice);
//! - a slow answer (forwarded, then held a few seconds).
//!
//! The service and operation of a call come from its SigV4 credential scope and its `X-Amz-Target`
//! header (SNS: the `Action` of its form body; S3: its method and path). Requests that are not AWS
//! calls (moto's own API) pass untouched. Besides the random share, a test can ask for a fault on
//! the next calls of one operation ([`FaultProxy::inject`]).
//!
//! DynamoDB writes are forwarded as DynamoDB would apply them, which `moto_server` (threaded, no
//! locks) does not do by itself:
//!
//! - writes to one item one at a time: moto checks a condition and writes without a lock (see
//!   `SerialMoto` in `shared/aws/src/dynamo/state.rs`), so two racing conditional writes can both succeed
//!   there — the duplicate polls that faults cause made a file's history show a step twice;
//! - a transaction alone on its tables: moto's `TransactWriteItems` deep-copies each table it
//!   touches (to roll back), and a write to that table meanwhile fails it with an HTTP 500.
//!
//! Items are told apart by table and `pk`, the key of both of Choreo's tables.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the proxy does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `503 Service Unavailable`, empty body; not forwarded.
    Unavailable,
    /// The protocol's throttling error; not forwarded.
    Throttled,
    /// The connection reset without an answer; not forwarded.
    ResetBefore,
    /// Forwarded, then the connection reset: the call took effect, its answer is lost.
    ResetAfter,
    /// Forwarded, and the answer held for a few seconds.
    Slow,
}

const KINDS: [Fault; 5] = [
    Fault::Unavailable,
    Fault::Throttled,
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Slow,
];

/// A call, as the proxy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The SigV4 service: `s3`, `sqs`, `sns`, `dynamodb`, `glue`.
    pub service: String,
    /// `ReceiveMessage`, `UpdateItem`, `StartJobRun`, `Publish`, `GET object`...
    pub operation: String,
}

impl Call {
    fn is_dynamodb_write(&self) -> bool {
        self.service == "dynamodb"
            && matches!(
                self.operation.as_str(),
                "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem"
            )
    }
}

/// What went through the proxy.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// AWS calls received, by service.
    pub calls: BTreeMap<String, u64>,
    /// Faults injected, by kind (throttling by the error code sent).
    pub faults: BTreeMap<String, u64>,
    /// Faults injected, by `service operation`.
    pub faulted: BTreeMap<String, u64>,
    /// Calls moto failed to answer (the proxy answered 502 for it): failures not injected.
    pub upstream_errors: u64,
}

impl Stats {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Faults of one kind, over every label of it.
    pub fn count(&self, kind: Fault) -> u64 {
        let prefix = label(kind);
        self.faults
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

fn label(kind: Fault) -> &'static str {
    match kind {
        Fault::Unavailable => "503",
        Fault::Throttled => "throttled",
        Fault::ResetBefore => "reset before forwarding",
        Fault::ResetAfter => "reset after forwarding",
        Fault::Slow => "slow answer",
    }
}

/// Faults asked for by name: the next `times` calls of `operation` get `fault`.
struct Rule {
    operation: String,
    fault: Fault,
    times: usize,
}

struct Plan {
    rng: StdRng,
    rate: f64,
    rules: Vec<Rule>,
    stats: Stats,
}

struct Shared {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// One lock per DynamoDB table (shared by single-item writes, exclusive for transactions) and
    /// one per item, held while a write is forwarded (see the module documentation).
    tables: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    items: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    plan: Mutex<Plan>,
}

/// The proxy, listening on a loopback port until dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: the `AWS_ENDPOINT_URL` to give Choreo.
    pub endpoint: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (an `http://host:port` endpoint) failing a `rate` share of AWS
    /// calls, chosen (and their kinds) by an RNG seeded with `seed`. Rate 0: only
    /// [`inject`](Self::inject)ed faults.
    pub async fn start(upstream: &str, seed: u64, rate: f64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            // A fresh connection per call: a pooled one that moto closed meanwhile would fail
            // calls the test did not mean to fail.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
            tables: Mutex::default(),
            items: Mutex::default(),
            plan: Mutex::new(Plan {
                rng: StdRng::seed_from_u64(seed),
                rate,
                rules: Vec::new(),
                stats: Stats::default(),
            }),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        FaultProxy {
            endpoint,
            shared,
            stop,
        }
    }

    /// The next `times` calls of `operation` (as [`Call::operation`] names it) get `fault`.
    pub fn inject(&self, operation: &str, fault: Fault, times: usize) {
        self.shared.plan.lock().unwrap().rules.push(Rule {
            operation: operation.to_string(),
            fault,
            times,
        });
    }

    pub fn stats(&self) -> Stats {
        self.shared.plan.lock().unwrap().stats.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        // A reset is a reset: RST, not an orderly FIN, when the connection is dropped.
        let _ = stream.set_zero_linger();
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let kill = CancellationToken::new();
            let k = kill.clone();
            let service =
                hyper::service::service_fn(move |req| handle(shared.clone(), k.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection drops its socket: that is the reset.
            tokio::select! {
                _ = conn => {}
                _ = kill.cancelled() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    kill: CancellationToken,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let call = identify(&parts, &body);
    let fault = call.as_ref().and_then(|c| shared.decide(c));
    match fault {
        Some(Fault::Unavailable) => return Ok(status(StatusCode::SERVICE_UNAVAILABLE)),
        Some(Fault::Throttled) => {
            let call = call.expect("a fault is for an AWS call");
            let code = shared.throttle_code(&call.service);
            return Ok(throttled(&call.service, code));
        }
        Some(Fault::ResetBefore) => reset(&kill).await,
        _ => {}
    }
    let held = match &call {
        Some(c) if c.is_dynamodb_write() => Some(shared.lock_items(&c.operation, &body).await),
        _ => None,
    };
    let response = shared.forward(parts, body).await;
    drop(held);
    match fault {
        Some(Fault::ResetAfter) => reset(&kill).await,
        Some(Fault::Slow) => {
            let millis = shared.plan.lock().unwrap().rng.random_range(1_500..=4_000);
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        _ => {}
    }
    Ok(response)
}

/// The lock guards a DynamoDB write holds while it is forwarded.
type Held = Vec<Box<dyn std::any::Any + Send>>;

/// Resets the connection: its task drops it. Never returns, as there is nothing to answer.
async fn reset(kill: &CancellationToken) {
    kill.cancel();
    std::future::pending::<()>().await
}

impl Shared {
    /// Locks what a DynamoDB write touches: its tables (exclusively for a transaction), then its
    /// items, each in order, so two writes never wait on each other crosswise.
    async fn lock_items(&self, operation: &str, body: &[u8]) -> Held {
        let (mut tables, mut items): (Vec<_>, Vec<_>) = dynamodb_items(body).into_iter().unzip();
        for keys in [&mut tables, &mut items] {
            keys.sort();
            keys.dedup();
        }
        let table_locks: Vec<_> = {
            let mut all = self.tables.lock().unwrap();
            tables
                .into_iter()
                .map(|t| all.entry(t).or_default().clone())
                .collect()
        };
        let item_locks: Vec<_> = {
            let mut all = self.items.lock().unwrap();
            items
                .into_iter()
                .map(|k| all.entry(k).or_default().clone())
                .collect()
        };
        let mut held = Held::new();
        let alone = matches!(operation, "TransactWriteItems" | "BatchWriteItem");
        for lock in table_locks {
            if alone {
                held.push(Box::new(lock.write_owned().await));
            } else {
                held.push(Box::new(lock.read_owned().await));
            }
        }
        if !alone {
            for lock in item_locks {
                held.push(Box::new(lock.lock_owned().await));
            }
        }
        held
    }

    /// Counts the call and decides its fault, if any.
    fn decide(&self, call: &Call) -> Option<Fault> {
        let mut plan = self.plan.lock().unwrap();
        *plan.stats.calls.entry(call.service.clone()).or_default() += 1;
        let ruled = plan
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.operation == call.operation)
            .map(|r| {
                r.times -= 1;
                r.fault
            });
        let rate = plan.rate;
        let fault = match ruled {
            Some(f) => f,
            None if rate > 0.0 && plan.rng.random_bool(rate) => {
                KINDS[plan.rng.random_range(0..KINDS.len())]
            }
            None => return None,
        };
        if fault != Fault::Throttled {
            *plan.stats.faults.entry(label(fault).into()).or_default() += 1;
        }
        let at = format!("{} {}", call.service, call.operation);
        *plan.stats.faulted.entry(at).or_default() += 1;
        Some(fault)
    }

    /// The throttling error code to send for `service` (DynamoDB has two), counted.
    fn throttle_code(&self, service: &str) -> &'static str {
        let mut plan = self.plan.lock().unwrap();
        let code = match service {
            "s3" => "SlowDown",
            "sns" => "Throttling",
            "dynamodb" if plan.rng.random_bool(0.5) => "ProvisionedThroughputExceededException",
            _ => "ThrottlingException",
        };
        let key = format!("{} ({service} {code})", label(Fault::Throttled));
        *plan.stats.faults.entry(key).or_default() += 1;
        code
    }

    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut req = Request::builder()
            .method(parts.method)
            .uri(format!("{}{path}", self.upstream));
        // The Host header stays the proxy's: moto builds the URLs it hands out (queue URLs) from it,
        // so the client keeps coming through here.
        for (name, value) in &parts.headers {
            if !hop_by_hop(name.as_str()) {
                req = req.header(name, value);
            }
        }
        let req = req.body(Full::new(body)).expect("a valid request");
        let bad_gateway = || {
            self.plan.lock().unwrap().stats.upstream_errors += 1;
            status(StatusCode::BAD_GATEWAY)
        };
        let Ok(answer) = self.client.request(req).await else {
            return bad_gateway();
        };
        let (parts, body) = answer.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return bad_gateway();
        };
        let mut response = Response::builder().status(parts.status);
        for (name, value) in &parts.headers {
            if !hop_by_hop(name.as_str()) {
                response = response.header(name, value);
            }
        }
        response.body(Full::new(body)).expect("a valid response")
    }
}

fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

/// The service and operation of an AWS call; `None` for anything else.
fn identify(parts: &hyper::http::request::Parts, body: &[u8]) -> Option<Call> {
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    // `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ...`
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    let service = scope.split('/').nth(3)?.to_string();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok());
    let operation = match (target, service.as_str()) {
        (Some(t), _) => t.rsplit('.').next().unwrap_or(t).to_string(),
        (None, "sns") => String::from_utf8_lossy(body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or("?")
            .to_string(),
        (None, _) => {
            let segments = parts.uri.path().trim_matches('/').split('/').count();
            let what = if segments > 1 { "object" } else { "bucket" };
            format!("{} {what}", parts.method)
        }
    };
    Some(Call { service, operation })
}

/// The items (table, `table pk`) a DynamoDB write's JSON body names: `PutItem`, `UpdateItem`,
/// `DeleteItem`, and each item of `TransactWriteItems` and `BatchWriteItem`.
fn dynamodb_items(body: &[u8]) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let item = |table: &serde_json::Value, w: &serde_json::Value| {
        let key = if w["Key"].is_null() {
            &w["Item"]
        } else {
            &w["Key"]
        };
        let table = table.as_str().unwrap_or("?").to_string();
        let item = format!("{table} {}", key["pk"]);
        (table, item)
    };
    let mut out = Vec::new();
    if let Some(t) = v["TransactItems"].as_array() {
        for w in t
            .iter()
            .filter_map(|w| w.as_object())
            .flat_map(|o| o.values())
        {
            out.push(item(&w["TableName"], w));
        }
    } else if let Some(tables) = v["RequestItems"].as_object() {
        for (table, writes) in tables {
            for w in writes.as_array().into_iter().flatten() {
                for r in w.as_object().into_iter().flat_map(|o| o.values()) {
                    out.push(item(&serde_json::Value::from(table.as_str()), r));
                }
            }
        }
    } else {
        out.push(item(&v["TableName"], &v));
    }
    out
}

/// The throttling error `code` in `service`'s wire format.
fn throttled(service: &str, code: &str) -> Response<Full<Bytes>> {
    let message = "Rate exceeded (injected by the test's fault proxy)";
    let (status, content_type, body, query_error) = match service {
        "s3" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>fault</RequestId></Error>"
            ),
            None,
        ),
        "sns" => (
            StatusCode::BAD_REQUEST,
            "text/xml",
            format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error>\
                 <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>fault</RequestId></ErrorResponse>"
            ),
            None,
        ),
        "glue" => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.1",
            format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}"),
            None,
        ),
        "sqs" => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            format!(
                "{{\"__type\":\"com.amazon.coral.availability#{code}\",\"message\":\"{message}\"}}"
            ),
            Some(format!("{code};Sender")),
        ),
        // DynamoDB, and any other awsJson1_0 service.
        _ => (
            StatusCode::BAD_REQUEST,
            "application/x-amz-json-1.0",
            format!(
                "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"{message}\"}}"
            ),
            None,
        ),
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", "fault");
    if let Some(q) = query_error {
        response = response.header("x-amzn-query-error", q);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
