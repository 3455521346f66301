//! The extension binary: Lambda starts it from `/opt/extensions/` with no arguments.

use std::io::Write;

use lambda_shell_extension::config::{self, Action, Options};
use lambda_shell_extension::runner::{self, offline};

fn main() {
    let options = Options::from_args_or_env();
    let name = config::extension_name();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |out, record| writeln!(out, "[{name}] {} {}", record.level(), record.args()))
        .init();
    let exit = match options.action() {
        Action::Run => runner::run(&options),
        Action::Check => offline::check(&options),
        Action::Once(file) => offline::once(&options, &file),
    };
    std::process::exit(exit.code());
}
