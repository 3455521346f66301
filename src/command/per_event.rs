//! Per-event mode: the handler runs once per event, as a new process with the event's bytes on
//! its stdin, the event's variables in its environment, and the event's deadline.

use std::time::Duration;

use super::{CommandFailure, CommandLine, EventHandler, Executor, Input, Leftovers, Margin};
use crate::api::Event;

/// The variables the extension sets for any of its commands (handlers, telemetry command, the
/// proxy's handlers): never inherited from its own environment by any command, so a stale value
/// of one kind's variable cannot reach a command of another kind.
pub const MANAGED_ENV: [&str; 15] = [
    "LAMBDA_EVENT_TYPE",
    "LAMBDA_DEADLINE_MS",
    "LAMBDA_EXTENSION_NAME",
    "LAMBDA_REQUEST_ID",
    "LAMBDA_INVOKED_FUNCTION_ARN",
    "LAMBDA_SHUTDOWN_REASON",
    "_X_AMZN_TRACE_ID",
    "LAMBDA_ACK_FD",
    "LAMBDA_TELEMETRY_BATCH_ITEMS",
    "LAMBDA_CLIENT_CONTEXT",
    "LAMBDA_COGNITO_IDENTITY",
    "LAMBDA_TENANT_ID",
    "LAMBDA_RESPONSE_STATUS",
    "LAMBDA_ERROR_TYPE",
    "LAMBDA_RESPONSE_TRUNCATED",
];

/// Runs the handler for one event at a time.
pub struct PerEvent {
    executor: Executor,
    handler: CommandLine,
    margin: Margin,
}

impl PerEvent {
    /// `executor` must leave out [`MANAGED_ENV`]; `margin` is how long before an event's
    /// deadline the handler is stopped.
    pub fn new(executor: Executor, handler: CommandLine, margin: Duration) -> PerEvent {
        PerEvent {
            executor,
            handler,
            margin: Margin::new(margin),
        }
    }
}

impl EventHandler for PerEvent {
    fn handle(&mut self, event: &Event, body: &[u8]) -> Result<(), CommandFailure> {
        let deadline_ms = event.deadline_ms().to_string();
        // LAMBDA_EXTENSION_NAME is in the executor's fixed environment.
        let mut env = Vec::with_capacity(5);
        env.push(("LAMBDA_EVENT_TYPE", event.lifecycle_event().as_str()));
        env.push(("LAMBDA_DEADLINE_MS", deadline_ms.as_str()));
        match event {
            Event::Invoke(invoke) => {
                env.push(("LAMBDA_REQUEST_ID", invoke.request_id.as_str()));
                env.push((
                    "LAMBDA_INVOKED_FUNCTION_ARN",
                    invoke.invoked_function_arn.as_str(),
                ));
                // cargo-lambda sends "tracing":{"value":""}: that is no trace.
                if let Some(tracing) = invoke.tracing.as_ref().filter(|t| !t.value.is_empty()) {
                    env.push(("_X_AMZN_TRACE_ID", tracing.value.as_str()));
                }
            }
            Event::Shutdown(shutdown) => {
                env.push(("LAMBDA_SHUTDOWN_REASON", shutdown.shutdown_reason.as_str()));
            }
        }
        let deadline = self.margin.deadline(event);
        self.executor.run(
            &self.handler,
            Input::Bytes(body),
            &env,
            deadline,
            Leftovers::Kill,
        )
    }
}
