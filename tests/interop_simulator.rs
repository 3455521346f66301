//! Interop test against a third-party Lambda emulator, `lambda-simulator` 0.2.0.
//!
//! The real binary, copied to `<tmp>/opt/extensions/<name>` and started with no
//! arguments (env vars only), must: register → receive the INVOKE the simulator
//! broadcasts → run a real handler script with the event JSON on stdin →
//! receive SHUTDOWN → run the handler again → exit 0. With a telemetry command too, the
//! simulator's `platform.*` records (delivered during the invokes, or all at SHUTDOWN) must
//! reach that command, batch by batch, before the extension exits 0.
//!
//! Known gaps of lambda-simulator 0.2.0 (checked in its source):
//! - It has no routes for `POST /2020-01-01/extension/init/error` and
//!   `/extension/exit/error`: both get 404 from its fallback (real Lambda: 202),
//!   so failure paths cannot be tested against it.
//! - It enforces no deadlines: `deadlineMs` is only reported (INVOKE: enqueue
//!   time + invocation timeout; SHUTDOWN: now + shutdown timeout), nothing is
//!   killed or reset when it passes.
//! - INVOKE is broadcast to extensions at enqueue time, whether or not a runtime
//!   is polling; only extensions registered by then get it.
//! - Registration is closed (403) once the runtime's first
//!   `/2018-06-01/runtime/invocation/next` arrives, as on Lambda; it also does
//!   not check the name against the files in `/opt/extensions`.
//! - `shutdownReason` is spelled like real Lambda (lowercase `spindown`,
//!   `timeout`, `failure`); the INVOKE event always carries `tracing`.
//! - `graceful_shutdown` counts the extension as done as soon as SHUTDOWN is
//!   delivered (not when it exits or polls again) and then stops the HTTP
//!   server, so a request after SHUTDOWN (e.g. exit/error) is refused.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambda_simulator::{EventType, InvocationBuilder, ShutdownReason, Simulator};
use serde_json::{json, Value};

const EXT_NAME: &str = "shell-ext-interop";

fn install(dir: &Path) -> PathBuf {
    let ext_dir = dir.join("opt/extensions");
    std::fs::create_dir_all(&ext_dir).unwrap();
    let dest = ext_dir.join(EXT_NAME);
    std::fs::copy(env!("CARGO_BIN_EXE_lambda-shell-extension"), &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    dest
}

/// A handler that appends its stdin (one line per event) and its LAMBDA_* env
/// to files in `out`.
fn write_handler(dir: &Path, out: &Path) -> PathBuf {
    let path = dir.join("record-event.sh");
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"#!/bin/sh
set -eu
out='{out}'
cat >> "$out/events.jsonl"
echo >> "$out/events.jsonl"
echo "$LAMBDA_EVENT_TYPE|${{LAMBDA_REQUEST_ID:-}}|$LAMBDA_DEADLINE_MS|${{LAMBDA_SHUTDOWN_REASON:-}}|$LAMBDA_EXTENSION_NAME|${{_X_AMZN_TRACE_ID:-}}" >> "$out/env.log"
echo "record-event: handled $LAMBDA_EVENT_TYPE"
"#,
        out = out.display()
    )
    .unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The function's runtime: poll runtime/invocation/next and answer each one.
fn spawn_runtime(base: String) {
    std::thread::spawn(move || {
        let agent = ureq::Agent::new_with_defaults();
        while let Ok(resp) = agent
            .get(format!("{base}/2018-06-01/runtime/invocation/next"))
            .call()
        {
            let id = resp.headers()["Lambda-Runtime-Aws-Request-Id"]
                .to_str()
                .unwrap()
                .to_owned();
            let _ = agent
                .post(format!(
                    "{base}/2018-06-01/runtime/invocation/{id}/response"
                ))
                .header("Content-Type", "application/json")
                .send("{}");
        }
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// On a failed assertion: kills the extension (pid) and shows its stdout and stderr logs.
struct Guard(u32, PathBuf, PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill(2) on the pid of the child this test started.
            unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
            for p in [&self.1, &self.2] {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                eprintln!("--- {} ---\n{text}", p.display());
            }
        }
    }
}

async fn wait_exit(slot: &Mutex<Option<ExitStatus>>, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(s) = *slot.lock().unwrap() {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_then_shutdown_against_lambda_simulator() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let ext_path = install(tmp.path());
    let handler = write_handler(tmp.path(), &out);
    let stdout_log = tmp.path().join("extension.stdout");
    let stderr_log = tmp.path().join("extension.stderr");

    let sim = Simulator::builder()
        .function_name("interop-fn")
        .invocation_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();

    let mut child = Command::new(&ext_path)
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("127.0.0.1:{}", sim.addr().port()),
        )
        .env("SHELL_EXT_HANDLER", &handler)
        .env("RUST_LOG", "debug")
        .env_remove("SHELL_EXT_INIT")
        .env_remove("SHELL_EXT_EVENTS")
        .env_remove("SHELL_EXT_ON_ERROR")
        .env_remove("SHELL_EXT_TIMEOUT_MARGIN_MS")
        .stdout(std::fs::File::create(&stdout_log).unwrap())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = Arc::new(Mutex::new(None));
    let slot = status.clone();
    std::thread::spawn(move || *slot.lock().unwrap() = child.wait().ok());
    let _guard = Guard(pid, stdout_log.clone(), stderr_log.clone());

    // INIT: registered under the file's name, for both events, then /event/next.
    let ready = sim
        .wait_for(
            || async {
                match sim.get_registered_extensions().await.first() {
                    Some(e) => sim.first_next_poll_at(&e.id).await.is_some(),
                    None => false,
                }
            },
            Duration::from_secs(5),
        )
        .await;
    assert!(
        ready.is_ok(),
        "extension did not register and poll /event/next within 5 s; exit status: {:?}",
        *status.lock().unwrap()
    );
    let exts = sim.get_registered_extensions().await;
    assert_eq!(exts.len(), 1);
    assert_eq!(exts[0].name, EXT_NAME, "registers under its file name");
    assert_eq!(exts[0].events, vec![EventType::Invoke, EventType::Shutdown]);

    spawn_runtime(sim.runtime_api_url());

    // INVOKE
    let invocation = InvocationBuilder::new()
        .payload(json!({"hello": "interop"}))
        .timeout_ms(5_000)
        .function_arn("arn:aws:lambda:us-east-1:123456789012:function:interop-fn")
        .build()
        .unwrap();
    let deadline_ms = invocation.deadline_ms();
    let trace_id = invocation.trace_id.clone();
    let request_id = sim.enqueue(invocation).await;
    sim.wait_for_invocation_complete(&request_id, Duration::from_secs(5))
        .await
        .expect("the test runtime answers the invocation");
    sim.wait_for_extensions_ready(&request_id, Duration::from_secs(5))
        .await
        .expect("the extension calls /event/next again after the handler");
    assert!(
        status.lock().unwrap().is_none(),
        "extension exited after INVOKE: {:?}",
        *status.lock().unwrap()
    );

    // SHUTDOWN (the simulator consumes itself and stops its server).
    let before_ms = now_ms();
    sim.graceful_shutdown(ShutdownReason::Spindown).await;
    let exit = wait_exit(&status, Duration::from_secs(5))
        .await
        .expect("extension exits within 5 s of SHUTDOWN");
    assert_eq!(exit.code(), Some(0), "exit status after SHUTDOWN: {exit:?}");

    // What the handler saw on stdin: the exact event bodies, one per event.
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let events: Vec<Value> = events
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    assert_eq!(events.len(), 2, "one INVOKE and one SHUTDOWN: {events:#?}");
    let invoke = &events[0];
    assert_eq!(invoke["eventType"], "INVOKE");
    assert_eq!(invoke["requestId"], request_id.as_str());
    assert_eq!(invoke["deadlineMs"], deadline_ms);
    assert_eq!(
        invoke["invokedFunctionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:interop-fn"
    );
    assert_eq!(invoke["tracing"]["type"], "X-Amzn-Trace-Id");
    assert_eq!(invoke["tracing"]["value"], trace_id.as_str());
    let shutdown = &events[1];
    assert_eq!(shutdown["eventType"], "SHUTDOWN");
    assert_eq!(shutdown["shutdownReason"], "spindown");
    // The simulator's shutdown deadline is now + shutdown_timeout (2 s).
    let shutdown_deadline = shutdown["deadlineMs"].as_i64().unwrap();
    assert!(
        (before_ms + 1_900..=now_ms() + 2_000).contains(&shutdown_deadline),
        "SHUTDOWN deadlineMs {shutdown_deadline} vs shutdown started at {before_ms}"
    );

    // What the handler saw in its environment.
    let env = std::fs::read_to_string(out.join("env.log")).unwrap();
    let env: Vec<Vec<&str>> = env.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(env.len(), 2, "{env:?}");
    assert_eq!(
        env[0],
        vec![
            "INVOKE",
            request_id.as_str(),
            &deadline_ms.to_string(),
            "",
            EXT_NAME,
            &trace_id
        ]
    );
    assert_eq!(env[1][0], "SHUTDOWN");
    assert_eq!(env[1][1], "");
    assert_eq!(env[1][2], shutdown["deadlineMs"].to_string());
    assert_eq!(env[1][3], "spindown");
    assert_eq!(env[1][4], EXT_NAME);
}

// ---------------------------------------------------------------------------------------------
// Telemetry (issue 8): the simulator's platform.* records reach SHELL_EXT_TELEMETRY_HANDLER.
//
// How lambda-simulator 0.2.0 delivers telemetry (checked in its source, telemetry_state.rs):
// - It keeps the subscribed URI but replaces `sandbox.localdomain` with `127.0.0.1`, so it
//   reaches the extension's listener (bound on 0.0.0.0) without any name resolution: nothing
//   to work around, no /etc/hosts entry.
// - It emits `platform` records only (no function or extension logs): telemetrySubscription at
//   the PUT, initRuntimeDone and initReport at the runtime's first next, then per invocation
//   start, runtimeDone and report (report once every extension has polled /event/next again).
//   initStart comes at build time, before anyone can subscribe, so it is never delivered.
// - A task per subscriber POSTs the buffered records every `timeoutMs` of the subscription's
//   buffering (1000 ms without one), sequentially; `graceful_shutdown` POSTs whatever is still
//   buffered (flush_all) before it sends SHUTDOWN, then aborts those tasks once SHUTDOWN is
//   delivered. It ignores `schemaVersion` and answers the PUT 200.

/// A telemetry command that appends each batch, then a newline, to `telemetry.jsonl` in `out`,
/// and the batch's `LAMBDA_TELEMETRY_BATCH_ITEMS` to `telemetry-items.log`.
fn write_telemetry_handler(dir: &Path, out: &Path) -> PathBuf {
    let path = dir.join("record-telemetry.sh");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
set -eu
out='{out}'
cat >> "$out/telemetry.jsonl"
echo >> "$out/telemetry.jsonl"
echo "$LAMBDA_TELEMETRY_BATCH_ITEMS" >> "$out/telemetry-items.log"
"#,
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The batches the telemetry command has written so far (complete lines only), each parsed as
/// the JSON array it must be.
fn batches_received(out: &Path) -> Vec<Vec<Value>> {
    let text = std::fs::read_to_string(out.join("telemetry.jsonl")).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Array(records)) => records,
            Ok(other) => panic!("a batch that is not a JSON array: {other}"),
            Err(error) => panic!("a batch that is not valid JSON ({error}): {line:?}"),
        })
        .collect()
}

/// What the simulator emitted that a subscriber can receive: every record from
/// `platform.telemetrySubscription` on, as JSON.
async fn deliverable(sim: &Simulator) -> Vec<Value> {
    let events = sim.get_telemetry_events().await;
    let first = events
        .iter()
        .position(|e| e.event_type == "platform.telemetrySubscription")
        .expect("the simulator emitted platform.telemetrySubscription: the PUT reached it");
    events[first..]
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

fn has_record(records: &[Value], kind: &str, request_id: &str) -> bool {
    records
        .iter()
        .any(|r| r["type"] == kind && r["record"]["requestId"] == request_id)
}

/// Polls `condition` every 10 ms for up to `timeout`.
async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the simulator sends the invocations' records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    /// Buffering timeout 25 ms: each invocation's records are delivered (and through the
    /// command) while the invocations go on, before the next one is enqueued.
    DuringInvokes,
    /// Buffering timeout 30 s (the largest): nothing after the subscription record is sent until
    /// `graceful_shutdown` flushes it all, right before SHUTDOWN; the extension must run the
    /// command on it before it exits.
    AtShutdown,
}

/// The real binary with an event handler and a telemetry command, two invocations through the
/// simulator (the test plays the runtime), then SHUTDOWN: every record the simulator emitted
/// after the subscription reached the command, batch by batch, and the extension exits 0.
async fn telemetry_interop(delivery: Delivery) {
    const INVOCATIONS: usize = 2;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let ext_path = install(tmp.path());
    let handler = write_handler(tmp.path(), &out);
    let telemetry_handler = write_telemetry_handler(tmp.path(), &out);
    let stdout_log = tmp.path().join("extension.stdout");
    let stderr_log = tmp.path().join("extension.stderr");
    let timeout_ms = match delivery {
        Delivery::DuringInvokes => "25",
        Delivery::AtShutdown => "30000",
    };

    let sim = Simulator::builder()
        .function_name("interop-fn")
        .invocation_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();

    let mut command = Command::new(&ext_path);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHELL_EXT_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("127.0.0.1:{}", sim.addr().port()),
        )
        .env("SHELL_EXT_HANDLER", &handler)
        .env("SHELL_EXT_TELEMETRY_HANDLER", &telemetry_handler)
        .env("SHELL_EXT_TELEMETRY_TIMEOUT_MS", timeout_ms)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(&stdout_log).unwrap())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = Arc::new(Mutex::new(None));
    let slot = status.clone();
    std::thread::spawn(move || *slot.lock().unwrap() = child.wait().ok());
    let _guard = Guard(pid, stdout_log.clone(), stderr_log.clone());

    // INIT: registered, subscribed (the simulator emits platform.telemetrySubscription), next.
    let ready = sim
        .wait_for(
            || async {
                match sim.get_registered_extensions().await.first() {
                    Some(e) => sim.first_next_poll_at(&e.id).await.is_some(),
                    None => false,
                }
            },
            Duration::from_secs(5),
        )
        .await;
    assert!(
        ready.is_ok(),
        "extension did not register and poll /event/next within 5 s; exit status: {:?}",
        *status.lock().unwrap()
    );
    let subscription = sim
        .get_telemetry_events_by_type("platform.telemetrySubscription")
        .await;
    assert_eq!(subscription.len(), 1, "one subscription: {subscription:?}");
    // (Its `name` is "unknown": the simulator reads it from a Lambda-Extension-Name header on
    // the PUT, which Lambda does not ask for; the identifier is what identifies the extension.)
    assert_eq!(subscription[0].record["state"], "Subscribed");

    spawn_runtime(sim.runtime_api_url());

    let mut request_ids = Vec::new();
    for i in 0..INVOCATIONS {
        let invocation = InvocationBuilder::new()
            .payload(json!({"telemetry": i}))
            .timeout_ms(5_000)
            .build()
            .unwrap();
        let request_id = sim.enqueue(invocation).await;
        sim.wait_for_invocation_complete(&request_id, Duration::from_secs(5))
            .await
            .expect("the test runtime answers the invocation");
        sim.wait_for_extensions_ready(&request_id, Duration::from_secs(5))
            .await
            .expect("the extension calls /event/next again after the handler");
        // platform.report is emitted once the extension is ready, by a task of its own.
        sim.wait_for(
            || async {
                let reports = sim.get_telemetry_events_by_type("platform.report").await;
                reports.iter().any(|e| e.record["requestId"] == *request_id)
            },
            Duration::from_secs(5),
        )
        .await
        .expect("the simulator emits platform.report for the invocation");
        if delivery == Delivery::DuringInvokes {
            let expected = deliverable(&sim).await;
            let arrived = eventually(Duration::from_secs(5), || {
                batches_received(&out).concat() == expected
            })
            .await;
            assert!(
                arrived,
                "invocation {i}: the simulator's records did not reach the telemetry command \
                 within 5 s\nexpected: {expected:#?}\nreceived: {:#?}",
                batches_received(&out)
            );
        }
        request_ids.push(request_id);
    }
    assert!(
        status.lock().unwrap().is_none(),
        "extension exited before SHUTDOWN: {:?}",
        *status.lock().unwrap()
    );
    if delivery == Delivery::AtShutdown {
        // The report was captured just before it was buffered for delivery: let it be buffered,
        // so that graceful_shutdown's flush takes it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let early = batches_received(&out).concat();
        assert!(
            request_ids
                .iter()
                .all(|id| !has_record(&early, "platform.start", id)),
            "records delivered before SHUTDOWN: the 30 s buffering did not hold them: {early:#?}"
        );
    }
    let expected = deliverable(&sim).await;

    // SHUTDOWN (the simulator flushes its buffers first, then consumes itself).
    sim.graceful_shutdown(ShutdownReason::Spindown).await;
    let exit = wait_exit(&status, Duration::from_secs(5))
        .await
        .expect("extension exits within 5 s of SHUTDOWN");
    assert_eq!(exit.code(), Some(0), "exit status after SHUTDOWN: {exit:?}");

    // Every record the simulator could deliver reached the command, in order, each batch a
    // JSON array run through the command once with its item count.
    let batches = batches_received(&out);
    assert!(
        !batches.is_empty(),
        "the telemetry command never ran (or wrote nothing)"
    );
    let received = batches.concat();
    assert_eq!(
        received, expected,
        "the records the telemetry command got vs what the simulator emitted"
    );
    for id in &request_ids {
        for kind in ["platform.start", "platform.runtimeDone", "platform.report"] {
            let n = received
                .iter()
                .filter(|r| r["type"] == kind && r["record"]["requestId"] == id.as_str())
                .count();
            assert_eq!(n, 1, "{kind} of {id} reached the command {n} times");
        }
    }
    for kind in ["platform.initRuntimeDone", "platform.initReport"] {
        assert!(
            received.iter().any(|r| r["type"] == kind),
            "{kind} did not reach the command"
        );
    }
    let items = std::fs::read_to_string(out.join("telemetry-items.log")).unwrap();
    let items: Vec<usize> = items.lines().map(|l| l.parse().unwrap()).collect();
    let lengths: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(items, lengths, "LAMBDA_TELEMETRY_BATCH_ITEMS of each run");
    let stderr = std::fs::read_to_string(&stderr_log).unwrap();
    let counts = format!(
        "telemetry: {n} batches received, {n} delivered",
        n = batches.len()
    );
    assert!(stderr.contains(&counts), "no {counts:?} in:\n{stderr}");

    // The event handler ran as without telemetry: each INVOKE, then SHUTDOWN.
    let env = std::fs::read_to_string(out.join("env.log")).unwrap();
    let kinds: Vec<&str> = env
        .lines()
        .map(|l| l.split('|').next().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["INVOKE", "INVOKE", "SHUTDOWN"], "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_telemetry_reaches_the_command_during_invokes() {
    telemetry_interop(Delivery::DuringInvokes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_telemetry_flushed_at_shutdown_is_delivered_before_exit() {
    telemetry_interop(Delivery::AtShutdown).await;
}
