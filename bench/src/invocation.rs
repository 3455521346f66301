//! What the bench's stand-in Runtime API hands out and expects back, shared by `bench-driver`
//! (which serves it) and `bench-runtime` (the runtime client that checks it): both build the same
//! bytes from the invocation's number, so either side can check the other (and the proxy between
//! them) byte for byte.

/// Size of an invocation's payload and of the runtime's response body, bytes.
pub const BODY_BYTES: usize = 1024;

/// The function ARN of every invocation (`Lambda-Runtime-Invoked-Function-Arn`, and the INVOKE
/// event's `invokedFunctionArn`).
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:bench";

/// The request id of the `i`th invocation of a run (from 1): the runtime's
/// `Lambda-Runtime-Aws-Request-Id` and the INVOKE event's `requestId` are the same.
pub fn request_id(i: usize) -> String {
    format!("8476a536-e9f4-11e8-9739-{i:012x}")
}

/// The `i`th invocation's `Lambda-Runtime-Trace-Id`.
pub fn trace_id(i: usize) -> String {
    format!("Root=1-5bef4de7-{i:024x};Parent=9a9197af755a6419;Sampled=1")
}

/// A JSON object of exactly `BODY_BYTES` bytes: `head` then a padding string (one non-ASCII
/// word in it, so that a byte-for-byte check covers more than ASCII).
fn padded(head: String) -> Vec<u8> {
    let mut text = head;
    text.push_str(",\"pad\":\"grüße ");
    let tail = "\"}";
    while text.len() + tail.len() < BODY_BYTES {
        text.push((b'a' + (text.len() % 26) as u8) as char);
    }
    text.push_str(tail);
    text.into_bytes()
}

/// The `i`th invocation's payload (the body of the answer to `GET …/invocation/next`).
pub fn payload(i: usize) -> Vec<u8> {
    padded(format!(
        "{{\"invocation\":{i},\"order\":{{\"id\":\"o-{i:08}\",\"items\":3,\"total\":\"42.50\"}}"
    ))
}

/// The runtime's response to the `i`th invocation (the body of `POST …/{id}/response`).
pub fn response_body(i: usize) -> Vec<u8> {
    padded(format!(
        "{{\"statusCode\":200,\"invocation\":{i},\"headers\":{{\"content-type\":\"application/json\"}}"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_are_exactly_body_bytes() {
        for i in [1, 9, 10, 999_999, usize::MAX >> 8] {
            assert_eq!(super::payload(i).len(), super::BODY_BYTES);
            assert_eq!(super::response_body(i).len(), super::BODY_BYTES);
        }
    }
}
