//! `lambda-shell-extension`: an AWS Lambda extension that runs a command for every lifecycle
//! event, and the blocking Extensions API client it is built on.
//!
//! The public API is the client, and a listener for the Telemetry API:
//! - [`api`]: the wire types and constants.
//! - [`client`]: [`client::RegistrationClient`] and [`client::InvocationClient`].
//! - `telemetry` (feature `listener`, on by default): `telemetry::Listener`, the HTTP server
//!   Lambda delivers telemetry batches to.
//!
//! With `default-features = false` the crate is that client alone (on `ureq`, `serde` and
//! `serde_json`); the feature `listener` adds the listener (on `tiny_http` and `log`). The default
//! feature `cli` adds what only the binary needs (`clap`, `env_logger`, `signal-hook`, `libc`,
//! and `listener`) and the binary's own modules: its flags, the event loop, running a command,
//! signal handling. Those modules are public only so the binary and the integration tests can
//! reach them; they are hidden from the documentation and are not part of the public API (they
//! change without notice).

#![warn(missing_docs)]

pub mod api;
pub mod client;
#[cfg(feature = "listener")]
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
pub mod logging;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod proxy;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod runner;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod signals;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod spawn;
