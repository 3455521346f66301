//! Configuration: command-line flags, each with an environment-variable twin (Lambda passes no
//! arguments, so in practice everything comes from the environment).
//!
//! Flags are parsed as plain strings and validated here, so that an invalid value produces a
//! message that names the environment variable a Lambda user actually sets.

use std::fmt;
use std::time::Duration;

use clap::Parser;

use crate::api::{BufferingField, LifecycleEvent, LogType, RegistrationRequest};
use crate::command::CommandLine;

pub const HANDLER_ENV: &str = "SHELL_EXT_HANDLER";
pub const INIT_ENV: &str = "SHELL_EXT_INIT";
pub const EVENTS_ENV: &str = "SHELL_EXT_EVENTS";
pub const ON_ERROR_ENV: &str = "SHELL_EXT_ON_ERROR";
pub const TIMEOUT_MARGIN_ENV: &str = "SHELL_EXT_TIMEOUT_MARGIN_MS";
pub const MODE_ENV: &str = "SHELL_EXT_MODE";
pub const TELEMETRY_HANDLER_ENV: &str = "SHELL_EXT_TELEMETRY_HANDLER";
pub const TELEMETRY_MODE_ENV: &str = "SHELL_EXT_TELEMETRY_MODE";
pub const TELEMETRY_TYPES_ENV: &str = "SHELL_EXT_TELEMETRY_TYPES";
pub const TELEMETRY_SCHEMA_ENV: &str = "SHELL_EXT_TELEMETRY_SCHEMA";
pub const TELEMETRY_FLUSH_ENV: &str = "SHELL_EXT_TELEMETRY_FLUSH";
pub const TELEMETRY_MAX_ITEMS_ENV: &str = "SHELL_EXT_TELEMETRY_MAX_ITEMS";
pub const TELEMETRY_MAX_BYTES_ENV: &str = "SHELL_EXT_TELEMETRY_MAX_BYTES";
pub const TELEMETRY_TIMEOUT_MS_ENV: &str = "SHELL_EXT_TELEMETRY_TIMEOUT_MS";
pub const REQUEST_HANDLER_ENV: &str = "SHELL_EXT_REQUEST_HANDLER";
pub const RESPONSE_HANDLER_ENV: &str = "SHELL_EXT_RESPONSE_HANDLER";
pub const ON_REQUEST_FAILURE_ENV: &str = "SHELL_EXT_ON_REQUEST_FAILURE";
pub const PROXY_ENV: &str = "SHELL_EXT_PROXY";
pub const PROXY_PORT_ENV: &str = "SHELL_EXT_PROXY_PORT";
/// Set by Lambda: `host:port` of the Lambda APIs (the proxy's upstream).
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";
const DEFAULT_PROXY_PORT: u16 = 9009;
/// Set by Lambda: `on-demand`, `provisioned-concurrency`, `snap-start` or
/// `lambda-managed-instances`.
pub const INITIALIZATION_TYPE_ENV: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";
/// Lambda's advanced logging controls: `Text` or `JSON`.
pub const LOG_FORMAT_ENV: &str = "AWS_LAMBDA_LOG_FORMAT";
/// Lambda's advanced logging controls: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR` or `FATAL`.
pub const LOG_LEVEL_ENV: &str = "AWS_LAMBDA_LOG_LEVEL";
/// The env_logger filter; wins over `AWS_LAMBDA_LOG_LEVEL`.
pub const RUST_LOG_ENV: &str = "RUST_LOG";

const DEFAULT_TIMEOUT_MARGIN_MS: u64 = 100;

/// The flags as given, before validation.
#[derive(Debug, Default, Parser)]
#[command(
    name = "lambda-shell-extension",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("LAMBDA_SHELL_EXTENSION_TARGET"),
        ")"
    ),
    about = "Runs a command for every AWS Lambda lifecycle event (an external Lambda extension).",
    long_about = "Runs a command for every AWS Lambda lifecycle event, with the event JSON on stdin. \
                  Lambda starts it from a layer's extensions/ folder with no arguments: configure it \
                  with the environment variables shown below.",
    after_help = "Also read from the environment:\n  \
                  AWS_LAMBDA_RUNTIME_API  host:port of the Lambda API (set by Lambda)\n  \
                  RUST_LOG                log filter of the extension's own lines [default: info]\n  \
                  AWS_LAMBDA_LOG_LEVEL    TRACE..FATAL: the level when RUST_LOG is unset\n  \
                  AWS_LAMBDA_LOG_FORMAT   JSON: the extension's own lines as JSON [default: Text]\n\n\
                  Without Lambda: --check validates the configuration, --once FILE runs the \
                  handler once (sample events in scripts/events/), make demo runs a local emulator."
)]
pub struct Options {
    /// Command run for every event, with the event JSON on stdin (required without --telemetry)
    #[arg(long, env = HANDLER_ENV, value_name = "CMD")]
    pub handler: Option<String>,

    /// How the handler runs: per-event (a process per event) or persistent (one process, an event per line) [default: per-event]
    #[arg(long, env = MODE_ENV, value_name = "MODE")]
    pub mode: Option<String>,

    /// Command run once after registration, before the first event
    #[arg(long, env = INIT_ENV, value_name = "CMD")]
    pub init: Option<String>,

    /// Events to receive: INVOKE,SHUTDOWN or SHUTDOWN [default: INVOKE,SHUTDOWN; SHUTDOWN for telemetry only]
    #[arg(long, env = EVENTS_ENV, value_name = "LIST")]
    pub events: Option<String>,

    /// When the handler fails: exit (report exit/error, exit non-zero) or continue [default: exit]
    #[arg(long, env = ON_ERROR_ENV, value_name = "MODE")]
    pub on_error: Option<String>,

    /// Stop a handler this many milliseconds before the event's deadline [default: 100]
    #[arg(long, env = TIMEOUT_MARGIN_ENV, value_name = "N")]
    pub timeout_margin_ms: Option<String>,

    /// Command run for each telemetry batch, the batch JSON on stdin
    #[arg(long, env = TELEMETRY_HANDLER_ENV, value_name = "CMD")]
    pub telemetry: Option<String>,

    /// How the telemetry command runs: per-event (a process per batch) or persistent (a batch per line) [default: per-event]
    #[arg(long, env = TELEMETRY_MODE_ENV, value_name = "MODE")]
    pub telemetry_mode: Option<String>,

    /// Telemetry types: any of platform,function,extension [default: platform,function]
    #[arg(long, env = TELEMETRY_TYPES_ENV, value_name = "LIST")]
    pub telemetry_types: Option<String>,

    /// Telemetry schema: 2022-12-13, 2025-01-29 or auto [default: auto]
    #[arg(long, env = TELEMETRY_SCHEMA_ENV, value_name = "V")]
    pub telemetry_schema: Option<String>,

    /// When telemetry is delivered: background or end-of-invoke [default: background]
    #[arg(long, env = TELEMETRY_FLUSH_ENV, value_name = "WHEN")]
    pub telemetry_flush: Option<String>,

    /// Lambda's telemetry buffering: records per batch, 1000-10000 [default: Lambda's]
    #[arg(long, env = TELEMETRY_MAX_ITEMS_ENV, value_name = "N")]
    pub telemetry_max_items: Option<String>,

    /// Lambda's telemetry buffering: bytes per batch, 262144-1048576 [default: Lambda's]
    #[arg(long, env = TELEMETRY_MAX_BYTES_ENV, value_name = "N")]
    pub telemetry_max_bytes: Option<String>,

    /// Lambda's telemetry buffering: ms before a batch is sent, 25-30000 [default: Lambda's]
    #[arg(long, env = TELEMETRY_TIMEOUT_MS_ENV, value_name = "N")]
    pub telemetry_timeout_ms: Option<String>,

    /// Runtime API proxy: command run before the function sees each invocation, payload on stdin
    #[arg(long, env = REQUEST_HANDLER_ENV, value_name = "CMD")]
    pub request_handler: Option<String>,

    /// Runtime API proxy: command run after the function answered, response body on stdin
    #[arg(long, env = RESPONSE_HANDLER_ENV, value_name = "CMD")]
    pub response_handler: Option<String>,

    /// When the request handler fails: log (the invocation goes on) or reject [default: log]
    #[arg(long, env = ON_REQUEST_FAILURE_ENV, value_name = "P")]
    pub on_request_failure: Option<String>,

    /// Runtime API proxy with no handler: on or off [default: off]
    #[arg(long, env = PROXY_ENV, value_name = "V")]
    pub proxy: Option<String>,

    /// Loopback port of the Runtime API proxy [default: 9009]
    #[arg(long, env = PROXY_PORT_ENV, value_name = "N")]
    pub proxy_port: Option<String>,

    /// Validate the configuration and the commands offline, print what would be registered
    #[arg(long, conflicts_with = "once")]
    pub check: bool,

    /// Run the handler once with the event JSON in FILE (- for stdin), without Lambda
    #[arg(long, value_name = "FILE")]
    pub once: Option<String>,
}

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Be a Lambda extension (no arguments: how Lambda starts it).
    Run,
    /// `--check`: validate offline.
    Check,
    /// `--once FILE`: run the handler once with the event in FILE (`-`: stdin).
    Once(String),
}

impl Options {
    /// What the flags ask for.
    pub fn action(&self) -> Action {
        match (&self.once, self.check) {
            (Some(file), _) => Action::Once(file.clone()),
            (None, true) => Action::Check,
            (None, false) => Action::Run,
        }
    }

    /// The options as Lambda gives them: from the environment when there are no arguments
    /// (building clap's parser is most of the start-up work, and Lambda never passes any), and
    /// through clap otherwise (flags, `--help`, `--version`).
    pub fn from_args_or_env() -> Options {
        if std::env::args_os().len() > 1 {
            Options::parse()
        } else {
            Options::from_env()
        }
    }

    /// The options from their environment variables alone, as clap would read them.
    pub fn from_env() -> Options {
        let var =
            |name: &str| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
        Options {
            handler: var(HANDLER_ENV),
            mode: var(MODE_ENV),
            init: var(INIT_ENV),
            events: var(EVENTS_ENV),
            on_error: var(ON_ERROR_ENV),
            timeout_margin_ms: var(TIMEOUT_MARGIN_ENV),
            telemetry: var(TELEMETRY_HANDLER_ENV),
            telemetry_mode: var(TELEMETRY_MODE_ENV),
            telemetry_types: var(TELEMETRY_TYPES_ENV),
            telemetry_schema: var(TELEMETRY_SCHEMA_ENV),
            telemetry_flush: var(TELEMETRY_FLUSH_ENV),
            telemetry_max_items: var(TELEMETRY_MAX_ITEMS_ENV),
            telemetry_max_bytes: var(TELEMETRY_MAX_BYTES_ENV),
            telemetry_timeout_ms: var(TELEMETRY_TIMEOUT_MS_ENV),
            request_handler: var(REQUEST_HANDLER_ENV),
            response_handler: var(RESPONSE_HANDLER_ENV),
            on_request_failure: var(ON_REQUEST_FAILURE_ENV),
            proxy: var(PROXY_ENV),
            proxy_port: var(PROXY_PORT_ENV),
            ..Options::default()
        }
    }
}

/// The name the extension registers under: the file name it was started as (`argv[0]`), which
/// for Lambda is its file name in /opt/extensions.
pub fn extension_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|argv0| {
            std::path::Path::new(&argv0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "lambda-shell-extension".into())
}

impl Initialization {
    /// What to register for when the configuration is invalid (the extension still registers,
    /// to report it): Managed Instances refuse an INVOKE registration.
    pub fn fallback_events(self) -> EventSet {
        match self {
            Initialization::ManagedInstances => EventSet::ShutdownOnly,
            Initialization::Standard => EventSet::InvokeAndShutdown,
        }
    }
}

/// How the extension writes its own log lines (`AWS_LAMBDA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `[<name>] LEVEL message`: the default.
    Text,
    /// One JSON object per line, as Lambda's runtimes write with `AWS_LAMBDA_LOG_FORMAT=JSON`.
    Json,
}

/// A level of `AWS_LAMBDA_LOG_LEVEL` (`FATAL` is [`LogLevel::Error`]: `log` has nothing above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// `AWS_LAMBDA_LOG_FORMAT`: JSON (case-insensitive) or text (anything else, or unset).
pub fn log_format() -> LogFormat {
    parse_log_format(std::env::var(LOG_FORMAT_ENV).ok().as_deref())
}

/// `AWS_LAMBDA_LOG_LEVEL`: `None` when unset or blank.
pub fn log_level() -> Result<Option<LogLevel>, ConfigError> {
    parse_log_level(std::env::var(LOG_LEVEL_ENV).ok().as_deref())
}

/// `RUST_LOG`, the env_logger filter, when set and not blank.
pub fn log_filter() -> Option<String> {
    std::env::var(RUST_LOG_ENV)
        .ok()
        .filter(|filter| !filter.trim().is_empty())
}

fn parse_log_format(value: Option<&str>) -> LogFormat {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

fn parse_log_level(value: Option<&str>) -> Result<Option<LogLevel>, ConfigError> {
    let Some(text) = value.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let level = match text.to_ascii_uppercase().as_str() {
        "TRACE" => LogLevel::Trace,
        "DEBUG" => LogLevel::Debug,
        "INFO" => LogLevel::Info,
        "WARN" => LogLevel::Warn,
        "ERROR" | "FATAL" => LogLevel::Error,
        _ => {
            return Err(ConfigError {
                variable: LOG_LEVEL_ENV,
                problem: format!(
                    "unknown level {text:?}; accepted values: TRACE, DEBUG, INFO, WARN, ERROR or \
                     FATAL (using INFO)"
                ),
            })
        }
    };
    Ok(Some(level))
}

/// Which events the extension registers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSet {
    InvokeAndShutdown,
    ShutdownOnly,
}

impl EventSet {
    pub fn registration_request(self) -> RegistrationRequest {
        match self {
            EventSet::InvokeAndShutdown => RegistrationRequest::default(),
            EventSet::ShutdownOnly => RegistrationRequest {
                events: vec![LifecycleEvent::Shutdown],
            },
        }
    }
}

impl fmt::Display for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventSet::InvokeAndShutdown => "INVOKE,SHUTDOWN",
            EventSet::ShutdownOnly => "SHUTDOWN",
        })
    }
}

/// What a failing handler does to the extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Report exit/error and exit non-zero (Lambda then resets the environment).
    Exit,
    /// Log the failure and wait for the next event.
    Continue,
}

/// How a command is run for what it handles (events, or telemetry batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new process for each event, the event on its stdin: the default.
    PerEvent,
    /// One long-lived process, each event a line on its stdin, acknowledged on fd 3.
    Persistent,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::PerEvent => "per-event",
            Mode::Persistent => "persistent",
        })
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The event handler; `None` for a telemetry-only extension.
    pub handler: Option<CommandLine>,
    pub mode: Mode,
    pub init: Option<CommandLine>,
    pub events: EventSet,
    pub on_error: OnError,
    pub timeout_margin: Duration,
    pub telemetry: Option<TelemetryConfig>,
    /// The Runtime API proxy, when it is on.
    pub proxy: Option<ProxyConfig>,
    pub initialization: Initialization,
}

/// The Runtime API proxy and its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub port: u16,
    pub request_handler: Option<CommandLine>,
    pub response_handler: Option<CommandLine>,
    pub on_request_failure: OnRequestFailure,
}

/// What a failing request handler does to the invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRequestFailure {
    /// Logged; the function gets the invocation anyway.
    Log,
    /// The function never sees it: the caller gets an `Extension.RequestRejected` error.
    Reject,
}

/// How Lambda runs this environment, as far as the extension cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initialization {
    /// Lambda Managed Instances: no INVOKE events for extensions, telemetry schema 2025-01-29.
    ManagedInstances,
    /// On-demand, provisioned concurrency or SnapStart.
    Standard,
}

/// The telemetry command and its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub command: CommandLine,
    pub mode: Mode,
    pub types: Vec<LogType>,
    pub schema: SchemaChoice,
    pub flush: Flush,
    pub buffering: TelemetryBuffering,
}

/// Lambda's buffering of telemetry; `None` leaves Lambda's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetryBuffering {
    pub max_items: Option<u32>,
    pub max_bytes: Option<u32>,
    pub timeout_ms: Option<u32>,
}

/// `SHELL_EXT_TELEMETRY_SCHEMA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChoice {
    /// 2025-01-29 on Managed Instances (which require it), 2022-12-13 elsewhere.
    Auto,
    V2022_12_13,
    V2025_01_29,
}

/// `SHELL_EXT_TELEMETRY_FLUSH`: when batches reach the telemetry command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// As they arrive, concurrently with invokes.
    Background,
    /// Each INVOKE's `/event/next` waits until the batch with its `platform.runtimeDone` has
    /// been delivered.
    EndOfInvoke,
}

/// An invalid setting: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Every invalid setting at once: one failed deploy should show every typo, not the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            all => {
                write!(f, "invalid configuration, {} problems:", all.len())?;
                for (number, error) in all.iter().enumerate() {
                    write!(f, " ({}) {error}", number + 1)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Validates every setting and checks that the commands can be started (see
    /// [`CommandLine::check`]); reports every problem found, not only the first.
    pub fn from_options(options: &Options) -> Result<Config, ConfigErrors> {
        let path_var = std::env::var_os("PATH");
        let path_var = path_var.as_deref();
        let check = |variable| {
            move |command: CommandLine| {
                command
                    .check(path_var)
                    .map(|()| command)
                    .map_err(|problem| ConfigError { variable, problem })
            }
        };
        let mut problems = Problems::default();
        let telemetry_line = options.telemetry.as_deref().and_then(CommandLine::parse);
        let has_telemetry = telemetry_line.is_some();
        let request_line = options
            .request_handler
            .as_deref()
            .and_then(CommandLine::parse);
        let response_line = options
            .response_handler
            .as_deref()
            .and_then(CommandLine::parse);
        let has_response_handler = response_line.is_some();
        let proxy_switch = problems.keep(parse_proxy_switch(options.proxy.as_deref()));
        let proxy_on = proxy_switch == Some(true) || request_line.is_some() || has_response_handler;
        let request_handler =
            problems.keep(request_line.map(check(REQUEST_HANDLER_ENV)).transpose());
        let response_handler =
            problems.keep(response_line.map(check(RESPONSE_HANDLER_ENV)).transpose());
        let proxy_port = problems.keep(parse_proxy_port(options.proxy_port.as_deref()));
        let on_request_failure = problems.keep(parse_on_request_failure(
            options.on_request_failure.as_deref(),
        ));
        let handler = parse_handler(options.handler.as_deref(), has_telemetry || proxy_on)
            .and_then(|handler| handler.map(check(HANDLER_ENV)).transpose());
        let handler = problems.keep(handler);
        let telemetry_command = match (options.telemetry.as_deref(), telemetry_line) {
            (Some(_), None) => Err(ConfigError {
                variable: TELEMETRY_HANDLER_ENV,
                problem: format!(
                    "is empty; unset {TELEMETRY_HANDLER_ENV} or set it to the command to run \
                     for each telemetry batch"
                ),
            }),
            (_, line) => line.map(check(TELEMETRY_HANDLER_ENV)).transpose(),
        };
        let telemetry_command = problems.keep(telemetry_command);
        let init = parse_init(options.init.as_deref())
            .and_then(|init| init.map(check(INIT_ENV)).transpose());
        let init = problems.keep(init);
        let mode = problems.keep(parse_mode(options.mode.as_deref(), MODE_ENV));
        let telemetry_mode = problems.keep(parse_mode(
            options.telemetry_mode.as_deref(),
            TELEMETRY_MODE_ENV,
        ));
        let types = problems.keep(parse_telemetry_types(options.telemetry_types.as_deref()));
        let schema = problems.keep(parse_schema(options.telemetry_schema.as_deref()));
        let flush = problems.keep(parse_flush(options.telemetry_flush.as_deref()));
        let buffering = TelemetryBuffering {
            max_items: problems
                .keep(parse_buffering(
                    options.telemetry_max_items.as_deref(),
                    BufferingField::MaxItems,
                    TELEMETRY_MAX_ITEMS_ENV,
                ))
                .flatten(),
            max_bytes: problems
                .keep(parse_buffering(
                    options.telemetry_max_bytes.as_deref(),
                    BufferingField::MaxBytes,
                    TELEMETRY_MAX_BYTES_ENV,
                ))
                .flatten(),
            timeout_ms: problems
                .keep(parse_buffering(
                    options.telemetry_timeout_ms.as_deref(),
                    BufferingField::TimeoutMs,
                    TELEMETRY_TIMEOUT_MS_ENV,
                ))
                .flatten(),
        };
        let telemetry = match (telemetry_command, telemetry_mode, types, schema, flush) {
            (Some(Some(command)), Some(mode), Some(types), Some(schema), Some(flush)) => {
                Some(Some(TelemetryConfig {
                    command,
                    mode,
                    types,
                    schema,
                    flush,
                    buffering,
                }))
            }
            (Some(None), ..) => Some(None),
            _ => None,
        };
        let end_of_invoke = flush == Some(Flush::EndOfInvoke) && has_telemetry;
        let wants_invoke =
            handler.as_ref().is_some_and(Option::is_some) || end_of_invoke || has_response_handler;
        let events = problems.keep(parse_events(options.events.as_deref(), wants_invoke));
        let initialization = initialization();
        let events_set = options
            .events
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty());
        let events = match (initialization, events) {
            (Initialization::ManagedInstances, Some(EventSet::InvokeAndShutdown)) if events_set => {
                problems.0.push(ConfigError {
                    variable: EVENTS_ENV,
                    problem: format!(
                        "names INVOKE, but Lambda Managed Instances deliver no INVOKE events to \
                         extensions (they refuse the registration); set {EVENTS_ENV}=SHUTDOWN \
                         (or unset it), and use {TELEMETRY_HANDLER_ENV} to see every request: \
                         its platform.start and platform.report records carry each requestId"
                    ),
                });
                Some(EventSet::ShutdownOnly)
            }
            (Initialization::ManagedInstances, Some(_)) => {
                if end_of_invoke {
                    problems.0.push(ConfigError {
                        variable: TELEMETRY_FLUSH_ENV,
                        problem: "end-of-invoke needs INVOKE events, which Lambda Managed \
                                  Instances do not deliver to extensions; use background"
                            .into(),
                    });
                }
                Some(EventSet::ShutdownOnly)
            }
            (_, events) => events,
        };
        if has_response_handler && events == Some(EventSet::ShutdownOnly) {
            problems.0.push(ConfigError {
                variable: RESPONSE_HANDLER_ENV,
                problem: match initialization {
                    Initialization::ManagedInstances => "needs INVOKE events (the extension \
                        holds its next event until the response handler is done), which Lambda \
                        Managed Instances do not deliver to extensions; use \
                        SHELL_EXT_REQUEST_HANDLER or the telemetry handler there"
                        .to_string(),
                    Initialization::Standard => format!(
                        "needs INVOKE events (the extension holds its next event until the \
                         response handler is done, before the environment freezes), but \
                         {EVENTS_ENV} is SHUTDOWN; register for INVOKE,SHUTDOWN"
                    ),
                },
            });
        }
        if initialization == Initialization::Standard
            && events == Some(EventSet::ShutdownOnly)
            && end_of_invoke
        {
            problems.0.push(ConfigError {
                variable: TELEMETRY_FLUSH_ENV,
                problem: format!(
                    "end-of-invoke needs INVOKE events, but {EVENTS_ENV} is SHUTDOWN; use \
                     background, or register for INVOKE,SHUTDOWN"
                ),
            });
        }
        let on_error = problems.keep(parse_on_error(options.on_error.as_deref()));
        let timeout_margin =
            problems.keep(parse_timeout_margin(options.timeout_margin_ms.as_deref()));
        let proxy = match (
            proxy_on,
            request_handler,
            response_handler,
            proxy_port,
            on_request_failure,
        ) {
            (false, ..) => Some(None),
            (true, Some(request_handler), Some(response_handler), Some(port), Some(policy)) => {
                Some(Some(ProxyConfig {
                    port,
                    request_handler,
                    response_handler,
                    on_request_failure: policy,
                }))
            }
            _ => None,
        };
        match (
            handler,
            mode,
            init,
            events,
            on_error,
            timeout_margin,
            telemetry,
            proxy,
        ) {
            (
                Some(handler),
                Some(mode),
                Some(init),
                Some(events),
                Some(on_error),
                Some(timeout_margin),
                Some(telemetry),
                Some(proxy),
            ) if problems.0.is_empty() => Ok(Config {
                handler,
                mode,
                init,
                events,
                on_error,
                timeout_margin,
                telemetry,
                proxy,
                initialization,
            }),
            _ => Err(ConfigErrors(problems.0)),
        }
    }
}

/// The problems found so far, in the order of the settings.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value, or `None` with its problem recorded.
    fn keep<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|error| self.0.push(error)).ok()
    }
}

/// The handler; optional when a telemetry command is set (a telemetry-only extension).
fn parse_handler(
    value: Option<&str>,
    has_telemetry: bool,
) -> Result<Option<CommandLine>, ConfigError> {
    match (value.and_then(CommandLine::parse), has_telemetry) {
        (Some(handler), _) => Ok(Some(handler)),
        (None, true) => Ok(None),
        (None, false) => Err(ConfigError {
            variable: HANDLER_ENV,
            problem: format!(
                "not set; set {HANDLER_ENV} (or --handler) to the command to run for every \
                 event, for example {HANDLER_ENV}=/opt/handler.sh (or set \
                 {TELEMETRY_HANDLER_ENV} alone for a telemetry-only extension, or \
                 {REQUEST_HANDLER_ENV} / {RESPONSE_HANDLER_ENV} for the Runtime API proxy)"
            ),
        }),
    }
}

/// Where the environment runs, from `AWS_LAMBDA_INITIALIZATION_TYPE`.
pub fn initialization() -> Initialization {
    match std::env::var_os(INITIALIZATION_TYPE_ENV) {
        Some(kind) if kind == "lambda-managed-instances" => Initialization::ManagedInstances,
        _ => Initialization::Standard,
    }
}

fn parse_telemetry_types(value: Option<&str>) -> Result<Vec<LogType>, ConfigError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(vec![LogType::Platform, LogType::Function]);
    };
    let mut types = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = match name.to_ascii_lowercase().as_str() {
            "platform" => LogType::Platform,
            "function" => LogType::Function,
            "extension" => LogType::Extension,
            _ => {
                return Err(ConfigError {
                    variable: TELEMETRY_TYPES_ENV,
                    problem: format!(
                        "unknown type {name:?} in {value:?}; accepted values: any of \
                         platform,function,extension (the default is platform,function)"
                    ),
                })
            }
        };
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    Ok(types)
}

fn parse_schema(value: Option<&str>) -> Result<SchemaChoice, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(SchemaChoice::Auto),
        Some(v) if v.eq_ignore_ascii_case("auto") => Ok(SchemaChoice::Auto),
        Some("2022-12-13") => Ok(SchemaChoice::V2022_12_13),
        Some("2025-01-29") => Ok(SchemaChoice::V2025_01_29),
        Some(v) => Err(ConfigError {
            variable: TELEMETRY_SCHEMA_ENV,
            problem: format!(
                "unknown schema {v:?}; accepted values: 2022-12-13, 2025-01-29 or auto (the \
                 default: 2025-01-29 on Lambda Managed Instances, 2022-12-13 elsewhere)"
            ),
        }),
    }
}

fn parse_flush(value: Option<&str>) -> Result<Flush, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Flush::Background),
        Some(v) if v.eq_ignore_ascii_case("background") => Ok(Flush::Background),
        Some(v) if v.eq_ignore_ascii_case("end-of-invoke") => Ok(Flush::EndOfInvoke),
        Some(v) => Err(ConfigError {
            variable: TELEMETRY_FLUSH_ENV,
            problem: format!(
                "unknown mode {v:?}; accepted values: background (the default) or end-of-invoke"
            ),
        }),
    }
}

/// A buffering setting, checked against the range Lambda accepts.
fn parse_buffering(
    value: Option<&str>,
    field: BufferingField,
    variable: &'static str,
) -> Result<Option<u32>, ConfigError> {
    let Some(text) = value.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let range = field.range();
    text.parse::<u32>()
        .ok()
        .and_then(|n| field.check(n).ok())
        .map(Some)
        .ok_or_else(|| ConfigError {
            variable,
            problem: format!(
                "{text:?} is not a whole number from {} to {} (Lambda's range; unset, Lambda's \
                 default {} applies)",
                range.start(),
                range.end(),
                field.lambda_default()
            ),
        })
}

fn parse_init(value: Option<&str>) -> Result<Option<CommandLine>, ConfigError> {
    match value {
        None => Ok(None),
        Some(line) => CommandLine::parse(line)
            .map(Some)
            .ok_or_else(|| ConfigError {
                variable: INIT_ENV,
                problem: format!(
                    "is empty; unset {INIT_ENV} or set it to a command to run once at start-up"
                ),
            }),
    }
}

/// The events to register for; unset, INVOKE and SHUTDOWN when something runs per invoke, and
/// SHUTDOWN alone for a telemetry-only extension that delivers in the background (it then costs
/// nothing per invoke).
fn parse_events(value: Option<&str>, wants_invoke: bool) -> Result<EventSet, ConfigError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(if wants_invoke {
            EventSet::InvokeAndShutdown
        } else {
            EventSet::ShutdownOnly
        });
    };
    let invalid = |problem: String| ConfigError {
        variable: EVENTS_ENV,
        problem: format!("{problem}; accepted values: INVOKE,SHUTDOWN (the default) or SHUTDOWN"),
    };
    let (mut invoke, mut shutdown) = (false, false);
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name.eq_ignore_ascii_case("INVOKE") {
            invoke = true;
        } else if name.eq_ignore_ascii_case("SHUTDOWN") {
            shutdown = true;
        } else {
            return Err(invalid(format!("unknown event {name:?} in {value:?}")));
        }
    }
    match (invoke, shutdown) {
        (true, true) => Ok(EventSet::InvokeAndShutdown),
        (false, true) => Ok(EventSet::ShutdownOnly),
        // Without SHUTDOWN Lambda kills the extension at shutdown without warning.
        _ => Err(invalid(format!(
            "{value:?} leaves out SHUTDOWN, which an external extension needs"
        ))),
    }
}

fn parse_mode(value: Option<&str>, variable: &'static str) -> Result<Mode, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Mode::PerEvent),
        Some(mode) if mode.eq_ignore_ascii_case("per-event") => Ok(Mode::PerEvent),
        Some(mode) if mode.eq_ignore_ascii_case("persistent") => Ok(Mode::Persistent),
        Some(mode) => Err(ConfigError {
            variable,
            problem: format!(
                "unknown mode {mode:?}; accepted values: per-event (the default: a process per \
                 event) or persistent (one process, an event per line on stdin, acknowledged on \
                 fd 3)"
            ),
        }),
    }
}

fn parse_proxy_switch(value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("on") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(false),
        Some(v) => Err(ConfigError {
            variable: PROXY_ENV,
            problem: format!("unknown value {v:?}; accepted values: on or off (the default)"),
        }),
    }
}

fn parse_proxy_port(value: Option<&str>) -> Result<u16, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_PROXY_PORT),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(ConfigError {
                variable: PROXY_PORT_ENV,
                problem: format!(
                    "{text:?} is not a port; accepted values: 1-65535 (the default is \
                     {DEFAULT_PROXY_PORT})"
                ),
            }),
        },
    }
}

fn parse_on_request_failure(value: Option<&str>) -> Result<OnRequestFailure, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(OnRequestFailure::Log),
        Some(v) if v.eq_ignore_ascii_case("log") => Ok(OnRequestFailure::Log),
        Some(v) if v.eq_ignore_ascii_case("reject") => Ok(OnRequestFailure::Reject),
        Some(v) => Err(ConfigError {
            variable: ON_REQUEST_FAILURE_ENV,
            problem: format!(
                "unknown policy {v:?}; accepted values: log (the default: the invocation goes \
                 on) or reject (the caller gets an Extension.RequestRejected error)"
            ),
        }),
    }
}

/// `AWS_LAMBDA_RUNTIME_API` without a leading `http://`: the proxy's upstream.
pub fn runtime_api() -> Option<String> {
    let value = std::env::var(RUNTIME_API_ENV).ok()?;
    let value = value.trim();
    Some(value.strip_prefix("http://").unwrap_or(value).to_string())
}

fn parse_on_error(value: Option<&str>) -> Result<OnError, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(OnError::Exit),
        Some(mode) if mode.eq_ignore_ascii_case("exit") => Ok(OnError::Exit),
        Some(mode) if mode.eq_ignore_ascii_case("continue") => Ok(OnError::Continue),
        Some(mode) => Err(ConfigError {
            variable: ON_ERROR_ENV,
            problem: format!(
                "unknown mode {mode:?}; accepted values: exit (the default) or continue"
            ),
        }),
    }
}

fn parse_timeout_margin(value: Option<&str>) -> Result<Duration, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Duration::from_millis(DEFAULT_TIMEOUT_MARGIN_MS)),
        Some(text) => text
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| ConfigError {
                variable: TIMEOUT_MARGIN_ENV,
                problem: format!(
                    "{text:?} is not a whole number of milliseconds; accepted values: an integer \
                 >= 0 (the default is {DEFAULT_TIMEOUT_MARGIN_MS})"
                ),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(handler: Option<&str>) -> Options {
        Options {
            handler: handler.map(String::from),
            ..Options::default()
        }
    }

    #[test]
    fn defaults() {
        let config = Config::from_options(&options(Some("/bin/true"))).unwrap();
        assert_eq!(config.events, EventSet::InvokeAndShutdown);
        assert_eq!(config.on_error, OnError::Exit);
        assert_eq!(config.timeout_margin, Duration::from_millis(100));
        assert_eq!(config.init, None);
        assert_eq!(config.handler.unwrap().line(), "/bin/true");
        assert_eq!(config.telemetry, None);
    }

    #[test]
    fn missing_or_blank_handler_names_the_variable() {
        for handler in [None, Some(""), Some("   ")] {
            let errors = Config::from_options(&options(handler)).unwrap_err();
            assert_eq!(errors.0.len(), 1, "{errors}");
            assert_eq!(errors.0[0].variable, HANDLER_ENV);
            assert!(errors.to_string().contains("SHELL_EXT_HANDLER"), "{errors}");
        }
    }

    #[test]
    fn every_invalid_setting_is_reported_at_once() {
        let options = Options {
            handler: Some("/no/such/handler.sh".into()),
            init: Some("  ".into()),
            events: Some("INVOKE,RESTORE".into()),
            on_error: Some("ignore".into()),
            timeout_margin_ms: Some("1.5".into()),
            ..Options::default()
        };
        let errors = Config::from_options(&options).unwrap_err();
        let variables: Vec<_> = errors.0.iter().map(|error| error.variable).collect();
        assert_eq!(
            variables,
            [
                HANDLER_ENV,
                INIT_ENV,
                EVENTS_ENV,
                ON_ERROR_ENV,
                TIMEOUT_MARGIN_ENV
            ]
        );
        let text = errors.to_string();
        assert!(text.starts_with("invalid configuration, 5 problems: (1) SHELL_EXT_HANDLER: `/no/such/handler.sh` does not exist"), "{text}");
        assert!(
            text.contains(" (5) SHELL_EXT_TIMEOUT_MARGIN_MS: "),
            "{text}"
        );
    }

    #[test]
    fn events_are_case_insensitive_and_need_shutdown() {
        assert_eq!(
            parse_events(Some("invoke, Shutdown"), true).unwrap(),
            EventSet::InvokeAndShutdown
        );
        assert_eq!(
            parse_events(Some("SHUTDOWN,INVOKE"), true).unwrap(),
            EventSet::InvokeAndShutdown
        );
        assert_eq!(
            parse_events(Some("shutdown"), true).unwrap(),
            EventSet::ShutdownOnly
        );
        let error = parse_events(Some("INVOKE"), true).unwrap_err();
        assert!(error.problem.contains("SHUTDOWN"), "{error}");
        let error = parse_events(Some("INVOKE,RESTORE"), true).unwrap_err();
        assert_eq!(error.variable, EVENTS_ENV);
        assert!(error.problem.contains("\"RESTORE\""), "{error}");
        assert!(error.problem.contains("INVOKE,SHUTDOWN"), "{error}");
    }

    #[test]
    fn unset_events_follow_what_runs_per_invoke() {
        assert_eq!(
            parse_events(None, true).unwrap(),
            EventSet::InvokeAndShutdown
        );
        assert_eq!(parse_events(None, false).unwrap(), EventSet::ShutdownOnly);
        assert_eq!(
            parse_events(Some("INVOKE,SHUTDOWN"), false).unwrap(),
            EventSet::InvokeAndShutdown
        );
    }

    #[test]
    fn telemetry_settings() {
        let options = Options {
            telemetry: Some("cat".into()),
            telemetry_types: Some("Extension,platform,extension".into()),
            telemetry_schema: Some("2025-01-29".into()),
            telemetry_flush: Some("END-OF-INVOKE".into()),
            telemetry_timeout_ms: Some("25".into()),
            ..Options::default()
        };
        let config = Config::from_options(&options).unwrap();
        assert_eq!(config.handler, None);
        assert_eq!(
            config.events,
            EventSet::InvokeAndShutdown,
            "end-of-invoke needs INVOKE"
        );
        let telemetry = config.telemetry.unwrap();
        assert_eq!(telemetry.types, [LogType::Extension, LogType::Platform]);
        assert_eq!(telemetry.schema, SchemaChoice::V2025_01_29);
        assert_eq!(telemetry.flush, Flush::EndOfInvoke);
        assert_eq!(telemetry.buffering.timeout_ms, Some(25));
        assert_eq!(telemetry.buffering.max_items, None);
        let shutdown_only = Options {
            events: Some("SHUTDOWN".into()),
            ..options
        };
        let errors = Config::from_options(&shutdown_only).unwrap_err();
        assert_eq!(errors.0[0].variable, TELEMETRY_FLUSH_ENV, "{errors}");
        for (value, ok) in [
            ("999", false),
            ("1000", true),
            ("10000", true),
            ("10001", false),
            ("x", false),
        ] {
            let parsed = parse_buffering(
                Some(value),
                BufferingField::MaxItems,
                TELEMETRY_MAX_ITEMS_ENV,
            );
            assert_eq!(parsed.is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn on_error_modes() {
        assert_eq!(parse_on_error(Some("CONTINUE")).unwrap(), OnError::Continue);
        assert_eq!(parse_on_error(Some("exit")).unwrap(), OnError::Exit);
        let error = parse_on_error(Some("ignore")).unwrap_err();
        assert_eq!(error.variable, ON_ERROR_ENV);
        assert!(error.problem.contains("exit") && error.problem.contains("continue"));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode(None, MODE_ENV).unwrap(), Mode::PerEvent);
        assert_eq!(parse_mode(Some(" "), MODE_ENV).unwrap(), Mode::PerEvent);
        assert_eq!(
            parse_mode(Some("Persistent"), MODE_ENV).unwrap(),
            Mode::Persistent
        );
        assert_eq!(
            parse_mode(Some("per-event"), MODE_ENV).unwrap(),
            Mode::PerEvent
        );
        let error = parse_mode(Some("daemon"), TELEMETRY_MODE_ENV).unwrap_err();
        assert_eq!(error.variable, TELEMETRY_MODE_ENV);
        assert!(error.problem.contains("per-event") && error.problem.contains("persistent"));
    }

    #[test]
    fn timeout_margin_must_be_a_whole_number() {
        assert_eq!(
            parse_timeout_margin(Some("250")).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_timeout_margin(Some("0")).unwrap(), Duration::ZERO);
        for bad in ["-1", "1.5", "abc", "100ms"] {
            let error = parse_timeout_margin(Some(bad)).unwrap_err();
            assert_eq!(error.variable, TIMEOUT_MARGIN_ENV);
            assert!(error.problem.contains(bad), "{error}");
        }
    }

    #[test]
    fn log_format_and_level() {
        assert_eq!(parse_log_format(Some("json")), LogFormat::Json);
        assert_eq!(parse_log_format(Some(" JSON ")), LogFormat::Json);
        assert_eq!(parse_log_format(Some("Text")), LogFormat::Text);
        assert_eq!(parse_log_format(None), LogFormat::Text);
        assert_eq!(parse_log_level(None).unwrap(), None);
        assert_eq!(parse_log_level(Some(" ")).unwrap(), None);
        assert_eq!(
            parse_log_level(Some("debug")).unwrap(),
            Some(LogLevel::Debug)
        );
        assert_eq!(
            parse_log_level(Some("FATAL")).unwrap(),
            Some(LogLevel::Error)
        );
        let error = parse_log_level(Some("verbose")).unwrap_err();
        assert_eq!(error.variable, LOG_LEVEL_ENV);
        assert!(error.problem.contains("\"verbose\"") && error.problem.contains("FATAL"));
    }

    #[test]
    fn registration_events_follow_the_event_set() {
        assert_eq!(
            EventSet::ShutdownOnly.registration_request().events,
            vec![LifecycleEvent::Shutdown]
        );
        assert_eq!(
            EventSet::InvokeAndShutdown.registration_request().events,
            vec![LifecycleEvent::Invoke, LifecycleEvent::Shutdown]
        );
    }
}
