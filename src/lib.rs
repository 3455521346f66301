//! `lambda-shell-extension`: an AWS Lambda extension that runs a command for every lifecycle
//! event, and the blocking Extensions API client it is built on.
//!
//! - [`api`]: the wire types and constants.
//! - [`client`]: [`client::RegistrationClient`] and [`client::InvocationClient`].
//! - [`config`]: the binary's flags and their environment-variable twins.
//! - [`command`]: running a command with stdin, a deadline and its own process group.
//! - [`runner`]: the event loop of the binary.
//! - [`spawn`]: starting a process with `posix_spawn`, its environment prepared once.
//! - [`signals`]: SIGTERM/SIGINT handling.

pub mod api;
pub mod client;
pub mod command;
pub mod config;
pub mod runner;
pub mod signals;
pub mod spawn;
