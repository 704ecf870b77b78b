//! Process-wide protections set before anything reads a secret.

/// Makes this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core
/// dump, no ptrace attach and no `/proc/PID/mem` by other processes of the
/// same user, so the Kubernetes credential's key or token cannot leak
/// through them. Called first thing in `main`, before any file is read.
pub fn forbid_core_dumps() -> Result<(), nix::Error> {
    nix::sys::prctl::set_dumpable(false)
}
