//! Self-test of the in-test fake Extensions API (tests/common), driven with ureq 3 (the
//! client the binary uses) and with a raw socket, so that a failure elsewhere can be blamed on
//! the binary and not on the fake.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;

use common::*;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut resp = match method {
        "GET" => {
            let mut r = agent.get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call().expect("GET")
        }
        _ => {
            let mut r = agent.post(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send(body.unwrap_or("")).expect("POST")
        }
    };
    Reply {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: resp.body_mut().read_to_string().unwrap(),
    }
}

#[test]
fn fake_api_register_next_and_errors_like_rie() {
    let api = FakeApi::start();
    let base = format!("http://{}/2020-01-01/extension", api.runtime_api());
    let a = agent();

    // Missing name -> 403 InvalidExtensionName.
    let r = call(&a, "POST", &format!("{base}/register"), &[], Some("{}"));
    assert_eq!(r.status, 403);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["errorType"], "Extension.InvalidExtensionName");

    // Register without the accountId feature: no accountId.
    let r = call(
        &a,
        "POST",
        &format!("{base}/register"),
        &[("Lambda-Extension-Name", "x")],
        Some(r#"{"events":["INVOKE","SHUTDOWN"]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let id = r.header("Lambda-Extension-Identifier").unwrap().to_string();
    assert_eq!(id.len(), 36);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["functionName"], "fn");
    assert_eq!(v["functionVersion"], "$LATEST");
    assert_eq!(v["handler"], "index.handler");
    assert!(v.get("accountId").is_none());

    // Second registration -> 403 InvalidExtensionState.
    let r = call(
        &a,
        "POST",
        &format!("{base}/register"),
        &[("Lambda-Extension-Name", "x")],
        Some("{}"),
    );
    assert_eq!(r.status, 403);

    // next without / with a wrong identifier -> 403.
    let r = call(&a, "GET", &format!("{base}/event/next"), &[], None);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Extension.MissingExtensionIdentifier"));
    let other = uuid_like();
    let r = call(
        &a,
        "GET",
        &format!("{base}/event/next"),
        &[("Lambda-Extension-Identifier", &other)],
        None,
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Extension.UnknownExtensionIdentifier"));

    // Long poll: blocks until an event is pushed.
    let pushed = {
        let a2 = a.clone();
        let url = format!("{base}/event/next");
        let id2 = id.clone();
        let h = thread::spawn(move || {
            call(
                &a2,
                "GET",
                &url,
                &[("Lambda-Extension-Identifier", &id2)],
                None,
            )
        });
        // The long poll must still be pending once the request has arrived.
        api.expect_requests(Endpoint::Next, 3, secs(2));
        thread::sleep(ms(100));
        assert!(!h.is_finished(), "next returned without an event");
        let body = api.push_invoke("req-1", 12345);
        (h.join().unwrap(), body)
    };
    let (r, body) = pushed;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_bytes(), &body[..]);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("Lambda-Extension-Event-Identifier").is_some());

    // SHUTDOWN is served without a content type.
    api.push_shutdown("spindown", 999);
    let r = call(
        &a,
        "GET",
        &format!("{base}/event/next"),
        &[("Lambda-Extension-Identifier", &id)],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_none(), "{:?}", r.headers);
    assert!(r.body.contains("\"spindown\""));

    // exit/error: missing type header -> 403 MissingHeader; with it -> 202 {"status":"OK"}.
    let r = call(
        &a,
        "POST",
        &format!("{base}/exit/error"),
        &[("Lambda-Extension-Identifier", &id)],
        Some("{}"),
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Extension.MissingHeader"));
    let r = call(
        &a,
        "POST",
        &format!("{base}/exit/error"),
        &[
            ("Lambda-Extension-Identifier", &id),
            ("Lambda-Extension-Function-Error-Type", "Extension.X"),
        ],
        Some(r#"{"errorMessage":"m","errorType":"Extension.X"}"#),
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.body, r#"{"status":"OK"}"#);
    // init/error after next -> 403 (RIE state machine).
    let r = call(
        &a,
        "POST",
        &format!("{base}/init/error"),
        &[
            ("Lambda-Extension-Identifier", &id),
            ("Lambda-Extension-Function-Error-Type", "Extension.X"),
        ],
        Some("{}"),
    );
    assert_eq!(r.status, 403);

    // Every request was recorded, with bodies and case-insensitive headers.
    let reqs = api.requests();
    assert_eq!(reqs.len(), 10, "{}", api.describe());
    let reg = &api.requests_to(Endpoint::Register)[1];
    assert_eq!(reg.header("lambda-extension-name"), Some("x"));
    assert_eq!(reg.body, br#"{"events":["INVOKE","SHUTDOWN"]}"#);
    assert_eq!(api.served().len(), 2);
}

#[test]
fn fake_api_account_id_prefix_and_keep_alive() {
    let api = FakeApi::start_with_prefix("/.rt");
    // Raw socket, two requests on one connection.
    let mut s = TcpStream::connect(api.addr()).unwrap();
    let body = r#"{"events":["SHUTDOWN"]}"#;
    let req = format!(
        "POST /.rt/2020-01-01/extension/register HTTP/1.1\r\nHost: x\r\nLambda-Extension-Name: y\r\nLambda-Extension-Accept-Feature: foo, accountId\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    api.expect_requests(Endpoint::Register, 1, secs(2));
    // Wrong prefix -> 404, same connection.
    s.write_all(
        b"GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\"accountId\":\"123456789012\""), "{out}");
    assert!(out.contains("HTTP/1.1 404 Not Found\r\n"), "{out}");
    assert_eq!(api.count(Endpoint::Unknown), 1);
    assert_eq!(
        api.requests_to(Endpoint::Register)[0].path,
        "/.rt/2020-01-01/extension/register"
    );
}

#[test]
fn fake_api_faults() {
    let api = FakeApi::start();
    let base = format!("http://{}/2020-01-01/extension", api.runtime_api());
    let a = agent();
    api.fault_times(Endpoint::Register, Fault::Status(500, "{}".into()), 1);
    let r = call(
        &a,
        "POST",
        &format!("{base}/register"),
        &[("Lambda-Extension-Name", "x")],
        Some("{}"),
    );
    assert_eq!(r.status, 500);
    let r = call(
        &a,
        "POST",
        &format!("{base}/register"),
        &[("Lambda-Extension-Name", "x")],
        Some("{}"),
    );
    assert_eq!(r.status, 200);
    let id = r.header("Lambda-Extension-Identifier").unwrap().to_string();

    api.fault_times(Endpoint::Next, Fault::Drop, 1);
    let err = a
        .get(format!("{base}/event/next"))
        .header("Lambda-Extension-Identifier", &id)
        .call();
    assert!(err.is_err(), "a dropped connection must be an error");

    api.fault_times(Endpoint::Next, Fault::Unparsable, 1);
    let r = call(
        &a,
        "GET",
        &format!("{base}/event/next"),
        &[("Lambda-Extension-Identifier", &id)],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&r.body).is_err());

    api.fault_times(Endpoint::Next, Fault::Delay(ms(200)), 1);
    api.push_shutdown("spindown", 1);
    let t = std::time::Instant::now();
    let r = call(
        &a,
        "GET",
        &format!("{base}/event/next"),
        &[("Lambda-Extension-Identifier", &id)],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= ms(200));
    assert_eq!(api.count(Endpoint::Next), 3);
}

/// Logs and Telemetry subscription endpoints: identifier validated like the Extensions API
/// (403), body validated (400), 200 `"OK"`, wrong method 405, faults injectable, prefix honoured.
#[test]
fn fake_api_logs_and_telemetry_subscriptions() {
    let api = FakeApi::start_with_prefix("/.rt");
    let root = format!("http://{}", api.runtime_api());
    let a = agent();
    let put = |path: &str, id: Option<&str>, body: &str| -> (u16, String) {
        let mut r = a.put(format!("{root}{path}"));
        if let Some(id) = id {
            r = r.header("Lambda-Extension-Identifier", id);
        }
        let mut resp = r.send(body).expect("PUT");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    };
    let error_type = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["errorType"].as_str().unwrap_or("").to_string()
    };
    let logs =
        r#"{"destination":{"protocol":"HTTP","URI":"http://sandbox:1234"},"types":["platform"]}"#;
    let telemetry = r#"{"schemaVersion":"2025-01-29","destination":{"protocol":"HTTP","URI":"http://sandbox:1234"},"types":["platform"]}"#;

    // Before registration: missing, malformed and unknown identifiers.
    for path in ["/2020-08-15/logs", "/2022-07-01/telemetry"] {
        let (status, body) = put(path, None, logs);
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(error_type(&body), "Extension.MissingExtensionIdentifier");
        let (status, body) = put(path, Some("nope"), logs);
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(error_type(&body), "Extension.InvalidExtensionIdentifier");
        let (status, body) = put(path, Some(&uuid_like()), logs);
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(error_type(&body), "Extension.UnknownExtensionIdentifier");
    }

    let r = call(
        &a,
        "POST",
        &format!("{root}/2020-01-01/extension/register"),
        &[("Lambda-Extension-Name", "x")],
        Some("{}"),
    );
    assert_eq!(r.status, 200);
    let id = r.header("Lambda-Extension-Identifier").unwrap().to_string();

    assert_eq!(
        put("/2020-08-15/logs", Some(&id), logs),
        (200, "\"OK\"".into())
    );
    assert_eq!(
        put("/2022-07-01/telemetry", Some(&id), telemetry),
        (200, "\"OK\"".into())
    );
    // Telemetry requires schemaVersion; both require non-empty types.
    let (status, body) = put("/2022-07-01/telemetry", Some(&id), logs);
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_type(&body), "ValidationError");
    let (status, body) = put(
        "/2020-08-15/logs",
        Some(&id),
        r#"{"destination":{"protocol":"HTTP","URI":"http://sandbox:1"},"types":[]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_type(&body), "Logs.ValidationError");

    // Faults, per endpoint.
    api.fault_times(Endpoint::Telemetry, Fault::Status(500, "{}".into()), 1);
    assert_eq!(put("/2022-07-01/telemetry", Some(&id), telemetry).0, 500);
    assert_eq!(put("/2020-08-15/logs", Some(&id), logs).0, 200);
    assert_eq!(put("/2022-07-01/telemetry", Some(&id), telemetry).0, 200);

    // Wrong method: 405; without the prefix: 404.
    let r = call(
        &a,
        "POST",
        &format!("{root}/2020-08-15/logs"),
        &[],
        Some(logs),
    );
    assert_eq!(r.status, 405);
    let r = a
        .put(format!("http://{}/2020-08-15/logs", api.addr()))
        .header("Lambda-Extension-Identifier", &id)
        .send(logs)
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    assert_eq!(api.count(Endpoint::Logs), 6, "{}", api.describe());
    assert_eq!(api.count(Endpoint::Telemetry), 7, "{}", api.describe());
    assert_eq!(api.count(Endpoint::Unknown), 2, "{}", api.describe());
    assert_eq!(
        api.requests_to(Endpoint::Logs)[0].path,
        "/.rt/2020-08-15/logs"
    );
}
