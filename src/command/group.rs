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

/// The process group of the command running now, for the signal handler: 0 when none runs,
/// [`STARTING`] while one is being spawned (so a signal arriving then waits for its group).
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);
/// The value of [`RUNNING_GROUP`] between the start of a spawn and the group being known.
const STARTING: i32 = -1;
/// The signal that asked the extension to stop, 0 while none has.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signal that asked the extension to stop, if one has: no command may start after it, and
/// no failure it causes is reported (the extension is exiting with 128 + signal).
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Records a stop by `signal`, then returns the process group of the command running now (0 if
/// none), waiting up to `wait` for one that is being spawned right now to get its group.
pub fn request_stop(signal: i32, wait: Duration) -> i32 {
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
    let give_up = Instant::now() + wait;
    loop {
        let group = RUNNING_GROUP.load(Ordering::SeqCst);
        if group != STARTING || Instant::now() >= give_up {
            return group.max(0);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Announces a spawn; `Err(signal)` when a stop was requested, and the command must not start.
pub(super) fn begin_spawn() -> Result<(), i32> {
    RUNNING_GROUP.store(STARTING, Ordering::SeqCst);
    match stop_requested() {
        None => Ok(()),
        Some(signal) => {
            RUNNING_GROUP.store(0, Ordering::SeqCst);
            Err(signal)
        }
    }
}

/// The spawn started a command in `group` (0: it did not start).
pub(super) fn set_running(group: i32) {
    RUNNING_GROUP.store(group, Ordering::SeqCst);
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
