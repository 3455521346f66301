//! The process group of the command running now, and a stop requested by a signal: what the
//! signal thread and the thread running commands share.
//!
//! The order of operations makes a signal win every race: the signal thread records the stop
//! before it looks for a running group, and a spawn announces itself ([`STARTING`]) before it
//! checks for a stop. So either the spawn sees the stop and never starts the command, or the
//! signal thread sees the spawn and waits for its group to stop it.

use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How many commands may run at once: the event handler, the telemetry command and the
/// proxy's request or response handler.
const SLOTS: usize = 3;

/// The process group of the command each slot runs now, for the signal handler: 0 when none
/// runs, [`STARTING`] while one is being spawned (so a signal arriving then waits for its group).
static RUNNING_GROUPS: [AtomicI32; SLOTS] =
    [AtomicI32::new(0), AtomicI32::new(0), AtomicI32::new(0)];
/// The value of a running group between the start of a spawn and the group being known.
const STARTING: i32 = -1;
/// The signal that asked the extension to stop, 0 while none has.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Which of the commands that may run at the same time an executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The init command and the event handler (one after the other, on the main thread).
    Events = 0,
    /// The telemetry command (on the delivery thread).
    Telemetry = 1,
    /// The Runtime API proxy's request and response handlers (one at a time).
    Proxy = 2,
}

/// The signal that asked the extension to stop, if one has: no command may start after it, and
/// no failure it causes is reported (the extension is exiting with 128 + signal).
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Records a stop by `signal`, then returns the process groups of the commands running now,
/// waiting up to `wait` for any being spawned right now to get its group.
pub fn request_stop(signal: i32, wait: Duration) -> Vec<i32> {
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
    let give_up = Instant::now() + wait;
    RUNNING_GROUPS
        .iter()
        .filter_map(|slot| loop {
            let group = slot.load(Ordering::SeqCst);
            if group != STARTING || Instant::now() >= give_up {
                break (group > 0).then_some(group);
            }
            thread::sleep(Duration::from_millis(1));
        })
        .collect()
}

/// Announces a spawn in `slot`; `Err(signal)` when a stop was requested, and the command must
/// not start.
pub(super) fn begin_spawn(slot: Slot) -> Result<(), i32> {
    RUNNING_GROUPS[slot as usize].store(STARTING, Ordering::SeqCst);
    match stop_requested() {
        None => Ok(()),
        Some(signal) => {
            set_running(slot, 0);
            Err(signal)
        }
    }
}

/// The spawn in `slot` started a command in `group` (0: none runs).
pub(super) fn set_running(slot: Slot, group: i32) {
    RUNNING_GROUPS[slot as usize].store(group, Ordering::SeqCst);
}

/// SIGKILL to the group of the command running in `slot`, if any: for when the extension's own
/// deadline has come and the command may not finish.
pub fn kill_slot(slot: Slot) {
    signal_group(
        RUNNING_GROUPS[slot as usize].load(Ordering::SeqCst),
        libc::SIGKILL,
    );
}

/// Sends `signal` to every process in `group` (ignoring "no such group": it is already gone).
pub fn signal_group(group: i32, signal: i32) {
    if group > 0 {
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe {
            libc::killpg(group, signal);
        }
    }
}

/// True while any process (zombies included) is left in `group`.
pub fn group_alive(group: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    group > 0 && unsafe { libc::killpg(group, 0) } == 0
}
