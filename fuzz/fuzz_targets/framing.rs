//! Persistent-mode framing: `as_line` (an event as one line of JSON) and `parse_ack` (the
//! handler's answer on fd 3). `parse_ack` is private to the crate, so the module's source file is
//! compiled in here as it is (it depends on `libc` alone).
//!
//! The first input byte picks the function: even, `as_line`; odd, `parse_ack`.
#![no_main]

#[path = "../../src/command/framing.rs"]
#[allow(dead_code)]
mod framing;

use framing::{as_line, parse_ack, Ack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let line = as_line(data);
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'), "{line:?}");
        if !data.contains(&b'\n') && !data.contains(&b'\r') {
            assert_eq!(&*line, data);
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
            let again = serde_json::from_slice::<serde_json::Value>(&line).unwrap_or_else(|e| {
                panic!("{:?} is not JSON: {e}", String::from_utf8_lossy(&line))
            });
            assert_eq!(again, value);
        }
    } else {
        let line = data.strip_suffix(b"\r").unwrap_or(data);
        let expected = if line == b"ok" {
            Ok(Ack::Ok)
        } else if line == b"error" {
            Ok(Ack::Error(String::new()))
        } else if let Some(message) = line.strip_prefix(b"error ") {
            Ok(Ack::Error(
                String::from_utf8_lossy(message).trim().to_string(),
            ))
        } else {
            Err(String::from_utf8_lossy(line).into_owned())
        };
        assert_eq!(parse_ack(data), expected);
    }
});
