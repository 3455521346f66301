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

use std::sync::atomic::Ordering;

use crate::command::{group_alive, signal_group, RUNNING_GROUP, STARTING};

/// How long the command's group gets to run its own TERM trap before it is killed.
const GRACE: Duration = Duration::from_millis(500);

/// Starts the thread that handles SIGTERM and SIGINT.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                stop_running_command();
                warn!("received signal {signal}; exiting");
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// SIGTERM to the running command's group, then SIGKILL to whatever is left after the grace time.
fn stop_running_command() {
    let give_up = Instant::now() + GRACE;
    // A command being spawned right now gets its group id in a moment: wait for it, so that it
    // is not left behind running.
    let group = loop {
        let group = RUNNING_GROUP.load(Ordering::SeqCst);
        if group != STARTING || Instant::now() >= give_up {
            break group;
        }
        thread::sleep(Duration::from_millis(1));
    };
    if group <= 0 {
        return;
    }
    signal_group(group, libc::SIGTERM);
    while group_alive(group) && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(10));
    }
    signal_group(group, libc::SIGKILL);
}
