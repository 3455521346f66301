//! The bench's runtime client: what a function's runtime does with the Runtime API, as plainly as
//! it can be done (blocking `TcpStream`, HTTP/1.1 keep-alive, no allocation per byte).
//!
//! Env: `AWS_LAMBDA_RUNTIME_API` (`host:port`: bench-driver's stand-in, or the extension's proxy),
//! `BENCH_INVOCATIONS` (N), `BENCH_OUT` (the file it reports to). It does N invocations, each
//! `GET /2018-06-01/runtime/invocation/next` (answered 200 with the invocation) then
//! `POST /2018-06-01/runtime/invocation/{id}/response` (answered 202), and measures each one as it
//! sees it: from just before the GET is written to the moment the 202 of the POST has been read
//! in full. It checks every invocation byte for byte against [`invocation`] (payload, request id,
//! ARN, trace id, a deadline in the future, `Content-Type`) and sends the expected response body.
//!
//! `BENCH_OUT` gets one line per invocation (`us <µs>`), then `connections <n>` (TCP connections
//! it opened: 1 when keep-alive held), then one `problem <text>` line per problem; then it asks for
//! the next invocation once more and waits there (as a runtime does when the environment is shut
//! down), until it is killed. A problem that stops it is written out the same way; it exits 1.

#[path = "../invocation.rs"]
mod invocation;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Client {
    api: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    connections: usize,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

impl Client {
    /// Writes one request and reads its answer; a connection is opened when there is none (the
    /// first request, or after an answer that said `Connection: close`).
    fn exchange(&mut self, request: &[u8]) -> Result<Answer, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.api)
                .map_err(|error| format!("cannot connect to {}: {error}", self.api))?;
            stream.set_nodelay(true).ok();
            self.stream = Some(stream);
            self.connections += 1;
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected");
        stream
            .write_all(request)
            .map_err(|error| format!("write failed: {error}"))?;
        let answer = read_answer(stream, &mut self.buf)?;
        if answer.close {
            self.stream = None;
        }
        Ok(answer)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One HTTP/1.1 answer: its head, then a `Content-Length` or chunked body (trailers skipped).
fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Answer, String> {
    let mut chunk = [0u8; 8192];
    let mut fill = |buf: &mut Vec<u8>| -> Result<(), String> {
        match stream.read(&mut chunk) {
            Ok(0) => Err("connection closed before the answer was complete".into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(error) => Err(format!("read failed: {error}")),
        }
    };
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        fill(buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("unreadable status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_ascii_lowercase())
    };
    let close = value("connection").is_some_and(|v| v.contains("close"))
        || status_line.starts_with("HTTP/1.0");
    let chunked = value("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    buf.drain(..end + 4);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(buf, b"\r\n") {
                    break at;
                }
                fill(buf)?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let at = loop {
                        if let Some(at) = find(buf, b"\r\n") {
                            break at;
                        }
                        fill(buf)?;
                    };
                    buf.drain(..at + 2);
                    if at == 0 {
                        break;
                    }
                }
                break body;
            }
            while buf.len() < size + 2 {
                fill(buf)?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else {
        let length: usize = match value("content-length") {
            Some(text) => text
                .parse()
                .map_err(|_| format!("bad Content-Length {text:?}"))?,
            None if close => {
                // Until the connection closes.
                while fill(buf).is_ok() {}
                buf.len()
            }
            None => 0,
        };
        while buf.len() < length {
            fill(buf)?;
        }
        buf.drain(..length).collect()
    };
    Ok(Answer {
        status,
        headers,
        body,
        close,
    })
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// What is wrong with the `i`th invocation as received, if anything.
fn check_invocation(i: usize, answer: &Answer) -> Vec<String> {
    let mut problems = Vec::new();
    if answer.status != 200 {
        problems.push(format!(
            "invocation {i}: next answered {} ({})",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
        return problems;
    }
    let expect = |problems: &mut Vec<String>, name: &str, wanted: &str| match answer.header(name) {
        Some(value) if value == wanted => {}
        other => problems.push(format!(
            "invocation {i}: header {name} is {other:?}, expected {wanted:?}"
        )),
    };
    expect(
        &mut problems,
        "Lambda-Runtime-Aws-Request-Id",
        &invocation::request_id(i),
    );
    expect(
        &mut problems,
        "Lambda-Runtime-Invoked-Function-Arn",
        invocation::FUNCTION_ARN,
    );
    expect(
        &mut problems,
        "Lambda-Runtime-Trace-Id",
        &invocation::trace_id(i),
    );
    expect(&mut problems, "Content-Type", "application/json");
    match answer
        .header("Lambda-Runtime-Deadline-Ms")
        .and_then(|value| value.parse::<u128>().ok())
    {
        Some(deadline) if deadline > epoch_ms() => {}
        other => problems.push(format!(
            "invocation {i}: Lambda-Runtime-Deadline-Ms {other:?} is not a time in the future"
        )),
    }
    if answer.body != invocation::payload(i) {
        problems.push(format!(
            "invocation {i}: payload differs from what the Runtime API sent ({} bytes, expected {}): {:?}",
            answer.body.len(),
            invocation::BODY_BYTES,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(120)])
        ));
    }
    problems
}

fn report(out: &str, samples: &[f64], connections: usize, problems: &[String]) {
    let mut text = String::with_capacity(samples.len() * 12 + 64);
    for sample in samples {
        text.push_str(&format!("us {sample:.2}\n"));
    }
    text.push_str(&format!("connections {connections}\n"));
    for problem in problems {
        text.push_str(&format!("problem {}\n", problem.replace('\n', " ")));
    }
    // Written whole and then renamed: the driver never reads half a report.
    let partial = format!("{out}.partial");
    let written = File::create(&partial)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&partial, out));
    if let Err(error) = written {
        eprintln!("bench-runtime: cannot write {out}: {error}");
        exit(1);
    }
}

fn main() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").unwrap_or_default();
    let out = std::env::var("BENCH_OUT").unwrap_or_default();
    let invocations: usize = std::env::var("BENCH_INVOCATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if api.is_empty() || out.is_empty() || invocations == 0 {
        eprintln!(
            "bench-runtime: needs AWS_LAMBDA_RUNTIME_API, BENCH_OUT and BENCH_INVOCATIONS > 0"
        );
        exit(2);
    }
    let next = format!(
        "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\nUser-Agent: bench-runtime\r\n\r\n"
    )
    .into_bytes();
    let mut client = Client {
        api: api.clone(),
        stream: None,
        buf: Vec::with_capacity(16384),
        connections: 0,
    };
    let mut samples = Vec::with_capacity(invocations);
    let mut problems = Vec::new();
    let mut request = Vec::with_capacity(2048);
    for i in 1..=invocations {
        // Built before the clock starts: what a runtime does with the payload is not the API's.
        let id = invocation::request_id(i);
        let body = invocation::response_body(i);
        request.clear();
        request.extend_from_slice(
            format!(
                "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: {api}\r\n\
                 User-Agent: bench-runtime\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(&body);
        let started = Instant::now();
        let answer = match client.exchange(&next) {
            Ok(answer) => answer,
            Err(problem) => {
                problems.push(format!("invocation {i}: next: {problem}"));
                break;
            }
        };
        let wrong = check_invocation(i, &answer);
        let fatal = answer.status != 200;
        problems.extend(wrong);
        if fatal {
            break;
        }
        match client.exchange(&request) {
            Ok(answer) if answer.status == 202 => {}
            Ok(answer) => {
                problems.push(format!(
                    "invocation {i}: response answered {} ({})",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ));
                break;
            }
            Err(problem) => {
                problems.push(format!("invocation {i}: response: {problem}"));
                break;
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    report(&out, &samples, client.connections, &problems);
    if !problems.is_empty() {
        exit(1);
    }
    // The environment's next invocation never comes: wait in /next until killed.
    match client.exchange(&next) {
        Ok(answer) => eprintln!(
            "bench-runtime: the next after the last invocation was answered {}",
            answer.status
        ),
        Err(problem) => eprintln!("bench-runtime: the next after the last invocation: {problem}"),
    }
    exit(1);
}
