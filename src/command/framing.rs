//! The persistent-mode protocol on the wire: an event (or telemetry batch) as one line of JSON,
//! and the one-line acknowledgement the handler answers with on fd 3.

use std::borrow::Cow;

/// The longest acknowledgement line read; a longer one is a protocol error, not a message.
pub const MAX_ACK_BYTES: usize = 4096;

/// `body` (JSON) as one line, without its line feed: the bytes themselves when they hold no
/// line break, otherwise the same JSON with the whitespace between tokens removed. Strings are
/// copied byte for byte, so the line parses to the same value (numbers and key order included).
///
/// `\r` counts as a line break because Python's text-mode stdin splits lines on it too. JSON
/// strings cannot hold a raw line break; if an invalid body has one anyway, it is escaped, so
/// the result is always one line.
pub fn as_line(body: &[u8]) -> Cow<'_, [u8]> {
    if !holds(body, b'\n') && !holds(body, b'\r') {
        return Cow::Borrowed(body);
    }
    let mut line = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if !in_string {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_string = true;
                    line.push(byte);
                }
                _ => line.push(byte),
            }
            continue;
        }
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(byte),
        }
        if escaped {
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            in_string = false;
        }
    }
    Cow::Owned(line)
}

/// Whether `bytes` holds `byte`: the C library's `memchr` reads a word at a time, where a byte
/// loop at the release build's `opt-level = "z"` costs ~2,000 instructions for a 300-byte event.
fn holds(bytes: &[u8], byte: u8) -> bool {
    // SAFETY: memchr reads at most `bytes.len()` bytes from a valid slice.
    let found = unsafe { libc::memchr(bytes.as_ptr().cast(), byte.into(), bytes.len()) };
    !found.is_null()
}

/// What a handler answered for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// `ok`
    Ok,
    /// `error <message>` (the message may be empty).
    Error(String),
}

/// An acknowledgement line (without its line feed; a trailing `\r` is ignored); `Err` holds
/// the line as text when it is neither `ok` nor `error <message>`.
pub fn parse_ack(line: &[u8]) -> Result<Ack, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"ok" {
        return Ok(Ack::Ok);
    }
    if line == b"error" {
        return Ok(Ack::Error(String::new()));
    }
    match line.strip_prefix(b"error ") {
        Some(message) => Ok(Ack::Error(
            String::from_utf8_lossy(message).trim().to_string(),
        )),
        None => Err(String::from_utf8_lossy(line).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_body_without_line_breaks_is_the_line_itself() {
        let body = br#"{"eventType":"INVOKE", "requestId":"a b"}"#;
        assert!(matches!(as_line(body), Cow::Borrowed(line) if line == body));
    }

    #[test]
    fn line_breaks_between_tokens_go_and_strings_stay_byte_for_byte() {
        let body = b"{\n  \"a\" : \"x \\\" \\n y\",\r\n  \"n\": 12345678901234567890.5,\n  \
                     \"b\": [1, 2]\n}\n";
        let line = as_line(body);
        assert_eq!(
            &*line,
            br#"{"a":"x \" \n y","n":12345678901234567890.5,"b":[1,2]}"#
        );
        assert_eq!(value(&line), value(body));
    }

    #[test]
    fn a_raw_line_break_inside_a_string_is_escaped() {
        let line = as_line(b"[\"a\nb\"]");
        assert_eq!(&*line, br#"["a\nb"]"#);
    }

    #[test]
    fn acknowledgements() {
        assert_eq!(parse_ack(b"ok"), Ok(Ack::Ok));
        assert_eq!(parse_ack(b"ok\r"), Ok(Ack::Ok));
        assert_eq!(parse_ack(b"error"), Ok(Ack::Error(String::new())));
        assert_eq!(
            parse_ack(b"error disk full "),
            Ok(Ack::Error("disk full".into()))
        );
        assert_eq!(parse_ack(b"OK"), Err("OK".into()));
        assert_eq!(parse_ack(b"okay"), Err("okay".into()));
        assert_eq!(parse_ack(b"errors"), Err("errors".into()));
        assert_eq!(parse_ack(b""), Err(String::new()));
    }
}
