//! `make demo` end to end: the Makefile, `examples/demo.rs` against lambda-simulator, the real
//! binary and the scripts in `scripts/`.
//!
//! Each test runs `make -s demo` (or the demo under it) as a user would, with its own temporary
//! folder as `TMPDIR` (the demo's working folder lands there, so the test can check it is gone)
//! and the cargo target directory this test was built into. Under `cargo test` the binary and the
//! example are already built, so the `cargo build` and `cargo run` inside `make demo` only check
//! that they are fresh: each test takes about 3 s. Run on its own (`cargo test --test demo`), the
//! first test builds the example first (seconds, once the dependencies are built).

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{read_pid, secs, wait_for, wait_pid_gone};
use serde_json::Value;

/// Room for a first build of the example and the emulator (about 2 minutes on 2 cores).
const MAKE_TIMEOUT: Duration = Duration::from_secs(600);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory this test belongs to (honours CARGO_TARGET_DIR and
/// --target-dir): CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// A test's own folders: `tmp/` is the demo's TMPDIR, `out/` is where handlers write.
struct Dirs {
    _root: tempfile::TempDir,
    tmp: PathBuf,
    out: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::Builder::new()
            .prefix("demo-test")
            .tempdir()
            .unwrap();
        let tmp = root.path().join("tmp");
        let out = root.path().join("out");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::create_dir(&out).unwrap();
        Dirs {
            _root: root,
            tmp,
            out,
        }
    }

    /// The demo removed its working folder (it creates it under TMPDIR).
    fn assert_tmp_clean(&self, what: &str) {
        let left: Vec<_> = std::fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{what}: the demo left {left:?} in its TMPDIR {}",
            self.tmp.display()
        );
    }
}

/// Variables of an outer make, and what the demo would take as its handler or log filter.
const MAKE_STATE: [&str; 6] = [
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "HANDLER",
    "DEMO_HANDLER",
    "RUST_LOG",
];

/// Whether cargo sets `name` in the environment of the test processes it runs.
fn cargo_set_for_tests(name: &str) -> bool {
    name == "OUT_DIR"
        || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || [
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_RUSTC_CURRENT_DIR",
            "CARGO_TARGET_TMPDIR",
        ]
        .contains(&name)
}

/// `make -s demo HANDLER=<handler> [VAR=value...]` in its own process group, stdout and stderr
/// collected as they arrive.
struct MakeDemo {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl MakeDemo {
    fn start(dirs: &Dirs, handler: &str, make_vars: &[(&str, &str)]) -> MakeDemo {
        let mut cmd = Command::new("make");
        cmd.arg("-s")
            .arg("-C")
            .arg(manifest_dir())
            .arg("demo")
            .arg(format!("HANDLER={handler}"));
        for (k, v) in make_vars {
            cmd.arg(format!("{k}={v}"));
        }
        // Only what the test sets: no make state from an outer `make test`, no handler settings
        // from the caller's shell, and none of the variables cargo sets for this test process
        // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR...): build scripts such as ring's rerun
        // when they change (cargo compares them with its own environment), and ring, rustls and
        // lambda-simulator would then be rebuilt here and again by the next `cargo test`.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("SHELL_EXT_")
                || cargo_set_for_tests(&k)
                || MAKE_STATE.contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.env("CARGO", env!("CARGO"))
            .env("CARGO_TARGET_DIR", target_dir())
            .env("TMPDIR", &dirs.tmp)
            .env("DEMO_TEST_OUT", &dirs.out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .expect("cannot run make: `make demo` needs GNU make on PATH");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        MakeDemo {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout:\n{}--- stderr:\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// The pid of the extension the demo started (from its `started extension (pid N)` line).
    fn wait_extension_pid(&mut self) -> i32 {
        let mut pid = None;
        wait_for(MAKE_TIMEOUT, || {
            pid = self.stdout().lines().find_map(|l| {
                l.strip_prefix("demo | started extension (pid ")?
                    .strip_suffix(')')?
                    .parse()
                    .ok()
            });
            pid.is_some() || matches!(self.child.try_wait(), Ok(Some(_)))
        });
        pid.unwrap_or_else(|| panic!("the demo never started the extension\n{}", self.output()))
    }

    /// Wait for make to exit, and for everything that holds its output pipes (the demo, the
    /// extension) to close them.
    fn finish(mut self, timeout: Duration) -> Finished {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > end {
                // SAFETY: kill(2) on the process group the test created for make.
                unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
                let _ = self.child.wait();
                panic!(
                    "make demo still running after {timeout:?}\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for MakeDemo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the process group the test created for make.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn output(&self) -> String {
        format!("--- stdout:\n{}--- stderr:\n{}", self.stdout, self.stderr)
    }

    /// The demo's own lines (`demo | ...`).
    fn demo_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("demo | "))
            .collect()
    }

    /// The demo's last message repeats the extension's `summary:` line, or says there was none.
    fn assert_ends_with_summary(&self) {
        let logged = self.stderr.lines().find_map(|l| {
            let rest = l.strip_prefix("[lambda-shell-extension] ")?;
            rest.split_once(' ')?.1.strip_prefix("summary:")
        });
        let last = self.stdout.lines().last().unwrap_or("");
        match logged {
            Some(summary) => assert_eq!(
                last,
                format!("demo | extension summary: {}", summary.trim()),
                "the demo must end with the extension's summary\n{}",
                self.output()
            ),
            None => assert!(
                last.starts_with("demo | no summary"),
                "the extension logged no summary: the demo must end by saying so\n{}",
                self.output()
            ),
        }
    }
}

fn run_demo(dirs: &Dirs, handler: &str, make_vars: &[(&str, &str)]) -> Finished {
    MakeDemo::start(dirs, handler, make_vars).finish(MAKE_TIMEOUT)
}

/// The JSON Lines file a handler wrote: one valid JSON event per line; their eventTypes.
fn event_types(path: &Path, run: &Finished) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "the handler did not write {}: {e}\n{}",
            path.display(),
            run.output()
        )
    });
    assert!(text.ends_with('\n'), "last line without newline: {text:?}");
    text.lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("not one JSON event per line ({e}): {line:?}\nfile:\n{text}")
            });
            event["eventType"].as_str().unwrap_or("?").to_string()
        })
        .collect()
}

const ALL_EVENTS: [&str; 4] = ["INVOKE", "INVOKE", "INVOKE", "SHUTDOWN"];

/// Defect 3: `make demo HANDLER='...'` passes the handler to the demo exactly as typed, shell
/// syntax included: braces, `;`, a redirect, `$VAR` (which make must not expand), double and
/// single quotes. The handler appends each event as one JSON line: 3 INVOKE + 1 SHUTDOWN.
#[test]
fn make_demo_passes_a_shell_handler_through_as_typed() {
    let dirs = Dirs::new();
    let handler = r#"{ cat; echo; } >> "$DEMO_TEST_OUT"/'events.jsonl'"#;
    let run = run_demo(&dirs, handler, &[]);
    assert!(run.status.success(), "make demo failed\n{}", run.output());
    assert!(
        run.stdout
            .contains(&format!("demo | handler:   {handler}\n")),
        "the demo must get the handler verbatim\n{}",
        run.output()
    );
    assert_eq!(
        event_types(&dirs.out.join("events.jsonl"), &run),
        ALL_EVENTS,
        "{}",
        run.output()
    );
    // Deadlines as time left, not epoch ms, in the demo's own lines.
    let invoke_lines: Vec<_> = run
        .demo_lines()
        .into_iter()
        .filter(|l| l.contains("request_id="))
        .collect();
    assert_eq!(invoke_lines.len(), 3, "{}", run.output());
    for line in invoke_lines {
        assert!(line.contains("deadline in "), "{line}");
        assert!(!line.contains("deadline_ms"), "{line}");
    }
    dirs.assert_tmp_clean("after a successful demo");
    run.assert_ends_with_summary();
}

/// Defect 4: the shipped JSON Lines example (a bare `cat >> file` would write `}{`).
#[test]
fn make_demo_with_append_jsonl_writes_one_json_line_per_event() {
    let dirs = Dirs::new();
    let file = dirs.out.join("lifecycle.jsonl");
    let run = run_demo(
        &dirs,
        "scripts/append-jsonl.sh",
        &[("EVENTS_FILE", file.to_str().unwrap())],
    );
    assert!(run.status.success(), "make demo failed\n{}", run.output());
    assert_eq!(event_types(&file, &run), ALL_EVENTS, "{}", run.output());
    dirs.assert_tmp_clean("after a successful demo");
    run.assert_ends_with_summary();
}

/// SHELL_EXT_EVENTS=SHUTDOWN: the extension gets only SHUTDOWN, and the demo does not claim it
/// handled the invokes.
#[test]
fn make_demo_shutdown_only_does_not_claim_invokes() {
    let dirs = Dirs::new();
    let file = dirs.out.join("events.jsonl");
    let run = run_demo(
        &dirs,
        "scripts/append-jsonl.sh",
        &[
            ("EVENTS_FILE", file.to_str().unwrap()),
            ("SHELL_EXT_EVENTS", "SHUTDOWN"),
        ],
    );
    assert!(run.status.success(), "make demo failed\n{}", run.output());
    assert_eq!(event_types(&file, &run), ["SHUTDOWN"], "{}", run.output());
    let lines = run.demo_lines();
    assert!(
        lines.iter().any(|l| l.contains("SHUTDOWN only")),
        "the demo should say the invokes bypass the extension\n{}",
        run.output()
    );
    for line in lines.iter().filter(|l| l.starts_with("demo | INVOKE #")) {
        assert!(
            !line.contains("extension done"),
            "claims an invoke the extension never saw: {line}\n{}",
            run.output()
        );
    }
    run.assert_ends_with_summary();
}

/// A failing handler: the extension cannot report exit/error to the emulator (404); the demo
/// labels that as the emulator's limit, passes the extension's exit code on, and still cleans up.
#[test]
fn make_demo_labels_the_emulators_404_as_its_limit() {
    let dirs = Dirs::new();
    let run = run_demo(&dirs, "scripts/fail.sh", &[]);
    assert!(!run.status.success(), "fail.sh must fail\n{}", run.output());
    assert!(
        run.stderr.contains("Error 1"),
        "the demo's exit code is the extension's (1)\n{}",
        run.output()
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("could not report") && l.contains("404")),
        "expected the extension to log the emulator's 404\n{}",
        run.output()
    );
    assert!(
        run.stdout.contains(
            "demo | note: the emulator does not implement exit/error (answers 404); \
             on AWS Lambda the report is accepted"
        ),
        "the 404 must be labelled as an emulator limit\n{}",
        run.output()
    );
    dirs.assert_tmp_clean("after a failed demo");
    run.assert_ends_with_summary();
}

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat).
fn parent_pid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A handler that records its pid and sleeps well past the test.
const SLEEPER: &str = r#"echo $$ > "$DEMO_TEST_OUT"/handler.pid; exec sleep 30"#;

/// Start `make demo` with the sleeper and wait until the handler runs (INVOKE #1); returns the
/// make run and the pids of the demo, the extension and the handler.
fn start_sleeper(dirs: &Dirs) -> (MakeDemo, i32, i32, i32) {
    let mut make = MakeDemo::start(dirs, SLEEPER, &[]);
    let ext = make.wait_extension_pid();
    let demo = parent_pid(ext);
    let comm = std::fs::read_to_string(format!("/proc/{demo}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "demo",
        "the extension's parent should be the demo"
    );
    let pid_file = dirs.out.join("handler.pid");
    assert!(
        wait_for(secs(10), || pid_file.exists()),
        "the handler never ran\n{}",
        make.output()
    );
    let handler = read_pid(&pid_file);
    (make, demo, ext, handler)
}

fn assert_all_gone(dirs: &Dirs, demo: i32, ext: i32, handler: i32, run: &Finished) {
    assert!(
        wait_pid_gone(demo, secs(5)),
        "the demo is still running\n{}",
        run.output()
    );
    let survivors: Vec<_> = [("extension", ext), ("handler", handler)]
        .into_iter()
        .filter(|&(_, pid)| !wait_pid_gone(pid, secs(3)))
        .collect();
    for &(_, pid) in &survivors {
        common::cleanup_pid(pid);
    }
    assert!(
        survivors.is_empty(),
        "still running after the demo: {survivors:?}\n{}",
        run.output()
    );
    dirs.assert_tmp_clean("after Ctrl-C");
    assert!(
        run.stdout.contains("demo | interrupted by SIGINT"),
        "the demo should say it was interrupted\n{}",
        run.output()
    );
}

/// SIGINT to the demo alone: it must stop the extension itself (and with it the handler),
/// remove its temporary folder and exit 130.
#[test]
fn sigint_to_the_demo_stops_the_extension_and_removes_its_folder() {
    let dirs = Dirs::new();
    let (make, demo, ext, handler) = start_sleeper(&dirs);
    // SAFETY: kill(2) on the demo process this test started (through make).
    unsafe { libc::kill(demo, libc::SIGINT) };
    let run = make.finish(secs(20));
    assert!(
        run.stderr.contains("Error 130"),
        "the demo should exit 130 after SIGINT\n{}",
        run.output()
    );
    assert_all_gone(&dirs, demo, ext, handler, &run);
}

/// Ctrl-C in a terminal: SIGINT to the whole foreground process group (make, the demo and the
/// extension at once; the handler runs in a process group of its own).
#[test]
fn ctrl_c_on_make_demo_leaves_nothing_behind() {
    let dirs = Dirs::new();
    let (make, demo, ext, handler) = start_sleeper(&dirs);
    let group = make.child.id() as i32;
    // SAFETY: kill(2) on the process group this test created for make.
    unsafe { libc::kill(-group, libc::SIGINT) };
    // make may exit before the demo has cleaned up; finish() also waits for the demo and the
    // extension to close the output pipes.
    let run = make.finish(secs(20));
    assert_all_gone(&dirs, demo, ext, handler, &run);
}

/// `make help` lists the main targets, one line each; `make` alone still builds.
#[test]
fn make_help_lists_the_main_targets() {
    let out = Command::new("make")
        .args(["-s", "-C"])
        .arg(manifest_dir())
        .arg("help")
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("cannot run make");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for target in [
        "demo", "test", "lint", "build", "release", "size", "layer", "bench", "profiles", "fmt",
        "clean",
    ] {
        let prefix = format!("make {target} ");
        assert!(
            text.lines().any(|l| l.starts_with(&prefix)),
            "make help does not list `make {target}`:\n{text}"
        );
    }
    assert!(text.contains("SHELL_EXT_EVENTS=SHUTDOWN"), "{text}");
    let makefile = std::fs::read_to_string(manifest_dir().join("Makefile")).unwrap();
    assert!(
        makefile.lines().next().unwrap_or("").contains("make help"),
        "the Makefile's first line should point at `make help`"
    );
    let first_rule = makefile
        .lines()
        .find(|l| {
            l.split_once(':').is_some_and(|(t, _)| {
                !t.is_empty() && !t.starts_with(['#', '.', '\t', ' ']) && !t.contains([' ', '='])
            }) && !l.contains(":=")
        })
        .unwrap_or("");
    assert_eq!(
        first_rule, "all: build",
        "the default target must stay `build`"
    );
}
