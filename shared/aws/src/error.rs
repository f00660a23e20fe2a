//! SDK errors to port errors: the one place that decides what is worth retrying on AWS.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use choreo_ports::{PortError, PortErrorKind};

/// Error codes AWS services use for "slow down" or "try again".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalServerError",
    "InternalFailure",
    "TransactionInProgressException",
];

/// Error codes that mean "it does not exist".
const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchKey",
    "NotFound",
    "NoSuchBucket",
    "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "EntityNotFoundException",
];

/// Classifies an SDK error: network trouble, timeouts, throttling and 5xx are transient; missing
/// things are `NotFound`; everything else is permanent.
pub fn port_error<E>(
    op: &'static str,
    target: impl Into<String>,
    err: SdkError<E, Response>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let target = target.into();
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PortErrorKind::Transient
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or_default();
            let status = se.raw().status().as_u16();
            if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
                PortErrorKind::Transient
            } else if NOT_FOUND_CODES.contains(&code) || status == 404 {
                PortErrorKind::NotFound
            } else {
                PortErrorKind::Permanent
            }
        }
        _ => PortErrorKind::Permanent,
    };
    let message = match err.as_service_error() {
        Some(e) => format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().unwrap_or_default()
        ),
        None => aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
    };
    PortError::new(kind, op, target, message)
}

/// Whether an error code (as a batch call reports per entry) means "try again".
pub fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// The service error code, if the error is a service error.
pub fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// The outcome of a conditional DynamoDB write: `true` if it was written, `false` if its condition
/// failed (an expected outcome, not an error), the classified error otherwise.
pub fn condition_held<T, E>(
    op: &'static str,
    target: impl Into<String>,
    result: Result<T, SdkError<E, Response>>,
) -> Result<bool, PortError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(port_error(op, target, e)),
    }
}
