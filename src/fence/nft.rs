// PLACEHOLDER: replaced by the nft branch at merge
//! The precise fence in nftables (placeholder until the nft branch lands).

use std::net::IpAddr;
use std::time::SystemTime;

use super::{FenceError, PreciseFence};

/// ha-vip's nftables table (placeholder: never opens).
#[derive(Debug)]
pub struct NftFence {
    _never: std::convert::Infallible,
}

impl NftFence {
    /// Opens the nftables socket (placeholder: always unsupported).
    pub fn open() -> Result<NftFence, FenceError> {
        Err(FenceError::Unsupported {
            detail: "placeholder".to_string(),
        })
    }
}

impl PreciseFence for NftFence {
    async fn arm(&self, _vips: &[IpAddr], _deadline: SystemTime) -> Result<(), FenceError> {
        match self._never {}
    }

    async fn clear(&self) -> Result<(), FenceError> {
        match self._never {}
    }
}
