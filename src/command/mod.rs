//! Running a user's command: how a command line is started ([`CommandLine`], checked before
//! anything runs with [`CommandLine::check`]), running it with stdin, a deadline and its own
//! process group ([`Executor`]), and the per-event mode built on it ([`PerEvent`]).

mod check;
mod executor;
mod failure;
mod group;
mod line;
mod output;
mod per_event;

pub use executor::{Deadline, Executor, Input, Leftovers};
pub use failure::CommandFailure;
pub use group::{group_alive, kill_slot, request_stop, signal_group, stop_requested, Slot};
pub use line::CommandLine;
pub use per_event::{now_epoch_ms, time_left, PerEvent, MANAGED_ENV};
