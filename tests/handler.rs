//! What the handler (and init command) sees and how its result drives the loop.

mod common;

use std::fs;
use std::sync::{Arc, Mutex};

use common::*;

/// A script that saves its stdin to `<dir>/in.<n>` where n counts the calls (0, 1, ...).
fn stdin_saver(sb: &Sandbox) -> String {
    let dir = sb.p("seen");
    fs::create_dir_all(&dir).unwrap();
    sb.script(
        "save-stdin.sh",
        &format!("#!/bin/sh\nn=$(ls {dir} | wc -l)\ncat > {dir}/in.$n\n"),
    )
}

/// The handler's stdin is exactly the body of the /event/next response (odd spacing, unknown
/// fields, non-ASCII, trailing newline included), then EOF; for INVOKE and SHUTDOWN alike.
#[test]
fn stdin_is_exact_event_bytes() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let d = deadline_in(8000);
    let odd = format!(
        "{{ \"eventType\" :\"INVOKE\",\n  \"deadlineMs\":{d} , \"requestId\" : \"odd-1\",\t\"invokedFunctionArn\":\"{FUNCTION_ARN}\",\"unknownField\":{{\"nested\":[1,2.5,null,\"\u{e9}\u{1F600}\"]}},\"tracing\":{{\"type\":\"X-Amzn-Trace-Id\",\"value\":\"Root=1-abc\"}} }}\n"
    )
    .into_bytes();
    api.push_raw(odd.clone(), Some("application/json"));
    let plain = api.push_invoke("plain-2", d);
    let shutdown = api.push_shutdown("spindown", d);
    let mut ext = sb.ext(&api).handler(&stdin_saver(&sb)).spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(
        api.served(),
        vec![odd.clone(), plain.clone(), shutdown.clone()]
    );
    for (i, want) in [odd, plain, shutdown].iter().enumerate() {
        let got = fs::read(sb.path(&format!("seen/in.{i}"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "stdin of call {i}"
        );
    }
}

/// Handler env: inherited vars plus LAMBDA_* for the event; `_X_AMZN_TRACE_ID` only for a traced
/// INVOKE; INVOKE-only vars do not leak into a later SHUTDOWN.
#[test]
fn handler_env_vars() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let dir = sb.p("envs");
    fs::create_dir_all(&dir).unwrap();
    let handler = sb.script(
        "save-env.sh",
        &format!("#!/bin/sh\nn=$(ls {dir} | wc -l)\nenv > {dir}/env.$n\n"),
    );
    let d1 = deadline_in(8000);
    let d2 = d1 + 1;
    let d3 = d1 + 2;
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    api.push_invoke("req-env-1", d1);
    api.push_invoke_untraced("req-env-2", d2);
    api.push_shutdown("timeout", d3);
    let mut ext = sb
        .ext(&api)
        .name("env-ext")
        .handler(&handler)
        .env("MY_VAR", "kept value")
        .spawn();
    ext.expect_exit(0, secs(10));

    let env = |i: usize| parse_env(&fs::read(format!("{dir}/env.{i}")).unwrap());
    let e = env(0);
    let get = |k: &str| env_get(&e, k).map(str::to_string);
    assert_eq!(get("LAMBDA_EVENT_TYPE").as_deref(), Some("INVOKE"));
    assert_eq!(get("LAMBDA_REQUEST_ID").as_deref(), Some("req-env-1"));
    assert_eq!(get("LAMBDA_DEADLINE_MS"), Some(d1.to_string()));
    assert_eq!(
        get("LAMBDA_INVOKED_FUNCTION_ARN").as_deref(),
        Some(FUNCTION_ARN)
    );
    assert_eq!(get("LAMBDA_EXTENSION_NAME").as_deref(), Some("env-ext"));
    assert_eq!(get("_X_AMZN_TRACE_ID").as_deref(), Some(trace));
    assert_eq!(get("MY_VAR").as_deref(), Some("kept value"));
    assert_eq!(
        get("AWS_LAMBDA_RUNTIME_API"),
        Some(api.runtime_api()),
        "inherited env"
    );

    let e = env(1);
    assert_eq!(env_get(&e, "LAMBDA_EVENT_TYPE"), Some("INVOKE"));
    assert_eq!(env_get(&e, "LAMBDA_REQUEST_ID"), Some("req-env-2"));
    assert_eq!(
        env_get(&e, "LAMBDA_DEADLINE_MS"),
        Some(d2.to_string().as_str())
    );
    assert_eq!(
        env_get(&e, "_X_AMZN_TRACE_ID"),
        None,
        "untraced INVOKE must not carry a (stale) trace id"
    );

    let e = env(2);
    assert_eq!(env_get(&e, "LAMBDA_EVENT_TYPE"), Some("SHUTDOWN"));
    assert_eq!(env_get(&e, "LAMBDA_SHUTDOWN_REASON"), Some("timeout"));
    assert_eq!(
        env_get(&e, "LAMBDA_DEADLINE_MS"),
        Some(d3.to_string().as_str())
    );
    assert_eq!(env_get(&e, "LAMBDA_EXTENSION_NAME"), Some("env-ext"));
    assert_eq!(env_get(&e, "MY_VAR"), Some("kept value"));
    assert_eq!(env_get(&e, "LAMBDA_INVOKED_FUNCTION_ARN"), None);
    assert_ne!(env_get(&e, "LAMBDA_REQUEST_ID"), Some("req-env-2"));
    assert_eq!(env_get(&e, "_X_AMZN_TRACE_ID"), None);
}

/// The next /event/next is only sent once the handler has finished: a handler that sleeps
/// 300 ms and then writes a marker; the marker must exist when the request arrives.
#[test]
fn next_only_after_handler_finished() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let marker = sb.path("marker");
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    {
        let seen = seen.clone();
        let marker = marker.clone();
        api.on_request(move |r| {
            if r.endpoint == Endpoint::Next {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(marker.exists());
            }
        });
    }
    let handler = sb.script(
        "slow.sh",
        &format!(
            "#!/bin/sh\n[ \"$LAMBDA_EVENT_TYPE\" = INVOKE ] || exit 0\nsleep 0.3\necho done > {}\n",
            marker.display()
        ),
    );
    let mut ext = sb.ext(&api).handler(&handler).spawn();
    api.expect_requests(Endpoint::Next, 1, secs(5));
    api.push_invoke("req-order", deadline_in(8000));
    let nexts = api.expect_requests(Endpoint::Next, 2, secs(5));
    let gap = nexts[1].at.duration_since(nexts[0].at);
    assert!(gap >= ms(300), "second next after only {gap:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![false, true]);
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(5));
    assert_none(&api, Endpoint::ExitError);
}

/// Init command: runs after register and before the first next, with the extension's env plus
/// LAMBDA_EXTENSION_NAME and stdin = /dev/null (not the extension's stdin).
#[test]
fn init_runs_between_register_and_first_next() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let marker = sb.path("init-ran");
    let envfile = sb.p("init-env");
    let stdinfile = sb.p("init-stdin");
    let seen: Arc<Mutex<Vec<(Endpoint, bool)>>> = Arc::default();
    {
        let seen = seen.clone();
        let marker = marker.clone();
        api.on_request(move |r| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((r.endpoint, marker.exists()))
        });
    }
    let init = sb.script(
        "init.sh",
        &format!(
            "#!/bin/sh\nenv > {envfile}\ncat > {stdinfile}\necho ok > {}\n",
            marker.display()
        ),
    );
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .name("init-ext")
        .open_stdin()
        .handler("true")
        .env("SHELL_EXT_INIT", &init)
        .env("MY_VAR", "v1")
        .spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(Endpoint::Register, false), (Endpoint::Next, true)],
        "{}",
        api.describe()
    );
    let env = parse_env(&fs::read(&envfile).unwrap());
    assert_eq!(env_get(&env, "LAMBDA_EXTENSION_NAME"), Some("init-ext"));
    assert_eq!(env_get(&env, "MY_VAR"), Some("v1"));
    assert_eq!(env_get(&env, "LAMBDA_EVENT_TYPE"), None);
    assert_eq!(fs::read(&stdinfile).unwrap(), b"");
    assert_none(&api, Endpoint::InitError);
}

/// Init command exiting non-zero: init/error Extension.InitFailed, exit 1, never next, the
/// handler never runs.
#[test]
fn init_failure_reports_and_exits() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let ran = sb.p("handler-ran");
    api.push_invoke("never", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("touch {ran}"))
        .env("SHELL_EXT_INIT", "exit 9")
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.InitFailed");
    assert!(msg.contains("status 9"), "{msg}");
    assert_none(&api, Endpoint::Next);
    assert_none(&api, Endpoint::ExitError);
    assert!(!sb.path("handler-ran").exists());
}

/// A command without shell metacharacters is exec'd directly (its parent is the extension)
/// with arguments split on whitespace.
#[test]
fn plain_command_runs_without_shell() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let out = sb.p("direct");
    let script = sb.script(
        "args.sh",
        &format!("#!/bin/sh\necho \"$PPID|$#|$1|$2\" > {out}\n"),
    );
    api.push_invoke("req-direct", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("{script}  one   two"))
        .spawn();
    let pid = ext.pid;
    ext.expect_exit(0, secs(10));
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        format!("{pid}|2|one|two\n"),
        "handler parent must be the extension (no /bin/sh in between)"
    );
}

/// A command with shell metacharacters runs as `/bin/sh -c CMD`: `$0` is sh, `$VAR` expands,
/// redirections work.
#[test]
fn shell_command_runs_via_sh() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let out = sb.p("shell");
    api.push_invoke("req-shell", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("echo \"$0|$MY_VAR|$LAMBDA_EVENT_TYPE\" >> {out}"))
        .env("MY_VAR", "expanded")
        .spawn();
    ext.expect_exit(0, secs(10));
    let got = fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 2, "{got}");
    for (line, ty) in lines.iter().zip(["INVOKE", "SHUTDOWN"]) {
        let (zero, rest) = line.split_once('|').unwrap();
        assert!(zero == "sh" || zero == "/bin/sh", "$0 = {zero:?}");
        assert_eq!(rest, format!("expanded|{ty}"));
    }
}

/// `SHELL_EXT_ON_ERROR=continue`: a failing INVOKE handler is logged, no exit/error, next is
/// called again; a later successful SHUTDOWN exits 0.
#[test]
fn on_error_continue_calls_next_again() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let log = sb.p("calls");
    let handler = sb.script(
        "flaky.sh",
        &format!(
            "#!/bin/sh\necho \"$LAMBDA_EVENT_TYPE $LAMBDA_REQUEST_ID\" >> {log}\n[ \"$LAMBDA_EVENT_TYPE\" = SHUTDOWN ] || exit 5\n"
        ),
    );
    api.push_invoke("c-1", deadline_in(8000));
    api.push_invoke("c-2", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&handler)
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    ext.expect_exit(0, secs(10));
    assert_none(&api, Endpoint::ExitError);
    assert_none(&api, Endpoint::InitError);
    assert_eq!(api.count(Endpoint::Next), 3, "{}", api.describe());
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "INVOKE c-1\nINVOKE c-2\nSHUTDOWN \n"
    );
}

/// `SHELL_EXT_ON_ERROR=exit` (default): a failing INVOKE handler → exit/error
/// Extension.HandlerFailed, exit 1, no more next (the second event is never fetched).
#[test]
fn on_error_exit_stops_after_first_failure() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let log = sb.p("calls");
    api.push_invoke("e-1", deadline_in(8000));
    api.push_invoke("e-2", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("echo $LAMBDA_REQUEST_ID >> {log}; exit 2"))
        .env("SHELL_EXT_ON_ERROR", "exit")
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("status 2"), "{msg}");
    assert_eq!(api.count(Endpoint::Next), 1);
    assert_eq!(fs::read_to_string(&log).unwrap(), "e-1\n");
}

/// SHUTDOWN success: handler runs after an INVOKE, exit 0, no request after the SHUTDOWN.
#[test]
fn shutdown_success_exits_zero() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let log = sb.p("calls");
    api.push_invoke("s-1", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("echo $LAMBDA_EVENT_TYPE >> {log}"))
        .spawn();
    ext.expect_exit(0, secs(10));
    let kinds: Vec<Endpoint> = api.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(
        kinds,
        vec![Endpoint::Register, Endpoint::Next, Endpoint::Next]
    );
    assert_eq!(fs::read_to_string(&log).unwrap(), "INVOKE\nSHUTDOWN\n");
}

fn shutdown_failure(mode: &str) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler("echo shutdown-broke >&2; exit 6")
        .env("SHELL_EXT_ON_ERROR", mode)
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("status 6"), "{msg}");
    assert!(msg.contains("shutdown-broke"), "{msg}");
    assert_eq!(api.count(Endpoint::Next), 1);
}

/// SHUTDOWN handler failure → exit/error + exit 1 (exit mode).
#[test]
fn shutdown_failure_exit_mode() {
    shutdown_failure("exit");
}

/// SHUTDOWN handler failure → exit/error + exit 1 even in continue mode.
#[test]
fn shutdown_failure_continue_mode() {
    shutdown_failure("continue");
}

/// What the init command starts in the background (a sidecar) is not killed when the init
/// command exits, and what it writes later still reaches the extension's log.
#[test]
fn init_sidecar_keeps_running_and_its_output_is_kept() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let pidfile = sb.p("sidecar-pid");
    api.push_invoke("while-sidecar-runs", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .env(
            "SHELL_EXT_INIT",
            &format!("(sleep 0.3; echo sidecar-late; sleep 30) & echo $! > {pidfile}"),
        )
        .handler("sleep 1")
        .spawn();
    ext.expect_exit(0, secs(10));
    ext.wait_output_closed(secs(2));
    let pid = read_pid(&sb.path("sidecar-pid"));
    assert!(
        pid_alive(pid),
        "the sidecar died with the init command or an event"
    );
    cleanup_pid(pid);
    let out = ext.stdout_str();
    assert!(
        out.contains("sidecar-late\n"),
        "sidecar output lost:\n{out}"
    );
}

/// One info line per event, and a summary of them all when the extension exits.
#[test]
fn one_line_per_event_and_a_summary_at_shutdown() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let handler = sb.script(
        "mixed.sh",
        "#!/bin/sh\n[ \"$LAMBDA_REQUEST_ID\" = req-bad ] && exit 3\nexit 0\n",
    );
    api.push_invoke("req-ok", deadline_in(10_000));
    api.push_invoke("req-bad", deadline_in(10_000));
    api.push_shutdown("spindown", deadline_in(10_000));
    let mut ext = sb
        .ext(&api)
        .handler(&handler)
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    ext.expect_exit(0, secs(10));
    let err = ext.stderr_str();
    let lines: Vec<&str> = err
        .lines()
        .filter(|line| line.starts_with("[lambda-shell-extension] INFO "))
        .map(|line| &line["[lambda-shell-extension] INFO ".len()..])
        .collect();
    let with = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(with("INVOKE req-ok ok in "), 1, "{err}");
    assert_eq!(with("INVOKE req-bad failed (status 3) in "), 1, "{err}");
    assert_eq!(with("SHUTDOWN spindown ok in "), 1, "{err}");
    let summary = lines.last().copied().unwrap_or_default();
    assert!(
        summary.starts_with(
            "summary: 3 events (2 INVOKE, 1 SHUTDOWN), 1 failed, 0 timed out; handler time median "
        ) && summary.contains(" ms, max ")
            && summary.ends_with(" ms; exiting"),
        "{err}"
    );
}
