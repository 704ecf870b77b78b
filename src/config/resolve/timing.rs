//! Lease and announcement periods, and the relations between them that the
//! safety argument (ARCHITECTURE.md) depends on.

use std::time::Duration;

use super::values::fmt_d;
use super::{Resolver, at, d, pos};
use crate::config::file;
use crate::config::{Announce, ConfigError, FenceMode, Lease};

impl Resolver<'_> {
    pub(super) fn lease(&self, l: &file::Lease, fence: FenceMode) -> Result<Lease, ConfigError> {
        let name = self.k8s_name(&l.name, "lease.name", d::LEASE_NAME)?;
        let namespace = self.k8s_name(&l.namespace, "lease.namespace", d::LEASE_NAMESPACE)?;
        let duration = self.duration(&l.duration, "lease.duration", d::LEASE_DURATION)?;
        let renew_deadline = self.duration(
            &l.renew_deadline,
            "lease.renew_deadline",
            d::LEASE_RENEW_DEADLINE,
        )?;
        let retry_period =
            self.duration(&l.retry_period, "lease.retry_period", d::LEASE_RETRY_PERIOD)?;
        if duration.subsec_nanos() != 0 {
            return Err(self.err(
                pos(&l.duration),
                format!("lease.duration: {} is not a whole number of seconds; expected e.g. 4s (the Lease stores leaseDurationSeconds)", fmt_d(duration)),
            ));
        }
        // A renewal may take up to the request timeout (half the deadline).
        // With the lifetime fence a whole second of VIP lifetime must still
        // be left after it; with the precise fence the lifetime reaches past
        // the deadline (defaults::PRECISE_OUTER_SLACK), so only the request
        // timeout counts.
        if renew_deadline < fence.min_renew_deadline() {
            let why = match fence {
                FenceMode::Lifetime => {
                    "a renewal may take up to half of it, and the VIP's kernel lifetime after it is whole seconds, at least 1; fence.mode: precise allows 1s"
                }
                FenceMode::Precise => {
                    "a renewal may take up to half of it, and an API request needs at least 500ms"
                }
            };
            return Err(self.err(
                pos(&l.renew_deadline),
                format!("lease.renew_deadline: {} is too short with fence.mode: {fence}; expected at least {} ({why})", fmt_d(renew_deadline), fmt_d(fence.min_renew_deadline())),
            ));
        }
        if retry_period < d::MIN_RETRY_PERIOD {
            return Err(self.err(
                pos(&l.retry_period),
                format!("lease.retry_period: {} is too short (every period costs the API server a request from each node); expected at least {}", fmt_d(retry_period), fmt_d(d::MIN_RETRY_PERIOD)),
            ));
        }
        // client-go's rule: a holder must get more than one renewal attempt in
        // before its deadline.
        if retry_period.mul_f64(1.2) > renew_deadline {
            return Err(self.err(
                pos(&l.retry_period),
                format!(
                    "lease.retry_period: {} is too long for renew_deadline {}; expected renew_deadline >= 1.2 x retry_period, e.g. retry_period: 500ms",
                    fmt_d(retry_period),
                    fmt_d(renew_deadline)
                ),
            ));
        }
        if duration < renew_deadline + fence.margin() {
            let at = if l.duration.is_some() {
                pos(&l.duration)
            } else {
                pos(&l.renew_deadline)
            };
            let (holds, example) = match fence {
                FenceMode::Lifetime => (
                    "the VIP until its renew deadline plus the kernel's deletion latency (fence.mode: lifetime)",
                    "duration: 4s with renew_deadline: 2s, or fence.mode: precise",
                ),
                FenceMode::Precise => (
                    "serving the VIP until its renew deadline plus the nftables fence's margin (fence.mode: precise)",
                    "duration: 2s with renew_deadline: 1s",
                ),
            };
            return Err(self.err(
                at,
                format!(
                    "lease.duration: {} must exceed lease.renew_deadline {} by at least {}: a frozen holder keeps {holds}, and a standby takes over after the lease duration; expected e.g. {example}",
                    fmt_d(duration),
                    fmt_d(renew_deadline),
                    fmt_d(fence.margin())
                ),
            ));
        }
        Ok(Lease {
            name,
            namespace,
            duration,
            renew_deadline,
            retry_period,
        })
    }

    pub(super) fn announce(&self, a: &file::Announce) -> Result<Announce, ConfigError> {
        let count = match &a.count {
            None => d::ANNOUNCE_COUNT,
            Some(s) if (1..=20).contains(&s.value) => s.value,
            Some(s) => {
                return Err(self.err(
                    at(s),
                    format!(
                        "announce.count: {} is out of range; expected 1 to 20 packets per burst",
                        s.value
                    ),
                ));
            }
        };
        let spacing = self.duration(&a.spacing, "announce.spacing", d::ANNOUNCE_SPACING)?;
        if spacing > Duration::from_secs(5) {
            return Err(self.err(
                pos(&a.spacing),
                format!(
                    "announce.spacing: {} is too long; expected at most 5s between packets of one burst",
                    fmt_d(spacing)
                ),
            ));
        }
        let second_burst_delay = self.duration(
            &a.second_burst_delay,
            "announce.second_burst_delay",
            d::ANNOUNCE_SECOND_BURST_DELAY,
        )?;
        if second_burst_delay <= spacing * count {
            return Err(self.err(
                pos(&a.second_burst_delay),
                format!("announce.second_burst_delay: {} does not come after the first burst ({} x {}); expected a longer delay, e.g. 2s", fmt_d(second_burst_delay), count, fmt_d(spacing)),
            ));
        }
        let refresh = match &a.refresh_interval {
            None => d::ANNOUNCE_REFRESH_INTERVAL,
            Some(s) => self.parse_duration(s, "announce.refresh_interval", true)?,
        };
        Ok(Announce {
            count,
            spacing,
            second_burst_delay,
            refresh_interval: (!refresh.is_zero()).then_some(refresh),
        })
    }
}
