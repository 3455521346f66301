//! Load (issue 12): the telemetry listener and the Runtime API proxy of the real binary under 64
//! concurrent clients, slowloris clients that never finish a request (silent, head trickled a
//! byte at a time, head complete and body never sent) and a flood of oversize bodies. Real
//! requests keep being served within a generous bound, the extension's RSS stays bounded, its
//! fds come back to where they were once the clients have gone, and nothing already accepted is
//! lost: every batch answered 200 reaches the telemetry command exactly once, every proxied
//! invocation's payload and response arrive byte for byte.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;
/// Concurrent real clients.
const CLIENTS: usize = 64;
/// Slowloris connections of each kind.
const SLOW_EACH: usize = 60;
/// The longest a real request may take under load (2 shared cores, debug build).
const SERVED_WITHIN: Duration = Duration::from_secs(20);
/// The telemetry listener's body limit (`telemetry::MAX_BODY_BYTES`).
const MAX_BODY_BYTES: usize = 8 * MIB;

// ---------------------------------------------------------------------------------------------
// Clients that never finish

/// How a slowloris client misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request line and then a header one byte at a time, never ending the head.
    TrickledHead,
    /// Sends a whole head declaring `Content-Length: n`, and a single byte of body.
    NoBody(usize),
}

/// Slowloris connections to `127.0.0.1:port`, kept open (the trickling ones fed a byte every
/// 100 ms) until dropped.
struct Slowloris {
    streams: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    feeder: Option<thread::JoinHandle<()>>,
}

impl Slowloris {
    fn open(port: u16, path: &str, kinds: &[(Slow, usize)]) -> Slowloris {
        let mut streams = Vec::new();
        let mut trickled = Vec::new();
        for &(kind, n) in kinds {
            for _ in 0..n {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                match kind {
                    Slow::Silent => {}
                    Slow::TrickledHead => {
                        let _ = stream.write_all(
                            format!("POST {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes(),
                        );
                        trickled.push(stream.try_clone().unwrap());
                    }
                    Slow::NoBody(length) => {
                        let _ = stream.write_all(
                            format!(
                                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: \
                                 application/json\r\nContent-Length: {length}\r\n\r\n["
                            )
                            .as_bytes(),
                        );
                    }
                }
                streams.push(stream);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let feeder = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for stream in &mut trickled {
                        let _ = stream.write_all(b"a");
                    }
                    thread::sleep(ms(100));
                }
            })
        };
        Slowloris {
            streams: Arc::new(Mutex::new(streams)),
            stop,
            feeder: Some(feeder),
        }
    }

    fn len(&self) -> usize {
        self.streams.lock().unwrap().len()
    }

    /// How many are still open on the server's side (a read finds neither an answer nor EOF).
    fn still_waiting(&self) -> usize {
        let streams = self.streams.lock().unwrap();
        streams
            .iter()
            .filter(|stream| {
                stream.set_nonblocking(true).unwrap();
                let mut byte = [0u8; 1];
                let waiting = matches!(
                    (&**stream).read(&mut byte),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                );
                stream.set_nonblocking(false).unwrap();
                waiting
            })
            .count()
    }

    /// Closes every connection.
    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/// The status code of the answer on `stream` (reads the status line and the rest of the head,
/// and a body of `Content-Length`).
fn read_status(stream: &mut TcpStream) -> std::io::Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad head {text:?}")))?;
    let length = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

/// An oversize post: whether chunked, and its status or error.
type Oversize = (bool, Result<u16, String>);

/// POSTs `length` bytes to the listener with `Content-Length` (chunked: `Transfer-Encoding:
/// chunked`, 64 KiB chunks), writing on one thread while reading the answer on this one; the
/// status, or the error that came instead (a reset once the server stops reading).
fn post_oversize(port: u16, length: usize, chunked: bool) -> Result<u16, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(secs(60))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {length}")
    };
    let feed = thread::spawn(move || {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        );
        writer.write_all(head.as_bytes())?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = length;
        while left > 0 {
            let n = left.min(chunk.len());
            if chunked {
                writer.write_all(format!("{n:x}\r\n").as_bytes())?;
            }
            writer.write_all(&chunk[..n])?;
            if chunked {
                writer.write_all(b"\r\n")?;
            }
            left -= n;
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n")?;
        }
        Ok::<(), std::io::Error>(())
    });
    let status = read_status(&mut stream).map_err(|e| e.to_string());
    let _ = stream.shutdown(Shutdown::Both);
    let _ = feed.join();
    status
}

// ---------------------------------------------------------------------------------------------
// Telemetry listener

/// A ureq agent for real deliveries: its own connection, kept alive, and a timeout so that a
/// listener that stops answering fails the test instead of hanging it.
fn delivery_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(SERVED_WITHIN))
        .build()
        .into()
}

/// POSTs a batch; the status and how long the answer took, or the error.
fn deliver(agent: &ureq::Agent, port: u16, body: &[u8]) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    agent
        .post(&format!("http://127.0.0.1:{port}/"))
        .header("Content-Type", "application/json")
        .send(body)
        .map(|answer| (answer.status().as_u16(), started.elapsed()))
        .map_err(|e| format!("{e} after {:?}", started.elapsed()))
}

/// The records of every batch the command got (the file holds the batches end to end).
fn records_delivered(path: &std::path::Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap_or_default();
    serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<serde_json::Value>()
        .flat_map(|batch| {
            let batch = batch.expect("the command's file holds whole JSON batches");
            batch
                .as_array()
                .expect("a batch is an array")
                .iter()
                .map(|r| r["record"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The launcher with the allocator behaviour of the shipped binary. The binary on Lambda is
/// static musl, whose allocator maps every large block on its own and unmaps it when freed; the
/// debug binary the tests run is linked with glibc, whose allocator raises its mmap threshold
/// after the first large block is freed and from then on serves such blocks from per-thread
/// arenas that keep the memory (the oversize flood below, with glibc's default: 384 MiB peak RSS
/// and 310 MiB still held after the load; the musl release binary: 38.7 MiB peak, 1.4 MiB after).
/// A fixed threshold (`glibc.malloc.mmap_threshold`) makes glibc map large blocks as musl does.
/// `LOAD_BINARY=<path>` runs the extension from another binary instead (e.g. the musl release
/// build: `LOAD_BINARY=$PWD/target/x86_64-unknown-linux-musl/release/lambda-shell-extension`).
fn shipped_allocator(launcher: Launcher<'_>) -> Launcher<'_> {
    match std::env::var("LOAD_BINARY") {
        Ok(binary) => launcher.binary(binary),
        Err(_) => launcher.env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072"),
    }
}

/// A telemetry-only extension whose command (`tee -a`, a process per batch) appends every batch
/// to `<sandbox>/batches`; its listener's port once subscribed.
fn telemetry_extension(sb: &Sandbox, api: &FakeApi) -> (Ext, u16) {
    let launcher = sb.ext(api).env(
        "SHELL_EXT_TELEMETRY_HANDLER",
        &format!("tee -a {}", sb.p("batches")),
    );
    let ext = shipped_allocator(launcher).spawn();
    let port = TelemetryTarget::of(api).port();
    (ext, port)
}

/// Waits until the extension's fds are back to `baseline` (and its threads to `threads`, when
/// given: tiny_http's idle connection threads end 5 s after their last use); the last usage.
fn back_to(pid: i32, baseline: Usage, threads: bool) -> (bool, Option<Usage>) {
    let mut last = None;
    let ok = wait_for(secs(30), || {
        last = Usage::of(pid);
        last.is_some_and(|u| u.fds <= baseline.fds && (!threads || u.threads <= baseline.threads))
    });
    (ok, last)
}

/// 64 clients each deliver 20 batches (a connection each, one batch at a time, as Lambda
/// does), a probe delivers one every 50 ms, while 180 slowloris connections hang on the
/// listener (silent, a head trickled a byte every 100 ms, a head declaring 100 000 bytes of
/// body of which one came) and four flooders post bodies over the 8 MiB limit, declared
/// (`Content-Length`) and chunked. Every real batch is answered 200 within 20 s and reaches the
/// command exactly once, each client's in order; every declared oversize body is answered 413
/// (a chunked one 413 or reset once the listener stops reading it); the slowloris connections
/// are still held open (not answered, not dropped) at the end; the RSS stays under the bound
/// below; once everyone has gone, fds and threads are back to where they were.
#[test]
fn telemetry_listener_under_load_serves_everyone_and_loses_nothing() {
    const BATCHES: usize = 20;
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let (mut ext, port) = telemetry_extension(&sb, &api);
    let pid = ext.pid as i32;
    // Warm up (a kept-alive connection, a batch through the command), then the baseline.
    let warm = delivery_agent();
    let warm_batch = batch(&[record("function", r#""warm-up""#)]);
    assert_eq!(deliver(&warm, port, &warm_batch).unwrap().0, 200);
    drop(warm);
    assert!(wait_for(secs(10), || records_delivered(
        &sb.path("batches")
    )
    .len()
        == 1));
    thread::sleep(ms(200));
    let baseline = Usage::of(pid).unwrap();
    let sampler = Sampler::start(pid, ms(20));

    let slow = Slowloris::open(
        port,
        "/",
        &[
            (Slow::Silent, SLOW_EACH),
            (Slow::TrickledHead, SLOW_EACH),
            (Slow::NoBody(100_000), SLOW_EACH),
        ],
    );
    let done = Arc::new(AtomicBool::new(false));
    // Oversize flood: 4 threads, alternating declared and chunked bodies of 8 MiB + 1.
    let oversize: Arc<Mutex<Vec<Oversize>>> = Arc::default();
    let flooders: Vec<_> = (0..4)
        .map(|i| {
            let (done, oversize) = (done.clone(), oversize.clone());
            thread::spawn(move || {
                let mut chunked = i % 2 == 1;
                while !done.load(Ordering::SeqCst) {
                    let got = post_oversize(port, MAX_BODY_BYTES + 1, chunked);
                    oversize.lock().unwrap().push((chunked, got));
                    chunked = !chunked;
                }
            })
        })
        .collect();
    // The probe: a batch every 50 ms, timed.
    let probe = {
        let done = done.clone();
        thread::spawn(move || {
            let agent = delivery_agent();
            let mut answers = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let body = batch(&[record("function", &format!(r#""probe {n}""#))]);
                answers.push((n, deliver(&agent, port, &body)));
                n += 1;
                thread::sleep(ms(50));
            }
            answers
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                let agent = delivery_agent();
                (0..BATCHES)
                    .map(|b| {
                        let text = format!(r#""c{c} b{b} {}""#, "é".repeat(c * 7 + b));
                        (
                            b,
                            deliver(&agent, port, &batch(&[record("function", &text)])),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<Vec<_>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let took = started.elapsed();
    let slow_waiting = slow.still_waiting();
    done.store(true, Ordering::SeqCst);
    let probes = probe.join().unwrap();
    for flooder in flooders {
        flooder.join().unwrap();
    }
    let slow_count = slow.len();
    slow.close();
    let (back, after) = back_to(pid, baseline, true);
    let watch = sampler.stop();

    let max_rss = watch.samples.iter().map(|(_, u)| u.rss_kib).max().unwrap();
    let max_fds = watch.samples.iter().map(|(_, u)| u.fds).max().unwrap();
    let max_threads = watch.samples.iter().map(|(_, u)| u.threads).max().unwrap();
    let oversize = oversize.lock().unwrap().clone();
    let slowest = answers
        .iter()
        .flatten()
        .chain(probes.iter())
        .filter_map(|(_, a)| a.as_ref().ok().map(|(_, t)| *t))
        .max()
        .unwrap();
    eprintln!(
        "{CLIENTS}x{BATCHES} batches in {took:?}, {} probes, slowest answer {slowest:?}; {} \
         oversize posts; {slow_count} slowloris, {slow_waiting} still held at the end; baseline \
         {baseline:?}, peak RSS {max_rss} KiB, fds {max_fds}, threads {max_threads}; after: \
         {after:?}",
        probes.len(),
        oversize.len(),
    );
    api.push_shutdown("spindown", deadline_in(10_000));
    ext.expect_exit(0, secs(30));
    let context = ext.output_tail();

    // Every real batch answered 200 in time.
    for (c, client) in answers.iter().enumerate() {
        for (b, answer) in client {
            assert!(
                matches!(answer, Ok((200, t)) if *t < SERVED_WITHIN),
                "client {c} batch {b}: {answer:?}\n{context}"
            );
        }
    }
    assert!(probes.len() >= 5, "the probe hardly ran: {probes:?}");
    for (n, answer) in &probes {
        assert!(
            matches!(answer, Ok((200, _))),
            "probe {n}: {answer:?}\n{context}"
        );
    }
    // Every accepted batch reached the command exactly once, each client's in order.
    let delivered = records_delivered(&sb.path("batches"));
    let mut per_client: HashMap<String, Vec<usize>> = HashMap::new();
    for text in &delivered {
        let mut words = text.split(' ');
        let (Some(who), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        if who.starts_with('c') {
            per_client
                .entry(who.to_string())
                .or_default()
                .push(n[1..].parse().unwrap());
        }
    }
    for c in 0..CLIENTS {
        assert_eq!(
            per_client
                .get(&format!("c{c}"))
                .cloned()
                .unwrap_or_default(),
            (0..BATCHES).collect::<Vec<_>>(),
            "client {c}'s batches as the command got them"
        );
    }
    assert_eq!(
        delivered.len(),
        1 + CLIENTS * BATCHES + probes.len(),
        "batches through the command (warm-up, clients, probes)"
    );
    for (n, _) in &probes {
        assert!(delivered.contains(&format!("probe {n}")), "probe {n} lost");
    }
    // The oversize flood: 413 for every declared body; chunked: 413, or a reset once the
    // listener has read its 8 MiB + 1 and stopped.
    assert!(oversize.len() >= 4, "{oversize:?}");
    for (chunked, got) in &oversize {
        match (chunked, got) {
            (_, Ok(413)) => {}
            (true, Err(_)) => {}
            _ => panic!("oversize (chunked: {chunked}) answered {got:?}\n{context}"),
        }
    }
    assert!(
        oversize.iter().filter(|(_, got)| *got == Ok(413)).count() >= oversize.len() / 2,
        "{oversize:?}"
    );
    // The slowloris connections were held (not answered, not dropped).
    assert_eq!(
        slow_waiting, slow_count,
        "slowloris connections answered or dropped"
    );
    // RSS: the baseline, plus what the listener may hold at once for the 4 flooders (a chunked
    // body is read up to 8 MiB + 1 before the 413; a declared one is refused before its body,
    // which tiny_http then reads and drops a socket read at a time), the queue (8 MiB at most;
    // the real batches are small) and 32 MiB for the rest (the stacks touched by 400 threads,
    // allocator slack). Not a bound in the number of connections: see the report.
    // (32 MiB: 16 was exceeded by 1 MiB once on a loaded 2-core machine, debug glibc build.)
    let bound = baseline.rss_kib + (4 * (MAX_BODY_BYTES + 1) + 8 * MIB + 32 * MIB) as u64 / 1024;
    assert!(
        max_rss <= bound,
        "peak RSS {max_rss} KiB over {bound} KiB (baseline {})",
        baseline.rss_kib
    );
    assert!(
        back,
        "fds/threads not back to the baseline {baseline:?} 30 s after the clients left: {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Runtime API proxy

/// `n` bytes of a pattern that repeats only every 251 bytes, starting at `seed`.
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i + seed) % 251) as u8).collect()
}

/// The request id of an invocation answer.
fn request_id(answer: &Answer) -> String {
    answer
        .header("Lambda-Runtime-Aws-Request-Id")
        .unwrap_or_default()
        .to_string()
}

/// Starts a proxy-only extension (`SHELL_EXT_PROXY=on`, no handler: pure forwarding) on a free
/// port; its pid and the port, once registered.
fn proxy_extension(sb: &Sandbox, rt: &RuntimeApi) -> (Ext, u16) {
    let port = free_port();
    let ext = shipped_allocator(
        sb.ext(rt)
            .env("SHELL_EXT_PROXY", "on")
            .env("SHELL_EXT_PROXY_PORT", &port.to_string()),
    )
    .spawn();
    rt.expect_requests(Endpoint::Register, 1, secs(5));
    (ext, port)
}

/// One invocation through the proxy on `client`: `/next` (the payload must be the one pushed
/// for its id), then its response; the id, and how long the two took. Errors say what went
/// wrong instead of panicking the client's thread.
fn proxied_invocation(
    client: &mut RuntimeClient,
    payloads: &HashMap<String, Vec<u8>>,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let next = client
        .send(
            "GET",
            &format!("{RUNTIME}/invocation/next"),
            &[],
            Body::None,
        )
        .map_err(|e| format!("/next: {e} after {:?}", started.elapsed()))?;
    let id = request_id(&next);
    if next.status != 200 {
        return Err(format!("/next answered {}: {}", next.status, next.text()));
    }
    let want = payloads
        .get(&id)
        .ok_or_else(|| format!("/next gave an unknown id {id:?}"))?;
    if &next.body != want {
        return Err(format!(
            "{id}: payload of {} bytes, {} were sent",
            next.body.len(),
            want.len()
        ));
    }
    let response = response_for(&id);
    let answer = client
        .send(
            "POST",
            &format!("{RUNTIME}/invocation/{id}/response"),
            &[("Content-Type", "application/octet-stream")],
            Body::Bytes(&response),
        )
        .map_err(|e| format!("{id}: /response: {e} after {:?}", started.elapsed()))?;
    if answer.status != 202 {
        return Err(format!("{id}: /response answered {}", answer.status));
    }
    Ok((id, started.elapsed()))
}

/// The response the runtime posts for invocation `id`.
fn response_for(id: &str) -> Vec<u8> {
    let mut body = format!("response to {id}\0\u{ff}").into_bytes();
    body.extend(pattern(id.len() * 997, id.len()));
    body
}

/// 64 runtimes (a connection each) take 10 invocations each through the proxy, payloads from 1
/// byte to 256 KiB of binary and four of 7 MiB (over Lambda's 6 MB), while 180 slowloris
/// connections hang on the proxy (silent, a head trickled a byte every 100 ms, a head declaring
/// 100 000 bytes of body of which one came: each of these holds one of the proxy's workers and
/// an upstream connection) and four runtimes post 8 MiB + 1 responses (over Lambda's 6 MB limit;
/// docs/proxy.md: streamed upstream intact). Every invocation reaches a runtime once, its payload
/// byte for byte, within 20 s, and every response reaches upstream byte for byte; the oversize
/// responses too; the slowloris connections are still held at the end; RSS stays under the
/// bound below; fds come back once everyone has gone.
#[test]
fn proxy_under_load_passes_everything_byte_for_byte() {
    const PER_CLIENT: usize = 10;
    const BIG: usize = 7 * MIB;
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let (mut ext, port) = proxy_extension(&sb, &rt);
    let pid = ext.pid as i32;
    let mut payloads = HashMap::new();
    // Warm-up: one invocation through (a pooled upstream connection), then the baseline.
    let warm = "warm-up".to_string();
    payloads.insert(warm.clone(), b"{}".to_vec());
    rt.push(Invocation::new(&warm, b"{}".to_vec()));
    let mut client = RuntimeClient::connect(port);
    proxied_invocation(&mut client, &payloads).unwrap();
    drop(client);
    thread::sleep(ms(300));
    let baseline = Usage::of(pid).unwrap();
    let sampler = Sampler::start(pid, ms(20));

    let total = CLIENTS * PER_CLIENT;
    for k in 0..total {
        let id = format!("inv-{k}");
        let size = if k % (total / 4) == 7 {
            BIG
        } else {
            (k * 4099) % (256 * 1024) + 1
        };
        let body = pattern(size, k);
        rt.push(Invocation::with_deadline(
            &id,
            body.clone(),
            deadline_in(120_000),
        ));
        payloads.insert(id, body);
    }
    let payloads = Arc::new(payloads);
    let slow = Slowloris::open(
        port,
        &format!("{RUNTIME}/slow"),
        &[
            (Slow::Silent, SLOW_EACH),
            (Slow::TrickledHead, SLOW_EACH),
            (Slow::NoBody(100_000), SLOW_EACH),
        ],
    );
    let oversize: Vec<_> = (0..4)
        .map(|i| {
            thread::spawn(move || {
                let mut client = RuntimeClient::connect(port);
                (0..3)
                    .map(|n| {
                        let id = format!("big-{i}-{n}");
                        let status = client
                            .send(
                                "POST",
                                &format!("{RUNTIME}/invocation/{id}/response"),
                                &[],
                                Body::Bytes(&pattern(8 * MIB + 1, i * 3 + n)),
                            )
                            .map(|a| a.status)
                            .map_err(|e| e.to_string());
                        (id, status)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let payloads = payloads.clone();
            thread::spawn(move || {
                let mut client = RuntimeClient::connect(port);
                (0..PER_CLIENT)
                    .map(|_| proxied_invocation(&mut client, &payloads))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let oversize: Vec<_> = oversize
        .into_iter()
        .flat_map(|f| f.join().unwrap())
        .collect();
    let took = started.elapsed();
    let slow_waiting = slow.still_waiting();
    let slow_count = slow.len();
    slow.close();
    // ureq keeps up to 3 idle upstream connections (the warm-up left one).
    let pooled = Usage {
        fds: baseline.fds + 2,
        ..baseline
    };
    let (back, after) = back_to(pid, pooled, false);
    let watch = sampler.stop();
    let max_rss = watch.samples.iter().map(|(_, u)| u.rss_kib).max().unwrap();
    let max_fds = watch.samples.iter().map(|(_, u)| u.fds).max().unwrap();
    let max_threads = watch.samples.iter().map(|(_, u)| u.threads).max().unwrap();
    let slowest = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(_, t)| *t))
        .max();
    eprintln!(
        "{total} invocations in {took:?}, slowest {slowest:?}; {slow_count} slowloris, \
         {slow_waiting} still held at the end; baseline {baseline:?}, peak RSS {max_rss} KiB, \
         fds {max_fds}, threads {max_threads}; after: {after:?}"
    );
    rt.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(20));
    let context = ext.output_tail();

    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {total} invocations failed, first: {:?}\n{context}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for (id, took) in results.iter().flatten() {
        assert!(*took < SERVED_WITHIN, "{id} took {took:?}");
    }
    // Each invocation handed out once; each response upstream byte for byte.
    let mut served = rt.served();
    served.sort();
    let mut want: Vec<String> = payloads.keys().cloned().collect();
    want.sort();
    assert_eq!(served, want, "invocations handed out by upstream");
    let upstream: HashMap<String, Vec<u8>> = rt
        .requests(Route::Response)
        .into_iter()
        .map(|r| (r.path.clone(), r.body))
        .collect();
    for id in payloads.keys().filter(|id| *id != &warm) {
        let got = upstream.get(&format!("{RUNTIME}/invocation/{id}/response"));
        assert!(
            got == Some(&response_for(id)),
            "{id}: upstream got {:?} bytes of its response",
            got.map(Vec::len)
        );
    }
    for (i, (id, status)) in oversize.iter().enumerate() {
        assert_eq!(status, &Ok(202), "{id}\n{context}");
        let got = upstream.get(&format!("{RUNTIME}/invocation/{id}/response"));
        let seed = (i / 3) * 3 + i % 3;
        assert!(
            got == Some(&pattern(8 * MIB + 1, seed)),
            "{id}: upstream got {:?} bytes",
            got.map(Vec::len)
        );
    }
    assert_eq!(
        slow_waiting, slow_count,
        "slowloris connections answered or dropped"
    );
    // RSS: the baseline, plus the payloads in flight (each read whole before it is passed on:
    // the four 7 MiB ones, up to 64 others of at most 256 KiB), and 16 MiB for the rest (the
    // oversize responses are streamed through 16 KiB buffers; thread stacks, allocator slack).
    let bound = baseline.rss_kib + (4 * BIG + CLIENTS * 256 * 1024 + 16 * MIB) as u64 / 1024;
    assert!(
        max_rss <= bound,
        "peak RSS {max_rss} KiB over {bound} KiB (baseline {})",
        baseline.rss_kib
    );
    assert!(
        back,
        "fds not back to the baseline {baseline:?} (+2 pooled) 30 s after the clients left: \
         {after:?}"
    );
}

/// A runtime's request declaring a body (`Content-Length: 100000`) that disconnects after one
/// byte of it, to a route the proxy forwards (20 of them): once they have gone, the proxy holds
/// none of their connections (its fds are back to the baseline, +2 for ureq's idle pool), uses no
/// CPU (under 0.5 s of CPU time in 2 s: nothing spins), and still serves an invocation.
#[test]
fn proxy_request_cut_short_holds_nothing_and_does_not_spin() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let (mut ext, port) = proxy_extension(&sb, &rt);
    let pid = ext.pid as i32;
    let mut payloads = HashMap::new();
    payloads.insert("warm-up".to_string(), b"{}".to_vec());
    rt.push(Invocation::new("warm-up", b"{}".to_vec()));
    let mut client = RuntimeClient::connect(port);
    proxied_invocation(&mut client, &payloads).unwrap();
    thread::sleep(ms(300));
    let baseline = Usage::of(pid).unwrap();
    let slow = Slowloris::open(
        port,
        &format!("{RUNTIME}/slow"),
        &[(Slow::NoBody(100_000), 20)],
    );
    // Each has reached a worker, which forwards the head upstream and waits for the body.
    let forwarded = wait_for(secs(10), || {
        rt.requests(Route::Other).len() >= 20
            || Usage::of(pid).is_some_and(|u| u.fds >= baseline.fds + 40)
    });
    eprintln!("forwarded: {forwarded}, usage {:?}", Usage::of(pid));
    slow.close();
    let pooled = Usage {
        fds: baseline.fds + 2,
        ..baseline
    };
    let (back, after) = back_to(pid, pooled, false);
    let cpu_before = cpu_time(pid).unwrap();
    thread::sleep(secs(2));
    let cpu = cpu_time(pid).unwrap() - cpu_before;
    eprintln!("baseline {baseline:?}, after {after:?}, CPU in 2 s: {cpu:?}");
    payloads.insert("after".to_string(), b"{\"after\":1}".to_vec());
    rt.push(Invocation::new("after", b"{\"after\":1}".to_vec()));
    let served = proxied_invocation(&mut client, &payloads);
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(20));
    assert!(served.is_ok(), "{served:?}");
    assert!(
        cpu < ms(500),
        "the extension used {cpu:?} of CPU in 2 s while idle"
    );
    assert!(back, "fds not back to {baseline:?} (+2 pooled): {after:?}");
}

// ---------------------------------------------------------------------------------------------
// Exhaustion: more slow clients than the extension can hold

/// Lowers `pid`'s soft and hard `RLIMIT_NOFILE` to `n` (Lambda's is 1 024).
fn limit_fds(pid: i32, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit(2) reads a valid rlimit; `pid` is our own child.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Opens `n` silent connections to `port` (the backlog takes them whether or not the extension
/// accepts); they stay open until dropped.
fn silent_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect()
}

/// Under Lambda's 1 024 descriptors, 1 100 connections that send nothing (the function's code
/// can open them: the listener takes any local client) use up the extension's descriptors;
/// once they have gone, a real batch must be accepted again (and the extension must still be
/// running: `LOAD_BINARY` with the release build shows it aborting).
#[test]
fn telemetry_listener_survives_running_out_of_descriptors() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let (mut ext, port) = telemetry_extension(&sb, &api);
    limit_fds(ext.pid as i32, 1024);
    let agent = delivery_agent();
    let first = batch(&[record("function", r#""before""#)]);
    assert_eq!(deliver(&agent, port, &first).unwrap().0, 200);
    let idle = silent_connections(port, 1100);
    thread::sleep(secs(1));
    drop(idle);
    thread::sleep(secs(1));
    let after = batch(&[record("function", r#""after""#)]);
    let answer = deliver(&delivery_agent(), port, &after);
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(20));
    assert!(
        matches!(answer, Ok((200, _))),
        "a batch after the descriptors came back: {answer:?}\n{}",
        ext.output_tail()
    );
    assert_eq!(records_delivered(&sb.path("batches")), ["before", "after"]);
}

/// The same for the proxy: after 1 100 silent connections under 1 024 descriptors have gone,
/// the runtime's next invocation must come through.
#[test]
#[ignore = "bug: out of descriptors (EMFILE under Lambda's 1 024), tiny_http's accept thread \
            panics (try_clone().unwrap() in util/refined_tcp_stream.rs): the release binary \
            aborts (SIGABRT), the debug one's proxy is gone (connection refused); the \
            function's runtime then cannot get its invocations; no small fix: it is tiny_http's \
            accept loop"]
fn proxy_survives_running_out_of_descriptors() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let (mut ext, port) = proxy_extension(&sb, &rt);
    limit_fds(ext.pid as i32, 1024);
    let mut payloads = HashMap::new();
    for id in ["before", "after"] {
        payloads.insert(id.to_string(), format!("{{\"{id}\":1}}").into_bytes());
        rt.push(Invocation::new(id, payloads[id].clone()));
    }
    let mut client = RuntimeClient::connect(port);
    proxied_invocation(&mut client, &payloads).unwrap();
    drop(client);
    let idle = silent_connections(port, 1100);
    thread::sleep(secs(1));
    drop(idle);
    thread::sleep(secs(1));
    let mut client = RuntimeClient::connect(port);
    let served = proxied_invocation(&mut client, &payloads);
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(20));
    assert!(
        served.is_ok(),
        "an invocation after the descriptors came back: {served:?}\n{}",
        ext.output_tail()
    );
}

/// 300 requests whose body never comes (a head declaring 100 000 bytes, one sent), more than
/// the proxy's 256 workers: each holds a worker while it waits for the body; once all 256 are
/// held, a real runtime's invocation must still be served within 20 s.
#[test]
#[ignore = "bug: the proxy serves at most 256 requests at once (MAX_WORKERS) and a request \
            whose body stalls holds its worker with no timeout, so 255 stalled requests from \
            the function's own code block every later /next (a read timeout would also cut off \
            a streamed response that pauses: not a small fix)"]
fn proxy_serves_the_runtime_past_256_stalled_bodies() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let (mut ext, port) = proxy_extension(&sb, &rt);
    let mut payloads = HashMap::new();
    payloads.insert("after".to_string(), b"{\"after\":1}".to_vec());
    // One at a time, so that tiny_http gives each connection a thread of its own (a burst can
    // leave some queued behind the others, unread).
    let slow: Vec<Slowloris> = (0..300)
        .map(|_| {
            let one = Slowloris::open(
                port,
                &format!("{RUNTIME}/slow"),
                &[(Slow::NoBody(100_000), 1)],
            );
            thread::sleep(ms(5));
            one
        })
        .collect();
    // Until every worker the proxy may start holds one of them.
    let workers = || {
        fs::read_dir(format!("/proc/{}/task", ext.pid))
            .map(|tasks| {
                tasks
                    .filter(|task| {
                        task.as_ref().is_ok_and(|task| {
                            fs::read_to_string(task.path().join("comm"))
                                .is_ok_and(|comm| comm.trim() == "proxy")
                        })
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let all_busy = wait_for(secs(20), || workers() >= 256);
    eprintln!(
        "{} proxy workers (all busy: {all_busy}), {} stalled requests held, {:?}",
        workers(),
        slow.iter().map(Slowloris::still_waiting).sum::<usize>(),
        Usage::of(ext.pid as i32)
    );
    rt.push(Invocation::new("after", b"{\"after\":1}".to_vec()));
    let mut client = RuntimeClient::connect(port);
    let served = proxied_invocation(&mut client, &payloads);
    slow.into_iter().for_each(Slowloris::close);
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(30));
    assert!(
        served.is_ok(),
        "the invocation behind 300 stalled bodies: {served:?}\n{}",
        ext.output_tail()
    );
}
