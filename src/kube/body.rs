//! Bounded input from the network: answers, error answers, probe answers
//! and watch lines are read up to [`MAX_BODY`], so a broken or hostile
//! server on the API server's port cannot grow memory or busy the thread.

use super::{KubeError, Operation};

/// Largest answer, error answer, probe answer or watch line read from the
/// network: a Lease is under 1 KiB, a /readyz answer a few KiB, so 1 MiB is
/// plenty, and a broken or hostile server cannot grow our memory past it.
pub const MAX_BODY: usize = 1 << 20;

/// Reads the body of `resp`, at most `cap` bytes. `Ok(Err(n))` when it is
/// longer: `n` bytes were read and the rest is left unread (the connection
/// is dropped with the response).
pub(crate) async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<Result<Vec<u8>, usize>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(Err(0));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(Err(body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

/// The error for an answer or a watch line longer than [`MAX_BODY`].
pub(super) fn too_large(op: &Operation, what: &str) -> KubeError {
    KubeError::Transport {
        op: op.clone(),
        reason: format!(
            "{what} is larger than {} MiB; not read further (is k8s.api_server a kube-apiserver?)",
            MAX_BODY >> 20
        ),
    }
}

/// Splits a watch body into lines, looking for the newline only in bytes
/// that arrived since the last look, so a long line costs linear time, not
/// quadratic.
#[derive(Default)]
pub(super) struct Lines {
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
}

impl Lines {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, newline included.
    pub(super) fn next_line(&mut self) -> Option<Vec<u8>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                Some(self.buf.drain(..=end).collect())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Bytes waiting for their newline.
    pub(super) fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn lines_split_across_chunks_and_scan_each_byte_once() {
        let mut l = Lines::default();
        l.push(b"{\"a\":");
        assert_eq!(l.next_line(), None);
        assert_eq!(l.scanned, 5);
        l.push(b"1}\n{\"b\"");
        assert_eq!(l.next_line().as_deref(), Some(&b"{\"a\":1}\n"[..]));
        assert_eq!(l.next_line(), None);
        assert_eq!(l.pending(), 4);
        l.push(b":2}\n\n");
        assert_eq!(l.next_line().as_deref(), Some(&b"{\"b\":2}\n"[..]));
        assert_eq!(l.next_line().as_deref(), Some(&b"\n"[..]));
        assert_eq!(l.next_line(), None);
    }
}
