//! ha-vip keeps a Kubernetes control plane reachable at one virtual IP.
//!
//! The node whose local API server is healthy and that holds a
//! `coordination.k8s.io/v1` Lease owns the VIP; the kernel itself removes the
//! VIP when its lifetime runs out, so a frozen or killed holder cannot keep it.

pub mod announce;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod credential;
pub mod daemon;
pub mod fence;
pub mod hardening;
pub mod health;
pub mod instance;
pub mod kube;
pub mod lease;
pub mod logging;
pub mod machine;
pub mod observe;
pub mod role;
pub mod sleep;
pub mod systemd;
pub mod text;
pub mod vip;
