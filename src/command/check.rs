//! Checking, before anything runs, that a directly executed command can be started: so that a
//! typo in a path fails the function's Init once, with a message that names the file, instead
//! of every invoke (or, registered for SHUTDOWN only, a surprise at spin-down).
//!
//! Shell command lines (`/bin/sh -c LINE`) cannot be checked this way: what they run is only
//! known to the shell.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::CommandLine;

/// How many bytes of a script are read to find its `#!` line.
const SHEBANG_BYTES: usize = 256;

impl CommandLine {
    /// Checks that the program of a directly executed command exists, is an executable file,
    /// and, for a script, that its `#!` interpreter exists. `path_var` is the `PATH` a bare
    /// program name is looked up in. Returns what is wrong and how to fix it.
    pub fn check(&self, path_var: Option<&OsStr>) -> Result<(), String> {
        let CommandLine::Direct { argv, .. } = self else {
            return Ok(());
        };
        let Some(program) = argv.first() else {
            return Ok(());
        };
        let path = if program.contains('/') {
            PathBuf::from(program)
        } else {
            find_in_path(program, path_var)?
        };
        check_executable(&path)?;
        check_interpreter(&path, path_var)
    }
}

/// Where `name` is found in `PATH`, as `execvp` would find it.
fn find_in_path(name: &str, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/bin:/usr/bin"));
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| {
            format!(
                "`{name}` is not found in PATH ({}); give its absolute path (a layer's files \
                 are under /opt, the function's under /var/task)",
                path_var.to_string_lossy()
            )
        })
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn check_executable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = fs::metadata(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            format!(
                "`{shown}` does not exist; check the path (a layer's files are under /opt, the \
                 function's under /var/task; relative paths depend on the working directory, \
                 which Lambda does not promise)"
            )
        } else {
            format!("`{shown}` cannot be read: {error}")
        }
    })?;
    if meta.is_dir() {
        return Err(format!("`{shown}` is a directory, not a program"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "`{shown}` is not executable (mode {:o}); chmod 755 it, and keep the mode in the \
             zip (zipinfo shows -rwxr-xr-x)",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// For a script, checks the interpreter its `#!` line names (and, for `#!/usr/bin/env NAME`,
/// that NAME is in PATH).
fn check_interpreter(path: &Path, path_var: Option<&OsStr>) -> Result<(), String> {
    let shown = path.display();
    let mut start = Vec::with_capacity(SHEBANG_BYTES);
    File::open(path)
        .and_then(|file| file.take(SHEBANG_BYTES as u64).read_to_end(&mut start))
        .map_err(|error| format!("`{shown}` cannot be read: {error}"))?;
    if start.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let Some(rest) = start.strip_prefix(b"#!") else {
        return Err(format!(
            "`{shown}` is neither a program nor a script with a #! line; add one as its first \
             line (for example #!/bin/sh)"
        ));
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split([' ', '\t']).filter(|word| !word.is_empty());
    let Some(interpreter) = words.next() else {
        return Err(format!("`{shown}` has a #! line that names no interpreter"));
    };
    if line.ends_with('\r') {
        return Err(format!(
            "`{shown}` has Windows (CRLF) line endings: its #! line names `{}\\r`, which does \
             not exist; convert the file to Unix (LF) line endings (dos2unix, or sed -i \
             's/\\r$//')",
            line.trim_end_matches('\r')
        ));
    }
    if !is_executable_file(Path::new(interpreter)) {
        return Err(format!(
            "`{shown}` needs the interpreter `{interpreter}` (its #! line), which does not exist \
             here or is not executable; use one the runtime has (/bin/sh, /bin/bash), or ship it \
             in a layer (/opt/bin/...) and name that path"
        ));
    }
    if interpreter.ends_with("/env") {
        if let Some(name) = words.next().filter(|word| !word.starts_with('-')) {
            find_in_path(name, path_var).map_err(|problem| {
                format!("`{shown}` runs `{name}` through `{interpreter}`, but {problem}")
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, contents: &[u8], mode: u32) -> String {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn check(line: &str) -> Result<(), String> {
        CommandLine::parse(line)
            .unwrap()
            .check(Some(OsStr::new("/usr/bin:/bin")))
    }

    #[test]
    fn startable_commands_pass() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(dir.path(), "ok.sh", b"#!/bin/sh\necho hi\n", 0o755);
        let env = script(dir.path(), "env.sh", b"#!/usr/bin/env sh\necho\n", 0o755);
        for line in [
            ok.as_str(),
            &format!("{env} --flag"),
            "true",
            "cat > /x",
            "/bin/true",
        ] {
            assert_eq!(check(line), Ok(()), "{line}");
        }
    }

    #[test]
    fn each_problem_is_named_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases = [
            (d.join("missing.sh").display().to_string(), "does not exist"),
            ("no-such-program-xyz".to_string(), "not found in PATH"),
            (d.display().to_string(), "is a directory"),
            (script(d, "plain.sh", b"#!/bin/sh\n", 0o644), "chmod 755"),
            (
                script(d, "crlf.sh", b"#!/bin/sh\r\necho\r\n", 0o755),
                "CRLF",
            ),
            (
                script(d, "py.sh", b"#!/usr/bin/python9 -u\n", 0o755),
                "`/usr/bin/python9`",
            ),
            (
                script(d, "envpy.sh", b"#!/usr/bin/env python9\n", 0o755),
                "`python9`",
            ),
            (script(d, "noshebang.sh", b"echo hi\n", 0o755), "#!/bin/sh"),
        ];
        for (line, expected) in cases {
            let problem = check(&line).expect_err(&line);
            assert!(problem.contains(expected), "{line}: {problem}");
        }
    }
}
