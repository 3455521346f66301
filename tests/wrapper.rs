//! The Runtime API proxy's exec wrapper, `layer/bin/lambda-shell-extension-proxy`
//! (docs/proxy.md, "The wrapper"): Lambda runs it as `WRAPPER RUNTIME-COMMAND ARGS...` with the
//! function's environment. With the proxy on (a request or response handler set and not blank,
//! or `SHELL_EXT_PROXY=on`) it execs its arguments with
//! `AWS_LAMBDA_RUNTIME_API=127.0.0.1:${SHELL_EXT_PROXY_PORT:-9009}`; otherwise it execs them
//! with the environment unchanged.
//!
//! Each case runs the wrapper from the repository as Lambda does (executed directly, so through
//! its `#!/bin/sh`), and again under `bash` and `dash` when they are installed: `/bin/sh` is bash
//! on Amazon Linux 2023 and dash on Debian. The copy in the layer zip is the same file byte for
//! byte (tests/layer.rs checks that and runs the extracted copy after `make layer`).
//!
//! The wrapped command is `/usr/bin/env -0` to see the environment exactly as the wrapper
//! passed it to `exec`, or a `/bin/sh -c` probe for the arguments, the exit status and the pid.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WRAPPER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/layer/bin/lambda-shell-extension-proxy"
);
/// The real Runtime API address in the tests' environment: what the runtime gets with the
/// proxy off.
const REAL_API: &str = "127.0.0.1:9001";
const ENV: &str = "/usr/bin/env";

/// How the wrapper is started: `None` executes it (its `#!/bin/sh`), `Some(shell)` runs
/// `shell WRAPPER ...`.
fn shells() -> Vec<Option<PathBuf>> {
    let mut shells = vec![None];
    for shell in ["bash", "dash"] {
        if let Some(path) = find_program(shell) {
            shells.push(Some(path));
        }
    }
    shells
}

fn find_program(program: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn describe(shell: &Option<PathBuf>) -> String {
    match shell {
        None => "the wrapper executed directly (#!/bin/sh)".into(),
        Some(s) => format!("the wrapper under {}", s.display()),
    }
}

/// The environment every run starts from (and nothing else): a function's usual variables.
/// `PWD` is the run's working directory and `SHLVL` is set, so that the shell running the
/// wrapper has nothing of its own to add (dash adds a missing `PWD`, bash a missing `SHLVL`);
/// on Lambda the runtime's start-up script has set both already.
fn base_env(dir: &Path) -> BTreeMap<String, String> {
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("PWD", dir.to_str().unwrap()),
        ("SHLVL", "1"),
        ("LANG", "C.UTF-8"),
        ("AWS_LAMBDA_RUNTIME_API", REAL_API),
        ("AWS_LAMBDA_FUNCTION_NAME", "fn"),
        ("_HANDLER", "app.handler"),
        // Names a careless wrapper might use for its own variables: they must reach the
        // command untouched.
        ("proxy", "mine"),
        ("port", "mine too"),
        ("v", "x"),
        ("IFS_NOT", " \t"),
        ("MULTILINE", "one\ntwo\n"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Run the wrapper with `env` (`None` removes a variable from the base environment) and
/// `args`, in a fresh directory.
fn run(shell: &Option<PathBuf>, env: &[(&str, Option<&str>)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), shell, env, args)
}

fn run_in(
    dir: &Path,
    shell: &Option<PathBuf>,
    env: &[(&str, Option<&str>)],
    args: &[&str],
) -> Output {
    let mut cmd = match shell {
        None => Command::new(WRAPPER),
        Some(s) => {
            let mut cmd = Command::new(s);
            cmd.arg(WRAPPER);
            cmd
        }
    };
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .envs(merged_env(dir, env))
        .stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("run {}: {e}", describe(shell)))
}

fn merged_env(dir: &Path, env: &[(&str, Option<&str>)]) -> BTreeMap<String, String> {
    let mut all = base_env(dir);
    for (k, v) in env {
        match v {
            Some(v) => all.insert(k.to_string(), v.to_string()),
            None => all.remove(*k),
        };
    }
    all
}

/// Parse `env -0` output.
fn parse_env(out: &[u8]) -> BTreeMap<String, String> {
    out.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8(entry.to_vec()).unwrap();
            let (k, v) = entry.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Run `WRAPPER /usr/bin/env -0` and return the environment the command got, and the one the
/// wrapper got.
fn env_seen(
    shell: &Option<PathBuf>,
    env: &[(&str, Option<&str>)],
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), shell, env, &[ENV, "-0"]);
    assert!(
        out.status.success(),
        "{} with {env:?}: {:?}\n{}",
        describe(shell),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "{} with {env:?}: stderr",
        describe(shell)
    );
    (parse_env(&out.stdout), merged_env(dir.path(), env))
}

/// With `env`, the command gets the base environment plus `env`, and
/// `AWS_LAMBDA_RUNTIME_API=<runtime_api>` (`None`: whatever `env` and the base say, unchanged).
fn expect_env(env: &[(&str, Option<&str>)], runtime_api: Option<&str>, why: &str) {
    for shell in shells() {
        let (seen, mut want) = env_seen(&shell, env);
        if let Some(api) = runtime_api {
            want.insert("AWS_LAMBDA_RUNTIME_API".into(), api.into());
        }
        assert_eq!(
            seen,
            want,
            "{why}: {} with {env:?}: the command's environment",
            describe(&shell)
        );
    }
}

fn proxied(port: &str) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn the_wrapper_is_an_executable_sh_script() {
    let mode = fs::metadata(WRAPPER).unwrap().permissions().mode() & 0o7777;
    assert_eq!(format!("{mode:o}"), "755", "{WRAPPER}'s mode");
    let text = fs::read(WRAPPER).unwrap();
    assert!(text.starts_with(b"#!/bin/sh\n"), "{WRAPPER}: #!/bin/sh");
    assert!(!text.contains(&b'\r'), "{WRAPPER}: CRLF line endings");
    for shell in shells().into_iter().flatten() {
        let out = Command::new(&shell)
            .arg("-n")
            .arg(WRAPPER)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} -n {WRAPPER}: {}",
            shell.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Proxy on: AWS_LAMBDA_RUNTIME_API points at the proxy, everything else is unchanged.

#[test]
fn a_request_handler_turns_the_proxy_on() {
    let port = proxied("9009");
    for handler in ["/var/task/audit.sh", "cat >/dev/null", " x "] {
        expect_env(
            &[("SHELL_EXT_REQUEST_HANDLER", Some(handler))],
            Some(&port),
            "request handler",
        );
    }
}

#[test]
fn a_response_handler_turns_the_proxy_on() {
    expect_env(
        &[("SHELL_EXT_RESPONSE_HANDLER", Some("/opt/scripts/audit.sh"))],
        Some(&proxied("9009")),
        "response handler",
    );
    // One blank handler does not hide the other.
    expect_env(
        &[
            ("SHELL_EXT_REQUEST_HANDLER", Some("  ")),
            ("SHELL_EXT_RESPONSE_HANDLER", Some("/opt/scripts/audit.sh")),
        ],
        Some(&proxied("9009")),
        "blank request handler, response handler set",
    );
    expect_env(
        &[
            ("SHELL_EXT_REQUEST_HANDLER", Some("/a.sh")),
            ("SHELL_EXT_RESPONSE_HANDLER", Some("/b.sh")),
            ("SHELL_EXT_PROXY", Some("on")),
        ],
        Some(&proxied("9009")),
        "everything on",
    );
}

#[test]
fn shell_ext_proxy_on_in_any_case_and_with_surrounding_spaces_turns_the_proxy_on() {
    for value in ["on", "ON", "On", "oN", " on ", "\ton\n", "  ON\t "] {
        expect_env(
            &[("SHELL_EXT_PROXY", Some(value))],
            Some(&proxied("9009")),
            &format!("SHELL_EXT_PROXY={value:?}"),
        );
    }
}

#[test]
fn the_port_comes_from_shell_ext_proxy_port() {
    for (port, want) in [
        ("9100", "9100"),
        ("1", "1"),
        ("65535", "65535"),
        (" 9100 ", "9100"),
        ("\t9100\n", "9100"),
        // Blank: the extension's default.
        ("", "9009"),
        ("   ", "9009"),
    ] {
        for trigger in [
            ("SHELL_EXT_PROXY", "on"),
            ("SHELL_EXT_REQUEST_HANDLER", "/a.sh"),
            ("SHELL_EXT_RESPONSE_HANDLER", "/b.sh"),
        ] {
            expect_env(
                &[
                    (trigger.0, Some(trigger.1)),
                    ("SHELL_EXT_PROXY_PORT", Some(port)),
                ],
                Some(&proxied(want)),
                &format!("SHELL_EXT_PROXY_PORT={port:?}"),
            );
        }
    }
}

#[test]
fn the_proxy_address_is_exported_even_without_a_runtime_api_variable() {
    expect_env(
        &[
            ("AWS_LAMBDA_RUNTIME_API", None),
            ("SHELL_EXT_PROXY", Some("on")),
        ],
        Some(&proxied("9009")),
        "no AWS_LAMBDA_RUNTIME_API before",
    );
}

// ---------------------------------------------------------------------------------------------
// Proxy off: the environment is exactly what the wrapper got.

#[test]
fn with_no_trigger_the_environment_is_unchanged() {
    expect_env(&[], None, "nothing set");
    expect_env(
        &[("AWS_LAMBDA_RUNTIME_API", None)],
        None,
        "nothing set, no AWS_LAMBDA_RUNTIME_API",
    );
    // The extension's other settings do not turn the proxy on.
    expect_env(
        &[
            ("SHELL_EXT_HANDLER", Some("/var/task/handler.sh")),
            ("SHELL_EXT_TELEMETRY_HANDLER", Some("/opt/scripts/t.sh")),
            ("SHELL_EXT_ON_REQUEST_FAILURE", Some("reject")),
        ],
        None,
        "other SHELL_EXT_ variables",
    );
}

#[test]
fn shell_ext_proxy_port_alone_turns_nothing_on() {
    for port in ["9100", "9009", " 9100 ", ""] {
        expect_env(
            &[("SHELL_EXT_PROXY_PORT", Some(port))],
            None,
            &format!("SHELL_EXT_PROXY_PORT={port:?} alone"),
        );
    }
}

#[test]
fn blank_handlers_turn_nothing_on() {
    for value in ["", " ", "\t", "\n", " \t\r\n "] {
        for handler in ["SHELL_EXT_REQUEST_HANDLER", "SHELL_EXT_RESPONSE_HANDLER"] {
            expect_env(
                &[(handler, Some(value))],
                None,
                &format!("{handler}={value:?}"),
            );
        }
        expect_env(
            &[
                ("SHELL_EXT_REQUEST_HANDLER", Some(value)),
                ("SHELL_EXT_RESPONSE_HANDLER", Some(value)),
                ("SHELL_EXT_PROXY_PORT", Some("9100")),
            ],
            None,
            &format!("both handlers {value:?}"),
        );
    }
}

#[test]
fn shell_ext_proxy_other_than_on_turns_nothing_on() {
    for value in [
        "off", "OFF", " off ", "", "  ", "o n", "onn", "on,", "yes", "true", "1", "enabled",
    ] {
        expect_env(
            &[("SHELL_EXT_PROXY", Some(value))],
            None,
            &format!("SHELL_EXT_PROXY={value:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The exec itself: arguments, exit status, pid, failures.

/// `printf '%s\0'` of every argument the probe got: `$0` first, then each of `$@`.
const ARGS_PROBE: &str = r#"printf '%s\0' "$0" "$@""#;

#[test]
fn arguments_pass_through_intact() {
    let args = [
        "with space",
        "",
        "  leading and trailing  ",
        "*",
        "$HOME",
        "`id`",
        "a\nb",
        "tab\there",
        "'single' \"double\"",
        "-c",
        "--",
        "\\",
        "é ☃",
    ];
    for shell in shells() {
        for env in [
            vec![],
            vec![("SHELL_EXT_PROXY", Some("on"))],
            vec![("SHELL_EXT_REQUEST_HANDLER", Some("/a.sh"))],
        ] {
            let mut argv = vec!["/bin/sh", "-c", ARGS_PROBE, "probe $0"];
            argv.extend(args);
            let out = run(&shell, &env, &argv);
            assert!(
                out.status.success(),
                "{}: {:?}",
                describe(&shell),
                out.status
            );
            let got: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
            let mut want: Vec<&[u8]> = vec![b"probe $0"];
            want.extend(args.iter().map(|a| a.as_bytes()));
            want.push(b""); // after the last NUL
            assert_eq!(
                got,
                want,
                "{} with {env:?}: the arguments the command got",
                describe(&shell)
            );
        }
    }
}

#[test]
fn a_command_path_with_spaces_is_executed() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("my runtime");
    fs::create_dir(&sub).unwrap();
    let program = sub.join("boot strap");
    fs::write(&program, "#!/bin/sh\nprintf 'started %s' \"$1\"\n").unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    for shell in shells() {
        let out = run_in(
            dir.path(),
            &shell,
            &[("SHELL_EXT_PROXY", Some("on"))],
            &[program.to_str().unwrap(), "x y"],
        );
        assert!(
            out.status.success(),
            "{}: {:?}",
            describe(&shell),
            out.status
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "started x y");
    }
}

#[test]
fn the_commands_exit_status_is_kept() {
    for shell in shells() {
        for env in [vec![], vec![("SHELL_EXT_PROXY", Some("on"))]] {
            for code in [0, 1, 3, 7, 42, 126, 255] {
                let out = run(&shell, &env, &["/bin/sh", "-c", &format!("exit {code}")]);
                assert_eq!(
                    out.status.code(),
                    Some(code),
                    "{} with {env:?}: exit {code}",
                    describe(&shell)
                );
            }
            // Killed by a signal: the wrapper's status is that signal, since the command
            // replaced it (no shell in between to turn it into 128 + N).
            let out = run(&shell, &env, &["/bin/sh", "-c", "kill -TERM $$"]);
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGTERM),
                "{} with {env:?}: killed by SIGTERM: {:?}",
                describe(&shell),
                out.status
            );
        }
    }
}

/// The wrapper execs: the command has the wrapper's pid, so Lambda's signals reach the runtime.
#[test]
fn the_command_replaces_the_wrapper() {
    for shell in shells() {
        for env in [vec![], vec![("SHELL_EXT_RESPONSE_HANDLER", Some("/a.sh"))]] {
            let dir = tempfile::tempdir().unwrap();
            let mut cmd = match &shell {
                None => Command::new(WRAPPER),
                Some(s) => {
                    let mut cmd = Command::new(s);
                    cmd.arg(WRAPPER);
                    cmd
                }
            };
            let child = cmd
                .args(["/bin/sh", "-c", "echo $$"])
                .current_dir(dir.path())
                .env_clear()
                .envs(merged_env(dir.path(), &env))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                pid.to_string(),
                "{} with {env:?}: the command's pid is the wrapper's",
                describe(&shell)
            );
        }
    }
}

#[test]
fn stdin_reaches_the_command() {
    for shell in shells() {
        let mut cmd = match &shell {
            None => Command::new(WRAPPER),
            Some(s) => {
                let mut cmd = Command::new(s);
                cmd.arg(WRAPPER);
                cmd
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let mut child = cmd
            .arg("/bin/cat")
            .current_dir(dir.path())
            .env_clear()
            .envs(merged_env(dir.path(), &[("SHELL_EXT_PROXY", Some("on"))]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"line 1\nline 2 without newline").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "line 1\nline 2 without newline",
            "{}",
            describe(&shell)
        );
    }
}

#[test]
fn no_arguments_is_exit_2_with_a_message() {
    for shell in shells() {
        for env in [vec![], vec![("SHELL_EXT_PROXY", Some("on"))]] {
            let out = run(&shell, &env, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{} with {env:?}: {stderr}",
                describe(&shell)
            );
            assert_eq!(out.stdout, b"", "{}: stdout", describe(&shell));
            assert!(
                stderr.starts_with("lambda-shell-extension-proxy: no command to run")
                    && stderr.contains("AWS_LAMBDA_EXEC_WRAPPER")
                    && stderr.ends_with('\n')
                    && stderr.lines().count() == 1,
                "{} with {env:?}: stderr {stderr:?} should be one line saying there is no \
                 command to run and how the wrapper is used",
                describe(&shell)
            );
        }
    }
}

/// A command that does not exist fails as the shell's `exec` fails: 127 and a message naming it.
#[test]
fn a_missing_command_is_exit_127() {
    for shell in shells() {
        let out = run(
            &shell,
            &[("SHELL_EXT_PROXY", Some("on"))],
            &["/nonexistent/bootstrap"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(127),
            "{}: {stderr}",
            describe(&shell)
        );
        assert!(
            stderr.contains("/nonexistent/bootstrap"),
            "{}: stderr {stderr:?} should name the command",
            describe(&shell)
        );
    }
}
