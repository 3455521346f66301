//! Fault storms (issue 12): the real binary against an Extensions API that cuts answers off
//! mid-body, trickles them byte by byte, delays them or answers 500 in the middle of a run; a
//! telemetry sender that does the same to the extension's listener; and a Runtime API that
//! does it to the proxy's upstream calls. Each case ends in the documented behaviour (README
//! "Errors", docs/proxy.md) with a log line naming the cause, loses nothing that was fully
//! delivered, never spins (requests are counted at the fake) and never hangs (bounded waits).
//!
//! tests/faults.rs has the single faults (register 500/403/refused/unanswered, next
//! 500/403/unparsable/dropped/slow); this suite adds the new fault kinds and the storms.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const RIE_500: &str =
    r#"{"errorMessage":"Internal Server Error","errorType":"InternalServerError"}"#;

/// A handler that saves its stdin to `seen/<request id>` (`seen/shutdown` for SHUTDOWN) and
/// appends `<event type> <request id>` to `calls`.
fn recording_handler(sb: &Sandbox) -> String {
    fs::create_dir_all(sb.path("seen")).unwrap();
    sb.script(
        "record.sh",
        &format!(
            "#!/bin/sh\ncat > \"{seen}/${{LAMBDA_REQUEST_ID:-shutdown}}\"\n\
             echo \"$LAMBDA_EVENT_TYPE ${{LAMBDA_REQUEST_ID:-}}\" >> {calls}\n",
            seen = sb.p("seen"),
            calls = sb.p("calls"),
        ),
    )
}

fn calls_seen(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.path("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn invoke_calls(ids: &[String]) -> Vec<String> {
    ids.iter().map(|id| format!("INVOKE {id}")).collect()
}

/// The gaps between consecutive requests.
fn gaps(requests: &[Request]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The Extensions API

/// An `/event/next` answer cut off mid-body, once, in the middle of a run: the cut event never
/// reaches the handler (not even partly), the extension logs the broken answer and asks again
/// after a backoff (not at once, not in a loop), and every other event is handled byte for
/// byte; SHUTDOWN still ends with exit 0 and nothing is reported.
#[test]
fn next_cut_mid_body_once_loses_only_that_event() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb.ext(&api).handler(&recording_handler(&sb)).spawn();
    let mut bodies = Vec::new();
    for i in 1..=3 {
        bodies.push((
            format!("r-{i}"),
            api.push_invoke(&format!("r-{i}"), deadline_in(20_000)),
        ));
    }
    // The 4th /event/next is waiting: its answer is the one cut off.
    api.expect_requests(Endpoint::Next, 4, secs(10));
    api.fault_times(Endpoint::Next, Fault::CloseMidResponse, 1);
    let cut_at = Instant::now();
    api.push_invoke("r-cut", deadline_in(20_000));
    for i in 4..=6 {
        bodies.push((
            format!("r-{i}"),
            api.push_invoke(&format!("r-{i}"), deadline_in(20_000)),
        ));
    }
    api.push_shutdown("spindown", deadline_in(20_000));
    ext.expect_exit(0, secs(20));

    let ids: Vec<String> = bodies.iter().map(|(id, _)| id.clone()).collect();
    let mut expected = invoke_calls(&ids);
    expected.push("SHUTDOWN ".into());
    assert_eq!(calls_seen(&sb), expected, "{}", ext.output_tail());
    assert!(
        !sb.path("seen/r-cut").exists(),
        "a cut event reached the handler"
    );
    for (id, body) in &bodies {
        assert!(
            fs::read(sb.path(&format!("seen/{id}"))).unwrap() == *body,
            "{id}: stdin differs from the event"
        );
    }
    let nexts = api.requests_to(Endpoint::Next);
    assert_eq!(nexts.len(), 8, "{}", api.describe());
    let retry_after = nexts[4].at.duration_since(cut_at);
    assert!(
        retry_after >= ms(200),
        "asked again only {retry_after:?} after the cut answer (no backoff)"
    );
    let err = ext.stderr_str();
    assert!(
        err.contains("WARN event/next: no response from the Lambda API")
            && err.contains("retrying in 250 ms"),
        "no log line about the broken answer:\n{err}"
    );
    assert_none(&api, Endpoint::ExitError);
}

/// Every `/event/next` answer cut off mid-body: the extension retries with a growing backoff
/// (250, 500, 1000 ms: 4 attempts, none within 200 ms of the last), then reports
/// `Extension.ApiError` on exit/error and exits 1, within a few seconds.
#[test]
fn next_cut_every_time_backs_off_then_reports_api_error() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb.ext(&api).handler(&recording_handler(&sb)).spawn();
    api.push_invoke("ok-1", deadline_in(20_000));
    api.expect_requests(Endpoint::Next, 2, secs(10));
    api.fault(Endpoint::Next, Fault::CloseMidResponse);
    let storm = Instant::now();
    for i in 0..8 {
        api.push_invoke(&format!("lost-{i}"), deadline_in(20_000));
    }
    ext.expect_exit(1, secs(10));
    let took = storm.elapsed();
    assert!(took <= secs(5), "gave up only after {took:?}");
    let nexts = api.requests_to(Endpoint::Next);
    let storm_nexts = &nexts[1..];
    assert_eq!(storm_nexts.len(), 4, "1 + 3 retries:\n{}", api.describe());
    for gap in gaps(storm_nexts) {
        assert!(
            gap >= ms(200),
            "retry after only {gap:?}:\n{}",
            api.describe()
        );
    }
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.ApiError");
    assert!(msg.contains("event/next"), "{msg}");
    assert!(
        ext.stderr_str()
            .contains("ERROR Extension.ApiError: event/next: no response from the Lambda API"),
        "{}",
        ext.output_tail()
    );
    assert_eq!(calls_seen(&sb), ["INVOKE ok-1"]);
}

/// A 500 on `/event/next` in the middle of a run (after 4 events): exit/error
/// `Extension.ApiError` naming the 500, an ERROR line, exit 1 at once; not one more
/// `/event/next` (a 5xx is not retried), and the summary counts the events handled.
#[test]
fn next_500_once_in_the_middle_of_a_run() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    // The 5th /event/next (after r-4) is answered 500 (a route hook: it runs after the request
    // is recorded, so which request it answers does not depend on timing).
    let counted = Arc::new(AtomicUsize::new(0));
    let seen = counted.clone();
    api.route(move |req| {
        let nth = match req.endpoint {
            Endpoint::Next => seen.fetch_add(1, Ordering::SeqCst) + 1,
            _ => 0,
        };
        (nth == 5).then(|| Routed::Respond {
            status: 500,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: RIE_500.as_bytes().to_vec(),
        })
    });
    for i in 1..=4 {
        api.push_invoke(&format!("r-{i}"), deadline_in(20_000));
    }
    api.push_invoke("never", deadline_in(20_000));
    let mut ext = sb.ext(&api).handler(&recording_handler(&sb)).spawn();
    let nexts = api.expect_requests(Endpoint::Next, 5, secs(10));
    ext.expect_exit(1, secs(5));
    let after_500 = nexts[4].at.elapsed();
    assert_eq!(api.count(Endpoint::Next), 5, "{}", api.describe());
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    assert!(
        errs[0].at.duration_since(nexts[4].at) <= secs(2),
        "reported {:?} after the 500",
        errs[0].at.duration_since(nexts[4].at)
    );
    let msg = check_error_request(&api, &errs[0], "Extension.ApiError");
    assert!(msg.contains("500"), "{msg}");
    let err = ext.stderr_str();
    assert!(
        err.contains("ERROR Extension.ApiError: event/next: the Lambda API answered 500"),
        "{err}"
    );
    assert!(err.contains("summary: 4 events (4 INVOKE"), "{err}");
    assert_eq!(
        calls_seen(&sb),
        ["INVOKE r-1", "INVOKE r-2", "INVOKE r-3", "INVOKE r-4"]
    );
    assert!(after_500 < secs(10));
}

/// Every answer trickled one byte at a time (registration, every `/event/next`): all are read
/// whole, the handler gets each event byte for byte, no retry, no error.
#[test]
fn trickled_answers_are_read_whole() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(Endpoint::Register, Fault::Trickle(ms(1)));
    api.fault(Endpoint::Next, Fault::Trickle(ms(1)));
    let first = api.push_invoke("t-1", deadline_in(20_000));
    let mut second = invoke_body("t-2", deadline_in(20_000), None);
    second.splice(1..1, r#""note":"caf\u00e9 \"q\" é ✓","#.bytes());
    api.push_raw(second.clone(), Some("application/json"));
    let shutdown = api.push_shutdown("spindown", deadline_in(20_000));
    let mut ext = sb.ext(&api).handler(&recording_handler(&sb)).spawn();
    ext.expect_exit(0, secs(20));
    assert_eq!(
        calls_seen(&sb),
        ["INVOKE t-1", "INVOKE t-2", "SHUTDOWN "],
        "{}",
        ext.output_tail()
    );
    assert!(fs::read(sb.path("seen/t-1")).unwrap() == first);
    assert!(fs::read(sb.path("seen/t-2")).unwrap() == second);
    assert!(fs::read(sb.path("seen/shutdown")).unwrap() == shutdown);
    assert_eq!(api.count(Endpoint::Register), 1);
    assert_eq!(api.count(Endpoint::Next), 3, "{}", api.describe());
    assert!(
        !ext.stderr_str().contains("retrying"),
        "{}",
        ext.output_tail()
    );
    assert_none(&api, Endpoint::ExitError);
}

/// A registration answer cut off mid-body is retried (a couple of quick attempts); cut off
/// every time, the extension gives up and exits 1 within 2 s with a message naming register,
/// after exactly 3 attempts.
#[test]
fn register_cut_mid_body_retries_then_exits() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(Endpoint::Register, Fault::CloseMidResponse);
    let mut ext = sb.ext(&api).handler("true").spawn();
    let status = ext.wait_with_timeout(secs(10));
    let took = ext.started.elapsed();
    assert_eq!(status.code(), Some(1), "{}", ext.output_tail());
    assert!(took <= secs(2), "took {took:?} to give up");
    let registers = api.requests_to(Endpoint::Register);
    assert_eq!(registers.len(), 3, "{}", api.describe());
    for gap in gaps(&registers) {
        assert!(gap >= ms(80), "retry after only {gap:?}");
    }
    assert_none(&api, Endpoint::Next);
    let err = ext.stderr_str();
    assert!(
        err.contains("cannot register with the Lambda Extensions API: register: no response"),
        "{err}"
    );
}

/// How an error report under a fault ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Report {
    /// Accepted: no "could not report" line.
    Accepted,
    /// Not accepted: "could not report <type> to Lambda: <this>".
    Failed(&'static str),
}

/// Runs an extension whose error report (init/error for a configuration error, exit/error for
/// a failing handler) meets `fault`; checks one report was sent (a failed report is not
/// retried), exit 1 within `within`, and the log.
fn report_under_fault(init: bool, fault: Fault, outcome: Report, within: Duration) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let (endpoint, ty, launcher) = if init {
        let launcher = sb
            .ext(&api)
            .handler("true")
            .env("SHELL_EXT_ON_ERROR", "bogus");
        (Endpoint::InitError, "Extension.ConfigInvalid", launcher)
    } else {
        api.push_invoke("fails", deadline_in(20_000));
        let launcher = sb.ext(&api).handler("echo broken >&2; exit 3");
        (Endpoint::ExitError, "Extension.HandlerFailed", launcher)
    };
    api.fault(endpoint, fault.clone());
    let mut ext = launcher.spawn();
    let status = ext.wait_with_timeout(secs(15));
    let took = ext.started.elapsed();
    let what = format!("{endpoint:?} under {fault:?}");
    assert_eq!(status.code(), Some(1), "{what}\n{}", ext.output_tail());
    assert!(took <= within, "{what}: exit after {took:?}");
    let reports = api.requests_to(endpoint);
    assert_eq!(
        reports.len(),
        1,
        "{what}: not exactly one report\n{}",
        api.describe()
    );
    check_error_request(&api, &reports[0], ty);
    let err = ext.stderr_str();
    assert!(err.contains(&format!("ERROR {ty}: ")), "{what}:\n{err}");
    let failed_line = format!("could not report {ty} to Lambda: ");
    match outcome {
        Report::Accepted => assert!(!err.contains(&failed_line), "{what}:\n{err}"),
        Report::Failed(cause) => assert!(
            err.contains(&format!("{failed_line}{cause}")),
            "{what}: no line naming the cause {cause:?}:\n{err}"
        ),
    }
    if init {
        assert_none(&api, Endpoint::Next);
    }
}

fn error_report_faults(init: bool) {
    let cases: Vec<(Fault, Report, Duration)> = vec![
        (Fault::Trickle(ms(2)), Report::Accepted, secs(4)),
        (Fault::Delay(ms(1500)), Report::Accepted, secs(4)),
        (
            Fault::Status(500, RIE_500.into()),
            Report::Failed(if init {
                "init/error: the Lambda API answered 500"
            } else {
                "exit/error: the Lambda API answered 500"
            }),
            secs(3),
        ),
        (
            Fault::Drop,
            Report::Failed(if init {
                "init/error: no response"
            } else {
                "exit/error: no response"
            }),
            secs(3),
        ),
        (
            Fault::CloseMidResponse,
            Report::Failed(if init {
                "init/error: no response"
            } else {
                "exit/error: no response"
            }),
            secs(3),
        ),
        (
            Fault::Delay(secs(30)),
            Report::Failed(if init {
                "init/error: the Lambda API did not answer within 5 s"
            } else {
                "exit/error: the Lambda API did not answer within 5 s"
            }),
            secs(9),
        ),
    ];
    thread::scope(|scope| {
        for (fault, outcome, within) in cases {
            scope.spawn(move || report_under_fault(init, fault, outcome, within));
        }
    });
}

/// init/error trickled or delayed (under the 5 s call timeout) is accepted; answered 500,
/// dropped, cut off or never answered, it is tried once, logged as not reported with the
/// cause, and the extension exits 1 (after at most the 5 s call timeout).
#[test]
fn init_error_report_under_faults() {
    error_report_faults(true);
}

/// The same for exit/error after a failing handler.
#[test]
fn exit_error_report_under_faults() {
    error_report_faults(false);
}

/// A storm of faults on `/event/next` across 24 events: delays, trickled answers, dropped
/// connections (retried at once on a fresh connection) and answers cut off mid-body (retried
/// after a backoff; that one event is lost, as on any broken answer). Every event whose
/// answer arrived whole is handled, in order and byte for byte; the request count is exactly
/// what the faults explain (no extra retries, no loop); SHUTDOWN ends with exit 0.
#[test]
fn storm_of_faults_on_next_loses_only_the_cut_events() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb.ext(&api).handler(&recording_handler(&sb)).spawn();
    let mut expected_nexts = 1;
    let mut handled = Vec::new();
    let mut bodies = Vec::new();
    let mut cut_at = Vec::new();
    for k in 0..24usize {
        api.expect_requests(Endpoint::Next, expected_nexts, secs(10));
        // Reshaping faults apply to the waiting request's answer; arrival faults to the next
        // request (the waiting one has already arrived). Queued in that order.
        let reshape = match k % 6 {
            2 => Some(Fault::Trickle(Duration::from_micros(500))),
            4 => Some(Fault::CloseMidResponse),
            _ => None,
        };
        let arrival = match (k + 1) % 6 {
            1 => Some(Fault::Delay(ms(150))),
            3 => Some(Fault::Drop),
            _ => None,
        };
        let cut = matches!(reshape, Some(Fault::CloseMidResponse));
        let dropped = matches!(arrival, Some(Fault::Drop));
        if let Some(fault) = reshape {
            api.fault_times(Endpoint::Next, fault, 1);
        }
        if let Some(fault) = arrival {
            api.fault_times(Endpoint::Next, fault, 1);
        }
        let id = format!("s-{k}");
        if cut {
            cut_at.push((expected_nexts, Instant::now()));
        }
        let body = api.push_invoke(&id, deadline_in(30_000));
        if !cut {
            handled.push(id.clone());
            bodies.push((id, body));
        }
        expected_nexts += if dropped { 2 } else { 1 };
    }
    api.expect_requests(Endpoint::Next, expected_nexts, secs(10));
    api.push_shutdown("spindown", deadline_in(20_000));
    ext.expect_exit(0, secs(20));
    let mut expected = invoke_calls(&handled);
    expected.push("SHUTDOWN ".into());
    assert_eq!(calls_seen(&sb), expected, "{}", ext.output_tail());
    for (id, body) in &bodies {
        assert!(
            fs::read(sb.path(&format!("seen/{id}"))).unwrap() == *body,
            "{id}: stdin differs from the event"
        );
    }
    let nexts = api.requests_to(Endpoint::Next);
    assert_eq!(nexts.len(), expected_nexts, "{}", api.describe());
    // After each cut answer, the next request waited for the backoff.
    for (index, at) in cut_at {
        let retry = nexts[index].at.duration_since(at);
        assert!(retry >= ms(200), "retry {retry:?} after a cut answer");
    }
    // Never a burst: at most 6 requests in any 100 ms (events are served as fast as the
    // handler runs, but a fault never adds a loop).
    for (i, first) in nexts.iter().enumerate() {
        let burst = nexts[i..]
            .iter()
            .filter(|r| r.at.duration_since(first.at) < ms(100))
            .count();
        assert!(
            burst <= 6,
            "{burst} requests within 100 ms:\n{}",
            api.describe()
        );
    }
    assert_none(&api, Endpoint::ExitError);
    let err = ext.stderr_str();
    assert_eq!(
        err.matches("retrying in 250 ms").count(),
        4,
        "one warning per cut answer:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The telemetry sender

/// A raw connection to the extension's telemetry listener.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    stream.set_read_timeout(Some(secs(10))).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn post_head(length: usize) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: sandbox.localdomain\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// The status of the answer on `stream`.
fn read_status(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "answer cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad answer {head:?}"))
}

/// The telemetry sender misbehaves between good deliveries: bodies cut off mid-way (small and
/// large, Content-Length and chunked), a head cut off, a batch trickled byte by byte, a batch
/// sent after a pause on an idle connection and one paused mid-body; and a delivery left
/// stalled mid-body at SHUTDOWN. Every batch that arrived whole reaches the telemetry command
/// once, in order, byte for byte; none of the broken ones does; the counts line says so, and
/// the stalled one does not hold the exit past the SHUTDOWN deadline.
#[test]
fn telemetry_sender_faults_lose_nothing_delivered() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let recorder = sb.script(
        "telemetry.sh",
        &format!("#!/bin/sh\ncat >> {b}\necho >> {b}\n", b = sb.p("batches")),
    );
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_TELEMETRY_HANDLER", &recorder)
        .spawn();
    let target = TelemetryTarget::of(&api);
    let port = target.port();
    let mut sent = Vec::new();
    let mut good = |n: usize| {
        let body = batch(&[record("function", &format!("\"good {n} \\u00e9\""))]);
        sent.push(String::from_utf8(body.clone()).unwrap());
        body
    };
    for round in 0..5 {
        target.deliver(&good(round * 10));
        // Cut off mid-body: small (tiny_http reads it) and large (read by the listener).
        for (declared, part) in [(500, 100), (200_000, 70_000)] {
            let mut stream = connect(port);
            stream.write_all(&post_head(declared)).unwrap();
            stream.write_all(&vec![b'['; part]).unwrap();
            drop(stream);
        }
        target.deliver(&good(round * 10 + 1));
        // Chunked, cut between chunks; a head cut off.
        let mut stream = connect(port);
        stream
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n",
            )
            .unwrap();
        drop(stream);
        let mut stream = connect(port);
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Len")
            .unwrap();
        drop(stream);
        target.deliver(&good(round * 10 + 2));
    }
    // Trickled, head and body, one byte at a time.
    let body = good(100);
    let mut stream = connect(port);
    let mut request = post_head(body.len());
    request.extend_from_slice(&body);
    for byte in request {
        stream.write_all(&[byte]).unwrap();
        thread::sleep(ms(1));
    }
    assert_eq!(read_status(&mut stream), 200, "trickled batch");
    // A pause on an idle connection before sending, then a pause mid-body.
    let body = good(101);
    let mut stream = connect(port);
    thread::sleep(ms(1000));
    stream.write_all(&post_head(body.len())).unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    thread::sleep(ms(1000));
    stream.write_all(&body[body.len() / 2..]).unwrap();
    assert_eq!(read_status(&mut stream), 200, "delayed batch");
    target.deliver(&good(102));
    // Left stalled mid-body while the environment shuts down.
    let mut stalled = connect(port);
    stalled.write_all(&post_head(100_000)).unwrap();
    stalled.write_all(&[b'['; 30_000]).unwrap();

    let shutdown_at = Instant::now();
    api.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(10));
    assert!(
        shutdown_at.elapsed() <= secs(4),
        "exit {:?} after SHUTDOWN",
        shutdown_at.elapsed()
    );
    let seen: Vec<String> = fs::read_to_string(sb.path("batches"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let short = |batches: &[String]| -> Vec<String> {
        batches
            .iter()
            .map(|b| b.chars().take(100).collect())
            .collect()
    };
    assert!(
        seen == sent,
        "the command saw {} batches, {} were delivered whole:\n{:#?}\nexpected:\n{:#?}",
        seen.len(),
        sent.len(),
        short(&seen),
        short(&sent)
    );
    let err = ext.stderr_str();
    let counts = format!(
        "telemetry: {n} batches received, {n} delivered",
        n = sent.len()
    );
    assert!(err.contains(&counts), "no {counts:?} line:\n{err}");
    drop(stalled);
}

// ---------------------------------------------------------------------------------------------
// The proxy's upstream

fn respond_reply(inv: &Invocation) -> Routed {
    Routed::Respond {
        status: 200,
        headers: inv.headers.clone(),
        body: inv.body.clone(),
    }
}

fn assert_502(got: &Answer, what: &str) {
    assert_eq!(got.status, 502, "{what}: {got:?}");
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
}

/// A run of 12 invocations through the proxy while upstream misbehaves: `/next` answers
/// trickled, delayed, cut off mid-body or 500; `/response` answers trickled, delayed or cut
/// off. Whole answers reach the runtime byte for byte (status, headers, body) and the request
/// handler sees each delivered invocation once; a cut-off answer is a 502
/// `Extension.ProxyUpstreamError` with a log line, a 500 passes through; each runtime request
/// is exactly one upstream request (nothing retried in a loop), and the extension's own event
/// loop goes on to a clean SHUTDOWN.
#[test]
fn proxy_upstream_faults_mid_run() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let mut ext = sb
        .ext(&rt)
        .env("SHELL_EXT_PROXY_PORT", &port.to_string())
        .env(
            "SHELL_EXT_REQUEST_HANDLER",
            &recorder(&sb, "request.sh", ""),
        )
        .spawn();
    rt.expect_requests(Endpoint::Register, 1, secs(5));
    let mut runtime = RuntimeClient::connect(port);
    let mut runtime_nexts = 0;
    let mut runtime_posts = 0;
    let mut delivered = Vec::new();
    let ok_body = r#"{"status":"OK"}"#;
    for k in 0..12usize {
        let id = format!("p-{k}");
        let inv = Invocation::new(
            &id,
            format!("{{\"k\":{k},\"pad\":\"{}\"}}", "x".repeat(k * 37)),
        );
        match k % 6 {
            1 => rt.answer_times(
                Route::Next,
                Routed::Trickle(ms(1), Box::new(respond_reply(&inv))),
                1,
            ),
            2 => rt.answer_times(
                Route::Next,
                Routed::Delay(ms(800), Box::new(respond_reply(&inv))),
                1,
            ),
            3 => {
                rt.answer_times(Route::Next, broken_reply(), 1);
                assert_502(&runtime.next(), "/next cut off");
                runtime_nexts += 1;
                rt.answer_times(Route::Next, json_reply(500, RIE_500), 1);
                let got = runtime.next();
                assert_eq!(got.status, 500, "{got:?}");
                assert_eq!(got.text(), RIE_500);
                runtime_nexts += 1;
                rt.push(inv.clone());
            }
            _ => rt.push(inv.clone()),
        }
        let started = Instant::now();
        let got = runtime.next();
        runtime_nexts += 1;
        assert_eq!(got.status, 200, "{id}: {got:?}");
        assert!(got.body == inv.body, "{id}: body altered");
        for (name, value) in &inv.headers {
            assert_eq!(got.header(name), Some(value.as_str()), "{id}: {name}");
        }
        if k % 6 == 2 {
            assert!(
                started.elapsed() >= ms(700),
                "{id}: the delay was not waited for"
            );
        }
        delivered.push(format!("REQUEST {id}"));
        match k % 6 {
            4 => rt.answer_times(
                Route::Response,
                Routed::Trickle(ms(1), Box::new(json_reply(202, ok_body))),
                1,
            ),
            5 => rt.answer_times(
                Route::Response,
                Routed::Delay(ms(800), Box::new(json_reply(202, ok_body))),
                1,
            ),
            0 if k > 0 => {
                rt.answer_times(Route::Response, broken_reply(), 1);
                assert_502(&runtime.respond(&id, b"\"first try\""), "/response cut off");
                runtime_posts += 1;
            }
            _ => {}
        }
        let got = runtime.respond(&id, format!("\"answer {k}\"").as_bytes());
        runtime_posts += 1;
        assert_eq!(got.status, 202, "{id}: {got:?}");
        assert_eq!(got.text(), ok_body, "{id}");
    }
    assert_eq!(
        calls(&sb),
        delivered,
        "the request handler ran once per delivered invocation"
    );
    assert_eq!(
        rt.requests(Route::Next).len(),
        runtime_nexts,
        "one upstream /next per runtime /next:\n{}",
        rt.describe_runtime()
    );
    assert_eq!(
        rt.requests(Route::Response).len(),
        runtime_posts,
        "{}",
        rt.describe_runtime()
    );
    let last = rt.requests(Route::Response).pop().unwrap();
    assert_eq!(last.body, b"\"answer 11\"");
    let err = ext.stderr_str();
    assert!(
        err.contains("WARN proxy: /invocation/next: upstream reading its answer"),
        "{err}"
    );
    assert!(
        err.contains("/response: upstream reading its answer"),
        "{err}"
    );
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(10));
    assert_none(&rt, Endpoint::ExitError);
}
