//! A blocking client for the Lambda Extensions API, shaped like the Go package
//! `newrelic-lambda-extension/lambda/extension/client`.
//!
//! Registration and invocation are two types, so the protocol is checked by the compiler: only
//! [`RegistrationClient::register`] yields an [`InvocationClient`], and only that can ask for events.
//!
//! ```no_run
//! use lambda_shell_extension::api::Event;
//! use lambda_shell_extension::client::RegistrationClient;
//!
//! // AWS_LAMBDA_RUNTIME_API, the file name of argv[0], and `lambda_agent()` (no proxy).
//! let (client, registration) = RegistrationClient::from_env().register_default()?;
//! println!("extension for {}", registration.function_name);
//! loop {
//!     match client.next_event()?.event {
//!         Event::Invoke(invoke) => println!("invoke {}", invoke.request_id),
//!         Event::Shutdown(shutdown) => {
//!             println!("shutdown: {}", shutdown.shutdown_reason);
//!             break;
//!         }
//!         // `Event` is `#[non_exhaustive]`: room for an event type Lambda adds later.
//!         _ => {}
//!     }
//! }
//! # Ok::<(), lambda_shell_extension::client::ClientError>(())
//! ```
//!
//! `from_env()` is `RegistrationClient::new(lambda_agent())` spelled out; [`RegistrationClient::new`]
//! takes any `ureq::Agent`. One of your own should, like [`lambda_agent`], set `.proxy(None)` and
//! no global timeout: `ureq::Agent::new_with_defaults()` honours `HTTP_PROXY`, `HTTPS_PROXY` and
//! `ALL_PROXY`, which a function may set for its own traffic, and would send the calls meant for
//! the Extensions API on loopback to that proxy.
//!
//! Where it deliberately differs from the Go seed:
//! - It never panics. A 403 or a 5xx is a [`ClientError::Status`] whose
//!   [`is_fatal`](ClientError::is_fatal) says the extension should exit (the API documents both as
//!   non-recoverable).
//! - Error bodies sent to init/error and exit/error are the documented JSON
//!   `{"errorMessage", "errorType"}`, and the API's own error bodies are parsed the same way.
//! - `register` sends `Content-Type: application/json` and `Lambda-Extension-Accept-Feature:
//!   accountId`, so [`RegistrationResponse::account_id`] is filled where Lambda supports it.
//! - Subscriptions accept 200 and 202 (the AWS emulator answers 202); init/error and exit/error
//!   accept any 2xx (the API answers 202, which the Go sample treats as a failure). A Telemetry
//!   API subscription tells the emulator's 202 `Telemetry.NotSupported` apart from success:
//!   [`Subscribed::NotSupported`].
//! - `next_event` has no client timeout: a long poll that is frozen between invokes is normal.
//!   Every other call gives up after [`CALL_TIMEOUT`], so an API that stops answering cannot
//!   hang the extension.
//! - The API address may carry a path: `127.0.0.1:9000/.rt` is valid.
//! - [`RegistrationClient::from_env`] ignores proxy variables (see [`lambda_agent`]).

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ureq::config::IpFamily;
use ureq::http::{header, HeaderName, HeaderValue, Request, Uri};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::api::{
    ErrorRequest, LogSubscription, NextEventResponse, RegistrationRequest, RegistrationResponse,
    TelemetrySubscription, ACCEPT_FEATURE_HEADER, EXTENSIONS_API_VERSION,
    EXTENSION_IDENTIFIER_HEADER, EXTENSION_NAME_HEADER, FUNCTION_ERROR_TYPE_HEADER,
    LOGS_API_VERSION, TELEMETRY_API_VERSION,
};

/// [`EXTENSION_IDENTIFIER_HEADER`] as a ready header name (it is sent on every event).
const IDENTIFIER_HEADER_NAME: HeaderName = HeaderName::from_static("lambda-extension-identifier");

/// How long any call except `next_event` may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable Lambda sets to the API's `host:port`.
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// The calls this client makes, named in errors. Its `Display` is the short name used in
/// messages (`register`, `event/next`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /2020-01-01/extension/register`.
    Register,
    /// `GET /2020-01-01/extension/event/next`.
    NextEvent,
    /// `POST /2020-01-01/extension/init/error`.
    InitError,
    /// `POST /2020-01-01/extension/exit/error`.
    ExitError,
    /// `PUT /2020-08-15/logs`.
    LogsSubscribe,
    /// `PUT /2022-07-01/telemetry`.
    TelemetrySubscribe,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Register => "register",
            Endpoint::NextEvent => "event/next",
            Endpoint::InitError => "init/error",
            Endpoint::ExitError => "exit/error",
            Endpoint::LogsSubscribe => "logs subscription",
            Endpoint::TelemetrySubscribe => "telemetry subscription",
        })
    }
}

/// Everything that can go wrong talking to the API.
///
/// Its `Display` says what happened and, where it can, what to do; [`is_fatal`](Self::is_fatal)
/// and [`is_transport`](Self::is_transport) sort it for a retry or an exit.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// `AWS_LAMBDA_RUNTIME_API` is not set and no address was given.
    MissingRuntimeApi,
    /// No extension name was given and none could be taken from `argv[0]`.
    MissingExtensionName,
    /// No HTTP response at all: connection refused, reset or dropped.
    Transport {
        /// The call that failed.
        endpoint: Endpoint,
        /// The URL it was sent to.
        url: String,
        /// What ureq reported.
        source: ureq::Error,
    },
    /// The API answered with a status the call does not accept.
    Status {
        /// The call that failed.
        endpoint: Endpoint,
        /// The HTTP status of the answer.
        status: u16,
        /// The API's `{"errorType", "errorMessage"}`, or the raw body (as `error_message`) when it
        /// is not that JSON.
        error: ErrorRequest,
    },
    /// The API did not answer within [`CALL_TIMEOUT`] (not retried: it may have acted on it).
    Timeout {
        /// The call that timed out.
        endpoint: Endpoint,
    },
    /// The request could not be sent as asked (for example a header value with a newline);
    /// nothing reached the API.
    InvalidRequest {
        /// The call that was not made.
        endpoint: Endpoint,
        /// Why it could not be sent.
        reason: String,
    },
    /// Registration succeeded but the response had no `Lambda-Extension-Identifier` header.
    MissingIdentifier,
    /// A 200 response whose body is not what the API documents.
    InvalidBody {
        /// The call whose answer it was.
        endpoint: Endpoint,
        /// Why the body does not parse.
        source: serde_json::Error,
        /// The start of the body, for the message.
        body_start: String,
    },
}

impl ClientError {
    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the request never got a response (a retry may help).
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// True for the answers the API documents as non-recoverable (403, 5xx): exit promptly.
    pub fn is_fatal(&self) -> bool {
        matches!(self.status(), Some(status) if status == 403 || status >= 500)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::MissingRuntimeApi => write!(
                f,
                "{RUNTIME_API_ENV} is not set: the extension must be started by Lambda \
                 (or by an emulator that sets it to host:port)"
            ),
            ClientError::MissingExtensionName => f.write_str(
                "cannot tell the extension name: argv[0] has no file name; \
                 Lambda registers an extension under the file name in /opt/extensions",
            ),
            ClientError::Transport {
                endpoint,
                url,
                source,
            } => write!(f, "{endpoint}: no response from the Lambda API at {url}: {source}"),
            ClientError::Status {
                endpoint,
                status,
                error,
            } => {
                write!(f, "{endpoint}: the Lambda API answered {status}")?;
                if !error.error_type.is_empty() {
                    write!(f, " {}", error.error_type)?;
                }
                if !error.error_message.is_empty() {
                    write!(f, ": {}", error.error_message)?;
                }
                if *status == 403 || *status >= 500 {
                    f.write_str(" (non-recoverable: the extension must exit)")?;
                }
                Ok(())
            }
            ClientError::Timeout { endpoint } => write!(
                f,
                "{endpoint}: the Lambda API did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ),
            ClientError::InvalidRequest { endpoint, reason } => {
                write!(f, "{endpoint}: the request was not sent: {reason}")
            }
            ClientError::MissingIdentifier => write!(
                f,
                "register: the Lambda API answered 200 without a {EXTENSION_IDENTIFIER_HEADER} header"
            ),
            ClientError::InvalidBody {
                endpoint,
                source,
                body_start,
            } => write!(
                f,
                "{endpoint}: the Lambda API sent a body that is not the documented JSON ({source}): {body_start:?}"
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Transport { source, .. } => Some(source),
            ClientError::InvalidBody { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What [`InvocationClient::telemetry_register`] came to when the API took the request: the
/// subscription is [`Active`](Subscribed::Active), or the API (an emulator) does not support
/// telemetry. A refusal is a [`ClientError`] instead.
///
/// ```no_run
/// # use lambda_shell_extension::api::{TelemetrySchema, TelemetrySubscription, TelemetryType};
/// # use lambda_shell_extension::client::{RegistrationClient, Subscribed};
/// # let (client, _) = RegistrationClient::from_env().register_default()?;
/// # let subscription = TelemetrySubscription::http(
/// #     TelemetrySchema::V2022_12_13, "http://sandbox.localdomain:4243", vec![TelemetryType::Platform]);
/// match client.telemetry_register(&subscription)? {
///     Subscribed::Active => println!("subscribed"),
///     Subscribed::NotSupported { error_type, message } => {
///         eprintln!("no telemetry here ({error_type}: {message}); carrying on")
///     }
///     _ => {} // #[non_exhaustive]
/// }
/// # Ok::<(), lambda_shell_extension::client::ClientError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "a NotSupported subscription delivers nothing: say so"]
pub enum Subscribed {
    /// Subscribed (200, or a 202 whose body is not an error): batches will be POSTed to the
    /// destination.
    Active,
    /// The API accepted the call but will deliver nothing: a 202 whose body is an error, as the
    /// AWS emulator answers (`{"errorType": "Telemetry.NotSupported", "errorMessage": "Telemetry
    /// API is not supported"}`). Not fatal: an extension should say so and carry on without
    /// telemetry.
    NotSupported {
        /// The answer's `errorType`, for example `Telemetry.NotSupported`.
        error_type: String,
        /// The answer's `errorMessage` (empty when it had none).
        message: String,
    },
}

impl Subscribed {
    /// True for [`Subscribed::Active`]: batches will come.
    pub fn is_active(&self) -> bool {
        matches!(self, Subscribed::Active)
    }
}

/// An agent suited to the Extensions API: loopback, tiny messages, no timeouts.
///
/// ureq's default 128 KiB connection buffers are zero-filled when the connection opens, which
/// costs more at start-up than everything else the extension does before registering (in a
/// size-optimised build the fill is a byte loop); 16 KiB holds any Lambda API header and event.
/// Statuses are not errors at the agent level, so no request needs a configuration of its own.
/// An address that is an IP literal (Lambda's `127.0.0.1:9001`) is taken as it is, not formatted
/// and parsed again on every call as ureq's resolver does; a host name is resolved by ureq's.
pub fn lambda_agent() -> ureq::Agent {
    const BUFFER_BYTES: usize = 16 * 1024;
    let config = ureq::Agent::config_builder()
        // The API is on loopback: a proxy set for the function (HTTP_PROXY, ALL_PROXY...) must
        // never see, or break, the extension's calls.
        .proxy(None)
        .http_status_as_error(false)
        // The API never redirects and needs none of these headers: less work on every call.
        .max_redirects(0)
        .user_agent(ureq::config::AutoHeaderValue::None)
        .accept(ureq::config::AutoHeaderValue::None)
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .input_buffer_size(BUFFER_BYTES)
        .output_buffer_size(BUFFER_BYTES)
        .max_response_header_size(BUFFER_BYTES)
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        IpLiteralResolver::default(),
    )
}

/// ureq's resolver formats `host:port` into a new string and parses it back on every call, even
/// for an IP address, before the pool is even asked for a connection: 3,000 instructions of an
/// event's ~47,000 (docs/http-path.md). This one reads an IP literal's address from the URI once
/// and answers the same authority from that copy afterwards (an IP address resolves to itself:
/// nothing can go stale); anything else goes to ureq's own resolver every time, which also keeps
/// its behaviour for an IP family other than `Any`. (`Resolver` is in ureq's `unversioned`
/// module; its signature has not changed since ureq 3.0.0.)
#[derive(Debug, Default)]
struct IpLiteralResolver {
    fallback: DefaultResolver,
    /// The last IP-literal authority (`127.0.0.1:9001`) and its address.
    last: Mutex<Option<(String, ResolvedSocketAddrs)>>,
}

impl Resolver for IpLiteralResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if config.ip_family() == IpFamily::Any {
            if let Some(authority) = uri.authority() {
                // A poisoned lock only loses the copy: the address is worked out again.
                let mut last = self
                    .last
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                if let Some((cached, addresses)) = last.as_ref() {
                    if cached == authority.as_str() && uri.scheme_str() == Some("http") {
                        return Ok(addresses.clone());
                    }
                }
                if let Some(address) = ip_literal(uri) {
                    let mut addresses = self.empty();
                    addresses.push(address);
                    if uri.scheme_str() == Some("http") {
                        *last = Some((authority.as_str().to_owned(), addresses.clone()));
                    }
                    return Ok(addresses);
                }
            }
        }
        self.fallback.resolve(uri, config, timeout)
    }
}

/// The socket address of a URI whose host is an IP address (`127.0.0.1`, `[::1]`), with its
/// port or the scheme's default.
fn ip_literal(uri: &Uri) -> Option<SocketAddr> {
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port = match (authority.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("http")) => 80,
        (None, Some("https")) => 443,
        (None, _) => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Starts the protocol: knows where the API is and what the extension is called.
#[derive(Debug, Clone)]
pub struct RegistrationClient {
    agent: ureq::Agent,
    runtime_api: Option<String>,
    extension_name: Option<String>,
}

impl RegistrationClient {
    /// A client as Lambda sets an extension up: the API named by `AWS_LAMBDA_RUNTIME_API`, the
    /// extension named by the file name of `argv[0]`, and [`lambda_agent`] for the HTTP calls, so
    /// proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are ignored.
    ///
    /// The same as `RegistrationClient::new(lambda_agent())`.
    pub fn from_env() -> Self {
        RegistrationClient::new(lambda_agent())
    }

    /// A client for the API named by `AWS_LAMBDA_RUNTIME_API`, registering under the file name
    /// Lambda started (the basename of `argv[0]`; not `current_exe()`, which would resolve a
    /// symlink or renamed copy to the original's name), making its calls with `agent`.
    ///
    /// `RegistrationClient::new(lambda_agent())` is [`from_env`](Self::from_env). An agent of
    /// your own should, like [`lambda_agent`], use no proxy (`.proxy(None)`) and no global timeout
    /// (the long poll of [`InvocationClient::next_event`] has none): an agent that honours proxy
    /// variables sends the calls to the proxy, not to the API on loopback.
    pub fn new(agent: ureq::Agent) -> Self {
        RegistrationClient {
            agent,
            runtime_api: std::env::var(RUNTIME_API_ENV)
                .ok()
                .filter(|value| !value.is_empty()),
            extension_name: default_extension_name(),
        }
    }

    /// Use this API address (`host:port`, optionally followed by a path) instead of the environment's.
    pub fn with_runtime_api(mut self, runtime_api: impl Into<String>) -> Self {
        self.runtime_api = Some(runtime_api.into());
        self
    }

    /// Register under this name instead of the file name of `argv[0]`.
    pub fn with_extension_name(mut self, name: impl Into<String>) -> Self {
        self.extension_name = Some(name.into());
        self
    }

    /// The name this client registers under, if known.
    pub fn extension_name(&self) -> Option<&str> {
        self.extension_name.as_deref()
    }

    /// Registers for INVOKE and SHUTDOWN.
    pub fn register_default(self) -> Result<(InvocationClient, RegistrationResponse), ClientError> {
        self.register(&RegistrationRequest::default())
    }

    /// Registers for the given events. Call it once, first thing during Init.
    pub fn register(
        self,
        request: &RegistrationRequest,
    ) -> Result<(InvocationClient, RegistrationResponse), ClientError> {
        let runtime_api = self
            .runtime_api
            .filter(|address| !address.trim().is_empty())
            .ok_or(ClientError::MissingRuntimeApi)?;
        let name = self
            .extension_name
            .ok_or(ClientError::MissingExtensionName)?;
        let base = base_url(&runtime_api)?;
        let url = format!("{base}/{EXTENSIONS_API_VERSION}/extension/register");
        let body = to_json(request);
        let mut response = bounded(
            self.agent
                .post(&url)
                .header(EXTENSION_NAME_HEADER, &name)
                .header(ACCEPT_FEATURE_HEADER, "accountId")
                .header("Content-Type", "application/json"),
        )
        .send(&body[..])
        .map_err(|source| transport(Endpoint::Register, &url, source))?;
        let body = read_body(&mut response, Endpoint::Register, &url)?;
        expect_status(Endpoint::Register, response.status().as_u16(), &body, |s| {
            s == 200
        })?;
        let id_header = response
            .headers()
            .get(EXTENSION_IDENTIFIER_HEADER)
            .filter(|value| !value.is_empty())
            .cloned()
            .ok_or(ClientError::MissingIdentifier)?;
        let id = id_header
            .to_str()
            .map_err(|_| ClientError::MissingIdentifier)?
            .to_string();
        let registration =
            serde_json::from_slice(&body).map_err(|source| ClientError::InvalidBody {
                endpoint: Endpoint::Register,
                source,
                body_start: body_start(&body),
            })?;
        let next_url = format!("{base}/{EXTENSIONS_API_VERSION}/extension/event/next");
        let next_request = next_event_request(&next_url, &id_header)?;
        let client = InvocationClient {
            next_url,
            next_request,
            init_error_url: format!("{base}/{EXTENSIONS_API_VERSION}/extension/init/error"),
            exit_error_url: format!("{base}/{EXTENSIONS_API_VERSION}/extension/exit/error"),
            logs_url: format!("{base}/{LOGS_API_VERSION}/logs"),
            telemetry_url: format!("{base}/{TELEMETRY_API_VERSION}/telemetry"),
            agent: self.agent,
            extension_id: id,
            extension_name: name,
            last_next_answered: AtomicBool::new(true),
        };
        Ok((client, registration))
    }
}

/// A registered extension: asks for events, reports errors, subscribes to logs and telemetry.
#[derive(Debug)]
pub struct InvocationClient {
    agent: ureq::Agent,
    extension_id: String,
    extension_name: String,
    next_url: String,
    /// The `/event/next` request, built once: each event sends a clone of it (no URL parsing, no
    /// header building, no `Host` formatting per event).
    next_request: Request<()>,
    init_error_url: String,
    exit_error_url: String,
    logs_url: String,
    telemetry_url: String,
    /// Whether the last `next_event` got an answer: only then is a failure retried at once
    /// (a dead kept-alive connection), never inside a run of failures (that would spin).
    last_next_answered: AtomicBool,
}

impl InvocationClient {
    /// The identifier Lambda assigned at registration.
    pub fn extension_id(&self) -> &str {
        &self.extension_id
    }

    /// The name the extension registered under.
    pub fn extension_name(&self) -> &str {
        &self.extension_name
    }

    /// Waits for the next event; calling it also tells Lambda the previous one is done.
    /// It has no timeout: Lambda may freeze the process while it waits.
    pub fn next_event(&self) -> Result<NextEventResponse, ClientError> {
        let endpoint = Endpoint::NextEvent;
        let call = || {
            let request = self.next_request.clone();
            if self.agent.config().http_status_as_error() {
                // An agent of the caller's own that turns statuses into errors: this request keeps
                // them as responses (a per-request configuration copies the agent's whole
                // configuration, so lambda_agent() needs none).
                let request = self
                    .agent
                    .configure_request(request)
                    .http_status_as_error(false)
                    .build();
                self.agent.run(request)
            } else {
                self.agent.run(request)
            }
        };
        // A kept-alive connection can be dead without the client knowing (after a SnapStart
        // restore, or an API that closed it while the extension was frozen): the request never
        // reached the API, so it is sent once more, on a fresh connection, before it counts.
        let answered = self.last_next_answered.swap(false, Ordering::Relaxed);
        let mut response = match call() {
            Err(_) if answered => call(),
            outcome => outcome,
        }
        .map_err(|source| transport(endpoint, &self.next_url, source))?;
        self.last_next_answered.store(true, Ordering::Relaxed);
        let body = read_body(&mut response, endpoint, &self.next_url)?;
        expect_status(endpoint, response.status().as_u16(), &body, |s| s == 200)?;
        match crate::api::parse_event(&body) {
            Ok(event) => Ok(NextEventResponse { event, body }),
            Err(source) => Err(ClientError::InvalidBody {
                endpoint,
                source,
                body_start: body_start(&body),
            }),
        }
    }

    /// Reports a failure during Init (after registering, before the first `next_event`).
    /// The extension should exit afterwards.
    pub fn init_error(&self, error_type: &str, message: &str) -> Result<(), ClientError> {
        self.report_error(
            Endpoint::InitError,
            &self.init_error_url,
            error_type,
            message,
        )
    }

    /// Reports a failure after Init. The extension should exit afterwards.
    pub fn exit_error(&self, error_type: &str, message: &str) -> Result<(), ClientError> {
        self.report_error(
            Endpoint::ExitError,
            &self.exit_error_url,
            error_type,
            message,
        )
    }

    /// Subscribes to the Logs API (superseded by the Telemetry API, still supported). Init only.
    /// 200 and 202 (the AWS emulator's "not supported") are both `Ok`.
    pub fn log_register(&self, subscription: &LogSubscription) -> Result<(), ClientError> {
        let (status, body) =
            self.subscribe(Endpoint::LogsSubscribe, &self.logs_url, subscription)?;
        expect_status(Endpoint::LogsSubscribe, status, &body, |s| {
            s == 200 || s == 202
        })
    }

    /// Subscribes to the Telemetry API: `PUT /2022-07-01/telemetry` with the subscription as
    /// JSON, during Init (after registering, before the first [`next_event`](Self::next_event));
    /// start the listener first, Lambda may deliver at once.
    ///
    /// - 200, or 202 without an error body: [`Subscribed::Active`].
    /// - 202 whose body is an API error (`{"errorType", "errorMessage"}`, the AWS emulator's
    ///   `Telemetry.NotSupported`): [`Subscribed::NotSupported`], neither success nor a
    ///   failure.
    /// - Any other status: [`ClientError::Status`] with the API's `errorType` and `errorMessage`.
    ///   A 400 (`ValidationError`) is not fatal: some runtimes refuse schema `2025-01-29`, and a
    ///   retry with [`TelemetrySchema::V2022_12_13`](crate::api::TelemetrySchema) may succeed.
    ///   403 (for example `Telemetry.SubscriptionClosed` after Init) and 5xx are
    ///   [`is_fatal`](ClientError::is_fatal).
    ///
    /// The buffering values cannot be out of range ([`TelemetryBuffering::new`] checks them), so
    /// nothing the API would refuse for its ranges is ever sent.
    ///
    /// [`TelemetryBuffering::new`]: crate::api::TelemetryBuffering::new
    pub fn telemetry_register(
        &self,
        subscription: &TelemetrySubscription,
    ) -> Result<Subscribed, ClientError> {
        let endpoint = Endpoint::TelemetrySubscribe;
        let (status, body) = self.subscribe(endpoint, &self.telemetry_url, subscription)?;
        match status {
            200 => Ok(Subscribed::Active),
            202 => Ok(match api_error(&body) {
                Some(error) => Subscribed::NotSupported {
                    error_type: error.error_type,
                    message: error.error_message,
                },
                None => Subscribed::Active,
            }),
            _ => Err(status_error(endpoint, status, &body)),
        }
    }

    /// PUTs a subscription; the status and body are the caller's to judge.
    fn subscribe<T: serde::Serialize>(
        &self,
        endpoint: Endpoint,
        url: &str,
        subscription: &T,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let body = to_json(subscription);
        let mut response = bounded(
            self.agent
                .put(url)
                .header(EXTENSION_IDENTIFIER_HEADER, &self.extension_id)
                .header("Content-Type", "application/json"),
        )
        .send(&body[..])
        .map_err(|source| transport(endpoint, url, source))?;
        let body = read_body(&mut response, endpoint, url)?;
        Ok((response.status().as_u16(), body))
    }

    fn report_error(
        &self,
        endpoint: Endpoint,
        url: &str,
        error_type: &str,
        message: &str,
    ) -> Result<(), ClientError> {
        let body = to_json(&ErrorRequest {
            error_message: message.to_string(),
            error_type: error_type.to_string(),
        });
        let mut response = bounded(
            self.agent
                .post(url)
                .header(EXTENSION_IDENTIFIER_HEADER, &self.extension_id)
                .header(FUNCTION_ERROR_TYPE_HEADER, error_type)
                .header("Content-Type", "application/json"),
        )
        .send(&body[..])
        .map_err(|source| transport(endpoint, url, source))?;
        let body = read_body(&mut response, endpoint, url)?;
        expect_status(endpoint, response.status().as_u16(), &body, |s| {
            (200..300).contains(&s)
        })
    }
}

/// `GET next_url` with the identifier and the `Host` header ureq would add (`host`, or
/// `host:port` when the port is not the scheme's default), so a clone is ready to send.
fn next_event_request(next_url: &str, id_header: &HeaderValue) -> Result<Request<()>, ClientError> {
    let invalid = |reason: String| ClientError::InvalidRequest {
        endpoint: Endpoint::NextEvent,
        reason,
    };
    let uri: Uri = next_url
        .parse()
        .map_err(|error: ureq::http::uri::InvalidUri| invalid(error.to_string()))?;
    let host = match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) if port != 80 => format!("{host}:{port}"),
        (Some(host), _) => host.to_string(),
        (None, _) => return Err(invalid(format!("{next_url} has no host"))),
    };
    let host = HeaderValue::try_from(host).map_err(|error| invalid(error.to_string()))?;
    Request::get(uri)
        .header(header::HOST, host)
        .header(IDENTIFIER_HEADER_NAME, id_header.clone())
        .body(())
        .map_err(|error| invalid(error.to_string()))
}

/// The basename of `argv[0]`: the file name Lambda started.
/// `http://host:port[/path]` from `AWS_LAMBDA_RUNTIME_API`, which Lambda sets to `host:port`;
/// a leading `http://` (as cargo-lambda tells its users to export) is accepted, any other scheme
/// is refused: the API is plain HTTP.
fn base_url(runtime_api: &str) -> Result<String, ClientError> {
    let address = runtime_api.trim().trim_end_matches('/');
    let address = match address.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &address[7..],
        _ => address,
    };
    if let Some((scheme, _)) = address.split_once("://") {
        return Err(ClientError::InvalidRequest {
            endpoint: Endpoint::Register,
            reason: format!(
                "{RUNTIME_API_ENV} is {runtime_api:?}: the Lambda API is plain HTTP, not \
                 {scheme}; set it to host:port (a leading http:// is accepted)"
            ),
        });
    }
    Ok(format!("http://{address}"))
}

fn default_extension_name() -> Option<String> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0).file_name()?;
    Some(name.to_string_lossy().into_owned())
}

/// Every call but the long poll answers at once: one that does not must not hang the extension
/// (Lambda would only notice at the end of its Init or invoke timeout).
fn bounded<B>(builder: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    builder
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
}

/// Sorts a ureq error: a request that could not even be built is not worth retrying.
fn transport(endpoint: Endpoint, url: &str, source: ureq::Error) -> ClientError {
    match source {
        ureq::Error::Timeout(_) => ClientError::Timeout { endpoint },
        ureq::Error::Http(_) | ureq::Error::BadUri(_) => ClientError::InvalidRequest {
            endpoint,
            reason: source.to_string(),
        },
        source => ClientError::Transport {
            endpoint,
            url: url.to_string(),
            source,
        },
    }
}

fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    endpoint: Endpoint,
    url: &str,
) -> Result<Vec<u8>, ClientError> {
    // No size limit: an event is passed on whole or not at all. Sized up front from
    // Content-Length, so a typical event is read without reallocating.
    let body = response.body_mut();
    let expected = body.content_length().unwrap_or(0).min(1 << 20) as usize;
    let mut bytes = Vec::with_capacity(expected);
    body.with_config()
        .limit(u64::MAX)
        .reader()
        .read_to_end(&mut bytes)
        .map_err(|error| transport(endpoint, url, ureq::Error::Io(error)))?;
    Ok(bytes)
}

fn expect_status(
    endpoint: Endpoint,
    status: u16,
    body: &[u8],
    accepted: impl Fn(u16) -> bool,
) -> Result<(), ClientError> {
    if accepted(status) {
        return Ok(());
    }
    Err(status_error(endpoint, status, body))
}

/// The API's `{"errorType", "errorMessage"}` in `body`, if that is what it is (a JSON object with
/// at least one of them non-empty).
fn api_error(body: &[u8]) -> Option<ErrorRequest> {
    serde_json::from_slice::<ErrorRequest>(body)
        .ok()
        .filter(|error| !error.error_message.is_empty() || !error.error_type.is_empty())
}

/// A [`ClientError::Status`] carrying the API's error, or the start of the body as its message.
fn status_error(endpoint: Endpoint, status: u16, body: &[u8]) -> ClientError {
    let error = api_error(body).unwrap_or_else(|| ErrorRequest {
        error_message: body_start(body),
        error_type: String::new(),
    });
    ClientError::Status {
        endpoint,
        status,
        error,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // These types hold only strings, numbers and enums: serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The first few hundred bytes of a body, for an error message.
fn body_start(body: &[u8]) -> String {
    const SHOWN: usize = 300;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]).into_owned();
    if body.len() > SHOWN {
        format!("{text}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> Uri {
        text.parse().unwrap()
    }

    #[test]
    fn ip_literals_are_read_from_the_uri_and_names_are_not() {
        let cases = [
            ("http://127.0.0.1:9001/2020-01-01/x", Some("127.0.0.1:9001")),
            ("http://127.0.0.1/x", Some("127.0.0.1:80")),
            ("https://10.0.0.1/x", Some("10.0.0.1:443")),
            ("http://[::1]:9001/x", Some("[::1]:9001")),
            ("http://[::1]/x", Some("[::1]:80")),
            ("http://localhost:9001/x", None),
            ("http://sandbox.localdomain:9001/x", None),
            ("http://1.2.3/x", None),
        ];
        for (text, expected) in cases {
            let expected = expected.map(|address| address.parse::<SocketAddr>().unwrap());
            assert_eq!(ip_literal(&uri(text)), expected, "{text}");
        }
    }

    #[test]
    fn the_resolver_answers_like_ureqs_and_remembers_only_ip_literals() {
        let resolver = IpLiteralResolver::default();
        let config = ureq::Agent::config_builder().build();
        let ours = |text: &str| {
            let addresses = resolver.resolve(&uri(text), &config, NextTimeout::default());
            addresses.map(|a| a.to_vec()).map_err(|e| e.to_string())
        };
        let ureqs = |text: &str| {
            let addresses =
                DefaultResolver::default().resolve(&uri(text), &config, NextTimeout::default());
            addresses.map(|a| a.to_vec()).map_err(|e| e.to_string())
        };
        for text in [
            "http://127.0.0.1:9001/a",
            "http://127.0.0.1:9001/b",
            "http://127.0.0.1:9002/a",
            "http://[::1]:9001/a",
            "https://127.0.0.1:9001/a",
            "http://localhost:9001/a",
            "http://127.0.0.1:9001/a",
        ] {
            assert_eq!(ours(text), ureqs(text), "{text}");
        }
        let last = resolver.last.lock().unwrap();
        let (authority, addresses) = last.as_ref().expect("an address remembered");
        assert_eq!(authority, "127.0.0.1:9001");
        assert_eq!(addresses.to_vec(), ["127.0.0.1:9001".parse().unwrap()]);
    }

    #[test]
    fn the_event_request_carries_host_and_identifier() {
        let id = HeaderValue::from_static("id-1");
        for (url, host) in [
            (
                "http://127.0.0.1:9001/2020-01-01/extension/event/next",
                "127.0.0.1:9001",
            ),
            ("http://127.0.0.1:80/p", "127.0.0.1"),
            ("http://[::1]:9001/p", "[::1]:9001"),
            ("http://sandbox:9001/.rt/p", "sandbox:9001"),
        ] {
            let request = next_event_request(url, &id).unwrap();
            assert_eq!(request.method(), ureq::http::Method::GET);
            assert_eq!(request.uri(), url);
            assert_eq!(request.headers()[header::HOST], host);
            assert_eq!(request.headers()[EXTENSION_IDENTIFIER_HEADER], "id-1");
            assert_eq!(request.headers().len(), 2);
        }
    }
}
