//! Why a command did not succeed, in words a Lambda user can act on.

use std::fmt;
use std::io;

use super::Deadline;

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
    /// A persistent handler answered `error <message>` on fd 3.
    Reported { command: String, message: String },
    /// A persistent handler broke the acknowledgement protocol; it was stopped.
    BadAck {
        command: String,
        problem: AckProblem,
        stderr_tail: String,
    },
    /// A persistent handler ended before acknowledging its first line, this many times in a
    /// row: it is not started again.
    CrashLoop {
        command: String,
        crashes: u32,
        /// What happened the last time, as a message.
        last: String,
    },
}

/// How a persistent handler broke the acknowledgement protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckProblem {
    /// It closed fd 3 while running.
    Closed,
    /// It wrote a line that is neither `ok` nor `error <message>`.
    Garbage(String),
    /// It wrote a line longer than 4 KiB (`MAX_ACK_BYTES`).
    TooLong,
    /// It wrote a line before it was sent anything to answer.
    Unsolicited(String),
}

impl fmt::Display for AckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckProblem::Closed => f.write_str("closed fd 3 (LAMBDA_ACK_FD)"),
            AckProblem::Garbage(line) => write!(
                f,
                "wrote {:?} on fd 3 (LAMBDA_ACK_FD), which is not an acknowledgement",
                shorten(line)
            ),
            AckProblem::TooLong => write!(
                f,
                "wrote a line of more than {} bytes on fd 3 (LAMBDA_ACK_FD)",
                super::framing::MAX_ACK_BYTES
            ),
            AckProblem::Unsolicited(line) => write!(
                f,
                "wrote {:?} on fd 3 (LAMBDA_ACK_FD) before it was sent a line to answer",
                shorten(line)
            ),
        }
    }
}

/// At most 200 characters of a line, for a message.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandFailure::NotStarted { command, error } => {
                write!(f, "`{command}` could not be started: {error}")?;
                // Out of processes or memory (EAGAIN, ENOMEM): the file is not the problem.
                match error.raw_os_error() {
                    Some(libc::EAGAIN | libc::ENOMEM) => f.write_str(
                        "; the environment is out of processes or memory: end what earlier \
                         commands left running, or give the function more memory",
                    ),
                    _ => f.write_str(
                        "; check that the program exists, is executable (chmod +x) and that \
                         its #! interpreter is present in the Lambda environment",
                    ),
                }
            }
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
            CommandFailure::Reported { command, message } => {
                write!(f, "`{command}` answered `error` on fd 3")?;
                match message.is_empty() {
                    true => f.write_str(" (no message)"),
                    false => write!(f, ": {message}"),
                }
            }
            CommandFailure::BadAck {
                command,
                problem,
                stderr_tail,
            } => write!(
                f,
                "`{command}` {problem}; a persistent handler answers each line it reads with one \
                 line on fd 3: `ok` or `error <message>` (its stdout and stderr are for logging); \
                 it was stopped and starts again with the next line{}",
                stderr_suffix(stderr_tail)
            ),
            CommandFailure::CrashLoop {
                command,
                crashes,
                last,
            } => write!(
                f,
                "`{command}` ended before acknowledging its first line {crashes} times in a row, \
                 so it is not started again (a persistent handler must keep reading stdin until \
                 end of file); the last time: {last}"
            ),
        }
    }
}

impl CommandFailure {
    /// The end of the command's stderr, when it wrote any.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            CommandFailure::Exited { stderr_tail, .. }
            | CommandFailure::Killed { stderr_tail, .. }
            | CommandFailure::TimedOut { stderr_tail, .. }
            | CommandFailure::BadAck { stderr_tail, .. } => {
                Some(stderr_tail.as_str()).filter(|tail| !tail.is_empty())
            }
            _ => None,
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
