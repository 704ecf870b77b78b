//! Writes the man pages and shell completions the packages ship, generated
//! from `ha_vip::cli::Cli` so they cannot drift from the real command line.
//!
//! ```sh
//! cargo run --example gen-docs -- OUTDIR
//! ```
//!
//! OUTDIR/man/ha-vip.8, OUTDIR/man/ha-vip-<command>.8 (one per command, which
//! the SUBCOMMANDS section of ha-vip(8) refers to), OUTDIR/completions/
//! {ha-vip.bash,_ha-vip,ha-vip.fish}. `make docs` runs it; `make deb` and
//! `make rpm` package the result.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use ha_vip::cli::{Cli, exit};
use ha_vip::config::defaults;
use roff::{Roff, bold, italic, roman};

const BIN: &str = "ha-vip";
/// Section 8: system administration commands (a daemon run as root).
const SECTION: &str = "8";
const MANUAL: &str = "System Administration";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUTDIR");
        return ExitCode::from(exit::USAGE);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: cannot write into {}: {e}", out.to_string_lossy());
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// Writes every page and completion script; returns the files written.
fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    // As clap_mangen::generate_to does: no `help` subcommand in the pages,
    // and build() fills in the subcommands' names ("ha-vip-run").
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("ha-vip {}", env!("CARGO_PKG_VERSION"));
    let date = build_date();

    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir)?;
    let mut written = Vec::new();

    let main_page = man_dir.join(format!("ha-vip.{SECTION}"));
    let mut file = fs::File::create(&main_page)?;
    main_man(&cmd, &date, &source, &mut file)?;
    file.flush()?;
    written.push(main_page);

    // One page per command, and per nested command (`credential issue`),
    // which its parent's SUBCOMMANDS section refers to.
    let subs = cmd.get_subcommands().filter(|s| !s.is_hide_set());
    let nested = subs.flat_map(|s| std::iter::once(s).chain(s.get_subcommands()));
    for sub in nested.filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let man = Man::new(sub.clone())
            .section(SECTION)
            .date(&date)
            .source(&source)
            .manual(MANUAL);
        written.push(man.generate_to(&man_dir)?);
    }

    let completions = out.join("completions");
    fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, BIN, &completions)?;
        if shell == Shell::Bash {
            fix_bash_hyphen(&path)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// clap_complete 4.6 spells a hyphenated binary name two ways in its bash
/// script: the loop that finds the subcommand arrives at `ha__vip__subcmd__run`,
/// but the case arms are labelled `ha__subcmd__vip__subcmd__run`, so no
/// option of any subcommand ever completes (clap-rs/clap#6421). Spell the
/// labels the way the loop does; once clap is fixed this changes nothing.
/// package-check completes `ha-vip status --` to prove it.
fn fix_bash_hyphen(path: &Path) -> io::Result<()> {
    let script = fs::read_to_string(path)?;
    let wrong = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    fs::write(path, script.replace(&wrong, &right))
}

/// ha-vip(8): clap_mangen's sections, with a real description and the
/// sections an operator looks for (exit status, signals, files, see also).
fn main_man(cmd: &clap::Command, date: &str, source: &str, w: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .date(date)
        .source(source)
        .manual(MANUAL);
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    description().to_writer(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    operations().to_writer(w)?;
    Ok(())
}

/// The pages' date, YYYY-MM-DD: SOURCE_DATE_EPOCH when set (reproducible
/// builds; the Makefile sets it to the last commit's time), else today.
fn build_date() -> String {
    let when = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(SystemTime::now, |secs| {
            UNIX_EPOCH + Duration::from_secs(secs)
        });
    let mut date = humantime::format_rfc3339_seconds(when).to_string();
    date.truncate("YYYY-MM-DD".len());
    date
}

fn description() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold("ha-vip"),
        roman(
            " keeps a Kubernetes control plane reachable at one virtual IP (VIP). \
             Every control-plane node runs it: it probes its own API server's /readyz \
             and, while healthy, competes for a coordination.k8s.io/v1 Lease. \
             The holder adds the VIP to its interface with a finite lifetime that it \
             extends only after each successful Lease renewal, so the kernel removes \
             the VIP from a holder that freezes, crashes or is killed; then it announces \
             the VIP with gratuitous ARP and unsolicited neighbour advertisements.",
        ),
    ]);
    r.control("PP", []);
    r.text([
        roman("The daemon normally runs as the systemd service "),
        bold("ha-vip.service"),
        roman(". Stopping it (SIGTERM) is a planned handover: it removes its VIPs and releases the Lease so another node takes over at once. The package does not enable the service: edit "),
        italic(defaults::CONFIG_PATH),
        roman(", check it with "),
        bold("ha-vip check-config"),
        roman(", then run "),
        bold("systemctl enable --now ha-vip"),
        roman("."),
    ]);
    r
}

fn operations() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        (exit::OK, "Success."),
        (
            exit::RUNTIME,
            "A runtime error: the kernel, the network or the API server failed; the message says which.",
        ),
        (exit::USAGE, "Invalid arguments."),
        (
            exit::CONFIG,
            "The configuration is missing, unreadable or invalid (EX_CONFIG); systemd does not restart the service for it.",
        ),
    ] {
        r.control("TP", []);
        r.text([bold(code.to_string())]);
        r.text([roman(meaning)]);
    }

    r.control("SH", ["SIGNALS"]);
    for (signal, meaning) in [
        (
            "SIGTERM, SIGINT",
            "Hand over: remove the VIPs, release the Lease, exit.",
        ),
        (
            "SIGHUP",
            "Re-read the configuration; an invalid one is logged and the running one kept.",
        ),
    ] {
        r.control("TP", []);
        r.text([bold(signal)]);
        r.text([roman(meaning)]);
    }

    r.control("SH", ["FILES"]);
    let status = format!("{}/status.json", defaults::RUN_DIR);
    for (path, meaning) in [
        (
            defaults::CONFIG_PATH,
            "The configuration; every key with its default is documented in it.",
        ),
        (
            status.as_str(),
            "What the daemon is doing, read by ha-vip status (run_dir in the configuration).",
        ),
        (
            "/lib/systemd/system/ha-vip.service",
            "The systemd unit (/usr/lib/systemd/system on RPM systems).",
        ),
        (
            "/usr/share/doc/ha-vip/rbac.yaml",
            "The least-privilege Role and RoleBinding for the Lease.",
        ),
        (
            "/usr/share/doc/ha-vip/operations.md",
            "Installing on a kubeadm cluster, lease timings, upgrades, incidents, every error message.",
        ),
    ] {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(meaning)]);
    }

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("systemd.service"),
        roman("(5), "),
        bold("ip-address"),
        roman("(8)"),
    ]);
    r
}
