//! Shared test support: a fake Lambda Extensions API and helpers to run the extension binary.
#![allow(dead_code)]

pub mod credentials;
pub mod process;
pub mod procfs;
pub mod runtime;
pub mod server;
pub mod telemetry;

#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use procfs::*;
#[allow(unused_imports)]
pub use runtime::*;
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use telemetry::*;

use std::time::Duration;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Check the wire format of an init/error or exit/error request and return its errorMessage:
/// identifier header = the registered id, `Lambda-Extension-Function-Error-Type: <ty>`,
/// `Content-Type: application/json`, body `{"errorMessage": string, "errorType": ty}`.
pub fn check_error_request(api: &FakeApi, req: &Request, ty: &str) -> String {
    assert_eq!(req.method, "POST", "{req:?}");
    let id = api
        .extension_id()
        .expect("an error report implies a registration");
    assert_eq!(
        req.header("Lambda-Extension-Identifier"),
        Some(id.as_str()),
        "identifier header: {req:?}"
    );
    assert_eq!(
        req.header("Lambda-Extension-Function-Error-Type"),
        Some(ty),
        "error type header: {req:?}"
    );
    let ct = req.header("Content-Type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "content type {ct:?}: {req:?}"
    );
    let body = req.json();
    assert_eq!(body["errorType"], ty, "body errorType: {body}");
    let msg = body["errorMessage"]
        .as_str()
        .unwrap_or_else(|| panic!("errorMessage must be a string: {body}"));
    assert!(!msg.is_empty(), "empty errorMessage: {body}");
    msg.to_string()
}

/// Assert that no request of kind `ep` was made.
pub fn assert_none(api: &FakeApi, ep: Endpoint) {
    let n = api.count(ep);
    assert_eq!(
        n,
        0,
        "expected no {ep:?} request, got {n}; log:\n{}",
        api.describe()
    );
}

/// Assert that every request went to a known endpoint (right prefix, method and path).
pub fn assert_all_known(api: &FakeApi) {
    assert_none(api, Endpoint::Unknown);
}

/// The events the extension registered for, as sent.
pub fn registered_events(api: &FakeApi) -> Vec<String> {
    let registrations = api.requests_to(Endpoint::Register);
    let first = registrations.first().expect("a registration");
    first.json()["events"]
        .as_array()
        .expect("an events array")
        .iter()
        .map(|event| event.as_str().unwrap_or_default().to_string())
        .collect()
}
