//! Starting a command with `posix_spawn(3)`, straight from the C library.
//!
//! `std::process::Command` rebuilds the whole environment (a `BTreeMap` of every variable, then
//! a C string array) on every spawn once a single variable is added, and the extension adds
//! several per event: with a Lambda-sized environment that was most of the per-event cost. Here
//! the inherited environment is converted once ([`Environment::capture`]) and each spawn only
//! appends its own few variables.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::c_char;
use std::ptr;

/// The process environment as C strings, minus the variables each spawn sets itself.
#[derive(Debug)]
pub struct Environment {
    /// Owns the strings `pointers` point at: read only through them (and by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    inherited: Vec<CString>,
    /// `inherited` as the pointer array `posix_spawn` takes (without its terminating null).
    pointers: Vec<*const c_char>,
}

// SAFETY: `pointers` point into the heap buffers of `inherited`, which the struct owns and never
// changes after construction; nothing is shared that another thread could mutate.
unsafe impl Send for Environment {}
unsafe impl Sync for Environment {}

impl Environment {
    /// Takes the current environment once, leaving out `managed` names (set per spawn, so an
    /// inherited value must never leak into a spawn that does not set them), and adds `fixed`
    /// variables that every spawn gets.
    pub fn capture(managed: &[&str], fixed: &[(&str, &str)]) -> Environment {
        let inherited: Vec<CString> = std::env::vars_os()
            .filter(|(name, _)| {
                !managed
                    .iter()
                    .any(|m| name.as_encoded_bytes() == m.as_bytes())
            })
            .filter_map(|(name, value)| {
                env_entry(name.as_encoded_bytes(), value.as_encoded_bytes()).ok()
            })
            .chain(
                fixed
                    .iter()
                    .filter_map(|(name, value)| env_entry(name.as_bytes(), value.as_bytes()).ok()),
            )
            .collect();
        let pointers = inherited.iter().map(|entry| entry.as_ptr()).collect();
        Environment {
            inherited,
            pointers,
        }
    }
}

/// Where the program is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A bare name is searched in `PATH` (like a shell does).
    SearchPath,
    /// The first argument is the path of the program.
    ExactPath,
}

/// What the new process reads on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    Null,
    Piped,
}

/// A started process: its pid (also its process group) and our end of its stdin
/// (non-blocking).
#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    pub stdin: Option<File>,
}

/// The pipes a command's stdout and stderr go to: our read ends, and the write ends each
/// spawned command gets. Holding the write ends ourselves means the pipes cannot reach
/// end-of-file while a command runs, so its exit wakes the supervisor once (through a pidfd)
/// instead of three times (each pipe closing first, in the middle of the exit); and one pair of
/// pipes serves command after command, instead of two new pipes per spawn.
#[derive(Debug)]
pub struct OutputPipes {
    pub stdout: File,
    pub stderr: File,
    writers: Option<[OwnedFd; 2]>,
}

impl OutputPipes {
    /// Two new pipes; our read ends are non-blocking.
    pub fn new() -> io::Result<OutputPipes> {
        let (stdout, stdout_writer) = pipe()?;
        let (stderr, stderr_writer) = pipe()?;
        set_nonblocking(&stdout);
        set_nonblocking(&stderr);
        Ok(OutputPipes {
            stdout: File::from(stdout),
            stderr: File::from(stderr),
            writers: Some([stdout_writer, stderr_writer]),
        })
    }

    /// Gives up our write ends: the pipes end once every process holding them has closed them.
    /// No command can be spawned with these pipes afterwards.
    pub fn close_writers(&mut self) {
        self.writers = None;
    }
}

pub fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own. F_SETFL ignores the access mode, and a fresh pipe
    // end carries no other status flag, so there is nothing to read back and keep first.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
}

/// The descriptor a persistent handler writes its acknowledgements to.
pub const ACK_FD: i32 = 3;

/// Starts `argv` in a new process group of its own, with stdout and stderr piped, the inherited
/// environment plus `extra`, and SIGPIPE back to its default (Rust ignores it in this process,
/// and an ignored signal would stay ignored across exec). `ack`, when given, becomes the
/// child's [`ACK_FD`].
pub fn spawn(
    argv: &[&str],
    lookup: Lookup,
    environment: &Environment,
    extra: &[(&str, &str)],
    stdin: Stdin,
    outputs: &OutputPipes,
    ack: Option<&OwnedFd>,
) -> io::Result<Process> {
    let [child_stdout, child_stderr] = outputs.writers.as_ref().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the output pipes are closed")
    })?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|arg| c_string(arg.as_bytes()))
        .collect::<io::Result<_>>()?;
    let extra: Vec<CString> = extra
        .iter()
        .map(|(name, value)| env_entry(name.as_bytes(), value.as_bytes()))
        .collect::<io::Result<_>>()?;
    let argv_pointers = null_terminated(argv.iter());
    let mut env_pointers = Vec::with_capacity(environment.pointers.len() + extra.len() + 1);
    env_pointers.extend_from_slice(&environment.pointers);
    env_pointers.extend(extra.iter().map(|entry| entry.as_ptr()));
    env_pointers.push(ptr::null());
    let program = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;

    let (child_stdin, stdin) = match stdin {
        Stdin::Piped => {
            let (read, write) = pipe()?;
            // Written as fast as the command reads, never blocking the supervisor.
            set_nonblocking(&write);
            (Some(read), Some(write))
        }
        Stdin::Null => (None, None),
    };
    let mut actions = FileActions::new()?;
    match &child_stdin {
        Some(read) => actions.dup2(read, 0)?,
        None => actions.open_null(0)?,
    }
    actions.dup2(child_stdout, 1)?;
    actions.dup2(child_stderr, 2)?;
    if let Some(ack) = ack {
        // Last: an earlier source may be numbered 3 in this process. dup2 clears close-on-exec
        // (and a source that already is fd 3 has it cleared by the C library, as POSIX says).
        actions.dup2(ack, ACK_FD)?;
    }
    let attributes = Attributes::new()?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the argv and envp arrays are null-terminated
    // and point into CStrings that outlive it; actions and attributes are initialised.
    let error = unsafe {
        let spawn = match lookup {
            Lookup::SearchPath => libc::posix_spawnp,
            Lookup::ExactPath => libc::posix_spawn,
        };
        spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attributes.0,
            argv_pointers.as_ptr() as *const *mut c_char,
            env_pointers.as_ptr() as *const *mut c_char,
        )
    };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    // The child's end of stdin lives in the child only.
    drop(child_stdin);
    Ok(Process {
        pid,
        stdin: stdin.map(File::from),
    })
}

/// Waits for `pid` to end (`nohang`: only if it has already ended) and returns its raw status.
pub fn wait(pid: i32, nohang: bool) -> io::Result<Option<i32>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid local.
        let waited = unsafe { libc::waitpid(pid, &mut status, flags) };
        if waited == pid {
            return Ok(Some(status));
        }
        if waited == 0 {
            return Ok(None);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Whether `pid` (a child) has ended, without reaping it: its process group id stays taken, so
/// whatever it left in its group can still be killed before [`wait`] reaps it.
pub fn has_exited(pid: i32) -> io::Result<bool> {
    loop {
        // SAFETY: waitid writes into a zeroed siginfo_t we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let waited = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if waited == 0 {
            // SAFETY: filled in by waitid; a pid of 0 means nothing has ended.
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a command or variable contains a NUL byte",
        )
    })
}

/// `NAME=value` as a C string.
fn env_entry(name: &[u8], value: &[u8]) -> io::Result<CString> {
    let mut entry = Vec::with_capacity(name.len() + value.len() + 2);
    entry.extend_from_slice(name);
    entry.push(b'=');
    entry.extend_from_slice(value);
    c_string(&entry)
}

fn null_terminated<'a>(strings: impl Iterator<Item = &'a CString>) -> Vec<*const c_char> {
    strings
        .map(|string| string.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// A pipe whose ends are closed on exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into a valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these descriptors to us; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn check(result: libc::c_int) -> io::Result<()> {
    // The posix_spawn family returns the error number instead of setting errno.
    match result {
        0 => Ok(()),
        error => Err(io::Error::from_raw_os_error(error)),
    }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: a zeroed value is then initialised by the library before any use.
        let mut actions = FileActions(unsafe { std::mem::zeroed() });
        check(unsafe { libc::posix_spawn_file_actions_init(&mut actions.0) })?;
        Ok(actions)
    }

    fn dup2(&mut self, from: &OwnedFd, to: i32) -> io::Result<()> {
        // SAFETY: the actions are initialised; the descriptor stays open until the spawn.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from.as_raw_fd(), to) })
    }

    fn open_null(&mut self, to: i32) -> io::Result<()> {
        const DEV_NULL: &CStr = c"/dev/null";
        // SAFETY: the actions are initialised; the path is a static C string.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                to,
                DEV_NULL.as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    /// A new process group led by the child, and SIGPIPE back to its default.
    fn new() -> io::Result<Attributes> {
        // SAFETY: a zeroed value is initialised by the library; the calls below only set fields
        // of it, and the signal set is initialised by sigemptyset before use.
        unsafe {
            let mut attributes = Attributes(std::mem::zeroed());
            check(libc::posix_spawnattr_init(&mut attributes.0))?;
            let mut default_signals: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut default_signals);
            libc::sigaddset(&mut default_signals, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(
                &mut attributes.0,
                &default_signals,
            ))?;
            check(libc::posix_spawnattr_setpgroup(&mut attributes.0, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut attributes.0,
                flags as libc::c_short,
            ))?;
            Ok(attributes)
        }
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn run(argv: &[&str], lookup: Lookup, extra: &[(&str, &str)], input: &[u8]) -> (i32, String) {
        let environment = Environment::capture(&["SPAWN_TEST_MANAGED"], &[("FIXED", "f")]);
        let mut outputs = OutputPipes::new().unwrap();
        let mut process = spawn(
            argv,
            lookup,
            &environment,
            extra,
            Stdin::Piped,
            &outputs,
            None,
        )
        .unwrap();
        outputs.close_writers();
        let mut stdin = process.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        let status = wait(process.pid, false).unwrap().unwrap();
        let mut output = Vec::new();
        let _ = outputs.stdout.read_to_end(&mut output); // non-blocking: all there once it exited
        (status, String::from_utf8(output).unwrap())
    }

    #[test]
    fn passes_stdin_argv_and_extra_environment() {
        let (status, output) = run(
            &[
                "sh",
                "-c",
                "cat; printf ' %s %s %s' \"$1\" \"$EXTRA\" \"$FIXED\"",
                "sh",
                "arg one",
            ],
            Lookup::SearchPath,
            &[("EXTRA", "x=y")],
            b"input",
        );
        assert_eq!(status, 0);
        assert_eq!(output, "input arg one x=y f");
    }

    #[test]
    fn runs_in_a_group_of_its_own() {
        let script = "cut -d' ' -f5 /proc/$$/stat; echo $$";
        let (_, output) = run(&["/bin/sh", "-c", script], Lookup::ExactPath, &[], b"");
        let mut lines = output.lines();
        assert_eq!(lines.next(), lines.next(), "pgid equals pid: {output}");
    }

    #[test]
    fn missing_program_is_an_os_error() {
        let environment = Environment::capture(&[], &[]);
        let outputs = OutputPipes::new().unwrap();
        let error = spawn(
            &["/nonexistent/program"],
            Lookup::ExactPath,
            &environment,
            &[],
            Stdin::Null,
            &outputs,
            None,
        )
        .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn managed_names_are_left_out_of_the_inherited_environment() {
        let environment = Environment::capture(&["PATH"], &[]);
        assert!(environment
            .inherited
            .iter()
            .all(|entry| !entry.as_bytes().starts_with(b"PATH=")));
        assert!(Environment::capture(&[], &[])
            .inherited
            .iter()
            .any(|entry| entry.as_bytes().starts_with(b"PATH=")));
    }
}
