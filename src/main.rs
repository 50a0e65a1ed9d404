//! The `popfetch` binary: parse the command line, run, turn the result into an exit code.

use std::process::ExitCode;

use clap::Parser;
use popfetch::cli::{self, Cli};

fn main() -> ExitCode {
    let args = Cli::parse();
    // The log's level comes from the config's `log_level` for every command that reads a
    // config (`POPFETCH_LOG` and `-v` still win); its target from `log_target` for the two
    // commands that run unattended. A broken config is reported by `run` below, on stderr.
    let daemon = matches!(args.command, cli::Command::Daemon);
    let unattended = daemon || matches!(args.command, cli::Command::Fetch { .. });
    let config = (!matches!(args.command, cli::Command::Import { .. }))
        .then(|| {
            popfetch::config::load(&popfetch::config::default_path(args.config.as_deref())).ok()
        })
        .flatten();
    popfetch::logging::init(
        args.verbose,
        daemon,
        config.as_ref().and_then(|c| c.log_level.as_deref()),
        config
            .as_ref()
            .filter(|_| unattended)
            .map_or(popfetch::logging::LogTarget::Stderr, |c| c.log_target),
    );
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
            eprintln!("popfetch: {}", popfetch::text::error_chain(&e));
            ExitCode::from(cli::EXIT_CONFIG)
        }
    }
}
