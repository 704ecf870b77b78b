//! `GET /metrics` over HTTP/1.1, served by hyper.
//!
//! hyper does the protocol (request parsing, framing, `HEAD`, error answers
//! to malformed requests); this file only routes and bounds the cost of a
//! client: one request per connection, a request head of at most 8 KiB
//! (hyper answers 431 beyond), a deadline per connection and a bounded number
//! of connections. A slow or garbage client costs a few KiB for a few seconds
//! and never blocks the daemon.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// Largest request head accepted (hyper's minimum buffer size).
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request and read the response.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// What prometheus-client encodes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics endpoint could not listen.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address is taken.
    #[error(
        "failed to serve metrics on {addr}: address in use (find the other listener with `ss -ltnp 'sport = :{port}'`, or set metrics.listen to a free address or metrics.enabled: false)",
        port = addr.port()
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
    /// Binds `addr` (port 0 picks a free port).
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
                    tracing::warn!(error = %e, "metrics: accept failed; retrying in 100 ms");
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
                let served = tokio::time::timeout(CONNECTION_DEADLINE, serve(stream, metrics));
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

/// Serves one connection: one request, then close.
async fn serve(stream: TcpStream, metrics: Metrics) -> Result<(), hyper::Error> {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let response = respond(req.method(), req.uri().path(), &metrics);
        async move { Ok::<_, Infallible>(response) }
    });
    http1::Builder::new()
        .keep_alive(false)
        // Header names as most servers write them; scrapers do not care.
        .title_case_headers(true)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// The answer to `method path`; hyper drops the body of a `HEAD` answer and
/// keeps its length.
fn respond(method: &Method, path: &str, metrics: &Metrics) -> Response<String> {
    if path != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(metrics.encode());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    r
}

fn text(status: StatusCode, body: &str) -> Response<String> {
    let mut r = Response::new(body.to_owned());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: Method, path: &str) -> StatusCode {
        respond(&method, path, &Metrics::new(&[])).status()
    }

    #[test]
    fn requests_are_routed() {
        assert_eq!(status(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/"), StatusCode::NOT_FOUND);
        assert_eq!(status(Method::GET, "/metrics/"), StatusCode::NOT_FOUND);
        let post = respond(&Method::POST, "/metrics", &Metrics::new(&[]));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn metrics_are_openmetrics() {
        let r = respond(&Method::GET, "/metrics", &Metrics::new(&[]));
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS);
        assert!(r.body().ends_with("# EOF\n"), "{}", r.body());
    }
}
