//! The `popfetch` binary: parse the command line, run, turn the result into an exit code.

use std::process::ExitCode;

use clap::Parser;
use popfetch::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popfetch: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("popfetch: {}", cli::error_chain(&e));
            ExitCode::from(cli::EXIT_CONFIG)
        }
    }
}
