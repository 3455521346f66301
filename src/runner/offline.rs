//! The configuration without Lambda: `--check` validates it, `--once FILE` runs the handler once
//! with a sample event, exactly as at Lambda (environment, deadline, process group) but with no
//! API to report to.

use std::io::Read;
use std::time::Duration;

use log::{error, info, warn};

use super::summary::Summary;
use super::{event_handler, handle, one_line, ErrorType, Exit};
use crate::api::{Event, NextEventResponse};
use crate::command::{now_epoch_ms, CommandFailure, CommandLine, Executor, MANAGED_ENV};
use crate::config::{extension_name, Config, Options, HANDLER_ENV};

/// What to say to someone who starts the binary by hand, without Lambda.
pub const NOT_ON_LAMBDA: &str = "this binary is a Lambda extension: Lambda starts it from \
     /opt/extensions with AWS_LAMBDA_RUNTIME_API set. To try it here: `make demo` runs it \
     against a local Lambda emulator, `lambda-shell-extension --check` validates the \
     configuration, `lambda-shell-extension --once scripts/events/invoke.json` runs the handler \
     once with a sample event (see --help)";

/// How long a sample event whose `deadlineMs` is in the past gets, as Lambda would give it.
const SAMPLE_INVOKE_TIME: Duration = Duration::from_secs(3);
const SAMPLE_SHUTDOWN_TIME: Duration = Duration::from_secs(2);

/// `--check`: validates the configuration and the commands, and prints what would be registered.
pub fn check(options: &Options) -> Exit {
    let Some(config) = valid_config(options) else {
        return Exit::Failure;
    };
    println!("configuration OK");
    println!("  registers as {} for {}", extension_name(), config.events);
    match &config.handler {
        Some(handler) => {
            println!("  handler: {}", describe(handler));
            println!("  mode: {}", config.mode);
        }
        None if config.proxy.is_some() => println!("  handler: none (proxy only)"),
        None => println!("  handler: none (telemetry only)"),
    }
    match &config.init {
        Some(init) => println!("  init: {}", describe(init)),
        None => println!("  init: none"),
    }
    if let Some(telemetry) = &config.telemetry {
        let types: Vec<_> = telemetry.types.iter().map(|kind| kind.as_str()).collect();
        println!("  telemetry: {}", describe(&telemetry.command));
        println!("  telemetry mode: {}", telemetry.mode);
        println!(
            "  telemetry types: {}; schema: {:?}; flush: {:?}",
            types.join(","),
            telemetry.schema,
            telemetry.flush
        );
    }
    if let Some(proxy) = &config.proxy {
        let describe_or_none =
            |command: &Option<CommandLine>| command.as_ref().map_or("none".to_string(), describe);
        println!("  Runtime API proxy: 127.0.0.1:{}", proxy.port);
        println!(
            "  request handler: {}",
            describe_or_none(&proxy.request_handler)
        );
        println!(
            "  response handler: {}",
            describe_or_none(&proxy.response_handler)
        );
        println!("  on request failure: {:?}", proxy.on_request_failure);
    }
    println!(
        "  on error: {:?}; timeout margin: {} ms",
        config.on_error,
        config.timeout_margin.as_millis()
    );
    Exit::Success
}

/// `--once FILE`: runs the handler once with the event in FILE (`-`: stdin).
pub fn once(options: &Options, file: &str) -> Exit {
    let Some(config) = valid_config(options) else {
        return Exit::Failure;
    };
    let Some(handler) = config.handler else {
        error!(
            "--once runs the event handler, and {HANDLER_ENV} is not set (this configuration \
             is telemetry only)"
        );
        return Exit::Failure;
    };
    let body = match read_event(file) {
        Ok(body) => body,
        Err(problem) => {
            error!("--once {file}: {problem}");
            return Exit::Failure;
        }
    };
    let next = match NextEventResponse::from_body(body) {
        Ok(next) => with_live_deadline(next),
        Err(problem) => {
            error!(
                "--once {file}: not a Lambda INVOKE or SHUTDOWN event ({problem}); samples are \
                 in scripts/events/"
            );
            return Exit::Failure;
        }
    };
    if config.init.is_some() {
        info!("--once runs the handler only, not the init command");
    }
    if let Err(error) = crate::signals::install() {
        warn!("cannot handle SIGTERM/SIGINT: {error}");
    }
    let name = extension_name();
    let executor = Executor::new(&MANAGED_ENV, &[("LAMBDA_EXTENSION_NAME", &name)]);
    let margin = config.timeout_margin;
    let outcome =
        event_handler(config.mode, handler, executor, &name, margin).and_then(|mut handler| {
            let outcome = handle(handler.as_mut(), &mut Summary::default(), &next);
            handler.end();
            outcome
        });
    match outcome {
        Ok(()) => Exit::Success,
        Err(CommandFailure::Stopped { .. }) => crate::signals::wait_for_exit(),
        Err(failure) => {
            let message = format!("handler {failure}");
            error!(
                "{}: {}",
                ErrorType::of_handler(&failure),
                one_line(&message)
            );
            Exit::Failure
        }
    }
}

/// The configuration, or `None` with its problems logged as at Init.
fn valid_config(options: &Options) -> Option<Config> {
    Config::from_options(options)
        .map_err(|errors| {
            error!(
                "{}: {}",
                ErrorType::ConfigInvalid,
                one_line(&errors.to_string())
            )
        })
        .ok()
}

fn describe(command: &CommandLine) -> String {
    match command {
        CommandLine::Direct { line, .. } => format!("{line} (run directly; checked)"),
        CommandLine::Shell { line } => format!(
            "{line} (run as /bin/sh -c; a shell command line cannot be checked before it runs)"
        ),
    }
}

fn read_event(file: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::read(file).map(|bytes| body = bytes)
    };
    read.map_err(|error| format!("cannot read it: {error}"))?;
    Ok(body)
}

/// A sample event kept in a file has a `deadlineMs` long past, which would stop the handler
/// at once: such an event gets the time Lambda would give it from now, and says so. The number
/// is replaced in place, so every other byte reaches the handler as written.
fn with_live_deadline(next: NextEventResponse) -> NextEventResponse {
    let deadline_ms = next.event.deadline_ms();
    let now = now_epoch_ms();
    if deadline_ms == 0 || deadline_ms > now {
        return next;
    }
    let time = match next.event {
        Event::Invoke(_) => SAMPLE_INVOKE_TIME,
        Event::Shutdown(_) => SAMPLE_SHUTDOWN_TIME,
    };
    let live = now + time.as_millis() as u64;
    let Some(body) = replace_deadline(&next.body, deadline_ms, live) else {
        return next;
    };
    match NextEventResponse::from_body(body) {
        Ok(live_next) => {
            info!(
                "the event's deadlineMs {deadline_ms} is in the past: the handler gets \
                 deadlineMs {live} (now + {} ms), as Lambda would give it",
                time.as_millis()
            );
            live_next
        }
        Err(_) => next,
    }
}

/// `body` with the number of its `"deadlineMs"` member replaced, if it is found as written.
fn replace_deadline(body: &[u8], old: u64, new: u64) -> Option<Vec<u8>> {
    let key = b"\"deadlineMs\"";
    let start = body.windows(key.len()).position(|window| window == key)? + key.len();
    let skip_space = |mut at: usize| {
        while body.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let colon = skip_space(start);
    (body.get(colon) == Some(&b':')).then_some(())?;
    let digits = skip_space(colon + 1);
    let end = digits
        + body[digits..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
    (body[digits..end] == *old.to_string().as_bytes()).then_some(())?;
    let mut replaced = body[..digits].to_vec();
    replaced.extend_from_slice(new.to_string().as_bytes());
    replaced.extend_from_slice(&body[end..]);
    Some(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_replaced_in_place() {
        let body = br#"{ "eventType": "SHUTDOWN", "deadlineMs" :  1700000000000 , "x": 1}"#;
        let replaced = replace_deadline(body, 1_700_000_000_000, 42).unwrap();
        assert_eq!(
            replaced,
            br#"{ "eventType": "SHUTDOWN", "deadlineMs" :  42 , "x": 1}"#.to_vec()
        );
        assert_eq!(replace_deadline(br#"{"deadlineMs":5}"#, 6, 1), None);
    }
}
