//! The benchmark driver: plays the Lambda Extensions API on loopback for one extension process at
//! a time and measures it.
//!
//! For every program and round it copies the binary to `<tmp>/opt/extensions/<program>`, starts
//! it with no arguments and `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>` (plus the program's own
//! env), serves registration, N INVOKE events (deadline 5 s ahead) and a SHUTDOWN, and records:
//! - cold start: from just before `spawn()` to the moment the registration request (head and
//!   body) has been read;
//! - per-event overhead: from the moment an INVOKE response has been written to the moment the
//!   next `/event/next` request has been read (N samples per run: the last one ends at the request
//!   answered with SHUTDOWN);
//! - SHUTDOWN → exit: from the moment the SHUTDOWN response has been written to the moment the
//!   process is seen to exit (its pidfd becomes readable);
//! - VmHWM: the extension process's own peak RSS, read from /proc/<pid>/status just before the
//!   SHUTDOWN response is written (children not included);
//! - tree maxrss: `ru_maxrss` from wait4(): the largest peak RSS of the extension process and of
//!   every descendant it waited for (a maximum over the tree, not a sum);
//! - exit status, and whether the extension spoke the protocol exactly as expected.
//!
//! Telemetry: `PUT /2022-07-01/telemetry` is answered 200 `OK` (as Lambda does) for the programs
//! with telemetry configured, and the driver then plays the Telemetry API too: it reads the
//! listener's port from the destination URI (`http://sandbox.localdomain:<port>`), connects to
//! 127.0.0.1 and POSTs batches one at a time, each after the previous was answered, while the
//! extension waits in `/event/next` before SHUTDOWN (see [`Telemetry`]). For the throughput load
//! it records the accept time (first POST written → last 200 read) and the time to the exit
//! (first POST written → exit seen: the extension runs the command on every batch before it
//! exits); every run must log `telemetry: N batches received, N delivered` with N the batches
//! answered 200, or it misbehaved.
//!
//! Persistent mode (`SHELL_EXT_MODE=persistent`): the product with the handler `bench-ack` (the
//! cheapest there is), a quiet bash loop and a quiet Python loop, installed in `<tmp>/opt/`; each
//! is compared with the no-command floor (target ≤ 2×) and with `product-exec` (target ≥ 8×
//! faster), both paired per round, as is the official crate with no command. A program whose
//! interpreter is missing is skipped with a note.
//!
//! Resources: the extension's open fds, threads and VmRSS (and its children, and how many of them
//! are zombies) after 10 % of the events (at most 1000) and just before SHUTDOWN.
//!
//! Runtime API proxy (`SHELL_EXT_PROXY`, docs/proxy.md): the driver serves the Runtime API on the
//! same port as the Extensions API, as Lambda does (`GET /2018-06-01/runtime/invocation/next`
//! answered with an invocation of [`invocation`]: a 1 KiB payload and the `Lambda-Runtime-*`
//! headers; `POST …/invocation/{id}/response` answered 202), and once the extension has registered
//! it starts `bench-runtime`, a blocking keep-alive runtime client, pointed either straight at the
//! driver (`runtime-direct`, the floor: its extension is bench-floor, idle in `/event/next`) or at
//! the extension's proxy (`proxy-*`). Per invocation it measures, as the runtime client sees it,
//! GET next written → the 202 of its POST response read; each proxy program is compared with
//! `runtime-direct` in the same round (target for `proxy-forward`: ≤ +100 µs, median). As on
//! Lambda, the next invocation is handed out only when the previous one is closed: its response
//! received and, for an extension registered for INVOKE (a response handler), the extension back
//! in `/event/next` (which the proxy holds until the response handler is done); the INVOKE and the
//! invocation carry the same request id. An `/event/next` after an INVOKE that comes before the
//! function's response is a problem. After the last invocation the client asks for the next once
//! more and is left waiting there (so is the proxy's upstream request), then the extension gets
//! SHUTDOWN and must exit.
//!
//! The chart: per-event medians by program and mode as horizontal bars, each with its floor
//! marked, written as SVG next to the JSON (and to `--chart-copy FILE`); the proxy's programs
//! per invocation on a panel of their own.
//!
//! Programs are interleaved round by round (A B C … A B C …); each program is compared with its
//! floor measured in the same round. The driver pins itself to one CPU and the extension (and so
//! its children) to another when the machine has two. A single thread serves every connection with
//! poll(2); requests are read and answered as they arrive, responses go out in one write.
//!
//! Exit status: 0 when every run behaved, 1 when any misbehaved (wrong exit status, wrong request
//! counts, an init/error or exit/error post, a request after SHUTDOWN, a telemetry batch refused
//! or not delivered), 2 on a usage error.

#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

#[path = "../invocation.rs"]
mod invocation;

use invocation::request_id;

const EXTENSION_ID: &str = "6a1b7e1c-0d8f-4a57-9c53-2f6a3d1e0b42";
const SH_HANDLER: &str = "cat >/dev/null";

// Persistent handlers (SHELL_EXT_MODE=persistent): placeholders in a program's env, replaced
// with the path of the handler as installed next to the extensions (see `install_handlers`).
/// bench-ack: the cheapest handler there is (a BufReader on stdin, one write of `ok` per line).
const ACK_HANDLER: &str = "@bench-ack@";
/// scripts/persistent-handler.sh without its log line per event (see `BASH_HANDLER_TEXT`).
const BASH_HANDLER: &str = "@persistent-bash@";
/// scripts/persistent-handler.py without its log line per event (see `PYTHON_HANDLER_TEXT`).
const PYTHON_HANDLER: &str = "@persistent-python@";
/// The proxy's port (`SHELL_EXT_PROXY_PORT`): a placeholder in a program's env, replaced with a
/// free loopback port for each run.
const PROXY_PORT: &str = "@proxy-port@";
/// The floor of the proxy's programs: the runtime client straight to the stand-in Runtime API.
const RUNTIME_FLOOR: &str = "runtime-direct";
/// The proxy's target: at most this much per invocation over `runtime-direct` (median, paired per
/// round), with no handler (`proxy-forward`).
const PROXY_TARGET_US: f64 = 100.0;
/// The program that target is for.
const PROXY_TARGET_PROGRAM: &str = "proxy-forward";
/// The PATH every program runs with.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The per-event program that persistent mode is compared with (the ≥ 8× target).
const PER_EVENT_PEER: &str = "product-exec";

/// The bash example's loop, quiet: `read` (one read(2) per byte of the line, as bash must not
/// read past the newline of a pipe) and the acknowledgement, nothing printed.
const BASH_HANDLER_TEXT: &str = r#"#!/bin/bash
# The bench's persistent handler in bash: scripts/persistent-handler.sh without its log line.
while IFS= read -r event; do
    echo ok >&3
done
"#;

/// The Python example's loop, quiet: each line parsed as JSON and acknowledged, nothing printed.
const PYTHON_HANDLER_TEXT: &str = r#"#!/usr/bin/env python3
# The bench's persistent handler in Python: scripts/persistent-handler.py without its log line.
import json
import os
import sys

ack = os.fdopen(int(os.environ.get("LAMBDA_ACK_FD", "3")), "w", buffering=1)
for line in sys.stdin:
    json.loads(line)
    ack.write("ok\n")
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Binary {
    Floor,
    Official,
    Product,
}

impl Binary {
    fn label(self) -> &'static str {
        match self {
            Binary::Floor => "bench-floor",
            Binary::Official => "official-peer",
            Binary::Product => "lambda-shell-extension",
        }
    }
}

struct Program {
    name: &'static str,
    binary: Binary,
    env: Vec<(&'static str, String)>,
    /// The program this one is compared with (None: it is a floor).
    floor: Option<&'static str>,
    /// Registered for SHUTDOWN only: gets no INVOKE, must make exactly one /event/next.
    shutdown_only: bool,
    /// What the driver does as the Telemetry API for it.
    telemetry: Telemetry,
    /// Whether a runtime client runs next to it, and where it is pointed.
    runtime: Runtime,
    description: &'static str,
}

/// The driver's part as Lambda's Runtime API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Runtime {
    /// No runtime: a Runtime API request is a problem.
    Off,
    /// `bench-runtime` talks straight to the driver (the floor of the proxy's programs).
    Direct,
    /// `bench-runtime` talks to the extension's proxy on `SHELL_EXT_PROXY_PORT`.
    Proxy,
}

/// The driver's part as Lambda's Telemetry API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Telemetry {
    /// No telemetry configured: a `PUT /2022-07-01/telemetry` is a problem.
    Off,
    /// Subscribed next to an event handler: the PUT is answered 200 and, just before SHUTDOWN,
    /// the `platform.report` of every INVOKE is POSTed to its listener (one batch per 1000, as
    /// Lambda's default `maxItems`), so that it has no report to wait for at SHUTDOWN.
    Reports,
    /// Telemetry-only (SHUTDOWN only): at its one `/event/next`, `--batches` realistic batches
    /// are POSTed to its listener one after the other, each once the previous was answered (as
    /// Lambda does), then SHUTDOWN; it must deliver every one before it exits.
    Load,
}

fn programs() -> Vec<Program> {
    let sh_argv = format!("/bin/sh\x1f-c\x1f{SH_HANDLER}");
    vec![
        Program {
            name: "floor",
            binary: Binary::Floor,
            env: vec![("BENCH_HANDLER", "/bin/true".into())],
            floor: None,
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "raw TcpStream GET + spawn/wait /bin/true per event (stdin null)",
        },
        Program {
            name: "floor-nocmd",
            binary: Binary::Floor,
            env: vec![],
            floor: None,
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "raw TcpStream GET per event, spawns nothing",
        },
        Program {
            name: "floor-sh",
            binary: Binary::Floor,
            env: vec![("BENCH_HANDLER", sh_argv.clone())],
            floor: None,
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "raw TcpStream GET + spawn/wait /bin/sh -c 'cat >/dev/null' per event",
        },
        Program {
            name: "official",
            binary: Binary::Official,
            env: vec![("BENCH_HANDLER", "/bin/true".into())],
            floor: Some("floor"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "lambda-extension crate + tokio::process /bin/true, event JSON on stdin",
        },
        Program {
            name: "official-sh",
            binary: Binary::Official,
            env: vec![("BENCH_HANDLER", sh_argv)],
            floor: Some("floor-sh"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "lambda-extension crate + tokio::process sh -c 'cat >/dev/null'",
        },
        Program {
            name: "product-exec",
            binary: Binary::Product,
            env: vec![("SHELL_EXT_HANDLER", "/bin/true".into())],
            floor: Some("floor"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "SHELL_EXT_HANDLER=/bin/true (exec'd directly)",
        },
        Program {
            name: "product-exec-quiet",
            binary: Binary::Product,
            // The per-event info line off: what that line costs is product-exec minus this.
            env: vec![
                ("SHELL_EXT_HANDLER", "/bin/true".into()),
                ("RUST_LOG", "warn".into()),
            ],
            floor: Some("floor"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "as product-exec, with RUST_LOG=warn (no log line per event)",
        },
        Program {
            name: "product-sh",
            binary: Binary::Product,
            // Shell mode (the `>`): the product spawns `/bin/sh -c 'cat >/dev/null'`, the very
            // process floor-sh and official-sh spawn. (`SHELL_EXT_HANDLER="sh -c '…'"` would
            // spawn one more dash: /bin/sh -c "sh -c '…'", as dash does not exec its last command.)
            env: vec![("SHELL_EXT_HANDLER", SH_HANDLER.into())],
            floor: Some("floor-sh"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "SHELL_EXT_HANDLER=\"cat >/dev/null\": shell mode, spawns /bin/sh -c 'cat >/dev/null'",
        },
        Program {
            name: "product-shutdown-only",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_HANDLER", "/bin/true".into()),
                ("SHELL_EXT_EVENTS", "SHUTDOWN".into()),
            ],
            floor: Some("floor"),
            shutdown_only: true,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "SHELL_EXT_EVENTS=SHUTDOWN, handler /bin/true at SHUTDOWN only",
        },
        Program {
            name: "product-telemetry",
            binary: Binary::Product,
            // product-exec with telemetry configured: what that costs is this minus product-exec.
            env: vec![
                ("SHELL_EXT_HANDLER", "/bin/true".into()),
                ("SHELL_EXT_TELEMETRY_HANDLER", SH_HANDLER.into()),
            ],
            floor: Some("floor"),
            shutdown_only: false,
            telemetry: Telemetry::Reports,
            runtime: Runtime::Off,
            description: "as product-exec, plus SHELL_EXT_TELEMETRY_HANDLER=\"cat >/dev/null\" (the reports come in one batch before SHUTDOWN)",
        },
        Program {
            name: "product-telemetry-only",
            binary: Binary::Product,
            env: vec![("SHELL_EXT_TELEMETRY_HANDLER", SH_HANDLER.into())],
            floor: Some("floor"),
            shutdown_only: true,
            telemetry: Telemetry::Load,
            runtime: Runtime::Off,
            description: "no SHELL_EXT_HANDLER, SHELL_EXT_TELEMETRY_HANDLER=\"cat >/dev/null\": SHUTDOWN only, --batches batches POSTed at its /event/next",
        },
        Program {
            name: "official-nocmd",
            binary: Binary::Official,
            env: vec![],
            floor: Some("floor-nocmd"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "lambda-extension crate, no command: its event loop alone",
        },
        Program {
            name: "product-persistent",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_MODE", "persistent".into()),
                ("SHELL_EXT_HANDLER", ACK_HANDLER.into()),
            ],
            floor: Some("floor-nocmd"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "SHELL_EXT_MODE=persistent, SHELL_EXT_HANDLER=bench-ack (reads a line, writes ok to fd 3)",
        },
        Program {
            name: "product-persistent-bash",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_MODE", "persistent".into()),
                ("SHELL_EXT_HANDLER", BASH_HANDLER.into()),
            ],
            floor: Some("floor-nocmd"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "SHELL_EXT_MODE=persistent, a bash `while IFS= read -r event; do echo ok >&3; done` loop",
        },
        Program {
            name: "product-persistent-python",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_MODE", "persistent".into()),
                ("SHELL_EXT_HANDLER", PYTHON_HANDLER.into()),
            ],
            floor: Some("floor-nocmd"),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Off,
            description: "SHELL_EXT_MODE=persistent, a python3 `for line in sys.stdin` loop: json.loads, ok to fd 3",
        },
        Program {
            name: RUNTIME_FLOOR,
            binary: Binary::Floor,
            env: vec![("BENCH_EVENTS", "SHUTDOWN".into())],
            floor: None,
            shutdown_only: true,
            telemetry: Telemetry::Off,
            runtime: Runtime::Direct,
            description: "bench-runtime straight to the stand-in Runtime API (next, then response, per invocation); bench-floor registered for SHUTDOWN only next to it",
        },
        Program {
            name: "proxy-forward",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_PROXY", "on".into()),
                ("SHELL_EXT_PROXY_PORT", PROXY_PORT.into()),
            ],
            floor: Some(RUNTIME_FLOOR),
            shutdown_only: true,
            telemetry: Telemetry::Off,
            runtime: Runtime::Proxy,
            description: "SHELL_EXT_PROXY=on, no handler: bench-runtime through the proxy (SHUTDOWN only)",
        },
        Program {
            name: "proxy-request-handler",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_REQUEST_HANDLER", "/bin/true".into()),
                ("SHELL_EXT_PROXY_PORT", PROXY_PORT.into()),
            ],
            floor: Some(RUNTIME_FLOOR),
            shutdown_only: true,
            telemetry: Telemetry::Off,
            runtime: Runtime::Proxy,
            description: "SHELL_EXT_REQUEST_HANDLER=/bin/true: run on every invocation inside the runtime's next (SHUTDOWN only)",
        },
        Program {
            name: "proxy-response-handler",
            binary: Binary::Product,
            env: vec![
                ("SHELL_EXT_RESPONSE_HANDLER", "/bin/true".into()),
                ("SHELL_EXT_PROXY_PORT", PROXY_PORT.into()),
            ],
            floor: Some(RUNTIME_FLOOR),
            shutdown_only: false,
            telemetry: Telemetry::Off,
            runtime: Runtime::Proxy,
            description: "SHELL_EXT_RESPONSE_HANDLER=/bin/true: run after every response, the extension's /event/next held until it is done (INVOKE,SHUTDOWN)",
        },
    ]
}

struct Options {
    events: usize,
    /// Telemetry batches per run of a `Telemetry::Load` program.
    batches: usize,
    rounds: usize,
    warmup: usize,
    programs: Option<Vec<String>>,
    paths: BTreeMap<&'static str, PathBuf>,
    /// The bench-ack handler of the persistent programs.
    ack: PathBuf,
    /// The runtime client of the proxy's programs.
    runtime: PathBuf,
    out: PathBuf,
    /// A second copy of the chart (`--chart-copy`, for the README).
    chart_copy: Option<PathBuf>,
    build: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-driver [--events N] [--batches N] [--rounds R] [--warmup N] [--quick] [--programs a,b,...]\n\
         \x20                   [--product PATH] [--floor PATH] [--official PATH] [--ack PATH] [--runtime PATH]\n\
         \x20                   [--out FILE] [--chart-copy FILE] [--build LABEL]\n\
         programs: {}\n\
         binaries default to the driver's own directory; --out defaults to target/bench/results.json,\n\
         the chart is written next to it (.svg); --chart-copy writes it there too",
        programs()
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(",")
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut options = Options {
        events: 500,
        batches: 2000,
        rounds: 5,
        warmup: 20,
        programs: None,
        paths: [Binary::Floor, Binary::Official, Binary::Product]
            .into_iter()
            .map(|binary| (binary.label(), own_dir.join(binary.label())))
            .collect(),
        ack: own_dir.join("bench-ack"),
        runtime: own_dir.join("bench-runtime"),
        out: PathBuf::from("target/bench/results.json"),
        chart_copy: None,
        build: String::from("unspecified"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--events" => options.events = value().parse().unwrap_or_else(|_| usage()),
            "--batches" => options.batches = value().parse().unwrap_or_else(|_| usage()),
            "--rounds" => options.rounds = value().parse().unwrap_or_else(|_| usage()),
            "--warmup" => options.warmup = value().parse().unwrap_or_else(|_| usage()),
            "--quick" => {
                options.events = 5;
                options.batches = 100;
                options.rounds = 1;
                options.warmup = 0;
            }
            "--programs" => {
                options.programs = Some(value().split(',').map(str::to_owned).collect())
            }
            "--product" => {
                options
                    .paths
                    .insert(Binary::Product.label(), value().into());
            }
            "--floor" => {
                options.paths.insert(Binary::Floor.label(), value().into());
            }
            "--official" => {
                options
                    .paths
                    .insert(Binary::Official.label(), value().into());
            }
            "--ack" => options.ack = value().into(),
            "--runtime" => options.runtime = value().into(),
            "--out" => options.out = value().into(),
            "--chart-copy" => options.chart_copy = Some(value().into()),
            "--build" => options.build = value(),
            _ => usage(),
        }
    }
    if options.rounds == 0 || options.events == 0 || options.batches == 0 {
        usage();
    }
    options
}

// ---------------------------------------------------------------------------------------------
// CPU pinning

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread (the driver has only one) to `cpu`.
fn pin_self(cpu: usize) -> bool {
    let set = cpu_set(&[cpu]);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

// ---------------------------------------------------------------------------------------------
// One run of one program

#[derive(Default, Clone)]
struct Run {
    /// The driver's own VmHWM just before the spawn (folded into tree_maxrss by the kernel).
    driver_vm_hwm_kib: Option<u64>,
    cold_start_us: Option<f64>,
    /// Registration response written → first `/event/next` read: the extension's own Init
    /// (where it subscribes to telemetry).
    init_us: Option<f64>,
    per_event_us: Vec<f64>,
    shutdown_to_exit_us: Option<f64>,
    vm_hwm_kib: Option<u64>,
    tree_maxrss_kib: Option<u64>,
    exit: Option<String>,
    exit_ok: bool,
    registers: usize,
    nexts: usize,
    invokes: usize,
    connections: usize,
    /// `PUT /2022-07-01/telemetry` requests.
    telemetry_puts: usize,
    /// Telemetry batches POSTed to the listener and answered 200, and their bytes.
    telemetry_sent: usize,
    telemetry_bytes: usize,
    /// First telemetry POST written → the 200 of the last one read.
    telemetry_accept_us: Option<f64>,
    /// First telemetry POST written → the process's exit seen (it delivers all before exiting).
    telemetry_to_exit_us: Option<f64>,
    /// From its `telemetry: N batches received, M delivered` log line.
    telemetry_received: Option<u64>,
    telemetry_delivered: Option<u64>,
    /// Runtime API (the proxy's programs): per invocation, as the runtime client measured it
    /// (GET next written → the 202 of its POST response read).
    invocation_us: Vec<f64>,
    /// The function's response read by the driver → the extension's next `/event/next` read
    /// (registered for INVOKE: how long the response handler keeps it after the response).
    post_response_us: Vec<f64>,
    /// Invocations handed out and responses received by the stand-in Runtime API, and its
    /// `/next` requests (one more than the invocations: the last one is left waiting).
    runtime_invocations: usize,
    runtime_responses: usize,
    runtime_nexts: usize,
    /// TCP connections the runtime client opened (1 when keep-alive held throughout).
    runtime_connections: Option<usize>,
    /// The extension's resources after `early_after` events, and just before SHUTDOWN.
    early: Option<Resources>,
    end: Option<Resources>,
    problems: Vec<String>,
}

/// What the extension process holds at one moment, from /proc.
#[derive(Clone, Copy, Debug)]
struct Resources {
    /// INVOKEs answered (and acknowledged: it is waiting in the next /event/next).
    after_events: usize,
    /// Entries of /proc/<pid>/fd.
    fds: usize,
    /// `Threads:` of /proc/<pid>/status.
    threads: u64,
    /// `VmRSS:` of /proc/<pid>/status.
    rss_kib: u64,
    /// Its children (any thread's), and those of them in state Z.
    children: usize,
    zombies: usize,
}

/// When the early resources sample is taken: after 10 % of the events, at most 1000.
fn early_after(events: usize) -> usize {
    (events / 10).clamp(1, 1000)
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The state letter of /proc/<pid>/stat (after the command name, which may hold spaces).
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The children of `pid`: from /proc/<pid>/task/*/children, or by scanning /proc for their
/// parent id where that file does not exist (CONFIG_PROC_CHILDREN off).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let mut found = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(task.path().join("children")) {
                found = true;
                children.extend(
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    if found {
        return children;
    }
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(other) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{other}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(other);
        }
    }
    children
}

fn resources(pid: u32, after_events: usize) -> Option<Resources> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let children = children_of(pid);
    let zombies = children
        .iter()
        .filter(|&&child| process_state(child) == Some('Z'))
        .count();
    Some(Resources {
        after_events,
        fds,
        threads: status_field(&status, "Threads:")?,
        rss_kib: status_field(&status, "VmRSS:")?,
        children: children.len(),
        zombies,
    })
}

struct Conn {
    /// Lets a held request (a Runtime API `/next`, an `/event/next` waiting for the runtime) be
    /// answered later, when connections may have come and gone.
    id: u64,
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Writes `bytes` to the connection `id`; when the write is done.
fn write_to(conns: &mut [Conn], id: u64, bytes: &[u8]) -> Result<Instant, String> {
    let conn = conns
        .iter_mut()
        .find(|conn| conn.id == id)
        .ok_or_else(|| "the connection of a held request was closed".to_owned())?;
    conn.stream
        .write_all(bytes)
        .map_err(|error| format!("write failed: {error}"))?;
    Ok(Instant::now())
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Takes one complete request off the front of `buf`, if there is one.
fn parse_request(buf: &mut Vec<u8>) -> Option<Result<Request, String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let encoding = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => {}
        Some("chunked") => {
            // As the proxy may send a body upstream (streamed): decoded, trailers dropped.
            return match dechunk(&buf[end + 4..]) {
                Ok(Some((body, used))) => {
                    buf.drain(..end + 4 + used);
                    Some(Ok(Request {
                        method,
                        path,
                        headers,
                        body,
                    }))
                }
                Ok(None) => None,
                Err(problem) => {
                    buf.clear();
                    Some(Err(format!("{method} {path}: {problem}")))
                }
            };
        }
        Some(other) => {
            buf.clear();
            return Some(Err(format!("{method} {path}: Transfer-Encoding {other:?}")));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + length {
        return None;
    }
    let body = buf[end + 4..end + 4 + length].to_vec();
    buf.drain(..end + 4 + length);
    Some(Ok(Request {
        method,
        path,
        headers,
        body,
    }))
}

/// A chunked body at the start of `bytes`: (the body, bytes used up to the end of the trailers),
/// or None while it is incomplete.
#[allow(clippy::type_complexity)]
fn dechunk(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let line_at = |from: usize| {
        bytes[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|at| from + at)
    };
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = line_at(at) else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&bytes[at..line_end]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        at = line_end + 2;
        if size == 0 {
            // Trailer lines (dropped), then the empty line.
            loop {
                let Some(line_end) = line_at(at) else {
                    return Ok(None);
                };
                let empty = line_end == at;
                at = line_end + 2;
                if empty {
                    return Ok(Some((body, at)));
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        body.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
}

fn response(
    status: &str,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    if let Some(content_type) = content_type {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (key, value) in extra {
        out.push_str(&format!("{key}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "VmHWM:")
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh fd that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn describe_status(status: libc::c_int) -> (String, bool) {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        (code.to_string(), code == 0)
    } else if libc::WIFSIGNALED(status) {
        (format!("signal {}", libc::WTERMSIG(status)), false)
    } else {
        (format!("raw {status}"), false)
    }
}

struct Prepared<'a> {
    program: &'a Program,
    path: PathBuf,
    /// The program's env with the handler placeholders replaced by paths.
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    /// The runtime client (`bench-runtime`), its report file and its log, when there is one.
    runtime: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// The stand-in Runtime API's state during one run.
#[derive(Default)]
struct RuntimeState {
    /// Where the client is pointed (the driver, or the proxy).
    api: String,
    /// Start the client (the extension has just been answered its registration).
    spawn_wanted: bool,
    child: Option<std::process::Child>,
    pidfd: Option<OwnedFd>,
    /// It exited on its own (a problem: it waits in its last /next until killed).
    exited: bool,
    /// Its `/next` after the last invocation has arrived: it is done.
    done: bool,
    /// The response to the invocation handed out last (`run.runtime_invocations`) was read, then.
    response_at: Option<Instant>,
    /// The extension is back in `/event/next` after the last INVOKE (or had none).
    extension_back: bool,
    /// Held requests: the runtime's `/next` and the extension's `/event/next` (connection ids).
    pending_next: Option<u64>,
    pending_event: Option<u64>,
}

/// A free loopback port (bound, read, released) for the proxy of one run.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The INVOKE event `i` with `deadline_ms`, as the Extensions API answers `/event/next`.
fn invoke_event(i: usize, deadline_ms: u128) -> Vec<u8> {
    let body = format!(
        r#"{{"eventType":"INVOKE","deadlineMs":{deadline_ms},"requestId":"{}","invokedFunctionArn":"{}","tracing":{{"type":"X-Amzn-Trace-Id","value":"Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"}}}}"#,
        request_id(i),
        invocation::FUNCTION_ARN,
    );
    let event_id = format!("b1f0c1de-0000-4000-8000-{i:012x}");
    response(
        "200 OK",
        Some("application/json"),
        &[("Lambda-Extension-Event-Identifier", &event_id)],
        &body,
    )
}

/// Invocation `i` with `deadline_ms`, as the Runtime API answers `/invocation/next`.
fn runtime_invocation(i: usize, deadline_ms: u128) -> Vec<u8> {
    let payload = String::from_utf8(invocation::payload(i)).expect("the payload is UTF-8");
    response(
        "200 OK",
        Some("application/json"),
        &[
            ("Lambda-Runtime-Aws-Request-Id", &request_id(i)),
            ("Lambda-Runtime-Deadline-Ms", &deadline_ms.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                invocation::FUNCTION_ARN,
            ),
            ("Lambda-Runtime-Trace-Id", &invocation::trace_id(i)),
        ],
        &payload,
    )
}

/// The runtime client's report (see bench-runtime): samples, connections, problems.
fn read_runtime_report(out: &Path, events: usize, run: &mut Run) {
    let Ok(text) = fs::read_to_string(out) else {
        run.problems
            .push("the runtime client wrote no report (it never finished its invocations)".into());
        return;
    };
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "us" => run.invocation_us.extend(value.parse::<f64>().ok()),
            "connections" => run.runtime_connections = value.parse().ok(),
            "problem" => run.problems.push(format!("runtime client: {value}")),
            _ => run
                .problems
                .push(format!("runtime client: unreadable report line {line:?}")),
        }
    }
    if run.invocation_us.len() != events {
        run.problems.push(format!(
            "the runtime client measured {} invocations, expected {events}",
            run.invocation_us.len()
        ));
    }
}

fn run_once(
    listener: &TcpListener,
    prepared: &Prepared,
    events: usize,
    batches: usize,
    pinning: Option<(usize, usize)>,
) -> Run {
    let program = prepared.program;
    let mut run = Run::default();
    let address = listener.local_addr().expect("listener address");
    let log = File::create(&prepared.log).expect("log file");
    // The proxy's port, fresh for every run; the runtime client is pointed at it, or at the
    // driver itself (runtime-direct).
    let proxy_port = (program.runtime == Runtime::Proxy).then(free_port);
    let mut rt = RuntimeState {
        api: match proxy_port {
            Some(port) => format!("127.0.0.1:{port}"),
            None => address.to_string(),
        },
        extension_back: true,
        ..RuntimeState::default()
    };
    if let Some((_, out, _)) = &prepared.runtime {
        let _ = fs::remove_file(out);
    }
    let mut command = Command::new(&prepared.path);
    command
        .env_clear()
        .env("PATH", PATH)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .envs(
            prepared
                .env
                .iter()
                .map(|(k, v)| match (v.as_str(), proxy_port) {
                    (PROXY_PORT, Some(port)) => (k, port.to_string()),
                    _ => (k, v.clone()),
                }),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    run.driver_vm_hwm_kib = driver_vm_hwm_kib();
    // The child inherits the affinity of the thread that spawns it: hop to the extension's CPU
    // for the spawn (std keeps its fast posix_spawn path this way), then back.
    if let Some((_, extension_cpu)) = pinning {
        pin_self(extension_cpu);
    }
    let started = Instant::now();
    let spawned = command.spawn();
    if let Some((driver_cpu, _)) = pinning {
        pin_self(driver_cpu);
    }
    let child = match spawned {
        Ok(child) => child,
        Err(error) => {
            run.problems.push(format!("cannot start: {error}"));
            return run;
        }
    };
    let pid = child.id();
    let pidfd = pidfd_open(pid).expect("pidfd_open (Linux ≥ 5.3)");
    let expected_name = prepared
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let invokes_wanted = if program.shutdown_only { 0 } else { events };
    let batches_wanted = if program.telemetry == Telemetry::Load {
        batches
    } else {
        0
    };
    let time_limit = Duration::from_secs(15)
        + Duration::from_millis(50) * events as u32
        + Duration::from_millis(20) * batches_wanted as u32;

    let mut conns: Vec<Conn> = Vec::new();
    let mut invoke_written: Option<Instant> = None;
    let mut shutdown_written: Option<Instant> = None;
    let mut registered_written: Option<Instant> = None;
    let mut telemetry_port: Option<u16> = None;
    let mut first_post: Option<Instant> = None;
    let mut next_conn_id: u64 = 0;
    let mut chunk = [0u8; 16384];
    loop {
        let elapsed = started.elapsed();
        if elapsed > time_limit {
            run.problems
                .push(format!("no exit within {} s: killed", time_limit.as_secs()));
            // SAFETY: plain kill(2) of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            reap(pid, &mut run);
            break;
        }
        let mut fds = vec![
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            // The runtime client's exit (-1, ignored by poll, when there is none).
            libc::pollfd {
                fd: rt.pidfd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        fds.extend(conns.iter().map(|conn| libc::pollfd {
            fd: conn.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let timeout_ms = (time_limit - elapsed).as_millis().min(1000) as libc::c_int + 1;
        // SAFETY: `fds` is a valid array of fds.len() pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        let woke = Instant::now();
        if ready < 0 {
            continue; // EINTR
        }
        // Requests first: a request and the exit can be seen in the same wake-up.
        let mut closed = Vec::new();
        let mut write_errors = Vec::new();
        for (index, fd) in fds.iter().enumerate().skip(3) {
            if fd.revents == 0 {
                continue;
            }
            let conn = &mut conns[index - 3];
            let n = match conn.stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    closed.push(index - 3);
                    continue;
                }
                Ok(n) => n,
            };
            let arrived = Instant::now();
            let conn_id = conn.id;
            conn.buf.extend_from_slice(&chunk[..n]);
            while let Some(parsed) = parse_request(&mut conn.buf) {
                let request = match parsed {
                    Ok(request) => request,
                    Err(problem) => {
                        run.problems.push(problem);
                        closed.push(index - 3);
                        break;
                    }
                };
                let mut reply = |bytes: &[u8]| -> Instant {
                    if let Err(error) = conn.stream.write_all(bytes) {
                        write_errors.push(format!("write failed: {error}"));
                    }
                    Instant::now()
                };
                let path = request.path.as_str();
                match (request.method.as_str(), path) {
                    ("POST", "/2020-01-01/extension/register") => {
                        run.registers += 1;
                        if run.registers == 1 {
                            run.cold_start_us = Some(micros(arrived - started));
                        } else {
                            run.problems.push("registered twice".into());
                        }
                        let name = request.header("Lambda-Extension-Name").unwrap_or("");
                        if name != expected_name {
                            run.problems
                                .push(format!("registered as {name:?}, not {expected_name:?}"));
                        }
                        let body = String::from_utf8_lossy(&request.body);
                        if body.contains("INVOKE") == program.shutdown_only {
                            run.problems.push(format!("unexpected registration {body}"));
                        }
                        // The runtime starts once every extension has registered.
                        rt.spawn_wanted = program.runtime != Runtime::Off;
                        let registration = r#"{"functionName":"bench","functionVersion":"$LATEST","handler":"bench.handler"}"#;
                        registered_written = Some(reply(&response(
                            "200 OK",
                            Some("application/json"),
                            &[("Lambda-Extension-Identifier", EXTENSION_ID)],
                            registration,
                        )));
                    }
                    ("GET", "/2020-01-01/extension/event/next") => {
                        run.nexts += 1;
                        if let Some(written) = registered_written.take() {
                            run.init_us = Some(micros(arrived - written));
                        }
                        if let Some(written) = invoke_written.take() {
                            run.per_event_us.push(micros(arrived - written));
                        }
                        if request.header("Lambda-Extension-Identifier") != Some(EXTENSION_ID) {
                            run.problems
                                .push("event/next without the identifier".into());
                        }
                        if program.runtime == Runtime::Off
                            && run.invokes == early_after(invokes_wanted)
                            && run.early.is_none()
                        {
                            run.early = resources(pid, run.invokes);
                        }
                        if shutdown_written.is_some() {
                            run.problems.push("event/next after SHUTDOWN".into());
                            reply(&response(
                                "403 Forbidden",
                                Some("application/json"),
                                &[],
                                r#"{"errorType":"Extension.InvalidExtensionState","errorMessage":"after SHUTDOWN"}"#,
                            ));
                        } else if program.runtime != Runtime::Off {
                            // Held: answered with the next INVOKE together with the runtime's
                            // next invocation, or with SHUTDOWN once the runtime is done.
                            if rt.pending_event.is_some() {
                                run.problems
                                    .push("a second /event/next while one was waiting".into());
                            }
                            if run.invokes > 0 && !rt.extension_back {
                                match rt.response_at {
                                    Some(at) if run.runtime_responses == run.invokes => {
                                        run.post_response_us.push(micros(arrived - at));
                                    }
                                    _ => run.problems.push(format!(
                                        "/event/next after INVOKE {} came before the function's response to it (it must wait for the response handler)",
                                        request_id(run.invokes)
                                    )),
                                }
                                rt.extension_back = true;
                            }
                            rt.pending_event = Some(conn_id);
                        } else if run.invokes < invokes_wanted {
                            run.invokes += 1;
                            invoke_written =
                                Some(reply(&invoke_event(run.invokes, epoch_ms() + 5000)));
                        } else {
                            // Lambda's telemetry for this run, while the extension waits in
                            // /event/next: the load, or the reports of its INVOKEs.
                            let batches = match program.telemetry {
                                Telemetry::Off => Vec::new(),
                                Telemetry::Reports => report_batches(run.invokes),
                                Telemetry::Load => (1..=batches_wanted).map(load_batch).collect(),
                            };
                            match (telemetry_port, batches.is_empty()) {
                                (_, true) => {}
                                (None, false) => run
                                    .problems
                                    .push("no telemetry subscription before /event/next".into()),
                                (Some(port), false) => {
                                    first_post = Some(Instant::now());
                                    post_batches(port, &batches, &mut run);
                                    if let Some(first) = first_post {
                                        run.telemetry_accept_us = Some(micros(first.elapsed()));
                                    }
                                }
                            }
                            run.vm_hwm_kib = vm_hwm_kib(pid);
                            run.end = resources(pid, run.invokes);
                            let body = format!(
                                r#"{{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":{}}}"#,
                                epoch_ms() + shutdown_ms(batches_wanted)
                            );
                            shutdown_written = Some(reply(&response("200 OK", None, &[], &body)));
                        }
                    }
                    ("PUT", "/2022-07-01/telemetry") => {
                        run.telemetry_puts += 1;
                        if program.telemetry == Telemetry::Off {
                            run.problems
                                .push("telemetry subscription without telemetry configured".into());
                        }
                        if request.header("Lambda-Extension-Identifier") != Some(EXTENSION_ID) {
                            run.problems
                                .push("telemetry PUT without the identifier".into());
                        }
                        match subscription_port(&request.body) {
                            Ok(port) => telemetry_port = Some(port),
                            Err(problem) => run.problems.push(problem),
                        }
                        // What Lambda answers an accepted subscription.
                        reply(&response("200 OK", Some("text/plain"), &[], "OK"));
                    }
                    ("POST", "/2020-01-01/extension/init/error")
                    | ("POST", "/2020-01-01/extension/exit/error") => {
                        run.problems.push(format!(
                            "{path} {}: {}",
                            request
                                .header("Lambda-Extension-Function-Error-Type")
                                .unwrap_or(""),
                            String::from_utf8_lossy(&request.body)
                        ));
                        reply(&response(
                            "202 Accepted",
                            Some("application/json"),
                            &[],
                            r#"{"status":"OK"}"#,
                        ));
                    }
                    ("GET", "/2018-06-01/runtime/invocation/next")
                        if program.runtime != Runtime::Off =>
                    {
                        // Held until the invocation can start (see the end of the loop).
                        run.runtime_nexts += 1;
                        if rt.pending_next.is_some() {
                            run.problems
                                .push("a second runtime /next while one was waiting".into());
                        }
                        rt.pending_next = Some(conn_id);
                        let open = run.runtime_invocations;
                        if open == run.runtime_responses {
                            if open == early_after(events) && run.early.is_none() {
                                run.early = resources(pid, open);
                            }
                            rt.done = open >= events;
                        }
                    }
                    ("POST", _)
                        if program.runtime != Runtime::Off
                            && path.starts_with("/2018-06-01/runtime/invocation/") =>
                    {
                        let rest = &path["/2018-06-01/runtime/invocation/".len()..];
                        let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
                        let open = run.runtime_invocations;
                        if what != "response" {
                            run.problems.push(format!(
                                "POST {path} {}: {}",
                                request
                                    .header("Lambda-Runtime-Function-Error-Type")
                                    .unwrap_or(""),
                                String::from_utf8_lossy(&request.body)
                            ));
                        } else if open == 0
                            || run.runtime_responses == open
                            || id != request_id(open)
                        {
                            run.problems.push(format!(
                                "response for {id:?}, but the invocation open is {}",
                                if open > run.runtime_responses {
                                    request_id(open)
                                } else {
                                    "none".to_owned()
                                }
                            ));
                        } else {
                            if request.body != invocation::response_body(open) {
                                run.problems.push(format!(
                                    "response to invocation {open}: the body differs from what the runtime sent ({} bytes, expected {})",
                                    request.body.len(),
                                    invocation::BODY_BYTES
                                ));
                            }
                            run.runtime_responses += 1;
                            rt.response_at = Some(arrived);
                        }
                        reply(&response(
                            "202 Accepted",
                            Some("application/json"),
                            &[],
                            r#"{"status":"OK"}"#,
                        ));
                    }
                    (method, _) => {
                        run.problems
                            .push(format!("unexpected request {method} {path}"));
                        reply(&response("404 Not Found", None, &[], ""));
                    }
                }
            }
        }
        run.problems.append(&mut write_errors);
        for index in closed.into_iter().rev() {
            conns.remove(index);
        }
        if fds[1].revents != 0 {
            if let Some(written) = shutdown_written {
                run.shutdown_to_exit_us = Some(micros(woke - written));
            }
            if let Some(first) = first_post {
                run.telemetry_to_exit_us = Some(micros(woke - first));
            }
            reap(pid, &mut run);
            break;
        }
        if fds[0].revents != 0 {
            if let Ok((stream, _)) = listener.accept() {
                stream.set_nodelay(true).ok();
                run.connections += 1;
                next_conn_id += 1;
                conns.push(Conn {
                    id: next_conn_id,
                    stream,
                    buf: Vec::new(),
                });
            }
        }
        if program.runtime != Runtime::Off {
            if fds[2].revents != 0 {
                // It waits in its last /next until killed: exiting on its own is a problem.
                let status = rt
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten());
                run.problems.push(format!(
                    "the runtime client exited on its own ({}; its log follows)",
                    status.map_or("?".into(), |s| s.to_string()),
                ));
                rt.pidfd = None;
                rt.exited = true;
            }
            if rt.spawn_wanted {
                rt.spawn_wanted = false;
                spawn_runtime(prepared, &mut rt, events, pinning, &mut run);
            }
            advance_runtime(
                program,
                &mut rt,
                &mut conns,
                events,
                pid,
                &mut run,
                &mut invoke_written,
                &mut shutdown_written,
            );
        }
    }
    drop(child); // reaped above
    if let Some(mut client) = rt.child.take() {
        let _ = client.kill();
        let _ = client.wait();
    }
    if let Some((_, out, _)) = &prepared.runtime {
        read_runtime_report(out, events, &mut run);
        if run.runtime_invocations != events || run.runtime_responses != events {
            run.problems.push(format!(
                "{} invocations handed out and {} responses, expected {events}",
                run.runtime_invocations, run.runtime_responses
            ));
        }
    }
    if run.registers != 1 {
        run.problems
            .push(format!("{} registrations, expected 1", run.registers));
    }
    if run.nexts != invokes_wanted + 1 || run.invokes != invokes_wanted {
        run.problems.push(format!(
            "{} event/next requests for {} INVOKEs, expected {} for {invokes_wanted}",
            run.nexts,
            run.invokes,
            invokes_wanted + 1
        ));
    }
    if shutdown_written.is_none() {
        run.problems.push("never got to SHUTDOWN".into());
    }
    if !run.exit_ok {
        run.problems.push(format!(
            "exit status {}",
            run.exit.as_deref().unwrap_or("unknown")
        ));
    }
    if program.telemetry != Telemetry::Off {
        check_telemetry(&prepared.log, &mut run);
    }
    run
}

/// Starts the runtime client once the extension has registered (on the extension's CPU, as the
/// function's runtime shares the sandbox with it).
fn spawn_runtime(
    prepared: &Prepared,
    rt: &mut RuntimeState,
    events: usize,
    pinning: Option<(usize, usize)>,
    run: &mut Run,
) {
    let Some((client, out, log)) = &prepared.runtime else {
        return;
    };
    let log = File::create(log).expect("runtime log file");
    let mut command = Command::new(client);
    command
        .env_clear()
        .env("PATH", PATH)
        .env("AWS_LAMBDA_RUNTIME_API", &rt.api)
        .env("BENCH_INVOCATIONS", events.to_string())
        .env("BENCH_OUT", out)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("runtime log file"))
        .stderr(log);
    if let Some((_, extension_cpu)) = pinning {
        pin_self(extension_cpu);
    }
    let spawned = command.spawn();
    if let Some((driver_cpu, _)) = pinning {
        pin_self(driver_cpu);
    }
    match spawned {
        Ok(child) => {
            rt.pidfd = pidfd_open(child.id());
            rt.child = Some(child);
        }
        Err(error) => {
            run.problems.push(format!(
                "cannot start the runtime client {}: {error}",
                client.display()
            ));
            rt.exited = true;
        }
    }
}

/// The stand-in Runtime API's next step, once the requests that arrived have been read: hand out
/// the next invocation when the previous one is closed and the runtime (and, registered for
/// INVOKE, the extension) is waiting for it; SHUTDOWN when the runtime is done (or gone) and the
/// extension waits in `/event/next`.
#[allow(clippy::too_many_arguments)]
fn advance_runtime(
    program: &Program,
    rt: &mut RuntimeState,
    conns: &mut [Conn],
    events: usize,
    pid: u32,
    run: &mut Run,
    invoke_written: &mut Option<Instant>,
    shutdown_written: &mut Option<Instant>,
) {
    if shutdown_written.is_some() {
        return;
    }
    let invoke = !program.shutdown_only;
    let closed = run.runtime_invocations == run.runtime_responses && (!invoke || rt.extension_back);
    let extension_waits = rt.pending_event.is_some();
    if !rt.done
        && !rt.exited
        && closed
        && run.runtime_invocations < events
        && (!invoke || extension_waits)
    {
        let Some(next) = rt.pending_next.take() else {
            return;
        };
        run.runtime_invocations += 1;
        let i = run.runtime_invocations;
        let deadline = epoch_ms() + 5000;
        // The runtime first (what the client measures), then the INVOKE with the same id.
        if let Err(problem) = write_to(conns, next, &runtime_invocation(i, deadline)) {
            run.problems.push(format!("invocation {i}: {problem}"));
        }
        if invoke {
            let event = rt.pending_event.take().expect("the extension waits");
            run.invokes += 1;
            rt.extension_back = false;
            match write_to(conns, event, &invoke_event(i, deadline)) {
                Ok(written) => *invoke_written = Some(written),
                Err(problem) => run.problems.push(format!("INVOKE {i}: {problem}")),
            }
        }
    } else if ((rt.done && closed) || rt.exited) && extension_waits {
        run.vm_hwm_kib = vm_hwm_kib(pid);
        run.end = resources(pid, run.runtime_responses);
        // The runtime goes first (on Lambda it is sent SIGKILL at the end of Shutdown at the
        // latest); the proxy's upstream /next stays open until the extension exits.
        if let Some(mut client) = rt.child.take() {
            let _ = client.kill();
            let _ = client.wait();
        }
        rt.pidfd = None;
        let body = format!(
            r#"{{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":{}}}"#,
            epoch_ms() + shutdown_ms(0)
        );
        let event = rt.pending_event.take().expect("the extension waits");
        match write_to(conns, event, &response("200 OK", None, &[], &body)) {
            Ok(written) => *shutdown_written = Some(written),
            Err(problem) => run.problems.push(format!("SHUTDOWN: {problem}")),
        }
    }
}

/// How long SHUTDOWN gives (its `deadlineMs` from now): Lambda's 2 s, plus 10 ms a batch for
/// the throughput load. The load is accepted faster than a command per batch can deliver it
/// (the extension queues up to 8 MiB), so most of it is delivered after SHUTDOWN; with 2 s the
/// deadline, not the command, would decide how many are delivered (and the rest would be left
/// undelivered). The table shows how long that drain took (shut→exit).
fn shutdown_ms(batches: usize) -> u128 {
    2000 + 10 * batches as u128
}

/// The listener's port, from the subscription's destination `http://sandbox.localdomain:<port>`
/// (the listener is on this machine: the driver connects to 127.0.0.1).
fn subscription_port(body: &[u8]) -> Result<u16, String> {
    let subscription: Value = serde_json::from_slice(body)
        .map_err(|error| format!("telemetry PUT body is not JSON: {error}"))?;
    let uri = subscription["destination"]["URI"].as_str().unwrap_or("");
    uri.strip_prefix("http://sandbox.localdomain:")
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .ok_or_else(|| {
            format!("telemetry destination {uri:?} is not http://sandbox.localdomain:<port>")
        })
}

const TIME: &str = "2026-12-01T12:00:00.000Z";

fn report_record(id: &str) -> String {
    format!(
        r#"{{"time":"{TIME}","type":"platform.report","record":{{"requestId":"{id}","status":"success","metrics":{{"durationMs":1.25,"billedDurationMs":2,"memorySizeMB":128,"maxMemoryUsedMB":31}},"tracing":{{"type":"X-Amzn-Trace-Id","value":"Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"}}}}}}"#
    )
}

/// The `platform.report` of INVOKEs 1 to `invokes`, 1000 records a batch at most.
fn report_batches(invokes: usize) -> Vec<Vec<u8>> {
    let records: Vec<String> = (1..=invokes)
        .map(|i| report_record(&request_id(i)))
        .collect();
    records
        .chunks(1000)
        .map(|chunk| format!("[{}]", chunk.join(",")).into_bytes())
        .collect()
}

/// Batch `i` of the throughput load: one invocation's telemetry as Lambda batches it, about
/// 1.5 KiB: platform.start, two function log lines, platform.runtimeDone, platform.report.
fn load_batch(i: usize) -> Vec<u8> {
    let id = format!("c0ffee00-0000-4000-8000-{i:012x}");
    let trace = r#"{"type":"X-Amzn-Trace-Id","value":"Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"}"#;
    format!(
        concat!(
            r#"[{{"time":"{t}","type":"platform.start","record":{{"requestId":"{id}","version":"$LATEST","tracing":{tr}}}}},"#,
            r#"{{"time":"{t}","type":"function","record":"{t}	{id}	INFO	order {i} accepted: 3 items, total 42.50 EUR, customer 1f3a9c
"}},"#,
            r#"{{"time":"{t}","type":"function","record":"{t}	{id}	INFO	order {i} stored in 11 ms (table orders, partition 7)
"}},"#,
            r#"{{"time":"{t}","type":"platform.runtimeDone","record":{{"requestId":"{id}","status":"success","metrics":{{"durationMs":12.52,"producedBytes":57}},"spans":[{{"name":"responseLatency","start":"{t}","durationMs":11.9}},{{"name":"responseDuration","start":"{t}","durationMs":0.1}}],"tracing":{tr}}}}},"#,
            r#"{{"time":"{t}","type":"platform.report","record":{{"requestId":"{id}","status":"success","metrics":{{"durationMs":12.87,"billedDurationMs":13,"memorySizeMB":128,"maxMemoryUsedMB":31}},"tracing":{tr}}}}}]"#,
        ),
        t = TIME,
        id = id,
        i = i,
        tr = trace,
    )
    .into_bytes()
}

/// POSTs `batches` to the listener on 127.0.0.1:`port`, one at a time on one connection (a new
/// one if it is closed), each once the previous was answered: a batch answered other than 200,
/// or not answered, is a problem (and ends the load).
fn post_batches(port: u16, batches: &[Vec<u8>], run: &mut Run) {
    let mut stream: Option<TcpStream> = None;
    for body in batches {
        let mut outcome = Err(String::new());
        for _attempt in 0..2 {
            let conn = match stream.take() {
                Some(conn) => conn,
                None => match TcpStream::connect(("127.0.0.1", port)) {
                    Ok(conn) => {
                        conn.set_nodelay(true).ok();
                        // Backpressure answers late, but a run of the command lasts 30 s at most.
                        conn.set_read_timeout(Some(Duration::from_secs(40))).ok();
                        conn
                    }
                    Err(error) => {
                        outcome = Err(format!("cannot connect to the telemetry listener: {error}"));
                        break;
                    }
                },
            };
            outcome = post_one(&conn, port, body);
            if outcome.is_ok() {
                stream = Some(conn);
                break;
            }
        }
        match outcome {
            Ok(200) => {
                run.telemetry_sent += 1;
                run.telemetry_bytes += body.len();
            }
            Ok(status) => {
                run.problems.push(format!(
                    "telemetry batch {} answered {status}",
                    run.telemetry_sent + 1
                ));
                return;
            }
            Err(problem) => {
                run.problems.push(format!(
                    "telemetry batch {}: {problem}",
                    run.telemetry_sent + 1
                ));
                return;
            }
        }
    }
}

/// One POST and its answer's status; the connection stays usable unless the answer says close.
fn post_one(mut conn: &TcpStream, port: u16, body: &[u8]) -> Result<u16, String> {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: sandbox.localdomain:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    conn.write_all(&request)
        .map_err(|error| format!("write failed: {error}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // The answer's head, then its Content-Length bytes (parse_request reads a response as
        // well: its "method" is the version, its "path" the status).
        if let Some(parsed) = parse_request(&mut buf) {
            let answer = parsed?;
            return answer
                .path
                .parse()
                .map_err(|_| format!("unreadable answer {} {}", answer.method, answer.path));
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Err("connection closed before the answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) => return Err(format!("no answer: {error}")),
        }
    }
}

/// After the run: one subscription, and the extension's `telemetry: N batches received, M
/// delivered` line saying that every batch sent was received and delivered.
fn check_telemetry(log: &Path, run: &mut Run) {
    if run.telemetry_puts != 1 {
        run.problems.push(format!(
            "{} telemetry subscriptions, expected 1",
            run.telemetry_puts
        ));
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    match telemetry_counts(&text) {
        Some((received, delivered)) => {
            run.telemetry_received = Some(received);
            run.telemetry_delivered = Some(delivered);
            let sent = run.telemetry_sent as u64;
            if received != sent || delivered != sent {
                run.problems.push(format!(
                    "telemetry: {sent} batches sent, {received} received, {delivered} delivered"
                ));
            }
        }
        None => run
            .problems
            .push("no \"telemetry: N batches received, M delivered\" line in its log".into()),
    }
}

/// The counts of the last `telemetry: N batches received, M delivered…` line.
fn telemetry_counts(log: &str) -> Option<(u64, u64)> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("telemetry: ")?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            [received, "batch" | "batches", "received,", delivered, delivered_word, ..]
                if delivered_word.starts_with("delivered") =>
            {
                Some((received.parse().ok()?, delivered.parse().ok()?))
            }
            _ => None,
        }
    })
}

fn reap(pid: u32, run: &mut Run) {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid.
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if waited == pid as libc::pid_t {
        let (text, ok) = describe_status(status);
        run.exit = Some(text);
        run.exit_ok = ok;
        run.tree_maxrss_kib = Some(usage.ru_maxrss as u64);
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------
// Statistics and the report

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

struct ElfInfo {
    size: u64,
    is_static: bool,
    stripped: bool,
}

/// Size, and from the ELF64 headers: no PT_INTERP (static), no SHT_SYMTAB (stripped). Reads
/// only the headers: the driver's own peak RSS shows up in the children's ru_maxrss (see
/// `driver_vm_hwm_kib`), so it stays small.
fn elf_info(path: &Path) -> Option<ElfInfo> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut read_at = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut bytes).ok()?;
        Some(bytes)
    };
    let header = read_at(0, 64)?;
    if header.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20)?,
        u16_at(&header, 0x36)? as usize,
        u16_at(&header, 0x38)? as usize,
    );
    let (shoff, shentsize, shnum) = (
        u64_at(&header, 0x28)?,
        u16_at(&header, 0x3a)? as usize,
        u16_at(&header, 0x3c)? as usize,
    );
    let program_headers = read_at(phoff, phentsize * phnum)?;
    let section_headers = read_at(shoff, shentsize * shnum)?;
    // PT_INTERP = 3, SHT_SYMTAB = 2.
    let interp = (0..phnum).any(|i| u32_at(&program_headers, i * phentsize) == Some(3));
    let symtab = (0..shnum).any(|i| u32_at(&section_headers, i * shentsize + 4) == Some(2));
    Some(ElfInfo {
        size,
        is_static: !interp,
        stripped: !symtab,
    })
}

/// The driver's own peak RSS. Linux folds the peak RSS of the address space a child had before
/// exec into the child's ru_maxrss (exec_mmap → setmax_mm_hiwater_rss); with std's vfork-style
/// spawn that is the driver's, so every "tree maxrss" is at least this.
fn driver_vm_hwm_kib() -> Option<u64> {
    vm_hwm_kib(std::process::id())
}

fn utc_date(secs: u64) -> String {
    // Civil-from-days (H. Hinnant), enough for a timestamp in the report.
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// The chart: per-event cost by program and mode, as an SVG made with plain string formatting

/// What a bar stands for (its colour).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Floor,
    Official,
    PerEvent,
    Persistent,
    Proxy,
}

impl Kind {
    fn of(program: &Program) -> Kind {
        match program.binary {
            _ if program.floor.is_none() => Kind::Floor,
            _ if program.runtime != Runtime::Off => Kind::Proxy,
            Binary::Official => Kind::Official,
            _ if is_persistent(program) => Kind::Persistent,
            _ => Kind::PerEvent,
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Kind::Floor => "#a0a0a0",
            Kind::Official => "#e69f00",
            Kind::PerEvent => "#0072b2",
            Kind::Persistent => "#009e73",
            Kind::Proxy => "#cc79a7",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Kind::Floor => "floor (the least an extension can do)",
            Kind::Official => "official lambda-extension crate",
            Kind::PerEvent => "this extension, a process per event",
            Kind::Persistent => "this extension, persistent handler",
            Kind::Proxy => "this extension as the runtime's Runtime API proxy",
        }
    }
}

struct Bar {
    /// The group: the floor's program name.
    group: &'static str,
    name: &'static str,
    /// What it runs per event, one short line.
    detail: String,
    kind: Kind,
    /// Median per-event cost over all samples, µs.
    value: f64,
    /// Its floor's median (None for a floor).
    floor: Option<f64>,
    /// Paired per round: median of program/floor, and program − floor.
    ratio: Option<f64>,
    delta: Option<f64>,
    /// Persistent mode: median over rounds of product-exec/program.
    speedup: Option<f64>,
    /// A target's verdict, shown after the ratio (`proxy-forward`).
    note: Option<String>,
}

/// What a program runs per event, for the chart.
fn handler_text(program: &Program) -> String {
    let value = |key: &str| {
        program
            .env
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    match (
        program.runtime,
        value("SHELL_EXT_REQUEST_HANDLER"),
        value("SHELL_EXT_RESPONSE_HANDLER"),
    ) {
        (Runtime::Off, ..) => {}
        (Runtime::Direct, ..) => return "runtime client straight to the Runtime API".to_owned(),
        (Runtime::Proxy, Some(handler), _) => {
            return format!("through the proxy, request handler {handler}")
        }
        (Runtime::Proxy, _, Some(handler)) => {
            return format!("through the proxy, response handler {handler}")
        }
        (Runtime::Proxy, None, None) => {
            return "through the proxy, no handler (SHELL_EXT_PROXY=on)".to_owned()
        }
    }
    let handler = match (value("SHELL_EXT_HANDLER"), value("BENCH_HANDLER")) {
        (Some(ACK_HANDLER), _) => "bench-ack (compiled: read a line, write ok)".to_owned(),
        (Some(BASH_HANDLER), _) => "bash: while read -r; echo ok >&3".to_owned(),
        (Some(PYTHON_HANDLER), _) => "python3: for line in stdin: json.loads, ok".to_owned(),
        (Some(line), _) => line.to_owned(),
        (None, Some(argv)) if !argv.is_empty() => argv.replace('\x1f', " "),
        _ => "no command".to_owned(),
    };
    let extra = match (value("RUST_LOG"), value("SHELL_EXT_TELEMETRY_HANDLER")) {
        (Some(level), _) => format!(", RUST_LOG={level}"),
        (_, Some(_)) => ", telemetry configured".to_owned(),
        _ => String::new(),
    };
    match Kind::of(program) {
        Kind::Persistent => format!("persistent: {handler}{extra}"),
        Kind::Floor if handler == "no command" => "GET per event, nothing else".to_owned(),
        Kind::Official if handler == "no command" => "its event loop, no command".to_owned(),
        _ => format!("per event: {handler}{extra}"),
    }
}

fn group_title(floor: &str) -> String {
    match floor {
        "floor" => "a process per event: /bin/true".to_owned(),
        "floor-sh" => "a process per event: sh -c 'cat >/dev/null'".to_owned(),
        "floor-nocmd" => "no process per event: a persistent handler, or no command".to_owned(),
        RUNTIME_FLOOR => {
            "a runtime client's next → response, direct or through the proxy".to_owned()
        }
        other => format!("compared with {other}"),
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round axis maximum and tick step for values up to `max`: 1, 2 or 5 × 10^k, 4 to 8 ticks.
fn axis(max: f64) -> (f64, f64) {
    let max = max.max(1.0);
    let magnitude = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| max / step <= 7.0)
        .unwrap_or(magnitude);
    ((max / step).ceil() * step, step)
}

const CHART_WIDTH: f64 = 1220.0;
const LABEL_RIGHT: f64 = 330.0;
const PLOT_LEFT: f64 = 345.0;
const PLOT_WIDTH: f64 = 450.0;
const ROW: f64 = 34.0;

/// One panel: its groups of bars on one linear axis from 0 to `max` µs; returns the SVG and
/// its height.
fn chart_panel(
    svg: &mut String,
    top: f64,
    title: &str,
    bars: &[&Bar],
    groups: &[&'static str],
    axis_label: &str,
) -> f64 {
    let (max, step) = axis(
        bars.iter()
            .map(|b| b.value.max(b.floor.unwrap_or(0.0)))
            .fold(0.0, f64::max),
    );
    let x = |value: f64| PLOT_LEFT + PLOT_WIDTH * value / max;
    let mut y = top;
    svg.push_str(&format!(
        "<text x=\"20\" y=\"{:.1}\" class=\"panel\">{}</text>\n",
        y + 16.0,
        xml_escape(title)
    ));
    y += 28.0;
    let plot_top = y;
    let mut rows = String::new();
    for group in groups {
        let members: Vec<&&Bar> = bars.iter().filter(|b| b.group == *group).collect();
        if members.is_empty() {
            continue;
        }
        rows.push_str(&format!(
            "<text x=\"20\" y=\"{:.1}\" class=\"group\">{}</text>\n",
            y + 14.0,
            xml_escape(&group_title(group))
        ));
        y += 22.0;
        for bar in members {
            let mid = y + ROW / 2.0;
            rows.push_str(&format!(
                "<text x=\"{LABEL_RIGHT}\" y=\"{:.1}\" class=\"name\">{}</text>\n\
                 <text x=\"{LABEL_RIGHT}\" y=\"{:.1}\" class=\"detail\">{}</text>\n",
                mid - 2.0,
                xml_escape(bar.name),
                mid + 11.0,
                xml_escape(&bar.detail)
            ));
            let width = (x(bar.value) - PLOT_LEFT).max(1.0);
            rows.push_str(&format!(
                "<rect x=\"{PLOT_LEFT}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {:.1} µs</title></rect>\n",
                y + 6.0,
                ROW - 12.0,
                bar.kind.colour(),
                xml_escape(bar.name),
                bar.value
            ));
            if let Some(floor) = bar.floor {
                let fx = x(floor);
                rows.push_str(&format!(
                    "<line x1=\"{fx:.1}\" x2=\"{fx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"floor\"/>\n",
                    y + 2.0,
                    y + ROW - 2.0
                ));
            }
            let mut text = format!("{:.0} µs", bar.value);
            if bar.value < 100.0 {
                text = format!("{:.1} µs", bar.value);
            }
            if let (Some(delta), Some(ratio)) = (bar.delta, bar.ratio) {
                text.push_str(&format!(" ({delta:+.0} µs, {ratio:.2}× floor"));
                if let Some(speedup) = bar.speedup {
                    text.push_str(&format!("; {speedup:.1}× faster than {PER_EVENT_PEER}"));
                }
                if let Some(note) = &bar.note {
                    text.push_str(&format!("; {note}"));
                }
                text.push(')');
            }
            rows.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{}</text>\n",
                x(bar.value).max(x(bar.floor.unwrap_or(0.0))) + 6.0,
                mid + 4.0,
                xml_escape(&text)
            ));
            y += ROW;
        }
        y += 6.0;
    }
    // Grid and axis under the bars (drawn first), ticks below.
    let mut tick = 0.0;
    while tick <= max + step / 2.0 {
        let tx = x(tick);
        svg.push_str(&format!(
            "<line x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{plot_top:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\n\
             <text x=\"{tx:.1}\" y=\"{:.1}\" class=\"tick\">{tick:.0}</text>\n",
            y + 14.0
        ));
        tick += step;
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{}</text>\n",
        PLOT_LEFT + PLOT_WIDTH / 2.0,
        y + 30.0,
        xml_escape(axis_label)
    ));
    svg.push_str(&rows);
    y + 40.0 - top
}

/// The whole chart: every group on one axis, then the no-process group again on its own axis
/// (its bars are a few pixels long next to a process per event), then the Runtime API proxy's
/// programs (per invocation, another measure) on theirs, then the legend.
fn chart_svg(bars: &[Bar], title: &str, subtitle: &[String]) -> String {
    let mut groups: Vec<&'static str> = Vec::new();
    for bar in bars {
        if !groups.contains(&bar.group) && bar.group != RUNTIME_FLOOR {
            groups.push(bar.group);
        }
    }
    let all: Vec<&Bar> = bars.iter().filter(|b| b.group != RUNTIME_FLOOR).collect();
    let mut body = String::new();
    let mut y = 52.0 + 16.0 * subtitle.len() as f64;
    let per_event = "µs per event (median; INVOKE answered → next /event/next)";
    if !all.is_empty() {
        y += chart_panel(
            &mut body,
            y,
            "All programs, one scale",
            &all,
            &groups,
            per_event,
        );
    }
    let nocmd: Vec<&Bar> = bars.iter().filter(|b| b.group == "floor-nocmd").collect();
    if !nocmd.is_empty() && groups.len() > 1 {
        y += 10.0;
        y += chart_panel(
            &mut body,
            y,
            "No process per event, on its own scale",
            &nocmd,
            &["floor-nocmd"],
            per_event,
        );
    }
    let proxy: Vec<&Bar> = bars.iter().filter(|b| b.group == RUNTIME_FLOOR).collect();
    if !proxy.is_empty() {
        if !all.is_empty() {
            y += 10.0;
        }
        y += chart_panel(
            &mut body,
            y,
            "Runtime API proxy, per invocation, on its own scale",
            &proxy,
            &[RUNTIME_FLOOR],
            "µs per invocation (median; the runtime client's GET next written → 202 to its response read)",
        );
    }
    // Legend: a swatch per kind of bar drawn, then the floor's mark; wrapped to the width.
    let mut items: Vec<(String, &str)> = [
        Kind::Floor,
        Kind::Official,
        Kind::PerEvent,
        Kind::Persistent,
        Kind::Proxy,
    ]
    .into_iter()
    .filter(|kind| bars.iter().any(|b| b.kind == *kind))
    .map(|kind| {
        (
            format!(
                "<rect x=\"{{x}}\" y=\"{{y}}\" width=\"14\" height=\"14\" fill=\"{}\"/>",
                kind.colour()
            ),
            kind.legend(),
        )
    })
    .collect();
    items.push((
        "<line x1=\"{x7}\" x2=\"{x7}\" y1=\"{y}\" y2=\"{y14}\" class=\"floor\"/>".to_owned(),
        "its floor, measured in the same rounds (×floor and Δ: medians of per-round pairs)",
    ));
    let mut lx = 20.0;
    for (mark, text) in items {
        let width = 20.0 + 6.8 * text.chars().count() as f64 + 22.0;
        if lx > 20.0 && lx + width > CHART_WIDTH - 10.0 {
            lx = 20.0;
            y += 22.0;
        }
        let mark = mark
            .replace("{x7}", &format!("{:.1}", lx + 7.0))
            .replace("{x}", &format!("{lx:.1}"))
            .replace("{y14}", &format!("{:.1}", y + 14.0))
            .replace("{y}", &format!("{y:.1}"));
        body.push_str(&format!(
            "{mark}\n<text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>\n",
            lx + 20.0,
            y + 12.0,
            xml_escape(text)
        ));
        lx += width;
    }
    y += 30.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{y:.0}\" viewBox=\"0 0 {CHART_WIDTH} {y:.0}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
         <style>\n\
         .title {{ font-size: 17px; font-weight: bold; }}\n\
         .subtitle {{ font-size: 12px; fill: #555; }}\n\
         .panel {{ font-size: 14px; font-weight: bold; }}\n\
         .group {{ font-size: 13px; font-style: italic; fill: #333; }}\n\
         .name {{ font-size: 13px; text-anchor: end; }}\n\
         .detail {{ font-size: 11px; text-anchor: end; fill: #666; }}\n\
         .value {{ font-size: 12px; }}\n\
         .tick {{ font-size: 11px; text-anchor: middle; fill: #555; }}\n\
         .legend {{ font-size: 12px; }}\n\
         .grid {{ stroke: #e4e4e4; stroke-width: 1; }}\n\
         .floor {{ stroke: #000; stroke-width: 2; stroke-dasharray: 3 2; }}\n\
         </style>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"20\" y=\"26\" class=\"title\">{}</text>\n\
         {}{body}</svg>\n",
        xml_escape(title),
        subtitle
            .iter()
            .enumerate()
            .map(|(i, line)| format!(
                "<text x=\"20\" y=\"{}\" class=\"subtitle\">{}</text>\n",
                46 + 16 * i,
                xml_escape(line)
            ))
            .collect::<String>()
    )
}

fn resources_json(sample: Resources) -> Value {
    json!({
        "after_events": sample.after_events,
        "fds": sample.fds,
        "threads": sample.threads,
        "rss_kib": sample.rss_kib,
        "children": sample.children,
        "zombies": sample.zombies,
    })
}

/// A table as aligned lines: the first `left` columns left-aligned, the others right-aligned.
fn table_lines(header: &[&str], rows: &[Vec<String>], left: usize) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if i < left {
                out.push_str(&format!("{cell}{pad} "));
            } else {
                out.push_str(&format!("{pad}{cell} "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(&mut header.iter().copied())];
    lines.extend(
        rows.iter()
            .map(|row| line(&mut row.iter().map(String::as_str))),
    );
    lines
}

/// Runs in persistent mode (`SHELL_EXT_MODE=persistent`).
fn is_persistent(program: &Program) -> bool {
    program
        .env
        .iter()
        .any(|(key, value)| *key == "SHELL_EXT_MODE" && value == "persistent")
}

/// The handler placeholder in a program's env, if any.
fn handler_placeholder(program: &Program) -> Option<&'static str> {
    [ACK_HANDLER, BASH_HANDLER, PYTHON_HANDLER]
        .into_iter()
        .find(|placeholder| program.env.iter().any(|(_, value)| value == placeholder))
}

/// Why a program's handler cannot run on this machine (its interpreter is missing), if so.
fn handler_missing(program: &Program) -> Option<String> {
    let (interpreter, dirs) = match handler_placeholder(program)? {
        BASH_HANDLER => ("bash", "/bin"),
        PYTHON_HANDLER => ("python3", PATH),
        _ => return None,
    };
    let found = dirs
        .split(':')
        .any(|dir| Path::new(dir).join(interpreter).is_file());
    (!found).then(|| format!("no {interpreter} in {dirs}"))
}

/// Installs the persistent handlers the selected programs use in `<tmp>/opt/`: bench-ack copied
/// from `--ack`, the bash and Python loops written out. Returns (placeholder, path).
fn install_handlers(
    selected: &[&Program],
    options: &Options,
    tmp: &Path,
) -> Vec<(&'static str, PathBuf)> {
    let dir = tmp.join("opt");
    let mut installed = Vec::new();
    for placeholder in selected.iter().filter_map(|p| handler_placeholder(p)) {
        if installed.iter().any(|(done, _)| *done == placeholder) {
            continue;
        }
        let (path, written) = match placeholder {
            ACK_HANDLER => {
                let path = dir.join("bench-ack");
                let copied = fs::copy(&options.ack, &path).map(drop).map_err(|error| {
                    std::io::Error::other(format!(
                        "from {} (--ack): {error}",
                        options.ack.display()
                    ))
                });
                (path, copied)
            }
            BASH_HANDLER => {
                let path = dir.join("persistent-handler.sh");
                let written = fs::write(&path, BASH_HANDLER_TEXT);
                (path, written)
            }
            _ => {
                let path = dir.join("persistent-handler.py");
                let written = fs::write(&path, PYTHON_HANDLER_TEXT);
                (path, written)
            }
        };
        let result =
            written.and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)));
        if let Err(error) = result {
            eprintln!("bench: cannot install {}: {error}", path.display());
            let _ = fs::remove_dir_all(tmp);
            std::process::exit(2);
        }
        installed.push((placeholder, path));
    }
    installed
}

fn fmt_opt(value: Option<f64>, scale: f64, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.*}", decimals, v / scale))
}

fn main() {
    let options = parse_options();
    let all = programs();
    let mut selected: Vec<&Program> = match &options.programs {
        None => all.iter().collect(),
        Some(names) => {
            let mut chosen = Vec::new();
            for name in names {
                match all.iter().find(|p| p.name == name) {
                    Some(program) => chosen.push(program),
                    None => {
                        eprintln!("unknown program {name:?}");
                        usage();
                    }
                }
            }
            chosen
        }
    };
    // A persistent handler that cannot run here is skipped, with a note.
    let mut skipped = Vec::new();
    selected.retain(|p| match handler_missing(p) {
        Some(reason) => {
            eprintln!("bench: skipping {}: {reason}", p.name);
            skipped.push(json!({"program": p.name, "reason": reason}));
            false
        }
        None => true,
    });
    // Persistent mode is compared with the per-event mode too (the ≥ 8× target).
    if selected.iter().any(|p| is_persistent(p))
        && !selected.iter().any(|p| p.name == PER_EVENT_PEER)
    {
        eprintln!("bench: adding {PER_EVENT_PEER} (persistent mode is compared with it)");
        let program = all
            .iter()
            .find(|p| p.name == PER_EVENT_PEER)
            .expect("peer exists");
        selected.insert(0, program);
    }
    // Every program is compared with its floor from the same round: bring the floors in.
    let floors: Vec<&'static str> = selected.iter().filter_map(|p| p.floor).collect();
    for floor in floors {
        if !selected.iter().any(|p| p.name == floor) {
            eprintln!("bench: adding {floor} (the floor of a selected program)");
            let program = all.iter().find(|p| p.name == floor).expect("floor exists");
            selected.insert(0, program);
        }
    }

    // Pinning: the driver on one CPU, the extension and its children on another.
    let cpus = allowed_cpus();
    let cpu_count = cpus.len();
    let pinning = (cpus.len() >= 2).then(|| (cpus[0], cpus[1]));
    let pinning = pinning.filter(|&(driver, _)| pin_self(driver));
    let pinning_text = match pinning {
        Some((driver, extension)) => {
            format!(
                "applied: driver on CPU {driver}, extension and its children on CPU {extension}"
            )
        }
        None => format!("not applied ({} CPU(s) available)", cpus.len()),
    };

    // Install each binary as <tmp>/opt/extensions/<program>.
    let tmp = std::env::temp_dir().join(format!("bench-driver-{}", std::process::id()));
    let extensions = tmp.join("opt/extensions");
    let logs = tmp.join("logs");
    fs::create_dir_all(&extensions).expect("temp dir");
    fs::create_dir_all(&logs).expect("temp dir");
    let handlers = install_handlers(&selected, &options, &tmp);
    let mut prepared = Vec::new();
    let mut infos = BTreeMap::new();
    for program in &selected {
        let source = &options.paths[program.binary.label()];
        let target = extensions.join(program.name);
        if let Err(error) = fs::copy(source, &target) {
            eprintln!(
                "bench: cannot copy {} for {}: {error}",
                source.display(),
                program.name
            );
            let _ = fs::remove_dir_all(&tmp);
            std::process::exit(2);
        }
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).expect("chmod");
        infos.insert(program.binary.label(), (source.clone(), elf_info(source)));
        let env = program
            .env
            .iter()
            .map(|(key, value)| {
                let value = handlers
                    .iter()
                    .find(|(placeholder, _)| placeholder == value)
                    .map_or_else(|| value.clone(), |(_, path)| path.display().to_string());
                (*key, value)
            })
            .collect();
        prepared.push(Prepared {
            program,
            path: target,
            env,
            log: logs.join(format!("{}.log", program.name)),
            runtime: (program.runtime != Runtime::Off).then(|| {
                (
                    options.runtime.clone(),
                    logs.join(format!("{}.runtime-report", program.name)),
                    logs.join(format!("{}.runtime.log", program.name)),
                )
            }),
        });
    }

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let began = Instant::now();
    eprintln!(
        "bench: {} program(s), {} round(s) × {} events, warm-up {} events; pinning {pinning_text}",
        prepared.len(),
        options.rounds,
        options.events,
        options.warmup
    );
    let mut failures = Vec::new();
    if options.warmup > 0 {
        for p in &prepared {
            let run = run_once(&listener, p, options.warmup, options.warmup, pinning);
            if !run.problems.is_empty() {
                failures.push(format!(
                    "{} (warm-up): {}",
                    p.program.name,
                    run.problems.join("; ")
                ));
            }
        }
    }
    // results[program][round]
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); prepared.len()];
    for round in 0..options.rounds {
        for (index, p) in prepared.iter().enumerate() {
            let run = run_once(&listener, p, options.events, options.batches, pinning);
            if !run.problems.is_empty() {
                failures.push(format!(
                    "{} (round {}): {}",
                    p.program.name,
                    round + 1,
                    run.problems.join("; ")
                ));
                let log = fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                for line in tail.into_iter().rev() {
                    eprintln!("  {} log: {line}", p.program.name);
                }
                if let Some((_, _, runtime_log)) = &p.runtime {
                    let log = fs::read_to_string(runtime_log).unwrap_or_default();
                    for line in log.lines().take(10) {
                        eprintln!("  {} runtime client: {line}", p.program.name);
                    }
                }
            }
            results[index].push(run);
        }
        eprintln!(
            "bench: round {}/{} done ({:.1} s)",
            round + 1,
            options.rounds,
            began.elapsed().as_secs_f64()
        );
    }
    let _ = fs::remove_dir_all(&tmp);

    // Summaries.
    let index_of = |name: &str| prepared.iter().position(|p| p.program.name == name);
    let per_round = |index: usize, floor: usize, value: &dyn Fn(&Run) -> Option<f64>| {
        let diffs: Vec<f64> = (0..options.rounds)
            .filter_map(|r| Some(value(&results[index][r])? - value(&results[floor][r])?))
            .collect();
        let ratios: Vec<f64> = (0..options.rounds)
            .filter_map(|r| Some(value(&results[index][r])? / value(&results[floor][r])?))
            .collect();
        (median(&diffs), median(&ratios))
    };
    let mut rows = Vec::new();
    let mut json_programs = Vec::new();
    for (index, p) in prepared.iter().enumerate() {
        let runs = &results[index];
        let all_events: Vec<f64> = runs.iter().flat_map(|r| r.per_event_us.clone()).collect();
        let cold: Vec<f64> = runs.iter().filter_map(|r| r.cold_start_us).collect();
        let shut: Vec<f64> = runs.iter().filter_map(|r| r.shutdown_to_exit_us).collect();
        let hwm: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.vm_hwm_kib.map(|v| v as f64))
            .collect();
        let tree: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.tree_maxrss_kib.map(|v| v as f64))
            .collect();
        let floor = p.program.floor.and_then(index_of);
        let event_median = |r: &Run| median(&r.per_event_us);
        let (event_delta, event_ratio) = match (floor, p.program.shutdown_only) {
            (Some(f), false) => per_round(index, f, &event_median),
            _ => (None, None),
        };
        let (_, cold_ratio) =
            floor.map_or((None, None), |f| per_round(index, f, &|r| r.cold_start_us));
        let (_, hwm_ratio) = floor.map_or((None, None), |f| {
            per_round(index, f, &|r| r.vm_hwm_kib.map(|v| v as f64))
        });
        let (_, tree_ratio) = floor.map_or((None, None), |f| {
            per_round(index, f, &|r| r.tree_maxrss_kib.map(|v| v as f64))
        });
        let exits: Vec<String> = runs
            .iter()
            .map(|r| r.exit.clone().unwrap_or_else(|| "?".into()))
            .collect();
        let ok = runs.iter().all(|r| r.problems.is_empty());
        let exit_text = if exits.iter().all(|e| e == "0") {
            "0".to_owned()
        } else {
            exits.join(",")
        };
        let info = infos[p.program.binary.label()].1.as_ref();
        let summary = json!({
            "cold_start_us_median": median(&cold),
            "cold_start_ratio_vs_floor": cold_ratio,
            "init_us_median": median(&runs.iter().filter_map(|r| r.init_us).collect::<Vec<_>>()),
            "per_event_us_median": median(&all_events),
            "per_event_us_p90": percentile(&all_events, 0.90),
            "per_event_us_p99": percentile(&all_events, 0.99),
            "per_event_delta_vs_floor_us": event_delta,
            "per_event_ratio_vs_floor": event_ratio,
            "shutdown_to_exit_us_median": median(&shut),
            "vm_hwm_kib_median": median(&hwm),
            "vm_hwm_ratio_vs_floor": hwm_ratio,
            "tree_maxrss_kib_median": median(&tree),
            "tree_maxrss_ratio_vs_floor": tree_ratio,
            "exit_statuses": exits,
            "ok": ok,
        });
        rows.push(vec![
            p.program.name.to_owned(),
            p.program.floor.unwrap_or("-").to_owned(),
            fmt_opt(median(&cold), 1000.0, 2),
            fmt_opt(cold_ratio, 1.0, 2),
            fmt_opt(median(&all_events), 1.0, 0),
            fmt_opt(percentile(&all_events, 0.90), 1.0, 0),
            fmt_opt(percentile(&all_events, 0.99), 1.0, 0),
            event_delta.map_or("-".into(), |d| format!("{d:+.0}")),
            fmt_opt(event_ratio, 1.0, 2),
            fmt_opt(median(&shut), 1000.0, 2),
            fmt_opt(median(&hwm), 1.0, 0),
            fmt_opt(hwm_ratio, 1.0, 2),
            fmt_opt(median(&tree), 1.0, 0),
            fmt_opt(tree_ratio, 1.0, 2),
            info.map_or("-".into(), |i| format!("{}", i.size / 1024)),
            if ok {
                exit_text
            } else {
                format!("{exit_text} FAIL")
            },
        ]);
        json_programs.push(json!({
            "name": p.program.name,
            "description": p.program.description,
            "binary": p.program.binary.label(),
            "binary_path": infos[p.program.binary.label()].0,
            "binary_size_bytes": info.map(|i| i.size),
            "binary_static": info.map(|i| i.is_static),
            "binary_stripped": info.map(|i| i.stripped),
            "env": p.program.env.iter().map(|(k, v)| (k.to_string(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            "floor": p.program.floor,
            "shutdown_only": p.program.shutdown_only,
            "summary": summary,
            "rounds": runs.iter().map(|r| json!({
                "cold_start_us": r.cold_start_us,
                "init_us": r.init_us,
                "per_event_us_median": median(&r.per_event_us),
                "shutdown_to_exit_us": r.shutdown_to_exit_us,
                "vm_hwm_kib": r.vm_hwm_kib,
                "tree_maxrss_kib": r.tree_maxrss_kib,
                "driver_vm_hwm_at_spawn_kib": r.driver_vm_hwm_kib,
                "exit": r.exit,
                "registers": r.registers,
                "event_next_requests": r.nexts,
                "invokes": r.invokes,
                "connections": r.connections,
                "telemetry_subscriptions": r.telemetry_puts,
                "telemetry_batches_sent": r.telemetry_sent,
                "telemetry_bytes_sent": r.telemetry_bytes,
                "telemetry_accept_us": r.telemetry_accept_us,
                "telemetry_to_exit_us": r.telemetry_to_exit_us,
                "telemetry_batches_received": r.telemetry_received,
                "telemetry_batches_delivered": r.telemetry_delivered,
                "resources_early": r.early.map(resources_json),
                "resources_end": r.end.map(resources_json),
                "runtime_invocations": r.runtime_invocations,
                "runtime_responses": r.runtime_responses,
                "runtime_next_requests": r.runtime_nexts,
                "runtime_connections": r.runtime_connections,
                "per_invocation_us_median": median(&r.invocation_us),
                "after_response_us_median": median(&r.post_response_us),
                "problems": r.problems,
                "per_event_us": r.per_event_us.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
                "per_invocation_us": r.invocation_us.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
    }

    let header = [
        "program",
        "floor",
        "cold ms",
        "×floor",
        "event µs",
        "p90",
        "p99",
        "Δ µs",
        "×floor",
        "shut→exit ms",
        "VmHWM KiB",
        "×floor",
        "tree KiB",
        "×floor",
        "size KiB",
        "exit",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < 2 {
                out.push_str(&format!("{cell}{} ", " ".repeat(pad)));
            } else {
                out.push_str(&format!("{}{cell} ", " ".repeat(pad)));
            }
        }
        out.trim_end().to_owned()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let machine = format!(
        "{} CPU(s), {}, Linux {}",
        cpu_count,
        cpu_model(),
        kernel.trim()
    );
    println!(
        "lambda-shell-extension benchmark, {} — {machine}",
        utc_date(now)
    );
    println!(
        "build: {}; {} round(s) × {} events per program, interleaved; pinning {pinning_text}",
        options.build, options.rounds, options.events
    );
    println!();
    println!(
        "{}",
        line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
    );
    for row in &rows {
        println!("{}", line(row));
    }
    println!();
    println!("cold = spawn() → registration request read; event = INVOKE response written → next /event/next read");
    println!("(median/p90/p99 over all samples); Δ and ×floor = median over rounds of (program − floor) and");
    println!("program/floor in the same round; shut→exit = SHUTDOWN response written → process exit (pidfd);");
    println!("VmHWM = the extension's own peak RSS just before SHUTDOWN; tree = ru_maxrss from wait4: the largest");
    println!("peak of the extension and of any child it waited for (max, not sum); size = the binary as built.");
    let driver_hwm = results
        .iter()
        .flatten()
        .filter_map(|run| run.driver_vm_hwm_kib)
        .max();
    println!(
        "Linux folds the spawner's peak RSS into the child's ru_maxrss at exec: tree ≥ the driver's VmHWM at spawn (≤ {} KiB).",
        driver_hwm.map_or("?".into(), |v| v.to_string())
    );
    for (label, (path, info)) in &infos {
        if let Some(info) = info {
            println!(
                "  {label}: {} bytes, {}, {} ({})",
                info.size,
                if info.is_static { "static" } else { "dynamic" },
                if info.stripped {
                    "stripped"
                } else {
                    "not stripped"
                },
                path.display()
            );
        }
    }

    // Telemetry: throughput and loss of each program the driver sent batches to, and what
    // having telemetry configured costs (product-telemetry against product-exec, same round).
    let mut telemetry_rows = Vec::new();
    let mut json_telemetry = Vec::new();
    for (index, p) in prepared.iter().enumerate() {
        if p.program.telemetry == Telemetry::Off {
            continue;
        }
        let runs = &results[index];
        let rate = |us: Option<f64>, r: &Run| us.map(|us| r.telemetry_sent as f64 / (us / 1e6));
        let accept: Vec<f64> = runs
            .iter()
            .filter_map(|r| rate(r.telemetry_accept_us, r))
            .collect();
        let through: Vec<f64> = runs
            .iter()
            .filter_map(|r| rate(r.telemetry_to_exit_us, r))
            .collect();
        let sent: u64 = runs.iter().map(|r| r.telemetry_sent as u64).sum();
        let bytes: u64 = runs.iter().map(|r| r.telemetry_bytes as u64).sum();
        let received: u64 = runs.iter().filter_map(|r| r.telemetry_received).sum();
        let delivered: u64 = runs.iter().filter_map(|r| r.telemetry_delivered).sum();
        let lost = sent as i64 - delivered as i64;
        let load = p.program.telemetry == Telemetry::Load;
        let spread = |values: &[f64]| {
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(0.0, f64::max);
            if values.is_empty() {
                "-".to_owned()
            } else {
                format!("{low:.0}–{high:.0}")
            }
        };
        telemetry_rows.push(vec![
            p.program.name.to_owned(),
            format!("{}", sent / options.rounds as u64),
            bytes
                .checked_div(sent)
                .map_or("-".into(), |b| b.to_string()),
            if load {
                fmt_opt(median(&accept), 1.0, 0)
            } else {
                "-".into()
            },
            if load { spread(&accept) } else { "-".into() },
            if load {
                fmt_opt(median(&through), 1.0, 0)
            } else {
                "-".into()
            },
            if load { spread(&through) } else { "-".into() },
            sent.to_string(),
            received.to_string(),
            delivered.to_string(),
            lost.to_string(),
        ]);
        json_telemetry.push(json!({
            "program": p.program.name,
            "mode": if load { "load" } else { "reports before SHUTDOWN" },
            "batches_per_run": sent / options.rounds as u64,
            "bytes_per_batch": bytes.checked_div(sent),
            "accept_batches_per_s_median": if load { median(&accept) } else { None },
            "through_command_batches_per_s_median": if load { median(&through) } else { None },
            "accept_batches_per_s": if load { accept } else { Vec::new() },
            "through_command_batches_per_s": if load { through } else { Vec::new() },
            "sent": sent,
            "received": received,
            "delivered": delivered,
            "lost": lost,
        }));
    }
    let telemetry_cost = match (index_of("product-telemetry"), index_of("product-exec")) {
        (Some(with), Some(without)) => {
            let (cold, _) = per_round(with, without, &|r| r.cold_start_us);
            let (init, _) = per_round(with, without, &|r| r.init_us);
            let (event, _) = per_round(with, without, &|r| median(&r.per_event_us));
            let (hwm, _) = per_round(with, without, &|r| r.vm_hwm_kib.map(|v| v as f64));
            let (shut, _) = per_round(with, without, &|r| r.shutdown_to_exit_us);
            Some((cold, init, event, hwm, shut))
        }
        _ => None,
    };
    if !telemetry_rows.is_empty() {
        let header = [
            "program",
            "batches/run",
            "B/batch",
            "accept/s",
            "range",
            "through cmd/s",
            "range",
            "sent",
            "received",
            "delivered",
            "lost",
        ];
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &telemetry_rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - cell.chars().count());
                if i == 0 {
                    out.push_str(&format!("{cell}{pad} "));
                } else {
                    out.push_str(&format!("{pad}{cell} "));
                }
            }
            out.trim_end().to_owned()
        };
        println!();
        println!("telemetry (the driver as the Telemetry API, one batch at a time, each after the previous 200)");
        println!();
        println!(
            "{}",
            line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        );
        for row in &telemetry_rows {
            println!("{}", line(row));
        }
        println!();
        println!("accept/s = batches / (first POST written → last 200 read); through cmd/s = batches / (first POST");
        println!("written → the extension's exit after SHUTDOWN: it runs the command on every batch before exiting);");
        println!("medians over rounds, range = min–max over rounds. received/delivered: its `telemetry: N batches");
        println!("received, M delivered` log line; lost = sent − delivered (any loss fails the run). product-telemetry");
        println!("gets its INVOKEs' platform.report in one batch just before SHUTDOWN. The load's SHUTDOWN deadline is");
        println!(
            "{} s ahead (Lambda gives 2 s): what is queued is delivered after SHUTDOWN, in shut→exit above.",
            shutdown_ms(options.batches) as f64 / 1000.0
        );
    }
    if let Some((cold, init, event, hwm, shut)) = telemetry_cost {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:+.2}", v / 1000.0));
        let whole = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.0}"));
        println!("telemetry configured: product-telemetry − product-exec in the same round, median over rounds:");
        println!(
            "  cold {} ms; registration → first /event/next {} ms (listener, threads, PUT); per event {} µs;",
            ms(cold),
            ms(init),
            whole(event)
        );
        println!(
            "  VmHWM {} KiB (the reports' batch is queued by then); shut→exit {} ms (delivering it)",
            whole(hwm),
            ms(shut)
        );
    }

    // Persistent mode against its targets: ≤ 2× the no-command floor per event and ≥ 8× faster
    // than the per-event mode with /bin/true, both paired per round.
    let event_median = |r: &Run| median(&r.per_event_us);
    let all_samples = |index: usize| {
        median(
            &results[index]
                .iter()
                .flat_map(|r| r.per_event_us.iter().copied())
                .collect::<Vec<_>>(),
        )
    };
    let peer = index_of(PER_EVENT_PEER);
    let mut persistent_rows = Vec::new();
    let mut json_persistent = Vec::new();
    for (index, p) in prepared.iter().enumerate() {
        let Some(floor) = p
            .program
            .floor
            .filter(|f| *f == "floor-nocmd")
            .and_then(index_of)
        else {
            continue;
        };
        let persistent = is_persistent(p.program);
        let (delta, ratio) = per_round(index, floor, &event_median);
        let speedup = match (persistent, peer) {
            (true, Some(peer)) => per_round(peer, index, &event_median).1,
            _ => None,
        };
        let init = median(
            &results[index]
                .iter()
                .filter_map(|r| r.init_us)
                .collect::<Vec<_>>(),
        );
        let verdict = |met: Option<bool>| match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let ratio_met = ratio.map(|r| r <= 2.0);
        let speedup_met = speedup.map(|s| s >= 8.0);
        persistent_rows.push(vec![
            p.program.name.to_owned(),
            fmt_opt(init, 1000.0, 2),
            fmt_opt(all_samples(index), 1.0, 1),
            fmt_opt(all_samples(floor), 1.0, 1),
            delta.map_or("-".into(), |d| format!("{d:+.1}")),
            fmt_opt(ratio, 1.0, 2),
            verdict(ratio_met).into(),
            if persistent {
                fmt_opt(peer.and_then(all_samples), 1.0, 0)
            } else {
                "-".into()
            },
            fmt_opt(speedup, 1.0, 1),
            verdict(speedup_met).into(),
        ]);
        json_persistent.push(json!({
            "program": p.program.name,
            "persistent": persistent,
            "init_us_median": init,
            "per_event_us_median": all_samples(index),
            "floor": "floor-nocmd",
            "floor_per_event_us_median": all_samples(floor),
            "per_event_delta_vs_floor_us": delta,
            "per_event_ratio_vs_floor": ratio,
            "ratio_target": 2.0,
            "ratio_target_met": ratio_met,
            "per_event_peer": persistent.then_some(PER_EVENT_PEER),
            "peer_per_event_us_median": if persistent { peer.and_then(all_samples) } else { None },
            "speedup_vs_peer": speedup,
            "speedup_target": 8.0,
            "speedup_target_met": speedup_met,
        }));
    }
    if !persistent_rows.is_empty() {
        println!();
        println!(
            "no process per event: persistent mode (targets: ≤ 2× floor-nocmd, ≥ 8× faster than {PER_EVENT_PEER}) and the official crate with no command"
        );
        println!();
        let header = [
            "program",
            "init ms",
            "event µs",
            "floor µs",
            "Δ µs",
            "×floor",
            "≤ 2×",
            "exec µs",
            "speed-up",
            "≥ 8×",
        ];
        for line in table_lines(&header, &persistent_rows, 1) {
            println!("{line}");
        }
        println!();
        println!("init = registration answered → first /event/next (the persistent handler starts there); event µs");
        println!("and floor µs = medians over all samples; Δ, ×floor = median over rounds of (program − floor-nocmd)");
        println!("and program/floor-nocmd in the same round; speed-up = median over rounds of {PER_EVENT_PEER}/program");
        println!("(exec µs: {PER_EVENT_PEER}, a /bin/true process per event) in the same round.");
    }

    // The Runtime API proxy: each proxy program against runtime-direct (the runtime client
    // straight to the stand-in), per invocation as the client measured it, paired per round.
    let invocation_median = |r: &Run| median(&r.invocation_us);
    let invocation_samples = |index: usize| {
        median(
            &results[index]
                .iter()
                .flat_map(|r| r.invocation_us.iter().copied())
                .collect::<Vec<_>>(),
        )
    };
    let mut proxy_rows = Vec::new();
    let mut json_proxy = Vec::new();
    for (index, p) in prepared.iter().enumerate() {
        if p.program.runtime == Runtime::Off {
            continue;
        }
        let runs = &results[index];
        let samples: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.invocation_us.iter().copied())
            .collect();
        let floor = p.program.floor.and_then(index_of);
        let (delta, ratio) =
            floor.map_or((None, None), |f| per_round(index, f, &invocation_median));
        let round_deltas: Vec<Option<f64>> = (0..options.rounds)
            .map(|r| {
                let f = floor?;
                Some(invocation_median(&runs[r])? - invocation_median(&results[f][r])?)
            })
            .collect();
        let target = p.program.name == PROXY_TARGET_PROGRAM;
        let met = if target {
            delta.map(|d| d <= PROXY_TARGET_US)
        } else {
            None
        };
        let post: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.post_response_us.iter().copied())
            .collect();
        let connections = runs.iter().filter_map(|r| r.runtime_connections).max();
        proxy_rows.push(vec![
            p.program.name.to_owned(),
            fmt_opt(median(&samples), 1.0, 1),
            fmt_opt(percentile(&samples, 0.90), 1.0, 1),
            fmt_opt(percentile(&samples, 0.99), 1.0, 1),
            fmt_opt(floor.and_then(invocation_samples), 1.0, 1),
            delta.map_or("-".into(), |d| format!("{d:+.1}")),
            fmt_opt(ratio, 1.0, 2),
            match met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
            fmt_opt(median(&post), 1.0, 0),
            connections.map_or("-".into(), |c| c.to_string()),
        ]);
        json_proxy.push(json!({
            "program": p.program.name,
            "floor": p.program.floor,
            "per_invocation_us_median": median(&samples),
            "per_invocation_us_p90": percentile(&samples, 0.90),
            "per_invocation_us_p99": percentile(&samples, 0.99),
            "floor_per_invocation_us_median": floor.and_then(invocation_samples),
            "per_invocation_delta_vs_floor_us": delta,
            "per_invocation_ratio_vs_floor": ratio,
            "per_invocation_delta_per_round_us": round_deltas,
            "target_us": target.then_some(PROXY_TARGET_US),
            "target_met": met,
            "after_response_us_median": median(&post),
            "runtime_connections_max": connections,
        }));
    }
    if !proxy_rows.is_empty() {
        println!();
        println!(
            "Runtime API proxy, per invocation (target: {PROXY_TARGET_PROGRAM} ≤ {RUNTIME_FLOOR} + {PROXY_TARGET_US:.0} µs, median, paired per round)"
        );
        println!();
        let header = [
            "program",
            "invocation µs",
            "p90",
            "p99",
            "direct µs",
            "Δ µs",
            "×direct",
            "≤ +100 µs",
            "after response µs",
            "conns",
        ];
        for line in table_lines(&header, &proxy_rows, 1) {
            println!("{line}");
        }
        println!();
        println!("invocation = as bench-runtime sees it: GET /2018-06-01/runtime/invocation/next written → the 202 of");
        println!("its POST …/response read ({} B payload, {} B response); medians/p90/p99 over all samples;", invocation::BODY_BYTES, invocation::BODY_BYTES);
        println!("direct µs = {RUNTIME_FLOOR} (the client straight to the stand-in Runtime API); Δ, ×direct = median over");
        println!("rounds of (program − {RUNTIME_FLOOR}) and program/{RUNTIME_FLOOR} of the per-round medians. after response =");
        println!("the driver read the response → the extension's next /event/next (registered for INVOKE: the response");
        println!("handler runs in between; the next invocation waits for it, so it is in the next one's figure).");
        println!("conns = TCP connections the client opened in a run (max over rounds; 1: keep-alive held).");
    }

    // What the extension holds after early_after(events) events and just before SHUTDOWN.
    let mut resource_rows = Vec::new();
    let mut json_resources = Vec::new();
    for (index, p) in prepared.iter().enumerate() {
        let runs = &results[index];
        if runs.iter().all(|r| r.end.is_none()) {
            continue;
        }
        let pick = |sample: fn(&Run) -> Option<Resources>, field: fn(&Resources) -> f64| {
            median(
                &runs
                    .iter()
                    .filter_map(|r| sample(r).map(|s| field(&s)))
                    .collect::<Vec<_>>(),
            )
        };
        let early = |r: &Run| r.early;
        let end = |r: &Run| r.end;
        let pair = |field: fn(&Resources) -> f64| {
            format!(
                "{}→{}",
                fmt_opt(pick(early, field), 1.0, 0),
                fmt_opt(pick(end, field), 1.0, 0)
            )
        };
        let fd_growth = runs
            .iter()
            .filter_map(|r| Some(r.end?.fds as i64 - r.early?.fds as i64))
            .max();
        let zombies_max = runs
            .iter()
            .flat_map(|r| [r.early, r.end])
            .flatten()
            .map(|s| s.zombies)
            .max();
        let after = runs.iter().find_map(|r| r.early).map(|s| s.after_events);
        resource_rows.push(vec![
            p.program.name.to_owned(),
            after.map_or("-".into(), |a| a.to_string()),
            runs.iter()
                .find_map(|r| r.end)
                .map_or("-".into(), |s| s.after_events.to_string()),
            pair(|s| s.fds as f64),
            fd_growth.map_or("-".into(), |g| format!("{g:+}")),
            pair(|s| s.threads as f64),
            pair(|s| s.rss_kib as f64),
            pair(|s| s.children as f64),
            zombies_max.map_or("-".into(), |z| z.to_string()),
        ]);
        json_resources.push(json!({
            "program": p.program.name,
            "early_after_events": after,
            "early": runs.iter().filter_map(|r| r.early.map(resources_json)).collect::<Vec<_>>(),
            "end": runs.iter().filter_map(|r| r.end.map(resources_json)).collect::<Vec<_>>(),
            "fd_growth_max": fd_growth,
            "zombies_max": zombies_max,
        }));
    }
    if !resource_rows.is_empty() {
        println!();
        println!("the extension process after the first events → just before SHUTDOWN (medians over rounds)");
        println!();
        let header = [
            "program",
            "early at",
            "end at",
            "fds",
            "Δfds max",
            "threads",
            "VmRSS KiB",
            "children",
            "zombies max",
        ];
        for line in table_lines(&header, &resource_rows, 1) {
            println!("{line}");
        }
        println!();
        println!("early at / end at = INVOKEs acknowledged at the sample (10 % of the events, at most 1000; then all;");
        println!(
            "the proxy's programs: invocations answered, the runtime waiting in its next /next);"
        );
        println!("fds = entries of /proc/<pid>/fd; threads, VmRSS from /proc/<pid>/status; children = its child");
        println!("processes (a persistent handler is one), zombies = those in state Z; Δfds max = the largest");
        println!("end − early over rounds.");
    }

    // The chart: every program with per-event samples, grouped with its floor, floor first.
    let mut bars = Vec::new();
    let mut groups: Vec<&'static str> = Vec::new();
    for p in &prepared {
        let group = p.program.floor.unwrap_or(p.program.name);
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    // A process per event first, the no-process group (persistent mode) last, next to its zoom.
    groups.sort_by_key(|group| *group == "floor-nocmd");
    for group in &groups {
        // The proxy's programs: per invocation, as the runtime client measured it.
        let proxy = *group == RUNTIME_FLOOR;
        let members = prepared.iter().enumerate().filter(|(_, p)| {
            (proxy || !p.program.shutdown_only)
                && p.program.floor.unwrap_or(p.program.name) == *group
        });
        let mut members: Vec<_> = members.collect();
        members.sort_by_key(|(_, p)| p.program.floor.is_some());
        for (index, p) in members {
            let samples = if proxy {
                invocation_samples(index)
            } else {
                all_samples(index)
            };
            let Some(value) = samples else {
                continue;
            };
            let floor = p.program.floor.and_then(index_of);
            let measure: &dyn Fn(&Run) -> Option<f64> = if proxy {
                &invocation_median
            } else {
                &event_median
            };
            let (delta, ratio) = floor.map_or((None, None), |f| per_round(index, f, measure));
            let note = (p.program.name == PROXY_TARGET_PROGRAM).then(|| {
                format!(
                    "target ≤ +{PROXY_TARGET_US:.0} µs {}",
                    match delta {
                        Some(d) if d <= PROXY_TARGET_US => "met",
                        Some(_) => "NOT met",
                        None => "-",
                    }
                )
            });
            bars.push(Bar {
                note,
                group,
                name: p.program.name,
                detail: handler_text(p.program),
                kind: Kind::of(p.program),
                value,
                floor: floor.and_then(if proxy {
                    &invocation_samples as &dyn Fn(usize) -> Option<f64>
                } else {
                    &all_samples
                }),
                ratio,
                delta,
                speedup: match (is_persistent(p.program), peer) {
                    (true, Some(peer)) => per_round(peer, index, &event_median).1,
                    _ => None,
                },
            });
        }
    }
    let chart = chart_svg(
        &bars,
        "lambda-shell-extension: what each event costs, by program and mode (lower is better)",
        &[
            format!(
                "make bench, {}: {} round(s) × {} events per program, interleaved; each compared with its floor in the same round",
                utc_date(now),
                options.rounds,
                options.events
            ),
            format!("{machine}; {}; pinning {pinning_text}", options.build),
        ],
    );
    let chart_path = options.out.with_extension("svg");
    let mut chart_paths = vec![chart_path];
    chart_paths.extend(options.chart_copy.clone());

    let report = json!({
        "date_utc": utc_date(now),
        "epoch_secs": now,
        "machine": {
            "cpus": cpu_count,
            "cpu_model": cpu_model(),
            "kernel": kernel.trim(),
        },
        "build": options.build,
        "driver_vm_hwm_at_spawn_kib_max": driver_hwm,
        "pinning": pinning_text,
        "events": options.events,
        "rounds": options.rounds,
        "warmup_events": options.warmup,
        "definitions": {
            "cold_start": "spawn() to the registration request (head and body) read by the driver",
            "init": "registration response written to the first /event/next request read (the extension's own Init, telemetry subscription included)",
            "per_event": "INVOKE response written to the next /event/next request read",
            "shutdown_to_exit": "SHUTDOWN response written to the extension's exit seen on its pidfd",
            "vm_hwm": "VmHWM of the extension process (own peak RSS) read just before SHUTDOWN is sent",
            "tree_maxrss": "ru_maxrss from wait4: the largest peak RSS of the extension and of the children it waited for",
            "ratios": "median over rounds of program/floor (and program-floor) measured in the same round",
        },
        "programs": json_programs,
        "telemetry": {
            "batches_per_load_run": options.batches,
            "load_shutdown_deadline_ms": shutdown_ms(options.batches) as u64,
            "programs": json_telemetry,
            "configured_cost_vs_product_exec": telemetry_cost.map(|(cold, init, event, hwm, shut)| json!({
                "cold_start_delta_us": cold,
                "init_delta_us": init,
                "per_event_delta_us": event,
                "vm_hwm_delta_kib": hwm,
                "shutdown_to_exit_delta_us": shut,
            })),
            "definitions": {
                "accept": "batches / (first POST written → the 200 of the last batch read)",
                "through_command": "batches / (first POST written → the extension's exit seen on its pidfd, after SHUTDOWN)",
                "lost": "batches answered 200 minus the delivered count of the extension's log line",
            },
        },
        "persistent": {
            "floor": "floor-nocmd",
            "per_event_peer": PER_EVENT_PEER,
            "programs": json_persistent,
            "definitions": {
                "ratio": "median over rounds of program/floor-nocmd per-event medians in the same round (target ≤ 2)",
                "speedup": "median over rounds of product-exec/program per-event medians in the same round (target ≥ 8)",
            },
        },
        "proxy": {
            "floor": RUNTIME_FLOOR,
            "target_program": PROXY_TARGET_PROGRAM,
            "target_us": PROXY_TARGET_US,
            "payload_bytes": invocation::BODY_BYTES,
            "response_bytes": invocation::BODY_BYTES,
            "programs": json_proxy,
            "definitions": {
                "per_invocation": "as the runtime client (bench-runtime, blocking, keep-alive) sees it: GET /2018-06-01/runtime/invocation/next written to the 202 of its POST /2018-06-01/runtime/invocation/{id}/response read",
                "delta": "median over rounds of (program - runtime-direct) per-invocation medians in the same round",
                "after_response": "the driver read the function's response to the extension's next /event/next read (registered for INVOKE only)",
                "handing_out": "the next invocation is answered once the previous one is closed: its response read and, registered for INVOKE, the extension back in /event/next",
            },
        },
        "resources": {
            "programs": json_resources,
            "definitions": {
                "early": "after 10 % of the events (at most 1000) have been acknowledged, while the extension waits in /event/next",
                "end": "after the last INVOKE, just before the SHUTDOWN response is written",
                "fds": "entries of /proc/<pid>/fd",
                "threads": "Threads: of /proc/<pid>/status",
                "rss_kib": "VmRSS: of /proc/<pid>/status",
                "children": "child processes of the extension (any thread)",
                "zombies": "children in state Z",
            },
        },
        "skipped": skipped,
        "failures": failures,
    });
    if let Some(parent) = options.out.parent() {
        let _ = fs::create_dir_all(parent);
    }
    match serde_json::to_string_pretty(&report) {
        Ok(text) => {
            if let Err(error) = fs::write(&options.out, text + "\n") {
                eprintln!("bench: cannot write {}: {error}", options.out.display());
            } else {
                println!("JSON results: {}", options.out.display());
            }
        }
        Err(error) => eprintln!("bench: cannot serialise results: {error}"),
    }
    for path in &chart_paths {
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        match fs::write(path, &chart) {
            Ok(()) => println!("chart: {}", path.display()),
            Err(error) => eprintln!("bench: cannot write {}: {error}", path.display()),
        }
    }
    if !failures.is_empty() {
        eprintln!("bench: {} misbehaving run(s):", failures.len());
        for failure in &failures {
            eprintln!("  {failure}");
        }
        std::process::exit(1);
    }
}
