//! The extension's own log lines: `AWS_LAMBDA_LOG_FORMAT` (text or JSON) and
//! `AWS_LAMBDA_LOG_LEVEL` (with and without `RUST_LOG`), through the real binary.

mod common;

use common::*;
use serde_json::Value;

/// Runs one INVOKE `request_id` and a SHUTDOWN with `handler`; returns the finished extension.
fn run(
    sb: &Sandbox,
    api: &FakeApi,
    handler: &str,
    request_id: &str,
    configure: impl FnOnce(Launcher<'_>) -> Launcher<'_>,
    code: i32,
) -> Ext {
    api.push_invoke(request_id, deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = configure(sb.ext(api).handler(handler)).spawn();
    ext.expect_exit(code, secs(10));
    ext
}

/// The stderr lines that are not `except` (a handler's own lines), each parsed as JSON.
fn json_lines(ext: &Ext, except: &[&str]) -> Vec<Value> {
    let stderr = ext.stderr_str();
    stderr
        .lines()
        .filter(|line| !except.contains(line))
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stderr}"))
        })
        .collect()
}

/// The one line whose message starts with `prefix`.
fn line_starting<'a>(lines: &'a [Value], prefix: &str) -> &'a Value {
    let found: Vec<_> = lines
        .iter()
        .filter(|line| line["message"].as_str().unwrap_or("").starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "lines starting {prefix:?}: {lines:#?}");
    found[0]
}

/// RFC 3339 UTC with milliseconds: `2026-12-01T23:59:59.123Z`.
fn assert_timestamp(line: &Value) {
    let timestamp = line["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("{line}"));
    let shape: String = timestamp
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-ddTdd:dd:dd.dddZ", "{line}");
    let year: u32 = timestamp[..4].parse().unwrap();
    assert!((2024..2200).contains(&year), "{line}");
}

/// JSON: every line of the extension's own is an object with timestamp, level, message and
/// extension; the per-event INVOKE line carries the requestId, the others do not; the handler's
/// stdout and stderr lines pass through as they are.
#[test]
fn json_lines_carry_the_fields() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let ext = run(
        &sb,
        &api,
        "echo 'handler \"out\"'; echo 'handler err' >&2",
        "req-json-1",
        |launcher| {
            launcher
                .name("json-ext")
                .env("AWS_LAMBDA_LOG_FORMAT", "json")
        },
        0,
    );
    let stdout = ext.stdout_str();
    assert_eq!(
        stdout, "handler \"out\"\nhandler \"out\"\n",
        "stdout unchanged"
    );
    let stderr = ext.stderr_str();
    assert_eq!(
        stderr.lines().filter(|line| *line == "handler err").count(),
        2,
        "the handler's stderr lines, unchanged:\n{stderr}"
    );
    let lines = json_lines(&ext, &["handler err"]);
    for line in &lines {
        assert_timestamp(line);
        assert_eq!(line["extension"], "json-ext", "{line}");
        assert!(line["message"].is_string(), "{line}");
        assert!(
            ["INFO", "WARN", "ERROR", "DEBUG", "TRACE"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
    }
    let registered = line_starting(&lines, "registered as json-ext for INVOKE,SHUTDOWN");
    assert_eq!(registered["level"], "INFO");
    assert!(registered.get("requestId").is_none(), "{registered}");
    let invoke = line_starting(&lines, "INVOKE req-json-1 ok in ");
    assert_eq!(invoke["level"], "INFO");
    assert_eq!(invoke["requestId"], "req-json-1", "{invoke}");
    let shutdown = line_starting(&lines, "SHUTDOWN spindown ok in ");
    assert!(shutdown.get("requestId").is_none(), "{shutdown}");
    let summary = line_starting(&lines, "summary: ");
    assert!(summary.get("requestId").is_none(), "{summary}");
}

/// JSON: a failing handler's INVOKE line (with its requestId) and the Extension.HandlerFailed
/// report are JSON lines, the latter at level ERROR.
#[test]
fn json_handler_failure() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let ext = run(
        &sb,
        &api,
        "echo 'it \"broke\"' >&2; exit 3",
        "req-json-fail",
        |launcher| {
            launcher
                .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
                .env("SHELL_EXT_ON_ERROR", "exit")
        },
        1,
    );
    let lines = json_lines(&ext, &["it \"broke\""]);
    let invoke = line_starting(&lines, "INVOKE req-json-fail failed (status 3) in ");
    assert_eq!(invoke["requestId"], "req-json-fail", "{invoke}");
    let failed = line_starting(&lines, "Extension.HandlerFailed: ");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert_eq!(failed["extension"], DEFAULT_NAME, "{failed}");
    assert!(
        failed["message"].as_str().unwrap().contains("status 3"),
        "{failed}"
    );
    assert_timestamp(failed);
}

/// Without `AWS_LAMBDA_LOG_FORMAT` (or with `Text`) the lines stay `[<name>] LEVEL message`.
#[test]
fn text_is_the_default() {
    for format in [None, Some("Text")] {
        let sb = Sandbox::new();
        let api = FakeApi::start();
        let ext = run(
            &sb,
            &api,
            "true",
            "req-text-1",
            |launcher| match format {
                Some(format) => launcher.env("AWS_LAMBDA_LOG_FORMAT", format),
                None => launcher,
            },
            0,
        );
        let stderr = ext.stderr_str();
        assert!(
            stderr
                .starts_with("[lambda-shell-extension] INFO registered as lambda-shell-extension"),
            "{format:?}:\n{stderr}"
        );
        assert!(
            stderr.contains("\n[lambda-shell-extension] INFO INVOKE req-text-1 ok in "),
            "{format:?}:\n{stderr}"
        );
        assert!(!stderr.contains('{'), "{format:?}:\n{stderr}");
    }
}

/// The stderr of one run with `AWS_LAMBDA_LOG_LEVEL=level` and `RUST_LOG=rust_log` (unset:
/// `None`).
fn stderr_at(level: &str, rust_log: Option<&str>) -> String {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let ext = run(
        &sb,
        &api,
        "true",
        "req-level-1",
        |launcher| {
            let launcher = launcher.env("AWS_LAMBDA_LOG_LEVEL", level);
            match rust_log {
                Some(filter) => launcher.env("RUST_LOG", filter),
                None => launcher.env_remove("RUST_LOG"),
            }
        },
        0,
    );
    ext.stderr_str()
}

/// `AWS_LAMBDA_LOG_LEVEL=WARN` hides the info lines when `RUST_LOG` is unset; `RUST_LOG` wins.
#[test]
fn log_level_warn_unless_rust_log() {
    let stderr = stderr_at("WARN", None);
    assert_eq!(stderr, "", "nothing at WARN in a run that went well");
    let stderr = stderr_at("warn", Some("info"));
    assert!(stderr.contains(" INFO registered as "), "{stderr}");
    assert!(
        stderr.contains(" INFO INVOKE req-level-1 ok in "),
        "{stderr}"
    );
}

/// `AWS_LAMBDA_LOG_LEVEL=DEBUG` shows debug lines; unset, the default is INFO (no debug lines).
#[test]
fn log_level_debug() {
    let stderr = stderr_at("DEBUG", None);
    assert!(stderr.contains("] DEBUG "), "{stderr}");
    assert!(
        stderr.contains(" INFO INVOKE req-level-1 ok in "),
        "{stderr}"
    );
    let stderr = stderr_at("", None);
    assert!(!stderr.contains("] DEBUG "), "{stderr}");
    assert!(
        stderr.contains(" INFO INVOKE req-level-1 ok in "),
        "{stderr}"
    );
}

/// An unknown level: INFO, and one warning naming the variable and the accepted values.
#[test]
fn log_level_invalid_falls_back_to_info() {
    let stderr = stderr_at("verbose", None);
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|line| line.contains(" WARN "))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("AWS_LAMBDA_LOG_LEVEL")
            && warnings[0].contains("\"verbose\"")
            && warnings[0].contains("TRACE, DEBUG, INFO, WARN, ERROR or FATAL"),
        "{stderr}"
    );
    assert!(
        stderr.contains(" INFO INVOKE req-level-1 ok in "),
        "{stderr}"
    );
    assert!(!stderr.contains("] DEBUG "), "{stderr}");
}

/// `AWS_LAMBDA_LOG_LEVEL=TRACE` (a function's log level, meant for the function) shows the
/// extension's debug lines but not the HTTP crates' trace lines, which hex-dump every event
/// body; `RUST_LOG=trace` still asks for them.
#[test]
fn function_log_level_trace_does_not_dump_the_http_traffic() {
    let stderr = stderr_at("TRACE", None);
    assert!(stderr.contains("] DEBUG "), "{stderr}");
    assert!(!stderr.contains("] TRACE "), "{stderr}");
    let stderr = stderr_at("INFO", Some("trace"));
    assert!(stderr.contains("] TRACE "), "RUST_LOG=trace: {stderr}");
}
