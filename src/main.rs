//! The `ha-vip` binary: parse the arguments, set up logging, run the
//! command, turn its outcome into an exit code (see `ha_vip::cli::exit`).

use std::io;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use ha_vip::cli::{self, Cli, CliError, Command};
use ha_vip::config::Config;
use ha_vip::control::Request;
use ha_vip::logging;

fn main() -> ExitCode {
    // Before any configuration or credential is read.
    if let Err(e) = ha_vip::hardening::forbid_core_dumps() {
        eprintln!("warning: cannot make ha-vip non-dumpable (prctl PR_SET_DUMPABLE): {e}");
    }
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string();
            if !message.is_empty() {
                eprintln!("{message}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Run { config: path } => cli::run(&path, load_for_daemon(&path)?),
        Command::Release { config } => cli::release(load_for_daemon(&config)?),
        Command::Status {
            json,
            config,
            cluster,
        } => {
            logging::init_stderr("warn");
            if cluster {
                cli::status_cluster(&cli::load(&config)?, json)
            } else {
                cli::status(&cli::load(&config)?, json)
            }
        }
        Command::Drain { force, config } => {
            logging::init_stderr("warn");
            control(&config, Request::Drain { force })
        }
        Command::Undrain { config } => {
            logging::init_stderr("warn");
            control(&config, Request::Undrain)
        }
        Command::Handover { to, config } => {
            logging::init_stderr("warn");
            control(&config, Request::Handover { to })
        }
        Command::CheckConfig { path } => {
            logging::init_stderr("warn");
            cli::check_config(&path, &mut io::stdout().lock(), &mut io::stderr().lock())
        }
        Command::Credential { command } => {
            logging::init_stderr("warn");
            cli::credential(command, &mut io::stdout().lock())
        }
        Command::Version => {
            println!("{}", cli::version());
            Ok(())
        }
    }
}

/// Sends one operator control to the daemon configured at `path`.
fn control(path: &Path, request: Request) -> Result<(), CliError> {
    cli::control(&cli::load(path)?, &request, &mut io::stdout().lock())
}

/// Loads the configuration, then starts logging at its level (to the
/// journal under systemd).
fn load_for_daemon(path: &Path) -> Result<Config, CliError> {
    let config = cli::load(path)?;
    let sink = logging::init(&config.log_level);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        node = %config.node_name,
        logs = ?sink,
        "configuration loaded"
    );
    Ok(config)
}
