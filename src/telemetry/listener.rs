//! The HTTP listener Lambda's Telemetry API delivers batches to (feature `listener`).
//!
//! ```no_run
//! use lambda_shell_extension::api::{TelemetrySchema, TelemetrySubscription, TelemetryType};
//! use lambda_shell_extension::client::{RegistrationClient, Subscribed};
//! use lambda_shell_extension::telemetry::Listener;
//!
//! let (client, _) = RegistrationClient::from_env().register_default()?;
//! // Listen first: Lambda may deliver as soon as the subscription is accepted.
//! let listener = Listener::bind()?;
//! let subscription = TelemetrySubscription::new(
//!     TelemetrySchema::V2022_12_13,
//!     listener.destination(),
//!     vec![TelemetryType::Platform, TelemetryType::Function],
//! );
//! if let Subscribed::NotSupported { message, .. } = client.telemetry_register(&subscription)? {
//!     eprintln!("no telemetry: {message}");
//! }
//! std::thread::spawn(move || {
//!     while let Some(batch) = listener.next_batch() {
//!         // The body exactly as POSTed: a JSON array of {"time", "type", "record"}.
//!         let (body, acknowledgement) = batch.into_parts();
//!         // ... keep `body` somewhere safe (a bounded queue), then:
//!         acknowledgement.acknowledge(); // 200: Lambda sends the next batch
//!     }
//! });
//! // ... the event loop: client.next_event() ...
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What it answers
//!
//! - `POST` (any path) with a body of at most [`MAX_BODY_BYTES`]: the body is handed to
//!   [`Listener::next_batch`] as a [`Batch`], byte for byte, and the answer waits for the caller:
//!   200 when it [acknowledges](Batch::acknowledge) the batch, 500 when it drops it unacknowledged
//!   (Lambda retries a batch that was not answered 200). Answering only once the batch is safe is
//!   how a slow consumer slows Lambda's deliveries down (backpressure) instead of losing batches.
//! - Any other method: 405 with `Allow: POST`.
//! - A body over [`MAX_BODY_BYTES`]: 413, whether its `Content-Length` says so up front or it turns
//!   out longer while being read (chunked); no more than `MAX_BODY_BYTES + 1` bytes are read.
//! - A body cut short (the client disconnected mid-body, or sent fewer bytes than its
//!   `Content-Length`): nothing is yielded, and the answer, if the client is still there, is 500.
//! - After [`Listener::stop`], or once the listener is dropped: 503.
//! - Not HTTP at all: 400 (tiny_http's), and that connection is closed.
//!
//! # How it is built, and why
//!
//! The HTTP parsing is [tiny_http](https://crates.io/crates/tiny_http)'s (blocking, no TLS, no
//! async runtime): it accepts on a thread of its own and reads each connection's request heads
//! on a thread per connection (its pool grows as needed), so a client that connects and sends
//! nothing, or only half a head, holds its own thread and delays nobody else. tiny_http sets no
//! socket timeouts, and this listener adds none on purpose: Lambda keeps its connection alive
//! between deliveries and freezes the whole environment between invokes, so an idle timeout
//! would fire right after a thaw and race with the next delivery on that connection.
//!
//! tiny_http leaves the body of a request to whoever takes it from its queue. If one loop read
//! every body, a client stalled mid-body would block every later delivery. So one dispatcher
//! thread takes each request from tiny_http and hands it to a short-lived thread of its own,
//! which reads the body (bounded), queues the [`Batch`] for [`Listener::next_batch`], waits for
//! the acknowledgement and writes the answer. A stalled client stalls only its own thread, until
//! it disconnects. Acknowledging only tells that thread the verdict: it never blocks the caller,
//! whatever the order batches are acknowledged in.
//!
//! Batches are yielded in the order their bodies were complete. Lambda delivers one batch at a
//! time, the next only after the previous was answered, so that is the order Lambda sent them
//! in. (Two clients posting at once are yielded in the order they finished.)
//!
//! Limits of tiny_http 0.12 this works around or documents:
//! - To keep a connection usable after refusing a request without reading its body (405, 413),
//!   tiny_http reads and discards the rest of that body when the request is dropped, and first
//!   allocates a buffer of the size it was declared. That happens on the request's own thread,
//!   and only up to 64 MiB declared: a request declaring more gets a 413 status line and its
//!   connection is abandoned (never read again; its thread and socket are kept until the process
//!   ends), because allocating such a buffer would abort the process. Lambda never sends
//!   anything near that.
//! - A chunked body whose client disconnects in the middle of a chunk cannot be told from a
//!   complete one (tiny_http's decoder reports the end of the body). Lambda sends
//!   `Content-Length`, for which a short body is detected.
//! - A failure to accept connections (for example no file descriptor left) ends tiny_http's
//!   accept thread for good: [`Listener::next_batch`] then returns `None`.
//!
//! It logs at `debug` at most (tiny_http too, except one `error` line if accepting fails): an
//! extension subscribed to its own `extension` telemetry would otherwise receive a record for
//! every line it logs per batch, and log again.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use log::debug;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::api::Destination;

/// The largest body accepted, in bytes (8 MiB); a longer one is answered 413.
///
/// Lambda's largest batch is about `2 * maxBytes` plus metadata, a little over 2 MiB at the
/// largest `maxBytes` (1 MiB): this leaves room to spare.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The host name Lambda resolves to the sandbox, in the URI to subscribe with.
pub const SANDBOX_HOST: &str = "sandbox.localdomain";

/// The port of the Extensions and Runtime APIs, which a listener must never use.
const RESERVED_PORT: u16 = 9001;

/// A declared body larger than this is not discarded by tiny_http (see the module doc).
const MAX_DISCARDED_BYTES: usize = 64 * 1024 * 1024;

/// Stack of the per-request threads: they read into the heap and write a short answer.
const REQUEST_STACK_BYTES: usize = 256 * 1024;

/// An HTTP server on an ephemeral port that yields each batch Lambda POSTs to it.
///
/// It serves from the moment it is bound until it is dropped; dropping it answers the batches
/// not yet yielded 500 and frees the port. `Send` and `Sync`: share it in an `Arc` to call
/// [`stop`](Self::stop) from another thread than the one waiting in
/// [`next_batch`](Self::next_batch).
pub struct Listener {
    server: Option<Arc<Server>>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

/// The batches read and not yet yielded, shared with the dispatcher and request threads.
/// (A mutex and a condition variable rather than a channel: the binary has them already.)
struct Shared {
    state: Mutex<State>,
    /// Signalled when a batch is queued or `stopping` is set.
    changed: Condvar,
}

struct State {
    batches: VecDeque<Batch>,
    /// `stop` was called, the listener was dropped or the server ended: what is queued is still
    /// yielded, new deliveries are answered 503.
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `batch`, or gives it back when the listener is stopping.
    fn push(&self, batch: Batch) -> Result<(), Batch> {
        let mut state = self.lock();
        if state.stopping {
            return Err(batch);
        }
        state.batches.push_back(batch);
        self.changed.notify_one();
        Ok(())
    }

    /// From now on nothing is queued; a waiting `next_batch` wakes.
    fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }
}

impl Listener {
    /// Listens on `0.0.0.0` on a port the system picks (never 9001, reserved by Lambda).
    pub fn bind() -> io::Result<Listener> {
        // A SocketAddr rather than ("0.0.0.0", 0): no name resolution code in the binary.
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let socket = TcpListener::bind(any)?;
        if socket.local_addr()?.port() == RESERVED_PORT {
            // Only possible with an unusual ephemeral range; the first socket is still bound,
            // so the second gets another port.
            let other = TcpListener::bind(any)?;
            return Listener::from_socket(other);
        }
        Listener::from_socket(socket)
    }

    /// Listens on `addr` (for example `127.0.0.1:0` in a test). Port 9001 is refused
    /// (`InvalidInput`): Lambda reserves it.
    pub fn bind_addr(addr: SocketAddr) -> io::Result<Listener> {
        if addr.port() == RESERVED_PORT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port 9001 is reserved by Lambda: a telemetry listener cannot use it",
            ));
        }
        Listener::from_socket(TcpListener::bind(addr)?)
    }

    fn from_socket(socket: TcpListener) -> io::Result<Listener> {
        let local_addr = socket.local_addr()?;
        let server = Server::from_listener(socket, None).map_err(io::Error::other)?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batches: VecDeque::new(),
                stopping: false,
            }),
            changed: Condvar::new(),
        });
        {
            let server = server.clone();
            let shared = shared.clone();
            thread::Builder::new()
                .name("telemetry-http".into())
                .spawn(move || dispatch(&server, &shared))?;
        }
        debug!("telemetry listener on {local_addr}");
        Ok(Listener {
            server: Some(server),
            local_addr,
            shared,
        })
    }

    /// The address it listens on (`0.0.0.0:<port>` from [`bind`](Self::bind)).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The URI to subscribe with: `http://sandbox.localdomain:<port>`.
    pub fn uri(&self) -> String {
        format!("http://{SANDBOX_HOST}:{}", self.port())
    }

    /// The destination to subscribe with: HTTP to [`uri`](Self::uri).
    pub fn destination(&self) -> Destination {
        Destination::http(self.uri())
    }

    /// Waits for the next batch. `None` once [`stop`](Self::stop) was called (after the batches
    /// that had fully arrived before it) or if the server stopped accepting connections.
    ///
    /// Answer each batch: [`Batch::acknowledge`] (200) once it is safe, or drop it (500, Lambda
    /// retries). Lambda sends the next batch only after the answer.
    pub fn next_batch(&self) -> Option<Batch> {
        let mut state = self.shared.lock();
        loop {
            if let Some(batch) = state.batches.pop_front() {
                return Some(batch);
            }
            if state.stopping {
                return None;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stops taking deliveries: [`next_batch`](Self::next_batch) still returns the batches that
    /// had fully arrived, then `None` (at once, also in a thread already waiting). Deliveries
    /// whose body is complete after this are answered 503. The port stays bound until the
    /// listener is dropped.
    pub fn stop(&self) {
        self.shared.stop();
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("stopping", &self.shared.lock().stopping)
            .finish_non_exhaustive()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shared.stop();
        // Answered 500 as they drop (outside the lock).
        let unanswered = std::mem::take(&mut self.shared.lock().batches);
        drop(unanswered);
        if let Some(server) = self.server.take() {
            // Ends the dispatcher; the server (and any request still in its queue) is dropped by
            // whichever lets go last. Requests are dropped off this thread: dropping one can
            // read the rest of its body.
            server.unblock();
            let _ = thread::Builder::new()
                .name("telemetry-close".into())
                .spawn(move || drop(server));
        }
    }
}

/// One batch as Lambda POSTed it, not yet answered.
///
/// Dropping it unacknowledged answers 500, and Lambda sends it again later; call
/// [`acknowledge`](Self::acknowledge) (200) once it is safe. [`into_parts`](Self::into_parts)
/// separates the body from the answer, to acknowledge after moving the body elsewhere.
#[must_use = "a batch dropped without acknowledge() is answered 500"]
pub struct Batch {
    body: Vec<u8>,
    acknowledgement: Acknowledgement,
}

impl Batch {
    /// The body exactly as received (for the Telemetry API, a JSON array of events).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Answers 200: the batch is delivered, Lambda may send the next. Returns at once.
    pub fn acknowledge(self) {
        self.acknowledgement.acknowledge()
    }

    /// The body, and the answer still to give.
    pub fn into_parts(self) -> (Vec<u8>, Acknowledgement) {
        (self.body, self.acknowledgement)
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The answer a [`Batch`] still owes: [`acknowledge`](Self::acknowledge) for 200; dropping it
/// answers 500 (Lambda retries).
#[must_use = "dropping it answers 500; call acknowledge() once the batch is safe"]
pub struct Acknowledgement {
    /// Shared with the batch's request thread, which writes the answer.
    verdict: Arc<Verdict>,
}

/// Whether a batch is to be answered 200 (`Some(true)`) or 500 (`Some(false)`); `None` until the
/// [`Acknowledgement`] is used or dropped.
struct Verdict {
    given: Mutex<Option<bool>>,
    changed: Condvar,
}

impl Verdict {
    fn give(&self, acknowledged: bool) {
        let mut given = self.given.lock().unwrap_or_else(|e| e.into_inner());
        if given.is_none() {
            *given = Some(acknowledged);
            self.changed.notify_one();
        }
    }

    fn wait(&self) -> bool {
        let mut given = self.given.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(acknowledged) = *given {
                return acknowledged;
            }
            given = self.changed.wait(given).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Acknowledgement {
    /// Answers 200. Returns at once: the answer is written by the batch's own thread. (If the
    /// client has gone away meanwhile, nothing happens.)
    pub fn acknowledge(self) {
        self.verdict.give(true);
    }
}

impl Drop for Acknowledgement {
    fn drop(&mut self) {
        // No effect after `acknowledge`.
        self.verdict.give(false);
    }
}

impl fmt::Debug for Acknowledgement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acknowledgement").finish_non_exhaustive()
    }
}

/// The dispatcher thread: each request to a thread of its own, so no body read blocks another.
fn dispatch(server: &Server, shared: &Arc<Shared>) {
    loop {
        match server.recv() {
            Ok(request) => {
                let shared = shared.clone();
                // On failure (no thread to be had) the request is dropped here, answered 500.
                let _ = thread::Builder::new()
                    .name("telemetry-batch".into())
                    .stack_size(REQUEST_STACK_BYTES)
                    .spawn(move || serve(request, &shared));
            }
            Err(error) => {
                // `unblock` (the listener is being dropped), or tiny_http's accept thread ended.
                debug!("telemetry listener: no more requests: {error}");
                shared.stop();
                return;
            }
        }
    }
}

/// One request, on its own thread: read, check, queue, wait for the acknowledgement, answer.
fn serve(mut request: Request, shared: &Shared) {
    let declared = request.body_length();
    if declared.is_some_and(|length| length > MAX_DISCARDED_BYTES) {
        debug!("telemetry listener: {declared:?} bytes declared: 413, connection abandoned");
        // Answered without letting tiny_http discard (and first allocate) the declared body.
        let connection = request.upgrade("close", Response::empty(413));
        std::mem::forget(connection);
        return;
    }
    if *request.method() != Method::Post {
        debug!("telemetry listener: {} refused (405)", request.method());
        let allow = Header::from_bytes(&b"Allow"[..], &b"POST"[..]).expect("a valid header");
        answer(request, Response::empty(405).with_header(allow));
        return;
    }
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        debug!("telemetry listener: {declared:?} bytes declared (413)");
        answer(request, Response::empty(413));
        return;
    }
    if shared.lock().stopping {
        answer(request, Response::empty(503));
        return;
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let read = request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body);
    match read {
        Err(error) => {
            debug!("telemetry listener: body not read ({error}); dropped");
            // Dropping the request answers 500, if anyone is still listening.
            return;
        }
        Ok(_) if body.len() > MAX_BODY_BYTES => {
            debug!("telemetry listener: body over {MAX_BODY_BYTES} bytes (413)");
            answer(request, Response::empty(413));
            return;
        }
        Ok(_) if declared.is_some_and(|length| length != body.len()) => {
            debug!(
                "telemetry listener: body cut short ({} of {declared:?} bytes); dropped",
                body.len()
            );
            return;
        }
        Ok(_) => {}
    }
    let verdict = Arc::new(Verdict {
        given: Mutex::new(None),
        changed: Condvar::new(),
    });
    let batch = Batch {
        body,
        acknowledgement: Acknowledgement {
            verdict: verdict.clone(),
        },
    };
    if shared.push(batch).is_err() {
        // Stopping: not queued (nobody waits on its verdict).
        answer(request, Response::empty(503));
        return;
    }
    let status = if verdict.wait() { 200 } else { 500 };
    answer(request, Response::empty(status));
}

fn answer<R: Read>(request: Request, response: Response<R>) {
    if let Err(error) = request.respond(response) {
        debug!("telemetry listener: answer not sent: {error}");
    }
}
