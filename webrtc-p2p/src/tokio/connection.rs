//! A connected `RTCPeerConnection` as a libp2p [`StreamMuxer`]: every stream is a data
//! channel (label `""`), framed as the spec says (`libp2p_webrtc_utils::Stream`: FIN,
//! STOP_SENDING and RESET flags, 16 KiB messages). Unlike a bare peer connection, it ends
//! when ICE fails or the remote closes, so the swarm sees the connection go.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use webrtc::data::data_channel::{DataChannel as DetachedDataChannel, PollDataChannel};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

use super::Error;
use super::handshake::{Established, on_open_detach};

type Framed = libp2p_webrtc_utils::Stream<Compat<PollDataChannel>>;
type DropListener = libp2p_webrtc_utils::DropListener<Compat<PollDataChannel>>;

/// One stream: a data channel.
pub struct Stream {
    inner: Framed,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

impl Stream {
    fn new(channel: Arc<DetachedDataChannel>) -> (Self, DropListener) {
        let mut io = PollDataChannel::new(channel).compat();
        io.get_mut().set_read_buf_capacity(libp2p_webrtc_utils::MAX_MSG_LEN);
        let (inner, listener) = libp2p_webrtc_utils::Stream::new(io);
        (Self { inner }, listener)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// A `/webrtc` connection.
pub struct Connection {
    peer_connection: Arc<RTCPeerConnection>,
    incoming: mpsc::Receiver<Arc<DetachedDataChannel>>,
    states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    outbound: Option<BoxFuture<'static, Result<Arc<DetachedDataChannel>, Error>>>,
    closing: Option<BoxFuture<'static, ()>>,
    drop_listeners: FuturesUnordered<DropListener>,
    idle_waker: Option<Waker>,
    ended: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("ended", &self.ended).finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(established: Established) -> Self {
        Self {
            peer_connection: established.peer_connection,
            incoming: established.incoming,
            states: established.states,
            outbound: None,
            closing: None,
            drop_listeners: FuturesUnordered::new(),
            idle_waker: None,
            ended: false,
        }
    }

    fn track(&mut self, channel: Arc<DetachedDataChannel>) -> Stream {
        tracing::debug!(id = channel.stream_identifier(), "new stream");
        let (stream, listener) = Stream::new(channel);
        self.drop_listeners.push(listener);
        if let Some(waker) = self.idle_waker.take() {
            waker.wake();
        }
        stream
    }

    /// Whether ICE failed or the connection was closed.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> bool {
        while !self.ended {
            match self.states.poll_next_unpin(cx) {
                Poll::Ready(Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed))
                | Poll::Ready(None) => {
                    self.ended = true;
                }
                Poll::Ready(Some(_)) => {}
                Poll::Pending => break,
            }
        }
        self.ended
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        if self.poll_ended(cx) {
            return Poll::Ready(Err(Error::Closed));
        }
        match self.incoming.poll_next_unpin(cx) {
            Poll::Ready(Some(channel)) => Poll::Ready(Ok(self.track(channel))),
            Poll::Ready(None) => Poll::Ready(Err(Error::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_outbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        if self.poll_ended(cx) {
            return Poll::Ready(Err(Error::Closed));
        }
        let peer_connection = self.peer_connection.clone();
        let opening = self.outbound.get_or_insert_with(|| {
            async move {
                let channel = peer_connection
                    .create_data_channel("", None)
                    .await
                    .map_err(|error| Error::Signaling(crate::signaling::SignalingError::WebRtc(error.to_string())))?;
                tracing::debug!(id = channel.id(), "opening a data channel");
                let (tx, rx) = oneshot::channel();
                on_open_detach(channel, move |detached| {
                    let _ = tx.send(detached);
                });
                rx.await.map_err(|_| Error::Closed)
            }
            .boxed()
        });
        match opening.poll_unpin(cx) {
            Poll::Ready(result) => {
                self.outbound = None;
                Poll::Ready(result.map(|channel| self.track(channel)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let peer_connection = self.peer_connection.clone();
        let closing = self.closing.get_or_insert_with(|| {
            async move {
                let _ = peer_connection.close().await;
            }
            .boxed()
        });
        match closing.poll_unpin(cx) {
            Poll::Ready(()) => {
                self.incoming.close();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Error>> {
        if self.poll_ended(cx) {
            return Poll::Ready(Err(Error::Closed));
        }
        loop {
            match self.drop_listeners.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(()))) => {}
                Poll::Ready(Some(Err(error))) => tracing::trace!(%error, "a dropped stream's close failed"),
                Poll::Ready(None) => {
                    self.idle_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let peer_connection = self.peer_connection.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = peer_connection.close().await;
            });
        }
    }
}
