//! Types and constants of the Lambda Extensions, Logs and Telemetry APIs, as they cross the wire.
//!
//! Parsing is lenient where real servers differ: unknown fields are ignored, `tracing` may be
//! absent, `shutdownReason` is kept exactly as sent (real Lambda sends `spindown`, the AWS emulator
//! `Timeout`/`SandboxTerminated`), and a `deadlineMs` of 0 or in the past is accepted.
//!
//! What Lambda sends ([`Event`], [`InvokeEvent`], [`ShutdownEvent`], [`Tracing`],
//! [`RegistrationResponse`], [`NextEventResponse`]) and the enums ([`LifecycleEvent`],
//! [`LogType`], [`DestinationProtocol`], [`TelemetrySchema`], [`BufferingField`]) are
//! `#[non_exhaustive]`: AWS may add fields, events, types and schema versions, and a new one is
//! not a breaking change here. Match them with a wildcard arm and read their fields; build them
//! only by parsing. The request bodies you write ([`RegistrationRequest`], [`LogSubscription`],
//! [`TelemetrySubscription`], [`Destination`], [`Buffering`], [`ErrorRequest`]) are plain structs,
//! built with a literal or their constructors. [`TelemetryBuffering`] is the exception: its
//! fields are private, so a value of it is always within the ranges the Telemetry API accepts
//! (its constructor checks them before anything is sent).

use std::fmt;
use std::ops::RangeInclusive;

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
        let event = parse_event(&body)?;
        Ok(NextEventResponse { event, body })
    }
}

/// A next-event body as its [`Event`]: exactly what `serde_json::from_slice::<Event>` returns,
/// at less cost.
///
/// The derived `Deserialize` of an internally tagged enum cannot know the variant before it has
/// seen the tag, so it first copies the whole object into serde's buffer (every key and value,
/// nested objects too), then deserializes the variant from that copy. Lambda sends `eventType`
/// first, so [`fast::parse`] reads the tag, then the variant's fields straight from the bytes,
/// skipping the others as the derive does. It accepts a subset of what the derive accepts and
/// builds the same value; anything else (the tag not first, a field twice, a wrong type, an
/// unknown event...) goes to the derive, so the outcome and the error are always the derive's.
pub(crate) fn parse_event(body: &[u8]) -> Result<Event, serde_json::Error> {
    match fast::parse(body) {
        Some(event) => Ok(event),
        None => serde_json::from_slice(body),
    }
}

mod fast {
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde::Deserialize;

    use super::{Event, InvokeEvent, ShutdownEvent, Tracing};

    /// The event, or `None` where the derived `Deserialize` must decide.
    pub(super) fn parse(body: &[u8]) -> Option<Event> {
        // `from_slice` skips an ignored field's string without checking its UTF-8; the derive
        // refuses invalid UTF-8 anywhere (found by fuzz/fuzz_targets/event.rs).
        let mut deserializer = serde_json::Deserializer::from_str(std::str::from_utf8(body).ok()?);
        let event = (&mut deserializer).deserialize_map(EventVisitor).ok()?;
        deserializer.end().ok()?;
        Some(event)
    }

    /// The keys either variant reads; any other is skipped.
    enum Key {
        EventType,
        DeadlineMs,
        RequestId,
        InvokedFunctionArn,
        Tracing,
        ShutdownReason,
        Other,
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl Visitor<'_> for KeyVisitor {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                    Ok(match key {
                        "eventType" => Key::EventType,
                        "deadlineMs" => Key::DeadlineMs,
                        "requestId" => Key::RequestId,
                        "invokedFunctionArn" => Key::InvokedFunctionArn,
                        "tracing" => Key::Tracing,
                        "shutdownReason" => Key::ShutdownReason,
                        _ => Key::Other,
                    })
                }
            }
            deserializer.deserialize_identifier(KeyVisitor)
        }
    }

    /// The tag's value, as a string: the only spelling taken here.
    enum Kind {
        Invoke,
        Shutdown,
    }

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KindVisitor;
            impl Visitor<'_> for KindVisitor {
                type Value = Kind;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("INVOKE or SHUTDOWN")
                }
                fn visit_str<E: de::Error>(self, kind: &str) -> Result<Kind, E> {
                    match kind {
                        "INVOKE" => Ok(Kind::Invoke),
                        "SHUTDOWN" => Ok(Kind::Shutdown),
                        _ => Err(E::custom("not taken here")),
                    }
                }
            }
            deserializer.deserialize_str(KindVisitor)
        }
    }

    struct EventVisitor;

    /// Stores a field's value; a field seen twice is the derive's to refuse.
    fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
        match slot {
            Some(_) => Err(E::custom("field twice")),
            None => {
                *slot = Some(value);
                Ok(())
            }
        }
    }

    impl<'de> Visitor<'de> for EventVisitor {
        type Value = Event;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object starting with eventType")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
            let not_taken = || de::Error::custom("not taken here");
            if !matches!(map.next_key::<Key>()?, Some(Key::EventType)) {
                return Err(not_taken());
            }
            match map.next_value::<Kind>()? {
                Kind::Invoke => {
                    let (mut deadline_ms, mut request_id) = (None, None);
                    let (mut arn, mut tracing) = (None, None);
                    while let Some(key) = map.next_key::<Key>()? {
                        match key {
                            Key::DeadlineMs => once(&mut deadline_ms, map.next_value::<u64>()?)?,
                            Key::RequestId => once(&mut request_id, map.next_value::<String>()?)?,
                            Key::InvokedFunctionArn => once(&mut arn, map.next_value::<String>()?)?,
                            Key::Tracing => {
                                once(&mut tracing, map.next_value::<Option<Tracing>>()?)?
                            }
                            Key::EventType => return Err(not_taken()),
                            Key::ShutdownReason | Key::Other => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(Event::Invoke(InvokeEvent {
                        deadline_ms: deadline_ms.ok_or_else(not_taken)?,
                        request_id: request_id.ok_or_else(not_taken)?,
                        invoked_function_arn: arn.unwrap_or_default(),
                        tracing: tracing.flatten(),
                    }))
                }
                Kind::Shutdown => {
                    let (mut deadline_ms, mut shutdown_reason) = (None, None);
                    while let Some(key) = map.next_key::<Key>()? {
                        match key {
                            Key::DeadlineMs => once(&mut deadline_ms, map.next_value::<u64>()?)?,
                            Key::ShutdownReason => {
                                once(&mut shutdown_reason, map.next_value::<String>()?)?
                            }
                            Key::EventType => return Err(not_taken()),
                            Key::RequestId
                            | Key::InvokedFunctionArn
                            | Key::Tracing
                            | Key::Other => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(Event::Shutdown(ShutdownEvent {
                        shutdown_reason: shutdown_reason.unwrap_or_default(),
                        deadline_ms: deadline_ms.ok_or_else(not_taken)?,
                    }))
                }
            }
        }
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

/// Where the Logs or Telemetry API delivers batches: `{"protocol": "HTTP", "URI": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// How batches are delivered.
    pub protocol: DestinationProtocol,
    /// The address batches are sent to, inside the sandbox: for example
    /// `http://sandbox.localdomain:8080/logs`.
    #[serde(rename = "URI")]
    pub uri: String,
}

impl Destination {
    /// Delivery by HTTP POST to `uri` (for example `http://sandbox.localdomain:8080`).
    pub fn http(uri: impl Into<String>) -> Self {
        Destination {
            protocol: DestinationProtocol::Http,
            uri: uri.into(),
        }
    }
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

/// How long and how much Lambda buffers before delivering a batch, for the Logs API
/// ([`LogSubscription`]); the Telemetry API's is [`TelemetryBuffering`], which checks the ranges.
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

/// Which streams to subscribe to, in the Logs API and (as [`TelemetryType`]) the Telemetry API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

impl LogType {
    /// Every type, in the order the documentation lists them.
    pub const ALL: [LogType; 3] = [LogType::Platform, LogType::Function, LogType::Extension];

    /// The name on the wire: `platform`, `function` or `extension`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::Platform => "platform",
            LogType::Function => "function",
            LogType::Extension => "extension",
        }
    }

    /// The type with that wire name (exact, lower case), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        LogType::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for LogType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which streams a Telemetry API subscription receives: `platform`, `function`, `extension`.
///
/// The same type as [`LogType`]: both APIs document the same three names with the same meaning,
/// so one list (parsed once, for example from a setting) subscribes to either API. The Logs API
/// is superseded and gets no new types; a type the Telemetry API may add later becomes a new
/// variant of this `#[non_exhaustive]` enum (the Logs API would answer 400 to it).
pub type TelemetryType = LogType;

/// Body of `PUT /2020-08-15/logs`. The Telemetry API's is [`TelemetrySubscription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSubscription {
    /// Where the batches go.
    pub destination: Destination,
    /// Which streams to receive.
    pub types: Vec<LogType>,
    /// How Lambda batches them.
    pub buffering: Buffering,
    /// `schemaVersion`: optional for the Logs API (`2020-08-15` by default; `2021-03-18` adds
    /// `platform.runtimeDone`); not sent when `None`.
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

/// The `schemaVersion` of a Telemetry API subscription: the shape of the events Lambda delivers.
///
/// Newer versions only add fields and event types. `2025-01-29` is required on Lambda Managed
/// Instances and recommended for new extensions, but some runtimes still answer 400 to it;
/// `2022-12-13` is accepted everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum TelemetrySchema {
    /// `2022-07-01`: the first version.
    #[serde(rename = "2022-07-01")]
    V2022_07_01,
    /// `2022-12-13`: `function` and `extension` records are objects when the function logs JSON.
    #[serde(rename = "2022-12-13")]
    V2022_12_13,
    /// `2025-01-29`: required by Lambda Managed Instances.
    #[serde(rename = "2025-01-29")]
    V2025_01_29,
}

impl TelemetrySchema {
    /// Every version, oldest first.
    pub const ALL: [TelemetrySchema; 3] = [
        TelemetrySchema::V2022_07_01,
        TelemetrySchema::V2022_12_13,
        TelemetrySchema::V2025_01_29,
    ];

    /// The version as sent: `2022-07-01`, `2022-12-13` or `2025-01-29`.
    pub fn as_str(self) -> &'static str {
        match self {
            TelemetrySchema::V2022_07_01 => "2022-07-01",
            TelemetrySchema::V2022_12_13 => "2022-12-13",
            TelemetrySchema::V2025_01_29 => "2025-01-29",
        }
    }

    /// The version with that name (exactly as [`as_str`](Self::as_str) spells it), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        TelemetrySchema::ALL
            .into_iter()
            .find(|schema| schema.as_str() == name)
    }
}

impl fmt::Display for TelemetrySchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the three numbers of [`TelemetryBuffering`], named in a [`BufferingError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BufferingField {
    /// `maxItems`: the most events in one batch.
    MaxItems,
    /// `maxBytes`: the most bytes of events buffered before a delivery.
    MaxBytes,
    /// `timeoutMs`: the longest an event is buffered, in milliseconds.
    TimeoutMs,
}

impl BufferingField {
    /// The field's name on the wire: `maxItems`, `maxBytes` or `timeoutMs`.
    pub fn as_str(self) -> &'static str {
        match self {
            BufferingField::MaxItems => "maxItems",
            BufferingField::MaxBytes => "maxBytes",
            BufferingField::TimeoutMs => "timeoutMs",
        }
    }

    /// The values the Telemetry API accepts for this field (both ends included).
    pub fn range(self) -> RangeInclusive<u32> {
        match self {
            BufferingField::MaxItems => TelemetryBuffering::MAX_ITEMS_RANGE,
            BufferingField::MaxBytes => TelemetryBuffering::MAX_BYTES_RANGE,
            BufferingField::TimeoutMs => TelemetryBuffering::TIMEOUT_MS_RANGE,
        }
    }

    /// What Lambda uses when the field (or the whole `buffering` object) is not sent.
    pub fn lambda_default(self) -> u32 {
        match self {
            BufferingField::MaxItems => TelemetryBuffering::DEFAULT_MAX_ITEMS,
            BufferingField::MaxBytes => TelemetryBuffering::DEFAULT_MAX_BYTES,
            BufferingField::TimeoutMs => TelemetryBuffering::DEFAULT_TIMEOUT_MS,
        }
    }

    /// `value` if it is within [`range`](Self::range), or the error naming the field, the value
    /// and the range. Useful to check one setting at a time.
    pub fn check(self, value: u32) -> Result<u32, BufferingError> {
        if self.range().contains(&value) {
            Ok(value)
        } else {
            Err(BufferingError { field: self, value })
        }
    }
}

impl fmt::Display for BufferingField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A buffering value outside the range the Telemetry API accepts. Nothing was sent.
///
/// Its `Display` names the field, the value and the range:
/// `telemetry buffering maxItems = 50 is out of range: Lambda accepts 1000 to 10000`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferingError {
    /// The field that is out of range.
    pub field: BufferingField,
    /// The value that was given.
    pub value: u32,
}

impl BufferingError {
    /// The values the field accepts (`self.field.range()`).
    pub fn range(&self) -> RangeInclusive<u32> {
        self.field.range()
    }
}

impl fmt::Display for BufferingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = self.range();
        write!(
            f,
            "telemetry buffering {} = {} is out of range: Lambda accepts {} to {}",
            self.field,
            self.value,
            range.start(),
            range.end()
        )
    }
}

impl std::error::Error for BufferingError {}

/// How much and how long Lambda buffers telemetry before delivering a batch: the `buffering`
/// object of a [`TelemetrySubscription`], `{"maxItems", "maxBytes", "timeoutMs"}`.
///
/// A value is always within the documented ranges: [`new`](Self::new) checks them, and the fields
/// cannot be set otherwise. [`Default`] is what Lambda uses when `buffering` is not sent (10 000
/// items, 262 144 bytes, 1 000 ms); a subscription without buffering sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryBuffering {
    max_items: u32,
    max_bytes: u32,
    timeout_ms: u32,
}

impl TelemetryBuffering {
    /// The `maxItems` the Telemetry API accepts.
    pub const MAX_ITEMS_RANGE: RangeInclusive<u32> = 1_000..=10_000;
    /// The `maxBytes` the Telemetry API accepts (256 KiB to 1 MiB).
    pub const MAX_BYTES_RANGE: RangeInclusive<u32> = 262_144..=1_048_576;
    /// The `timeoutMs` the Telemetry API accepts.
    pub const TIMEOUT_MS_RANGE: RangeInclusive<u32> = 25..=30_000;
    /// Lambda's `maxItems` when none is sent.
    pub const DEFAULT_MAX_ITEMS: u32 = 10_000;
    /// Lambda's `maxBytes` when none is sent.
    pub const DEFAULT_MAX_BYTES: u32 = 262_144;
    /// Lambda's `timeoutMs` when none is sent.
    pub const DEFAULT_TIMEOUT_MS: u32 = 1_000;

    /// The three values, each checked against its range (in this order: `maxItems`,
    /// `maxBytes`, `timeoutMs`); the first out of range is the error.
    ///
    /// ```
    /// use lambda_shell_extension::api::{BufferingField, TelemetryBuffering};
    ///
    /// let buffering = TelemetryBuffering::new(1_000, 262_144, 100)?;
    /// assert_eq!(buffering.timeout_ms(), 100);
    ///
    /// let error = TelemetryBuffering::new(1_000, 262_144, 10).unwrap_err();
    /// assert_eq!(error.field, BufferingField::TimeoutMs);
    /// assert_eq!(
    ///     error.to_string(),
    ///     "telemetry buffering timeoutMs = 10 is out of range: Lambda accepts 25 to 30000"
    /// );
    /// # Ok::<(), lambda_shell_extension::api::BufferingError>(())
    /// ```
    pub fn new(max_items: u32, max_bytes: u32, timeout_ms: u32) -> Result<Self, BufferingError> {
        Ok(TelemetryBuffering {
            max_items: BufferingField::MaxItems.check(max_items)?,
            max_bytes: BufferingField::MaxBytes.check(max_bytes)?,
            timeout_ms: BufferingField::TimeoutMs.check(timeout_ms)?,
        })
    }

    /// `maxItems`: the most events in one batch.
    pub fn max_items(&self) -> u32 {
        self.max_items
    }

    /// `maxBytes`: the most bytes buffered before a delivery. A delivered batch can be up to
    /// about twice this, plus metadata.
    pub fn max_bytes(&self) -> u32 {
        self.max_bytes
    }

    /// `timeoutMs`: the longest an event is buffered before a delivery.
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }
}

impl Default for TelemetryBuffering {
    /// Lambda's own defaults: 10 000 items, 262 144 bytes, 1 000 ms.
    fn default() -> Self {
        TelemetryBuffering {
            max_items: Self::DEFAULT_MAX_ITEMS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
        }
    }
}

/// Body of `PUT /2022-07-01/telemetry`:
/// `{"schemaVersion", "destination", "types", "buffering"}`, `buffering` left out when `None`
/// (Lambda then uses its defaults).
///
/// ```
/// use lambda_shell_extension::api::{
///     TelemetryBuffering, TelemetrySchema, TelemetrySubscription, TelemetryType,
/// };
///
/// let subscription = TelemetrySubscription::http(
///     TelemetrySchema::V2022_12_13,
///     "http://sandbox.localdomain:4243",
///     vec![TelemetryType::Platform, TelemetryType::Function],
/// )
/// .with_buffering(TelemetryBuffering::new(1_000, 262_144, 100)?);
/// assert_eq!(
///     serde_json::to_string(&subscription).unwrap(),
///     r#"{"schemaVersion":"2022-12-13","destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:4243"},"types":["platform","function"],"buffering":{"maxItems":1000,"maxBytes":262144,"timeoutMs":100}}"#
/// );
/// # Ok::<(), lambda_shell_extension::api::BufferingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySubscription {
    /// The shape of the events to receive.
    pub schema_version: TelemetrySchema,
    /// Where the batches go: an HTTP listener inside the sandbox (never port 9001). See
    /// `telemetry::Listener::destination` (feature `listener`).
    pub destination: Destination,
    /// Which streams to receive; the API answers 400 to an empty list.
    pub types: Vec<TelemetryType>,
    /// How Lambda batches them; `None` sends no `buffering` (Lambda's defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffering: Option<TelemetryBuffering>,
}

impl TelemetrySubscription {
    /// A subscription to `destination` for `types`, with Lambda's default buffering.
    pub fn new(
        schema_version: TelemetrySchema,
        destination: Destination,
        types: Vec<TelemetryType>,
    ) -> Self {
        TelemetrySubscription {
            schema_version,
            destination,
            types,
            buffering: None,
        }
    }

    /// An HTTP subscription to `uri` (`http://sandbox.localdomain:<port>`) for `types`, with
    /// Lambda's default buffering.
    pub fn http(
        schema_version: TelemetrySchema,
        uri: impl Into<String>,
        types: Vec<TelemetryType>,
    ) -> Self {
        TelemetrySubscription::new(schema_version, Destination::http(uri), types)
    }

    /// The same subscription with this buffering.
    pub fn with_buffering(mut self, buffering: TelemetryBuffering) -> Self {
        self.buffering = Some(buffering);
        self
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

    /// `parse_event` must answer exactly as the derived `Deserialize` does: the same event, or
    /// the same error message, whichever path it takes.
    #[test]
    fn fast_event_parsing_agrees_with_the_derive() {
        let invoke = r#""deadlineMs":1654468766618,"requestId":"r-1","invokedFunctionArn":"arn:a""#;
        let tracing = r#""tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-a"}"#;
        let bodies = [
            // Taken by the fast path.
            format!(r#"{{"eventType":"INVOKE",{invoke},{tracing}}}"#),
            format!(r#"{{"eventType":"INVOKE",{invoke}}}"#),
            format!(r#"{{"eventType":"INVOKE",{invoke},"tracing":null}}"#),
            format!(
                r#"{{"eventType":"INVOKE",{invoke},"extra":{{"a":[1,{{"b":null}}]}},"x":1.5}}"#
            ),
            format!(r#"{{"eventType":"INVOKE",{invoke},"shutdownReason":7}}"#),
            format!(r#" {{ "eventType" : "INVOKE" , {invoke} }} "#),
            r#"{"eventType":"INVOKE","deadlineMs":0,"requestId":"r"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1,"requestId":"caf\u00e9 \"q\" \n"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1,"request\u0049d":"escaped key"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1,"requestId":"r","tracing":["t","v"]}"#
                .to_string(),
            r#"{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":5}"#.to_string(),
            r#"{"eventType":"SHUTDOWN","deadlineMs":5}"#.to_string(),
            r#"{"eventType":"SHUTDOWN","deadlineMs":5,"requestId":5,"tracing":"x"}"#.to_string(),
            // Left to the derive: the tag not first, or not a known string.
            format!(r#"{{{invoke},"eventType":"INVOKE"}}"#),
            r#"{"deadlineMs":5,"eventType":"SHUTDOWN","requestId":5}"#.to_string(),
            format!(r#"{{"eventType":0,{invoke}}}"#),
            r#"{"eventType":"RESTORE","deadlineMs":1}"#.to_string(),
            r#"{"eventType":"invoke","deadlineMs":1,"requestId":"r"}"#.to_string(),
            // Errors, which must read as the derive's.
            format!(r#"{{"eventType":"INVOKE",{invoke},"requestId":"again"}}"#),
            format!(r#"{{"eventType":"INVOKE",{invoke},"eventType":"INVOKE"}}"#),
            r#"{"eventType":"INVOKE","requestId":"r"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":-1,"requestId":"r"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1.5,"requestId":"r"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":"1","requestId":"r"}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1,"requestId":5}"#.to_string(),
            r#"{"eventType":"INVOKE","deadlineMs":1,"requestId":"r","tracing":5}"#.to_string(),
            r#"{"eventType":"SHUTDOWN","shutdownReason":1,"deadlineMs":5}"#.to_string(),
            r#"{"eventType":"SHUTDOWN"}"#.to_string(),
            r#"{"eventType":"SHUTDOWN","deadlineMs":5} trailing"#.to_string(),
            r#"{"eventType":"SHUTDOWN","deadlineMs":5"#.to_string(),
            r#"{"deadlineMs":1}"#.to_string(),
            r#"["SHUTDOWN",5]"#.to_string(),
            "{}".to_string(),
            "[]".to_string(),
            "null".to_string(),
            "not json".to_string(),
            String::new(),
        ];
        for body in &bodies {
            let derived =
                serde_json::from_slice::<Event>(body.as_bytes()).map_err(|e| e.to_string());
            let parsed = parse_event(body.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(parsed, derived, "{body}");
        }
        // The fast path takes what Lambda sends, so it is the one measured.
        for body in &bodies[..13] {
            assert!(fast::parse(body.as_bytes()).is_some(), "{body}");
        }
        for body in &bodies[13..] {
            assert!(fast::parse(body.as_bytes()).is_none(), "{body}");
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

    #[test]
    fn telemetry_subscription_wire_format() {
        let subscription = TelemetrySubscription::http(
            TelemetrySchema::V2025_01_29,
            "http://sandbox.localdomain:1234",
            vec![LogType::Platform, LogType::Extension],
        );
        assert_eq!(
            serde_json::to_value(&subscription).unwrap(),
            serde_json::json!({
                "schemaVersion": "2025-01-29",
                "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:1234"},
                "types": ["platform", "extension"],
            })
        );
        let buffered = subscription.with_buffering(TelemetryBuffering::default());
        assert_eq!(
            serde_json::to_value(&buffered).unwrap()["buffering"],
            serde_json::json!({"maxItems": 10000, "maxBytes": 262144, "timeoutMs": 1000})
        );
    }

    #[test]
    fn telemetry_schema_and_type_names() {
        let names: Vec<&str> = TelemetrySchema::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["2022-07-01", "2022-12-13", "2025-01-29"]);
        for schema in TelemetrySchema::ALL {
            assert_eq!(TelemetrySchema::from_name(schema.as_str()), Some(schema));
            assert_eq!(
                serde_json::to_value(schema).unwrap(),
                serde_json::json!(schema.as_str())
            );
            assert_eq!(schema.to_string(), schema.as_str());
        }
        assert_eq!(TelemetrySchema::from_name("auto"), None);
        assert_eq!(TelemetrySchema::from_name(" 2022-12-13"), None);
        for kind in LogType::ALL {
            assert_eq!(TelemetryType::from_name(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert_eq!(LogType::from_name("Platform"), None);
    }

    #[test]
    fn telemetry_buffering_ranges_edges_and_errors() {
        // Both ends of every range are accepted.
        let low = TelemetryBuffering::new(1_000, 262_144, 25).unwrap();
        assert_eq!(
            (low.max_items(), low.max_bytes(), low.timeout_ms()),
            (1_000, 262_144, 25)
        );
        let high = TelemetryBuffering::new(10_000, 1_048_576, 30_000).unwrap();
        assert_eq!(
            (high.max_items(), high.max_bytes(), high.timeout_ms()),
            (10_000, 1_048_576, 30_000)
        );
        // One past either end is refused, naming the field, the value and the range.
        let cases = [
            ((999, 262_144, 25), BufferingField::MaxItems, 999),
            ((10_001, 262_144, 25), BufferingField::MaxItems, 10_001),
            ((1_000, 262_143, 25), BufferingField::MaxBytes, 262_143),
            ((1_000, 1_048_577, 25), BufferingField::MaxBytes, 1_048_577),
            ((1_000, 262_144, 24), BufferingField::TimeoutMs, 24),
            ((1_000, 262_144, 30_001), BufferingField::TimeoutMs, 30_001),
            ((0, 0, 0), BufferingField::MaxItems, 0),
        ];
        for ((items, bytes, timeout), field, value) in cases {
            let error = TelemetryBuffering::new(items, bytes, timeout).unwrap_err();
            assert_eq!(error, BufferingError { field, value });
            let range = field.range();
            assert_eq!(
                error.to_string(),
                format!(
                    "telemetry buffering {} = {value} is out of range: Lambda accepts {} to {}",
                    field.as_str(),
                    range.start(),
                    range.end()
                )
            );
        }
        assert_eq!(
            TelemetryBuffering::new(1, 2, 3).unwrap_err().to_string(),
            "telemetry buffering maxItems = 1 is out of range: Lambda accepts 1000 to 10000"
        );
        // The defaults are Lambda's and within range.
        for field in [
            BufferingField::MaxItems,
            BufferingField::MaxBytes,
            BufferingField::TimeoutMs,
        ] {
            assert_eq!(
                field.check(field.lambda_default()),
                Ok(field.lambda_default())
            );
        }
        assert_eq!(
            TelemetryBuffering::default(),
            TelemetryBuffering::new(10_000, 262_144, 1_000).unwrap()
        );
    }
}
