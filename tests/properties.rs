//! Property tests (proptest) of every parser of outside input (issue 12): next-event bodies,
//! command lines, the configuration, the persistent-mode framing, and the two HTTP servers (the
//! telemetry listener, driven as a library over loopback, and the Runtime API proxy, driven in
//! the real binary with the stand-in Runtime API).
//!
//! Case counts are set per test (`config(n)`): the pure parsers get hundreds to thousands of
//! cases, the socket tests a few dozen, the proxy (a real extension process) 12. Failures are not
//! persisted to files: a failing case is printed with its minimal input (and the seed).
//! The fuzz targets in `fuzz/` check the same properties for much longer (docs/fuzzing.md).

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A proptest configuration with `cases` cases and no failure files.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Any JSON value: nested arrays and objects of strings (any Unicode), numbers, bools, nulls.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "[\"\\\\\n\r\t\u{0}\u{7f}\u{2028}é😀 ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Next-event bodies

mod event {
    use super::*;
    use lambda_shell_extension::api::{Event, NextEventResponse};
    use serde_json::{json, Value};

    /// `NextEventResponse::from_body` (the fast path, falling back to the derive) against the
    /// derived `Deserialize` alone: the same event, or an error with the same message; the body is
    /// kept byte for byte. Never a panic.
    fn agrees_with_the_derive(body: &[u8]) -> Result<Option<Event>, TestCaseError> {
        let derived = serde_json::from_slice::<Event>(body).map_err(|e| e.to_string());
        match (NextEventResponse::from_body(body.to_vec()), derived) {
            (Ok(response), Ok(event)) => {
                prop_assert_eq!(&response.event, &event);
                prop_assert_eq!(&response.body[..], body);
                Ok(Some(event))
            }
            (Err(error), Err(message)) => {
                prop_assert_eq!(error.to_string(), message);
                Ok(None)
            }
            (parsed, derived) => Err(TestCaseError::fail(format!(
                "from_body and the derive disagree on {:?}: {parsed:?} vs {derived:?}",
                String::from_utf8_lossy(body)
            ))),
        }
    }

    /// A field of an event object: a right value, a wrong type, or absent.
    fn field(right: Value) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            4 => Just(Some(right)),
            1 => Just(None),
            1 => json_value().prop_map(Some),
        ]
    }

    /// Event-shaped objects: the known fields (right, wrong or missing, in any order), unknown
    /// fields, a tag that may be either event, another string, or not a string.
    fn event_object() -> impl Strategy<Value = Vec<(String, Value)>> {
        let tag = prop_oneof![
            Just(json!("INVOKE")),
            Just(json!("SHUTDOWN")),
            Just(json!("RESTORE")),
            Just(json!("invoke")),
            json_value(),
        ];
        (
            prop::option::weighted(0.9, tag),
            field(json!(1_700_000_000_000u64)),
            field(json!("8476a536-e9f4-11e8-9739-2dfe598c3fcd")),
            field(json!("arn:aws:lambda:us-east-1:123456789012:function:f")),
            field(json!({"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988;Sampled=1"})),
            field(json!("spindown")),
            prop::collection::vec(("[a-zA-Z]{1,12}", json_value()), 0..4),
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(
                |(tag, deadline, id, arn, tracing, reason, extra, at, tag_first)| {
                    let mut fields: Vec<(String, Value)> = [
                        ("deadlineMs", deadline),
                        ("requestId", id),
                        ("invokedFunctionArn", arn),
                        ("tracing", tracing),
                        ("shutdownReason", reason),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                    .chain(extra)
                    .collect();
                    if let Some(tag) = tag {
                        let at = if tag_first {
                            0
                        } else {
                            at.index(fields.len() + 1)
                        };
                        fields.insert(at, ("eventType".to_string(), tag));
                    }
                    fields
                },
            )
    }

    /// An object written key by key (so key order and repeated keys are kept).
    fn write_object(fields: &[(String, Value)]) -> Vec<u8> {
        let members: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
            .collect();
        format!("{{{}}}", members.join(",")).into_bytes()
    }

    /// A valid event as Lambda sends it (tag first), with any request id and reason strings.
    fn valid_event() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (any::<u64>(), ".{0,40}", ".{0,40}", ".{0,60}").prop_map(
                |(deadline, id, arn, trace)| {
                    serde_json::to_vec(&json!({
                        "eventType": "INVOKE", "deadlineMs": deadline, "requestId": id,
                        "invokedFunctionArn": arn,
                        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
                    }))
                    .unwrap()
                }
            ),
            (any::<u64>(), ".{0,20}").prop_map(|(deadline, reason)| {
                serde_json::to_vec(&json!({
                    "eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline,
                }))
                .unwrap()
            }),
        ]
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn any_json_value_is_an_event_or_the_derives_error(value in json_value()) {
            agrees_with_the_derive(&serde_json::to_vec(&value).unwrap())?;
        }

        #[test]
        fn event_shaped_objects_decide_as_the_derive_does(fields in event_object()) {
            agrees_with_the_derive(&write_object(&fields))?;
        }

        #[test]
        fn random_bytes_are_an_event_or_the_derives_error(
            bytes in prop::collection::vec(any::<u8>(), 0..256)
        ) {
            agrees_with_the_derive(&bytes)?;
        }

        /// A valid event with one byte replaced anywhere (invalid UTF-8 and broken syntax
        /// included): the same decision as the derive.
        #[test]
        fn a_valid_event_with_one_byte_changed_decides_as_the_derive_does(
            body in valid_event(), at in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            let mut body = body;
            let at = at.index(body.len());
            body[at] = byte;
            agrees_with_the_derive(&body)?;
        }

        /// Valid INVOKE and SHUTDOWN events parse, to the fields they carry.
        #[test]
        fn valid_events_parse_to_their_fields(body in valid_event()) {
            let value: Value = serde_json::from_slice(&body).unwrap();
            let event = agrees_with_the_derive(&body)?;
            let deadline = value["deadlineMs"].as_u64().unwrap();
            match event {
                Some(Event::Invoke(invoke)) => {
                    prop_assert_eq!(invoke.deadline_ms, deadline);
                    prop_assert_eq!(value["requestId"].as_str(), Some(invoke.request_id.as_str()));
                    let tracing = invoke.tracing.unwrap();
                    prop_assert_eq!(value["tracing"]["value"].as_str(), Some(tracing.value.as_str()));
                }
                Some(Event::Shutdown(shutdown)) => {
                    prop_assert_eq!(shutdown.deadline_ms, deadline);
                    prop_assert_eq!(
                        value["shutdownReason"].as_str(),
                        Some(shutdown.shutdown_reason.as_str())
                    );
                }
                other => prop_assert!(false, "{:?} did not parse: {:?}", value, other),
            }
        }

        /// Every strict prefix of a valid event is an error (the derive's), never an event.
        #[test]
        fn truncated_valid_events_are_errors(body in valid_event(), cut in any::<prop::sample::Index>()) {
            let cut = cut.index(body.len());
            let event = agrees_with_the_derive(&body[..cut])?;
            prop_assert!(event.is_none(), "{:?}", String::from_utf8_lossy(&body[..cut]));
        }
    }

    proptest! {
        #![proptest_config(config(24))]

        /// Huge strings (up to 2 MiB) in known and unknown fields.
        #[test]
        fn huge_strings_are_kept_whole(
            size in 0usize..2 * 1024 * 1024, fill in "[a-zé😀\"\\\\]", unknown in any::<bool>()
        ) {
            let huge: String = fill.repeat(size / fill.len().max(1));
            let value = if unknown {
                json!({"eventType": "INVOKE", "deadlineMs": 1, "requestId": "r", "huge": huge})
            } else {
                json!({"eventType": "INVOKE", "deadlineMs": 1, "requestId": huge})
            };
            let body = serde_json::to_vec(&value).unwrap();
            match agrees_with_the_derive(&body)? {
                Some(Event::Invoke(invoke)) if unknown => prop_assert_eq!(invoke.request_id, "r"),
                Some(Event::Invoke(invoke)) => prop_assert!(invoke.request_id == huge),
                other => prop_assert!(false, "{:?}", other.map(|e| e.lifecycle_event())),
            }
        }
    }

    /// Found by the fuzz target `event`: the fast path skipped an unknown field's string without
    /// checking its UTF-8, so it accepted a body the derive refuses.
    #[test]
    fn invalid_utf8_in_a_skipped_field_is_the_derives_error() {
        let mut body =
            br#"{"eventType":"INVOKE","deadlineMs":1,"requestId":"r","x":"ab"}"#.to_vec();
        let at = body.len() - 3;
        body[at] = 0xff;
        assert!(agrees_with_the_derive(&body).unwrap().is_none());
        let mut body = br#"{"eventType":"INVOKE","deadlineMs":1,"requestId":"r","tracing":{"type":"t","u":"ab"}}"#.to_vec();
        let at = body.len() - 4;
        body[at] = 0xc3;
        assert!(agrees_with_the_derive(&body).unwrap().is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Command lines

mod command_line {
    use super::*;
    use lambda_shell_extension::command::CommandLine;
    use std::process::Command;

    /// What makes a line need `/bin/sh -c` (src/command/line.rs, README "handler").
    const METACHARACTERS: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
        '{', '}', '!', '\n',
    ];
    const SHELL_WORDS: &[&str] = &[
        ".", ":", "alias", "break", "case", "cd", "continue", "eval", "exec", "exit", "export",
        "for", "if", "local", "read", "readonly", "return", "set", "shift", "source", "times",
        "trap", "ulimit", "umask", "unset", "until", "wait", "while",
    ];

    /// A word no POSIX shell treats specially (outside the first position, `=` is plain too).
    const PLAIN_WORD: &str = "[A-Za-z0-9/._:,@%+^=-]{1,12}";

    /// Plain words separated by runs of spaces and tabs, with blanks around.
    fn plain_line() -> impl Strategy<Value = (String, Vec<String>)> {
        (
            "[ \t]{0,3}",
            prop::collection::vec((PLAIN_WORD, "[ \t]{1,3}"), 1..6),
            "[ \t]{0,3}",
        )
            .prop_map(|(lead, words, trail)| {
                let mut line = lead;
                for (i, (word, gap)) in words.iter().enumerate() {
                    line.push_str(word);
                    if i + 1 < words.len() {
                        line.push_str(gap);
                    }
                }
                line.push_str(&trail);
                (line, words.into_iter().map(|(w, _)| w).collect())
            })
    }

    /// Whether the first word makes a plain line a shell one anyway.
    fn first_word_needs_shell(word: &str) -> bool {
        word.contains('=') || SHELL_WORDS.contains(&word)
    }

    /// How `/bin/sh` splits `line` (which holds no metacharacter) into words.
    fn sh_words(line: &str) -> Vec<String> {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {line}"))
            .output()
            .expect("/bin/sh");
        assert!(out.status.success(), "{out:?}");
        let mut words: Vec<String> = out
            .stdout
            .split(|&b| b == 0)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect();
        words.pop(); // after the last NUL
        words
    }

    proptest! {
        #![proptest_config(config(3000))]

        /// Plain words are never given to the shell: exec'd directly, split exactly on the
        /// spaces and tabs (unless the first word is an assignment or a shell word).
        #[test]
        fn plain_words_are_exec_directly_split_on_blanks((line, words) in plain_line()) {
            let parsed = CommandLine::parse(&line).unwrap();
            prop_assert_eq!(parsed.line(), line.trim());
            if first_word_needs_shell(&words[0]) {
                prop_assert!(matches!(parsed, CommandLine::Shell { .. }), "{:?}", parsed);
            } else {
                prop_assert_eq!(
                    parsed,
                    CommandLine::Direct { line: line.trim().to_string(), argv: words }
                );
            }
        }

        /// A shell word first (`exit 3`, `cd /tmp`, `. ./env`...) or an assignment first
        /// (`FOO=1 cmd`): the shell, even with nothing else special.
        #[test]
        fn a_shell_word_or_assignment_first_goes_to_the_shell(
            first in prop_oneof![
                prop::sample::select(SHELL_WORDS).prop_map(str::to_string),
                "[A-Za-z_][A-Za-z0-9_]{0,6}=[A-Za-z0-9/.]{0,6}",
            ],
            (rest, _) in plain_line(),
        ) {
            let line = format!("{first} {rest}");
            let parsed = CommandLine::parse(&line).unwrap();
            prop_assert_eq!(parsed, CommandLine::Shell { line: line.trim().to_string() });
        }

        /// Anything a shell would interpret, anywhere in the line (quotes, `$`, backquotes,
        /// pipes, `;`, `&`, redirections, parentheses, globs, `~`, `#`, braces, `!`, a newline,
        /// a backslash): the whole line goes to `/bin/sh -c` as written (only trimmed).
        #[test]
        fn anything_a_shell_interprets_goes_to_the_shell(
            (line, _) in plain_line(),
            special in prop::sample::select(METACHARACTERS),
            at in any::<prop::sample::Index>(),
            around in "[ \t]{0,2}",
        ) {
            let chars: Vec<char> = line.trim().chars().collect();
            let at = at.index(chars.len() + 1);
            let mut with: String = chars[..at].iter().collect();
            with.push_str(&around);
            with.push(special);
            with.push_str(&around);
            with.extend(&chars[at..]);
            let parsed = CommandLine::parse(&with);
            let trimmed = with.trim();
            if trimmed.is_empty() {
                prop_assert_eq!(parsed, None);
            } else if special == '\n' && !trimmed.contains('\n') {
                // A line break at either end is trimmed away: what is left is plain.
                prop_assert!(parsed.is_some());
            } else {
                prop_assert_eq!(parsed, Some(CommandLine::Shell { line: trimmed.to_string() }));
            }
        }

        /// Any string: no panic; blank is `None`; otherwise the line kept is the input trimmed,
        /// and a direct command's argv is the line's whitespace-separated words.
        #[test]
        fn any_string_parses_without_panic(line in ".{0,40}") {
            match CommandLine::parse(&line) {
                None => prop_assert!(line.trim().is_empty()),
                Some(parsed) => {
                    prop_assert_eq!(parsed.line(), line.trim());
                    if let CommandLine::Direct { argv, .. } = &parsed {
                        prop_assert!(!line.trim().contains(METACHARACTERS), "{:?}", line);
                        let other_space = |c: char| c.is_whitespace() && c != ' ' && c != '\t';
                        prop_assert!(!line.trim().contains(other_space), "{:?}", line);
                        let words: Vec<&str> = line.split_whitespace().collect();
                        prop_assert_eq!(argv, &words);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(config(48))]

        /// A direct command's argv is exactly the words `/bin/sh` would have made of the line.
        #[test]
        fn direct_argv_is_what_the_shell_would_split((line, _) in plain_line()) {
            if let Some(CommandLine::Direct { argv, .. }) = CommandLine::parse(&line) {
                prop_assert_eq!(argv, sh_words(&line));
            }
        }
    }

    /// Whitespace other than blanks and newline (`\r`, vertical tab, form feed, NBSP, the
    /// Unicode spaces) separates words for `str::split_whitespace`, not for `/bin/sh`: the line
    /// `a<VT>b` is one word for the shell, two arguments split directly. Such a line goes to the
    /// shell (found by this suite: it used to be exec'd directly, split on them).
    #[test]
    fn other_whitespace_inside_a_line_goes_to_the_shell() {
        for separator in [
            "\r", "\u{b}", "\u{c}", "\u{a0}", "\u{3000}", "\u{2009}", "\u{85}",
        ] {
            let line = format!("printf x{separator}y");
            assert_eq!(
                CommandLine::parse(&line),
                Some(CommandLine::Shell { line: line.clone() }),
                "separator {separator:?}"
            );
            assert_eq!(
                sh_words(&line),
                ["printf".to_string(), format!("x{separator}y")]
            );
        }
        // At either end they are trimmed, as blanks are (a CRLF line end included).
        assert!(matches!(
            CommandLine::parse("\u{a0}/bin/cat\r\n"),
            Some(CommandLine::Direct { argv, .. }) if argv == ["/bin/cat"]
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

mod configuration {
    use super::*;
    use lambda_shell_extension::config::{self, Config, ConfigErrors, EventSet, Options};

    /// The variables, in the order of [`Options`]'s string fields as set by [`options`].
    const VARIABLES: [&str; 19] = [
        config::HANDLER_ENV,
        config::MODE_ENV,
        config::INIT_ENV,
        config::EVENTS_ENV,
        config::ON_ERROR_ENV,
        config::TIMEOUT_MARGIN_ENV,
        config::TELEMETRY_HANDLER_ENV,
        config::TELEMETRY_MODE_ENV,
        config::TELEMETRY_TYPES_ENV,
        config::TELEMETRY_SCHEMA_ENV,
        config::TELEMETRY_FLUSH_ENV,
        config::TELEMETRY_MAX_ITEMS_ENV,
        config::TELEMETRY_MAX_BYTES_ENV,
        config::TELEMETRY_TIMEOUT_MS_ENV,
        config::REQUEST_HANDLER_ENV,
        config::RESPONSE_HANDLER_ENV,
        config::ON_REQUEST_FAILURE_ENV,
        config::PROXY_ENV,
        config::PROXY_PORT_ENV,
    ];

    /// Options with the values of `VARIABLES`, in that order.
    fn options(values: &[Option<String>; 19]) -> Options {
        let v = |i: usize| values[i].clone();
        Options {
            handler: v(0),
            mode: v(1),
            init: v(2),
            events: v(3),
            on_error: v(4),
            timeout_margin_ms: v(5),
            telemetry: v(6),
            telemetry_mode: v(7),
            telemetry_types: v(8),
            telemetry_schema: v(9),
            telemetry_flush: v(10),
            telemetry_max_items: v(11),
            telemetry_max_bytes: v(12),
            telemetry_timeout_ms: v(13),
            request_handler: v(14),
            response_handler: v(15),
            on_request_failure: v(16),
            proxy: v(17),
            proxy_port: v(18),
            ..Options::default()
        }
    }

    /// A value for any option: unset, blank, a valid word of some option, a number, anything.
    fn any_value() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(
            0.6,
            prop_oneof![
                Just(String::new()),
                prop::sample::select(
                    &[
                        "per-event",
                        "persistent",
                        "INVOKE,SHUTDOWN",
                        "shutdown",
                        "exit",
                        "continue",
                        "platform,function",
                        "auto",
                        "2022-12-13",
                        "end-of-invoke",
                        "background",
                        "log",
                        "reject",
                        "on",
                        "off",
                        "1000",
                        "262144",
                        "25",
                        "9009",
                        "/bin/cat",
                        "cat",
                        "true",
                        "echo $X | cat",
                        "0",
                        "-1",
                        "65536",
                        "18446744073709551616",
                        " ",
                        ",",
                        "\u{0}",
                    ][..]
                )
                .prop_map(str::to_string),
                "[0-9]{1,22}",
                ".{0,24}",
            ],
        )
    }

    /// Every problem names one of the variables, and the report shows each one.
    fn well_formed(errors: &ConfigErrors) -> Result<(), TestCaseError> {
        prop_assert!(!errors.0.is_empty());
        let shown = errors.to_string();
        prop_assert!(shown.starts_with("invalid configuration"), "{}", shown);
        for error in &errors.0 {
            prop_assert!(VARIABLES.contains(&error.variable), "{:?}", error);
            prop_assert!(!error.problem.is_empty(), "{:?}", error);
            prop_assert!(shown.contains(&error.to_string()), "{}", shown);
            prop_assert!(error.to_string().starts_with(error.variable));
        }
        Ok(())
    }

    /// A valid base: a handler and nothing else.
    fn base() -> [Option<String>; 19] {
        let mut values: [Option<String>; 19] = Default::default();
        values[0] = Some("/bin/cat".into());
        values
    }

    proptest! {
        #![proptest_config(config(1000))]

        /// Arbitrary strings in every option: no panic; an error is a `ConfigErrors` whose every
        /// entry names its variable.
        #[test]
        fn arbitrary_options_never_panic_and_errors_name_the_variable(
            values in prop::array::uniform19(any_value())
        ) {
            if let Err(errors) = Config::from_options(&options(&values)) {
                well_formed(&errors)?;
            }
        }

        /// One invalid value (never a word any option accepts: it starts with `x`) in one option
        /// of a valid configuration: exactly one problem, naming that variable.
        #[test]
        fn one_invalid_value_is_one_problem_naming_its_variable(
            index in prop::sample::select(&[1usize, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18][..]),
            junk in "x.{0,16}",
            blanks in "[ \t]{0,2}",
        ) {
            let mut values = base();
            values[index] = Some(format!("{blanks}{junk}"));
            let errors = Config::from_options(&options(&values)).unwrap_err();
            well_formed(&errors)?;
            prop_assert_eq!(errors.0.len(), 1, "{}", errors);
            prop_assert_eq!(errors.0[0].variable, VARIABLES[index]);
        }

        /// Event lists in any order, case and spacing, with empty items: the right set; a list
        /// without SHUTDOWN is refused, naming SHELL_EXT_EVENTS.
        #[test]
        fn event_lists_parse_to_their_set(
            names in prop::collection::vec(
                prop::sample::select(&["INVOKE", "SHUTDOWN", "invoke", "Shutdown", "iNvOkE", ""][..]),
                1..5,
            ),
            gaps in prop::collection::vec("[ \t]{0,2}", 10),
        ) {
            let list: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, name)| format!("{}{name}{}", gaps[2 * i], gaps[2 * i + 1]))
                .collect();
            let list = list.join(",");
            let mut values = base();
            values[3] = Some(list.clone());
            let upper: Vec<String> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
            let (invoke, shutdown) = (upper.contains(&"INVOKE".into()), upper.contains(&"SHUTDOWN".into()));
            let result = Config::from_options(&options(&values));
            match (invoke, shutdown) {
                (_, true) => {
                    let config = result.unwrap_or_else(|e| panic!("{list:?}: {e}"));
                    let want = if invoke { EventSet::InvokeAndShutdown } else { EventSet::ShutdownOnly };
                    prop_assert_eq!(config.events, want, "{:?}", list);
                }
                (false, false) if list.trim().is_empty() => {
                    // Blank: the default for a handler, INVOKE and SHUTDOWN.
                    prop_assert_eq!(result.unwrap().events, EventSet::InvokeAndShutdown);
                }
                (_, false) => {
                    let errors = result.unwrap_err();
                    prop_assert_eq!(errors.0.len(), 1);
                    prop_assert_eq!(errors.0[0].variable, config::EVENTS_ENV);
                }
            }
        }

        /// Telemetry buffering numbers: accepted exactly within Lambda's ranges, kept as given.
        #[test]
        fn buffering_numbers_are_accepted_exactly_in_range(
            field in 0usize..3, number in prop_oneof![0u64..40_000, 0u64..2_000_000, any::<u64>()],
        ) {
            let (index, range) = [(11, 1_000..=10_000u64), (12, 262_144..=1_048_576), (13, 25..=30_000)][field].clone();
            let mut values = base();
            values[6] = Some("/bin/cat".into());
            values[index] = Some(format!(" {number} "));
            match Config::from_options(&options(&values)) {
                Ok(config) => {
                    prop_assert!(range.contains(&number), "{} accepted", number);
                    let buffering = config.telemetry.unwrap().buffering;
                    let kept = [buffering.max_items, buffering.max_bytes, buffering.timeout_ms][field];
                    prop_assert_eq!(kept.map(u64::from), Some(number));
                }
                Err(errors) => {
                    prop_assert!(!range.contains(&number), "{} refused: {}", number, errors);
                    prop_assert_eq!(errors.0.len(), 1);
                    prop_assert_eq!(errors.0[0].variable, VARIABLES[index]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Persistent-mode framing

/// The crate keeps `parse_ack` to itself, so its source file is compiled into this suite as it is
/// (it depends on `libc` alone). Its own unit tests come along and run here too.
#[path = "../src/command/framing.rs"]
#[allow(dead_code)]
mod framing_source;

mod framing {
    use super::framing_source::{parse_ack, Ack, MAX_ACK_BYTES};
    use super::*;
    use lambda_shell_extension::command::as_line;
    use std::borrow::Cow;

    /// `value` written with line breaks and blanks between its tokens (pretty, with `\r\n` or
    /// `\r` line ends here and there).
    fn with_line_breaks(value: &serde_json::Value, crlf: bool) -> Vec<u8> {
        let pretty = serde_json::to_vec_pretty(value).unwrap();
        let mut out = Vec::new();
        for (i, &b) in pretty.iter().enumerate() {
            if b == b'\n' && crlf {
                out.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\r" });
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"\n");
        out
    }

    /// Short random byte strings, or long ones (up to `max`) of cheap pseudo-random bytes
    /// (a strategy per byte is slow for thousands of bytes).
    fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..256),
            1 => (0..max, any::<u64>()).prop_map(|(n, mut seed)| {
                (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        (seed >> 56) as u8
                    })
                    .collect()
            }),
        ]
    }

    fn one_line(line: &[u8]) -> bool {
        !line.contains(&b'\n') && !line.contains(&b'\r')
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Any JSON with line breaks between tokens: one line, the same value.
        #[test]
        fn json_with_line_breaks_is_one_line_of_the_same_value(
            value in json_value(), crlf in any::<bool>()
        ) {
            let body = with_line_breaks(&value, crlf);
            let line = as_line(&body);
            prop_assert!(one_line(&line), "{:?}", String::from_utf8_lossy(&line));
            // Compared with the body as parsed, not with `value`: serde_json's float parsing
            // does not always give back the f64 it printed.
            let want: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let again: serde_json::Value = serde_json::from_slice(&line).unwrap();
            prop_assert_eq!(again, want);
        }

        /// JSON without a line break is passed on as it is: the same bytes, not a copy.
        #[test]
        fn json_without_line_breaks_is_the_line_itself(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap();
            prop_assert!(one_line(&body));
            prop_assert!(matches!(as_line(&body), Cow::Borrowed(line) if line == &body[..]));
        }

        /// Any bytes at all (invalid JSON, raw line breaks inside strings, invalid UTF-8): one
        /// line, and untouched when there was no line break.
        #[test]
        fn any_bytes_become_one_line(
            bytes in prop::collection::vec(any::<u8>(), 0..200).prop_map(|bytes| {
                // A fifth of them line breaks, quotes and backslashes.
                bytes.into_iter().map(|b| match b % 20 { 0 => b'\n', 1 => b'\r', 2 => b'"', 3 => b'\\', _ => b }).collect::<Vec<u8>>()
            })
        ) {
            let line = as_line(&bytes);
            prop_assert!(one_line(&line), "{:?}", line);
            if one_line(&bytes) {
                prop_assert_eq!(&*line, &bytes[..]);
            }
        }

        /// The acknowledgement words (docs/persistent-mode.md): `ok`, `error`, `error <message>`,
        /// each with an optional trailing `\r`; the message is trimmed.
        #[test]
        fn the_documented_words_are_acknowledgements(
            message in bytes_up_to(MAX_ACK_BYTES), cr in any::<bool>(),
            kind in 0..3,
        ) {
            let mut line = match kind {
                0 => b"ok".to_vec(),
                1 => b"error".to_vec(),
                _ => [&b"error "[..], &message].concat(),
            };
            if cr {
                line.push(b'\r');
            }
            let expected = match kind {
                0 => Ack::Ok,
                1 => Ack::Error(String::new()),
                _ => {
                    // A message ending in `\r` loses that one `\r` with the line's own.
                    let message = if cr { &message[..] } else { message.strip_suffix(b"\r").unwrap_or(&message) };
                    Ack::Error(String::from_utf8_lossy(message).trim().to_string())
                }
            };
            prop_assert_eq!(parse_ack(&line), Ok(expected));
        }

        /// Anything else is not an acknowledgement: the line comes back as text, and nothing
        /// panics (any bytes, up to past MAX_ACK_BYTES).
        #[test]
        fn anything_else_is_refused_with_the_line(
            line in prop_oneof![
                bytes_up_to(MAX_ACK_BYTES + 2),
                prop::sample::select(&[
                    "OK", "Ok", " ok", "ok ", "okay", "ok\n", "ok\r\r", "ERROR", "errors", "error\tx",
                    "error\n", " error", "eror x", "", "\r", "\u{0}ok", "ok\u{0}",
                ][..]).prop_map(|s| s.as_bytes().to_vec()),
            ]
        ) {
            let stripped = line.strip_suffix(b"\r").unwrap_or(&line);
            let documented = stripped == b"ok" || stripped == b"error" || stripped.starts_with(b"error ");
            match parse_ack(&line) {
                Ok(_) => prop_assert!(documented, "{:?} accepted", String::from_utf8_lossy(&line)),
                Err(text) => {
                    prop_assert!(!documented, "{:?} refused", String::from_utf8_lossy(&line));
                    prop_assert_eq!(text, String::from_utf8_lossy(stripped).into_owned());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The telemetry listener (as a library, over loopback)

mod listener {
    use super::*;
    use lambda_shell_extension::telemetry::{Listener, MAX_BODY_BYTES};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::mpsc::{self, Receiver};
    use std::thread;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(20);
    const QUIET: Duration = Duration::from_millis(50);

    /// A listener whose batches are all acknowledged, their bodies sent to `bodies`.
    struct Harness {
        addr: SocketAddr,
        bodies: Receiver<Vec<u8>>,
        _listener: std::sync::Arc<Listener>,
    }

    impl Harness {
        fn start() -> Harness {
            let listener = std::sync::Arc::new(
                Listener::bind_addr("127.0.0.1:0".parse().unwrap()).expect("bind on loopback"),
            );
            let (sender, bodies) = mpsc::channel();
            let taker = listener.clone();
            thread::spawn(move || {
                while let Some(batch) = taker.next_batch() {
                    let (body, acknowledgement) = batch.into_parts();
                    let _ = sender.send(body);
                    acknowledgement.acknowledge();
                }
            });
            Harness {
                addr: listener.local_addr(),
                bodies,
                _listener: listener,
            }
        }

        /// Sends `request` on a new connection and reads the answer's head: the status (0 if
        /// the connection closed without one) and the head's text.
        fn exchange(&self, request: &[u8], half_close: bool) -> (u16, String) {
            let mut stream = TcpStream::connect(self.addr).expect("connect");
            stream.set_read_timeout(Some(WAIT)).unwrap();
            // The listener may answer and stop reading before all is written (413).
            let _ = stream.write_all(request);
            if half_close {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    Ok(_) => break,
                    Err(e) => panic!(
                        "no answer within {WAIT:?} ({e}): {:?}",
                        String::from_utf8_lossy(&head)
                    ),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (status, head)
        }

        /// The batches that arrived (none expected to be pending later).
        fn take(&self, expect: usize) -> Vec<Vec<u8>> {
            let mut got = Vec::new();
            while got.len() < expect {
                match self.bodies.recv_timeout(WAIT) {
                    Ok(body) => got.push(body),
                    Err(_) => break,
                }
            }
            while let Ok(body) = self.bodies.recv_timeout(QUIET) {
                got.push(body);
            }
            got
        }

        /// A well-formed POST still gets 200 and its body.
        fn still_serves(&self) -> Result<(), TestCaseError> {
            let probe = b"[{\"type\":\"probe\"}]";
            let (status, head) = self.exchange(&request("POST", "/", "", probe, None), false);
            prop_assert_eq!(status, 200, "{}", head);
            prop_assert_eq!(self.take(1), vec![probe.to_vec()]);
            Ok(())
        }
    }

    /// A request: `Content-Length`, or chunked in chunks of `sizes` (cycled), then the last chunk.
    fn request(
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
        sizes: Option<&[usize]>,
    ) -> Vec<u8> {
        let mut out = format!("{method} {path} HTTP/1.1\r\nHost: sandbox.localdomain\r\n{extra}")
            .into_bytes();
        match sizes {
            None => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            Some(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = body;
                for &size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }

    /// Headers that are not about framing: a token name and a visible-ASCII value.
    fn extra_headers() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                "X-[A-Za-z0-9-]{1,16}|Content-Type|User-Agent|Accept",
                "[!-~][ -~]{0,60}[!-~]|[!-~]?",
            ),
            0..5,
        )
        .prop_map(|headers| {
            headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect()
        })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..2048),
            1 => (0usize..512 * 1024, any::<u8>())
                .prop_map(|(n, seed)| (0..n).map(|i| (i % 251) as u8 ^ seed).collect()),
        ]
    }

    /// Everything a run of cases needs, on one listener (each case must leave it serving).
    #[test]
    fn bodies_arrive_byte_for_byte_or_get_the_documented_refusal() {
        let h = Harness::start();
        let strategy = (
            prop::sample::select(
                &[
                    "POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS",
                ][..],
            ),
            "/[A-Za-z0-9/._~%?=&-]{0,40}",
            extra_headers(),
            body(),
            prop::option::of(prop::collection::vec(1usize..70_000, 1..6)),
        );
        TestRunner::new(config(48))
            .run(&strategy, |(method, path, extra, body, sizes)| {
                let (status, head) = h.exchange(
                    &request(method, &path, &extra, &body, sizes.as_deref()),
                    false,
                );
                if method == "POST" {
                    prop_assert_eq!(status, 200, "{}", head);
                    let got = h.take(1);
                    prop_assert_eq!(got.len(), 1);
                    prop_assert!(
                        got[0] == body,
                        "{} bytes arrived as {}",
                        body.len(),
                        got[0].len()
                    );
                } else {
                    prop_assert_eq!(status, 405, "{}", head);
                    prop_assert!(head.contains("\r\nAllow: POST\r\n"), "{}", head);
                    prop_assert!(h.take(0).is_empty());
                }
                Ok(())
            })
            .unwrap();
    }

    /// Both `Content-Length` (any value, right or wrong) and `Transfer-Encoding: chunked`: the
    /// chunked framing wins (RFC 9112 6.3), so the batch is the decoded body byte for byte, or the
    /// request is refused; never a batch of other bytes (what a request smuggled behind a
    /// misread length would be), and the listener keeps serving.
    #[test]
    fn chunked_wins_over_content_length() {
        let h = Harness::start();
        let strategy = (
            body(),
            prop::collection::vec(1usize..5000, 1..4),
            prop_oneof![Just(None), (0usize..4096).prop_map(Some)],
            any::<bool>(),
        );
        TestRunner::new(config(32))
            .run(&strategy, |(body, sizes, declared, length_first)| {
                let chunked = request("POST", "/", "", &body, Some(&sizes));
                let declared = declared.unwrap_or(body.len());
                // Put Content-Length among the head's lines, before or after Transfer-Encoding.
                let text = chunked.clone();
                let split = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let (head, rest) = text.split_at(split);
                let head = String::from_utf8(head.to_vec()).unwrap();
                let length = format!("Content-Length: {declared}");
                let head = if length_first {
                    head.replacen(
                        "Transfer-Encoding",
                        &format!("{length}\r\nTransfer-Encoding"),
                        1,
                    )
                } else {
                    format!("{head}\r\n{length}")
                };
                let request = [head.as_bytes(), rest].concat();
                let (status, text) = h.exchange(&request, true);
                let got = h.take(usize::from(status == 200));
                match status {
                    200 => {
                        prop_assert_eq!(got.len(), 1, "{}", text);
                        prop_assert!(
                            got[0] == body,
                            "{} bytes arrived as {} (declared {})",
                            body.len(),
                            got[0].len(),
                            declared
                        );
                    }
                    _ => prop_assert!(
                        got.is_empty(),
                        "status {} with {} batches",
                        status,
                        got.len()
                    ),
                }
                h.still_serves()
            })
            .unwrap();
    }

    /// A `Content-Length` that is not the number of bytes sent: longer (the client then closes
    /// its side) yields nothing; shorter yields exactly the declared prefix, and the bytes after
    /// it are read as the next request (refused, never a batch). The listener keeps serving.
    #[test]
    fn a_wrong_content_length_yields_the_declared_bytes_or_nothing() {
        let h = Harness::start();
        let strategy = (body(), -2000i64..2000);
        TestRunner::new(config(32))
            .run(&strategy, |(body, skew)| {
                let declared = (body.len() as i64 + skew).max(0) as usize;
                let mut request =
                    format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n")
                        .into_bytes();
                request.extend_from_slice(&body);
                let (status, text) = h.exchange(&request, true);
                let got = h.take(usize::from(status == 200));
                if declared <= body.len() {
                    prop_assert_eq!(status, 200, "{}", text);
                    prop_assert_eq!(
                        got.len(),
                        1,
                        "declared {} of {}: {} batches",
                        declared,
                        body.len(),
                        got.len()
                    );
                    prop_assert!(
                        got[0] == body[..declared],
                        "declared {} of {}: {} bytes",
                        declared,
                        body.len(),
                        got[0].len()
                    );
                } else {
                    prop_assert!(
                        got.is_empty(),
                        "declared {} of {}: {} batches",
                        declared,
                        body.len(),
                        got.len()
                    );
                    prop_assert_ne!(status, 200, "{}", text);
                }
                h.still_serves()
            })
            .unwrap();
    }

    /// A declared length over MAX_BODY_BYTES (up to u64::MAX): 413 before anything is read, no
    /// batch, and the listener keeps serving.
    #[test]
    fn declared_oversize_is_413_and_the_listener_carries_on() {
        let h = Harness::start();
        let strategy = prop_oneof![
            (MAX_BODY_BYTES as u64 + 1)..(64 << 20),
            (64u64 << 20)..u64::MAX,
            Just(u64::MAX),
        ];
        TestRunner::new(config(16))
            .run(&strategy, |length| {
                let head =
                    format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n[1]");
                let (status, text) = h.exchange(head.as_bytes(), false);
                prop_assert_eq!(status, 413, "{}", text);
                prop_assert!(h.take(0).is_empty());
                h.still_serves()
            })
            .unwrap();
    }

    /// Bytes that are not a well-formed request (random, or a request with bytes changed, cut
    /// short, its write side closed): no panic, any answer, no batch that was not sent whole, and
    /// the listener keeps serving.
    #[test]
    fn malformed_requests_leave_the_listener_serving() {
        let h = Harness::start();
        let valid = request("POST", "/", "", b"[{\"record\":1}]", None);
        let strategy = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map({
                let valid = valid.clone();
                move |(at, byte)| {
                    let mut bytes = valid.clone();
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                    bytes
                }
            }),
            any::<prop::sample::Index>().prop_map({
                let valid = valid.clone();
                move |cut| valid[..cut.index(valid.len())].to_vec()
            }),
        ];
        TestRunner::new(config(64))
            .run(&strategy, |bytes| {
                // An absurd length would make the listener abandon the connection for good (it
                // is covered above); keep this loop to what it can answer.
                let digits = bytes
                    .split(|b| !b.is_ascii_digit())
                    .map(<[u8]>::len)
                    .max()
                    .unwrap_or(0);
                prop_assume!(digits < 8);
                h.exchange(&bytes, true);
                for body in h.take(0) {
                    prop_assert!(
                        body.len() <= bytes.len(),
                        "a batch of {} bytes from {} sent",
                        body.len(),
                        bytes.len()
                    );
                }
                h.still_serves()
            })
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The Runtime API proxy (the real binary, the stand-in Runtime API)

mod proxy {
    use super::common::*;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Header values a runtime and Lambda send: visible ASCII with inner spaces and tabs.
    const VALUE: &str = "[!-~]([ -~\t]{0,80}[!-~])?";

    /// A header value with UTF-8 in it (a client context's custom data can hold any text) reaches
    /// the runtime and the request handler as it was sent.
    #[test]
    #[ignore = "bug: an upstream header value that is not ASCII is dropped silently: tiny_http 0.12 headers are ASCII only (Header::from_bytes fails in src/proxy/forward.rs answer()), and the request handler's variable is read with HeaderValue::to_str, which refuses it too"]
    fn header_values_with_utf8_pass_unaltered() {
        let sb = Sandbox::new();
        let rt = RuntimeApi::start();
        let port = free_port();
        let mut ext = sb
            .ext(&rt)
            .env("SHELL_EXT_PROXY_PORT", &port.to_string())
            .env(
                "SHELL_EXT_REQUEST_HANDLER",
                &recorder(&sb, "request.sh", ""),
            )
            .spawn();
        rt.expect_requests(Endpoint::Register, 1, secs(10));
        let mut runtime = RuntimeClient::connect(port);
        let context = r#"{"custom":{"name":"Zoë – 東京 😀"},"env":{},"client":{}}"#;
        rt.push(
            Invocation::new("utf8-1", &b"{}"[..]).header("Lambda-Runtime-Client-Context", context),
        );
        let got = runtime.next();
        assert_eq!(got.status, 200, "{got:?}");
        let upstream = rt.requests(Route::Next);
        assert_eq!(upstream.len(), 1);
        assert_eq!(
            got.header("Lambda-Runtime-Client-Context"),
            Some(context),
            "runtime: {:?}",
            got.headers
        );
        let env = seen_env(&sb, "REQUEST", "utf8-1");
        assert_eq!(
            env_get(&env, "LAMBDA_CLIENT_CONTEXT"),
            Some(context),
            "request handler"
        );
        rt.push_shutdown("spindown", deadline_in(5000));
        ext.expect_exit(0, secs(20));
    }

    /// Arbitrary payload bytes, header values and a streamed response in arbitrary chunk sizes go
    /// through a running proxy unaltered: to the runtime (payload, headers), to the request
    /// handler (stdin, header variables), upstream (response body, streamed or not), and to the
    /// response handler (stdin).
    #[test]
    fn payloads_headers_and_streamed_chunks_pass_unaltered() {
        let sb = Sandbox::new();
        let rt = RuntimeApi::start();
        let port = free_port();
        let mut ext = sb
            .ext(&rt)
            .env("SHELL_EXT_PROXY_PORT", &port.to_string())
            .env(
                "SHELL_EXT_REQUEST_HANDLER",
                &recorder(&sb, "request.sh", ""),
            )
            .env(
                "SHELL_EXT_RESPONSE_HANDLER",
                &recorder(&sb, "response.sh", ""),
            )
            .spawn();
        rt.expect_requests(Endpoint::Register, 1, secs(10));
        let runtime = std::cell::RefCell::new(RuntimeClient::connect(port));
        let count = AtomicUsize::new(0);
        let strategy = (
            prop::collection::vec(any::<u8>(), 0..8192),
            (VALUE, VALUE, VALUE, VALUE),
            prop::collection::vec(any::<u8>(), 1..100_000),
            prop::option::of(prop::collection::vec(1usize..20_000, 1..8)),
        );
        TestRunner::new(config(12))
            .run(
                &strategy,
                |(payload, (context, identity, tenant, custom), response, sizes)| {
                    let id = format!("prop-{}", count.fetch_add(1, Ordering::SeqCst));
                    rt.push(
                        Invocation::new(&id, payload.clone())
                            .header("Lambda-Runtime-Client-Context", &context)
                            .header("Lambda-Runtime-Cognito-Identity", &identity)
                            .header("Lambda-Runtime-Aws-Tenant-Id", &tenant)
                            .header("X-Prop-Custom", &custom),
                    );
                    rt.push_invoke(&id, deadline_in(20_000));
                    let got = runtime.borrow_mut().next();
                    prop_assert_eq!(got.status, 200, "{:?}", got);
                    prop_assert!(
                        got.body == payload,
                        "payload: {} bytes arrived as {}",
                        payload.len(),
                        got.body.len()
                    );
                    prop_assert_eq!(
                        got.header("Lambda-Runtime-Aws-Request-Id"),
                        Some(id.as_str())
                    );
                    prop_assert_eq!(
                        got.header("Lambda-Runtime-Client-Context"),
                        Some(context.as_str())
                    );
                    prop_assert_eq!(
                        got.header("Lambda-Runtime-Cognito-Identity"),
                        Some(identity.as_str())
                    );
                    prop_assert_eq!(
                        got.header("Lambda-Runtime-Aws-Tenant-Id"),
                        Some(tenant.as_str())
                    );
                    prop_assert_eq!(got.header("X-Prop-Custom"), Some(custom.as_str()));
                    prop_assert!(
                        seen_stdin(&sb, "REQUEST", &id) == payload,
                        "request handler stdin"
                    );
                    let env = seen_env(&sb, "REQUEST", &id);
                    prop_assert_eq!(
                        env_get(&env, "LAMBDA_CLIENT_CONTEXT"),
                        Some(context.as_str())
                    );
                    prop_assert_eq!(
                        env_get(&env, "LAMBDA_COGNITO_IDENTITY"),
                        Some(identity.as_str())
                    );
                    prop_assert_eq!(env_get(&env, "LAMBDA_TENANT_ID"), Some(tenant.as_str()));

                    let path = format!("/2018-06-01/runtime/invocation/{id}/response");
                    let body = match &sizes {
                        None => Body::Bytes(&response),
                        Some(sizes) => {
                            let mut chunks = Vec::new();
                            let mut rest = &response[..];
                            for &size in sizes.iter().cycle() {
                                if rest.is_empty() {
                                    break;
                                }
                                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                                chunks.push(chunk);
                                rest = tail;
                            }
                            Body::Chunked {
                                chunks,
                                trailers: vec![],
                            }
                        }
                    };
                    let mode = if sizes.is_some() {
                        "streaming"
                    } else {
                        "buffered"
                    };
                    let answer = runtime
                        .borrow_mut()
                        .send(
                            "POST",
                            &path,
                            &[("Lambda-Runtime-Function-Response-Mode", mode)],
                            body,
                        )
                        .expect("POST /response through the proxy");
                    prop_assert_eq!(answer.status, 202, "{:?}", answer);
                    let ups = rt.requests(Route::Response);
                    let up = ups
                        .iter()
                        .find(|r| r.path == path)
                        .expect("the response went upstream");
                    prop_assert!(
                        up.body == response,
                        "response: {} bytes went up as {}",
                        response.len(),
                        up.body.len()
                    );
                    prop_assert_eq!(
                        up.header("Lambda-Runtime-Function-Response-Mode"),
                        Some(mode)
                    );
                    expect_call(&sb, &format!("RESPONSE {id}"), secs(20));
                    prop_assert!(
                        seen_stdin(&sb, "RESPONSE", &id) == response,
                        "response handler stdin"
                    );
                    Ok(())
                },
            )
            .unwrap();
        rt.push_shutdown("spindown", deadline_in(5000));
        ext.expect_exit(0, secs(20));
        assert_none(&rt, Endpoint::ExitError);
    }
}

// ---------------------------------------------------------------------------------------------
// Persistent mode: the bound on an acknowledgement line, in the real binary

mod ack_bound {
    use super::common::*;
    use super::*;
    use std::cell::Cell;

    const MAX_ACK_BYTES: usize = 4096;

    /// A persistent handler that answers every line with the bytes of `<sandbox>/answer`
    /// (written in one go), under SHELL_EXT_ON_ERROR=continue; the outcome of each event is read
    /// from the extension's INFO line for it.
    struct Persistent<'a> {
        sb: &'a Sandbox,
        api: FakeApi,
        ext: Ext,
        events: Cell<usize>,
    }

    impl<'a> Persistent<'a> {
        fn start(sb: &'a Sandbox) -> Persistent<'a> {
            let api = FakeApi::start();
            let answer = sb.p("answer");
            let handler = sb.script(
                "handler.sh",
                &format!("#!/bin/sh\nwhile read -r line; do cat {answer} >&3; done\n"),
            );
            let ext = sb
                .ext(&api)
                .handler(&handler)
                .env("SHELL_EXT_MODE", "persistent")
                .env("SHELL_EXT_ON_ERROR", "continue")
                .spawn();
            api.expect_requests(Endpoint::Next, 1, secs(10));
            Persistent {
                sb,
                api,
                ext,
                events: Cell::new(0),
            }
        }

        /// One INVOKE answered with `answer`: the extension's INFO line for it.
        fn answer(&self, answer: &[u8]) -> String {
            let n = self.events.get();
            self.events.set(n + 1);
            let id = format!("ack-{n}");
            std::fs::write(self.sb.path("answer"), answer).unwrap();
            self.api.push_invoke(&id, deadline_in(20_000));
            self.api.expect_requests(Endpoint::Next, n + 2, secs(20));
            let mut line = None;
            wait_for(secs(10), || {
                line = self
                    .ext
                    .stderr_str()
                    .lines()
                    .find(|l| l.contains(&format!("INVOKE {id} ")))
                    .map(str::to_string);
                line.is_some()
            });
            line.unwrap_or_else(|| panic!("no INFO line for {id}:\n{}", self.ext.stderr_str()))
        }

        fn finish(mut self) {
            std::fs::write(self.sb.path("answer"), b"ok\n").unwrap();
            self.api.push_shutdown("spindown", deadline_in(5000));
            self.ext.expect_exit(0, secs(20));
        }
    }

    /// `error <message>` lines around MAX_ACK_BYTES, written in one go: a line of at most 4 KiB
    /// is an error answer (the event fails with its message, the handler keeps running); a
    /// longer one is a protocol error (docs/persistent-mode.md: "a line over 4 KiB").
    #[test]
    #[ignore = "bug: an answer line of 4097 to about 4600 bytes is taken as an answer (read_acks in src/command/long_lived.rs reads 512-byte chunks while at most MAX_ACK_BYTES are pending, and read_answer parses any line found, whatever its length)"]
    fn error_lines_over_4_kib_are_protocol_errors() {
        let sb = Sandbox::new();
        let handler = Persistent::start(&sb);
        TestRunner::new(config(16))
            .run(&(4000usize..4700), |length| {
                let mut line = b"error ".to_vec();
                line.resize(length, b'm');
                line.push(b'\n');
                let report = handler.answer(&line);
                if length <= MAX_ACK_BYTES {
                    prop_assert!(
                        report.contains("(answered error)"),
                        "{} bytes: {}",
                        length,
                        report
                    );
                } else {
                    prop_assert!(
                        report.contains("(bad answer on fd 3)"),
                        "{} bytes: {}",
                        length,
                        report
                    );
                }
                Ok(())
            })
            .unwrap();
        handler.finish();
    }

    /// After an overlong answer line (the handler is stopped and started again), the next
    /// event's answer is the new handler's own: nothing of the old line is left to be read.
    #[test]
    fn an_overlong_answer_leaves_nothing_for_the_next_event() {
        let sb = Sandbox::new();
        let handler = Persistent::start(&sb);
        let strategy = (
            4700usize..12_000,
            prop::sample::select(&["ok\n", "error next\n"][..]),
        );
        TestRunner::new(config(8))
            .run(&strategy, |(length, next)| {
                let long = vec![b'm'; length];
                let report = handler.answer(&[&long[..], b"\n"].concat());
                prop_assert!(
                    report.contains("(bad answer on fd 3)"),
                    "{} bytes: {}",
                    length,
                    report
                );
                let report = handler.answer(next.as_bytes());
                let want = if next == "ok\n" {
                    " ok in "
                } else {
                    "(answered error)"
                };
                prop_assert!(
                    report.contains(want),
                    "after {} bytes, {:?}: {}",
                    length,
                    next,
                    report
                );
                Ok(())
            })
            .unwrap();
        handler.finish();
    }
}
