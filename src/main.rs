//! The extension binary: Lambda starts it from `/opt/extensions/` with no arguments.

use std::io::Write;

use clap::Parser;
use lambda_shell_extension::config::Options;
use lambda_shell_extension::{runner, signals};

fn main() {
    let options = Options::parse();
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
    if let Err(error) = signals::install() {
        log::warn!("cannot handle SIGTERM/SIGINT: {error}");
    }
    std::process::exit(runner::run(&options).code());
}
