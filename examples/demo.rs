//! Local demo: run the real `lambda-shell-extension` binary against the
//! `lambda-simulator` Lambda emulator, send 3 invokes and a SHUTDOWN, and show
//! what the handler script prints.
//!
//! ```sh
//! make demo                                   # scripts/log-event.sh
//! make demo HANDLER=scripts/fail.sh           # Extension.HandlerFailed
//! make demo HANDLER=scripts/timeout.sh        # Extension.HandlerTimeout
//! make demo HANDLER=scripts/flush-on-shutdown.sh SHELL_EXT_EVENTS=SHUTDOWN
//! SHELL_EXT_ON_ERROR=continue make demo HANDLER=scripts/fail.sh
//! ```
//!
//! The handler is the first CLI argument, else `$SHELL_EXT_HANDLER`, else
//! `scripts/log-event.sh`. Other `SHELL_EXT_*` variables in the environment are
//! passed through to the extension unchanged.
//!
//! The demo plays the Lambda runtime itself (polls
//! `/2018-06-01/runtime/invocation/next` and posts a response), like the
//! function process would. Note that the simulator answers 404 to
//! `/extension/init/error` and `/extension/exit/error`, so the extension's error
//! reports show up as failed requests in its log; on AWS they are accepted (202).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_simulator::{InvocationBuilder, ShutdownReason, Simulator};
use serde_json::json;

const EXTENSION_NAME: &str = "lambda-shell-extension";
const INVOKES: usize = 3;
/// Function timeout: each INVOKE's deadlineMs is this far after the enqueue.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(3);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn say(msg: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "demo | {}", msg.as_ref());
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("demo: error: {e}");
            std::process::exit(2);
        }
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

/// The handler command: CLI args (joined), else `$SHELL_EXT_HANDLER`, else
/// log-event.sh. A relative path to an existing file as the first word is made
/// absolute (on Lambda the extension does not run in your current directory).
fn handler_command() -> String {
    let args = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let raw = Some(args)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::env::var("SHELL_EXT_HANDLER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/log-event.sh").into());
    let raw = raw.trim();
    let (first, rest) = raw.split_once(char::is_whitespace).unwrap_or((raw, ""));
    match std::fs::canonicalize(first) {
        Ok(abs) if abs.is_file() && rest.is_empty() => abs.to_string_lossy().into_owned(),
        Ok(abs) if abs.is_file() => format!("{} {rest}", abs.to_string_lossy()),
        _ => raw.to_string(),
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

fn exited(slot: &Mutex<Option<ExitStatus>>) -> Option<ExitStatus> {
    *slot.lock().unwrap()
}

/// Resolves once the extension process has exited.
async fn wait_exit(slot: &Mutex<Option<ExitStatus>>) -> ExitStatus {
    loop {
        if let Some(s) = exited(slot) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .await?;
    let runtime_api = format!("127.0.0.1:{}", sim.addr().port());
    say(format!("lambda-simulator 0.2.0 listening on {runtime_api}"));
    say(format!("extension: {}", ext_path.display()));
    say(format!("handler:   {handler}"));
    for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("SHELL_EXT_")) {
        if k != "SHELL_EXT_HANDLER" {
            say(format!("passing {k}={v}"));
        }
    }

    let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let child = Command::new(&ext_path)
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("SHELL_EXT_HANDLER", &handler)
        .env("RUST_LOG", rust_log)
        .env("AWS_LAMBDA_FUNCTION_NAME", "shell-ext-demo")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .current_dir(tmp.path())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ext_path.display()))?;
    let pid = child.id();
    let status = watch_child(child);
    say(format!("started extension (pid {pid})"));

    // INIT: wait for register, then for the first /event/next (init command done).
    let init_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ext = loop {
        if let Some(s) = exited(&status) {
            say(format!("extension exited during init: {}", describe(s)));
            return Ok(s.code().filter(|&c| c != 0).unwrap_or(1));
        }
        if let Some(ext) = sim.get_registered_extensions().await.pop() {
            if sim.first_next_poll_at(&ext.id).await.is_some() {
                break ext;
            }
        }
        if tokio::time::Instant::now() > init_deadline {
            say(
                "extension did not register and call /event/next within 10 s (Lambda's init limit)",
            );
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    say(format!(
        "registered: name={} events={:?} id={}; waiting for events",
        ext.name, ext.events, ext.id
    ));

    // The runtime's first /next closes registration and ends INIT.
    spawn_runtime(sim.runtime_api_url());

    for n in 1..=INVOKES {
        let invocation = InvocationBuilder::new()
            .payload(json!({ "demo": n }))
            .timeout_ms(FUNCTION_TIMEOUT.as_millis() as u64)
            .build()?;
        let deadline_ms = invocation.deadline_ms();
        say(format!(
            "INVOKE #{n}: request_id={} deadline_ms={deadline_ms}",
            invocation.request_id
        ));
        let id = sim.enqueue(invocation).await;
        let _ = sim
            .wait_for_invocation_complete(&id, Duration::from_secs(5))
            .await;
        // The invoke is over when the extension calls /event/next again.
        tokio::select! {
            r = sim.wait_for_extensions_ready(&id, FUNCTION_TIMEOUT + Duration::from_secs(10)) => match r {
                Ok(()) => say(format!("INVOKE #{n}: extension done, back in /event/next")),
                Err(e) => {
                    say(format!("INVOKE #{n}: extension never came back: {e}"));
                    return Ok(1);
                }
            },
            s = wait_exit(&status) => {
                say(format!(
                    "INVOKE #{n}: extension exited: {} (a failing handler with SHELL_EXT_ON_ERROR=exit \
                     stops the extension; on AWS, Lambda would now reset the environment)",
                    describe(s)
                ));
                return Ok(s.code().unwrap_or(1));
            }
        }
    }

    say("SHUTDOWN: reason=spindown (the extension has up to 2 s)");
    sim.graceful_shutdown(ShutdownReason::Spindown).await;
    let s = tokio::select! {
        s = wait_exit(&status) => s,
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            say(format!("extension still running 5 s after SHUTDOWN; killing pid {pid}"));
            // SAFETY: plain kill(2) on the child we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return Ok(1);
        }
    };
    say(format!("extension exited after SHUTDOWN: {}", describe(s)));
    Ok(s.code().unwrap_or(1))
}
