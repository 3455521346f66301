//! Telemetry: receiving the batches Lambda's Telemetry API delivers, and queueing them for the
//! telemetry command.
//!
//! The public part is [`Listener`] (feature `listener`): see [`listener`].

pub mod listener;
pub use listener::{Acknowledgement, Batch, Listener, MAX_BODY_BYTES, SANDBOX_HOST};

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod queue;
