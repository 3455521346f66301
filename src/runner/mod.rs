//! The event loop: register, run the init command, then run the handler for every event until
//! SHUTDOWN, reporting failures to Lambda the way the Extensions API expects.
//!
//! [`offline`] runs the same configuration without Lambda (`--check`, `--once`).

pub mod offline;
mod summary;
mod telemetry;

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::api::{Event, NextEventResponse};
use crate::client::{lambda_agent, ClientError, InvocationClient, RegistrationClient};
use crate::command::{
    CommandFailure, CommandLine, EventHandler, Executor, Input, Leftovers, PerEvent, Persistent,
    MANAGED_ENV,
};
use crate::config::{Config, Initialization, Mode, OnError, Options, ON_ERROR_ENV};
use crate::logging::one_line;
use crate::proxy::Proxy;
use summary::{Millis, Summary};
use telemetry::{SetupFailed, Telemetry};

/// The error types this extension reports in `Lambda-Extension-Function-Error-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The configuration is invalid (init/error).
    ConfigInvalid,
    /// The init command failed or could not be started (init/error).
    InitFailed,
    /// The handler failed or could not be started (exit/error).
    HandlerFailed,
    /// The handler was still running at the event's deadline (exit/error).
    HandlerTimeout,
    /// The Extensions API answered with an error or an unreadable event (exit/error).
    ApiError,
    /// The Telemetry API refused the subscription, or no listener could be started
    /// (init/error).
    TelemetrySubscribeFailed,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::ConfigInvalid => "Extension.ConfigInvalid",
            ErrorType::InitFailed => "Extension.InitFailed",
            ErrorType::HandlerFailed => "Extension.HandlerFailed",
            ErrorType::HandlerTimeout => "Extension.HandlerTimeout",
            ErrorType::ApiError => "Extension.ApiError",
            ErrorType::TelemetrySubscribeFailed => "Extension.TelemetrySubscribeFailed",
        }
    }

    fn of_handler(failure: &CommandFailure) -> ErrorType {
        match failure {
            CommandFailure::TimedOut { .. } => ErrorType::HandlerTimeout,
            _ => ErrorType::HandlerFailed,
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SHUTDOWN handled.
    Success,
    /// Something failed; it has been logged and, where the API allows, reported.
    Failure,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
        }
    }
}

/// Pauses between attempts when registration gets no response: a couple of quick retries.
const REGISTER_RETRY_DELAYS: &[Duration] =
    &[Duration::from_millis(100), Duration::from_millis(300)];
/// Pauses between attempts when event/next gets no response: a few per second at most, and
/// giving up within about two seconds.
const NEXT_RETRY_DELAYS: &[Duration] = &[
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// Runs the extension until SHUTDOWN or a failure.
pub fn run(options: &Options) -> Exit {
    let config = Config::from_options(options);
    // An invalid configuration still registers, so that Lambda attributes the failure to this
    // extension (init/error) instead of timing out its Init.
    let initialization = crate::config::initialization();
    let events = config
        .as_ref()
        .map_or(initialization.fallback_events(), |config| config.events);
    // The proxy's port is bound before registering: the runtime starts, and calls it, as soon
    // as every extension has registered.
    let proxy_port = match &config {
        Ok(Config {
            proxy: Some(proxy), ..
        }) => Some(crate::proxy::bind(proxy.port)),
        _ => None,
    };
    let registration_client = RegistrationClient::new(lambda_agent());
    let request = events.registration_request();
    let registered = retry_without_response(REGISTER_RETRY_DELAYS, || {
        registration_client.clone().register(&request)
    });
    let (client, registration) = match registered {
        Ok(registered) => registered,
        Err(ClientError::MissingRuntimeApi) => {
            // Started by hand, not by Lambda: say what to do instead.
            error!("{}", ClientError::MissingRuntimeApi);
            error!("{}", offline::NOT_ON_LAMBDA);
            if let Err(errors) = config {
                error!("{}: {errors}", ErrorType::ConfigInvalid);
            }
            return Exit::Failure;
        }
        Err(error) => {
            error!("cannot register with the Lambda Extensions API: {error}");
            return Exit::Failure;
        }
    };
    // Registering comes first (Lambda starts the runtime only once every extension has); no
    // command can run before this point, so a signal needs no handling until now.
    if let Err(error) = crate::signals::install() {
        warn!("cannot handle SIGTERM/SIGINT: {error}");
    }
    info!(
        "registered as {} for {} of function {} ({})",
        client.extension_name(),
        events,
        registration.function_name,
        registration.function_version
    );
    if initialization == Initialization::ManagedInstances {
        info!(
            "Lambda Managed Instances deliver no INVOKE events to extensions: registered for \
             SHUTDOWN only (the handler runs at SHUTDOWN; telemetry carries every request)"
        );
    }
    let config = match config {
        Ok(config) => config,
        Err(errors) => {
            return report(
                &client,
                Phase::Init,
                ErrorType::ConfigInvalid,
                &errors.to_string(),
            );
        }
    };
    // Subscribed during Init, before the first /event/next, as the Telemetry API requires.
    let telemetry = match &config.telemetry {
        None => None,
        Some(settings) => match Telemetry::start(&client, settings, config.initialization) {
            Ok(telemetry) => Some(telemetry),
            Err(SetupFailed(message)) => {
                let error = ErrorType::TelemetrySubscribeFailed;
                return report(&client, Phase::Init, error, &message);
            }
        },
    };
    let proxy = match (proxy_port, &config.proxy) {
        (Some(Ok(bound)), Some(settings)) => {
            let upstream = crate::config::runtime_api().unwrap_or_default();
            let name = client.extension_name().to_string();
            match Proxy::start(bound, &upstream, settings, &name, config.timeout_margin) {
                Ok(proxy) => Some(proxy),
                Err(error) => {
                    let message = format!("cannot start the Runtime API proxy: {error}");
                    return report(&client, Phase::Init, ErrorType::ConfigInvalid, &message);
                }
            }
        }
        (Some(Err(message)), _) => {
            let message = format!("invalid configuration: {message}");
            return report(&client, Phase::Init, ErrorType::ConfigInvalid, &message);
        }
        _ => None,
    };
    let mut executor = Executor::new(
        &MANAGED_ENV,
        &[("LAMBDA_EXTENSION_NAME", client.extension_name())],
    );
    if let Some(init) = &config.init {
        // What the init command starts in the background may keep running (a sidecar).
        let outcome = executor.run(init, Input::Nothing, &[], None, Leftovers::KeepRunning);
        match outcome {
            Ok(()) => {}
            Err(CommandFailure::Stopped { .. }) => crate::signals::wait_for_exit(),
            Err(failure) => {
                let message = format!("init command {failure}");
                return report(&client, Phase::Init, ErrorType::InitFailed, &message);
            }
        }
    }
    let margin = config.timeout_margin;
    let handler = match config.handler {
        None => None,
        Some(handler) => {
            let name = client.extension_name().to_string();
            match event_handler(config.mode, handler, executor, &name, margin) {
                Ok(handler) => Some(handler),
                Err(CommandFailure::Stopped { .. }) => crate::signals::wait_for_exit(),
                Err(failure) => {
                    let message = format!("persistent handler {failure}");
                    return report(&client, Phase::Init, ErrorType::HandlerFailed, &message);
                }
            }
        }
    };
    Extension {
        client,
        handler,
        telemetry,
        proxy,
        margin,
        on_error: config.on_error,
        summary: Summary::default(),
    }
    .run()
}

/// The handler in `mode`; a persistent one is started now (during Init: it is then part of a
/// SnapStart snapshot, and its start-up is not paid by the first invoke).
pub(crate) fn event_handler(
    mode: Mode,
    handler: CommandLine,
    executor: Executor,
    extension_name: &str,
    margin: Duration,
) -> Result<Box<dyn EventHandler>, CommandFailure> {
    match mode {
        Mode::PerEvent => Ok(Box::new(PerEvent::new(executor, handler, margin))),
        Mode::Persistent => {
            let line = handler.line().to_string();
            let mut persistent = Persistent::new(handler, extension_name, margin);
            persistent.start()?;
            info!("persistent handler `{line}` started; events go to it one line each");
            Ok(Box::new(persistent))
        }
    }
}

/// Where in the lifecycle a failure happened: it decides between init/error and exit/error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Events,
}

/// The extension between its first and its last event.
struct Extension {
    client: InvocationClient,
    /// `None` for a telemetry-only extension.
    handler: Option<Box<dyn EventHandler>>,
    telemetry: Option<Telemetry>,
    proxy: Option<Proxy>,
    margin: Duration,
    on_error: OnError,
    summary: Summary,
}

impl Extension {
    fn run(mut self) -> Exit {
        let exit = self.event_loop();
        match &mut self.handler {
            Some(handler) => {
                handler.end();
                info!("summary: {}; exiting", self.summary)
            }
            // Telemetry only: its own counts line said what was done.
            None => info!("exiting"),
        }
        exit
    }

    fn event_loop(&mut self) -> Exit {
        loop {
            if crate::command::stop_requested().is_some() {
                crate::signals::wait_for_exit();
            }
            let next = match retry_without_response(NEXT_RETRY_DELAYS, || self.client.next_event())
            {
                Ok(next) => next,
                Err(error) => return self.api_failure(error),
            };
            let is_shutdown = matches!(next.event, Event::Shutdown(_));
            let outcome = match &mut self.handler {
                Some(handler) => handle(handler.as_mut(), &mut self.summary, &next),
                None => Ok(()),
            };
            if let Some(telemetry) = &self.telemetry {
                let until = telemetry::before_deadline(next.event.deadline_ms(), self.margin);
                match &next.event {
                    Event::Invoke(invoke) => telemetry.after_invoke(&invoke.request_id, until),
                    Event::Shutdown(_) => telemetry.finish(until),
                }
            }
            if let (Some(proxy), Event::Invoke(invoke)) = (&self.proxy, &next.event) {
                let until = telemetry::before_deadline(next.event.deadline_ms(), self.margin);
                proxy.after_invoke(&invoke.request_id, until);
            }
            match (outcome, is_shutdown) {
                (Ok(()), true) => return Exit::Success,
                (Ok(()), false) => {}
                // The signal thread is ending the process: nothing to report, nothing more to do.
                (Err(CommandFailure::Stopped { .. }), _) => crate::signals::wait_for_exit(),
                // Every later event would fail the same way: report it whatever the policy.
                (Err(failure @ CommandFailure::CrashLoop { .. }), _) => {
                    return self.handler_failure(&failure)
                }
                // A failure at SHUTDOWN is reported whatever the policy: it is the last word.
                (Err(failure), true) => return self.handler_failure(&failure),
                (Err(failure), false) => match self.on_error {
                    OnError::Exit => return self.handler_failure(&failure),
                    OnError::Continue => {
                        warn!(
                            "{}: {} (continuing: {ON_ERROR_ENV}=continue)",
                            ErrorType::of_handler(&failure),
                            one_line(&format!("handler {failure}"))
                        );
                    }
                },
            }
        }
    }

    fn handler_failure(&self, failure: &CommandFailure) -> Exit {
        let message = format!("handler {failure}");
        report(
            &self.client,
            Phase::Events,
            ErrorType::of_handler(failure),
            &message,
        )
    }

    fn api_failure(&self, error: ClientError) -> Exit {
        if error.status() == Some(403) {
            // Forbidden: this extension's session is over; any further call would be refused too.
            error!("{error}");
            return Exit::Failure;
        }
        report(
            &self.client,
            Phase::Events,
            ErrorType::ApiError,
            &error.to_string(),
        )
    }
}

/// Runs the handler for one event, logs one line about it and counts it.
fn handle(
    handler: &mut dyn EventHandler,
    summary: &mut Summary,
    next: &NextEventResponse,
) -> Result<(), CommandFailure> {
    if let Event::Shutdown(shutdown) = &next.event {
        info!("SHUTDOWN ({})", shutdown.shutdown_reason);
    }
    if let Event::Invoke(invoke) = &next.event {
        crate::logging::set_request_id(Some(&invoke.request_id));
    }
    let started = Instant::now();
    let outcome = handler.handle(&next.event, &next.body);
    let elapsed = started.elapsed();
    if !matches!(outcome, Err(CommandFailure::Stopped { .. })) {
        let event = next.event.lifecycle_event();
        let id = match &next.event {
            Event::Invoke(invoke) => invoke.request_id.as_str(),
            Event::Shutdown(shutdown) => shutdown.shutdown_reason.as_str(),
        };
        info!(
            "{} {id} {} in {}",
            event.as_str(),
            Verdict(&outcome),
            Millis(elapsed)
        );
        summary.record(event, elapsed, &outcome);
    }
    crate::logging::set_request_id(None);
    outcome
}

/// How a handler run ended, in a few words: `ok`, `failed (status 3)`, `timed out`...
struct Verdict<'a>(&'a Result<(), CommandFailure>);

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("ok"),
            Err(CommandFailure::Exited { code, .. }) => write!(f, "failed (status {code})"),
            Err(CommandFailure::Killed { signal, .. }) => write!(f, "failed (signal {signal})"),
            Err(CommandFailure::NotStarted { .. }) => f.write_str("failed (not started)"),
            Err(CommandFailure::TimedOut { .. }) => f.write_str("timed out"),
            Err(CommandFailure::Stopped { .. }) => f.write_str("stopped"),
            Err(CommandFailure::Reported { .. }) => f.write_str("failed (answered error)"),
            Err(CommandFailure::BadAck { .. }) => f.write_str("failed (bad answer on fd 3)"),
            Err(CommandFailure::CrashLoop { .. }) => f.write_str("failed (crash loop)"),
        }
    }
}

/// Logs a failure, reports it to Lambda (init/error or exit/error), and ends the process.
fn report(client: &InvocationClient, phase: Phase, error_type: ErrorType, message: &str) -> Exit {
    error!("{error_type}: {}", one_line(message));
    let reported = match phase {
        Phase::Init => client.init_error(error_type.as_str(), message),
        Phase::Events => client.exit_error(error_type.as_str(), message),
    };
    if let Err(report_error) = reported {
        error!("could not report {error_type} to Lambda: {report_error}");
    }
    Exit::Failure
}

/// Calls `call` again after each delay while it gets no HTTP response at all.
fn retry_without_response<T>(
    delays: &[Duration],
    mut call: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let mut delays = delays.iter();
    loop {
        match call() {
            Err(error) if error.is_transport() => match delays.next() {
                Some(delay) => {
                    warn!("{error}; retrying in {} ms", delay.as_millis());
                    thread::sleep(*delay);
                }
                None => return Err(error),
            },
            outcome => return outcome,
        }
    }
}
