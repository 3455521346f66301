//! The cheapest persistent handler (`SHELL_EXT_MODE=persistent`): for every line on stdin, one
//! `ok\n` written to the acknowledgement fd (`LAMBDA_ACK_FD`, 3 when unset) in one unbuffered
//! write; exits 0 at end of file, 1 when the acknowledgement cannot be written.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;

fn main() {
    let fd = std::env::var("LAMBDA_ACK_FD")
        .ok()
        .and_then(|fd| fd.parse().ok())
        .unwrap_or(3);
    // SAFETY: the extension hands this fd to the handler for its acknowledgements, and stdin is
    // fd 0; nothing else in this process uses either (std's own stdin is never touched).
    let (mut ack, stdin) = unsafe { (File::from_raw_fd(fd), File::from_raw_fd(0)) };
    let mut stdin = BufReader::with_capacity(1 << 16, stdin);
    let mut line = Vec::with_capacity(1 << 12);
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => fail(&format!("stdin: {error}")),
        }
        if let Err(error) = ack.write_all(b"ok\n") {
            fail(&format!("acknowledgement fd {fd}: {error}"));
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bench-ack: {message}");
    std::process::exit(1)
}
