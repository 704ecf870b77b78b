//! Elector semantics on a paused clock against the in-memory store.

use std::time::SystemTime;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, sleep, timeout};

use super::*;
use crate::kube::{KubeError, Operation};

const T: Timings = Timings {
    duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(500),
};

struct Running {
    campaign: watch::Sender<bool>,
    events: mpsc::Receiver<LeaseEvent>,
    task: JoinHandle<()>,
}

fn start(store: &FakeLeaseStore, id: &str, campaign: bool) -> Running {
    start_with(store.clone(), id, campaign)
}

fn start_with<S: LeaseStore>(store: S, id: &str, campaign: bool) -> Running {
    let (ctx, crx) = watch::channel(campaign);
    let (etx, erx) = mpsc::channel(1024);
    let task = tokio::spawn(Elector::new(store, id, T).run(crx, etx));
    Running {
        campaign: ctx,
        events: erx,
        task,
    }
}

impl Running {
    /// The next event matching `f`, skipping others.
    async fn until(&mut self, f: impl Fn(&LeaseEvent) -> bool) -> LeaseEvent {
        loop {
            let ev = self.events.recv().await.expect("elector stopped");
            if f(&ev) {
                return ev;
            }
        }
    }
}

fn held_by(holder: &str) -> LeaseRecord {
    held_for(holder, 4)
}

fn held_for(holder: &str, secs: u32) -> LeaseRecord {
    LeaseRecord {
        holder: holder.into(),
        duration_seconds: secs,
        acquire_time: Some(SystemTime::now()),
        renew_time: Some(SystemTime::now()),
        transitions: 5,
    }
}

fn released() -> LeaseRecord {
    let mut r = held_by("");
    r.duration_seconds = 1;
    r
}

async fn acquired(r: &mut Running) -> Instant {
    let LeaseEvent::Acquired { sent_at } = r.until(is_acquired).await else {
        unreachable!()
    };
    sent_at
}

fn is_acquired(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Acquired { .. })
}

fn is_lost(e: &LeaseEvent) -> bool {
    matches!(e, LeaseEvent::Lost { .. })
}

mod create_race;
mod election;
mod foreign;
mod release;
