//! What `/proc` says about a process: open file descriptors, threads, RSS, children (zombies
//! included), process-group members; and a sampler that watches them over a long run.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::process::wait_for;

/// `(state, ppid, pgrp)` of a process, from `/proc/<pid>/stat`.
pub fn stat(pid: i32) -> Option<(String, i32, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Every pid in `/proc` right now.
fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The children of `ppid` (zombies included), with their state.
pub fn children(ppid: i32) -> Vec<(i32, String)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let (state, parent, _) = stat(pid)?;
            (parent == ppid).then_some((pid, state))
        })
        .collect()
}

/// The children of `ppid` that are zombies (exited, not reaped).
pub fn zombies(ppid: i32) -> Vec<i32> {
    children(ppid)
        .into_iter()
        .filter(|(_, state)| state == "Z")
        .map(|(pid, _)| pid)
        .collect()
}

/// Whether `pid` is still a child of `ppid` (alive or a zombie not yet reaped).
pub fn is_child_of(pid: i32, ppid: i32) -> bool {
    stat(pid).is_some_and(|(_, parent, _)| parent == ppid)
}

/// The live (not zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat(pid).is_some_and(|(state, _, pgrp)| pgrp == pgid && state != "Z" && state != "X")
        })
        .collect()
}

/// What each open file descriptor of `pid` points at (`"3 -> socket:[123]"`), sorted.
pub fn fds(pid: i32) -> Vec<String> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<String> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            Some(format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect();
    fds.sort();
    fds
}

/// How many file descriptors `pid` has open.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

pub fn thread_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Open fds, threads and RSS of a process at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: u64,
}

impl Usage {
    /// `None` once the process is gone.
    pub fn of(pid: i32) -> Option<Usage> {
        Some(Usage {
            rss_kib: rss_kib(pid)?,
            fds: fd_count(pid),
            threads: thread_count(pid),
        })
    }
}

/// The most RSS may grow from the first thousand events to the last: 25 % or 512 KiB, whichever
/// is bigger. Allocators keep what they once used and round up, so a process that leaks nothing
/// still moves by some pages (up to ~200 KiB seen here, in 10 000 telemetry batches); for the
/// debug binary's ~6.5 MiB the bound is 25 % (1.6 MiB), which a leak of 200 bytes per event
/// crosses in the 8 000 events between the two windows (checked with such a leak put in).
pub fn rss_bound_kib(first_kib: u64) -> u64 {
    (first_kib + first_kib / 4).max(first_kib + 512)
}

/// Panics unless `last`'s fds and threads equal `first`'s and its RSS is within
/// [`rss_bound_kib`] of `first`'s (each the largest value of its window).
pub fn assert_flat(first: &[Usage], last: &[Usage], what: &str) {
    assert!(
        !first.is_empty() && !last.is_empty(),
        "{what}: no samples ({} first, {} last)",
        first.len(),
        last.len()
    );
    let max = |window: &[Usage], f: fn(&Usage) -> u64| window.iter().map(f).max().unwrap();
    let min = |window: &[Usage], f: fn(&Usage) -> u64| window.iter().map(f).min().unwrap();
    let summary = format!(
        "{what}: first window fds {}..={}, threads {}..={}, RSS {}..={} KiB; last window fds \
         {}..={}, threads {}..={}, RSS {}..={} KiB",
        min(first, |u| u.fds as u64),
        max(first, |u| u.fds as u64),
        min(first, |u| u.threads as u64),
        max(first, |u| u.threads as u64),
        min(first, |u| u.rss_kib),
        max(first, |u| u.rss_kib),
        min(last, |u| u.fds as u64),
        max(last, |u| u.fds as u64),
        min(last, |u| u.threads as u64),
        max(last, |u| u.threads as u64),
        min(last, |u| u.rss_kib),
        max(last, |u| u.rss_kib),
    );
    eprintln!("{summary}");
    for (name, f) in [
        ("fds", (|u: &Usage| u.fds as u64) as fn(&Usage) -> u64),
        ("threads", |u: &Usage| u.threads as u64),
    ] {
        assert_eq!(
            (min(last, f), max(last, f)),
            (min(first, f), max(first, f)),
            "{name} not flat: {summary}"
        );
    }
    let bound = rss_bound_kib(max(first, |u| u.rss_kib));
    assert!(
        max(last, |u| u.rss_kib) <= bound,
        "RSS grew past {bound} KiB: {summary}"
    );
}

/// The pid of a process that a hook needs before `spawn` has returned it.
#[derive(Clone, Default)]
pub struct PidSlot(Arc<AtomicU32>);

impl PidSlot {
    pub fn set(&self, pid: u32) {
        self.0.store(pid, Ordering::SeqCst);
    }

    /// Waits (up to 2 s) for `set`.
    pub fn get(&self) -> i32 {
        let mut pid = 0;
        wait_for(Duration::from_secs(2), || {
            pid = self.0.load(Ordering::SeqCst);
            pid != 0
        });
        pid as i32
    }
}

/// What a [`Sampler`] saw.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// `(since start, usage)`, one per round.
    pub samples: Vec<(Duration, Usage)>,
    /// Children found as zombies that were still zombies (the same pid) `ZOMBIE_GRACE` or more
    /// later: never reaped. (The extension reaps a command right after killing what it left in
    /// its group, so a zombie may be seen for an instant.)
    pub lasting_zombies: Vec<i32>,
    /// How many times the children were looked at.
    pub zombie_rounds: usize,
    /// Every zombie seen, even for an instant.
    pub zombies_seen: usize,
}

/// How long a child may stay a zombie before it counts as never reaped.
pub const ZOMBIE_GRACE: Duration = Duration::from_millis(1000);

/// A thread that samples a process's [`Usage`] and its zombie children every `every` until
/// [`Sampler::stop`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    watch: Arc<Mutex<Watch>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: i32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Arc::new(Mutex::new(Watch::default()));
        let thread = {
            let (stop, watch) = (stop.clone(), watch.clone());
            thread::spawn(move || {
                let t0 = Instant::now();
                // Zombie pid -> when it was first seen as one.
                let mut first_seen: Vec<(i32, Instant)> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Some(usage) = Usage::of(pid) else { break };
                    let now = Instant::now();
                    let zombies = zombies(pid);
                    first_seen.retain(|(z, _)| zombies.contains(z));
                    let mut w = watch.lock().unwrap();
                    w.samples.push((t0.elapsed(), usage));
                    w.zombie_rounds += 1;
                    for z in zombies {
                        match first_seen.iter().find(|(seen, _)| *seen == z) {
                            Some((_, at)) if now.duration_since(*at) >= ZOMBIE_GRACE => {
                                if !w.lasting_zombies.contains(&z) {
                                    w.lasting_zombies.push(z);
                                }
                            }
                            Some(_) => {}
                            None => {
                                w.zombies_seen += 1;
                                first_seen.push((z, now));
                            }
                        }
                    }
                    drop(w);
                    thread::sleep(every);
                }
            })
        };
        Sampler {
            stop,
            watch,
            thread: Some(thread),
        }
    }

    /// What was seen so far.
    pub fn watch(&self) -> Watch {
        self.watch.lock().unwrap().clone()
    }

    /// Stops the thread; returns everything seen.
    pub fn stop(mut self) -> Watch {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.watch()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// CPU time (user + system) `pid` has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / per_second))
}

/// Polls until `pid` is gone; the epoch ms at which it was first seen gone, or `None` if it was
/// still alive at `limit_ms` (epoch ms).
pub fn gone_at(pid: i32, limit_ms: u64) -> Option<u64> {
    loop {
        let now = super::now_ms();
        if !super::pid_alive(pid) {
            return Some(now);
        }
        if now > limit_ms {
            return None;
        }
        std::thread::sleep(super::ms(1));
    }
}
