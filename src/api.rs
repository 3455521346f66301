//! Types and constants of the Lambda Extensions, Logs and Telemetry APIs, as they cross the wire.
//!
//! Parsing is lenient where real servers differ: unknown fields are ignored, `tracing` may be
//! absent, `shutdownReason` is kept exactly as sent (real Lambda sends `spindown`, the AWS emulator
//! `Timeout`/`SandboxTerminated`), and a `deadlineMs` of 0 or in the past is accepted.
//!
//! What Lambda sends ([`Event`], [`InvokeEvent`], [`ShutdownEvent`], [`Tracing`],
//! [`RegistrationResponse`], [`NextEventResponse`]) and the enums ([`LifecycleEvent`],
//! [`LogType`], [`DestinationProtocol`]) are `#[non_exhaustive]`: AWS may add fields, events and
//! types, and a new one is not a breaking change here. Match them with a wildcard arm and read
//! their fields; build them only by parsing. The request bodies you write
//! ([`RegistrationRequest`], [`LogSubscription`], [`Destination`], [`Buffering`],
//! [`ErrorRequest`]) are plain structs, built with a literal or their constructors.

use serde::{Deserialize, Serialize};

/// Path prefix of the Extensions API.
pub const EXTENSIONS_API_VERSION: &str = "2020-01-01";
/// Path prefix of the (superseded) Logs API.
pub const LOGS_API_VERSION: &str = "2020-08-15";
/// Path prefix of the Telemetry API.
pub const TELEMETRY_API_VERSION: &str = "2022-07-01";

/// Request header carrying the extension's file name at registration.
pub const EXTENSION_NAME_HEADER: &str = "Lambda-Extension-Name";
/// Header carrying the identifier returned by registration, sent on every later call.
pub const EXTENSION_IDENTIFIER_HEADER: &str = "Lambda-Extension-Identifier";
/// Header naming the error type on init/error and exit/error.
pub const FUNCTION_ERROR_TYPE_HEADER: &str = "Lambda-Extension-Function-Error-Type";
/// Header listing optional features at registration (`accountId` is the only one).
pub const ACCEPT_FEATURE_HEADER: &str = "Lambda-Extension-Accept-Feature";

/// An event an extension can register for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LifecycleEvent {
    /// `INVOKE`: every invocation of the function.
    #[serde(rename = "INVOKE")]
    Invoke,
    /// `SHUTDOWN`: once, before the execution environment is shut down.
    #[serde(rename = "SHUTDOWN")]
    Shutdown,
}

impl LifecycleEvent {
    /// The name used on the wire and in `LAMBDA_EVENT_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::Invoke => "INVOKE",
            LifecycleEvent::Shutdown => "SHUTDOWN",
        }
    }
}

/// Body of `POST /extension/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrationRequest {
    /// The events to receive.
    pub events: Vec<LifecycleEvent>,
}

impl Default for RegistrationRequest {
    /// INVOKE and SHUTDOWN: without SHUTDOWN Lambda kills the extension at shutdown unannounced.
    fn default() -> Self {
        RegistrationRequest {
            events: vec![LifecycleEvent::Invoke, LifecycleEvent::Shutdown],
        }
    }
}

/// Body of a successful registration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RegistrationResponse {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    #[serde(default)]
    pub function_name: String,
    /// The function's version (`$LATEST` or a number).
    #[serde(default)]
    pub function_version: String,
    /// The function's handler setting (`_HANDLER`).
    #[serde(default)]
    pub handler: String,
    /// Present only when the `accountId` feature was requested (the client always requests it)
    /// and the server supports it.
    #[serde(default)]
    pub account_id: Option<String>,
}

/// The `tracing` object of an INVOKE event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Tracing {
    /// Its `type`: `X-Amzn-Trace-Id`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The trace header value (`Root=...;Parent=...;Sampled=...`).
    #[serde(default)]
    pub value: String,
}

/// An INVOKE event. It carries no function payload: only metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InvokeEvent {
    /// Unix epoch milliseconds at which the function times out.
    pub deadline_ms: u64,
    /// The invocation's request ID (the function sees the same one).
    pub request_id: String,
    /// The ARN the function was invoked with (it may carry a version or alias).
    #[serde(default)]
    pub invoked_function_arn: String,
    /// X-Ray tracing, when the event has it.
    #[serde(default)]
    pub tracing: Option<Tracing>,
}

/// A SHUTDOWN event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ShutdownEvent {
    /// As sent: `spindown`, `timeout`, `failure` from Lambda; other spellings from emulators.
    #[serde(default)]
    pub shutdown_reason: String,
    /// Unix epoch milliseconds at which the shutdown phase ends.
    pub deadline_ms: u64,
}

/// A next-event payload, tagged by `eventType`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "eventType")]
#[non_exhaustive]
pub enum Event {
    /// `"eventType": "INVOKE"`.
    #[serde(rename = "INVOKE")]
    Invoke(InvokeEvent),
    /// `"eventType": "SHUTDOWN"`.
    #[serde(rename = "SHUTDOWN")]
    Shutdown(ShutdownEvent),
}

impl Event {
    /// Which kind of event this is.
    pub fn lifecycle_event(&self) -> LifecycleEvent {
        match self {
            Event::Invoke(_) => LifecycleEvent::Invoke,
            Event::Shutdown(_) => LifecycleEvent::Shutdown,
        }
    }

    /// Unix epoch milliseconds by which the extension must be done with this event.
    pub fn deadline_ms(&self) -> u64 {
        match self {
            Event::Invoke(invoke) => invoke.deadline_ms,
            Event::Shutdown(shutdown) => shutdown.deadline_ms,
        }
    }
}

/// What `GET /extension/event/next` returned: the parsed event and the body exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NextEventResponse {
    /// The parsed event.
    pub event: Event,
    /// The body as received, byte for byte (unknown fields included).
    pub body: Vec<u8>,
}

impl NextEventResponse {
    /// Parses a next-event body; the bytes are kept so they can be passed on untouched.
    pub fn from_body(body: Vec<u8>) -> Result<Self, serde_json::Error> {
        let event = serde_json::from_slice(&body)?;
        Ok(NextEventResponse { event, body })
    }
}

/// Body of init/error and exit/error, and of the API's own error responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRequest {
    /// `errorMessage`: what went wrong, in words.
    #[serde(default)]
    pub error_message: String,
    /// `errorType`: `Category.Reason`, for example `Extension.ConfigInvalid`.
    #[serde(default)]
    pub error_type: String,
}

/// Where the Logs or Telemetry API delivers batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// How batches are delivered.
    pub protocol: DestinationProtocol,
    /// The address batches are sent to, inside the sandbox: for example
    /// `http://sandbox.localdomain:8080/logs`.
    #[serde(rename = "URI")]
    pub uri: String,
}

/// How the Logs or Telemetry API delivers batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum DestinationProtocol {
    /// `HTTP`: a POST of a JSON array per batch.
    #[serde(rename = "HTTP")]
    Http,
    /// `TCP`: newline-delimited JSON on a connection.
    #[serde(rename = "TCP")]
    Tcp,
}

/// How long and how much Lambda buffers before delivering a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Buffering {
    /// `maxBytes`: the most bytes buffered before a delivery.
    pub max_bytes: u32,
    /// `maxItems`: the most records buffered before a delivery.
    pub max_items: u32,
    /// `timeoutMs`: the longest a record is buffered.
    pub timeout_ms: u32,
}

impl Default for Buffering {
    /// The Go seed's defaults: 1 MiB, 10 000 items, 500 ms.
    fn default() -> Self {
        Buffering {
            max_bytes: 1024 * 1024,
            max_items: 10_000,
            timeout_ms: 500,
        }
    }
}

/// Which log streams to subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum LogType {
    /// `platform`: Lambda's own records (start, end, reports, ...).
    #[serde(rename = "platform")]
    Platform,
    /// `function`: what the function writes to stdout and stderr.
    #[serde(rename = "function")]
    Function,
    /// `extension`: what extensions write to stdout and stderr.
    #[serde(rename = "extension")]
    Extension,
}

/// Body of `PUT /2020-08-15/logs` (and, with a telemetry schema version, `PUT /2022-07-01/telemetry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSubscription {
    /// Where the batches go.
    pub destination: Destination,
    /// Which streams to receive.
    pub types: Vec<LogType>,
    /// How Lambda batches them.
    pub buffering: Buffering,
    /// `schemaVersion`: required by the Telemetry API (for example `2025-01-29`), optional for
    /// the Logs API; not sent when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
}

impl LogSubscription {
    /// An HTTP subscription to `uri` for the given types, with the default buffering.
    pub fn http(uri: impl Into<String>, types: Vec<LogType>) -> Self {
        LogSubscription {
            destination: Destination {
                protocol: DestinationProtocol::Http,
                uri: uri.into(),
            },
            types,
            buffering: Buffering::default(),
            schema_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invoke_with_tracing_and_unknown_fields() {
        let body = br#"{"eventType":"INVOKE","deadlineMs":1654468766618,"requestId":"r-1",
            "invokedFunctionArn":"arn:aws:lambda:us-east-1:1:function:f","extra":{"x":1},
            "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-a"}}"#;
        let next = NextEventResponse::from_body(body.to_vec()).unwrap();
        assert_eq!(next.body, body.to_vec());
        let Event::Invoke(invoke) = next.event else {
            panic!("not an invoke")
        };
        assert_eq!(invoke.deadline_ms, 1654468766618);
        assert_eq!(invoke.request_id, "r-1");
        assert_eq!(
            invoke.invoked_function_arn,
            "arn:aws:lambda:us-east-1:1:function:f"
        );
        let tracing = invoke.tracing.unwrap();
        assert_eq!(tracing.kind, "X-Amzn-Trace-Id");
        assert_eq!(tracing.value, "Root=1-a");
    }

    #[test]
    fn parses_invoke_without_tracing_and_zero_deadline() {
        let body =
            br#"{"eventType":"INVOKE","deadlineMs":0,"requestId":"r","invokedFunctionArn":"a"}"#;
        let next = NextEventResponse::from_body(body.to_vec()).unwrap();
        assert_eq!(next.event.deadline_ms(), 0);
        assert!(matches!(
            next.event,
            Event::Invoke(InvokeEvent { tracing: None, .. })
        ));
    }

    #[test]
    fn keeps_both_shutdown_reason_spellings() {
        for reason in ["spindown", "Timeout", "SandboxTerminated", "FAILURE"] {
            let body =
                format!(r#"{{"eventType":"SHUTDOWN","shutdownReason":"{reason}","deadlineMs":5}}"#);
            let next = NextEventResponse::from_body(body.into_bytes()).unwrap();
            assert_eq!(
                next.event,
                Event::Shutdown(ShutdownEvent {
                    shutdown_reason: reason.to_string(),
                    deadline_ms: 5
                })
            );
        }
    }

    #[test]
    fn rejects_unknown_event_type_and_garbage() {
        assert!(NextEventResponse::from_body(
            br#"{"eventType":"RESTORE","deadlineMs":1}"#.to_vec()
        )
        .is_err());
        assert!(NextEventResponse::from_body(b"not json".to_vec()).is_err());
        assert!(NextEventResponse::from_body(br#"{"deadlineMs":1}"#.to_vec()).is_err());
    }

    #[test]
    fn registration_request_and_response_wire_format() {
        let json = serde_json::to_string(&RegistrationRequest::default()).unwrap();
        assert_eq!(json, r#"{"events":["INVOKE","SHUTDOWN"]}"#);
        let response: RegistrationResponse = serde_json::from_str(
            r#"{"functionName":"f","functionVersion":"$LATEST","handler":"h","logGroupName":"x"}"#,
        )
        .unwrap();
        assert_eq!(response.function_name, "f");
        assert_eq!(response.account_id, None);
    }

    #[test]
    fn log_subscription_wire_format() {
        let subscription = LogSubscription::http("http://sandbox:1234", vec![LogType::Platform]);
        let json = serde_json::to_value(&subscription).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "destination": {"protocol": "HTTP", "URI": "http://sandbox:1234"},
                "types": ["platform"],
                "buffering": {"maxBytes": 1048576, "maxItems": 10000, "timeoutMs": 500}
            })
        );
    }
}
