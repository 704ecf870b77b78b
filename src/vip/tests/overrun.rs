//! The link re-read after lost notifications (ENOBUFS), against a link
//! lookup that answers when the test says so, so that the guard's
//! `select!` dropping the watcher's future in the middle of the re-read
//! can be reproduced exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::SocketAddr;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::vip::netlink::LinkInfo;
use crate::vip::watch::{Events, LinkLookup, Tracker};
use crate::vip::{Cause, NetEvent};

type Message = (NetlinkMessage<RouteNetlinkMessage>, SocketAddr);

/// A link lookup that blocks until the test sets its answer.
struct Lookup {
    answer: watch::Receiver<Option<Result<LinkInfo, Cause>>>,
    calls: Arc<AtomicU32>,
}

impl LinkLookup for Lookup {
    async fn lookup(&self, _interface: &str) -> Result<LinkInfo, Cause> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut answer = self.answer.clone();
        let got = answer
            .wait_for(Option::is_some)
            .await
            .expect("the test keeps the answer's sender");
        got.clone().expect("waited for Some")
    }
}

struct Rig {
    events: Events<mpsc::UnboundedReceiver<Message>, Lookup>,
    messages: mpsc::UnboundedSender<Message>,
    answer: watch::Sender<Option<Result<LinkInfo, Cause>>>,
    calls: Arc<AtomicU32>,
}

/// eth0 (index 7) with a carrier, as the watcher last saw it.
fn rig() -> Rig {
    let (messages, rx) = mpsc::unbounded();
    let (answer, answers) = watch::channel(None);
    let calls = Arc::new(AtomicU32::new(0));
    let lookup = Lookup {
        answer: answers,
        calls: Arc::clone(&calls),
    };
    let tracker = Tracker::new("eth0", &[], Some(7), Some(true));
    Rig {
        events: Events::new(tracker, lookup, rx),
        messages,
        answer,
        calls,
    }
}

fn overrun() -> Message {
    let msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::Overrun(Vec::new()),
    );
    (msg, SocketAddr::new(0, 0))
}

fn link(up: bool) -> Option<Result<LinkInfo, Cause>> {
    Some(Ok(LinkInfo {
        index: 7,
        mac: None,
        up,
    }))
}

impl Rig {
    /// Events until none comes for a second.
    async fn drain(&mut self, seen: &mut Vec<NetEvent>) {
        while let Ok(Some(e)) = timeout(Duration::from_secs(1), self.events.next()).await {
            seen.push(e);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn carrier_loss_hidden_in_an_overrun_is_reported_after_a_dropped_reread() {
    let mut r = rig();
    r.messages.unbounded_send(overrun()).unwrap();
    // Poll `next` and drop it whenever it waits, as the guard's `select!`
    // does when a command arrives, until a re-read was dropped in flight.
    let mut seen = Vec::new();
    loop {
        match timeout(Duration::from_millis(10), r.events.next()).await {
            Ok(Some(e)) => seen.push(e),
            Ok(None) => panic!("the stream ended"),
            Err(_) if r.calls.load(Ordering::SeqCst) > 0 => break,
            Err(_) => panic!("no re-read of the link after the overrun; events: {seen:?}"),
        }
    }
    // The kernel now shows the carrier lost during the overrun.
    r.answer.send_replace(link(false));
    r.drain(&mut seen).await;
    assert_eq!(
        seen,
        [NetEvent::Overrun, NetEvent::LinkDown],
        "the carrier loss hidden in the overrun must be reported"
    );
    assert_eq!(
        r.calls.load(Ordering::SeqCst),
        2,
        "read again after the drop"
    );
}

#[tokio::test(start_paused = true)]
async fn interface_deleted_during_an_overrun_is_link_down() {
    let mut r = rig();
    r.answer
        .send_replace(Some(Err(Cause::NoInterface("eth0".into()))));
    r.messages.unbounded_send(overrun()).unwrap();
    let mut seen = Vec::new();
    r.drain(&mut seen).await;
    assert_eq!(seen, [NetEvent::Overrun, NetEvent::LinkDown]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_reread_is_retried() {
    let mut r = rig();
    r.answer
        .send_replace(Some(Err(Cause::Errno(nix::libc::EINTR))));
    r.messages.unbounded_send(overrun()).unwrap();
    let mut seen = Vec::new();
    assert_eq!(r.events.next().await, Some(NetEvent::Overrun));
    // Fails, waits, fails again: no event, no busy loop.
    assert!(
        timeout(Duration::from_millis(600), r.events.next())
            .await
            .is_err()
    );
    let failed = r.calls.load(Ordering::SeqCst);
    assert!((2..=4).contains(&failed), "{failed} re-reads in 600 ms");
    r.answer.send_replace(link(false));
    r.drain(&mut seen).await;
    assert_eq!(seen, [NetEvent::LinkDown]);
    // An unchanged link after an overrun is no event.
    r.messages.unbounded_send(overrun()).unwrap();
    r.drain(&mut seen).await;
    assert_eq!(seen, [NetEvent::LinkDown, NetEvent::Overrun]);
}
