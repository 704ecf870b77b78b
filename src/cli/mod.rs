//! The command line: arguments, the commands behind them, and exit codes.
//!
//! `src/main.rs` parses [`Cli`], sets up logging and turns a [`CliError`]
//! into its [`CliError::exit_code`]; every command body lives here.

mod check;
mod cluster;
mod control;
mod credential;
mod release;
mod run;
mod status;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, defaults};

pub use check::check_config;
pub use cluster::status_cluster;
pub use control::control;
pub use credential::{CredentialCommand, IssueArgs, credential};
pub use release::release;
pub use run::run;
pub use status::status;

/// Process exit codes, from sysexits(3) where one fits.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A runtime failure (network, API server, kernel).
    pub const RUNTIME: u8 = 1;
    /// Bad arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// EX_CONFIG: the configuration is missing, unreadable or invalid.
    pub const CONFIG: u8 = 78;
}

/// `ha-vip`: keeps a Kubernetes control plane reachable at one virtual IP.
#[derive(Debug, Parser)]
#[command(name = "ha-vip", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: probe the local API server, hold the Lease, carry the VIPs.
    Run {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration file and summarize it; exit 78 if it is bad.
    CheckConfig {
        /// Configuration file.
        #[arg(value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        path: PathBuf,
    },
    /// Show what the running daemon on this node is doing.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Every node's state from the VirtualIP object (or the Lease holder
        /// when its CRD is not installed), read from the API server.
        #[arg(long)]
        cluster: bool,
        /// Configuration file (it names the status file).
        #[arg(long, short, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        config: PathBuf,
    },
    /// Remove this node's VIPs and give up the Lease (systemd's ExecStopPost).
    Release {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        config: PathBuf,
    },
    /// Stop taking the VIP on this node: a holder hands it over at once
    /// (VIPs removed, then the Lease released); kept across restarts and
    /// reboots until `ha-vip undrain`. Refused for the last healthy node
    /// unless --force.
    Drain {
        /// Drain even the last healthy node, or when the other nodes'
        /// health cannot be read (no VirtualIP object, single-node mode).
        #[arg(long)]
        force: bool,
        /// Configuration file (it names run_dir, where the control socket is).
        #[arg(long, short, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        config: PathBuf,
    },
    /// Let a drained node take the VIP again (once its API server is healthy).
    Undrain {
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        config: PathBuf,
    },
    /// On the holder: hand the VIP over to a healthy standby, or to NODE;
    /// the other nodes keep out for 5 s so that NODE takes it.
    Handover {
        /// The node to hand over to (healthy, undrained, reporting in the
        /// VirtualIP object); any healthy standby when left out.
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
        /// Configuration file.
        #[arg(long, short, value_name = "PATH", default_value = defaults::CONFIG_PATH)]
        config: PathBuf,
    },
    /// Issue a least-privilege credential for ha-vip (see `ha-vip credential issue --help`).
    Credential {
        /// What to do.
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Print the version.
    Version,
}

/// Why a command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is missing, unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// `release` while the daemon runs.
    #[error(
        "ha-vip is running (pid {pid}); stop it first (systemctl stop ha-vip), which also releases"
    )]
    DaemonRunning {
        /// The daemon's pid.
        pid: u32,
    },
    /// The single-instance lock is held by another process, or unusable.
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
    /// `release` could not remove the VIPs.
    #[error("release failed: {0}")]
    Release(String),
    /// The status file could not be read.
    #[error(transparent)]
    Status(#[from] crate::observe::StatusError),
    /// `credential issue` failed; nothing usable was written.
    #[error(transparent)]
    Credential(#[from] crate::credential::IssueError),
    /// `status --cluster` could not read the cluster view.
    #[error("cannot show the cluster view: {0}")]
    Cluster(String),
    /// The daemon could not be reached over its control socket.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The daemon refused the control; the message says why.
    #[error("{0}")]
    Refused(String),
    /// The command has reported already; exit with this code.
    #[error("")]
    Exit(u8),
    /// Writing the command's output failed (e.g. a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Daemon(crate::daemon::DaemonError::Config(_)) => exit::CONFIG,
            Self::Exit(code) => *code,
            Self::Daemon(_)
            | Self::Runtime(_)
            | Self::DaemonRunning { .. }
            | Self::Instance(_)
            | Self::Release(_)
            | Self::Credential(_)
            | Self::Status(_)
            | Self::Cluster(_)
            | Self::Control(_)
            | Self::Refused(_)
            | Self::Output(_) => exit::RUNTIME,
        }
    }
}

/// Loads and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, CliError> {
    Ok(Config::load(path)?)
}

/// What `ha-vip version` and `ha-vip --version` print.
pub fn version() -> String {
    format!("ha-vip {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn paths_default_to_etc() {
        let cli = Cli::try_parse_from(["ha-vip", "check-config"]).expect("parses");
        let Command::CheckConfig { path } = cli.command else {
            panic!("wrong command: {cli:?}");
        };
        assert_eq!(path, Path::new("/etc/ha-vip/config.yaml"));
        let cli = Cli::try_parse_from(["ha-vip", "status", "--json"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Status { json: true, config, cluster: false } if config == Path::new("/etc/ha-vip/config.yaml"))
        );
    }

    #[test]
    fn every_error_has_its_code() {
        assert_eq!(CliError::Exit(3).exit_code(), 3);
        assert_eq!(CliError::DaemonRunning { pid: 7 }.exit_code(), 1);
        let missing = load(Path::new("/nonexistent/ha-vip.yaml")).expect_err("no such file");
        assert_eq!(missing.exit_code(), 78);
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/ha-vip.yaml: ")
        );
    }
}
