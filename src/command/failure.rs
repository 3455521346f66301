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
