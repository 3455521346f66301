//! Running a user's command: how a command line is started ([`CommandLine`], checked before
//! anything runs with [`CommandLine::check`]), running it with stdin, a deadline and its own
//! process group ([`Executor`]), and the per-event mode built on it ([`PerEvent`]).

mod check;
mod executor;
mod failure;
mod framing;
mod group;
mod line;
mod long_lived;
mod margin;
mod output;
mod per_event;
mod persistent;

pub use executor::{Deadline, Executor, Input, Leftovers};
pub use failure::{AckProblem, CommandFailure};
pub use framing::as_line;
pub use group::{group_alive, kill_slot, request_stop, signal_group, stop_requested, Slot};
pub use line::CommandLine;
pub use long_lived::LongLived;
pub use margin::{now_epoch_ms, time_left, Margin};
pub use per_event::{PerEvent, MANAGED_ENV};
pub use persistent::Persistent;

use crate::api::Event;

/// How the runner hands an event to the handler, whichever mode runs it.
pub trait EventHandler {
    /// Runs the handler for `event`, whose bytes as received are `body`.
    fn handle(&mut self, event: &Event, body: &[u8]) -> Result<(), CommandFailure>;

    /// The extension is done with the handler (it exits): nothing of it may be left running.
    fn end(&mut self) {}
}
