//! Playing Lambda's Telemetry API side: find the listener the extension subscribed with, and
//! POST batches to it as Lambda does.

use std::time::{Duration, Instant};

use super::server::{Endpoint, FakeApi};

/// The listener of an extension that subscribed to telemetry through `api`.
pub struct TelemetryTarget {
    port: u16,
    agent: ureq::Agent,
}

impl TelemetryTarget {
    /// Waits for the extension's `PUT /telemetry` and reads the port from its destination URI
    /// (`http://sandbox.localdomain:<port>`); the listener runs on this machine.
    pub fn of(api: &FakeApi) -> TelemetryTarget {
        let puts = api.expect_requests(Endpoint::Telemetry, 1, Duration::from_secs(10));
        let body = puts.last().expect("a subscription").json();
        let uri = body["destination"]["URI"]
            .as_str()
            .unwrap_or_else(|| panic!("no destination URI in {body}"));
        let port = uri
            .strip_prefix("http://sandbox.localdomain:")
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("URI {uri:?} is not http://sandbox.localdomain:<port>"));
        TelemetryTarget {
            port,
            agent: ureq::Agent::config_builder()
                .proxy(None)
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// POSTs one batch as Lambda does; returns the status and how long the answer took.
    pub fn post(&self, body: &[u8]) -> (u16, Duration) {
        let started = Instant::now();
        let response = self
            .agent
            .post(&format!("http://127.0.0.1:{}/", self.port))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap_or_else(|error| panic!("POST to the telemetry listener: {error}"));
        (response.status().as_u16(), started.elapsed())
    }

    /// POSTs a batch and asserts it was accepted (200).
    pub fn deliver(&self, body: &[u8]) {
        let (status, _) = self.post(body);
        assert_eq!(status, 200, "batch answered {status}");
    }
}

/// One telemetry record as JSON text.
pub fn record(kind: &str, record: &str) -> String {
    format!(r#"{{"time":"2026-12-01T00:00:00.000Z","type":"{kind}","record":{record}}}"#)
}

/// A batch (JSON array) of records.
pub fn batch(records: &[String]) -> Vec<u8> {
    format!("[{}]", records.join(",")).into_bytes()
}

/// A `platform.*` record carrying a request id.
pub fn platform(kind: &str, request_id: &str) -> String {
    record(
        &format!("platform.{kind}"),
        &format!(r#"{{"requestId":"{request_id}","status":"success"}}"#),
    )
}
