//! SIGTERM and SIGINT to the extension: stop the running command's process group and exit.
//!
//! Lambda itself announces shutdown with the SHUTDOWN event, not a signal; a signal comes from a
//! person or another supervisor, and means "stop now". The main thread may be blocked in the
//! event/next long poll, so a dedicated thread acts on it.

use std::thread;
use std::time::{Duration, Instant};

use log::warn;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::command::{group_alive, request_stop, signal_group};

/// How long the command's group gets to run its own TERM trap before it is killed.
const GRACE: Duration = Duration::from_millis(500);

/// Starts the thread that handles SIGTERM and SIGINT.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                warn!("received signal {signal}; stopping the running command and exiting");
                stop_running_command(signal);
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// Waits for the signal thread to end the process, once a stop was requested: the thread
/// running commands must neither report the failure the signal caused nor go on.
pub fn wait_for_exit() -> ! {
    loop {
        thread::park();
    }
}

/// Records the stop (no command starts after it), then SIGTERM to the running commands' groups
/// and SIGKILL to whatever is left after the grace time.
fn stop_running_command(signal: i32) {
    let give_up = Instant::now() + GRACE;
    let groups = request_stop(signal, GRACE);
    for &group in &groups {
        signal_group(group, libc::SIGTERM);
    }
    while groups.iter().any(|&group| group_alive(group)) && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(10));
    }
    for &group in &groups {
        signal_group(group, libc::SIGKILL);
    }
}
