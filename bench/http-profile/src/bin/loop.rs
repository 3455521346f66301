//! The library's per-event HTTP path and nothing else: register, then `next_event()` in a loop
//! until SHUTDOWN, with no output per event. `scripts/profile-http.sh` runs it under callgrind and
//! strace against `http-profile-api` to count the instructions and syscalls of one event (see
//! `docs/http-path.md`).

use std::process::ExitCode;

use lambda_shell_extension::api::Event;
use lambda_shell_extension::client::RegistrationClient;

fn main() -> ExitCode {
    let (client, _) = match RegistrationClient::from_env().register_default() {
        Ok(registered) => registered,
        Err(error) => {
            eprintln!("http-profile-loop: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut invokes = 0u64;
    loop {
        match client.next_event() {
            Ok(next) => match next.event {
                Event::Invoke(_) => invokes += 1,
                Event::Shutdown(_) => break,
                _ => {}
            },
            Err(error) => {
                eprintln!("http-profile-loop: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("http-profile-loop: {invokes} invokes");
    ExitCode::SUCCESS
}
