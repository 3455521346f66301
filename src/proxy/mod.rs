//! The Runtime API proxy: the function's runtime talks to it instead of the Runtime API (the
//! layer's exec wrapper points `AWS_LAMBDA_RUNTIME_API` at it), and it forwards every call
//! upstream, running the request handler on each invocation's payload before the runtime gets
//! it and the response handler on each response after upstream has it. See `docs/proxy.md`.
//!
//! Worker threads take requests from tiny_http, more starting as needed (several `/next` may
//! wait at once); the handlers run one at a time, in the proxy's process-group slot.

mod forward;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use tiny_http::{Request, Server};

use crate::client::lambda_agent;
use crate::command::{
    CommandFailure, CommandLine, Executor, Input, Leftovers, Margin, Slot, MANAGED_ENV,
};
use crate::config::{OnRequestFailure, ProxyConfig, PROXY_PORT_ENV};
use crate::logging::one_line;
use forward::{answer, bad_gateway, refuse, send, ErrorBody, Incoming, Tee};

const RUNTIME: &str = "/2018-06-01/runtime";
/// How much of a response the response handler gets on stdin.
pub const RESPONSE_BYTES_KEPT: usize = 6 * 1024 * 1024;
/// The error type the caller of a rejected invocation gets.
pub const REJECTED: &str = "Extension.RequestRejected";
const REQUEST_HINT: &str = "the request handler runs inside the invocation's time: make it \
     faster, or raise the function timeout";
const RESPONSE_HINT: &str = "the response handler runs inside the invocation's time: make it \
     faster, or raise the function timeout";

/// The runtime's headers an invocation's request handler gets as variables.
const INVOCATION_HEADERS: [(&str, &str); 7] = [
    ("Lambda-Runtime-Aws-Request-Id", "LAMBDA_REQUEST_ID"),
    ("Lambda-Runtime-Deadline-Ms", "LAMBDA_DEADLINE_MS"),
    (
        "Lambda-Runtime-Invoked-Function-Arn",
        "LAMBDA_INVOKED_FUNCTION_ARN",
    ),
    ("Lambda-Runtime-Trace-Id", "_X_AMZN_TRACE_ID"),
    ("Lambda-Runtime-Client-Context", "LAMBDA_CLIENT_CONTEXT"),
    ("Lambda-Runtime-Cognito-Identity", "LAMBDA_COGNITO_IDENTITY"),
    ("Lambda-Runtime-Aws-Tenant-Id", "LAMBDA_TENANT_ID"),
];

/// The proxy's port, bound before the extension registers.
pub struct Bound {
    socket: TcpListener,
}

/// Binds `127.0.0.1:port`; the message names the port and the variable when it cannot.
pub fn bind(port: u16) -> Result<Bound, String> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .map(|socket| Bound { socket })
        .map_err(|error| {
            format!(
                "{PROXY_PORT_ENV}: cannot listen on 127.0.0.1:{port} for the Runtime API proxy \
                 ({error}); choose a free port with {PROXY_PORT_ENV} (and the same value reaches \
                 the wrapper, which reads it too)"
            )
        })
}

/// `TCP_NODELAY` on the listening socket, which Linux copies to every accepted one: tiny_http
/// writes an answer's head and body in two writes, and without it the body waits for the
/// runtime's delayed ACK (40 ms per invocation in `make bench`).
fn set_nodelay(socket: &TcpListener) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer, for a socket we own.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        warn!(
            "proxy: cannot set TCP_NODELAY ({}): answers may be delayed",
            io::Error::last_os_error()
        );
    }
}

/// The running proxy, as the event loop sees it.
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    /// `http://host:port` of the real Runtime API.
    upstream: String,
    agent: ureq::Agent,
    request_handler: Option<CommandLine>,
    response_handler: Option<CommandLine>,
    on_request_failure: OnRequestFailure,
    commands: Mutex<Commands>,
    /// Request ids whose response handler has run (or that will get none).
    done: Mutex<HashSet<String>>,
    /// The deadline of each invocation in flight, by request id.
    deadlines: Mutex<HashMap<String, u64>>,
    done_changed: Condvar,
}

/// The handlers' executor and deadline rule, used by one handler at a time.
struct Commands {
    executor: Executor,
    margin: Margin,
}

impl Proxy {
    /// Starts serving on `bound`, forwarding to `upstream` (`host:port`).
    pub fn start(
        bound: Bound,
        upstream: &str,
        config: &ProxyConfig,
        extension_name: &str,
        margin: Duration,
    ) -> io::Result<Proxy> {
        let port = bound.socket.local_addr()?.port();
        set_nodelay(&bound.socket);
        let server = Server::from_listener(bound.socket, None).map_err(io::Error::other)?;
        let executor = Executor::new(&MANAGED_ENV, &[("LAMBDA_EXTENSION_NAME", extension_name)])
            .in_slot(Slot::Proxy);
        let shared = Arc::new(Shared {
            upstream: format!("http://{upstream}"),
            agent: lambda_agent(),
            request_handler: config.request_handler.clone(),
            response_handler: config.response_handler.clone(),
            on_request_failure: config.on_request_failure,
            commands: Mutex::new(Commands {
                executor,
                margin: Margin::new(margin),
            }),
            done: Mutex::new(HashSet::new()),
            deadlines: Mutex::new(HashMap::new()),
            done_changed: Condvar::new(),
        });
        let workers = Arc::new(Workers {
            server,
            idle: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        });
        for _ in 0..FIRST_WORKERS {
            start_worker(&workers, &shared)?;
        }
        info!("Runtime API proxy on 127.0.0.1:{port}, forwarding to {upstream}");
        Ok(Proxy { shared })
    }

    /// After an INVOKE: with a response handler, waits until it has run for `request_id` (or
    /// until `until`), so it runs before the environment freezes.
    pub fn after_invoke(&self, request_id: &str, until: Instant) {
        if self.shared.response_handler.is_none() {
            return;
        }
        let mut done = self.shared.lock_done();
        loop {
            if done.remove(request_id) {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    "proxy: no response for {request_id} was handled before the invoke's \
                     deadline (the function did not answer through the proxy?); going on"
                );
                return;
            }
            done = match self.shared.done_changed.wait_timeout(done, left) {
                Ok((done, _)) => done,
                Err(poison) => poison.into_inner().0,
            };
        }
    }
}

impl Shared {
    fn lock_done(&self) -> MutexGuard<'_, HashSet<String>> {
        self.done
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock_commands(&self) -> MutexGuard<'_, Commands> {
        self.commands
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// `request_id` will get no (more) response handling: the event loop may go on.
    fn mark_done(&self, request_id: &str) {
        if self.response_handler.is_none() {
            return;
        }
        let mut done = self.lock_done();
        // Ids nobody waits for (an invoke the extension never saw) must not pile up.
        if done.len() > 1000 {
            done.clear();
        }
        done.insert(request_id.to_string());
        self.done_changed.notify_all();
    }

    /// Runs `command` with `stdin`, `env` and the deadline `deadline_ms`; logs one line.
    fn run(
        &self,
        what: &str,
        command: &CommandLine,
        stdin: &[u8],
        env: &[(&str, &str)],
        deadline_ms: u64,
        hint: &'static str,
    ) -> Result<(), CommandFailure> {
        let mut commands = self.lock_commands();
        let deadline = commands.margin.before(deadline_ms, what, hint);
        let started = Instant::now();
        let outcome =
            commands
                .executor
                .run(command, Input::Bytes(stdin), env, deadline, Leftovers::Kill);
        let id = env
            .iter()
            .find(|(name, _)| *name == "LAMBDA_REQUEST_ID")
            .map_or("-", |(_, value)| *value);
        let verdict = match &outcome {
            Ok(()) => "ok",
            Err(CommandFailure::TimedOut { .. }) => "timed out",
            Err(_) => "failed",
        };
        info!(
            "{what} {id} {verdict} in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        outcome
    }
}

/// Workers started with the proxy: one for the runtime's `/next`, one for its response.
const FIRST_WORKERS: usize = 2;
/// At most this many requests are served at once (Managed Instances run the runtime
/// concurrently, each worker holding a `/next` while it waits).
const MAX_WORKERS: usize = 256;

/// The workers serving requests: each takes the next request from tiny_http and serves it. A
/// worker that takes the last idle slot starts one more first, so a long-polled `/next` never
/// keeps another request waiting, and no thread is started per request.
struct Workers {
    server: Server,
    idle: AtomicUsize,
    started: AtomicUsize,
}

fn start_worker(workers: &Arc<Workers>, shared: &Arc<Shared>) -> io::Result<()> {
    workers.started.fetch_add(1, Ordering::SeqCst);
    let (moved, shared) = (workers.clone(), shared.clone());
    let spawned = thread::Builder::new()
        .name("proxy".into())
        .spawn(move || work(&moved, &shared));
    if let Err(error) = &spawned {
        // Not started: not counted, so a later request can try again.
        workers.started.fetch_sub(1, Ordering::SeqCst);
        warn!("proxy: cannot start a worker thread: {error}");
    }
    spawned.map(|_| ())
}

fn work(workers: &Arc<Workers>, shared: &Arc<Shared>) {
    loop {
        workers.idle.fetch_add(1, Ordering::SeqCst);
        let request = workers.server.recv();
        let idle = workers.idle.fetch_sub(1, Ordering::SeqCst) - 1;
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                warn!("proxy: stopped accepting connections: {error}");
                return;
            }
        };
        if idle == 0 && workers.started.load(Ordering::SeqCst) < MAX_WORKERS {
            let _ = start_worker(workers, shared);
        }
        serve(request, shared);
    }
}

/// Which Runtime API call a request is.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Next,
    Response(&'a str),
    Error(&'a str),
    Other,
}

fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    let Some(rest) = path.strip_prefix(RUNTIME) else {
        return Route::Other;
    };
    match (method, rest) {
        ("GET", "/invocation/next") => Route::Next,
        ("POST", rest) => match rest.strip_prefix("/invocation/") {
            Some(rest) => match rest.rsplit_once('/') {
                Some((id, "response")) if !id.is_empty() && !id.contains('/') => {
                    Route::Response(id)
                }
                Some((id, "error")) if !id.is_empty() && !id.contains('/') => Route::Error(id),
                _ => Route::Other,
            },
            None => Route::Other,
        },
        _ => Route::Other,
    }
}

fn serve(mut request: Request, shared: &Shared) {
    let incoming = Incoming::of(&request);
    // Appended to upstream's address, `@host/x` or `http://host/x` would lead elsewhere.
    if !incoming.path.starts_with('/') {
        warn!(
            "proxy: {} {:?} refused: the request target is not a path",
            incoming.method, incoming.path
        );
        let problem = "the request target is not a path (it must start with /)";
        return refuse(request, 400, "Extension.ProxyBadRequest", problem);
    }
    match route(&incoming.method, &incoming.path) {
        Route::Next => next(request, &incoming, shared),
        Route::Response(id) => {
            let id = id.to_string();
            respond(request, &incoming, shared, &id, Outcome::Success)
        }
        Route::Error(id) => {
            let id = id.to_string();
            respond(request, &incoming, shared, &id, Outcome::Error)
        }
        Route::Other => {
            let mut body = Tee {
                left: request.body_length(),
                inner: request.as_reader(),
                kept: Vec::new(),
                limit: 0,
                truncated: false,
                failed: None,
            };
            let sent = send(&shared.agent, &shared.upstream, &incoming, Some(&mut body));
            match sent {
                Ok(upstream) => answer(request, upstream),
                Err(failure) => {
                    warn!(
                        "proxy: {} {}: upstream {}",
                        incoming.method, incoming.path, failure.0
                    );
                    bad_gateway(request, &format!("upstream {}", failure.0))
                }
            }
        }
    }
}

/// `GET /invocation/next`: upstream's next invocation, through the request handler.
fn next(request: Request, incoming: &Incoming, shared: &Shared) {
    loop {
        let invocation = match send(&shared.agent, &shared.upstream, incoming, None) {
            Ok(invocation) => invocation,
            Err(failure) => {
                warn!("proxy: /invocation/next: upstream {}", failure.0);
                return bad_gateway(request, &format!("upstream {}", failure.0));
            }
        };
        let id = invocation
            .header("Lambda-Runtime-Aws-Request-Id")
            .unwrap_or_default()
            .to_string();
        let deadline_ms = invocation
            .header("Lambda-Runtime-Deadline-Ms")
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        shared.note_deadline(&id, deadline_ms);
        let Some(handler) = shared
            .request_handler
            .as_ref()
            .filter(|_| invocation.status == 200)
        else {
            return answer(request, invocation);
        };
        let mut env = vec![("LAMBDA_EVENT_TYPE", "REQUEST")];
        for (header, variable) in INVOCATION_HEADERS {
            if let Some(value) = invocation.header(header).filter(|value| !value.is_empty()) {
                env.push((variable, value));
            }
        }
        let outcome = shared.run(
            "REQUEST",
            handler,
            &invocation.body,
            &env,
            deadline_ms,
            REQUEST_HINT,
        );
        let failure = match outcome {
            Ok(()) => return answer(request, invocation),
            Err(CommandFailure::Stopped { .. }) => return,
            Err(failure) => failure,
        };
        match shared.on_request_failure {
            OnRequestFailure::Log => {
                warn!(
                    "Extension.RequestHandlerFailed: {} (the invocation goes on: \
                     SHELL_EXT_ON_REQUEST_FAILURE=log)",
                    one_line(&format!("request handler {failure}"))
                );
                return answer(request, invocation);
            }
            OnRequestFailure::Reject => {
                reject(shared, &id, &failure);
                // The runtime is still waiting: the next invocation is fetched on its behalf.
            }
        }
    }
}

/// Fails invocation `id` upstream as `Extension.RequestRejected`: the caller gets the error,
/// the runtime never sees the invocation.
fn reject(shared: &Shared, id: &str, failure: &CommandFailure) {
    let message = match failure.stderr_tail() {
        Some(tail) => tail.to_string(),
        None => format!("request handler {failure}"),
    };
    let body = ErrorBody {
        message: &message,
        error_type: REJECTED,
    }
    .to_json();
    warn!(
        "{REJECTED}: invocation {id} rejected: {}",
        one_line(&message)
    );
    let headers = [
        ("Content-Type", "application/json"),
        ("Lambda-Runtime-Function-Error-Type", REJECTED),
    ];
    let incoming = Incoming {
        method: "POST".into(),
        path: format!("{RUNTIME}/invocation/{id}/error"),
        headers: headers
            .iter()
            .filter_map(|(name, value)| {
                tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
            })
            .chain(tiny_http::Header::from_bytes(
                &b"Content-Length"[..],
                body.len().to_string().as_bytes(),
            ))
            .collect(),
        has_body: true,
    };
    match send(
        &shared.agent,
        &shared.upstream,
        &incoming,
        Some(&mut &body[..]),
    ) {
        Ok(answer) if answer.status < 300 => {}
        Ok(answer) => warn!(
            "proxy: upstream answered {} to the rejection of {id}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ),
        Err(failure) => warn!("proxy: cannot reject {id} upstream: {}", failure.0),
    }
    shared.mark_done(id);
}

/// How the function ended an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Error,
}

/// `POST /invocation/{id}/response` or `/error`: upstream first (streamed), then the response
/// handler with what went through.
fn respond(mut request: Request, incoming: &Incoming, shared: &Shared, id: &str, outcome: Outcome) {
    let limit = match shared.response_handler {
        Some(_) => RESPONSE_BYTES_KEPT,
        None => 0,
    };
    let mut tee = Tee {
        left: request.body_length(),
        inner: request.as_reader(),
        kept: Vec::new(),
        limit,
        truncated: false,
        failed: None,
    };
    let sent = send(&shared.agent, &shared.upstream, incoming, Some(&mut tee));
    let (kept, truncated) = (tee.kept, tee.truncated);
    match (sent, tee.failed) {
        (Ok(upstream), _) => answer(request, upstream),
        // The runtime's side broke (tiny_http's chunked decoder refuses trailers, for one).
        (Err(_), Some(problem)) => {
            let problem = format!(
                "the runtime's body could not be read ({problem}), so its upload to Lambda \
                 was cut off; a streamed response with HTTP trailers is not supported"
            );
            warn!("proxy: {}: {problem}", incoming.path);
            bad_gateway(request, &problem);
        }
        (Err(failure), None) => {
            warn!("proxy: {}: upstream {}", incoming.path, failure.0);
            bad_gateway(request, &format!("upstream {}", failure.0));
        }
    }
    if let Some(handler) = &shared.response_handler {
        let mut env = vec![
            ("LAMBDA_EVENT_TYPE", "RESPONSE"),
            ("LAMBDA_REQUEST_ID", id),
            (
                "LAMBDA_RESPONSE_STATUS",
                match outcome {
                    Outcome::Success => "success",
                    Outcome::Error => "error",
                },
            ),
        ];
        if let Some(error_type) = incoming.header("Lambda-Runtime-Function-Error-Type") {
            env.push(("LAMBDA_ERROR_TYPE", error_type));
        }
        if truncated {
            env.push(("LAMBDA_RESPONSE_TRUNCATED", "1"));
        }
        let deadline_ms = shared.deadline_of(id);
        match shared.run("RESPONSE", handler, &kept, &env, deadline_ms, RESPONSE_HINT) {
            Ok(()) | Err(CommandFailure::Stopped { .. }) => {}
            Err(failure) => warn!(
                "Extension.ResponseHandlerFailed: {}",
                one_line(&format!("response handler {failure}"))
            ),
        }
    }
    shared.mark_done(id);
}

impl Shared {
    /// Remembers invocation `id`'s deadline for its response handler.
    fn note_deadline(&self, id: &str, deadline_ms: u64) {
        if self.response_handler.is_none() || id.is_empty() {
            return;
        }
        let mut deadlines = self
            .deadlines
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if deadlines.len() > 1000 {
            deadlines.clear();
        }
        deadlines.insert(id.to_string(), deadline_ms);
    }

    /// The deadline of invocation `id` (Unix epoch ms), seen when it went through `/next`; 0
    /// (none) for one the proxy did not see.
    fn deadline_of(&self, id: &str) -> u64 {
        self.deadlines
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(id)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let next = "/2018-06-01/runtime/invocation/next";
        assert_eq!(route("GET", next), Route::Next);
        assert_eq!(route("POST", next), Route::Other);
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/abc-1/response"),
            Route::Response("abc-1")
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/abc-1/error"),
            Route::Error("abc-1")
        );
        for other in [
            "/2018-06-01/runtime/init/error",
            "/2018-06-01/runtime/restore/next",
            "/2018-06-01/runtime/invocation//response",
            "/2018-06-01/runtime/invocation/a/b/response",
            "/2020-01-01/extension/event/next",
        ] {
            assert_eq!(route("POST", other), Route::Other, "{other}");
        }
    }
}
