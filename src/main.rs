//! The extension binary: Lambda starts it from `/opt/extensions/` with no arguments.

use std::io::Write;

use lambda_shell_extension::config::Options;
use lambda_shell_extension::runner;

fn main() {
    let options = Options::from_args_or_env();
    let name = std::env::args_os()
        .next()
        .and_then(|argv0| {
            std::path::Path::new(&argv0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "lambda-shell-extension".into());
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |out, record| writeln!(out, "[{name}] {} {}", record.level(), record.args()))
        .init();
    std::process::exit(runner::run(&options).code());
}
