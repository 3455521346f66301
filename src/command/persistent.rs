//! Persistent mode: the handler starts once and gets each event as one line on its stdin,
//! answering each on fd 3; see `docs/persistent-mode.md`.

use std::time::Duration;

use super::framing::as_line;
use super::{CommandFailure, CommandLine, EventHandler, LongLived, Margin, Slot, MANAGED_ENV};
use crate::api::Event;

/// The event handler in persistent mode.
pub struct Persistent {
    process: LongLived,
    margin: Margin,
}

impl Persistent {
    /// The handler, not started yet; `margin` is how long before an event's deadline an
    /// unanswered handler is stopped.
    pub fn new(handler: CommandLine, extension_name: &str, margin: Duration) -> Persistent {
        Persistent {
            process: LongLived::new(
                "handler",
                handler,
                &MANAGED_ENV,
                &[("LAMBDA_EXTENSION_NAME", extension_name)],
                Slot::Events,
            ),
            margin: Margin::new(margin),
        }
    }

    /// Starts the handler (during Init, so its start-up is not paid by the first invoke).
    pub fn start(&mut self) -> Result<(), CommandFailure> {
        self.process.start()
    }
}

impl EventHandler for Persistent {
    fn handle(&mut self, event: &Event, body: &[u8]) -> Result<(), CommandFailure> {
        let deadline = self.margin.deadline(event);
        self.process.deliver(&as_line(body), deadline)?;
        match event {
            Event::Invoke(_) => Ok(()),
            // The last event: stdin closes, and the handler has until the deadline to exit.
            Event::Shutdown(_) => self.process.finish(deadline),
        }
    }

    fn end(&mut self) {
        self.process.stop();
    }
}
