//! Interop test against a third-party Lambda emulator, `lambda-simulator` 0.2.0.
//!
//! The real binary, copied to `<tmp>/opt/extensions/<name>` and started with no
//! arguments (env vars only), must: register → receive the INVOKE the simulator
//! broadcasts → run a real handler script with the event JSON on stdin →
//! receive SHUTDOWN → run the handler again → exit 0.
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
    // On a failed assertion: kill the extension and show its output.
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
