//! Library-level tests of `lambda_shell_extension::telemetry::Listener` with real HTTP clients:
//! ureq for well-behaved deliveries, raw `TcpStream`s for the clients that misbehave (silent,
//! half a request, disconnected or stalled mid-body, lying about their length).
//!
//! Every test binds its own listener on `127.0.0.1:0`, so they run in parallel. Batches are
//! taken by a thread that forwards them to the test with a timeout, so a failure is a message,
//! not a hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lambda_shell_extension::api::DestinationProtocol;
use lambda_shell_extension::telemetry::{Batch, Listener, MAX_BODY_BYTES};

const WAIT: Duration = Duration::from_secs(10);
/// How long to wait for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// A listener on loopback and the batches it yields.
struct Harness {
    listener: Arc<Listener>,
    batches: Receiver<Batch>,
    url: String,
}

impl Harness {
    fn start() -> Harness {
        let listener = Arc::new(
            Listener::bind_addr("127.0.0.1:0".parse().unwrap()).expect("bind on loopback"),
        );
        let (sender, batches) = mpsc::channel();
        let taker = listener.clone();
        thread::spawn(move || {
            while let Some(batch) = taker.next_batch() {
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        let url = format!("http://{}/", listener.local_addr());
        Harness {
            listener,
            batches,
            url,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The next batch, or a panic naming `what`.
    fn next(&self, what: &str) -> Batch {
        self.batches
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{what}: no batch within {WAIT:?} ({e:?})"))
    }

    /// No batch comes within `QUIET`.
    fn assert_no_batch(&self, what: &str) {
        match self.batches.recv_timeout(QUIET) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(batch) => panic!("{what}: unexpected batch of {} bytes", batch.body().len()),
            Err(RecvTimeoutError::Disconnected) => panic!("{what}: the listener stopped"),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.listener.stop();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// POSTs `body` on a thread; the join handle gives the status.
fn post(url: &str, body: Vec<u8>) -> thread::JoinHandle<u16> {
    let url = url.to_string();
    thread::spawn(move || {
        agent()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map(|response| response.status().as_u16())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
    })
}

fn join(handle: thread::JoinHandle<u16>) -> u16 {
    handle.join().expect("client thread")
}

/// A raw connection with a read timeout.
fn raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Reads a response head from `stream`; returns the status and the head.
fn read_head(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => panic!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!(
                "no response ({e}) after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
    (status, head)
}

/// A JSON-array-shaped body of about `size` bytes holding every byte value, so nothing may be
/// re-encoded on the way.
fn binary_body(size: usize, seed: u8) -> Vec<u8> {
    let mut body = b"[".to_vec();
    let mut value = seed;
    while body.len() < size - 1 {
        body.push(value);
        value = value.wrapping_mul(31).wrapping_add(7);
    }
    body.push(b']');
    body
}

// ---------------------------------------------------------------------------------------------
// Binding

#[test]
fn bind_uses_an_ephemeral_port_and_gives_the_sandbox_uri() {
    let listener = Listener::bind().expect("bind");
    let addr = listener.local_addr();
    assert!(addr.ip().is_unspecified(), "{addr}");
    assert_ne!(listener.port(), 0);
    assert_ne!(listener.port(), 9001);
    assert_eq!(listener.port(), addr.port());
    let uri = format!("http://sandbox.localdomain:{}", listener.port());
    assert_eq!(listener.uri(), uri);
    let destination = listener.destination();
    assert_eq!(destination.protocol, DestinationProtocol::Http);
    assert_eq!(destination.uri, uri);
    assert_eq!(
        serde_json::to_value(&destination).unwrap(),
        serde_json::json!({"protocol": "HTTP", "URI": uri})
    );
    // Reachable on loopback (what the emulators post to).
    let url = format!("http://127.0.0.1:{}/", listener.port());
    let client = post(&url, b"[]".to_vec());
    let batch = listener.next_batch().expect("a batch");
    assert_eq!(batch.body(), b"[]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
}

#[test]
fn port_9001_is_refused() {
    let error = Listener::bind_addr("127.0.0.1:9001".parse().unwrap()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("9001"), "{error}");
}

#[test]
fn dropping_the_listener_frees_the_port_and_answers_500() {
    // Wait until the batch has fully arrived, then drop the listener without taking it. (503:
    // it came after the drop; on a loaded machine, wait longer.)
    let mut addr = None;
    let mut answered = false;
    for wait in [QUIET, 4 * QUIET, 10 * QUIET] {
        let listener = Listener::bind_addr("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = post(
            &format!("http://{}/", listener.local_addr()),
            b"[1]".to_vec(),
        );
        thread::sleep(wait);
        addr = Some(listener.local_addr());
        drop(listener);
        match join(client) {
            503 => continue,
            status => {
                assert_eq!(status, 500, "a batch never taken is answered 500");
                answered = true;
                break;
            }
        }
    }
    assert!(answered, "the batch never arrived before the drop");
    let addr = addr.unwrap();
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Well-behaved deliveries

#[test]
fn large_binary_body_arrives_intact_and_is_answered_on_acknowledge() {
    let h = Harness::start();
    // The largest batch Lambda sends is about 2 * maxBytes (1 MiB) plus metadata.
    let body = binary_body(2 * 1024 * 1024 + 4096, 1);
    let client = post(&h.url, body.clone());
    let batch = h.next("2 MiB batch");
    assert_eq!(batch.body().len(), body.len());
    assert!(batch.body() == &body[..], "body altered on the way");
    // Not answered before the acknowledgement.
    thread::sleep(QUIET);
    assert!(!client.is_finished(), "answered before acknowledge()");
    batch.acknowledge();
    assert_eq!(join(client), 200);
}

#[test]
fn into_parts_keeps_the_body_and_acknowledges_later() {
    let h = Harness::start();
    let client = post(&h.url, b"[{\"type\":\"platform.start\"}]".to_vec());
    let (body, acknowledgement) = h.next("batch").into_parts();
    assert_eq!(body, b"[{\"type\":\"platform.start\"}]");
    thread::sleep(QUIET);
    assert!(!client.is_finished(), "answered before acknowledge()");
    acknowledgement.acknowledge();
    assert_eq!(join(client), 200);
}

#[test]
fn sequential_batches_come_in_order_on_one_connection() {
    let h = Harness::start();
    let url = h.url.clone();
    let sender = thread::spawn(move || {
        let agent = agent(); // one agent: one kept-alive connection, as Lambda's
        (0..60)
            .map(|i| {
                // Small (buffered by tiny_http) and larger (read by the listener) bodies.
                let body = if i % 3 == 0 {
                    binary_body(40_000 + i, i as u8)
                } else {
                    format!("[{i}]").into_bytes()
                };
                agent
                    .post(&url)
                    .send(&body[..])
                    .map(|response| response.status().as_u16())
                    .unwrap()
            })
            .collect::<Vec<u16>>()
    });
    for i in 0..60usize {
        let batch = h.next(&format!("batch {i}"));
        let expected = if i % 3 == 0 {
            binary_body(40_000 + i, i as u8)
        } else {
            format!("[{i}]").into_bytes()
        };
        assert!(
            batch.body() == &expected[..],
            "batch {i} out of order or altered"
        );
        batch.acknowledge();
    }
    assert_eq!(sender.join().unwrap(), vec![200; 60]);
}

#[test]
fn empty_and_chunked_bodies_and_expect_continue() {
    let h = Harness::start();
    // An empty POST is a (strange, empty) batch: nothing to refuse.
    let client = post(&h.url, Vec::new());
    let batch = h.next("empty");
    assert_eq!(batch.body(), b"");
    batch.acknowledge();
    assert_eq!(join(client), 200);

    // Chunked.
    let mut stream = raw(h.addr());
    stream
        .write_all(
            b"POST /any/path HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\n[1,2\r\n6\r\n,3,4]\n\r\n0\r\n\r\n",
        )
        .unwrap();
    let batch = h.next("chunked");
    assert_eq!(batch.body(), b"[1,2,3,4]\n");
    batch.acknowledge();
    assert_eq!(read_head(&mut stream).0, 200);

    // Expect: 100-continue: the listener asks for the body, then takes it.
    let mut stream = raw(h.addr());
    let body = binary_body(5000, 9);
    stream
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(read_head(&mut stream).0, 100);
    stream.write_all(&body).unwrap();
    let batch = h.next("after 100-continue");
    assert!(batch.body() == &body[..]);
    batch.acknowledge();
    assert_eq!(read_head(&mut stream).0, 200);
}

// ---------------------------------------------------------------------------------------------
// Answers other than 200

#[test]
fn unacknowledged_batches_are_answered_500() {
    let h = Harness::start();
    for size in [10, 50_000] {
        let client = post(&h.url, binary_body(size, 3));
        drop(h.next("batch to drop"));
        assert_eq!(join(client), 500, "dropped batch of {size} bytes");

        let client = post(&h.url, binary_body(size, 4));
        let (body, acknowledgement) = h.next("parts to drop").into_parts();
        assert_eq!(body.len(), size);
        drop(acknowledgement);
        assert_eq!(join(client), 500, "dropped acknowledgement, {size} bytes");
    }
}

#[test]
fn methods_other_than_post_are_405_with_allow_post() {
    let h = Harness::start();
    let agent = agent();
    let responses = [
        ("GET", agent.get(&h.url).call().unwrap()),
        ("HEAD", agent.head(&h.url).call().unwrap()),
        ("DELETE", agent.delete(&h.url).call().unwrap()),
        ("PUT", agent.put(&h.url).send(&b"[1]"[..]).unwrap()),
        (
            "PUT",
            agent.put(&h.url).send(&binary_body(20_000, 5)[..]).unwrap(),
        ),
    ];
    for (method, response) in responses {
        assert_eq!(response.status().as_u16(), 405, "{method}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some("POST"),
            "{method}: {:?}",
            response.headers()
        );
    }
    h.assert_no_batch("after refused methods");
    // The next POST is the next batch.
    let client = post(&h.url, b"[\"after\"]".to_vec());
    let batch = h.next("POST after 405s");
    assert_eq!(batch.body(), b"[\"after\"]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
}

#[test]
fn declared_oversize_body_is_413_before_it_is_read() {
    let h = Harness::start();
    // Declared one byte over, nothing sent: answered at once.
    let mut stream = raw(h.addr());
    stream
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(read_head(&mut stream).0, 413);
    drop(stream);

    // A real client sending 9 MiB with its Content-Length.
    let client = post(&h.url, vec![b' '; 9 * 1024 * 1024]);
    assert_eq!(join(client), 413);

    // Exactly the limit is accepted.
    let body = binary_body(MAX_BODY_BYTES, 6);
    let client = post(&h.url, body.clone());
    let batch = h.next("MAX_BODY_BYTES");
    assert_eq!(batch.body().len(), MAX_BODY_BYTES);
    assert!(batch.body() == &body[..]);
    batch.acknowledge();
    assert_eq!(join(client), 200);
    h.assert_no_batch("after 413s");
}

#[test]
fn absurd_declared_length_is_413_and_the_listener_carries_on() {
    let h = Harness::start();
    for length in ["1000000000000000", "18446744073709551615"] {
        let mut stream = raw(h.addr());
        stream
            .write_all(
                format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\nabc")
                    .as_bytes(),
            )
            .unwrap();
        assert_eq!(read_head(&mut stream).0, 413, "Content-Length {length}");
    }
    let client = post(&h.url, b"[2]".to_vec());
    let batch = h.next("after absurd lengths");
    assert_eq!(batch.body(), b"[2]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
}

#[test]
fn chunked_body_longer_than_the_limit_is_413() {
    let h = Harness::start();
    let mut stream = raw(h.addr());
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // MAX_BODY_BYTES + 1 bytes in 64 KiB chunks, then the last chunk: no length up front.
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = MAX_BODY_BYTES + 1;
    while left > 0 {
        let size = left.min(chunk.len());
        stream
            .write_all(format!("{size:x}\r\n").as_bytes())
            .unwrap();
        stream.write_all(&chunk[..size]).unwrap();
        stream.write_all(b"\r\n").unwrap();
        left -= size;
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    assert_eq!(read_head(&mut stream).0, 413);
    h.assert_no_batch("oversize chunked body");
}

// ---------------------------------------------------------------------------------------------
// Clients that misbehave

#[test]
fn silent_and_half_request_clients_do_not_block_others() {
    let h = Harness::start();
    // Connects and sends nothing.
    let _silent = raw(h.addr());
    // Half a request head.
    let mut half_head = raw(h.addr());
    half_head
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    // A whole head, half of a small body (tiny_http reads bodies up to 1 KiB itself).
    let mut half_small = raw(h.addr());
    half_small
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n[1,2,3")
        .unwrap();
    thread::sleep(Duration::from_millis(100));

    let client = post(&h.url, b"[\"ok\"]".to_vec());
    let batch = h.next("a well-behaved client among silent ones");
    assert_eq!(batch.body(), b"[\"ok\"]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
    h.assert_no_batch("half requests are not batches");
}

#[test]
fn stalled_client_mid_body_does_not_block_another_delivery() {
    let h = Harness::start();
    let body = binary_body(100_000, 7);
    let mut stalled = raw(h.addr());
    stalled
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    stalled.write_all(&body[..50_000]).unwrap();
    thread::sleep(Duration::from_millis(100));

    // Another delivery goes through while the first one is stalled.
    let started = Instant::now();
    let client = post(&h.url, b"[\"second\"]".to_vec());
    let batch = h.next("delivery behind a stalled one");
    assert_eq!(batch.body(), b"[\"second\"]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The stalled client finishes: its batch comes whole.
    stalled.write_all(&body[50_000..]).unwrap();
    let batch = h.next("the stalled delivery, finished");
    assert!(batch.body() == &body[..], "stalled body altered");
    batch.acknowledge();
    assert_eq!(read_head(&mut stalled).0, 200);
}

#[test]
fn disconnect_mid_body_yields_nothing() {
    let h = Harness::start();
    // Content-Length bodies cut short: small (read by tiny_http) and large (by the listener).
    for (declared, sent) in [(500, 100), (100_000, 60_000), (3_000_000, 1_000_000)] {
        let mut stream = raw(h.addr());
        stream
            .write_all(
                format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        stream.write_all(&vec![b'1'; sent]).unwrap();
        drop(stream);
    }
    // Chunked, cut between chunks.
    let mut stream = raw(h.addr());
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n")
        .unwrap();
    drop(stream);
    h.assert_no_batch("cut-short bodies");

    let client = post(&h.url, b"[\"whole\"]".to_vec());
    let batch = h.next("after disconnects");
    assert_eq!(batch.body(), b"[\"whole\"]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
}

#[test]
fn garbage_is_answered_400_and_the_listener_carries_on() {
    let h = Harness::start();
    let mut stream = raw(h.addr());
    stream
        .write_all(b"\x16\x03\x01\x02\x00 not http\r\n\r\n")
        .unwrap();
    assert_eq!(read_head(&mut stream).0, 400);
    let client = post(&h.url, b"[3]".to_vec());
    let batch = h.next("after garbage");
    assert_eq!(batch.body(), b"[3]");
    batch.acknowledge();
    assert_eq!(join(client), 200);
}

// ---------------------------------------------------------------------------------------------
// Stopping

#[test]
fn stop_yields_what_arrived_then_none_and_refuses_later_deliveries() {
    let h = Harness::start();
    let listener = h.listener.clone();
    // Take batches on this thread instead of the harness's: stop it first.
    h.listener.stop();
    // The harness thread sees None and exits; its channel disconnects.
    assert!(matches!(
        h.batches.recv_timeout(WAIT),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(listener.next_batch().is_none(), "None stays None");
    // Later deliveries: 503, not queued.
    let client = post(&h.url, b"[4]".to_vec());
    assert_eq!(join(client), 503);

    // A batch that arrived before stop() is still yielded after it.
    // (503: it came after stop(); on a loaded machine, wait longer.)
    for wait in [QUIET, 4 * QUIET, 10 * QUIET] {
        let listener = Listener::bind_addr("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = post(
            &format!("http://{}/", listener.local_addr()),
            b"[5]".to_vec(),
        );
        thread::sleep(wait);
        listener.stop();
        let Some(batch) = listener.next_batch() else {
            assert_eq!(join(client), 503, "not yielded, so refused");
            continue;
        };
        assert_eq!(batch.body(), b"[5]");
        batch.acknowledge();
        assert_eq!(join(client), 200);
        assert!(listener.next_batch().is_none());
        return;
    }
    panic!("the batch never arrived before stop()");
}

#[test]
fn listener_and_batches_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Listener>();
    send::<Batch>();
    send::<lambda_shell_extension::telemetry::Acknowledgement>();
}
