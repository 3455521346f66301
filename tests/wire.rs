//! What the binary sends on the wire: register, next, init/error, exit/error; naming; base path.

mod common;

use common::*;

fn events_of(req: &Request) -> Vec<String> {
    let body = req.json();
    let mut events: Vec<String> = body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("register body has no events array: {body}"))
        .iter()
        .map(|e| e.as_str().expect("event name string").to_string())
        .collect();
    events.sort();
    events
}

fn check_register(req: &Request, name: &str) {
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/2020-01-01/extension/register");
    assert_eq!(req.header("Lambda-Extension-Name"), Some(name), "{req:?}");
    let features: Vec<&str> = req
        .header_all("Lambda-Extension-Accept-Feature")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    assert!(features.contains(&"accountId"), "{req:?}");
    let ct = req.header("Content-Type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "content type {ct:?}");
}

/// Register: name = file name, `Accept-Feature: accountId`, JSON content type, body
/// `{"events":["INVOKE","SHUTDOWN"]}`; then `next` with the identifier, GET, no body; after a
/// successful SHUTDOWN nothing else is sent and the exit code is 0.
#[test]
fn register_and_next_wire_format() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb.ext(&api).handler("true").spawn();
    ext.expect_exit(0, secs(10));

    let reqs = api.requests();
    let kinds: Vec<Endpoint> = reqs.iter().map(|r| r.endpoint).collect();
    assert_eq!(
        kinds,
        vec![Endpoint::Register, Endpoint::Next],
        "{}",
        api.describe()
    );
    let reg = &reqs[0];
    check_register(reg, DEFAULT_NAME);
    assert_eq!(
        reg.json(),
        serde_json::json!({"events": ["INVOKE", "SHUTDOWN"]})
    );

    let next = &reqs[1];
    assert_eq!(next.method, "GET");
    assert_eq!(next.path, "/2020-01-01/extension/event/next");
    let id = api.extension_id().unwrap();
    assert_eq!(
        next.header("Lambda-Extension-Identifier"),
        Some(id.as_str())
    );
    assert!(next.body.is_empty(), "next has a body: {next:?}");
    assert!(
        next.header("Content-Length").is_none_or(|v| v == "0"),
        "{next:?}"
    );
}

/// `SHELL_EXT_EVENTS=" shutdown "` registers for SHUTDOWN only (case-insensitive, spaces ok).
#[test]
fn events_shutdown_only() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    // Like Lambda, the fake never sends this INVOKE to an extension registered for SHUTDOWN only.
    api.push_invoke("not-for-shutdown-only", deadline_in(5000));
    api.push_shutdown("spindown", deadline_in(5000));
    let seen = sb.p("seen");
    let mut ext = sb
        .ext(&api)
        .handler(&format!("/bin/sh -c 'echo $LAMBDA_EVENT_TYPE >> {seen}'"))
        .env("SHELL_EXT_EVENTS", " shutdown ")
        .spawn();
    ext.expect_exit(0, secs(10));
    let reg = &api.requests_to(Endpoint::Register)[0];
    check_register(reg, DEFAULT_NAME);
    assert_eq!(reg.json(), serde_json::json!({"events": ["SHUTDOWN"]}));
    assert_eq!(api.count(Endpoint::Next), 1, "{}", api.describe());
    assert_eq!(
        std::fs::read_to_string(sb.path("seen")).unwrap(),
        "SHUTDOWN\n"
    );
    assert_none(&api, Endpoint::InitError);
}

/// `SHELL_EXT_EVENTS="Shutdown , invoke"` (any order, mixed case, spaces) = both events.
#[test]
fn events_any_order_case_and_spaces() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_EVENTS", "Shutdown , invoke")
        .spawn();
    ext.expect_exit(0, secs(10));
    let reg = &api.requests_to(Endpoint::Register)[0];
    assert_eq!(events_of(reg), vec!["INVOKE", "SHUTDOWN"]);
    assert_none(&api, Endpoint::InitError);
}

/// A renamed copy registers under its own file name and exports it to the handler.
#[test]
fn renamed_copy_registers_under_new_name() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let name = "my-ext.v2_renamed";
    let out = sb.p("name.txt");
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .name(name)
        .handler(&format!("echo \"$LAMBDA_EXTENSION_NAME\" > {out}"))
        .spawn();
    assert!(ext.path.ends_with(format!("opt/extensions/{name}")));
    ext.expect_exit(0, secs(10));
    let reg = &api.requests_to(Endpoint::Register)[0];
    check_register(reg, name);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("{name}\n"));
}

/// `AWS_LAMBDA_RUNTIME_API=127.0.0.1:port/.rt`: every request goes under `/.rt/2020-01-01/...`
/// (the fake answers 404 to anything else).
#[test]
fn runtime_api_with_path() {
    let sb = Sandbox::new();
    let api = FakeApi::start_with_prefix("/.rt");
    let out = sb.p("ran");
    api.push_invoke("req-prefix", deadline_in(5000));
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("echo \"$LAMBDA_EVENT_TYPE\" >> {out}"))
        .spawn();
    ext.expect_exit(0, secs(10));
    assert_all_known(&api);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 3, "{}", api.describe());
    for r in &reqs {
        assert!(r.path.starts_with("/.rt/2020-01-01/extension/"), "{r:?}");
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "INVOKE\nSHUTDOWN\n");
}

/// init/error: headers (identifier, error type, JSON content type) and body
/// `{"errorMessage":..,"errorType":"Extension.InitFailed"}`; exit 1; no next.
#[test]
fn init_error_wire_format() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let init = sb.script("init.sh", "#!/bin/sh\necho 'init broke' >&2\nexit 4\n");
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_INIT", &init)
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.InitFailed");
    assert!(msg.contains(&init), "message lacks the command: {msg}");
    assert!(msg.contains("status 4"), "message lacks the status: {msg}");
    assert!(msg.contains("init broke"), "message lacks stderr: {msg}");
    assert_none(&api, Endpoint::Next);
    assert_none(&api, Endpoint::ExitError);
}

/// exit/error: headers and body `{"errorMessage":..,"errorType":"Extension.HandlerFailed"}`,
/// exit 1, no further next.
#[test]
fn exit_error_wire_format() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("req-fail", deadline_in(5000));
    api.push_invoke("req-never", deadline_in(5000));
    let mut ext = sb.ext(&api).handler("false").spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("false"), "message lacks the command: {msg}");
    assert!(msg.contains("status 1"), "message lacks the status: {msg}");
    assert_eq!(api.count(Endpoint::Next), 1, "{}", api.describe());
    assert_none(&api, Endpoint::InitError);
    // The exit/error came after the (only) next.
    let reqs = api.requests();
    assert_eq!(reqs.last().unwrap().endpoint, Endpoint::ExitError);
}
