//! Sync stream IO: each side writes on the stream it opened and reads the one the other
//! side opened. Small tasks move frames between a stream and the peer's task over bounded
//! channels; every event names the stream it comes from (an epoch per outbound stream), so
//! a late event of a replaced stream is ignored.

use futures::io::{AsyncReadExt, AsyncWriteExt};
use hellopears_core::sync::frame;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;

/// The sync protocol's stream protocol id.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new(hellopears_core::sync::PROTOCOL_ID);

/// Bytes read from a sync stream at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long opening a sync stream may take before it counts as lost.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Frames queued for one outbound stream.
const WRITER_QUEUE: usize = 256;

/// What the stream tasks report to the peer's task.
#[derive(Debug)]
pub enum Event {
    /// A frame from a peer's inbound stream (of this id).
    Frame(PeerId, u64, Vec<u8>),
    /// A peer's inbound stream ended.
    Closed(PeerId, u64, String),
    /// A peer broke the framing.
    Violation(PeerId, u64, String),
    /// Our outbound stream (of this epoch) is open: frames go to this sender.
    Opened(PeerId, u64, mpsc::Sender<Vec<u8>>),
    /// Our outbound stream (of this epoch) failed, or could not be opened.
    Lost(PeerId, u64),
    /// The peer does not speak the sync protocol (a DHT node, a relay, another libp2p
    /// app): no session with it, but its connection is kept.
    Unsupported(PeerId, u64),
}

/// Our stream to a peer could not be opened.
async fn lost(events: &mpsc::Sender<Event>, peer: PeerId, epoch: u64, error: String) {
    tracing::debug!(%peer, %error, "no sync stream");
    let _ = events.send(Event::Lost(peer, epoch)).await;
}

/// Opens our sync stream to a peer and writes the frames sent to it.
pub fn open_writer(mut control: libp2p_stream::Control, peer: PeerId, epoch: u64, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        // An open that hangs counts as lost: the node opens another one.
        let opened = tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, SYNC_PROTOCOL)).await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                tracing::debug!(%peer, "the peer does not speak the sync protocol");
                let _ = events.send(Event::Unsupported(peer, epoch)).await;
                return;
            }
            Ok(Err(error)) => return lost(&events, peer, epoch, error.to_string()).await,
            Err(_) => return lost(&events, peer, epoch, "timed out".into()).await,
        };
        let (writer, mut frames) = mpsc::channel::<Vec<u8>>(WRITER_QUEUE);
        if events.send(Event::Opened(peer, epoch, writer)).await.is_err() {
            return;
        }
        while let Some(message) = frames.recv().await {
            let buffer = frame::encode(&message);
            let written = async {
                for chunk in buffer.chunks(frame::WRITE_CHUNK) {
                    stream.write_all(chunk).await?;
                    stream.flush().await?;
                }
                Ok::<(), std::io::Error>(())
            };
            if let Err(error) = written.await {
                tracing::debug!(%peer, %error, "sync stream write failed");
                let _ = events.send(Event::Lost(peer, epoch)).await;
                return;
            }
        }
        let _ = stream.close().await;
    });
}

/// Frames queued from one inbound stream before its reader waits (and, through the stream's
/// flow control, so does the peer sending them).
const READER_QUEUE: usize = 64;

/// The frames of one peer's inbound stream, as its reader task delivers them.
pub type Frames = futures::stream::BoxStream<'static, Event>;

/// Reads a peer's sync stream, frame by frame, into a queue of its own: the peer's task
/// takes from every reader's queue in turn, so one peer flooding frames cannot delay the
/// frames of the others (it only fills its own queue, and then waits).
pub fn spawn_reader(peer: PeerId, id: u64, stream: libp2p::Stream) -> Frames {
    let (events, frames) = mpsc::channel(READER_QUEUE);
    read_frames(peer, id, stream, events);
    Box::pin(futures::stream::unfold(frames, |mut frames| async move { frames.recv().await.map(|e| (e, frames)) }))
}

fn read_frames(peer: PeerId, id: u64, mut stream: libp2p::Stream, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        let mut decoder = frame::FrameDecoder::default();
        let mut buffer = vec![0u8; READ_CHUNK];
        let deadline = std::time::Duration::from_millis(hellopears_core::limits::FRAME_DEADLINE_MS);
        let reason = 'read: loop {
            // A frame that has started must end in time (slow-loris); an idle stream may wait.
            let reading = stream.read(&mut buffer);
            let read = if decoder.is_partial() {
                match tokio::time::timeout(deadline, reading).await {
                    Ok(read) => read,
                    Err(_) => {
                        let reason = format!("a frame did not complete in {} ms", deadline.as_millis());
                        let _ = events.send(Event::Violation(peer, id, reason)).await;
                        return;
                    }
                }
            } else {
                reading.await
            };
            let read = match read {
                Ok(0) => break "closed by the peer".to_owned(),
                Ok(read) => read,
                Err(error) => break error.to_string(),
            };
            decoder.push(&buffer[..read]);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if events.send(Event::Frame(peer, id, frame)).await.is_err() {
                            break 'read "peer stopped".to_owned();
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let _ = events.send(Event::Violation(peer, id, error.to_string())).await;
                        return;
                    }
                }
            }
        };
        let _ = events.send(Event::Closed(peer, id, reason)).await;
    });
}
