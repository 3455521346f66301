//! Handler abuse (issue 12): handlers that fork a daemon, close their stdout early, ignore
//! SIGTERM, write binary garbage and invalid UTF-8 to stderr, overrun the deadline by an hour,
//! or never read a 5 MB event; in per-event mode, and in persistent mode where it applies.
//! Each runs under the real binary against the fake Extensions API; the assertions are on what
//! the API got, what the handler left behind (pids, files) and the extension's log.
//!
//! Already covered elsewhere, so not repeated: a background child holding stdout
//! (tests/io.rs), a TERM trap that exits (tests/deadline.rs), quick handlers that never read a
//! 5 MB stdin (tests/io.rs), hangs without a TERM trap (tests/deadline.rs,
//! tests/persistent.rs).

mod common;

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;

/// Field 5 of `/proc/<pid>/stat`: the process group.
fn pgid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Records, at each request to `ep`, whether the file at `path` exists.
fn file_exists_at(api: &FakeApi, ep: Endpoint, path: std::path::PathBuf) -> Arc<Mutex<Vec<bool>>> {
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    let record = seen.clone();
    api.on_request(move |r| {
        if r.endpoint == ep {
            record.lock().unwrap().push(path.exists());
        }
    });
    seen
}

fn persistent<'a>(sb: &'a Sandbox, api: &FakeApi, handler: &str) -> Launcher<'a> {
    sb.ext(api)
        .handler(handler)
        .env("SHELL_EXT_MODE", "persistent")
}

/// A persistent handler loop (`head -n 1` per line, so a 5 MB line is read in a few calls):
/// runs `per_event` with the line in `$EV`, then acknowledges `ok` unless `per_event` did
/// `continue`.
fn persistent_loop(sb: &Sandbox, name: &str, on_start: &str, per_event: &str) -> String {
    sb.script(
        name,
        &format!(
            "#!/bin/sh\n{on_start}\nEV={dir}/ev.$$\nwhile :; do\n\
             \thead -n 1 > \"$EV\" || exit 97\n\t[ -s \"$EV\" ] || break\n\
             \t{per_event}\n\techo ok >&3\ndone\nexit 0\n",
            dir = sb.root().display(),
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// A daemon

/// A handler that starts a classic daemon (a double fork: the daemon's parent exits, so it is
/// re-parented away from the handler; stdin, stdout and stderr on /dev/null, so it holds no
/// pipe of the extension's) and exits 0 at once. The daemon is in the handler's process group,
/// not the extension's, and it does not outlive the event: it is gone right after the
/// handler's exit, before the extension is done with the event; the event is `ok`.
#[test]
fn per_event_daemon_dies_with_the_events_process_group() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let token = unique_sleep_arg();
    let handler = sb.script(
        "daemonize.sh",
        &format!(
            "#!/bin/sh\n[ \"$LAMBDA_EVENT_TYPE\" = INVOKE ] || exit 0\n\
             ( sleep {token} </dev/null >/dev/null 2>&1 & echo $! > {pid}; cut -d' ' -f5 /proc/$!/stat > {group} ) </dev/null >/dev/null 2>&1\n\
             cut -d' ' -f5 /proc/$$/stat > {own}\nexit 0\n",
            pid = sb.p("daemon.pid"),
            group = sb.p("daemon.pgid"),
            own = sb.p("handler.pgid"),
        ),
    );
    let mut ext = sb.ext(&api).handler(&handler).spawn();
    api.expect_requests(Endpoint::Next, 1, secs(5));
    api.push_invoke("daemon", deadline_in(20_000));
    let nexts = api.expect_requests(Endpoint::Next, 2, secs(10));
    let daemon = read_pid(&sb.path("daemon.pid"));
    let daemon_group = read_pid(&sb.path("daemon.pgid"));
    let handler_group = read_pid(&sb.path("handler.pgid"));
    let gone = wait_pid_gone(daemon, secs(2));
    let left = pids_with_arg(&token);
    for pid in &left {
        cleanup_pid(*pid);
    }
    cleanup_pid(daemon);
    assert!(
        gone && left.is_empty(),
        "the daemon {daemon} outlived its event (still running: {left:?})"
    );
    // The daemon was in the handler's own process group, not the extension's.
    let ext_group = pgid(ext.pid as i32).expect("the extension's group");
    assert_eq!(daemon_group, handler_group, "the daemon's group");
    assert_ne!(
        handler_group, ext_group,
        "the handler runs in the extension's group"
    );
    assert!(nexts[1].at.elapsed() < secs(10));
    assert!(
        ext.stderr_str().contains("INVOKE daemon ok"),
        "{}",
        ext.output_tail()
    );
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(5));
    assert_none(&api, Endpoint::ExitError);
}

/// A persistent handler that starts a daemon (double fork, stdio on /dev/null) on each event:
/// the daemons live in the handler's process group while it runs, and none outlives the
/// handler: after SHUTDOWN, end of file and the handler's exit, every one is gone.
#[test]
fn persistent_daemons_do_not_outlive_the_handler() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let token = unique_sleep_arg();
    let handler = persistent_loop(
        &sb,
        "daemons.sh",
        "",
        &format!(
            "( sleep {token} </dev/null >/dev/null 2>&1 & echo $! >> {pids} ) </dev/null >/dev/null 2>&1",
            pids = sb.p("daemon.pids")
        ),
    );
    let mut ext = persistent(&sb, &api, &handler).spawn();
    for i in 0..3 {
        api.push_invoke(&format!("d-{i}"), deadline_in(20_000));
    }
    api.expect_requests(Endpoint::Next, 4, secs(10));
    // The last daemon may still be between fork and exec when the ack arrives.
    wait_for(secs(5), || pids_with_arg(&token).len() >= 3);
    let running = pids_with_arg(&token);
    assert_eq!(
        running.len(),
        3,
        "one daemon per event while the handler runs"
    );
    api.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(10));
    let gone = wait_for(secs(2), || pids_with_arg(&token).is_empty());
    let left = pids_with_arg(&token);
    for pid in &left {
        cleanup_pid(*pid);
    }
    assert!(gone, "daemons outlived the persistent handler: {left:?}");
    assert_none(&api, Endpoint::ExitError);
}

// ---------------------------------------------------------------------------------------------
// Closing stdout early

/// A handler that closes stdout, stderr and stdin at once and goes on working for 300 ms: the
/// extension waits for its exit, not for the end of its output (the work is done when the next
/// `/event/next` arrives); one that closes them and exits 3 fails with `status 3`; and the
/// handlers after them still have their output copied (the extension's own pipes were not
/// closed with theirs).
#[test]
fn per_event_handler_closing_its_output_early() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let done = sb.path("done");
    let handler = sb.script(
        "close.sh",
        &format!(
            "#!/bin/sh\ncase \"$LAMBDA_REQUEST_ID\" in\n\
             close-and-work) exec >&- 2>&- <&-; sleep 0.3; touch {done}; exit 0;;\n\
             close-and-fail) echo about to close >&2; exec >&- 2>&-; exit 3;;\n\
             *) echo \"after $LAMBDA_EVENT_TYPE $LAMBDA_REQUEST_ID\"; echo \"stderr after\" >&2;;\n\
             esac\n",
            done = done.display()
        ),
    );
    let done_at_next = file_exists_at(&api, Endpoint::Next, done.clone());
    let mut ext = sb
        .ext(&api)
        .handler(&handler)
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    api.push_invoke("close-and-work", deadline_in(20_000));
    api.push_invoke("close-and-fail", deadline_in(20_000));
    api.push_invoke("plain", deadline_in(20_000));
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(10));
    assert_eq!(
        done_at_next.lock().unwrap().clone(),
        [false, true, true, true],
        "the /event/next after close-and-work came before it finished"
    );
    let out = ext.stdout_str();
    assert!(
        out.contains("after INVOKE plain\n"),
        "{}",
        ext.output_tail()
    );
    assert!(out.contains("after SHUTDOWN \n"), "{}", ext.output_tail());
    let err = ext.stderr_str();
    assert!(err.contains("INVOKE close-and-work ok"), "{err}");
    assert!(
        err.contains("INVOKE close-and-fail failed (status 3)"),
        "{err}"
    );
    assert!(
        err.contains("WARN Extension.HandlerFailed: handler")
            && err.contains("exited with status 3; stderr: about to close"),
        "{err}"
    );
    assert!(err.contains("stderr after\n"), "{err}");
    assert_none(&api, Endpoint::ExitError);
}

/// A persistent handler that closes its stdout and stderr at start and keeps answering on fd 3:
/// every event is acknowledged by that one process, and SHUTDOWN ends with exit 0.
#[test]
fn persistent_handler_closing_its_output_early() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let handler = persistent_loop(
        &sb,
        "closed.sh",
        &format!("echo $$ >> {}\nexec >&- 2>&-", sb.p("starts")),
        "",
    );
    let mut ext = persistent(&sb, &api, &handler).spawn();
    for i in 0..5 {
        api.push_invoke(&format!("c-{i}"), deadline_in(20_000));
    }
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(15));
    let err = ext.stderr_str();
    for i in 0..5 {
        assert!(err.contains(&format!("INVOKE c-{i} ok")), "{err}");
    }
    let starts = fs::read_to_string(sb.path("starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "restarted: {starts}");
    assert_none(&api, Endpoint::ExitError);
}

// ---------------------------------------------------------------------------------------------
// Ignoring SIGTERM

/// A shell loop that logs each SIGTERM (epoch ms) to `term` and carries on (its `sleep` child
/// dies of it, the loop does not), for the request `stubborn`; other events are served at once.
fn term_ignorer(sb: &Sandbox) -> String {
    sb.script(
        "stubborn.sh",
        &format!(
            "#!/bin/sh\n[ \"$LAMBDA_REQUEST_ID\" = stubborn ] || {{ echo \"served $LAMBDA_EVENT_TYPE\" >> {served}; exit 0; }}\n\
             trap 'date +%s%3N >> {term}' TERM\necho $$ > {pid}\nwhile :; do sleep 0.05; done\n",
            served = sb.p("served"),
            term = sb.p("term"),
            pid = sb.p("stubborn.pid"),
        ),
    )
}

/// The SIGTERMs the handler logged (epoch ms).
fn terms(sb: &Sandbox) -> Vec<u64> {
    fs::read_to_string(sb.path("term"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Per-event, margin 1000 ms: SIGTERM comes at `deadlineMs − 1000` and is ignored; SIGKILL
/// follows at `deadlineMs − 500` and the handler is gone before `deadlineMs`. It is reported as
/// `Extension.HandlerTimeout` (a warning, with `continue`), and the next event is served.
#[test]
fn per_event_handler_ignoring_sigterm_is_killed_at_the_deadline() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .handler(&term_ignorer(&sb))
        .env("SHELL_EXT_TIMEOUT_MARGIN_MS", "1000")
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    api.expect_requests(Endpoint::Next, 1, secs(5));
    let deadline = deadline_in(2500);
    api.push_invoke("stubborn", deadline);
    let pid = read_pid(&sb.path("stubborn.pid"));
    let gone = gone_at(pid, deadline + 2000);
    cleanup_pid(pid);
    let gone = gone.expect("the handler outlived its deadline by 2 s");
    api.push_invoke("after", deadline_in(20_000));
    let nexts = api.expect_requests(Endpoint::Next, 3, secs(10));
    let terms = terms(&sb);
    assert_eq!(terms.len(), 1, "SIGTERM once: {terms:?}");
    let term = terms[0];
    // Epoch ms on both sides: TERM at deadline - 1000 (50 ms for rounding), and the trap ran
    // before the KILL at deadline - 500 (150 ms for a loaded machine).
    assert!(
        term + 1050 >= deadline && term + 350 <= deadline,
        "SIGTERM at deadline - {} ms",
        deadline as i64 - term as i64
    );
    assert!(
        gone <= deadline,
        "gone {} ms after deadlineMs",
        gone - deadline
    );
    assert!(
        gone >= term + 150,
        "gone {} ms after the TERM: not the KILL",
        gone - term
    );
    assert!(
        nexts[1].wall_ms() <= deadline,
        "next after the timeout came late"
    );
    let err = ext.stderr_str();
    assert!(
        err.contains("WARN Extension.HandlerTimeout: handler")
            && err.contains("was still running after"),
        "{err}"
    );
    assert!(err.contains("INVOKE stubborn timed out"), "{err}");
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(10));
    assert_eq!(
        fs::read_to_string(sb.path("served")).unwrap(),
        "served INVOKE\nserved SHUTDOWN\n"
    );
    let summary = ext.stderr_str();
    assert!(summary.contains("1 timed out"), "{summary}");
    assert_none(&api, Endpoint::ExitError);
}

/// Persistent, margin 1000 ms, `exit`: a handler that never answers `stubborn` and ignores
/// SIGTERM (logging it) is SIGKILLed; exit/error `Extension.HandlerTimeout` arrives before
/// `deadlineMs` with the handler gone, and the extension exits 1.
#[test]
fn persistent_handler_ignoring_sigterm_is_killed_and_reported() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let handler = persistent_loop(
        &sb,
        "stubborn.sh",
        &format!(
            "trap 'date +%s%3N >> {term}' TERM\necho $$ > {pid}",
            term = sb.p("term"),
            pid = sb.p("stubborn.pid")
        ),
        "if grep -q stubborn \"$EV\"; then while :; do sleep 0.05; done; fi",
    );
    let mut ext = persistent(&sb, &api, &handler)
        .env("SHELL_EXT_TIMEOUT_MARGIN_MS", "1000")
        .spawn();
    api.push_invoke("first", deadline_in(20_000));
    api.expect_requests(Endpoint::Next, 2, secs(10));
    let pid = read_pid(&sb.path("stubborn.pid"));
    let deadline = deadline_in(2500);
    api.push_invoke("stubborn", deadline);
    let errs = api.expect_requests(Endpoint::ExitError, 1, secs(10));
    let gone = gone_at(pid, deadline + 2000);
    cleanup_pid(pid);
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerTimeout");
    assert!(errs[0].wall_ms() <= deadline, "reported after deadlineMs");
    assert!(!pid_alive(pid), "handler alive after the report");
    let gone = gone.expect("the handler outlived its deadline by 2 s");
    assert!(
        gone <= deadline,
        "gone {} ms after deadlineMs",
        gone - deadline
    );
    let terms = terms(&sb);
    assert_eq!(terms.len(), 1, "SIGTERM once: {terms:?}");
    assert!(
        terms[0] + 1050 >= deadline && terms[0] + 350 <= deadline,
        "SIGTERM at deadline - {} ms",
        deadline as i64 - terms[0] as i64
    );
    assert!(msg.contains("stubborn.sh"), "{msg}");
    ext.expect_exit(1, secs(5));
    assert_eq!(api.count(Endpoint::Next), 2, "{}", api.describe());
}

/// SIGTERM to the extension while a handler that ignores SIGTERM runs (no deadline near): the
/// handler gets the forwarded TERM (and logs it), ignores it, and is SIGKILLed 500 ms later;
/// the extension exits 143 within about 1 s, with nothing reported and no further request.
#[test]
fn sigterm_to_the_extension_with_a_handler_ignoring_it() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("stubborn", deadline_in(30_000));
    let mut ext = sb.ext(&api).handler(&term_ignorer(&sb)).spawn();
    let pid = read_pid(&sb.path("stubborn.pid"));
    let sent = now_ms();
    let started = Instant::now();
    ext.signal(libc::SIGTERM);
    let status = ext.wait_timeout(secs(5));
    let took = started.elapsed();
    let gone = gone_at(pid, sent + 3000);
    cleanup_pid(pid);
    let status = status.expect("still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(143), "{}", ext.output_tail());
    assert!(took <= ms(1500), "exit {took:?} after SIGTERM");
    let gone = gone.expect("the handler outlived the extension by 3 s");
    let terms = terms(&sb);
    assert_eq!(terms.len(), 1, "the TERM was forwarded once: {terms:?}");
    assert!(
        gone >= terms[0] + 150,
        "gone {} ms after the TERM: not the KILL",
        gone - terms[0]
    );
    assert_eq!(api.count(Endpoint::Next), 1, "{}", api.describe());
    assert_none(&api, Endpoint::ExitError);
}

// ---------------------------------------------------------------------------------------------
// Garbage on stderr

/// What the garbage handler writes to stderr: quotes and a backslash, NUL, invalid UTF-8 (a lone continuation byte, an
/// overlong encoding, a UTF-16 surrogate), escape sequences, a bare CR, and a last line without
/// a newline. Each line starts with `GARBAGE`.
const GARBAGE_PRINTF: &str = r#"printf 'GARBAGE "q" back\\slash \000 \377\376 \200 \300\257 \355\240\200 \033[31mred\033[0m \r bare-cr\n' >&2; printf 'GARBAGE \033]0;title\007 \377 tail without newline' >&2"#;

/// The lines `GARBAGE_PRINTF` writes, as bytes (the last one as the extension ends it: with a
/// newline added).
fn garbage_lines() -> Vec<Vec<u8>> {
    vec![
        b"GARBAGE \"q\" back\\slash \0 \xff\xfe \x80 \xc0\xaf \xed\xa0\x80 \x1b[31mred\x1b[0m \r bare-cr".to_vec(),
        b"GARBAGE \x1b]0;title\x07 \xff tail without newline".to_vec(),
    ]
}

fn garbage_handler(sb: &Sandbox) -> String {
    sb.script(
        "garbage.sh",
        &format!(
            "#!/bin/sh\n[ \"$LAMBDA_REQUEST_ID\" = garbage ] || exit 0\n\
             printf 'bin\\000\\377 stdout\\n'\n{GARBAGE_PRINTF}\nexit 3\n"
        ),
    )
}

/// `AWS_LAMBDA_LOG_FORMAT=JSON`, `continue`: a handler writes binary garbage to stderr and
/// exits 3. Its bytes reach stderr unchanged (the last line ended with a newline), and every
/// other stderr line is one of the extension's own, a JSON object with `timestamp`, `level`,
/// `message` and `extension`: none is glued to the garbage or broken by it, including the
/// warning that quotes the garbage as the stderr tail.
#[test]
fn garbage_on_stderr_keeps_every_json_log_line_valid() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("garbage", deadline_in(20_000));
    api.push_invoke("clean", deadline_in(20_000));
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .handler(&garbage_handler(&sb))
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    ext.expect_exit(0, secs(10));
    let stderr = ext.stderr();
    assert!(
        stderr.ends_with(b"\n"),
        "stderr does not end with a newline"
    );
    let expected_garbage = garbage_lines();
    let mut garbage_seen = Vec::new();
    let mut json_lines = Vec::new();
    for line in stderr[..stderr.len() - 1].split(|&b| b == b'\n') {
        if line.starts_with(b"GARBAGE") {
            garbage_seen.push(line.to_vec());
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "a stderr line is neither the handler's nor a JSON log line ({e}): {:?}",
                String::from_utf8_lossy(line)
            )
        });
        for key in ["timestamp", "level", "message", "extension"] {
            assert!(value[key].is_string(), "{key} missing: {value}");
        }
        json_lines.push(value);
    }
    assert_eq!(
        garbage_seen, expected_garbage,
        "the handler's bytes were altered"
    );
    let warning = json_lines
        .iter()
        .find(|v| {
            v["level"] == "WARN"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Extension.HandlerFailed:"))
        })
        .unwrap_or_else(|| panic!("no HandlerFailed warning in {json_lines:?}"));
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(message.contains("tail without newline"), "{message}");
    assert!(
        json_lines
            .iter()
            .any(|v| v["message"] == "INVOKE clean ok in 0.0 ms"
                || v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("INVOKE clean ok"))),
        "{json_lines:?}"
    );
    assert!(
        ext.stdout().starts_with(b"bin\0\xff stdout\n"),
        "stdout altered"
    );
    assert_none(&api, Endpoint::ExitError);
}

/// Text format, `exit`: the same garbage; the exit/error report is valid JSON whose message
/// has the status and the last line of the tail, and every stderr line that is not the
/// handler's is one of the extension's, `[lambda-shell-extension] LEVEL …`, valid UTF-8 and
/// free of control characters (the quoted tail drops CRs and shows the others as U+FFFD).
#[test]
fn garbage_on_stderr_keeps_text_log_lines_and_the_report_valid() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_invoke("garbage", deadline_in(20_000));
    let mut ext = sb.ext(&api).handler(&garbage_handler(&sb)).spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("exited with status 3"), "{msg}");
    assert!(msg.contains("tail without newline"), "{msg}");
    let stderr = ext.stderr();
    assert!(stderr.ends_with(b"\n"));
    let mut garbage_seen = Vec::new();
    for line in stderr[..stderr.len() - 1].split(|&b| b == b'\n') {
        if line.starts_with(b"GARBAGE") {
            garbage_seen.push(line.to_vec());
            continue;
        }
        let text = std::str::from_utf8(line).unwrap_or_else(|e| {
            panic!(
                "an extension line is not UTF-8 ({e}): {:?}",
                String::from_utf8_lossy(line)
            )
        });
        assert!(
            text.starts_with("[lambda-shell-extension] "),
            "not an extension line: {text:?}"
        );
        // A bare CR, NUL or an escape sequence quoted from the handler would garble the line
        // (a CR makes a terminal overwrite its start; ESC sequences recolour or retitle it).
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\t'),
            "a control character in an extension line: {text:?}"
        );
    }
    assert_eq!(
        garbage_seen,
        garbage_lines(),
        "the handler's bytes were altered"
    );
}

// ---------------------------------------------------------------------------------------------
// An hour past the deadline, a 5 MB event never read

/// An INVOKE event of about 5 MB.
fn big_invoke(request_id: &str, deadline_ms: u64) -> Vec<u8> {
    let mut body = format!(
        r#"{{"eventType":"INVOKE","deadlineMs":{deadline_ms},"requestId":"{request_id}","invokedFunctionArn":"{FUNCTION_ARN}","padding":""#
    )
    .into_bytes();
    body.extend((0..5_000_000).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(b"\"}");
    body
}

/// Per-event: `sleep 3600` that never reads its 5 MB event, with `continue`. It is killed at
/// the deadline (gone by `deadlineMs`, the next `/event/next` before it), reported as a
/// `Extension.HandlerTimeout` warning, and the next event is served.
#[test]
fn per_event_sleep_3600_with_an_unread_5mb_event() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let token = unique_sleep_arg().replacen("30.", "3600.", 1);
    let handler = format!(
        "[ \"$LAMBDA_REQUEST_ID\" = huge ] || {{ echo \"served $LAMBDA_EVENT_TYPE\" >> {served}; exit 0; }}; exec sleep {token}",
        served = sb.p("served")
    );
    let mut ext = sb
        .ext(&api)
        .handler(&handler)
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    api.expect_requests(Endpoint::Next, 1, secs(5));
    let deadline = deadline_in(2000);
    api.push_raw(big_invoke("huge", deadline), Some("application/json"));
    let started = Instant::now();
    assert!(
        wait_for(secs(5), || !pids_with_arg(&token).is_empty()),
        "never started"
    );
    let gone = wait_for(ms(deadline.saturating_sub(now_ms()) + 200), || {
        pids_with_arg(&token).is_empty()
    });
    let left = pids_with_arg(&token);
    for pid in &left {
        cleanup_pid(*pid);
    }
    assert!(
        gone && now_ms() <= deadline + 200,
        "still running at deadlineMs: {left:?}"
    );
    let nexts = api.expect_requests(Endpoint::Next, 2, secs(5));
    assert!(
        nexts[1].wall_ms() <= deadline,
        "next after the timeout came late"
    );
    assert!(started.elapsed() < secs(10));
    api.push_invoke("after", deadline_in(20_000));
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(10));
    let err = ext.stderr_str();
    assert!(
        err.contains("WARN Extension.HandlerTimeout: handler"),
        "{}",
        ext.output_tail()
    );
    assert!(err.contains("INVOKE huge timed out"), "{err}");
    assert!(err.contains("INVOKE after ok"), "{err}");
    assert_eq!(
        fs::read_to_string(sb.path("served")).unwrap(),
        "served INVOKE\nserved SHUTDOWN\n"
    );
    assert_none(&api, Endpoint::ExitError);
}

/// Persistent, `continue`: the first handler process never reads stdin and sleeps an hour, so
/// the 5 MB line cannot even be written to it. The write does not hold the extension past the
/// deadline: the process is killed by `deadlineMs`, `Extension.HandlerTimeout` is a warning,
/// and a fresh process (which does read) handles the next event; SHUTDOWN ends with exit 0.
#[test]
fn persistent_sleep_3600_never_reading_a_5mb_line() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let token = unique_sleep_arg().replacen("30.", "3600.", 1);
    let first = sb.path("first-started");
    let handler = persistent_loop(
        &sb,
        "sleeper.sh",
        &format!(
            "echo $$ >> {starts}\n[ -e {first} ] || {{ touch {first}; exec sleep {token}; }}",
            starts = sb.p("starts"),
            first = first.display()
        ),
        &format!(
            "grep -o '\"requestId\":\"[a-z]*\"' \"$EV\" >> {}",
            sb.p("handled")
        ),
    );
    let mut ext = persistent(&sb, &api, &handler)
        .env("SHELL_EXT_ON_ERROR", "continue")
        .spawn();
    api.expect_requests(Endpoint::Next, 1, secs(5));
    assert!(
        wait_for(secs(5), || pids_with_arg(&token).len() == 1),
        "the sleeper is not running"
    );
    let deadline = deadline_in(2000);
    api.push_raw(big_invoke("huge", deadline), Some("application/json"));
    let gone = wait_for(ms(deadline.saturating_sub(now_ms()) + 200), || {
        pids_with_arg(&token).is_empty()
    });
    let left = pids_with_arg(&token);
    for pid in &left {
        cleanup_pid(*pid);
    }
    assert!(gone, "the sleeper still ran at deadlineMs: {left:?}");
    let nexts = api.expect_requests(Endpoint::Next, 2, secs(5));
    assert!(
        nexts[1].wall_ms() <= deadline + 300,
        "next {} ms after deadlineMs",
        nexts[1].wall_ms() - deadline
    );
    api.push_invoke("after", deadline_in(20_000));
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(15));
    let err = ext.stderr_str();
    assert!(
        err.contains("WARN Extension.HandlerTimeout:"),
        "{}",
        ext.output_tail()
    );
    assert!(err.contains("INVOKE after ok"), "{err}");
    let handled = fs::read_to_string(sb.path("handled")).unwrap_or_default();
    assert_eq!(handled, "\"requestId\":\"after\"\n", "{err}");
    let starts = fs::read_to_string(sb.path("starts")).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");
    assert_none(&api, Endpoint::ExitError);
}
