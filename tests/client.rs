//! Library-level tests of `lambda_shell_extension::client`: `RegistrationClient` and
//! `InvocationClient` driven directly (no binary) against the in-test fake API, asserting on
//! what crossed the wire and on the typed results and errors.

mod common;

use std::process::Command;

use common::*;
use lambda_shell_extension::api::{
    BufferingField, ErrorRequest, Event, InvokeEvent, LifecycleEvent, LogSubscription, LogType,
    RegistrationRequest, RegistrationResponse, ShutdownEvent, TelemetryBuffering, TelemetrySchema,
    TelemetrySubscription, TelemetryType, Tracing,
};
use lambda_shell_extension::client::{
    ClientError, Endpoint as ClientEndpoint, InvocationClient, RegistrationClient, Subscribed,
    RUNTIME_API_ENV,
};
use serde_json::json;

const NAME: &str = "x";
const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_defaults()
}

fn client_for(runtime_api: &str) -> RegistrationClient {
    RegistrationClient::new(agent())
        .with_runtime_api(runtime_api)
        .with_extension_name(NAME)
}

/// Registers with the defaults and returns the invocation client.
fn registered(api: &FakeApi) -> InvocationClient {
    let (client, _) = client_for(&api.runtime_api())
        .register_default()
        .unwrap_or_else(|e| panic!("register: {e}; log:\n{}", api.describe()));
    client
}

/// The only request to `ep`.
fn only(api: &FakeApi, ep: Endpoint) -> Request {
    let reqs = api.requests_to(ep);
    assert_eq!(reqs.len(), 1, "{ep:?} requests; log:\n{}", api.describe());
    reqs.into_iter().next().unwrap()
}

/// Exactly one header of that name, with that value.
fn assert_single_header(req: &Request, name: &str, value: &str) {
    assert_eq!(req.header_all(name), vec![value], "{name} in {req:?}");
}

/// The INVOKE inside `event`. The event types are `#[non_exhaustive]`: tests read their fields
/// rather than build an expected value.
fn as_invoke(event: &Event) -> &InvokeEvent {
    match event {
        Event::Invoke(invoke) => invoke,
        other => panic!("expected an INVOKE, got {other:?}"),
    }
}

fn expect_err<T>(result: Result<T, ClientError>, what: &str) -> ClientError {
    match result {
        Ok(_) => panic!("{what}: expected an error, got Ok"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Registration

#[test]
fn register_default_wire_format_and_response() {
    let api = FakeApi::start();
    let (client, registration) = client_for(&api.runtime_api())
        .register_default()
        .expect("register");

    let reqs = api.requests();
    assert_eq!(reqs.len(), 1, "{}", api.describe());
    let req = &reqs[0];
    assert_eq!(req.endpoint, Endpoint::Register);
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/2020-01-01/extension/register");
    assert_single_header(req, "Lambda-Extension-Name", NAME);
    assert_single_header(req, "Lambda-Extension-Accept-Feature", "accountId");
    assert_single_header(req, "Content-Type", "application/json");
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        r#"{"events":["INVOKE","SHUTDOWN"]}"#
    );

    // `RegistrationResponse` is `#[non_exhaustive]`: compared field by field, not built.
    let RegistrationResponse {
        function_name,
        function_version,
        handler,
        account_id,
        ..
    } = &registration;
    assert_eq!(function_name, "fn");
    assert_eq!(function_version, "$LATEST");
    assert_eq!(handler, "index.handler");
    assert_eq!(account_id.as_deref(), Some("123456789012"));
    let sent_id = api.extension_id().expect("the fake handed out an id");
    assert_eq!(client.extension_id(), sent_id);
    assert_eq!(client.extension_name(), NAME);
    assert_all_known(&api);
}

#[test]
fn register_sends_the_requested_events() {
    let api = FakeApi::start();
    let (_client, _) = client_for(&api.runtime_api())
        .register(&RegistrationRequest {
            events: vec![LifecycleEvent::Shutdown],
        })
        .expect("register");
    let req = only(&api, Endpoint::Register);
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        r#"{"events":["SHUTDOWN"]}"#
    );
    assert_single_header(&req, "Content-Type", "application/json");
}

#[test]
fn register_errors_are_typed() {
    // A second registration with the same fake: RIE's 403 Extension.InvalidExtensionState.
    let api = FakeApi::start();
    registered(&api);
    let err = expect_err(
        client_for(&api.runtime_api()).register_default(),
        "second register",
    );
    match &err {
        ClientError::Status {
            endpoint: ClientEndpoint::Register,
            status: 403,
            error,
        } => assert_eq!(error.error_type, "Extension.InvalidExtensionState"),
        other => panic!("expected a 403 Status error, got {other:?}"),
    }
    assert!(err.is_fatal());
    let text = err.to_string();
    assert!(text.starts_with("register: "), "{text}");
    assert!(
        text.contains("403 Extension.InvalidExtensionState: State transition"),
        "{text}"
    );
    assert!(text.contains("non-recoverable"), "{text}");

    // 200 without the identifier header.
    let api = FakeApi::start();
    api.fault(
        Endpoint::Register,
        Fault::Status(200, r#"{"functionName":"fn"}"#.into()),
    );
    let err = expect_err(
        client_for(&api.runtime_api()).register_default(),
        "no identifier",
    );
    assert!(
        matches!(err, ClientError::MissingIdentifier),
        "expected MissingIdentifier, got {err:?}"
    );
    assert!(
        err.to_string().contains("Lambda-Extension-Identifier"),
        "{err}"
    );
    assert!(!err.is_fatal() && !err.is_transport());

    // 200 + identifier, body not JSON.
    let api = FakeApi::start();
    api.fault(Endpoint::Register, Fault::Unparsable);
    let err = expect_err(
        client_for(&api.runtime_api()).register_default(),
        "unparsable",
    );
    match &err {
        ClientError::InvalidBody {
            endpoint: ClientEndpoint::Register,
            body_start,
            ..
        } => assert!(body_start.contains("<<not json"), "{body_start}"),
        other => panic!("expected InvalidBody, got {other:?}"),
    }

    // Nothing listening: a transport error naming the URL.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let runtime_api = format!("127.0.0.1:{port}");
    let err = expect_err(client_for(&runtime_api).register_default(), "refused");
    assert!(err.is_transport(), "{err:?}");
    assert!(!err.is_fatal());
    assert_eq!(err.status(), None);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "register: no response from the Lambda API at http://{runtime_api}/2020-01-01/extension/register: "
        )),
        "{text}"
    );
}

/// Every call goes under the path the API address carries (`host:port/.rt`), also with a
/// trailing slash.
#[test]
fn api_address_with_a_path_prefix() {
    for suffix in ["", "/"] {
        let api = FakeApi::start_with_prefix("/.rt");
        let (client, registration) = client_for(&format!("{}{suffix}", api.runtime_api()))
            .register_default()
            .unwrap_or_else(|e| panic!("register with {suffix:?}: {e}"));
        assert_eq!(registration.function_name, "fn");
        let invoke = api.push_invoke("r-1", deadline_in(60_000));
        assert_eq!(client.next_event().expect("next").body, invoke);
        client
            .log_register(&LogSubscription::http(
                "http://sandbox:1234",
                vec![LogType::Platform],
            ))
            .expect("logs");
        let telemetry = TelemetrySubscription::http(
            TelemetrySchema::V2025_01_29,
            "http://sandbox:1234",
            vec![TelemetryType::Function],
        );
        assert_eq!(
            client.telemetry_register(&telemetry).expect("telemetry"),
            Subscribed::Active
        );
        client
            .exit_error("Extension.Test", "bye")
            .expect("exit/error");

        let paths: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            vec![
                "/.rt/2020-01-01/extension/register",
                "/.rt/2020-01-01/extension/event/next",
                "/.rt/2020-08-15/logs",
                "/.rt/2022-07-01/telemetry",
                "/.rt/2020-01-01/extension/exit/error",
            ],
            "suffix {suffix:?}"
        );
        assert_all_known(&api);
    }
}

const MISSING_API_CHILD: &str = "CLIENT_TEST_MISSING_RUNTIME_API_CHILD";

/// Without `with_runtime_api` and with `AWS_LAMBDA_RUNTIME_API` unset (or empty), `register` is a
/// typed error with a readable message. The environment is changed only in a child process (this
/// test binary re-run for this one test), never in this multi-threaded one.
#[test]
fn missing_runtime_api_is_a_typed_error() {
    if std::env::var_os(MISSING_API_CHILD).is_some() {
        let err = expect_err(
            RegistrationClient::new(agent())
                .with_extension_name(NAME)
                .register_default(),
            "register without an API address",
        );
        assert!(
            matches!(err, ClientError::MissingRuntimeApi),
            "expected MissingRuntimeApi, got {err:?}"
        );
        println!("child checked: {err}");
        return;
    }

    let text = ClientError::MissingRuntimeApi.to_string();
    assert!(
        text.starts_with("AWS_LAMBDA_RUNTIME_API is not set"),
        "{text}"
    );
    assert!(!ClientError::MissingRuntimeApi.is_fatal());
    assert!(!ClientError::MissingRuntimeApi.is_transport());
    assert_eq!(ClientError::MissingRuntimeApi.status(), None);

    for value in [None, Some("")] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "missing_runtime_api_is_a_typed_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MISSING_API_CHILD, "1");
        match value {
            None => cmd.env_remove(RUNTIME_API_ENV),
            Some(v) => cmd.env(RUNTIME_API_ENV, v),
        };
        let out = cmd.output().expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child ({value:?}) failed:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!("child checked: {text}")),
            "child ({value:?}) did not run the check:\n{stdout}\n{stderr}"
        );
    }
}

const FROM_ENV_CHILD: &str = "CLIENT_TEST_FROM_ENV_CHILD";

/// The proxy variables ureq's default agent reads (`Proxy::try_from_env`), and the ones that
/// would exempt the API from them.
const PROXY_VARS: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// `from_env()` reads `AWS_LAMBDA_RUNTIME_API` and the file name of `argv[0]`, and its agent
/// ignores proxy variables: with every one of them pointing at a dead port, registration and
/// `next_event` still reach the API (an agent from `ureq::Agent::new_with_defaults()` would fail
/// with a transport error). As above, the environment is set only in a child process.
#[test]
fn from_env_reads_the_environment_and_ignores_proxies() {
    if std::env::var_os(FROM_ENV_CHILD).is_some() {
        let (client, registration) = RegistrationClient::from_env()
            .register_default()
            .unwrap_or_else(|e| panic!("from_env register: {e}"));
        let next = client.next_event().unwrap_or_else(|e| panic!("next: {e}"));
        let Event::Shutdown(shutdown) = &next.event else {
            panic!("expected the SHUTDOWN, got {:?}", next.event)
        };
        println!(
            "child checked: {} {} {}",
            client.extension_name(),
            registration.function_name,
            shutdown.shutdown_reason
        );
        return;
    }

    // A port nothing listens on: a proxied call gets "connection refused".
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = format!("http://127.0.0.1:{dead_port}");
    let api = FakeApi::start();
    api.push_shutdown("spindown", 42);

    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--exact",
        "from_env_reads_the_environment_and_ignores_proxies",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(FROM_ENV_CHILD, "1")
    .env(RUNTIME_API_ENV, api.runtime_api());
    for var in PROXY_VARS {
        cmd.env(var, &proxy);
    }
    for var in NO_PROXY_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{stderr}\nlog:\n{}",
        api.describe()
    );

    // Lambda starts the extension by path: argv[0]'s file name is the name it registers under.
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stdout.contains(&format!("child checked: {name} fn spindown")),
        "child did not run the check:\n{stdout}\n{stderr}"
    );
    let req = only(&api, Endpoint::Register);
    assert_single_header(&req, "Lambda-Extension-Name", &name);
    assert_eq!(api.count(Endpoint::Next), 1, "{}", api.describe());
    assert_all_known(&api);
}

// ---------------------------------------------------------------------------------------------
// event/next

#[test]
fn next_event_returns_typed_event_and_exact_bytes() {
    let api = FakeApi::start();
    let client = registered(&api);

    let deadline = deadline_in(60_000);
    let invoke = api.push_invoke("r-1", deadline);
    let next = client.next_event().expect("invoke");
    let invoked = as_invoke(&next.event);
    assert_eq!(invoked.deadline_ms, deadline);
    assert_eq!(invoked.request_id, "r-1");
    assert_eq!(invoked.invoked_function_arn, FUNCTION_ARN);
    let Some(Tracing { kind, value, .. }) = &invoked.tracing else {
        panic!("no tracing in {invoked:?}")
    };
    assert_eq!(kind, "X-Amzn-Trace-Id");
    assert_eq!(value, TRACE);
    assert_eq!(next.body, invoke);

    // Surrounding whitespace, unusual spacing, key order and unknown fields: the bytes are kept, not re-serialised.
    let raw = b" \n{ \"requestId\" : \"r-2\",\n \"extra\": [1, 2.50],\"eventType\":\"INVOKE\", \"deadlineMs\": 7 }\n"
        .to_vec();
    api.push_raw(raw.clone(), Some("application/json"));
    let next = client.next_event().expect("raw invoke");
    assert_eq!(next.body, raw);
    let invoked = as_invoke(&next.event);
    assert_eq!(invoked.deadline_ms, 7);
    assert_eq!(invoked.request_id, "r-2");
    assert_eq!(invoked.invoked_function_arn, "");
    assert_eq!(invoked.tracing, None);

    let shutdown = api.push_shutdown("spindown", 42);
    let next = client.next_event().expect("shutdown");
    let Event::Shutdown(ShutdownEvent {
        shutdown_reason,
        deadline_ms,
        ..
    }) = &next.event
    else {
        panic!("expected a SHUTDOWN, got {:?}", next.event)
    };
    assert_eq!(shutdown_reason, "spindown");
    assert_eq!(*deadline_ms, 42);
    assert_eq!(next.body, shutdown);

    let id = api.extension_id().unwrap();
    let nexts = api.requests_to(Endpoint::Next);
    assert_eq!(nexts.len(), 3, "{}", api.describe());
    for req in &nexts {
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/2020-01-01/extension/event/next");
        assert_single_header(req, "Lambda-Extension-Identifier", &id);
        // The request is built once at registration, Host included: the same Host ureq itself
        // sends on the registration.
        assert_single_header(req, "Host", &api.runtime_api());
        assert!(req.body.is_empty(), "{req:?}");
    }
    assert_single_header(&only(&api, Endpoint::Register), "Host", &api.runtime_api());
    assert_eq!(
        api.served(),
        vec![invoke, raw, shutdown],
        "events served in order"
    );
}

#[test]
fn next_event_invalid_body() {
    let api = FakeApi::start();
    let client = registered(&api);

    api.fault_times(Endpoint::Next, Fault::Unparsable, 1);
    let err = expect_err(client.next_event(), "unparsable");
    match &err {
        ClientError::InvalidBody {
            endpoint: ClientEndpoint::NextEvent,
            body_start,
            ..
        } => assert_eq!(body_start, "{\"eventType\": \"INVOKE\", <<not json"),
        other => panic!("expected InvalidBody, got {other:?}"),
    }
    assert!(!err.is_fatal() && !err.is_transport());
    assert_eq!(err.status(), None);
    assert!(std::error::Error::source(&err).is_some());
    let text = err.to_string();
    assert!(text.starts_with("event/next: "), "{text}");
    assert!(text.contains("<<not json"), "{text}");

    // Valid JSON, unknown event type.
    api.push_raw(
        br#"{"eventType":"RESTORE","deadlineMs":1}"#.to_vec(),
        Some("application/json"),
    );
    let err = expect_err(client.next_event(), "unknown event type");
    assert!(
        matches!(
            &err,
            ClientError::InvalidBody { endpoint: ClientEndpoint::NextEvent, body_start, .. }
                if body_start == r#"{"eventType":"RESTORE","deadlineMs":1}"#
        ),
        "{err:?}"
    );
}

#[test]
fn next_event_500_is_fatal_with_the_api_error() {
    let api = FakeApi::start();
    let client = registered(&api);
    api.fault(
        Endpoint::Next,
        Fault::Status(
            500,
            r#"{"errorMessage":"Internal Server Error","errorType":"InternalServerError"}"#.into(),
        ),
    );
    let err = expect_err(client.next_event(), "500");
    match &err {
        ClientError::Status {
            endpoint: ClientEndpoint::NextEvent,
            status: 500,
            error,
        } => assert_eq!(
            error,
            &ErrorRequest {
                error_message: "Internal Server Error".into(),
                error_type: "InternalServerError".into(),
            }
        ),
        other => panic!("expected a 500 Status error, got {other:?}"),
    }
    assert!(err.is_fatal());
    assert!(!err.is_transport());
    assert_eq!(err.status(), Some(500));
    assert_eq!(
        err.to_string(),
        "event/next: the Lambda API answered 500 InternalServerError: Internal Server Error \
         (non-recoverable: the extension must exit)"
    );
}

#[test]
fn next_event_403_is_fatal_with_the_api_error() {
    // The fake's own 403: event/next after init/error is an invalid state transition.
    let api = FakeApi::start();
    let client = registered(&api);
    client
        .init_error("Extension.Test", "init failed")
        .expect("init/error");
    let err = expect_err(client.next_event(), "next after init/error");
    match &err {
        ClientError::Status {
            endpoint: ClientEndpoint::NextEvent,
            status: 403,
            error,
        } => {
            assert_eq!(error.error_type, "Extension.InvalidExtensionState");
            assert!(error.error_message.starts_with("State transition from"));
        }
        other => panic!("expected a 403 Status error, got {other:?}"),
    }
    assert!(err.is_fatal());
    let text = err.to_string();
    assert!(
        text.starts_with("event/next: the Lambda API answered 403 Extension.InvalidExtensionState: State transition from"),
        "{text}"
    );
    assert!(
        text.ends_with(" (non-recoverable: the extension must exit)"),
        "{text}"
    );

    // An injected 403 with the identifier error RIE's middleware sends.
    let api = FakeApi::start();
    let client = registered(&api);
    api.fault(
        Endpoint::Next,
        Fault::Status(
            403,
            r#"{"errorMessage":"Unknown extension 1","errorType":"Extension.UnknownExtensionIdentifier"}"#
                .into(),
        ),
    );
    let err = expect_err(client.next_event(), "403");
    assert_eq!(err.status(), Some(403));
    assert!(err.is_fatal() && !err.is_transport());
    assert_eq!(
        err.to_string(),
        "event/next: the Lambda API answered 403 Extension.UnknownExtensionIdentifier: \
         Unknown extension 1 (non-recoverable: the extension must exit)"
    );
}

#[test]
fn next_event_other_status_is_not_fatal_and_keeps_a_raw_body() {
    let api = FakeApi::start();
    let client = registered(&api);
    api.fault(Endpoint::Next, Fault::Status(404, "page not found".into()));
    let err = expect_err(client.next_event(), "404");
    match &err {
        ClientError::Status {
            status: 404, error, ..
        } => assert_eq!(
            error,
            &ErrorRequest {
                error_message: "page not found".into(),
                error_type: String::new(),
            }
        ),
        other => panic!("expected a 404 Status error, got {other:?}"),
    }
    assert!(!err.is_fatal());
    assert_eq!(
        err.to_string(),
        "event/next: the Lambda API answered 404: page not found"
    );
}

#[test]
fn next_event_dropped_connection_is_transport() {
    let api = FakeApi::start();
    let client = registered(&api);
    api.fault(Endpoint::Next, Fault::Drop);
    let err = expect_err(client.next_event(), "dropped");
    assert!(err.is_transport(), "{err:?}");
    assert!(!err.is_fatal());
    assert_eq!(err.status(), None);
    let url = format!(
        "http://{}/2020-01-01/extension/event/next",
        api.runtime_api()
    );
    match &err {
        ClientError::Transport {
            endpoint: ClientEndpoint::NextEvent,
            url: got,
            ..
        } => assert_eq!(got, &url),
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "event/next: no response from the Lambda API at {url}: "
        )),
        "{text}"
    );
    assert!(api.count(Endpoint::Next) >= 1, "{}", api.describe());
}

// ---------------------------------------------------------------------------------------------
// init/error, exit/error

fn check_error_report(api: &FakeApi, req: &Request, path: &str, ty: &str, message: &str) {
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, path);
    let id = api.extension_id().unwrap();
    assert_single_header(req, "Lambda-Extension-Identifier", &id);
    assert_single_header(req, "Lambda-Extension-Function-Error-Type", ty);
    assert_single_header(req, "Content-Type", "application/json");
    assert_eq!(
        req.json(),
        json!({"errorMessage": message, "errorType": ty})
    );
}

#[test]
fn init_error_wire_format_and_202() {
    let api = FakeApi::start();
    let client = registered(&api);
    let message = " config \"x\" is\ninvalid: ü\n";
    // The fake answers init/error with 202 {"status":"OK"}, as RIE does.
    client
        .init_error("Extension.ConfigInvalid", message)
        .expect("202 is success");
    let req = only(&api, Endpoint::InitError);
    check_error_report(
        &api,
        &req,
        "/2020-01-01/extension/init/error",
        "Extension.ConfigInvalid",
        message,
    );
    assert_all_known(&api);
}

#[test]
fn exit_error_wire_format_and_202() {
    let api = FakeApi::start();
    let client = registered(&api);
    api.push_invoke("r-1", deadline_in(60_000));
    client.next_event().expect("next");
    client
        .exit_error("Extension.UnknownReason", "command failed")
        .expect("202 is success");
    let req = only(&api, Endpoint::ExitError);
    check_error_report(
        &api,
        &req,
        "/2020-01-01/extension/exit/error",
        "Extension.UnknownReason",
        "command failed",
    );
    assert_all_known(&api);
}

#[test]
fn error_reports_accept_any_2xx_and_type_the_rest() {
    let api = FakeApi::start();
    let client = registered(&api);
    api.fault_times(Endpoint::InitError, Fault::Status(200, "{}".into()), 1);
    client.init_error("Extension.A", "a").expect("200");
    api.fault_times(Endpoint::InitError, Fault::Status(204, String::new()), 1);
    client.init_error("Extension.A", "a").expect("204");

    // The fake's own 403: exit/error after init/error is an invalid state transition. (The
    // injected answers above never reached the fake's state machine.)
    client.init_error("Extension.A", "a").expect("202");
    let err = expect_err(client.exit_error("Extension.B", "b"), "exit after init");
    match &err {
        ClientError::Status {
            endpoint: ClientEndpoint::ExitError,
            status: 403,
            error,
        } => assert_eq!(error.error_type, "Extension.InvalidExtensionState"),
        other => panic!("expected a 403 Status error, got {other:?}"),
    }
    assert!(err.is_fatal());
    assert!(err.to_string().starts_with("exit/error: "), "{err}");

    api.fault_times(
        Endpoint::InitError,
        Fault::Status(
            500,
            r#"{"errorMessage":"boom","errorType":"InternalServerError"}"#.into(),
        ),
        1,
    );
    let err = expect_err(client.init_error("Extension.A", "a"), "500");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_fatal());
    assert_eq!(
        err.to_string(),
        "init/error: the Lambda API answered 500 InternalServerError: boom \
         (non-recoverable: the extension must exit)"
    );
    assert_eq!(api.count(Endpoint::InitError), 4, "{}", api.describe());
}

// ---------------------------------------------------------------------------------------------
// Logs and Telemetry subscriptions

fn expected_subscription(schema: Option<&str>) -> serde_json::Value {
    let mut body = json!({
        "destination": {"protocol": "HTTP", "URI": "http://sandbox:1234"},
        "types": ["platform", "function"],
        "buffering": {"maxBytes": 1_048_576, "maxItems": 10_000, "timeoutMs": 500},
    });
    if let Some(schema) = schema {
        body["schemaVersion"] = json!(schema);
    }
    body
}

fn check_subscription(api: &FakeApi, req: &Request, path: &str, schema: Option<&str>) {
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path, path);
    let id = api.extension_id().unwrap();
    assert_single_header(req, "Lambda-Extension-Identifier", &id);
    assert_single_header(req, "Content-Type", "application/json");
    assert_eq!(req.json(), expected_subscription(schema));
}

#[test]
fn log_register_wire_format_and_statuses() {
    let api = FakeApi::start();
    let client = registered(&api);
    let subscription = LogSubscription::http(
        "http://sandbox:1234",
        vec![LogType::Platform, LogType::Function],
    );

    // 200 "OK" from the fake.
    client.log_register(&subscription).expect("200");
    let req = only(&api, Endpoint::Logs);
    check_subscription(&api, &req, "/2020-08-15/logs", None);

    // RIE's stub answers 202.
    api.fault_times(
        Endpoint::Logs,
        Fault::Status(
            202,
            r#"{"errorType":"Logs.NotSupported","errorMessage":"Logs API is not supported"}"#
                .into(),
        ),
        1,
    );
    client.log_register(&subscription).expect("202");

    // 400: a Status error, not fatal.
    api.fault_times(
        Endpoint::Logs,
        Fault::Status(
            400,
            r#"{"errorType":"Logs.ValidationError","errorMessage":"URI port is not provided"}"#
                .into(),
        ),
        1,
    );
    let err = expect_err(client.log_register(&subscription), "400");
    match &err {
        ClientError::Status {
            endpoint: ClientEndpoint::LogsSubscribe,
            status: 400,
            error,
        } => assert_eq!(
            error,
            &ErrorRequest {
                error_message: "URI port is not provided".into(),
                error_type: "Logs.ValidationError".into(),
            }
        ),
        other => panic!("expected a 400 Status error, got {other:?}"),
    }
    assert!(!err.is_fatal() && !err.is_transport());
    assert_eq!(
        err.to_string(),
        "logs subscription: the Lambda API answered 400 Logs.ValidationError: URI port is not provided"
    );

    // The fake's own validation: no types -> 400.
    let err = expect_err(
        client.log_register(&LogSubscription::http("http://sandbox:1234", vec![])),
        "empty types",
    );
    assert!(
        matches!(&err, ClientError::Status { status: 400, error, .. } if error.error_type == "Logs.ValidationError"),
        "{err:?}"
    );

    assert_eq!(api.count(Endpoint::Logs), 4, "{}", api.describe());
    assert_none(&api, Endpoint::Telemetry);
    assert_all_known(&api);
}

const NOT_SUPPORTED: &str =
    r#"{"errorType":"Telemetry.NotSupported","errorMessage":"Telemetry API is not supported"}"#;

fn telemetry_subscription() -> TelemetrySubscription {
    TelemetrySubscription::http(
        TelemetrySchema::V2025_01_29,
        "http://sandbox.localdomain:4243",
        vec![TelemetryType::Platform, TelemetryType::Function],
    )
}

/// The PUT's method, path, headers and exact JSON body, with and without buffering, for every
/// schema version and type.
#[test]
fn telemetry_register_wire_format() {
    let api = FakeApi::start();
    let client = registered(&api);
    let id = api.extension_id().unwrap();

    let status = client
        .telemetry_register(&telemetry_subscription())
        .expect("200");
    assert_eq!(status, Subscribed::Active);
    assert!(status.is_active());
    let req = only(&api, Endpoint::Telemetry);
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path, "/2022-07-01/telemetry");
    assert_single_header(&req, "Lambda-Extension-Identifier", &id);
    assert_single_header(&req, "Content-Type", "application/json");
    // No buffering: the key is left out and Lambda uses its defaults.
    assert_eq!(
        req.json(),
        json!({
            "schemaVersion": "2025-01-29",
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:4243"},
            "types": ["platform", "function"],
        })
    );
    // The keys in the documented order, nothing else.
    assert!(
        req.body.starts_with(
            br#"{"schemaVersion":"2025-01-29","destination":{"protocol":"HTTP","URI":"#
        ),
        "{:?}",
        String::from_utf8_lossy(&req.body)
    );

    for (schema, name) in [
        (TelemetrySchema::V2022_07_01, "2022-07-01"),
        (TelemetrySchema::V2022_12_13, "2022-12-13"),
        (TelemetrySchema::V2025_01_29, "2025-01-29"),
    ] {
        let subscription = TelemetrySubscription::http(
            schema,
            "http://sandbox.localdomain:1",
            vec![
                TelemetryType::Extension,
                TelemetryType::Platform,
                TelemetryType::Function,
            ],
        )
        .with_buffering(TelemetryBuffering::new(1_000, 1_048_576, 25).unwrap());
        assert_eq!(
            client.telemetry_register(&subscription).expect(name),
            Subscribed::Active
        );
        let last = api.requests_to(Endpoint::Telemetry).pop().unwrap();
        assert_eq!(
            last.json(),
            json!({
                "schemaVersion": name,
                "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:1"},
                "types": ["extension", "platform", "function"],
                "buffering": {"maxItems": 1_000, "maxBytes": 1_048_576, "timeoutMs": 25},
            })
        );
    }
    assert_eq!(api.count(Endpoint::Telemetry), 4, "{}", api.describe());
    assert_none(&api, Endpoint::Logs);
    assert_all_known(&api);
}

/// 200 and 202 are Active; the emulator's 202 Telemetry.NotSupported is NotSupported, neither
/// success nor an error.
#[test]
fn telemetry_register_accepts_200_and_202_and_reports_not_supported() {
    let api = FakeApi::start();
    let client = registered(&api);
    let subscription = telemetry_subscription();

    for (body, what) in [
        (r#""OK""#, "202 \"OK\""),
        ("", "202 empty"),
        (r#"{"status":"OK"}"#, "202 object without an error"),
    ] {
        api.fault_times(Endpoint::Telemetry, Fault::Status(202, body.into()), 1);
        assert_eq!(
            client.telemetry_register(&subscription).expect(what),
            Subscribed::Active,
            "{what}"
        );
    }
    api.fault_times(
        Endpoint::Telemetry,
        Fault::Status(200, NOT_SUPPORTED.into()),
        1,
    );
    assert_eq!(
        client
            .telemetry_register(&subscription)
            .expect("200 with an error body"),
        Subscribed::Active,
        "200 is success whatever the body"
    );

    api.fault_times(
        Endpoint::Telemetry,
        Fault::Status(202, NOT_SUPPORTED.into()),
        1,
    );
    let status = client
        .telemetry_register(&subscription)
        .expect("NotSupported is not an error");
    assert!(!status.is_active());
    assert_eq!(
        status,
        Subscribed::NotSupported {
            error_type: "Telemetry.NotSupported".into(),
            message: "Telemetry API is not supported".into(),
        }
    );

    // log_register keeps treating every 202 as success.
    api.fault_times(
        Endpoint::Logs,
        Fault::Status(
            202,
            r#"{"errorType":"Logs.NotSupported","errorMessage":"Logs API is not supported"}"#
                .into(),
        ),
        1,
    );
    client
        .log_register(&LogSubscription::http(
            "http://sandbox:1",
            vec![LogType::Platform],
        ))
        .expect("logs 202");
    assert_eq!(api.count(Endpoint::Telemetry), 5, "{}", api.describe());
}

/// A 400 is a Status error carrying the API's errorType and errorMessage (the binary retries
/// once with an older schema); 403 and 500 are fatal; an unparsable error body is kept as text.
#[test]
fn telemetry_register_refusals_are_status_errors() {
    let api = FakeApi::start();
    let client = registered(&api);
    let subscription = telemetry_subscription();

    api.fault_times(
        Endpoint::Telemetry,
        Fault::Status(
            400,
            r#"{"errorType":"ValidationError","errorMessage":"schemaVersion 2025-01-29 is not supported"}"#
                .into(),
        ),
        1,
    );
    let err = expect_err(client.telemetry_register(&subscription), "400");
    match &err {
        ClientError::Status {
            endpoint: ClientEndpoint::TelemetrySubscribe,
            status: 400,
            error,
        } => assert_eq!(
            error,
            &ErrorRequest {
                error_message: "schemaVersion 2025-01-29 is not supported".into(),
                error_type: "ValidationError".into(),
            }
        ),
        other => panic!("expected a 400 Status error, got {other:?}"),
    }
    assert!(!err.is_fatal() && !err.is_transport());
    assert_eq!(
        err.to_string(),
        "telemetry subscription: the Lambda API answered 400 ValidationError: \
         schemaVersion 2025-01-29 is not supported"
    );

    // The retry the binary makes: same subscription, older schema.
    let mut older = subscription.clone();
    older.schema_version = TelemetrySchema::V2022_12_13;
    assert_eq!(
        client.telemetry_register(&older).expect("retry"),
        Subscribed::Active
    );
    let reqs = api.requests_to(Endpoint::Telemetry);
    assert_eq!(reqs[0].json()["schemaVersion"], "2025-01-29");
    assert_eq!(reqs[1].json()["schemaVersion"], "2022-12-13");

    // The fake's own validation: no types -> 400 ValidationError.
    let empty =
        TelemetrySubscription::http(TelemetrySchema::V2022_12_13, "http://sandbox:1", vec![]);
    let err = expect_err(client.telemetry_register(&empty), "empty types");
    assert!(
        matches!(&err, ClientError::Status { status: 400, error, .. }
            if error.error_type == "ValidationError" && error.error_message == "types should not be empty"),
        "{err:?}"
    );

    api.fault_times(
        Endpoint::Telemetry,
        Fault::Status(
            403,
            r#"{"errorType":"Telemetry.SubscriptionClosed","errorMessage":"Telemetry API subscription is closed"}"#
                .into(),
        ),
        1,
    );
    let err = expect_err(client.telemetry_register(&subscription), "403");
    assert_eq!(err.status(), Some(403));
    assert!(err.is_fatal(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "telemetry subscription: the Lambda API answered 403 Telemetry.SubscriptionClosed: \
         Telemetry API subscription is closed (non-recoverable: the extension must exit)"
    );

    api.fault_times(
        Endpoint::Telemetry,
        Fault::Status(500, "upstream broke".into()),
        1,
    );
    let err = expect_err(client.telemetry_register(&subscription), "500");
    match &err {
        ClientError::Status {
            status: 500, error, ..
        } => {
            assert_eq!(error.error_message, "upstream broke");
            assert_eq!(error.error_type, "");
        }
        other => panic!("expected a 500 Status error, got {other:?}"),
    }
    assert!(err.is_fatal());

    // The identifier is checked by the fake as by RIE: a subscription is a registered call.
    assert_eq!(api.count(Endpoint::Telemetry), 5, "{}", api.describe());
    assert_none(&api, Endpoint::Logs);
    assert_all_known(&api);
}

/// No response, or none in time: Transport and Timeout, like every other call.
#[test]
fn telemetry_register_without_an_answer() {
    let api = FakeApi::start();
    let client = registered(&api);
    api.fault_times(Endpoint::Telemetry, Fault::Drop, 1);
    let err = expect_err(client.telemetry_register(&telemetry_subscription()), "drop");
    assert!(err.is_transport(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("telemetry subscription: no response from the Lambda API at "),
        "{err}"
    );
}

/// Buffering out of range is refused by the constructor, naming the field, the value and the
/// range, before a subscription exists: nothing reaches the API.
#[test]
fn telemetry_buffering_out_of_range_is_refused_before_sending() {
    let api = FakeApi::start();
    let client = registered(&api);
    let cases = [
        (
            (999, 262_144, 1_000),
            BufferingField::MaxItems,
            999,
            "maxItems",
            "1000 to 10000",
        ),
        (
            (10_001, 262_144, 1_000),
            BufferingField::MaxItems,
            10_001,
            "maxItems",
            "1000 to 10000",
        ),
        (
            (1_000, 262_143, 1_000),
            BufferingField::MaxBytes,
            262_143,
            "maxBytes",
            "262144 to 1048576",
        ),
        (
            (1_000, 1_048_577, 1_000),
            BufferingField::MaxBytes,
            1_048_577,
            "maxBytes",
            "262144 to 1048576",
        ),
        (
            (1_000, 262_144, 24),
            BufferingField::TimeoutMs,
            24,
            "timeoutMs",
            "25 to 30000",
        ),
        (
            (1_000, 262_144, 30_001),
            BufferingField::TimeoutMs,
            30_001,
            "timeoutMs",
            "25 to 30000",
        ),
    ];
    for ((items, bytes, timeout), field, value, name, range) in cases {
        let error = TelemetryBuffering::new(items, bytes, timeout).unwrap_err();
        assert_eq!((error.field, error.value), (field, value));
        assert_eq!(error.range(), field.range());
        assert_eq!(error.field.as_str(), name);
        assert_eq!(
            error.to_string(),
            format!("telemetry buffering {name} = {value} is out of range: Lambda accepts {range}")
        );
        // std::error::Error, so `?` works in a function returning Box<dyn Error>.
        let boxed: Box<dyn std::error::Error> = Box::new(error);
        assert!(boxed.to_string().contains(name));
    }
    // The published ranges and defaults are the documented ones.
    assert_eq!(TelemetryBuffering::MAX_ITEMS_RANGE, 1_000..=10_000);
    assert_eq!(TelemetryBuffering::MAX_BYTES_RANGE, 262_144..=1_048_576);
    assert_eq!(TelemetryBuffering::TIMEOUT_MS_RANGE, 25..=30_000);
    assert_eq!(
        (
            TelemetryBuffering::DEFAULT_MAX_ITEMS,
            TelemetryBuffering::DEFAULT_MAX_BYTES,
            TelemetryBuffering::DEFAULT_TIMEOUT_MS
        ),
        (10_000, 262_144, 1_000)
    );
    assert_none(&api, Endpoint::Telemetry);
    // The edges themselves are sent as given.
    let edges = telemetry_subscription()
        .with_buffering(TelemetryBuffering::new(10_000, 262_144, 30_000).unwrap());
    assert_eq!(
        client.telemetry_register(&edges).expect("edges"),
        Subscribed::Active
    );
    assert_eq!(
        only(&api, Endpoint::Telemetry).json()["buffering"],
        json!({"maxItems": 10_000, "maxBytes": 262_144, "timeoutMs": 30_000})
    );
}

#[test]
fn unsendable_header_is_an_invalid_request_not_a_transport_error() {
    let api = FakeApi::start();
    let client = registered(&api);
    let err = expect_err(client.init_error("bad\ntype", "m"), "newline in header");
    assert!(
        matches!(
            &err,
            ClientError::InvalidRequest {
                endpoint: ClientEndpoint::InitError,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transport() && !err.is_fatal());
    assert!(err.to_string().contains("not sent"), "{err}");
    assert_none(&api, Endpoint::InitError);
}

#[test]
fn blank_runtime_api_is_missing() {
    let err = expect_err(
        RegistrationClient::new(agent())
            .with_runtime_api("  ")
            .with_extension_name(NAME)
            .register_default(),
        "blank address",
    );
    assert!(matches!(err, ClientError::MissingRuntimeApi), "{err:?}");
}
