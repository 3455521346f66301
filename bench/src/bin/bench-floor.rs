//! The floor: the least any extension could cost. One blocking loopback GET (raw `TcpStream`,
//! keep-alive) plus one spawn/wait of the handler per event, nothing else: no JSON parsing, no
//! timers, no pipes, no logging.
//!
//! Env: `AWS_LAMBDA_RUNTIME_API` (`host:port`), `BENCH_HANDLER` (the handler's argv: fields
//! separated by ASCII unit separators `\x1f`, or by whitespace when there is none; unset or empty:
//! spawn nothing, the "no-command floor"). Registers as the basename of argv[0], runs the handler
//! (stdin /dev/null) for every event including SHUTDOWN, exits 0 after SHUTDOWN, 1 on any failure.
//! `BENCH_EVENTS=SHUTDOWN`: registers for SHUTDOWN only (the idle extension next to the runtime
//! client of `runtime-direct`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{exit, Command, Stdio};

fn main() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").unwrap_or_else(|_| fail("no API"));
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or_default().to_owned();
    let handler = handler_argv();
    let mut stream = TcpStream::connect(&api).unwrap_or_else(|e| fail(&e.to_string()));
    stream.set_nodelay(true).ok();
    let mut buf = Vec::with_capacity(4096);

    let body = if std::env::var("BENCH_EVENTS").is_ok_and(|events| events == "SHUTDOWN") {
        r#"{"events":["SHUTDOWN"]}"#
    } else {
        r#"{"events":["INVOKE","SHUTDOWN"]}"#
    };
    let request = format!(
        "POST /2020-01-01/extension/register HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Extension-Name: {name}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (head, _) = exchange(&mut stream, &mut buf, request.as_bytes());
    let id = header(&head, "lambda-extension-identifier").unwrap_or_else(|| fail("no id"));
    let next = format!(
        "GET /2020-01-01/extension/event/next HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Extension-Identifier: {id}\r\n\r\n"
    );
    loop {
        let (_, event) = exchange(&mut stream, &mut buf, next.as_bytes());
        if let Some((program, args)) = handler.split_first() {
            let status = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .status()
                .unwrap_or_else(|e| fail(&e.to_string()));
            if !status.success() {
                fail(&format!("handler {status}"));
            }
        }
        if contains(&event, b"\"SHUTDOWN\"") {
            exit(0);
        }
    }
}

fn handler_argv() -> Vec<String> {
    let spec = std::env::var("BENCH_HANDLER").unwrap_or_default();
    if spec.contains('\x1f') {
        spec.split('\x1f').map(str::to_owned).collect()
    } else {
        spec.split_whitespace().map(str::to_owned).collect()
    }
}

/// Writes one request and reads one 200 response: (head, body).
fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> (String, Vec<u8>) {
    stream
        .write_all(request)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 200") {
                fail(head.lines().next().unwrap_or_default());
            }
            let length: usize = header(&head, "content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                return (head, body);
            }
        }
        let n = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| fail(&e.to_string()));
        if n == 0 {
            fail("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn fail(message: &str) -> ! {
    eprintln!("bench-floor: {message}");
    exit(1)
}
