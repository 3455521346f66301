//! A minimal Lambda extension on the library alone (it builds with `--no-default-features`):
//! register for INVOKE and SHUTDOWN, print every event, exit at SHUTDOWN.
//!
//! Lambda starts an extension from `/opt/extensions/<name>` with `AWS_LAMBDA_RUNTIME_API` set;
//! [`RegistrationClient::from_env`] reads both. To try it against a local emulator:
//!
//! ```sh
//! AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 cargo run --example minimal_extension
//! ```

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_shell_extension::api::Event;
use lambda_shell_extension::client::{ClientError, RegistrationClient};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("minimal_extension: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), ClientError> {
    // The crate's own agent (no proxy), AWS_LAMBDA_RUNTIME_API, and the file name of argv[0].
    let (client, registration) = RegistrationClient::from_env().register_default()?;
    println!(
        "{} registered for function {} ({})",
        client.extension_name(),
        registration.function_name,
        registration.function_version
    );
    loop {
        // Asking for the next event also tells Lambda this extension is done with the last one.
        let next = client.next_event()?;
        match next.event {
            Event::Invoke(invoke) => println!(
                "INVOKE {}: {} ms left",
                invoke.request_id,
                ms_until(invoke.deadline_ms)
            ),
            Event::Shutdown(shutdown) => {
                println!("SHUTDOWN: {}", shutdown.shutdown_reason);
                return Ok(());
            }
            // `Event` is `#[non_exhaustive]`: a kind of event added later lands here.
            other => println!("{:?}", other.lifecycle_event()),
        }
    }
}

/// Milliseconds from now to `deadline_ms` (Unix epoch milliseconds, as in the events); 0 if past.
fn ms_until(deadline_ms: u64) -> u64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_millis() as u64);
    deadline_ms.saturating_sub(now_ms)
}
