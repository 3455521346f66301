//! A command line as configured: run directly, or through `/bin/sh -c`.

use crate::spawn::Lookup;

/// Characters that make a command line need a shell (expansion, redirection, quoting, pipes...).
const SHELL_METACHARACTERS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
    '{', '}', '!', '\n',
];

/// Words that are shell syntax or builtins, not programs on PATH.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "alias", "break", "case", "cd", "continue", "eval", "exec", "exit", "export", "for",
    "if", "local", "read", "readonly", "return", "set", "shift", "source", "times", "trap",
    "ulimit", "umask", "unset", "until", "wait", "while",
];

/// A command line as configured, and how it will be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// No shell needed: split on whitespace and exec'd directly (the fast path).
    Direct { line: String, argv: Vec<String> },
    /// Run as `/bin/sh -c line`.
    Shell { line: String },
}

impl CommandLine {
    /// `None` for an empty or blank line.
    pub fn parse(line: &str) -> Option<CommandLine> {
        let line = line.trim();
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        let first = argv.first()?;
        let needs_shell = line.contains(SHELL_METACHARACTERS)
            || line.contains(|c: char| c.is_whitespace() && c != ' ' && c != '\t')
            || first.contains('=')
            || SHELL_WORDS.contains(&first.as_str());
        Some(if needs_shell {
            CommandLine::Shell {
                line: line.to_string(),
            }
        } else {
            CommandLine::Direct {
                line: line.to_string(),
                argv,
            }
        })
    }

    /// The line as configured, for messages.
    pub fn line(&self) -> &str {
        match self {
            CommandLine::Direct { line, .. } | CommandLine::Shell { line } => line,
        }
    }

    /// The argv to spawn: the words themselves (looked up in PATH), or `/bin/sh -c line`.
    pub(super) fn argv(&self) -> (Vec<&str>, Lookup) {
        match self {
            CommandLine::Direct { argv, .. } => (
                argv.iter().map(String::as_str).collect(),
                Lookup::SearchPath,
            ),
            CommandLine::Shell { line } => (vec!["/bin/sh", "-c", line], Lookup::ExactPath),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_command_lines_are_exec_directly() {
        let command = CommandLine::parse("  /opt/handler.sh  --flag value ").unwrap();
        assert_eq!(
            command,
            CommandLine::Direct {
                line: "/opt/handler.sh  --flag value".into(),
                argv: vec!["/opt/handler.sh".into(), "--flag".into(), "value".into()],
            }
        );
        assert!(matches!(
            CommandLine::parse("cat --opt=1").unwrap(),
            CommandLine::Direct { .. }
        ));
    }

    #[test]
    fn shell_syntax_goes_through_the_shell() {
        for line in [
            "cat > /tmp/x",
            "echo $HOME",
            "a | b",
            "a && b",
            "echo 'quoted arg'",
            "echo \"x\"",
            "ls *.json",
            "FOO=1 handler",
            "exit 3",
            "cd /tmp; ls",
            "echo ~",
            "sleep 1 &",
            "echo `date`",
        ] {
            assert!(
                matches!(CommandLine::parse(line).unwrap(), CommandLine::Shell { .. }),
                "{line}"
            );
        }
    }

    #[test]
    fn blank_lines_are_not_commands() {
        assert_eq!(CommandLine::parse(""), None);
        assert_eq!(CommandLine::parse(" \t\n"), None);
    }
}
