//! The binary by hand, without Lambda: `--check`, `--once FILE|-`, `--help`, an unknown flag,
//! and no environment at all.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn sample(name: &str) -> String {
    format!("{}/scripts/events/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A launcher as a person runs the binary: no Lambda API in the environment.
fn by_hand<'a>(sb: &'a Sandbox, args: &[&str]) -> Launcher<'a> {
    sb.ext_at("")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .args(args)
}

/// A handler that saves its stdin and environment.
fn recorder(sb: &Sandbox) -> String {
    sb.script(
        "record.sh",
        &format!(
            "#!/bin/sh\ncat > {}\nenv > {}\necho handled\n",
            sb.p("stdin"),
            sb.p("env")
        ),
    )
}

#[test]
fn check_prints_what_would_be_registered() {
    let sb = Sandbox::new();
    let handler = recorder(&sb);
    let mut ext = by_hand(&sb, &["--check"])
        .handler(&handler)
        .env("SHELL_EXT_EVENTS", "shutdown")
        .env("SHELL_EXT_INIT", "echo init > /dev/null")
        .spawn();
    ext.expect_exit(0, secs(5));
    let out = ext.stdout_str();
    assert!(out.starts_with("configuration OK\n"), "{out}");
    assert!(
        out.contains("registers as lambda-shell-extension for SHUTDOWN"),
        "{out}"
    );
    assert!(
        out.contains(&format!("handler: {handler} (run directly; checked)")),
        "{out}"
    );
    assert!(
        out.contains("cannot be checked"),
        "init is a shell line: {out}"
    );
    assert!(!sb.path("stdin").exists(), "--check ran the handler");
}

#[test]
fn check_reports_every_problem_like_init() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--check"])
        .handler(&sb.p("missing.sh"))
        .env("SHELL_EXT_EVENTS", "INVOKE")
        .env("SHELL_EXT_TIMEOUT_MARGIN_MS", "fast")
        .spawn();
    ext.expect_exit(1, secs(5));
    let err = ext.stderr_str();
    assert!(
        err.contains("ERROR Extension.ConfigInvalid: invalid configuration, 3 problems: (1) SHELL_EXT_HANDLER: "),
        "{err}"
    );
    assert!(err.contains("(2) SHELL_EXT_EVENTS: "), "{err}");
    assert!(
        err.contains("(3) SHELL_EXT_TIMEOUT_MARGIN_MS: \"fast\""),
        "{err}"
    );
    assert_eq!(ext.stdout_str(), "");
}

/// `--once` runs the handler as Lambda would: the event's bytes (a stale sample deadline made
/// live, every other byte as written), the per-event variables, one log line.
#[test]
fn once_runs_the_handler_with_a_sample_event() {
    let sb = Sandbox::new();
    let handler = recorder(&sb);
    let file = sample("invoke.json");
    let mut ext = by_hand(&sb, &["--once", &file]).handler(&handler).spawn();
    ext.expect_exit(0, secs(10));
    let sent = std::fs::read(&file).unwrap();
    let seen = std::fs::read(sb.path("stdin")).unwrap();
    let env = parse_env(&std::fs::read(sb.path("env")).unwrap());
    let deadline: u64 = env_get(&env, "LAMBDA_DEADLINE_MS")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deadline > now_ms() && deadline <= now_ms() + 3_000,
        "{deadline}"
    );
    let expected = String::from_utf8(sent)
        .unwrap()
        .replace("1700000003000", &deadline.to_string());
    assert_eq!(String::from_utf8(seen).unwrap(), expected);
    assert_eq!(
        env_get(&env, "LAMBDA_REQUEST_ID"),
        Some("8476a536-e9f4-11e8-9739-2dfe598c3fcd")
    );
    assert_eq!(env_get(&env, "LAMBDA_EVENT_TYPE"), Some("INVOKE"));
    assert_eq!(
        env_get(&env, "LAMBDA_EXTENSION_NAME"),
        Some("lambda-shell-extension")
    );
    assert!(env_get(&env, "_X_AMZN_TRACE_ID").is_some());
    assert_eq!(ext.stdout_str(), "handled\n");
    let err = ext.stderr_str();
    assert!(
        err.contains("deadlineMs 1700000003000 is in the past"),
        "{err}"
    );
    assert!(
        err.contains("INFO INVOKE 8476a536-e9f4-11e8-9739-2dfe598c3fcd ok in "),
        "{err}"
    );
}

/// `--once -` reads the event from stdin; a live deadline is passed through untouched.
#[test]
fn once_reads_stdin_and_keeps_a_live_deadline() {
    let sb = Sandbox::new();
    let handler = recorder(&sb);
    let event = format!(
        r#"{{"eventType":"SHUTDOWN", "shutdownReason":"spindown", "deadlineMs":{}}}"#,
        deadline_in(2000)
    );
    let mut child = Command::new(BIN)
        .args(["--once", "-"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL_EXT_HANDLER", &handler)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(sb.path("stdin")).unwrap(), event);
    assert!(err.contains("INFO SHUTDOWN spindown ok in "), "{err}");
}

#[test]
fn once_reports_a_failing_handler_like_lambda_would() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--once", &sample("shutdown.json")])
        .handler("exit 3")
        .spawn();
    ext.expect_exit(1, secs(5));
    let err = ext.stderr_str();
    assert!(
        err.contains("INFO SHUTDOWN spindown failed (status 3) in "),
        "{err}"
    );
    assert!(
        err.contains("ERROR Extension.HandlerFailed: handler `exit 3` exited with status 3"),
        "{err}"
    );
}

#[test]
fn once_names_a_file_that_is_not_an_event() {
    let sb = Sandbox::new();
    let not_event = sb.script("x.json", "{\"eventType\":\"RESTORE\"}");
    let mut ext = by_hand(&sb, &["--once", &not_event])
        .handler("true")
        .spawn();
    ext.expect_exit(1, secs(5));
    let err = ext.stderr_str();
    assert!(
        err.contains(&format!(
            "--once {not_event}: not a Lambda INVOKE or SHUTDOWN event"
        )),
        "{err}"
    );
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--once", &sb.p("nope.json")])
        .handler("true")
        .spawn();
    ext.expect_exit(1, secs(5));
    assert!(
        ext.stderr_str().contains("cannot read it"),
        "{}",
        ext.stderr_str()
    );
}

/// Started by hand with no environment at all: the message says what to do instead.
#[test]
fn no_environment_points_at_demo_check_and_once() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &[]).env_remove("RUST_LOG").spawn();
    ext.expect_exit(1, secs(5));
    let err = ext.stderr_str();
    for hint in [
        "AWS_LAMBDA_RUNTIME_API is not set",
        "make demo",
        "--check",
        "--once",
    ] {
        assert!(err.contains(hint), "no {hint:?} in: {err}");
    }
    assert!(err.contains("SHELL_EXT_HANDLER: not set"), "{err}");
}

#[test]
fn help_lists_every_variable() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--help"]).spawn();
    ext.expect_exit(0, secs(5));
    let out = ext.stdout_str();
    for name in [
        "SHELL_EXT_HANDLER",
        "SHELL_EXT_INIT",
        "SHELL_EXT_EVENTS",
        "SHELL_EXT_ON_ERROR",
        "SHELL_EXT_TIMEOUT_MARGIN_MS",
        "AWS_LAMBDA_RUNTIME_API",
        "RUST_LOG",
        "--check",
        "--once",
    ] {
        assert!(out.contains(name), "--help lacks {name}: {out}");
    }
}

#[test]
fn unknown_flag_is_named() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--handlr", "x"]).spawn();
    ext.expect_exit(2, secs(5));
    let err = ext.stderr_str();
    assert!(err.contains("'--handlr'"), "{err}");
}

#[test]
fn check_shows_a_telemetry_only_configuration() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--check"])
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .env("SHELL_EXT_TELEMETRY_TYPES", "platform")
        .spawn();
    ext.expect_exit(0, secs(5));
    let out = ext.stdout_str();
    assert!(
        out.contains("registers as lambda-shell-extension for SHUTDOWN\n"),
        "{out}"
    );
    assert!(out.contains("handler: none (telemetry only)"), "{out}");
    assert!(
        out.contains("telemetry types: platform; schema: Auto; flush: Background"),
        "{out}"
    );
}

/// `--once` runs the event handler: a telemetry-only configuration has none, and says so.
#[test]
fn once_without_an_event_handler_says_why() {
    let sb = Sandbox::new();
    let mut ext = by_hand(&sb, &["--once", &sample("invoke.json")])
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .spawn();
    ext.expect_exit(1, secs(5));
    let err = ext.stderr_str();
    assert!(
        err.contains("--once runs the event handler, and SHELL_EXT_HANDLER is not set"),
        "{err}"
    );
}
