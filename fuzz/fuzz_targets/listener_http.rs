//! The telemetry listener's HTTP input, over loopback (the listener takes its requests from
//! tiny_http, which only reads sockets, so there is no socket-free entry point).
//!
//! One listener serves the whole run; a consumer thread acknowledges every batch. The first
//! input byte picks the kind of request:
//! - `0..=63`: raw bytes, sent as they are, then the write side is shut down. No assertion on
//!   the answer (it may be 400, 405, 413, 500 or a closed connection); what must hold is that
//!   nothing panics and the listener still serves (a well-formed POST afterwards gets 200 and
//!   its body byte for byte).
//! - otherwise: a request built from the input (method, path, extra headers, body, and
//!   `Content-Length` or chunked with chunk sizes from the input): a POST is answered 200 and its
//!   body is the batch byte for byte; any other method is answered 405 and yields nothing.
//!
//! A raw input with 8 or more digits in a row is skipped: a `Content-Length` over 64 MiB makes
//! the listener abandon that connection for good (documented), which in a loop of millions of
//! inputs would use up the process's file descriptors.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lambda_shell_extension::telemetry::Listener;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

struct Harness {
    port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let listener = Listener::bind_addr("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            while let Some(batch) = listener.next_batch() {
                let (body, acknowledgement) = batch.into_parts();
                kept.lock().unwrap().push(body);
                acknowledgement.acknowledge();
            }
            panic!("the listener stopped serving");
        });
        Harness { port, bodies }
    })
}

/// Sends `request`, shuts the write side, returns the status (0 for none) once the listener
/// closed the connection or 10 s passed.
fn exchange(port: u16, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The listener may answer (and close) before reading it all.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    head.strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn post(body: &[u8], extra: &str, chunks: Option<&[usize]>) -> Vec<u8> {
    post_as("POST", "/", body, extra, chunks)
}

fn post_as(
    method: &str,
    path: &str,
    body: &[u8],
    extra: &str,
    chunks: Option<&[usize]>,
) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: sandbox\r\n{extra}").into_bytes();
    match chunks {
        None => {
            request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            request.extend_from_slice(body);
        }
        Some(sizes) => {
            request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body;
            let mut sizes = sizes.iter().cycle();
            while !rest.is_empty() {
                let size = (*sizes.next().unwrap()).clamp(1, rest.len());
                let (chunk, tail) = rest.split_at(size);
                request.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
                rest = tail;
            }
            request.extend_from_slice(b"0\r\n\r\n");
        }
    }
    request
}

/// One request, its status, and the batches it produced.
fn send(harness: &Harness, request: &[u8]) -> (u16, Vec<Vec<u8>>) {
    harness.bodies.lock().unwrap().clear();
    let status = exchange(harness.port, request);
    (status, std::mem::take(&mut *harness.bodies.lock().unwrap()))
}

const METHODS: &[&str] = &["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "post"];
/// Headers that frame the request: set by the harness, never by the input.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "expect",
    "connection",
    "host",
    "upgrade",
];

fn structured(harness: &Harness, data: &[u8]) {
    let mut input = Unstructured::new(data);
    let method = METHODS[input.choose_index(METHODS.len()).unwrap_or(0)];
    let path: String = {
        let bytes: Vec<u8> = input.arbitrary().unwrap_or_default();
        let safe: String = bytes
            .iter()
            .map(|&b| (b % 94 + 33) as char)
            .filter(|c| *c != '#')
            .take(64)
            .collect();
        format!("/{safe}")
    };
    let mut extra = String::new();
    for _ in 0..input.int_in_range(0..=6u8).unwrap_or(0) {
        let name: Vec<u8> = input.arbitrary().unwrap_or_default();
        let name: String = name
            .iter()
            .map(|&b| {
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"[b as usize % 64]
                    as char
            })
            .take(24)
            .collect();
        let value: Vec<u8> = input.arbitrary().unwrap_or_default();
        let value: String = value
            .iter()
            .map(|&b| (b % 95 + 32) as char)
            .take(128)
            .collect();
        if name.is_empty() || FRAMING.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = input.arbitrary::<bool>().unwrap_or(false);
    let sizes: Vec<usize> = (0..input.int_in_range(1..=8u8).unwrap_or(1))
        .map(|_| input.int_in_range(1..=512usize).unwrap_or(1))
        .collect();
    let body = input.take_rest();
    let request = post_as(method, &path, body, &extra, chunked.then_some(&sizes[..]));
    let (status, batches) = send(harness, &request);
    if method == "POST" {
        assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&request));
        assert_eq!(
            batches,
            vec![body.to_vec()],
            "{:?}",
            String::from_utf8_lossy(&request)
        );
    } else {
        assert_eq!(status, 405, "{:?}", String::from_utf8_lossy(&request));
        assert!(batches.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector < 64 {
        let digits = rest
            .split(|b| !b.is_ascii_digit())
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0);
        if digits >= 8 {
            return;
        }
        send(harness, rest);
        let probe = b"[{\"type\":\"probe\"}]";
        let (status, batches) = send(harness, &post(probe, "", None));
        assert_eq!(
            status,
            200,
            "the listener stopped serving after {:?}",
            String::from_utf8_lossy(rest)
        );
        assert_eq!(batches, vec![probe.to_vec()]);
    } else {
        structured(harness, rest);
    }
});
