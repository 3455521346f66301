//! Configuration: `Config::from_options` with arbitrary strings in every option never panics;
//! an invalid configuration is a `ConfigErrors` whose every entry names one of the documented
//! variables (and its message starts with it); a valid one registers for the events named.
//!
//! The input is split on NUL bytes into one field per option, in the order of `Options`; an
//! empty field is an unset variable, otherwise the field minus its first byte is the value (so
//! empty values are reachable too).
#![no_main]

use lambda_shell_extension::config::{self, Config, EventSet, Options};
use libfuzzer_sys::fuzz_target;

const VARIABLES: &[&str] = &[
    config::HANDLER_ENV,
    config::INIT_ENV,
    config::EVENTS_ENV,
    config::ON_ERROR_ENV,
    config::TIMEOUT_MARGIN_ENV,
    config::MODE_ENV,
    config::TELEMETRY_HANDLER_ENV,
    config::TELEMETRY_MODE_ENV,
    config::TELEMETRY_TYPES_ENV,
    config::TELEMETRY_SCHEMA_ENV,
    config::TELEMETRY_FLUSH_ENV,
    config::TELEMETRY_MAX_ITEMS_ENV,
    config::TELEMETRY_MAX_BYTES_ENV,
    config::TELEMETRY_TIMEOUT_MS_ENV,
    config::REQUEST_HANDLER_ENV,
    config::RESPONSE_HANDLER_ENV,
    config::ON_REQUEST_FAILURE_ENV,
    config::PROXY_ENV,
    config::PROXY_PORT_ENV,
];

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0).map(|field| match field {
        [] => None,
        [_, value @ ..] => Some(String::from_utf8_lossy(value).into_owned()),
    });
    let mut next = || fields.next().flatten();
    let options = Options {
        handler: next(),
        mode: next(),
        init: next(),
        events: next(),
        on_error: next(),
        timeout_margin_ms: next(),
        telemetry: next(),
        telemetry_mode: next(),
        telemetry_types: next(),
        telemetry_schema: next(),
        telemetry_flush: next(),
        telemetry_max_items: next(),
        telemetry_max_bytes: next(),
        telemetry_timeout_ms: next(),
        request_handler: next(),
        response_handler: next(),
        on_request_failure: next(),
        proxy: next(),
        proxy_port: next(),
        ..Options::default()
    };
    match Config::from_options(&options) {
        Err(errors) => {
            assert!(
                !errors.0.is_empty(),
                "an error without a problem: {options:?}"
            );
            let shown = errors.to_string();
            for error in &errors.0 {
                assert!(VARIABLES.contains(&error.variable), "{error:?}");
                assert!(error.to_string().starts_with(error.variable), "{error}");
                assert!(!error.problem.is_empty(), "{error:?}");
                assert!(shown.contains(&error.to_string()));
            }
        }
        Ok(config) => {
            if let Some(events) = options.events.as_deref().filter(|v| !v.trim().is_empty()) {
                let names: Vec<String> = events
                    .split(',')
                    .map(|name| name.trim().to_ascii_uppercase())
                    .filter(|name| !name.is_empty())
                    .collect();
                let invoke = names.iter().any(|name| name == "INVOKE");
                assert!(
                    names.iter().all(|n| n == "INVOKE" || n == "SHUTDOWN"),
                    "{events:?}"
                );
                assert!(names.iter().any(|name| name == "SHUTDOWN"), "{events:?}");
                let expected = if invoke {
                    EventSet::InvokeAndShutdown
                } else {
                    EventSet::ShutdownOnly
                };
                assert_eq!(config.events, expected, "{events:?}");
            }
        }
    }
});
