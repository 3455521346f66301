//! Next-event bodies: `NextEventResponse::from_body` (the fast path, falling back to the derived
//! `Deserialize`) never panics, keeps the body byte for byte, and decides exactly as
//! `serde_json::from_slice::<Event>` does (the same event, or an error with the same message).
#![no_main]

use lambda_shell_extension::api::{Event, NextEventResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let derived = serde_json::from_slice::<Event>(data).map_err(|e| e.to_string());
    let parsed = NextEventResponse::from_body(data.to_vec());
    match (&parsed, &derived) {
        (Ok(response), Ok(event)) => {
            assert_eq!(&response.event, event);
            assert_eq!(response.body, data);
        }
        (Err(error), Err(message)) => assert_eq!(&error.to_string(), message),
        _ => panic!(
            "the fast path and the derive disagree on {:?}: {parsed:?} vs {derived:?}",
            String::from_utf8_lossy(data)
        ),
    }
});
