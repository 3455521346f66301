//! Command lines: `CommandLine::parse` never panics; a line with anything a shell would interpret
//! (or whitespace other than blanks) goes to the shell, as does one starting with an assignment or
//! a shell word; anything else is exec'd directly, split on blanks exactly; the line kept is the
//! input trimmed.
#![no_main]

use lambda_shell_extension::command::CommandLine;
use libfuzzer_sys::fuzz_target;

const METACHARACTERS: &str = "|&;<>()$`\\\"'*?[]#~{}!\n";
const SHELL_WORDS: &[&str] = &[
    ".", ":", "alias", "break", "case", "cd", "continue", "eval", "exec", "exit", "export", "for",
    "if", "local", "read", "readonly", "return", "set", "shift", "source", "times", "trap",
    "ulimit", "umask", "unset", "until", "wait", "while",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(command) = CommandLine::parse(text) else {
        assert!(words.is_empty(), "{text:?} has words but parsed to nothing");
        return;
    };
    assert_eq!(command.line(), text.trim());
    let needs_shell = text.trim().contains(|c| METACHARACTERS.contains(c))
        // Whitespace that /bin/sh does not split on (\r, \x0b, NBSP...): the shell decides.
        || text
            .trim()
            .contains(|c: char| c.is_whitespace() && c != ' ' && c != '\t')
        || words[0].contains('=')
        || SHELL_WORDS.contains(&words[0]);
    match command {
        CommandLine::Direct { argv, .. } => {
            assert!(
                !needs_shell,
                "{text:?} needs a shell but is exec'd directly"
            );
            assert_eq!(argv, words);
        }
        CommandLine::Shell { .. } => {
            assert!(needs_shell, "{text:?} is plain words but goes to the shell");
        }
    }
});
