//! Telemetry through the real binary: the subscription on the wire, batches POSTed to its
//! listener reaching the telemetry command intact and in order, backpressure, the flush modes,
//! the drain at SHUTDOWN, and the failure paths.

mod common;

use std::fs;
use std::sync::{Arc, Mutex};

use common::*;

/// A telemetry command that appends each batch, then a newline, to `batches` and its item
/// count to `items`.
fn recorder(sb: &Sandbox) -> String {
    sb.script(
        "telemetry.sh",
        &format!(
            "#!/bin/sh\ncat >> {b}\necho >> {b}\necho \"$LAMBDA_TELEMETRY_BATCH_ITEMS\" >> {i}\n",
            b = sb.p("batches"),
            i = sb.p("items"),
        ),
    )
}

fn batches_seen(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.path("batches"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn subscription_on_the_wire_and_schema_auto() {
    for (init_type, schema) in [
        (None, "2022-12-13"),
        (Some("lambda-managed-instances"), "2025-01-29"),
    ] {
        let sb = Sandbox::new();
        let api = FakeApi::start();
        let mut launcher = sb
            .ext(&api)
            .env("SHELL_EXT_TELEMETRY_HANDLER", &recorder(&sb));
        if let Some(init_type) = init_type {
            launcher = launcher.env("AWS_LAMBDA_INITIALIZATION_TYPE", init_type);
        }
        let mut ext = launcher.spawn();
        let target = TelemetryTarget::of(&api);
        let put = &api.requests_to(Endpoint::Telemetry)[0];
        assert_eq!(put.method, "PUT");
        assert_eq!(
            put.header("Lambda-Extension-Identifier"),
            api.extension_id().as_deref()
        );
        let body = put.json();
        assert_eq!(body["schemaVersion"], schema, "{body}");
        assert_eq!(
            body["types"],
            serde_json::json!(["platform", "function"]),
            "{body}"
        );
        assert_eq!(body["destination"]["protocol"], "HTTP", "{body}");
        assert!(body.get("buffering").is_none(), "{body}");
        assert!(target.port() != 9001 && target.port() != 0);
        // Telemetry only, delivered in the background: nothing runs per invoke.
        assert_eq!(registered_events(&api), ["SHUTDOWN"]);
        // Subscribed during Init: before the first /event/next.
        let requests = api.requests();
        let first_next = requests.iter().position(|r| r.endpoint == Endpoint::Next);
        let put_at = requests
            .iter()
            .position(|r| r.endpoint == Endpoint::Telemetry);
        if let Some(first_next) = first_next {
            assert!(put_at < Some(first_next));
        }
        api.push_shutdown("spindown", deadline_in(2000));
        ext.expect_exit(0, secs(10));
        assert!(
            ext.stderr_str().contains(&format!(
                "subscribed to platform,function with schema {schema}"
            )),
            "{}",
            ext.stderr_str()
        );
    }
}

#[test]
fn types_and_buffering_reach_the_put_body() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .env("SHELL_EXT_TELEMETRY_TYPES", "function, Extension")
        .env("SHELL_EXT_TELEMETRY_MAX_ITEMS", "1000")
        .env("SHELL_EXT_TELEMETRY_TIMEOUT_MS", "25")
        .spawn();
    TelemetryTarget::of(&api);
    let body = api.requests_to(Endpoint::Telemetry)[0].json();
    assert_eq!(
        body["types"],
        serde_json::json!(["function", "extension"]),
        "{body}"
    );
    assert_eq!(body["buffering"]["maxItems"], 1000, "{body}");
    assert_eq!(body["buffering"]["timeoutMs"], 25, "{body}");
    assert_eq!(body["buffering"]["maxBytes"], 262_144, "{body}");
    assert_eq!(registered_events(&api), ["INVOKE", "SHUTDOWN"]);
    api.push_shutdown("spindown", deadline_in(2000));
    ext.expect_exit(0, secs(10));
}

/// 2025-01-29 refused with 400 (some runtimes): retried once with 2022-12-13.
#[test]
fn schema_2025_refused_falls_back_to_2022_12_13() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault_times(
        Endpoint::Telemetry,
        Fault::Status(
            400,
            r#"{"errorType":"ValidationError","errorMessage":"unsupported schema"}"#.into(),
        ),
        1,
    );
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .env("SHELL_EXT_TELEMETRY_SCHEMA", "2025-01-29")
        .spawn();
    let puts = api.expect_requests(Endpoint::Telemetry, 2, secs(10));
    assert_eq!(puts[0].json()["schemaVersion"], "2025-01-29");
    assert_eq!(puts[1].json()["schemaVersion"], "2022-12-13");
    api.push_shutdown("spindown", deadline_in(2000));
    ext.expect_exit(0, secs(10));
    let err = ext.stderr_str();
    assert!(err.contains("with schema 2022-12-13"), "{err}");
    assert_none(&api, Endpoint::InitError);
}

#[test]
fn refused_subscription_is_an_init_error() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(
        Endpoint::Telemetry,
        Fault::Status(
            400,
            r#"{"errorType":"ValidationError","errorMessage":"types should not be empty"}"#.into(),
        ),
    );
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.TelemetrySubscribeFailed");
    assert!(msg.contains("types should not be empty"), "{msg}");
    assert_eq!(
        api.count(Endpoint::Telemetry),
        1,
        "2022-12-13 is not retried"
    );
    assert_none(&api, Endpoint::Next);
}

/// The AWS emulator's 202 Telemetry.NotSupported: a warning, and the extension keeps working.
#[test]
fn not_supported_is_a_warning_and_the_extension_carries_on() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(
        Endpoint::Telemetry,
        Fault::Status(
            202,
            r#"{"errorType":"Telemetry.NotSupported","errorMessage":"Telemetry API is not supported"}"#
                .into(),
        ),
    );
    let marker = sb.path("handled");
    api.push_invoke("req-1", deadline_in(5000));
    api.push_shutdown("spindown", deadline_in(2000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("touch {}", marker.display()))
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .spawn();
    ext.expect_exit(0, secs(10));
    assert!(marker.exists());
    assert_none(&api, Endpoint::InitError);
    let err = ext.stderr_str();
    assert!(
        err.contains("WARN telemetry: this Lambda API does not support"),
        "{err}"
    );
}

/// 1 000 batches, each answered 200, all reach the command byte for byte and in order, one
/// run per batch with its item count; then SHUTDOWN drains and reports the counts.
#[test]
fn a_thousand_batches_arrive_intact_and_in_order() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", &recorder(&sb))
        .spawn();
    let target = TelemetryTarget::of(&api);
    let mut sent = Vec::new();
    for n in 0..1000 {
        let records: Vec<String> = (0..=(n % 3))
            .map(|i| record("function", &format!(r#""line {n}.{i} \u00e9 \"q\"""#)))
            .collect();
        let body = batch(&records);
        target.deliver(&body);
        sent.push(String::from_utf8(body).unwrap());
    }
    api.push_shutdown("spindown", deadline_in(8000));
    ext.expect_exit(0, secs(30));
    assert_eq!(batches_seen(&sb), sent);
    let items: Vec<String> = fs::read_to_string(sb.path("items"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let expected: Vec<String> = (0..1000).map(|n| (n % 3 + 1).to_string()).collect();
    assert_eq!(items, expected);
    let err = ext.stderr_str();
    assert!(
        err.contains("telemetry: 1000 batches received, 1000 delivered"),
        "{err}"
    );
}

/// A slow command fills the queue: the listener answers late (backpressure), never drops.
#[test]
fn a_slow_command_causes_backpressure_not_loss() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let slow = sb.script(
        "slow.sh",
        &format!("#!/bin/sh\nsleep 0.2\nwc -c >> {}\n", sb.p("sizes")),
    );
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", &slow)
        .spawn();
    let target = TelemetryTarget::of(&api);
    let body = batch(&[record("function", &format!("\"{}\"", "x".repeat(1 << 20)))]);
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..14 {
        let (status, took) = target.post(&body);
        assert_eq!(status, 200);
        slowest = slowest.max(took);
    }
    // 14 MiB against an 8 MiB queue: some answer had to wait for a run of the command.
    assert!(
        slowest >= ms(100),
        "no backpressure: slowest answer {slowest:?}"
    );
    api.push_shutdown("spindown", deadline_in(8000));
    ext.expect_exit(0, secs(30));
    let sizes = fs::read_to_string(sb.path("sizes")).unwrap();
    assert_eq!(sizes.lines().count(), 14, "{sizes}");
    assert!(
        sizes.lines().all(|n| n.trim() == body.len().to_string()),
        "{sizes}"
    );
}

/// `end-of-invoke`: the INVOKE's /event/next waits until the batch with its
/// `platform.runtimeDone` has been through the command.
#[test]
fn end_of_invoke_holds_next_until_runtime_done_is_delivered() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let batches = sb.path("batches");
    let seen_at_next: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let seen = seen_at_next.clone();
        let batches = batches.clone();
        api.on_request(move |request| {
            if request.endpoint == Endpoint::Next {
                let content = fs::read_to_string(&batches).unwrap_or_default();
                seen.lock().unwrap().push(content);
            }
        });
    }
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", &recorder(&sb))
        .env("SHELL_EXT_TELEMETRY_FLUSH", "end-of-invoke")
        .spawn();
    let target = TelemetryTarget::of(&api);
    api.expect_requests(Endpoint::Next, 1, secs(5));
    api.push_invoke("req-eoi", deadline_in(10_000));
    std::thread::sleep(ms(400));
    assert_eq!(
        api.count(Endpoint::Next),
        1,
        "next before the runtimeDone batch"
    );
    target.deliver(&batch(&[platform("start", "req-eoi")]));
    std::thread::sleep(ms(200));
    assert_eq!(
        api.count(Endpoint::Next),
        1,
        "next before the runtimeDone batch"
    );
    let done = batch(&[platform("runtimeDone", "req-eoi")]);
    target.deliver(&done);
    api.expect_requests(Endpoint::Next, 2, secs(5));
    let seen = seen_at_next.lock().unwrap()[1].clone();
    assert!(seen.contains(std::str::from_utf8(&done).unwrap()), "{seen}");
    api.push_shutdown("spindown", deadline_in(2000));
    target.deliver(&batch(&[platform("report", "req-eoi")]));
    ext.expect_exit(0, secs(10));
}

/// At SHUTDOWN the extension keeps receiving until the last invocation's `platform.report`
/// has arrived, delivers it, and only then exits.
#[test]
fn batches_after_shutdown_are_drained_before_exit() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", &recorder(&sb))
        .spawn();
    let target = TelemetryTarget::of(&api);
    api.push_invoke("req-last", deadline_in(5000));
    api.expect_requests(Endpoint::Next, 2, secs(5));
    api.push_shutdown("spindown", deadline_in(3000));
    std::thread::sleep(ms(300));
    assert!(
        ext.is_running(),
        "exited before the last platform.report arrived"
    );
    let report = batch(&[platform("report", "req-last")]);
    target.deliver(&report);
    ext.expect_exit(0, secs(10));
    assert_eq!(batches_seen(&sb), [String::from_utf8(report).unwrap()]);
    assert!(ext
        .stderr_str()
        .contains("telemetry: 1 batch received, 1 delivered"));
}

/// Without the report, the SHUTDOWN deadline ends the wait, and the log says what was left.
#[test]
fn shutdown_deadline_ends_the_wait_for_reports() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .spawn();
    TelemetryTarget::of(&api);
    api.push_invoke("req-unreported", deadline_in(5000));
    api.push_shutdown("spindown", deadline_in(800));
    ext.expect_exit(0, secs(5));
    let err = ext.stderr_str();
    assert!(
        err.contains("the last platform.report not received"),
        "{err}"
    );
}

#[test]
fn an_oversize_batch_is_refused_with_413() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", &recorder(&sb))
        .spawn();
    let target = TelemetryTarget::of(&api);
    let (status, _) = target.post(&vec![b' '; 9 * 1024 * 1024]);
    assert_eq!(status, 413);
    target.deliver(b"[]");
    api.push_shutdown("spindown", deadline_in(2000));
    ext.expect_exit(0, secs(10));
    assert_eq!(batches_seen(&sb), ["[]"]);
}

/// A failing telemetry command is logged and the extension carries on.
#[test]
fn a_failing_telemetry_command_does_not_stop_the_extension() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", "echo broken >&2; exit 7")
        .spawn();
    let target = TelemetryTarget::of(&api);
    target.deliver(b"[]");
    api.push_invoke("req-after", deadline_in(5000));
    api.push_shutdown("spindown", deadline_in(2000));
    ext.expect_exit(0, secs(10));
    let err = ext.stderr_str();
    assert!(
        err.contains(
            "telemetry command `echo broken >&2; exit 7` exited with status 7; stderr: broken"
        ),
        "{err}"
    );
    assert!(err.contains("INVOKE req-after ok"), "{err}");
}

#[test]
fn invalid_telemetry_settings_are_config_errors() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .env("SHELL_EXT_TELEMETRY_TYPES", "platform,logs")
        .env("SHELL_EXT_TELEMETRY_SCHEMA", "2021-01-01")
        .env("SHELL_EXT_TELEMETRY_FLUSH", "sometimes")
        .env("SHELL_EXT_TELEMETRY_MAX_BYTES", "1000")
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    let msg = check_error_request(&api, &errs[0], "Extension.ConfigInvalid");
    for expected in [
        "SHELL_EXT_TELEMETRY_TYPES: unknown type \"logs\"",
        "SHELL_EXT_TELEMETRY_SCHEMA: unknown schema \"2021-01-01\"",
        "SHELL_EXT_TELEMETRY_FLUSH: unknown mode \"sometimes\"",
        "SHELL_EXT_TELEMETRY_MAX_BYTES: \"1000\" is not a whole number from 262144 to 1048576",
    ] {
        assert!(msg.contains(expected), "no {expected:?} in {msg}");
    }
    assert_none(&api, Endpoint::Telemetry);
}

fn script_path(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The shipped example handlers: one file line per batch, and a POST per batch with curl.
#[test]
fn shipped_telemetry_scripts_write_and_forward_each_batch() {
    use std::io::{BufRead, BufReader, Read, Write};
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", collector.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let (stream, _) = collector.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            bodies.push(String::from_utf8(body).unwrap());
        }
        bodies
    });
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let file = sb.p("telemetry.jsonl");
    let both = sb.script(
        "both.sh",
        &format!(
            "#!/bin/sh\nset -e\nbatch=$(cat)\nprintf %s \"$batch\" | {}\nprintf %s \"$batch\" | {}\n",
            script_path("telemetry-to-file.sh"),
            script_path("telemetry-forward-curl.sh"),
        ),
    );
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", &both)
        .env("TELEMETRY_FILE", &file)
        .env("TELEMETRY_URL", &url)
        .spawn();
    let target = TelemetryTarget::of(&api);
    let sent = [
        batch(&[platform("start", "req-1")]),
        batch(&[record("function", "\"hello\""), platform("report", "req-1")]),
    ];
    for body in &sent {
        target.deliver(body);
    }
    api.push_shutdown("spindown", deadline_in(4000));
    ext.expect_exit(0, secs(10));
    let sent: Vec<String> = sent
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect();
    let lines: Vec<String> = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines, sent);
    assert_eq!(received.join().unwrap(), sent, "{}", ext.stderr_str());
}

/// A telemetry-only extension counts batches, not handler runs it never made.
#[test]
fn a_telemetry_only_extension_logs_no_handler_summary() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .spawn();
    TelemetryTarget::of(&api).deliver(b"[]");
    api.push_shutdown("spindown", deadline_in(2000));
    ext.expect_exit(0, secs(10));
    let err = ext.stderr_str();
    assert!(!err.contains("summary:"), "{err}");
    assert!(
        err.contains("telemetry: 1 batch received, 1 delivered"),
        "{err}"
    );
    assert!(err.trim_end().ends_with("INFO exiting"), "{err}");
}
