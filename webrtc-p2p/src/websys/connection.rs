//! A connected browser `RTCPeerConnection` as a libp2p [`StreamMuxer`]: streams are data
//! channels (label `""`), framed as the spec says. It ends when the connection fails or
//! closes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{Event, RtcDataChannelEvent, RtcDataChannelInit, RtcPeerConnection, RtcPeerConnectionState};

use super::channel::DataChannelIo;
use crate::INIT_CHANNEL_LABEL;
use crate::transport::Error;

/// Channels the remote opened that no one took yet.
const MAX_PENDING_CHANNELS: usize = 16;

type Framed = libp2p_webrtc_utils::Stream<DataChannelIo>;
type DropListener = libp2p_webrtc_utils::DropListener<DataChannelIo>;

/// One stream: a data channel.
pub struct Stream {
    inner: SendWrapper<Framed>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

impl Stream {
    fn new(io: DataChannelIo) -> (Self, DropListener) {
        let (inner, listener) = libp2p_webrtc_utils::Stream::new(io);
        (Self { inner: SendWrapper::new(inner) }, listener)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_close(cx)
    }
}

#[derive(Default)]
struct Events {
    incoming: VecDeque<DataChannelIo>,
    ended: bool,
    inbound_waker: Option<Waker>,
    state_waker: Option<Waker>,
}

struct Inner {
    peer_connection: RtcPeerConnection,
    events: Rc<RefCell<Events>>,
    opening: Option<DataChannelIo>,
    drop_listeners: FuturesUnordered<DropListener>,
    idle_waker: Option<Waker>,
    _on_channel: Closure<dyn FnMut(RtcDataChannelEvent)>,
    _on_state: Closure<dyn FnMut(Event)>,
}

/// A `/webrtc` connection in the browser.
pub struct Connection {
    inner: SendWrapper<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Takes over a connected peer connection. Call it before the remote can open
    /// channels (right when it connects), so that none is missed.
    pub(crate) fn new(peer_connection: RtcPeerConnection) -> Self {
        let events = Rc::new(RefCell::new(Events::default()));
        let on_channel = {
            let events = events.clone();
            Closure::<dyn FnMut(RtcDataChannelEvent)>::new(move |event: RtcDataChannelEvent| {
                let channel = event.channel();
                if channel.label() == INIT_CHANNEL_LABEL {
                    // Only there to make ICE gather: closed once it reached us.
                    channel.close();
                    return;
                }
                let mut events = events.borrow_mut();
                if events.incoming.len() >= MAX_PENDING_CHANNELS {
                    channel.close();
                    return;
                }
                events.incoming.push_back(DataChannelIo::new(channel));
                if let Some(waker) = events.inbound_waker.take() {
                    waker.wake();
                }
            })
        };
        peer_connection.set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        let on_state = {
            let events = events.clone();
            let pc = peer_connection.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                if matches!(pc.connection_state(), RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed) {
                    let mut events = events.borrow_mut();
                    events.ended = true;
                    for waker in [events.inbound_waker.take(), events.state_waker.take()].into_iter().flatten() {
                        waker.wake();
                    }
                }
            })
        };
        peer_connection.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        Self {
            inner: SendWrapper::new(Inner {
                peer_connection,
                events,
                opening: None,
                drop_listeners: FuturesUnordered::new(),
                idle_waker: None,
                _on_channel: on_channel,
                _on_state: on_state,
            }),
        }
    }
}

impl Inner {
    fn track(&mut self, io: DataChannelIo) -> Stream {
        let (stream, listener) = Stream::new(io);
        self.drop_listeners.push(listener);
        if let Some(waker) = self.idle_waker.take() {
            waker.wake();
        }
        stream
    }

    fn ended(&self) -> bool {
        self.events.borrow().ended
            || matches!(
                self.peer_connection.connection_state(),
                RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
            )
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = Error;

    fn poll_inbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        let inner = &mut *self.get_mut().inner;
        if inner.ended() {
            return Poll::Ready(Err(Error::Closed));
        }
        let next = inner.events.borrow_mut().incoming.pop_front();
        match next {
            Some(io) => Poll::Ready(Ok(inner.track(io))),
            None => {
                inner.events.borrow_mut().inbound_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_outbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, Error>> {
        let inner = &mut *self.get_mut().inner;
        if inner.ended() {
            return Poll::Ready(Err(Error::Closed));
        }
        let io = inner.opening.get_or_insert_with(|| {
            let init = RtcDataChannelInit::new();
            init.set_ordered(true);
            DataChannelIo::new(inner.peer_connection.create_data_channel_with_data_channel_dict("", &init))
        });
        match io.poll_open(cx) {
            Poll::Ready(Ok(())) => {
                let io = inner.opening.take().ok_or(Error::Closed)?;
                Poll::Ready(Ok(inner.track(io)))
            }
            Poll::Ready(Err(_)) => {
                inner.opening = None;
                Poll::Ready(Err(Error::Closed))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().inner.peer_connection.close();
        Poll::Ready(Ok(()))
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Error>> {
        let inner = &mut *self.get_mut().inner;
        if inner.ended() {
            return Poll::Ready(Err(Error::Closed));
        }
        inner.events.borrow_mut().state_waker = Some(cx.waker().clone());
        loop {
            match inner.drop_listeners.poll_next_unpin(cx) {
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => {
                    inner.idle_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.inner.valid() {
            // Unhooked first: closing fires a state change, and our callbacks go with us.
            self.inner.peer_connection.set_ondatachannel(None);
            self.inner.peer_connection.set_onconnectionstatechange(None);
            self.inner.peer_connection.close();
        }
    }
}
