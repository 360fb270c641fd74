//! `up --web`: serves the browser app over HTTP, with the page's configuration (topic, and
//! this peer's WebRTC-direct addresses, which the tab dials directly).

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use libp2p::Multiaddr;

/// This peer's WebRTC-direct addresses (with certhash and peer id), kept current by the peer.
pub type WebrtcAddrs = Arc<RwLock<Vec<Multiaddr>>>;

/// STUN for the page: servers the peer was given, and the UDP port it answers STUN on.
#[derive(Clone, Debug, Default)]
pub struct Stun {
    /// `stun:host:port` URLs.
    pub servers: Vec<String>,
    /// Our own STUN port: offered at the address the page was loaded from.
    pub port: Option<u16>,
}

/// What the page is told.
#[derive(Clone, Debug)]
struct Site {
    topic: String,
    addrs: WebrtcAddrs,
    root: Option<PathBuf>,
    /// The app run by key, when there is one: its newest complete version is served.
    app: Option<crate::app_net::Ready>,
    stun: Stun,
}

/// Where the built web app is: `--web-root`, `HELLOPEARS_WEB_ROOT`, `web/` beside the
/// executable, or the output of `cargo xtask web` in the target dir the binary is in.
pub fn find_root(explicit: Option<PathBuf>) -> Option<PathBuf> {
    let candidates = explicit
        .into_iter()
        .chain(std::env::var_os("HELLOPEARS_WEB_ROOT").map(PathBuf::from))
        .chain(std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("web"))))
        .chain(std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("web-dist"))));
    candidates.into_iter().find(|dir| dir.join("index.html").is_file())
}

/// Binds `addr` and serves the app in the background; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    topic: String,
    addrs: WebrtcAddrs,
    root: Option<PathBuf>,
    app: Option<crate::app_net::Ready>,
    stun: Stun,
) -> anyhow::Result<SocketAddr> {
    if root.is_none() && app.is_none() {
        tracing::warn!("the web app is not built (run `cargo xtask web`); serving a notice instead");
    }
    let site = Site { topic, addrs, root, app, stun };
    let app = Router::new()
        .route("/config.json", get(config))
        .fallback(get(file))
        .with_state(site)
        .layer(axum::middleware::from_fn(guard));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot serve the web app on {addr}: {error}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "web server accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                // A client has HTTP_HEADER_MS to send its request's headers (slow-loris).
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_millis(hellopears_core::limits::HTTP_HEADER_MS))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "web connection ended");
                }
            });
        }
    });
    Ok(bound)
}

/// The page's rules: no inline or foreign script, no framing, and requests only for hosts
/// that are addresses or `localhost` (a DNS-rebinding page under a name of its own is refused
/// before it can read `config.json`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

async fn guard(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !host_allowed(host) {
        tracing::warn!(%host, "refusing a web request for a foreign host name");
        return (StatusCode::MISDIRECTED_REQUEST, "unknown host\n").into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Whether a `Host` header names this machine by address or as `localhost`.
fn host_allowed(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The page's configuration: the topic and where to dial this peer. Addresses on the
/// host the page was loaded from come first.
async fn config(State(site): State<Site>, headers: HeaderMap) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(name, _)| name).trim_matches(['[', ']']);
    let mut addrs: Vec<String> =
        site.addrs.read().map(|a| a.iter().map(|a| a.to_string()).collect()).unwrap_or_default();
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1");
    addrs.sort_by_key(|addr| {
        let same_host = addr.contains(&format!("/{host}/")) || (loopback && addr.starts_with("/ip4/127.0.0.1/"));
        !same_host
    });
    // Our own STUN server, at the address this page reached us at: it sees the tab's
    // public address as well as any.
    let mut stun = Vec::new();
    if let Some(port) = site.stun.port {
        let ip = if host.eq_ignore_ascii_case("localhost") { "127.0.0.1" } else { host };
        if let Ok(ip) = ip.parse::<std::net::IpAddr>() {
            stun.push(format!("stun:{}", SocketAddr::new(ip, port)));
        }
    }
    stun.extend(site.stun.servers.iter().cloned());
    let app_version = site.app.as_ref().and_then(|app| app.borrow().as_ref().map(|(version, _)| *version));
    let body = hellopears_core::ui::PageConfig { topic: site.topic, peers: addrs, stun, app_version };
    let body = serde_json::to_string(&body).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn file(State(site): State<Site>, uri: Uri, headers: HeaderMap) -> Response {
    let root = match &site.app {
        Some(app) => match app.borrow().as_ref() {
            Some((_, dir)) => Some(dir.clone()),
            None => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::RETRY_AFTER, "2")],
                    "Fetching the app from its seeders; reload in a moment.\n",
                )
                    .into_response();
            }
        },
        None => site.root.clone(),
    };
    let Some(root) = &root else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The HelloPears web app is not built. Run `cargo xtask web`, then restart the peer.\n",
        )
            .into_response();
    };
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let relative = Path::new(path);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let full = root.join(relative);
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut gz = full.clone().into_os_string();
    gz.push(".gz");
    let (bytes, gzipped) = match (gzip_ok, tokio::fs::read(&gz).await) {
        (true, Ok(bytes)) => (bytes, true),
        _ => match tokio::fs::read(&full).await {
            Ok(bytes) => (bytes, false),
            Err(_) => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::window_protocol::content_type(&full)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_addresses_and_localhost_are_served() {
        for host in ["127.0.0.1:4270", "localhost:4270", "LOCALHOST", "[::1]:4270", "::1", "10.0.0.7:80", "192.168.1.2"]
        {
            assert!(host_allowed(host), "{host}");
        }
        for host in ["evil.example:4270", "evil.example", "127.0.0.1.nip.io:4270", "", "localhost.evil:1"] {
            assert!(!host_allowed(host), "{host}");
        }
    }
}
