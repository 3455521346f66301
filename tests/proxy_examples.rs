//! The proxy's example handlers in `scripts/`, run the way the proxy runs them (body on stdin,
//! `LAMBDA_*` in the environment), without the proxy: `validate-request.sh` (a rejecting
//! validator) and `audit-requests.sh` (one JSON line per request and response). The proxy itself
//! is tested in tests/proxy.rs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Run `argv` with `stdin` and `env` added to a minimal environment.
fn run(argv: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    // A script may exit before reading everything (a config error): ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn validate(payload: &[u8], field: Option<&str>) -> Output {
    let mut env = vec![
        ("LAMBDA_EVENT_TYPE", "REQUEST"),
        ("LAMBDA_REQUEST_ID", "r-1"),
    ];
    if let Some(f) = field {
        env.push(("VALIDATE_REQUIRED_FIELD", f));
    }
    run(&[&script("validate-request.sh")], &env, payload)
}

#[test]
fn validate_request_accepts_objects_with_the_field() {
    for payload in [
        &br#"{"id":1}"#[..],
        br#"{"id":"x"}"#,
        br#" {"a": 1, "id" : null } "#,
        b"{\n  \"name\": \"x\",\n  \"id\": 3\n}\n",
        b"{\r\n\t\"id\":\r\n 3\r\n}",
        br#"{"user":{"id":1}}"#,
        br#"{"a":[{"b":2},{"id":1}]}"#,
    ] {
        let out = validate(payload, None);
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{:?}: {:?} stdout {:?} stderr {:?}",
            String::from_utf8_lossy(payload),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn validate_request_rejects_with_one_line_saying_why() {
    let no_field = "validate-request.sh: rejected: the payload has no field \"id\"\n";
    let not_object = "validate-request.sh: rejected: the payload is not a JSON object\n";
    let empty = "validate-request.sh: rejected: the payload is empty, not a JSON object\n";
    for (payload, want) in [
        (&br#"{"name":"x"}"#[..], no_field),
        (br#"{"ids":1}"#, no_field),
        (br#"{"xid":1}"#, no_field),
        (br#"{"x":"id"}"#, no_field),
        (br#"{"x":"a, \"id\": 1"}"#, no_field),
        (br#"{"x":"{\"id\":1}"}"#, no_field),
        (b"{}", no_field),
        (br#"[{"id":1}]"#, not_object),
        (br#""id""#, not_object),
        (b"hello", not_object),
        (br#"{"id":1"#, not_object),
        (b"\x00\x01\xff binary", not_object),
        (b"", empty),
        (b" \n\t ", empty),
    ] {
        let out = validate(payload, None);
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned()
            ),
            (Some(1), want.to_string()),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn validate_request_field_comes_from_validate_required_field() {
    let ok = |payload: &str, field: &str| validate(payload.as_bytes(), Some(field));
    assert!(ok(r#"{"orderId":7}"#, "orderId").status.success());
    assert!(!ok(r#"{"id":7}"#, "orderId").status.success());
    // Blank: the default, id.
    assert!(ok(r#"{"id":7}"#, "").status.success());
    // Characters that mean something to grep stand for themselves.
    assert!(ok(r#"{"order.id":7}"#, "order.id").status.success());
    assert!(!ok(r#"{"orderXid":7}"#, "order.id").status.success());
    assert!(ok(r#"{"a+b":7}"#, "a+b").status.success());
    assert!(!ok(r#"{"aab":7}"#, "a+b").status.success());
    assert!(ok(r#"{"[x]":7}"#, "[x]").status.success());
    assert!(ok(r#"{"a b":7}"#, "a b").status.success());
    let out = ok(r#"{"x":7}"#, "orderId");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "validate-request.sh: rejected: the payload has no field \"orderId\"\n"
    );
    // A name that cannot be matched literally: exit 2, saying so.
    for field in ["a\"b", "a\\b", "a\nb"] {
        let out = ok(r#"{"a":1}"#, field);
        assert_eq!(out.status.code(), Some(2), "{field:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("VALIDATE_REQUIRED_FIELD"),
            "{field:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Run audit-requests.sh (with `args`) into a fresh file; returns the run and the records.
fn audit(env: &[(&str, &str)], body: &[u8], args: &[&str]) -> (Output, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut env = env.to_vec();
    let file_str = file.to_str().unwrap().to_string();
    env.push(("AUDIT_FILE", &file_str));
    env.push(("TMPDIR", dir.path().to_str().unwrap()));
    let s = script("audit-requests.sh");
    let mut argv = vec![s.as_str()];
    argv.extend(args);
    let out = run(&argv, &env, body);
    let records = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    // The temporary copy of the body is gone.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "audit.jsonl")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    (out, records)
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

const REQUEST_ENV: [(&str, &str); 4] = [
    ("LAMBDA_EVENT_TYPE", "REQUEST"),
    ("LAMBDA_REQUEST_ID", "8476a536-e9f4-11e8-9739-2dfe598c3fcd"),
    ("LAMBDA_DEADLINE_MS", "1764669603000"),
    (
        "_X_AMZN_TRACE_ID",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    ),
];

#[test]
fn audit_records_a_request() {
    let body = br#"{"id":1,"name":"\u00e9"}"#;
    let (out, records) = audit(&REQUEST_ENV, body, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["type"], "request");
    assert_eq!(r["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
    assert_eq!(r["deadlineMs"], 1764669603000u64);
    assert_eq!(
        r["traceId"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    assert_eq!(r["bytes"], body.len());
    assert_eq!(r["sha256"], sha256_hex(body));
    let time = r["time"].as_str().unwrap();
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "time {time:?}"
    );
    assert!(r.get("bodyBase64").is_none() && r.get("commandExit").is_none());
}

#[test]
fn audit_records_responses_and_errors() {
    let (out, records) = audit(
        &[
            ("LAMBDA_EVENT_TYPE", "RESPONSE"),
            ("LAMBDA_REQUEST_ID", "r-1"),
            ("LAMBDA_RESPONSE_STATUS", "success"),
        ],
        br#"{"ok":true}"#,
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records[0]["type"], "response");
    assert_eq!(records[0]["status"], "success");
    assert_eq!(records[0]["bytes"], 11);
    assert!(records[0].get("errorType").is_none() && records[0].get("truncated").is_none());

    // An error type is whatever the runtime sent: escaped, never breaking the line.
    let odd = "Runtime.\"Odd\"\\Type\u{1}";
    let (out, records) = audit(
        &[
            ("LAMBDA_EVENT_TYPE", "RESPONSE"),
            ("LAMBDA_REQUEST_ID", "r-2"),
            ("LAMBDA_RESPONSE_STATUS", "error"),
            ("LAMBDA_ERROR_TYPE", odd),
            ("LAMBDA_RESPONSE_TRUNCATED", "1"),
        ],
        b"boom",
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records[0]["status"], "error");
    assert_eq!(records[0]["errorType"], "Runtime.\"Odd\"\\Type");
    assert_eq!(records[0]["truncated"], true);
}

#[test]
fn audit_body_modes() {
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let (out, records) = audit(&[("AUDIT_BODY", "size"), REQUEST_ENV[0]], &body, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records[0]["bytes"], body.len());
    assert!(records[0].get("sha256").is_none());

    let (out, records) = audit(&[("AUDIT_BODY", "base64"), REQUEST_ENV[0]], &body, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records[0]["sha256"], sha256_hex(&body));
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(records[0]["bodyBase64"].as_str().unwrap().as_bytes())
        .unwrap();
    assert!(
        child.wait_with_output().unwrap().stdout == body,
        "bodyBase64 decodes to the body"
    );

    let (out, records) = audit(&[("AUDIT_BODY", "all"), REQUEST_ENV[0]], b"x", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUDIT_BODY=all"));
    assert!(records.is_empty());
}

/// `audit-requests.sh validate-request.sh`: every request recorded, rejected ones included,
/// with the validator's status and its stderr line.
#[test]
fn audit_then_validate() {
    let validator = script("validate-request.sh");
    let (out, records) = audit(&REQUEST_ENV, br#"{"id":1}"#, &[&validator]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records[0]["commandExit"], 0);
    let (out, records) = audit(&REQUEST_ENV, br#"{"name":1}"#, &[&validator]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "validate-request.sh: rejected: the payload has no field \"id\"\n"
    );
    assert_eq!(records[0]["commandExit"], 1);
    assert_eq!(records[0]["bytes"], 10);
}

#[test]
fn the_example_scripts_are_executable_sh() {
    use std::os::unix::fs::PermissionsExt;
    for name in ["audit-requests.sh", "validate-request.sh"] {
        let path = script(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(format!("{mode:o}"), "755", "{name}");
        let text = std::fs::read(&path).unwrap();
        assert!(
            text.starts_with(b"#!/bin/sh\n") && !text.contains(&b'\r'),
            "{name}"
        );
        for shell in ["/bin/sh", "/bin/bash", "/usr/bin/dash"] {
            if Path::new(shell).exists() {
                let out = Command::new(shell).arg("-n").arg(&path).output().unwrap();
                assert!(out.status.success(), "{shell} -n {name}: {out:?}");
            }
        }
    }
}
