//! The extension binary: Lambda starts it from `/opt/extensions/` with no arguments.

use lambda_shell_extension::config::{self, Action, Options};
use lambda_shell_extension::logging;
use lambda_shell_extension::runner::{self, offline};

fn main() {
    let options = Options::from_args_or_env();
    logging::init(&config::extension_name());
    let exit = match options.action() {
        Action::Run => runner::run(&options),
        Action::Check => offline::check(&options),
        Action::Once(file) => offline::once(&options, &file),
    };
    std::process::exit(exit.code());
}
