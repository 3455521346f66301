//! A stand-in Lambda Runtime API (2018-06-01) for testing the Runtime API proxy, and a runtime
//! client that talks to the proxy.
//!
//! * `RuntimeApi` serves the Runtime API on the port of a `FakeApi` (through its route hook), as
//!   Lambda serves both APIs at one `AWS_LAMBDA_RUNTIME_API`: the extension uses that address for
//!   its Extensions API calls and as the proxy's upstream. It derefs to the `FakeApi`, so
//!   `sb.ext(&rt)` and `rt.push_shutdown(..)` work as with a bare `FakeApi`.
//!   - `GET /runtime/invocation/next`: a long poll from a queue of scripted invocations (their
//!     `Lambda-Runtime-*` headers and arbitrary body bytes).
//!   - `POST /runtime/invocation/{id}/response` and `/error`, `/init/error`, `/restore/next`,
//!     `/restore/error` and every other path that is not the Extensions API: recorded (method,
//!     path and query, headers, body exactly, a chunked body de-chunked) and answered as Lambda
//!     does, or with a scripted answer (`answer`, `answer_times`): a status with headers and body,
//!     a dropped connection, or raw bytes (a broken answer).
//! * `RuntimeClient`: plain `std::net` HTTP/1.1 with keep-alive, `Content-Length` or chunked
//!   bodies (with trailers), as a function's runtime talks to `127.0.0.1:<proxy port>`.
//! * `recorder`: a handler script that records its stdin and environment per call.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{parse_env, Sandbox};
use super::server::{deadline_in, FakeApi, Request, Routed, FUNCTION_ARN};

/// Where the Runtime API's routes start.
pub const RUNTIME: &str = "/2018-06-01/runtime";
/// The trace header value scripted invocations carry by default.
pub const TRACE: &str =
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// Which Runtime API call a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /runtime/invocation/next`
    Next,
    /// `POST /runtime/invocation/{id}/response`
    Response,
    /// `POST /runtime/invocation/{id}/error`
    Error,
    /// `POST /runtime/init/error`
    InitError,
    /// `GET /runtime/restore/next`
    RestoreNext,
    /// `POST /runtime/restore/error`
    RestoreError,
    /// Any other method or path (not the Extensions API).
    Other,
}

/// The route of a request, and the invocation id for `Response` and `Error`.
pub fn route_of(method: &str, path: &str) -> (Route, Option<String>) {
    let Some(rest) = path.strip_prefix(RUNTIME) else {
        return (Route::Other, None);
    };
    match (method, rest) {
        ("GET", "/invocation/next") => return (Route::Next, None),
        ("POST", "/init/error") => return (Route::InitError, None),
        ("GET", "/restore/next") => return (Route::RestoreNext, None),
        ("POST", "/restore/error") => return (Route::RestoreError, None),
        _ => {}
    }
    if method == "POST" {
        if let Some((id, what)) = rest
            .strip_prefix("/invocation/")
            .and_then(|r| r.rsplit_once('/'))
        {
            if !id.is_empty() && !id.contains('/') {
                match what {
                    "response" => return (Route::Response, Some(id.to_string())),
                    "error" => return (Route::Error, Some(id.to_string())),
                    _ => {}
                }
            }
        }
    }
    (Route::Other, None)
}

/// One scripted invocation: the headers and body `/next` answers with.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub id: String,
    /// Header (name, value) pairs, in the order they are sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Invocation {
    /// An invocation as Lambda sends it: `Content-Type: application/json`, the request id, a
    /// deadline 10 s from now, the function ARN and a trace id.
    pub fn new(id: &str, body: impl Into<Vec<u8>>) -> Invocation {
        Invocation::with_deadline(id, body, deadline_in(10_000))
    }

    pub fn with_deadline(id: &str, body: impl Into<Vec<u8>>, deadline_ms: u64) -> Invocation {
        let headers = [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", id),
            ("Lambda-Runtime-Deadline-Ms", &deadline_ms.to_string()),
            ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN),
            ("Lambda-Runtime-Trace-Id", TRACE),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Invocation {
            id: id.to_string(),
            headers,
            body: body.into(),
        }
    }

    /// Set a header (replacing one of the same name, else added at the end).
    pub fn header(mut self, name: &str, value: &str) -> Invocation {
        match self
            .headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(h) => h.1 = value.to_string(),
            None => self.headers.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// Add a header even if one of that name is there (a repeated header).
    pub fn add_header(mut self, name: &str, value: &str) -> Invocation {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Remove a header.
    pub fn without(mut self, name: &str) -> Invocation {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn deadline_ms(&self) -> u64 {
        self.get("Lambda-Runtime-Deadline-Ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A status, headers and body (Content-Type: application/json).
pub fn json_reply(status: u16, body: &str) -> Routed {
    Routed::Respond {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// A head promising 1000 bytes of body, 10 of them, then the connection closes.
pub fn broken_reply() -> Routed {
    Routed::Raw(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial\""
            .to_vec(),
    )
}

struct Rule {
    reply: Routed,
    remaining: Option<usize>,
}

#[derive(Default)]
struct RtState {
    /// Every Runtime API request, in arrival order.
    requests: Vec<(Route, Request)>,
    queue: VecDeque<Invocation>,
    /// Ids of the invocations `/next` handed out, in order.
    served: Vec<String>,
    rules: HashMap<Route, VecDeque<Rule>>,
    /// `/next` requests waiting for an invocation right now.
    waiting: usize,
}

struct RtShared {
    state: Mutex<RtState>,
    cond: Condvar,
    stopped: AtomicBool,
}

impl RtShared {
    fn lock(&self) -> MutexGuard<'_, RtState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stand-in Runtime API, on the port of the `FakeApi` it derefs to.
pub struct RuntimeApi {
    api: FakeApi,
    shared: Arc<RtShared>,
}

impl Deref for RuntimeApi {
    type Target = FakeApi;
    fn deref(&self) -> &FakeApi {
        &self.api
    }
}

impl Default for RuntimeApi {
    fn default() -> Self {
        Self::start()
    }
}

impl RuntimeApi {
    pub fn start() -> RuntimeApi {
        let api = FakeApi::start();
        let shared = Arc::new(RtShared {
            state: Mutex::new(RtState::default()),
            cond: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let hook_shared = shared.clone();
        api.route(move |req| serve(&hook_shared, req));
        RuntimeApi { api, shared }
    }

    /// Queue an invocation for the next `/next`.
    pub fn push(&self, invocation: Invocation) {
        self.shared.lock().queue.push_back(invocation);
        self.shared.cond.notify_all();
    }

    /// Answer every request to `route` with `reply` from now on (scripted answers are used in
    /// the order they were given; a `/next` answered so takes nothing from the queue).
    pub fn answer(&self, route: Route, reply: Routed) {
        self.rule(route, reply, None)
    }

    /// Answer the next `n` requests to `route` with `reply`.
    pub fn answer_times(&self, route: Route, reply: Routed, n: usize) {
        self.rule(route, reply, Some(n))
    }

    fn rule(&self, route: Route, reply: Routed, remaining: Option<usize>) {
        self.shared
            .lock()
            .rules
            .entry(route)
            .or_default()
            .push_back(Rule { reply, remaining });
    }

    /// Every Runtime API request so far, with its route.
    pub fn all(&self) -> Vec<(Route, Request)> {
        self.shared.lock().requests.clone()
    }

    /// The requests to `route` so far.
    pub fn requests(&self, route: Route) -> Vec<Request> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|(r, _)| *r == route)
            .map(|(_, req)| req.clone())
            .collect()
    }

    /// The routes of every request so far, in order.
    pub fn routes(&self) -> Vec<Route> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(|(r, _)| *r)
            .collect()
    }

    /// Ids of the invocations handed out by `/next`, in order.
    pub fn served(&self) -> Vec<String> {
        self.shared.lock().served.clone()
    }

    /// How many `/next` are waiting for an invocation now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }

    /// Wait until `pred` holds for the state; false on timeout.
    fn wait(&self, timeout: Duration, pred: impl Fn(&RtState) -> bool) -> bool {
        let end = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait for at least `n` requests to `route`; panics with the request log if fewer came.
    pub fn expect(&self, route: Route, n: usize, timeout: Duration) -> Vec<Request> {
        let ok = self.wait(timeout, |st| {
            st.requests.iter().filter(|(r, _)| *r == route).count() >= n
        });
        assert!(
            ok,
            "expected {n} {route:?} request(s) within {timeout:?}; Runtime API log:\n{}",
            self.describe_runtime()
        );
        self.requests(route)
    }

    /// Wait until `n` `/next` requests are waiting for an invocation.
    pub fn expect_waiting(&self, n: usize, timeout: Duration) {
        let ok = self.wait(timeout, |st| st.waiting >= n);
        assert!(
            ok,
            "expected {n} /next waiting within {timeout:?}, {} are; log:\n{}",
            self.waiting(),
            self.describe_runtime()
        );
    }

    /// Wait until the queue is empty.
    pub fn expect_consumed(&self, timeout: Duration) {
        let ok = self.wait(timeout, |st| st.queue.is_empty());
        assert!(
            ok,
            "queued invocations not taken within {timeout:?}; log:\n{}",
            self.describe_runtime()
        );
    }

    /// One line per Runtime API request, for failure messages.
    pub fn describe_runtime(&self) -> String {
        let st = self.shared.lock();
        let t0 = st.requests.first().map(|(_, r)| r.at);
        st.requests
            .iter()
            .map(|(route, r)| {
                let body = String::from_utf8_lossy(&r.body);
                let body: String = body.chars().take(200).collect();
                format!(
                    "  +{:>5}ms {route:?} {} {} {:?} body({} B)={body:?}",
                    t0.map(|t| r.at.duration_since(t).as_millis()).unwrap_or(0),
                    r.method,
                    r.path,
                    r.headers,
                    r.body.len()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.cond.notify_all();
    }
}

fn take_rule(st: &mut RtState, route: Route) -> Option<Routed> {
    let rules = st.rules.get_mut(&route)?;
    let rule = rules.front_mut()?;
    let reply = rule.reply.clone();
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
        if *n == 0 {
            rules.pop_front();
        }
    }
    Some(reply)
}

/// The route hook: claims every request that is not the Extensions API's.
fn serve(shared: &RtShared, req: &Request) -> Option<Routed> {
    if req.endpoint != super::server::Endpoint::Unknown {
        return None;
    }
    let (route, _) = route_of(&req.method, &req.path);
    let mut st = shared.lock();
    st.requests.push((route, req.clone()));
    shared.cond.notify_all();
    if let Some(reply) = take_rule(&mut st, route) {
        return Some(reply);
    }
    let ok = || json_reply(202, r#"{"status":"OK"}"#);
    Some(match route {
        Route::Next => {
            st.waiting += 1;
            shared.cond.notify_all();
            loop {
                if shared.stopped.load(Ordering::SeqCst) {
                    st.waiting -= 1;
                    return Some(Routed::Drop);
                }
                if let Some(inv) = st.queue.pop_front() {
                    st.waiting -= 1;
                    st.served.push(inv.id.clone());
                    shared.cond.notify_all();
                    return Some(Routed::Respond {
                        status: 200,
                        headers: inv.headers,
                        body: inv.body,
                    });
                }
                st = shared
                    .cond
                    .wait_timeout(st, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        Route::Response | Route::Error | Route::InitError | Route::RestoreError => ok(),
        Route::RestoreNext => Routed::Respond {
            status: 200,
            headers: vec![],
            body: vec![],
        },
        Route::Other => json_reply(
            404,
            r#"{"errorMessage":"Unknown route","errorType":"InvalidRequest"}"#,
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// The runtime's side

/// A port nobody listens on right now: bound to port 0, read, released. (The kernel hands out
/// ephemeral ports in turn, so parallel tests do not get the same one.)
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().unwrap().port()
}

/// Whether something accepts connections on `127.0.0.1:port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// An HTTP answer as the runtime read it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// Header (name, value) pairs in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request body.
pub enum Body<'a> {
    None,
    /// Sent with `Content-Length`.
    Bytes(&'a [u8]),
    /// Sent with `Transfer-Encoding: chunked`, one chunk per slice (empty slices skipped),
    /// then these trailers after the last chunk.
    Chunked {
        chunks: Vec<&'a [u8]>,
        trailers: Vec<(&'a str, &'a str)>,
    },
}

/// A function runtime's connection to the proxy: one kept-alive HTTP/1.1 connection.
pub struct RuntimeClient {
    port: u16,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RuntimeClient {
    /// Connect to `127.0.0.1:port`, retrying for up to 5 s (the proxy may still be starting).
    pub fn connect(port: u16) -> RuntimeClient {
        let end = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot connect to the proxy on 127.0.0.1:{port}: {e}"),
            }
        };
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        RuntimeClient {
            port,
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Send one request (with `Host`, then `headers` as given) and read the answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> io::Result<Answer> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
            self.port
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let mut out = Vec::new();
        match &body {
            Body::None => {}
            Body::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            Body::Chunked { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        match body {
            Body::None => {}
            Body::Bytes(b) => out.extend_from_slice(b),
            Body::Chunked { chunks, trailers } => {
                for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (k, v) in trailers {
                    out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        self.writer.write_all(&out)?;
        self.writer.flush()?;
        read_answer(&mut self.reader, method == "HEAD")
    }

    /// `GET /runtime/invocation/next`.
    pub fn next(&mut self) -> Answer {
        self.send(
            "GET",
            &format!("{RUNTIME}/invocation/next"),
            &[("User-Agent", "test-runtime/1.0")],
            Body::None,
        )
        .expect("GET /next through the proxy")
    }

    /// `POST /runtime/invocation/{id}/response` with `body` (Content-Length).
    pub fn respond(&mut self, id: &str, body: &[u8]) -> Answer {
        self.send(
            "POST",
            &format!("{RUNTIME}/invocation/{id}/response"),
            &[("Content-Type", "application/json")],
            Body::Bytes(body),
        )
        .expect("POST /response through the proxy")
    }

    /// `POST /runtime/invocation/{id}/error` with the error type header and `body`.
    pub fn fail(&mut self, id: &str, error_type: &str, body: &[u8]) -> Answer {
        self.send(
            "POST",
            &format!("{RUNTIME}/invocation/{id}/error"),
            &[
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Function-Error-Type", error_type),
            ],
            Body::Bytes(body),
        )
        .expect("POST /error through the proxy")
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_answer(r: &mut BufReader<TcpStream>, head_only: bool) -> io::Result<Answer> {
    loop {
        let line = read_line(r)?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("bad status line {line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let l = read_line(r)?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {l:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if head_only || status == 204 || status == 304 {
        } else if get("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let size_line = read_line(r)?;
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    while !read_line(r)?.is_empty() {}
                    break;
                }
                let mut chunk = vec![0; size];
                r.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                read_line(r)?;
            }
        } else if let Some(len) = get("Content-Length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad length {len:?}")))?;
            body = vec![0; len];
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
        }
        return Ok(Answer {
            status,
            headers,
            body,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers that record what they saw

/// A handler script (`<sandbox>/<name>`) that, per call, saves its stdin to
/// `seen/<LAMBDA_EVENT_TYPE>.<LAMBDA_REQUEST_ID>.in` and its environment to `….env`, appends
/// `<LAMBDA_EVENT_TYPE> <LAMBDA_REQUEST_ID>` to `seen/calls`, then runs `then` (sh).
pub fn recorder(sb: &Sandbox, name: &str, then: &str) -> String {
    let dir = sb.p("seen");
    fs::create_dir_all(&dir).unwrap();
    sb.script(
        name,
        &format!(
            "#!/bin/sh\n\
             f=\"{dir}/$LAMBDA_EVENT_TYPE.$LAMBDA_REQUEST_ID\"\n\
             cat > \"$f.in\"\n\
             env > \"$f.env\"\n\
             echo \"$LAMBDA_EVENT_TYPE $LAMBDA_REQUEST_ID\" >> {dir}/calls\n\
             {then}\n"
        ),
    )
}

/// The calls a recorder saw so far (`REQUEST id`, `RESPONSE id`), in order.
pub fn calls(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.path("seen/calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait until the recorder logged `call` (e.g. `RESPONSE r-1`); panics after `timeout`.
pub fn expect_call(sb: &Sandbox, call: &str, timeout: Duration) {
    let ok = super::process::wait_for(timeout, || calls(sb).iter().any(|c| c == call));
    assert!(
        ok,
        "no handler call {call:?} within {timeout:?}: {:?}",
        calls(sb)
    );
}

/// The stdin a recorder got for `kind` (`REQUEST` or `RESPONSE`) and request `id`.
pub fn seen_stdin(sb: &Sandbox, kind: &str, id: &str) -> Vec<u8> {
    let path = sb.path(&format!("seen/{kind}.{id}.in"));
    fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; calls {:?}", path.display(), calls(sb)))
}

/// The environment a recorder had for `kind` and request `id`.
pub fn seen_env(sb: &Sandbox, kind: &str, id: &str) -> Vec<(String, String)> {
    let path = sb.path(&format!("seen/{kind}.{id}.env"));
    parse_env(
        &fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; calls {:?}", path.display(), calls(sb))),
    )
}
