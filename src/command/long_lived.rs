//! A long-lived command fed one line at a time, answering each on fd 3: the process behind the
//! persistent mode of the event handler and of the telemetry command.
//!
//! Like the executor, one thread does everything with `poll(2)`: writing the line (as fast as
//! the command reads), copying its stdout and stderr, reading its answer, noticing its exit (a
//! pidfd) and enforcing the deadline. The command stays in its process group between lines, and
//! that group is registered with the signal thread for as long as it lives.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::framing::{parse_ack, Ack, MAX_ACK_BYTES};
use super::group::{self, signal_group, Slot};
use super::output::{pidfd_open, pollfd, tail_text, Streams, READ_CHUNK_BYTES};
use super::{AckProblem, CommandFailure, CommandLine, Deadline};
use crate::spawn::{self, Environment, Stdin, ACK_FD};

/// How many times in a row the command may end before answering its first line.
const CRASHES_ON_START_LIMIT: u32 = 3;
/// What to do about a command that does not exit once its stdin has closed.
const EXIT_HINT: &str = "a persistent handler must exit soon after its stdin reaches end of file \
     (which follows the SHUTDOWN line)";

/// A long-lived command: started once, restarted when it has ended, fed one line at a time.
pub struct LongLived {
    /// What the command is, for log lines: `handler`, `telemetry command`.
    role: &'static str,
    command: CommandLine,
    environment: Environment,
    slot: Slot,
    buffer: Vec<u8>,
    running: Option<Running>,
    /// Times in a row the command ended (or could not start) before answering its first line.
    crashes_on_start: u32,
    /// Set once the command has crashed on start too often: it is not started again.
    given_up: Option<String>,
}

impl LongLived {
    /// A command whose environment is this process's, minus `managed`, plus `fixed` and
    /// `LAMBDA_ACK_FD`; it runs in `slot`. `role` names it in log lines.
    pub fn new(
        role: &'static str,
        command: CommandLine,
        managed: &[&str],
        fixed: &[(&str, &str)],
        slot: Slot,
    ) -> LongLived {
        let ack_fd = ACK_FD.to_string();
        let mut fixed = fixed.to_vec();
        fixed.push(("LAMBDA_ACK_FD", &ack_fd));
        LongLived {
            role,
            command,
            environment: Environment::capture(managed, &fixed),
            slot,
            buffer: vec![0; READ_CHUNK_BYTES],
            running: None,
            crashes_on_start: 0,
            given_up: None,
        }
    }

    /// Starts the command unless it is running.
    pub fn start(&mut self) -> Result<(), CommandFailure> {
        if self.running.is_some() {
            return Ok(());
        }
        if let Some(last) = &self.given_up {
            return Err(self.crash_loop(last.clone()));
        }
        group::begin_spawn(self.slot).map_err(|signal| self.stopped(signal))?;
        match Running::spawn(&self.command, &self.environment) {
            Ok(running) => {
                group::set_running(self.slot, running.pid);
                self.running = Some(running);
                Ok(())
            }
            Err(error) => {
                group::set_running(self.slot, 0);
                let failure = CommandFailure::NotStarted {
                    command: self.command.line().to_string(),
                    error,
                };
                Err(self.crashed_on_start(failure))
            }
        }
    }

    /// Writes `line` (no line feed in it; one is added) to the command's stdin and waits for
    /// its answer on fd 3 until `deadline`. A command that ended since the last line is started
    /// again first.
    pub fn deliver(
        &mut self,
        line: &[u8],
        deadline: Option<Deadline>,
    ) -> Result<(), CommandFailure> {
        if let Some(signal) = group::stop_requested() {
            return Err(self.stopped(signal));
        }
        self.restart_if_ended()?;
        self.start()?;
        let outcome = match self.running.as_mut() {
            None => return Ok(()),
            Some(running) if !running.pending_ack.is_empty() => {
                let early = String::from_utf8_lossy(&running.pending_ack).into_owned();
                Ok(Outcome::Broke(AckProblem::Unsolicited(early)))
            }
            Some(running) if !running.acks_open => Ok(Outcome::Broke(AckProblem::Closed)),
            Some(running) => {
                running.stderr_tail.clear();
                let mut input = Some(Pending { line, written: 0 });
                let outcome =
                    running.supervise(Want::Answer, &mut input, deadline, &mut self.buffer);
                if let Ok(Outcome::Answered(_)) = outcome {
                    running.answered = true;
                }
                outcome
            }
        };
        match outcome {
            Ok(Outcome::Answered(ack)) => {
                self.crashes_on_start = 0;
                match ack {
                    Ack::Ok => Ok(()),
                    Ack::Error(message) => Err(CommandFailure::Reported {
                        command: self.command.line().to_string(),
                        message,
                    }),
                }
            }
            Ok(Outcome::Broke(problem)) => Err(self.protocol_failure(problem)),
            Ok(Outcome::Ended { status, stage }) => {
                Err(self.ended(status, stage, deadline, Ending::Unasked))
            }
            Err(error) => {
                self.stop();
                Err(CommandFailure::NotStarted {
                    command: self.command.line().to_string(),
                    error,
                })
            }
        }
    }

    /// Closes the command's stdin and waits for it to exit until `deadline` (SIGTERM, then
    /// SIGKILL to its group after that). Nothing to do when it is not running.
    pub fn finish(&mut self, deadline: Option<Deadline>) -> Result<(), CommandFailure> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        running.stdin = None;
        let deadline = deadline.map(|deadline| Deadline {
            hint: EXIT_HINT,
            ..deadline
        });
        match running.supervise(Want::Exit, &mut None, deadline, &mut self.buffer) {
            Ok(Outcome::Ended { status, stage }) => {
                match self.ended(status, stage, deadline, Ending::Asked) {
                    CommandFailure::Exited { code: 0, .. } => Ok(()),
                    failure => Err(failure),
                }
            }
            Ok(_) => Ok(()),
            Err(error) => {
                self.stop();
                Err(CommandFailure::NotStarted {
                    command: self.command.line().to_string(),
                    error,
                })
            }
        }
    }

    /// Kills the command's group at once and reaps it (the extension is done with it), after
    /// copying what it has written.
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running
                .streams
                .copy_available(&mut running.stderr_tail, &mut self.buffer);
            signal_group(running.pid, libc::SIGKILL);
            let _ = spawn::wait(running.pid, false);
            group::set_running(self.slot, 0);
        }
    }

    /// A command that ended since the last line is reaped and logged, and started again.
    fn restart_if_ended(&mut self) -> Result<(), CommandFailure> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        if !running.has_ended_since_last_line() {
            return Ok(());
        }
        signal_group(running.pid, libc::SIGKILL);
        let status = spawn::wait(running.pid, false).ok().flatten().unwrap_or(0);
        running
            .streams
            .copy_available(&mut running.stderr_tail, &mut self.buffer);
        let answered = running.answered;
        let tail = tail_text(&running.stderr_tail);
        self.running = None;
        group::set_running(self.slot, 0);
        let failure = status_failure(self.command.line(), status, tail);
        if let Some(signal) = group::stop_requested() {
            return Err(self.stopped(signal));
        }
        if answered {
            warn!(
                "persistent {} {failure} between lines; starting it again",
                self.role
            );
        } else {
            let failure = self.crashed_on_start(failure);
            if matches!(failure, CommandFailure::CrashLoop { .. }) {
                return Err(failure);
            }
            warn!(
                "persistent {} {failure} before answering a line; starting it again",
                self.role
            );
        }
        self.start()?;
        info!("persistent command `{}` started again", self.command.line());
        Ok(())
    }

    /// The command ended (or was stopped) while it was being waited for.
    fn ended(
        &mut self,
        status: i32,
        stage: Stage,
        deadline: Option<Deadline>,
        ending: Ending,
    ) -> CommandFailure {
        let Some(running) = self.running.take() else {
            return status_failure(self.command.line(), status, String::new());
        };
        group::set_running(self.slot, 0);
        let tail = tail_text(&running.stderr_tail);
        if let Some(signal) = group::stop_requested() {
            return self.stopped(signal);
        }
        let command = self.command.line().to_string();
        if let (Stage::Terminated | Stage::Killed, Some(deadline)) = (stage, deadline) {
            return CommandFailure::TimedOut {
                command,
                deadline: Box::new(deadline),
                stderr_tail: tail,
            };
        }
        let failure = status_failure(&command, status, tail);
        match (ending, running.answered) {
            (Ending::Unasked, false) => self.crashed_on_start(failure),
            _ => failure,
        }
    }

    /// The command broke the protocol: its answers can no longer be matched with lines, so it
    /// is stopped (and started again with the next line).
    fn protocol_failure(&mut self, problem: AckProblem) -> CommandFailure {
        let tail = self
            .running
            .as_ref()
            .map(|running| tail_text(&running.stderr_tail))
            .unwrap_or_default();
        self.stop();
        CommandFailure::BadAck {
            command: self.command.line().to_string(),
            problem,
            stderr_tail: tail,
        }
    }

    fn crashed_on_start(&mut self, failure: CommandFailure) -> CommandFailure {
        self.crashes_on_start += 1;
        if self.crashes_on_start < CRASHES_ON_START_LIMIT {
            return failure;
        }
        let last = failure.to_string();
        self.given_up = Some(last.clone());
        self.crash_loop(last)
    }

    fn crash_loop(&self, last: String) -> CommandFailure {
        CommandFailure::CrashLoop {
            command: self.command.line().to_string(),
            crashes: self.crashes_on_start,
            last,
        }
    }

    fn stopped(&self, signal: i32) -> CommandFailure {
        CommandFailure::Stopped {
            command: self.command.line().to_string(),
            signal,
        }
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The failure for a raw wait status (0 included: the caller decides whether that is one).
fn status_failure(command: &str, status: i32, stderr_tail: String) -> CommandFailure {
    let status = ExitStatus::from_raw(status);
    let command = command.to_string();
    match (status.code(), status.signal()) {
        (Some(code), _) => CommandFailure::Exited {
            command,
            code,
            stderr_tail,
        },
        (None, signal) => CommandFailure::Killed {
            command,
            signal: signal.unwrap_or(0),
            stderr_tail,
        },
    }
}

/// Whether the command's end was asked for (its stdin closed) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Asked,
    Unasked,
}

/// What [`Running::supervise`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The answer to the pending line.
    Answer,
    /// The command's exit (its stdin is closed).
    Exit,
}

/// How far a deadline has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Running,
    Terminated,
    Killed,
}

#[derive(Debug)]
enum Outcome {
    Answered(Ack),
    Broke(AckProblem),
    /// Exited and reaped (raw wait status), with whatever was left in its group killed.
    Ended {
        status: i32,
        stage: Stage,
    },
}

/// The line being written, and how much of it (plus its line feed) has gone.
struct Pending<'a> {
    line: &'a [u8],
    written: usize,
}

/// The running command.
struct Running {
    pid: i32,
    /// Our end of its stdin (non-blocking); `None` once closed.
    stdin: Option<File>,
    /// Our end of its fd 3 (non-blocking), and whether it is still open.
    acks: File,
    acks_open: bool,
    /// Bytes read from fd 3 that do not yet make a whole line.
    pending_ack: Vec<u8>,
    exit_watch: Option<OwnedFd>,
    streams: Streams,
    stderr_tail: Vec<u8>,
    /// Whether it has answered a line yet.
    answered: bool,
}

impl Running {
    fn spawn(command: &CommandLine, environment: &Environment) -> io::Result<Running> {
        let (acks, ack_writer) = spawn::pipe()?;
        spawn::set_nonblocking(&acks);
        let streams = Streams::new()?;
        let (argv, lookup) = command.argv();
        let process = spawn::spawn(
            &argv,
            lookup,
            environment,
            &[],
            Stdin::Piped,
            &streams.pipes,
            Some(&ack_writer),
        )?;
        // Only the command's group holds fd 3 now: once they all close it, it reads as ended.
        drop(ack_writer);
        Ok(Running {
            pid: process.pid,
            stdin: process.stdin,
            acks: File::from(acks),
            acks_open: true,
            pending_ack: Vec::new(),
            exit_watch: pidfd_open(process.pid),
            streams,
            stderr_tail: Vec::new(),
            answered: false,
        })
    }

    /// Writes the pending line, copies output and enforces the deadline until `want` happens
    /// (or the command ends first).
    fn supervise(
        &mut self,
        want: Want,
        input: &mut Option<Pending<'_>>,
        deadline: Option<Deadline>,
        buffer: &mut [u8],
    ) -> io::Result<Outcome> {
        const EXIT: usize = 0;
        const STDOUT: usize = 1;
        const STDERR: usize = 2;
        const STDIN: usize = 3;
        const ACKS: usize = 4;
        let mut stage = Stage::Running;
        self.write_input(input);
        loop {
            let now = Instant::now();
            if let Some(deadline) = deadline {
                if stage == Stage::Running && now >= deadline.terminate_at {
                    stage = Stage::Terminated;
                    signal_group(self.pid, libc::SIGTERM);
                }
                if stage == Stage::Terminated && now >= deadline.kill_at {
                    stage = Stage::Killed;
                    signal_group(self.pid, libc::SIGKILL);
                }
            }
            let mut timeout = match (deadline, stage) {
                (Some(d), Stage::Running) => Some(d.terminate_at.saturating_duration_since(now)),
                (Some(d), Stage::Terminated) => Some(d.kill_at.saturating_duration_since(now)),
                _ => None,
            };
            if self.exit_watch.is_none() {
                let poll_every = Duration::from_millis(5);
                timeout = Some(timeout.map_or(poll_every, |t| t.min(poll_every)));
            }
            let listen_for_answer = want == Want::Answer && stage == Stage::Running;
            let open = |open: bool, fd: RawFd| if open { fd } else { -1 };
            let mut fds = [
                pollfd(
                    self.exit_watch.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                    libc::POLLIN,
                ),
                pollfd(
                    open(
                        self.streams.stdout.open,
                        self.streams.pipes.stdout.as_raw_fd(),
                    ),
                    libc::POLLIN,
                ),
                pollfd(
                    open(
                        self.streams.stderr.open,
                        self.streams.pipes.stderr.as_raw_fd(),
                    ),
                    libc::POLLIN,
                ),
                pollfd(
                    match (&self.stdin, &input) {
                        (Some(stdin), Some(_)) => stdin.as_raw_fd(),
                        _ => -1,
                    },
                    libc::POLLOUT,
                ),
                pollfd(
                    open(listen_for_answer && self.acks_open, self.acks.as_raw_fd()),
                    libc::POLLIN,
                ),
            ];
            let timeout_ms = timeout.map_or(-1, |t| {
                // Round up, so a deadline is never polled for in a busy loop of zero-ms waits.
                t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
            let ready =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let output_ready = [fds[STDOUT].revents != 0, fds[STDERR].revents != 0];
            self.streams
                .copy_ready(output_ready, &mut self.stderr_tail, buffer);
            if fds[STDIN].revents != 0 {
                self.write_input(input);
            }
            let mut exited = match &self.exit_watch {
                Some(_) => fds[EXIT].revents != 0,
                None => spawn::has_exited(self.pid)?,
            };
            if listen_for_answer && (fds[ACKS].revents != 0 || exited) {
                let mut answer = self.read_answer();
                if let (Some(Err(AckProblem::Closed)), false) = (&answer, exited) {
                    // A command closes fd 3 as it exits, a moment before its exit is seen.
                    exited = self.exits_within(Duration::from_millis(100))?;
                    answer = self.read_answer();
                }
                match answer {
                    Some(Ok(ack)) => {
                        if output_ready.contains(&true) {
                            // What it wrote before answering goes to the log before the
                            // extension's own line about the event.
                            self.streams.copy_available(&mut self.stderr_tail, buffer);
                        }
                        return Ok(Outcome::Answered(ack));
                    }
                    // An exit explains more than a closed fd 3 does.
                    Some(Err(AckProblem::Closed)) if exited => {}
                    Some(Err(problem)) => return Ok(Outcome::Broke(problem)),
                    None => {}
                }
            }
            if exited {
                // Exited but not reaped yet, so its group id cannot be reused: whatever it left
                // in its group dies now.
                signal_group(self.pid, libc::SIGKILL);
                let status = spawn::wait(self.pid, false)?.unwrap_or_default();
                self.stdin = None;
                self.streams.copy_available(&mut self.stderr_tail, buffer);
                return Ok(Outcome::Ended { status, stage });
            }
        }
    }

    /// Between lines: whether the command has ended (not reaped yet), after reading whatever
    /// it wrote on fd 3 since its last answer (an answer to nothing, for the caller to refuse).
    /// One `poll` looks at both.
    fn has_ended_since_last_line(&mut self) -> bool {
        let Some(pidfd) = &self.exit_watch else {
            self.read_acks(Until::Drained);
            return spawn::has_exited(self.pid).unwrap_or(false);
        };
        let mut fds = [
            pollfd(pidfd.as_raw_fd(), libc::POLLIN),
            pollfd(
                if self.acks_open {
                    self.acks.as_raw_fd()
                } else {
                    -1
                },
                libc::POLLIN,
            ),
        ];
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, 0) } <= 0 {
            return false;
        }
        if fds[1].revents != 0 {
            self.read_acks(Until::Drained);
        }
        fds[0].revents != 0
    }

    /// Reads what fd 3 holds now, without waiting, into `pending_ack`: until it would block,
    /// reaches end of file, holds more than an answer can be (a protocol error anyway) or, with
    /// `Until::Line`, holds a whole line.
    fn read_acks(&mut self, until: Until) {
        let mut chunk = [0u8; 512];
        while self.acks_open && self.pending_ack.len() <= MAX_ACK_BYTES {
            if until == Until::Line && self.pending_ack.contains(&b'\n') {
                return;
            }
            match self.acks.read(&mut chunk) {
                Ok(0) => self.acks_open = false,
                Ok(read) => self.pending_ack.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.acks_open = false,
            }
        }
    }

    /// Whether the command exits within `wait` (it is not reaped).
    fn exits_within(&self, wait: Duration) -> io::Result<bool> {
        let give_up = Instant::now() + wait;
        loop {
            if spawn::has_exited(self.pid)? {
                return Ok(true);
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let step = left.min(Duration::from_millis(5));
            match &self.exit_watch {
                Some(pidfd) => {
                    let mut fds = [pollfd(pidfd.as_raw_fd(), libc::POLLIN)];
                    let step_ms = step.as_micros().div_ceil(1000) as i32;
                    // SAFETY: `fds` is a valid array of one pollfd for the duration of the call.
                    unsafe { libc::poll(fds.as_mut_ptr(), 1, step_ms) };
                }
                None => std::thread::sleep(step),
            }
        }
    }

    /// Writes as much of the pending line as the pipe takes now. A command that closed its
    /// stdin gets no more (its answer, exit or deadline decides what happened).
    fn write_input(&mut self, input: &mut Option<Pending<'_>>) {
        let (Some(stdin), Some(pending)) = (self.stdin.as_mut(), input.as_mut()) else {
            return;
        };
        let total = pending.line.len() + 1;
        while pending.written < total {
            let newline = [IoSlice::new(b"\n")];
            let both;
            let slices: &[IoSlice] = if pending.written < pending.line.len() {
                both = [IoSlice::new(&pending.line[pending.written..]), newline[0]];
                &both
            } else {
                &newline
            };
            match stdin.write_vectored(slices) {
                Ok(written) => pending.written += written,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.stdin = None;
                    break;
                }
            }
        }
        *input = None;
    }

    /// Reads what fd 3 holds; `Some` once it holds a whole line (or has broken the protocol).
    fn read_answer(&mut self) -> Option<Result<Ack, AckProblem>> {
        self.read_acks(Until::Line);
        if let Some(end) = self.pending_ack.iter().position(|&byte| byte == b'\n') {
            let answer = parse_ack(&self.pending_ack[..end]).map_err(AckProblem::Garbage);
            self.pending_ack.drain(..=end);
            return Some(answer);
        }
        if self.pending_ack.len() > MAX_ACK_BYTES {
            return Some(Err(AckProblem::TooLong));
        }
        if !self.acks_open {
            return Some(Err(AckProblem::Closed));
        }
        None
    }
}

/// How far [`Running::read_acks`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Up to the first whole line (an answer being waited for).
    Line,
    /// Everything there is (between lines, where anything is an answer to nothing).
    Drained,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> LongLived {
        let line = CommandLine::parse(line).unwrap();
        // The telemetry slot: the event handler's tests elsewhere may use the other one.
        LongLived::new("handler", line, &[], &[], Slot::Telemetry)
    }

    fn within(ms: u64) -> Option<Deadline> {
        Some(Deadline::within(
            Duration::from_millis(ms),
            Duration::from_millis(100),
            "",
        ))
    }

    /// Processes in `group` that are not zombies.
    fn live_members(group: i32) -> usize {
        let entries = std::fs::read_dir("/proc").unwrap();
        entries
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
                fields.get(2) == Some(&group.to_string().as_str()) && fields.first() != Some(&"Z")
            })
            .count()
    }

    #[test]
    fn answers_are_matched_with_lines_by_one_process() {
        let mut handler = command(
            r#"while read -r line; do case "$line" in *bad*) echo "error no $line" >&3 ;; *) echo ok >&3 ;; esac; done"#,
        );
        handler.start().unwrap();
        let pid = handler.running.as_ref().unwrap().pid;
        assert!(handler.deliver(b"one", within(5000)).is_ok());
        let failure = handler.deliver(b"bad", within(5000)).unwrap_err();
        assert!(
            matches!(&failure, CommandFailure::Reported { message, .. } if message == "no bad"),
            "{failure:?}"
        );
        assert!(handler.deliver(b"three", within(5000)).is_ok());
        assert_eq!(handler.running.as_ref().unwrap().pid, pid);
        assert!(handler.finish(within(5000)).is_ok());
        assert!(handler.running.is_none());
    }

    #[test]
    fn garbage_on_fd_3_stops_the_command_and_the_next_line_starts_a_new_one() {
        let mut handler =
            command("read -r line; echo yes >&3; read -r line; echo ok >&3; sleep 30");
        let failure = handler.deliver(b"one", within(5000)).unwrap_err();
        assert!(
            matches!(&failure, CommandFailure::BadAck { problem: AckProblem::Garbage(line), .. } if line == "yes"),
            "{failure:?}"
        );
        assert!(handler.running.is_none());
        // A new process: it answers the first line with garbage again.
        assert!(handler.deliver(b"two", within(5000)).is_err());
    }

    #[test]
    fn closing_fd_3_is_a_protocol_error_not_a_hang() {
        let mut handler = command("read -r line; exec 3>&-; sleep 30");
        let started = Instant::now();
        let failure = handler.deliver(b"one", within(20_000)).unwrap_err();
        assert!(
            matches!(
                &failure,
                CommandFailure::BadAck {
                    problem: AckProblem::Closed,
                    ..
                }
            ),
            "{failure:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn no_answer_by_the_deadline_is_a_timeout_and_a_fresh_start() {
        let mut handler = command("read -r line; sleep 30");
        handler.start().unwrap();
        let first = handler.running.as_ref().unwrap().pid;
        let failure = handler.deliver(b"one", within(300)).unwrap_err();
        assert!(
            matches!(failure, CommandFailure::TimedOut { .. }),
            "{failure:?}"
        );
        // Killed; orphans are reaped by init, maybe later, so zombies do not count.
        assert_eq!(
            live_members(first),
            0,
            "the timed-out command's group lives on"
        );
        let _ = handler.deliver(b"two", within(300));
        assert_ne!(handler.running.as_ref().map(|r| r.pid), Some(first));
    }

    #[test]
    fn ending_before_the_first_answer_three_times_is_a_crash_loop() {
        let mut handler = command("echo starting >&2; exit 3");
        let mut failures = Vec::new();
        for line in [&b"one"[..], b"two", b"three"] {
            failures.push(handler.deliver(line, within(5000)).unwrap_err());
        }
        let last = failures.last().unwrap();
        assert!(
            matches!(last, CommandFailure::CrashLoop { crashes: 3, .. }),
            "{failures:?}"
        );
        assert!(last.to_string().contains("status 3"), "{last}");
        // Given up: not started again.
        let again = handler.deliver(b"four", within(5000)).unwrap_err();
        assert!(matches!(again, CommandFailure::CrashLoop { .. }));
        assert!(handler.running.is_none());
    }

    #[test]
    fn an_exit_between_lines_is_restarted_before_the_next_line() {
        let mut handler = command("read -r line; echo ok >&3; exit 0");
        assert!(handler.deliver(b"one", within(5000)).is_ok());
        let first = handler.running.as_ref().unwrap().pid;
        std::thread::sleep(Duration::from_millis(100));
        assert!(handler.deliver(b"two", within(5000)).is_ok());
        assert_ne!(handler.running.as_ref().unwrap().pid, first);
    }

    #[test]
    fn a_command_that_ignores_end_of_file_is_stopped_at_the_deadline() {
        let mut handler = command("read -r line; echo ok >&3; sleep 30");
        assert!(handler.deliver(b"one", within(5000)).is_ok());
        let failure = handler.finish(within(400)).unwrap_err();
        assert!(
            matches!(failure, CommandFailure::TimedOut { .. }),
            "{failure:?}"
        );
        assert!(failure.to_string().contains("end of file"), "{failure}");
    }
}
