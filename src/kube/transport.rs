//! The HTTP transport under the client: building the HTTP client over our
//! TLS configuration, and sorting its failures into errors that say what
//! went wrong (connect, TLS, timeout).

use std::time::Duration;

use super::{KubeError, Operation, credential, tls};

/// An HTTP client presenting `loaded`'s certificate and verifying the
/// server with its CA.
pub(super) fn build_http(
    loaded: &credential::Loaded,
    insecure: bool,
    server_name: &str,
    timeout: Duration,
) -> Result<reqwest::Client, KubeError> {
    let tls = tls::client_config(tls::TlsSettings {
        ca_pem: loaded.ca_pem.as_deref(),
        ca_origin: &loaded.ca_origin,
        server_name,
        insecure,
        identity: loaded.identity.clone(),
    })?;
    http_client(tls, timeout)
}

/// The HTTP client both the API client and the probe use: HTTP/1.1 over the
/// given TLS configuration, no proxy (the API server is local), TCP keepalive
/// so a silently dead watch connection is noticed.
pub(crate) fn http_client(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> Result<reqwest::Client, KubeError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .http1_only()
        .connect_timeout(connect_timeout)
        .tcp_keepalive(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Never follow a redirect: it would carry the request, and reqwest
        // keeps the bearer token on a redirect to the same host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| KubeError::BuildClient(error_chain(&e)))
}
/// Sorts a transport failure into connect / TLS / timeout / other.
pub(crate) fn classify(server: &str, op: &Operation, e: &reqwest::Error) -> KubeError {
    if let Some(tls) = find_rustls_error(e) {
        return KubeError::Tls {
            server: server.to_string(),
            reason: tls::explain(tls),
        };
    }
    if e.is_connect() {
        let reason = find_io_error(e).map_or_else(|| error_chain(e), io_reason);
        return KubeError::Connect {
            server: server.to_string(),
            reason,
        };
    }
    KubeError::Transport {
        op: op.clone(),
        reason: error_chain(e),
    }
}

/// A short, lower-case description of an I/O error ("connection refused").
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

fn walk<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    // io::Error::source() skips the error it wraps, so look inside by hand.
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    std::iter::from_fn(move || {
        let cur = next?;
        next = match cur
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cur.source(),
        };
        Some(cur)
    })
}

pub(crate) fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    walk(e).find_map(|e| e.downcast_ref::<rustls::Error>())
}

pub(crate) fn find_io_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a std::io::Error> {
    walk(e)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .last()
}

/// The error and its sources joined by ": ".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in walk(e) {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
