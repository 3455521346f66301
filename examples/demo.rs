//! Local demo: run the real `lambda-shell-extension` binary against the
//! `lambda-simulator` Lambda emulator, send 3 invokes and a SHUTDOWN, and show
//! what the handler script prints.
//!
//! ```sh
//! make demo                                   # scripts/log-event.sh
//! make demo HANDLER=scripts/fail.sh           # Extension.HandlerFailed
//! make demo HANDLER=scripts/timeout.sh        # Extension.HandlerTimeout
//! make demo HANDLER='{ cat; echo; } >> /tmp/events.jsonl'   # shell syntax, as typed
//! make demo HANDLER=scripts/flush-on-shutdown.sh SHELL_EXT_EVENTS=SHUTDOWN
//! SHELL_EXT_ON_ERROR=continue make demo HANDLER=scripts/fail.sh
//! ```
//!
//! The handler is the CLI arguments (joined with spaces), else `$DEMO_HANDLER`
//! (what `make demo HANDLER=...` sets), else `$SHELL_EXT_HANDLER`, else
//! `scripts/log-event.sh`. Other `SHELL_EXT_*` variables in the environment are
//! passed through to the extension unchanged.
//!
//! The demo plays the Lambda runtime itself (polls
//! `/2018-06-01/runtime/invocation/next` and posts a response), like the
//! function process would. It passes the extension's stderr through and reads
//! it on the way: the simulator answers 404 to `/extension/init/error` and
//! `/extension/exit/error` (and refuses every request once SHUTDOWN is
//! delivered), so when the extension logs that it could not report an error,
//! the demo notes that this is the emulator's limit (on AWS the report is
//! accepted); and it ends by repeating the extension's `summary:` line.
//!
//! On Ctrl-C (SIGINT), SIGTERM or SIGHUP the demo stops the extension
//! (SIGTERM, then SIGKILL after 2 s), removes its temporary folder and exits
//! with 128 + the signal number.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_simulator::{EventType, InvocationBuilder, ShutdownReason, Simulator};
use serde_json::json;

const EXTENSION_NAME: &str = "lambda-shell-extension";
const INVOKES: usize = 3;
/// Function timeout: each INVOKE's deadlineMs is this far after the enqueue.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(3);
/// Time the extension gets after SHUTDOWN (its deadlineMs is this far after it is sent).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopped extension gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn say(msg: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "demo | {}", msg.as_ref());
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    catch_signals();
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("demo: error: {e}");
            std::process::exit(2);
        }
    }
}

/// The first terminating signal received (0: none yet).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set once SHUTDOWN has been sent: the simulator stops answering right after it.
static SHUTDOWN_SENT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Ctrl-C and friends only set a flag: the demo then cleans up (stops the
/// extension, removes its temporary folder) instead of dying on the spot.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn signal_received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Resolves with the signal number once a terminating signal has arrived.
async fn interrupted() -> i32 {
    loop {
        if let Some(s) = signal_received() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}

/// Path of the extension binary built next to this example:
/// `target/<profile>/examples/demo` → `target/<profile>/lambda-shell-extension`.
fn extension_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("DEMO_EXTENSION_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory from current_exe()")?;
    let bin = profile_dir.join(EXTENSION_NAME);
    if !bin.is_file() {
        return Err(format!(
            "{} not found; build it first: cargo build --bin {EXTENSION_NAME} (or use `make demo`)",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// The handler command: CLI args (joined), else `$DEMO_HANDLER`, else
/// `$SHELL_EXT_HANDLER`, else log-event.sh. A relative path to an existing file
/// as the first word is made absolute (on Lambda the extension does not run in
/// your current directory, and here it runs in the demo's temporary folder).
fn handler_command() -> String {
    let args = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let raw = [
        Some(args),
        std::env::var("DEMO_HANDLER").ok(),
        std::env::var("SHELL_EXT_HANDLER").ok(),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.trim().is_empty())
    .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/log-event.sh").into());
    let raw = raw.trim();
    let (first, rest) = raw.split_once(char::is_whitespace).unwrap_or((raw, ""));
    match std::fs::canonicalize(first) {
        Ok(abs) if abs.is_file() => {
            let abs = shell_word(&abs.to_string_lossy());
            if rest.is_empty() {
                abs
            } else {
                format!("{abs} {rest}")
            }
        }
        _ => raw.to_string(),
    }
}

/// `s` as one shell word: unchanged if it is plain, else in single quotes.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Copy the binary to `<tmp>/opt/extensions/<name>`, as a Lambda layer would.
fn install_extension(bin: &Path, root: &Path) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("opt/extensions");
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join(EXTENSION_NAME);
    std::fs::copy(bin, &dest)?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    Ok(dest)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A deadline (epoch ms) as the time left until it, e.g. `deadline in 3.0 s`.
fn time_left(deadline_ms: i64) -> String {
    let left = (deadline_ms - now_ms()) as f64 / 1000.0;
    if left >= 0.0 {
        format!("deadline in {left:.1} s")
    } else {
        format!("deadline {:.1} s ago", -left)
    }
}

/// The running extension: its pid, its exit status once it has exited, and
/// what its stderr said.
struct Extension {
    pid: u32,
    status: Arc<Mutex<Option<ExitStatus>>>,
    summary: Arc<Mutex<Option<String>>>,
    stderr_closed: mpsc::Receiver<()>,
}

impl Extension {
    fn exited(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap()
    }

    /// Resolves once the extension process has exited.
    async fn wait_exit(&self) -> ExitStatus {
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&self, sig: libc::c_int) {
        if self.exited().is_none() {
            // SAFETY: plain kill(2) on the child we started and have not reaped yet
            // (the status slot is filled by the thread that reaps it).
            unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        }
    }

    /// SIGTERM (the extension then stops its handler and exits), SIGKILL if it
    /// is still there after STOP_GRACE.
    async fn stop(&self) {
        if self.exited().is_some() {
            return;
        }
        self.kill(libc::SIGTERM);
        tokio::select! {
            _ = self.wait_exit() => {}
            _ = tokio::time::sleep(STOP_GRACE) => {
                say(format!(
                    "extension (pid {}) still running {} s after SIGTERM; killing it",
                    self.pid,
                    STOP_GRACE.as_secs()
                ));
                self.kill(libc::SIGKILL);
                self.wait_exit().await;
            }
        }
    }

    /// The extension's `summary:` line, once its stderr is closed (waits up to
    /// 1 s: a background process it left behind may hold the pipe open).
    fn summary(&self) -> Option<String> {
        let _ = self.stderr_closed.recv_timeout(Duration::from_secs(1));
        self.summary.lock().unwrap().clone()
    }
}

/// Start the extension as Lambda does: no arguments, configured by environment.
fn start_extension(
    ext_path: &Path,
    dir: &Path,
    runtime_api: &str,
    handler: &str,
) -> Result<Extension, Error> {
    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut child = Command::new(ext_path)
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("SHELL_EXT_HANDLER", handler)
        .env("RUST_LOG", rust_log)
        .env("AWS_LAMBDA_FUNCTION_NAME", "shell-ext-demo")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ext_path.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let summary = Arc::new(Mutex::new(None));
    let (closed_tx, stderr_closed) = mpsc::channel();
    forward_stderr(stderr, summary.clone(), closed_tx);
    Ok(Extension {
        pid: child.id(),
        status: watch_child(child),
        summary,
        stderr_closed,
    })
}

/// Waits for the child in a thread; the status lands in the returned slot.
fn watch_child(mut child: Child) -> Arc<Mutex<Option<ExitStatus>>> {
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    std::thread::spawn(move || {
        let status = child.wait().ok();
        *s.lock().unwrap() = status;
    });
    slot
}

/// Copies the extension's stderr to ours line by line, unchanged, and reads its
/// own log lines on the way: keeps the `summary:` line and explains error
/// reports that failed only because of the emulator.
fn forward_stderr(
    stderr: ChildStderr,
    summary: Arc<Mutex<Option<String>>>,
    closed: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&line);
                let _ = err.flush();
            }
            let text = String::from_utf8_lossy(&line);
            let Some(msg) = log_message(text.trim_end()) else {
                continue; // the handler's own output
            };
            if let Some(s) = msg.strip_prefix("summary:") {
                *summary.lock().unwrap() = Some(s.trim().to_string());
            } else if msg.contains("could not report") {
                explain_failed_report(msg);
            }
        }
        let _ = closed.send(());
    });
}

/// The message of one of the extension's own log lines (`[<name>] LEVEL message`).
fn log_message(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix('[')?
        .strip_prefix(EXTENSION_NAME)?
        .strip_prefix("] ")?;
    let (_level, msg) = rest.split_once(' ')?;
    Some(msg)
}

/// The extension could not post an init/error or exit/error: say whether that is
/// the emulator's doing.
fn explain_failed_report(msg: &str) {
    let what = if msg.contains("init/error") {
        "init/error"
    } else if msg.contains("exit/error") {
        "exit/error"
    } else {
        "error reports"
    };
    let answered_404 = msg
        .split(|c: char| !c.is_ascii_digit())
        .any(|word| word == "404");
    if answered_404 {
        say(format!(
            "note: the emulator does not implement {what} (answers 404); on AWS Lambda the report is accepted"
        ));
    } else if SHUTDOWN_SENT.load(Ordering::SeqCst) {
        say(format!(
            "note: the emulator stops its API as soon as SHUTDOWN is delivered, so {what} is refused; \
             on AWS Lambda the report is accepted until the shutdown deadline"
        ));
    }
}

/// Plays the function's runtime: poll runtime/invocation/next, answer each one.
fn spawn_runtime(base: String) {
    std::thread::spawn(move || {
        let agent = ureq::Agent::new_with_defaults();
        loop {
            let Ok(resp) = agent
                .get(format!("{base}/2018-06-01/runtime/invocation/next"))
                .call()
            else {
                return; // simulator gone
            };
            let Some(id) = resp
                .headers()
                .get("Lambda-Runtime-Aws-Request-Id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            else {
                return;
            };
            let _ = agent
                .post(format!(
                    "{base}/2018-06-01/runtime/invocation/{id}/response"
                ))
                .header("Content-Type", "application/json")
                .send(r#"{"statusCode":200,"body":"hello from the demo runtime"}"#);
        }
    });
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{status}"),
    }
}

/// The demo's exit code for an extension that exited with `status`: its exit
/// code, 128 + signal if it was killed.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

async fn run() -> Result<i32, Error> {
    let bin = extension_binary()?;
    let handler = handler_command();
    let tmp = tempfile::Builder::new()
        .prefix("shell-ext-demo")
        .tempdir()?;
    let ext_path = install_extension(&bin, tmp.path())?;

    let sim = Simulator::builder()
        .function_name("shell-ext-demo")
        .invocation_timeout(FUNCTION_TIMEOUT)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .build()
        .await?;
    let runtime_api = format!("127.0.0.1:{}", sim.addr().port());
    say(format!("lambda-simulator 0.2.0 listening on {runtime_api}"));
    say(format!("extension: {}", ext_path.display()));
    say(format!("handler:   {handler}"));
    say(format!(
        "working directory: {} (removed when the demo ends; give files the handler writes absolute paths)",
        tmp.path().display()
    ));
    for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("SHELL_EXT_")) {
        if k != "SHELL_EXT_HANDLER" {
            say(format!("passing {k}={v}"));
        }
    }

    let ext = start_extension(&ext_path, tmp.path(), &runtime_api, &handler)?;
    say(format!("started extension (pid {})", ext.pid));

    let outcome = tokio::select! {
        biased;
        sig = interrupted() => Err(sig),
        code = drive(sim, &ext) => match signal_received() {
            // The extension got the Ctrl-C too and may have exited first.
            Some(sig) => Err(sig),
            None => Ok(code),
        },
    };
    match outcome {
        Ok(code) => {
            ext.stop().await; // only if drive gave up on a live extension
            match ext.summary() {
                Some(summary) => say(format!("extension summary: {summary}")),
                None => say("no summary: the extension exited without logging its summary line"),
            }
            Ok(code)
        }
        Err(sig) => {
            say(format!(
                "interrupted by {}: stopping the extension (pid {}) and removing {}",
                signal_name(sig),
                ext.pid,
                tmp.path().display()
            ));
            ext.stop().await;
            let path = tmp.path().to_path_buf();
            if let Err(e) = tmp.close() {
                say(format!("could not remove {}: {e}", path.display()));
            }
            Ok(128 + sig)
        }
    }
}

/// INIT, the invokes and SHUTDOWN; returns the demo's exit code.
async fn drive(sim: Simulator, ext: &Extension) -> i32 {
    // INIT: wait for register, then for the first /event/next (init command done).
    let init_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let registered = loop {
        if let Some(s) = ext.exited() {
            say(format!("extension exited during init: {}", describe(s)));
            return s.code().filter(|&c| c != 0).unwrap_or(1);
        }
        if let Some(registered) = sim.get_registered_extensions().await.pop() {
            if sim.first_next_poll_at(&registered.id).await.is_some() {
                break registered;
            }
        }
        if tokio::time::Instant::now() > init_deadline {
            say(
                "extension did not register and call /event/next within 10 s (Lambda's init limit)",
            );
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gets_invokes = registered.events.contains(&EventType::Invoke);
    say(format!(
        "registered: name={} events={:?} id={}; waiting for events",
        registered.name, registered.events, registered.id
    ));
    if !gets_invokes {
        say(format!(
            "registered for SHUTDOWN only: the {INVOKES} invokes go to the function alone, \
             Lambda does not wait for the extension (it stays in /event/next until SHUTDOWN)"
        ));
    }

    // The runtime's first /next closes registration and ends INIT.
    spawn_runtime(sim.runtime_api_url());

    for n in 1..=INVOKES {
        let invocation = match InvocationBuilder::new()
            .payload(json!({ "demo": n }))
            .timeout_ms(FUNCTION_TIMEOUT.as_millis() as u64)
            .build()
        {
            Ok(invocation) => invocation,
            Err(e) => {
                say(format!("cannot build invoke #{n}: {e}"));
                return 2;
            }
        };
        say(format!(
            "INVOKE #{n}: request_id={}, {}",
            invocation.request_id,
            time_left(invocation.deadline_ms())
        ));
        let id = sim.enqueue(invocation).await;
        if !gets_invokes {
            tokio::select! {
                r = sim.wait_for_invocation_complete(&id, FUNCTION_TIMEOUT + Duration::from_secs(2)) => match r {
                    Ok(_) => say(format!("INVOKE #{n}: the function answered; the extension was not involved")),
                    Err(e) => {
                        say(format!("INVOKE #{n}: the function never answered: {e}"));
                        return 1;
                    }
                },
                s = ext.wait_exit() => {
                    say(format!("INVOKE #{n}: extension exited: {} (it was waiting for SHUTDOWN)", describe(s)));
                    return exit_code(s);
                }
            }
            continue;
        }
        let _ = sim
            .wait_for_invocation_complete(&id, Duration::from_secs(5))
            .await;
        // The invoke is over when the extension calls /event/next again.
        tokio::select! {
            r = sim.wait_for_extensions_ready(&id, FUNCTION_TIMEOUT + Duration::from_secs(10)) => match r {
                Ok(()) => say(format!("INVOKE #{n}: extension done, back in /event/next")),
                Err(e) => {
                    say(format!("INVOKE #{n}: extension never came back: {e}"));
                    return 1;
                }
            },
            s = ext.wait_exit() => {
                say(format!(
                    "INVOKE #{n}: extension exited: {} (a failing handler with SHELL_EXT_ON_ERROR=exit \
                     stops the extension; on AWS, Lambda would now reset the environment)",
                    describe(s)
                ));
                return exit_code(s);
            }
        }
    }

    say(format!(
        "SHUTDOWN: reason=spindown, deadline in {:.1} s",
        SHUTDOWN_TIMEOUT.as_secs_f64()
    ));
    SHUTDOWN_SENT.store(true, Ordering::SeqCst);
    sim.graceful_shutdown(ShutdownReason::Spindown).await;
    let s = tokio::select! {
        s = ext.wait_exit() => s,
        _ = tokio::time::sleep(SHUTDOWN_TIMEOUT + Duration::from_secs(3)) => {
            say(format!(
                "extension still running {} s after SHUTDOWN (on Lambda it would be killed at the deadline)",
                (SHUTDOWN_TIMEOUT + Duration::from_secs(3)).as_secs()
            ));
            return 1;
        }
    };
    say(format!("extension exited after SHUTDOWN: {}", describe(s)));
    exit_code(s)
}
