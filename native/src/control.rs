//! The control socket: a Unix socket in the data dir through which CLI commands reach a
//! running peer (the store is locked by it). One JSON request line, one JSON reply line.
//! The launcher starts it next to the peer, with a [`PeerHandle`]; the peer knows nothing
//! of it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hellopears_core::control::parse_request;
use hellopears_core::limits::{CONTROL_LINE_BYTES, CONTROL_READ_MS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::commands::{Reply, Request};
use crate::peer::PeerHandle;

/// The socket's file name in the data dir.
pub const SOCKET: &str = "control.sock";

/// Removes the socket file when the peer stops.
#[derive(Debug)]
pub struct Served {
    path: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves the control socket at `path`, passing requests to the peer behind `peer`. The
/// socket has a thread of its own, so a busy peer (its runtime's workers taken by its
/// peers) still answers what it can answer without its event loop (`list`, see
/// [`crate::reads`]) at once.
pub fn serve(path: &Path, peer: PeerHandle) -> anyhow::Result<Served> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    // Only this user may connect: the socket is 0600 (whatever the umask), and each client's
    // uid is checked too.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata("/proc/self").map(|meta| meta.uid()).ok();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("control".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = match UnixListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "control socket unusable");
                    return;
                }
            };
            while let Ok((stream, _)) = listener.accept().await {
                let uid = stream.peer_cred().map(|cred| cred.uid()).ok();
                if owner.is_some() && uid != owner {
                    tracing::warn!(?uid, "control connection from another user refused");
                    continue;
                }
                let peer = peer.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer(stream, peer).await {
                        tracing::debug!(%error, "control connection failed");
                    }
                });
            }
        });
    })?;
    Ok(Served { path: path.to_owned() })
}

async fn answer(stream: UnixStream, peer: PeerHandle) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let limit = CONTROL_LINE_BYTES as u64 + 1;
    let mut reader = tokio::io::AsyncReadExt::take(BufReader::new(read), limit);
    let reading = reader.read_until(b'\n', &mut line);
    let reply: Reply = match tokio::time::timeout(Duration::from_millis(CONTROL_READ_MS), reading).await {
        Err(_) => Err("bad control request: not sent in time".to_owned()),
        Ok(read) => {
            read?;
            match parse_request(&line) {
                Ok(request) => peer.request(request).await,
                Err(error) => Err(error),
            }
        }
    };
    let mut out = serde_json::to_string(&reply)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

/// Sends a request to a peer running on `dir`, if one answers there.
pub fn request(dir: &Path, request: &Request) -> Option<Reply> {
    let path = dir.join(SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).ok()?;
    use std::io::{BufRead, Write};
    let mut line = serde_json::to_string(request).ok()?;
    line.push('\n');
    stream.write_all(line.as_bytes()).ok()?;
    let mut reply = String::new();
    std::io::BufReader::new(stream).read_line(&mut reply).ok()?;
    serde_json::from_str(&reply).ok()
}
