//! Copying a command's stdout and stderr to the extension's own, keeping the end of its stderr
//! for error messages; and the `poll(2)` plumbing the executors share.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;

use crate::spawn::OutputPipes;

/// How much of a command's stderr is kept for the error message.
pub(super) const STDERR_TAIL_BYTES: usize = 2048;
/// How much output is read per system call.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One of the commands' output pipes, copied to the same stream of the extension.
pub(super) struct Output {
    /// Whether the last byte copied ended a line, so a last line without one can be completed.
    at_line_start: bool,
    /// False once the pipe has ended (every writer gone): nothing more to read.
    pub(super) open: bool,
}

/// The output pipes of a command, and what has been copied from them.
pub(super) struct Streams {
    pub(super) pipes: OutputPipes,
    pub(super) stdout: Output,
    pub(super) stderr: Output,
}

impl Streams {
    pub(super) fn new() -> io::Result<Streams> {
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

    pub(super) fn is_open(&self) -> bool {
        self.stdout.open || self.stderr.open
    }

    /// Copies one chunk from whichever pipes are ready (`ready` = stdout, stderr).
    pub(super) fn copy_ready(&mut self, ready: [bool; 2], tail: &mut Vec<u8>, buffer: &mut [u8]) {
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
    pub(super) fn copy_available(&mut self, tail: &mut Vec<u8>, buffer: &mut [u8]) {
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
pub(super) fn keep_forwarding(mut streams: Streams) {
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

/// What one read from an output pipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadResult {
    Copied,
    Empty,
    Closed,
}

/// Reads one chunk from `pipe` and copies it to `sink` (and its end to `tail`); marks the
/// output closed at end of file.
pub(super) fn copy_once(
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
pub(super) fn finish_line(output: &mut Output, sink: &mut impl Write) {
    if !output.at_line_start {
        let _ = sink.write_all(b"\n");
        output.at_line_start = true;
    }
    let _ = sink.flush();
}

pub(super) fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(STDERR_TAIL_BYTES)..];
    tail.extend_from_slice(chunk);
    if tail.len() > STDERR_TAIL_BYTES {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
    }
}

/// The kept stderr as text: trailing newline trimmed, marked when cut. Control characters
/// (a bare CR, NUL, terminal escape sequences) would garble the log line quoting it: CRs are
/// dropped, the others shown as U+FFFD, like bytes that are not UTF-8.
pub(super) fn tail_text(tail: &[u8]) -> String {
    let text: Vec<u8> = tail
        .iter()
        .filter(|&&b| b != b'\r')
        .map(|&b| match b {
            b'\n' | b'\t' => b,
            b if b.is_ascii_control() => 0xff,
            b => b,
        })
        .collect();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim_end_matches('\n');
    if tail.len() >= STDERR_TAIL_BYTES {
        format!("…{text}")
    } else {
        text.to_string()
    }
}

pub(super) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// A descriptor that becomes readable when the process exits (Linux ≥ 5.3).
pub(super) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stderr_tail_shows_control_characters_as_replacement() {
        let text = tail_text(b"a\r\nb\rc\0\x1b[31m\td\xff\r\n");
        assert_eq!(text, "a\nbc\u{FFFD}\u{FFFD}[31m\td\u{FFFD}");
    }
}
