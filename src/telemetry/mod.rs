//! Telemetry: receiving the batches Lambda's Telemetry API delivers, and queueing them for the
//! telemetry command.

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod queue;
