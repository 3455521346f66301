//! An event's deadline for its handler: the event's `deadlineMs` minus the configured margin,
//! whichever mode runs the handler.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::warn;

use super::Deadline;
use crate::api::Event;
use crate::config::TIMEOUT_MARGIN_ENV;

const INVOKE_HINT: &str =
    "make it finish sooner, or raise the function timeout (an INVOKE's deadline is the function's)";
const SHUTDOWN_HINT: &str = "Lambda gives SHUTDOWN about 2 s in all, and that cannot be raised: \
     do less at shutdown (flush as you go, on INVOKE), or lower SHELL_EXT_TIMEOUT_MARGIN_MS";

/// How long before an event's deadline its handler is stopped.
#[derive(Debug)]
pub struct Margin {
    configured: Duration,
    cut_logged: bool,
}

impl Margin {
    pub fn new(configured: Duration) -> Margin {
        Margin {
            configured,
            cut_logged: false,
        }
    }

    /// The event's deadline (none for a `deadlineMs` of 0). The margin never takes more than
    /// half of the time actually left, so a margin meant for long invokes does not stop the
    /// handler of a short SHUTDOWN before it has begun.
    pub fn deadline(&mut self, event: &Event) -> Option<Deadline> {
        let hint = match event {
            Event::Invoke(_) => INVOKE_HINT,
            Event::Shutdown(_) => SHUTDOWN_HINT,
        };
        self.before(event.deadline_ms(), event.lifecycle_event().as_str(), hint)
    }

    /// The deadline for a command about `what` (`INVOKE`, `request`...) due by `deadline_ms`
    /// (Unix epoch ms; 0: none), by the same rule.
    pub fn before(&mut self, deadline_ms: u64, what: &str, hint: &'static str) -> Option<Deadline> {
        if deadline_ms == 0 {
            return None;
        }
        let remaining = time_left(deadline_ms);
        let margin = usable_margin(self.configured, remaining);
        if margin < self.configured && !self.cut_logged {
            self.cut_logged = true;
            warn!(
                "{TIMEOUT_MARGIN_ENV}={} is more than half of the {} ms this {} had left: \
                 stopping the handler {} ms before the deadline instead (never more than half \
                 the time left; logged once)",
                self.configured.as_millis(),
                remaining.as_millis(),
                what,
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
