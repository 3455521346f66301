//! A signal to the extension wins over everything the handler's death would otherwise cause:
//! no error report, no further `/event/next`, no handler started after it, nothing left
//! running, exit 128 + signal within 1 s. (Issue 7, defect 1: the handler killed by the
//! forwarded SIGTERM used to be reported as `Extension.HandlerFailed`, and with
//! `SHELL_EXT_ON_ERROR=continue` the next event's handler was started and left behind.)

mod common;

use std::fs;
use std::time::Instant;

use common::*;

/// Runs a handler that does not trap TERM, sends `sig` to the extension while it runs (after
/// `delay_ms` once the handler has started), and checks that the signal won.
fn signal_wins(sig: i32, on_error: &str, shell_line: bool, delay_ms: u64) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let token = unique_sleep_arg();
    let starts = sb.path("starts");
    let handler = if shell_line {
        // Run through /bin/sh -c: the shell and its sleep are both in the handler's group.
        format!(
            "echo start >> {}; sleep {token} && echo done",
            starts.display()
        )
    } else {
        sb.script(
            "sleeper.sh",
            &format!(
                "#!/bin/sh\necho start >> {}\nexec sleep {token}\n",
                starts.display()
            ),
        )
    };
    for n in 0..3 {
        api.push_invoke(&format!("req-{n}"), deadline_in(20_000));
    }
    let mut ext = sb
        .ext(&api)
        .handler(&handler)
        .env("SHELL_EXT_ON_ERROR", on_error)
        .spawn();
    assert!(
        wait_for(secs(5), || !pids_with_arg(&token).is_empty()),
        "handler never started\n{}",
        ext.output_tail()
    );
    std::thread::sleep(ms(delay_ms));
    let sent = Instant::now();
    ext.signal(sig);
    let status = ext.wait_timeout(secs(3));
    let took = sent.elapsed();
    let leftovers = pids_with_arg(&token);
    leftovers.iter().for_each(|&pid| cleanup_pid(pid));
    let status = status.unwrap_or_else(|| panic!("still running 3 s after signal {sig}"));
    let context = format!("{}\n{}", api.describe(), ext.output_tail());
    assert_eq!(status.code(), Some(128 + sig), "{context}");
    assert!(took <= ms(1000), "took {took:?} to exit\n{context}");
    assert_none(&api, Endpoint::ExitError);
    assert_none(&api, Endpoint::InitError);
    assert_eq!(
        api.count(Endpoint::Next),
        1,
        "no /event/next after the signal\n{context}"
    );
    let started = fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(
        started.lines().count(),
        1,
        "handlers started: {started:?}\n{context}"
    );
    assert!(
        leftovers.is_empty(),
        "left running: {leftovers:?}\n{context}"
    );
    assert!(
        !ext.stderr_str().contains("HandlerFailed"),
        "a false failure was logged\n{context}"
    );
}

#[test]
fn sigterm_while_handler_runs_exit_mode() {
    for delay_ms in [0, 50] {
        signal_wins(libc::SIGTERM, "exit", false, delay_ms);
    }
}

#[test]
fn sigterm_while_handler_runs_continue_mode() {
    for delay_ms in [0, 50] {
        signal_wins(libc::SIGTERM, "continue", false, delay_ms);
    }
}

#[test]
fn sigint_while_shell_handler_runs_continue_mode() {
    for delay_ms in [0, 50] {
        signal_wins(libc::SIGINT, "continue", true, delay_ms);
    }
}

#[test]
fn sigterm_while_shell_handler_runs_exit_mode() {
    signal_wins(libc::SIGTERM, "exit", true, 20);
}
