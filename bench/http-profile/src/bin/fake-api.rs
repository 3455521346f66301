//! A minimal fake Extensions API for profiling one extension process under a tool (callgrind,
//! strace): `http-profile-api --events N -- COMMAND [ARGS...]`.
//!
//! It binds 127.0.0.1 on a free port, starts COMMAND with `AWS_LAMBDA_RUNTIME_API` set to it (the
//! rest of the environment inherited, so `valgrind ... EXTENSION` works as the command), answers
//! registration, N INVOKE events and a SHUTDOWN with byte for byte the responses `bench-driver`
//! sends (same headers, same event bodies), then waits for COMMAND and exits with its status: 0
//! only when it exited 0 after exactly N + 1 `/event/next` requests. Nothing is timed: the point
//! is that the measured process does the same work per event as under `bench-driver`, while the
//! tool slows it down as much as it likes. `scripts/profile-http.sh` drives it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{exit, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const EXTENSION_ID: &str = "6a1b7e1c-0d8f-4a57-9c53-2f6a3d1e0b42";

struct State {
    events: usize,
    nexts: AtomicUsize,
    problems: AtomicUsize,
    /// INVOKE response written → next request read, in µs (what bench-driver calls the
    /// per-event overhead), one sample per INVOKE.
    per_event_us: Mutex<Vec<f64>>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut events = 500usize;
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--" => command.extend(args.by_ref()),
            _ => usage(),
        }
    }
    let Some((program, program_args)) = command.split_first() else {
        usage()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&e.to_string()));
    let address = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let state = Arc::new(State {
        events,
        nexts: AtomicUsize::new(0),
        problems: AtomicUsize::new(0),
        per_event_us: Mutex::new(Vec::with_capacity(events)),
    });
    {
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&state);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
    }
    let status = Command::new(program)
        .args(program_args)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {program}: {e}")));
    let nexts = state.nexts.load(Ordering::SeqCst);
    let problems = state.problems.load(Ordering::SeqCst);
    if !status.success() || nexts != events + 1 || problems != 0 {
        fail(&format!(
            "{program}: {status}, {nexts} event/next requests for {events} INVOKEs \
             (expected {}), {problems} unexpected requests",
            events + 1
        ));
    }
    let mut samples = state
        .per_event_us
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    if !samples.is_empty() {
        samples.sort_by(f64::total_cmp);
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        eprintln!(
            "http-profile-api: {} events, per event (INVOKE written → next request read): \
             median {:.1} µs, mean {mean:.1} µs",
            samples.len(),
            samples[samples.len() / 2]
        );
    }
}

/// One connection: requests are read and answered in order, each response in one write.
fn serve(mut stream: TcpStream, state: &State) {
    stream.set_nodelay(true).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut invoke_written: Option<Instant> = None;
    let mut arrived = Instant::now();
    loop {
        while let Some((method, path)) = take_request(&mut buf) {
            if let Some(written) = invoke_written.take() {
                let us = (arrived - written).as_secs_f64() * 1e6;
                if let Ok(mut samples) = state.per_event_us.lock() {
                    samples.push(us);
                }
            }
            let (reply, is_invoke) = answer(&method, &path, state);
            if stream.write_all(&reply).is_err() {
                return;
            }
            if is_invoke {
                invoke_written = Some(Instant::now());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                arrived = Instant::now();
                buf.extend_from_slice(&chunk[..n])
            }
        }
    }
}

/// The response, and whether it is an INVOKE.
fn answer(method: &str, path: &str, state: &State) -> (Vec<u8>, bool) {
    let reply = match (method, path) {
        ("POST", "/2020-01-01/extension/register") => response(
            "200 OK",
            Some("application/json"),
            &[("Lambda-Extension-Identifier", EXTENSION_ID)],
            r#"{"functionName":"bench","functionVersion":"$LATEST","handler":"bench.handler"}"#,
        ),
        ("GET", "/2020-01-01/extension/event/next") => {
            let i = state.nexts.fetch_add(1, Ordering::SeqCst) + 1;
            if i <= state.events {
                let body = format!(
                    r#"{{"eventType":"INVOKE","deadlineMs":{},"requestId":"8476a536-e9f4-11e8-9739-{i:012x}","invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:bench","tracing":{{"type":"X-Amzn-Trace-Id","value":"Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"}}}}"#,
                    epoch_ms() + 5000
                );
                let event_id = format!("b1f0c1de-0000-4000-8000-{i:012x}");
                return (
                    response(
                        "200 OK",
                        Some("application/json"),
                        &[("Lambda-Extension-Event-Identifier", &event_id)],
                        &body,
                    ),
                    true,
                );
            } else if i == state.events + 1 {
                let body = format!(
                    r#"{{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":{}}}"#,
                    epoch_ms() + 2000
                );
                response("200 OK", None, &[], &body)
            } else {
                state.problems.fetch_add(1, Ordering::SeqCst);
                response(
                    "403 Forbidden",
                    Some("application/json"),
                    &[],
                    r#"{"errorType":"Extension.InvalidExtensionState","errorMessage":"after SHUTDOWN"}"#,
                )
            }
        }
        _ => {
            eprintln!("http-profile-api: unexpected request {method} {path}");
            state.problems.fetch_add(1, Ordering::SeqCst);
            response("404 Not Found", None, &[], "")
        }
    };
    (reply, false)
}

/// Takes one complete request off the front of `buf`: (method, path); the body is skipped.
fn take_request(buf: &mut Vec<u8>) -> Option<(String, String)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + length {
        return None;
    }
    buf.drain(..end + 4 + length);
    Some((method, path))
}

/// The same bytes as bench-driver's `response`.
fn response(
    status: &str,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    if let Some(content_type) = content_type {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (key, value) in extra {
        out.push_str(&format!("{key}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn usage() -> ! {
    eprintln!("usage: http-profile-api [--events N] -- COMMAND [ARGS...]");
    exit(2)
}

fn fail(message: &str) -> ! {
    eprintln!("http-profile-api: {message}");
    exit(1)
}
