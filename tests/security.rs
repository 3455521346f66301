//! The security review's tests (issue 12, "Security review"; SECURITY.md cites them):
//!
//! * What a command inherits, in every mode that runs one (per-event handler, init command,
//!   persistent handler, telemetry command per batch and persistent, the proxy's request and
//!   response handlers): its descriptors (listed from `/proc/<its pid>/fd` by a child, so the
//!   listing itself adds none), its environment (`/proc/<its pid>/environ`: exactly what the
//!   extension passed, before any shell adds its own variables) against the extension's own, and
//!   its process group.
//! * Credentials: every extension the suites start carries sentinel `AWS_*` credentials
//!   (`tests/common/credentials.rs`), and the harness fails any test whose extension output or
//!   fake-API request holds one; here, the extension at `RUST_LOG=trace` goes through every mode
//!   and failure kind, and the self-tests show that the harness check does fail on a leak.
//! * Resource limits: a handler that cannot be started for want of processes (EAGAIN under
//!   `RLIMIT_NPROC`), in per-event mode and for a persistent handler at Init; an address-space
//!   limit; and a run under Lambda's 1,024 descriptors and 1,024 processes.
//!
//! ENOENT and EACCES for a handler are covered by `tests/io.rs` (`missing_command_fails_at_init`,
//! `non_executable_command_fails_at_init`: `Extension.ConfigInvalid` at Init;
//! `handler_gone_after_init_fails_with_os_error`: `Extension.HandlerFailed` at the event).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;

/// The name the extensions here register under.
const NAME: &str = "sec-ext";
const INVOKE_TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";

/// The variables the extension sets for any of its commands and never passes on from its own
/// environment (`MANAGED_ENV` in src/command/per_event.rs): every command, of every kind, has
/// all of them stripped, so a stale value of one kind's variable (a `LAMBDA_RESPONSE_STATUS`
/// in the function's environment) reaches no command.
const MANAGED: [&str; 15] = [
    "LAMBDA_EVENT_TYPE",
    "LAMBDA_DEADLINE_MS",
    "LAMBDA_EXTENSION_NAME",
    "LAMBDA_REQUEST_ID",
    "LAMBDA_INVOKED_FUNCTION_ARN",
    "LAMBDA_SHUTDOWN_REASON",
    "_X_AMZN_TRACE_ID",
    "LAMBDA_ACK_FD",
    "LAMBDA_TELEMETRY_BATCH_ITEMS",
    "LAMBDA_CLIENT_CONTEXT",
    "LAMBDA_COGNITO_IDENTITY",
    "LAMBDA_TENANT_ID",
    "LAMBDA_RESPONSE_STATUS",
    "LAMBDA_ERROR_TYPE",
    "LAMBDA_RESPONSE_TRUNCATED",
];

/// The extensions here are started with a stale value for each of these, so a command that
/// inherited one instead of getting it from the extension shows.
fn stale_names() -> impl Iterator<Item = &'static str> {
    MANAGED.into_iter()
}

fn event_command() -> Vec<&'static str> {
    MANAGED.to_vec()
}

fn telemetry_command() -> Vec<&'static str> {
    MANAGED.to_vec()
}

fn proxy_handler() -> Vec<&'static str> {
    MANAGED.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// For `Launcher::pre_exec`: close every descriptor this test process would pass on to the
/// extension (one without close-on-exec: cargo's or the CI runner's), so that the extension
/// starts with 0, 1 and 2 only, as Lambda starts it. Descriptors with close-on-exec (the one
/// `std::process` reports exec errors on) are left alone.
fn only_standard_fds() -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    || {
        for fd in 3..4096 {
            // SAFETY: fcntl and close are async-signal-safe; the fds are this child's.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::close(fd);
                }
            }
        }
        Ok(())
    }
}

/// A sandbox every uid can read and search (for an extension run as another user).
fn open_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    fs::set_permissions(sb.root(), fs::Permissions::from_mode(0o755)).unwrap();
    sb
}

/// Whether this test process runs as root (CI does): then `RLIMIT_NPROC` does not apply to it,
/// and an extension that must be bound by it runs as another user.
fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A uid of its own for each test that counts processes (`RLIMIT_NPROC` counts every process
/// of the user), so parallel tests do not share a count.
fn private_uid(n: u32) -> u32 {
    61_000 + (std::process::id() % 1000) * 10 + n
}

/// For `pre_exec`: `only_standard_fds`, then the limits, then (as root) become `uid`, so the
/// process limit applies.
fn limited(
    uid: u32,
    limits: Vec<(libc::__rlimit_resource_t, u64)>,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let mut close = only_standard_fds();
    let root = is_root();
    move || {
        close()?;
        for (resource, value) in &limits {
            let limit = libc::rlimit {
                rlim_cur: *value,
                rlim_max: *value,
            };
            // SAFETY: setrlimit with a valid struct is async-signal-safe.
            if unsafe { libc::setrlimit(*resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if root {
            // SAFETY: setgroups/setgid/setuid are async-signal-safe; gid before uid.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Set the soft `resource` limit of the running extension `pid` (started with
/// `limited(uid, ..)`) to `value` (`u64::MAX`: back up to the hard limit, which stays as it
/// was). prlimit(2) on another process needs the same user (or CAP_SYS_RESOURCE, which a
/// container's root may lack), so a short-lived child running as that user makes the call.
fn set_limit(pid: u32, uid: u32, resource: libc::__rlimit_resource_t, value: u64) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/true");
    if is_root() {
        cmd.uid(uid).gid(uid);
    }
    // SAFETY: prlimit is async-signal-safe; it runs after the uid change, before the exec.
    unsafe {
        cmd.pre_exec(move || {
            let pid = pid as libc::pid_t;
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::prlimit(pid, resource, std::ptr::null(), &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit.rlim_cur = value.min(limit.rlim_max);
            match libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        });
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("prlimit on the extension: {e}"));
    assert!(status.success(), "prlimit helper: {status}");
}

/// `NAME=value` entries of a `/proc/<pid>/environ`.
fn parse_environ(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            match entry.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (entry.to_string(), String::new()),
            }
        })
        .collect()
}

/// (pid, ppid, pgrp, session) from `/proc/<pid>/stat` text.
fn parse_stat(stat: &str) -> (i32, i32, i32, i32) {
    let pid = stat.split_whitespace().next().unwrap().parse().unwrap();
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    let fields: Vec<i32> = rest
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|f| f.parse().unwrap())
        .collect();
    (pid, fields[0], fields[1], fields[2])
}

/// What a command saw of itself, as the snippet of `snapshot` recorded it.
#[derive(Debug)]
struct Snap {
    dir: String,
    /// fd number -> what it points at (`pipe:[…]`, `/dev/null`, `socket:[…]`, …).
    fds: BTreeMap<i32, String>,
    env: BTreeMap<String, String>,
    pid: i32,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

/// A shell snippet that records the descriptors, initial environment and stat of the shell
/// running it into `<sandbox>/snap/<tag>.<pid>/`. Everything is read and written by a child
/// shell looking at the shell's pid, so the shell's own descriptors are listed exactly: the
/// shell itself redirects nothing (dash applies a redirection in the shell, keeping the old
/// descriptor on fd 10), and a shell run as `/bin/sh -c LINE` opens none of its own. It must be
/// part of a shell command line.
fn snapshot(sb: &Sandbox, tag: &str) -> String {
    let dir = sb.p("snap");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    format!(
        "d={dir}/{tag}.$$; mkdir $d.tmp; sh -c 'ls -l /proc/$1/fd > $2/fds; \
         cat /proc/$1/environ > $2/environ; cat /proc/$1/stat > $2/stat' sh $$ $d.tmp; mv $d.tmp $d"
    )
}

/// The snapshots recorded under `tag` so far.
fn snaps(sb: &Sandbox, tag: &str) -> Vec<Snap> {
    let Ok(entries) = fs::read_dir(sb.path("snap")) else {
        return Vec::new();
    };
    let mut out: Vec<Snap> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(tag)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|pid| pid.parse::<i32>().is_ok())
        })
        .map(|e| {
            let dir = e.path();
            let fds = fs::read_to_string(dir.join("fds"))
                .unwrap()
                .lines()
                .filter_map(|line| {
                    let (left, target) = line.split_once(" -> ")?;
                    let fd = left.split_whitespace().last()?.parse().ok()?;
                    Some((fd, target.to_string()))
                })
                .collect();
            let (pid, ppid, pgrp, session) =
                parse_stat(&fs::read_to_string(dir.join("stat")).unwrap());
            Snap {
                dir: dir.display().to_string(),
                fds,
                env: parse_environ(&fs::read(dir.join("environ")).unwrap()),
                pid,
                ppid,
                pgrp,
                session,
            }
        })
        .collect();
    out.sort_by_key(|s| s.pid);
    out
}

/// Wait until `n` snapshots of `tag` exist; returns them.
fn expect_snaps(sb: &Sandbox, tag: &str, n: usize, ext: &Ext) -> Vec<Snap> {
    let ok = wait_for(secs(15), || snaps(sb, tag).len() >= n);
    let got = snaps(sb, tag);
    assert!(
        ok,
        "{tag}: {} snapshot(s), expected {n}\n{}",
        got.len(),
        ext.output_tail()
    );
    got
}

/// What the extension itself is: read while it runs, right after it started.
struct Origin {
    pid: i32,
    pgrp: i32,
    session: i32,
    /// Its environment, as the kernel has it.
    env: BTreeMap<String, String>,
}

fn origin(ext: &Ext) -> Origin {
    let (pid, _, pgrp, session) = stat_of(ext.pid);
    let environ = fs::read(format!("/proc/{pid}/environ")).expect("the extension's environ");
    Origin {
        pid,
        pgrp,
        session,
        env: parse_environ(&environ),
    }
}

/// (pid, ppid, pgrp, session) of a live process.
fn stat_of(pid: u32) -> (i32, i32, i32, i32) {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

/// Every variable whose value differs between `ext` and `cmd`: name -> the command's value
/// (`None`: the command does not have it).
fn env_difference(
    ext: &BTreeMap<String, String>,
    cmd: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    ext.keys()
        .chain(cmd.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| ext.get(*k) != cmd.get(*k))
        .map(|k| (k.clone(), cmd.get(k).cloned()))
        .collect()
}

/// The difference a command should show: the stale values of the `stripped` names gone, except
/// the variables in `set`, which have these values; nothing else differs.
fn expected_difference(
    stripped: &[&str],
    set: &[(&str, &str)],
) -> BTreeMap<String, Option<String>> {
    let mut want: BTreeMap<String, Option<String>> =
        stripped.iter().map(|k| (k.to_string(), None)).collect();
    for (k, v) in set {
        want.insert(k.to_string(), Some(v.to_string()));
    }
    want
}

/// Check one snapshot: exactly the descriptors `fds` (each 0..=2 a pipe or /dev/null as
/// `stdin_null` says, fd 3 a pipe), no socket, the environment difference, and a process group
/// of its own, led by the command, a direct child of the extension.
fn check_snap(
    what: &str,
    snap: &Snap,
    ext: &Origin,
    ack_fd: bool,
    stdin_null: bool,
    stripped: &[&str],
    set: &[(&str, &str)],
) {
    let want_fds: Vec<i32> = if ack_fd {
        vec![0, 1, 2, 3]
    } else {
        vec![0, 1, 2]
    };
    assert_eq!(
        snap.fds.keys().copied().collect::<Vec<_>>(),
        want_fds,
        "{what}: descriptors {:?} ({})",
        snap.fds,
        snap.dir
    );
    let is_pipe = |fd: i32| snap.fds[&fd].starts_with("pipe:[");
    match stdin_null {
        true => assert_eq!(snap.fds[&0], "/dev/null", "{what}: stdin {:?}", snap.fds),
        false => assert!(is_pipe(0), "{what}: stdin {:?}", snap.fds),
    }
    assert!(
        is_pipe(1) && is_pipe(2),
        "{what}: stdout/stderr {:?}",
        snap.fds
    );
    if ack_fd {
        assert!(is_pipe(3), "{what}: fd 3 {:?}", snap.fds);
        let distinct: BTreeSet<&String> = snap.fds.values().collect();
        assert_eq!(
            distinct.len(),
            4,
            "{what}: fd 3 is a pipe of its own {:?}",
            snap.fds
        );
    }
    assert!(
        snap.fds.values().all(|t| !t.starts_with("socket:")),
        "{what}: a socket {:?}",
        snap.fds
    );
    assert_eq!(
        env_difference(&ext.env, &snap.env),
        expected_difference(stripped, set),
        "{what}: environment, compared with the extension's ({})",
        snap.dir
    );
    assert_eq!(snap.ppid, ext.pid, "{what}: a child of the extension");
    assert_eq!(
        snap.pgrp, snap.pid,
        "{what}: leads a process group of its own"
    );
    assert_ne!(snap.pgrp, ext.pgrp, "{what}: not the extension's group");
    assert_eq!(snap.session, ext.session, "{what}: the extension's session");
}

/// A launcher with a stale value for every variable the extension sets, descriptors 0-2 only.
fn stale_launcher<'a>(sb: &'a Sandbox, api: &FakeApi) -> Launcher<'a> {
    let mut launcher = sb.ext(api).name(NAME).pre_exec(only_standard_fds());
    for k in stale_names() {
        launcher = launcher.env(k, &format!("stale-{k}"));
    }
    launcher.env("MY_VAR", "kept value")
}

// ---------------------------------------------------------------------------------------------
// What a command inherits

/// Per-event handler (INVOKE traced and untraced, SHUTDOWN), init command, per-batch telemetry
/// command, and the proxy's request handler (with client context, Cognito identity and tenant)
/// and response handler (success and error), all in one extension whose listener, proxy,
/// runtime connections and API connection are open while they run: each sees 0, 1, 2 only (all
/// pipes; /dev/null on the init command's stdin), no socket, exactly its documented variables on
/// top of the extension's environment (the stale ones the extension had are gone), and leads a
/// process group of its own.
#[test]
fn per_event_commands_inherit_only_std_fds_and_documented_variables() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let context = r#"{"client":{"installation_id":"i-1"},"custom":{"k":"v"},"env":{}}"#;
    let identity = r#"{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool-1"}"#;
    let inv1 = Invocation::new("r-1", r#"{"n":1}"#)
        .header("Lambda-Runtime-Client-Context", context)
        .header("Lambda-Runtime-Cognito-Identity", identity)
        .header("Lambda-Runtime-Aws-Tenant-Id", "tenant-7");
    let inv2 = Invocation::new("r-2", r#"{"n":2}"#).without("Lambda-Runtime-Trace-Id");
    let (rd1, rd2) = (
        inv1.deadline_ms().to_string(),
        inv2.deadline_ms().to_string(),
    );
    rt.push(inv1);
    rt.push(inv2);
    let d1 = deadline_in(20_000);
    let d2 = d1 + 1;
    rt.push_invoke("r-1", d1);
    rt.push_invoke_untraced("r-2", d2);

    let mut ext = stale_launcher(&sb, &rt)
        .env("SHELL_EXT_INIT", &snapshot(&sb, "init"))
        .handler(&format!("{}; cat > /dev/null", snapshot(&sb, "handler")))
        .env(
            "SHELL_EXT_TELEMETRY_HANDLER",
            &format!("{}; cat > /dev/null", snapshot(&sb, "telemetry")),
        )
        .env("SHELL_EXT_REQUEST_HANDLER", &snapshot(&sb, "request"))
        .env("SHELL_EXT_RESPONSE_HANDLER", &snapshot(&sb, "response"))
        .env("SHELL_EXT_PROXY_PORT", &port.to_string())
        .spawn();
    let me = origin(&ext);
    let target = TelemetryTarget::of(&rt);
    let mut runtime = RuntimeClient::connect(port);
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-1")
    );
    assert_eq!(runtime.respond("r-1", b"{\"ok\":1}").status, 202);
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("r-2")
    );
    assert_eq!(runtime.fail("r-2", "Function.Bad", b"{}").status, 202);
    target.deliver(&batch(&[
        platform("start", "r-1"),
        platform("report", "r-1"),
    ]));
    expect_snaps(&sb, "handler", 2, &ext);
    expect_snaps(&sb, "response", 2, &ext);
    expect_snaps(&sb, "telemetry", 1, &ext);
    rt.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(20));
    assert_none(&rt, Endpoint::ExitError);
    assert_none(&rt, Endpoint::InitError);

    let name = ("LAMBDA_EXTENSION_NAME", NAME);
    let init = expect_snaps(&sb, "init", 1, &ext);
    assert_eq!(init.len(), 1);
    check_snap(
        "init command",
        &init[0],
        &me,
        false,
        true,
        &event_command(),
        &[name],
    );

    let handlers = expect_snaps(&sb, "handler", 3, &ext);
    assert_eq!(handlers.len(), 3, "{handlers:?}");
    let (d1, d2) = (d1.to_string(), d2.to_string());
    for snap in &handlers {
        let id = snap.env.get("LAMBDA_REQUEST_ID").map(String::as_str);
        let shutdown_deadline = snap
            .env
            .get("LAMBDA_DEADLINE_MS")
            .cloned()
            .unwrap_or_default();
        let set: Vec<(&str, &str)> = match id {
            Some("r-1") => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "INVOKE"),
                ("LAMBDA_DEADLINE_MS", &d1),
                ("LAMBDA_REQUEST_ID", "r-1"),
                ("LAMBDA_INVOKED_FUNCTION_ARN", FUNCTION_ARN),
                ("_X_AMZN_TRACE_ID", INVOKE_TRACE),
            ],
            Some("r-2") => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "INVOKE"),
                ("LAMBDA_DEADLINE_MS", &d2),
                ("LAMBDA_REQUEST_ID", "r-2"),
                ("LAMBDA_INVOKED_FUNCTION_ARN", FUNCTION_ARN),
            ],
            _ => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "SHUTDOWN"),
                ("LAMBDA_DEADLINE_MS", &shutdown_deadline),
                ("LAMBDA_SHUTDOWN_REASON", "spindown"),
            ],
        };
        check_snap(
            &format!("handler {id:?}"),
            snap,
            &me,
            false,
            false,
            &event_command(),
            &set,
        );
    }

    let telemetry = snaps(&sb, "telemetry");
    assert_eq!(telemetry.len(), 1, "{telemetry:?}");
    check_snap(
        "telemetry command",
        &telemetry[0],
        &me,
        false,
        false,
        &telemetry_command(),
        &[name, ("LAMBDA_TELEMETRY_BATCH_ITEMS", "2")],
    );

    let requests = snaps(&sb, "request");
    assert_eq!(requests.len(), 2, "{requests:?}");
    for snap in &requests {
        let set: Vec<(&str, &str)> = match snap.env.get("LAMBDA_REQUEST_ID").map(String::as_str) {
            Some("r-1") => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "REQUEST"),
                ("LAMBDA_REQUEST_ID", "r-1"),
                ("LAMBDA_DEADLINE_MS", &rd1),
                ("LAMBDA_INVOKED_FUNCTION_ARN", FUNCTION_ARN),
                ("_X_AMZN_TRACE_ID", TRACE),
                ("LAMBDA_CLIENT_CONTEXT", context),
                ("LAMBDA_COGNITO_IDENTITY", identity),
                ("LAMBDA_TENANT_ID", "tenant-7"),
            ],
            _ => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "REQUEST"),
                ("LAMBDA_REQUEST_ID", "r-2"),
                ("LAMBDA_DEADLINE_MS", &rd2),
                ("LAMBDA_INVOKED_FUNCTION_ARN", FUNCTION_ARN),
            ],
        };
        check_snap(
            "request handler",
            snap,
            &me,
            false,
            false,
            &proxy_handler(),
            &set,
        );
    }

    let responses = snaps(&sb, "response");
    assert_eq!(responses.len(), 2, "{responses:?}");
    for snap in &responses {
        let set: Vec<(&str, &str)> = match snap.env.get("LAMBDA_REQUEST_ID").map(String::as_str) {
            Some("r-1") => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "RESPONSE"),
                ("LAMBDA_REQUEST_ID", "r-1"),
                ("LAMBDA_RESPONSE_STATUS", "success"),
            ],
            _ => vec![
                name,
                ("LAMBDA_EVENT_TYPE", "RESPONSE"),
                ("LAMBDA_REQUEST_ID", "r-2"),
                ("LAMBDA_RESPONSE_STATUS", "error"),
                ("LAMBDA_ERROR_TYPE", "Function.Bad"),
            ],
        };
        check_snap(
            "response handler",
            snap,
            &me,
            false,
            false,
            &proxy_handler(),
            &set,
        );
    }
}

/// The persistent handler and the persistent telemetry command, with the proxy's listener and
/// the telemetry listener open: 0, 1, 2 and the acknowledgement pipe on 3, nothing else, and
/// only `LAMBDA_EXTENSION_NAME` and `LAMBDA_ACK_FD=3` on top of the extension's environment (no
/// per-event variable, not even a stale one the extension had); their own process groups.
#[test]
fn persistent_commands_inherit_only_std_fds_and_the_ack_pipe() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let port = free_port();
    let answer_every_line = "while IFS= read -r line; do echo ok >&3; done";
    api.push_invoke("p-1", deadline_in(20_000));
    api.push_invoke("p-2", deadline_in(20_000));
    let mut ext = stale_launcher(&sb, &api)
        .env("SHELL_EXT_MODE", "persistent")
        .handler(&format!(
            "{}; {answer_every_line}",
            snapshot(&sb, "handler")
        ))
        .env("SHELL_EXT_TELEMETRY_MODE", "persistent")
        .env(
            "SHELL_EXT_TELEMETRY_HANDLER",
            &format!("{}; {answer_every_line}", snapshot(&sb, "telemetry")),
        )
        .env("SHELL_EXT_PROXY", "on")
        .env("SHELL_EXT_PROXY_PORT", &port.to_string())
        .spawn();
    let me = origin(&ext);
    let target = TelemetryTarget::of(&api);
    target.deliver(&batch(&[platform("start", "p-1")]));
    target.deliver(&batch(&[platform("report", "p-1")]));
    api.expect_requests(Endpoint::Next, 3, secs(10));
    api.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(20));
    assert_none(&api, Endpoint::ExitError);

    let set = [("LAMBDA_EXTENSION_NAME", NAME), ("LAMBDA_ACK_FD", "3")];
    for (tag, stripped) in [
        ("handler", event_command()),
        ("telemetry", telemetry_command()),
    ] {
        let got = expect_snaps(&sb, tag, 1, &ext);
        assert_eq!(got.len(), 1, "{tag} started once: {got:?}");
        let what = format!("persistent {tag}");
        check_snap(&what, &got[0], &me, true, false, &stripped, &set);
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// Everything the extension wrote and every request the fake API got, checked explicitly (the
/// harness checks the same when `ext` and `api` are dropped), and proof that the run logged at
/// the verbose level it was asked for, so the check was not made on a quiet log.
fn assert_nothing_leaked(ext: &Ext, api: &FakeApi, verbose: &str) {
    credentials::assert_no_credentials("the extension's stdout", &ext.stdout());
    credentials::assert_no_credentials("the extension's stderr", &ext.stderr());
    for r in api.requests() {
        let what = format!("request {} {}", r.method, r.path);
        credentials::assert_no_credentials(&what, format!("{:?}", r.headers).as_bytes());
        credentials::assert_no_credentials(&what, &r.body);
    }
    let log = ext.stderr_str();
    assert!(
        log.contains(verbose),
        "no {verbose} line in the extension's log:\n{}",
        ext.output_tail()
    );
}

/// The log holds each of `needles` (the failure paths really ran).
fn assert_logged(ext: &Ext, needles: &[&str]) {
    let log = ext.stderr_str();
    for needle in needles {
        assert!(
            log.contains(needle),
            "no {needle:?} in the extension's log:\n{log}"
        );
    }
}

/// `RUST_LOG=trace`, text lines: handler failure and timeout (per-event, on-error continue),
/// a failing telemetry command, then an API error (an event body that does not parse): the
/// sentinel credentials appear in no log line, no error report and no request.
#[test]
fn no_credentials_at_trace_per_event_telemetry_and_api_error() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let handler = sb.script(
        "handler.sh",
        "#!/bin/sh\ncat > /dev/null\ncase $LAMBDA_REQUEST_ID in\n\
         fail) echo handler-failed-on-purpose >&2; exit 3;;\n\
         slow) exec sleep 30;;\nesac\n",
    );
    api.push_invoke("fail", deadline_in(20_000));
    api.push_invoke("slow", deadline_in(1500));
    api.push_invoke("ok", deadline_in(20_000));
    let mut ext = sb
        .ext(&api)
        .env("RUST_LOG", "trace")
        .env("SHELL_EXT_ON_ERROR", "continue")
        .handler(&handler)
        .env(
            "SHELL_EXT_TELEMETRY_HANDLER",
            "cat > /dev/null; echo telemetry-failed-on-purpose >&2; exit 5",
        )
        .spawn();
    let target = TelemetryTarget::of(&api);
    target.deliver(&batch(&[platform("start", "ok")]));
    assert!(api.wait_events_consumed(secs(15)), "{}", api.describe());
    assert!(
        wait_for(secs(10), || ext
            .stderr_str()
            .contains("telemetry-failed-on-purpose")),
        "{}",
        ext.output_tail()
    );
    // The extension's next /event/next gets a body it cannot parse: Extension.ApiError.
    api.push_raw(b"{\"eventType\":".to_vec(), Some("application/json"));
    ext.expect_exit(1, secs(20));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    check_error_request(&api, &errs[0], "Extension.ApiError");
    assert_logged(
        &ext,
        &[
            "Extension.HandlerFailed",
            "Extension.HandlerTimeout",
            "Extension.ApiError",
        ],
    );
    assert_nothing_leaked(&ext, &api, " TRACE ");
}

/// `RUST_LOG=trace` with the proxy: a request rejected by the request handler (its error
/// report goes upstream), a failing response handler, an upstream that drops the connection
/// (the runtime gets 502): no credential in the log, the requests, or the 502's body.
#[test]
fn no_credentials_at_trace_proxy_failures() {
    let sb = Sandbox::new();
    let rt = RuntimeApi::start();
    let port = free_port();
    let request = sb.script(
        "request.sh",
        "#!/bin/sh\ncat > /dev/null\n\
         [ \"$LAMBDA_REQUEST_ID\" != rej ] || { echo rejected-on-purpose >&2; exit 1; }\n",
    );
    rt.push(Invocation::new("rej", "{}"));
    rt.push(Invocation::new("resp", "{}"));
    rt.push(Invocation::new("up", "{}"));
    rt.push_invoke("resp", deadline_in(8000));
    rt.push_invoke("up", deadline_in(8000));
    let mut ext = sb
        .ext(&rt)
        .env("RUST_LOG", "trace")
        .env("SHELL_EXT_REQUEST_HANDLER", &request)
        .env("SHELL_EXT_ON_REQUEST_FAILURE", "reject")
        .env(
            "SHELL_EXT_RESPONSE_HANDLER",
            "cat > /dev/null; echo response-failed-on-purpose >&2; exit 2",
        )
        .env("SHELL_EXT_PROXY_PORT", &port.to_string())
        .spawn();
    rt.expect_requests(Endpoint::Register, 1, secs(10));
    let mut runtime = RuntimeClient::connect(port);
    // "rej" is rejected on the runtime's behalf; the runtime gets "resp".
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("resp")
    );
    assert_eq!(runtime.respond("resp", b"{\"answer\":1}").status, 202);
    assert_eq!(
        runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
        Some("up")
    );
    rt.answer_times(Route::Response, Routed::Drop, 1);
    let upstream_failed = runtime.respond("up", b"{\"answer\":2}");
    assert_eq!(upstream_failed.status, 502, "{upstream_failed:?}");
    credentials::assert_no_credentials("the proxy's 502", &upstream_failed.body);
    assert!(rt.wait_events_consumed(secs(15)), "{}", rt.describe());
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(20));
    let rejected = rt.requests(Route::Error);
    assert_eq!(rejected.len(), 1, "{}", rt.describe_runtime());
    assert_eq!(
        rejected[0].header("Lambda-Runtime-Function-Error-Type"),
        Some("Extension.RequestRejected")
    );
    assert_logged(
        &ext,
        &[
            "Extension.RequestRejected",
            "Extension.ResponseHandlerFailed",
            "upstream io: Peer disconnected",
        ],
    );
    assert_nothing_leaked(&ext, &rt, " TRACE ");
}

/// `RUST_LOG=debug` with JSON lines: a persistent handler that answers `error`, then exits
/// without answering, and fails the SHUTDOWN (exit/error); a persistent telemetry command
/// that cannot stay up: no credential anywhere.
#[test]
fn no_credentials_at_debug_json_persistent_failures() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let handler = sb.script(
        "persistent.sh",
        "#!/bin/sh\nread -r line; echo 'error failed-on-purpose' >&3\n\
         read -r line; echo exiting-on-purpose >&2; exit 3\n",
    );
    api.push_invoke("p-1", deadline_in(20_000));
    api.push_invoke("p-2", deadline_in(20_000));
    api.push_shutdown("spindown", deadline_in(5000));
    let mut ext = sb
        .ext(&api)
        .env("RUST_LOG", "debug")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("SHELL_EXT_ON_ERROR", "continue")
        .env("SHELL_EXT_MODE", "persistent")
        .handler(&handler)
        .env("SHELL_EXT_TELEMETRY_MODE", "persistent")
        .env(
            "SHELL_EXT_TELEMETRY_HANDLER",
            "echo telemetry-exits >&2; exit 1",
        )
        .spawn();
    let target = TelemetryTarget::of(&api);
    target.deliver(&batch(&[platform("start", "p-1")]));
    ext.expect_exit(1, secs(20));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    assert!(msg.contains("failed-on-purpose"), "{msg}");
    assert_logged(&ext, &["exiting-on-purpose", "telemetry-exits"]);
    assert_nothing_leaked(&ext, &api, "\"level\":\"DEBUG\"");
}

/// At `RUST_LOG=trace`: an init command that fails (init/error Extension.InitFailed), an
/// invalid configuration (Extension.ConfigInvalid), a refused registration, and `--check`:
/// no credential anywhere.
#[test]
fn no_credentials_at_trace_init_failures_and_check() {
    // Init command failure.
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("RUST_LOG", "trace")
        .handler("true")
        .env("SHELL_EXT_INIT", "echo init-failed-on-purpose >&2; exit 4")
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    check_error_request(&api, &errs[0], "Extension.InitFailed");
    assert_nothing_leaked(&ext, &api, " TRACE ");

    // An invalid configuration.
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("RUST_LOG", "trace")
        .handler("true")
        .env("SHELL_EXT_ON_ERROR", "ignore")
        .env("SHELL_EXT_TIMEOUT_MARGIN_MS", "soon")
        .spawn();
    ext.expect_exit(1, secs(10));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    check_error_request(&api, &errs[0], "Extension.ConfigInvalid");
    assert_nothing_leaked(&ext, &api, " TRACE ");

    // A refused registration.
    let api = FakeApi::start();
    api.fault(
        Endpoint::Register,
        Fault::Status(
            403,
            r#"{"errorMessage":"refused on purpose","errorType":"Extension.Forbidden"}"#.into(),
        ),
    );
    let mut ext = sb
        .ext(&api)
        .env("RUST_LOG", "trace")
        .handler("true")
        .spawn();
    ext.expect_exit(1, secs(10));
    assert_logged(&ext, &["refused on purpose"]);
    assert_nothing_leaked(&ext, &api, " TRACE ");

    // --check, offline.
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .env("RUST_LOG", "trace")
        .handler("true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .args(&["--check"])
        .spawn();
    ext.expect_exit(0, secs(10));
    credentials::assert_no_credentials("--check stdout", &ext.stdout());
    credentials::assert_no_credentials("--check stderr", &ext.stderr());
    assert!(!ext.stdout().is_empty() || !ext.stderr().is_empty());
}

/// The harness's own check fails a test whose extension prints a credential (here a handler
/// that echoes the secret key to stdout, which the extension copies to its own).
#[test]
#[should_panic(
    expected = "credentials leaked: the value of [\"AWS_SECRET_ACCESS_KEY\"] appears in the output of extension"
)]
fn harness_check_catches_a_credential_in_the_output() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(3000));
    let mut ext = sb.ext(&api).handler("echo $AWS_SECRET_ACCESS_KEY").spawn();
    ext.expect_exit(0, secs(10));
}

/// ... and one whose error report carries one (a handler whose stderr tail is the session
/// token: the report holds the tail), even when the output check is out of the way.
#[test]
#[should_panic(
    expected = "credentials leaked: the value of [\"AWS_SESSION_TOKEN\"] appears in POST"
)]
fn harness_check_catches_a_credential_in_a_request() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    api.push_shutdown("spindown", deadline_in(3000));
    let mut ext = sb
        .ext(&api)
        .handler("echo $AWS_SESSION_TOKEN >&2; exit 1")
        .spawn();
    ext.expect_exit(1, secs(10));
    assert_eq!(api.count(Endpoint::ExitError), 1);
    // Leave out the output check (it would fire first): the request check must fire alone.
    std::mem::forget(ext);
}

/// The check also reads the HTTP client's trace hex dumps (16 bytes a line): a value split over
/// two dump lines is found, and ordinary dump lines are not mistaken for one.
#[test]
fn credential_check_reads_trace_hex_dumps() {
    let secret = credentials::SENTINELS[1].1;
    let (a, b) = secret.split_at(20);
    let dump = |text: &str| {
        let hex: Vec<String> = text
            .as_bytes()
            .chunks(2)
            .map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        format!("[x] TRACE {}  {text}\n", hex.join(" "))
    };
    let split = format!(
        "{}{}{}",
        dump(&format!("abcd{}", &a[..12])),
        dump(&format!("{}{}", &a[12..], &b[..8])),
        dump(&format!("{}{}", &b[8..24], "")),
    );
    assert!(split.lines().all(|l| !l.contains(&secret[..14])));
    assert_eq!(
        credentials::leaked(split.as_bytes()),
        ["AWS_SECRET_ACCESS_KEY"]
    );
    let plain = format!("{}{}", dump("GET./2020-01-01/"), dump("extension/event/"));
    assert!(credentials::leaked(plain.as_bytes()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Resource limits

/// A directory every uid can write to, in an `open_sandbox`.
fn shared_dir(sb: &Sandbox, name: &str) -> String {
    let dir = sb.path(name);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    dir.display().to_string()
}

/// Per-event mode, the handler cannot be started for want of processes: the extension (its own
/// user, as root runs ignore `RLIMIT_NPROC`) is idle in `/event/next` with every thread it needs
/// when its process limit is lowered to 1; the INVOKE's handler then fails to spawn with EAGAIN:
/// exit/error `Extension.HandlerFailed` naming the command and the OS error, exit 1, no hang.
#[test]
fn handler_not_started_under_the_process_limit_is_handler_failed() {
    let sb = open_sandbox();
    let api = FakeApi::start();
    let mut ext = sb
        .ext(&api)
        .name(NAME)
        .handler("/bin/true")
        .pre_exec(limited(private_uid(1), vec![]))
        .spawn();
    api.expect_requests(Endpoint::Next, 1, secs(10));
    set_limit(ext.pid, private_uid(1), libc::RLIMIT_NPROC, 1);
    api.push_invoke("no-process", deadline_in(20_000));
    ext.expect_exit(1, secs(20));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    eprintln!("RLIMIT_NPROC = 1 at the event: {msg}");
    assert!(msg.contains("`/bin/true` could not be started"), "{msg}");
    assert!(
        msg.contains("Resource temporarily unavailable (os error 11)"),
        "{msg}"
    );
    assert!(
        msg.contains("out of processes or memory") && !msg.contains("chmod"),
        "the advice fits the cause: {msg}"
    );
    assert_logged(&ext, &["INVOKE no-process failed (not started)"]);
    assert_none(&api, Endpoint::InitError);
}

/// A persistent handler that cannot be spawned at Init: the process limit is lowered while the
/// init command runs (it waits for the test's go), so the handler's spawn right after it fails
/// with EAGAIN: init/error `Extension.HandlerFailed` ("persistent handler … could not be
/// started"), exit 1, no event asked for.
#[test]
fn persistent_handler_not_started_at_init_under_the_process_limit() {
    let sb = open_sandbox();
    let api = FakeApi::start();
    let dir = shared_dir(&sb, "gate");
    let init = format!(
        "touch {dir}/waiting; while [ ! -e {dir}/go ]; do sleep 0.01; done; echo init-done"
    );
    let handler = sb.script(
        "persistent.sh",
        "#!/bin/sh\nwhile IFS= read -r line; do echo ok >&3; done\n",
    );
    let mut ext = sb
        .ext(&api)
        .name(NAME)
        .env("SHELL_EXT_MODE", "persistent")
        .handler(&handler)
        .env("SHELL_EXT_INIT", &init)
        .pre_exec(limited(private_uid(2), vec![]))
        .spawn();
    assert!(
        wait_for(secs(10), || sb.path("gate/waiting").exists()),
        "the init command never ran\n{}",
        ext.output_tail()
    );
    set_limit(ext.pid, private_uid(2), libc::RLIMIT_NPROC, 1);
    fs::write(sb.path("gate/go"), b"").unwrap();
    ext.expect_exit(1, secs(20));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    eprintln!("RLIMIT_NPROC = 1 at Init: {msg}");
    assert!(msg.starts_with("persistent handler `"), "{msg}");
    assert!(
        msg.contains(&format!("`{handler}` could not be started")),
        "{msg}"
    );
    assert!(
        msg.contains("Resource temporarily unavailable (os error 11)"),
        "{msg}"
    );
    assert_none(&api, Endpoint::Next);
    assert_none(&api, Endpoint::ExitError);
}

/// The listener and the proxy when no process or thread can be had (`RLIMIT_NPROC` lowered to 1
/// while the extension idles): a telemetry batch is answered 500 (Lambda sends it again), the
/// request handler cannot be started, so with `reject` the invocation is rejected upstream as
/// `Extension.RequestRejected` naming EAGAIN, and the proxy goes on waiting for the next one for
/// the runtime. Once processes can be had again, the next batch is delivered (200, through the
/// command) and the next invocation reaches the runtime; SHUTDOWN exits 0.
#[test]
fn listener_and_proxy_under_the_process_limit() {
    let sb = open_sandbox();
    let rt = RuntimeApi::start();
    let port = free_port();
    let uid = private_uid(5);
    let seen = shared_dir(&sb, "seen");
    rt.push(Invocation::new("rq-1", "{}"));
    let mut ext = sb
        .ext(&rt)
        .name(NAME)
        .env(
            "SHELL_EXT_TELEMETRY_HANDLER",
            &format!("cat >> {seen}/batches; echo >> {seen}/batches"),
        )
        .env("SHELL_EXT_REQUEST_HANDLER", "/bin/true")
        .env("SHELL_EXT_ON_REQUEST_FAILURE", "reject")
        .env("SHELL_EXT_PROXY_PORT", &port.to_string())
        .pre_exec(limited(uid, vec![]))
        .spawn();
    let target = TelemetryTarget::of(&rt);
    rt.expect_requests(Endpoint::Next, 1, secs(10));
    let mut runtime = RuntimeClient::connect(port);
    set_limit(ext.pid, uid, libc::RLIMIT_NPROC, 1);

    let refused = batch(&[platform("start", "refused")]);
    let (status, _) = target.post(&refused);
    assert_eq!(status, 500, "a batch no thread can read");
    let next = thread::spawn(move || {
        let answer = runtime.next();
        (
            answer.status,
            answer
                .header("Lambda-Runtime-Aws-Request-Id")
                .map(String::from),
        )
    });
    let rejected = rt.expect(Route::Error, 1, secs(10));
    assert_eq!(
        rejected[0].path,
        "/2018-06-01/runtime/invocation/rq-1/error"
    );
    let body: serde_json::Value = serde_json::from_slice(&rejected[0].body).unwrap();
    eprintln!("RLIMIT_NPROC = 1, request handler: {body}");
    assert_eq!(body["errorType"], "Extension.RequestRejected");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("`/bin/true` could not be started"),
        "{message}"
    );
    assert!(
        message.contains("Resource temporarily unavailable (os error 11)"),
        "{message}"
    );

    set_limit(ext.pid, uid, libc::RLIMIT_NPROC, u64::MAX);
    rt.push(Invocation::new("rq-2", "{}"));
    assert_eq!(next.join().unwrap(), (200, Some("rq-2".to_string())));
    let accepted = batch(&[platform("start", "accepted")]);
    target.deliver(&accepted);
    rt.push_shutdown("spindown", deadline_in(3000));
    ext.expect_exit(0, secs(20));
    assert_eq!(
        fs::read_to_string(sb.path("seen/batches")).unwrap(),
        format!("{}\n", String::from_utf8(accepted).unwrap())
    );
    assert_logged(
        &ext,
        &[
            "Extension.RequestRejected: invocation rq-1 rejected",
            "REQUEST rq-2 ok",
        ],
    );
    assert_none(&rt, Endpoint::ExitError);
}

/// A persistent handler that is gone by the time it is started (the init command removes it:
/// the check at Init passed): init/error `Extension.HandlerFailed` with ENOENT, exit 1.
#[test]
fn persistent_handler_missing_at_init_is_handler_failed() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let handler = sb.script(
        "vanishing.sh",
        "#!/bin/sh\nwhile IFS= read -r line; do echo ok >&3; done\n",
    );
    let mut ext = sb
        .ext(&api)
        .env("SHELL_EXT_MODE", "persistent")
        .handler(&handler)
        .env("SHELL_EXT_INIT", &format!("rm {handler}"))
        .spawn();
    ext.expect_exit(1, secs(20));
    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    eprintln!("persistent handler removed before Init's start: {msg}");
    assert!(msg.starts_with("persistent handler `"), "{msg}");
    assert!(
        msg.contains("No such file or directory (os error 2)"),
        "{msg}"
    );
    assert_none(&api, Endpoint::Next);
}

/// The address space of `pid` (`VmSize`, KiB), once two reads 50 ms apart agree.
fn settled_vm_size_kib(pid: u32) -> u64 {
    let read = || -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let mut last = read();
    loop {
        thread::sleep(ms(50));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The handler cannot be started for want of memory: once the extension has handled one event
/// (every thread, arena and buffer it needs exists) and is idle in `/event/next`, its address
/// space limit (`RLIMIT_AS`) is lowered to exactly what it maps; the next INVOKE's spawn then
/// fails with ENOMEM (the C library's `posix_spawn` maps a stack for the child): exit/error
/// `Extension.HandlerFailed` naming the OS error, exit 1, no hang. (A limit so low that the
/// extension's own allocations fail aborts it instead: Rust's allocation failure, no report.
/// That happened when the limit was set before the first event, 2 runs in 25; after a first
/// event it is 25 in 25 as here.)
#[test]
fn handler_not_started_for_want_of_memory_is_handler_failed() {
    let sb = open_sandbox();
    let api = FakeApi::start();
    let uid = private_uid(4);
    api.push_invoke("warm-up", deadline_in(20_000));
    let mut ext = sb
        .ext(&api)
        .name(NAME)
        .handler("/bin/true")
        .pre_exec(limited(uid, vec![]))
        .spawn();
    api.expect_requests(Endpoint::Next, 2, secs(10));
    let mapped = settled_vm_size_kib(ext.pid);
    set_limit(ext.pid, uid, libc::RLIMIT_AS, mapped * 1024);
    api.push_invoke("no-memory", deadline_in(20_000));
    ext.expect_exit(1, secs(20));
    let errs = api.requests_to(Endpoint::ExitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.HandlerFailed");
    eprintln!("RLIMIT_AS = {mapped} KiB: {msg}");
    assert!(msg.contains("`/bin/true` could not be started"), "{msg}");
    assert!(
        msg.contains("Cannot allocate memory (os error 12)"),
        "{msg}"
    );
    assert!(
        msg.contains("out of processes or memory") && !msg.contains("chmod"),
        "the advice fits the cause: {msg}"
    );
    assert_logged(
        &ext,
        &["INVOKE warm-up ok", "INVOKE no-memory failed (not started)"],
    );
}

/// Samples the descriptors and threads of `pid` every millisecond until stopped; returns the
/// peaks.
struct Peaks {
    stop: Arc<AtomicBool>,
    fds: Arc<AtomicUsize>,
    threads: Arc<AtomicUsize>,
    sampler: Option<thread::JoinHandle<()>>,
}

impl Peaks {
    fn watch(pid: u32) -> Peaks {
        let stop = Arc::new(AtomicBool::new(false));
        let fds = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (stop, fds, threads) = (stop.clone(), fds.clone(), threads.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) {
                        fds.fetch_max(entries.count(), Ordering::Relaxed);
                    }
                    if let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) {
                        threads.fetch_max(entries.count(), Ordering::Relaxed);
                    }
                    thread::sleep(ms(1));
                }
            })
        };
        Peaks {
            stop,
            fds,
            threads,
            sampler: Some(sampler),
        }
    }

    /// (peak descriptors, peak threads).
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            sampler.join().unwrap();
        }
        (
            self.fds.load(Ordering::Relaxed),
            self.threads.load(Ordering::Relaxed),
        )
    }
}

/// Lambda's limits, 1,024 descriptors and 1,024 processes (`RLIMIT_NOFILE`, `RLIMIT_NPROC`,
/// the extension as a user of its own so the process limit applies): 300 INVOKEs through a
/// per-event handler, 200 telemetry batches through a per-batch command, 20 invocations through
/// the proxy with a request handler, at the same time; everything is handled and delivered,
/// and the extension stays far below both limits (peaks sampled every millisecond).
#[test]
fn runs_within_lambdas_descriptor_and_process_limits() {
    const EVENTS: usize = 300;
    const BATCHES: usize = 200;
    const INVOCATIONS: usize = 20;
    let sb = open_sandbox();
    let rt = RuntimeApi::start();
    let port = free_port();
    for n in 0..EVENTS {
        rt.push_invoke(&format!("e-{n}"), deadline_in(120_000));
    }
    for n in 0..INVOCATIONS {
        rt.push(Invocation::new(
            &format!("px-{n}"),
            format!("{{\"n\":{n}}}"),
        ));
    }
    let limits = vec![(libc::RLIMIT_NOFILE, 1024), (libc::RLIMIT_NPROC, 1024)];
    let mut ext = sb
        .ext(&rt)
        .handler("/bin/true")
        .env("SHELL_EXT_TELEMETRY_HANDLER", "cat > /dev/null")
        .env("SHELL_EXT_REQUEST_HANDLER", "/bin/true")
        .env("SHELL_EXT_PROXY_PORT", &port.to_string())
        .pre_exec(limited(private_uid(3), limits))
        .spawn();
    let peaks = Peaks::watch(ext.pid);
    let target = TelemetryTarget::of(&rt);
    let poster = thread::spawn(move || {
        for n in 0..BATCHES {
            target.deliver(&batch(&[record("function", &format!("\"line {n}\""))]));
        }
    });
    let mut runtime = RuntimeClient::connect(port);
    for n in 0..INVOCATIONS {
        let id = format!("px-{n}");
        assert_eq!(
            runtime.next().header("Lambda-Runtime-Aws-Request-Id"),
            Some(id.as_str())
        );
        assert_eq!(runtime.respond(&id, b"{}").status, 202);
    }
    poster.join().unwrap();
    assert!(rt.wait_events_consumed(secs(60)), "{}", ext.output_tail());
    rt.push_shutdown("spindown", deadline_in(5000));
    ext.expect_exit(0, secs(30));
    let (fds, threads) = peaks.finish();
    eprintln!(
        "under RLIMIT_NOFILE=1024 and RLIMIT_NPROC=1024: peak {fds} descriptors, {threads} threads"
    );
    assert_none(&rt, Endpoint::ExitError);
    assert_none(&rt, Endpoint::InitError);
    assert_eq!(rt.requests(Route::Response).len(), INVOCATIONS);
    assert_logged(
        &ext,
        &[
            &format!(
                "{} events ({EVENTS} INVOKE, 1 SHUTDOWN), 0 failed",
                EVENTS + 1
            ),
            &format!("telemetry: {BATCHES} batches received, {BATCHES} delivered"),
        ],
    );
    assert!((4..64).contains(&fds), "peak descriptors {fds}");
    assert!((1..64).contains(&threads), "peak threads {threads}");
}
