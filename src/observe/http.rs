//! A minimal HTTP/1.1 responder for `GET /metrics`.
//!
//! One request per connection, a bounded request head, a deadline per
//! connection and a bounded number of connections: a slow or garbage client
//! costs a few KiB for a few seconds and never blocks the daemon.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// Largest request head accepted (request line plus headers).
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request and read the response.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// What prometheus-client encodes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address is taken.
    #[error(
        "failed to serve metrics on {addr}: address in use (set metrics.listen to a free address or metrics.enabled: false)"
    )]
    AddrInUse {
        /// The configured address.
        addr: SocketAddr,
    },
    /// Any other bind failure.
    #[error(
        "failed to serve metrics on {addr}: {source} (check metrics.listen, or set metrics.enabled: false)"
    )]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
}

/// A bound metrics listener; [`MetricsServer::run`] serves it.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port); fails now, at start-up, not later.
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                MetricsError::AddrInUse { addr }
            } else {
                MetricsError::Bind { addr, source }
            }
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `metrics` until the future is dropped (abort the task to stop).
    pub async fn run(self, metrics: Metrics) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: too many connections, closing");
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let served = tokio::time::timeout(CONNECTION_DEADLINE, serve(stream, &metrics));
                match served.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: connection failed"),
                    Err(_) => tracing::debug!(%peer, "metrics: client too slow, closed"),
                }
                drop(permit);
            });
        }
    }
}

/// Reads one request head and answers it.
async fn serve(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let response = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(()); // closed before a complete request
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_head_end(&head) {
            break respond(&head[..end], metrics);
        }
        if head.len() > MAX_HEAD {
            break Response::text(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            );
        }
    };
    stream.write_all(&response.bytes).await?;
    stream.shutdown().await
}

/// End of the head: the first empty line (CRLF or bare LF, RFC 9112 §2.2).
fn find_head_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

struct Response {
    bytes: Vec<u8>,
}

impl Response {
    fn new(
        code: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        head_only: bool,
    ) -> Self {
        let mut bytes = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
        for (name, value) in headers {
            bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        bytes.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        if !head_only {
            bytes.extend_from_slice(body);
        }
        Self { bytes }
    }

    fn text(code: u16, reason: &str, body: &str) -> Self {
        Self::new(
            code,
            reason,
            &[("Content-Type", "text/plain; charset=utf-8")],
            body.as_bytes(),
            false,
        )
    }
}

fn respond(head: &[u8], metrics: &Metrics) -> Response {
    let bad = || Response::text(400, "Bad Request", "bad request\n");
    let Ok(head) = std::str::from_utf8(head) else {
        return bad();
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad();
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(505, "HTTP Version Not Supported", "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Response::text(404, "Not Found", "not found; metrics are at /metrics\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Response::new(
                405,
                "Method Not Allowed",
                &[("Allow", "GET, HEAD"), ("Content-Type", "text/plain")],
                b"only GET and HEAD\n",
                false,
            );
        }
    };
    Response::new(
        200,
        "OK",
        &[("Content-Type", CONTENT_TYPE)],
        metrics.encode().as_bytes(),
        head_only,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_line(head: &str) -> String {
        let r = respond(head.as_bytes(), &Metrics::new(&[]));
        let text = String::from_utf8(r.bytes).unwrap();
        text.lines().next().unwrap().to_owned()
    }

    #[test]
    fn requests_are_routed() {
        assert_eq!(
            status_line("GET /metrics HTTP/1.1\r\nHost: x"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(status_line("GET /metrics?x=1 HTTP/1.0"), "HTTP/1.1 200 OK");
        assert_eq!(status_line("GET / HTTP/1.1"), "HTTP/1.1 404 Not Found");
        assert_eq!(
            status_line("POST /metrics HTTP/1.1"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(status_line("GET /metrics"), "HTTP/1.1 400 Bad Request");
        assert_eq!(
            status_line("\u{1}\u{2} garbage"),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status_line("GET /metrics SPDY/3"),
            "HTTP/1.1 505 HTTP Version Not Supported"
        );
    }

    #[test]
    fn head_has_no_body_but_the_length() {
        let r = respond(b"HEAD /metrics HTTP/1.1", &Metrics::new(&[]));
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(!text.contains("Content-Length: 0"), "{text}");
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"),
            Some(20)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
