//! A fake AWS Lambda Extensions API (2020-01-01), faithful to what AWS's runtime interface
//! emulator (RIE) answers, written on `std::net` + threads. It also answers the subscription
//! endpoints of the Logs API (`PUT /2020-08-15/logs`) and the Telemetry API
//! (`PUT /2022-07-01/telemetry`) as Lambda does: 200 `"OK"` (it never delivers any batch).
//!
//! * HTTP/1.1 with keep-alive, `Content-Length` and chunked request bodies.
//! * Records every request (method, path, headers, body, arrival time) for assertions.
//! * Serves `event/next` as a long poll from a queue of scripted events.
//! * Fault injection per endpoint (status + body, unparsable body, dropped connection, delay).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const API_VERSION: &str = "/2020-01-01/extension";
/// Path (after the prefix) of the Logs API subscription.
pub const LOGS_PATH: &str = "/2020-08-15/logs";
/// Path (after the prefix) of the Telemetry API subscription.
pub const TELEMETRY_PATH: &str = "/2022-07-01/telemetry";
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:fn";

/// Which Extensions API call a request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Register,
    Next,
    InitError,
    ExitError,
    /// `PUT /2020-08-15/logs` (Logs API subscription).
    Logs,
    /// `PUT /2022-07-01/telemetry` (Telemetry API subscription).
    Telemetry,
    /// Anything else (wrong path, wrong prefix, wrong method): answered 404/405.
    Unknown,
}

/// One request as it crossed the wire.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as sent (e.g. `/.rt/2020-01-01/extension/register`).
    pub path: String,
    pub endpoint: Endpoint,
    /// Header (name, value) pairs in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request (head and body) had fully arrived.
    pub at: Instant,
    /// Same moment, wall clock (to compare with `deadlineMs`).
    pub wall: SystemTime,
}

impl Request {
    /// Case-insensitive header lookup (first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Body parsed as JSON; panics with the raw body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} body is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Wall-clock arrival in epoch milliseconds.
    pub fn wall_ms(&self) -> u64 {
        self.wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }
}

/// A fault to inject on an endpoint instead of (or before) the normal answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and body (Content-Type: application/json).
    Status(u16, String),
    /// Answer 200 with a body that is not valid JSON (and, for register, a valid identifier).
    Unparsable,
    /// Close the socket without writing any response.
    Drop,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer normally, but only the head and half of the body, then close the connection.
    CloseMidResponse,
    /// Answer normally, one byte at a time with this pause between bytes (connection kept).
    Trickle(Duration),
}

#[derive(Debug)]
struct FaultRule {
    fault: Fault,
    /// `None` = every request from now on; `Some(n)` = the next n requests.
    remaining: Option<usize>,
}

/// An event waiting in the queue for the next `event/next` call.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub event_identifier: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExtState {
    Registered,
    Ready,
    InitErrored,
    ExitErrored,
}

struct State {
    requests: Vec<Request>,
    events: VecDeque<Scripted>,
    faults: HashMap<Endpoint, VecDeque<FaultRule>>,
    ext_id: Option<String>,
    ext_name: Option<String>,
    ext_state: Option<ExtState>,
    /// Bodies of events actually served, in order.
    served: Vec<Vec<u8>>,
    /// Whether the extension registered for INVOKE: as on Lambda, one registered only for
    /// SHUTDOWN is never sent an INVOKE (queued INVOKEs are skipped for it).
    wants_invoke: bool,
}

type Hook = Arc<dyn Fn(&Request) + Send + Sync>;

/// What a route hook (`FakeApi::route`) answers instead of the fake Extensions API.
#[derive(Clone, Debug)]
pub enum Routed {
    /// This status, these headers and this body (`Date` and `Content-Length` are added).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
    /// Write these bytes as they are, then close the connection (a broken answer).
    Raw(Vec<u8>),
    /// Wait this long, then answer with the inner reply.
    Delay(Duration, Box<Routed>),
    /// The inner reply (a `Respond`), one byte at a time with this pause between bytes.
    Trickle(Duration, Box<Routed>),
}

type RouteHook = Arc<dyn Fn(&Request) -> Option<Routed> + Send + Sync>;

struct Inner {
    state: Mutex<State>,
    cond: Condvar,
    stopped: AtomicBool,
    /// Close every connection right after its response, without saying so (no `Connection:
    /// close`): the client's kept-alive connection is dead when it next uses it, as after a
    /// SnapStart restore.
    close_idle: AtomicBool,
    hook: Mutex<Option<Hook>>,
    /// Answers the requests it claims (returns `Some`) instead of the fake API.
    route: Mutex<Option<RouteHook>>,
    prefix: String,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake API server. Dropping it stops the accept loop and wakes pending long polls.
pub struct FakeApi {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl FakeApi {
    /// A server answering at `http://127.0.0.1:<port>/2020-01-01/...`.
    pub fn start() -> FakeApi {
        FakeApi::start_with_prefix("")
    }

    /// A server answering at `http://127.0.0.1:<port><prefix>/2020-01-01/...` (prefix like `/.rt`).
    pub fn start_with_prefix(prefix: &str) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                requests: Vec::new(),
                events: VecDeque::new(),
                faults: HashMap::new(),
                ext_id: None,
                ext_name: None,
                ext_state: None,
                served: Vec::new(),
                wants_invoke: false,
            }),
            cond: Condvar::new(),
            stopped: AtomicBool::new(false),
            close_idle: AtomicBool::new(false),
            hook: Mutex::new(None),
            route: Mutex::new(None),
            prefix: prefix.to_string(),
        });
        let accept_inner = inner.clone();
        thread::Builder::new()
            .name("fake-api-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_inner.stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn_inner = accept_inner.clone();
                    let _ = thread::Builder::new()
                        .name("fake-api-conn".into())
                        .spawn(move || serve_connection(conn_inner, stream));
                }
            })
            .expect("spawn accept thread");
        FakeApi { inner, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (`127.0.0.1:port` + prefix).
    pub fn runtime_api(&self) -> String {
        format!("{}{}", self.addr, self.inner.prefix)
    }

    /// Queue an INVOKE event (RIE's JSON, with tracing); returns the exact body that will be served.
    pub fn push_invoke(&self, request_id: &str, deadline_ms: u64) -> Vec<u8> {
        let body = invoke_body(
            request_id,
            deadline_ms,
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
        );
        self.push_raw(body.clone(), Some("application/json"));
        body
    }

    /// Queue an INVOKE event without a `tracing` key (as RIE sends when there is no trace id).
    pub fn push_invoke_untraced(&self, request_id: &str, deadline_ms: u64) -> Vec<u8> {
        let body = invoke_body(request_id, deadline_ms, None);
        self.push_raw(body.clone(), Some("application/json"));
        body
    }

    /// Queue a SHUTDOWN event, served with no Content-Type (as RIE does); returns the body.
    pub fn push_shutdown(&self, reason: &str, deadline_ms: u64) -> Vec<u8> {
        let body = format!(
            r#"{{"eventType":"SHUTDOWN","shutdownReason":"{reason}","deadlineMs":{deadline_ms}}}"#
        )
        .into_bytes();
        let mut st = self.inner.lock();
        st.events.push_back(Scripted {
            body: body.clone(),
            content_type: None,
            event_identifier: false,
        });
        self.inner.cond.notify_all();
        body
    }

    /// Queue arbitrary bytes as the next event. With a content type, a
    /// `Lambda-Extension-Event-Identifier` header is also sent (as for INVOKE).
    pub fn push_raw(&self, body: Vec<u8>, content_type: Option<&str>) {
        let mut st = self.inner.lock();
        st.events.push_back(Scripted {
            body,
            content_type: content_type.map(str::to_string),
            event_identifier: content_type.is_some(),
        });
        self.inner.cond.notify_all();
    }

    /// From now on, close each connection after its response without announcing it, so the
    /// extension's next request on its kept-alive connection finds it dead.
    pub fn close_idle_connections(&self) {
        self.inner.close_idle.store(true, Ordering::SeqCst);
    }

    /// Inject `fault` on every request to `ep` from now on (until `clear_faults`).
    pub fn fault(&self, ep: Endpoint, fault: Fault) {
        self.fault_rule(ep, fault, None)
    }

    /// Inject `fault` on the next `n` requests to `ep`.
    pub fn fault_times(&self, ep: Endpoint, fault: Fault, n: usize) {
        self.fault_rule(ep, fault, Some(n))
    }

    fn fault_rule(&self, ep: Endpoint, fault: Fault, remaining: Option<usize>) {
        let mut st = self.inner.lock();
        st.faults
            .entry(ep)
            .or_default()
            .push_back(FaultRule { fault, remaining });
    }

    pub fn clear_faults(&self, ep: Endpoint) {
        self.inner.lock().faults.remove(&ep);
    }

    /// Called (on the connection thread) for every request as soon as it has arrived, before
    /// it is recorded (visible to `wait_*`) and answered.
    pub fn on_request(&self, hook: impl Fn(&Request) + Send + Sync + 'static) {
        *self.inner.hook.lock().unwrap() = Some(Arc::new(hook));
    }

    /// Let `hook` answer requests instead of the fake API: it runs (on the connection thread,
    /// after the request was recorded) for every request, and answers those it returns `Some`
    /// for; it may block (a long poll). Serves another API on the same port, e.g. the Runtime
    /// API, which Lambda serves at the same `AWS_LAMBDA_RUNTIME_API` (tests/common/runtime.rs).
    pub fn route(&self, hook: impl Fn(&Request) -> Option<Routed> + Send + Sync + 'static) {
        *self.inner.route.lock().unwrap() = Some(Arc::new(hook));
    }

    /// Snapshot of every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().requests.clone()
    }

    /// Snapshot of the requests to one endpoint.
    pub fn requests_to(&self, ep: Endpoint) -> Vec<Request> {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == ep)
            .cloned()
            .collect()
    }

    pub fn count(&self, ep: Endpoint) -> usize {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == ep)
            .count()
    }

    /// Bodies of the events served so far.
    pub fn served(&self) -> Vec<Vec<u8>> {
        self.inner.lock().served.clone()
    }

    /// The identifier handed out at registration.
    pub fn extension_id(&self) -> Option<String> {
        self.inner.lock().ext_id.clone()
    }

    /// Wait until at least `n` requests to `ep` have arrived (or `timeout`); returns those
    /// requests (possibly fewer than `n`).
    pub fn wait_for_requests(&self, ep: Endpoint, n: usize, timeout: Duration) -> Vec<Request> {
        self.wait_until(timeout, |reqs| {
            reqs.iter().filter(|r| r.endpoint == ep).count() >= n
        });
        self.requests_to(ep)
    }

    /// Like `wait_for_requests` but panics (with the request log) when fewer than `n` came.
    pub fn expect_requests(&self, ep: Endpoint, n: usize, timeout: Duration) -> Vec<Request> {
        let got = self.wait_for_requests(ep, n, timeout);
        assert!(
            got.len() >= n,
            "expected {n} {ep:?} request(s) within {timeout:?}, got {}; log:\n{}",
            got.len(),
            self.describe()
        );
        got
    }

    /// Wait until `pred(requests)` holds; returns whether it did before `timeout`.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Request]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        let mut st = self.inner.lock();
        loop {
            if pred(&st.requests) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            st = self
                .inner
                .cond
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until every queued event has been taken by an `event/next` call.
    pub fn wait_events_consumed(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut st = self.inner.lock();
        loop {
            if st.events.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            st = self
                .inner
                .cond
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// One line per request, for failure messages.
    pub fn describe(&self) -> String {
        let st = self.inner.lock();
        let t0 = st.requests.first().map(|r| r.at);
        st.requests
            .iter()
            .map(|r| {
                let body = String::from_utf8_lossy(&r.body);
                let body: String = body.chars().take(300).collect();
                format!(
                    "  +{:>5}ms {} {} {:?} body={body:?}",
                    t0.map(|t| r.at.duration_since(t).as_millis()).unwrap_or(0),
                    r.method,
                    r.path,
                    r.headers
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // No request (error reports above all) ever carries a credential.
            for r in self.requests() {
                let what = format!("{} {} (headers or body)", r.method, r.path);
                let headers = format!("{:?}", r.headers);
                super::credentials::assert_no_credentials(&what, headers.as_bytes());
                super::credentials::assert_no_credentials(&what, &r.body);
            }
        }
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.cond.notify_all();
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// RIE-shaped INVOKE body.
pub fn invoke_body(request_id: &str, deadline_ms: u64, trace: Option<&str>) -> Vec<u8> {
    let tracing = match trace {
        Some(t) => format!(r#","tracing":{{"type":"X-Amzn-Trace-Id","value":"{t}"}}"#),
        None => String::new(),
    };
    format!(
        r#"{{"eventType":"INVOKE","deadlineMs":{deadline_ms},"requestId":"{request_id}","invokedFunctionArn":"{FUNCTION_ARN}"{tracing}}}"#
    )
    .into_bytes()
}

/// A random UUID-v4-shaped string.
pub fn uuid_like() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut words = [0u64; 2];
    for w in words.iter_mut() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        *w = h.finish();
    }
    let b: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    fn error(status: u16, error_type: &str, message: &str) -> Response {
        let body = serde_json::json!({"errorMessage": message, "errorType": error_type});
        Response::json(status, body.to_string())
    }
}

enum Outcome {
    Respond(Response),
    Drop,
    /// Raw bytes, then the connection is closed.
    Raw(Vec<u8>),
    /// The head and half of the body, then the connection is closed.
    Cut(Response),
    /// The whole response, one byte at a time with this pause between bytes.
    Trickle(Response, Duration),
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_request(&mut reader, &inner.prefix) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(msg) => {
                let resp = Response::error(400, "BadRequest", &msg);
                let _ = write_response(&mut writer, &resp, true);
                return;
            }
        };
        let close = req
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // The hook runs before the request becomes visible to waiters, so that a test that
        // waited for the request also sees what its hook recorded.
        let hook = inner.hook.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook(&req);
        }
        {
            let mut st = inner.lock();
            st.requests.push(req.clone());
            inner.cond.notify_all();
        }
        match handle(&inner, &req) {
            Outcome::Drop => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Outcome::Raw(bytes) => {
                let _ = writer.write_all(&bytes);
                let _ = writer.flush();
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Outcome::Cut(resp) => {
                let bytes = response_bytes(&resp, close);
                let _ = writer.write_all(&bytes[..bytes.len() - resp.body.len() / 2 - 1]);
                let _ = writer.flush();
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Outcome::Trickle(resp, gap) => {
                for byte in response_bytes(&resp, close) {
                    if writer.write_all(&[byte]).is_err() {
                        return;
                    }
                    thread::sleep(gap);
                }
                if close || inner.close_idle.load(Ordering::SeqCst) {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
            Outcome::Respond(resp) => {
                let close_idle = inner.close_idle.load(Ordering::SeqCst);
                if write_response(&mut writer, &resp, close).is_err() || close || close_idle {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

fn write_response(w: &mut TcpStream, resp: &Response, close: bool) -> std::io::Result<()> {
    w.write_all(&response_bytes(resp, close))?;
    w.flush()
}

fn response_bytes(resp: &Response, close: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n");
    head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(&resp.body);
    all
}

fn read_line(r: &mut BufReader<TcpStream>) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let n = r
        .read_until(b'\n', &mut buf)
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn read_request(r: &mut BufReader<TcpStream>, prefix: &str) -> Result<Option<Request>, String> {
    // Request line (skip stray empty lines between requests, as servers do).
    let line = loop {
        match read_line(r) {
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Ok(None) => return Ok(None),
            Err(_) => return Ok(None),
        }
    };
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or("empty request line")?.to_string();
    let path = parts.next().ok_or("no request target")?.to_string();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad request line {line:?}"));
    }
    let mut headers = Vec::new();
    loop {
        let l = read_line(r)?.ok_or("eof in headers")?;
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').ok_or(format!("bad header {l:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let size_line = read_line(r)?.ok_or("eof in chunk size")?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers until empty line.
                while let Some(l) = read_line(r)? {
                    if l.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            body.extend_from_slice(&chunk);
            read_line(r)?; // CRLF after the chunk
        }
    } else if let Some(len) = get("Content-Length") {
        let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
        body = vec![0; len];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    let endpoint = classify(&method, &path, prefix);
    Ok(Some(Request {
        method,
        path,
        endpoint,
        headers,
        body,
        at: Instant::now(),
        wall: SystemTime::now(),
    }))
}

fn classify(method: &str, path: &str, prefix: &str) -> Endpoint {
    let Some(after_prefix) = path.strip_prefix(prefix) else {
        return Endpoint::Unknown;
    };
    match (method, after_prefix) {
        ("PUT", LOGS_PATH) => return Endpoint::Logs,
        ("PUT", TELEMETRY_PATH) => return Endpoint::Telemetry,
        _ => {}
    }
    let Some(rest) = after_prefix.strip_prefix(API_VERSION) else {
        return Endpoint::Unknown;
    };
    match (method, rest) {
        ("POST", "/register") => Endpoint::Register,
        ("GET", "/event/next") => Endpoint::Next,
        ("POST", "/init/error") => Endpoint::InitError,
        ("POST", "/exit/error") => Endpoint::ExitError,
        _ => Endpoint::Unknown,
    }
}

/// Whether a fault reshapes the normal answer (taken once that answer is ready: for
/// `/event/next`, when an event is served) rather than replacing it (taken on arrival).
fn reshapes(fault: &Fault) -> bool {
    matches!(fault, Fault::CloseMidResponse | Fault::Trickle(_))
}

/// Takes (counts) the first fault rule of `ep` if it is of the kind asked for (`reshape`).
fn take_fault(inner: &Inner, ep: Endpoint, reshape: bool) -> Option<Fault> {
    let mut st = inner.lock();
    let rules = st.faults.get_mut(&ep)?;
    let rule = rules
        .front_mut()
        .filter(|rule| reshapes(&rule.fault) == reshape)?;
    let fault = rule.fault.clone();
    if let Some(n) = rule.remaining.as_mut() {
        *n -= 1;
        if *n == 0 {
            rules.pop_front();
        }
    }
    Some(fault)
}

fn handle(inner: &Inner, req: &Request) -> Outcome {
    let route = inner.route.lock().unwrap().clone();
    if let Some(routed) = route.and_then(|route| route(req)) {
        return routed_outcome(routed);
    }
    match answer(inner, req) {
        Outcome::Respond(resp) => match take_fault(inner, req.endpoint, true) {
            Some(Fault::CloseMidResponse) => Outcome::Cut(resp),
            Some(Fault::Trickle(gap)) => Outcome::Trickle(resp, gap),
            _ => Outcome::Respond(resp),
        },
        outcome => outcome,
    }
}

fn routed_outcome(routed: Routed) -> Outcome {
    match routed {
        Routed::Respond {
            status,
            headers,
            body,
        } => Outcome::Respond(Response {
            status,
            headers,
            body,
        }),
        Routed::Drop => Outcome::Drop,
        Routed::Raw(bytes) => Outcome::Raw(bytes),
        Routed::Delay(pause, reply) => {
            thread::sleep(pause);
            routed_outcome(*reply)
        }
        Routed::Trickle(gap, reply) => match routed_outcome(*reply) {
            Outcome::Respond(resp) => Outcome::Trickle(resp, gap),
            other => other,
        },
    }
}

/// The answer to `req`: a fault's, or the fake API's.
fn answer(inner: &Inner, req: &Request) -> Outcome {
    if let Some(fault) = take_fault(inner, req.endpoint, false) {
        match fault {
            Fault::Status(code, body) => return Outcome::Respond(Response::json(code, body)),
            Fault::Drop => return Outcome::Drop,
            Fault::Unparsable => {
                let mut resp = Response::json(200, "{\"eventType\": \"INVOKE\", <<not json");
                if req.endpoint == Endpoint::Register {
                    resp.headers
                        .push(("Lambda-Extension-Identifier".into(), uuid_like()));
                }
                return Outcome::Respond(resp);
            }
            Fault::Delay(d) => thread::sleep(d),
            Fault::CloseMidResponse | Fault::Trickle(_) => {}
        }
    }
    Outcome::Respond(match req.endpoint {
        Endpoint::Register => register(inner, req),
        Endpoint::Next => return next(inner, req),
        Endpoint::InitError => report_error(inner, req, true),
        Endpoint::ExitError => report_error(inner, req, false),
        Endpoint::Logs => subscribe(inner, req, false),
        Endpoint::Telemetry => subscribe(inner, req, true),
        Endpoint::Unknown => {
            let known = ["POST", "GET", "PUT"]
                .iter()
                .any(|m| classify(m, &req.path, &inner.prefix) != Endpoint::Unknown);
            if known {
                Response {
                    status: 405,
                    headers: vec![],
                    body: vec![],
                }
            } else {
                Response {
                    status: 404,
                    headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
                    body: b"404 page not found\n".to_vec(),
                }
            }
        }
    })
}

fn register(inner: &Inner, req: &Request) -> Response {
    let name = req.header("Lambda-Extension-Name").unwrap_or("").trim();
    if name.is_empty() {
        return Response::error(
            403,
            "Extension.InvalidExtensionName",
            "Empty extension name",
        );
    }
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return Response::error(403, "InvalidRequestFormat", &e.to_string()),
    };
    if body.get("configurationKeys").is_some() {
        return Response::error(
            403,
            "InvalidRequestFormat",
            "configurationKeys are deprecated; use environment variables instead",
        );
    }
    if let Some(events) = body.get("events") {
        let Some(events) = events.as_array() else {
            return Response::error(403, "InvalidRequestFormat", "events must be an array");
        };
        for e in events {
            match e.as_str() {
                Some("INVOKE") | Some("SHUTDOWN") => {}
                other => {
                    return Response::error(
                        403,
                        "Extension.InvalidEventType",
                        &format!("{}: ErrorInvalidEventType", other.unwrap_or("?")),
                    )
                }
            }
        }
    }
    let mut st = inner.lock();
    if let Some(state) = st.ext_state {
        return Response::error(
            403,
            "Extension.InvalidExtensionState",
            &format!(
                "State transition from {state:?} to Registered failed for extension {name}. Error: State transition is not allowed"
            ),
        );
    }
    let id = uuid_like();
    st.ext_id = Some(id.clone());
    st.ext_name = Some(name.to_string());
    st.ext_state = Some(ExtState::Registered);
    st.wants_invoke = body
        .get("events")
        .and_then(|events| events.as_array())
        .is_some_and(|events| events.iter().any(|e| e.as_str() == Some("INVOKE")));
    drop(st);
    let wants_account = req
        .header_all("Lambda-Extension-Accept-Feature")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "accountId");
    let mut body = serde_json::json!({
        "functionName": "fn",
        "functionVersion": "$LATEST",
        "handler": "index.handler",
    });
    if wants_account {
        body["accountId"] = serde_json::json!("123456789012");
    }
    let mut resp = Response::json(200, body.to_string());
    resp.headers
        .push(("Lambda-Extension-Identifier".into(), id));
    resp
}

/// Validates `Lambda-Extension-Identifier` as RIE's middleware does.
fn check_identifier(inner: &Inner, req: &Request) -> Result<(), Response> {
    let Some(id) = req.header("Lambda-Extension-Identifier") else {
        return Err(Response::error(
            403,
            "Extension.MissingExtensionIdentifier",
            "Missing Lambda-Extension-Identifier header",
        ));
    };
    let looks_like_uuid = id.len() == 36
        && id.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        });
    if !looks_like_uuid {
        return Err(Response::error(
            403,
            "Extension.InvalidExtensionIdentifier",
            "Invalid Lambda-Extension-Identifier",
        ));
    }
    if inner.lock().ext_id.as_deref() != Some(id) {
        return Err(Response::error(
            403,
            "Extension.UnknownExtensionIdentifier",
            &format!("Unknown extension {id}"),
        ));
    }
    Ok(())
}

fn next(inner: &Inner, req: &Request) -> Outcome {
    if let Err(resp) = check_identifier(inner, req) {
        return Outcome::Respond(resp);
    }
    let mut st = inner.lock();
    match st.ext_state {
        Some(ExtState::Registered) | Some(ExtState::Ready) => {}
        other => {
            return Outcome::Respond(Response::error(
                403,
                "Extension.InvalidExtensionState",
                &format!("State transition from {other:?} to Ready failed"),
            ))
        }
    }
    st.ext_state = Some(ExtState::Ready);
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return Outcome::Drop;
        }
        if !st.wants_invoke {
            st.events.retain(|ev| !is_invoke(&ev.body));
        }
        if let Some(ev) = st.events.pop_front() {
            st.served.push(ev.body.clone());
            inner.cond.notify_all();
            let mut headers = Vec::new();
            if let Some(ct) = ev.content_type {
                headers.push(("Content-Type".to_string(), ct));
            }
            if ev.event_identifier {
                headers.push(("Lambda-Extension-Event-Identifier".to_string(), uuid_like()));
            }
            return Outcome::Respond(Response {
                status: 200,
                headers,
                body: ev.body,
            });
        }
        st = inner
            .cond
            .wait_timeout(st, Duration::from_millis(200))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn is_invoke(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|event| event["eventType"] == "INVOKE")
}

fn report_error(inner: &Inner, req: &Request, init: bool) -> Response {
    if let Err(resp) = check_identifier(inner, req) {
        return resp;
    }
    if req.header("Lambda-Extension-Function-Error-Type").is_none() {
        return Response::error(
            403,
            "Extension.MissingHeader",
            "Lambda-Extension-Function-Error-Type not found",
        );
    }
    let mut st = inner.lock();
    let state = st.ext_state;
    let allowed = if init {
        matches!(
            state,
            Some(ExtState::Registered) | Some(ExtState::InitErrored)
        )
    } else {
        matches!(
            state,
            Some(ExtState::Registered) | Some(ExtState::Ready) | Some(ExtState::ExitErrored)
        )
    };
    if !allowed {
        return Response::error(
            403,
            "Extension.InvalidExtensionState",
            &format!(
                "State transition from {state:?} to {} failed",
                if init { "InitError" } else { "ExitError" }
            ),
        );
    }
    st.ext_state = Some(if init {
        ExtState::InitErrored
    } else {
        ExtState::ExitErrored
    });
    Response::json(202, r#"{"status":"OK"}"#)
}

/// `PUT /2020-08-15/logs` and `PUT /2022-07-01/telemetry`: the identifier is validated by the
/// same middleware as the Extensions API (403), then the body as Lambda documents it (400
/// `Logs.ValidationError` / `ValidationError`: JSON object with `destination` and a non-empty
/// `types`, plus `schemaVersion` for Telemetry); success is 200 with the JSON string `"OK"`.
fn subscribe(inner: &Inner, req: &Request, telemetry: bool) -> Response {
    if let Err(resp) = check_identifier(inner, req) {
        return resp;
    }
    let error_type = if telemetry {
        "ValidationError"
    } else {
        "Logs.ValidationError"
    };
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, error_type, &e.to_string()),
    };
    if !body.get("destination").is_some_and(|d| d.is_object()) {
        return Response::error(400, error_type, "destination is required");
    }
    let types = body.get("types").and_then(|t| t.as_array());
    if types.is_none_or(|t| t.is_empty()) {
        return Response::error(400, error_type, "types should not be empty");
    }
    if telemetry && !body.get("schemaVersion").is_some_and(|v| v.is_string()) {
        return Response::error(400, error_type, "schemaVersion is required");
    }
    Response::json(200, r#""OK""#)
}

/// Epoch milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Epoch milliseconds `ms` from now.
pub fn deadline_in(ms: u64) -> u64 {
    now_ms() + ms
}
