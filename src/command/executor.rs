//! Running a user's command: spawn it in its own process group, feed it stdin, copy its output,
//! enforce a deadline, and leave nothing of it behind.
//!
//! One thread does all of it with `poll(2)`: the command's exit (a pidfd), its stdout and stderr,
//! and its stdin (written as fast as the command reads). A command that never reads stdin, writes
//! megabytes, or leaves a background child holding its pipes open cannot block the extension.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::group::{self, signal_group, Slot};
use super::output::{
    keep_forwarding, pidfd_open, pollfd, tail_text, Output, Streams, READ_CHUNK_BYTES,
};
use super::{CommandFailure, CommandLine};
use crate::spawn::{self, Environment, Stdin};

/// When to stop a command: SIGTERM to its group first, SIGKILL later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub terminate_at: Instant,
    pub kill_at: Instant,
    /// How long the command may run before SIGTERM, for messages.
    pub allowed: Duration,
    /// How long before the event's deadline SIGTERM is sent, for messages.
    pub margin: Duration,
    /// What to do about a command that misses this deadline, for messages.
    pub hint: &'static str,
}

impl Deadline {
    /// For an event whose deadline is `remaining` from now: SIGTERM `margin` before it, SIGKILL
    /// `margin / 2` before it, so the group is gone by the deadline itself.
    pub fn within(remaining: Duration, margin: Duration, hint: &'static str) -> Deadline {
        let now = Instant::now();
        let allowed = remaining.saturating_sub(margin);
        Deadline {
            terminate_at: now + allowed,
            kill_at: now + remaining.saturating_sub(margin / 2),
            allowed,
            margin,
            hint,
        }
    }
}

/// What the command gets on stdin.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Nothing (`/dev/null`).
    Nothing,
    /// These bytes, then end of file.
    Bytes(&'a [u8]),
}

/// What happens to the command's process group once the command itself has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Kill whatever is left (event handlers: nothing may run frozen between invokes).
    Kill,
    /// Let it run (the init command may start a sidecar).
    KeepRunning,
}

/// Runs commands one after another, reusing one output buffer and one copy of the environment.
pub struct Executor {
    buffer: Vec<u8>,
    environment: Environment,
    /// The output pipes shared by every command whose leftovers are killed (created on first
    /// use); a command whose background children may live on gets pipes of its own.
    shared: Option<Streams>,
    exit_watch: ExitWatch,
    /// Where the signal thread finds the group of the command running now.
    slot: Slot,
}

/// How the end of a command is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitWatch {
    /// A pidfd in the poll set, falling back to [`ExitWatch::Polling`] where pidfds are
    /// unavailable (Linux before 5.3, some sandboxes).
    Pidfd,
    /// `waitpid(WNOHANG)` every few milliseconds.
    Polling,
}

impl Executor {
    /// An executor whose commands inherit this process's environment plus `fixed`, except the
    /// `managed` variables, which only ever come from the `env` given to [`Executor::run`].
    pub fn new(managed: &[&str], fixed: &[(&str, &str)]) -> Executor {
        Executor {
            buffer: vec![0; READ_CHUNK_BYTES],
            environment: Environment::capture(managed, fixed),
            shared: None,
            exit_watch: ExitWatch::Pidfd,
            slot: Slot::Events,
        }
    }

    /// The same executor, for commands that run at the same time as the event handler's.
    pub fn in_slot(mut self, slot: Slot) -> Executor {
        self.slot = slot;
        self
    }

    /// Runs `command` to completion (or to its deadline) with `env` added to the environment,
    /// in a process group of its own (so a deadline or a signal reaches its children too).
    pub fn run(
        &mut self,
        command: &CommandLine,
        input: Input<'_>,
        env: &[(&str, &str)],
        deadline: Option<Deadline>,
        leftovers: Leftovers,
    ) -> Result<(), CommandFailure> {
        let (argv, lookup) = command.argv();
        let stdin = match input {
            Input::Nothing => Stdin::Null,
            Input::Bytes(_) => Stdin::Piped,
        };
        let not_started = |error| CommandFailure::NotStarted {
            command: command.line().to_string(),
            error,
        };
        let mut own_streams = None;
        let streams = match (leftovers, &mut self.shared) {
            (Leftovers::Kill, Some(shared)) => shared,
            (Leftovers::Kill, shared @ None) => shared.insert(Streams::new().map_err(not_started)?),
            (Leftovers::KeepRunning, _) => own_streams.insert(Streams::new().map_err(not_started)?),
        };
        let stopped = |signal| CommandFailure::Stopped {
            command: command.line().to_string(),
            signal,
        };
        group::begin_spawn(self.slot).map_err(stopped)?;
        let spawned = spawn::spawn(
            &argv,
            lookup,
            &self.environment,
            env,
            stdin,
            &streams.pipes,
            None,
        );
        let process = spawned.map_err(|error| {
            group::set_running(self.slot, 0);
            not_started(error)
        })?;
        let group = process.pid;
        group::set_running(self.slot, group);
        let stdin_bytes = match input {
            Input::Nothing => &[][..],
            Input::Bytes(bytes) => bytes,
        };
        let mut run = Running {
            stdin: process.stdin.map(|stdin| (stdin, stdin_bytes)),
            streams,
            stderr_tail: Vec::new(),
            stage: Stage::Running,
        };
        let exit_watch = match self.exit_watch {
            ExitWatch::Pidfd => {
                let pidfd = pidfd_open(group);
                if pidfd.is_none() {
                    // Not available here: do not ask again for every command.
                    self.exit_watch = ExitWatch::Polling;
                }
                pidfd
            }
            ExitWatch::Polling => None,
        };
        let status = run.supervise(group, exit_watch, deadline, leftovers, &mut self.buffer);
        group::set_running(self.slot, 0);
        let (stage, stderr_tail) = (run.stage, tail_text(&run.stderr_tail));
        if let Some(streams) = own_streams {
            keep_forwarding(streams);
        }
        // Whatever ended the command, a signal to the extension is the reason to give up on it.
        if let Some(signal) = group::stop_requested() {
            return Err(stopped(signal));
        }
        let command = command.line().to_string();
        let status = status.map_err(|error| CommandFailure::NotStarted {
            command: command.clone(),
            error,
        })?;
        if stage != Stage::Running {
            if let Some(deadline) = deadline {
                return Err(CommandFailure::TimedOut {
                    command,
                    deadline: Box::new(deadline),
                    stderr_tail,
                });
            }
        }
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(code), _) => Err(CommandFailure::Exited {
                command,
                code,
                stderr_tail,
            }),
            (None, signal) => Err(CommandFailure::Killed {
                command,
                signal: signal.unwrap_or(0),
                stderr_tail,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Running,
    Terminated,
    Killed,
}

struct Running<'a> {
    stdin: Option<(File, &'a [u8])>,
    streams: &'a mut Streams,
    stderr_tail: Vec<u8>,
    stage: Stage,
}

impl Running<'_> {
    /// Feeds stdin, copies output and enforces the deadline until the command exits; then deals
    /// with its group's leftovers and reaps it.
    /// Without a pidfd (`exit_watch`), checks for the exit every few milliseconds.
    fn supervise(
        &mut self,
        group: i32,
        exit_watch: Option<OwnedFd>,
        deadline: Option<Deadline>,
        leftovers: Leftovers,
        buffer: &mut [u8],
    ) -> io::Result<ExitStatus> {
        self.write_stdin();
        let status = loop {
            let now = Instant::now();
            if let Some(deadline) = deadline {
                if self.stage == Stage::Running && now >= deadline.terminate_at {
                    self.stage = Stage::Terminated;
                    signal_group(group, libc::SIGTERM);
                }
                if self.stage == Stage::Terminated && now >= deadline.kill_at {
                    self.stage = Stage::Killed;
                    signal_group(group, libc::SIGKILL);
                }
            }
            let mut timeout = match (deadline, self.stage) {
                (Some(d), Stage::Running) => Some(d.terminate_at.saturating_duration_since(now)),
                (Some(d), Stage::Terminated) => Some(d.kill_at.saturating_duration_since(now)),
                _ => None,
            };
            if exit_watch.is_none() {
                timeout = Some(timeout.map_or(Duration::from_millis(5), |t| {
                    t.min(Duration::from_millis(5))
                }));
            }
            if self.wait_once(exit_watch.as_ref(), timeout, buffer)? {
                // Exited but not reaped yet, so its group id cannot be reused: whatever it left
                // in its group dies now rather than running frozen between invokes.
                kill_leftovers(group, leftovers);
                break spawn::wait(group, false)?.unwrap_or_default();
            }
            if exit_watch.is_none() {
                if let Some(status) = spawn::wait(group, true)? {
                    // Reaped already; leftovers, if any, still hold the group id.
                    kill_leftovers(group, leftovers);
                    break status;
                }
            }
        };
        self.after_exit(buffer);
        Ok(ExitStatus::from_raw(status))
    }

    /// Once the command has exited: stop feeding it, and copy what it wrote.
    fn after_exit(&mut self, buffer: &mut [u8]) {
        self.stdin = None;
        self.streams.copy_available(&mut self.stderr_tail, buffer);
    }

    /// Polls once; returns true when the command has exited.
    fn wait_once(
        &mut self,
        exit_watch: Option<&OwnedFd>,
        timeout: Option<Duration>,
        buffer: &mut [u8],
    ) -> io::Result<bool> {
        const EXIT: usize = 0;
        const STDOUT: usize = 1;
        const STDERR: usize = 2;
        const STDIN: usize = 3;
        let fd_or_none = |fd: Option<RawFd>| fd.unwrap_or(-1);
        let streams = &*self.streams;
        let open_fd = |output: &Output, pipe: &File| {
            if output.open {
                pipe.as_raw_fd()
            } else {
                -1
            }
        };
        let mut fds = [
            pollfd(
                fd_or_none(exit_watch.map(|fd| fd.as_raw_fd())),
                libc::POLLIN,
            ),
            pollfd(
                open_fd(&streams.stdout, &streams.pipes.stdout),
                libc::POLLIN,
            ),
            pollfd(
                open_fd(&streams.stderr, &streams.pipes.stderr),
                libc::POLLIN,
            ),
            pollfd(
                fd_or_none(self.stdin.as_ref().map(|(s, _)| s.as_raw_fd())),
                libc::POLLOUT,
            ),
        ];
        let timeout_ms = timeout.map_or(-1, |t| {
            // Round up, so a deadline is never polled for in a busy loop of zero-ms waits.
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            };
        }
        let ready = [fds[STDOUT].revents != 0, fds[STDERR].revents != 0];
        self.streams
            .copy_ready(ready, &mut self.stderr_tail, buffer);
        if fds[STDIN].revents != 0 {
            self.write_stdin();
        }
        Ok(fds[EXIT].revents != 0)
    }

    /// Writes as much of the input as the pipe takes now; closes stdin when done or when the
    /// command has closed its end (it does not want the rest: not an error).
    fn write_stdin(&mut self) {
        let Some((stdin, remaining)) = self.stdin.as_mut() else {
            return;
        };
        while !remaining.is_empty() {
            match stdin.write(remaining) {
                Ok(written) => *remaining = &remaining[written..],
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.stdin = None;
    }
}

fn kill_leftovers(group: i32, leftovers: Leftovers) {
    if leftovers == Leftovers::Kill {
        signal_group(group, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_within_terminates_margin_before_and_kills_half_margin_before() {
        let before = Instant::now();
        let deadline =
            Deadline::within(Duration::from_millis(1000), Duration::from_millis(100), "");
        assert_eq!(deadline.allowed, Duration::from_millis(900));
        assert!(deadline.terminate_at >= before + Duration::from_millis(900));
        assert!(deadline.kill_at >= before + Duration::from_millis(950));
        assert!(deadline.kill_at <= Instant::now() + Duration::from_millis(950));
        let past = Deadline::within(Duration::ZERO, Duration::from_millis(100), "");
        assert!(past.terminate_at <= Instant::now() && past.kill_at <= Instant::now());
    }

    /// The fallback for kernels without pidfds: same outcomes, found by polling.
    #[test]
    fn without_pidfds_exits_and_deadlines_are_still_seen() {
        for exit_watch in [ExitWatch::Pidfd, ExitWatch::Polling] {
            let mut executor = Executor::new(&[], &[]);
            executor.exit_watch = exit_watch;
            let ok = CommandLine::parse("cat > /dev/null").unwrap();
            let input = vec![b'x'; 200_000];
            let outcome = executor.run(&ok, Input::Bytes(&input), &[], None, Leftovers::Kill);
            assert!(outcome.is_ok(), "{exit_watch:?}: {outcome:?}");

            let failing = CommandLine::parse("exit 3").unwrap();
            let outcome = executor.run(&failing, Input::Nothing, &[], None, Leftovers::Kill);
            assert!(
                matches!(outcome, Err(CommandFailure::Exited { code: 3, .. })),
                "{outcome:?}"
            );

            let hanging = CommandLine::parse("sleep 30").unwrap();
            let deadline =
                Deadline::within(Duration::from_millis(150), Duration::from_millis(100), "");
            let started = Instant::now();
            let outcome = executor.run(
                &hanging,
                Input::Nothing,
                &[],
                Some(deadline),
                Leftovers::Kill,
            );
            assert!(
                matches!(outcome, Err(CommandFailure::TimedOut { .. })),
                "{outcome:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2), "{exit_watch:?}");
        }
    }
}
