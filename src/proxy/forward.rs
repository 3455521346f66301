//! One leg of the proxy: a request of the runtime's sent upstream with ureq, and upstream's
//! answer written back to the runtime with tiny_http. Headers are copied as received, except the
//! hop-by-hop ones each leg's HTTP crate sets for itself.

use std::io::{self, Read};

use serde::Serialize;
use tiny_http::{Header, Request, Response, StatusCode};
use ureq::http::{self, HeaderMap};
use ureq::SendBody;

/// The most of an upstream answer (an invocation's payload) the proxy holds at once: Lambda's
/// payloads stop at 6 MB (synchronous) and 1 MB (asynchronous); this leaves room.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// Headers that describe a connection or a body's framing, not the message: each leg's HTTP
/// crate writes its own.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "proxy-connection",
        "proxy-authorization",
    ]
    .iter()
    .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// What came back from upstream, read whole.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Why upstream gave no answer.
#[derive(Debug)]
pub struct UpstreamFailed(pub String);

/// The runtime's request as it came: method, path and query, headers.
pub struct Incoming {
    pub method: String,
    pub path: String,
    pub headers: Vec<Header>,
    /// Whether a body follows the head (a length above 0, or chunked).
    pub has_body: bool,
}

impl Incoming {
    pub fn of(request: &Request) -> Incoming {
        let headers = request.headers().to_vec();
        let chunked = headers
            .iter()
            .any(|header| header.field.equiv("Transfer-Encoding"));
        Incoming {
            method: request.method().as_str().to_string(),
            path: request.url().to_string(),
            has_body: chunked || request.body_length().is_some_and(|length| length > 0),
            headers,
        }
    }

    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|header| header.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|header| header.value.as_str())
    }
}

/// Sends `incoming` (with `body`, when it has one) to `base` + its path, and reads the answer.
pub fn send(
    agent: &ureq::Agent,
    base: &str,
    incoming: &Incoming,
    body: Option<&mut dyn Read>,
) -> Result<Answer, UpstreamFailed> {
    let response = match (incoming.has_body, body) {
        // With a Content-Length copied above, ureq sends exactly that; without one, chunked.
        (true, Some(reader)) => execute(
            agent,
            builder(base, incoming),
            SendBody::from_reader(reader),
        ),
        // A kept-alive connection can be dead without the pool knowing (after a SnapStart
        // restore): a request without a body is sent once more, on a fresh connection.
        _ => execute(agent, builder(base, incoming), SendBody::none())
            .or_else(|_| execute(agent, builder(base, incoming), SendBody::none())),
    }?;
    let (parts, body) = response.into_parts();
    // Sized from Content-Length (bounded), so a payload is read without regrowing the buffer.
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_ANSWER_BYTES);
    let mut bytes = Vec::with_capacity(declared as usize + 1);
    body.into_with_config()
        .limit(MAX_ANSWER_BYTES)
        .reader()
        .read_to_end(&mut bytes)
        .map_err(|error| UpstreamFailed(format!("reading its answer: {error}")))?;
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: bytes,
    })
}

/// The request for upstream: `incoming`'s method, path and end-to-end headers.
fn builder(base: &str, incoming: &Incoming) -> http::request::Builder {
    let mut request = http::Request::builder()
        .method(incoming.method.as_str())
        .uri(format!("{base}{}", incoming.path));
    for header in &incoming.headers {
        let name = header.field.as_str().as_str();
        if !is_hop_by_hop(name) {
            request = request.header(name, header.value.as_str());
        }
    }
    request
}

fn execute(
    agent: &ureq::Agent,
    request: http::request::Builder,
    body: SendBody<'_>,
) -> Result<http::Response<ureq::Body>, UpstreamFailed> {
    let request = request
        .body(body)
        .map_err(|error| UpstreamFailed(format!("cannot build the request: {error}")))?;
    agent
        .run(request)
        .map_err(|error| UpstreamFailed(error.to_string()))
}

/// Writes upstream's answer back to the runtime: its status, headers and body as they came.
pub fn answer(request: Request, upstream: Answer) {
    let mut headers = Vec::with_capacity(upstream.headers.len());
    for (name, value) in &upstream.headers {
        if is_hop_by_hop(name.as_str()) || name == http::header::CONTENT_LENGTH {
            continue;
        }
        if let Ok(header) = Header::from_bytes(name.as_str().as_bytes(), value.as_bytes()) {
            headers.push(header);
        }
    }
    let length = upstream.body.len();
    let response = Response::new(
        StatusCode(upstream.status),
        headers,
        io::Cursor::new(upstream.body),
        Some(length),
        None,
    )
    // A known length is sent as Content-Length, however long (tiny_http chunks above 32 KiB).
    .with_chunked_threshold(usize::MAX);
    // The runtime hung up: nothing to tell it.
    let _ = request.respond(response);
}

/// A Lambda-style error body: `{"errorMessage": ..., "errorType": ...}`.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    #[serde(rename = "errorMessage")]
    pub message: &'a str,
    #[serde(rename = "errorType")]
    pub error_type: &'a str,
}

impl ErrorBody<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        // Two strings: serialising them cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// 502 to the runtime: upstream could not be reached or broke off its answer, or the
/// runtime's own body could not be read (`problem` says which).
pub fn bad_gateway(request: Request, problem: &str) {
    refuse(request, 502, "Extension.ProxyUpstreamError", problem)
}

/// An error answer of the proxy's own to the runtime, in the Runtime API's error shape.
pub fn refuse(request: Request, status: u16, error_type: &str, problem: &str) {
    let message = format!("lambda-shell-extension proxy: {problem}");
    let body = ErrorBody {
        message: &message,
        error_type,
    }
    .to_json();
    let content_type = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]);
    let mut response = Response::from_data(body).with_status_code(status);
    if let Ok(content_type) = content_type {
        response.add_header(content_type);
    }
    let _ = request.respond(response);
}

/// A request body passed through while its first `limit` bytes are kept (for the response
/// handler).
pub struct Tee<'a> {
    pub inner: &'a mut dyn Read,
    pub kept: Vec<u8>,
    pub limit: usize,
    /// More than `limit` bytes went through.
    pub truncated: bool,
    /// Reading the runtime's body failed (so the upload upstream was cut off): why.
    pub failed: Option<String>,
    /// What is still to come of a body of known length: an end before it is an error, which
    /// cuts the upload off (ureq would wait for the rest forever, spinning).
    pub left: Option<usize>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = match (self.inner.read(buffer), &mut self.left) {
            (Ok(0), Some(1..)) if !buffer.is_empty() => Err(io::ErrorKind::UnexpectedEof.into()),
            (Ok(read), Some(left)) => {
                *left = left.saturating_sub(read);
                Ok(read)
            }
            (read, _) => read,
        }
        .inspect_err(|error| {
            self.failed = Some(error.to_string());
        })?;
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buffer[..read.min(room)]);
        if read > room {
            self.truncated = true;
        }
        Ok(read)
    }
}
