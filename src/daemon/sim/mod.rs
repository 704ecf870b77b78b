//! Deterministic simulation of the real daemon.
//!
//! Two or three nodes, each running the real main loop ([`super::serve`]),
//! [`crate::machine::Machine`], effects, drift guard, health monitor and
//! lease [`crate::lease::Elector`], share one tokio runtime on the paused
//! clock. Only the outside world is simulated: each node's kernel address
//! table ([`world`]), the network to the API server and the server itself
//! ([`lease`], around the in-memory Lease store), and the process's life
//! ([`process`]: freezes, kills). A seed picks the cluster and a schedule
//! of faults ([`faults`]); the invariants ([`world`], and liveness in
//! [`faults`]) are checked at every instant an address comes or goes and
//! every 10 ms of simulated time.
//!
//! `HA_VIP_SIM_SEEDS=N` runs N seeds (default below), `HA_VIP_SIM_SEED=S`
//! replays one with the daemon's log, `HA_VIP_SIM_FAULTS=late-apply,two-instances`
//! adds faults that need the fixes of issue 10 items 1 and 4,
//! `HA_VIP_SIM_PROFILE=1` runs only the fast-renewal lease timing.

mod faults;
mod fence;
mod lease;
mod node;
mod options;
mod process;
mod rng;
mod world;

#[cfg(test)]
mod tests;

pub(super) use faults::run_seed;
pub(super) use options::Options;

/// Seeds run by default: about a minute in a debug build on a loaded 2-core
/// machine (0.03 s of CPU per seed); CI jobs set `HA_VIP_SIM_SEEDS=3000`.
const DEFAULT_SEEDS: u64 = 500;

/// The outcome of one seed.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) seed: u64,
    pub(super) violations: Vec<String>,
    pub(super) trace: Vec<String>,
    /// What the seed exercised, for the coverage summary.
    pub(super) stats: options::Stats,
}

/// The one command that replays `seed` with `opts`.
pub(super) fn replay_command(seed: u64, opts: &Options) -> String {
    let extra = opts.env();
    format!(
        "HA_VIP_SIM_SEED={seed}{extra} cargo nextest run --lib daemon::sim::tests::random_seeds --no-capture"
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// Runs the seeds the environment asks for; panics with the first failure.
pub(super) fn run_from_env() {
    let opts = Options::from_env();
    let seeds: Vec<u64> = match env_u64("HA_VIP_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("HA_VIP_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let replaying = seeds.len() == 1;
    let started = std::time::Instant::now();
    let mut total = options::Stats::default();
    for seed in seeds.iter().copied() {
        let out = run_seed(seed, &opts, replaying);
        total.add(&out.stats);
        if !out.violations.is_empty() {
            let shown = if replaying {
                0
            } else {
                out.trace.len().saturating_sub(400)
            };
            panic!(
                "seed {} broke an invariant:\n  {}\nreplay: {}\nevent trace{}:\n{}",
                out.seed,
                out.violations.join("\n  "),
                replay_command(seed, &opts),
                if shown > 0 { " (last 400 lines)" } else { "" },
                out.trace[shown..].join("\n"),
            );
        }
    }
    eprintln!(
        "{} seeds in {:.1}s, no violation; {total}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}
