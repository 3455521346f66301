//! Installing and running the extension binary as Lambda does, plus process/file helpers.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::server::FakeApi;

pub const BIN: &str = env!("CARGO_BIN_EXE_lambda-shell-extension");
pub const DEFAULT_NAME: &str = "lambda-shell-extension";

/// A per-test temporary directory (`<tmp>/opt/extensions/...` plus scripts and output files).
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("shell-ext-test")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the sandbox (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Same as `path` but as a `String` for embedding in commands.
    pub fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// Write an executable (0755) script with the given contents; returns its path.
    pub fn script(&self, name: &str, contents: &str) -> String {
        let path = self.path(name);
        fs::write(&path, contents).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Install the binary as `<tmp>/opt/extensions/<name>` with mode 0755: a hard link when
    /// possible (same inode, no write handle that a concurrently forked child could inherit,
    /// which would make exec fail with ETXTBSY), else a copy.
    pub fn install(&self, name: &str) -> PathBuf {
        self.install_from(name, Path::new(BIN))
    }

    /// `install` with another binary `src`. When `src` already is
    /// `<tmp>/opt/extensions/<name>` (a layer extracted into `<tmp>/opt`), it is used in place.
    pub fn install_from(&self, name: &str, src: &Path) -> PathBuf {
        let dir = self.dir.path().join("opt/extensions");
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join(name);
        // The same file already (an extracted layer, or a hard link made by an earlier
        // install): copying onto it would truncate the source itself.
        let same_file = |a: &Path, b: &Path| {
            use std::os::unix::fs::MetadataExt;
            match (fs::metadata(a), fs::metadata(b)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            }
        };
        let in_place = same_file(src, &dest);
        if !in_place && fs::hard_link(src, &dest).is_err() {
            fs::copy(src, &dest).expect("copy extension binary");
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
        dest
    }

    /// A launcher for an extension talking to `api`, named `lambda-shell-extension`.
    pub fn ext(&self, api: &FakeApi) -> Launcher<'_> {
        self.ext_at(&api.runtime_api())
    }

    /// A launcher for an extension whose `AWS_LAMBDA_RUNTIME_API` is `runtime_api`.
    pub fn ext_at(&self, runtime_api: &str) -> Launcher<'_> {
        Launcher {
            sandbox: self,
            name: DEFAULT_NAME.to_string(),
            envs: [
                ("AWS_LAMBDA_RUNTIME_API", runtime_api),
                ("RUST_LOG", "info"),
            ]
            .into_iter()
            // Sentinel credentials, as Lambda gives every extension: checked never to be logged.
            .chain(super::credentials::SENTINELS)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            removed: vec![],
            stdin_pipe: false,
            binary: None,
            wrapper: None,
            args: Vec::new(),
            pre_exec: None,
        }
    }
}

pub struct Launcher<'a> {
    sandbox: &'a Sandbox,
    name: String,
    envs: Vec<(String, String)>,
    removed: Vec<String>,
    stdin_pipe: bool,
    binary: Option<PathBuf>,
    wrapper: Option<PathBuf>,
    /// Lambda passes none; only for testing the flags.
    args: Vec<String>,
    pre_exec: Option<PreExec>,
}

/// Run in the forked child before it execs the extension (resource limits, another uid).
type PreExec = Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>;

impl Launcher<'_> {
    /// Install `path` instead of the debug binary (`BIN`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Start the installed binary through `program` (`program <installed path>`, still no
    /// arguments of its own), e.g. `qemu-aarch64` for an arm64 binary.
    pub fn wrapper(mut self, program: impl Into<PathBuf>) -> Self {
        self.wrapper = Some(program.into());
        self
    }

    /// Give the extension a stdin pipe that stays open (and silent) for its whole life, so a
    /// command that wrongly inherits the extension's stdin blocks on it.
    pub fn open_stdin(mut self) -> Self {
        self.stdin_pipe = true;
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.retain(|(key, _)| key != k);
        self.removed.retain(|key| key != k);
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    /// Command-line arguments (Lambda passes none: only the flags test uses this).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.envs.retain(|(key, _)| key != k);
        self.removed.push(k.to_string());
        self
    }

    pub fn handler(self, cmd: &str) -> Self {
        self.env("SHELL_EXT_HANDLER", cmd)
    }

    /// Run `f` in the forked child just before it execs the extension (async-signal-safe calls
    /// only: setrlimit, setuid, close, ...).
    pub fn pre_exec(
        mut self,
        f: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.pre_exec = Some(Box::new(f));
        self
    }

    /// Install and start: no arguments, a clean environment (PATH + the configured vars),
    /// cwd = the sandbox, stdin = /dev/null, stdout/stderr captured on threads.
    pub fn spawn(mut self) -> Ext {
        let path = match &self.binary {
            Some(src) => self.sandbox.install_from(&self.name, src),
            None => self.sandbox.install(&self.name),
        };
        let mut cmd = match &self.wrapper {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.arg(&path);
                cmd
            }
            None => Command::new(&path),
        };
        cmd.args(&self.args);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(self.sandbox.root())
            .stdin(if self.stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        for k in &self.removed {
            cmd.env_remove(k);
        }
        if let Some(f) = self.pre_exec.take() {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closures given to `pre_exec` make async-signal-safe calls only.
            unsafe {
                cmd.pre_exec(f);
            }
        }
        // A copy written by this (multi-threaded) test process can be briefly held open for
        // writing by a child forked concurrently by another test: retry on ETXTBSY.
        let mut attempts = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("spawn extension {}: {e}", path.display()),
            }
        };
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let readers = [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ];
        for (mut pipe, buf) in readers {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(());
            });
        }
        let stdin = child.stdin.take();
        Ext {
            pid: child.id(),
            _stdin: stdin,
            child,
            stdout,
            stderr,
            closed: rx,
            closed_count: 0,
            status: None,
            name: self.name,
            path,
            started: Instant::now(),
        }
    }
}

/// A running extension process.
pub struct Ext {
    child: Child,
    _stdin: Option<std::process::ChildStdin>,
    pub pid: u32,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    closed: mpsc::Receiver<()>,
    closed_count: usize,
    status: Option<ExitStatus>,
    pub name: String,
    pub path: PathBuf,
    pub started: Instant,
}

impl Ext {
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// The last few KiB of stdout and stderr, for failure messages.
    pub fn output_tail(&self) -> String {
        fn tail(b: &[u8]) -> String {
            let start = b.len().saturating_sub(3000);
            String::from_utf8_lossy(&b[start..]).into_owned()
        }
        format!(
            "--- extension stdout (tail) ---\n{}\n--- extension stderr (tail) ---\n{}",
            tail(&self.stdout.lock().unwrap()),
            tail(&self.stderr.lock().unwrap())
        )
    }

    /// Exit status if the process has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Wait for exit; `None` on timeout (the process is left running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for exit; on timeout kill the process and fail the test with its output.
    /// After the exit, waits (up to 1 s) until everything written to stdout/stderr was read.
    pub fn wait_with_timeout(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_timeout(timeout) {
            Some(s) => {
                self.wait_output_closed(Duration::from_secs(1));
                s
            }
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "extension did not exit within {timeout:?}; killed it\n{}",
                    self.output_tail()
                );
            }
        }
    }

    /// Wait for exit and assert the exit code.
    pub fn expect_exit(&mut self, code: i32, timeout: Duration) -> ExitStatus {
        let status = self.wait_with_timeout(timeout);
        assert_eq!(
            status.code(),
            Some(code),
            "unexpected exit status {status:?}\n{}",
            self.output_tail()
        );
        status
    }

    /// Wait until both output pipes have been closed by every writer (after exit).
    pub fn wait_output_closed(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.closed_count < 2 {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            match self.closed.recv_timeout(end - now) {
                Ok(()) => self.closed_count += 1,
                Err(_) => return false,
            }
        }
        true
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid);
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }
}

impl Drop for Ext {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !thread::panicking() {
            // Everything the extension wrote (collected so far): never a credential.
            let what = format!("the output of extension {}", self.name);
            super::credentials::assert_no_credentials(&what, &self.stdout());
            super::credentials::assert_no_credentials(&what, &self.stderr());
        }
    }
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // state is the field after the ")" closing the comm.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
    }
}

/// Wait until `pid` is gone (or a zombie); true if it went within `timeout`.
pub fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    wait_for(timeout, || !pid_alive(pid))
}

/// Poll `cond` every 5 ms until true or timeout.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until the file exists and is non-empty; returns its contents.
pub fn wait_for_file(path: &Path, timeout: Duration) -> Option<Vec<u8>> {
    let mut out = None;
    wait_for(timeout, || match fs::read(path) {
        Ok(b) if !b.is_empty() => {
            out = Some(b);
            true
        }
        _ => false,
    });
    out
}

/// Read a pid written by a handler (`echo $! > file`), waiting for it to appear.
pub fn read_pid(path: &Path) -> i32 {
    let bytes = wait_for_file(path, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("pid file {} never written", path.display()));
    String::from_utf8_lossy(&bytes)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad pid file {}", path.display()))
}

/// Kill a leftover pid (cleanup after a failed assertion), ignoring errors.
pub fn cleanup_pid(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a pid read from a file the test's handler wrote.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Parse `env` output (`K=V` lines) into pairs.
pub fn parse_env(bytes: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The live processes whose command line has `token` as one of its arguments (give each test
/// a token of its own, e.g. `sleep 30.4711`, so parallel tests never see each other's).
pub fn pids_with_arg(token: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == token.as_bytes())
            })
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
}

/// A token no other test (or test process) uses, for `pids_with_arg`: `30.<pid><n>`, a
/// duration `sleep` accepts.
pub fn unique_sleep_arg() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "30.{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
