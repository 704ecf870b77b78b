//! What a run of seeds is asked to do, and what it exercised.

use crate::config::FenceMode;

/// Faults beyond the default set (they need fixes of issue 10).
#[derive(Debug, Clone, Default)]
pub(in crate::daemon) struct Options {
    /// Kernel requests may wait seconds for the RTNL lock, and a freeze
    /// may stop the guard between computing a lifetime and sending it
    /// (item 1).
    pub(in crate::daemon) late_apply: bool,
    /// A second `ha-vip run` may start on a node (item 4); like the real
    /// one, it meets the instance lock in `run_dir` first.
    pub(in crate::daemon) two_instances: bool,
    /// The Lease may be deleted while another node's create is in flight
    /// (see `Fault::DeleteLease`).
    pub(in crate::daemon) early_delete: bool,
    /// Only this lease timing profile (`HA_VIP_SIM_PROFILE`, an index into
    /// `PROFILES`; 1 is the fast-renewal one of item 6).
    pub(in crate::daemon) profile: Option<usize>,
    /// The fence the daemons run (`HA_VIP_SIM_FENCE`); by default a seed
    /// picks it: lifetime for one seed in four, precise for the others.
    pub(in crate::daemon) fence: Option<FenceMode>,
}

impl Options {
    pub(super) fn from_env() -> Self {
        let faults = std::env::var("HA_VIP_SIM_FAULTS").unwrap_or_default();
        let has = |f: &str| faults.split(',').any(|x| x.trim() == f);
        Self {
            late_apply: has("late-apply"),
            two_instances: has("two-instances"),
            early_delete: has("early-delete"),
            profile: std::env::var("HA_VIP_SIM_PROFILE")
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .filter(|&p: &usize| p <= PROFILES.len()),
            fence: match std::env::var("HA_VIP_SIM_FENCE").as_deref().map(str::trim) {
                Ok("precise") => Some(FenceMode::Precise),
                Ok("lifetime") => Some(FenceMode::Lifetime),
                _ => None,
            },
        }
    }

    /// The environment that selects these options, for the replay command.
    pub(super) fn env(&self) -> String {
        let mut f = Vec::new();
        if self.late_apply {
            f.push("late-apply");
        }
        if self.two_instances {
            f.push("two-instances");
        }
        if self.early_delete {
            f.push("early-delete");
        }
        let mut env = String::new();
        if !f.is_empty() {
            env = format!(" HA_VIP_SIM_FAULTS={}", f.join(","));
        }
        if let Some(p) = self.profile {
            env.push_str(&format!(" HA_VIP_SIM_PROFILE={p}"));
        }
        if let Some(f) = self.fence {
            env.push_str(&format!(" HA_VIP_SIM_FENCE={f}"));
        }
        env
    }

    /// The fence `seed` runs with. Chosen from the seed, not its random
    /// stream, so a seed's faults are the same in both modes.
    pub(super) fn fence_of(&self, seed: u64) -> FenceMode {
        self.fence.unwrap_or(if seed % 4 == 3 {
            FenceMode::Lifetime
        } else {
            FenceMode::Precise
        })
    }

    /// The lease timing of `seed`, given the one its random stream picked:
    /// one precise seed in three runs the fast timing the precise fence
    /// allows (except with late-apply).
    pub(super) fn lease_of(&self, seed: u64, picked: usize) -> (u64, u64, u64) {
        match self.profile {
            Some(p) if p == PROFILES.len() => FAST_PROFILE,
            Some(p) => PROFILES[p],
            // Not with late-apply: its kernel takes up to 4 s per request,
            // longer than the fast renew deadline itself, and a holder that
            // slow keeps renewing without serving (seed 46 starved the
            // health report that way): the fast timing presumes a kernel
            // that answers well within the renew deadline.
            None if self.fence_of(seed) == FenceMode::Precise
                && seed % 3 == 1
                && !self.late_apply =>
            {
                FAST_PROFILE
            }
            None => PROFILES[picked],
        }
    }
}

/// (lease duration, renew deadline, retry period) in ms; the second has a
/// retry period under the daemon's 200 ms removal retry (item 6).
pub(super) const PROFILES: [(u64, u64, u64); 3] =
    [(4000, 2000, 500), (4000, 2000, 150), (6000, 3000, 1000)];

/// The fast timing only the precise fence allows (`HA_VIP_SIM_PROFILE=3`).
pub(super) const FAST_PROFILE: (u64, u64, u64) = (2000, 1000, 250);

/// What the seeds exercised.
#[derive(Debug, Default, Clone)]
pub(in crate::daemon) struct Stats {
    pub(in crate::daemon) seeds: u64,
    pub(in crate::daemon) faults: u64,
    pub(in crate::daemon) handovers: u64,
    pub(in crate::daemon) liveness_checked: u64,
    pub(in crate::daemon) precise_seeds: u64,
    pub(in crate::daemon) clock_steps: u64,
    /// Restarts that resumed healthy from `run_dir/health.json`.
    pub(in crate::daemon) resumed: u64,
}

impl Stats {
    pub(super) fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.faults += o.faults;
        self.handovers += o.handovers;
        self.liveness_checked += o.liveness_checked;
        self.precise_seeds += o.precise_seeds;
        self.clock_steps += o.clock_steps;
        self.resumed += o.resumed;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults injected, {} lease handovers, {} holder failures checked for liveness, {} seeds with the precise fence, {} clock steps, {} restarts resumed healthy",
            self.faults,
            self.handovers,
            self.liveness_checked,
            self.precise_seeds,
            self.clock_steps,
            self.resumed
        )
    }
}
