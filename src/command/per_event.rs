//! Per-event mode: the handler runs once per event, as a new process with the event's bytes on
//! its stdin, the event's variables in its environment, and the event's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::warn;

use super::{CommandFailure, CommandLine, Deadline, Executor, Input, Leftovers};
use crate::api::Event;
use crate::config::TIMEOUT_MARGIN_ENV;

/// The variables the extension sets for its commands: never inherited from its own environment.
pub const MANAGED_ENV: [&str; 7] = [
    "LAMBDA_EVENT_TYPE",
    "LAMBDA_DEADLINE_MS",
    "LAMBDA_EXTENSION_NAME",
    "LAMBDA_REQUEST_ID",
    "LAMBDA_INVOKED_FUNCTION_ARN",
    "LAMBDA_SHUTDOWN_REASON",
    "_X_AMZN_TRACE_ID",
];

const INVOKE_HINT: &str =
    "make it finish sooner, or raise the function timeout (an INVOKE's deadline is the function's)";
const SHUTDOWN_HINT: &str = "Lambda gives SHUTDOWN about 2 s in all, and that cannot be raised: \
     do less at shutdown (flush as you go, on INVOKE), or lower SHELL_EXT_TIMEOUT_MARGIN_MS";

/// Runs the handler for one event at a time.
pub struct PerEvent {
    executor: Executor,
    handler: CommandLine,
    margin: Duration,
    margin_cut_logged: bool,
}

impl PerEvent {
    /// `executor` must leave out [`MANAGED_ENV`]; `margin` is how long before an event's
    /// deadline the handler is stopped.
    pub fn new(executor: Executor, handler: CommandLine, margin: Duration) -> PerEvent {
        PerEvent {
            executor,
            handler,
            margin,
            margin_cut_logged: false,
        }
    }

    /// Runs the handler for `event`, whose bytes as received are `body`.
    pub fn handle(&mut self, event: &Event, body: &[u8]) -> Result<(), CommandFailure> {
        let deadline_ms = event.deadline_ms().to_string();
        // LAMBDA_EXTENSION_NAME is in the executor's fixed environment.
        let mut env = Vec::with_capacity(5);
        env.push(("LAMBDA_EVENT_TYPE", event.lifecycle_event().as_str()));
        env.push(("LAMBDA_DEADLINE_MS", deadline_ms.as_str()));
        let hint = match event {
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
                INVOKE_HINT
            }
            Event::Shutdown(shutdown) => {
                env.push(("LAMBDA_SHUTDOWN_REASON", shutdown.shutdown_reason.as_str()));
                SHUTDOWN_HINT
            }
        };
        let deadline = self.deadline(event, hint);
        self.executor.run(
            &self.handler,
            Input::Bytes(body),
            &env,
            deadline,
            Leftovers::Kill,
        )
    }

    /// The event's deadline (none for a `deadlineMs` of 0). The margin never takes more than
    /// half of the time actually left, so a margin meant for long invokes does not stop the
    /// handler of a short SHUTDOWN before it has begun.
    fn deadline(&mut self, event: &Event, hint: &'static str) -> Option<Deadline> {
        let deadline_ms = event.deadline_ms();
        if deadline_ms == 0 {
            return None;
        }
        let remaining = time_left(deadline_ms);
        let margin = usable_margin(self.margin, remaining);
        if margin < self.margin && !self.margin_cut_logged {
            self.margin_cut_logged = true;
            warn!(
                "{TIMEOUT_MARGIN_ENV}={} is more than half of the {} ms this {} had left: \
                 stopping the handler {} ms before the deadline instead (never more than half \
                 the time left; logged once)",
                self.margin.as_millis(),
                remaining.as_millis(),
                event.lifecycle_event().as_str(),
                margin.as_millis()
            );
        }
        Some(Deadline::within(remaining, margin, hint))
    }
}

/// Now, in Unix epoch milliseconds (the clock `deadlineMs` is given in).
pub fn now_epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// How long until `deadline_ms` (Unix epoch ms); zero once it has passed.
pub fn time_left(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_epoch_ms()))
}

/// The configured margin, or half of the time left if that is less.
fn usable_margin(configured: Duration, remaining: Duration) -> Duration {
    configured.min(remaining / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_takes_at_most_half_of_the_time_left() {
        let ms = Duration::from_millis;
        assert_eq!(usable_margin(ms(100), ms(3000)), ms(100));
        assert_eq!(usable_margin(ms(2500), ms(2000)), ms(1000));
        assert_eq!(usable_margin(ms(1000), ms(2000)), ms(1000));
        assert_eq!(usable_margin(ms(100), ms(0)), ms(0));
    }
}
