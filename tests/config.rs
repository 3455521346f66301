//! Invalid configuration: still registers (default events), init/error
//! Extension.ConfigInvalid naming the variable (and accepted values), exit 1, never next.

mod common;

use common::*;

fn bad_config(var: &str, value: Option<&str>, must_mention: &[&str]) {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let ran = sb.p("handler-ran");
    api.push_invoke("never", deadline_in(5000));
    let mut launcher = sb.ext(&api).handler(&format!("touch {ran}"));
    launcher = match value {
        Some(v) => launcher.env(var, v),
        None => launcher.env_remove(var),
    };
    let mut ext = launcher.spawn();
    ext.expect_exit(1, secs(10));

    let regs = api.requests_to(Endpoint::Register);
    assert_eq!(regs.len(), 1, "{}", api.describe());
    let mut events: Vec<String> = regs[0].json()["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    events.sort();
    assert_eq!(events, vec!["INVOKE", "SHUTDOWN"], "default events");

    let errs = api.requests_to(Endpoint::InitError);
    assert_eq!(errs.len(), 1, "{}", api.describe());
    let msg = check_error_request(&api, &errs[0], "Extension.ConfigInvalid");
    assert!(msg.contains(var), "errorMessage does not name {var}: {msg}");
    for word in must_mention {
        assert!(msg.contains(word), "errorMessage lacks {word:?}: {msg}");
    }
    assert_none(&api, Endpoint::Next);
    assert_none(&api, Endpoint::ExitError);
    assert!(!sb.path("handler-ran").exists(), "handler ran");
}

#[test]
fn config_missing_handler() {
    bad_config("SHELL_EXT_HANDLER", None, &[]);
}

#[test]
fn config_unknown_event() {
    bad_config(
        "SHELL_EXT_EVENTS",
        Some("INVOKE,BOGUS"),
        &["INVOKE", "SHUTDOWN"],
    );
}

#[test]
fn config_bad_number() {
    bad_config("SHELL_EXT_TIMEOUT_MARGIN_MS", Some("12ms"), &[]);
}

#[test]
fn config_bad_mode() {
    bad_config("SHELL_EXT_ON_ERROR", Some("retry"), &["exit", "continue"]);
}

/// Flags are the environment variables' twins: with arguments, clap reads them (and the
/// environment fills in the rest).
#[test]
fn flags_configure_like_the_environment() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let seen = sb.p("seen");
    api.push_shutdown("spindown", deadline_in(2000));
    let mut ext = sb
        .ext(&api)
        .env_remove("SHELL_EXT_HANDLER")
        .args(&[
            "--handler",
            &format!("/bin/sh -c 'echo $LAMBDA_EVENT_TYPE >> {seen}'"),
        ])
        .env("SHELL_EXT_EVENTS", "SHUTDOWN")
        .spawn();
    ext.expect_exit(0, secs(10));
    let regs = api.requests_to(Endpoint::Register);
    assert_eq!(regs[0].json()["events"], serde_json::json!(["SHUTDOWN"]));
    assert_eq!(
        std::fs::read_to_string(sb.path("seen")).unwrap(),
        "SHUTDOWN\n"
    );
}

/// A proxy configured for the function (`HTTP_PROXY` and friends, read by ureq by default)
/// must not be used for the Extensions API on loopback.
#[test]
fn function_proxy_settings_are_ignored() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let seen = sb.p("seen");
    api.push_invoke("r-proxy", deadline_in(5000));
    api.push_shutdown("spindown", deadline_in(2000));
    let mut launcher = sb.ext(&api).handler(&format!("/bin/sh -c 'cat >> {seen}'"));
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        launcher = launcher.env(var, "http://127.0.0.1:9");
    }
    let mut ext = launcher.spawn();
    ext.expect_exit(0, secs(10));
    assert_eq!(api.count(Endpoint::Register), 1, "{}", api.describe());
    assert_eq!(api.count(Endpoint::Next), 2, "{}", api.describe());
    let stdin = std::fs::read_to_string(sb.path("seen")).unwrap();
    assert!(
        stdin.contains("r-proxy") && stdin.contains("SHUTDOWN"),
        "{stdin}"
    );
}
