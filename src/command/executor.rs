//! Running a user's command: spawn it in its own process group, feed it stdin, copy its output,
//! enforce a deadline, and leave nothing of it behind.
//!
//! One thread does all of it with `poll(2)`: the command's exit (a pidfd), its stdout and stderr,
//! and its stdin (written as fast as the command reads). A command that never reads stdin, writes
//! megabytes, or leaves a background child holding its pipes open cannot block the extension.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use super::group::{self, signal_group, Slot};
use super::CommandLine;
use crate::spawn::{self, Environment, OutputPipes, Stdin};

/// How much of a command's stderr is kept for the error message.
const STDERR_TAIL_BYTES: usize = 2048;
/// How much output is read per system call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

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

/// Why a command did not succeed. `Display` is the message reported to Lambda.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started at all.
    NotStarted { command: String, error: io::Error },
    /// It exited with a non-zero status.
    Exited {
        command: String,
        code: i32,
        stderr_tail: String,
    },
    /// A signal it did not get from us ended it.
    Killed {
        command: String,
        signal: i32,
        stderr_tail: String,
    },
    /// It was still running at the deadline and was stopped.
    TimedOut {
        command: String,
        /// Boxed: it would make every `Result` of a run twice as large.
        deadline: Box<Deadline>,
        stderr_tail: String,
    },
    /// The extension received a signal: the command was not started, or was stopped by it.
    Stopped { command: String, signal: i32 },
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandFailure::NotStarted { command, error } => write!(
                f,
                "`{command}` could not be started: {error}; check that the program exists, is \
                 executable (chmod +x) and that its #! interpreter is present in the Lambda \
                 environment"
            ),
            CommandFailure::Exited {
                command,
                code,
                stderr_tail,
            } => write!(
                f,
                "`{command}` exited with status {code}{}",
                stderr_suffix(stderr_tail)
            ),
            CommandFailure::Killed {
                command,
                signal,
                stderr_tail,
            } => write!(
                f,
                "`{command}` was killed by signal {signal} ({}){}",
                signal_name(*signal),
                stderr_suffix(stderr_tail)
            ),
            CommandFailure::TimedOut {
                command,
                deadline,
                stderr_tail,
            } => write!(
                f,
                "`{command}` was still running after {} ms, {} ms before the event's deadline, \
                 and was stopped (SIGTERM, then SIGKILL to its process group); {}{}",
                deadline.allowed.as_millis(),
                deadline.margin.as_millis(),
                deadline.hint,
                stderr_suffix(stderr_tail)
            ),
            CommandFailure::Stopped { command, signal } => write!(
                f,
                "`{command}` was stopped: the extension received signal {signal} ({})",
                signal_name(*signal)
            ),
        }
    }
}

impl std::error::Error for CommandFailure {}

fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::from(" (no stderr output)")
    } else {
        format!("; stderr: {tail}")
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
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
        let spawned = spawn::spawn(&argv, lookup, &self.environment, env, stdin, &streams.pipes);
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

/// One of the commands' output pipes, copied to the same stream of the extension.
struct Output {
    /// Whether the last byte copied ended a line, so a last line without one can be completed.
    at_line_start: bool,
    /// False once the pipe has ended (every writer gone): nothing more to read.
    open: bool,
}

/// The output pipes of a command, and what has been copied from them.
struct Streams {
    pipes: OutputPipes,
    stdout: Output,
    stderr: Output,
}

impl Streams {
    fn new() -> io::Result<Streams> {
        let open = || Output {
            at_line_start: true,
            open: true,
        };
        Ok(Streams {
            pipes: OutputPipes::new()?,
            stdout: open(),
            stderr: open(),
        })
    }

    fn is_open(&self) -> bool {
        self.stdout.open || self.stderr.open
    }

    /// Copies one chunk from whichever pipes are ready (`ready` = stdout, stderr).
    fn copy_ready(&mut self, ready: [bool; 2], tail: &mut Vec<u8>, buffer: &mut [u8]) {
        if ready[0] && self.stdout.open {
            copy_once(
                &mut self.pipes.stdout,
                &mut self.stdout,
                &mut io::stdout().lock(),
                None,
                buffer,
            );
        }
        if ready[1] && self.stderr.open {
            copy_once(
                &mut self.pipes.stderr,
                &mut self.stderr,
                &mut io::stderr().lock(),
                Some(tail),
                buffer,
            );
        }
    }

    /// Copies what the pipes hold right now, without waiting for more, and ends a last line
    /// without a newline so the next output starts on a line of its own.
    fn copy_available(&mut self, tail: &mut Vec<u8>, buffer: &mut [u8]) {
        let mut stdout = io::stdout().lock();
        while self.stdout.open
            && copy_once(
                &mut self.pipes.stdout,
                &mut self.stdout,
                &mut stdout,
                None,
                buffer,
            ) == ReadResult::Copied
        {}
        finish_line(&mut self.stdout, &mut stdout);
        let mut stderr = io::stderr().lock();
        while self.stderr.open
            && copy_once(
                &mut self.pipes.stderr,
                &mut self.stderr,
                &mut stderr,
                Some(tail),
                buffer,
            ) == ReadResult::Copied
        {}
        finish_line(&mut self.stderr, &mut stderr);
    }
}

/// Copies what background processes of an init command (a sidecar) write, on a thread of its
/// own, until they close their output: so it reaches the log, and their writes never fail with
/// SIGPIPE.
fn keep_forwarding(mut streams: Streams) {
    streams.pipes.close_writers();
    let forwarder = thread::Builder::new()
        .name("sidecar-output".into())
        .spawn(move || {
            let mut buffer = vec![0; READ_CHUNK_BYTES];
            let mut tail = Vec::new();
            while streams.is_open() {
                let mut fds = [
                    pollfd(streams.pipes.stdout.as_raw_fd(), libc::POLLIN),
                    pollfd(streams.pipes.stderr.as_raw_fd(), libc::POLLIN),
                ];
                fds[0].fd = if streams.stdout.open { fds[0].fd } else { -1 };
                fds[1].fd = if streams.stderr.open { fds[1].fd } else { -1 };
                // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
                if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0
                    && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                {
                    break;
                }
                let ready = [fds[0].revents != 0, fds[1].revents != 0];
                streams.copy_ready(ready, &mut tail, &mut buffer);
                tail.clear();
            }
        });
    if let Err(error) = forwarder {
        log::warn!("cannot keep copying the init command's background output: {error}");
    }
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

/// What one read from an output pipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadResult {
    Copied,
    Empty,
    Closed,
}

/// Reads one chunk from `pipe` and copies it to `sink` (and its end to `tail`); marks the
/// output closed at end of file.
fn copy_once(
    pipe: &mut File,
    output: &mut Output,
    sink: &mut impl Write,
    tail: Option<&mut Vec<u8>>,
    buffer: &mut [u8],
) -> ReadResult {
    loop {
        match pipe.read(buffer) {
            Ok(0) => {
                finish_line(output, sink);
                output.open = false;
                return ReadResult::Closed;
            }
            Ok(read) => {
                let chunk = &buffer[..read];
                // A failing log stream must not stop the command: there is nowhere to report it.
                let _ = sink.write_all(chunk);
                output.at_line_start = chunk.last() == Some(&b'\n');
                if let Some(tail) = tail {
                    keep_tail(tail, chunk);
                }
                return ReadResult::Copied;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return ReadResult::Empty,
            Err(_) => {
                output.open = false;
                return ReadResult::Closed;
            }
        }
    }
}

/// Ends a last line that had no newline, so the next output starts on a line of its own.
fn finish_line(output: &mut Output, sink: &mut impl Write) {
    if !output.at_line_start {
        let _ = sink.write_all(b"\n");
        output.at_line_start = true;
    }
    let _ = sink.flush();
}

fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(STDERR_TAIL_BYTES)..];
    tail.extend_from_slice(chunk);
    if tail.len() > STDERR_TAIL_BYTES {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
    }
}

/// The kept stderr as text: trailing newline trimmed, marked when cut.
fn tail_text(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let text = text.trim_end_matches(['\n', '\r']);
    if tail.len() >= STDERR_TAIL_BYTES {
        format!("…{text}")
    } else {
        text.to_string()
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// A descriptor that becomes readable when the process exits (Linux ≥ 5.3).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
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

    #[test]
    fn stderr_tail_is_bounded_and_keeps_the_last_line() {
        let mut tail = Vec::new();
        for i in 0..1000 {
            keep_tail(&mut tail, format!("line {i}\n").as_bytes());
        }
        assert_eq!(tail.len(), STDERR_TAIL_BYTES);
        let text = tail_text(&tail);
        assert!(text.starts_with('…'));
        assert!(text.ends_with("line 999"), "{text}");
    }
}
