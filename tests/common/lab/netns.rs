//! Entering a named network namespace on one thread.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, and a socket keeps the
//! namespace it was created in: so a listener bound on a short-lived thread
//! inside a node namespace can be served from any thread afterwards.

use std::fs::File;
use std::io;

use nix::sched::{CloneFlags, setns};

/// Moves the calling thread into `/run/netns/NAME`.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` on a fresh thread inside namespace `name` and returns its result.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name).unwrap_or_else(|e| panic!("enter netns {name}: {e}"));
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

/// Spawns a long-lived thread inside namespace `name`.
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name).unwrap_or_else(|e| panic!("enter netns {name}: {e}"));
        f()
    })
}
