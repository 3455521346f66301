//! Lambda platform fit: Managed Instances registration, an API address with `http://`, and an
//! empty tracing value (cargo-lambda).

mod common;

use std::fs;

use common::*;

/// On Managed Instances, with SHELL_EXT_EVENTS unset: SHUTDOWN only, one line saying why, the
/// handler runs at SHUTDOWN, AWS_LAMBDA_MAX_CONCURRENCY passed through untouched.
#[test]
fn managed_instances_register_for_shutdown_only() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let env_file = sb.p("env");
    api.push_shutdown("spindown", deadline_in(2000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("env > {env_file}"))
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")
        .env("AWS_LAMBDA_MAX_CONCURRENCY", "16")
        .spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(registered_events(&api), ["SHUTDOWN"]);
    let err = ext.stderr_str();
    assert_eq!(
        err.matches("Lambda Managed Instances deliver no INVOKE events")
            .count(),
        1,
        "{err}"
    );
    let env = parse_env(&fs::read(&env_file).unwrap());
    assert_eq!(env_get(&env, "LAMBDA_EVENT_TYPE"), Some("SHUTDOWN"));
    assert_eq!(env_get(&env, "AWS_LAMBDA_MAX_CONCURRENCY"), Some("16"));
    assert_none(&api, Endpoint::InitError);
}

/// On Managed Instances, SHELL_EXT_EVENTS naming INVOKE: still SHUTDOWN only (so the failure is
/// the extension's), then ConfigInvalid naming the variable and what to use instead.
#[test]
fn managed_instances_refuse_an_explicit_invoke() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_EVENTS", "INVOKE,SHUTDOWN")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")
        .spawn();
    ext.expect_exit(1, secs(10));
    assert_eq!(registered_events(&api), ["SHUTDOWN"]);
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.ConfigInvalid");
    for expected in [
        "SHELL_EXT_EVENTS: names INVOKE",
        "Managed Instances deliver no INVOKE events",
        "SHELL_EXT_TELEMETRY_HANDLER",
        "platform.start",
    ] {
        assert!(msg.contains(expected), "no {expected:?} in {msg}");
    }
    assert_none(&api, Endpoint::Next);
}

/// cargo-lambda tells its users to export AWS_LAMBDA_RUNTIME_API=http://…: accepted.
#[test]
fn runtime_api_with_http_scheme_is_accepted() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(2000));
    let mut ext = sb
        .ext_at(&format!("http://{}/", api.runtime_api()))
        .handler("true")
        .spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(api.count(Endpoint::Register), 1);
}

#[test]
fn runtime_api_with_another_scheme_is_refused_clearly() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext_at(&format!("https://{}", api.runtime_api()))
        .handler("true")
        .spawn();
    ext.expect_exit(1, secs(10));
    let err = ext.stderr_str();
    assert!(
        err.contains("the Lambda API is plain HTTP, not https"),
        "{err}"
    );
    assert_none(&api, Endpoint::Register);
}

/// cargo-lambda sends "tracing":{"value":""}: no _X_AMZN_TRACE_ID then.
#[test]
fn empty_tracing_value_sets_no_trace_variable() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let env_file = sb.p("env");
    let body = format!(
        r#"{{"eventType":"INVOKE","deadlineMs":{},"requestId":"req-cl","invokedFunctionArn":"arn:aws:lambda:us-east-1:1:function:f","tracing":{{"value":""}}}}"#,
        deadline_in(5000)
    );
    api.push_raw(body.into_bytes(), Some("application/json"));
    api.push_shutdown("spindown", deadline_in(2000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!(
            "[ \"$LAMBDA_EVENT_TYPE\" = SHUTDOWN ] || env > {env_file}"
        ))
        .spawn();
    ext.expect_exit(0, secs(10));
    let env = parse_env(&fs::read(&env_file).unwrap());
    assert_eq!(env_get(&env, "LAMBDA_REQUEST_ID"), Some("req-cl"));
    assert_eq!(env_get(&env, "_X_AMZN_TRACE_ID"), None);
}

/// After a SnapStart restore the kept-alive connection is dead: the next request is retried on
/// a fresh connection at once, without a warning and without counting as an API fault.
#[test]
fn a_dead_kept_alive_connection_is_retried_quietly() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.close_idle_connections();
    for n in 0..3 {
        api.push_invoke(&format!("req-{n}"), deadline_in(5000));
    }
    api.push_shutdown("spindown", deadline_in(2000));
    let started = std::time::Instant::now();
    let mut ext = sb.ext(&api).handler("true").spawn();
    ext.expect_exit(0, secs(10));
    assert!(
        started.elapsed() < ms(2000),
        "retries waited: {:?}",
        started.elapsed()
    );
    assert_none(&api, Endpoint::ExitError);
    let err = ext.stderr_str();
    assert!(!err.contains("WARN"), "{err}");
    assert_eq!(api.count(Endpoint::Next), 4, "{}", api.describe());
}
