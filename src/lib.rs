//! `lambda-shell-extension`: an AWS Lambda extension that runs a command for every lifecycle
//! event, and the blocking Extensions API client it is built on.
//!
//! The public API is the client:
//! - [`api`]: the wire types and constants.
//! - [`client`]: [`client::RegistrationClient`] and [`client::InvocationClient`].
//!
//! With `default-features = false` the crate is that client alone (on `ureq`, `serde` and
//! `serde_json`). The default feature `cli` adds what only the binary needs (`clap`,
//! `env_logger`, `signal-hook`, `log`, `libc`) and the binary's own modules: its flags, the event
//! loop, running a command, signal handling. Those modules are public only so the binary and the
//! integration tests can reach them; they are hidden from the documentation and are not part of
//! the public API (they change without notice).

#![warn(missing_docs)]

pub mod api;
pub mod client;
#[cfg(feature = "cli")]
pub mod telemetry;

// The binary's internals (feature `cli`): not public API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod command;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod config;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod runner;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod signals;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod spawn;
