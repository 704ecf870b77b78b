//! The per-node "local API server": a TCP forwarder bound to
//! `0.0.0.0:6443` inside a node namespace (so it answers on 127.0.0.1 and on
//! the VIP) that passes bytes to the real kube-apiserver on the host's
//! loopback. Faults are injected here: down (connection refused, existing
//! connections cut), added latency, and connections reset on accept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::netns;

/// Fault switches of one forwarder.
#[derive(Default)]
pub struct Faults {
    delay_ms: AtomicU64,
    reset: AtomicBool,
}

/// A running forwarder; stops when dropped.
pub struct Forwarder {
    faults: Arc<Faults>,
    down: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Starts forwarding `ns`'s `listen` to `target` (in the caller's namespace).
    pub fn start(ns: &str, listen: SocketAddr, target: SocketAddr) -> Self {
        let faults = Arc::new(Faults::default());
        let (down, down_rx) = watch::channel(false);
        let task = tokio::spawn(serve(
            ns.to_string(),
            listen,
            target,
            faults.clone(),
            down_rx,
        ));
        Forwarder { faults, down, task }
    }

    /// Stops (or restarts) listening: "this node's API server died".
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Adds `d` of latency to every chunk in both directions.
    pub fn set_delay(&self, d: Duration) {
        self.faults
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Resets every new connection at once ("API server erroring").
    pub fn set_reset(&self, reset: bool) {
        self.faults.reset.store(reset, Ordering::Relaxed);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind(ns: &str, listen: SocketAddr) -> std::net::TcpListener {
    netns::run_in(ns, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        s.bind(&listen.into())
            .unwrap_or_else(|e| panic!("bind {listen} in {ns}: {e}"));
        s.listen(128).expect("listen");
        s.set_nonblocking(true).expect("nonblocking");
        s.into()
    })
}

async fn serve(
    ns: String,
    listen: SocketAddr,
    target: SocketAddr,
    faults: Arc<Faults>,
    mut down: watch::Receiver<bool>,
) {
    loop {
        while *down.borrow_and_update() {
            if down.changed().await.is_err() {
                return;
            }
        }
        let listener = TcpListener::from_std(bind(&ns, listen)).expect("tokio listener");
        // Connections of this generation end when the forwarder goes down.
        let (cut, cut_rx) = watch::channel(false);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((conn, _)) = accepted else { continue };
                    if faults.reset.load(Ordering::Relaxed) {
                        let _ = conn.set_zero_linger();
                        drop(conn);
                        continue;
                    }
                    tokio::spawn(pipe(conn, target, faults.clone(), cut_rx.clone()));
                }
                changed = down.changed() => {
                    if changed.is_err() || *down.borrow() {
                        break;
                    }
                }
            }
        }
        drop(listener);
        let _ = cut.send(true);
    }
}

async fn pipe(
    client: TcpStream,
    target: SocketAddr,
    faults: Arc<Faults>,
    mut cut: watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = copy(cr, sw, faults.clone()) => {}
        _ = copy(sr, cw, faults) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
