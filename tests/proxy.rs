//! The Runtime API proxy (docs/proxy.md): a stand-in Runtime API served on the fake Extensions
//! API's port (one `AWS_LAMBDA_RUNTIME_API` for both, as on Lambda), and a runtime client talking
//! to the proxy on `127.0.0.1:<SHELL_EXT_PROXY_PORT>`.
//!
//! Each test asserts on what crossed the wire on both legs (what the runtime sent and got, what
//! upstream got and answered) and on what the handlers saw (the `recorder` handler saves its
//! stdin and environment per call into the sandbox).

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use common::*;

const MIB: usize = 1024 * 1024;

/// Headers each leg's HTTP crate sets for itself (docs/proxy.md: not copied).
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
];

/// A launcher for an extension whose proxy listens on `port`, with no handler yet.
fn proxied<'a>(sb: &'a Sandbox, rt: &RuntimeApi, port: u16) -> Launcher<'a> {
    sb.ext(rt).env("SHELL_EXT_PROXY_PORT", &port.to_string())
}

/// Start, wait for the registration (the proxy's port is bound before it), connect a runtime.
fn start(launcher: Launcher<'_>, rt: &RuntimeApi, port: u16) -> (Ext, RuntimeClient) {
    let ext = launcher.spawn();
    rt.expect_requests(Endpoint::Register, 1, secs(5));
    (ext, RuntimeClient::connect(port))
}

/// SHUTDOWN, then exit 0 with no error report.
fn finish(rt: &RuntimeApi, ext: &mut Ext) {
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(10));
    assert_none(rt, Endpoint::ExitError);
    assert_none(rt, Endpoint::InitError);
}

/// A payload no JSON or UTF-8 step would keep: NUL, invalid UTF-8, CR LF, high bytes.
fn binary_payload() -> Vec<u8> {
    let mut body = b"{\"k\":\"v\"}\0\xff\xfe\xc3\x28 \r\n\x80\x81".to_vec();
    body.extend((0..=255u8).rev());
    body.extend_from_slice(b"\n\n");
    body
}

/// `n` bytes of a pattern that repeats only every 251 bytes (a misplaced chunk shows).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

/// Every end-to-end header of `sent` reached `got` with the same values (in order, for a
/// repeated name; names compare case-insensitively), and `got` has no header that `sent` lacks
/// other than the hop-by-hop ones and `extra_ok`.
fn assert_headers_passed(
    sent: &[(String, String)],
    got: &[(String, String)],
    extra_ok: &[&str],
    what: &str,
) {
    let lower = |s: &str| s.to_ascii_lowercase();
    let values = |hs: &[(String, String)], name: &str| -> Vec<String> {
        hs.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    for (name, _) in sent {
        if HOP_BY_HOP.contains(&lower(name).as_str()) {
            continue;
        }
        assert_eq!(
            values(got, name),
            values(sent, name),
            "{what}: header {name}\nsent {sent:?}\ngot  {got:?}"
        );
    }
    for (name, value) in got {
        let known = sent.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
            || HOP_BY_HOP.contains(&lower(name).as_str())
            || extra_ok.iter().any(|k| k.eq_ignore_ascii_case(name));
        assert!(
            known,
            "{what}: header {name}: {value} was not sent\nsent {sent:?}\ngot  {got:?}"
        );
    }
}

fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 300 {
        format!("{}… ({} bytes)", &s[..300], bytes.len())
    } else {
        s.into_owned()
    }
}

/// Byte equality with a readable message (first difference, lengths).
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes, want {}; first difference at {first:?}\ngot  {}\nwant {}",
            got.len(),
            want.len(),
            show(got),
            show(want)
        );
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// /next and the request handler

/// An invocation reaches the runtime unchanged (status, every header, a binary body with NUL
/// and invalid UTF-8), the request handler gets the same bytes on stdin and the invocation's
/// headers as variables, and the runtime's /next goes upstream with its own headers.
#[test]
fn invocation_passes_byte_for_byte_and_request_handler_sees_it() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let body = binary_payload();
    let context =
        r#"{"client":{"installation_id":"i-1","app_title":"t"},"custom":{"k":"v w"},"env":{}}"#;
    let identity =
        r#"{"cognitoIdentityId":"us-east-1:abc","cognitoIdentityPoolId":"us-east-1:pool"}"#;
    let inv = Invocation::new("req-bin-1", body.clone())
        .header("Content-Type", "application/octet-stream")
        .header("Lambda-Runtime-Client-Context", context)
        .header("Lambda-Runtime-Cognito-Identity", identity)
        .header("Lambda-Runtime-Aws-Tenant-Id", "tenant-42")
        .header("X-Custom-Upstream", "a  b\tc;d=\"e\"")
        .add_header("X-Repeated", "one")
        .add_header("X-Repeated", "two");
    rt.push(inv.clone());
    let launcher = proxied(&sb, &rt, port)
        .name("proxy-ext")
        .env(
            "SHELL_EXT_REQUEST_HANDLER",
            &recorder(&sb, "request.sh", ""),
        )
        .env("MY_VAR", "kept");
    let (mut ext, mut runtime) = start(launcher, &rt, port);

    let got = runtime.next();
    assert_eq!(got.status, 200, "{got:?}");
    assert_bytes(&got.body, &body, "payload the runtime got");
    // Upstream's headers plus the Date it sent (the fake's fixed date: passed on, not renewed).
    let mut sent = inv.headers.clone();
    sent.push(("Date".into(), "Thu, 01 Jan 2026 00:00:00 GMT".into()));
    assert_headers_passed(
        &sent,
        &got.headers,
        &["Server"],
        "invocation to the runtime",
    );
    assert_eq!(
        got.header_all("Content-Length"),
        vec![body.len().to_string()]
    );

    // The runtime's /next as upstream saw it.
    let nexts = rt.expect(Route::Next, 1, secs(5));
    assert_eq!(nexts[0].method, "GET");
    assert_eq!(nexts[0].path, "/2018-06-01/runtime/invocation/next");
    assert_eq!(nexts[0].header("User-Agent"), Some("test-runtime/1.0"));
    assert!(nexts[0].body.is_empty());

    // The request handler: stdin and environment.
    assert_eq!(calls(&sb), vec!["REQUEST req-bin-1"]);
    assert_bytes(
        &seen_stdin(&sb, "REQUEST", "req-bin-1"),
        &body,
        "request handler stdin",
    );
    let env = seen_env(&sb, "REQUEST", "req-bin-1");
    let get = |k: &str| env_get(&env, k);
    assert_eq!(get("LAMBDA_EVENT_TYPE"), Some("REQUEST"));
    assert_eq!(get("LAMBDA_REQUEST_ID"), Some("req-bin-1"));
    assert_eq!(
        get("LAMBDA_DEADLINE_MS"),
        Some(inv.deadline_ms().to_string().as_str())
    );
    assert_eq!(get("LAMBDA_INVOKED_FUNCTION_ARN"), Some(FUNCTION_ARN));
    assert_eq!(get("_X_AMZN_TRACE_ID"), Some(TRACE));
    assert_eq!(get("LAMBDA_CLIENT_CONTEXT"), Some(context));
    assert_eq!(get("LAMBDA_COGNITO_IDENTITY"), Some(identity));
    assert_eq!(get("LAMBDA_TENANT_ID"), Some("tenant-42"));
    assert_eq!(get("LAMBDA_EXTENSION_NAME"), Some("proxy-ext"));
    assert_eq!(get("MY_VAR"), Some("kept"));
    assert_eq!(get("LAMBDA_RESPONSE_STATUS"), None);

    // A request handler alone needs no INVOKE event.
    assert_eq!(registered_events(&rt), vec!["SHUTDOWN"]);
    let answer = runtime.respond("req-bin-1", b"\"ok\"");
    assert_eq!(answer.status, 202, "{answer:?}");
    finish(&rt, &mut ext);
}

/// A 6 MB payload goes through whole, to the runtime and to the request handler; variables of
/// headers the invocation lacks are absent (not inherited from the extension's environment).
#[test]
fn six_megabyte_invocation_passes_whole() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let mut body = b"{\"data\":\"".to_vec();
    body.extend(pattern(6_000_000 - 11, 7).iter().map(|b| b'a' + b % 26));
    body.extend_from_slice(b"\"}");
    assert_eq!(body.len(), 6_000_000);
    let inv = Invocation::new("req-6mb", body.clone()).without("Lambda-Runtime-Trace-Id");
    rt.push(inv.clone());
    let launcher = proxied(&sb, &rt, port)
        .env(
            "SHELL_EXT_REQUEST_HANDLER",
            &recorder(&sb, "request.sh", ""),
        )
        .env("LAMBDA_CLIENT_CONTEXT", "stale")
        .env("LAMBDA_COGNITO_IDENTITY", "stale")
        .env("LAMBDA_TENANT_ID", "stale")
        .env("_X_AMZN_TRACE_ID", "stale");
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    let got = runtime.next();
    assert_eq!(got.status, 200);
    assert_bytes(&got.body, &body, "6 MB payload the runtime got");
    assert_eq!(got.header("Lambda-Runtime-Aws-Request-Id"), Some("req-6mb"));
    assert_bytes(
        &seen_stdin(&sb, "REQUEST", "req-6mb"),
        &body,
        "request handler stdin",
    );
    let env = seen_env(&sb, "REQUEST", "req-6mb");
    for absent in [
        "LAMBDA_CLIENT_CONTEXT",
        "LAMBDA_COGNITO_IDENTITY",
        "LAMBDA_TENANT_ID",
        "_X_AMZN_TRACE_ID",
    ] {
        assert_eq!(env_get(&env, absent), None, "{absent} without its header");
    }
    assert_eq!(env_get(&env, "LAMBDA_REQUEST_ID"), Some("req-6mb"));
    finish(&rt, &mut ext);
}

/// `log` (and the default): a failing request handler is logged and the invocation still
/// reaches the runtime; nothing is posted upstream for it.
#[test]
fn request_handler_failure_logged_and_invocation_goes_on() {
    for policy in [Some("log"), None] {
        let sb = Sandbox::new();
        let rt = RuntimeApi::start();
        let port = free_port();
        rt.push(Invocation::new("req-log", &b"{\"a\":1}"[..]));
        let handler = recorder(&sb, "request.sh", "echo oops-log-tail >&2; exit 1");
        let mut launcher = proxied(&sb, &rt, port).env("SHELL_EXT_REQUEST_HANDLER", &handler);
        if let Some(policy) = policy {
            launcher = launcher.env("SHELL_EXT_ON_REQUEST_FAILURE", policy);
        }
        let (mut ext, mut runtime) = start(launcher, &rt, port);
        let got = runtime.next();
        assert_eq!(got.status, 200, "{policy:?}: {got:?}");
        assert_eq!(got.header("Lambda-Runtime-Aws-Request-Id"), Some("req-log"));
        assert_eq!(got.body, b"{\"a\":1}");
        assert_eq!(calls(&sb), vec!["REQUEST req-log"]);
        assert!(
            wait_for(secs(2), || ext
                .stderr_str()
                .contains("Extension.RequestHandlerFailed")),
            "{policy:?}: no Extension.RequestHandlerFailed log line\n{}",
            ext.output_tail()
        );
        assert_eq!(rt.routes(), vec![Route::Next], "{policy:?}");
        runtime.respond("req-log", b"1");
        finish(&rt, &mut ext);
        assert!(rt.requests(Route::Error).is_empty());
    }
}

/// `reject`: the proxy fails the invocation upstream as `Extension.RequestRejected` with the
/// handler's stderr tail, the runtime never sees it and gets the next invocation instead.
#[test]
fn request_handler_failure_rejects_invocation() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let bad = br#"{"reject":true}"#.to_vec();
    let good = br#"{"id":7}"#.to_vec();
    rt.push(Invocation::new("req-bad", bad.clone()));
    rt.push(Invocation::new("req-good", good.clone()));
    let handler = recorder(
        &sb,
        "validate.sh",
        "if grep -q reject \"$f.in\"; then echo 'checking...' >&2; \
         echo 'bad payload: no field id' >&2; exit 3; fi",
    );
    let launcher = proxied(&sb, &rt, port)
        .env("SHELL_EXT_REQUEST_HANDLER", &handler)
        .env("SHELL_EXT_ON_REQUEST_FAILURE", "reject");
    let (mut ext, mut runtime) = start(launcher, &rt, port);

    let got = runtime.next();
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(
        got.header("Lambda-Runtime-Aws-Request-Id"),
        Some("req-good"),
        "the runtime must get the next invocation, not the rejected one"
    );
    assert_bytes(&got.body, &good, "payload the runtime got");
    assert_eq!(rt.served(), vec!["req-bad", "req-good"]);
    assert_eq!(calls(&sb), vec!["REQUEST req-bad", "REQUEST req-good"]);
    assert_eq!(
        rt.routes(),
        vec![Route::Next, Route::Error, Route::Next],
        "{}",
        rt.describe_runtime()
    );
    let error = &rt.requests(Route::Error)[0];
    assert_eq!(error.method, "POST");
    assert_eq!(error.path, "/2018-06-01/runtime/invocation/req-bad/error");
    assert_eq!(
        error.header("Lambda-Runtime-Function-Error-Type"),
        Some("Extension.RequestRejected")
    );
    assert!(
        error
            .header("Content-Type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{error:?}"
    );
    let json = error.json();
    assert_eq!(json["errorType"], "Extension.RequestRejected", "{json}");
    let message = json["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("bad payload: no field id"),
        "errorMessage must carry the stderr tail: {json}"
    );
    assert!(
        ext.stderr_str().contains("Extension.RequestRejected"),
        "{}",
        ext.output_tail()
    );

    let answer = runtime.respond("req-good", b"\"done\"");
    assert_eq!(answer.status, 202);
    finish(&rt, &mut ext);
}

/// The request handler runs under the invocation's deadline (minus the margin), in its own
/// process group: a hanging one is killed, with everything it started, before the deadline.
#[test]
fn request_handler_killed_at_invocation_deadline() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let token = unique_sleep_arg();
    let deadline = deadline_in(1500);
    rt.push(Invocation::with_deadline("req-slow", &b"{}"[..], deadline));
    rt.push(Invocation::new("req-after", &b"{\"n\":2}"[..]));
    let handler = recorder(
        &sb,
        "hang.sh",
        &format!("[ \"$LAMBDA_REQUEST_ID\" = req-slow ] || exit 0\nsleep {token} & sleep {token}"),
    );
    let launcher = proxied(&sb, &rt, port)
        .env("SHELL_EXT_REQUEST_HANDLER", &handler)
        .env("SHELL_EXT_ON_REQUEST_FAILURE", "reject");
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    let got = runtime.next();
    assert_eq!(
        got.header("Lambda-Runtime-Aws-Request-Id"),
        Some("req-after")
    );
    let error = &rt.expect(Route::Error, 1, secs(1))[0];
    assert_eq!(error.path, "/2018-06-01/runtime/invocation/req-slow/error");
    assert!(
        error.wall_ms() < deadline,
        "rejected {} ms after the deadline",
        error.wall_ms() - deadline
    );
    assert!(
        error.wall_ms() + 1000 > deadline,
        "killed {} ms before the deadline",
        deadline - error.wall_ms()
    );
    assert_eq!(error.json()["errorType"], "Extension.RequestRejected");
    assert!(
        wait_for(secs(2), || pids_with_arg(&token).is_empty()),
        "the handler's children survived: {:?}",
        pids_with_arg(&token)
    );
    runtime.respond("req-after", b"1");
    finish(&rt, &mut ext);
}

// ---------------------------------------------------------------------------------------------
// /response, /error and the response handler

/// A response and an error reach upstream byte for byte, the runtime gets upstream's answer
/// (its status and body, a 413 included), and the response handler gets each body with
/// `LAMBDA_RESPONSE_STATUS` and `LAMBDA_ERROR_TYPE`.
#[test]
fn response_and_error_reach_upstream_and_response_handler() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let launcher = proxied(&sb, &rt, port)
        .env(
            "SHELL_EXT_RESPONSE_HANDLER",
            &recorder(&sb, "response.sh", ""),
        )
        .env("LAMBDA_ERROR_TYPE", "stale")
        .env("LAMBDA_RESPONSE_TRUNCATED", "stale")
        .env("LAMBDA_RESPONSE_STATUS", "stale");
    for id in ["r-ok", "r-err", "r-413"] {
        rt.push(Invocation::new(id, format!("{{\"for\":\"{id}\"}}")));
        rt.push_invoke(id, deadline_in(10_000));
    }
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    assert_eq!(registered_events(&rt), vec!["INVOKE", "SHUTDOWN"]);

    // Success.
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-ok")
    );
    let ok_body = binary_payload();
    let sent = owned(&[
        ("Content-Type", "application/json"),
        ("X-Runtime-Header", "v 1"),
    ]);
    let answer = runtime
        .send(
            "POST",
            "/2018-06-01/runtime/invocation/r-ok/response",
            &[
                ("Content-Type", "application/json"),
                ("X-Runtime-Header", "v 1"),
            ],
            Body::Bytes(&ok_body),
        )
        .unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.body, br#"{"status":"OK"}"#);
    let up = &rt.expect(Route::Response, 1, secs(5))[0];
    assert_eq!(up.method, "POST");
    assert_eq!(up.path, "/2018-06-01/runtime/invocation/r-ok/response");
    assert_bytes(&up.body, &ok_body, "response upstream got");
    assert_headers_passed(&sent, &up.headers, &[], "response to upstream");
    assert_eq!(
        up.header_all("Content-Length"),
        vec![ok_body.len().to_string()]
    );
    expect_call(&sb, "RESPONSE r-ok", secs(5));
    assert_bytes(
        &seen_stdin(&sb, "RESPONSE", "r-ok"),
        &ok_body,
        "response handler stdin",
    );
    let env = seen_env(&sb, "RESPONSE", "r-ok");
    assert_eq!(env_get(&env, "LAMBDA_EVENT_TYPE"), Some("RESPONSE"));
    assert_eq!(env_get(&env, "LAMBDA_REQUEST_ID"), Some("r-ok"));
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_STATUS"), Some("success"));
    assert_eq!(env_get(&env, "LAMBDA_ERROR_TYPE"), None);
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_TRUNCATED"), None);

    // Error.
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-err")
    );
    let err_body =
        br#"{"errorMessage":"boom \u00e9","errorType":"Function.Unhandled","stackTrace":["a","b"]}"#;
    let answer = runtime.fail("r-err", "Function.Unhandled", err_body);
    assert_eq!(answer.status, 202, "{answer:?}");
    let up = &rt.expect(Route::Error, 1, secs(5))[0];
    assert_eq!(up.path, "/2018-06-01/runtime/invocation/r-err/error");
    assert_bytes(&up.body, err_body, "error upstream got");
    assert_eq!(
        up.header("Lambda-Runtime-Function-Error-Type"),
        Some("Function.Unhandled")
    );
    expect_call(&sb, "RESPONSE r-err", secs(5));
    assert_bytes(
        &seen_stdin(&sb, "RESPONSE", "r-err"),
        err_body,
        "response handler stdin (error)",
    );
    let env = seen_env(&sb, "RESPONSE", "r-err");
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_STATUS"), Some("error"));
    assert_eq!(
        env_get(&env, "LAMBDA_ERROR_TYPE"),
        Some("Function.Unhandled")
    );
    assert_eq!(env_get(&env, "LAMBDA_REQUEST_ID"), Some("r-err"));

    // Upstream refuses the response: the runtime gets that answer, status and body.
    let refusal = r#"{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#;
    rt.answer_times(Route::Response, json_reply(413, refusal), 1);
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-413")
    );
    let answer = runtime.respond("r-413", b"\"too big, pretend\"");
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.text(), refusal);
    assert_eq!(answer.header("Content-Type"), Some("application/json"));
    expect_call(&sb, "RESPONSE r-413", secs(5));
    finish(&rt, &mut ext);
    assert_eq!(
        calls(&sb),
        vec!["RESPONSE r-ok", "RESPONSE r-err", "RESPONSE r-413"]
    );
}

/// A streamed response (chunked, `Lambda-Runtime-Function-Response-Mode: streaming`) goes up
/// chunked and arrives intact, and the response handler gets it whole.
#[test]
fn streamed_response_passes_upstream_intact() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    rt.push(Invocation::new("r-stream", &b"{}"[..]));
    rt.push_invoke("r-stream", deadline_in(10_000));
    let launcher = proxied(&sb, &rt, port).env(
        "SHELL_EXT_RESPONSE_HANDLER",
        &recorder(&sb, "response.sh", ""),
    );
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    runtime.next();
    let parts = [
        b"{".to_vec(),
        pattern(4096 + 7, 1),
        b"\r\n0\r\n\r\n".to_vec(), // chunk framing inside the data
        pattern(100_000, 2),
        binary_payload(),
        b"}".to_vec(),
    ];
    let whole: Vec<u8> = parts.concat();
    let headers = [
        (
            "Content-Type",
            "application/vnd.awslambda.http-integration-response",
        ),
        ("Lambda-Runtime-Function-Response-Mode", "streaming"),
    ];
    let answer = runtime
        .send(
            "POST",
            "/2018-06-01/runtime/invocation/r-stream/response",
            &headers,
            Body::Chunked {
                chunks: parts.iter().map(Vec::as_slice).collect(),
                trailers: vec![],
            },
        )
        .unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    let up = &rt.expect(Route::Response, 1, secs(5))[0];
    assert_bytes(&up.body, &whole, "streamed body upstream got");
    assert!(
        up.header("Transfer-Encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked")),
        "a chunked body must go up chunked: {:?}",
        up.headers
    );
    assert_eq!(up.header("Content-Length"), None);
    assert_headers_passed(&owned(&headers), &up.headers, &[], "streamed response");
    expect_call(&sb, "RESPONSE r-stream", secs(5));
    assert_bytes(
        &seen_stdin(&sb, "RESPONSE", "r-stream"),
        &whole,
        "response handler stdin",
    );
    let env = seen_env(&sb, "RESPONSE", "r-stream");
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_STATUS"), Some("success"));
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_TRUNCATED"), None);
    finish(&rt, &mut ext);
}

/// A documented limit (docs/proxy.md): tiny_http's chunked decoder fails on trailers, so a
/// streamed response ending with trailers is cut off upstream (never completed there) and the
/// runtime gets a 502 `Extension.ProxyUpstreamError`; the extension lives on, and a new
/// connection gets the next invocation.
#[test]
fn streamed_response_with_trailers_is_cut_off_with_a_502() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    rt.push(Invocation::new("r-trail", &b"{}"[..]));
    rt.push(Invocation::new("r-trail-2", &b"{}"[..]));
    let launcher = proxied(&sb, &rt, port).env("SHELL_EXT_PROXY", "on");
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    runtime.next();
    let parts = [b"partial output ".to_vec(), pattern(70_000, 3)];
    let answer = runtime
        .send(
            "POST",
            "/2018-06-01/runtime/invocation/r-trail/response",
            &[
                ("Content-Type", "application/octet-stream"),
                ("Lambda-Runtime-Function-Response-Mode", "streaming"),
                (
                    "Trailer",
                    "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
                ),
            ],
            Body::Chunked {
                chunks: parts.iter().map(Vec::as_slice).collect(),
                trailers: vec![
                    ("Lambda-Runtime-Function-Error-Type", "Function.StreamError"),
                    ("Lambda-Runtime-Function-Error-Body", "eyJlcnJvciI6MX0="),
                ],
            },
        )
        .unwrap_or_else(|e| panic!("no answer to a chunked body with trailers: {e}"));
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.json()["errorType"], "Extension.ProxyUpstreamError");
    // The message blames the runtime's body, not Lambda.
    assert!(
        answer.text().contains("runtime's body"),
        "{}",
        answer.text()
    );
    // Upstream never got a complete response for it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        rt.requests(Route::Response).is_empty(),
        "upstream:\n{}",
        rt.describe_runtime()
    );
    let mut runtime = RuntimeClient::connect(port);
    let got = runtime.next();
    assert_eq!(
        got.header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-trail-2")
    );
    finish(&rt, &mut ext);
}

/// Past 6 MiB the response handler gets the first 6 MiB and `LAMBDA_RESPONSE_TRUNCATED=1`,
/// while upstream gets everything; exactly 6 MiB is not truncated.
#[test]
fn response_over_6_mib_truncated_for_handler_only() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    for id in ["r-huge", "r-exact"] {
        rt.push(Invocation::new(id, &b"{}"[..]));
        rt.push_invoke(id, deadline_in(15_000));
    }
    let launcher = proxied(&sb, &rt, port).env(
        "SHELL_EXT_RESPONSE_HANDLER",
        &recorder(&sb, "response.sh", ""),
    );
    let (mut ext, mut runtime) = start(launcher, &rt, port);

    runtime.next();
    let huge = pattern(6 * MIB + 12_345, 9);
    let answer = runtime
        .send(
            "POST",
            "/2018-06-01/runtime/invocation/r-huge/response",
            &[("Lambda-Runtime-Function-Response-Mode", "streaming")],
            Body::Chunked {
                chunks: huge.chunks(64 * 1024 + 3).collect(),
                trailers: vec![],
            },
        )
        .unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    let up = &rt.expect(Route::Response, 1, secs(10))[0];
    assert_bytes(&up.body, &huge, "upstream got the whole body");
    expect_call(&sb, "RESPONSE r-huge", secs(10));
    assert_bytes(
        &seen_stdin(&sb, "RESPONSE", "r-huge"),
        &huge[..6 * MIB],
        "response handler stdin: the first 6 MiB",
    );
    let env = seen_env(&sb, "RESPONSE", "r-huge");
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_TRUNCATED"), Some("1"));

    runtime.next();
    let exact = pattern(6 * MIB, 4);
    assert_eq!(runtime.respond("r-exact", &exact).status, 202);
    let up = &rt.expect(Route::Response, 2, secs(10))[1];
    assert_bytes(&up.body, &exact, "upstream got the 6 MiB body");
    expect_call(&sb, "RESPONSE r-exact", secs(10));
    assert_bytes(
        &seen_stdin(&sb, "RESPONSE", "r-exact"),
        &exact,
        "response handler stdin: exactly 6 MiB",
    );
    let env = seen_env(&sb, "RESPONSE", "r-exact");
    assert_eq!(env_get(&env, "LAMBDA_RESPONSE_TRUNCATED"), None);
    finish(&rt, &mut ext);
}

/// The extension's `/event/next` after an INVOKE waits until that invocation's response
/// handler has finished (it sleeps 300 ms, then writes a marker), while the runtime gets its
/// answer at once.
#[test]
fn event_next_held_until_response_handler_done() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let marker = sb.path("response-done");
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    {
        let seen = seen.clone();
        let marker = marker.clone();
        rt.on_request(move |r| {
            if r.endpoint == Endpoint::Next {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(marker.exists());
            }
        });
    }
    let handler = recorder(
        &sb,
        "response.sh",
        &format!("sleep 0.3\necho done > {}", marker.display()),
    );
    let launcher = proxied(&sb, &rt, port).env("SHELL_EXT_RESPONSE_HANDLER", &handler);
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    rt.expect_requests(Endpoint::Next, 1, secs(5));
    rt.push(Invocation::new("r-hold", &b"{}"[..]));
    rt.push_invoke("r-hold", deadline_in(10_000));
    assert!(rt.wait_events_consumed(secs(5)), "INVOKE not taken");
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-hold")
    );
    // The extension holds its next /event/next: the function has not answered yet.
    std::thread::sleep(ms(200));
    assert_eq!(rt.count(Endpoint::Next), 1, "{}", rt.describe());
    let sent = Instant::now();
    let answer = runtime.respond("r-hold", b"\"held\"");
    let took = sent.elapsed();
    assert_eq!(answer.status, 202);
    assert!(
        !marker.exists() && took < ms(300),
        "the runtime's answer waited for the response handler ({took:?})"
    );
    let nexts = rt.expect_requests(Endpoint::Next, 2, secs(5));
    let response_at = rt.requests(Route::Response)[0].at;
    let gap = nexts[1].at.duration_since(response_at);
    assert!(
        gap >= ms(300),
        "/event/next {gap:?} after the response, before its handler finished"
    );
    assert_eq!(seen.lock().unwrap().clone(), vec![false, true]);
    finish(&rt, &mut ext);
}

// ---------------------------------------------------------------------------------------------
// Everything else passes through

/// `/restore/next`, `/restore/error`, `/init/error`, unknown runtime routes and paths outside
/// the Runtime API go upstream unchanged (method, path and query, headers, body), upstream's
/// answer comes back unchanged, and no handler runs for them.
#[test]
fn other_routes_pass_through() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let launcher = proxied(&sb, &rt, port)
        .env(
            "SHELL_EXT_REQUEST_HANDLER",
            &recorder(&sb, "request.sh", ""),
        )
        .env(
            "SHELL_EXT_RESPONSE_HANDLER",
            &recorder(&sb, "response.sh", ""),
        );
    let (mut ext, mut runtime) = start(launcher, &rt, port);

    // SnapStart's restore/next, scripted with a header of its own.
    rt.answer_times(
        Route::RestoreNext,
        Routed::Respond {
            status: 200,
            headers: owned(&[("X-Restore", "restored; ok")]),
            body: vec![],
        },
        1,
    );
    let got = runtime
        .send(
            "GET",
            "/2018-06-01/runtime/restore/next",
            &[("X-From-Runtime", "r")],
            Body::None,
        )
        .unwrap();
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("X-Restore"), Some("restored; ok"));
    assert!(got.body.is_empty());
    let up = &rt.expect(Route::RestoreNext, 1, secs(5))[0];
    assert_eq!(up.method, "GET");
    assert_eq!(up.header("X-From-Runtime"), Some("r"));

    // restore/error and init/error: bodies and error types upstream, Lambda's 202 back.
    for (route, path) in [
        (Route::RestoreError, "/2018-06-01/runtime/restore/error"),
        (Route::InitError, "/2018-06-01/runtime/init/error"),
    ] {
        let body = br#"{"errorMessage":"cannot import","errorType":"Runtime.ImportModuleError"}"#;
        let headers = [
            ("Content-Type", "application/json"),
            (
                "Lambda-Runtime-Function-Error-Type",
                "Runtime.ImportModuleError",
            ),
        ];
        let got = runtime
            .send("POST", path, &headers, Body::Bytes(body))
            .unwrap();
        assert_eq!(got.status, 202, "{path}: {got:?}");
        assert_eq!(got.body, br#"{"status":"OK"}"#, "{path}");
        let up = &rt.expect(route, 1, secs(5))[0];
        assert_eq!(up.method, "POST");
        assert_eq!(up.path, path);
        assert_bytes(&up.body, body, path);
        assert_headers_passed(&owned(&headers), &up.headers, &[], path);
    }

    // An unknown route with a query, odd method, repeated headers and a binary body; upstream
    // answers with a status, headers and body of its own.
    let path = "/2018-06-01/runtime/future/thing?x=1&y=a%20b&z";
    let body = binary_payload();
    let headers = [
        ("Content-Type", "application/x-custom"),
        ("X-Repeated", "1"),
        ("X-Repeated", "2"),
        ("X-Spaces", "a  b"),
    ];
    let reply_headers = owned(&[
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Upstream", "yes"),
        ("X-Upstream-Repeated", "p"),
        ("X-Upstream-Repeated", "q"),
    ]);
    rt.answer_times(
        Route::Other,
        Routed::Respond {
            status: 418,
            headers: reply_headers.clone(),
            body: b"short and stout\x00\xff".to_vec(),
        },
        1,
    );
    let got = runtime
        .send("PATCH", path, &headers, Body::Bytes(&body))
        .unwrap();
    assert_eq!(got.status, 418, "{got:?}");
    assert_eq!(got.body, b"short and stout\x00\xff");
    let mut reply_sent = reply_headers.clone();
    reply_sent.push(("Date".into(), "Thu, 01 Jan 2026 00:00:00 GMT".into()));
    assert_headers_passed(&reply_sent, &got.headers, &["Server"], "upstream's answer");
    let up = &rt.expect(Route::Other, 1, secs(5))[0];
    assert_eq!(up.method, "PATCH");
    assert_eq!(up.path, path);
    assert_bytes(&up.body, &body, "unknown route body");
    assert_headers_passed(&owned(&headers), &up.headers, &[], "unknown route");

    // Outside the Runtime API's prefix, no body: upstream's 404 comes back as it is.
    let got = runtime
        .send("DELETE", "/2099-01-01/elsewhere/x?q=1", &[], Body::None)
        .unwrap();
    assert_eq!(got.status, 404, "{got:?}");
    assert_eq!(
        got.text(),
        r#"{"errorMessage":"Unknown route","errorType":"InvalidRequest"}"#
    );
    let up = &rt.expect(Route::Other, 2, secs(5))[1];
    assert_eq!(up.method, "DELETE");
    assert_eq!(up.path, "/2099-01-01/elsewhere/x?q=1");

    assert!(calls(&sb).is_empty(), "handlers ran: {:?}", calls(&sb));
    assert_eq!(rt.count(Endpoint::Next), 1, "{}", rt.describe());
    finish(&rt, &mut ext);
}

/// Two runtime connections each waiting in `/next` are both served (each gets its own
/// invocation, both go through the request handler), and a response goes through while a
/// `/next` is still waiting.
#[test]
fn two_concurrent_next_both_served() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let launcher = proxied(&sb, &rt, port).env(
        "SHELL_EXT_REQUEST_HANDLER",
        &recorder(&sb, "request.sh", ""),
    );
    let (mut ext, first) = start(launcher, &rt, port);
    let second = RuntimeClient::connect(port);
    let waiters: Vec<_> = [first, second]
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || {
                let got = client.next();
                (client, got)
            })
        })
        .collect();
    rt.expect_waiting(2, secs(5));
    rt.push(Invocation::new("c-1", &b"{\"n\":1}"[..]));
    rt.push(Invocation::new("c-2", &b"{\"n\":2}"[..]));
    let mut served: Vec<(RuntimeClient, Answer)> =
        waiters.into_iter().map(|t| t.join().unwrap()).collect();
    let mut ids: Vec<String> = served
        .iter()
        .map(|(_, got)| {
            assert_eq!(got.status, 200, "{got:?}");
            let id = got
                .header("Lambda-Runtime-Aws-Request-Id")
                .unwrap()
                .to_string();
            let want = if id == "c-1" {
                "{\"n\":1}"
            } else {
                "{\"n\":2}"
            };
            assert_eq!(got.text(), want, "payload of {id}");
            id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["c-1", "c-2"]);
    let mut handled = calls(&sb);
    handled.sort();
    assert_eq!(handled, vec!["REQUEST c-1", "REQUEST c-2"]);

    // One connection waits in /next again; the other's response still goes through.
    let (mut a, a_got) = served.remove(0);
    let (mut b, b_got) = served.remove(0);
    let a_id = a_got
        .header("Lambda-Runtime-Aws-Request-Id")
        .unwrap()
        .to_string();
    let b_id = b_got
        .header("Lambda-Runtime-Aws-Request-Id")
        .unwrap()
        .to_string();
    assert_eq!(a.respond(&a_id, b"\"a\"").status, 202);
    let waiting = thread::spawn(move || a.next());
    rt.expect_waiting(1, secs(5));
    let t0 = Instant::now();
    assert_eq!(b.respond(&b_id, b"\"b\"").status, 202);
    assert!(
        t0.elapsed() < secs(2),
        "a response waited for a pending /next"
    );
    rt.push(Invocation::new("c-3", &b"{}"[..]));
    let got = waiting.join().unwrap();
    assert_eq!(got.header("Lambda-Runtime-Aws-Request-Id"), Some("c-3"));
    assert_eq!(rt.requests(Route::Response).len(), 2);
    finish(&rt, &mut ext);
}

// ---------------------------------------------------------------------------------------------
// Upstream failures

/// Upstream's error statuses reach the runtime as they are (a 500 to /next, with its body;
/// a 500 and a 400 to responses); the request handler runs only for a 200 invocation.
#[test]
fn upstream_error_status_passed_through() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let launcher = proxied(&sb, &rt, port).env(
        "SHELL_EXT_REQUEST_HANDLER",
        &recorder(&sb, "request.sh", ""),
    );
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    let failure = r#"{"errorMessage":"Internal failure","errorType":"ServiceException"}"#;
    rt.answer_times(Route::Next, json_reply(500, failure), 1);
    let got = runtime.next();
    assert_eq!(got.status, 500, "{got:?}");
    assert_eq!(got.text(), failure);
    assert_eq!(got.header("Content-Type"), Some("application/json"));
    assert_eq!(
        rt.requests(Route::Next).len(),
        1,
        "a status is no reason to retry"
    );
    assert!(
        calls(&sb).is_empty(),
        "handler ran for a 500: {:?}",
        calls(&sb)
    );

    rt.push(Invocation::new("u-1", &b"{}"[..]));
    assert_eq!(runtime.next().status, 200);
    assert_eq!(calls(&sb), vec!["REQUEST u-1"]);
    rt.answer_times(Route::Response, json_reply(500, failure), 1);
    let got = runtime.respond("u-1", b"\"x\"");
    assert_eq!(got.status, 500, "{got:?}");
    assert_eq!(got.text(), failure);
    let invalid =
        r#"{"errorMessage":"Invalid state transition","errorType":"InvalidStateTransition"}"#;
    rt.answer_times(Route::Error, json_reply(400, invalid), 1);
    let got = runtime.fail("u-1", "Function.Unhandled", b"{}");
    assert_eq!(got.status, 400, "{got:?}");
    assert_eq!(got.text(), invalid);
    finish(&rt, &mut ext);
}

/// An upstream that drops the connection or breaks off its answer: the runtime gets 502 with
/// `Extension.ProxyUpstreamError`. A bodiless `/next` is tried once more on a fresh connection
/// first, so one drop is survived.
#[test]
fn upstream_dropped_or_broken_is_502() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let launcher = proxied(&sb, &rt, port).env("SHELL_EXT_PROXY", "on");
    let (mut ext, mut runtime) = start(launcher, &rt, port);
    let check_502 = |got: &Answer, what: &str| {
        assert_eq!(got.status, 502, "{what}: {got:?}");
        assert!(
            got.header("Content-Type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{what}: {got:?}"
        );
        let json = got.json();
        assert_eq!(
            json["errorType"], "Extension.ProxyUpstreamError",
            "{what}: {json}"
        );
        let message = json["errorMessage"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("lambda-shell-extension proxy: upstream"),
            "{what}: {json}"
        );
    };

    // Dropped twice: the retry fails too.
    rt.answer_times(Route::Next, Routed::Drop, 2);
    check_502(&runtime.next(), "/next dropped twice");
    assert_eq!(
        rt.requests(Route::Next).len(),
        2,
        "{}",
        rt.describe_runtime()
    );

    // Dropped once: the retry gets the invocation.
    rt.answer_times(Route::Next, Routed::Drop, 1);
    rt.push(Invocation::new("d-1", &b"{\"d\":1}"[..]));
    let got = runtime.next();
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body, b"{\"d\":1}");
    assert_eq!(rt.requests(Route::Next).len(), 4);

    // A /next answer broken off mid-body.
    rt.answer_times(Route::Next, broken_reply(), 1);
    check_502(&runtime.next(), "/next broken off");

    // A response (with a body: not retried) dropped, then broken off.
    rt.answer_times(Route::Response, Routed::Drop, 1);
    check_502(&runtime.respond("d-1", b"\"r\""), "/response dropped");
    rt.answer_times(Route::Response, broken_reply(), 1);
    check_502(&runtime.respond("d-1", b"\"r\""), "/response broken off");
    assert_eq!(rt.requests(Route::Response).len(), 2);
    assert!(
        ext.stderr_str().contains("upstream"),
        "the failures are logged\n{}",
        ext.output_tail()
    );
    finish(&rt, &mut ext);
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// A port already taken: init/error `Extension.ConfigInvalid` naming the port and the variable;
/// no event is asked for and no handler runs.
#[test]
fn port_taken_is_config_invalid() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut ext = proxied(&sb, &rt, port)
        .env(
            "SHELL_EXT_REQUEST_HANDLER",
            &recorder(&sb, "request.sh", ""),
        )
        .spawn();
    ext.expect_exit(1, secs(10));
    let errors = rt.requests_to(Endpoint::InitError);
    assert_eq!(errors.len(), 1, "{}", rt.describe());
    let message = check_error_request(&rt, &errors[0], "Extension.ConfigInvalid");
    assert!(
        message.contains(&port.to_string()) && message.contains("SHELL_EXT_PROXY_PORT"),
        "the message must name the port and the variable: {message}"
    );
    assert_none(&rt, Endpoint::Next);
    assert!(calls(&sb).is_empty());
    drop(taken);
}

/// With the proxy off (an event handler, no proxy handler, `SHELL_EXT_PROXY` unset, off or
/// proxy handlers blank), `SHELL_EXT_PROXY_PORT` alone opens nothing.
#[test]
fn proxy_off_nothing_listens() {
    let cases: [&[(&str, &str)]; 3] = [
        &[],
        &[("SHELL_EXT_PROXY", "off")],
        &[
            ("SHELL_EXT_REQUEST_HANDLER", "  "),
            ("SHELL_EXT_RESPONSE_HANDLER", ""),
        ],
    ];
    for extra in cases {
        let sb = Sandbox::new();
        let rt = RuntimeApi::start();
        let port = free_port();
        let mut launcher = proxied(&sb, &rt, port).handler(&recorder(&sb, "handler.sh", ""));
        for (k, v) in extra {
            launcher = launcher.env(k, v);
        }
        let mut ext = launcher.spawn();
        // By the first /event/next a proxy would long have been listening.
        rt.expect_requests(Endpoint::Next, 1, secs(5));
        assert!(!listening(port), "{extra:?}: something listens on {port}");
        let free = std::net::TcpListener::bind(("127.0.0.1", port));
        assert!(free.is_ok(), "{extra:?}: port {port} is taken: {free:?}");
        drop(free);
        assert_eq!(registered_events(&rt), vec!["INVOKE", "SHUTDOWN"]);
        rt.push_invoke("off-1", deadline_in(5000));
        expect_call(&sb, "INVOKE off-1", secs(5));
        finish(&rt, &mut ext);
        assert!(rt.all().is_empty(), "{extra:?}: {}", rt.describe_runtime());
    }
}

/// A response handler needs INVOKE events: with `SHELL_EXT_EVENTS=SHUTDOWN`, or on Managed
/// Instances, it is `Extension.ConfigInvalid` naming `SHELL_EXT_RESPONSE_HANDLER`, and the
/// proxy does not start.
#[test]
fn response_handler_without_invoke_events_is_config_invalid() {
    let cases: [(&str, &str); 2] = [
        ("SHELL_EXT_EVENTS", "SHUTDOWN"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances"),
    ];
    for (k, v) in cases {
        let sb = Sandbox::new();
        let rt = RuntimeApi::start();
        let port = free_port();
        let mut ext = proxied(&sb, &rt, port)
            .env(
                "SHELL_EXT_RESPONSE_HANDLER",
                &recorder(&sb, "response.sh", ""),
            )
            .env(k, v)
            .spawn();
        ext.expect_exit(1, secs(10));
        let errors = rt.requests_to(Endpoint::InitError);
        assert_eq!(errors.len(), 1, "{k}={v}: {}", rt.describe());
        let message = check_error_request(&rt, &errors[0], "Extension.ConfigInvalid");
        assert!(
            message.contains("SHELL_EXT_RESPONSE_HANDLER"),
            "{k}={v}: {message}"
        );
        assert_none(&rt, Endpoint::Next);
        assert!(!listening(port), "{k}={v}: the proxy started");
    }
}

/// Invalid proxy settings are `Extension.ConfigInvalid` naming the variable.
#[test]
fn invalid_proxy_settings_are_config_invalid() {
    let cases: [(&str, &str); 6] = [
        ("SHELL_EXT_PROXY_PORT", "0"),
        ("SHELL_EXT_PROXY_PORT", "65536"),
        ("SHELL_EXT_PROXY_PORT", "90x"),
        ("SHELL_EXT_ON_REQUEST_FAILURE", "drop"),
        ("SHELL_EXT_PROXY", "yes"),
        ("SHELL_EXT_PROXY", "maybe"),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(k, v)| {
            thread::spawn(move || {
                let sb = Sandbox::new();
                let rt = RuntimeApi::start();
                let mut ext = sb
                    .ext(&rt)
                    .env("SHELL_EXT_REQUEST_HANDLER", "cat > /dev/null")
                    .env("SHELL_EXT_PROXY_PORT", &free_port().to_string())
                    .env(k, v)
                    .spawn();
                ext.expect_exit(1, secs(10));
                let errors = rt.requests_to(Endpoint::InitError);
                assert_eq!(errors.len(), 1, "{k}={v}: {}", rt.describe());
                let message = check_error_request(&rt, &errors[0], "Extension.ConfigInvalid");
                assert!(message.contains(k), "{k}={v}: {message}");
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

/// A request target that is not a path (`@host:port/x`, an absolute URL, `*`) would make the
/// upstream URL `http://<api>@host:port/x`: the proxy must refuse it (400) and connect nowhere.
#[test]
fn request_target_that_is_not_a_path_is_refused_and_goes_nowhere() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let (mut ext, mut runtime) = start(
        proxied(&sb, &rt, port).env("SHELL_EXT_PROXY", "on"),
        &rt,
        port,
    );

    // Where such a target would lead: a listener that records whether anything connected.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let there = elsewhere.local_addr().unwrap();
    for target in [
        format!("@{there}/2018-06-01/runtime/invocation/next"),
        format!("http://{there}/2018-06-01/runtime/invocation/next"),
        "*".to_string(),
    ] {
        let got = runtime.send("GET", &target, &[], Body::None).unwrap();
        assert_eq!(got.status, 400, "{target}: {got:?}");
        assert!(
            got.text().contains("not a path"),
            "{target}: the answer names the problem: {got:?}"
        );
        runtime = RuntimeClient::connect(port);
    }
    thread::sleep(ms(200));
    assert!(
        elsewhere.accept().is_err(),
        "the proxy connected to {there}"
    );
    assert!(rt.all().is_empty(), "forwarded upstream: {}", rt.describe());
    finish(&rt, &mut ext);
}
