//! Big inputs and outputs, output copying, leftovers holding pipes, and error messages.

mod common;

use std::fs;

use common::*;

fn big_invoke(request_id: &str, pad: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"eventType":"INVOKE","deadlineMs":{},"requestId":"{request_id}","invokedFunctionArn":"{FUNCTION_ARN}","padding":""#,
        deadline_in(20_000)
    )
    .into_bytes();
    body.extend((0..pad).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(b"\"}");
    body
}

/// A 5 MB event is delivered whole on the handler's stdin.
#[test]
fn five_mb_event_read_fully() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let out = sb.p("stdin.bin");
    let body = big_invoke("big-1", 5_000_000);
    api.push_raw(body.clone(), Some("application/json"));
    api.push_shutdown("spindown", deadline_in(20_000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!(
            "[ \"$LAMBDA_EVENT_TYPE\" = INVOKE ] || exit 0; cat > {out}"
        ))
        .spawn();
    ext.expect_exit(0, secs(20));
    let got = fs::read(&out).unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got == body, "stdin bytes differ");
    assert_none(&api, Endpoint::ExitError);
}

fn silent_handler(cmd: &str) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_raw(big_invoke("silent", 5_000_000), Some("application/json"));
    let mut ext = sb.ext(&api).handler(cmd).spawn();
    let nexts = api.wait_for_requests(Endpoint::Next, 2, secs(5));
    assert_eq!(
        nexts.len(),
        2,
        "extension blocked on a handler that does not read stdin\n{}\n{}",
        api.describe(),
        ext.output_tail()
    );
    assert_none(&api, Endpoint::ExitError);
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(5));
}

/// `true` never reads its 5 MB stdin: not an error, no block.
#[test]
fn silent_handler_true_with_5mb_event() {
    silent_handler("true");
}

/// `sleep 0.2` never reads its 5 MB stdin: not an error, no block.
#[test]
fn silent_handler_sleep_with_5mb_event() {
    silent_handler("sleep 0.2");
}

/// A handler writing 50 MB (500 000 lines of 100 bytes): every line reaches the extension's
/// stdout whole.
#[test]
fn fifty_mb_writer_lines_whole() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("writer", deadline_in(60_000));
    api.push_shutdown("spindown", deadline_in(60_000));
    let mut ext = sb
        .ext(&api)
        .handler("[ \"$LAMBDA_EVENT_TYPE\" = INVOKE ] || exit 0; head -c 50000000 /dev/zero | tr '\\0' 'a' | fold -w 100")
        .spawn();
    ext.expect_exit(0, secs(60));
    assert!(ext.wait_output_closed(secs(5)), "stdout/stderr not closed");
    let out = ext.stdout();
    let mut whole = 0usize;
    let mut broken = Vec::new();
    for line in out.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if line.len() == 100 && line.iter().all(|b| *b == b'a') {
            whole += 1;
        } else if line.contains(&b'a') && broken.len() < 5 {
            broken.push(String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned());
        }
    }
    assert!(
        broken.is_empty(),
        "broken/mixed lines on stdout: {broken:?}"
    );
    assert_eq!(whole, 500_000, "whole lines (stdout {} bytes)", out.len());
    assert_none(&api, Endpoint::ExitError);
}

/// A final line without newline is not lost (a newline is appended), on stdout and stderr.
#[test]
fn last_line_without_newline_kept() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("partial", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler("printf 'line1\\npartial-%s' \"$LAMBDA_EVENT_TYPE\"; printf 'err-%s' \"$LAMBDA_EVENT_TYPE\" >&2")
        .spawn();
    ext.expect_exit(0, secs(10));
    ext.wait_output_closed(secs(2));
    let out = ext.stdout_str();
    assert_eq!(
        out, "line1\npartial-INVOKE\nline1\npartial-SHUTDOWN\n",
        "stdout must be the handler's output unchanged, plus final newlines"
    );
    let err = ext.stderr_str();
    assert!(err.contains("err-INVOKE\n"), "stderr:\n{err}");
    assert!(err.contains("err-SHUTDOWN\n"), "stderr:\n{err}");
}

/// stdout/stderr lines are copied unprefixed and stdout of the handler goes to stdout,
/// stderr to stderr.
#[test]
fn output_copied_to_matching_stream() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler("echo to-stdout; echo to-stderr >&2")
        .spawn();
    ext.expect_exit(0, secs(10));
    ext.wait_output_closed(secs(2));
    let out = ext.stdout_str();
    let err = ext.stderr_str();
    assert!(out.lines().any(|l| l == "to-stdout"), "stdout:\n{out}");
    assert!(!out.contains("to-stderr"), "stdout:\n{out}");
    assert!(err.lines().any(|l| l == "to-stderr"), "stderr:\n{err}");
    assert!(!err.contains("to-stdout"), "stderr:\n{err}");
}

/// A background child that keeps stdout open does not delay the next /event/next, and it is
/// killed (SIGKILL of the group once the handler exits).
#[test]
fn background_child_holding_stdout_does_not_block() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let pidfile = sb.path("bg.pid");
    let mut ext = sb
        .ext(&api)
        .handler(&format!(
            "[ \"$LAMBDA_EVENT_TYPE\" = INVOKE ] || exit 0; sleep 30 & echo $! > {}; echo handler-done",
            pidfile.display()
        ))
        .spawn();
    let first = api.expect_requests(Endpoint::Next, 1, secs(5))[0].at;
    api.push_invoke("bg", deadline_in(20_000));
    let nexts = api.wait_for_requests(Endpoint::Next, 2, secs(5));
    let pid = read_pid(&pidfile);
    let gone = wait_pid_gone(pid, secs(1));
    cleanup_pid(pid);
    assert_eq!(
        nexts.len(),
        2,
        "next delayed by a background child\n{}",
        api.describe()
    );
    let gap = nexts[1].at.duration_since(first);
    assert!(gap <= secs(3), "next only {gap:?} after the event");
    assert!(gone, "background child {pid} not killed");
    assert!(
        wait_for(secs(2), || ext.stdout_str().contains("handler-done\n")),
        "{}",
        ext.output_tail()
    );
    assert_none(&api, Endpoint::ExitError);
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(5));
}

/// errorMessage contains the command string, `status 3`, and the last stderr line.
#[test]
fn error_message_has_command_status_and_stderr_tail() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let script = sb.script(
        "fail3.sh",
        "#!/bin/sh\necho 'first stderr line' >&2\necho 'stdout noise'\necho 'last stderr line' >&2\nexit 3\n",
    );
    let cmd = format!("{script} some-arg");
    api.push_invoke("fail", deadline_in(8000));
    let mut ext = sb.ext(&api).handler(&cmd).spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains(&cmd), "no command in: {msg}");
    assert!(msg.contains("status 3"), "no status in: {msg}");
    assert!(msg.contains("last stderr line"), "no stderr tail in: {msg}");
    assert!(
        !msg.contains("stdout noise"),
        "stdout in errorMessage: {msg}"
    );
}

/// A handler killed by a signal: errorMessage says `signal 9`.
#[test]
fn error_message_names_signal() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let script = sb.script("selfkill.sh", "#!/bin/sh\nkill -9 $$\n");
    api.push_invoke("sig", deadline_in(8000));
    let mut ext = sb.ext(&api).handler(&script).spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("signal 9"), "{msg}");
    assert!(msg.contains(&script), "{msg}");
}

/// 5 MB of stderr: errorMessage stays < 8 KiB yet keeps the last line; all of stderr is still
/// copied to the extension's stderr.
#[test]
fn error_message_bounded_with_huge_stderr() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let script = sb.script(
        "noisy.sh",
        "#!/bin/sh\nhead -c 5000000 /dev/zero | tr '\\0' 'e' | fold -w 100 >&2\necho 'FINAL-LINE' >&2\nexit 2\n",
    );
    api.push_invoke("noisy", deadline_in(30_000));
    let mut ext = sb.ext(&api).handler(&script).spawn();
    ext.expect_exit(1, secs(30));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    assert!(
        errs[0].body.len() < 16 * 1024,
        "body {} bytes",
        errs[0].body.len()
    );
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.len() < 8 * 1024, "errorMessage is {} bytes", msg.len());
    assert!(
        msg.contains("FINAL-LINE"),
        "last line missing: {}",
        &msg[msg.len().saturating_sub(300)..]
    );
    assert!(msg.contains("status 2"), "{}", &msg[..msg.len().min(300)]);
    ext.wait_output_closed(secs(2));
    let copied = ext.stderr().iter().filter(|b| **b == b'e').count();
    assert!(copied >= 5_000_000, "only {copied} bytes of stderr copied");
}

/// A command that cannot be started is found at Init: `Extension.ConfigInvalid` on init/error,
/// naming the variable and the path, and no event is ever asked for.
fn unstartable(cmd: &str, expected: &str, init: bool, events: &str) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("nostart", deadline_in(8000));
    let mut launcher = sb.ext(&api).env("SHELL_EXT_EVENTS", events);
    launcher = if init {
        launcher.handler("true").env("SHELL_EXT_INIT", cmd)
    } else {
        launcher.handler(cmd)
    };
    let mut ext = launcher.spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.ConfigInvalid");
    let variable = if init {
        "SHELL_EXT_INIT"
    } else {
        "SHELL_EXT_HANDLER"
    };
    assert!(msg.contains(variable), "no variable in: {msg}");
    assert!(msg.contains(expected), "no {expected:?} in: {msg}");
    assert!(
        msg.contains(cmd.split_whitespace().next().unwrap()),
        "no command in: {msg}"
    );
    assert_none(&api, Endpoint::Next);
    assert_none(&api, Endpoint::ExitError);
}

/// A missing handler command fails Init, in both registration modes.
#[test]
fn missing_command_fails_at_init() {
    for events in ["INVOKE,SHUTDOWN", "SHUTDOWN"] {
        unstartable(
            "/nonexistent/dir/handler --flag",
            "does not exist",
            false,
            events,
        );
    }
}

/// A non-executable handler file fails Init with the fix (chmod).
#[test]
fn non_executable_command_fails_at_init() {
    let sb = Sandbox::new();
    let path = sb.path("not-exec.sh");
    fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    // Keep the sandbox alive while the extension runs: the path is absolute.
    unstartable(
        path.to_str().unwrap(),
        "chmod 755",
        false,
        "INVOKE,SHUTDOWN",
    );
}

/// A script saved with CRLF line endings names `/bin/sh\r`: the message says so.
#[test]
fn crlf_script_fails_at_init_naming_line_endings() {
    let sb = Sandbox::new();
    let script = sb.script("crlf.sh", "#!/bin/sh\r\nexit 0\r\n");
    unstartable(&script, "CRLF", false, "SHUTDOWN");
}

/// A script whose interpreter is missing fails Init, naming the interpreter.
#[test]
fn missing_interpreter_fails_at_init() {
    let sb = Sandbox::new();
    let script = sb.script("py.sh", "#!/opt/no-python/bin/python3\nprint(1)\n");
    unstartable(
        &script,
        "/opt/no-python/bin/python3",
        false,
        "INVOKE,SHUTDOWN",
    );
}

/// A missing init command fails Init the same way.
#[test]
fn missing_init_command_fails_at_init() {
    unstartable(
        "/nonexistent/init-cmd",
        "does not exist",
        true,
        "INVOKE,SHUTDOWN",
    );
}

/// A handler that disappears after Init (here: the init command removes it) still fails as
/// HandlerFailed with the OS error at the event.
#[test]
fn handler_gone_after_init_fails_with_os_error() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let script = sb.script("vanishing.sh", "#!/bin/sh\nexit 0\n");
    api.push_invoke("gone", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&script)
        .env("SHELL_EXT_INIT", &format!("rm {script}"))
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert!(msg.contains(&script), "{msg}");
}
