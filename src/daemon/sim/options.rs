//! What a run of seeds is asked to do, and what it exercised.

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
                .filter(|&p: &usize| p < PROFILES.len()),
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
        env
    }
}

/// (lease duration, renew deadline, retry period) in ms; the second has a
/// retry period under the daemon's 200 ms removal retry (item 6).
pub(super) const PROFILES: [(u64, u64, u64); 3] =
    [(4000, 2000, 500), (4000, 2000, 150), (6000, 3000, 1000)];

/// What the seeds exercised.
#[derive(Debug, Default, Clone)]
pub(in crate::daemon) struct Stats {
    pub(in crate::daemon) seeds: u64,
    pub(in crate::daemon) faults: u64,
    pub(in crate::daemon) handovers: u64,
    pub(in crate::daemon) liveness_checked: u64,
    /// Restarts that resumed healthy from `run_dir/health.json`.
    pub(in crate::daemon) resumed: u64,
}

impl Stats {
    pub(super) fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.faults += o.faults;
        self.handovers += o.handovers;
        self.liveness_checked += o.liveness_checked;
        self.resumed += o.resumed;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults injected, {} lease handovers, {} holder failures checked for liveness, \
             {} restarts resumed healthy",
            self.faults, self.handovers, self.liveness_checked, self.resumed
        )
    }
}
