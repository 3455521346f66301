//! API faults: what the binary does when the Extensions API misbehaves.

mod common;

use std::net::TcpListener;
use std::time::Instant;

use common::*;

const RIE_500: &str =
    r#"{"errorMessage":"Internal Server Error","errorType":"InternalServerError"}"#;

fn register_fails(status: u16, body: &str) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(Endpoint::Register, Fault::Status(status, body.to_string()));
    let mut ext = sb.ext(&api).handler("true").spawn();
    let status_ = ext.wait_with_timeout(secs(5));
    let took = ext.started.elapsed();
    assert_eq!(status_.code(), Some(1), "{}", ext.output_tail());
    assert!(took <= ms(2000), "took {took:?} to exit");
    assert!(api.count(Endpoint::Register) >= 1);
    assert_none(&api, Endpoint::Next);
    assert_none(&api, Endpoint::InitError);
    assert_none(&api, Endpoint::ExitError);
    let err = ext.stderr_str();
    assert!(
        err.contains(&status.to_string()) || err.to_lowercase().contains("regist"),
        "stderr does not explain the failure:\n{err}"
    );
}

/// register → 500: message on stderr, exit 1 within 2 s, nothing else sent.
#[test]
fn register_500_exits() {
    register_fails(500, RIE_500);
}

/// register → 403: message on stderr, exit 1 within 2 s, nothing else sent.
#[test]
fn register_403_exits() {
    register_fails(
        403,
        r#"{"errorMessage":"Extension limit (10) reached","errorType":"Extension.TooManyExtensions"}"#,
    );
}

/// Connection refused on register: a couple of quick retries, exit 1 within 2 s.
#[test]
fn register_connection_refused_exits() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sb = Sandbox::new();
    let mut ext = sb
        .ext_at(&format!("127.0.0.1:{port}"))
        .handler("true")
        .spawn();
    let status = ext.wait_with_timeout(secs(5));
    let took = ext.started.elapsed();
    assert_eq!(status.code(), Some(1), "{}", ext.output_tail());
    assert!(took <= ms(2000), "took {took:?} to exit");
    assert!(!ext.stderr().is_empty(), "no message on stderr");
}

fn next_api_error(fault: Fault) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(Endpoint::Next, fault);
    let mut ext = sb.ext(&api).handler("true").spawn();
    ext.expect_exit(1, secs(5));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    check_error_request(&api, &errs[0], "Extension.ApiError");
    assert!(api.count(Endpoint::Next) >= 1);
    assert_none(&api, Endpoint::InitError);
}

/// next → 500: exit/error Extension.ApiError, exit 1.
#[test]
fn next_500_reports_api_error() {
    next_api_error(Fault::Status(500, RIE_500.to_string()));
}

/// next → 200 with an unparsable body: exit/error Extension.ApiError, exit 1.
#[test]
fn next_unparsable_reports_api_error() {
    next_api_error(Fault::Unparsable);
}

/// next → 200 with valid JSON of an unknown eventType: also an API error (not a crash/hang).
#[test]
fn next_unknown_event_type_reports_api_error() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let ran = sb.p("ran");
    api.push_raw(
        br#"{"eventType":"RESTORE","deadlineMs":1}"#.to_vec(),
        Some("application/json"),
    );
    let mut ext = sb.ext(&api).handler(&format!("touch {ran}")).spawn();
    ext.expect_exit(1, secs(5));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    check_error_request(&api, &errs[0], "Extension.ApiError");
    assert!(!sb.path("ran").exists());
}

/// next → 403: exit 1 at once, exactly one next (no retry), no exit/error.
#[test]
fn next_403_exits_at_once() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(
        Endpoint::Next,
        Fault::Status(
            403,
            r#"{"errorMessage":"Unknown extension x","errorType":"Extension.UnknownExtensionIdentifier"}"#.into(),
        ),
    );
    let mut ext = sb.ext(&api).handler("true").spawn();
    let next = api.expect_requests(Endpoint::Next, 1, secs(5));
    let status = ext.wait_with_timeout(secs(5));
    let took = next[0].at.elapsed();
    assert_eq!(status.code(), Some(1), "{}", ext.output_tail());
    assert!(took <= ms(1000), "exit {took:?} after the 403");
    assert_eq!(api.count(Endpoint::Next), 1, "{}", api.describe());
    assert_none(&api, Endpoint::ExitError);
    assert_none(&api, Endpoint::InitError);
}

/// next: connection dropped every time → one immediate retry, then bounded retries with backoff
/// (no two attempts within 80 ms, at most 5 in any second), gives up and exits 1 within a few seconds.
#[test]
fn next_dropped_connection_retries_then_exits() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(Endpoint::Next, Fault::Drop);
    let mut ext = sb.ext(&api).handler("true").spawn();
    let first = api.expect_requests(Endpoint::Next, 1, secs(5))[0].at;
    let status = ext.wait_with_timeout(secs(8));
    let took = first.elapsed();
    assert_eq!(status.code(), Some(1), "{}", ext.output_tail());
    assert!(
        took <= ms(3500),
        "gave up only {took:?} after the first drop"
    );
    let times: Vec<Instant> = api
        .requests_to(Endpoint::Next)
        .iter()
        .map(|r| r.at)
        .collect();
    assert!(times.len() >= 2, "never retried:\n{}", api.describe());
    assert!(
        times.len() <= 8,
        "{} attempts:\n{}",
        times.len(),
        api.describe()
    );
    // The first failure after an answer is retried at once, on a fresh connection (a dead
    // kept-alive connection after a SnapStart restore); after that, backoff.
    for w in times[1..].windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap >= ms(80),
            "retry after only {gap:?}:\n{}",
            api.describe()
        );
    }
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|u| u.duration_since(*t) < secs(1))
            .count();
        assert!(
            in_window <= 5,
            "{in_window} attempts within 1 s:\n{}",
            api.describe()
        );
    }
    assert_none(&api, Endpoint::InitError);
}

/// next: one dropped connection, then the API works again → the retry gets the event and the
/// handler runs normally.
#[test]
fn next_dropped_once_then_recovers() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let log = sb.p("calls");
    api.fault_times(Endpoint::Next, Fault::Drop, 1);
    api.push_invoke("after-drop", deadline_in(8000));
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb
        .ext(&api)
        .handler(&format!("echo $LAMBDA_EVENT_TYPE >> {log}"))
        .spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "INVOKE\nSHUTDOWN\n");
    assert_eq!(api.count(Endpoint::Next), 3, "{}", api.describe());
    assert_none(&api, Endpoint::ExitError);
}

/// A slow (delayed) but successful next is not an error: no client timeout on the long poll.
#[test]
fn next_slow_response_is_fine() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault_times(Endpoint::Next, Fault::Delay(ms(1500)), 1);
    api.push_shutdown("spindown", deadline_in(8000));
    let mut ext = sb.ext(&api).handler("true").spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(api.count(Endpoint::Next), 1);
    assert_none(&api, Endpoint::ExitError);
}

/// A register that is accepted but never answered: the extension gives up after the call
/// timeout (5 s) instead of hanging Lambda's Init, and does not register twice.
#[test]
fn register_without_answer_times_out() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.fault(Endpoint::Register, Fault::Delay(secs(30)));
    let started = std::time::Instant::now();
    let mut ext = sb.ext(&api).handler("true").spawn();
    let status = ext.wait_with_timeout(secs(12));
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{}", ext.output_tail());
    assert!(took >= secs(4) && took < secs(9), "gave up after {took:?}");
    assert_eq!(api.count(Endpoint::Register), 1, "{}", api.describe());
    assert!(
        ext.stderr_str().contains("did not answer within 5 s"),
        "{}",
        ext.output_tail()
    );
}
